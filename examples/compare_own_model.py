"""Check your own PyTorch model against its Flax NNX twin with ``parity.compare``.

A small residual network of our own (not one of the suite's twins) on scikit-learn's bundled
digits (no download), written once in torch and once in Flax NNX with the same attribute names,
so that ``jaxopt_port.interop`` moves the weights. ``parity.check_forward`` first runs one batch
through both and compares every module's output; then ``parity.compare`` trains both side by side —
torch with AdamW and a OneCycle schedule, JAX with the equivalent
``jaxopt_port.optim.from_torch`` transformation — and compares the parameters and the optimizer
state after every step. It prints the result and, with ``--report``, writes an HTML and a
Markdown report with the plots.

    python examples/compare_own_model.py [--steps 30] [--dtype float64] [--report DIR]

Exit status 1 if the run is outside its tolerance (float64: 1e-12 scaled difference).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import sys

import jax
import numpy as np
import torch
from flax import nnx
from sklearn.datasets import load_digits

import parity

HIDDEN = 48


class TorchResNet(torch.nn.Module):
    """Linear stem, one pre-norm residual block (LayerNorm, Linear, exact GELU, Linear), head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(64, HIDDEN)
        self.block = torch.nn.Sequential(
            torch.nn.LayerNorm(HIDDEN),
            torch.nn.Linear(HIDDEN, 2 * HIDDEN),
            torch.nn.GELU(),
            torch.nn.Linear(2 * HIDDEN, HIDDEN),
        )
        self.head = torch.nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(h + self.block(h))


class NnxResNet(nnx.Module):
    """The same network in Flax NNX: attribute names and Sequential positions match torch's keys
    (``block.1.weight`` is ``block.layers[1].kernel``); LayerNorm with torch's eps and the exact
    (erf) GELU, as torch's defaults are."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.stem = nnx.Linear(64, HIDDEN, rngs=rngs)
        self.block = nnx.Sequential(
            nnx.LayerNorm(HIDDEN, epsilon=1e-5, use_fast_variance=False, rngs=rngs),
            nnx.Linear(HIDDEN, 2 * HIDDEN, rngs=rngs),
            functools.partial(jax.nn.gelu, approximate=False),
            nnx.Linear(2 * HIDDEN, HIDDEN, rngs=rngs),
        )
        self.head = nnx.Linear(HIDDEN, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.stem(x)
        return self.head(h + self.block(h))


def digits_batches(steps: int, batch: int = 64, seed: int = 0):
    """``steps`` mini-batches ``(images, labels)`` of the digits, as NumPy arrays."""
    data = load_digits()
    x, y = data.data / 16.0, data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.choice(len(x), size=batch, replace=False)
        yield x[rows], y[rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--report", metavar="DIR", help="write report.html and report.md there")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch_model = TorchResNet()
    # abstract: no NNX initialization, check_forward() and compare() load torch's weights into it
    flax_model = nnx.eval_shape(lambda: NnxResNet(nnx.Rngs(0)))

    # first one batch, module by module: a twin that computes another function shows here
    images, _ = next(digits_batches(1))
    check = parity.check_forward(torch_model, flax_model, images, dtype=args.dtype)
    print(check, end="\n\n")
    if not check.passed:
        return 1
    result = parity.compare(
        torch_model,
        flax_model,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.05, foreach=False),
        scheduler=lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=1e-2, total_steps=args.steps
        ),
        data=digits_batches(args.steps),
        dtype=args.dtype,
        name="AdamW + OneCycleLR",
    )

    print(f"{result.id}: {'PASS' if result.passed else 'FAIL'} in {result.seconds:.1f}s")
    print(f"  worst scaled difference {result.worst:.2e} (tolerance {result.tolerance:.0e})")
    print(f"  where: {result.where}")
    print(f"  {result.tolerance_note}")
    print(f"\n{'step':>4}  {'loss torch':>12}  {'loss JAX':>12}  {'params Δ':>9}  {'state Δ':>9}")
    state = result.state_scaled or [float("nan")] * result.steps
    rows = zip(result.loss_torch, result.loss_jax, result.param_scaled, state, strict=True)
    for k, (lt, lj, dp, ds) in enumerate(rows, start=1):
        print(f"{k:>4}  {lt:>12.8f}  {lj:>12.8f}  {dp:>9.1e}  {ds:>9.1e}")

    if args.report:
        from parity import report

        meta = {
            "command": "python " + " ".join(sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(result.seconds, 1),
            "python": platform.python_version(),
            "versions": {"torch": torch.__version__, "jax": jax.__version__},
        }
        html, markdown = report.write_report(args.report, [result], meta)
        print(f"\nwrote {html} and {markdown}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
