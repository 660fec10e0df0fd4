"""``python -m parity.report results.json [--report DIR]``: re-render a saved results file."""

from parity.report.output import main

raise SystemExit(main())
