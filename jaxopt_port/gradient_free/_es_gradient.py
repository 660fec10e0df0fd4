"""An evolution-strategies gradient estimator (OpenAI-ES, antithetic sampling) as an Optax
transformation."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from jaxopt_port import parallel
from jaxopt_port.gradient_free._common import check_choice, check_int, check_positive
from jaxopt_port.gradient_free._minimize import evaluate_population

__all__ = ["ESGradientState", "centered_ranks", "es_gradient"]

FITNESS_SHAPINGS = ("centered_rank", "none")


class ESGradientState(NamedTuple):
    """State of `es_gradient`: the number of estimates made (`count`) and the base `key`;
    estimate $t$ draws its perturbations from `fold_in(key, t)`."""

    count: jax.Array
    key: jax.Array


def centered_ranks(values: jax.Array) -> jax.Array:
    """Ranks scaled to $[-1/2, 1/2]$: $r_i/(n-1) - 1/2$, $r_i$ the stable ascending rank.

    Examples:
        >>> centered_ranks(jnp.array([3.0, -1.0, 10.0])).tolist()
        [0.0, -0.5, 0.5]
    """
    n = values.shape[0]
    order = jnp.argsort(values, stable=True)
    ranks = jnp.zeros(n, values.dtype).at[order].set(jnp.arange(n, dtype=values.dtype))
    return ranks / (n - 1) - 0.5


def es_gradient(
    loss_fn: Callable[..., jax.Array],
    *,
    key: jax.Array,
    sigma: float = 0.1,
    num_pairs: int = 32,
    fitness_shaping: str = "none",
    mesh: Mesh | None = None,
    axis: str = parallel.DATA_AXIS,
) -> optax.GradientTransformationExtraArgs:
    """Replace the incoming updates by an antithetic evolution-strategies estimate of
    $\\nabla \\text{loss}$ (Salimans et al. 2017), so gradient-based optimizers train on losses
    without gradients: `optax.chain(es_gradient(loss), optim.adam(lr=1e-2))`.

    With $\\theta$ the flattened parameters and $\\varepsilon_i \\sim \\mathcal N(0, I)$,
    $i = 1..n$:

    $$ \\hat g = \\frac{1}{2 n \\sigma} \\sum_{i=1}^{n}
       \\big(F(\\theta + \\sigma\\varepsilon_i) - F(\\theta - \\sigma\\varepsilon_i)\\big)\\,
       \\varepsilon_i , $$

    where $F$ is the loss (`fitness_shaping="none"`, an unbiased estimate of the gradient of the
    Gaussian-smoothed loss, exact for quadratics) or its centred rank among the $2n$ values
    (`"centered_rank"`, `centered_ranks`, robust to outliers and scale). The $2n$ losses are
    evaluated in one vmapped call, split over `mesh` if given.

    The incoming updates are ignored (pass the gradients you do not have as zeros, or the params
    themselves); `params` is required. Extra keyword arguments of `update` (e.g. `batch=`) are
    passed on to `loss_fn(params, **extra_args)`.

    Args:
        loss_fn: `loss_fn(params, **extra_args) -> scalar`, traceable by JAX.
        key: PRNG key of the perturbations.
        sigma: perturbation scale $\\sigma > 0$.
        num_pairs: $n$, antithetic pairs per estimate ($2n$ loss evaluations).
        fitness_shaping: `"none"` or `"centered_rank"`.
        mesh: a `jax.sharding.Mesh` to split the $2n$ evaluations over.
        axis: its axis to split over.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `ESGradientState`.

    Raises:
        ValueError: for `sigma` ≤ 0, `num_pairs` < 1, an unknown shaping, or `params=None`.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> loss = lambda p: jnp.sum(jnp.floor(4 * p["w"]) ** 2)  # piecewise constant
        >>> tx = optax.chain(es_gradient(loss, key=jax.random.key(0), sigma=0.5), optax.sgd(0.05))
        >>> params = {"w": jnp.full(3, 2.0)}
        >>> state = tx.init(params)
        >>> for _ in range(60):
        ...     updates, state = tx.update(params, state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> float(loss(params)) < float(loss({"w": jnp.full(3, 2.0)}))
        True
    """
    sigma = check_positive("sigma", sigma)
    num_pairs = check_int("num_pairs", num_pairs, 1)
    check_choice("fitness_shaping", fitness_shaping, FITNESS_SHAPINGS)

    def init(params):
        del params
        return ESGradientState(count=jnp.zeros((), jnp.int32), key=key)

    def update(updates, state, params=None, **extra_args):
        del updates
        if params is None:
            raise ValueError("es_gradient evaluates the loss around params: pass params to update")
        flat, unravel = ravel_pytree(params)
        noise = jax.random.normal(
            jax.random.fold_in(state.key, state.count), (num_pairs, flat.size), flat.dtype
        )
        points = jnp.concatenate([flat + sigma * noise, flat - sigma * noise])
        values = evaluate_population(
            lambda v: loss_fn(unravel(v), **extra_args), points, mesh=mesh, axis=axis
        ).astype(flat.dtype)
        if fitness_shaping == "centered_rank":
            values = centered_ranks(values)
        grad = (values[:num_pairs] - values[num_pairs:]) @ noise / (2 * num_pairs * sigma)
        return unravel(grad), ESGradientState(count=state.count + 1, key=state.key)

    return optax.GradientTransformationExtraArgs(init, update)
