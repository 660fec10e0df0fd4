"""What the parity suite runs, as tables: optimizer specs, lr scheduler specs, problems, models, data.

- `parity.specs.optim`: one `OptimSpec` row per optimizer, with its capabilities (closure,
  extra JAX arguments, torch context, twin-model settings, ...) as fields.
- `parity.specs.schedules`: one `ScheduleSpec` row per lr scheduler configuration.
- `parity.specs.problems`: the small problems the optimizer runs train.
- `parity.specs.models` and `parity.specs.data`: the twin models (torch and Flax NNX) and their
  batches.

Nothing here is imported by `import parity`; `parity.specs.models` imports torch and Flax.
"""
