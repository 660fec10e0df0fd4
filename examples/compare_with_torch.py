"""Train the same model with every torch.optim optimizer in PyTorch and in JAX, and compare.

A tanh MLP on scikit-learn's bundled digits (1797 8x8 images, no download), float64, the same
initial weights and the same mini-batches in both frameworks. Muon trains the bias-free MLP (it
takes 2-D parameters only); SparseAdam trains an embedding table with sparse gradients.

Prints, per optimizer, the final full-data loss in each framework, the largest parameter
difference between them and the largest difference of either from the NumPy float64 reference of
the documented update rule (parity/reference/optim.py); exits with status 1 if any exceeds 1e-12.

    python examples/compare_with_torch.py [--steps 50]

Sign-based updates amplify rounding: with ``--steps 100`` Rprop departs from torch at step 87,
where one W1 gradient entry is exactly 0.0 in torch and 6e-21 in JAX (the two sum the batch in a
different order); ``sign()`` turns that into a full step of 1e-3. Every other optimizer stays
within 1e-12 over 100 steps. L-BFGS runs 2 steps of 5 inner iterations on one 64-image batch: it
fits it soon, and near a zero loss L-BFGS amplifies rounding in torch itself (docs/optimizers.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from parity.metric import F64_GATE
from parity.run.optim import max_difference, run_jax, run_reference, run_torch, torch_dtype
from parity.specs.optim import SPECS, Config
from parity.specs.problems import make_problem

#: A learning rate per optimizer that trains this model in 50 steps (torch's defaults elsewhere).
LEARNING_RATES = {
    "adadelta": 1.0, "adafactor": 0.05, "adagrad": 0.05, "adam": 3e-3, "adamax": 5e-3,
    "adamw": 3e-3, "asgd": 0.2, "lbfgs": 1.0, "muon": 0.05, "nadam": 3e-3, "radam": 3e-3,
    "rmsprop": 1e-3, "rprop": 1e-3, "sgd": 0.2, "sparse_adam": 0.05,
}  # fmt: skip
PROBLEM = {"muon": "digits_nobias", "sparse_adam": "embedding"}
#: L-BFGS: 2 steps of 5 inner iterations each (see the module docstring).
EXTRA = {"lbfgs": {"max_iter": 5}}
TOLERANCE = F64_GATE


def full_loss(problem_name: str, params: list[np.ndarray]) -> float:
    """The loss over all the data a problem has seen, at the given parameters, in torch float64."""
    import torch

    problem = make_problem(problem_name, steps=1)
    stacked = tuple(
        np.concatenate([b[i] for b in problem.batches]) for i in range(len(problem.batches[0]))
    )
    with torch_dtype("float64"):
        return float(problem.torch_loss([torch.tensor(p) for p in params], stacked))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    print(
        f"{'optimizer':12s} {'loss (torch)':>13s} {'loss (JAX)':>13s} {'JAX-torch':>10s} "
        f"{'vs NumPy':>10s}  {'time':>6s}"
    )
    failures = []
    for spec in SPECS:
        problem = PROBLEM.get(spec.name, "digits")
        steps = spec.steps if spec.name == "lbfgs" else args.steps  # see docs/optimizers.md
        spec = dataclasses.replace(spec, problem=problem, steps=steps)
        config = Config("example", {"lr": LEARNING_RATES[spec.name], **EXTRA.get(spec.name, {})})
        start = time.perf_counter()
        torch_run = run_torch(spec, config, "float64")
        jax_run = run_jax(spec, config, "float64")
        reference_run = run_reference(spec, config)
        diff, _ = max_difference(jax_run, torch_run, state=False)
        from_reference = max(
            max_difference(run, reference_run, state=False)[0] for run in (jax_run, torch_run)
        )
        elapsed = time.perf_counter() - start
        losses = [full_loss(problem, run.params) for run in (torch_run, jax_run)]
        flag = "" if max(diff, from_reference) <= TOLERANCE else "  FAIL"
        print(
            f"{spec.name:12s} {losses[0]:13.6f} {losses[1]:13.6f} {diff:10.2e} "
            f"{from_reference:10.2e}  {elapsed:5.1f}s{flag}"
        )
        if flag:
            failures.append(spec.name)
    if failures:
        print(f"FAILED (> {TOLERANCE:g}): {', '.join(failures)}")
        return 1
    print(
        f"all {len(SPECS)} optimizers: JAX, torch and the NumPy reference agree to "
        f"<= {TOLERANCE:g} (float64)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
