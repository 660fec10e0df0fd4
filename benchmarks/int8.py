"""int8 vs float32 inference: XLA's integer GEMM and convolution, jaxopt_port's int8 kernels and
torch's quantized modules (fbgemm / oneDNN on the x86 engine), one run.

What is measured
    Wall time of one forward call (output ready), for each contender:

    * ``linear``, a batch of ``--batch`` rows through a ``K -> K`` layer for each ``--sizes`` K:

      - JAX (``jax.jit``): ``float32`` ``x @ w + b``; ``int8 raw``: ``lax.dot_general`` of int8
        operands with ``preferred_element_type=int32`` (the bare integer GEMM);
        ``static int8``: ``quantization.linear`` (quint8 in and out, per-channel qint8
        weights: the bare product plus zero-point corrections and fbgemm's requantization,
        bit for bit); ``dynamic int8``: ``quantization.linear_dynamic`` (float in and out:
        fbgemm's activation qparams through a host callback, quantize, product, epilogue);
      - torch (x86 engine): ``nn.Linear``; ``torch._int_mm`` (int8 × int8 → int32);
        ``torch.ao.nn.quantized.Linear``; ``torch.ao.nn.quantized.dynamic.Linear``;

    * ``conv``, ``--conv N,C,H,W`` images through a ``C -> C`` 3×3 convolution, padding 1:
      JAX ``lax.conv_general_dilated`` in float32 and int8 → int32 (NHWC / HWIO), and
      ``quantization.conv2d`` (static int8, oneDNN's requantization); torch ``nn.Conv2d`` and
      ``torch.ao.nn.quantized.Conv2d`` (NCHW, contiguous, as users call them);

    * ``digits MLP``, the 64-128-64-10 MLP of the parity suite's PTQ rows
      (``parity.specs.ptq_models``) on all 1797 digits images: float32, dynamic int8
      (``quantize_dynamic``) and static int8 (``prepare`` → calibrate → ``convert``, x86
      qconfig), in JAX (``jax.jit`` of the ``nnx.merge``-d model: no per-call graph traversal)
      and torch's converted twins.

    Static and dynamic contenders of both frameworks get the same int8 weights and qparams;
    their outputs are compared once (bitwise) before timing. All contenders of a table take
    turns, one call each per round, each timed call right after an untimed one of its own
    (``benchmarks.optim_step.time_round_robin``).

How to read it
    ``ms``: median over the rounds; ``min``: the fastest call (on a shared machine the better
    guide to an unloaded one); ``G op/s``: multiply-adds × 2 / median. ``/ float32``: the
    median over the same framework's float32 contender (below 1: int8 faster). ``JAX / torch``:
    JAX's median over torch's contender of the same kind (below 1: JAX faster). No speedup is
    promised: what int8 buys depends on the backend's integer GEMM (XLA:CPU's int8 dot goes to
    its YNNPACK fusion; fbgemm and oneDNN use VNNI / AMX where the CPU has them) and on how
    much of the call is the epilogue (jaxopt_port computes torch's float32 epilogues exactly,
    step by step, several operations per output).

Run from the repository root:

    python -m benchmarks.int8 [--sizes 512,1024,4096] [--batch 256] [--conv 32,64,28,28]
                              [--rounds 10] [--threads N] [--quick] [--json PATH]

(`--threads 1` on a machine other jobs share: see `pin`; the figures in docs/benchmarks.md were
taken so.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax import lax

from benchmarks.optim_step import time_round_robin
from jaxopt_port import quantization as Q

KINDS = ("float32", "int8 raw", "static int8", "dynamic int8")
#: contender -> (framework, kind)
Contenders = dict[str, tuple[str, str, Callable[[], Any]]]


def _jax_call(fn: Callable, *args) -> Callable[[], Any]:
    f = jax.jit(fn)
    return lambda: jax.block_until_ready(f(*args))


def _torch_call(fn: Callable, *args) -> Callable[[], Any]:
    def run():
        with torch.no_grad():
            return fn(*args)

    return run


def _per_channel_weight(w: np.ndarray):
    """Symmetric per-channel qint8 weight (`w`: torch's `(out, in, ...)`): ours (output
    channels last) and torch's, from the same scales (x86's default weight observer)."""
    kernel = np.moveaxis(w, (0, 1), (-1, -2)) if w.ndim == 4 else w.T
    ours = Q.quantize_weight(jnp.asarray(kernel), Q.default_per_channel_weight_observer)
    scales = torch.from_numpy(np.asarray(ours.scale, np.float64))
    zeros = torch.zeros(w.shape[0], dtype=torch.int64)
    theirs = torch.quantize_per_channel(torch.from_numpy(w), scales, zeros, 0, torch.qint8)
    return ours, theirs


def _quantized_input(x: np.ndarray, layout: Callable[[np.ndarray], np.ndarray] = lambda x: x):
    """`x` as quint8 with min/max qparams: torch's tensor, and ours in `layout`."""
    s = float((x.max() - x.min()) / 255)
    z = int(np.clip(round(-x.min() / s), 0, 255))
    theirs = torch.quantize_per_tensor(torch.from_numpy(x), s, z, torch.quint8)
    values = jnp.asarray(layout(theirs.int_repr().numpy()))
    return Q.QuantizedArray(values, jnp.array([s], jnp.float32), jnp.array([z], jnp.int32)), theirs


def linear_contenders(batch: int, k: int, rng: np.random.Generator) -> tuple[Contenders, dict]:
    x = rng.standard_normal((batch, k), dtype=np.float32)
    w = (rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(k)).astype(np.float32)
    qx, tqx = _quantized_input(np.maximum(x, 0))  # a ReLU's output, as after a hidden layer
    qw, tqw = _per_channel_weight(w)
    s_y, z_y = float(np.abs(x).sum(1).mean() / 64), 64
    static = torch.ao.nn.quantized.Linear(k, k)
    static.set_weight_bias(tqw, torch.from_numpy(b))
    static.scale, static.zero_point = s_y, z_y
    dw = Q.quantize_weight(jnp.asarray(w.T))  # dynamic: per-tensor, as torch's default
    dynamic = torch.ao.nn.quantized.dynamic.Linear(k, k)
    dynamic.set_weight_bias(
        torch.quantize_per_tensor(torch.from_numpy(w), float(dw.scale[0]), 0, torch.qint8),
        torch.from_numpy(b),
    )
    dense = torch.nn.Linear(k, k)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(w))
        dense.bias.copy_(torch.from_numpy(b))
    a8 = rng.integers(-128, 128, (batch, k), dtype=np.int8)
    w8 = rng.integers(-128, 128, (k, k), dtype=np.int8)
    dims = (((1,), (0,)), ((), ()))
    xj, wj, bj, xt = jnp.asarray(x), jnp.asarray(w.T), jnp.asarray(b), torch.from_numpy(x)
    contenders = {
        "JAX x @ w + b": ("JAX", "float32", _jax_call(lambda x, w, b: x @ w + b, xj, wj, bj)),
        "JAX dot_general int8->int32": (
            "JAX",
            "int8 raw",
            _jax_call(
                lambda a, w: lax.dot_general(a, w, dims, preferred_element_type=jnp.int32),
                jnp.asarray(a8),
                jnp.asarray(w8),
            ),
        ),
        "JAX quantization.linear": (
            "JAX",
            "static int8",
            _jax_call(lambda x, w, b: Q.linear(x, w, b, s_y, z_y).values, qx, qw, bj),
        ),
        "JAX quantization.linear_dynamic": (
            "JAX",
            "dynamic int8",
            _jax_call(Q.linear_dynamic, xj, dw, bj),
        ),
        "torch nn.Linear": ("torch", "float32", _torch_call(dense, xt)),
        "torch _int_mm int8->int32": (
            "torch",
            "int8 raw",
            _torch_call(torch._int_mm, torch.from_numpy(a8), torch.from_numpy(w8)),
        ),
        "torch nnq.Linear": ("torch", "static int8", _torch_call(static, tqx)),
        "torch nnqd.Linear": ("torch", "dynamic int8", _torch_call(dynamic, xt)),
    }
    same = {
        "static int8": _bitwise(
            np.asarray(Q.linear(qx, qw, bj, s_y, z_y).values),
            static(tqx).int_repr().numpy(),
        ),
        "dynamic int8": _bitwise(np.asarray(Q.linear_dynamic(xj, dw, bj)), dynamic(xt).numpy()),
    }
    return contenders, {"macs": batch * k * k, "same_as_torch": same}


def conv_contenders(shape: Sequence[int], rng: np.random.Generator) -> tuple[Contenders, dict]:
    n, c, h, wd = shape
    x = rng.standard_normal((n, c, h, wd), dtype=np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = (0.1 * rng.standard_normal(c)).astype(np.float32)
    nhwc = lambda a: a.transpose(0, 2, 3, 1)
    qx, tqx = _quantized_input(np.maximum(x, 0), nhwc)
    qw, tqw = _per_channel_weight(w)
    s_y, z_y = 0.05, 64
    static = torch.ao.nn.quantized.Conv2d(c, c, 3, padding=1)
    static.set_weight_bias(tqw, torch.from_numpy(b))
    static.scale, static.zero_point = s_y, z_y
    dense = torch.nn.Conv2d(c, c, 3, padding=1)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(w))
        dense.bias.copy_(torch.from_numpy(b))
    pad = ((1, 1), (1, 1))
    dn = ("NHWC", "HWIO", "NHWC")
    kernel = jnp.asarray(w.transpose(2, 3, 1, 0))
    x8 = jnp.asarray(rng.integers(-128, 128, (n, h, wd, c), dtype=np.int8))
    k8 = jnp.asarray(rng.integers(-128, 128, (3, 3, c, c), dtype=np.int8))
    contenders = {
        "JAX conv float32": (
            "JAX",
            "float32",
            _jax_call(
                lambda x, k, b: (
                    lax.conv_general_dilated(x, k, (1, 1), pad, dimension_numbers=dn) + b
                ),
                jnp.asarray(nhwc(x)),
                kernel,
                jnp.asarray(b),
            ),
        ),
        "JAX conv int8->int32": (
            "JAX",
            "int8 raw",
            _jax_call(
                lambda x, k: lax.conv_general_dilated(
                    x, k, (1, 1), pad, dimension_numbers=dn, preferred_element_type=jnp.int32
                ),
                x8,
                k8,
            ),
        ),
        "JAX quantization.conv2d": (
            "JAX",
            "static int8",
            _jax_call(
                lambda x, w, b: Q.conv2d(x, w, b, s_y, z_y, padding=pad).values,
                qx,
                qw,
                jnp.asarray(b),
            ),
        ),
        "torch nn.Conv2d": ("torch", "float32", _torch_call(dense, torch.from_numpy(x))),
        "torch nnq.Conv2d": ("torch", "static int8", _torch_call(static, tqx)),
    }
    got = np.asarray(Q.conv2d(qx, qw, jnp.asarray(b), s_y, z_y, padding=pad).values)
    same = {"static int8": _bitwise(got, nhwc(static(tqx).int_repr().numpy()))}
    return contenders, {"macs": n * h * wd * c * c * 9, "same_as_torch": same}


def mlp_contenders() -> tuple[Contenders, dict]:
    from parity.run.quantization import ptq_twins
    from parity.specs import ptq_models

    float_t, float_j = ptq_models.mlp_twins()
    x = ptq_models.digits()
    models = {"float32": (float_t, float_j, torch.from_numpy(x), x)}
    models["dynamic int8"] = ptq_twins("dynamic MLP")
    models["static int8"] = ptq_twins("static MLP x86")
    contenders, same = {}, {}
    for kind, (theirs, ours, x_t, xj) in models.items():
        graphdef, state = nnx.split(ours)
        forward = lambda s, x, g=graphdef: nnx.merge(g, s)(x)
        contenders[f"JAX {kind}"] = ("JAX", kind, _jax_call(forward, state, jnp.asarray(xj)))
        contenders[f"torch {kind}"] = ("torch", kind, _torch_call(theirs, x_t))
        if kind != "float32":
            with torch.no_grad():
                same[kind] = _bitwise(np.asarray(jax.jit(forward)(state, xj)), theirs(x_t).numpy())
    macs = len(x) * (64 * 128 + 128 * 64 + 64 * 10)
    return contenders, {"macs": macs, "same_as_torch": same}


def _bitwise(a: np.ndarray, b: np.ndarray) -> str:
    equal = a.shape == b.shape and bool(np.all(a.view(np.uint8) == b.view(np.uint8)))
    return "bitwise equal" if equal else "DIFFERENT"


def bench(title: str, built: tuple[Contenders, dict], rounds: int, warmup: int) -> dict[str, Any]:
    contenders, info = built
    times = time_round_robin({k: v[2] for k, v in contenders.items()}, rounds, warmup)
    medians = {k: statistics.median(t) for k, t in times.items()}
    by_kind = {(fw, kind): name for name, (fw, kind, _) in contenders.items()}
    rows = {}
    for name, (fw, kind, _) in contenders.items():
        other = by_kind.get(("torch", kind)) if fw == "JAX" else None
        rows[name] = {
            "framework": fw,
            "kind": kind,
            "median_ms": 1e3 * medians[name],
            "min_ms": 1e3 * min(times[name]),
            "gops": 2 * info["macs"] / medians[name] / 1e9,
            "over_float32": medians[name] / medians[by_kind[(fw, "float32")]],
            "jax_over_torch": medians[name] / medians[other] if other else None,
        }
    return {"title": title, "contenders": rows, **info}


def format_table(result: dict[str, Any]) -> str:
    same = ", ".join(f"{k}: {v}" for k, v in result["same_as_torch"].items())
    lines = [
        f"{result['title']}  (JAX vs torch outputs: {same})",
        f"  {'contender':<32} {'kind':<13} {'ms':>9} {'min ms':>9} {'G op/s':>8} "
        f"{'/ float32':>10} {'JAX / torch':>12}",
    ]
    for name, r in result["contenders"].items():
        ratio = f"{r['jax_over_torch']:>11.2f}x" if r["jax_over_torch"] is not None else ""
        lines.append(
            f"  {name:<32} {r['kind']:<13} {r['median_ms']:>9.3f} {r['min_ms']:>9.3f} "
            f"{r['gops']:>8.1f} {r['over_float32']:>9.2f}x {ratio:>12}".rstrip()
        )
    return "\n".join(lines)


def pin(cores: int) -> None:
    """Every thread of the process (XLA's pools exist from import on) onto the first `cores`
    cores, and torch's intra-op threads to as many. On a machine other jobs load, this keeps
    torch's OpenMP threads from waiting at barriers for a descheduled sibling (measured on 2
    busy cores: `nn.Linear` 256 × 512 → 512 took 9–15 ms with 2 threads, 0.85 ms with 1)."""
    cpus = set(range(cores))
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), cpus)
    torch.set_num_threads(cores)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="512,1024,4096", help="Linear K -> K, comma-separated")
    parser.add_argument("--batch", type=int, default=256, help="rows per Linear call")
    parser.add_argument("--conv", default="32,64,28,28", help="N,C,H,W of the 3x3 convolution")
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per contender")
    parser.add_argument(
        "--quick", action="store_true", help="sizes 256,512, conv 8,32,28,28, 3 rounds"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="pin every thread to the first N cores, torch to N threads (see `pin`); default: "
        "all cores, each framework's default threads",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="write all figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.conv, args.rounds, args.warmup = "256,512", "8,32,28,28", 3, 1
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        pin(args.threads)
    torch.backends.quantized.engine = "x86"
    warnings.filterwarnings("ignore", category=UserWarning)  # reduce_range, quantized tensors
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization
    load = os.getloadavg()
    print(
        f"JAX {jax.__version__}: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"torch {torch.__version__}: x86 engine, {torch.get_num_threads()} threads; "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores; "
        f"median of {args.rounds} round-robin calls; load average {load[0]:.1f}\n"
    )
    rng = np.random.default_rng(0)
    results = []
    for k in (int(s) for s in args.sizes.split(",")):
        title = f"linear: batch {args.batch}, {k} -> {k}"
        results.append(
            bench(title, linear_contenders(args.batch, k, rng), args.rounds, args.warmup)
        )
        print(format_table(results[-1]) + "\n", flush=True)
    shape = tuple(int(s) for s in args.conv.split(","))
    title = f"conv 3x3, padding 1: {shape[0]} images {shape[1]} -> {shape[1]} channels, "
    title += f"{shape[2]}x{shape[3]}"
    results.append(bench(title, conv_contenders(shape, rng), args.rounds, args.warmup))
    print(format_table(results[-1]) + "\n", flush=True)
    title = "digits MLP 64-128-64-10, 1797 images"
    results.append(bench(title, mlp_contenders(), args.rounds, args.warmup))
    print(format_table(results[-1]) + "\n", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "load_average": [load, os.getloadavg()]}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
