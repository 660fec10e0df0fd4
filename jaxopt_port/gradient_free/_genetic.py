"""A generational genetic algorithm: real, binary and integer genomes; three selections, four
crossovers, three mutations; elitism; bounds."""

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
    check_scale,
    draw,
    initial_population,
    iteration_key,
    repair,
    sanitize,
    update_best,
)

__all__ = ["CROSSOVERS", "GENOMES", "MUTATIONS", "SELECTIONS", "GeneticState", "genetic"]

GENOMES = ("real", "binary", "integer")
"""The genome kinds: real vectors, bit strings (0/1) and integer vectors (within the bounds)."""
SELECTIONS = ("tournament", "roulette", "rank")
"""Parent selection: tournament, fitness-proportional (roulette) and linear-rank selection."""
CROSSOVERS = ("one_point", "uniform", "blend", "sbx")
"""Crossover operators: one-point, uniform, blend (BLX-$\alpha$) and simulated binary (SBX)."""
MUTATIONS = ("gaussian", "polynomial", "bit_flip")
"""Mutation operators: Gaussian, polynomial (Deb's) and bit flip (binary genomes)."""


class GeneticState(NamedTuple):
    """The state of `genetic`: a population of `P` genomes of `d` genes.

    Attributes:
        key: the run's key; iteration $t$ draws from `fold_in(key, t)`.
        iteration: completed `tell`s (generation 0 is the starting population).
        population: `(P, d)` genomes (binary and integer genes are stored as whole floats).
        fitness: `(P,)` their objective values ($+\\infty$ before evaluation).
        best_x: `(d,)` the best genome evaluated so far.
        best_f: its value.
    """

    key: jax.Array
    iteration: jax.Array
    population: jax.Array
    fitness: jax.Array
    best_x: jax.Array
    best_f: jax.Array


def selection_weights(kind: str, fitness: jax.Array) -> jax.Array:
    """Roulette weights for minimisation: $w_i = f_\\max - f_i$ (`"roulette"`, non-finite values
    count as the worst finite one) or $w_i = P - r_i$ with $r_i$ the stable ascending rank
    (`"rank"`, best rank 0)."""
    size = fitness.shape[0]
    if kind == "rank":
        order = jnp.argsort(fitness, stable=True)
        ranks = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
        return (size - ranks).astype(fitness.dtype)
    finite = jnp.isfinite(fitness)
    worst = jnp.max(jnp.where(finite, fitness, -jnp.inf))
    f = jnp.where(finite, fitness, worst)
    return worst - f


def spin(weights: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Roulette-wheel indices: the number of cumulative weights $\\le u\\,\\sum w$ for each $u$
    (uniform indices if every weight is zero or the weights are not finite)."""
    size = weights.shape[0]
    total = jnp.sum(weights)
    usable = (total > 0) & jnp.isfinite(total)
    cumulative = jnp.cumsum(weights)
    spun = jnp.sum(cumulative[None, :] <= (uniforms * total)[:, None], axis=1)
    flat = jnp.floor(uniforms * size).astype(jnp.int32)
    return jnp.minimum(jnp.where(usable, spun, flat), size - 1)


def genetic(
    dim: int,
    *,
    bounds: Any = None,
    popsize: int = 50,
    genome: str = "real",
    selection: str = "tournament",
    tournament_size: int = 3,
    crossover: str | None = None,
    crossover_rate: float = 0.9,
    blend_alpha: float = 0.5,
    sbx_eta: float = 15.0,
    mutation: str | None = None,
    mutation_rate: float | None = None,
    mutation_scale: Any = None,
    polynomial_eta: float = 20.0,
    elitism: int = 1,
    boundary: str = "clip",
    init_scale: float = 1.0,
) -> Strategy:
    """A generational genetic algorithm with elitism.

    Generation $t \\ge 1$ keeps the `elitism` best genomes of the last generation unchanged (they
    are evaluated again) and fills the other $P - e$ slots with children: parents are selected in
    pairs, each pair is crossed over with probability `crossover_rate` (else copied), and every
    gene of every child is mutated with probability `mutation_rate`. Generation 0 evaluates the
    starting population: `x0` in row 0 and the other rows uniform in `bounds` (or
    `x0 + init_scale·z` without bounds; random bits for binary genomes), or a whole `(P, dim)` `x0`.

    Selection (for minimisation; each picks one parent per draw):

    - `"tournament"`: the best of `tournament_size` uniformly drawn genomes (first on ties).
    - `"roulette"`: probability $\\propto f_\\max - f_i$ (the worst genome is never picked).
    - `"rank"`: probability $\\propto P - r_i$, $r_i$ the rank (0 = best).

    Crossover of parents $p, q$ (children $c, c'$):

    - `"one_point"`: a cut $m \\in [1, d)$; $c = (p_{<m}, q_{\\ge m})$, $c' = (q_{<m}, p_{\\ge m})$.
    - `"uniform"`: each gene swapped with probability 1/2.
    - `"blend"` (BLX-$\\alpha$): $c_j = \\min(p_j, q_j) - \\alpha I_j + u\\,(1 + 2\\alpha) I_j$,
      $I_j = |p_j - q_j|$, a fresh $u \\sim U[0,1)$ per child and gene.
    - `"sbx"` (simulated binary, Deb & Agrawal 1995):
      $\\beta = (2u)^{1/(\\eta+1)}$ if $u \\le 1/2$ else $(2(1-u))^{-1/(\\eta+1)}$;
      $c = \\tfrac12[(1+\\beta)p + (1-\\beta)q]$, $c' = \\tfrac12[(1-\\beta)p + (1+\\beta)q]$.

    Mutation of a selected gene $x$:

    - `"gaussian"`: $x + \\sigma z$, $\\sigma$ = `mutation_scale`.
    - `"polynomial"` (Deb): $x + \\delta (u_b - \\ell_b)$ with $\\delta = (2u)^{1/(\\eta_m+1)} - 1$ if
      $u < 1/2$ else $1 - (2(1-u))^{1/(\\eta_m+1)}$ (needs bounds).
    - `"bit_flip"`: $1 - x$ (binary genomes).

    Real children are brought back inside `bounds` by clipping or reflection (`boundary`); integer
    children are rounded to the nearest integer, then clipped.

    Args:
        dim: genes per genome.
        bounds: `(lower, upper)`; required for integer genomes and polynomial mutation.
        popsize: $P$, genomes per generation (≥ 2).
        genome: `"real"`, `"binary"` (genes 0.0/1.0) or `"integer"` (whole floats in the bounds).
        selection: `"tournament"`, `"roulette"` or `"rank"`.
        tournament_size: genomes per tournament.
        crossover: `"one_point"`, `"uniform"`, `"blend"`, `"sbx"`; default `"sbx"` for real,
            `"uniform"` otherwise. Binary genomes allow only the first two.
        crossover_rate: probability that a pair is crossed over.
        blend_alpha: $\\alpha$ of BLX-$\\alpha$.
        sbx_eta: $\\eta$ of SBX.
        mutation: `"gaussian"`, `"polynomial"`, `"bit_flip"`; default `"bit_flip"` for binary,
            else `"gaussian"`.
        mutation_rate: per-gene probability; default $1/d$.
        mutation_scale: $\\sigma$ of Gaussian mutation (scalar or `(dim,)`); default
            0.1·(upper − lower) with bounds, else 0.1.
        polynomial_eta: $\\eta_m$ of polynomial mutation.
        elitism: genomes carried over unchanged ($0 \\le e < P$).
        boundary: `"clip"` or `"reflect"`.
        init_scale: spread of the random starting population without bounds.

    Returns:
        A `Strategy` whose state is a `GeneticState`.

    Raises:
        ValueError: on an unknown option, an option that does not fit the genome, a probability
            outside [0, 1], or missing bounds where they are needed.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> ga = genetic(3, popsize=8, genome="binary")
        >>> state = ga.init(jax.random.key(0), jnp.zeros(3))
        >>> genomes, state = ga.ask(state)
        >>> sorted(set(genomes.ravel().tolist())) in ([0.0], [0.0, 1.0], [1.0])
        True
    """
    check_choice("genome", genome, GENOMES)
    popsize = check_int("popsize", popsize, 2)
    elitism = check_int("elitism", elitism, 0)
    if elitism >= popsize:
        raise ValueError(f"elitism must be < popsize ({popsize}); got {elitism}")
    check_choice("selection", selection, SELECTIONS)
    tournament_size = check_int("tournament_size", tournament_size, 1)
    crossover = crossover or ("sbx" if genome == "real" else "uniform")
    check_choice("crossover", crossover, CROSSOVERS)
    mutation = mutation or ("bit_flip" if genome == "binary" else "gaussian")
    check_choice("mutation", mutation, MUTATIONS)
    check_choice("boundary", boundary, BOUNDARY_MODES)
    if genome == "binary" and crossover in ("blend", "sbx"):
        raise ValueError(
            f"crossover={crossover!r} makes real-valued genes; binary genomes take 'one_point' "
            "or 'uniform'"
        )
    if (genome == "binary") != (mutation == "bit_flip"):
        raise ValueError(
            f"mutation={mutation!r} does not fit genome={genome!r}: bit_flip is for binary "
            "genomes, gaussian/polynomial for real and integer ones"
        )
    if crossover == "one_point" and dim < 2:
        raise ValueError(f"one_point crossover needs at least 2 genes; got dim={dim}")
    crossover_rate = check_probability("crossover_rate", crossover_rate)
    mutation_rate = check_probability(
        "mutation_rate", 1.0 / dim if mutation_rate is None else mutation_rate
    )
    check_positive("blend_alpha", blend_alpha, allow_zero=True)
    check_positive("sbx_eta", sbx_eta, allow_zero=True)
    check_positive("polynomial_eta", polynomial_eta, allow_zero=True)
    check_positive("init_scale", init_scale)
    box = check_bounds(bounds, dim)
    if box is None and genome == "integer":
        raise ValueError("integer genomes need bounds=(lower, upper) for their range")
    if box is None and mutation == "polynomial":
        raise ValueError("polynomial mutation scales by the bound width: pass bounds")
    mutation_scale = check_scale("mutation_scale", mutation_scale, dim, box, unbounded=0.1)
    children = popsize - elitism
    pairs = (children + 1) // 2

    def draws(key, iteration):
        spec = {
            "select": ((2 * pairs, tournament_size), popsize)
            if selection == "tournament"
            else ((2 * pairs,), "uniform"),
            "crossover_apply": ((pairs,), "uniform"),
            "crossover": {
                "one_point": ((pairs,), dim - 1),
                "blend": ((2, pairs, dim), "uniform"),
            }.get(crossover, ((pairs, dim), "uniform")),
            "mutate": ((children, dim), "uniform"),
        }
        if mutation != "bit_flip":
            spec["mutation"] = ((children, dim), "normal" if mutation == "gaussian" else "uniform")
        out = draw(iteration_key(key, iteration), spec, jnp.result_type(float))
        if crossover == "one_point":
            out["crossover"] = out["crossover"] + 1  # the cut lies in [1, dim)
        return out

    def fix(x):
        if genome == "integer":
            return repair(jnp.round(x), box, "clip")
        if genome == "real":
            return repair(x, box, boundary)
        return x

    def init(key, x0):
        x0 = jnp.asarray(x0)
        if x0.shape not in ((dim,), (popsize, dim)):
            raise ValueError(f"x0 must have shape ({dim},) or ({popsize}, {dim}); got {x0.shape}")
        start, key = jax.random.split(key)
        spec = {"uniform": ((popsize, dim), "uniform"), "normal": ((popsize, dim), "normal")}
        d = draw(start, spec, x0.dtype)
        uniforms = d["uniform"]
        if x0.ndim == 2:
            population = fix(x0)
        elif genome == "binary":
            population = (uniforms < 0.5).astype(x0.dtype).at[0].set(x0)
        elif genome == "integer":
            lower, upper = (jnp.asarray(b, x0.dtype) for b in box)
            population = fix(jnp.floor(lower + uniforms * (upper - lower + 1))).at[0].set(fix(x0))
        else:
            population = fix(initial_population(uniforms, d["normal"], x0, box, init_scale))
        return GeneticState(
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            population=population,
            fitness=jnp.full((popsize,), jnp.inf, x0.dtype),
            best_x=population[0],
            best_f=jnp.array(jnp.inf, x0.dtype),
        )

    def select(fitness, d):
        if selection == "tournament":
            entrants = d["select"]
            return jnp.take_along_axis(
                entrants, jnp.argmin(fitness[entrants], axis=1)[:, None], axis=1
            )[:, 0]
        return spin(selection_weights(selection, fitness), d["select"].astype(fitness.dtype))

    def cross(p, q, d):
        if crossover == "one_point":
            head = jnp.arange(dim)[None, :] < d["crossover"][:, None]
            return jnp.where(head, p, q), jnp.where(head, q, p)
        if crossover == "uniform":
            swap = d["crossover"] < 0.5
            return jnp.where(swap, q, p), jnp.where(swap, p, q)
        if crossover == "blend":
            low, width = jnp.minimum(p, q), jnp.abs(p - q)
            u = d["crossover"].astype(p.dtype)
            span = (1 + 2 * blend_alpha) * width
            return low - blend_alpha * width + u[0] * span, low - blend_alpha * width + u[1] * span
        u = d["crossover"].astype(p.dtype)
        e = 1.0 / (sbx_eta + 1.0)
        beta = jnp.where(u <= 0.5, (2 * u) ** e, (1 / (2 * (1 - u))) ** e)
        return 0.5 * ((1 + beta) * p + (1 - beta) * q), 0.5 * ((1 - beta) * p + (1 + beta) * q)

    def mutate(x, d):
        hit = d["mutate"] < mutation_rate
        if mutation == "bit_flip":
            return jnp.where(hit, 1 - x, x)
        if mutation == "gaussian":
            scale = jnp.asarray(mutation_scale, x.dtype)
            return jnp.where(hit, x + scale * d["mutation"].astype(x.dtype), x)
        u = d["mutation"].astype(x.dtype)
        e = 1.0 / (polynomial_eta + 1.0)
        delta = jnp.where(u < 0.5, (2 * u) ** e - 1, 1 - (2 * (1 - u)) ** e)
        width = jnp.asarray(box[1] - box[0], x.dtype)
        return jnp.where(hit, x + delta * width, x)

    def ask(state):
        d = draws(state.key, state.iteration)
        pop, fitness = state.population, state.fitness
        parents = select(fitness, d)
        p, q = pop[parents[0::2]], pop[parents[1::2]]
        c, c2 = cross(p, q, d)
        crossed = (d["crossover_apply"] < crossover_rate)[:, None]
        c, c2 = jnp.where(crossed, c, p), jnp.where(crossed, c2, q)
        kids = jnp.stack([c, c2], axis=1).reshape(2 * pairs, dim)[:children]
        kids = fix(mutate(kids, d))
        elites = pop[jnp.argsort(fitness, stable=True)[:elitism]]
        candidates = jnp.concatenate([elites, kids])
        return jnp.where(state.iteration == 0, pop, candidates), state

    def tell(state, candidates, values):
        values = sanitize(jnp.asarray(values, state.fitness.dtype))
        best_x, best_f = update_best(state.best_x, state.best_f, candidates, values)
        return GeneticState(
            key=state.key,
            iteration=state.iteration + 1,
            population=candidates,
            fitness=values,
            best_x=best_x,
            best_f=best_f,
        )

    return Strategy(init, ask, tell, draws, popsize, "genetic")
