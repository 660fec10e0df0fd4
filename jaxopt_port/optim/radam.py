"""RAdam: Adam with variance rectification."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks, scalar_dtype
from jaxopt_port._core.deprecation import renamed_attributes
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import (
    Array,
    LearningRate,
    accepted,
    cast_like,
    chain,
    increment,
    one_minus_power,
    power,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    add_decoupled_weight_decay,
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    update_moments,
)

tree_map = jax.tree_util.tree_map


class ScaleByRadamState(NamedTuple):
    """Torch's RAdam state: `step`, `exp_avg`, `exp_avg_sq`."""

    step: Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_radam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> optax.GradientTransformation:
    r"""RAdam's direction, before the learning rate.

    $$
    \begin{aligned}
      \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
      \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},\quad
      r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
      u_t = \frac{m_t}{1-\beta_1^t}\cdot
          \begin{cases} r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\ 1 & \text{otherwise}\end{cases}
    \end{aligned}
    $$
    """
    beta1, beta2 = betas

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByRadamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        del params
        step = increment(state.step)
        exp_avg, exp_avg_sq = update_moments(updates, state.exp_avg, state.exp_avg_sq, betas)
        bias_correction1 = one_minus_power(beta1, step)
        bias_correction2 = one_minus_power(beta2, step)
        rho_inf = 2 / (1 - beta2) - 1
        t = jnp.asarray(step, scalar_dtype())
        rho_t = rho_inf - 2 * t * power(beta2, step) / bias_correction2
        rectify = rho_t > 5.0
        safe_rho = jnp.where(rectify, rho_t, 6.0)  # keeps the unused branch finite
        rect = jnp.sqrt(
            (safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho)
        )

        def direction(m, v):
            corrected = m / cast_like(bias_correction1, m)
            adaptive = cast_like(jnp.sqrt(bias_correction2), v) / (jnp.sqrt(v) + cast_like(eps, v))
            return jnp.where(rectify, corrected * adaptive * cast_like(rect, m), corrected)

        updates = tree_map(direction, exp_avg, exp_avg_sq)
        return updates, ScaleByRadamState(step, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="RAdam")
@doc
def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.RAdam`.

    $$
    \begin{aligned}
      \theta_t = \theta_{t-1} - \gamma_t \frac{m_t}{1-\beta_1^t}\cdot
          \begin{cases} r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\ 1 & \text{otherwise}\end{cases}
    \end{aligned}
    $$

    with ρ_t and the rectification r_t of [`scale_by_radam`][jaxopt_port.optim.scale_by_radam].

    Args:
      {lr}
      betas: (β1, β2).
      eps: ε, added to √v (not to the bias-corrected √v̂).
      {weight_decay}
      {decoupled_weight_decay}
      {maximize}
      {foreach}
      {capturable}
      {differentiable}

    Returns:
      {returns}

    Warning:
      `optax.radam` adds ε to the bias-corrected √v̂; torch adds it to √v. They differ by a
      factor √(1-β2^t) in ε's weight, visible while v is small. The rectification threshold is
      strict (ρ_t > 5) as in torch.
    """
    accepted(foreach=foreach, capturable=capturable, differentiable=differentiable)
    checks.check_adam_family(lr, betas, eps, weight_decay)
    return chain(
        maximize_gradient(maximize),
        None if decoupled_weight_decay else add_weight_decay(weight_decay),
        scale_by_radam(betas, eps),
        scale_by_learning_rate(lr),
        add_decoupled_weight_decay(weight_decay, lr) if decoupled_weight_decay else None,
    )


# the name of release 0.1
__getattr__ = renamed_attributes(
    __name__, {"ScaleByRAdamState": ("optim.ScaleByRadamState", ScaleByRadamState)}
)
