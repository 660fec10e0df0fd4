r"""Models that really get smaller: remove pruned channels from Flax NNX layers, export sparse
weights.

torch's pruning only multiplies by masks, so the model keeps its size and speed. Here a channel
(output neuron of a Linear, output channel of a Conv) that is pruned is *removed*: the layer
loses that output and the next layer the matching input, so both matmuls shrink.

The smaller model computes what the masked model does when a removed channel outputs exactly
zero into the next layer: its weights **and** its bias are zero (for a Conv–BatchNorm pair, the
BatchNorm's scale and bias too), and the activation in between maps 0 to 0 (ReLU, GELU, tanh,
SiLU; not sigmoid). Prune the bias with the weight (`prune_tree(..., select=...)` on both, or
[`channel_mask`][jaxopt_port.pruning.channel_mask] below).

Sparse export: [`to_bcoo`][jaxopt_port.pruning.to_bcoo] (`jax.experimental.sparse`) for
unstructured sparsity, [`pack_n_m`][jaxopt_port.pruning.pack_n_m] for N:M (values plus the
in-group positions), each with [`size_ratio`][jaxopt_port.pruning.size_ratio].
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "channel_mask",
    "kept_channels",
    "pack_n_m",
    "shrink_conv_bn",
    "shrink_linear",
    "size_ratio",
    "to_bcoo",
    "unpack_n_m",
]


def kept_channels(mask: Any, axis: int = -1) -> np.ndarray:
    """The channels along `axis` with any nonzero mask entry (Flax layouts keep output
    channels last: `axis=-1`).

    Examples:
      >>> import numpy as np
      >>> kept_channels(np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
      array([ True, False,  True])
    """
    mask = np.asarray(mask)
    axes = tuple(d for d in range(mask.ndim) if d != axis % mask.ndim)
    return np.any(mask != 0, axis=axes)


def channel_mask(keep: Any, like: Any, axis: int = -1) -> jax.Array:
    """A mask of `like`'s shape and dtype that zeros the channels not in `keep` along `axis`
    (for a bias, a BatchNorm scale, or a kernel)."""
    like = jnp.asarray(like)
    shape = [1] * like.ndim
    shape[axis % like.ndim] = -1
    return jnp.broadcast_to(jnp.asarray(keep).reshape(shape), like.shape).astype(like.dtype)


def _take(variable: Any, keep: np.ndarray, axis: int) -> Any:
    from flax import nnx

    return nnx.Param(jnp.take(variable[...], np.flatnonzero(keep), axis=axis))


def shrink_linear(first: Any, second: Any, keep: Any) -> tuple[Any, Any]:
    """`first`'s kept output neurons and `second`'s matching inputs, as new `nnx.Linear`\\ s.

    Args:
      first: an `nnx.Linear` (kernel `(in, out)`).
      second: the `nnx.Linear` that reads `first`'s outputs (through an activation with
        `f(0) = 0`).
      keep: boolean per output neuron of `first` (e.g. `kept_channels(kernel_mask)`).

    Returns:
      `(first, second)` with `keep.sum()` neurons between them (copies; the inputs are
      unchanged).
    """
    keep = np.asarray(keep, bool)
    a, b = copy.deepcopy(first), copy.deepcopy(second)
    a.kernel = _take(a.kernel, keep, -1)
    if a.bias is not None:
        a.bias = _take(a.bias, keep, -1)
    a.out_features = int(keep.sum())
    b.kernel = _take(b.kernel, keep, 0)
    b.in_features = int(keep.sum())
    return a, b


def shrink_conv_bn(conv: Any, bn: Any, next_conv: Any, keep: Any) -> tuple[Any, Any, Any]:
    """Remove output channels of `conv` (and of its BatchNorm `bn`) and the matching input
    channels of `next_conv`.

    Args:
      conv: an `nnx.Conv` (kernel `(*k, in, out)`, `feature_group_count=1`).
      bn: the `nnx.BatchNorm` after it, or `None`.
      next_conv: the `nnx.Conv` (or `nnx.Linear` after a global pooling) reading the
        channels.
      keep: boolean per output channel of `conv`.

    Returns:
      `(conv, bn, next_conv)`, new modules.
    """
    keep = np.asarray(keep, bool)
    c, n, nxt = copy.deepcopy(conv), copy.deepcopy(bn), copy.deepcopy(next_conv)
    c.kernel = _take(c.kernel, keep, -1)
    if c.bias is not None:
        c.bias = _take(c.bias, keep, -1)
    c.out_features = int(keep.sum())
    if n is not None:
        from flax import nnx

        for name in ("scale", "bias"):
            if getattr(n, name) is not None:
                setattr(n, name, _take(getattr(n, name), keep, -1))
        for name in ("mean", "var"):
            stat = getattr(n, name)
            setattr(n, name, nnx.BatchStat(jnp.take(stat[...], np.flatnonzero(keep), axis=-1)))
        n.num_features = int(keep.sum())
    nxt.kernel = _take(nxt.kernel, keep, -2 if nxt.kernel[...].ndim > 2 else 0)
    nxt.in_features = int(keep.sum())
    return c, n, nxt


def to_bcoo(weight: Any) -> Any:
    """`weight` as a `jax.experimental.sparse.BCOO` holding only its nonzeros.

    Examples:
      >>> import jax.numpy as jnp
      >>> to_bcoo(jnp.array([[0.0, 2.0], [0.0, 0.0]])).nse
      1
    """
    from jax.experimental import sparse

    weight = jnp.asarray(weight)
    return sparse.BCOO.fromdense(weight, nse=int(jnp.count_nonzero(weight)))


def pack_n_m(weight: Any, n: int = 2, m: int = 4) -> tuple[jax.Array, jax.Array]:
    """Pack an N:M-sparse `weight` (groups of `m` along the last axis, at most `n`
    nonzeros each) into its kept values and their positions in the group.

    Args:
      weight: `(..., k)` with `k` divisible by `m` (torch's layout: groups of input
        features).
      n: values kept per group.
      m: group size (at most 256).

    Returns:
      `(values, positions)`: `values` `(..., k // m * n)` in `weight`'s dtype,
      `positions` uint8 of the same shape (ascending within each group).

    Raises:
      ValueError: `k` not divisible by `m`, or a group with more than `n` nonzeros.

    Examples:
      >>> import jax.numpy as jnp
      >>> values, positions = pack_n_m(jnp.array([[0.0, 3.0, 0.0, -1.0]]))
      >>> values, positions
      (Array([[ 3., -1.]], dtype=float32), Array([[1, 3]], dtype=uint8))
    """
    weight = jnp.asarray(weight)
    if weight.shape[-1] % m:
        raise ValueError(f"the last axis ({weight.shape[-1]}) is not divisible by m={m}")
    groups = weight.reshape(*weight.shape[:-1], -1, m)
    if int(jnp.max(jnp.count_nonzero(groups, axis=-1), initial=0)) > n:
        raise ValueError(f"a group of {m} has more than {n} nonzeros: not {n}:{m} sparse")
    # nonzeros first (stable: ascending position), then keep the first n, sorted by position
    order = jnp.argsort(groups == 0, axis=-1, stable=True)[..., :n]
    positions = jnp.sort(order, axis=-1)
    values = jnp.take_along_axis(groups, positions, axis=-1)
    shape = (*weight.shape[:-1], -1)
    return values.reshape(shape), positions.astype(jnp.uint8).reshape(shape)


def unpack_n_m(values: Any, positions: Any, n: int = 2, m: int = 4) -> jax.Array:
    """The dense weight back from [`pack_n_m`][jaxopt_port.pruning.pack_n_m]'s output."""
    values, positions = jnp.asarray(values), jnp.asarray(positions).astype(jnp.int32)
    v = values.reshape(*values.shape[:-1], -1, n)
    p = positions.reshape(*positions.shape[:-1], -1, n)
    dense = jnp.zeros((*v.shape[:-1], m), values.dtype)
    dense = jnp.put_along_axis(dense, p, v, axis=-1, inplace=False)
    return dense.reshape(*values.shape[:-1], -1)


def _nbytes(x: Any) -> int:
    if hasattr(x, "data") and hasattr(x, "indices"):  # BCOO
        return _nbytes(x.data) + _nbytes(x.indices)
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(a) for a in x)
    return int(np.asarray(x).nbytes)


def size_ratio(sparse: Any, dense: Any) -> float:
    """Bytes of a sparse export (a BCOO, or the `(values, positions)` pair) over the dense
    weight's bytes.

    Examples:
      >>> import jax.numpy as jnp
      >>> w = jnp.tile(jnp.array([1.0, 0.0, 2.0, 0.0]), (8, 4))
      >>> size_ratio(pack_n_m(w), w)  # half the values + one byte per kept value
      0.625
    """
    return _nbytes(sparse) / _nbytes(dense)
