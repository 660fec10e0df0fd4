"""How far optax's nearest optimizer lands from torch's, measured on the spec table's problems.

``python -m parity.run.optax_gap`` runs, for every optimizer, torch (foreach=False) with its defaults,
jaxopt_port with the same arguments, and optax's closest transformation set up with torch's
hyperparameters (its own defaults where it cannot take torch's), all in float64 for the spec's
number of steps, and prints max|Δθ| against torch next to how far torch moved the parameters.
docs/optimizers.md quotes its output.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from parity.run.optim import Run, make_problem, max_difference, run_jax, run_torch
from parity.specs.optim import SPECS, Config

__all__ = ["NEAREST", "main"]


def _nearest() -> dict[str, tuple[str, Callable[[], Any] | None]]:
    import optax

    return {
        "adadelta": (
            "optax.adadelta(1.0, rho=0.9, eps=1e-6)",
            lambda: optax.adadelta(1.0, 0.9, 1e-6),
        ),
        "adafactor": ("optax.adafactor(1e-2)", lambda: optax.adafactor(1e-2)),
        "adagrad": (
            "optax.adagrad(1e-2, initial_accumulator_value=0, eps=1e-10)",
            lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
        ),
        "adagrad (optax defaults)": ("optax.adagrad(1e-2)", lambda: optax.adagrad(1e-2)),
        "adam": ("optax.adam(1e-3)", lambda: optax.adam(1e-3)),
        "adam amsgrad": ("optax.amsgrad(1e-3)", lambda: optax.amsgrad(1e-3)),
        "adamax": ("optax.adamax(2e-3)", lambda: optax.adamax(2e-3)),
        "adamw": (
            "optax.adamw(1e-3, weight_decay=1e-2)",
            lambda: optax.adamw(1e-3, weight_decay=1e-2),
        ),
        "adamw (optax defaults)": ("optax.adamw(1e-3)", lambda: optax.adamw(1e-3)),
        "asgd": ("none", None),
        "lbfgs": ("optax.lbfgs(): one update is one iteration, not one torch step", None),
        "muon": ("optax.contrib.muon(1e-3)", lambda: optax.contrib.muon(1e-3)),
        "nadam": ("optax.nadam(2e-3)", lambda: optax.nadam(2e-3)),
        "radam": ("optax.radam(1e-3)", lambda: optax.radam(1e-3)),
        "rmsprop": (
            "optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False)",
            lambda: optax.rmsprop(1e-2, 0.99, 1e-8, eps_in_sqrt=False),
        ),
        "rmsprop (ε in the root)": (
            "optax.rmsprop(1e-2, decay=0.99, eps=1e-8)",
            lambda: optax.rmsprop(1e-2, 0.99, 1e-8),
        ),
        "rprop": ("optax.rprop(1e-2)", lambda: optax.rprop(1e-2)),
        "sgd": ("optax.sgd(1e-3)", lambda: optax.sgd(1e-3)),
        "sparse_adam": ("optax.adam(1e-3) (dense: every row moves)", lambda: optax.adam(1e-3)),
    }


#: Rows of the comparison: (row name, spec name, torch kwargs).
ROWS = (
    ("adadelta", "adadelta", {}),
    ("adafactor", "adafactor", {}),
    ("adagrad", "adagrad", {}),
    ("adagrad (optax defaults)", "adagrad", {}),
    ("adam", "adam", {}),
    ("adam amsgrad", "adam", {"amsgrad": True}),
    ("adamax", "adamax", {}),
    ("adamw", "adamw", {}),
    ("adamw (optax defaults)", "adamw", {}),
    ("asgd", "asgd", {}),
    ("lbfgs", "lbfgs", {}),
    ("muon", "muon", {}),
    ("nadam", "nadam", {}),
    ("radam", "radam", {}),
    ("rmsprop", "rmsprop", {}),
    ("rmsprop (ε in the root)", "rmsprop", {}),
    ("rprop", "rprop", {}),
    ("sgd", "sgd", {}),
    ("sparse_adam", "sparse_adam", {}),
)

NEAREST = [row[0] for row in ROWS]


def _movement(run: Run, initial: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(run.params, initial, strict=True))


def measure(rows: tuple[tuple[str, str, dict[str, Any]], ...] = ROWS) -> list[dict[str, Any]]:
    """One dict per row: optax's expression, torch's movement, optax's and jaxopt_port's gaps."""
    specs = {s.name: s for s in SPECS}
    nearest = _nearest()
    out = []
    for row, name, kwargs in rows:
        spec = specs[name]
        config = Config("defaults", kwargs)
        torch_run = run_torch(spec, config)
        initial = list(make_problem(spec.problem, spec.steps).params)
        expression, factory = nearest[row]
        result = {
            "row": row,
            "optax": expression,
            "steps": spec.steps,
            "torch_movement": _movement(torch_run, initial),
            "jaxopt_port": max_difference(run_jax(spec, config), torch_run, state=False)[0],
            "optax_gap": None,
        }
        if factory is not None:
            optax_run = run_jax(spec, config, tx=factory())
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
