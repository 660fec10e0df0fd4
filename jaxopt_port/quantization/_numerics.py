"""Quantize, dequantize and fake-quantize exactly as torch's x86 CPU kernels round.

torch rounds differently on each path (all multiply by the float32 reciprocal $r = 1/s$,
never divide by $s$):

| path | integer value |
|---|---|
| `quantize_per_tensor`, quint8 / qint8 | $\\mathrm{rint}(\\mathrm{fma}(x, r, z))$ (one rounding) |
| `quantize_per_tensor` qint32, `quantize_per_channel` | $\\mathrm{rint}(\\mathrm{fl}(\\mathrm{fl}(x r) + z))$ |
| `fake_quantize_*` | $\\mathrm{rint}(\\mathrm{fl}(x r)) + z$ |

then clamp to $[q_{min}, q_{max}]$; `rint` rounds half to even. Computing $x / s$ instead
mismatches torch on about a fifth of inputs that lie near a rounding tie. XLA contracts
multiply-adds and rewrites divisions under `jax.jit`; the formulas here go through
`_exact`'s helpers so eager and jitted results are the same bits as torch's, in float32 without
`jax_enable_x64`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._ranges import DTYPES, DtypeName, dtype_name

if TYPE_CHECKING:
    import torch
    from jax.typing import ArrayLike

_F32 = jnp.float32


def _is_concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def _channel_shape(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(-1 if d == axis else 1 for d in range(ndim))


def _check_axis(x, axis: int) -> int:
    if not -x.ndim <= axis < x.ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-x.ndim}, {x.ndim - 1}], "
            f"but got {axis})"
        )
    return axis % x.ndim


def _to_int(v, dtype):
    """Clamp a float of integer value to `dtype`'s range and convert it (values at or past
    $2^{31}$ become the int32 maximum, as torch's int64 clamp gives)."""
    storage, qmin, qmax = DTYPES[dtype]
    if dtype != "qint32":
        return jnp.clip(v, qmin, qmax).astype(storage)
    top = np.float32(2.0**31)
    below = jnp.clip(v, -top, np.nextafter(top, np.float32(0))).astype(jnp.int32)
    return jnp.where(v >= top, jnp.int32(qmax), below)


def quantize_per_tensor(
    x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, dtype: DtypeName | torch.dtype
) -> jax.Array:
    """Quantize with one scale and zero point: torch's `quantize_per_tensor(...).int_repr()`.

    $$q = \\mathrm{clamp}(\\mathrm{rint}(\\mathrm{fma}(x, r, z)), q_{min}, q_{max}),
    \\quad r = \\mathrm{fl}(1 / s)$$

    for quint8 and qint8 (x86's vectorised kernel: one rounding of $x r + z$); for qint32 the
    product is rounded before $z$ is added, $\\mathrm{rint}(\\mathrm{fl}(\\mathrm{fl}(x r) + z))$.
    The fused multiply-add is emulated exactly in float32, so the result is torch's bits eagerly
    and under `jax.jit`, without float64.

    Args:
        x: Float array (computed in float32, as torch's kernel).
        scale: Scale $s$ (a Python float is rounded to float32 first, as torch does).
        zero_point: Integer zero point $z$.
        dtype: `"quint8"`, `"qint8"` or `"qint32"` (or the torch dtype).

    Returns:
        The integer values (torch's `int_repr()`): uint8, int8 or int32.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> quantization.quantize_per_tensor(jnp.array([-1.0, 0.05, 0.15, 9.0]), 0.1, 10, "quint8")
        Array([  0,  10,  12, 100], dtype=uint8)
    """
    name = dtype_name(dtype)
    x = jnp.asarray(x, _F32)
    scale = jnp.asarray(scale, _F32)
    zp = jnp.asarray(zero_point, _F32)
    r = _exact.divide(_F32(1), scale)
    v = _exact.multiply_add(x, r, zp) if name == "qint32" else _exact.fma(x, r, zp)
    return _to_int(jnp.rint(v), name)


def quantize_per_channel(
    x: ArrayLike,
    scales: ArrayLike,
    zero_points: ArrayLike,
    axis: int,
    dtype: DtypeName | torch.dtype,
) -> jax.Array:
    """Quantize with one scale and zero point per index of `axis`: torch's `quantize_per_channel`.

    $$q = \\mathrm{clamp}(\\mathrm{rint}(\\mathrm{fl}(\\mathrm{fl}(x r_c) + z_c)), q_{min}, q_{max}),
    \\quad r_c = \\mathrm{fl}(1 / s_c)$$

    Unlike the per-tensor kernel, the product is rounded before the zero point is added (two
    roundings), which changes about 4.7 % of near-tie inputs when $z_c \\ne 0$.

    Args:
        x: Float array.
        scales: One scale per channel (torch takes float64 scales and rounds them to float32).
        zero_points: One zero point per channel: integers, or floats for
            `per_channel_affine_float_qparams` (embeddings; the same formula with a float $z_c$).
        axis: The channel axis of `x`.
        dtype: `"quint8"`, `"qint8"` or `"qint32"`.

    Returns:
        The integer values.

    Raises:
        IndexError: `axis` is out of range (torch's message).
        RuntimeError: the number of scales or zero points differs from `x.shape[axis]`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> x = jnp.array([[0.25, 0.25], [-0.5, 1.0]])
        >>> quantization.quantize_per_channel(x, jnp.array([0.5, 0.1]), jnp.array([0, 3]), 1, "qint8")
        Array([[ 0,  6],
               [-1, 13]], dtype=int8)
    """
    name = dtype_name(dtype)
    x = jnp.asarray(x, _F32)
    axis = _check_axis(x, axis)
    scales = jnp.asarray(scales, _F32).reshape(-1)
    zero_points = jnp.asarray(zero_points).reshape(-1)
    for what, v in (("scales", scales), ("zero_points", zero_points)):
        if v.shape[0] != x.shape[axis]:
            raise RuntimeError(
                f"length of {what} must equal to the size of the axis: got {v.shape[0]} "
                f"{what} for axis {axis} of size {x.shape[axis]}"
            )
    shape = _channel_shape(x.ndim, axis)
    r = _exact.divide(_F32(1), scales).reshape(shape)
    v = _exact.multiply_add(x, r, zero_points.astype(_F32).reshape(shape))
    return _to_int(jnp.rint(v), name)


def dequantize(
    q: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, axis: int | None = None
) -> jax.Array:
    """Back to float32: $x = (q - z) \\cdot s$, torch's `dequantize()` bit for bit.

    torch subtracts the zero point in float32 and multiplies once (its vectorised
    `scale·q + (−z·s)` premultiplied form is not what the x86 kernel computes for these dtypes).

    Args:
        q: Integer values (any of uint8, int8, int32).
        scale: Scale, or one scale per channel when `axis` is given.
        zero_point: Zero point, or one per channel (float zero points for float qparams).
        axis: The channel axis for per-channel values; None for one scale.

    Returns:
        The float32 values.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> quantization.dequantize(jnp.array([0, 10, 12], jnp.uint8), 0.1, 10)
        Array([-1. ,  0. ,  0.2], dtype=float32)
    """
    q = jnp.asarray(q)
    scale = jnp.asarray(scale, _F32)
    zp = jnp.asarray(zero_point).astype(_F32)
    if axis is not None:
        axis = _check_axis(q, axis)
        shape = _channel_shape(q.ndim, axis)
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q.astype(_F32) - zp) * scale


def _fake_quant_core(x, scale, zp, quant_min, quant_max):
    """Fake-quantized values and the straight-through mask: torch's cachemask kernels."""
    r = _exact.divide(_F32(1), scale)
    q = jnp.rint(x * r) + zp
    mask = (q >= quant_min) & (q <= quant_max)
    return (jnp.clip(q, quant_min, quant_max) - zp) * scale, mask


def _mask_gradient(g, mask):
    """torch's `dY * mask`: $-0$ where a negative gradient is masked (XLA would simplify a
    multiplication by the mask into a select that gives $+0$)."""
    return jnp.where(mask, g, jnp.copysign(jnp.zeros_like(g), g))


def _check_fake_quant_args(zero_point, quant_min, quant_max) -> None:
    if quant_min > quant_max:
        raise RuntimeError("`quant_min` should be less than or equal to `quant_max`.")
    if _is_concrete(zero_point):
        zp = np.asarray(zero_point)
        if np.any((zp < quant_min) | (zp > quant_max)):
            raise RuntimeError("`zero_point` must be between `quant_min` and `quant_max`.")


@jax.custom_vjp
def _fake_quant(x, scale, zp, bounds):
    return _fake_quant_core(x, scale, zp, *bounds)[0]


def _fake_quant_fwd(x, scale, zp, bounds):
    y, mask = _fake_quant_core(x, scale, zp, *bounds)
    return y, (mask, scale, zp, bounds)


def _fake_quant_bwd(res, g):
    mask, scale, zp, bounds = res
    zeros = jax.tree_util.tree_map(jnp.zeros_like, (scale, zp, bounds))
    return (_mask_gradient(g, mask), *zeros)


_fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def fake_quantize_per_tensor_affine(
    x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, quant_min: int, quant_max: int
) -> jax.Array:
    """Quantize and dequantize in one float op, torch's `fake_quantize_per_tensor_affine`.

    $$q = \\mathrm{rint}(\\mathrm{fl}(x r)) + z,\\quad
    y = (\\mathrm{clamp}(q, q_{min}, q_{max}) - z)\\, s,\\quad
    \\frac{\\partial y}{\\partial x} = [\\,q_{min} \\le q \\le q_{max}\\,]$$

    with $r = \\mathrm{fl}(1/s)$. The straight-through gradient is masked on the *rounded*
    value $q$ (an input just outside the range that rounds inside it still passes its gradient),
    as torch's cachemask kernel. No gradient flows to `scale` or `zero_point` (see
    [`fake_quantize_learnable_per_tensor_affine`][jaxopt_port.quantization.fake_quantize_learnable_per_tensor_affine]).

    Args:
        x: Float array.
        scale: Scale $s$ (float or 0-d / one-element array; float32).
        zero_point: Integer zero point $z$, inside `[quant_min, quant_max]`.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.

    Returns:
        The fake-quantized float32 array.

    Raises:
        RuntimeError: torch's messages for `quant_min > quant_max` or a zero point out of range.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> f = lambda x: quantization.fake_quantize_per_tensor_affine(x, 0.5, 0, -2, 2)
        >>> f(jnp.array([0.2, 0.3, 1.1, 1.2]))
        Array([0. , 0.5, 1. , 1. ], dtype=float32)
        >>> jax.grad(lambda x: f(x).sum())(jnp.array([0.2, 1.2, 1.3]))
        Array([1., 1., 0.], dtype=float32)
    """
    _check_fake_quant_args(zero_point, quant_min, quant_max)
    x = jnp.asarray(x, _F32)
    scale = jnp.asarray(scale, _F32).reshape(())
    zp = jnp.asarray(zero_point).astype(_F32).reshape(())
    return _fake_quant(x, scale, zp, (_F32(quant_min), _F32(quant_max)))


def fake_quantize_per_channel_affine(
    x: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike,
    axis: int,
    quant_min: int,
    quant_max: int,
) -> jax.Array:
    """Per-channel fake quantization, torch's `fake_quantize_per_channel_affine`.

    The formula of
    [`fake_quantize_per_tensor_affine`][jaxopt_port.quantization.fake_quantize_per_tensor_affine]
    with scale $s_c$ and zero point $z_c$ of each index $c$ along `axis` (the same rounding:
    $\\mathrm{rint}(\\mathrm{fl}(x r_c)) + z_c$, unlike `quantize_per_channel`).

    Args:
        x: Float array.
        scale: One float32 scale per channel.
        zero_point: One integer zero point per channel.
        axis: The channel axis.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.

    Returns:
        The fake-quantized float32 array; the gradient to `x` is masked as per tensor.

    Raises:
        RuntimeError: `quant_min > quant_max`, a zero point out of range, or the wrong number of
            scales.
        IndexError: `axis` out of range.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> x = jnp.array([[0.3, 0.3], [2.0, 2.0]])
        >>> quantization.fake_quantize_per_channel_affine(x, jnp.array([0.5, 1.0]), jnp.array([0, 1]), 1, 0, 3)
        Array([[0.5, 0. ],
               [1.5, 2. ]], dtype=float32)
    """
    _check_fake_quant_args(zero_point, quant_min, quant_max)
    x = jnp.asarray(x, _F32)
    axis = _check_axis(x, axis)
    scale = jnp.asarray(scale, _F32).reshape(-1)
    if scale.shape[0] != x.shape[axis]:
        raise RuntimeError(
            f"dimensions of scale and zero-point are not consistent with input tensor: "
            f"{scale.shape[0]} scales for axis {axis} of size {x.shape[axis]}"
        )
    shape = _channel_shape(x.ndim, axis)
    zp = jnp.asarray(zero_point).astype(_F32).reshape(shape)
    return _fake_quant(x, scale.reshape(shape), zp, (_F32(quant_min), _F32(quant_max)))
