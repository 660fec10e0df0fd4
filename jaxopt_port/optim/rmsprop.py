"""RMSprop, torch's form: ε outside the root, learning rate after the momentum buffer."""

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
    lerp,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import (
    _one_minus,
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    scale_by_momentum,
    second_moment,
)

tree_map = jax.tree_util.tree_map


class ScaleByRmsState(NamedTuple):
    """Torch's RMSprop state: `step`, `square_avg`, `grad_avg` (centered only, else `None`)."""

    step: Array
    square_avg: Any
    grad_avg: Any


def scale_by_rms(
    alpha: float = 0.99, eps: float = 1e-8, centered: bool = False, *, eps_in_sqrt: bool = False
) -> optax.GradientTransformation:
    r"""Divide by the running root mean square.

    $$
    v_t = \alpha v_{t-1} + (1-\alpha) g_t^2,\quad
    \bar g_t = \bar g_{t-1} + (1-\alpha)(g_t - \bar g_{t-1})\ \text{(centered)},\quad
    u_t = \frac{g_t}{\sqrt{v_t - \bar g_t^2} + \epsilon}
    $$

    `eps_in_sqrt=True` gives the textbook $g_t/\sqrt{v_t + \epsilon}$.
    """

    def init(params):
        return ScaleByRmsState(
            jnp.zeros([], jnp.int32),
            zeros_like_tree(params),
            zeros_like_tree(params) if centered else None,
        )

    def update(updates, state, params=None):
        del params
        square_avg = tree_map(lambda v, g: second_moment(v, g, alpha), state.square_avg, updates)
        grad_avg = (
            tree_map(lambda a, g: lerp(a, g, _one_minus(alpha)), state.grad_avg, updates)
            if centered
            else None
        )

        def direction(g, v, a):
            if centered:
                v = v - a * a
            if eps_in_sqrt:
                return g / jnp.sqrt(v + cast_like(eps, v))
            return g / (jnp.sqrt(v) + cast_like(eps, v))

        updates = tree_map(direction, updates, square_avg, grad_avg if centered else square_avg)
        return updates, ScaleByRmsState(increment(state.step), square_avg, grad_avg)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="RMSprop")
@doc
def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.RMSprop`.

    $$
    \begin{aligned}
      v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2,\qquad
      \tilde v_t = v_t - \bar g_t^2\ \text{(centered)} \\
      b_t &= \mu b_{t-1} + \frac{g_t}{\sqrt{\tilde v_t} + \epsilon},\qquad
      \theta_t = \theta_{t-1} - \gamma_t b_t \quad(\mu = 0:\ b_t = g_t/(\sqrt{\tilde v_t} + \epsilon))
    \end{aligned}
    $$

    Args:
      {lr}
      alpha: smoothing constant α.
      eps: ε, outside the square root.
      {weight_decay}
      momentum: μ; the learning rate multiplies the buffer, it is not inside it.
      centered: subtract the squared running mean of the gradient.
      {maximize}
      {capturable}
      {foreach}
      {differentiable}

    Returns:
      {returns}

    Warning:
      `optax.rmsprop` puts ε inside the root by default (`eps_in_sqrt=True`) and, with momentum and
      a schedule, applies the learning rate before the momentum trace; under a schedule the two
      differ by O(1). The textbook rule is
      [`jaxopt_port.optim.textbook.rmsprop`][jaxopt_port.optim.textbook.rmsprop].

      `alpha > 1` raises `ValueError` here; torch accepts it, and its running average
      $v_t$ turns negative, so its parameters are NaN from the first step.
    """
    accepted(capturable=capturable, foreach=foreach, differentiable=differentiable)
    checks.check_lr(lr)
    checks.nonnegative(eps, "Invalid epsilon value: {}")
    checks.nonnegative(momentum, "Invalid momentum value: {}")
    checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    checks.nonnegative(alpha, "Invalid alpha value: {}")
    # torch accepts alpha > 1 and its running average of g² turns negative: NaN from step 1
    checks.check(alpha, lambda v: v <= 1.0, "Invalid alpha value: {} (at most 1 is needed)")
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_rms(alpha, eps, centered),
        scale_by_momentum(momentum),
        scale_by_learning_rate(lr),
    )
