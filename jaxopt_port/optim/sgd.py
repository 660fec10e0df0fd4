"""SGD with torch's momentum, dampening and Nesterov."""

from __future__ import annotations

from typing import Any

import optax

from jaxopt_port._core import checks
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import LearningRate, accepted, chain
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    scale_by_momentum,
)


@carries_torch_group(torch_class="SGD")
@doc
def sgd(
    lr: LearningRate = 1e-3,
    momentum: float = 0,
    dampening: float = 0,
    weight_decay: float = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.SGD`: stochastic gradient descent with optional momentum.

    $$
    \begin{aligned}
      g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
      b_1 &= g_1,\quad b_t = \mu b_{t-1} + (1-\tau) g_t \\
      \theta_t &= \theta_{t-1} - \gamma_t \cdot
          \begin{cases} g_t + \mu b_t & \text{nesterov} \\ b_t & \mu \ne 0 \\ g_t & \mu = 0 \end{cases}
    \end{aligned}
    $$

    Args:
      {lr}
      momentum: momentum factor μ.
      dampening: dampening τ of the momentum (not applied to the first buffer, as in torch).
      {weight_decay}
      nesterov: Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
      {maximize}
      {foreach}
      {differentiable}
      {fused}

    Returns:
      {returns}

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_port import optim
      >>> tx = optim.sgd(lr=0.1, momentum=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([0.9, 0.9, 0.9], dtype=float32)

    Warning:
      Unlike `optax.sgd(momentum=...)`, the first momentum buffer is the gradient itself and the
      learning rate is applied after the buffer; `optax.sgd` has no `dampening`.

      Arguments refused here that torch accepts: a NaN `lr`, `momentum` or `weight_decay`
      (`ValueError`; torch's `lr < 0.0` lets NaN through and its parameters become NaN), a
      `dampening` that is not a real number (`TypeError`; torch fails in `step()`).
    """
    accepted(foreach=foreach, differentiable=differentiable, fused=fused)
    # torch's expressions (`lr < 0.0`), which also let NaN through: refused here
    checks.check_lr(lr, ok=_not_negative)
    checks.check(momentum, _not_negative, "Invalid momentum value: {}")
    checks.check(weight_decay, _not_negative, "Invalid weight_decay value: {}")
    checks.real(dampening, "dampening")
    if nesterov and not (_positive(momentum) and _zero(dampening)):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_momentum(momentum, dampening, nesterov),
        scale_by_learning_rate(lr),
    )


def _not_negative(value: Any) -> Any:
    """torch's `not value < 0.0`, and not NaN (which torch accepts, giving NaN parameters)."""
    return not value < 0.0 and value == value


def _positive(value: Any) -> bool:
    return not isinstance(value, (int, float)) or value > 0


def _zero(value: Any) -> bool:
    return not isinstance(value, (int, float)) or value == 0
