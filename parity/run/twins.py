"""The suite's twin-model runs: a model of :mod:`parity.specs.models` trained in torch and in JAX.

:func:`run_model` builds the twins (:func:`parity.specs.models.make_twins`), the torch optimizer(s)
(``foreach=False``) and optionally a torch lr scheduler, and trains both on
:func:`parity.specs.data.batches` with :func:`parity.run.twin_training.train_twins` (the loop that
:func:`parity.compare` uses for users' models); the result is judged on the float64 gate or on
the float32 tolerance measured here (:data:`F32_TOLERANCE`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from parity.metric import F64_GATE, gate_note
from parity.report.results import RunResult
from parity.run.twin_training import train_twins

__all__ = [
    "COMPANIONS",
    "F32_TOLERANCE",
    "MODEL_SCHEDULES",
    "STEPS",
    "STEPS_FOR",
    "optimizers_for",
    "resolve_schedule",
    "run_model",
]

#: Default number of optimizer steps of a twin-model run.
STEPS = 20
#: Fewer steps where more are not a meaningful comparison. L-BFGS: one step is up to max_iter
#: (the suite: 4) evaluations, and its curvature pairs ``y = g_new - g_old`` lose digits as it
#: converges, so torch soon disagrees with itself: torch against torch with the batch rows
#: permuted (the same sums in another order) differs in the parameters by 1.6e-14 after 4 steps
#: and 1.6e-13 after 6 on the LSTM, and by 6.8e-5 after 20 on the MLP. JAX against torch after 4
#: steps: 2.8e-14 in the parameters and 3.1e-13 in the state (LSTM, the worst model; 3.5e-8
#: after 20 steps on the MLP).
STEPS_FOR = {"lbfgs": 4}

#: float32: the worst scaled parameter difference allowed, per (model, optimizer): about 3x the
#: worst measured after the default number of steps (20; L-BFGS 4) with the suite's learning
#: rates (parity.run.suite.MODEL_LR, MODEL_KWARGS), seed 0, over the default and the scheduled
#: configurations (parity.run.suite.SCHEDULED_MODEL_RUNS). Optimizers that divide by √v (Adam family,
#: Adagrad, RMSprop) pass a gradient's relative error on to the step, and the LSTM's float32
#: gradient is the least accurate: against float64 at the same weights its worst entry is off by
#: 1.1e-2 relative (lstm.weight_ih_l0; MLP 4.6e-4, transformer 8.0e-5, CNN 3.1e-5), hence its
#: larger entries. Rprop's sign-based steps are bitwise equal.
F32_TOLERANCE: dict[tuple[str, str], float] = {
    ("mlp", "adadelta"): 2e-07,  # measured 4.47e-08
    ("mlp", "adafactor"): 7e-08,  # measured 2.24e-08
    ("mlp", "adagrad"): 7e-07,  # measured 2.24e-07
    ("mlp", "adam"): 3e-07,  # measured 8.20e-08
    ("mlp", "adamax"): 4e-07,  # measured 1.12e-07
    ("mlp", "adamw"): 5e-07,  # measured 1.49e-07 (worst of default and CosineAnnealingLR)
    ("mlp", "asgd"): 3e-07,  # measured 8.94e-08
    ("mlp", "lbfgs"): 2e-05,  # measured 3.81e-06
    ("mlp", "muon"): 2e-06,  # measured 6.41e-07
    ("mlp", "nadam"): 4e-07,  # measured 1.19e-07
    ("mlp", "radam"): 4e-07,  # measured 1.04e-07
    ("mlp", "rmsprop"): 2e-06,  # measured 4.77e-07
    ("mlp", "rprop"): 0.0,  # measured 0: bitwise equal to torch
    ("mlp", "sgd"): 2e-07,  # measured 6.33e-08 (worst of default and OneCycleLR-cos)
    ("cnn", "adadelta"): 2e-07,  # measured 5.96e-08
    ("cnn", "adafactor"): 4e-07,  # measured 1.17e-07
    ("cnn", "adagrad"): 2e-06,  # measured 5.22e-07
    ("cnn", "adam"): 3e-07,  # measured 8.94e-08 (worst of default and StepLR)
    ("cnn", "adamax"): 2e-07,  # measured 5.22e-08
    ("cnn", "adamw"): 2e-06,  # measured 5.86e-07
    ("cnn", "asgd"): 2e-06,  # measured 4.52e-07
    ("cnn", "lbfgs"): 3e-06,  # measured 8.94e-07
    ("cnn", "muon"): 2e-06,  # measured 6.29e-07
    ("cnn", "nadam"): 8e-07,  # measured 2.33e-07
    ("cnn", "radam"): 4e-07,  # measured 1.19e-07
    ("cnn", "rmsprop"): 4e-07,  # measured 1.15e-07
    ("cnn", "rprop"): 0.0,  # measured 0: bitwise equal to torch
    ("cnn", "sgd"): 2e-06,  # measured 4.47e-07
    ("transformer", "adadelta"): 4e-07,  # measured 1.18e-07
    ("transformer", "adafactor"): 4e-07,  # measured 1.09e-07
    ("transformer", "adagrad"): 7e-06,  # measured 2.00e-06
    ("transformer", "adam"): 2e-07,  # measured 5.96e-08
    ("transformer", "adamax"): 6e-07,  # measured 1.79e-07
    ("transformer", "adamw"): 3e-06,  # measured 9.05e-07
    ("transformer", "asgd"): 3e-06,  # measured 9.47e-07
    ("transformer", "lbfgs"): 6e-06,  # measured 1.97e-06
    ("transformer", "muon"): 2e-05,  # measured 4.12e-06
    ("transformer", "nadam"): 2e-06,  # measured 5.66e-07
    ("transformer", "radam"): 6e-07,  # measured 1.79e-07
    ("transformer", "rmsprop"): 4e-07,  # measured 1.19e-07
    ("transformer", "rprop"): 0.0,  # measured 0: bitwise equal to torch
    ("transformer", "sgd"): 4e-07,  # measured 1.19e-07
    ("transformer", "sparse_adam"): 4e-07,  # measured 1.15e-07
    ("lstm", "adadelta"): 2e-07,  # measured 5.96e-08
    ("lstm", "adafactor"): 2e-07,  # measured 4.47e-08
    ("lstm", "adagrad"): 0.0002,  # measured 3.86e-05
    ("lstm", "adam"): 2e-05,  # measured 4.89e-06
    ("lstm", "adamax"): 3e-05,  # measured 8.12e-06
    ("lstm", "adamw"): 2e-05,  # measured 4.94e-06
    ("lstm", "asgd"): 9e-07,  # measured 2.68e-07
    ("lstm", "lbfgs"): 6e-05,  # measured 1.89e-05
    ("lstm", "muon"): 7e-06,  # measured 2.32e-06
    ("lstm", "nadam"): 2e-05,  # measured 5.15e-06
    ("lstm", "radam"): 4e-07,  # measured 1.19e-07
    ("lstm", "rmsprop"): 2e-05,  # measured 3.87e-06
    ("lstm", "rprop"): 0.0,  # measured 0: bitwise equal to torch
    ("lstm", "sgd"): 2e-07,  # measured 4.47e-08
}
#: float32 tolerance for a (model, optimizer) pair without an entry (not measured).
F32_DEFAULT = 1e-4

#: Optimizers that take only some parameters, and the torch optimizer (with its kwargs) that
#: trains the rest: Muon takes the 2-D weight matrices (not embedding tables), SparseAdam the
#: embedding tables with sparse gradients.
COMPANIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "muon": ("AdamW", {"lr": 3e-3}),
    "sparse_adam": ("Adam", {"lr": 3e-3}),
}


def optimizers_for(model: str) -> tuple[str, ...]:
    """The optimizers :func:`run_model` can train ``model`` with: all 15 except SparseAdam, which
    needs an embedding with sparse gradients (the transformer's)."""
    from jaxopt_port.optim import OPTIMIZERS

    return tuple(o for o in OPTIMIZERS if o != "sparse_adam" or model == "transformer")


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
    """``params -> torch optimizer(s)`` for ``optimizer`` on ``model`` (``foreach=False``)."""
    import torch

    from parity.run.optim import _torch_kwargs
    from parity.specs.optim import spec

    cls = getattr(torch.optim, spec(optimizer).torch_cls)
    if optimizer not in COMPANIONS:
        return lambda params: cls(params, **_torch_kwargs(cls, dict(kwargs)))
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    sparse = {id(m.weight) for m in model.modules() if getattr(m, "sparse", False)}
    if optimizer == "muon":
        takes = lambda p: p.ndim == 2 and id(p) not in embeddings
    else:
        takes = lambda p: id(p) in sparse
    other_name, other_kwargs = COMPANIONS[optimizer]
    other = getattr(torch.optim, other_name)

    def build(params: list[Any]) -> list[Any]:
        mine = [p for p in params if takes(p)]
        if not mine:
            raise ValueError(f"{optimizer} has no parameter to train in this model")
        return [
            cls(mine, **_torch_kwargs(cls, dict(kwargs))),
            other([p for p in params if not takes(p)], **_torch_kwargs(other, other_kwargs)),
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
    (sparse gradients); torch AdamW / Adam (:data:`COMPANIONS`) trains the rest, and the JAX
    side is the ``optax.partition`` of the two ``from_torch`` transformations. The data are
    :func:`parity.specs.data.batches` (seeded). An exception becomes ``RunResult(error=...)``.

    Args:
      model: one of :data:`parity.specs.models.MODELS`.
      optimizer: a jaxopt_port name (one of :func:`optimizers_for` ``(model)``).
      kwargs: torch keyword arguments (``foreach=False`` is added).
      schedule: a torch lr scheduler on the optimizer: a ``ScheduleSpec`` or an id of
        :data:`MODEL_SCHEDULES` or of ``parity.specs.schedules.SPECS`` (stepped every step).
      dtype: ``"float64"`` (judged on the float64 gate, 1e-12, on parameters and optimizer state) or ``"float32"``
        (parameters, judged by :data:`F32_TOLERANCE`).
      steps: optimizer steps (default :data:`STEPS`, or :data:`STEPS_FOR` the optimizer).
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

    steps = STEPS_FOR.get(optimizer, STEPS) if steps is None else steps
    kwargs = dict(kwargs or {})
    schedule_id = getattr(schedule, "id", schedule)
    if dtype == "float64":
        note = gate_note("parameters and optimizer state")
        default = F64_GATE
    else:
        measured = (model, optimizer) in F32_TOLERANCE
        default = F32_TOLERANCE.get((model, optimizer), F32_DEFAULT)
        note = (
            "measured float32 tolerance (parity/run/twins.py F32_TOLERANCE), parameters"
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
                model, dtype, seed, sparse=optimizer == "sparse_adam"
            )
        torch_model.to(device)
        scheduler = None
        if schedule is not None:
            from jaxopt_port import optim
            from parity.run.optim import _base_lr

            lr = _base_lr(kwargs, getattr(optim, optimizer))  # the given lr or torch's default
            scheduler = resolve_schedule(schedule, steps, lr).torch
        train_twins(
            torch_model, nnx_model, _optimizer_builder(torch_model, optimizer, kwargs),
            data.batches(model, steps, seed), result, scheduler=scheduler, device=device,
        )  # fmt: skip
    except Exception as error:  # a crash is a finding, reported with the run's name
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result
