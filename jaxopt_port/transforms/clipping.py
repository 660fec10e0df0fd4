"""`torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`, as functions and as transformations.

torch's global norm is the `norm_type`-norm of the per-tensor `norm_type`-norms (the norm of all
gradients viewed as one vector, for any p), and it scales every gradient by
`min(max_norm / (total_norm + 1e-6), 1)` — not by optax's `max_norm / total_norm`, so the two
differ by a relative 1e-6/‖g‖ even when clipping applies (`optax.clip_by_global_norm` also has
only the 2-norm).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port._core import params_dtype

__all__ = [
    "ClipGradNormState",
    "clip_grad_norm",
    "clip_grad_norm_",
    "clip_grad_value",
    "clip_grad_value_",
    "total_norm",
]

NORM_EPS = 1e-6
"""torch adds this to the norm before dividing (`clip_coef = max_norm / (total_norm + 1e-6)`)."""


def _vector_norm(x: jax.Array, norm_type: float) -> jax.Array:
    """`torch.linalg.vector_norm(x, norm_type)` of a flattened array."""
    x = jnp.abs(jnp.ravel(x))
    if norm_type == float("inf"):
        return jnp.max(x, initial=0.0)
    if norm_type == float("-inf"):
        return jnp.min(x, initial=float("inf"))
    if norm_type == 0:
        return jnp.sum(x != 0).astype(x.dtype)
    if norm_type == 1:
        return jnp.sum(x)
    if norm_type == 2:
        return jnp.sqrt(jnp.sum(x * x))
    return jnp.sum(x**norm_type) ** (1.0 / norm_type)


def total_norm(grads: Any, norm_type: float = 2.0) -> jax.Array:
    """torch's `_get_total_norm`: the `norm_type`-norm of the leaves' `norm_type`-norms.

    0 for a tree without leaves (as torch returns `tensor(0.)` for no gradients).
    """
    norm_type = float(norm_type)
    leaves = jax.tree_util.tree_leaves(grads)
    if not leaves:
        return jnp.zeros([])
    dtype = jnp.result_type(*leaves)
    norms = jnp.stack([_vector_norm(leaf, norm_type).astype(dtype) for leaf in leaves])
    return _vector_norm(norms, norm_type)


def _nonfinite_message(norm_type: float) -> str:
    return (
        f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
        "non-finite, so it cannot be clipped. To disable this error and scale the gradients by "
        "the non-finite norm anyway, set `error_if_nonfinite=False`"
    )


def _raise_if_nonfinite(norm: jax.Array, norm_type: float) -> None:
    """torch's RuntimeError for a NaN or infinite norm: at once for a concrete norm, from the
    host when a compiled computation reaches it (JAX re-raises it at the call)."""

    def check(value: Any) -> None:
        if not np.isfinite(value):
            raise RuntimeError(_nonfinite_message(norm_type))

    if isinstance(norm, jax.core.Tracer):
        jax.debug.callback(check, norm)
    else:
        check(np.asarray(norm))


def _scale(grads: Any, norm: jax.Array, max_norm: float) -> Any:
    coef = jnp.minimum(max_norm / (norm + NORM_EPS), 1.0)
    return jax.tree_util.tree_map(lambda g: g * coef.astype(g.dtype), grads)


def clip_grad_norm_(
    grads: Any,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> tuple[Any, jax.Array]:
    """`torch.nn.utils.clip_grad_norm_` for a gradient pytree: `(clipped grads, total norm)`.

    Every gradient is multiplied by `min(max_norm / (total_norm + 1e-6), 1)`, where `total_norm` is
    [`total_norm`][jaxopt_port.transforms.total_norm] (the norm torch returns, before clipping). JAX
    arrays are immutable, so the clipped gradients are returned rather than written in place.

    Args:
      grads: a pytree of gradients.
      max_norm: the largest norm allowed.
      norm_type: p of the p-norm, `float("inf")` for the largest absolute entry.
      error_if_nonfinite: raise torch's `RuntimeError` if the total norm is NaN or infinite.
      foreach: accepted for torch's signature; changes nothing.
    """
    del foreach
    norm = total_norm(grads, norm_type)
    if error_if_nonfinite:
        _raise_if_nonfinite(norm, norm_type)
    return _scale(grads, norm, float(max_norm)), norm


def clip_grad_value_(grads: Any, clip_value: float, foreach: bool | None = None) -> Any:
    """`torch.nn.utils.clip_grad_value_`: every entry clamped to `[-clip_value, clip_value]`."""
    del foreach
    clip_value = float(clip_value)
    return jax.tree_util.tree_map(lambda g: jnp.clip(g, -clip_value, clip_value), grads)


class ClipGradNormState(NamedTuple):
    """The total norm of the last update's gradients, before clipping (what torch returns)."""

    total_norm: jax.Array


def clip_grad_norm(
    max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> optax.GradientTransformation:
    """[`clip_grad_norm_`][jaxopt_port.transforms.clip_grad_norm_] as a transformation, to put first
    in an `optax.chain`.

    The norm before clipping is kept in the state (`ClipGradNormState.total_norm`), for logging
    as torch users log the return value of `clip_grad_norm_`.

    Examples:
      >>> import optax
      >>> from jaxopt_port import optim, transforms
      >>> tx = optax.chain(transforms.clip_grad_norm(1.0), optim.adamw(lr=3e-4))
    """
    max_norm, norm_type = float(max_norm), float(norm_type)

    def init(params: Any) -> ClipGradNormState:
        return ClipGradNormState(jnp.zeros([], params_dtype(params)))

    def update(updates: Any, state: ClipGradNormState, params: Any = None) -> tuple[Any, Any]:
        del params
        clipped, norm = clip_grad_norm_(updates, max_norm, norm_type, error_if_nonfinite)
        return clipped, ClipGradNormState(norm.astype(state.total_norm.dtype))

    return optax.GradientTransformation(init, update)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """[`clip_grad_value_`][jaxopt_port.transforms.clip_grad_value_] as a stateless
    transformation."""
    clip_value = float(clip_value)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return clip_grad_value_(updates, clip_value), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
