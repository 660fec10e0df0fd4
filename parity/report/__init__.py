"""What the parity suite reports: each run's figures and verdict, the terminal table, JSON, and the
HTML and Markdown report with plots.

- `parity.report.results`: `RunResult`, the one record every runner produces, and its JSON form.
- `parity.report.order`: the order runs are listed and plotted in.
- `parity.report.summary`: counts, figures and one-line verdicts.
- `parity.report.output`: progress, the terminal table, JSON files (re-exported here:
  `parity.report.print_table`, `write_json`, `read_json`, `write_report`, ...).
- `parity.report.document` and `parity.report.plots`: `report.html` and `report.md` with their
  figures.

``python -m parity.report results.json --report DIR`` re-renders a saved results file. Importing
this package imports nothing heavy; the terminal table (rich) loads on first use.
"""

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from parity.report import output

        return getattr(output, name)
    raise AttributeError(f"module 'parity.report' has no attribute {name!r}")
