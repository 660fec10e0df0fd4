"""The registry of what ``jaxopt-parity`` runs: one `Section` per kind of run.

A section is a table of specs plus a runner plus the rows it adds to the report: it turns the
CLI's choices (a `Selection`) into `Case` objects, each of which runs to one
`parity.report.results.RunResult` of the section's ``kind``. The CLI lists, filters, runs and
reports whatever the registered sections return, so a new kind of run (pruning, quantization,
low-bit optimizers, ...) plugs in with `register` in its own module, named in
`SECTION_MODULES`, without any change to the CLI.

The built-in sections (`parity.run.suite`): ``optimizers`` (every optimizer × option set on
small problems, with the NumPy reference; ``--models formula``) and ``models`` (the twin models
trained in torch and Flax NNX). This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parity.report.results import RunResult

__all__ = [
    "DTYPES",
    "SECTION_MODULES",
    "Case",
    "Section",
    "Selection",
    "kinds",
    "register",
    "sections",
]

#: The dtypes a run can be asked for.
DTYPES = ("float64", "float32")
#: The modules whose import registers the sections, in report order.
SECTION_MODULES = ("parity.run.suite", "parity.run.packages")


@dataclass(frozen=True)
class Case:
    """One run to do: what the CLI lists, filters and executes."""

    kind: str
    optimizer: str
    config: str
    model: str
    dtype: str
    run: Callable[[], RunResult] = dataclasses.field(compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.optimizer}/{self.config}/{self.model}/{self.dtype}"

    def execute(self) -> RunResult:
        """Run it; an exception becomes a failed result naming it, never a crashed suite."""
        start = time.perf_counter()
        try:
            result = self.run()
        except Exception as error:  # a crash is a finding, reported with the run's name
            result = self.failed(error)
        result.seconds = time.perf_counter() - start
        return result

    def failed(self, error: BaseException, where: str = "") -> RunResult:
        """A failed result naming this run and the error's first line (``where`` before it)."""
        lines = str(error).strip().splitlines()  # JAX appends notes; keep the message
        last = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        return RunResult(
            self.kind, self.optimizer, self.config, self.model, self.dtype, 0, math.nan,
            error=where + last,
        )  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """What the CLI's options ask for.

    Attributes:
      optimizers: optimizer names (``None``: the section's default set).
      models: the ``--models`` names this section is asked for (never empty when it is asked).
      dtypes: ``"float64"`` and/or ``"float32"``.
      full: every configuration in every dtype.
      quick: one configuration per optimizer.
      steps: optimizer steps per run (``None``: each spec's).
      seed: initial weights and data.
      device: torch's device for the runs that place tensors (``"cpu"`` or ``"cuda"``).
    """

    optimizers: Sequence[str] | None
    models: Sequence[str]
    dtypes: Sequence[str] = DTYPES
    full: bool = False
    quick: bool = False
    steps: int | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class Section:
    """One kind of run.

    Attributes:
      name: the section's name (``"optimizers"``).
      kind: ``RunResult.kind`` of its runs (``"optimizer"``); the report lists kinds in
        registration order.
      models: the ``--models`` values it answers to, each with a description for ``--help``
        (``""``: the name says it).
      optimizers: a function returning the optimizer names ``--optimizers`` accepts for it.
      cases: ``Selection -> [Case]``, in a stable order.
    """

    name: str
    kind: str
    models: dict[str, str]
    optimizers: Callable[[], Sequence[str]]
    cases: Callable[[Selection], list[Case]]


_REGISTRY: dict[str, Section] = {}


def register(section: Section) -> Section:
    """Add ``section`` (replacing one of the same name); returns it.

    Raises:
      ValueError: one of its ``--models`` values is another section's.
    """
    for other in _REGISTRY.values():
        clash = sorted(set(other.models) & set(section.models))
        if other.name != section.name and clash:
            raise ValueError(f"section {section.name!r}: models {clash} are {other.name!r}'s")
    _REGISTRY[section.name] = section
    return section


def sections() -> tuple[Section, ...]:
    """Every registered section, in registration order (the modules of `SECTION_MODULES`
    imported first)."""
    for module in SECTION_MODULES:
        importlib.import_module(module)
    return tuple(_REGISTRY.values())


def kinds() -> tuple[str, ...]:
    """The kinds of the registered sections, in order."""
    return tuple(s.kind for s in sections())
