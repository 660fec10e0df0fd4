"""Adadelta: running averages of squared gradients and of squared updates."""

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
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    second_moment,
)

tree_map = jax.tree_util.tree_map


class ScaleByAdadeltaState(NamedTuple):
    """Torch's Adadelta state: `step`, `square_avg` (E[g²]), `acc_delta` (E[Δ²])."""

    step: Array
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> optax.GradientTransformation:
    r"""Adadelta's direction (before the learning rate).

    $$
    v_t = \rho v_{t-1} + (1-\rho) g_t^2,\quad
    \Delta_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\quad
    a_t = \rho a_{t-1} + (1-\rho)\Delta_t^2
    $$
    """

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByAdadeltaState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        del params
        square_avg = tree_map(lambda v, g: second_moment(v, g, rho), state.square_avg, updates)

        def delta(g, v, a):
            e = cast_like(eps, g)
            return jnp.sqrt(a + e) / jnp.sqrt(v + e) * g

        deltas = tree_map(delta, updates, square_avg, state.acc_delta)
        acc_delta = tree_map(lambda a, d: second_moment(a, d, rho), state.acc_delta, deltas)
        return deltas, ScaleByAdadeltaState(increment(state.step), square_avg, acc_delta)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="Adadelta")
@doc
def adadelta(
    lr: LearningRate = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Adadelta`.

    $$
    v_t = \rho v_{t-1} + (1-\rho) g_t^2,\quad
    \Delta_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t,\quad
    a_t = \rho a_{t-1} + (1-\rho)\Delta_t^2,\quad
    \theta_t = \theta_{t-1} - \gamma_t \Delta_t
    $$

    Args:
      {lr}
      rho: ρ, the decay of both running averages.
      eps: ε, inside both square roots.
      {weight_decay}
      {maximize}
      {foreach}
      {capturable}
      {differentiable}

    Returns:
      {returns}

    Warning:
      The accumulated update $a_t$ excludes the learning rate (as in torch). `optax.adadelta`
      with `learning_rate=None` performs gradient ascent; use `learning_rate=1.0` there.
    """
    accepted(foreach=foreach, capturable=capturable, differentiable=differentiable)
    checks.check_lr(lr)
    checks.check(rho, lambda v: 0.0 <= v <= 1.0, "Invalid rho value: {}")
    checks.nonnegative(eps, "Invalid epsilon value: {}")
    checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(lr),
    )
