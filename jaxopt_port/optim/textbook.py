"""The update rules as textbooks write them, for users who want those rather than torch's.

Each differs from its torch counterpart in a documented way (see `docs/optimizers.md`):

- [`sgd`][jaxopt_port.optim.sgd.sgd]: θ ← θ − α∇J(θ) (torch's SGD without momentum, exactly).
- `momentum`: heavy ball, θ_{t+1} = θ_t − α_t∇J(θ_t) + β(θ_t − θ_{t−1}); at a constant α it
  equals torch's SGD momentum, under a schedule it does not (torch scales the whole buffer by the
  current lr).
- [`rmsprop`][jaxopt_port.optim.rmsprop.rmsprop]: ε inside the root.
- [`adam`][jaxopt_port.optim.adam.adam]: bias-corrected m̂, v̂ and ε inside the root.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxopt_port.optim._base import LearningRate, cast_like, chain, zeros_like_tree
from jaxopt_port.optim._primitives import scale_by_learning_rate
from jaxopt_port.optim.adam import scale_by_adam
from jaxopt_port.optim.rmsprop import scale_by_rms

tree_map = jax.tree_util.tree_map

__all__ = ["adam", "heavy_ball", "momentum", "rmsprop", "sgd"]


def sgd(lr: LearningRate = 1e-3) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent, $\theta \leftarrow \theta - \alpha\nabla J(\theta)$."""
    return chain(scale_by_learning_rate(lr))


class HeavyBallState(NamedTuple):
    """`prev_update`: the last parameter change θ_t − θ_{t−1}."""

    prev_update: Any


def heavy_ball(beta: float) -> optax.GradientTransformation:
    r"""Add β times the previous parameter change: $u_t \leftarrow u_t + \beta u_{t-1}$."""

    def init(params):
        return HeavyBallState(zeros_like_tree(params))

    def update(updates, state, params=None):
        del params
        updates = tree_map(
            lambda u, prev: u + cast_like(beta, u) * prev, updates, state.prev_update
        )
        return updates, HeavyBallState(updates)

    return optax.GradientTransformation(init, update)


def momentum(
    lr: LearningRate = 1e-3, momentum: float = 0.9
) -> optax.GradientTransformationExtraArgs:
    r"""Polyak's heavy ball, $\theta_{t+1} = \theta_t - \alpha_t\nabla J(\theta_t) + \beta(\theta_t - \theta_{t-1})$."""
    return chain(scale_by_learning_rate(lr), heavy_ball(momentum))


def rmsprop(
    lr: LearningRate = 1e-3, beta: float = 0.9, eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop as usually written: $v \leftarrow \beta v + (1-\beta) g^2$, $\theta \leftarrow \theta - \alpha g/\sqrt{v + \epsilon}$."""
    return chain(scale_by_rms(beta, eps, eps_in_sqrt=True), scale_by_learning_rate(lr))


def adam(
    lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    r"""Adam as usually written: $\theta \leftarrow \theta - \alpha\,\hat m/\sqrt{\hat v + \epsilon}$
    (ε inside the root)."""
    return chain(scale_by_adam(betas, eps, eps_in_sqrt=True), scale_by_learning_rate(lr))
