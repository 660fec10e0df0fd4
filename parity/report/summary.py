"""Counts, figures and one-line verdicts of parity runs, shared by the terminal and the report files."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from parity.report.order import ratio, sort_key
from parity.report.results import RunResult

__all__ = ["failure_lines", "rank", "status", "summarize", "summary_line"]


def status(r: RunResult) -> str:
    return "ERROR" if r.error is not None else ("PASS" if r.passed else "FAIL")


def _num(x: float | None, spec: str = ".2e") -> str:
    """A figure for people: ``—`` for missing, ``0`` for exact zero, ``inf``/``nan`` as such."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return format(x, spec) if math.isfinite(x) else str(x)


def _final(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def _max_abs(r: RunResult) -> float | None:
    return max(r.param_abs) if r.param_abs else None


def _first_line(text: str, width: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(no message)"
    return line if len(line) <= width else line[: width - 1] + "…"


# --------------------------------------------------------------------------- counts and lines


def summarize(results: Sequence[RunResult]) -> dict[str, Any]:
    """Counts for the JSON ``summary`` and the report header.

    Returns:
      ``{"runs", "passed", "failed", "errors", "seconds", "worst_ratio", "by_kind": {kind: {...}}}``
      where ``failed`` excludes errors and ``worst_ratio`` is the largest finite worst/tolerance.
    """

    def counts(runs: Sequence[RunResult]) -> dict[str, int]:
        errors = sum(r.error is not None for r in runs)
        passed = sum(r.passed for r in runs)
        return {
            "runs": len(runs),
            "passed": passed,
            "failed": len(runs) - passed - errors,
            "errors": errors,
        }

    by_kind: dict[str, list[RunResult]] = defaultdict(list)
    for r in sorted(results, key=sort_key):
        by_kind[r.kind].append(r)
    finite = [x for x in map(ratio, results) if math.isfinite(x)]
    return {
        **counts(results),
        "seconds": sum(r.seconds for r in results),
        "worst_ratio": max(finite, default=None),
        "by_kind": {kind: counts(runs) for kind, runs in by_kind.items()},
    }


def failure_lines(results: Sequence[RunResult]) -> list[str]:
    """One line per run that did not pass, the furthest miss first.

    A failing run reads ``FAIL id: worst W > tolerance T (missed by N×); WHERE`` (``where`` names
    the leaf and step); a crashed run ``ERROR id: the first line of its exception``.
    """
    lines = []
    for r in _failing(results):
        if r.error is not None:
            lines.append(f"ERROR {r.id}: {_first_line(r.error)}")
            continue
        where = f"; {r.where}" if r.where else ""
        figures = f"worst {_num(r.worst)} > tolerance {_num(r.tolerance, '.3g')}"
        lines.append(f"FAIL {r.id}: {figures} ({_miss_text(r)}){where}")
    return lines


def _miss_text(r: RunResult) -> str:
    x = ratio(r)
    if math.isfinite(x):
        return f"missed by {x:.3g}×"
    if math.isnan(r.worst):
        return "difference is NaN"
    return "difference not finite" if math.isinf(r.worst) else "tolerance 0: must match exactly"


def rank(r: RunResult) -> float:
    x = ratio(r)
    return math.inf if math.isnan(x) else x


def _failing(results: Sequence[RunResult]) -> list[RunResult]:
    """The runs that did not pass: errors first, then the furthest miss first."""
    return sorted((r for r in results if not r.passed), key=lambda r: (r.error is None, -rank(r)))


def summary_line(results: Sequence[RunResult], seconds: float | None = None) -> str:
    """``"282 runs: 280 passed, 1 failed, 1 error in 63.2 s"`` (or ``"all 282 runs passed ..."``).

    Args:
      results: the runs.
      seconds: the wall time to quote; ``None`` leaves the time out.
    """
    s = summarize(results)
    took = "" if seconds is None else f" in {seconds:.1f} s"
    runs = f"{s['runs']} run{'s' if s['runs'] != 1 else ''}"
    if s["runs"] and s["passed"] == s["runs"]:
        return f"all {s['runs']} runs passed{took}" if s["runs"] > 1 else f"the run passed{took}"
    error = f", {s['errors']} error{'s' if s['errors'] != 1 else ''}" if s["errors"] else ""
    return f"{runs}: {s['passed']} passed, {s['failed']} failed{error}{took}"
