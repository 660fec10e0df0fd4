"""Gradient-free optimizers vs scipy: quality at equal evaluation budgets and evaluations per second.

What is measured
    On Rastrigin, Ackley, Rosenbrock, Schwefel and Griewank (in 10 and 30 dimensions, the usual
    search boxes), each contender gets the same number of objective evaluations and a start drawn
    uniformly in the box; the best value found is reported as the median over seeds. Pairs:

    * ``differential_evolution``: jaxopt_port (best1bin, F ~ U[0.5, 1), CR 0.7, 15·d members,
      Latin hypercube start, out-of-bounds genes redrawn: scipy's defaults) vs
      ``scipy.optimize.differential_evolution`` with the same settings, ``polish=False`` and
      ``tol=0`` so that neither spends evaluations outside the budget nor stops early. Two pairs:
      ``updating="deferred"`` (jaxopt_port's default: a generation per compiled step) vs scipy's
      ``vectorized=True`` (the whole population per NumPy call, which implies deferred updating),
      and ``updating="immediate"`` (one member per step) vs scipy's default (immediate, one point
      per Python call);
    * ``simulated_annealing`` (jaxopt_port: 32 chains, exponential schedule α = 0.99 from T₀ = 10,
      Cauchy steps of 0.3 % of the box, restarts from the best point after 100 idle proposals) and ``cma_es`` (jaxopt_port) vs
      ``scipy.optimize.dual_annealing`` (generalized SA with an L-BFGS-B local search, ``maxfun``
      = the budget; it may overrun by the evaluations of its last local search, which are counted),
      and without its local search (``no_local_search=True``, annealing alone);
    * ``dual_annealing`` (jaxopt_port: scipy's algorithm and defaults, one chain, run in float64 like
      scipy) vs ``scipy.optimize.dual_annealing``, with and without the local search;
    * ``genetic`` (jaxopt_port: SBX, polynomial mutation, tournament) for reference.

    Evaluations per second: evaluations made / wall time of the run. jaxopt_port runs are timed
    after one warm-up run of the same configuration (compilation excluded; it is printed apart);
    the objective is the same formula written with ``jax.numpy`` and with NumPy.

Run from the repository root:

    python -m benchmarks.gradient_free [--quick] [--seeds 5] [--dims 10 30] [--json PATH]
        [--functions rastrigin ...] [--contenders dual_annealing ...]

``--quick``: 10 dimensions, 3 seeds, 5,000 evaluations, no GA (about 2 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxopt_port import gradient_free
from parity.reference.gradient_free import TEST_FUNCTIONS

#: jaxopt_port contender → (method, options given the dimension).
OURS: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "differential_evolution": ("differential_evolution", lambda d: {}),
    "differential_evolution immediate": (
        "differential_evolution",
        lambda d: {"updating": "immediate"},
    ),
    "simulated_annealing": (
        "simulated_annealing",
        lambda d: {
            "chains": 32,
            "schedule": "exponential",
            "cooling_rate": 0.99,
            "proposal": "cauchy",
            "initial_temperature": 10.0,
            "restart": "best",
            "restart_after": 100,
            "step_size": None,
        },
    ),
    "dual_annealing": ("dual_annealing", lambda d: {}),
    "dual_annealing no_local_search": ("dual_annealing", lambda d: {"no_local_search": True}),
    "cma_es": ("cma_es", lambda d: {"popsize": 4 * (4 + int(3 * np.log(d)))}),
    "genetic": (
        "genetic",
        lambda d: {"popsize": 100, "crossover": "sbx", "mutation": "polynomial", "elitism": 2},
    ),
}


def ours(name: str, fun, dim: int, half: float, budget: int, seeds: list[int]) -> dict[str, Any]:
    method, options = OURS[name]
    opts = options(dim)
    if name == "simulated_annealing":
        opts["step_size"] = 0.003 * 2 * half
    if name == "cma_es":
        opts["sigma"] = 0.3 * half

    def f(x):
        return fun(x, jnp)

    def run(seed):
        x0 = np.random.default_rng(seed).uniform(-half, half, dim)
        return gradient_free.minimize(
            f, jnp.asarray(x0), method=method, key=jax.random.key(seed), max_evals=budget,
            bounds=(-half, half), **opts,
        )  # fmt: skip

    # Dual annealing runs in float64 like scipy's: its local search polishes to ~1e-13, below
    # float32's resolution of these objectives (~1e-5 on Rastrigin's 10·d - Σ 10 cos).
    with jax.enable_x64(method == "dual_annealing" or jax.config.jax_enable_x64):
        start = time.perf_counter()
        jax.block_until_ready(run(10_000).x)
        first = time.perf_counter() - start
        values, rates = [], []
        for seed in seeds:
            start = time.perf_counter()
            result = run(seed)
            jax.block_until_ready(result.x)
            rates.append(result.nfev / (time.perf_counter() - start))
            values.append(float(result.fun))
    return {
        "median": statistics.median(values),
        "evals_per_s": statistics.median(rates),
        "first_call_s": first,
        "values": values,
    }


class Counted:
    """The objective, counting the points it evaluates (scipy counts a vectorized call as one)."""

    def __init__(self, fun, vectorized=False):
        self.fun, self.vectorized, self.points = fun, vectorized, 0

    def __call__(self, x):
        self.points += x.shape[-1] if self.vectorized else 1
        return self.fun(x.T) if self.vectorized else self.fun(x)


def scipy_run(solver: str, fun, dim, half, budget, seeds, vectorized=False) -> dict[str, Any]:
    values, rates = [], []
    for seed in seeds:
        x0 = np.random.default_rng(seed).uniform(-half, half, dim)
        objective = Counted(fun, vectorized)
        box = [(-half, half)] * dim
        start = time.perf_counter()
        if solver == "de":
            result = optimize.differential_evolution(
                objective, box, maxiter=budget // (15 * dim) - 1, popsize=15, tol=0, polish=False,
                seed=seed, x0=x0, vectorized=vectorized, updating="deferred" if vectorized else "immediate",
            )  # fmt: skip
        else:
            result = optimize.dual_annealing(
                objective, box, maxfun=budget, seed=seed, x0=x0, no_local_search=solver == "sa"
            )
        rates.append(objective.points / (time.perf_counter() - start))
        values.append(float(result.fun))
    return {
        "median": statistics.median(values),
        "evals_per_s": statistics.median(rates),
        "values": values,
    }


#: scipy contender → (solver, vectorized) for `scipy_run`.
SCIPY: dict[str, tuple[str, bool]] = {
    "differential_evolution": ("de", False),
    "DE vectorized (deferred)": ("de", True),
    "dual_annealing": ("da", False),
    "dual_annealing no_local_search": ("sa", False),
}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="10-D, 3 seeds, 500·d evaluations, no GA"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--evals-per-dim", type=int, default=2000, help="budget = this × dim")
    parser.add_argument("--functions", nargs="+", default=list(TEST_FUNCTIONS))
    parser.add_argument(
        "--contenders",
        nargs="+",
        help="run only the contenders (ours and scipy's) whose name contains one of these, "
        "e.g. dual_annealing (which also matches 'dual_annealing no_local_search')",
    )
    parser.add_argument("--x64", action="store_true", help="run JAX in float64 (default float32)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.dims, args.evals_per_dim = 3, [10], 500
    jax.config.update("jax_enable_x64", args.x64)
    seeds = list(range(args.seeds))

    def wanted(contender: str) -> bool:
        return args.contenders is None or any(c in contender for c in args.contenders)

    rows = []
    print(
        f"{args.seeds} seeds, budget {args.evals_per_dim}·d evaluations, JAX {'float64' if args.x64 else 'float32'}"
    )
    print(
        f"{'function':11s} {'d':>3s} {'contender':32s} {'median best':>12s} {'evals/s':>11s} {'compile s':>9s}"
    )
    for name in args.functions:
        fun, half = TEST_FUNCTIONS[name]
        for dim in args.dims:
            budget = args.evals_per_dim * dim
            results = {}
            for contender in OURS:
                if (args.quick and contender == "genetic") or not wanted(contender):
                    continue
                results[f"jaxopt_port {contender}"] = ours(contender, fun, dim, half, budget, seeds)
            for contender, (solver, vectorized) in SCIPY.items():
                if wanted(contender):
                    results[f"scipy {contender}"] = scipy_run(
                        solver, fun, dim, half, budget, seeds, vectorized
                    )
            for contender, r in results.items():
                compile_s = f"{r['first_call_s']:9.2f}" if "first_call_s" in r else " " * 9
                print(
                    f"{name:11s} {dim:3d} {contender:32s} {r['median']:12.4g} {r['evals_per_s']:11.3g} {compile_s}"
                )
                rows.append(
                    {"function": name, "dim": dim, "budget": budget, "contender": contender, **r}
                )
            pairs = (
                ("differential_evolution", "scipy DE vectorized (deferred)"),
                ("differential_evolution immediate", "scipy differential_evolution"),
                ("dual_annealing", "scipy dual_annealing"),
                ("dual_annealing no_local_search", "scipy dual_annealing no_local_search"),
            )
            for mine, theirs in pairs:
                if f"jaxopt_port {mine}" not in results or theirs not in results:
                    continue
                a, b = results[f"jaxopt_port {mine}"], results[theirs]
                print(f"{'':15s} {mine} vs {theirs}: median {a['median']:.3g} vs "
                      f"{b['median']:.3g}, evals/s ratio {a['evals_per_s'] / b['evals_per_s']:.1f}x")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
