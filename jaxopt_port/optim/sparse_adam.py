"""SparseAdam: Adam restricted to the entries a sparse gradient holds."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.experimental import sparse

from jaxopt_port._core import checks
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import (
    Array,
    LearningRate,
    cast_like,
    chain,
    increment,
    one_minus_power,
    zeros_like_tree,
)
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._primitives import scale_by_learning_rate

tree_map = jax.tree_util.tree_map


class ScaleBySparseAdamState(NamedTuple):
    """Torch's SparseAdam state: `step`, `exp_avg`, `exp_avg_sq`."""

    step: Array
    exp_avg: Any
    exp_avg_sq: Any


def _is_bcoo(x: Any) -> bool:
    return isinstance(x, sparse.BCOO)


def densify(grads: Any) -> tuple[Any, Any]:
    """Dense gradients and the mask of entries present.

    A `BCOO` leaf is present where its indices point (duplicates summed, as `coalesce` does);
    a dense leaf is present where it is not exactly zero.
    """

    def split(g):
        if _is_bcoo(g):
            ones = sparse.BCOO((jnp.ones_like(g.data), g.indices), shape=g.shape)
            return g.todense(), ones.todense() > 0
        return g, g != 0

    pairs = tree_map(split, grads, is_leaf=_is_bcoo)
    is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)
    dense = tree_map(lambda pair: pair[0], pairs, is_leaf=is_pair)
    present = tree_map(lambda pair: pair[1], pairs, is_leaf=is_pair)
    return dense, present


def scale_by_sparse_adam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> optax.GradientTransformation:
    r"""SparseAdam's direction: Adam on the present entries only, ε added to √v.

    $$
    m_t = m_{t-1} + (1-\beta_1)(g_t - m_{t-1}),\quad v_t = v_{t-1} + (1-\beta_2)(g_t^2 - v_{t-1}),\quad
    u_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t} + \epsilon}
    $$

    on the entries present in the gradient; m, v and θ stay as they are elsewhere.
    """
    beta1, beta2 = betas

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleBySparseAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        del params
        grads, present = densify(updates)
        step = increment(state.step)
        scale = jnp.sqrt(one_minus_power(beta2, step)) / one_minus_power(beta1, step)

        def moments(g, m, v, mask):
            new_m = m + (g - m) * cast_like(1 - beta1, g)
            new_v = v + (g * g - v) * cast_like(1 - beta2, g)
            direction = cast_like(scale, g) * (new_m / (jnp.sqrt(new_v) + cast_like(eps, g)))
            zero = jnp.zeros_like(g)
            return (
                jnp.where(mask, direction, zero),
                jnp.where(mask, new_m, m),
                jnp.where(mask, new_v, v),
            )

        out = tree_map(moments, grads, state.exp_avg, state.exp_avg_sq, present)
        is_triple = lambda x: isinstance(x, tuple) and len(x) == 3
        pick = lambda i: tree_map(lambda t: t[i], out, is_leaf=is_triple)
        return pick(0), ScaleBySparseAdamState(step, pick(1), pick(2))

    return optax.GradientTransformation(init, update)


@carries_torch_group(torch_class="SparseAdam")
@doc
def sparse_adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.SparseAdam`: Adam that touches only the entries present in the gradient.

    $$
    \theta_t = \theta_{t-1} - \gamma_t\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t} + \epsilon}\quad\text{on present entries}
    $$

    Gradients may be dense arrays, where an entry is present when it is not exactly zero (for an
    embedding lookup: the rows looked up), or `jax.experimental.sparse.BCOO` arrays, where the
    entries their indices hold are present (torch's sparse gradient semantics exactly).

    Args:
      {lr}
      betas: (β1, β2).
      eps: ε (> 0), added to √v ("ε-hat" form).
      {maximize}

    Returns:
      {returns}

    Warning:
      Torch raises for dense gradients; here a dense gradient is accepted and its exact zeros are
      treated as absent. An entry inside a looked-up row whose gradient happens to be exactly 0 is
      therefore left untouched here but updated by torch; pass a BCOO gradient for row semantics.
    """
    checks.check_lr(lr, ok=lambda v: 0.0 < v)
    checks.check(eps, lambda v: 0.0 < v, "Invalid epsilon value: {}")
    checks.check_betas(betas)
    return chain(
        _maximize_sparse(maximize),
        scale_by_sparse_adam(betas, eps),
        scale_by_learning_rate(lr),
    )


def _maximize_sparse(maximize: bool) -> optax.GradientTransformation | None:
    if not maximize:
        return None
    negate = lambda g: sparse.BCOO((-g.data, g.indices), shape=g.shape) if _is_bcoo(g) else -g
    return optax.stateless(lambda updates, params: tree_map(negate, updates, is_leaf=_is_bcoo))
