"""torchao's affine quantization primitives and its int8 / intx linear kernels, on arrays.

torchao (0.18) quantizes in blocks: a `block_size` tuple, one entry per dimension, says how many
elements share one scale and zero point (`(1, K)` for one scale per row of a `(N, K)` weight,
`(1, 32)` for groups of 32). Everything here is float32 and reproduces torchao's CPU results bit
for bit, eagerly and under `jax.jit` (`_exact` undoes XLA's reciprocal rewrite and multiply-add
contraction), except the float matrix products, whose summation order is the BLAS library's.
Weights are in torch's layout, `(out_features, in_features)`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._numerics import _fake_quant_core
from jaxopt_port.quantization._qparams import calculate_qparams

if TYPE_CHECKING:
    from jax.typing import ArrayLike

_F32 = jnp.float32
F32_EPS = float(np.finfo(np.float32).eps)
"""`torch.finfo(torch.float32).eps`: the smallest scale of torchao's `Int8Tensor`."""
F32_TINY = float(np.finfo(np.float32).tiny)
"""`torch.finfo(torch.float32).smallest_normal`: torchao's default smallest scale elsewhere."""

MappingName: TypeAlias = Literal["SYMMETRIC", "ASYMMETRIC"]
"""torchao's `MappingType` names (its enum members are accepted too)."""


@dataclasses.dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor (torchao's `PerTensor()`)."""


@dataclasses.dataclass(frozen=True)
class PerRow:
    """One scale per row: each slice along `dim` shares one (torchao's `PerRow(dim=-1)`)."""

    dim: int = -1
    """The dimension whose whole extent one scale covers."""


@dataclasses.dataclass(frozen=True)
class PerAxis:
    """One scale per index of `axis` (torchao's `PerAxis(axis)`; `PerAxis(0)` = per output row)."""

    axis: int = 0
    """The axis that keeps one scale per index."""


@dataclasses.dataclass(frozen=True)
class PerGroup:
    """One scale per `group_size` consecutive elements of the last dimension (`PerGroup(32)`)."""

    group_size: int
    """Elements per group along the last dimension."""


@dataclasses.dataclass(frozen=True)
class PerToken:
    """One scale per token: every index of all but the last dimension (torchao's `PerToken()`)."""


Granularity: TypeAlias = PerTensor | PerRow | PerAxis | PerGroup | PerToken
_GRANULARITIES = {c.__name__: c for c in (PerTensor, PerRow, PerAxis, PerGroup, PerToken)}


def granularity(g: Any) -> Granularity:
    """Our granularity for one of ours or a torchao granularity object (matched by class name)."""
    if isinstance(g, tuple(_GRANULARITIES.values())):
        return g
    cls = _GRANULARITIES.get(type(g).__name__)
    if cls is None:
        raise ValueError(
            f"unsupported granularity {g!r}; expected one of {sorted(_GRANULARITIES)} "
            "(jaxopt_port.quantization's or torchao.quantization's)"
        )
    return cls(**{f.name: getattr(g, f.name) for f in dataclasses.fields(cls)})


def mapping_name(m: Any) -> MappingName:
    """`"SYMMETRIC"` or `"ASYMMETRIC"` for a string or torchao's `MappingType` member."""
    name = str(getattr(m, "name", m)).upper()
    if name not in ("SYMMETRIC", "ASYMMETRIC"):
        raise ValueError(f"unsupported mapping type {m!r}; expected 'SYMMETRIC' or 'ASYMMETRIC'")
    return name  # type: ignore[return-value]


def intx_bounds(dtype: Any) -> tuple[str, int, int]:
    """`(name, qmin, qmax)` of `"int1"` … `"int8"` (or `torch.int4`, `jnp.int4`, ...).

    torchao's `_DTYPE_TO_QVALUE_BOUNDS`: $[-2^{b-1}, 2^{b-1} - 1]$ for $b$ bits.
    """
    name = str(dtype).removeprefix("torch.")
    if not name.startswith("int"):
        try:
            name = jnp.dtype(dtype).name
        except TypeError:
            pass
    bits = {f"int{b}": b for b in range(1, 9)}.get(name)
    if bits is None:
        raise ValueError(f"unsupported dtype {dtype!r}; expected int1 ... int8")
    return name, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def get_block_size(shape: tuple[int, ...], g: Any) -> tuple[int, ...]:
    """torchao's `get_block_size`: the block that shares one scale, for a tensor of `shape`.

    Examples:
        >>> from jaxopt_port import quantization as q
        >>> q.get_block_size((4, 64), q.PerGroup(32)), q.get_block_size((4, 64), q.PerRow())
        ((1, 32), (1, 64))
    """
    g = granularity(g)
    shape = tuple(shape)
    if isinstance(g, PerTensor):
        return shape
    if isinstance(g, PerAxis):
        return tuple(1 if i == g.axis % len(shape) else d for i, d in enumerate(shape))
    if isinstance(g, PerToken):
        return (1,) * (len(shape) - 1) + shape[-1:]
    if isinstance(g, PerRow):
        dim = g.dim % len(shape)
        return tuple(d if i == dim else 1 for i, d in enumerate(shape))
    if shape[-1] % g.group_size:
        raise ValueError(f"the last dimension {shape[-1]} is not divisible by {g.group_size}")
    return (1,) * (len(shape) - 1) + (g.group_size,)


def _blocked(x: jax.Array, block_size: tuple[int, ...]) -> jax.Array:
    """`x` as `(n0, b0, n1, b1, ...)`: block index and position inside the block per dimension."""
    if len(block_size) != x.ndim:
        raise ValueError(f"Got input dim:{x.ndim}, block_size: {tuple(block_size)}")
    shape = []
    for d, b in zip(x.shape, block_size, strict=True):
        if b <= 0 or d % b:
            raise ValueError(f"shape {x.shape} is not divisible by block_size {tuple(block_size)}")
        shape += [d // b, b]
    return x.reshape(shape)


def _per_block(v: jax.Array, block_size: tuple[int, ...]) -> jax.Array:
    """Block parameters `(n0, n1, ...)` shaped to broadcast against `_blocked`'s result."""
    return v.reshape([s for n in v.shape for s in (n, 1)])


def _checked_params(x_shape, block_size, scale, zero_point):
    n = tuple(d // b for d, b in zip(x_shape, block_size, strict=True))
    scale = jnp.asarray(scale, _F32).reshape(n)
    zp = jnp.zeros(n, _F32) if zero_point is None else jnp.asarray(zero_point).reshape(n)
    return scale, zp.astype(_F32)


def choose_qparams_affine(
    x: ArrayLike,
    mapping_type: MappingName | Any,
    block_size: tuple[int, ...],
    quant_min: int,
    quant_max: int,
    eps: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """torchao's `choose_qparams_affine` (with `keepdim=True`): a scale and zero point per block.

    With $m^- = \\min(\\min_{block} x, 0)$ and $m^+ = \\max(\\max_{block} x, 0)$ in float32:

    - symmetric: $s = \\max\\big(\\max(-m^-, m^+) / ((q_{max} - q_{min}) / 2),\\ \\varepsilon\\big)$
      (divisor 127.5 for int8, 7.5 for int4), $z = 0$;
    - asymmetric: $s = \\max\\big((m^+ - m^-) / (q_{max} - q_{min}),\\ \\varepsilon\\big)$,
      $z = \\mathrm{clamp}(q_{min} - \\mathrm{round}(m^- / s), q_{min}, q_{max})$ (half to even).

    Divisions are correctly rounded, as torch's.

    Args:
        x: Float32 array.
        mapping_type: `"SYMMETRIC"` or `"ASYMMETRIC"` (or torchao's `MappingType`).
        block_size: Elements sharing one scale, per dimension (each divides the dimension).
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        eps: Smallest scale; `None` is float32's smallest normal number, torchao's default
            (its `Int8Tensor` passes float32's machine epsilon, `F32_EPS`).

    Returns:
        `(scale, zero_point)`: float32 and int32 arrays of shape `x.shape // block_size`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> q.choose_qparams_affine(jnp.array([[-1.0, 3.0]]), "SYMMETRIC", (1, 2), -128, 127)
        (Array([[0.02352941]], dtype=float32), Array([[0]], dtype=int32))
    """
    x = jnp.asarray(x, _F32)
    blocks = _blocked(x, tuple(block_size))
    axes = tuple(range(1, blocks.ndim, 2))
    mn, mx = jnp.min(blocks, axis=axes), jnp.max(blocks, axis=axes)
    symmetric = mapping_name(mapping_type) == "SYMMETRIC"
    qscheme = "per_tensor_symmetric" if symmetric else "per_tensor_affine"
    eps = F32_TINY if eps is None else eps
    # the observers' formula is torchao's (zero point 0 when symmetric: "qint8", no custom range)
    scale, zp = calculate_qparams(mn, mx, quant_min, quant_max, qscheme, "qint8", eps)
    return scale.reshape(mn.shape), zp.reshape(mn.shape)


def quantize_affine(
    x: ArrayLike,
    block_size: tuple[int, ...],
    scale: ArrayLike,
    zero_point: ArrayLike | None,
    quant_min: int,
    quant_max: int,
) -> jax.Array:
    """torchao's `quantize_affine`: $q = \\mathrm{clamp}(\\mathrm{round}(x \\cdot
    \\mathrm{fl}(1/s)) + z, q_{min}, q_{max})$ per block, as int8 (int32 for wider ranges).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> q.quantize_affine(jnp.array([[0.3, -2.0, 9.0]]), (1, 3), jnp.array([[0.5]]), None, -8, 7)
        Array([[ 1, -4,  7]], dtype=int8)
    """
    x = jnp.asarray(x, _F32)
    block_size = tuple(block_size)
    scale, zp = _checked_params(x.shape, block_size, scale, zero_point)
    r = _per_block(_exact.divide(_F32(1), scale), block_size)
    q = jnp.rint(_blocked(x, block_size) * r) + _per_block(zp, block_size)
    q = jnp.clip(q, quant_min, quant_max).reshape(x.shape)
    return q.astype(jnp.int8 if -128 <= quant_min and quant_max <= 127 else jnp.int32)


def dequantize_affine(
    q: ArrayLike, block_size: tuple[int, ...], scale: ArrayLike, zero_point: ArrayLike | None
) -> jax.Array:
    """torchao's `dequantize_affine`: $x = (\\mathrm{f32}(q) - z) \\cdot s$ per block, float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> q.dequantize_affine(jnp.array([[1, -4, 7]], jnp.int8), (1, 3), jnp.array([[0.5]]), None)
        Array([[ 0.5, -2. ,  3.5]], dtype=float32)
    """
    q = jnp.asarray(q)
    block_size = tuple(block_size)
    scale, zp = _checked_params(q.shape, block_size, scale, zero_point)
    v = _blocked(q.astype(_F32), block_size) - _per_block(zp, block_size)
    return (v * _per_block(scale, block_size)).reshape(q.shape)


def _fake_core(x, scale, zp, bounds, block_size):
    xb = _blocked(x, block_size)
    s, z = _per_block(scale, block_size), _per_block(zp, block_size)
    y, mask = _fake_quant_core(xb, s, z, *bounds)
    return y.reshape(x.shape), mask.reshape(x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fake_quantize(x, scale, zp, bounds, block_size):
    return _fake_core(x, scale, zp, bounds, block_size)[0]


def _fake_quantize_fwd(x, scale, zp, bounds, block_size):
    y, mask = _fake_core(x, scale, zp, bounds, block_size)
    return y, (mask, scale, zp, bounds)


def _fake_quantize_bwd(block_size, res, g):
    mask, scale, zp, bounds = res
    s = _per_block(scale, block_size)
    r = _per_block(_exact.divide(_F32(1), scale), block_size)
    gs = jnp.where(_blocked(mask, block_size), _blocked(g, block_size) * s, 0)
    gx = (gs * r).reshape(g.shape)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, (scale, zp, bounds))
    return (gx, *zeros)


_fake_quantize.defvjp(_fake_quantize_fwd, _fake_quantize_bwd)


def fake_quantize_affine(
    x: ArrayLike,
    block_size: tuple[int, ...],
    scale: ArrayLike,
    zero_point: ArrayLike | None,
    quant_min: int,
    quant_max: int,
) -> jax.Array:
    """torchao's `_fake_quantize_affine` (QAT): quantize and dequantize in float32, with its
    gradient.

    $$q = \\mathrm{round}(x r) + z,\\quad y = (\\mathrm{clamp}(q, q_{min}, q_{max}) - z)\\, s,
    \\quad \\bar x = [\\,q_{min} \\le q \\le q_{max}\\,]\\ \\mathrm{fl}(\\mathrm{fl}(\\bar y s)\\, r)$$

    with $r = \\mathrm{fl}(1/s)$. torchao's rounding is a straight-through `_Round`, so autograd
    differentiates the float ops around it: the gradient is $\\bar y \\cdot s \\cdot r$ rounded
    twice (not exactly $\\bar y$, unlike torch.ao's `fake_quantize_per_tensor_affine`), masked by
    the clamp. The scale and zero point get no gradient (torchao computes them from a detached
    input).

    Args:
        x: Float32 array.
        block_size: Elements sharing one scale, per dimension.
        scale: Float32 scales, one per block.
        zero_point: Integer zero points, one per block, or `None` for 0.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.

    Returns:
        The fake-quantized float32 array.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> f = lambda x: q.fake_quantize_affine(x, (1, 3), jnp.array([[0.5]]), None, -8, 7)
        >>> f(jnp.array([[0.3, -2.0, 9.0]]))
        Array([[ 0.5, -2. ,  3.5]], dtype=float32)
        >>> jax.grad(lambda x: f(x).sum())(jnp.array([[0.3, -2.0, 9.0]]))
        Array([[1., 1., 0.]], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    block_size = tuple(block_size)
    scale, zp = _checked_params(x.shape, block_size, scale, zero_point)
    return _fake_quantize(x, scale, zp, (_F32(quant_min), _F32(quant_max)), block_size)


def _rows(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1])


def _add_bias(y: jax.Array, bias: ArrayLike | None) -> jax.Array:
    return y if bias is None else y + jnp.asarray(bias, _F32)


def _float_linear(x: jax.Array, w: jax.Array, bias: ArrayLike | None) -> jax.Array:
    """`torch.nn.functional.linear` in float32: $x W^T + b$ ($W$ in torch's layout)."""
    y = lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)
    return _add_bias(y, bias)


def int8_quantize_weight(
    w: ArrayLike, granularity: Any = PerRow(), *, reduce_range: bool = False
) -> tuple[jax.Array, jax.Array]:
    """torchao's `Int8Tensor.from_hp` (symmetric): `(qdata, scale)` of a weight.

    $s = \\max(\\max_{block}|w| / 127.5,\\ \\varepsilon_{32})$, $q = \\mathrm{clamp}(\\mathrm{round}(w
    \\cdot \\mathrm{fl}(1/s)), -128, 127)$ (range $[-64, 63]$ with `reduce_range`).

    Args:
        w: Float32 weight `(out_features, in_features)`.
        granularity: `PerRow()` (one scale per output row, the default), `PerTensor()` or
            `PerGroup(n)` (weight-only).
        reduce_range: Halve the integer range, as torchao's `reduce_range=True`.

    Returns:
        `(qdata, scale)`: int8 `w.shape` and float32 `w.shape // block_size`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> qw, s = q.int8_quantize_weight(jnp.array([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]]))
        >>> qw
        Array([[  64, -127,   32],
               [ 127,    6,  -19]], dtype=int8)
        >>> s
        Array([[0.00784314],
               [0.01568628]], dtype=float32)
    """
    w = jnp.asarray(w, _F32)
    block = get_block_size(w.shape, granularity)
    qmin, qmax = (-64, 63) if reduce_range else (-128, 127)
    scale, _ = choose_qparams_affine(w, "SYMMETRIC", block, qmin, qmax, F32_EPS)
    return quantize_affine(w, block, scale, None, qmin, qmax), scale


def int8_dynamic_activation_int8_weight_linear(
    x: ArrayLike,
    qdata: ArrayLike,
    scale: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    act_granularity: Any = PerRow(),
    act_mapping_type: MappingName | Any = "SYMMETRIC",
    reduce_range: bool = False,
) -> jax.Array:
    """torchao's int8 dynamic linear (`Int8DynamicActivationInt8WeightConfig`), bit for bit.

    Each token (row of `x`) is quantized symmetrically at run time, $s_x = \\max(\\max|x| / 127.5,
    \\varepsilon_{32})$, $q_x = \\mathrm{clamp}(\\mathrm{round}(x\\,\\mathrm{fl}(1/s_x)))$; the
    product of the int8 values is exact in int32 (`lax.dot_general` with
    `preferred_element_type=int32`), and

    $$y = \\mathrm{fl}(\\mathrm{fl}(\\mathrm{f32}(q_x q_w^T)\\, s_x)\\, s_w) + b$$

    rounded after each operation as torch's CPU kernels do. With `act_mapping_type="ASYMMETRIC"`
    the zero point's term $\\mathrm{fl}(\\mathrm{fl}(z_x s_x) \\sum_k q_w)$ is subtracted before
    the weight scale.

    Args:
        x: Float32 input `(..., in_features)`.
        qdata: Int8 weight `(out_features, in_features)`.
        scale: Float32 weight scales, `(out_features, 1)` per row or `(1, 1)` per tensor.
        bias: Optional float32 bias `(out_features,)`.
        act_granularity: `PerRow()` (per token) or `PerTensor()`.
        act_mapping_type: `"SYMMETRIC"` (torchao's default) or `"ASYMMETRIC"`.
        reduce_range: Activation range $[-64, 63]$, as torchao's `reduce_range=True`.

    Returns:
        Float32 `(..., out_features)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> w = jnp.array([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]])  # x @ w.T = [[-1.75, 2.5]]
        >>> qw, s = q.int8_quantize_weight(w)
        >>> q.int8_dynamic_activation_int8_weight_linear(jnp.array([[1.0, 2.0, -1.0]]), qw, s)
        Array([[-1.73238  ,  2.4866745]], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    x2 = _rows(x)
    qmin, qmax = (-64, 63) if reduce_range else (-128, 127)
    block = get_block_size(x2.shape, act_granularity)
    s_x, z_x = choose_qparams_affine(x2, act_mapping_type, block, qmin, qmax, F32_EPS)
    q_x = quantize_affine(x2, block, s_x, z_x, qmin, qmax)
    qdata = jnp.asarray(qdata, jnp.int8)
    acc = lax.dot_general(q_x, qdata, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    s_x = s_x.reshape(-1, 1)
    y = _exact.no_contract(acc.astype(_F32) * s_x)
    if mapping_name(act_mapping_type) == "ASYMMETRIC":
        row_sums = jnp.sum(qdata, axis=-1, dtype=jnp.int32).astype(_F32)
        correction = _exact.no_contract(
            _exact.no_contract(z_x.reshape(-1, 1).astype(_F32) * s_x) * row_sums
        )
        y = y - correction
    y = _exact.no_contract(y * jnp.asarray(scale, _F32).reshape(-1))
    return _add_bias(y, bias).reshape(*x.shape[:-1], -1)


def int8_weight_only_linear(
    x: ArrayLike,
    qdata: ArrayLike,
    scale: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    granularity: Any = PerRow(),
) -> jax.Array:
    """torchao's int8 weight-only linear (`Int8WeightOnlyConfig`).

    Per row or per tensor, $y = \\mathrm{fl}((x\\, \\mathrm{f32}(q)^T) s) + b$; per group the
    weight is dequantized first, $y = x\\,((q\\, s)^T) + b$. The float product's summation order
    is the BLAS library's, so the output matches torchao to float32 rounding, not bitwise.

    Args:
        x: Float32 input `(..., in_features)`.
        qdata: Int8 weight `(out_features, in_features)`.
        scale: Float32 scales of `granularity`'s blocks.
        bias: Optional float32 bias.
        granularity: The weight's granularity: `PerRow()`, `PerTensor()` or `PerGroup(n)`.

    Returns:
        Float32 `(..., out_features)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> qw, s = q.int8_quantize_weight(jnp.array([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]]))
        >>> q.int8_weight_only_linear(jnp.array([[1.0, 2.0, -1.0]]), qw, s)
        Array([[-1.7411766,  2.4784315]], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    qdata = jnp.asarray(qdata, jnp.int8)
    block = get_block_size(qdata.shape, granularity)
    if block[-1] < qdata.shape[-1]:
        return _float_linear(x, dequantize_affine(qdata, block, scale, None), bias)
    y = _float_linear(x, qdata.astype(_F32), None)
    y = _exact.no_contract(y * jnp.asarray(scale, _F32).reshape(-1))
    return _add_bias(y, bias)


def intx_quantize_weight(
    w: ArrayLike,
    weight_dtype: Any = "int8",
    granularity: Any = PerAxis(0),
    mapping_type: MappingName | Any = "SYMMETRIC",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """torchao's `IntxUnpackedToInt8Tensor.from_hp`: `(qdata, scale, zero_point)` of a weight.

    `choose_qparams_affine` with float32's smallest normal number as the smallest scale
    (symmetric int4: $s = \\max|w| / 7.5$ per group), then `quantize_affine`; the values of any
    width from int1 to int8 are stored in int8.

    Args:
        w: Float32 weight `(out_features, in_features)`.
        weight_dtype: `"int1"` … `"int8"` (or `torch.int4`, `jnp.int4`, ...).
        granularity: `PerAxis(0)` (one scale per output row) or `PerGroup(n)`.
        mapping_type: `"SYMMETRIC"` or `"ASYMMETRIC"`.

    Returns:
        `(qdata, scale, zero_point)`: int8 `w.shape`, float32 and int8 `w.shape // block_size`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> w = jnp.array([[-3.5, -2.5, -1.5, -0.5], [0.5, 1.5, 2.5, 3.5]])
        >>> qw, s, z = q.intx_quantize_weight(w, "int4", q.PerGroup(2))
        >>> qw  # -7.5 rounds to -8 (half to even), +7.5 clips to 7
        Array([[-8, -5, -8, -2],
               [ 2,  7,  5,  7]], dtype=int8)
        >>> q.intx_linear(jnp.ones((1, 4)), qw, s, z)  # the float weight's row sums are -8, 8
        Array([[-8.066667 ,  7.3999996]], dtype=float32)
    """
    w = jnp.asarray(w, _F32)
    block = get_block_size(w.shape, granularity_for_intx(granularity))
    _, qmin, qmax = intx_bounds(weight_dtype)
    scale, zp = choose_qparams_affine(w, mapping_type, block, qmin, qmax)
    q = quantize_affine(w, block, scale, zp, qmin, qmax)
    return q, scale, zp.astype(jnp.int8)


def granularity_for_intx(g: Any) -> PerAxis | PerGroup:
    """`PerAxis(0)` or `PerGroup(n)`, the granularities torchao's intx configs accept."""
    g = granularity(g)
    if (isinstance(g, PerAxis) and g.axis == 0) or isinstance(g, PerGroup):
        return g
    raise ValueError(f"granularity must be PerAxis(0) or PerGroup, but got {g}")


def int8_asymmetric_per_token(x: ArrayLike, eps: float | None = None) -> jax.Array:
    """torchao's `_apply_int8_act_asym_per_token_quant_dequant`: each token quantized to int8
    with its own scale and zero point (asymmetric), then dequantized; float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> q.int8_asymmetric_per_token(jnp.array([[0.0, 0.1, 1.0]]))
        Array([[0.        , 0.09803922, 1.        ]], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    x2 = _rows(x)
    block = (1, x2.shape[1])
    s, z = choose_qparams_affine(x2, "ASYMMETRIC", block, -128, 127, eps)
    q = quantize_affine(x2, block, s, z, -128, 127)
    return dequantize_affine(q, block, s, z).reshape(x.shape)


def intx_linear(
    x: ArrayLike,
    qdata: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike | None,
    bias: ArrayLike | None = None,
    *,
    dynamic_activation: bool = False,
) -> jax.Array:
    """torchao's `IntxUnpackedToInt8Tensor` linear (`IntxWeightOnlyConfig`,
    `Int8DynamicActivationIntxWeightConfig`).

    The weight is dequantized, $W = (q - z)\\,s$ per block; with `dynamic_activation` the input
    is first quantized and dequantized per token (int8, asymmetric:
    [`int8_asymmetric_per_token`][jaxopt_port.quantization.int8_asymmetric_per_token]); then
    $y = x W^T + b$ in float32. Dequantized weights and activations are torchao's bit for bit;
    the float product's summation order is the BLAS library's.

    Args:
        x: Float32 input `(..., in_features)`.
        qdata: Int8 values `(out_features, in_features)`.
        scale: Float32 scales `(out_features, in_features // group_size)`.
        zero_point: Integer zero points of the same shape, or `None`.
        bias: Optional float32 bias.
        dynamic_activation: Quantize the input per token, as
            `Int8DynamicActivationIntxWeightConfig` does.

    Returns:
        Float32 `(..., out_features)`.
    """
    x = jnp.asarray(x, _F32)
    if dynamic_activation:
        x = int8_asymmetric_per_token(x)
    qdata = jnp.asarray(qdata, jnp.int8)
    scale = jnp.asarray(scale, _F32)
    scale = scale.reshape(qdata.shape[0], -1)
    block = (1, qdata.shape[1] // scale.shape[1])
    return _float_linear(x, dequantize_affine(qdata, block, scale, zero_point), bias)
