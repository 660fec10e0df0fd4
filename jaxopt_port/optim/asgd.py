"""ASGD: averaged stochastic gradient descent."""

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
    increment,
    lr_at,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import add_weight_decay, maximize_gradient

tree_map = jax.tree_util.tree_map


class ScaleByAsgdState(NamedTuple):
    """Torch's ASGD state: `step`, `eta` (the step size in use), `mu` (averaging weight),
    `ax` (the averaged parameters)."""

    step: Array
    eta: Array
    mu: Array
    ax: Any


def scale_by_asgd(
    lr: LearningRate = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6
) -> optax.GradientTransformation:
    r"""ASGD's full parameter change, and the running average `ax`.

    $$
    \begin{gathered}
      \theta_t = \theta_{t-1}(1 - \lambda\eta_{t-1}) - \eta_{t-1} g_t,\quad
      \bar\theta_t = \bar\theta_{t-1} + \mu_{t-1}(\theta_t - \bar\theta_{t-1}) \\
      \eta_t = \frac{\gamma_t}{(1 + \lambda\gamma_t t)^\alpha},\quad
      \mu_t = \frac{1}{\max(1, t - t_0)},\quad \eta_0 = \gamma_1,\ \mu_0 = 1
    \end{gathered}
    $$

    η is computed after the step from that step's learning rate, so a new learning rate acts one
    step late (as in torch).
    """

    def init(params):
        dtype = scalar_dtype()
        return ScaleByAsgdState(
            jnp.zeros([], jnp.int32),
            lr_at(lr, jnp.zeros([], jnp.int32)),
            jnp.ones([], dtype),
            zeros_like_tree(params),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("asgd needs the parameters: call update(grads, state, params)")
        eta, mu = state.eta, state.mu

        def new_param(g, p):
            return p * cast_like(1 - lambd * eta, p) - cast_like(eta, g) * g

        new_params = tree_map(new_param, updates, params)
        ax = tree_map(
            lambda a, p: jnp.where(mu == 1, p, a + (p - a) * cast_like(mu, p)), state.ax, new_params
        )
        current_lr = lr_at(lr, state.step)
        step = increment(state.step)
        t = jnp.asarray(step, scalar_dtype())
        new_eta = current_lr / (1 + lambd * current_lr * t) ** alpha
        new_mu = 1 / jnp.maximum(1.0, t - t0)
        updates = tree_map(jnp.subtract, new_params, params)
        return updates, ScaleByAsgdState(step, new_eta, new_mu.astype(scalar_dtype()), ax)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="ASGD")
@doc
def asgd(
    lr: LearningRate = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.ASGD` (Polyak–Ruppert averaged SGD with a decaying step).

    $$
    \theta_t = \theta_{t-1}(1 - \lambda\eta_{t-1}) - \eta_{t-1} g_t,\quad
    \eta_t = \frac{\gamma_t}{(1 + \lambda\gamma_t t)^\alpha},\quad
    \mu_t = \frac{1}{\max(1, t - t_0)},\quad
    \bar\theta_t = \bar\theta_{t-1} + \mu_{t-1}(\theta_t - \bar\theta_{t-1})
    $$

    The averaged parameters are `state.ax` (torch's `state['ax']`).

    Args:
      {lr}
      lambd: decay term λ.
      alpha: power α of the η update.
      t0: the step at which averaging starts.
      {weight_decay}
      {maximize}
      {foreach}
      {differentiable}
      {capturable}

    Returns:
      {returns}

    Warning:
      Torch's quirk is reproduced: η for step t is computed from the learning rate of step t-1, so
      a scheduled learning rate acts one step late. Needs `params` in `update`.

      `lambd`, `alpha` or `t0` that is not a real number (a `str`, `None`, a torch
      tensor) raises `TypeError` here; torch accepts it and fails in `step()`.
    """
    accepted(foreach=foreach, differentiable=differentiable, capturable=capturable)
    checks.check_lr(lr)
    checks.nonnegative(weight_decay, "Invalid weight_decay value: {}")
    for value, name in ((lambd, "lambd"), (alpha, "alpha"), (t0, "t0")):
        checks.real(value, name)
    return chain(
        maximize_gradient(maximize),
        add_weight_decay(weight_decay),
        scale_by_asgd(lr, lambd, alpha, t0),
    )
