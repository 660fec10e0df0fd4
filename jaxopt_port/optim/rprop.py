"""Rprop: sign-based steps with per-element step sizes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core.checks import check, check_lr, real
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import Array, LearningRate, accepted, chain, increment, lr_at
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import maximize_gradient

tree_map = jax.tree_util.tree_map


class ScaleByRpropState(NamedTuple):
    """Torch's Rprop state: `step`, `prev` (last gradient used), `step_size` (per element)."""

    step: Array
    prev: Any
    step_size: Any


def scale_by_rprop(
    lr: LearningRate = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
) -> optax.GradientTransformation:
    r"""Rprop's full parameter change (the learning rate is only the initial step size).

    $$
    \begin{aligned}
      \eta_t = \begin{cases}\eta_+ & g_t g_{t-1} > 0 \\ \eta_- & g_t g_{t-1} < 0 \\ 1 & \text{otherwise}\end{cases},\quad
      s_t = \operatorname{clip}(\eta_t s_{t-1}, s_{\min}, s_{\max}),\quad
      g_t \leftarrow 0 \text{ where } \eta_t = \eta_-,\quad
      u_t = -\operatorname{sign}(g_t)\, s_t
    \end{aligned}
    $$
    """
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes

    def init(params):
        initial = lr_at(lr, jnp.zeros([], jnp.int32))
        return ScaleByRpropState(
            jnp.zeros([], jnp.int32),
            tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params),
            tree_map(lambda p: jnp.full(p.shape, initial, p.dtype), params),
        )

    def update(updates, state, params=None):
        del params

        def factor(g, prev):
            sign = jnp.sign(g * prev)
            one = jnp.ones_like(g)
            return jnp.where(sign > 0, etaplus * one, jnp.where(sign < 0, etaminus * one, one))

        factors = tree_map(factor, updates, state.prev)
        step_size = tree_map(
            lambda s, f: jnp.clip(s * f, step_size_min, step_size_max), state.step_size, factors
        )
        grads = tree_map(
            lambda g, f: jnp.where(f == etaminus, jnp.zeros_like(g), g), updates, factors
        )
        updates = tree_map(lambda g, s: -jnp.sign(g) * s, grads, step_size)
        return updates, ScaleByRpropState(increment(state.step), grads, step_size)

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="Rprop")
@doc
def rprop(
    lr: LearningRate = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.Rprop` (resilient backpropagation).

    $$
    s_t = \operatorname{clip}(\eta_t s_{t-1}, s_{\min}, s_{\max}),\quad s_0 = \gamma,\quad
    \theta_t = \theta_{t-1} - \operatorname{sign}(g_t)\, s_t
    $$

    where η_t is η+ if the gradient kept its sign, η- if it flipped (and then g_t is taken as 0
    for this step), 1 otherwise.

    Args:
      lr: the initial step size s_0. A schedule is evaluated once, at count 0: torch never reads
        `lr` again after the first step, so later values have no effect.
      etas: (η-, η+), with 0 < η- < 1 < η+.
      step_sizes: (s_min, s_max), the clamp of the step sizes.
      {maximize}
      {capturable}
      {foreach}
      {differentiable}

    Returns:
      {returns}

    Warning:
      `optax.rprop`'s first update is zero (it returns the previous step's update); here, as in
      torch, the first update is `-sign(g) * lr`.

      `step_sizes` entries that are neither real numbers nor `None` (no bound, as in torch's
      `clamp`) raise `TypeError` here; torch accepts them and fails in `step()`.
    """
    accepted(capturable=capturable, foreach=foreach, differentiable=differentiable)
    check_lr(lr)
    if not isinstance(etas[0], jax.core.Tracer):
        check(etas, lambda e: 0.0 < e[0] < 1.0 < e[1], "Invalid eta values: {0[0]}, {0[1]}")
    step_size_min, step_size_max = step_sizes  # torch unpacks them only in step()
    real(step_size_min, "step_sizes[0]", optional=True)  # None: no bound, as torch's clamp
    real(step_size_max, "step_sizes[1]", optional=True)
    return chain(maximize_gradient(maximize), scale_by_rprop(lr, etas, step_sizes))
