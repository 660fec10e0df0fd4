"""The runners: each trains the same thing in torch and in JAX (and the NumPy reference) and
records a `parity.report.results.RunResult`.

- `parity.run.optim`: one optimizer configuration on a small problem (torch, JAX, reference).
- `parity.run.training`: training loops on a problem, shared by the interop tests.
- `parity.run.layout` and `parity.run.twin_training`: the twin-model training engine behind
  `parity.compare` and the suite's model runs.
- `parity.run.twins`: the suite's twin-model runs.
- `parity.run.forward`: one batch through twin models, module by module (`parity.check_forward`).
- `parity.run.suite`: the runs `jaxopt-parity` selects, registered as sections.
- `parity.run.optax_gap`: how far optax's nearest optimizers land from torch's.
"""
