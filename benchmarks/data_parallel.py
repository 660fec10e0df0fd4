"""Data-parallel step time against device count, and ZeRO-1 optimizer-state bytes per device.

What is measured
    One ``parallel.train_step`` (forward, backward, gradient all-reduce, AdamW update) of an MLP
    (``--width`` wide, 3 hidden layers, float32) on a fixed global batch, for each backend
    (shard_map, jit, pmap) and each device count (1, 2, 4, 8 by default). Each device count runs
    in a fresh subprocess (a process's device count is fixed at JAX's start), which waits for
    every step; the median over ``--repeats`` steps after ``--warmup`` is reported. Then, at the
    largest device count, the optimizer-state bytes on the fullest device with ``zero=1`` over
    those with ``zero=0`` (plain replication), and which state leaves stayed whole.

How to read it
    ``ms``: median time of one step. ``vs 1 device``: that time over the 1-device time of the same
    backend, at the same global batch — below 1 means the step got faster with more devices. On a
    CPU the devices are simulated (``--platform cpu`` with ``jax_num_cpu_devices``) and share the
    machine's cores, so the ratios show the overhead of splitting and all-reducing, not a speedup.
    On a machine with several GPUs or TPU chips the same script (``--platform gpu``/``tpu``, with
    device counts up to the number present) measures real scaling.

Run from the repository root:

    python -m benchmarks.data_parallel [--devices 1,2,4,8] [--batch 256] [--width 512] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4,8", help="device counts, comma-separated")
    parser.add_argument("--platform", default="cpu", choices=("cpu", "gpu", "tpu"))
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one device count
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> dict:
    """One device count: step times per backend, and (for the largest count) ZeRO-1 bytes."""
    import jax

    if args.platform == "cpu":
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.child)
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxopt_port import optim, parallel

    devices = jax.devices()[: args.child]
    if len(devices) < args.child:
        raise SystemExit(f"asked for {args.child} devices, {len(devices)} present")
    mesh = parallel.data_mesh(devices)
    rng = np.random.default_rng(0)
    sizes = [64, args.width, args.width, args.width, 10]
    params = {
        f"layer{i}": {
            "w": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
            "b": np.zeros(b, np.float32),
        }
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }
    batch = {
        "x": rng.normal(size=(args.batch, 64)).astype(np.float32),
        "y": rng.integers(0, 10, args.batch),
    }

    def loss_fn(p, b):
        h = b["x"]
        for i in range(len(sizes) - 1):
            h = h @ p[f"layer{i}"]["w"] + p[f"layer{i}"]["b"]
            h = jax.nn.relu(h) if i < len(sizes) - 2 else h
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h, b["y"]))

    out: dict = {"devices": args.child, "platform": devices[0].platform, "ms": {}}
    for backend in parallel.BACKENDS:
        step = parallel.train_step(loss_fn, optim.adamw(lr=1e-3), mesh=mesh, backend=backend)
        p, s = step.init(params)
        placed = step.shard(batch)
        times = []
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            p, s, loss = step(p, s, placed)
            jax.block_until_ready(loss)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        out["ms"][backend] = 1e3 * statistics.median(times)
    state_bytes = {}
    for zero in (0, 1):
        step = parallel.train_step(loss_fn, optim.adamw(lr=1e-3), mesh=mesh, zero=zero)
        _, s = step.init(params)
        state_bytes[zero] = max(parallel.bytes_per_device(s).values())
    whole = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(s)
        if leaf.sharding.is_fully_replicated and leaf.size > 1
    ]
    out["state_bytes"] = {"replicated": state_bytes[0], "zero1": state_bytes[1], "whole": whole}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    counts = [int(c) for c in args.devices.split(",")]
    results = []
    for n in counts:
        command = [
            sys.executable,
            "-m",
            "benchmarks.data_parallel",
            *sys.argv[1:],
            "--child",
            str(n),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = results[0]["ms"]
    print(
        f"data-parallel AdamW step, MLP 64-{args.width}x3-10, global batch {args.batch}, "
        f"{results[0]['platform']} (simulated devices share the cores on CPU)"
    )
    print(f"{'devices':>8} " + " ".join(f"{b + ' ms':>13} {'vs 1 device':>12}" for b in base))
    for r in results:
        cells = " ".join(f"{r['ms'][b]:13.2f} {r['ms'][b] / base[b]:12.2f}" for b in base)
        print(f"{r['devices']:>8} {cells}")
    last = results[-1]
    sb = last["state_bytes"]
    print(
        f"ZeRO-1 on {last['devices']} devices: optimizer state per device {sb['zero1']:,} B vs "
        f"{sb['replicated']:,} B replicated = {sb['zero1'] / sb['replicated']:.4f} "
        f"(1/{last['devices']} = {1 / last['devices']:.4f}); whole on every device: "
        f"{', '.join(sb['whole']) or 'none'} and scalars"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
