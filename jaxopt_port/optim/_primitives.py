"""The building blocks every optimizer is chained from.

Each stateful block is an `init`/`update` pair whose state is a NamedTuple with fields named as
torch names its `optimizer.state[p]` keys (`momentum_buffer`, `exp_avg`, ...); a field named
`count` is bookkeeping torch keeps elsewhere (the number of updates so far).

Hyperparameters may be Python numbers, arrays, or tracers (`optax.inject_hyperparams` passes
arrays). Whether an optional term is present is decided from Python numbers only: an array-valued
hyperparameter always switches its term on, so the state structure never depends on a value.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port.optim._base import (
    Array,
    LearningRate,
    cast_like,
    enabled_number,
    increment,
    lerp,
    lr_at,
    zeros_like_tree,
)

tree_map = jax.tree_util.tree_map


# --------------------------------------------------------------------------------------------
# Moments: the two exponential moving averages of the Adam family, written once.


def first_moment(exp_avg: Array, grad: Array, beta1: Any) -> Array:
    r"""`exp_avg.lerp_(grad, 1 - beta1)`: $m \leftarrow m + (1-\beta_1)(g - m)$."""
    return lerp(exp_avg, grad, _one_minus(beta1))


def second_moment(exp_avg_sq: Array, grad: Array, beta2: Any) -> Array:
    r"""`exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`: $v \leftarrow \beta_2 v + (1-\beta_2) g^2$."""
    return exp_avg_sq * cast_like(beta2, grad) + cast_like(_one_minus(beta2), grad) * grad * grad


def update_moments(
    grads: Any, exp_avg: Any, exp_avg_sq: Any, betas: tuple[Any, Any]
) -> tuple[Any, Any]:
    """Both Adam moments for a whole tree: `(first_moment, second_moment)` leaf by leaf."""
    beta1, beta2 = betas
    return (
        tree_map(lambda m, g: first_moment(m, g, beta1), exp_avg, grads),
        tree_map(lambda v, g: second_moment(v, g, beta2), exp_avg_sq, grads),
    )


def _one_minus(x: Any) -> Any:
    return 1.0 - x if isinstance(x, (int, float)) else 1 - x


# --------------------------------------------------------------------------------------------
# Stateless gradient edits.


def maximize_gradient(maximize: bool) -> optax.GradientTransformation | None:
    """`grad = -grad` (torch's `maximize=True`), applied before everything else; `None` if off."""
    if not maximize:
        return None
    return optax.stateless(lambda updates, params: tree_map(jnp.negative, updates))


def add_weight_decay(weight_decay: Any) -> optax.GradientTransformation | None:
    r"""Coupled L2 penalty, `grad = grad.add(param, alpha=weight_decay)`: $g \leftarrow g + \lambda\theta$.

    `None` when `weight_decay` is the number 0 (torch skips the term). A `bool` raises
    `TypeError` (torch accepts `True` and fails in `step()`: "Boolean alpha only supported
    for Boolean results").
    """
    if isinstance(weight_decay, bool):
        raise TypeError(f"weight_decay must be a real number, got bool {weight_decay}")
    if not enabled_number(weight_decay):
        return None

    def update(updates, params):
        if params is None:
            raise ValueError("weight_decay needs the parameters: call update(grads, state, params)")
        return tree_map(lambda g, p: g + cast_like(weight_decay, p) * p, updates, params)

    return optax.stateless(update)


# --------------------------------------------------------------------------------------------
# Learning rate and decoupled weight decay: the only blocks that read the learning rate.


class CountState(NamedTuple):
    """State of a block that evaluates a schedule: the number of updates so far."""

    count: Array


def _count_init(params: Any) -> CountState:
    del params
    return CountState(count=jnp.zeros([], jnp.int32))


def scale_by_learning_rate(lr: LearningRate) -> optax.GradientTransformation:
    r"""`param.add_(update, alpha=-lr)`: $u \leftarrow -\gamma_t u$, with $\gamma_t$ the lr of this
    update."""

    def update(updates, state, params=None):
        del params
        step_size = -lr_at(lr, state.count)
        updates = tree_map(lambda u: cast_like(step_size, u) * u, updates)
        return updates, CountState(count=increment(state.count))

    return optax.GradientTransformation(_count_init, update)


def add_decoupled_weight_decay(
    weight_decay: Any, lr: LearningRate
) -> optax.GradientTransformation | None:
    r"""Decoupled decay, `param.mul_(1 - lr * weight_decay)`: $u \leftarrow u - \gamma_t\lambda\theta$.

    Goes last in a chain (it adds to the final parameter change). Torch multiplies the parameter
    before the rest of the step, which reads no parameter, so the two agree up to rounding.
    `None` when `weight_decay` is the number 0.
    """
    if not enabled_number(weight_decay):
        return None

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight_decay needs the parameters: call update(grads, state, params)")
        decay = lr_at(lr, state.count) * weight_decay
        updates = tree_map(lambda u, p: u - cast_like(decay, p) * p, updates, params)
        return updates, CountState(count=increment(state.count))

    return optax.GradientTransformation(_count_init, update)


# --------------------------------------------------------------------------------------------
# Momentum: SGD's buffer, also RMSprop's.


class MomentumState(NamedTuple):
    """`momentum_buffer`: torch's buffer of the same name; `count`: updates so far."""

    count: Array
    momentum_buffer: Any


def scale_by_momentum(
    momentum: Any, dampening: Any = 0.0, nesterov: bool = False
) -> optax.GradientTransformation | None:
    r"""Torch's momentum buffer.

    $$
    \begin{aligned}
      b_1 = u_1, \qquad b_t = \mu b_{t-1} + (1-\tau) u_t, \qquad
      u \leftarrow \begin{cases} u_t + \mu b_t & \text{nesterov} \\ b_t & \text{otherwise}\end{cases}
    \end{aligned}
    $$

    The first buffer is a copy of the update, without dampening (torch's `clone`). `None` when
    `momentum` is the number 0.
    """
    if not enabled_number(momentum):
        return None

    def init(params):
        return MomentumState(
            count=jnp.zeros([], jnp.int32), momentum_buffer=zeros_like_tree(params)
        )

    def update(updates, state, params=None):
        del params
        first = state.count == 0

        def buffer(u, b):
            mu = cast_like(momentum, u)
            later = b * mu + cast_like(_one_minus(dampening), u) * u
            return jnp.where(first, u, later)

        buf = tree_map(buffer, updates, state.momentum_buffer)
        if nesterov:
            updates = tree_map(lambda u, b: u + cast_like(momentum, u) * b, updates, buf)
        else:
            updates = buf
        return updates, MomentumState(count=increment(state.count), momentum_buffer=buf)

    return optax.GradientTransformation(init, update)
