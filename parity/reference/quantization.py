"""A NumPy reference of every torch.ao.quantization formula jaxopt_port reproduces.

Self-contained (imports only NumPy at module level) so the suite keeps checking the documented
rules after torch removes `torch.ao.quantization`. float32 results are computed exactly: float32
products are exact in float64, and the single rounding of a fused multiply-add is obtained by
rounding the float64 sum to odd before rounding it to float32 (exact because 53 ≥ 24 + 2).

`parity.run.quantization.run_quantization_parity` compares jaxopt_port (eager and jitted), torch and this reference on
near-tie inputs and returns plain dict rows for the parity report.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
DTYPE_RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}
FLOAT32_EPS = float(np.finfo(F32).eps)
STORAGE = {"quint8": np.uint8, "qint8": np.int8, "qint32": np.int32}


# ---------------------------------------------------------------- exact float32 arithmetic
def _round_to_odd_sum(p, c):
    """float64 `p + c` rounded to odd (p, c float64)."""
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    bits = s.view(np.int64)
    even = (bits & 1) == 0
    bumped = np.nextafter(s, np.where(err > 0, np.inf, -np.inf))
    return np.where((err != 0) & even & np.isfinite(s), bumped, s)


def fma32(a, b, c):
    """fl32(a·b + c) with one rounding (C's `fmaf`)."""
    a, b, c = (np.asarray(v, F32).astype(np.float64) for v in (a, b, c))
    with np.errstate(over="ignore", invalid="ignore"):
        return _round_to_odd_sum(a * b, c).astype(F32)


def mul_add32(a, b, c):
    """fl32(fl32(a·b) + c): two roundings."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.asarray(a, F32) * np.asarray(b, F32)) + np.asarray(c, F32)


def reciprocal32(s):
    """The float32 reciprocal torch multiplies by: fl32(1 / s)."""
    return (F32(1) / np.asarray(s, F32)).astype(F32)


def _to_int(v, dtype):
    lo, hi = DTYPE_RANGES[dtype]
    with np.errstate(invalid="ignore"):
        return np.clip(v.astype(np.float64), lo, hi).astype(np.int64).astype(STORAGE[dtype])


def _channel(v, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(v).reshape(shape)


# ---------------------------------------------------------------- numerics
def quantize_per_tensor(x, scale, zero_point, dtype):
    """torch x86: rint(fma(x, 1/s, z)) for 8-bit types, rint(fl(fl(x/s·) + z)) for qint32."""
    x = np.asarray(x, F32)
    r = reciprocal32(scale)
    v = mul_add32(x, r, F32(zero_point)) if dtype == "qint32" else fma32(x, r, zero_point)
    return _to_int(np.rint(v), dtype)


def quantize_per_channel(x, scales, zero_points, axis, dtype):
    """rint(fl(fl(x·r_c) + z_c)), clamped."""
    x = np.asarray(x, F32)
    r = _channel(reciprocal32(scales), x.ndim, axis)
    z = _channel(np.asarray(zero_points).astype(F32), x.ndim, axis)
    return _to_int(np.rint(mul_add32(x, r, z)), dtype)


def dequantize(q, scale, zero_point, axis=None):
    """(f32(q) − f32(z))·s."""
    q = np.asarray(q)
    s, z = np.asarray(scale, F32), np.asarray(zero_point).astype(F32)
    if axis is not None:
        s, z = _channel(s, q.ndim, axis), _channel(z, q.ndim, axis)
    return ((q.astype(F32) - z) * s).astype(F32)


def fake_quantize(x, scale, zero_point, quant_min, quant_max, axis=None):
    """(y, mask): q = rint(fl(x·r)) + z, y = (clamp(q) − z)·s, mask = q in range."""
    x = np.asarray(x, F32)
    r, s = reciprocal32(scale), np.asarray(scale, F32)
    z = np.asarray(zero_point).astype(F32)
    if axis is not None:
        r, s, z = (_channel(v, x.ndim, axis) for v in (r, s, z))
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x * r) + z
    mask = (q >= quant_min) & (q <= quant_max)
    y = ((np.clip(q, quant_min, quant_max) - z) * s).astype(F32)
    return y, mask


def learnable_fake_quantize_grads(x, g, scale, zero_point, quant_min, quant_max, grad_factor):
    """Element-wise (dx, dscale, dzero_point) of torch's learnable fake-quant backward kernel
    (scale and zero point already broadcast; the zero point already rounded as the op does)."""
    x, g = np.asarray(x, F32), np.asarray(g, F32)
    s, z = np.asarray(scale, F32), np.asarray(zero_point, F32)
    r, gf = reciprocal32(s), F32(grad_factor)
    qmin, qmax = F32(quant_min), F32(quant_max)
    q = np.rint(fma32(x, r, z))  # the backward kernel's fused zero point + x·r
    below, above = q < qmin, q > qmax
    inside = ~(below | above)
    error = fma32(np.clip(q, qmin, qmax) - z, s, -x)  # x_fq − x, contracted by the compiler
    dx = g * inside.astype(F32)
    dscale = np.where(
        inside,
        ((g * error) * r) * gf,
        np.where(below, g * (qmin - z), g * (qmax - z)) * gf,
    )
    dzp = np.where(inside, F32(0), ((g * F32(-1)) * s) * gf)
    return dx.astype(F32), dscale.astype(F32), dzp.astype(F32)


# ---------------------------------------------------------------- quantization parameters
def qmin_qmax(dtype, reduce_range=False, quant_min=None, quant_max=None):
    """torch's calculate_qmin_qmax."""
    if quant_min is not None and quant_max is not None:
        return (quant_min // 2, quant_max // 2) if reduce_range else (quant_min, quant_max)
    if dtype == "qint8":
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype == "quint8":
        return (0, 127) if reduce_range else (0, 255)
    return DTYPE_RANGES["qint32"]


def calculate_qparams(
    min_val, max_val, quant_min, quant_max, qscheme, dtype, eps=FLOAT32_EPS, custom=False
):
    """The observers' `_calculate_qparams` in float32 (torch's tensor ops, correctly rounded).

    Returns (scale float32, zero_point int64 — float32 for float qparams), or None for the
    unobserved state (torch returns scale [1.0], zero point [0] with a warning).
    """
    mn, mx = np.atleast_1d(np.asarray(min_val, F32)), np.atleast_1d(np.asarray(max_val, F32))
    if mn.size == 0 or (np.all(mn == np.inf) and np.all(mx == -np.inf) and mn.size == 1):
        return None
    eps = F32(eps)
    mn_neg, mx_pos = np.minimum(mn, F32(0)), np.maximum(mx, F32(0))
    zp = np.zeros(mn.shape, np.int64)
    if qscheme in ("per_tensor_symmetric", "per_channel_symmetric"):
        mx_pos = np.maximum(-mn_neg, mx_pos)
        scale = np.maximum(mx_pos / F32((quant_max - quant_min) / 2), eps)
        if dtype == "quint8":
            zp[:] = (quant_min + quant_max) // 2 if custom else 128
    elif qscheme == "per_channel_affine_float_qparams":
        scale = (mx - mn) / F32(quant_max - quant_min)
        scale = np.where(scale > eps, scale, F32(1))
        return scale.astype(F32), (F32(-1) * mn / scale).astype(F32)
    else:
        scale = np.maximum((mx_pos - mn_neg) / F32(quant_max - quant_min), eps)
        zp = quant_min - np.rint(mn_neg / scale).astype(np.int64)
        zp = np.clip(zp, quant_min, quant_max)
    return scale.astype(F32), zp


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    return int(a / b)


def choose_quantization_params(
    min_val, max_val, quant_min, quant_max, preserve_sparsity=False, reduce_range=False
):
    """ATen's ChooseQuantizationParams (fbgemm's rule): float32 min/max, float64 scale.

    Returns (scale as float64, zero point int). Each C++ float32 variable is rounded back to
    float32 where the C++ code assigns it.
    """
    mn, mx = F32(min_val), F32(max_val)
    if not mn <= mx:
        raise RuntimeError("In ChooseQuantizationParams, min should be less than or equal to max")
    if reduce_range:
        quant_min, quant_max = _c_div(quant_min, 2), _c_div(quant_max, 2)
    if mn < 0 and mx > 0 and preserve_sparsity:
        sym_qmin = -(_c_div(quant_max - quant_min, 2) + 1)
        sym_qmax = _c_div(quant_max - quant_min, 2)
        max_scale = float(max(abs(mn / F32(sym_qmin)), abs(mx / F32(sym_qmax))))
        mn, mx = F32(max_scale * sym_qmin), F32(max_scale * sym_qmax)
    mn, mx = min(mn, F32(0)), max(mx, F32(0))
    if not quant_min < quant_max:
        raise RuntimeError("In ChooseQuantizationParams, qmin should be less than qmax")
    scale = (float(mx) - float(mn)) / (quant_max - quant_min)
    with np.errstate(divide="ignore", over="ignore"):
        if F32(scale) == 0 or np.isinf(F32(1) / F32(scale)):
            scale = 0.1
    small = F32(6.1e-5)
    if scale < float(small):
        org = F32(scale)
        scale = float(small)
        if mn == 0:
            mx = F32(small * F32(quant_max - quant_min))
        elif mx == 0:
            mn = F32(-small * F32(quant_max - quant_min))
        else:
            amplifier = F32(small / org)
            mn, mx = F32(mn * amplifier), F32(mx * amplifier)
    zp_min = quant_min - float(mn) / scale
    zp_max = quant_max - float(mx) / scale
    err_min = abs(quant_min) - abs(float(mn) / scale)
    err_max = abs(quant_max) - abs(float(mx) / scale)
    zp = zp_min if err_min < err_max else zp_max
    if mn < 0 and mx > 0 and preserve_sparsity:
        zp = (quant_min + quant_max) / 2
    if zp < quant_min:
        return scale, int(quant_min)
    if zp > quant_max:
        return scale, int(quant_max)
    return scale, int(np.rint(zp))


# ---------------------------------------------------------------- observers
def observe(min_val, max_val, x, averaging_constant=None, ch_axis=None):
    """One observer update: running min/max, or torch's moving average
    `old + c·(new − old)` (two float32 roundings); the first batch sets the range."""
    x = np.asarray(x, F32)
    if x.size == 0:
        return min_val, max_val
    if ch_axis is None:
        cur_min, cur_max = x.min(), x.max()
        first = min_val == np.inf and max_val == -np.inf
    else:
        y = np.moveaxis(x, ch_axis, 0).reshape(x.shape[ch_axis], -1)
        cur_min, cur_max = y.min(axis=1), y.max(axis=1)
        first = np.size(min_val) == 0
    if first:
        return F32(cur_min) if ch_axis is None else cur_min, cur_max
    if averaging_constant is None:
        return np.minimum(cur_min, min_val), np.maximum(cur_max, max_val)
    c = F32(averaging_constant)
    return (
        (min_val + c * (cur_min - min_val)).astype(F32),
        (max_val + c * (cur_max - max_val)).astype(F32),
    )


# ---------------------------------------------------------------- parity rows
def near_ties(rng, scale, zero_point, quant_min, quant_max, shape):
    """float32 inputs at (k + 1/2)·s and k·s and up to 2 ulps around them, k spanning the range
    (subnormals replaced by the smallest normal: XLA flushes them)."""
    lo = np.asarray(quant_min - zero_point - 3, np.int64)
    k = lo + rng.integers(0, quant_max - quant_min + 6, shape)
    half = rng.random(shape) < 0.8
    x = ((k + np.where(half, 0.5, 0.0)) * np.asarray(scale, np.float64)).astype(F32)
    steps = rng.integers(-2, 3, shape)
    for i in (1, 2):
        x = np.where(steps >= i, np.nextafter(x, F32(np.inf)), x)
        x = np.where(steps <= -i, np.nextafter(x, F32(-np.inf)), x)
    tiny = np.finfo(F32).tiny
    return np.where((x != 0) & (np.abs(x) < tiny), np.sign(x) * tiny, x).astype(F32)


# ---------------------------------------------------------------- int8 inference (PTQ)
def quantize_weight_symmetric(w, per_channel=False):
    """torch's default weight observers on a `(out, in)` weight: symmetric qint8,
    s = max|w| / 127.5 (per tensor, or per output row), zero point 0. Returns (q int64, s)."""
    w = np.asarray(w, F32)
    if per_channel:
        mn, mx = w.min(axis=1), w.max(axis=1)
        s, _ = calculate_qparams(mn, mx, -128, 127, "per_channel_symmetric", "qint8")
        return quantize_per_channel(w, s, np.zeros_like(s, np.int64), 0, "qint8").astype(
            np.int64
        ), s
    s, _ = calculate_qparams(w.min(), w.max(), -128, 127, "per_tensor_symmetric", "qint8")
    return quantize_per_tensor(w, s[0], 0, "qint8").astype(np.int64), s


def linear_dynamic(x, q_w, s_w, bias, reduce_range=True):
    """fbgemm's dynamic Linear: the activation quantized to quint8 with
    `choose_quantization_params` of the whole input's min/max, an exact integer product with
    the `(out, in)` int8 weight (zero point 0), then fma(f32(acc), f32(s_x·s_w), b)."""
    x = np.asarray(x, F32)
    s, z = choose_quantization_params(x.min(), x.max(), 0, 255, False, reduce_range)
    s = F32(s)
    q = quantize_per_tensor(x, s, z, "quint8").astype(np.int64)
    acc = (q - z) @ np.asarray(q_w, np.int64).T
    return fma32(acc.astype(F32), (s * np.asarray(s_w, F32)).astype(F32), np.asarray(bias, F32))


def linear_static(q_x, s_x, z_x, q_w, s_w, bias, s_y, z_y):
    """fbgemm's static Linear, quint8 → quint8: with m = f32(s_x·s_w),
    q = clamp(rint(f32(f32(acc) + f32(b / m)) · f32(m / s_y)) + z_y, 0, 255)."""
    acc = (np.asarray(q_x, np.int64) - z_x) @ np.asarray(q_w, np.int64).T
    m = (F32(s_x) * np.asarray(s_w, F32)).astype(F32)
    raw = acc.astype(F32) + (np.asarray(bias, F32) / m).astype(F32)
    q = np.rint((raw * (m / F32(s_y)).astype(F32)).astype(F32)).astype(np.int64) + z_y
    return np.clip(q, 0, 255)


def requantize_onednn(acc, s_x, s_w, bias, s_y, z_y):
    """oneDNN's requantization (torch's x86 quantized Conv2d), channels on the last axis:
    q = clamp(rint(f32(f32(f32(f32(acc)·m) + b) / s_y) + z_y), 0, 255), m = f32(s_x·s_w)."""
    m = (F32(s_x) * np.asarray(s_w, F32)).astype(F32)
    v = (np.asarray(acc).astype(F32) * m).astype(F32)
    v = (v + np.asarray(bias, F32)).astype(F32)
    v = ((v / F32(s_y)).astype(F32) + F32(z_y)).astype(F32)
    return np.clip(np.rint(v).astype(np.int64), 0, 255)
