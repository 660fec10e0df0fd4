"""Scale and zero point from a range: the observers' formula and fbgemm's.

Two rules exist in torch and both are used in a QAT flow:

- the observers' `_calculate_qparams` (Python, float32 tensor ops), used by every observer and
  by `convert`;
- ATen's `ChooseQuantizationParams` (fbgemm's rule, float64 inside), used by
  `FusedMovingAvgObsFakeQuantize` during training and by dynamic quantization.

They differ: fbgemm picks the zero point from whichever end of the range has the smaller error,
replaces a scale below $6.1\\times10^{-5}$ and widens the range to match, and keeps its
float64 scale, so the x86 default QAT qconfig fake-quantizes with slightly different
parameters during training than `convert` computes afterwards.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._ranges import DtypeName, QSchemeName, dtype_name, qscheme_name

if TYPE_CHECKING:
    import torch
    from jax.typing import ArrayLike

_F32 = jnp.float32
FLOAT32_EPS = float(np.finfo(np.float32).eps)
"""torch's default observer eps: `torch.finfo(torch.float32).eps`."""
_UNOBSERVED = "must run observer before calling calculate_qparams. Returning default values."


def _concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def calculate_qparams(
    min_val: ArrayLike,
    max_val: ArrayLike,
    quant_min: int,
    quant_max: int,
    qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
    dtype: DtypeName | torch.dtype = "quint8",
    eps: float = FLOAT32_EPS,
    has_customized_qrange: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The observers' qparams (`UniformQuantizationObserverBase._calculate_qparams`), bit for bit.

    With $m^- = \\min(x_{min}, 0)$ and $m^+ = \\max(x_{max}, 0)$, all in float32:

    - affine: $s = \\max\\big((m^+ - m^-) / (q_{max} - q_{min}),\\ \\varepsilon\\big)$,
      $z = \\mathrm{clamp}(q_{min} - \\mathrm{round}(m^- / s), q_{min}, q_{max})$;
    - symmetric: $s = \\max\\big(\\max(-m^-, m^+) / ((q_{max} - q_{min}) / 2),\\ \\varepsilon\\big)$
      (the divisor is 127.5 for 8 bits, not 127), $z = 0$, or 128 for quint8
      ($\\lfloor (q_{min} + q_{max}) / 2 \\rfloor$ with a custom range);
    - `per_channel_affine_float_qparams`: $s = (x_{max} - x_{min}) / (q_{max} - q_{min})$,
      1 where not above $\\varepsilon$, and a float zero point $z = -x_{min} / s$.

    `round` is half to even. Divisions are correctly rounded (XLA's reciprocal rewrite is undone),
    so results equal torch's eagerly and under `jax.jit`. A constant input $c > 0$ gives
    $s = c / 255$, an all-zero input $s = \\varepsilon$. An unobserved range ($+\\infty$,
    $-\\infty$, or empty per-channel state) gives torch's defaults $s = 1$, $z = 0$ (with torch's
    warning when called eagerly).

    Args:
        min_val: Running minimum (0-d, or one per channel).
        max_val: Running maximum.
        quant_min: Lower integer bound (after `reduce_range`).
        quant_max: Upper integer bound.
        qscheme: One of torch's qscheme names.
        dtype: `"quint8"`, `"qint8"` or `"qint32"`.
        eps: Smallest scale.
        has_customized_qrange: Whether the observer was given `quant_min`/`quant_max`.

    Returns:
        `(scale, zero_point)`: float32 arrays of shape `(1,)` per tensor or `(C,)` per channel;
            int32 zero points (torch: int64 for symmetric, int32 for affine), float32 for float
            qparams.

    Raises:
        AssertionError: `min_val > max_val` somewhere (torch's message).

    Examples:
        >>> from jaxopt_port import quantization
        >>> quantization.calculate_qparams(-1.0, 3.0, 0, 255)
        (Array([0.01568628], dtype=float32), Array([64], dtype=int32))
        >>> quantization.calculate_qparams(-1.0, 3.0, -128, 127, "per_tensor_symmetric", "qint8")
        (Array([0.02352941], dtype=float32), Array([0], dtype=int32))
    """
    qscheme = qscheme_name(qscheme)
    name = dtype_name(dtype)
    mn = jnp.atleast_1d(jnp.asarray(min_val, _F32))
    mx = jnp.atleast_1d(jnp.asarray(max_val, _F32))
    if mn.size == 0 or mx.size == 0:
        warnings.warn(_UNOBSERVED, stacklevel=2)
        return jnp.array([1.0], _F32), jnp.array([0], jnp.int32)
    unobserved = jnp.all(mn == jnp.inf) & jnp.all(mx == -jnp.inf) & (mn.size == 1)
    if _concrete(mn, mx):
        if bool(unobserved):
            warnings.warn(_UNOBSERVED, stacklevel=2)
            return jnp.array([1.0], _F32), jnp.array([0], jnp.int32)
        if bool(jnp.any(mn > mx)):
            raise AssertionError(
                f"min {np.asarray(min_val)} should be less than max {np.asarray(max_val)}"
            )
    eps = _F32(eps)
    qrange = float(quant_max - quant_min)
    zero = jnp.zeros_like(mn)
    mn_neg, mx_pos = jnp.minimum(mn, zero), jnp.maximum(mx, zero)
    if qscheme == "per_channel_affine_float_qparams":
        scale = _exact.divide(mx - mn, _F32(qrange))
        scale = jnp.where(scale > eps, scale, jnp.ones_like(scale))
        return scale, _exact.divide(_F32(-1) * mn, scale)
    if qscheme in ("per_tensor_symmetric", "per_channel_symmetric"):
        scale = jnp.maximum(_exact.divide(jnp.maximum(-mn_neg, mx_pos), _F32(qrange / 2)), eps)
        mid = (quant_min + quant_max) // 2 if has_customized_qrange else 128
        zp = jnp.full(mn.shape, mid if name == "quint8" else 0, jnp.int32)
    else:
        scale = jnp.maximum(_exact.divide(mx_pos - mn_neg, _F32(qrange)), eps)
        zp = quant_min - jnp.rint(_exact.divide(mn_neg, scale)).astype(jnp.int32)
        zp = jnp.clip(zp, quant_min, quant_max).astype(jnp.int32)
    scale = jnp.where(unobserved, _F32(1), scale)
    zp = jnp.where(unobserved, 0, zp).astype(jnp.int32)
    return scale, zp


def _c_div(a: int, b: int) -> int:
    return int(a / b)  # C's integer division truncates toward zero


def _choose_host(min_val, max_val, quant_min, quant_max, preserve_sparsity, reduce_range):
    f32 = np.float32
    mn, mx = f32(min_val), f32(max_val)
    if reduce_range:
        quant_min, quant_max = _c_div(quant_min, 2), _c_div(quant_max, 2)
    if mn < 0 and mx > 0 and preserve_sparsity:
        sym_qmin = -(_c_div(quant_max - quant_min, 2) + 1)
        sym_qmax = _c_div(quant_max - quant_min, 2)
        max_scale = float(max(abs(mn / f32(sym_qmin)), abs(mx / f32(sym_qmax))))
        mn, mx = f32(max_scale * sym_qmin), f32(max_scale * sym_qmax)
    mn, mx = min(mn, f32(0)), max(mx, f32(0))
    scale = (float(mx) - float(mn)) / (quant_max - quant_min)
    with np.errstate(divide="ignore", over="ignore"):
        if f32(scale) == 0 or np.isinf(f32(1) / f32(scale)):
            scale = 0.1
    small = f32(6.1e-5)
    if scale < float(small):
        org = f32(scale)
        scale = float(small)
        if mn == 0:
            mx = f32(small * f32(quant_max - quant_min))
        elif mx == 0:
            mn = f32(-small * f32(quant_max - quant_min))
        else:
            amplifier = f32(small / org)
            mn, mx = f32(mn * amplifier), f32(mx * amplifier)
    from_min, from_max = quant_min - float(mn) / scale, quant_max - float(mx) / scale
    err_min = abs(quant_min) - abs(float(mn) / scale)
    err_max = abs(quant_max) - abs(float(mx) / scale)
    initial = from_min if err_min < err_max else from_max
    if mn < 0 and mx > 0 and preserve_sparsity:
        initial = (quant_min + quant_max) / 2
    zp = (
        quant_min if initial < quant_min else quant_max if initial > quant_max else np.rint(initial)
    )
    return np.float64(scale), np.int32(zp)


def choose_quantization_params(
    min_val: ArrayLike,
    max_val: ArrayLike,
    quant_min: int,
    quant_max: int,
    preserve_sparsity: bool = False,
    reduce_range: bool = False,
) -> tuple[np.float64, np.int32] | tuple[jax.Array, jax.Array]:
    """ATen's `ChooseQuantizationParams` (fbgemm's rule): float32 range, float64 arithmetic.

    $[m, M]$ is widened to contain 0 (first made symmetric,
    $\\max(|m| / |q^s_{min}|, |M| / q^s_{max})$ times the symmetric bounds, when
    `preserve_sparsity` and $m < 0 < M$); $s = (M - m) / (q_{max} - q_{min})$ in float64,
    0.1 if its float32 is 0 or has an infinite reciprocal; below $6.1\\times10^{-5}$ it becomes
    $6.1\\times10^{-5}$ and the range is stretched to match. The zero point comes from the end with
    the smaller $|q| - |x / s|$ (`preserve_sparsity`: the middle of the range), clamped, and
    rounded half to even. `reduce_range` halves the bounds (C division).

    The arithmetic needs float64, so it runs on the host in NumPy (through `jax.pure_callback`
    when traced); the scale is returned in float64 as torch's `_choose_qparams_per_tensor`
    (`FusedMovingAvgObsFakeQuantize` stores its float32 rounding).

    Args:
        min_val: Minimum of the observed values (float32).
        max_val: Maximum.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        preserve_sparsity: Symmetric quantization (torch passes True for symmetric qschemes).
        reduce_range: Halve the bounds.

    Returns:
        `(scale, zero_point)`: NumPy float64 and int32 scalars; 0-d arrays when traced, the scale
            then in float32 unless `jax_enable_x64` is on.

    Raises:
        RuntimeError: torch's messages when `min_val > max_val` or `quant_min >= quant_max`.

    Examples:
        >>> from jaxopt_port import quantization
        >>> s, z = quantization.choose_quantization_params(-1.0, 3.0, 0, 255)
        >>> float(s), int(z)
        (0.01568627450980392, 64)
    """
    if _concrete(min_val, max_val):
        if not np.float32(min_val) <= np.float32(max_val):
            raise RuntimeError(
                "In ChooseQuantizationParams, min should be less than or equal to max"
            )
        if not quant_min < quant_max:
            raise RuntimeError("In ChooseQuantizationParams, qmin should be less than qmax")
        return _choose_host(min_val, max_val, quant_min, quant_max, preserve_sparsity, reduce_range)
    scale_dtype = jnp.float64 if jax.config.jax_enable_x64 else _F32

    def host(mn, mx):
        s, z = _choose_host(mn, mx, quant_min, quant_max, preserve_sparsity, reduce_range)
        return np.asarray(s, scale_dtype), np.asarray(z, np.int32)

    out = (jax.ShapeDtypeStruct((), scale_dtype), jax.ShapeDtypeStruct((), jnp.int32))
    return jax.pure_callback(
        host, out, jnp.asarray(min_val, _F32), jnp.asarray(max_val, _F32), vmap_method="sequential"
    )
