"""Learnable fake quantization: gradients for the scale and the zero point (LSQ / TQT style).

torch's `_fake_quantize_learnable_per_tensor_affine` and `..._per_channel_affine` (used by
`_LearnableFakeQuantize`). Forward as
[`fake_quantize_per_tensor_affine`][jaxopt_port.quantization.fake_quantize_per_tensor_affine]
with the zero point rounded; backward, per element, with $r = \\mathrm{fl}(1/s)$,
$q = \\mathrm{rint}(\\mathrm{fma}(x, r, z))$ (torch's backward kernel adds the zero point
before rounding, in one fused operation, unlike its forward) and
$\\hat x - x = \\mathrm{fma}(\\mathrm{clamp}(q) - z, s, -x)$ (also fused by the compiler):

$$\\frac{\\partial L}{\\partial x} = g\\,[q_{min} \\le q \\le q_{max}],\\quad
\\frac{\\partial L}{\\partial s} = \\begin{cases}
((g\\,(\\hat x - x))\\, r)\\, \\gamma & q \\text{ in range} \\\\
(g\\,(q_{min} - z))\\,\\gamma & q < q_{min} \\\\
(g\\,(q_{max} - z))\\,\\gamma & q > q_{max}\\end{cases},\\quad
\\frac{\\partial L}{\\partial z} = \\begin{cases} 0 & q \\text{ in range} \\\\
((g \\cdot (-1))\\, s)\\,\\gamma & \\text{otherwise}\\end{cases}$$

summed over the tensor (per channel: over every axis but the channel's), $\\gamma$ = `grad_factor`,
products evaluated left to right in float32 as torch's kernel, and $\\partial L/\\partial x$ is
$g$ times the 0/1 mask (so $-0$ where a negative $g$ is masked, as torch).

Warning:
    torch's per-tensor op rounds the float zero point differently in its two passes: the forward
    uses $\\mathrm{rint}(z)$ (half to even), the backward $\\lfloor z + 0.5 \\rfloor$ (truncating
    $z + 0.5$; half up). Both are reproduced: with $z = 2.5$ the forward quantizes with 2 and the
    gradients are those of 3. The per-channel op uses `round` (half to even) in both passes.

    The element-wise scale and zero-point contributions equal torch's bit for bit; their sum is
    reduced in XLA's order, not torch's, so the summed gradients agree to float32 summation
    rounding (measured in the tests), not bitwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._numerics import (
    _channel_shape,
    _check_axis,
    _fake_quant_core,
    _mask_gradient,
)

_F32 = jnp.float32


def _learnable_grads(x, g, scale, zp, quant_min, quant_max, grad_factor):
    """Element-wise (dx, dscale, dzero_point) of torch's learnable fake-quant backward kernel."""
    r = _exact.divide(_F32(1), scale)
    q = jnp.rint(_exact.fma(x, r, zp))
    below, above = q < quant_min, q > quant_max
    inside = ~(below | above)
    error = _exact.fma(jnp.clip(q, quant_min, quant_max) - zp, scale, -x)  # x_fq - x, fused
    zero = jnp.zeros_like(g)
    dx = _mask_gradient(g, inside)
    d_in = ((g * error) * r) * grad_factor
    d_out = jnp.where(below, g * (quant_min - zp), g * (quant_max - zp)) * grad_factor
    dscale = jnp.where(inside, d_in, d_out)
    dzp = jnp.where(inside, zero, ((g * _F32(-1)) * scale) * grad_factor)
    return dx, dscale, dzp


def _torch_sum(v, axes=None):
    """A sum that is $+0$ when zero, as torch's reductions (they start from $+0$; XLA drops a sum
    over a length-1 axis and keeps a $-0$)."""
    total = jnp.sum(v, axis=axes)
    return jnp.where(total == 0, jnp.zeros_like(total), total)


def _per_tensor_zero_points(zero_point, quant_min, quant_max):
    z = jnp.asarray(zero_point, _F32).reshape(-1)[0]
    forward = jnp.clip(jnp.rint(z), quant_min, quant_max)
    backward = jnp.trunc(jnp.clip(z + _F32(0.5), quant_min, quant_max))
    return forward, backward


@jax.custom_vjp
def _learnable_per_tensor(x, scale, zero_point, quant_min, quant_max, grad_factor):
    zf, _ = _per_tensor_zero_points(zero_point, quant_min, quant_max)
    return _fake_quant_core(x, scale.reshape(-1)[0], zf, quant_min, quant_max)[0]


def _lpt_fwd(x, scale, zero_point, quant_min, quant_max, grad_factor):
    y = _learnable_per_tensor(x, scale, zero_point, quant_min, quant_max, grad_factor)
    return y, (x, scale, zero_point, quant_min, quant_max, grad_factor)


def _lpt_bwd(res, g):
    x, scale, zero_point, quant_min, quant_max, grad_factor = res
    _, zb = _per_tensor_zero_points(zero_point, quant_min, quant_max)
    s = scale.reshape(-1)[0]
    dx, ds, dz = _learnable_grads(x, g, s, zb, quant_min, quant_max, grad_factor)
    ds = _torch_sum(ds).reshape(scale.shape)
    dz = _torch_sum(dz).reshape(jnp.shape(zero_point)).astype(jnp.result_type(zero_point))
    return (
        dx,
        ds,
        dz,
        jnp.zeros_like(quant_min),
        jnp.zeros_like(quant_max),
        jnp.zeros_like(grad_factor),
    )


_learnable_per_tensor.defvjp(_lpt_fwd, _lpt_bwd)


def fake_quantize_learnable_per_tensor_affine(
    x, scale, zero_point, quant_min, quant_max, grad_factor=1.0
):
    """Fake quantization differentiable in `scale` and `zero_point`, as torch's
    `_fake_quantize_learnable_per_tensor_affine`.

    The gradients are given in this module's docstring (LSQ's for the scale, TQT's for the zero
    point); `grad_factor` scales both (LSQ suggests $1/\\sqrt{n\\,q_{max}}$).

    Args:
        x: Float array.
        scale: One-element float32 array (torch's `scale` parameter, shape `(1,)`).
        zero_point: One-element float array (a float zero point, rounded inside).
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        grad_factor: Multiplies the scale and zero-point gradients.

    Returns:
        The fake-quantized float32 array.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> f = lambda x, s, z: quantization.fake_quantize_learnable_per_tensor_affine(x, s, z, 0, 3).sum()
        >>> gx, gs, gz = jax.grad(f, argnums=(0, 1, 2))(jnp.array([0.2, 0.9, 5.0]), jnp.array([0.5]), jnp.array([0.0]))
        >>> gx, gs, gz
        (Array([1., 1., 0.], dtype=float32), Array([2.8], dtype=float32), Array([-0.5], dtype=float32))
    """
    x = jnp.asarray(x, _F32)
    scale = jnp.asarray(scale, _F32)
    zero_point = jnp.asarray(zero_point, _F32)
    return _learnable_per_tensor(
        x, scale, zero_point, _F32(quant_min), _F32(quant_max), _F32(grad_factor)
    )


def _per_channel_zero_points(zero_point, quant_min, quant_max, shape):
    return jnp.clip(jnp.rint(zero_point), quant_min, quant_max).reshape(shape)


def fake_quantize_learnable_per_channel_affine(
    x, scale, zero_point, axis, quant_min, quant_max, grad_factor=1.0
):
    """Per-channel learnable fake quantization, torch's `_fake_quantize_learnable_per_channel_affine`.

    Per channel $c$ the per-tensor gradients of this module's docstring, summed over every axis
    but `axis`; the float zero points are rounded half to even and clamped in both passes.

    Args:
        x: Float array.
        scale: One float32 scale per channel.
        zero_point: One float zero point per channel.
        axis: The channel axis.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        grad_factor: Multiplies the scale and zero-point gradients.

    Returns:
        The fake-quantized float32 array.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> f = lambda s: quantization.fake_quantize_learnable_per_channel_affine(
        ...     jnp.array([[0.2, 5.0]]), s, jnp.array([0.0, 1.0]), 1, 0, 3).sum()
        >>> jax.grad(f)(jnp.array([0.5, 1.0]))
        Array([-0.4,  2. ], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    axis = _check_axis(x, axis)
    shape = _channel_shape(x.ndim, axis)
    reduce_axes = tuple(d for d in range(x.ndim) if d != axis)
    # NumPy scalars: constants in every trace (the custom rule is traced apart from the caller).
    qmin, qmax, gamma = np.float32(quant_min), np.float32(quant_max), np.float32(grad_factor)

    @jax.custom_vjp
    def f(x, scale, zero_point):
        z = _per_channel_zero_points(zero_point, qmin, qmax, shape)
        return _fake_quant_core(x, scale.reshape(shape), z, qmin, qmax)[0]

    def fwd(x, scale, zero_point):
        return f(x, scale, zero_point), (x, scale, zero_point)

    def bwd(res, g):
        x, scale, zero_point = res
        z = _per_channel_zero_points(zero_point, qmin, qmax, shape)
        dx, ds, dz = _learnable_grads(x, g, scale.reshape(shape), z, qmin, qmax, gamma)
        return (
            dx,
            _torch_sum(ds, reduce_axes).reshape(scale.shape),
            _torch_sum(dz, reduce_axes).reshape(zero_point.shape),
        )

    f.defvjp(fwd, bwd)
    return f(x, jnp.asarray(scale, _F32), jnp.asarray(zero_point, _F32))
