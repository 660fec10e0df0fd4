"""``jaxopt-parity``: train the same models with the same optimizers in PyTorch and in JAX, compare
them with each other and with the NumPy reference of the documented formulas, and report.

With no arguments it runs the default suite (every optimizer × every option set on the small
problems in float64 with the NumPy reference, float32 for each optimizer, and the twin models —
MLP, CNN, transformer block, LSTM — with SGD and AdamW and three torch lr schedulers, in float64
and float32); ``--full`` runs every configuration. Exit status 0 only if every run is within its
tolerance (../shared/DESIGN.md); 1 names each failing run and by how much it missed.

Examples::

    jaxopt-parity                               # the default suite, a table at the end
    jaxopt-parity --report parity-report        # + report.html and report.md with plots
    jaxopt-parity --optimizers adam,sgd --models cnn --dtype float32 --steps 100
    jaxopt-parity --list --full                 # what --full would run
    jaxopt-parity --from-json results.json --report out   # re-render a saved run
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as host_platform
import sys
import time
from typing import Any

__all__ = ["main"]

_JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxopt-parity",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--optimizers", type=_names, metavar="A,B", help="e.g. adam,sgd (default: all 15)")  # fmt: skip
    what.add_argument(
        "--models", type=_names, metavar="A,B",
        help="formula (optimizer runs on small problems, with the NumPy reference), mlp, cnn, "
        "transformer, lstm (default: all)",
    )  # fmt: skip
    what.add_argument("--dtype", choices=("float64", "float32", "all"), default="all")
    what.add_argument("--steps", type=int, help="optimizer steps per run (default: 50 for optimizer runs, L-BFGS 2; 20 for models)")  # fmt: skip
    what.add_argument("--seed", type=int, default=0, help="initial weights and data (default 0)")
    what.add_argument(
        "--platform", choices=tuple(_JAX_PLATFORM),
        help="JAX backend (default: JAX's choice); torch runs the twin models on CUDA with gpu",
    )  # fmt: skip
    size = what.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="every configuration in every dtype")
    size.add_argument("--quick", action="store_true", help="one configuration per optimizer")
    out = parser.add_argument_group("output")
    out.add_argument("--list", action="store_true", help="list the selected runs and exit")
    out.add_argument("--json", metavar="PATH", help="write every run's figures as JSON")
    out.add_argument("--report", metavar="DIR", help="write report.html and report.md with plots")
    out.add_argument("--from-json", metavar="PATH", help="report a saved --json file, run nothing")
    out.add_argument("-v", "--verbose", action="store_true", help="one table row per run")
    return parser


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
    from parity import report

    report.print_table(results, console, verbose=args.verbose)
    if args.json and not args.from_json:
        report.write_json(args.json, results, meta)
        console.print(f"wrote {args.json}")
    if args.report:
        html, markdown = report.write_report(args.report, results, meta)
        console.print(f"wrote {html} and {markdown}")
    failures = report.failure_lines(results)
    console.print(report.summary_line(results, meta.get("seconds", 0.0)))
    for line in failures:
        print(line)  # plain lines: never wrapped, easy to grep
    return 1 if failures or not results else 0


def main(argv: list[str] | None = None) -> int:
    """Run the parity suite; returns the exit status (0: everything within tolerance)."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.platform:  # before anything imports jax
        os.environ["JAX_PLATFORMS"] = _JAX_PLATFORM[args.platform]
    from rich.console import Console

    from parity import report, suite

    console = Console(width=None if sys.stdout.isatty() else 200)  # CI logs: wide, not 80
    if args.from_json:
        meta, results = report.read_json(args.from_json)
        return _report(args, results, meta, console)

    import torch

    device = "cuda" if args.platform == "gpu" and torch.cuda.is_available() else "cpu"
    dtypes = suite.DTYPES if args.dtype == "all" else (args.dtype,)
    try:
        cases = suite.select(
            optimizers=args.optimizers, models=args.models, dtypes=dtypes, full=args.full,
            quick=args.quick, steps=args.steps, seed=args.seed, device=device,
        )  # fmt: skip
    except ValueError as error:
        print(f"jaxopt-parity: error: {error}")
        return 2
    if args.list:
        for case in cases:
            print(f"{case.kind:9s} {case.id}")
        print(f"{len(cases)} runs")
        return 0
    start = time.perf_counter()
    results = []
    with report.progress(len(cases), console) as bar:
        for case in cases:
            result = case.execute()
            results.append(result)
            bar.advance(result)
    meta = _meta(args, time.perf_counter() - start, device)
    return _report(args, results, meta, console)


if __name__ == "__main__":
    sys.exit(main())
