"""Gradient-free section runner: the JAX trajectories against the NumPy reference
(`parity.reference.gradient_free`), driven by the same draws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from parity.reference.gradient_free import (
    CASES,
    REFERENCES,
    TEST_FUNCTIONS,
    es_gradient_reference,
    function_by_name,
)


def jax_trajectories(method, options, function, dim, bounds, keys, x0s, iterations):
    """Run `jaxopt_port.gradient_free` on every (key, x0) in one compiled, vmapped call.

    Returns `(start, states, draws)` as NumPy: the starting states, the states after each of
    `iterations` ask/tell steps (leading axes: case, iteration) and each iteration's draws.
    """
    import jax
    import jax.numpy as jnp

    from jaxopt_port import gradient_free

    strategy = gradient_free.METHODS[method](dim, bounds=bounds, **options)
    fun = function_by_name(function)

    def one(key, x0):
        start = strategy.init(key, x0)

        def step(state, _):
            draws = strategy.draws(state.key, state.iteration)
            candidates, state = strategy.ask(state)
            state = strategy.tell(state, candidates, jax.vmap(lambda x: fun(x, jnp))(candidates))
            return state, (state, draws)

        _, (states, draws) = jax.lax.scan(step, start, None, length=iterations)
        return start, states, draws

    out = jax.jit(jax.vmap(one))(keys, x0s)

    def host(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree_util.tree_map(host, out)


def _difference(a, b) -> float:
    """The largest $|a - b| / \\max(1, |b|)$: absolute for values up to 1, relative above (an
    objective of size $10^4$ carries rounding of $10^{-12}$ from its own summation order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        gap = np.where(same, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(b)))
    return float(np.nan_to_num(gap, nan=math.inf).max(initial=0.0))


def compare_trajectories(jax_states: dict, reference: dict) -> dict[str, float]:
    """The worst difference per state field, $|a - b| / \\max(1, |b|)$ (equal infinities count as
    equal)."""
    return {name: _difference(jax_states[name], value) for name, value in reference.items()}


def run_case(case, *, seeds: Sequence[int] = (0, 1), iterations: int = 30) -> dict[str, Any]:
    """JAX (float64) vs the reference on one `CASES` entry, for each seed.

    Returns `name`, `worst` (over fields), `fields` (worst per state field) and `states` (the JAX
    states, leading axes seed and iteration).
    """
    import jax
    import jax.numpy as jnp

    name, method, options, function, dim, half = case
    bounds = None if half is None else (-half, half)
    fun = function_by_name(function)
    with jax.enable_x64(True):
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        rng = np.random.default_rng(len(name))
        if function == "onemax":
            x0s = (rng.random((len(seeds), dim)) < 0.5).astype(np.float64)
        else:
            x0s = rng.uniform(-(half or 2.0) / 2, (half or 2.0) / 2, (len(seeds), dim))
        start, states, draws = jax_trajectories(
            method, options, function, dim, bounds, keys, jnp.asarray(x0s), iterations
        )
    worst: dict[str, float] = {}
    for c in range(len(seeds)):
        begin = {k: v[c] for k, v in start._asdict().items() if k != "key"}
        steps = {k: v[c] for k, v in draws.items()}
        with np.errstate(all="ignore"):
            reference = REFERENCES[method](fun, begin, steps, dim=dim, bounds=bounds, **options)
        states_c = {k: v[c] for k, v in states._asdict().items() if k != "key"}
        for field, gap in compare_trajectories(states_c, reference).items():
            worst[field] = max(worst.get(field, 0.0), gap)
    jax_states = {k: v for k, v in states._asdict().items() if k != "key"}
    return {"name": name, "worst": max(worst.values()), "fields": worst, "states": jax_states}


def run_gradient_free_parity(
    *, tolerance: float = 1e-12, seeds: Sequence[int] = (0, 1), iterations: int = 30
) -> list[dict[str, Any]]:
    """Every `CASES` entry and the ES gradient estimator, JAX vs this reference in float64.

    Returns plain dict rows: `name`, `worst` (the largest absolute difference over every state
    field and iteration), `passed` (`worst <= tolerance`), `tolerance`.
    """
    rows = []
    for case in CASES:
        row = run_case(case, seeds=seeds, iterations=iterations)
        rows.append({"name": f"gradient_free/{row['name']}", "worst": row["worst"],
                     "passed": row["worst"] <= tolerance, "tolerance": tolerance})  # fmt: skip
    for shaping in ("none", "centered_rank"):
        worst = es_gradient_parity(shaping)
        rows.append({"name": f"gradient_free/es_gradient-{shaping}", "worst": worst,
                     "passed": worst <= tolerance, "tolerance": tolerance})  # fmt: skip
    return rows


def es_gradient_parity(
    fitness_shaping: str, *, pairs: int = 16, dim: int = 6, sigma: float = 0.3
) -> float:
    """The worst difference between `gradient_free.es_gradient`'s first three estimates and the
    reference's, on Rastrigin, in float64."""
    import jax
    import jax.numpy as jnp

    from jaxopt_port import gradient_free

    loss = TEST_FUNCTIONS["rastrigin"][0]
    with jax.enable_x64(True):
        key = jax.random.key(7)
        theta = jnp.asarray(np.random.default_rng(3).uniform(-2, 2, dim))
        tx = gradient_free.es_gradient(
            lambda p: loss(p, jnp),
            key=key,
            sigma=sigma,
            num_pairs=pairs,
            fitness_shaping=fitness_shaping,
        )
        state = tx.init(theta)
        update = jax.jit(tx.update)
        worst = 0.0
        for t in range(3):
            grad, state = update(theta, state, theta)
            noise = np.asarray(
                jax.random.normal(jax.random.fold_in(key, t), (pairs, dim), jnp.float64)
            )
            expected = es_gradient_reference(loss, np.asarray(theta), noise, sigma, fitness_shaping)
            worst = max(worst, _difference(grad, expected))
            theta = theta - 0.01 * grad
    return worst
