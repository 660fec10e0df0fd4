"""Time one optimizer update on 10M float32 parameters: jaxopt_port vs optax vs torch.

What is measured
    One full update step (moments and parameters) of Adam, AdamW, SGD with momentum and
    RMSprop, on a few float32 matrices with ``--numel`` elements in all, by four contenders:

    * ``jaxopt_port``: ``jax.jit`` of ``(params, state, grads) -> (params, state)`` built from
      ``jaxopt_port.optim``, with the parameter and state buffers donated (updated in place);
      each call is followed by ``block_until_ready``.
    * ``optax``: the same jitted, donating step built from optax's nearest equivalent.
    * ``torch foreach`` and ``torch fused``: ``optimizer.step()`` alone, with the gradients
      already in ``p.grad``; "n/a" where the torch class has no fused kernel for the device.

    The contenders take turns, one step each per round (starting with a different one each
    round), so that drift in the machine's load hits all of them alike. Each timed step comes
    right after an untimed step of the same contender, so that none pays for waking its thread
    pool after another framework's step. The median over the rounds is reported, with the
    interquartile range and the minimum as measures of noise (on a shared machine the minimum
    is the better guide to what a step costs unloaded).

How to read it
    ``ms``: median wall time of one step. ``GB/s``: the bytes a step must move (reads plus
    writes of float32 arrays, given per optimizer) divided by that time; compare it with the
    machine's memory bandwidth. ``jaxopt_port / this``: jaxopt_port's median over the
    contender's, so below 1 means jaxopt_port is faster and above 1 that it is slower.

The script runs unchanged on a GPU: torch uses CUDA when available (synchronized around
every step), JAX its default backend.

Run from the repository root (jaxopt_port importable):

    python -m benchmarks.optim_step [--numel 10000000] [--repeats 50] [--warmup 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxopt_port import optim

Step = Callable[[], None]
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Case:
    """One optimizer: its three implementations and the arrays one update reads and writes."""

    name: str
    ours: Callable[[], optax.GradientTransformation]
    optax_nearest: Callable[[], optax.GradientTransformation]
    torch_cls: type[torch.optim.Optimizer]
    torch_kwargs: Mapping[str, float]
    reads: tuple[str, ...]
    writes: tuple[str, ...]

    @property
    def bytes_per_element(self) -> int:
        return FLOAT32_BYTES * (len(self.reads) + len(self.writes))

    @property
    def traffic(self) -> str:
        return (
            f"read {','.join(self.reads)} + write {','.join(self.writes)} = "
            f"{len(self.reads) + len(self.writes)} x {FLOAT32_BYTES} B = {self.bytes_per_element} B"
        )


ADAM_IO = {"reads": ("p", "g", "m", "v"), "writes": ("p", "m", "v")}
BUFFER_IO = {"reads": ("p", "g", "buf"), "writes": ("p", "buf")}

CASES = (
    Case(
        "adam",
        lambda: optim.adam(lr=1e-3),
        lambda: optax.adam(1e-3),
        torch.optim.Adam,
        {"lr": 1e-3},
        **ADAM_IO,
    ),
    Case(
        "adamw",
        lambda: optim.adamw(lr=1e-3, weight_decay=1e-2),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        torch.optim.AdamW,
        {"lr": 1e-3, "weight_decay": 1e-2},
        **ADAM_IO,
    ),
    Case(
        "sgd_momentum",
        lambda: optim.sgd(lr=1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
        torch.optim.SGD,
        {"lr": 1e-2, "momentum": 0.9},
        **BUFFER_IO,
    ),
    Case(
        "rmsprop",
        lambda: optim.rmsprop(lr=1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        torch.optim.RMSprop,
        {"lr": 1e-2},
        **BUFFER_IO,
    ),
)
CONTENDERS = ("jaxopt_port", "optax", "torch foreach", "torch fused")
OURS = CONTENDERS[0]
BANDWIDTH_FORMULA = (
    "GB/s = bytes_per_element x numel / median time, "
    "bytes_per_element = 4 B x (float32 arrays read + arrays written)"
)
RATIO_MEANING = "jaxopt_port/this = jaxopt_port's median / the contender's (<1: jaxopt_port faster)"


def torch_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync_torch() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def shapes(numel: int, leaves: int = 4) -> list[tuple[int, int]]:
    """``leaves`` near-square matrices with ``numel`` elements in all."""
    sizes = [numel // leaves] * (leaves - 1)
    sizes.append(numel - sum(sizes))
    return [_near_square(n) for n in sizes]


def _near_square(n: int) -> tuple[int, int]:
    rows = next(d for d in range(max(1, math.isqrt(n)), 0, -1) if n % d == 0)
    return rows, n // rows


def make_data(numel: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Parameters and gradients shared by every contender (the same numbers for all)."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes(numel)]
    grads = [0.01 * rng.standard_normal(s, dtype=np.float32) for s in shapes(numel)]
    return params, grads


def jax_step(
    tx: optax.GradientTransformation, params: list[np.ndarray], grads: list[jax.Array]
) -> Step:
    """A jitted update donating the parameter and state buffers; each call runs one and blocks."""

    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    device_params = [jnp.asarray(p) for p in params]
    box = {"params": device_params, "state": tx.init(device_params)}

    def run() -> None:
        box["params"], box["state"] = jitted(box["params"], box["state"], grads)
        jax.block_until_ready((box["params"], box["state"]))

    return run


def supports_fused(cls: type[torch.optim.Optimizer], device: str) -> bool:
    """Whether ``cls(..., fused=True)`` has a kernel for ``device``."""
    if "fused" not in inspect.signature(cls.__init__).parameters:
        return False
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        cls([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def torch_step(
    case: Case, params: list[np.ndarray], grads: list[np.ndarray], flavour: str, device: str
) -> Step:
    """``optimizer.step()`` with ``flavour`` (foreach or fused) set; gradients preassigned."""
    tensors = [torch.nn.Parameter(torch.tensor(p, device=device)) for p in params]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.tensor(g, device=device)
    opt = case.torch_cls(tensors, **case.torch_kwargs, **{flavour: True})

    def run() -> None:
        opt.step()
        sync_torch()

    return run


def contenders(case: Case, numel: int, device: str) -> dict[str, Step | None]:
    """Every contender's step for ``case``; ``None`` where a torch flavour is not available."""
    params, grads = make_data(numel)
    jax_grads = [jnp.asarray(g) for g in grads]
    fused = supports_fused(case.torch_cls, device)
    steps = {
        "jaxopt_port": jax_step(case.ours(), params, jax_grads),
        "optax": jax_step(case.optax_nearest(), params, jax_grads),
        "torch foreach": torch_step(case, params, grads, "foreach", device),
        "torch fused": torch_step(case, params, grads, "fused", device) if fused else None,
    }
    assert tuple(steps) == CONTENDERS
    return steps


def time_round_robin(
    steps: Mapping[str, Step], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per step for each contender, the contenders taking turns (rotated each round).

    Each timed step directly follows an untimed one of the same contender: a step right after
    another framework's pays for waking its thread pool and refilling caches (on a 2-core CPU a
    JAX step after a torch step took ~25% longer than after a JAX step), which a fixed rotation
    would charge to whichever contender comes after torch.
    """
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                steps[name]()  # primer: the timed step follows one of its own kind
                sync_torch()
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return times


def summarize(case: Case, numel: int, times: Mapping[str, list[float]]) -> dict[str, Any]:
    """Median, interquartile range, effective bandwidth and ratio for each contender.

    A contender missing from ``times`` (no such torch kernel) gets ``None``.
    """
    step_bytes = case.bytes_per_element * numel
    ours = statistics.median(times[OURS])
    rows: dict[str, dict[str, float] | None] = dict.fromkeys(CONTENDERS)
    for name, samples in times.items():
        median = statistics.median(samples)
        q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (median,) * 3
        rows[name] = {
            "median_ms": 1e3 * median,
            "iqr_ms": 1e3 * (q3 - q1),
            "min_ms": 1e3 * min(samples),
            "gb_per_s": step_bytes / median / 1e9,
            "jaxopt_port_over_this": ours / median,
        }
    return {
        "optimizer": case.name,
        "numel": numel,
        "bytes_per_element": case.bytes_per_element,
        "bytes_per_step": step_bytes,
        "traffic": case.traffic,
        "contenders": rows,
        "samples_ms": {name: [1e3 * t for t in samples] for name, samples in times.items()},
    }


def bench(case: Case, numel: int, repeats: int, warmup: int, device: str) -> dict[str, Any]:
    steps = {name: step for name, step in contenders(case, numel, device).items() if step}
    return summarize(case, numel, time_round_robin(steps, repeats, warmup))


def format_table(result: Mapping[str, Any], case: Case, device: str) -> str:
    lines = [
        f"{result['optimizer']}: {result['traffic']} per element, "
        f"{result['bytes_per_step'] / 1e6:.0f} MB per step",
        f"  {'contender':<14} {'median ms':>10} {'IQR ms':>8} {'min ms':>8} {'GB/s':>8} {'jaxopt_port/this':>17}",
    ]
    for name, row in result["contenders"].items():
        if row is None:
            lines.append(
                f"  {name:<14} {'n/a':>10}   (no fused {case.torch_cls.__name__} on {device})"
            )
            continue
        lines.append(
            f"  {name:<14} {row['median_ms']:>10.2f} {row['iqr_ms']:>8.2f} {row['min_ms']:>8.2f} "
            f"{row['gb_per_s']:>8.2f} {row['jaxopt_port_over_this']:>16.2f}x"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {
        "jax_device": jax.devices()[0].device_kind,
        "jax_backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "optax_version": optax.__version__,
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numel": args.numel,
        "shapes": shapes(args.numel),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "bandwidth_formula": BANDWIDTH_FORMULA,
        "ratio_meaning": RATIO_MEANING,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--numel", type=int, default=10_000_000, help="parameters in all")
    parser.add_argument("--repeats", type=int, default=50, help="timed rounds per optimizer")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per contender")
    parser.add_argument("--json", type=str, default=None, metavar="PATH", help="write all figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch_device()
    info = header(args, device)
    print(
        f"JAX {info['jax_version']}: {info['jax_device']} ({info['jax_backend']}); "
        f"torch {info['torch_version']}: {info['torch_device']} ({info['torch_threads']} threads)"
    )
    print(
        f"{args.numel:,} float32 parameters in {len(info['shapes'])} leaves {info['shapes']}; "
        f"median of {args.repeats} round-robin steps after {args.warmup} warm-up steps"
    )
    print(f"{BANDWIDTH_FORMULA}\n{RATIO_MEANING}\n")
    results = []
    for case in CASES:
        result = bench(case, args.numel, args.repeats, args.warmup, device)
        results.append(result)
        print(format_table(result, case, device) + "\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setup": info, "results": results}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
