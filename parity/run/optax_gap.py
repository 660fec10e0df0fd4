"""How far optax's nearest optimizer lands from torch's, measured on the spec table's problems.

``python -m parity.run.optax_gap`` runs, for every optimizer, torch (foreach=False) with its defaults,
jaxopt_port with the same arguments, and optax's closest transformation set up with torch's
hyperparameters (its own defaults where it cannot take torch's), all in float64 for the spec's
number of steps, and prints max|Δθ| against torch next to how far torch moved the parameters.
docs/optimizers.md quotes its output.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from parity.run.optim import Run, make_problem, max_difference, run_jax, run_torch
from parity.specs.optim import SPECS, Config, OptaxNearest, OptimSpec

__all__ = ["main", "measure", "rows"]


def rows() -> list[tuple[OptimSpec, OptaxNearest]]:
    """Every spec's ``optax_nearest`` rows, in table order."""
    return [(s, row) for s in SPECS for row in s.optax_nearest]


def _movement(run: Run, initial: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(run.params, initial, strict=True))


def measure(selected: list[tuple[OptimSpec, OptaxNearest]] | None = None) -> list[dict[str, Any]]:
    """One dict per row: optax's expression, torch's movement, optax's and jaxopt_port's gaps."""
    out = []
    for spec, nearest in rows() if selected is None else selected:
        config = Config("defaults", nearest.torch_kwargs)
        torch_run = run_torch(spec, config)
        initial = list(make_problem(spec.problem, spec.steps).params)
        factory = nearest.build()
        result = {
            "row": nearest.row,
            "optax": nearest.text,
            "steps": spec.steps,
            "torch_movement": _movement(torch_run, initial),
            "jaxopt_port": max_difference(run_jax(spec, config), torch_run, state=False)[0],
            "optax_gap": None,
        }
        if factory is not None:
            optax_run = run_jax(spec, config, tx=factory)
            result["optax_gap"] = max_difference(optax_run, torch_run, state=False)[0]
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(f"{'optimizer':26} {'steps':>5} {'torch moved':>11} {'optax gap':>10} {'ours':>8}  optax")
    for r in measure():
        gap = "—" if r["optax_gap"] is None else f"{r['optax_gap']:.2g}"
        print(
            f"{r['row']:26} {r['steps']:5d} {r['torch_movement']:11.3g} {gap:>10} "
            f"{r['jaxopt_port']:8.1g}  {r['optax']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
