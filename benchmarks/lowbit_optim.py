"""Step time and optimizer-state bytes of low-bit AdamW: jaxopt_port vs torchao vs float32 AdamW.

What is measured
    One full AdamW update (moments and parameters) on ``--numel`` float32 parameters (four
    equal matrices, each a whole number of 256-value blocks, so every moment is quantized), for
    each storage of the moments:

    * ``8-bit``, ``4-bit``, ``FP8``: jaxopt_port's ``optim.adamw8bit`` / ``adamw4bit`` /
      ``adamw_fp8`` (``jax.jit`` of ``(params, state, grads) -> (params, state)``, parameter
      and state buffers donated) against torchao's ``AdamW8bit`` / ``AdamW4bit`` /
      ``AdamWFp8``, eager (``torch.compile`` replaced by the identity, as in the parity
      section) and, with ``--compiled``, compiled (torchao's default; ~18 s to compile each
      parameter shape on the first step, not timed);
    * ``float32``: jaxopt_port's ``optim.adamw`` and torch's ``AdamW`` (fused when torch has a
      kernel for the device, else foreach).

    The contenders of one size take turns, one step each per round, each timed step right after
    an untimed one of its own (``benchmarks.optim_step.time_round_robin``); the median over the
    rounds is reported with the minimum (on a shared machine the better guide to an unloaded
    step).

How to read it
    ``ms``: median wall time of one step. ``min``: fastest step. ``state B/param``: bytes of
    the optimizer state (codes, block scales, torchao's copy of its map, step counters) per
    parameter. ``/ jaxopt_port``: the contender's median over jaxopt_port's step with the same
    storage (above 1: jaxopt_port faster). ``/ f32 ours``: the median over jaxopt_port's float32
    AdamW step (what the storage costs in time).

Run from the repository root:

    python -m benchmarks.lowbit_optim [--numel 1048576,10485760] [--repeats 10] [--compiled]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.optim_step import (
    _near_square,
    jax_step,
    supports_fused,
    sync_torch,
    time_round_robin,
    torch_device,
)
from jaxopt_port import optim
from parity.run.lowbit import eager_torchao

LEAVES = 4
BLOCK = 256
KWARGS = {"lr": 1e-3, "weight_decay": 1e-2}
#: (label, jaxopt_port factory, torchao class)
STORAGES = (
    ("8-bit", optim.adamw8bit, "AdamW8bit"),
    ("4-bit", optim.adamw4bit, "AdamW4bit"),
    ("FP8", optim.adamw_fp8, "AdamWFp8"),
)


def shapes(numel: int) -> list[tuple[int, int]]:
    """``LEAVES`` equal near-square matrices, each a whole number of ``BLOCK``-value blocks."""
    if numel % (LEAVES * BLOCK):
        raise SystemExit(f"--numel must be a multiple of {LEAVES * BLOCK}, got {numel}")
    return [_near_square(numel // LEAVES)] * LEAVES


def make_data(numel: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes(numel)]
    grads = [0.01 * rng.standard_normal(s, dtype=np.float32) for s in shapes(numel)]
    return params, grads


def jax_contender(factory: Callable, params, grads) -> tuple[Callable[[], None], Callable]:
    """The donated jitted step, and a function giving the bytes of its state (fixed by the
    parameters' shapes: read from `init`'s abstract result)."""
    tx = factory(**KWARGS)
    step = jax_step(tx, params, [jnp.asarray(g) for g in grads])
    state = jax.eval_shape(tx.init, [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params])
    return step, lambda: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))


def torch_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer state; torchao's quantized tensors count their
    codes, scales and map."""
    total = 0
    for state in opt.state.values():
        for t in state.values():
            if not isinstance(t, torch.Tensor):
                continue
            parts = [getattr(t, name) for name in ("codes", "scale", "qmap") if hasattr(t, name)]
            total += sum(x.numel() * x.element_size() for x in parts or [t])
    return total


def torch_contender(make: Callable, params, grads, eager: bool, device: str):
    tensors = [torch.nn.Parameter(torch.tensor(p, device=device)) for p in params]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.tensor(g, device=device)
    opt = make(tensors)

    def run() -> None:
        if eager:
            with eager_torchao():
                opt.step()
        else:
            opt.step()
        sync_torch()

    return run, lambda: torch_state_bytes(opt)


def contenders(numel: int, device: str, compiled: bool) -> dict[str, tuple[Callable, Callable]]:
    import warnings

    with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
        warnings.simplefilter("ignore")
        import torchao.optim

    params, grads = make_data(numel)
    flavour = "fused" if supports_fused(torch.optim.AdamW, device) else "foreach"
    steps = {
        "float32 jaxopt_port": jax_contender(optim.adamw, params, grads),
        f"float32 torch ({flavour})": torch_contender(
            lambda ts: torch.optim.AdamW(ts, **KWARGS, **{flavour: True}),
            params,
            grads,
            False,
            device,
        ),
    }
    for label, factory, cls in STORAGES:
        make = lambda ts, cls=cls: getattr(torchao.optim, cls)(ts, **KWARGS)
        steps[f"{label} jaxopt_port"] = jax_contender(factory, params, grads)
        steps[f"{label} torchao eager"] = torch_contender(make, params, grads, True, device)
        if compiled:
            steps[f"{label} torchao compiled"] = torch_contender(make, params, grads, False, device)
    return steps


def bench(numel: int, repeats: int, warmup: int, device: str, compiled: bool) -> dict[str, Any]:
    pairs = contenders(numel, device, compiled)
    times = time_round_robin({k: step for k, (step, _) in pairs.items()}, repeats, warmup)
    rows = {}
    f32 = statistics.median(times["float32 jaxopt_port"])
    for name, samples in times.items():
        median = statistics.median(samples)
        ours = statistics.median(times[name.split(" ")[0] + " jaxopt_port"])
        rows[name] = {
            "median_ms": 1e3 * median,
            "min_ms": 1e3 * min(samples),
            "state_bytes_per_param": pairs[name][1]() / numel,
            "over_jaxopt_port": median / ours,
            "over_float32_jaxopt_port": median / f32,
        }
    return {"numel": numel, "shapes": shapes(numel), "contenders": rows}


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['numel']:,} parameters in {LEAVES} leaves {result['shapes'][0]}",
        f"  {'contender':<26} {'ms':>9} {'min ms':>9} {'state B/param':>14} "
        f"{'/ jaxopt_port':>14} {'/ f32 ours':>11}",
    ]
    for name, row in result["contenders"].items():
        lines.append(
            f"  {name:<26} {row['median_ms']:>9.2f} {row['min_ms']:>9.2f} "
            f"{row['state_bytes_per_param']:>14.3f} {row['over_jaxopt_port']:>13.2f}x "
            f"{row['over_float32_jaxopt_port']:>10.2f}x"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--numel", default="1048576,10485760", help="parameter counts, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender")
    parser.add_argument("--compiled", action="store_true", help="also torchao compiled (slow)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write all figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch_device()
    print(
        f"JAX {jax.__version__}: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"torch {torch.__version__}: {device} ({torch.get_num_threads()} threads); "
        f"median of {args.repeats} round-robin steps after {args.warmup} warm-up steps\n"
    )
    results = []
    for numel in (int(n) for n in args.numel.split(",")):
        results.append(bench(numel, args.repeats, args.warmup, device, args.compiled))
        print(format_table(results[-1]) + "\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
