"""torchao's `quantize_` and its int8 / intx inference configs, on Flax NNX models.

A [`AffineQuantizedLinear`][jaxopt_port.quantization.AffineQuantizedLinear] holds torchao's quantized weight
(values, scales, zero points in torch's `(out_features, in_features)` layout), as torchao's
`quantize_` gives each `nn.Linear` a quantized tensor subclass as its weight. The configs carry
torchao's class names, keyword names and defaults; granularities and mapping types are ours
(`PerRow()`, `"SYMMETRIC"`) or torchao's objects.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_port.quantization import _torchao_ops as ops
from jaxopt_port.quantization._ptq import QuantizedVariable
from jaxopt_port.quantization._torchao_ops import (
    MappingName,
    PerAxis,
    PerGroup,
    PerRow,
    PerTensor,
    get_block_size,
    granularity,
    intx_bounds,
    mapping_name,
)

_F32 = jnp.float32
# torchao's defaults (frozen, so one shared instance is safe)
_PER_ROW, _PER_AXIS_0, _PER_GROUP_32 = PerRow(), PerAxis(0), PerGroup(32)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclasses.dataclass(frozen=True)
class Int8DynamicActivationInt8WeightConfig:
    """torchao's `Int8DynamicActivationInt8WeightConfig`: int8 weights (symmetric, per row) and
    int8 activations quantized per token at run time; an exact int32 product.

    $$s_w = \\max(\\max_k |W_{nk}| / 127.5, \\varepsilon_{32}),\\quad
    q_w = \\mathrm{clamp}(\\mathrm{round}(W \\cdot \\mathrm{fl}(1/s_w)), -128, 127)$$

    and the same for each token of the input at run time; then
    $y = \\mathrm{fl}(\\mathrm{fl}(\\mathrm{f32}(q_x q_w^T)\\, s_x)\\, s_w) + b$ with every
    operation rounded as torch's CPU kernels round it: outputs equal torchao's bit for bit, eagerly
    and under `jax.jit` ($\\varepsilon_{32}$ is float32's machine epsilon; `round` is half to even).

    Examples:
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
        >>> model = quantization.quantize_(model, quantization.Int8DynamicActivationInt8WeightConfig())
        >>> type(model.layers[0]).__name__, model.layers[0].qdata[...].dtype
        ('AffineQuantizedLinear', dtype('int8'))
    """

    act_mapping_type: MappingName | Any = "SYMMETRIC"
    """`"SYMMETRIC"` (default) or `"ASYMMETRIC"` activation quantization."""
    granularity: Any = _PER_ROW
    """`PerRow()` or `PerTensor()` for both sides, or a pair `(activation, weight)`."""
    reduce_range: bool = False
    """Use the ranges $[-64, 63]$ (for CPUs without VNNI), as torchao's option."""

    def __post_init__(self):
        g = self.granularity
        pair = tuple(g) if isinstance(g, list | tuple) else (g, g)
        if len(pair) != 2:
            raise ValueError(f"Granularity list must have exactly 2 elements, got {len(pair)}: {g}")
        pair = tuple(granularity(p) for p in pair)
        for p in pair:
            if not isinstance(p, PerRow | PerTensor):
                raise ValueError(
                    f"Unsupported granularity type: {type(p).__name__}. "
                    "Only PerTensor and PerRow are supported."
                )
        if isinstance(pair[0], PerRow) and pair[0].dim != -1:
            raise ValueError(
                "Only PerRow(dim=-1) is supported for activation quantization, "
                f"got PerRow(dim={pair[0].dim})."
            )
        _set(self, "granularity", pair)
        _set(self, "act_mapping_type", mapping_name(self.act_mapping_type))

    def _quantize(self, w):
        q, s = ops.int8_quantize_weight(w, self.granularity[1], reduce_range=self.reduce_range)
        return q, s, None

    def _apply(self, x, q, s, z, b):
        return ops.int8_dynamic_activation_int8_weight_linear(
            x,
            q,
            s,
            b,
            act_granularity=self.granularity[0],
            act_mapping_type=self.act_mapping_type,
            reduce_range=self.reduce_range,
        )


@dataclasses.dataclass(frozen=True)
class Int8WeightOnlyConfig:
    """torchao's `Int8WeightOnlyConfig`: int8 symmetric weights, float activations.

    Weights and scales as in
    [`Int8DynamicActivationInt8WeightConfig`][jaxopt_port.quantization.Int8DynamicActivationInt8WeightConfig]
    (bit for bit with torchao); the output $\\mathrm{fl}(x\\,\\mathrm{f32}(q)^T) s + b$ (per group:
    $x\\,((q\\,s)^T) + b$) goes through a float matrix product, so it equals torchao's to float32
    rounding (measured ≤ 6e-7 of the largest output), not bitwise.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> layer = nnx.Linear(64, 2, rngs=nnx.Rngs(0))
        >>> q = quantization.quantize_(layer, quantization.Int8WeightOnlyConfig())
        >>> bool(jnp.abs(q(jnp.ones((1, 64))) - layer(jnp.ones((1, 64)))).max() < 0.05)
        True
    """

    granularity: Any = _PER_ROW
    """`PerRow()` (default), `PerTensor()` or `PerGroup(group_size)`."""

    def __post_init__(self):
        g = granularity(self.granularity)
        if not isinstance(g, PerTensor | PerRow | PerGroup):
            raise ValueError(f"granularity must be PerTensor, PerRow, or PerGroup, but got {g}")
        _set(self, "granularity", g)

    def _quantize(self, w):
        q, s = ops.int8_quantize_weight(w, self.granularity)
        return q, s, None

    def _apply(self, x, q, s, z, b):
        return ops.int8_weight_only_linear(x, q, s, b, granularity=self.granularity)


def _intx_fields(obj, dtype_field: str, gran_field: str, map_field: str) -> None:
    name, _, _ = intx_bounds(getattr(obj, dtype_field))
    _set(obj, dtype_field, name)
    _set(obj, gran_field, ops.granularity_for_intx(getattr(obj, gran_field)))
    _set(obj, map_field, mapping_name(getattr(obj, map_field)))


@dataclasses.dataclass(frozen=True)
class IntxWeightOnlyConfig:
    """torchao's `IntxWeightOnlyConfig`: weights of 1 to 8 bits, per group or per output row.

    $s$ and $z$ from `choose_qparams_affine` (symmetric int4 per group of 32:
    $s = \\max_{group}|W| / 7.5$, $q = \\mathrm{clamp}(\\mathrm{round}(W\\,\\mathrm{fl}(1/s)), -8, 7)$),
    values stored in int8; the layer computes $x\\,((q - z)\\,s)^T + b$ in float32. Values,
    scales, zero points and the dequantized weight are torchao's bit for bit; the output is within
    the float product's rounding (measured ≤ 5e-7 of the largest output).

    Examples:
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> cfg = quantization.IntxWeightOnlyConfig("int4", quantization.PerGroup(32))
        >>> layer = quantization.quantize_(nnx.Linear(64, 3, rngs=nnx.Rngs(0)), cfg)
        >>> layer.scale[...].shape, int(layer.qdata[...].min()) >= -8
        ((3, 2), True)
    """

    weight_dtype: Any = "int8"
    """`"int1"` … `"int8"` (or `torch.int4`, `jnp.int4`, ...)."""
    granularity: Any = _PER_AXIS_0
    """`PerAxis(0)` (one scale per output row) or `PerGroup(group_size)`."""
    mapping_type: MappingName | Any = "SYMMETRIC"
    """`"SYMMETRIC"` or `"ASYMMETRIC"`."""

    def __post_init__(self):
        _intx_fields(self, "weight_dtype", "granularity", "mapping_type")

    def _quantize(self, w):
        return ops.intx_quantize_weight(w, self.weight_dtype, self.granularity, self.mapping_type)

    def _apply(self, x, q, s, z, b):
        return ops.intx_linear(x, q, s, z, b)


@dataclasses.dataclass(frozen=True)
class Int8DynamicActivationIntxWeightConfig:
    """torchao's `Int8DynamicActivationIntxWeightConfig`: intx weights as
    [`IntxWeightOnlyConfig`][jaxopt_port.quantization.IntxWeightOnlyConfig] (default int8 per group
    of 32) and activations quantized and dequantized per token, int8 asymmetric, before a float32
    product. Quantized weights and activations are torchao's bit for bit; the output is within the
    float product's rounding (measured ≤ 7e-7 of the largest output).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> cfg = quantization.Int8DynamicActivationIntxWeightConfig(weight_dtype="int4")
        >>> layer = quantization.quantize_(nnx.Linear(64, 3, rngs=nnx.Rngs(0)), cfg)
        >>> layer(jnp.ones((2, 64))).shape
        (2, 3)
    """

    weight_dtype: Any = "int8"
    """`"int1"` … `"int8"` (or `torch.int4`, `jnp.int4`, ...)."""
    weight_granularity: Any = _PER_GROUP_32
    """`PerGroup(group_size)` (default 32) or `PerAxis(0)`."""
    weight_mapping_type: MappingName | Any = "SYMMETRIC"
    """`"SYMMETRIC"` or `"ASYMMETRIC"` weights."""
    act_mapping_type: MappingName | Any = "ASYMMETRIC"
    """Only `"ASYMMETRIC"` (torchao supports no other)."""

    def __post_init__(self):
        _intx_fields(self, "weight_dtype", "weight_granularity", "weight_mapping_type")
        if mapping_name(self.act_mapping_type) != "ASYMMETRIC":
            raise ValueError("act_mapping_type must be 'ASYMMETRIC' (torchao supports no other)")
        _set(self, "act_mapping_type", "ASYMMETRIC")

    def _quantize(self, w):
        return ops.intx_quantize_weight(
            w, self.weight_dtype, self.weight_granularity, self.weight_mapping_type
        )

    def _apply(self, x, q, s, z, b):
        return ops.intx_linear(x, q, s, z, b, dynamic_activation=True)


PTQ_CONFIGS = (
    Int8DynamicActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    IntxWeightOnlyConfig,
    Int8DynamicActivationIntxWeightConfig,
)


_TORCHAO_ONLY_DEFAULTS = {
    "weight_only_decode": False,
    "version": 2,
    "group_size": None,
    "scale_dtype": None,
    "weight_scale_dtype": None,
    "intx_packing_format": "unpacked_to_int8",
    "intx_choose_qparams_algorithm": "affine",
}
"""torchao config fields we have no option for, with the only value we implement."""


def from_torchao_config(config: Any) -> Any:
    """Ours for one of torchao's four config objects of the same class name, or `config` itself
    when it is not torchao's.

    Raises:
        ValueError: a torchao option set to a value not implemented here (a packed format,
            another qparams algorithm, a scale dtype, `weight_only_decode`).
    """
    if not type(config).__module__.startswith("torchao."):
        return config
    ours = {c.__name__: c for c in PTQ_CONFIGS}.get(type(config).__name__)
    if ours is None:
        return config
    for name, only in _TORCHAO_ONLY_DEFAULTS.items():
        value = getattr(config, name, only)
        if str(getattr(value, "value", value)) != str(only):  # enums compare by their value
            raise ValueError(
                f"{type(config).__name__}.{name}={value!r} is not supported; only {only!r}"
            )
    return ours(**{f.name: getattr(config, f.name) for f in dataclasses.fields(ours)})


@functools.partial(jax.jit, static_argnums=0)
def _quantize_weight(config: Any, w: jax.Array) -> tuple:
    """`config`'s weight quantization, compiled once per config and shape."""
    return config._quantize(w)


@functools.partial(jax.jit, static_argnums=0)
def _apply(config: Any, x, q, s, z, b) -> jax.Array:
    """`config`'s quantized linear, compiled once per config and shapes."""
    return config._apply(x, q, s, z, b)


class AffineQuantizedLinear(nnx.Module):
    """A linear layer with a torchao-quantized weight; what `quantize_` puts in place of
    `nnx.Linear`.

    Args:
        qdata: Integer values `(out_features, in_features)` (torch's layout), int8.
        scale: Float32 scales, one per block.
        zero_point: Zero points, one per block, or `None` (symmetric int8 configs).
        bias: Float bias `(out_features,)` or `None`.
        config: The config that produced the weight; it selects the kernel.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization as q
        >>> w = jnp.array([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]])
        >>> layer = q.AffineQuantizedLinear.from_weight(w, None, q.Int8DynamicActivationInt8WeightConfig())
        >>> layer(jnp.array([[1.0, 2.0, -1.0]]))
        Array([[-1.73238  ,  2.4866745]], dtype=float32)
    """

    def __init__(
        self,
        qdata: jax.typing.ArrayLike,
        scale: jax.typing.ArrayLike,
        zero_point: jax.typing.ArrayLike | None,
        bias: jax.typing.ArrayLike | None,
        config: Any,
    ):
        self.qdata = QuantizedVariable(jnp.asarray(qdata, jnp.int8))
        self.scale = QuantizedVariable(jnp.asarray(scale, _F32))
        self.zero_point = None if zero_point is None else QuantizedVariable(jnp.asarray(zero_point))
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias))
        self.config = config
        self.out_features, self.in_features = self.qdata[...].shape

    @classmethod
    def from_weight(cls, weight, bias, config: Any) -> AffineQuantizedLinear:
        """Quantize a float weight `(out_features, in_features)` with `config`."""
        return cls(*_quantize_weight(config, jnp.asarray(weight, _F32)), bias, config)

    def __call__(self, x: jax.Array) -> jax.Array:
        """$y = $ the config's quantized linear of `x` `(..., in_features)`."""
        z = None if self.zero_point is None else self.zero_point[...]
        b = None if self.bias is None else self.bias[...]
        return _apply(self.config, x, self.qdata[...], self.scale[...], z, b)

    def dequantize(self) -> jax.Array:
        """The float32 weight the quantized values stand for, torchao's `weight.dequantize()`."""
        q, s = self.qdata[...], self.scale[...]
        block = (q.shape[0] // s.shape[0], q.shape[1] // s.shape[1])
        z = None if self.zero_point is None else self.zero_point[...]
        return ops.dequantize_affine(q, block, s, z)


def _linear_weight(module: Any) -> tuple[jax.Array, jax.Array | None]:
    w = jnp.asarray(module.kernel[...], _F32).T
    return w, (None if module.bias is None else module.bias[...])


def _torchao_granularity(g: Any) -> Any:
    from torchao.quantization import granularity as tg

    return getattr(tg, type(g).__name__)(**dataclasses.asdict(g))


def quantized_linear_to_torch(layer: AffineQuantizedLinear) -> Any:
    """A torch `nn.Linear` whose weight is torchao's quantized tensor for `layer`.

    The weight is torchao's `Int8Tensor` (int8 configs, with the activation quantization of the
    dynamic config) or `IntxUnpackedToInt8Tensor` (intx configs), holding `layer`'s values,
    scales and zero points: the torch layer computes what torchao's `quantize_` would have made.

    Args:
        layer: A [`AffineQuantizedLinear`][jaxopt_port.quantization.AffineQuantizedLinear].

    Returns:
        A `torch.nn.Linear` (float32 bias) with a torchao tensor-subclass weight.
    """
    import torch
    from torchao.quantization import MappingType
    from torchao.quantization.quantize_.workflows import (
        Int8Tensor,
        IntxUnpackedToInt8Tensor,
    )
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import (
        QuantizeTensorToInt8Kwargs,
    )

    cfg = layer.config
    q = torch.from_numpy(np.array(layer.qdata[...]))
    s = torch.from_numpy(np.array(layer.scale[...]))
    if isinstance(cfg, IntxWeightOnlyConfig | Int8DynamicActivationIntxWeightConfig):
        g = cfg.granularity if isinstance(cfg, IntxWeightOnlyConfig) else cfg.weight_granularity
        dtype = getattr(torch, cfg.weight_dtype)
        z = torch.from_numpy(np.array(layer.zero_point[...]).astype(np.int8))
        act = None
        if isinstance(cfg, Int8DynamicActivationIntxWeightConfig):
            act = "int8_asym_per_token"
        weight = IntxUnpackedToInt8Tensor(
            q, s, z, dtype, get_block_size(q.shape, g), torch.float32, act
        )
    else:
        act_kwargs, reduce_range = None, False
        g = cfg.granularity
        if isinstance(cfg, Int8DynamicActivationInt8WeightConfig):
            act_g, g = cfg.granularity
            reduce_range = cfg.reduce_range
            act_kwargs = QuantizeTensorToInt8Kwargs(
                granularity=_torchao_granularity(act_g),
                mapping_type=getattr(MappingType, cfg.act_mapping_type),
                reduce_range=reduce_range,
            )
        weight = Int8Tensor(
            q,
            s,
            list(get_block_size(q.shape, g)),
            torch.float32,
            act_quant_kwargs=act_kwargs,
            reduce_range=reduce_range,
        )
    linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        with torch.no_grad():
            linear.bias.copy_(torch.from_numpy(np.array(layer.bias[...], np.float32)))
    return linear


def _granularity_of_block(shape, block) -> Any:
    if tuple(block) == tuple(shape):
        return PerTensor()
    if block[-1] == shape[-1]:
        return PerRow()
    return PerGroup(block[-1])


def quantized_linear_from_torch(linear: Any) -> AffineQuantizedLinear:
    """A [`AffineQuantizedLinear`][jaxopt_port.quantization.AffineQuantizedLinear] from a torch `nn.Linear`
    that torchao's `quantize_` quantized (its weight an `Int8Tensor` or
    `IntxUnpackedToInt8Tensor`): the same values, scales, zero points and kernel.

    The weight's mapping type is not stored in torchao's tensor; the config records the default
    (`"SYMMETRIC"`), which changes nothing in the layer's output.

    Args:
        linear: The quantized torch layer.

    Returns:
        The NNX layer.

    Raises:
        TypeError: the weight is not one of those torchao tensors.
    """
    w = linear.weight
    kind = type(w).__name__
    if kind not in ("Int8Tensor", "IntxUnpackedToInt8Tensor"):
        raise TypeError(
            "expected a torch Linear quantized by torchao's quantize_ (weight an Int8Tensor or "
            f"IntxUnpackedToInt8Tensor), got a weight of type {kind}"
        )
    bias = None if linear.bias is None else linear.bias.detach().cpu().numpy()
    q = w.qdata.cpu().numpy()
    s = w.scale.detach().cpu().numpy()
    if kind == "Int8Tensor":
        g = _granularity_of_block(q.shape, w.block_size)
        act = w.act_quant_kwargs
        if act is None:
            return AffineQuantizedLinear(q, s, None, bias, Int8WeightOnlyConfig(g))
        cfg = Int8DynamicActivationInt8WeightConfig(
            act.mapping_type.name, [act.granularity, g], bool(act.reduce_range)
        )
        return AffineQuantizedLinear(q, s, None, bias, cfg)
    g = _granularity_of_block(q.shape, w.block_size)
    g = PerAxis(0) if isinstance(g, PerRow) else g
    dtype = str(w.target_dtype)
    z = w.zero_point.cpu().numpy()
    if w.activation_quantization is None:
        return AffineQuantizedLinear(q, s, z, bias, IntxWeightOnlyConfig(dtype, g))
    return AffineQuantizedLinear(q, s, z, bias, Int8DynamicActivationIntxWeightConfig(dtype, g))
