"""What a parity suite shows people: progress, a terminal table, JSON; the report files come from
:mod:`parity.report.document`.

Everything here reads :class:`~parity.report.results.RunResult` objects and nothing else, so the same
functions serve the suite's CLI, :func:`parity.compare` (a report of one run) and re-rendering a
saved JSON file::

    python -m parity.report results.json --report parity-report/

The figures come from :mod:`parity.report.plots`; matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from parity.report.document import FIGURES, NAMES, row_cells, run_seconds, write_report
from parity.report.order import sort_key
from parity.report.results import SCHEMA, RunResult, json_safe
from parity.report.summary import (
    failure_lines,
    rank,
    status,
    summarize,
    summary_line,
)

__all__ = [
    "RunProgress",
    "failure_lines",
    "main",
    "print_table",
    "progress",
    "read_json",
    "summarize",
    "summary_line",
    "write_json",
    "write_report",
]

#: Above this many runs, the non-verbose table shows one row per (optimizer, model, dtype).
AGGREGATE_ABOVE = 40
_STYLE = {"PASS": "green", "FAIL": "bold red", "ERROR": "bold magenta"}

# --------------------------------------------------------------------------- progress


class RunProgress:
    """What :func:`progress` yields: call :meth:`advance` once per finished run."""

    def __init__(self, total: int, console: Console, bar: Any = None, task: Any = None) -> None:
        self.total, self.console, self._bar, self._task = total, console, bar, task
        self.done = self.passed = self.failed = 0
        self._every = max(1, math.ceil(total / 20))  # plain mode: about 20 lines in all
        self._start = time.perf_counter()

    def advance(self, result: RunResult) -> None:
        """Count ``result``, show it as the current run, and name it at once if it failed."""
        self.done += 1
        self.passed += result.passed
        self.failed += not result.passed
        if not result.passed and self.failed <= 20:
            (line,) = failure_lines([result])
            self.console.print(Text(line, style=_STYLE[status(result)]))
        elif not result.passed and self.failed == 21:
            self.console.print("(more failures: all are listed at the end)", highlight=False)
        if self._bar is not None:
            self._bar.update(
                self._task, advance=1, current=result.id, passed=self.passed, failed=self.failed
            )
        elif self.done % self._every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self._start
            self.console.print(
                f"[{self.done:>{len(str(self.total))}}/{self.total}] {self.passed} passed, "
                f"{self.failed} failed, {elapsed:.0f} s; last: {result.id}",
                highlight=False,
                markup=False,
            )


@contextlib.contextmanager
def progress(total: int, console: Console | None = None) -> Iterator[RunProgress]:
    """Show progress over ``total`` runs.

    On a terminal, a rich progress bar with the latest run id and the passed/failed counts; in a
    log (not a terminal, as in CI), a plain line every ``total/20`` runs. Either way each failing
    run is named as it happens (the first 20).

    Args:
      total: how many runs will be advanced.
      console: where to print (default: a new :class:`rich.console.Console` on stdout).

    Yields:
      A :class:`RunProgress`; call ``.advance(result)`` after each run.
    """
    console = console or Console()
    if not console.is_terminal:
        yield RunProgress(total, console)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[passed]} passed[/] [red]{task.fields[failed]} failed[/]"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("runs", total=total, current="", passed=0, failed=0)
        yield RunProgress(total, console, bar, task)


# --------------------------------------------------------------------------- terminal table


def print_table(
    results: Sequence[RunResult], console: Console | None = None, *, verbose: bool = False
) -> None:
    """Print the runs as a rich table, sorted by kind, model, optimizer, dtype and configuration.

    With more than :data:`AGGREGATE_ABOVE` runs and ``verbose=False``, one row per (optimizer,
    model, dtype) shows that group's worst configuration (the ``config`` column says how many it
    covers), followed by a second table with every run that did not pass.

    Args:
      results: the runs.
      console: where to print (default: a new :class:`rich.console.Console`).
      verbose: one row per run whatever their number.
    """
    console = console or Console()
    runs = sorted(results, key=sort_key)
    aggregate = not verbose and len(runs) > AGGREGATE_ABOVE
    table = _table(summary_line(runs))
    if aggregate:
        groups: dict[tuple[str, ...], list[RunResult]] = defaultdict(list)
        for r in runs:
            groups[r.kind, r.model, r.optimizer, r.dtype].append(r)
        rows = [(max(g, key=rank), g) for g in groups.values()]
    else:
        rows = [(r, [r]) for r in runs]
    previous = None
    for r, group in rows:
        if previous is not None and (r.kind, r.model) != previous:
            table.add_section()
        previous = r.kind, r.model
        table.add_row(*_cells(r, group))
    console.print(table)
    failing = [r for r in runs if not r.passed]
    if aggregate and failing:
        failures = _table(f"{len(failing)} runs that did not pass")
        for r in failing:
            failures.add_row(*_cells(r, [r]))
        console.print(failures)


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in NAMES:
        table.add_column(name, overflow="fold")
    for name in FIGURES:
        table.add_column(name, justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    return table


def _cells(r: RunResult, group: Sequence[RunResult]) -> list[str | Text]:
    """``r``'s row; for a group, ``r`` is its worst run and config/status/time cover the group."""
    cells: list[str | Text] = list(row_cells(r))
    bad = sum(not g.passed for g in group)
    if len(group) > 1:
        cells[2] = f"{len(group)} configs (worst: {r.config})"
        cells[-2] = f"{cells[-2]} {bad}/{len(group)}" if bad else cells[-2]
    cells[-2] = Text(str(cells[-2]), style=_STYLE[status(r)])
    cells[-1] = f"{sum(g.seconds for g in group):.1f}s"
    return cells


# --------------------------------------------------------------------------- JSON


def write_json(path: str | Path, results: Sequence[RunResult], meta: dict[str, Any]) -> Path:
    """Write ``{"schema", "meta", "summary", "runs"}``, one run per line; returns the path.

    inf and NaN are written as the strings ``"inf"`` and ``"nan"`` (JSON has no such numbers).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = ",\n".join("  " + json.dumps(r.to_dict()) for r in sorted(results, key=sort_key))
    text = (
        f'{{\n "schema": {SCHEMA},\n "meta": {json.dumps(json_safe(meta), default=str)},\n'
        f' "summary": {json.dumps(json_safe(summarize(results)))},\n "runs": [\n{runs}\n ]\n}}\n'
    )
    path.write_text(text, encoding="utf-8")
    return path


def read_json(path: str | Path) -> tuple[dict[str, Any], list[RunResult]]:
    """Read a file written by :func:`write_json`: ``(meta, results)``.

    Raises:
      OSError: the file cannot be read (``FileNotFoundError`` when there is none).
      ValueError: the file is not JSON, not a parity results file, or a newer schema wrote it.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not a jaxopt-parity results file (not JSON: {error})"
        ) from None
    if not isinstance(data, dict) or "runs" not in data or "schema" not in data:
        raise ValueError(f"{path} is not a jaxopt-parity results file (no 'schema' and 'runs')")
    if data["schema"] > SCHEMA:
        raise ValueError(f"{path} has schema {data['schema']}; this version reads up to {SCHEMA}")
    return data.get("meta", {}), [RunResult.from_dict(d) for d in data["runs"]]


# --------------------------------------------------------------------------- re-render from JSON


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m parity.report results.json [--report DIR] [--verbose]``: re-render saved results.

    Prints the table and the failing runs, writes the report if asked; returns 1 if any run did
    not pass, else 0.
    """
    parser = argparse.ArgumentParser(
        prog="python -m parity.report",
        description="Re-render a results file written by jaxopt-parity --json (or --report): the "
        "table, the runs that did not pass and, with --report, report.html and report.md.",
    )
    parser.add_argument("json", type=Path, help="a file written by jaxopt-parity --json")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.html and report.md here"
    )
    parser.add_argument("--verbose", action="store_true", help="one table row per run")
    args = parser.parse_args(argv)
    from parity.__main__ import PACKAGES

    if args.report is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error(
            f"--report needs matplotlib ({PACKAGES['matplotlib'][1]}), which is not installed: "
            f"pip install 'jaxopt_port[parity]' or pip install matplotlib"
        )
    try:
        meta, results = read_json(args.json)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    console = Console()
    print_table(results, console, verbose=args.verbose)
    for line in failure_lines(results):
        console.print(line, highlight=False, markup=False)
    if args.report is not None:
        html_path, md_path = write_report(args.report, results, meta)
        console.print(f"report: {html_path} and {md_path}", highlight=False)
    console.print(summary_line(results, run_seconds(results, meta)), highlight=False)
    return 0 if all(r.passed for r in results) else 1
