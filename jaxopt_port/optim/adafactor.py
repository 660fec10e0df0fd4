"""Adafactor, torch's variant: no first moment, factored second moment over the last two dims."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks, scalar_dtype
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import Array, LearningRate, cast_like, chain, increment, lerp, lr_at
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import add_decoupled_weight_decay, maximize_gradient

tree_map = jax.tree_util.tree_map


class ScaleByAdafactorState(NamedTuple):
    """Torch's Adafactor state: `step`; `row_var` and `col_var` for parameters of 2 or more
    dims, `variance` for the others (`None` where a parameter has no such entry)."""

    step: Array
    row_var: Any
    col_var: Any
    variance: Any


def _factored(p: Any) -> bool:
    return len(p.shape) > 1


def scale_by_adafactor(
    lr: LearningRate = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
) -> optax.GradientTransformation:
    r"""Adafactor's full parameter change (before decoupled weight decay).

    $$
    \begin{gathered}
      \hat\beta_{2,t} = 1 - t^{c},\quad \rho_t = \min(\gamma_t, 1/\sqrt t),\quad
      \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t \\
      R_t = \mathrm{lerp}(R_{t-1}, \overline{g_t^2}^{\,\text{cols}}, t^{c}),\quad
      C_t = \mathrm{lerp}(C_{t-1}, \overline{g_t^2}^{\,\text{rows}}, t^{c}),\quad
      \hat v_t = \frac{R_t C_t}{\max(\overline{R_t}, \epsilon_1)} \\
      U_t = \frac{g_t}{\sqrt{\max(\hat v_t, \epsilon_1^2)}},\quad
      u_t = -\frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)}\,U_t
    \end{gathered}
    $$

    with c = `beta2_decay`; a parameter of fewer than two dims keeps an unfactored `variance`.
    """
    eps1, eps2 = eps

    def init(params):
        def row(p):
            return jnp.zeros((*p.shape[:-1], 1), p.dtype) if _factored(p) else None

        def col(p):
            return jnp.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype) if _factored(p) else None

        def var(p):
            return None if _factored(p) else jnp.zeros(p.shape, p.dtype)

        return ScaleByAdafactorState(
            jnp.zeros([], jnp.int32),
            tree_map(row, params),
            tree_map(col, params),
            tree_map(var, params),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("adafactor needs the parameters: call update(grads, state, params)")
        step = increment(state.step)
        t = jnp.asarray(step, scalar_dtype())
        weight = t**beta2_decay
        rho = jnp.minimum(lr_at(lr, state.step), 1 / jnp.sqrt(t))
        leaves, treedef = jax.tree_util.tree_flatten(params)
        grads = treedef.flatten_up_to(updates)
        rows = treedef.flatten_up_to(state.row_var)
        cols = treedef.flatten_up_to(state.col_var)
        variances = treedef.flatten_up_to(state.variance)
        out = [
            _leaf(g, p, r, c, v, weight, rho, eps1, eps2, d)
            for g, p, r, c, v in zip(grads, leaves, rows, cols, variances, strict=True)
        ]
        unflatten = lambda i: treedef.unflatten([o[i] for o in out])
        return unflatten(0), ScaleByAdafactorState(step, unflatten(1), unflatten(2), unflatten(3))

    return optax.GradientTransformation(init, update)


def _leaf(g, p, row_var, col_var, variance, weight, rho, eps1, eps2, d):
    eps1 = jnp.finfo(p.dtype).eps if eps1 is None else eps1
    rms = lambda x: jnp.asarray(jnp.linalg.norm(x.reshape(-1)), scalar_dtype()) / (x.size**0.5)
    alpha = jnp.maximum(eps2, rms(p)) * rho
    w = cast_like(weight, g)
    if _factored(p):
        row_mean = jnp.square(jnp.linalg.norm(g, axis=-1, keepdims=True)) / g.shape[-1]
        col_mean = jnp.square(jnp.linalg.norm(g, axis=-2, keepdims=True)) / g.shape[-2]
        row_var = lerp(row_var, row_mean, w)
        col_var = lerp(col_var, col_mean, w)
        estimate = (row_var @ col_var) / jnp.maximum(
            jnp.mean(row_var, axis=-2, keepdims=True), eps1
        )
    else:
        variance = lerp(variance, g * g, w)
        estimate = variance
    scaled = jax.lax.rsqrt(jnp.maximum(estimate, eps1 * eps1)) * g
    denom = jnp.maximum(1.0, rms(scaled) / d)
    return -cast_like(alpha / denom, scaled) * scaled, row_var, col_var, variance


@carries_torch_group(torch_class="Adafactor")
@doc
def adafactor(
    lr: LearningRate = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Adafactor` (Shazeer & Stern, torch's variant).

    $$
    \rho_t = \min(\gamma_t, 1/\sqrt t),\quad
    \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t,\quad
    \theta_t = \theta_{t-1}(1 - \gamma_t\lambda) - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)} U_t
    $$

    with U_t the gradient divided by the root of the factored second moment (see
    [`scale_by_adafactor`][jaxopt_port.optim.scale_by_adafactor]). No first moment.

    Args:
      {lr}
      beta2_decay: c, the exponent of the second-moment decay 1 - t^c (≤ 0).
      eps: (ε1, ε2): ε1 guards the second moment (`None`: the machine epsilon of the
        parameter's dtype), ε2 the parameter scale.
      d: the clipping threshold of the update RMS (≥ 1).
      weight_decay: decoupled decay λ. Torch's docstring says the default is 1e-2; its code (and
        this function) use 0.0.
      {maximize}
      foreach: accepted, changes nothing.

    Returns:
      {returns}

    Warning:
      `optax.adafactor` factors differently (over the two largest dims, with momentum options)
      and computes its decay in float32 even under x64. Needs `params` in `update`.
    """
    if foreach is not None and not isinstance(foreach, bool):
        raise TypeError(f"foreach must be a bool or None, got {foreach!r}")
    checks.check_lr(lr, "Learning rate should be >= 0 but is: {}")
    checks.check(beta2_decay, lambda v: 0.0 >= v, "beta2_decay should be <= 0 but is: {}")
    if eps[0] is not None:
        checks.nonnegative(eps[0], "epsilon1 should be >= 0 but is: {}")
    checks.nonnegative(eps[1], "epsilon2 should be >= 0 but is: {}")
    checks.check(d, lambda v: 1.0 <= v, "Clipping threshold d should be >= 1 but is: {}")
    checks.nonnegative(weight_decay, "weight_decay should be >= 0 but is: {}")
    return chain(
        maximize_gradient(maximize),
        scale_by_adafactor(lr, beta2_decay, eps, d),
        add_decoupled_weight_decay(weight_decay, lr),
    )
