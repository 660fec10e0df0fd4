"""One optimizer update on 10M float32 parameters: jaxopt_port vs optax vs torch (foreach, fused).

Each contender runs one full update step (moments, parameters) per call; jaxopt_port and optax
are jitted with their parameter and state buffers donated, torch times ``optimizer.step()`` with
the gradients already in ``p.grad``. Contenders are timed round-robin, one call each per round,
so that drift in machine load hits all alike; the median per contender is reported.

Read the ratios as jaxopt_port's time over the other's: below 1 means jaxopt_port is faster.
Effective GB/s counts the bytes an update must move (see BYTES_PER_ELEMENT) over the time.
The script runs unchanged on a GPU (torch on CUDA when available, JAX on its default backend).

    python benchmarks/optim_step.py [--numel 10000000] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxopt_port import optim


@dataclass(frozen=True)
class Case:
    """One optimizer: the three implementations and the bytes one update moves per element."""

    name: str
    ours: Callable[[], optax.GradientTransformation]
    optax_nearest: Callable[[], optax.GradientTransformation]
    torch_cls: type
    torch_kwargs: dict
    bytes_per_element: int  # float32 reads + writes per element
    fused: bool


CASES = (
    # Adam/AdamW read p, g, m, v and write p, m, v: 7 x 4 bytes.
    Case(
        "adam",
        lambda: optim.adam(lr=1e-3),
        lambda: optax.adam(1e-3),
        torch.optim.Adam,
        {"lr": 1e-3},
        28,
        True,
    ),
    Case(
        "adamw",
        lambda: optim.adamw(lr=1e-3),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        torch.optim.AdamW,
        {"lr": 1e-3},
        28,
        True,
    ),
    # SGD with momentum and RMSprop read p, g, buffer and write p, buffer: 5 x 4 bytes.
    Case(
        "sgd_momentum",
        lambda: optim.sgd(lr=1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
        torch.optim.SGD,
        {"lr": 1e-2, "momentum": 0.9},
        20,
        True,
    ),
    Case(
        "rmsprop",
        lambda: optim.rmsprop(lr=1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        torch.optim.RMSprop,
        {"lr": 1e-2},
        20,
        False,
    ),
)


def shapes(numel: int) -> list[tuple[int, int]]:
    """Four matrices with ``numel`` elements in all."""
    side = int(np.sqrt(numel / 4))
    rest = numel - 3 * side * side
    return [(side, side)] * 3 + [(rest // side, side)]


def jax_step(tx: optax.GradientTransformation, params: list, grads: list) -> Callable[[], None]:
    """A jitted, buffer-donating update; returns a callable that runs one step and blocks."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": params, "state": tx.init(params)}

    def run() -> None:
        box["params"], box["state"] = step(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    return run


def torch_step(case: Case, tensors: list, flavour: str, device: str) -> Callable[[], None]:
    params = [torch.nn.Parameter(t.clone()) for t in tensors]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = case.torch_cls(params, **case.torch_kwargs, **{flavour: True})

    def run() -> None:
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def bench(case: Case, numel: int, repeats: int, warmup: int) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in shapes(numel)]
    grads = [jnp.asarray(a) * 0.01 for a in arrays]
    contenders: dict[str, Callable[[], None]] = {
        "jaxopt_port": jax_step(case.ours(), [jnp.asarray(a) for a in arrays], grads),
        "optax": jax_step(case.optax_nearest(), [jnp.asarray(a) for a in arrays], grads),
    }
    tensors = [torch.from_numpy(a).to(device) for a in arrays]
    contenders["torch foreach"] = torch_step(case, tensors, "foreach", device)
    if case.fused:
        contenders["torch fused"] = torch_step(case, tensors, "fused", device)
    for run in contenders.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "optimizer": case.name,
        "numel": numel,
        "bytes_per_element": case.bytes_per_element,
        "median_s": medians,
        "gb_per_s": {n: case.bytes_per_element * numel / t / 1e9 for n, t in medians.items()},
        "ratio": {n: medians["jaxopt_port"] / t for n, t in medians.items() if n != "jaxopt_port"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args(argv)
    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"JAX: {jax.devices()[0].device_kind} ({jax.default_backend()}); torch {torch.__version__} on {torch_device}"
    )
    print(f"{args.numel:,} float32 parameters; median of {args.repeats} round-robin steps")
    print(
        "bytes moved per element: Adam/AdamW 7x4 (read p,g,m,v; write p,m,v); SGD-momentum, RMSprop 5x4\n"
    )
    results = []
    for case in CASES:
        r = bench(case, args.numel, args.repeats, args.warmup)
        results.append(r)
        print(f"{case.name}")
        for name, t in r["median_s"].items():
            ratio = r["ratio"].get(name)
            suffix = f"   jaxopt_port / this = {ratio:.2f}x" if ratio is not None else ""
            print(f"  {name:14s} {t * 1e3:8.2f} ms  {r['gb_per_s'][name]:6.2f} GB/s{suffix}")
        if not case.fused:
            print(
                f"  {'torch fused':14s}      n/a (no fused {case.torch_cls.__name__} on this device)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
