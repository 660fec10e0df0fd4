"""NAdam with torch's momentum-decay schedule."""

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


class ScaleByNadamState(NamedTuple):
    """Torch's NAdam state: `step`, `mu_product` (∏ μ_i), `exp_avg`, `exp_avg_sq`."""

    step: Array
    mu_product: Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_nadam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum_decay: float = 4e-3
) -> optax.GradientTransformation:
    r"""NAdam's direction, before the learning rate.

    $$
    \mu_t = \beta_1\big(1 - \tfrac12\, 0.96^{t\psi}\big),\quad
    u_t = \frac{(1-\mu_t)\, g_t}{1-\prod_{i\le t}\mu_i} \Big/ d_t
        + \frac{\mu_{t+1}\, m_t}{1-\prod_{i\le t+1}\mu_i} \Big/ d_t,\quad
    d_t = \sqrt{v_t/(1-\beta_2^t)} + \epsilon
    $$
    """
    beta1, beta2 = betas

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByNadamState(
            jnp.zeros([], jnp.int32), jnp.ones([], scalar_dtype()), zeros, zeros
        )

    def update(updates, state, params=None):
        del params
        step = increment(state.step)
        bias_correction2 = one_minus_power(beta2, step)
        mu = beta1 * (1.0 - 0.5 * power(0.96, step * momentum_decay))
        mu_next = beta1 * (1.0 - 0.5 * power(0.96, (step + 1) * momentum_decay))
        mu_product = state.mu_product * mu
        mu_product_next = mu_product * mu_next
        grad_coef = (1.0 - mu) / (1.0 - mu_product)
        avg_coef = mu_next / (1.0 - mu_product_next)
        exp_avg, exp_avg_sq = update_moments(updates, state.exp_avg, state.exp_avg_sq, betas)

        def direction(g, m, v):
            denom = jnp.sqrt(v / cast_like(bias_correction2, v)) + cast_like(eps, v)
            return cast_like(grad_coef, g) * g / denom + cast_like(avg_coef, m) * m / denom

        updates = tree_map(direction, updates, exp_avg, exp_avg_sq)
        return updates, ScaleByNadamState(step, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="NAdam")
@doc
def nadam(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.NAdam` (Dozat's Nesterov Adam with the momentum-decay schedule ψ).

    $$
    \begin{aligned}
      \mu_t &= \beta_1\big(1 - \tfrac12\, 0.96^{t\psi}\big) \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
      \theta_t &= \theta_{t-1} - \gamma_t \Big[\frac{(1-\mu_t) g_t}{1-\prod_{i\le t}\mu_i}
          + \frac{\mu_{t+1} m_t}{1-\prod_{i\le t+1}\mu_i}\Big] \Big/ \Big(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\Big)
    \end{aligned}
    $$

    Args:
      {lr}
      betas: (β1, β2). The moving average itself uses β1; μ_t only weights the update.
      eps: ε, outside the square root.
      {weight_decay}
      momentum_decay: ψ (default 4e-3): with it, μ_1 ≈ 0.45·β1/0.9, not β1.
      {decoupled_weight_decay}
      {maximize}
      {foreach}
      {capturable}
      {differentiable}

    Returns:
      {returns}

    Warning:
      `optax.nadam` has no momentum-decay schedule (it uses μ_t = β1): after a few steps it is
      O(1) away from torch (measured: Δ 0.27 on a movement of 0.86).
    """
    accepted(foreach=foreach, capturable=capturable, differentiable=differentiable)
    checks.check_adam_family(lr, betas, eps, weight_decay)
    checks.nonnegative(momentum_decay, "Invalid momentum_decay value: {}")
    return chain(
        maximize_gradient(maximize),
        None if decoupled_weight_decay else add_weight_decay(weight_decay),
        scale_by_nadam(betas, eps, momentum_decay),
        scale_by_learning_rate(lr),
        add_decoupled_weight_decay(weight_decay, lr) if decoupled_weight_decay else None,
    )


# the name of release 0.1
__getattr__ = renamed_attributes(
    __name__, {"ScaleByNAdamState": ("optim.ScaleByNadamState", ScaleByNadamState)}
)
