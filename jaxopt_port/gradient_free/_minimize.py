"""`minimize`: a scipy-style driver running any strategy's ask/tell loop in one compiled call."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_port import parallel
from jaxopt_port.gradient_free._annealing import simulated_annealing
from jaxopt_port.gradient_free._cmaes import cma_es
from jaxopt_port.gradient_free._common import Strategy, check_int
from jaxopt_port.gradient_free._dual_annealing import dual_annealing
from jaxopt_port.gradient_free._evolution import differential_evolution
from jaxopt_port.gradient_free._genetic import genetic

__all__ = ["METHODS", "OptimizeResult", "Progress", "evaluate_population", "minimize"]

METHODS: dict[str, Callable[..., Strategy]] = {
    "simulated_annealing": simulated_annealing,
    "genetic": genetic,
    "differential_evolution": differential_evolution,
    "cma_es": cma_es,
    "dual_annealing": dual_annealing,
}
"""`minimize`'s methods: name → strategy factory `factory(dim, *, bounds, **options)`."""


class OptimizeResult(NamedTuple):
    """What `minimize` returns (the field names of `scipy.optimize.OptimizeResult`).

    Attributes:
        x: the best point evaluated.
        fun: its value.
        nfev: objective evaluations (iterations × the candidates one `ask` returns).
        nit: ask/tell iterations, the evaluation of the starting points included.
        history: `(nit,)` the best value after each iteration.
        message: why the run stopped.
        state: the strategy's final state (continue with its `ask`/`tell`).
    """

    x: jax.Array
    fun: jax.Array
    nfev: int
    nit: int
    history: jax.Array
    message: str
    state: Any


class Progress(NamedTuple):
    """What a `minimize` callback receives: iterations and evaluations so far, best value, point."""

    nit: int
    nfev: int
    fun: float
    x: jax.Array


def evaluate_population(
    fun: Callable[[jax.Array], jax.Array],
    candidates: jax.Array,
    *,
    mesh: Mesh | None = None,
    axis: str = parallel.DATA_AXIS,
) -> jax.Array:
    """`jax.vmap(fun)(candidates)`: one value per row, with the rows split over `mesh`'s `axis`.

    Under `jax.jit` the population is constrained to be sharded row-wise over the devices of the
    axis, so each device evaluates its block of candidates. The number of rows must be a multiple
    of the axis size.

    Examples:
        >>> import jax.numpy as jnp
        >>> evaluate_population(lambda x: jnp.sum(x**2), jnp.ones((3, 2))).tolist()
        [2.0, 2.0, 2.0]
    """
    if mesh is not None:
        devices = parallel.check_mesh(mesh, axis)
        if candidates.shape[0] % devices:
            raise ValueError(
                f"a population of {candidates.shape[0]} candidates does not split over the "
                f"{devices} devices of mesh axis {axis!r}: use a population size divisible by {devices}"
            )
        spec = PartitionSpec(axis, *([None] * (candidates.ndim - 1)))
        candidates = jax.lax.with_sharding_constraint(candidates, NamedSharding(mesh, spec))
    values = jax.vmap(fun)(candidates)
    if values.shape != candidates.shape[:1]:
        raise ValueError(
            f"fun must map one point of shape {candidates.shape[1:]} to a scalar; it returned "
            f"shape {values.shape[1:]}"
        )
    return values


class _Bar:
    """A text progress bar on stderr (no dependency)."""

    def __init__(self, total: int):
        self.total = total

    def __call__(self, info: Progress) -> None:
        done = int(30 * info.nit / self.total)
        end = "\n" if info.nit >= self.total else ""
        print(
            f"\r[{'#' * done}{'.' * (30 - done)}] {info.nit}/{self.total} it, "
            f"{info.nfev} evals, best {info.fun:.6g}",
            end=end,
            file=sys.stderr,
            flush=True,
        )


class _Plan:
    """What `minimize` compiles for, hashable (arrays by value): the strategy's construction and
    where the population is evaluated. Equal plans with the same `fun` reuse one compiled loop."""

    def __init__(self, method, dim, bounds, mesh, axis, options):
        self.method, self.dim, self.bounds, self.mesh, self.axis = method, dim, bounds, mesh, axis
        self.options = dict(options)

    def strategy(self) -> Strategy:
        return METHODS[self.method](self.dim, bounds=self.bounds, **self.options)

    def _key(self):
        return (
            self.method,
            self.dim,
            _freeze(self.bounds),
            self.mesh,
            self.axis,
            _freeze(self.options),
        )

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Plan) and self._key() == other._key()


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an option value: arrays by shape, dtype and bytes."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(value)
        return ("array", array.shape, array.dtype.str, array.tobytes())
    return value


def _loop(carry, stop_at, stops, fun, plan):
    """Iterate ask → evaluate → tell until `stop_at` iterations or a stopping rule holds."""
    strategy = plan.strategy()
    target, wait, tol = stops

    def body(carry):
        state, history, nit, stall, last = carry
        candidates, state = strategy.ask(state)
        values = evaluate_population(fun, candidates, mesh=plan.mesh, axis=plan.axis)
        state = strategy.tell(state, candidates, values)
        improved = state.best_f < last - tol
        stall = jnp.where(improved, 0, stall + 1)
        last = jnp.where(improved, state.best_f, last)
        history = history.at[nit].set(state.best_f)
        return state, history, nit + 1, stall, last

    def cond(carry):
        state, _, nit, stall, _ = carry
        return (nit < stop_at) & (stall < wait) & (state.best_f > target)

    return jax.lax.while_loop(cond, body, carry)


@functools.lru_cache(maxsize=256)
def _check_fun(fun, popsize, dim, dtype, mesh, axis) -> None:
    """Trace `fun` on a population once per signature, so a bad `fun` fails before compiling
    (cached: tracing took ~60 % of a short run's per-call overhead)."""
    jax.eval_shape(
        lambda c: evaluate_population(fun, c, mesh=mesh, axis=axis),
        jax.ShapeDtypeStruct((popsize, dim), dtype),
    )


_run = jax.jit(_loop, static_argnames=("fun", "plan"))
_init = jax.jit(lambda key, x0, plan: plan.strategy().init(key, x0), static_argnames=("plan",))


def minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: Any,
    *,
    method: str,
    key: jax.Array,
    max_evals: int,
    bounds: Any = None,
    target: float | None = None,
    patience: int | None = None,
    tol: float = 0.0,
    callback: Callable[[Progress], bool | None] | None = None,
    callback_every: int = 10,
    progress: bool = False,
    mesh: Mesh | None = None,
    axis: str = parallel.DATA_AXIS,
    **options: Any,
) -> OptimizeResult:
    """Minimise `fun` without gradients: iterate a strategy's ask → evaluate → tell.

    The loop runs inside one compiled `jax.lax.while_loop` (in chunks of `callback_every`
    iterations when a callback or progress bar needs the host in between); every population is
    evaluated by one `jax.vmap(fun)` call, optionally split over the devices of `mesh`. The run is
    a pure function of `key`: the same key gives the same result.

    Args:
        fun: maps one point (a 1-D array) to a scalar; must be traceable by JAX (it is vmapped and
            jitted). NaN counts as $+\\infty$.
        x0: the starting point, shape `(dim,)` (population methods also accept a whole starting
            population `(popsize, dim)`).
        method: `"simulated_annealing"`, `"genetic"`, `"differential_evolution"`, `"cma_es"` or
            `"dual_annealing"`.
        key: a JAX PRNG key.
        max_evals: evaluation budget; the run makes `max_evals // popsize` iterations, `popsize`
            being the candidates one `ask` returns (the first iterations evaluate the starting
            points: one for a population, $P$ for immediate-updating DE).
        bounds: `(lower, upper)` arrays of shape `(dim,)` (scalars broadcast), or None.
        target: stop once the best value is ≤ `target`.
        patience: stop after this many iterations without the best value improving by more than
            `tol`.
        tol: the improvement `patience` counts as progress.
        callback: called every `callback_every` iterations with a `Progress`; returning True stops.
        callback_every: iterations between callbacks (and progress-bar updates).
        progress: draw a text progress bar on stderr.
        mesh: a `jax.sharding.Mesh` to split each population over (row-wise on `axis`).
        axis: the mesh axis to split the population over.
        **options: the method's options (see `simulated_annealing`, `genetic`,
            `differential_evolution`, `cma_es`, `dual_annealing`).

    Returns:
        An `OptimizeResult` with `x`, `fun`, `nfev`, `nit`, `history`, `message`, `state`.

    Raises:
        ValueError: on an unknown method or option, a budget smaller than one population, an
            `x0` that is not a 1-D (or 2-D population) floating array, or a `fun` that does not
            return a scalar.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> result = minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3),
        ...                   method="differential_evolution", key=jax.random.key(0),
        ...                   max_evals=2700, bounds=(-5.0, 5.0))
        >>> bool(jnp.allclose(result.x, 1.0, atol=1e-2)), result.nfev
        (True, 2700)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    x0 = jnp.asarray(x0)
    if x0.ndim not in (1, 2) or not jnp.issubdtype(x0.dtype, jnp.floating) or x0.shape[-1] == 0:
        raise ValueError(
            f"x0 must be a non-empty 1-D floating array (a point), or 2-D (a population); got "
            f"shape {x0.shape} and dtype {x0.dtype}"
        )
    max_evals = check_int("max_evals", max_evals, 1)
    patience = None if patience is None else check_int("patience", patience, 1)
    callback_every = check_int("callback_every", callback_every, 1)
    dim = x0.shape[-1]
    if method == "simulated_annealing" and options.get("schedule") == "linear":
        chains = options.get("chains", 1)
        options.setdefault("horizon", max(max_evals // max(chains, 1) - 1, 1))
    plan = _Plan(method, dim, bounds, mesh, axis, options)
    try:
        strategy = plan.strategy()
    except TypeError as error:
        raise ValueError(f"method {method!r}: {error}") from None
    iterations = max_evals // strategy.popsize
    if iterations < 1:
        raise ValueError(
            f"max_evals={max_evals} is less than one population of {strategy.popsize} "
            f"candidates for method {method!r}"
        )
    try:
        state = _init(key, x0, plan=plan)
    except TypeError as error:  # an option JAX cannot hold as a static argument
        if "hash" not in str(error):
            raise
        state = strategy.init(key, x0)
    try:
        _check_fun(fun, strategy.popsize, dim, x0.dtype, mesh, axis)
    except TypeError as error:  # an unhashable `fun`: check it without the cache
        if "hash" not in str(error):
            raise
        _check_fun.__wrapped__(fun, strategy.popsize, dim, x0.dtype, mesh, axis)
    # Host (NumPy) arrays: each `jnp` constructor here would be a dispatch of its own.
    dtype = np.dtype(state.best_f.dtype)
    stops = (
        np.asarray(-np.inf if target is None else target, dtype),
        np.asarray(np.iinfo(np.int32).max if patience is None else patience, np.int32),
        np.asarray(tol, dtype),
    )
    try:
        hash(plan)
        run = functools.partial(_run, fun=fun, plan=plan)
    except TypeError:  # an option JAX cannot hold as a static argument: compile for this call
        run = jax.jit(lambda carry, stop_at, stops: _loop(carry, stop_at, stops, fun, plan))

    zero = np.zeros((), np.int32)
    carry = (state, np.full((iterations,), np.nan, dtype), zero, zero, np.asarray(np.inf, dtype))
    watchers = [w for w in (callback, _Bar(iterations) if progress else None) if w is not None]
    chunk = callback_every if watchers else iterations
    message = f"max_evals reached ({iterations} iterations of {strategy.popsize})"
    stopped_by_callback = False
    nit = 0
    while nit < iterations:
        carry = run(carry, min(nit + chunk, iterations), stops)
        state, _, nit_array, stall, _ = carry
        previous, nit = nit, int(nit_array)
        if watchers:
            info = Progress(nit, nit * strategy.popsize, float(state.best_f), state.best_x)
            stopped_by_callback = any([bool(w(info)) for w in watchers])
        if nit < previous + chunk and nit < iterations:
            break
        if stopped_by_callback:
            break
    state, history, _, stall, _ = carry
    if stopped_by_callback:
        message = "stopped by callback"
    elif target is not None and float(state.best_f) <= target:
        message = f"target {target} reached"
    elif patience is not None and int(stall) >= patience:
        message = f"no improvement > {tol} for {patience} iterations"
    return OptimizeResult(
        x=state.best_x,
        fun=state.best_f,
        nfev=nit * strategy.popsize,
        nit=nit,
        history=history[:nit],
        message=message,
        state=state,
    )
