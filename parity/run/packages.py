"""The sections of the packages beyond the optimizers: pruning, quantization, gradient-free,
prox (PARQ/PAT) and lowbit (torchao's low-bit optimizers and int8 config).

Each package's runner (`parity.run.pruning`, `parity.run.quantization`,
`parity.run.gradient_free`, `parity.run.prox`, `parity.run.lowbit`) compares jaxopt_port with torch and with the package's NumPy
reference (`parity.reference.<package>`) rule by rule and returns one row per rule. Here each
package is one section (`--models pruning`, ...) with one run in the report: its `worst` is the
largest figure over the rules (a mask or code difference, a count of mismatching values, or a
float64 difference), judged against the float64 gate (masks and codes must be equal, so any
difference of theirs fails it); a rule its runner failed counts as
infinitely off, `where` names the worst rule and the tolerance note lists every rule's figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parity import sections
from parity.metric import F64_GATE
from parity.report.results import RunResult

__all__ = ["PACKAGES", "PackageSpec", "package_result"]


@dataclass(frozen=True)
class PackageSpec:
    """One package's section.

    Attributes:
      name: the section, its kind and its `--models` value.
      description: for `--help`.
      dtype: the precision its comparison runs in (the run is listed under it; `--dtype`
        selects it).
      rows: `quick -> rows`: runs the package's comparison (`quick`: fewer cases).
    """

    name: str
    description: str
    dtype: str
    rows: Callable[[bool], list[dict[str, Any]]]


def _pruning(quick: bool) -> list[dict[str, Any]]:
    from parity.run.pruning import run_pruning_parity

    return run_pruning_parity(cases=20 if quick else 200)


def _quantization(quick: bool) -> list[dict[str, Any]]:
    from parity.run.quantization import (
        run_ptq_model_parity,
        run_qat_model_parity,
        run_quantization_parity,
    )

    rows = run_quantization_parity(cases=2, per_case=2_000) if quick else run_quantization_parity()
    return rows + run_ptq_model_parity(quick) + run_qat_model_parity(quick)


def _gradient_free(quick: bool) -> list[dict[str, Any]]:
    from parity.run.gradient_free import run_gradient_free_parity

    if quick:
        return run_gradient_free_parity(seeds=(0,), iterations=10)
    return run_gradient_free_parity()


def _prox(quick: bool) -> list[dict[str, Any]]:
    from parity.run.prox import run_prox_parity

    return run_prox_parity(quick)


def _lowbit(quick: bool) -> list[dict[str, Any]]:
    from parity.run.lowbit import run_lowbit_parity

    return run_lowbit_parity(quick)


#: The package sections, in report order.
PACKAGES = (
    PackageSpec(
        "pruning",
        "masks of torch.nn.utils.prune / torch.ao.pruning and a pruned training run",
        "float64",
        _pruning,
    ),
    PackageSpec(
        "quantization",
        "torch.ao.quantization: numerics on near-tie inputs, PTQ and QAT models on digits",
        "float32",
        _quantization,
    ),
    PackageSpec(
        "gradient_free",
        "SA, GA, DE, CMA-ES, ES gradients vs the NumPy reference",
        "float64",
        _gradient_free,
    ),
    PackageSpec(
        "prox",
        "PARQ / PAT (torchao.prototype) quantizers, prox maps and training runs",
        "float64",
        _prox,
    ),
    PackageSpec(
        "lowbit",
        "torchao's low-bit Adam(W): codes bitwise, parameters within 16 ulps; int8 dynamic config",
        "float32",
        _lowbit,
    ),
)


def _figure(row: dict[str, Any]) -> float:
    figure = float(row.get("worst", row.get("mismatches", math.nan)))
    return figure if row["passed"] else max(figure, math.inf)


def package_result(name: str, rows: list[dict[str, Any]], dtype: str = "float64") -> RunResult:
    """One report run for a package's rule rows (see the module docstring)."""
    figures = [_figure(row) for row in rows]
    worst = max(figures, default=math.nan)
    named = max(range(len(rows)), key=figures.__getitem__) if rows else None
    result = RunResult(name, name, "all", name, dtype, len(rows), F64_GATE)
    result.worst = worst
    result.where = f"{rows[named]['name']}: {figures[named]:.3g}" if named is not None else ""
    result.tolerance_note = "rules: " + "; ".join(
        f"{row['name']} {figure:.3g}" for row, figure in zip(rows, figures, strict=True)
    )
    return result


def _cases(spec: PackageSpec) -> Callable[[sections.Selection], list[sections.Case]]:
    def cases(selection: sections.Selection) -> list[sections.Case]:
        if spec.dtype not in selection.dtypes:
            return []
        run = lambda: package_result(spec.name, spec.rows(selection.quick), spec.dtype)
        return [sections.Case(spec.name, spec.name, "all", spec.name, spec.dtype, run)]

    return cases


for _spec in PACKAGES:
    sections.register(
        sections.Section(
            _spec.name,
            _spec.name,
            {_spec.name: _spec.description},
            lambda name=_spec.name: (name,),
            _cases(_spec),
        )
    )
