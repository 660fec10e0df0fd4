"""Adam and AdamW, torch's form (ε outside the root, AMSGrad over the raw second moment)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks, is_tensor_like, numel
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
    add_decoupled_weight_decay,
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    update_moments,
)

tree_map = jax.tree_util.tree_map


class ScaleByAdamState(NamedTuple):
    """Torch's Adam state: `step`, `exp_avg` (m), `exp_avg_sq` (v), `max_exp_avg_sq`
    (AMSGrad only, else `None`)."""

    step: Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def scale_by_adam(
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
    *,
    eps_in_sqrt: bool = False,
) -> optax.GradientTransformation:
    r"""Adam's direction as torch computes it, before the learning rate.

    $$
    \begin{gathered}
      m_t = m_{t-1} + (1-\beta_1)(g_t - m_{t-1}),\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
      \quad \hat v_t = \max(\hat v_{t-1}, v_t)\ \text{(AMSGrad)} \\
      u_t = \frac{m_t}{1-\beta_1^t} \Big/ \Big(\frac{\sqrt{v_t}}{\sqrt{1-\beta_2^t}} + \epsilon\Big)
    \end{gathered}
    $$

    With `eps_in_sqrt=True` the denominator is the textbook $\sqrt{v_t/(1-\beta_2^t) + \epsilon}$.
    """
    beta1, beta2 = betas

    def init(params):
        return ScaleByAdamState(
            step=jnp.zeros([], jnp.int32),
            exp_avg=zeros_like_tree(params),
            exp_avg_sq=zeros_like_tree(params),
            max_exp_avg_sq=zeros_like_tree(params) if amsgrad else None,
        )

    def update(updates, state, params=None):
        del params
        step = increment(state.step)
        exp_avg, exp_avg_sq = update_moments(updates, state.exp_avg, state.exp_avg_sq, betas)
        max_exp_avg_sq = (
            tree_map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq) if amsgrad else None
        )
        bias_correction1 = one_minus_power(beta1, step)
        bias_correction2_sqrt = jnp.sqrt(one_minus_power(beta2, step))

        def direction(m, v):
            if eps_in_sqrt:
                bias_correction2 = cast_like(bias_correction2_sqrt**2, v)
                denom = jnp.sqrt(v / bias_correction2 + cast_like(eps, v))
            else:
                denom = jnp.sqrt(v) / cast_like(bias_correction2_sqrt, v) + cast_like(eps, v)
            return m / denom / cast_like(bias_correction1, m)

        updates = tree_map(direction, exp_avg, max_exp_avg_sq if amsgrad else exp_avg_sq)
        return updates, ScaleByAdamState(step, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(init, update)


def _check_arguments(
    lr: Any, betas: Any, eps: Any, weight_decay: Any, foreach: bool | None, capturable: bool
) -> None:
    """torch's Adam/AdamW constructor checks, in torch's order: tensor lr, ranges, then the
    types of the betas (both Python floats or both tensors; here arrays and traced values count
    as tensors)."""
    if is_tensor_like(lr) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    checks.check_adam_family(lr, betas, eps, weight_decay)
    floats = [isinstance(b, float) for b in betas[:2]]
    tensors = [is_tensor_like(b) for b in betas[:2]]
    if not (all(floats) or all(tensors)):
        raise ValueError("betas must be either both floats or both Tensors")
    for index, beta in enumerate(betas[:2]):
        if tensors[index] and not capturable and foreach:
            raise ValueError(
                f"betas[{index}] as a Tensor is not supported for capturable=False and foreach=True"
            )
        if tensors[index] and numel(beta) != 1:
            raise ValueError(f"Tensor betas[{index}] must be 1-element")


@carries_torch_group(torch_class="Adam")
@doc
def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Adam`.

    $$
    \begin{aligned}
      g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \;(+\lambda\theta_{t-1}\text{ if coupled}) \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
      \hat v_t &= \max(\hat v_{t-1}, v_t)\ \text{(amsgrad)},\ \text{else}\ v_t \\
      \theta_t &= \theta_{t-1}\,(1-\gamma_t\lambda)^{[\text{decoupled}]}
          - \frac{\gamma_t}{1-\beta_1^t}\,\frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}
    \end{aligned}
    $$

    Args:
      {lr}
      betas: (β1, β2), the decay rates of the first and second moments.
      eps: ε, added to the bias-corrected root (outside the square root).
      {weight_decay}
      amsgrad: use the running maximum of the raw second moment v (AMSGrad).
      {maximize}
      {foreach}
      {capturable}
      {differentiable}
      {fused}
      {decoupled_weight_decay}

    Returns:
      {returns}

    Warning:
      `optax.adam(amsgrad)` (`optax.amsgrad`) takes the maximum over the bias-corrected v̂; torch
      and this function take it over the raw v and bias-correct afterwards. The textbook Adam puts ε
      inside the square root: see
      [`jaxopt_port.optim.textbook.adam`][jaxopt_port.optim.textbook.adam].
    """
    accepted(foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused)
    _check_arguments(lr, betas, eps, weight_decay, foreach, capturable)
    return chain(
        maximize_gradient(maximize),
        None if decoupled_weight_decay else add_weight_decay(weight_decay),
        scale_by_adam(betas, eps, amsgrad),
        scale_by_learning_rate(lr),
        add_decoupled_weight_decay(weight_decay, lr) if decoupled_weight_decay else None,
    )


def _adamw_group(arguments: dict[str, Any]) -> dict[str, Any]:
    """torch's AdamW param group also holds `decoupled_weight_decay=True`."""
    return {**arguments, "decoupled_weight_decay": True}


@carries_torch_group(_adamw_group, torch_class="AdamW")
@doc
def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.AdamW`: [`adam`][jaxopt_port.optim.adam.adam] with
    `decoupled_weight_decay=True`.

    $$
    \theta_t = \theta_{t-1}(1-\gamma_t\lambda)
        - \frac{\gamma_t}{1-\beta_1^t}\,\frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}
    $$

    Args:
      {lr}
      betas: (β1, β2).
      eps: ε, outside the square root.
      weight_decay: decoupled decay λ (default 1e-2, torch's; `optax.adamw` defaults to 1e-4).
      amsgrad: AMSGrad over the raw second moment.
      {maximize}
      {foreach}
      {capturable}
      {differentiable}
      {fused}

    Returns:
      {returns}
    """
    return adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        foreach=foreach,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
        decoupled_weight_decay=True,
    )
