"""Batch statistics over the global batch: torch's `SyncBatchNorm` for data-parallel steps.

Inside a data-parallel step each device sees only its rows.
[`batch_mean`][jaxopt_port.parallel.batch_mean] and
[`sync_batch_norm`][jaxopt_port.parallel.sync_batch_norm] average over the whole global batch
whichever backend runs the step: under `"shard_map"` and `"pmap"` they add a `lax.pmean` over the
data axis (the step sets the axis while it traces the loss), under `"jit"` the batch already is the
global array, and outside a step they are plain batch means. A loss written once therefore gives the
same numbers on 1 or N devices — what `torch.nn.SyncBatchNorm` gives DDP.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["batch_mean", "data_axis", "sync_batch_norm"]

_context = threading.local()


@contextlib.contextmanager
def mapped_over(axis: str | None) -> Iterator[None]:
    """While tracing a per-device function, name the axis
    [`batch_mean`][jaxopt_port.parallel.batch_mean] reduces over."""
    previous = getattr(_context, "axis", None)
    _context.axis = axis
    try:
        yield
    finally:
        _context.axis = previous


def data_axis() -> str | None:
    """The data axis of the per-device step being traced (`None` under `"jit"` or no step)."""
    return getattr(_context, "axis", None)


def batch_mean(x: jax.Array, axis: int | Sequence[int] = 0) -> jax.Array:
    """`jnp.mean(x, axis)` over the global batch, wherever the step splits it.

    Every device holds the same number of rows, so the mean of the per-device means is the global
    mean.
    """
    local = jnp.mean(x, axis=axis)
    name = data_axis()
    return local if name is None else lax.pmean(local, name)


def _global_count(x: jax.Array, axes: tuple[int, ...]) -> jax.Array | int:
    count = 1
    for a in axes:
        count *= x.shape[a]
    name = data_axis()
    return count if name is None else count * lax.psum(1, name)


def sync_batch_norm(
    x: jax.Array,
    running_mean: jax.Array | None = None,
    running_var: jax.Array | None = None,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    momentum: float = 0.1,
    eps: float = 1e-5,
    feature_axis: int = 1,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """`torch.nn.functional.batch_norm(..., training=True)` with statistics over the global batch.

    $$
    \\begin{gathered}
      μ = \\operatorname{mean}_{B}(x), \\quad σ^2 = \\operatorname{mean}_{B}((x - μ)^2), \\quad
      y = \\frac{x - μ}{\\sqrt{σ^2 + ε}}\\, w + b
    \\end{gathered}
    $$

    with the means over every axis but `feature_axis` and over all devices
    ([`batch_mean`][jaxopt_port.parallel.batch_mean]), as `torch.nn.SyncBatchNorm` computes them.
    The running statistics update as torch's: `r_μ ← (1 − m) r_μ + m μ` and
    `r_σ² ← (1 − m) r_σ² + m σ² n/(n − 1)` with `n` the number of elements per feature in the global
    batch (the unbiased variance, while `y` uses the biased one).

    Args:
      x: activations; `feature_axis` holds the features (torch's layout, `1`, by default; pass
        `-1` for Flax's channels-last layout).
      running_mean: torch's running mean, or `None` to skip the running statistics.
      running_var: torch's running variance, or `None` (with `running_mean`).
      weight: the affine scale, or `None`.
      bias: the affine shift, or `None`.
      momentum: torch's `momentum` (default 0.1); torch's `None` (cumulative average) is not
        supported.
      eps: added to the variance (default 1e-5).

    Returns:
      `(y, running_mean, running_var)`, the running statistics updated (`None` if not given).
    """
    if momentum is None:
        raise ValueError(
            "sync_batch_norm: momentum=None (cumulative moving average) is not supported; pass a float"
        )
    feature_axis = feature_axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != feature_axis)
    shape = [1] * x.ndim
    shape[feature_axis] = x.shape[feature_axis]
    mean = batch_mean(x, axes)
    var = batch_mean(jnp.square(x - mean.reshape(shape)), axes)
    y = (x - mean.reshape(shape)) * lax.rsqrt(var + eps).reshape(shape)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    if running_mean is not None:
        running_mean = (1 - momentum) * running_mean + momentum * lax.stop_gradient(mean)
    if running_var is not None:
        n = _global_count(x, axes)
        unbiased = lax.stop_gradient(var) * (n / (n - 1))
        running_var = (1 - momentum) * running_var + momentum * unbiased
    return y, running_mean, running_var
