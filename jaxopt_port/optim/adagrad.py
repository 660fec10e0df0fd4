"""Adagrad: accumulated squared gradients, with a decaying learning rate."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import checks, scalar_dtype
from jaxopt_port._core.torch_groups import carries_torch_group
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
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
)

tree_map = jax.tree_util.tree_map


class ScaleByAdagradState(NamedTuple):
    """Torch's Adagrad state: `step`, `sum` (Σ g²)."""

    step: Array
    sum: Any


def scale_by_adagrad(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> optax.GradientTransformation:
    r"""Adagrad's direction: $s_t = s_{t-1} + g_t^2$, $u_t = g_t / (\sqrt{s_t} + \epsilon)$."""

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
    """Adagrad's `clr = lr / (1 + (t - 1) * lr_decay)` as a schedule of the update count t - 1."""
    if not enabled_number(lr_decay):
        return lr
    return lambda count: lr_at(lr, count) / (1 + jnp.asarray(count, scalar_dtype()) * lr_decay)


@carries_torch_group(torch_class="Adagrad", constructor_only=("initial_accumulator_value",))
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
    r"""`torch.optim.Adagrad`.

    $$
    \tilde\gamma_t = \frac{\gamma_t}{1 + (t-1)\eta},\quad
    s_t = s_{t-1} + g_t^2,\quad
    \theta_t = \theta_{t-1} - \tilde\gamma_t \frac{g_t}{\sqrt{s_t} + \epsilon}
    $$

    Args:
      {lr}
      lr_decay: η, the learning-rate decay.
      {weight_decay}
      initial_accumulator_value: s_0.
      eps: ε, outside the square root (default 1e-10).
      {maximize}
      {foreach}
      {differentiable}
      {fused}

    Returns:
      {returns}

    Warning:
      `optax.adagrad` puts ε inside the square root and defaults to
      `initial_accumulator_value=0.1` and `eps=1e-7`.
    """
    accepted(foreach=foreach, differentiable=differentiable, fused=fused)
    checks.check_lr(lr)
    checks.nonnegative(lr_decay, "Invalid lr_decay value: {}")
    checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    checks.nonnegative(initial_accumulator_value, "Invalid initial_accumulator_value value: {}")
    checks.nonnegative(eps, "Invalid epsilon value: {}")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_adagrad(initial_accumulator_value, eps),
        scale_by_learning_rate(_decayed(lr, lr_decay)),
    )
