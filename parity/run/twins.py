"""The suite's twin-model runs: a model of :mod:`parity.specs.models` trained in torch and in JAX.

:func:`run_model` builds the twins (:func:`parity.specs.models.make_twins`), the torch optimizer(s)
(``foreach=False``) and optionally a torch lr scheduler, and trains both on
:func:`parity.specs.data.batches` with :func:`parity.run.twin_training.train_twins` (the loop that
:func:`parity.compare` uses for users' models); the result is judged on the float64 gate or on
the float32 tolerance measured per model in the optimizer's spec (``model_f32_atol``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from parity.metric import F64_GATE, gate_note
from parity.report.results import RunResult
from parity.run.twin_training import train_twins

__all__ = [
    "MODEL_SCHEDULES",
    "optimizers_for",
    "resolve_schedule",
    "run_model",
]

#: Twin-model runs take each optimizer's settings from its `parity.specs.optim.OptimSpec`:
#: ``model_kwargs``, ``model_steps``, ``model_f32_atol`` (measured), ``takes`` and ``companion``.


def optimizers_for(model: str) -> tuple[str, ...]:
    """The optimizers :func:`run_model` can train ``model`` with: every spec, except that those
    taking sparse-gradient embeddings (SparseAdam) need a model with an embedding (the
    transformer's)."""
    from parity.specs.models import EMBEDDING_MODELS
    from parity.specs.optim import SPECS

    return tuple(s.name for s in SPECS if s.takes != "sparse" or model in EMBEDDING_MODELS)


def _one_cycle(steps: int, lr: float) -> dict[str, Any]:
    return {"max_lr": lr, "total_steps": steps + 1}


#: lr schedulers at the scale of a twin-model run: id -> ``(torch class name, kwargs(steps,
#: lr))``, so that the lr moves within the run's few steps (``parity.specs.schedules`` holds
#: configurations for runs of a thousand steps; their ids are accepted too).
MODEL_SCHEDULES: dict[str, tuple[str, Callable[[int, float], dict[str, Any]]]] = {
    "OneCycleLR-cos": ("OneCycleLR", _one_cycle),
    "CosineAnnealingLR": ("CosineAnnealingLR", lambda steps, lr: {"T_max": steps}),
    "StepLR": ("StepLR", lambda steps, lr: {"step_size": max(1, steps // 4), "gamma": 0.5}),
    "LinearLR-warmup": (
        "LinearLR",
        lambda steps, lr: {"start_factor": 0.1, "total_iters": max(1, steps // 2)},
    ),
}


def resolve_schedule(schedule: Any, steps: int, lr: float) -> Any:
    """A ``parity.specs.schedules.ScheduleSpec`` from a spec, a :data:`MODEL_SCHEDULES` id, or a
    ``parity.specs.schedules.SPECS`` id.

    Raises:
      KeyError: an unknown id (the message lists the known ones).
    """
    from parity.specs.schedules import SPECS, ScheduleSpec

    if isinstance(schedule, ScheduleSpec):
        return schedule
    if schedule in MODEL_SCHEDULES:
        name, kwargs = MODEL_SCHEDULES[schedule]
        return ScheduleSpec(name, kwargs(steps, lr), id=schedule)
    for s in SPECS:
        if s.id == schedule:
            return s
    raise KeyError(
        f"no schedule {schedule!r}; expected one of {[*MODEL_SCHEDULES, *(s.id for s in SPECS)]}"
    )


def _optimizer_builder(model: Any, optimizer: str, kwargs: Mapping[str, Any]) -> Callable:
    """``params -> torch optimizer(s)`` for ``optimizer`` on ``model`` (``foreach=False``): the
    spec's ``companion`` trains the parameters it does not take."""
    import torch

    from parity.run.optim import torch_kwargs
    from parity.specs.optim import spec

    s = spec(optimizer)
    cls = getattr(torch.optim, s.torch_cls)
    if s.companion is None:
        return lambda params: cls(params, **torch_kwargs(cls, dict(kwargs)))
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    sparse = {id(m.weight) for m in model.modules() if getattr(m, "sparse", False)}
    if s.takes == "matrices":
        takes = lambda p: p.ndim == 2 and id(p) not in embeddings
    elif s.takes == "sparse":
        takes = lambda p: id(p) in sparse
    else:
        raise ValueError(f"{optimizer}: a companion needs takes='matrices' or 'sparse'")
    other_name, other_kwargs = s.companion
    other = getattr(torch.optim, other_name)

    def build(params: list[Any]) -> list[Any]:
        mine = [p for p in params if takes(p)]
        if not mine:
            raise ValueError(f"{optimizer} has no parameter to train in this model")
        return [
            cls(mine, **torch_kwargs(cls, dict(kwargs))),
            other([p for p in params if not takes(p)], **torch_kwargs(other, other_kwargs)),
        ]

    return build


def run_model(
    model: str,
    optimizer: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    schedule: Any = None,
    dtype: str = "float64",
    steps: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    config_name: str | None = None,
    device: str = "cpu",
) -> RunResult:
    """Train a twin model (:mod:`parity.specs.models`) in torch and in JAX with one optimizer.

    Muon trains the 2-D weight matrices and SparseAdam the transformer's token embedding
    (sparse gradients); the spec's ``companion`` (torch AdamW / Adam) trains the rest, and the JAX
    side is the ``optax.partition`` of the two ``from_torch`` transformations. The data are
    :func:`parity.specs.data.batches` (seeded). An exception becomes ``RunResult(error=...)``.

    Args:
      model: one of :data:`parity.specs.models.MODELS`.
      optimizer: a jaxopt_port name (one of :func:`optimizers_for` ``(model)``).
      kwargs: torch keyword arguments (``foreach=False`` is added).
      schedule: a torch lr scheduler on the optimizer: a ``ScheduleSpec`` or an id of
        :data:`MODEL_SCHEDULES` or of ``parity.specs.schedules.SPECS`` (stepped every step).
      dtype: ``"float64"`` (judged on the float64 gate, 1e-12, on parameters and optimizer state) or ``"float32"``
        (parameters, judged by the spec's ``model_f32_atol``).
      steps: optimizer steps (default: the spec's ``model_steps``).
      seed: the models' initialization and the batches.
      tolerance: overrides the tolerance above.
      config_name: ``RunResult.config`` (default: the schedule's id, else ``"default"``).
      device: torch's device for the model and batches.

    Returns:
      The judged :class:`parity.report.results.RunResult` (``kind="model"``).

    Example:
      >>> result = run_model("mlp", "adam", {"lr": 1e-3}, steps=5)
      >>> result.passed
      True
    """
    from parity.specs import data, models
    from parity.specs.optim import MODEL_F32_DEFAULT, spec

    s = spec(optimizer)
    steps = s.model_steps if steps is None else steps
    kwargs = dict(kwargs or {})
    schedule_id = getattr(schedule, "id", schedule)
    if dtype == "float64":
        note = gate_note("parameters and optimizer state")
        default = F64_GATE
    else:
        measured = model in s.model_f32_atol
        default = s.model_f32_atol.get(model, MODEL_F32_DEFAULT)
        note = (
            "measured float32 tolerance (parity/specs/optim.py model_f32_atol), parameters"
            if measured
            else "float32 default tolerance (not measured for this pair), parameters"
        )
    result = RunResult(
        "model", optimizer, config_name or schedule_id or "default", model, dtype, steps,
        tolerance=default if tolerance is None else tolerance,
        tolerance_note=note if tolerance is None else "given by the caller",
    )  # fmt: skip
    start = time.perf_counter()
    try:
        import jax

        if optimizer not in optimizers_for(model):
            raise ValueError(f"{optimizer} cannot train the {model} model (no sparse embedding)")
        with jax.enable_x64(dtype == "float64"):
            torch_model, nnx_model = models.make_twins(
                model, dtype, seed, sparse=s.takes == "sparse"
            )
        torch_model.to(device)
        scheduler = None
        if schedule is not None:
            from jaxopt_port import optim
            from parity.run.optim import base_lr

            lr = base_lr(kwargs, getattr(optim, optimizer))  # the given lr or torch's default
            scheduler = resolve_schedule(schedule, steps, lr).torch
        train_twins(
            torch_model, nnx_model, _optimizer_builder(torch_model, optimizer, kwargs),
            data.batches(model, steps, seed), result, scheduler=scheduler, device=device,
        )  # fmt: skip
    except Exception as error:  # a crash is a finding, reported with the run's name
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result
