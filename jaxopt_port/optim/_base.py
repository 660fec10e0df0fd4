"""Shared plumbing for every optimizer: learning rates, scalar precision, torch-exact arithmetic.

Nothing here holds optimizer math; it is the vocabulary the building blocks in
``_transforms.py`` and the optimizer factories are written in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array: TypeAlias = jax.Array
#: A learning rate: a Python float, a 1-element array or tensor, or an optax schedule ``count -> lr``.
LearningRate: TypeAlias = float | Array | optax.Schedule
Schedule: TypeAlias = Callable[[Array], Array]


def scalar_dtype() -> jnp.dtype:
    """The dtype JAX uses where torch computes a scalar in Python ``float`` (double).

    float64 when x64 is enabled, float32 otherwise.
    """
    return jnp.dtype(jnp.float64) if jax.config.jax_enable_x64 else jnp.dtype(jnp.float32)


def params_dtype(params: Any) -> jnp.dtype:
    """The dtype the leaves of ``params`` (arrays or ``jax.ShapeDtypeStruct``s) promote to; JAX's
    default float for no leaves."""
    dtypes = [getattr(leaf, "dtype", leaf) for leaf in jax.tree_util.tree_leaves(params)]
    return jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)


def as_float(value: Any, what: str = "lr") -> float:
    """``float(value)`` for a Python number, 0-d/1-element array or torch tensor.

    Raises torch's error for a tensor with more than one element.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    size = value.numel() if hasattr(value, "numel") else np.size(value)
    if size != 1:
        raise ValueError(f"Tensor {what} must be 1-element")
    return float(np.asarray(value).reshape(()))


def enabled_number(value: Any) -> bool:
    """Whether an optional term with this coefficient is present (torch's ``if value != 0``).

    Arrays and tracers (``optax.inject_hyperparams``) always count as present, so that the state
    structure never depends on a value.
    """
    if isinstance(value, (bool, int, float)):
        return value != 0
    return True


def is_tensor_like(value: Any) -> bool:
    """True for arrays and tensors (torch's ``isinstance(lr, Tensor)``), False for Python numbers."""
    return not isinstance(value, (int, float)) and not callable(value)


def lr_at(lr: LearningRate, count: Array) -> Array:
    """The learning rate at update ``count`` (0 for the first update), in :func:`scalar_dtype`."""
    if callable(lr):
        return jnp.asarray(lr(count), scalar_dtype())
    if isinstance(lr, jax.core.Tracer):
        return jnp.asarray(lr, scalar_dtype())
    return jnp.asarray(as_float(lr), scalar_dtype())


def check_lr(lr: LearningRate, message: str = "Invalid learning rate: {}") -> None:
    """Torch's constructor check ``0 <= lr``; a tensor lr must have one element.

    Schedules and traced values are not checked.
    """
    if callable(lr) or isinstance(lr, jax.core.Tracer):
        return
    value = as_float(lr)
    if not 0.0 <= value:
        raise ValueError(message.format(lr if isinstance(lr, (int, float)) else value))


def _log(base: Any) -> Array:
    if isinstance(base, (int, float)):
        return jnp.asarray(math.log(base) if base > 0 else -math.inf, scalar_dtype())
    return jnp.log(jnp.asarray(base, scalar_dtype()))


def power(base: Any, exponent: Array) -> Array:
    """``base ** exponent`` for a scalar base and a traced exponent, as torch gets it in double.

    Computed as ``exp(exponent * log(base))`` with ``log(base)`` of a Python float taken in double,
    so that in float32 the result carries one rounding of the exponent rather than float32's error
    in ``base`` raised to a large power. ``0 ** 0 == 1``.
    """
    exponent = jnp.asarray(exponent, scalar_dtype())
    return jnp.where(exponent == 0, 1.0, jnp.exp(exponent * _log(base))).astype(scalar_dtype())


def one_minus_power(base: Any, exponent: Array) -> Array:
    """``1 - base ** exponent`` (a bias correction), accurate in float32 for ``base`` near 1."""
    exponent = jnp.asarray(exponent, scalar_dtype())
    return jnp.where(exponent == 0, 0.0, -jnp.expm1(exponent * _log(base))).astype(scalar_dtype())


def lerp(start: Array, end: Array, weight: float | Array) -> Array:
    """``torch.lerp``: ``start + weight * (end - start)``, rounded the way torch's kernel rounds."""
    diff = end - start
    if isinstance(weight, (int, float)):  # torch picks the branch from the Python scalar
        w = jnp.asarray(weight, start.dtype)
        return start + w * diff if abs(weight) < 0.5 else end - diff * (1 - w)
    weight = jnp.asarray(weight, start.dtype)
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


def cast_like(x: Array, like: Array) -> Array:
    """``x`` in the dtype of ``like`` (scalars multiplied into a tensor take its dtype, as in torch)."""
    return jnp.asarray(x, like.dtype)


def increment(count: Array) -> Array:
    """``count + 1`` that saturates instead of wrapping (optax's ``safe_increment``)."""
    return optax.safe_increment(count)


def zeros_like_tree(params: Any) -> Any:
    return jax.tree_util.tree_map(jnp.zeros_like, params)


def full_like_tree(params: Any, value: Any) -> Any:
    return jax.tree_util.tree_map(lambda p: jnp.full_like(p, value), params)


def chain(
    *transforms: optax.GradientTransformation | None,
) -> optax.GradientTransformationExtraArgs:
    """``optax.chain`` of the transformations that are not ``None`` (options that are switched off)."""
    return optax.chain(*(t for t in transforms if t is not None))


def accepted(**kernel_flags: Any) -> None:
    """Accept torch's kernel-selection flags (foreach, fused, capturable, differentiable).

    They choose among torch implementations that agree to rounding; here there is one
    implementation, so they change nothing. Only their type is checked.
    """
    for name, value in kernel_flags.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool or None, got {value!r}")
