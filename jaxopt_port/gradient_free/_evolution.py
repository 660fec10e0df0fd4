"""Differential evolution (Storn & Price 1997): rand/1/bin and best/1/bin with dithering."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_port.gradient_free._common import (
    BOUNDARY_MODES,
    Strategy,
    check_bounds,
    check_choice,
    check_int,
    check_positive,
    check_probability,
    draw,
    initial_population,
    iteration_key,
    repair,
    sanitize,
    update_best,
)

__all__ = ["DE_STRATEGIES", "EvolutionState", "differential_evolution", "distinct_indices"]

DE_STRATEGIES = ("rand1bin", "best1bin")
"""Differential evolution's mutation strategies (scipy's names): a random or the best base vector,
one difference vector, binomial crossover."""


class EvolutionState(NamedTuple):
    """The state of `differential_evolution` (fields as in `GeneticState`)."""

    key: jax.Array
    iteration: jax.Array
    population: jax.Array
    fitness: jax.Array
    best_x: jax.Array
    best_f: jax.Array


def distinct_indices(uniforms: jax.Array, size: int, rows: jax.Array | None = None) -> jax.Array:
    """For each row $i$, indices in $[0, P)$ distinct from $i$ and from each other.

    Index $j$ of row $i$ is $\\lfloor u_{ij} (P - 1 - j) \\rfloor$, then raised by one for every
    excluded index (row $i$ itself and the indices drawn before it), taken in ascending order, that
    it reaches: a uniform draw among the indices not yet used. `rows` (default $0, 1, \\ldots$)
    names the member each row of `uniforms` draws for.
    """
    count = uniforms.shape[1]
    if rows is None:
        rows = jnp.arange(uniforms.shape[0], dtype=jnp.int32)
    taken = [jnp.asarray(rows, jnp.int32)]
    ordered = list(taken)  # the excluded indices in ascending order, kept by insertion
    for j in range(count):
        r = jnp.floor(uniforms[:, j] * (size - 1 - j)).astype(jnp.int32)
        for excluded in ordered:
            r = r + (r >= excluded)
        taken.append(r)
        # insert r into the ascending list with compare-exchanges (no sort: XLA:CPU's sort of a
        # few columns cost more than the rest of a DE generation's index work)
        carry, merged = r, []
        for value in ordered:
            merged.append(jnp.minimum(value, carry))
            carry = jnp.maximum(value, carry)
        ordered = [*merged, carry]
    return jnp.stack(taken[1:], axis=1)


def _recycled_uniforms(u: jax.Array, rate: float) -> jax.Array:
    """Fresh uniforms from the crossover uniforms: $u/CR$ where $u < CR$, else $(u - CR)/(1 - CR)$.

    Given which side of $CR$ it fell on, $u$ is uniform on that side, so the rescaled value is a
    uniform on $[0, 1)$ independent of the crossover decision (and of the mutant, which does not
    use $u$). An out-of-bounds gene takes its replacement from it instead of from a draw of its
    own, which halves the random numbers a generation needs (threefry dominates a generation's
    time on cheap objectives).
    """
    low = jnp.maximum(rate, jnp.finfo(u.dtype).tiny)
    high = jnp.maximum(1.0 - rate, jnp.finfo(u.dtype).tiny)
    return jnp.where(u < rate, u / low, (u - rate) / high)


def differential_evolution(
    dim: int,
    *,
    bounds: Any = None,
    popsize: int | None = None,
    strategy: str = "best1bin",
    mutation: float | tuple[float, float] = (0.5, 1.0),
    recombination: float = 0.7,
    boundary: str = "random",
    init: str = "latinhypercube",
    init_scale: float = 1.0,
    updating: str = "deferred",
) -> Strategy:
    """Differential evolution with binomial crossover and greedy selection (scipy's defaults).

    For each member $x_i$ a mutant is built from members $r_1, r_2, r_3$ distinct from $i$ and
    from each other (`distinct_indices`):

    $$ v_i = x_{r_1} + F (x_{r_2} - x_{r_3}) \\;(\\text{rand1bin}), \\qquad
       v_i = x_\\text{best} + F (x_{r_1} - x_{r_2}) \\;(\\text{best1bin}); $$

    the trial takes gene $j$ from $v_i$ if $u_{ij} <$ `recombination` or $j = j_\\text{rand}(i)$,
    else from $x_i$, is brought inside `bounds` (`boundary`), and replaces $x_i$ if its value
    is $\\le f(x_i)$. With `mutation=(lo, hi)` (dithering) $F \\sim U[lo, hi)$ is drawn once per
    generation. Iteration 0 evaluates the starting population (`x0` in row 0, the rest spread over
    `bounds` by `init`, or `x0 + init_scale·z` without bounds). With `updating="deferred"` the
    members are updated together after each generation, and each `ask` returns the whole
    generation's trials (the fast form). With `updating="immediate"` (scipy's default) each `ask`
    returns ONE trial, for member $i = t \\bmod P$ in iteration $t$ (the first $P$ iterations
    evaluate the starting members one by one), so later members of a generation use earlier
    members' replacements and the current best; $F$ is dithered once per generation (drawn in the
    iteration of member 0).

    Args:
        dim: the number of coordinates.
        bounds: `(lower, upper)` arrays, or None.
        popsize: members ($\\ge 4$); default $15\\,d$ like scipy.
        strategy: `"best1bin"` (scipy's default) or `"rand1bin"`.
        mutation: $F$, or a `(lo, hi)` range to dither in.
        recombination: the crossover probability $CR \\in [0, 1]$.
        boundary: `"random"` (scipy's rule: an out-of-bounds gene is drawn again uniformly inside
            the bounds; the uniform is the gene's crossover uniform $u$ rescaled, $u/CR$ if
            $u < CR$ else $(u - CR)/(1 - CR)$, uniform and independent of the crossover decision
            given it, which saves a second draw per gene), `"clip"` or `"reflect"`.
        init: the starting population inside `bounds`: `"latinhypercube"` (scipy's default: row
            $i$ of coordinate $j$ in stratum $\\pi_j(i)$ of $P$ equal strata, $\\pi_j$ a random
            permutation, uniform within it) or `"random"` (uniform). Row 0 is `x0` either way.
        init_scale: spread of the random starting population without bounds.
        updating: `"deferred"` (one generation per `ask`) or `"immediate"` (one member per
            `ask`, scipy's default).

    Returns:
        A `Strategy` whose state is an `EvolutionState`.

    Raises:
        ValueError: on an unknown strategy or boundary, fewer than 4 members, a non-positive $F$,
            or $CR$ outside [0, 1].

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> de = differential_evolution(2, popsize=8, bounds=(-1.0, 1.0))
        >>> state = de.init(jax.random.key(0), jnp.zeros(2))
        >>> de.ask(state)[0].shape
        (8, 2)
    """
    check_choice("strategy", strategy, DE_STRATEGIES)
    check_choice("boundary", boundary, (*BOUNDARY_MODES, "random"))
    check_choice("init", init, ("latinhypercube", "random"))
    check_choice("updating", updating, ("deferred", "immediate"))
    immediate = updating == "immediate"
    popsize = check_int("popsize", 15 * dim if popsize is None else popsize, 4)
    dither = isinstance(mutation, (tuple, list))
    if dither:
        if len(mutation) != 2 or not 0 < mutation[0] <= mutation[1]:
            raise ValueError(
                f"mutation must be F > 0 or a range (lo, hi) with 0 < lo <= hi; got {mutation!r}"
            )
        for f in mutation:
            check_positive("mutation", f)
    else:
        check_positive("mutation", mutation)
    recombination = check_probability("recombination", recombination)
    check_positive("init_scale", init_scale)
    box = check_bounds(bounds, dim)
    count = 2 if strategy == "best1bin" else 3

    trials = 1 if immediate else popsize

    def draws(key, iteration):
        spec = {
            "members": ((trials, count), "uniform"),
            "crossover": ((trials, dim), "uniform"),
            "forced": ((trials,), dim),
            "dither": ((), "uniform"),
        }
        return draw(iteration_key(key, iteration), spec, jnp.result_type(float))

    def init(key, x0):
        x0 = jnp.asarray(x0)
        if x0.shape not in ((dim,), (popsize, dim)):
            raise ValueError(f"x0 must have shape ({dim},) or ({popsize}, {dim}); got {x0.shape}")
        start, key = jax.random.split(key)
        spec = {"uniform": ((popsize, dim), "uniform"), "strata": ((popsize, dim), "uniform"),
                "normal": ((popsize, dim), "normal")}  # fmt: skip
        d = draw(start, spec, x0.dtype)
        uniforms, normals = d["uniform"], d["normal"]
        if init == "latinhypercube":
            uniforms = (jnp.argsort(d["strata"], axis=0) + uniforms) / popsize
        population = initial_population(uniforms, normals, x0, box, init_scale)
        population = repair(population, box, "clip")
        return EvolutionState(
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            population=population,
            fitness=jnp.full((popsize,), jnp.inf, x0.dtype),
            best_x=population[0],
            best_f=jnp.array(jnp.inf, x0.dtype),
        )

    def member(iteration):
        """The member an immediate-updating iteration works on."""
        return jnp.asarray(iteration % popsize, jnp.int32)

    def ask(state):
        d = draws(state.key, state.iteration)
        pop = state.population
        dtype = pop.dtype
        if immediate:  # F of this generation: drawn in the iteration of member 0
            start = state.iteration - member(state.iteration)
            u = draws(state.key, start)["dither"] if dither else None
            rows = member(state.iteration)[None]
        else:
            u, rows = d["dither"], None
        if dither:
            f = mutation[0] + u.astype(dtype) * (mutation[1] - mutation[0])
        else:
            f = jnp.asarray(mutation, dtype)
        r = distinct_indices(d["members"], popsize, rows)
        if strategy == "best1bin":
            base = pop[jnp.argmin(state.fitness)][None, :]
            mutant = base + f * (pop[r[:, 0]] - pop[r[:, 1]])
        else:
            mutant = pop[r[:, 0]] + f * (pop[r[:, 1]] - pop[r[:, 2]])
        forced = d["forced"]
        take = (d["crossover"] < recombination) | (jnp.arange(dim)[None, :] == forced[:, None])
        current = pop[rows] if immediate else pop
        trial = jnp.where(take, mutant, current)
        if boundary != "random" or box is None:
            trial = repair(trial, box, "clip" if boundary == "random" else boundary)
        else:
            lower, upper = (jnp.asarray(b, dtype) for b in box)
            outside = (trial < lower) | (trial > upper)
            fresh = _recycled_uniforms(d["crossover"], recombination).astype(dtype)
            trial = jnp.where(outside, lower + fresh * (upper - lower), trial)
        if immediate:
            initial = state.iteration < popsize
            return jnp.where(initial, pop[rows], trial), state
        return jnp.where(state.iteration == 0, pop, trial), state

    def tell(state, candidates, values):
        values = sanitize(jnp.asarray(values, state.fitness.dtype))
        best_x, best_f = update_best(state.best_x, state.best_f, candidates, values)
        if immediate:
            i = member(state.iteration)
            better = values[0] <= state.fitness[i]
            population = state.population.at[i].set(
                jnp.where(better, candidates[0], state.population[i])
            )
            fitness = state.fitness.at[i].set(jnp.where(better, values[0], state.fitness[i]))
        else:
            better = values <= state.fitness
            population = jnp.where(better[:, None], candidates, state.population)
            fitness = jnp.where(better, values, state.fitness)
        return EvolutionState(
            key=state.key,
            iteration=state.iteration + 1,
            population=population,
            fitness=fitness,
            best_x=best_x,
            best_f=best_f,
        )

    return Strategy(init, ask, tell, draws, trials, "differential_evolution")
