"""``jaxopt-parity``: train the same models with the same optimizers in PyTorch and in JAX, compare
them with each other and with the NumPy reference of the documented formulas, and report.

The help text (:data:`DESCRIPTION`, :data:`EPILOG`) is plain text: argparse prints it as written.
Exit status: 0 when every run is within its tolerance, 1 when a run failed or crashed (each is
named with how far it missed), 2 for a usage error (argparse's, printed before anything runs: an
invalid option value, a missing ``--from-json`` file, a package the command needs that is not
installed), 3 when every run passed but the report could not be written (the JSON results are
written before the report, so nothing is lost).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform as host_platform
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "EPILOG", "PACKAGES", "main", "missing_packages"]

_JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}

DESCRIPTION = (
    "Train the same models with the same optimizers in PyTorch and in JAX, compare them with each "
    "other and with a NumPy reference of the documented update formulas, and report."
)

EPILOG = """\
With no arguments it runs the default suite: every optimizer with every option set on small
problems in float64 (with the NumPy reference), float32 for each optimizer, and the twin models
(MLP, CNN, transformer block, LSTM) with SGD and AdamW and three torch lr schedulers, in float64
and float32. --full runs every configuration.

A run passes when its worst scaled difference from torch is within its tolerance: 1e-12 in
float64, a tolerance measured per optimizer or model in float32.

exit status:
  0  every run passed
  1  a run failed or crashed (each is named, with how far it missed)
  2  usage error (bad option, missing file, a needed package not installed)
  3  every run passed but the report could not be written (the JSON was written first)

examples:
  jaxopt-parity                               the default suite, a table at the end
  jaxopt-parity --report parity-report        also report.html, report.md and results.json
  jaxopt-parity --optimizers adam,sgd --models cnn --dtype float32 --steps 100
  jaxopt-parity --list --full                 what --full would run
  jaxopt-parity --from-json results.json --report out    re-render a saved run

The runs need the parity extra: pip install 'jaxopt_port[parity]'.
"""

#: The packages the CLI may need that jaxopt_port itself does not install: import name ->
#: (distribution name, what needs it). All are in the ``parity`` extra.
PACKAGES: dict[str, tuple[str, str]] = {
    "rich": ("rich", "the terminal table"),
    "torch": ("torch", "the torch side of every run"),
    "expecttest": ("expecttest", "torch's optimizer test database (the optimizer option sets)"),
    "sklearn": ("scikit-learn", "the digits data"),
    "matplotlib": ("matplotlib", "the plots of --report"),
}


def missing_packages(args: argparse.Namespace) -> list[str]:
    """The import names of :data:`PACKAGES` that the command ``args`` needs and that cannot be
    found (``importlib.util.find_spec``; nothing is imported)."""
    needed = ["rich"]
    if not args.from_json:
        needed += ["torch", "expecttest"] + ([] if args.list else ["sklearn"])
    if args.report and not args.list:
        needed.append("matplotlib")
    return [name for name in needed if importlib.util.find_spec(name) is None]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxopt-parity",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    from parity import sections

    registered = sections.sections()
    optimizers = dict.fromkeys(n for s in registered for n in s.optimizers())
    models = ", ".join(
        f"{m} ({text})" if text else m for s in registered for m, text in s.models.items()
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--optimizers", type=_names, metavar="A,B", help=f"e.g. adam,sgd (default: all {len(optimizers)})")  # fmt: skip
    what.add_argument("--models", type=_names, metavar="A,B", help=f"{models} (default: all)")
    what.add_argument("--dtype", choices=(*sections.DTYPES, "all"), default="all")
    what.add_argument("--steps", type=_count(1), metavar="N", help="optimizer steps per run, at least 1 (default: 50 for optimizer runs, L-BFGS 2; 20 for models)")  # fmt: skip
    what.add_argument("--seed", type=_count(0), metavar="N", default=0, help="initial weights and data (default 0)")  # fmt: skip
    what.add_argument(
        "--platform", choices=tuple(_JAX_PLATFORM),
        help="JAX backend (default: JAX's choice); torch runs the twin models on CUDA with gpu",
    )  # fmt: skip
    size = what.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="every configuration in every dtype")
    size.add_argument("--quick", action="store_true", help="one configuration per optimizer")
    what.add_argument(
        "--jobs", type=_count(1), metavar="N",
        help="processes to run in (default: the CPU count, at most 4, on the CPU backend for 16 "
        "runs or more; otherwise 1). Each run stays whole in one process: the numbers do not "
        "change",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--list", action="store_true", help="list the selected runs and exit")
    out.add_argument("--json", metavar="PATH", help="write every run's figures as JSON")
    out.add_argument(
        "--report", metavar="DIR",
        help="write results.json (first), then report.html and report.md with plots",
    )  # fmt: skip
    out.add_argument("--from-json", metavar="PATH", help="report a saved --json file, run nothing")
    out.add_argument("-v", "--verbose", action="store_true", help="one table row per run")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors that argparse's types cannot see, before anything runs (exit status 2)."""
    missing = missing_packages(args)
    if missing:
        listed = "; ".join(f"{PACKAGES[m][0]} ({PACKAGES[m][1]})" for m in missing)
        parser.error(
            f"this command needs packages that are not installed: {listed}. Install the parity "
            f"extra: pip install 'jaxopt_port[parity]' (from a checkout: pip install -e "
            f"'.[parity]'), or pip install {' '.join(PACKAGES[m][0] for m in missing)}"
        )
    if args.from_json and not Path(args.from_json).is_file():
        parser.error(f"--from-json {args.from_json}: no such file")


def _meta(args: argparse.Namespace, seconds: float, device: str) -> dict[str, Any]:
    import flax
    import jax
    import numpy as np
    import optax
    import torch

    return {
        "command": "jaxopt-parity " + " ".join(args.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "seed": args.seed,
        "python": host_platform.python_version(),
        "machine": f"{host_platform.system()} {host_platform.machine()}, {os.cpu_count()} CPUs",
        "jax_backend": jax.default_backend(),
        "jax_devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "torch_device": device,
        "versions": {
            "jax": jax.__version__,
            "optax": optax.__version__,
            "flax": flax.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }


def _report(args: argparse.Namespace, results: list, meta: dict[str, Any], console: Any) -> int:
    """Save, show and report ``results``; the exit status (see the module docstring).

    The JSON files are written first, so a failure while drawing the report loses nothing.
    """
    from parity import report

    written = []
    if not args.from_json:
        if args.json:
            written.append(report.write_json(args.json, results, meta))
        if args.report:
            written.append(report.write_json(Path(args.report, "results.json"), results, meta))
    report.print_table(results, console, verbose=args.verbose)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    report_failed = False
    if args.report:
        try:
            html, markdown = report.write_report(args.report, results, meta)
        except Exception as error:  # the runs and their JSON stand; say what failed
            report_failed = True
            saved = f"; the results are in {written[-1]}" if written else ""
            print(
                f"jaxopt-parity: the report could not be written: {type(error).__name__}: "
                f"{error}{saved}",
                file=sys.stderr,
            )
        else:
            console.print(f"wrote {html} and {markdown}", highlight=False)
    failures = report.failure_lines(results)
    console.print(report.summary_line(results, meta.get("seconds", 0.0)))
    for line in failures:
        print(line)  # plain lines: never wrapped, easy to grep
    if failures or not results:
        return 1
    return 3 if report_failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the parity suite; returns the exit status (0: everything within tolerance)."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _check(parser, args)
    if args.platform:  # before anything imports jax
        os.environ["JAX_PLATFORMS"] = _JAX_PLATFORM[args.platform]
    from rich.console import Console

    from parity import report, sections
    from parity.run import suite

    console = Console(width=None if sys.stdout.isatty() else 200)  # CI logs: wide, not 80
    if args.from_json:
        try:
            meta, results = report.read_json(args.from_json)
        except (OSError, ValueError) as error:  # unreadable, not JSON, not a results file
            parser.error(f"--from-json: {error}")
        return _report(args, results, meta, console)

    import torch

    device = "cuda" if args.platform == "gpu" and torch.cuda.is_available() else "cpu"
    dtypes = sections.DTYPES if args.dtype == "all" else (args.dtype,)
    selection = dict(
        optimizers=args.optimizers, models=args.models, dtypes=dtypes, full=args.full,
        quick=args.quick, steps=args.steps, seed=args.seed, device=device,
    )  # fmt: skip
    try:
        cases = suite.select(**selection)
    except ValueError as error:
        print(f"jaxopt-parity: error: {error}")
        return 2
    if args.list:
        for case in cases:
            print(f"{case.kind:9s} {case.id}")
        print(f"{len(cases)} runs")
        return 0
    import jax

    from parity import pool

    jobs, note = pool.plan_jobs(args.jobs, cases, jax.default_backend())
    if note:
        console.print(note, highlight=False)
    start = time.perf_counter()
    with report.progress(len(cases), console) as bar:
        platform = _JAX_PLATFORM[args.platform] if args.platform else None
        results = pool.run_cases(cases, jobs, selection, bar.advance, platform)
    meta = _meta(args, time.perf_counter() - start, device)
    meta["jobs"] = jobs
    return _report(args, results, meta, console)


if __name__ == "__main__":
    sys.exit(main())
