"""Small training problems written once for torch and JAX (the losses share one definition).

Each problem has a parameter list (the leaves, in order), a stream of batches, and a loss written
for torch and for JAX. The reference implementation receives gradients from torch autograd at its
own float64 parameters, so it shares no code with jaxopt_port.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROBLEMS", "Problem", "digits", "make_problem"]


@dataclass(frozen=True)
class Problem:
    """Initial parameters (float64 NumPy), per-step batches, and the name of the loss."""

    name: str
    params: tuple[np.ndarray, ...]
    batches: tuple[tuple[np.ndarray, ...], ...]

    def torch_loss(self, params: list[Any], batch: tuple[np.ndarray, ...]) -> Any:
        import torch

        dtype = params[0].dtype
        tensors = [
            torch.as_tensor(b) if b.dtype.kind == "i" else torch.as_tensor(b, dtype=dtype)
            for b in batch
        ]
        return _LOSSES[self.name](_TorchOps, params, tensors)

    def jax_loss(self, params: list[Any], *batch: Any) -> Any:
        dtype = params[0].dtype
        return _LOSSES[self.name](
            _JaxOps, params, [b if b.dtype.kind == "i" else b.astype(dtype) for b in batch]
        )


class _TorchOps:
    """The few tensor ops the losses use."""

    @staticmethod
    def tanh(x):
        return x.tanh()

    @staticmethod
    def mean(x):
        return x.mean()

    @staticmethod
    def embedding(idx, table):
        import torch

        return torch.nn.functional.embedding(idx, table, sparse=True)

    @staticmethod
    def log_softmax(x):
        return x.log_softmax(-1)


class _JaxOps:
    """The same ops in JAX."""

    @staticmethod
    def tanh(x):
        import jax.numpy as jnp

        return jnp.tanh(x)

    @staticmethod
    def mean(x):
        return x.mean()

    @staticmethod
    def embedding(idx, table):
        return table[idx]

    @staticmethod
    def log_softmax(x):
        import jax

        return jax.nn.log_softmax(x, axis=-1)


def _mlp(ops: Any, params: list[Any], batch: list[Any]) -> Any:
    x, y = batch
    if len(params) == 4:
        w1, b1, w2, b2 = params
        hidden = ops.tanh(x @ w1 + b1)
        out = hidden @ w2 + b2
    else:
        w1, w2 = params
        out = ops.tanh(x @ w1) @ w2
    return ops.mean((out - y) ** 2)


def _embedding(ops: Any, params: list[Any], batch: list[Any]) -> Any:
    (table,) = params
    idx, v, y = batch
    return ops.mean(((ops.embedding(idx, table) * v).sum(-1) - y) ** 2)


def _digits(ops: Any, params: list[Any], batch: list[Any]) -> Any:
    x, onehot = batch
    if len(params) == 4:
        w1, b1, w2, b2 = params
        logits = ops.tanh(x @ w1 + b1) @ w2 + b2
    else:
        w1, w2 = params
        logits = ops.tanh(x @ w1) @ w2
    return -ops.mean((onehot * ops.log_softmax(logits)).sum(-1))


_LOSSES = {
    "mlp": _mlp,
    "mlp_nobias": _mlp,
    "embedding": _embedding,
    "digits": _digits,
    "digits_nobias": _digits,
}
PROBLEMS = tuple(_LOSSES)


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images as (1797, 64) floats in [0, 1], labels as int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data / 16.0
    x.setflags(write=False)
    y = data.target.astype(np.int64)
    y.setflags(write=False)
    return x, y


def _mlp_problem(rng: np.random.Generator, steps: int, bias: bool) -> tuple[tuple, list]:
    n_in, n_hidden, n_out, batch = 6, 8, 3, 16
    w1 = rng.normal(size=(n_in, n_hidden)) / np.sqrt(n_in)
    w2 = rng.normal(size=(n_hidden, n_out)) / np.sqrt(n_hidden)
    if bias:
        params = (w1, rng.normal(size=n_hidden) * 0.1, w2, rng.normal(size=n_out) * 0.1)
    else:
        params = (w1, w2)
    teacher = rng.normal(size=(n_in, n_out))
    batches = []
    for _ in range(steps):
        x = rng.normal(size=(batch, n_in))
        batches.append((x, np.sin(x @ teacher) + 0.1 * rng.normal(size=(batch, n_out))))
    return params, batches


def _embedding_problem(rng: np.random.Generator, steps: int, bias: bool) -> tuple[tuple, list]:
    rows, dim, lookups = 12, 4, 5
    params = (rng.normal(size=(rows, dim)),)
    batches = []
    for _ in range(steps):
        idx = rng.choice(rows, size=lookups, replace=False).astype(np.int64)
        batches.append((idx, rng.normal(size=dim), rng.normal(size=lookups)))
    return params, batches


def _digits_problem(rng: np.random.Generator, steps: int, bias: bool) -> tuple[tuple, list]:
    x_all, labels = digits()
    onehot_all = np.eye(10)[labels]
    w1 = rng.normal(size=(64, 32)) / 8.0
    w2 = rng.normal(size=(32, 10)) / np.sqrt(32)
    params = (w1, np.zeros(32), w2, np.zeros(10)) if bias else (w1, w2)
    batches = []
    for _ in range(steps):
        rows = rng.choice(len(x_all), size=64, replace=False)
        batches.append((x_all[rows], onehot_all[rows]))
    return params, batches


#: How each problem's parameters and batches are drawn: (builder, with biases).
_BUILDERS = {
    "mlp": (_mlp_problem, True),
    "mlp_nobias": (_mlp_problem, False),
    "embedding": (_embedding_problem, True),
    "digits": (_digits_problem, True),
    "digits_nobias": (_digits_problem, False),
}


def make_problem(name: str, steps: int, seed: int = 0) -> Problem:
    """A problem with ``steps`` batches, deterministic in ``seed``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown problem {name!r}; expected one of {PROBLEMS}")
    build, bias = _BUILDERS[name]
    params, batches = build(np.random.default_rng(seed), steps, bias)
    return Problem(name, params, tuple(batches))
