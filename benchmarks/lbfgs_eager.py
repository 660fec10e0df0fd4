"""Time one L-BFGS ``step(closure)``: the eager torch-style loop vs a jitted step vs torch.

What is measured
    One L-BFGS step (up to ``--max-iter`` inner iterations, each with its loss and gradient
    evaluations) on a least-squares problem ``mean((A θ - b)²)`` with ``--features`` parameters
    and ``--rows`` rows per batch, a new batch every step (drawn in turn from 16), by four
    contenders:

    * ``eager``: the loop a torch user writes, with nothing jitted: a new closure over the batch
      each step, ``jax.value_and_grad(closure)(params)`` (op by op), ``tx.update(...,
      value_fn=closure)`` and ``optax.apply_updates``;
    * ``eager, jitted grad``: the same loop with the first loss and gradient from a jitted
      ``value_and_grad`` (what remains is the cost of calling ``update`` eagerly);
    * ``jitted step``: the whole step under ``jax.jit``, the batch passed as an argument;
    * ``torch``: ``torch.optim.LBFGS.step(closure)``, the closure calling ``backward()``.

    The contenders take turns, one step each per round, so that drift in the machine's load hits
    all of them alike; the median over the rounds is reported with the interquartile range and
    the minimum. The first call of each JAX contender (tracing and compiling) is reported apart.
    ``evals/step``: the loss evaluations per step, the same work for all contenders when they
    agree (their trajectories can drift apart in the last bits).

How to read it
    ``ms``: median wall time of one step. The ratios divide the eager contenders' medians by
    the jitted step's and by torch's. Before jaxopt_port compiled eager updates once, ``eager``
    recompiled on every step (~850 ms) and crashed the interpreter after a few hundred steps.

Run from the repository root (jaxopt_port importable):

    python -m benchmarks.lbfgs_eager [--features 5] [--rows 20] [--max-iter 20]
        [--line-search strong_wolfe] [--x64] [--rounds 200] [--torch-threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxopt_port import optim

BATCHES = 16
Step = Callable[[], None]


def loss(params: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean((a @ params - b) ** 2)


def make_data(features: int, rows: int, dtype: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=features)
    data = []
    for _ in range(BATCHES):
        a = rng.normal(size=(rows, features))
        data.append((a.astype(dtype), (a @ truth + 0.1 * rng.normal(size=rows)).astype(dtype)))
    return data


class JaxContender:
    """An eager (optionally with a jitted first gradient) or a fully jitted L-BFGS loop."""

    def __init__(self, kind: str, tx: optax.GradientTransformationExtraArgs, data: list) -> None:
        self.kind, self.tx, self.k = kind, tx, 0
        self.data = [(jnp.asarray(a), jnp.asarray(b)) for a, b in data]
        self.params = jnp.zeros(data[0][0].shape[1], data[0][0].dtype)
        self.state = tx.init(self.params)
        self.value_and_grad = jax.jit(jax.value_and_grad(loss))

        def step(params: jax.Array, state: Any, a: jax.Array, b: jax.Array) -> tuple:
            closure = lambda p: loss(p, a, b)
            value, grad = jax.value_and_grad(closure)(params)
            updates, state = tx.update(grad, state, params, value=value, value_fn=closure)
            return optax.apply_updates(params, updates), state

        self.jitted = jax.jit(step)

    def __call__(self) -> None:
        a, b = self.data[self.k % BATCHES]
        self.k += 1
        if self.kind == "jitted step":
            self.params, self.state = self.jitted(self.params, self.state, a, b)
        else:
            closure = lambda p: loss(p, a, b)  # a new closure every step, as in torch
            if self.kind == "eager":
                value, grad = jax.value_and_grad(closure)(self.params)
            else:
                value, grad = self.value_and_grad(self.params, a, b)
            updates, self.state = self.tx.update(
                grad, self.state, self.params, value=value, value_fn=closure
            )
            self.params = optax.apply_updates(self.params, updates)
        jax.block_until_ready(self.params)

    def evals(self) -> int:
        return int(self.state.func_evals)


class TorchContender:
    def __init__(self, kwargs: dict, data: list) -> None:
        self.k = 0
        self.data = [(torch.tensor(a), torch.tensor(b)) for a, b in data]
        self.params = torch.zeros(data[0][0].shape[1], dtype=self.data[0][0].dtype)
        self.params.requires_grad_(True)
        self.optimizer = torch.optim.LBFGS([self.params], **kwargs)

    def __call__(self) -> None:
        a, b = self.data[self.k % BATCHES]
        self.k += 1

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad()
            value = torch.mean((a @ self.params - b) ** 2)
            value.backward()
            return value

        self.optimizer.step(closure)

    def evals(self) -> int:
        return self.optimizer.state[self.params]["func_evals"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    dtype = np.float64 if args.x64 else np.float32
    kwargs = {"lr": args.lr, "max_iter": args.max_iter, "line_search_fn": args.line_search}
    data = make_data(args.features, args.rows, dtype)
    contenders: dict[str, Any] = {
        kind: JaxContender(kind, optim.lbfgs(**kwargs), data)
        for kind in ("eager", "eager, jitted grad", "jitted step")
    }
    contenders["torch"] = TorchContender(kwargs, data)
    first = {}
    for name, step in contenders.items():
        start = time.perf_counter()
        step()
        first[name] = 1e3 * (time.perf_counter() - start)
        for _ in range(args.warmup):
            step()
    evals0 = {name: step.evals() for name, step in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    rows = {}
    for name, ts in times.items():
        q1, median, q3 = statistics.quantiles(ts, n=4)
        rows[name] = {
            "ms": median,
            "iqr": q3 - q1,
            "min": min(ts),
            "first_call_ms": first[name],
            "evals_per_step": (contenders[name].evals() - evals0[name]) / args.rounds,
        }
    ratios = {
        f"{name} / {base}": rows[name]["ms"] / rows[base]["ms"]
        for name in ("eager", "eager, jitted grad")
        for base in ("jitted step", "torch")
    }
    return {"config": vars(args), "steps": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--line-search", default=None, choices=[None, "strong_wolfe"])
    parser.add_argument("--x64", action="store_true", help="float64 on both sides")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    result = run(args)
    dtype = "float64" if args.x64 else "float32"
    print(
        f"L-BFGS step(closure), {args.features} parameters, {args.rows} rows, {dtype}, "
        f"max_iter={args.max_iter}, line_search_fn={args.line_search}, {args.rounds} rounds; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}"
    )
    print(f"{'':20s} {'ms':>9s} {'IQR':>8s} {'min':>8s} {'evals/step':>11s} {'first call ms':>14s}")
    for name, row in result["steps"].items():
        print(
            f"{name:20s} {row['ms']:9.3f} {row['iqr']:8.3f} {row['min']:8.3f} "
            f"{row['evals_per_step']:11.2f} {row['first_call_ms']:14.1f}"
        )
    for name, ratio in result["ratios"].items():
        print(f"{name:35s} {ratio:8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
