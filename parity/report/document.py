"""The report files: a self-contained ``report.html`` and a ``report.md`` with its images.

Both are rendered from :class:`~parity.report.results.RunResult` objects and the run's ``meta``; the figures
come from :mod:`parity.report.plots` (matplotlib is imported only when a report is written).
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parity.report.order import ratio, sort_key
from parity.report.plots import Plot, report_plots
from parity.report.results import RunResult
from parity.report.summary import (
    _failing,
    _final,
    _first_line,
    _max_abs,
    _num,
    status,
    summarize,
    summary_line,
)

__all__ = ["FIGURES", "HEADER", "NAMES", "row_cells", "run_seconds", "write_report"]


def write_report(
    directory: str | Path, results: Sequence[RunResult], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (images in ``report_files/``).

    Both hold the header (``meta``: versions, platform, seed, date, duration...), the counts, the
    runs that did not pass with their figures, the plots of :func:`parity.report.plots.report_plots`, and
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
    return f"{verdict}: {summary_line(runs, run_seconds(runs, meta))}"


def run_seconds(runs: Sequence[RunResult], meta: dict[str, Any]) -> float:
    """The suite's wall time, ``meta["seconds"]``, else the runs' times added up."""
    seconds = meta.get("seconds")
    return seconds if isinstance(seconds, (int, float)) else summarize(runs)["seconds"]


def row_cells(r: RunResult) -> list[str]:
    """A run's cells under :data:`HEADER` (plain text)."""
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
        status(r),
        f"{r.seconds:.2f}",
    ]


NAMES = ("kind", "optimizer", "config", "model", "dtype")
FIGURES = ("steps", "loss torch", "loss JAX", "max |Δθ|", "worst", "tolerance", "worst/tol")
HEADER = (*NAMES, *FIGURES, "status", "s")  #: the columns of :func:`row_cells`

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
    numeric = {*FIGURES, "s", "miss"}
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
        rows.append([r.id, status(r), *figures, detail])
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
                HEADER,
                [row_cells(r) for r in runs],
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
            *_md_table(HEADER[1:], [row_cells(r)[1:] for r in group]),
        ]
    return "\n".join(lines)
