"""Adagrad and Adadelta: accumulated squared gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim import _checks
from jaxopt_port.optim._base import (
    Array,
    LearningRate,
    accepted,
    cast_like,
    chain,
    enabled_number,
    full_like_tree,
    increment,
    lr_at,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._transforms import (
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    second_moment,
)

tree_map = jax.tree_util.tree_map


class ScaleByAdagradState(NamedTuple):
    """Torch's Adagrad state: ``step``, ``sum`` (Σ g²)."""

    step: Array
    sum: Any


def scale_by_adagrad(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> optax.GradientTransformation:
    r"""Adagrad's direction: :math:`s_t = s_{t-1} + g_t^2`, :math:`u_t = g_t / (\sqrt{s_t} + \epsilon)`."""

    def init(params):
        return ScaleByAdagradState(
            jnp.zeros([], jnp.int32), full_like_tree(params, initial_accumulator_value)
        )

    def update(updates, state, params=None):
        del params
        total = tree_map(lambda s, g: s + g * g, state.sum, updates)
        updates = tree_map(lambda g, s: g / (jnp.sqrt(s) + cast_like(eps, s)), updates, total)
        return updates, ScaleByAdagradState(increment(state.step), total)

    return optax.GradientTransformation(init, update)


def _decayed(lr: LearningRate, lr_decay: Any) -> LearningRate:
    """Adagrad's ``clr = lr / (1 + (t - 1) * lr_decay)`` as a schedule of the update count t - 1."""
    if not enabled_number(lr_decay):
        return lr
    return lambda count: lr_at(lr, count) / (1 + jnp.asarray(count, scalar_dtype()) * lr_decay)


@carries_torch_group()
@doc
def adagrad(
    lr: LearningRate = 1e-2,
    lr_decay: float = 0,
    weight_decay: float = 0,
    initial_accumulator_value: float = 0,
    eps: float = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adagrad``.

    .. math::
        \tilde\gamma_t = \frac{{\gamma_t}}{{1 + (t-1)\eta}},\quad
        s_t = s_{{t-1}} + g_t^2,\quad
        \theta_t = \theta_{{t-1}} - \tilde\gamma_t \frac{{g_t}}{{\sqrt{{s_t}} + \epsilon}}

    Args:
      {lr}
      lr_decay: η, the learning-rate decay.
      {weight_decay}
      initial_accumulator_value: s_0.
      eps: ε, outside the square root (default 1e-10).
      {maximize}
      {kernel_flags}

    Returns:
      {returns}

    Warning:
      ``optax.adagrad`` puts ε inside the square root and defaults to
      ``initial_accumulator_value=0.1`` and ``eps=1e-7``.
    """
    accepted(foreach=foreach, differentiable=differentiable, fused=fused)
    _checks.check_lr(lr)
    _checks.nonnegative(lr_decay, "Invalid lr_decay value: {}")
    _checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    _checks.nonnegative(initial_accumulator_value, "Invalid initial_accumulator_value value: {}")
    _checks.nonnegative(eps, "Invalid epsilon value: {}")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_adagrad(initial_accumulator_value, eps),
        scale_by_learning_rate(_decayed(lr, lr_decay)),
    )


class ScaleByAdadeltaState(NamedTuple):
    """Torch's Adadelta state: ``step``, ``square_avg`` (E[g²]), ``acc_delta`` (E[Δ²])."""

    step: Array
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> optax.GradientTransformation:
    r"""Adadelta's direction (before the learning rate).

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2,\quad
        \Delta_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\quad
        a_t = \rho a_{t-1} + (1-\rho)\Delta_t^2
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


@carries_torch_group()
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
    r"""``torch.optim.Adadelta``.

    .. math::
        v_t = \rho v_{{t-1}} + (1-\rho) g_t^2,\quad
        \Delta_t = \frac{{\sqrt{{a_{{t-1}} + \epsilon}}}}{{\sqrt{{v_t + \epsilon}}}} g_t,\quad
        a_t = \rho a_{{t-1}} + (1-\rho)\Delta_t^2,\quad
        \theta_t = \theta_{{t-1}} - \gamma_t \Delta_t

    Args:
      {lr}
      rho: ρ, the decay of both running averages.
      eps: ε, inside both square roots.
      {weight_decay}
      {maximize}
      {kernel_flags}

    Returns:
      {returns}

    Warning:
      The accumulated update :math:`a_t` excludes the learning rate (as in torch). ``optax.adadelta``
      with ``learning_rate=None`` performs gradient ascent (FACTS); use ``learning_rate=1.0`` there.
    """
    accepted(foreach=foreach, capturable=capturable, differentiable=differentiable)
    _checks.check_lr(lr)
    _checks.check(rho, lambda v: 0.0 <= v <= 1.0, "Invalid rho value: {}")
    _checks.nonnegative(eps, "Invalid epsilon value: {}")
    _checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(lr),
    )
