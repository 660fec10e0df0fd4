"""Adamax: Adam with the infinity norm."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import (
    Array,
    LearningRate,
    accepted,
    cast_like,
    chain,
    increment,
    one_minus_power,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    add_weight_decay,
    first_moment,
    maximize_gradient,
    scale_by_learning_rate,
)

tree_map = jax.tree_util.tree_map


class ScaleByAdamaxState(NamedTuple):
    """Torch's Adamax state: `step`, `exp_avg` (m), `exp_inf` (u)."""

    step: Array
    exp_avg: Any
    exp_inf: Any


def scale_by_adamax(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> optax.GradientTransformation:
    r"""Adamax's direction: $u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon)$, $m_t/((1-\beta_1^t) u_t)$."""
    beta1, beta2 = betas

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByAdamaxState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        del params
        step = increment(state.step)
        exp_avg = tree_map(lambda m, g: first_moment(m, g, beta1), state.exp_avg, updates)
        exp_inf = tree_map(
            lambda u, g: jnp.maximum(u * cast_like(beta2, u), jnp.abs(g) + cast_like(eps, g)),
            state.exp_inf,
            updates,
        )
        bias_correction = one_minus_power(beta1, step)
        updates = tree_map(lambda m, u: m / u / cast_like(bias_correction, m), exp_avg, exp_inf)
        return updates, ScaleByAdamaxState(step, exp_avg, exp_inf)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="Adamax")
@doc
def adamax(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Adamax`.

    $$
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon),\quad
    \theta_t = \theta_{t-1} - \frac{\gamma_t}{1-\beta_1^t} \frac{m_t}{u_t}
    $$

    Args:
      {lr}
      betas: (β1, β2).
      eps: ε, added to |g| inside the maximum (the paper adds nothing).
      {weight_decay}
      {maximize}
      {foreach}
      {differentiable}
      {capturable}

    Returns:
      {returns}

    Warning:
      `optax.adamax` adds ε to u outside the maximum; the two agree to ~1e-15 in practice
      (measured with optax 0.2.8), but differ when |g| is near 0.
    """
    accepted(foreach=foreach, differentiable=differentiable, capturable=capturable)
    checks.check_adam_family(lr, betas, eps, weight_decay)
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_adamax(betas, eps),
        scale_by_learning_rate(lr),
    )
