"""Simulated annealing: Metropolis acceptance, four cooling schedules, three proposals, restarts,
many chains at once."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_port.gradient_free._common import (
    Strategy,
    check_bounds,
    check_choice,
    check_int,
    check_positive,
    check_scale,
    draw,
    iteration_key,
    repair,
    sanitize,
    update_best,
)

__all__ = ["COOLING_SCHEDULES", "PROPOSALS", "AnnealingState", "simulated_annealing", "temperature"]

COOLING_SCHEDULES = ("exponential", "linear", "logarithmic", "fast")
"""The cooling schedules `temperature` knows."""
PROPOSALS = ("gaussian", "cauchy", "reflect")
"""The neighbour proposals: a Gaussian or Cauchy step (clipped to the bounds, if any), or a
Gaussian step reflected at the bounds."""
RESTARTS = (None, "best", "random")


class AnnealingState(NamedTuple):
    """The state of `simulated_annealing` with `C` chains in `d` dimensions.

    Attributes:
        key: the run's key; iteration $t$ draws from `fold_in(key, t)`.
        iteration: completed `tell`s (0 before the starting points are evaluated).
        x: `(C, d)` current point of each chain.
        fx: `(C,)` its value ($+\\infty$ before it is known).
        step: `(C,)` proposals each chain made since its (re)start: the $k$ of the temperature.
        stall: `(C,)` proposals since the chain last improved its own best.
        chain_best: `(C,)` the best value each chain reached since its (re)start.
        best_x: `(d,)` the best point evaluated so far.
        best_f: its value.
    """

    key: jax.Array
    iteration: jax.Array
    x: jax.Array
    fx: jax.Array
    step: jax.Array
    stall: jax.Array
    chain_best: jax.Array
    best_x: jax.Array
    best_f: jax.Array


def temperature(
    schedule: str,
    k: Any,
    initial_temperature: float,
    *,
    cooling_rate: float = 0.95,
    final_temperature: float = 1e-3,
    horizon: int | None = None,
) -> jax.Array:
    """The temperature $T_k$ after $k$ proposals under a cooling schedule ($T_0$ = initial).

    $$
    \\begin{aligned}
    \\text{exponential:}\\quad & T_k = T_0\\,\\alpha^k \\\\
    \\text{linear:}\\quad & T_k = T_0 + (T_\\text{final} - T_0)\\min(k/K, 1) \\\\
    \\text{logarithmic (Boltzmann):}\\quad & T_k = T_0 \\ln 2 / \\ln(k + 2) \\\\
    \\text{fast (Cauchy):}\\quad & T_k = T_0 / (1 + k)
    \\end{aligned}
    $$

    with $\\alpha$ = `cooling_rate` and $K$ = `horizon` (the number of proposals of the run).

    Examples:
        >>> float(temperature("fast", 3, 2.0))
        0.5
    """
    k = jnp.asarray(k)
    dtype = jnp.result_type(float)
    kf = k.astype(dtype)
    if schedule == "exponential":
        return initial_temperature * jnp.asarray(cooling_rate, dtype) ** kf
    if schedule == "linear":
        fraction = jnp.minimum(kf / horizon, 1)
        return initial_temperature + (final_temperature - initial_temperature) * fraction
    if schedule == "logarithmic":
        return initial_temperature * math.log(2) / jnp.log(kf + 2)
    if schedule == "fast":
        return initial_temperature / (1 + kf)
    raise ValueError(f"schedule must be one of {COOLING_SCHEDULES}; got {schedule!r}")


def simulated_annealing(
    dim: int,
    *,
    bounds: Any = None,
    chains: int = 1,
    schedule: str = "exponential",
    initial_temperature: float = 1.0,
    cooling_rate: float = 0.95,
    final_temperature: float = 1e-3,
    horizon: int | None = None,
    proposal: str = "gaussian",
    step_size: Any = None,
    restart: str | None = None,
    restart_after: int = 100,
    move: str = "all",
) -> Strategy:
    """Simulated annealing with Metropolis acceptance, on `chains` independent chains at once.

    Each iteration every chain $c$ at $x_c$ proposes $x' = x_c + s\\,z$ ($z$ standard Gaussian or
    Cauchy per coordinate, $s$ = `step_size`) and moves there if

    $$ \\Delta = f(x') - f(x_c) \\le 0 \\quad\\text{or}\\quad u < e^{-\\Delta / T_{k_c}},
    \\qquad u \\sim U[0, 1), $$

    where $T_k$ is `temperature(schedule, k, initial_temperature, ...)` and $k_c$ counts the
    chain's proposals since its (re)start. Proposals outside `bounds` are clipped onto them
    (`"gaussian"`, `"cauchy"`) or reflected at them (`"reflect"`, a Gaussian step). Iteration 0
    evaluates the starting points (every chain starts at `x0`, or at row $c$ of a `(chains, dim)`
    `x0`), so `popsize = chains` candidates per iteration.

    With `restart="best"` a chain whose own best has not improved for `restart_after` proposals
    jumps to the best point found by any chain; with `restart="random"` to a uniform point inside
    `bounds` (its first proposal from there is accepted, as the point's value is unknown). Either
    way its temperature starts again from $T_0$.

    Args:
        dim: the number of coordinates.
        bounds: `(lower, upper)` arrays of shape `(dim,)` (scalars broadcast), or None.
        chains: independent chains run in parallel (the population size).
        schedule: one of `"exponential"`, `"linear"`, `"logarithmic"`, `"fast"`.
        initial_temperature: $T_0 > 0$.
        cooling_rate: $\\alpha \\in (0, 1)$ of the exponential schedule.
        final_temperature: $T_\\text{final} > 0$ the linear schedule reaches after `horizon`
            proposals.
        horizon: proposals per chain of the linear schedule; `minimize` sets it to the run's length.
        proposal: `"gaussian"`, `"cauchy"` or `"reflect"`.
        step_size: $s$, a scalar or a `(dim,)` array; default 0.1·(upper − lower) with bounds,
            else 1.
        restart: None, `"best"` or `"random"` (needs bounds).
        restart_after: proposals without improvement before a chain restarts.
        move: `"all"` coordinates per proposal, or `"one"`: iteration $t \\ge 1$ moves only
            coordinate $(t - 1) \\bmod d$ (cyclic coordinate-wise annealing, strong on
            separable functions).

    Returns:
        A `Strategy` whose state is an `AnnealingState`.

    Raises:
        ValueError: on an unknown schedule, proposal or restart, a non-positive temperature, a
            cooling rate outside (0, 1), a linear schedule without a horizon, or `"reflect"` /
            `"random"` without bounds.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> sa = simulated_annealing(2, chains=4)
        >>> state = sa.init(jax.random.key(0), jnp.zeros(2))
        >>> x, state = sa.ask(state)
        >>> state = sa.tell(state, x, jnp.sum(x**2, axis=1))
        >>> x.shape
        (4, 2)
    """
    chains = check_int("chains", chains, 1)
    check_choice("schedule", schedule, COOLING_SCHEDULES)
    check_choice("proposal", proposal, PROPOSALS)
    check_choice("move", move, ("all", "one"))
    if restart not in RESTARTS:
        raise ValueError(f"restart must be None, 'best' or 'random'; got {restart!r}")
    restart_after = check_int("restart_after", restart_after, 1)
    t0 = check_positive("initial_temperature", initial_temperature)
    check_positive("final_temperature", final_temperature)
    if not 0 < cooling_rate < 1:
        raise ValueError(f"cooling_rate must lie in (0, 1); got {cooling_rate!r}")
    if schedule == "linear":
        if horizon is None:
            raise ValueError(
                "the linear schedule needs horizon= (proposals per chain); minimize sets it"
            )
        horizon = check_int("horizon", horizon, 1)
    box = check_bounds(bounds, dim)
    if box is None and proposal == "reflect":
        raise ValueError("proposal='reflect' reflects at the bounds: pass bounds=(lower, upper)")
    if box is None and restart == "random":
        raise ValueError("restart='random' draws a point inside the bounds: pass bounds")
    step_size = check_scale("step_size", step_size, dim, box, unbounded=1.0)
    mode = "reflect" if proposal == "reflect" else "clip"

    def temp(k):
        return temperature(
            schedule,
            k,
            t0,
            cooling_rate=cooling_rate,
            final_temperature=final_temperature,
            horizon=horizon,
        )

    def draws(key, iteration):
        spec = {
            "step": ((chains, dim), "cauchy" if proposal == "cauchy" else "normal"),
            "accept": ((chains,), "uniform"),
        }
        if restart == "random":
            spec["restart"] = ((chains, dim), "uniform")
        return draw(iteration_key(key, iteration), spec, jnp.result_type(float))

    def init(key, x0):
        x0 = jnp.asarray(x0)
        if x0.shape not in ((dim,), (chains, dim)):
            raise ValueError(f"x0 must have shape ({dim},) or ({chains}, {dim}); got {x0.shape}")
        x = jnp.broadcast_to(x0, (chains, dim))
        inf = jnp.full((chains,), jnp.inf, x.dtype)
        zeros = jnp.zeros((chains,), jnp.int32)
        return AnnealingState(
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            x=x,
            fx=inf,
            step=zeros,
            stall=zeros,
            chain_best=inf,
            best_x=x[0],
            best_f=jnp.array(jnp.inf, x.dtype),
        )

    def ask(state):
        d = draws(state.key, state.iteration)
        step = jnp.asarray(step_size, state.x.dtype) * d["step"].astype(state.x.dtype)
        if move == "one":
            step = jnp.where(jnp.arange(dim) == (state.iteration - 1) % dim, step, 0)
        moved = state.x + step
        moved = repair(moved, box, mode)
        return jnp.where(state.iteration == 0, state.x, moved), state

    def tell(state, candidates, values):
        values = sanitize(jnp.asarray(values, state.fx.dtype))
        d = draws(state.key, state.iteration)
        proposing = state.iteration > 0
        delta = values - state.fx
        t = temp(state.step).astype(values.dtype)
        accept = (delta <= 0) | (d["accept"] < jnp.exp(-delta / t))
        x = jnp.where(accept[:, None], candidates, state.x)
        fx = jnp.where(accept, values, state.fx)
        improved = values < state.chain_best
        chain_best = jnp.minimum(values, state.chain_best)
        stall = jnp.where(improved | ~proposing, 0, state.stall + 1)
        step = state.step + proposing.astype(jnp.int32)
        best_x, best_f = update_best(state.best_x, state.best_f, candidates, values)
        if restart is not None:
            again = stall >= restart_after
            if restart == "best":
                new_x, new_f = jnp.broadcast_to(best_x, x.shape), best_f
            else:
                lower, upper = (jnp.asarray(b, x.dtype) for b in box)
                new_x, new_f = lower + d["restart"] * (upper - lower), jnp.inf
            x = jnp.where(again[:, None], new_x, x)
            fx = jnp.where(again, new_f, fx)
            chain_best = jnp.where(again, new_f, chain_best)
            step = jnp.where(again, 0, step)
            stall = jnp.where(again, 0, stall)
        return AnnealingState(
            key=state.key,
            iteration=state.iteration + 1,
            x=x,
            fx=fx,
            step=step,
            stall=stall,
            chain_best=chain_best,
            best_x=best_x,
            best_f=best_f,
        )

    return Strategy(init, ask, tell, draws, chains, "simulated_annealing")
