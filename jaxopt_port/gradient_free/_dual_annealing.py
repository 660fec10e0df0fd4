"""Dual annealing: generalized simulated annealing (Tsallis–Stariolo) with a local search, as
`scipy.optimize.dual_annealing` runs it, for many independent chains at once."""

from __future__ import annotations

import collections
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_port.gradient_free._common import (
    Strategy,
    check_bounds,
    check_int,
    check_positive,
    draw,
    initial_population,
    iteration_key,
    sanitize,
    update_best,
)

__all__ = ["DualAnnealingState", "dual_annealing", "visiting_temperature"]

_TAIL_LIMIT = 1e8
_MIN_VISIT_BOUND = 1e-10
# Phases of a chain: annealing proposals, finite-difference gradient, line-search trial, restart.
_ANNEAL, _GRADIENT, _LINE, _RESTART = 0, 1, 2, 3
_ARMIJO = 1e-4  # sufficient-decrease constant of the line search
_MAX_HALVINGS = 20  # backtracking steps before a line search gives up
_FTOL = 1e7 * 2.220446049250313e-16  # scipy L-BFGS-B's default factr × machine epsilon
_PGTOL = 1e-5  # scipy L-BFGS-B's default projected-gradient tolerance
_FD_STEP = 1e-8  # scipy L-BFGS-B's default absolute finite-difference step (`eps`)


class DualAnnealingState(NamedTuple):
    """The state of `dual_annealing` with `C` chains in `d` dimensions and an `m`-pair L-BFGS memory.

    Attributes:
        key: the run's key; iteration $t$ draws from `fold_in(key, t)`.
        iteration: completed `tell`s (0 before the starting points are evaluated).
        x: `(C, d)` current point of each chain.
        fx: `(C,)` its value.
        chain_x: `(C, d)` the best point of each chain (scipy's `xbest`).
        chain_f: `(C,)` its value (scipy's `ebest`).
        step: `(C,)` the position $j \\in [0, 2d)$ in the current Markov chain: $j < d$ moves every
            coordinate, $j \\ge d$ only coordinate $j - d$.
        anneal: `(C,)` the annealing iteration $i$ since the (re)start (the temperature's index).
        improved: `(C,)` whether the chain's best improved during the current Markov chain.
        phase: `(C,)` 0 annealing, 1 gradient, 2 line search, 3 restart.
        ls_x: `(C, d)` the local search's iterate.
        ls_f: `(C,)` its value.
        ls_grad: `(C, d)` its finite-difference gradient.
        ls_partial: `(C, d)` the gradient being assembled, one coordinate per evaluation.
        ls_coord: `(C,)` the coordinate the next gradient evaluation perturbs.
        ls_direction: `(C, d)` the search direction.
        ls_alpha: `(C,)` the step length of the next trial.
        ls_tries: `(C,)` halvings of the step so far in this line search.
        ls_iter: `(C,)` L-BFGS iterations of this local search.
        ls_s: `(C, m, d)` the L-BFGS memory of steps $s_k$ (a ring).
        ls_y: `(C, m, d)` the memory of gradient changes $y_k$.
        ls_count: `(C,)` pairs stored since the memory was last cleared.
        ls_step: `(C, d)` the step of the last accepted trial (its pair is stored once the new
            gradient is known).
        best_x: `(d,)` the best point evaluated so far.
        best_f: its value.
    """

    key: jax.Array
    iteration: jax.Array
    x: jax.Array
    fx: jax.Array
    chain_x: jax.Array
    chain_f: jax.Array
    step: jax.Array
    anneal: jax.Array
    improved: jax.Array
    phase: jax.Array
    ls_x: jax.Array
    ls_f: jax.Array
    ls_grad: jax.Array
    ls_partial: jax.Array
    ls_coord: jax.Array
    ls_direction: jax.Array
    ls_alpha: jax.Array
    ls_tries: jax.Array
    ls_iter: jax.Array
    ls_s: jax.Array
    ls_y: jax.Array
    ls_count: jax.Array
    ls_step: jax.Array
    best_x: jax.Array
    best_f: jax.Array


# The per-chain fields of `DualAnnealingState` (leading axis: chains), as one pytree to vmap over.
_Chain = collections.namedtuple(
    "_Chain",
    [f for f in DualAnnealingState._fields if f not in ("key", "iteration", "best_x", "best_f")],
)


def visiting_temperature(i: Any, initial_temp: float = 5230.0, visit: float = 2.62) -> jax.Array:
    """The temperature of annealing iteration $i$ (0-based) of generalized simulated annealing:

    $$ T_i = T_0 \\frac{2^{q_v - 1} - 1}{(i + 2)^{q_v - 1} - 1}. $$

    Examples:
        >>> float(visiting_temperature(0))
        5230.0
    """
    t1 = math.exp((visit - 1) * math.log(2.0)) - 1.0
    i = jnp.asarray(i)
    s = i.astype(jnp.result_type(float)) + 2.0
    return initial_temp * t1 / (jnp.exp((visit - 1) * jnp.log(s)) - 1.0)


def _visiting_constants(visit: float) -> tuple[float, float]:
    """`(factor4_p, factor6)` of the Tsallis visiting distribution (Tsallis & Stariolo 1996)."""
    factor2 = math.exp((4.0 - visit) * math.log(visit - 1.0))
    factor3 = math.exp((2.0 - visit) * math.log(2.0) / (visit - 1.0))
    factor4_p = math.sqrt(math.pi) * factor2 / (factor3 * (3.0 - visit))
    factor5 = 1.0 / (visit - 1.0) - 0.5
    factor6 = (
        math.pi
        * (1.0 - factor5)
        / math.sin(math.pi * (1.0 - factor5))
        / math.exp(math.lgamma(2.0 - factor5))
    )
    return factor4_p, factor6


def dual_annealing(
    dim: int,
    *,
    bounds: Any = None,
    chains: int = 1,
    initial_temp: float = 5230.0,
    restart_temp_ratio: float = 2e-5,
    visit: float = 2.62,
    accept: float = -5.0,
    no_local_search: bool = False,
    ls_maxiter: int | None = None,
    memory: int = 10,
) -> Strategy:
    """Generalized simulated annealing with a local search (`scipy.optimize.dual_annealing`).

    Each chain runs scipy's algorithm. Annealing iteration $i$ has temperature
    $T_i$ (`visiting_temperature`) and is a Markov chain of $2d$ proposals from the current point
    $x$: proposal $j < d$ moves every coordinate, proposal $j \\ge d$ only coordinate $j - d$, by a
    step from the Tsallis visiting distribution
    $$ \\Delta = \\frac{\\sigma(T_i)\\, z_1}{|z_2|^{(q_v - 1)/(3 - q_v)}},\\qquad
       \\sigma(T) = \\Big(\\frac{f_6}{f_4 T^{1/(q_v - 1)}}\\Big)^{-(q_v - 1)/(3 - q_v)} $$
    ($z_1, z_2$ standard normal, $f_4, f_6$ the distribution's constants; a step beyond $\\pm 10^8$
    is replaced by $\\pm 10^8 u$), wrapped into the box periodically. A better proposal is taken; a
    worse one with the generalized (Tsallis) acceptance probability
    $$ p = \\big[1 - (1 - q_a)\\,\\Delta E / T_i^{s}\\big]_+^{1/(1 - q_a)},\\qquad T_i^s = T_i/(i + 1). $$
    After a Markov chain in which the chain's best improved (and after the first one), a local
    search starts from that best: projected L-BFGS (`memory` pairs) with forward-difference
    gradients (one evaluation per coordinate, on the points scipy's L-BFGS-B probes with
    `jac=None`: $x_k + h_k$ with $h_k = 10^{-8}$, or $\\sqrt{\\epsilon}\\,\\mathrm{sign}(x_k)
    \\max(1, |x_k|)$ where $x_k + 10^{-8} = x_k$, reversed at a bound it would cross, divided by
    the step actually taken $(x_k + h_k) - x_k$) and a backtracking Armijo line search, stopped like
    scipy's L-BFGS-B (`ls_maxiter` iterations, default $\\min(\\max(6d, 100), 1000)$; relative
    decrease $\\le 10^7\\epsilon$; projected gradient $\\le 10^{-5}$; a pair $(s, y)$ is stored when
    $s^\\top y > \\epsilon\\, y^\\top y$). Its result replaces the chain's best and
    current point when better. When $T_i$ falls below `restart_temp_ratio`$\\cdot T_0$ the chain
    restarts at a uniform point of the box. Iteration 0 evaluates the starting points: `x0` for
    chain 0 (or row $c$ of a `(chains, d)` `x0` for chain $c$), uniform points of the box for the
    other chains.

    Every evaluation is a candidate of `ask` — one per chain per iteration, the gradient's
    evaluations included — so `nfev` counts everything scipy counts. Unlike scipy, the local
    search is a projected L-BFGS with an Armijo line search rather than L-BFGS-B's Cauchy point and
    Moré–Thuente search, a gradient's $d$ evaluations are made one per iteration (alongside the
    other chains' work) rather than in one call, and scipy's rarely-reached second local-search
    trigger (after 1000 Markov chains without improvement) is left out.

    Args:
        dim: the number of coordinates.
        bounds: `(lower, upper)` arrays (required: the visiting distribution wraps in the box).
        chains: independent chains run side by side (one evaluation each per iteration).
        initial_temp: $T_0$ (scipy's default 5230).
        restart_temp_ratio: restart when $T_i <$ this $\\times T_0$, in $(0, 1)$.
        visit: $q_v \\in (1, 3)$, the visiting distribution's tail parameter.
        accept: $q_a < 0$, the acceptance parameter: the more negative, the fewer uphill moves.
        no_local_search: annealing alone (scipy's `no_local_search=True`).
        ls_maxiter: L-BFGS iterations per local search.
        memory: L-BFGS memory $m$.

    Returns:
        A `Strategy` whose state is a `DualAnnealingState`.

    Raises:
        ValueError: without bounds, with a zero-width bound, or on a parameter outside its range.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> da = dual_annealing(2, bounds=(-1.0, 1.0), chains=4)
        >>> state = da.init(jax.random.key(0), jnp.zeros(2))
        >>> da.ask(state)[0].shape
        (4, 2)
    """
    chains = check_int("chains", chains, 1)
    memory = check_int("memory", memory, 1)
    box = check_bounds(bounds, dim)
    if box is None or not (box[0] < box[1]).all():
        raise ValueError(
            "dual_annealing needs bounds with lower < upper in every coordinate (its visiting "
            f"distribution wraps around the box); got {bounds!r}"
        )
    check_positive("initial_temp", initial_temp)
    if not 0.0 < restart_temp_ratio < 1.0:
        raise ValueError(f"restart_temp_ratio must be in (0, 1); got {restart_temp_ratio!r}")
    if not 1.0 < visit < 3.0:
        raise ValueError(f"visit must be in (1, 3); got {visit!r}")
    if not accept < 0:
        raise ValueError(f"accept must be < 0; got {accept!r}")
    if ls_maxiter is None:
        ls_maxiter = min(max(6 * dim, 100), 1000)
    ls_maxiter = check_int("ls_maxiter", ls_maxiter, 1)
    local = not no_local_search
    factor4_p, factor6 = _visiting_constants(visit)
    restart_temp = initial_temp * restart_temp_ratio

    def draws(key, iteration):
        spec = {
            "visit": ((chains, dim, 2), "normal"),
            "tail": ((chains, 2), "uniform"),
            "accept": ((chains,), "uniform"),
            "restart": ((chains, dim), "uniform"),
        }
        return draw(iteration_key(key, iteration), spec, jnp.result_type(float))

    def init(key, x0):
        x0 = jnp.asarray(x0)
        if x0.shape not in ((dim,), (chains, dim)):
            raise ValueError(f"x0 must have shape ({dim},) or ({chains}, {dim}); got {x0.shape}")
        start, key = jax.random.split(key)
        d = draw(start, {"uniform": ((chains, dim), "uniform")}, x0.dtype)
        x = initial_population(d["uniform"], d["uniform"], x0, box, 1.0)
        dtype = x.dtype
        zeros_c = jnp.zeros((chains,), jnp.int32)
        zeros_cd = jnp.zeros((chains, dim), dtype)
        inf_c = jnp.full((chains,), jnp.inf, dtype)
        return DualAnnealingState(
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            x=x,
            fx=inf_c,
            chain_x=x,
            chain_f=inf_c,
            step=zeros_c,
            anneal=zeros_c,
            improved=jnp.ones((chains,), bool),
            phase=zeros_c,
            ls_x=zeros_cd,
            ls_f=inf_c,
            ls_grad=zeros_cd,
            ls_partial=zeros_cd,
            ls_coord=zeros_c,
            ls_direction=zeros_cd,
            ls_alpha=jnp.ones((chains,), dtype),
            ls_tries=zeros_c,
            ls_iter=zeros_c,
            ls_s=jnp.zeros((chains, memory, dim), dtype),
            ls_y=jnp.zeros((chains, memory, dim), dtype),
            ls_count=zeros_c,
            ls_step=zeros_cd,
            best_x=x[0],
            best_f=jnp.array(jnp.inf, dtype),
        )

    def bounds_of(dtype):
        return tuple(jnp.asarray(b, dtype) for b in box)

    def wrap(x, lower, width):
        x = jnp.fmod(jnp.fmod(x - lower, width) + width, width) + lower
        return jnp.where(jnp.abs(x - lower) < _MIN_VISIT_BOUND, x + _MIN_VISIT_BOUND, x)

    def visiting(x, j, temp, normals, tail):
        """Proposal $j$ of a Markov chain from `x` at temperature `temp` (one chain)."""
        lower, upper = bounds_of(x.dtype)
        factor4 = factor4_p * jnp.exp(jnp.log(temp) / (visit - 1.0))
        scale = jnp.exp(-(visit - 1.0) * jnp.log(factor6 / factor4) / (3.0 - visit))
        den = jnp.exp((visit - 1.0) * jnp.log(jnp.abs(normals[:, 1])) / (3.0 - visit))
        steps = normals[:, 0] * scale / den
        every = j < dim
        high = _TAIL_LIMIT * tail[0]
        low = -_TAIL_LIMIT * jnp.where(every, tail[1], tail[0])
        steps = jnp.where(steps > _TAIL_LIMIT, high, jnp.where(steps < -_TAIL_LIMIT, low, steps))
        one = jnp.arange(dim) == j - dim
        step = jnp.where(every, steps, jnp.where(one, steps[0], 0))
        moved = wrap(x + step, lower, upper - lower)
        return jnp.where(every | one, moved, x)

    def gradient_step(x):
        """The forward-difference step per coordinate, as scipy's L-BFGS-B takes it with `jac=None`
        (`approx_derivative`, '2-point', absolute step `eps=1e-8`): $h = 10^{-8}$, or
        $\\sqrt{\\epsilon}\\,\\mathrm{sign}(x)\\max(1, |x|)$ where $x + 10^{-8} = x$; reversed where
        it would leave the box and the reverse fits, else the distance to the farther bound."""
        lower, upper = bounds_of(x.dtype)
        h = jnp.full_like(x, _FD_STEP)
        sign = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
        relative = jnp.sqrt(jnp.finfo(x.dtype).eps) * sign * jnp.maximum(1.0, jnp.abs(x))
        h = jnp.where((x + h) - x == 0, relative, h)
        below, above = x - lower, upper - x
        fitting = jnp.abs(h) <= jnp.maximum(below, above)
        h = jnp.where(((x + h < lower) | (x + h > upper)) & fitting, -h, h)
        return jnp.where(fitting, h, jnp.where(above >= below, above, -below))

    def ask_one(s, normals, tail, uniforms):
        lower, upper = bounds_of(s.x.dtype)
        temp = visiting_temperature(s.anneal, initial_temp, visit).astype(s.x.dtype)
        proposal = visiting(s.x, s.step, temp, normals, tail)
        h = gradient_step(s.ls_x)
        probe = s.ls_x + jnp.where(jnp.arange(dim) == s.ls_coord, h, 0)
        trial = jnp.clip(s.ls_x + s.ls_alpha * s.ls_direction, lower, upper)
        fresh = lower + uniforms * (upper - lower)
        return jnp.select(
            [s.phase == _GRADIENT, s.phase == _LINE, s.phase == _RESTART],
            [probe, trial, fresh],
            proposal,
        )

    def ask(state):
        d = draws(state.key, state.iteration)
        dtype = state.x.dtype
        chain = _Chain(*(getattr(state, f) for f in _Chain._fields))
        proposals = per_chain(
            ask_one, chain, d["visit"].astype(dtype), d["tail"].astype(dtype),
            d["restart"].astype(dtype),
        )  # fmt: skip
        return jnp.where(state.iteration == 0, state.x, proposals), state

    def direction(grad, s_mem, y_mem, count):
        """The L-BFGS direction $-H g$ by the two-loop recursion over the stored pairs."""
        m = s_mem.shape[0]
        newest_first = (count - 1 - jnp.arange(m)) % m
        valid = jnp.arange(m) < jnp.minimum(count, m)
        sy = jnp.sum(s_mem * y_mem, axis=1)
        rho_ring = jnp.where(sy != 0, 1.0 / jnp.where(sy != 0, sy, 1.0), 0.0)
        q = grad
        alphas = []
        for t in range(m):
            idx = newest_first[t]
            a = jnp.where(valid[t], rho_ring[idx] * jnp.dot(s_mem[idx], q), 0.0)
            q = q - a * y_mem[idx]
            alphas.append(a)
        newest = newest_first[0]
        yy = jnp.dot(y_mem[newest], y_mem[newest])
        gamma = jnp.where(count > 0, sy[newest] / jnp.where(yy > 0, yy, 1.0), 1.0)
        r = gamma * q
        for t in reversed(range(m)):
            idx = newest_first[t]
            b = jnp.where(valid[t], rho_ring[idx] * jnp.dot(y_mem[idx], r), 0.0)
            r = r + jnp.where(valid[t], alphas[t] - b, 0.0) * s_mem[idx]
        return -r

    def start_line_search(c: _Chain, grad, count, first):
        """A new direction from `grad` (steepest descent if L-BFGS's is not downhill)."""
        p = direction(grad, c.ls_s, c.ls_y, count)
        downhill = jnp.dot(grad, p) < 0
        p = jnp.where(downhill, p, -grad)
        count = jnp.where(downhill, count, 0)
        norm = jnp.sqrt(jnp.dot(p, p))
        alpha = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.where(norm > 0, norm, 1.0)), 1.0)
        return p, alpha.astype(grad.dtype), count

    def end_local_search(c: _Chain, temp_low):
        better = c.ls_f < c.chain_f
        return c._replace(
            phase=jnp.where(temp_low, _RESTART, _ANNEAL),
            step=jnp.zeros_like(c.step),
            chain_x=jnp.where(better, c.ls_x, c.chain_x),
            chain_f=jnp.where(better, c.ls_f, c.chain_f),
            x=jnp.where(better, c.ls_x, c.x),
            fx=jnp.where(better, c.ls_f, c.fx),
        )

    def tell_anneal(c: _Chain, candidate, value, u, first_iteration):
        temp = visiting_temperature(c.anneal, initial_temp, visit).astype(value.dtype)
        temp_step = temp / (c.anneal + 1).astype(value.dtype)
        downhill = value < c.fx
        pqv_temp = 1.0 - (1.0 - accept) * (value - c.fx) / temp_step
        pqv = jnp.where(
            pqv_temp > 0,
            jnp.exp(jnp.log(jnp.where(pqv_temp > 0, pqv_temp, 1.0)) / (1.0 - accept)),
            0.0,
        )
        move = downhill | (u <= pqv)
        record = downhill & (value < c.chain_f)
        x = jnp.where(move, candidate, c.x)
        fx = jnp.where(move, value, c.fx)
        chain_x = jnp.where(record, candidate, c.chain_x)
        chain_f = jnp.where(record, value, c.chain_f)
        improved = c.improved | record
        # the starting point: its value only
        x = jnp.where(first_iteration, candidate, x)
        fx = jnp.where(first_iteration, value, fx)
        chain_x = jnp.where(first_iteration, candidate, chain_x)
        chain_f = jnp.where(first_iteration, value, chain_f)
        step = jnp.where(first_iteration, 0, c.step + 1)
        done = step == 2 * dim
        anneal = jnp.where(done, c.anneal + 1, c.anneal)
        step = jnp.where(done, 0, step)
        temp_low = visiting_temperature(anneal, initial_temp, visit) < restart_temp
        c = c._replace(x=x, fx=fx, chain_x=chain_x, chain_f=chain_f, step=step, anneal=anneal)
        phase = jnp.where(done & temp_low, _RESTART, _ANNEAL)
        if local:
            search = done & improved
            phase = jnp.where(search, _GRADIENT, phase)
            c = c._replace(
                ls_x=jnp.where(search, chain_x, c.ls_x),
                ls_f=jnp.where(search, chain_f, c.ls_f),
                ls_coord=jnp.where(search, 0, c.ls_coord),
                ls_iter=jnp.where(search, 0, c.ls_iter),
                ls_count=jnp.where(search, 0, c.ls_count),
            )
        improved = jnp.where(done, False, improved)
        return c._replace(phase=phase, improved=improved)

    def tell_gradient(c: _Chain, candidate, value):
        h = gradient_step(c.ls_x)
        k = c.ls_coord
        dx = (c.ls_x[k] + h[k]) - c.ls_x[k]  # the step actually taken (scipy divides by it too)
        partial = c.ls_partial.at[k].set((value - c.ls_f) / dx)
        complete = k + 1 == dim

        def more():
            return c._replace(ls_partial=partial, ls_coord=k + 1), jnp.asarray(False)

        def finish():
            # the gradient is complete: store the pair (s, y) of the accepted trial, then either
            # stop or start a line search along a new direction
            y = partial - c.ls_grad
            # L-BFGS-B's curvature test: a pair is kept when $s^\top y > \epsilon\, y^\top y$
            eps = jnp.finfo(y.dtype).eps
            store = (c.ls_iter > 0) & (jnp.dot(c.ls_step, y) > eps * jnp.dot(y, y))
            slot = c.ls_count % memory
            ls_s = jnp.where(store, c.ls_s.at[slot].set(c.ls_step), c.ls_s)
            ls_y = jnp.where(store, c.ls_y.at[slot].set(y), c.ls_y)
            count = jnp.where(store, c.ls_count + 1, c.ls_count)
            new = c._replace(ls_s=ls_s, ls_y=ls_y, ls_count=count)
            lower, upper = bounds_of(c.ls_x.dtype)
            projected = jnp.clip(c.ls_x - partial, lower, upper) - c.ls_x
            converged = (jnp.max(jnp.abs(projected)) <= _PGTOL) | (c.ls_iter >= ls_maxiter)
            p, alpha, count = start_line_search(new, partial, count, c.ls_iter == 0)
            new = new._replace(
                ls_partial=partial, ls_coord=jnp.zeros_like(k), ls_grad=partial,
                ls_direction=p, ls_alpha=alpha, ls_count=count,
                ls_tries=jnp.zeros_like(c.ls_tries), phase=jnp.full_like(c.phase, _LINE),
            )  # fmt: skip
            return new, converged

        def typed(branch):
            new, done = branch()
            return jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), new, c), done

        # a real branch with one chain: the direction is computed once per gradient, not per
        # evaluation
        return jax.lax.cond(complete, lambda: typed(finish), lambda: typed(more))

    def tell_line(c: _Chain, candidate, value):
        decrease = jnp.dot(c.ls_grad, candidate - c.ls_x)
        ok = value <= c.ls_f + _ARMIJO * decrease
        small = (c.ls_f - value) <= _FTOL * jnp.maximum(
            jnp.maximum(jnp.abs(c.ls_f), jnp.abs(value)), 1.0
        )
        tries = c.ls_tries + 1
        accepted = c._replace(
            ls_step=candidate - c.ls_x,
            ls_x=candidate,
            ls_f=value,
            ls_iter=c.ls_iter + 1,
            ls_coord=jnp.zeros_like(c.ls_coord),
            phase=jnp.asarray(_GRADIENT, c.phase.dtype),
        )
        rejected = c._replace(ls_alpha=c.ls_alpha * 0.5, ls_tries=tries)
        c = jax.tree.map(lambda a, b: jnp.where(ok, a, b), accepted, rejected)
        give_up = (~ok & (tries >= _MAX_HALVINGS)) | (ok & small)
        return c, give_up

    def tell_one(c: _Chain, candidate, value, u, first_iteration):
        temp_low = visiting_temperature(c.anneal, initial_temp, visit) < restart_temp

        def same_types(new: _Chain) -> _Chain:
            return jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), new, c)

        def annealed():
            return same_types(tell_anneal(c, candidate, value, u, first_iteration))

        def gradient():
            new, done = tell_gradient(c, candidate, value)
            ended = end_local_search(new, temp_low)
            return same_types(jax.tree.map(lambda a, b: jnp.where(done, a, b), ended, new))

        def line():
            new, done = tell_line(c, candidate, value)
            ended = end_local_search(new, temp_low)
            return same_types(jax.tree.map(lambda a, b: jnp.where(done, a, b), ended, new))

        def restarted():
            return same_types(
                c._replace(
                    x=candidate,
                    fx=value,
                    step=jnp.zeros_like(c.step),
                    anneal=jnp.zeros_like(c.anneal),
                    improved=jnp.ones_like(c.improved),
                    phase=jnp.zeros_like(c.phase),
                )
            )

        phase = jnp.where(first_iteration, _ANNEAL, c.phase)
        # `lax.switch` branches for real with one chain; vmapped over chains it selects.
        if not local:
            return jax.lax.switch((phase == _RESTART).astype(jnp.int32), [annealed, restarted])
        return jax.lax.switch(phase, [annealed, gradient, line, restarted])

    def per_chain(fn, chain, *args):
        """`fn` on every chain: vmapped, or on the one chain itself (so `lax.switch` branches)."""
        if chains > 1:
            return jax.vmap(fn, in_axes=(0, 0, 0, 0, None)[: len(args) + 1])(chain, *args)
        one = jax.tree.map(lambda a: a[0], (chain, *args[:3]))
        out = fn(*one, *args[3:])
        return jax.tree.map(lambda a: a[None], out)

    def tell(state, candidates, values):
        values = sanitize(jnp.asarray(values, state.fx.dtype))
        d = draws(state.key, state.iteration)
        chain = _Chain(*(getattr(state, f) for f in _Chain._fields))
        first = state.iteration == 0
        chain = per_chain(
            tell_one, chain, candidates, values, d["accept"].astype(values.dtype), first
        )
        best_x, best_f = update_best(state.best_x, state.best_f, candidates, values)
        return DualAnnealingState(
            key=state.key,
            iteration=state.iteration + 1,
            best_x=best_x,
            best_f=best_f,
            **chain._asdict(),
        )

    return Strategy(init, ask, tell, draws, chains, "dual_annealing")
