"""torch's `HistogramObserver`: a running histogram and an L2-error search for the range.

The update follows torch step by step (histogram over the observed range, re-binning the old
histogram when the range grows: 16× upsampling, bucketing by the new edges); `calculate_qparams`
runs torch's non-linear search — shrink the range from the side holding less mass, in steps of
$10^{-5}$ of the total, while the L2 quantization error of the histogram under a $2^8$-bin grid
keeps decreasing — then applies the observers' qparam formula to the chosen range. Everything is
float32 JAX code (`lax.while_loop` for the search) and runs under `jax.jit`.

torch computes parts of the search in float64 Python scalars mixed with float32 tensors; the
float32 port chooses the same range in the tested cases, but this is not guaranteed bit for bit:
the tests measure the difference of the qparams and state it.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._observers import _PER_TENSOR, _UniformObserver
from jaxopt_port.quantization._ranges import DtypeName, QSchemeName

if TYPE_CHECKING:
    import torch
    from jax.typing import ArrayLike

_F32 = jnp.float32
_UPSAMPLE = 16


class HistogramState(NamedTuple):
    """torch's buffers: `histogram` (bins,), `min_val`, `max_val` (0-d)."""

    histogram: jnp.ndarray
    min_val: jnp.ndarray
    max_val: jnp.ndarray


def _histc(x, weights, bins, lo, hi):
    """torch.histc: equal-width bins over [lo, hi] (widened by 1 each side when lo == hi), values
    outside ignored, the right edge in the last bin."""
    same = lo == hi
    lo, hi = jnp.where(same, lo - 1, lo), jnp.where(same, hi + 1, hi)
    pos = jnp.floor(_exact.divide(x - lo, hi - lo) * bins)
    inside = (x >= lo) & (x <= hi)
    idx = jnp.clip(pos, 0, bins - 1).astype(jnp.int32)
    return jnp.zeros(bins, _F32).at[idx].add(jnp.where(inside, weights, 0))


def _torch_linspace(start, end, steps):
    """torch.linspace on CPU: fma(step, i, start) for the first half, fma(-step, steps - 1 - i,
    end) for the rest (recomputing it without the fused operation misses ~half the points)."""
    step = _exact.divide(end - start, _F32(steps - 1))
    i = jnp.arange(steps)
    head = _exact.fma(step, i.astype(_F32), start)
    tail = _exact.fma(-step, (steps - 1 - i).astype(_F32), end)
    return jnp.where(i < steps // 2, head, tail)


def _upscale(hist, orig_min, orig_max, new_min, new_max, bins):
    fine = jnp.repeat(hist, _UPSAMPLE) / _UPSAMPLE
    n = bins * _UPSAMPLE
    size = _exact.divide(orig_max - orig_min, _F32(n))
    mids = _torch_linspace(orig_min, orig_max, n + 1)[:-1] + 0.5 * size
    edges = _torch_linspace(new_min, new_max, bins + 1)
    bucket = jnp.clip(jnp.searchsorted(edges, mids, side="right") - 1, 0, bins - 1)
    return jnp.zeros(bins, _F32).at[bucket].add(fine)


def _l2(delta_begin, delta_end, density):
    return density * (
        (delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3
    )


@functools.partial(jax.jit, static_argnames="bins")
def _update(state: HistogramState, x: jax.Array, bins: int) -> HistogramState:
    """One observation, compiled once per (bins, batch shape): eagerly, op by op, the first call
    compiled ~150 small programs (13 s)."""
    finite = jnp.isfinite(x)
    weights = finite.astype(_F32)
    x_min = jnp.min(jnp.where(finite, x, jnp.inf))
    x_max = jnp.max(jnp.where(finite, x, -jnp.inf))
    any_finite = jnp.any(finite)
    hist, cur_min, cur_max = state
    uninit = (cur_min == jnp.inf) | (cur_max == -jnp.inf)
    new_min = jnp.where(uninit, x_min, jnp.minimum(cur_min, x_min))
    new_max = jnp.where(uninit, x_max, jnp.maximum(cur_max, x_max))
    update_hist = _histc(x, weights, bins, new_min, new_max)
    same = (new_min == cur_min) & (new_max == cur_max)
    point = _histc(cur_min[None], jnp.ones(1, _F32), bins, new_min, new_max) * jnp.sum(hist)
    safe_max = jnp.where(cur_min == cur_max, cur_min + 1, cur_max)
    upscaled = _upscale(hist, cur_min, safe_max, new_min, new_max, bins)
    combined = jnp.where(
        uninit,
        update_hist,
        jnp.where(
            same,
            hist + update_hist,
            jnp.where(cur_min == cur_max, point, upscaled) + update_hist,
        ),
    )
    keep = ~any_finite
    return HistogramState(
        jnp.where(keep, hist, combined),
        jnp.where(keep, cur_min, new_min),
        jnp.where(keep, cur_max, new_max),
    )


def _error(hist, bin_width, start, end, dst):
    """torch's `_compute_quantization_error` for the bins [start, end]."""
    bins = hist.shape[0]
    dst_width = bin_width * (end - start + 1).astype(_F32) / dst
    src = jnp.arange(bins, dtype=_F32)
    begin = (src - start.astype(_F32)) * bin_width
    end_ = begin + bin_width
    safe = jnp.where(dst_width == 0, _F32(1), dst_width)
    dst_begin = jnp.clip(jnp.floor(begin / safe), 0, dst - 1)
    dst_end = jnp.clip(jnp.floor(end_ / safe), 0, dst - 1)
    density = hist / bin_width
    half = safe / 2
    norm = _l2(begin - (dst_begin + 0.5) * safe, half, density)
    norm += (dst_end - dst_begin - 1) * _l2(-half, half, density)
    norm += _l2(-half, end_ - (dst_end * safe + half), density)
    return jnp.where(dst_width == 0, _F32(0), jnp.sum(norm))


@functools.partial(jax.jit, static_argnames="dst")
def _search(state: HistogramState, dst: int) -> tuple[jax.Array, jax.Array]:
    """torch's `_non_linear_param_search`: the (min, max) minimising the L2 error."""
    hist, mn, mx = state
    bins = hist.shape[0]
    bin_width = _exact.divide(mx - mn, _F32(bins))
    total = jnp.sum(hist)
    csum = jnp.cumsum(hist)
    steps = 100_000  # 1 / stepsize

    def cond(c):
        ka, kb, _, _, _, stop = c
        return (ka + kb < steps) & ~stop

    def body(c):
        ka, kb, start, end, norm_min, _ = c
        next_alpha = (ka + 1).astype(_F32) * _F32(1e-5)
        next_beta = _F32(1) - (kb + 1).astype(_F32) * _F32(1e-5)
        lft = jnp.searchsorted(csum, next_alpha * total, side="left")
        lft = jnp.clip(lft, start, end)
        rgt = jnp.searchsorted(csum, next_beta * total, side="right") - 1
        rgt = jnp.clip(rgt, start, end)
        move_left = (lft - start) > (end - rgt)
        n_start = jnp.where(move_left, lft, start)
        n_end = jnp.where(move_left, end, rgt)
        ka = jnp.where(move_left, ka + 1, ka)
        kb = jnp.where(move_left, kb, kb + 1)
        changed = (n_start != start) | (n_end != end)
        norm = lax.cond(
            changed,
            lambda: _error(hist, bin_width, n_start, n_end, dst),
            lambda: norm_min,
        )
        stop = changed & (norm > norm_min)
        accept = changed & ~stop
        return (
            ka,
            kb,
            jnp.where(accept, n_start, start),
            jnp.where(accept, n_end, end),
            jnp.where(accept, norm, norm_min),
            stop,
        )

    init = (
        jnp.int32(0),
        jnp.int32(0),
        jnp.int32(0),
        jnp.int32(bins - 1),
        _F32(jnp.inf),
        jnp.bool_(False),
    )
    _, _, start, end, _, _ = lax.while_loop(cond, body, init)
    # torch: min_val + bin_width * bin, two float32 roundings
    return (
        _exact.multiply_add(bin_width, start.astype(_F32), mn),
        _exact.multiply_add(bin_width, (end + 1).astype(_F32), mn),
    )


class HistogramObserver(_UniformObserver):
    """Histogram of everything observed; qparams from the range minimising the L2 error.

    Args:
        bins: Histogram bins (2048).
        dtype: `"quint8"` (default) or `"qint8"`.
        qscheme: `"per_tensor_affine"` (default) or `"per_tensor_symmetric"`.
        **kwargs: `reduce_range`, `quant_min`, `quant_max`, `factory_kwargs`, `eps`,
            `is_dynamic`.

    Raises:
        NotImplementedError: a per-channel qscheme or `is_dynamic` (torch's messages).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> obs = quantization.HistogramObserver(bins=64)
        >>> state = obs.update(obs.init(), jnp.linspace(-1.0, 3.0, 101))
        >>> scale, zero_point = obs.calculate_qparams(state)
        >>> int(zero_point[0])  # torch: 65 too (the search trims the tails)
        65
    """

    def __init__(
        self,
        bins: int = 2048,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
        **kwargs: Any,
    ) -> None:
        if str(qscheme).removeprefix("torch.") not in _PER_TENSOR:
            raise NotImplementedError(
                "HistogramObserver's qscheme only support torch.per_tensor_symmetric and "
                "torch.per_tensor_affine."
            )
        if kwargs.get("is_dynamic", False):
            raise NotImplementedError("HistogramObserver doesn't support dynamic quantization")
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)
        self.bins = bins
        self.dst_nbins = 2 ** {"quint8": 8, "qint8": 8, "qint32": 32}[self.dtype]
        self.upsample_rate = _UPSAMPLE

    def init(self) -> HistogramState:
        """Unobserved: empty histogram, $(+\\infty, -\\infty)$."""
        return HistogramState(
            jnp.zeros(self.bins, _F32), jnp.array(jnp.inf, _F32), jnp.array(-jnp.inf, _F32)
        )

    def update(self, state: HistogramState, x: ArrayLike) -> HistogramState:
        """Observe a batch (infinite values are ignored, with torch's warning when eager)."""
        x = jnp.asarray(x).astype(_F32).reshape(-1)
        if x.size == 0:
            return state
        finite = jnp.isfinite(x)
        if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(finite | jnp.isnan(x))):
            warnings.warn("torch.inf detected in input tensor, ignoring input", stacklevel=2)
        return _update(state, x, self.bins)

    def calculate_qparams(self, state: HistogramState) -> tuple[jax.Array, jax.Array]:
        """Qparams of the L2-optimal range (torch's defaults, with its warning, if unobserved)."""
        unobserved = (state.min_val == jnp.inf) & (state.max_val == -jnp.inf)
        if not isinstance(unobserved, jax.core.Tracer) and bool(unobserved):
            warnings.warn(
                "must run observer before calling calculate_qparams. Returning default scale "
                "and zero point ",
                stacklevel=2,
            )
            return jnp.array([1.0], _F32), jnp.array([0], jnp.int32)
        return self._qparams_of(*_search(state, self.dst_nbins))
