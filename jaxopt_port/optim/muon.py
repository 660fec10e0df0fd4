"""Muon: momentum orthogonalized by a Newton–Schulz iteration (2-D parameters only)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import Array, LearningRate, cast_like, chain, lerp, zeros_like_tree
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    _one_minus,
    add_decoupled_weight_decay,
    scale_by_learning_rate,
)

tree_map = jax.tree_util.tree_map

DEFAULT_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


class ScaleByMuonState(NamedTuple):
    """Torch's Muon state: `momentum_buffer`."""

    momentum_buffer: Any


def newton_schulz(
    grad: Array, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float, dtype: Any
) -> Array:
    r"""Torch's quintic Newton–Schulz orthogonalization of a matrix, computed in `dtype`.

    $$
    X_0 = G/\max(\lVert G\rVert_F, \epsilon),\quad A = X X^\top,\quad
    X \leftarrow aX + (bA + cA^2)X
    $$

    on the transposed matrix when it has more rows than columns. Returns `dtype`.
    """
    a, b, c = ns_coefficients
    x = grad.astype(dtype)
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = x.T
    x = x / jnp.maximum(jnp.linalg.norm(x), jnp.asarray(eps, dtype)).astype(dtype)
    for _ in range(ns_steps):
        gram = x @ x.T
        gram_update = b * gram + c * (gram @ gram)
        x = a * x + gram_update @ x
    return x.T if tall else x


def adjusted_lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """Torch's `_adjust_lr` ratio: √max(1, A/B) ("original", the default) or 0.2·√max(A, B)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def _check_2d(params: Any) -> None:
    for p in jax.tree_util.tree_leaves(params):
        if len(p.shape) != 2:
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"torch.Size({list(p.shape)})"
            )


def scale_by_muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any = "bfloat16",
) -> optax.GradientTransformation:
    r"""Muon's direction, before the learning rate.

    $$
    b_t = b_{t-1} + (1-\mu)(g_t - b_{t-1}),\quad
    u_t = r\cdot\mathrm{NS}\big(\text{nesterov} ?\ g_t + \mu(b_t - g_t) : b_t\big)
    $$

    with r the shape-dependent ratio of `adjusted_lr_ratio`. `ns_dtype=None` runs the
    iteration in the parameter dtype.
    """

    def init(params):
        _check_2d(params)
        return ScaleByMuonState(zeros_like_tree(params))

    def update(updates, state, params=None):
        del params
        buf = tree_map(
            lambda b, g: lerp(b, g, _one_minus(momentum)), state.momentum_buffer, updates
        )
        directions = tree_map(lambda g, b: lerp(g, b, momentum), updates, buf) if nesterov else buf

        def orthogonalize(u):
            dtype = u.dtype if ns_dtype is None else jnp.dtype(ns_dtype)
            ortho = newton_schulz(u, ns_coefficients, ns_steps, eps, dtype).astype(u.dtype)
            return cast_like(adjusted_lr_ratio(u.shape, adjust_lr_fn), ortho) * ortho

        return tree_map(orthogonalize, directions), ScaleByMuonState(buf)

    return optax.GradientTransformation(init, update)


def _torch_group(arguments: dict[str, Any]) -> dict[str, Any]:
    """torch's Muon param group: the arguments less `ns_dtype` (not torch's)."""
    return {k: v for k, v in arguments.items() if k != "ns_dtype"}


@carries_torch_group(_torch_group, torch_class="Muon")
@doc
def muon(
    lr: LearningRate = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    ns_dtype: Any = "bfloat16",
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Muon`, for 2-D parameters.

    $$
    b_t = \mu b_{t-1} + (1-\mu) g_t,\quad
    O_t = \mathrm{NS}\big(\text{nesterov}\ ?\ (1-\mu) g_t + \mu b_t : b_t\big),\quad
    \theta_t = \theta_{t-1}(1-\gamma_t\lambda) - \gamma_t\, r\, O_t
    $$

    NS is the Newton–Schulz iteration of `newton_schulz`; r = √max(1, A/B) for an A×B
    parameter ("original") or 0.2·√max(A, B) ("match_rms_adamw").

    Args:
      {lr}
      weight_decay: decoupled decay λ (default 0.1).
      momentum: μ.
      nesterov: use the Nesterov-style blend of gradient and buffer (default True).
      ns_coefficients: (a, b, c) of the quintic iteration.
      eps: floor of the Frobenius norm in the normalization.
      ns_steps: number of iterations (< 100).
      adjust_lr_fn: None or "original", or "match_rms_adamw".
      ns_dtype: dtype of the iteration (a name or dtype): "bfloat16" as torch (default), or
        `None` for the parameter dtype (jaxopt_port's option, used for float64 parity).

    Returns:
      {returns}

    Warning:
      In bfloat16, torch's and XLA's CPU matmuls round differently: results drift apart by
      ~3e-2 within a few steps. With the iteration in float64 on both sides they agree to ~1e-15.
      Muon has no `maximize`. `init` raises for any parameter that is not 2-D; torch raises at
      construction, and for `ns_steps >= 100` only at the first step (here: at construction).
      So do an `ns_steps` that is not an integer (`ValueError`), an `eps` or an entry of
      `ns_coefficients` that is not a real number (`TypeError`): torch fails in `step()`.
    """
    checks.check_lr(lr, "Learning rate should be >= 0 but is: {}")
    checks.nonnegative(momentum, "momentum should be >= 0 but is: {}")
    checks.nonnegative(weight_decay, "weight decay should be >= 0 but is: {}")
    if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    checks.real(eps, "eps")
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    checks.integer(ns_steps, "ns_steps")  # torch: range(ns_steps) in step()
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for index, coefficient in enumerate(ns_coefficients):
        checks.real(coefficient, f"ns_coefficients[{index}]")
    return chain(
        scale_by_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype),
        scale_by_learning_rate(lr),
        add_decoupled_weight_decay(weight_decay, lr),
    )
