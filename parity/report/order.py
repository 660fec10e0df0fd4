"""The order runs are listed, tabled and plotted in, and each run's ``worst / tolerance``.

Kinds come in the order their sections are registered (`parity.sections`: optimizer runs, then
model runs, then any section added later), then ``"user"`` (`parity.compare`); within a kind, by
model, optimizer, dtype (float64 first) and configuration (the default first).
"""

from __future__ import annotations

import math
import re
from typing import Any

from parity.report.results import RunResult

__all__ = ["DTYPE_ORDER", "is_default", "kind_rank", "natural", "ratio", "sort_key"]

DTYPE_ORDER = {"float64": 0, "float32": 1, "bfloat16": 2}


def kind_rank(kind: str) -> int:
    """Where runs of ``kind`` come: the registered sections' kinds in order, then ``"user"``,
    then anything else."""
    from parity import sections

    order = [*sections.kinds(), "user"]
    return order.index(kind) if kind in order else len(order)


def is_default(config: str) -> bool:
    """``default`` or ``torch_default`` (not ``torch_non-default_lr``)."""
    return re.search(r"(^|_)default$", config) is not None


def natural(text: str) -> list[Any]:
    """Sort key putting ``option_2`` before ``option_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def sort_key(r: RunResult) -> tuple[Any, ...]:
    """Kind, model, optimizer, dtype, configuration (the default first): the report's order."""
    return (
        kind_rank(r.kind),
        r.kind,
        r.model,
        r.optimizer,
        DTYPE_ORDER.get(r.dtype, 9),
        r.dtype,
        not is_default(r.config),
        r.config,
    )


def ratio(r: RunResult) -> float:
    """``worst / tolerance``: 0 for an exact match (even at tolerance 0), ``inf`` for an error or a
    non-zero difference at tolerance 0, NaN for a NaN difference."""
    if r.error is not None:
        return math.inf
    if r.worst == 0:
        return 0.0
    return r.worst / r.tolerance if r.tolerance > 0 else math.inf
