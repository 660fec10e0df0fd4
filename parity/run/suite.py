"""What ``jaxopt-parity`` runs: the list of runs, selected by the CLI's options, and how each runs.

Two kinds of run, both producing :class:`parity.report.results.RunResult`:

- ``optimizer`` runs: every optimizer × every option set of ``parity.specs.optim`` (torch's own
  ``optim_db`` inputs plus ours: a changing lr, two param groups) on the small problems of
  ``parity.specs.problems``, in torch, in JAX and — float64 — in the NumPy reference of the documented
  formulas (:mod:`parity.reference`); parameters and every state entry are compared after each
  step.
- ``model`` runs: the twin models of :mod:`parity.specs.models` (MLP, CNN, transformer block, LSTM)
  trained in torch and in Flax NNX with an optimizer and, for some, a torch lr scheduler
  (:func:`parity.run.twins.run_model`).

Tolerances: the float64 gate `parity.metric.F64_GATE` (1e-12, scaled difference) on the
parameters after every step and the optimizer state at the end; float32 the tolerance measured
per optimizer in ``parity.specs.optim`` (``f32_atol`` on the small problems, ``model_f32_atol``
per twin model), on the parameters.

The two kinds are registered as sections (`parity.sections`): ``optimizers`` answers
``--models formula``, ``models`` the twin models' names.

Why the state is judged at the end and not after every step (it is recorded after every step):
L-BFGS with a float32-valued tensor lr (``torch_Tensor_lr``) has its search direction ``d`` 1.04e-12
from torch's after step 1 (8.6e-13 after step 2), while torch and the NumPy reference agree to
5.5e-14: there ``y·s ≈ 2.6e-8`` against ``|y||s| ≈ 1.7e-4`` (``ro = 3.9e7``), so the ulp-level
difference between XLA's and MKL's summation order in the dot products is amplified ~6000-fold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from parity import sections
from parity.metric import F64_GATE, gate_note, scaled_difference, state_difference
from parity.report.results import RunResult
from parity.sections import DTYPES, Case

__all__ = [
    "DTYPES",
    "MODELS",
    "Case",
    "all_models",
    "model_cases",
    "optimizer_cases",
    "run_optimizer_case",
    "select",
]


#: The optimizers the default suite trains every twin model with (``--full``: all 15).
DEFAULT_MODEL_OPTIMIZERS = ("sgd", "adamw")
#: Twin-model runs with a torch lr scheduler: (model, optimizer, ``parity.specs.schedules`` id).
SCHEDULED_MODEL_RUNS = (
    ("mlp", "sgd", "OneCycleLR-cos"),
    ("mlp", "adamw", "CosineAnnealingLR"),
    ("cnn", "adam", "StepLR"),
)


# ------------------------------------------------------------------------------------------------
# optimizer runs: small problems, torch vs JAX vs the NumPy reference


def run_optimizer_case(
    name: str, config_id: str, dtype: str = "float64", *, steps: int | None = None, seed: int = 0
) -> RunResult:
    """One optimizer configuration on its problem: torch vs JAX after every step, and (float64)
    both vs the NumPy reference.

    Args:
      name: the optimizer (``parity.specs.optim`` name).
      config_id: a ``Config.id`` of that optimizer's ``configs_for``.
      dtype: ``"float64"`` (judged on parameters, every state entry and the reference, ≤ 1e-12) or
        ``"float32"`` (parameters, judged by the spec's measured ``f32_atol``; the state
        difference is recorded, not judged).
      steps: optimizer steps (default: the spec's, 50; L-BFGS 2).
      seed: the problem's seed (initial parameters and batches).
    """
    from parity.run.optim import run_jax, run_reference, run_torch
    from parity.specs.optim import configs_for, spec

    s = spec(name)
    config = next((c for c in configs_for(s) if c.id == config_id), None)
    if config is None:
        raise KeyError(f"{name} has no configuration {config_id!r}")
    if steps is not None:
        s = dataclasses.replace(s, steps=steps)
    float64 = dtype == "float64"
    torch_run = run_torch(s, config, dtype, seed, record=True)
    jax_run = run_jax(s, config, dtype, seed, record=True)
    reference = run_reference(s, config, seed, record=True) if float64 else None
    result = RunResult(
        "optimizer", name, config_id, s.problem, dtype, s.steps,
        tolerance=F64_GATE if float64 else s.f32_atol,
        tolerance_note=(
            gate_note("parameters, state and the NumPy reference")
            if float64
            else "measured float32 tolerance (parity/specs/optim.py f32_atol), parameters"
        ),
        loss_torch=torch_run.losses, loss_jax=jax_run.losses,
        loss_reference=reference.losses if reference else None,
    )  # fmt: skip
    state_worst = 0.0
    for (jp, js), (tp, ts) in zip(jax_run.history, torch_run.history, strict=True):
        result.record_parameters(jp, tp)
        state = state_difference(js, ts)[0]
        if float64:
            result.state_scaled.append(state)
        state_worst = max(state_worst, state)
    if not float64:
        result.tolerance_note += f"; state differs by up to {state_worst:.2g} (not judged)"
    if reference is not None:
        worst = 0.0  # parameters after every step, state at the end, as for JAX vs torch
        for run in (jax_run, torch_run):
            for p, rp in zip(run.history, reference.history, strict=True):
                worst = max(worst, scaled_difference(p[0], rp[0])[1])
            worst = max(worst, state_difference(run.state, reference.state)[0])
        result.reference_scaled = worst
    return result.judge()


def optimizer_cases(
    dtypes: Sequence[str], *, full: bool, quick: bool, steps: int | None, seed: int
) -> list[Case]:
    """Every optimizer × option set (float64), and float32 for the first option set of each
    (``full``: every option set in every dtype; ``quick``: the first option set only)."""
    from parity.specs.optim import SPECS, configs_for

    cases = []
    for s in SPECS:
        configs = configs_for(s)
        for dtype in dtypes:
            chosen = configs if full or (dtype == "float64" and not quick) else configs[:1]
            for c in chosen:
                run = lambda n=s.name, c=c.id, d=dtype: run_optimizer_case(
                    n, c, d, steps=steps, seed=seed
                )
                cases.append(Case("optimizer", s.name, c.id, s.problem, dtype, run))
    return cases


# ------------------------------------------------------------------------------------------------
# model runs: twin models in torch and Flax NNX


def _model_kwargs(optimizer: str) -> dict[str, Any]:
    from parity.specs.optim import spec

    return dict(spec(optimizer).model_kwargs)


def model_cases(
    models: Sequence[str],
    dtypes: Sequence[str],
    *,
    full: bool,
    quick: bool,
    steps: int | None,
    seed: int,
    device: str = "cpu",
    optimizers: Sequence[str] | None = None,
) -> list[Case]:
    """Each twin model × optimizers × dtype, plus the scheduled runs.

    ``optimizers`` defaults to :data:`DEFAULT_MODEL_OPTIMIZERS` (``full``: all 15; ``quick``: the
    first, and no scheduled runs).
    """
    from parity.run import twins

    if optimizers is None:
        optimizers = (
            _optimizer_names() if full else DEFAULT_MODEL_OPTIMIZERS[: 1 if quick else None]
        )
    cases = []
    usable = {model: twins.optimizers_for(model) for model in models}  # SparseAdam: embeddings

    def add(model: str, optimizer: str, dtype: str, schedule: str | None) -> None:
        config = schedule or "default"

        def run() -> RunResult:
            return twins.run_model(
                model, optimizer, _model_kwargs(optimizer), schedule=schedule, dtype=dtype,
                seed=seed, config_name=config, device=device,
                **({"steps": steps} if steps is not None else {}),
            )  # fmt: skip

        cases.append(Case("model", optimizer, config, model, dtype, run))

    for model in models:
        for dtype in dtypes:
            for optimizer in optimizers:
                if optimizer in usable[model]:
                    add(model, optimizer, dtype, None)
            if not quick:
                for m, optimizer, schedule in SCHEDULED_MODEL_RUNS:
                    if m == model:
                        add(model, optimizer, dtype, schedule)
    return cases


# ------------------------------------------------------------------------------------------------
# the two sections, and selection over every registered section


def _optimizer_names() -> tuple[str, ...]:
    from parity.specs.optim import SPECS

    return tuple(s.name for s in SPECS)


def _twin_models() -> dict[str, str]:
    """``parity.specs.models.MODELS`` (named here: that module imports torch and Flax)."""
    return {"mlp": "", "cnn": "", "transformer": "", "lstm": ""}


sections.register(
    sections.Section(
        "optimizers",
        "optimizer",
        {"formula": "optimizer runs on small problems, with the NumPy reference"},
        _optimizer_names,
        lambda s: optimizer_cases(s.dtypes, full=s.full, quick=s.quick, steps=s.steps, seed=s.seed),
    )
)
sections.register(
    sections.Section(
        "models",
        "model",
        _twin_models(),
        _optimizer_names,
        lambda s: model_cases(
            s.models,
            s.dtypes,
            full=s.full,
            quick=s.quick,
            steps=s.steps,
            seed=s.seed,
            device=s.device,
            optimizers=s.optimizers,
        ),
    )
)


def all_models() -> tuple[str, ...]:
    """Every ``--models`` value, over the registered sections."""
    return tuple(m for s in sections.sections() for m in s.models)


def select(
    *,
    optimizers: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    full: bool = False,
    quick: bool = False,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> list[Case]:
    """The runs the CLI's options choose, section by section in registration order.

    Raises:
      ValueError: an unknown optimizer, model or dtype (the message lists the valid names).
    """
    registered = sections.sections()
    names = list(dict.fromkeys(n for s in registered for n in s.optimizers()))
    for given, valid, what in (
        (optimizers, names, "optimizer"),
        (models, all_models(), "model"),
        (dtypes, DTYPES, "dtype"),
    ):
        unknown = sorted(set(given or ()) - set(valid))
        if unknown:
            raise ValueError(f"unknown {what}(s) {unknown}; expected some of {list(valid)}")
    cases: list[Case] = []
    for section in registered:
        asked = [m for m in (models or section.models) if m in section.models]
        if asked:
            selection = sections.Selection(
                optimizers, asked, dtypes, full, quick, steps, seed, device
            )
            cases += section.cases(selection)
    return [c for c in cases if optimizers is None or c.optimizer in optimizers]


#: Every ``--models`` value of the built-in sections (`all_models` includes later ones).
MODELS = all_models()
