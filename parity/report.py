"""What a parity suite shows people: progress, a terminal table, JSON, and an HTML/Markdown report.

Everything here reads :class:`~parity.results.RunResult` objects and nothing else, so the same
functions serve the suite's CLI, :func:`parity.compare` (a report of one run) and re-rendering a
saved JSON file::

    python -m parity.report results.json --report parity-report/

The figures come from :mod:`parity.plots`; matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
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

from parity.plots import Plot, ratio, report_plots, sort_key
from parity.results import SCHEMA, RunResult, json_safe

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


def _status(r: RunResult) -> str:
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


def _rank(r: RunResult) -> float:
    x = ratio(r)
    return math.inf if math.isnan(x) else x


def _failing(results: Sequence[RunResult]) -> list[RunResult]:
    """The runs that did not pass: errors first, then the furthest miss first."""
    return sorted((r for r in results if not r.passed), key=lambda r: (r.error is None, -_rank(r)))


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
            self.console.print(Text(line, style=_STYLE[_status(result)]))
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
        rows = [(max(g, key=_rank), g) for g in groups.values()]
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
    for name in _NAMES:
        table.add_column(name, overflow="fold")
    for name in _FIGURES:
        table.add_column(name, justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    return table


def _cells(r: RunResult, group: Sequence[RunResult]) -> list[str | Text]:
    """``r``'s row; for a group, ``r`` is its worst run and config/status/time cover the group."""
    cells: list[str | Text] = list(_row(r))
    bad = sum(not g.passed for g in group)
    if len(group) > 1:
        cells[2] = f"{len(group)} configs (worst: {r.config})"
        cells[-2] = f"{cells[-2]} {bad}/{len(group)}" if bad else cells[-2]
    cells[-2] = Text(str(cells[-2]), style=_STYLE[_status(r)])
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
      ValueError: the file is not a parity results file, or a newer schema wrote it.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "runs" not in data or "schema" not in data:
        raise ValueError(f"{path} is not a jaxopt-parity results file (no 'schema' and 'runs')")
    if data["schema"] > SCHEMA:
        raise ValueError(f"{path} has schema {data['schema']}; this version reads up to {SCHEMA}")
    return data.get("meta", {}), [RunResult.from_dict(d) for d in data["runs"]]


# --------------------------------------------------------------------------- HTML and Markdown report


def write_report(
    directory: str | Path, results: Sequence[RunResult], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (images in ``report_files/``).

    Both hold the header (``meta``: versions, platform, seed, date, duration...), the counts, the
    runs that did not pass with their figures, the plots of :func:`parity.plots.report_plots`, and
    a table of every run. The HTML inlines its CSS and images (base64 PNG) and needs no network
    and no JavaScript.

    Args:
      directory: created if missing; previous ``report_files/*.png`` are removed.
      results: the runs (any number, including none).
      meta: shown as given; nested dicts are flattened as ``key.sub``.

    Returns:
      ``(html_path, markdown_path)``.
    """
    directory = Path(directory)
    files = directory / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    for old in files.glob("*.png"):
        old.unlink()
    runs = sorted(results, key=sort_key)
    plots = report_plots(runs)
    for plot in plots:
        (files / f"{plot.key}.png").write_bytes(plot.png)
    html_path, md_path = directory / "report.html", directory / "report.md"
    html_path.write_text(_html(runs, meta, plots), encoding="utf-8")
    md_path.write_text(_markdown(runs, meta, plots, files.name), encoding="utf-8")
    return html_path, md_path


def _meta_items(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in meta.items():
        if isinstance(value, dict):
            items += _meta_items(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", str(value)))
    return items


def _headline(runs: Sequence[RunResult], meta: dict[str, Any]) -> str:
    """``PASS: all 282 runs passed in 63.2 s``."""
    if not runs:
        return "No runs."
    verdict = "PASS" if all(r.passed for r in runs) else "FAIL"
    return f"{verdict}: {summary_line(runs, _seconds(runs, meta))}"


def _seconds(runs: Sequence[RunResult], meta: dict[str, Any]) -> float:
    """The suite's wall time, ``meta["seconds"]``, else the runs' times added up."""
    seconds = meta.get("seconds")
    return seconds if isinstance(seconds, (int, float)) else summarize(runs)["seconds"]


def _row(r: RunResult) -> list[str]:
    """A run's cells under :data:`_HEADER` (plain text)."""
    figures = [
        str(r.steps),
        _num(_final(r.loss_torch), ".6g"),
        _num(_final(r.loss_jax), ".6g"),
        _num(_max_abs(r)),
        _num(r.worst),
        _num(r.tolerance, ".3g"),
        _num(ratio(r), ".2g"),
    ]
    if r.error is not None:
        figures = ["—"] * len(figures)
    return [
        r.kind,
        r.optimizer,
        r.config,
        r.model,
        r.dtype,
        *figures,
        _status(r),
        f"{r.seconds:.2f}",
    ]


_NAMES = ("kind", "optimizer", "config", "model", "dtype")
_FIGURES = ("steps", "loss torch", "loss JAX", "max |Δθ|", "worst", "tolerance", "worst/tol")
_HEADER = (*_NAMES, *_FIGURES, "status", "s")  #: the columns of :func:`_row`

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1280px;padding:0 1em;color:#1a1a1a}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.verdict{font-size:1.2em;font-weight:600;padding:.5em .8em;border-radius:6px;display:inline-block}
.ok{background:#e6f4ea;color:#137333}.bad{background:#fce8e6;color:#a50e0e}
table{border-collapse:collapse;font-size:12px;margin:.6em 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
td.PASS{color:#137333;font-weight:600}td.FAIL{color:#c5221f;font-weight:700}td.ERROR{color:#8e24aa;font-weight:700}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12px;max-width:60em}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:0 1em;font-size:12px}dl.meta dt{color:#666}dl.meta dd{margin:0;font-family:monospace}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
"""


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], sorted_by: Sequence[str] = ()
) -> str:
    numeric = {*_FIGURES, "s", "miss"}
    heads = "".join(f"<th>{html.escape(h)}{' ▾' if h in sorted_by else ''}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for name, cell in zip(header, row, strict=True):
            cls = "n" if name in numeric else cell if name == "status" else ""
            cells.append(f'<td class="{cls}">' if cls else "<td>")
            cells.append(f"{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table><thead><tr>{heads}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _failure_rows(runs: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in _failing(runs):
        figures = [_num(r.worst), _num(r.tolerance, ".3g"), _num(ratio(r), ".3g")]
        if r.error is not None:
            figures = ["—", figures[1], "—"]
        detail = _first_line(r.error, 300) if r.error is not None else r.where
        rows.append([r.id, _status(r), *figures, detail])
    return rows


_FAILURE_HEADER = ["run", "status", "worst", "tolerance", "miss", "where / error"]


def _html(runs: Sequence[RunResult], meta: dict[str, Any], plots: Sequence[Plot]) -> str:
    s = summarize(runs)
    ok = bool(runs) and s["passed"] == s["runs"]
    meta_html = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in _meta_items(meta)
    )
    kinds = ", ".join(f"{k}: {c['passed']}/{c['runs']} passed" for k, c in s["by_kind"].items())
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>jaxopt_port parity report</title><style>{_CSS}</style></head><body>",
        "<h1>jaxopt_port parity report</h1>",
        f'<p class="verdict {"ok" if ok else "bad"}" id="verdict">{html.escape(_headline(runs, meta))}</p>',
        f"<p>{html.escape(kinds)}</p>" if kinds else "",
        f'<dl class="meta">{meta_html}</dl>' if meta_html else "",
    ]
    failures = _failure_rows(runs)
    if failures:
        parts += [
            f'<h2 id="failures">Runs that did not pass ({len(failures)})</h2>',
            _html_table(_FAILURE_HEADER, failures),
        ]
    if plots:
        parts.append('<h2 id="plots">Plots</h2>')
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(
            f'<figure id="{plot.key}"><h3>{html.escape(plot.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(plot.title)}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
        )
    if runs:
        parts += [
            f'<h2 id="runs">All runs ({len(runs)})</h2>',
            "<p>Sorted by kind, model, optimizer, dtype, configuration. worst: the largest scaled "
            "difference |Δ| / max(1, |x|) over parameters, optimizer state and the NumPy reference; "
            "max |Δθ|: the largest absolute parameter difference; losses are the last step's.</p>",
            _html_table(
                _HEADER,
                [_row(r) for r in runs],
                sorted_by=("kind", "model", "optimizer", "dtype", "config"),
            ),
        ]
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows), ""]


def _markdown(
    runs: Sequence[RunResult], meta: dict[str, Any], plots: Sequence[Plot], files: str
) -> str:
    lines = ["# jaxopt_port parity report", "", f"**{_headline(runs, meta)}**", ""]
    lines += [f"- {k}: `{v}`" for k, v in _meta_items(meta)] + ([""] if meta else [])
    s = summarize(runs)
    if s["by_kind"]:
        lines += _md_table(
            ["kind", "runs", "passed", "failed", "errors"],
            [[k, *map(str, c.values())] for k, c in s["by_kind"].items()],
        )
    failures = _failure_rows(runs)
    if failures:
        lines += [
            f"## Runs that did not pass ({len(failures)})",
            "",
            *_md_table(_FAILURE_HEADER, failures),
        ]
    if plots:
        lines += ["## Plots", ""]
    for plot in plots:
        lines += [f"### {plot.title}", "", f"![{plot.title}]({files}/{plot.key}.png)", ""]
        lines += [plot.caption, ""]
    by_kind: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        by_kind[r.kind].append(r)
    for kind, group in by_kind.items():
        lines += [
            f"## {kind} runs ({len(group)})",
            "",
            *_md_table(_HEADER[1:], [_row(r)[1:] for r in group]),
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- re-render from JSON


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m parity.report results.json [--report DIR] [--verbose]``: re-render saved results.

    Prints the table and the failing runs, writes the report if asked; returns 1 if any run did
    not pass, else 0.
    """
    parser = argparse.ArgumentParser(prog="python -m parity.report", description=main.__doc__)
    parser.add_argument("json", type=Path, help="a file written by jaxopt-parity --json")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.html and report.md here"
    )
    parser.add_argument("--verbose", action="store_true", help="one table row per run")
    args = parser.parse_args(argv)
    meta, results = read_json(args.json)
    console = Console()
    print_table(results, console, verbose=args.verbose)
    for line in failure_lines(results):
        console.print(line, highlight=False, markup=False)
    if args.report is not None:
        html_path, md_path = write_report(args.report, results, meta)
        console.print(f"report: {html_path} and {md_path}", highlight=False)
    console.print(summary_line(results, _seconds(results, meta)), highlight=False)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
