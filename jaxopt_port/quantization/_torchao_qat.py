"""torchao's QAT API on Flax NNX models: `QATConfig` and `IntxFakeQuantizeConfig`.

`quantize_(model, QATConfig(base_config, step="prepare"))` swaps each `nnx.Linear` for a
[`FakeQuantizedLinear`][jaxopt_port.quantization.FakeQuantizedLinear] that trains through
torchao's fake quantization; `QATConfig(base_config, step="convert")` then swaps those for the
base config's quantized layers, whose outputs equal the fake-quantized forward bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_port.quantization import _torchao_ops as ops
from jaxopt_port.quantization._torchao import (
    AffineQuantizedLinear,
    Int8DynamicActivationIntxWeightConfig,
    IntxWeightOnlyConfig,
    _linear_weight,
)
from jaxopt_port.quantization._torchao_ops import PerAxis, PerGroup, PerToken

_F32 = jnp.float32
_GRANULARITY_NAMES = {"per_token": PerToken(), "per_channel": PerAxis(0)}


class IntxFakeQuantizeConfig:
    """torchao's `IntxFakeQuantizeConfig`: how QAT fake-quantizes weights or activations.

    - per group / per channel (weights), symmetric only: $s = \\max(\\max_{group}|w| /
      ((q_{max} - q_{min}) / 2), \\varepsilon)$ (7.5 for int4), $z = 0$;
    - per token (activations), asymmetric only: $s = \\max((m^+ - m^-) / (q_{max} - q_{min}),
      \\varepsilon)$, $z = \\mathrm{clamp}(q_{min} - \\mathrm{round}(m^- / s))$ per row;

    then [`fake_quantize_affine`][jaxopt_port.quantization.fake_quantize_affine] (forward and
    gradient bit for bit with torchao). $\\varepsilon$ = `eps`, default float32's smallest normal.
    The scales are computed from the input without gradient, as torchao's.

    Args:
        dtype: `"int1"` … `"int8"` (or `torch.int4`, `jnp.int4`, ...).
        granularity: `"per_token"`, `"per_channel"` (= `PerAxis(0)`), `"per_group"` (with
            `group_size`), a granularity object, or `None` with `group_size`.
        mapping_type: `"SYMMETRIC"` or `"ASYMMETRIC"`; or give `is_symmetric`.
        eps: Smallest scale.
        group_size: Group size of per-group quantization.
        is_symmetric: Instead of `mapping_type` (default symmetric).

    Raises:
        ValueError: torchao's messages for conflicting or missing arguments.
        NotImplementedError: symmetric per-token, or asymmetric per-group (torchao's other
            formula for it is not implemented here).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> cfg = quantization.IntxFakeQuantizeConfig("int4", group_size=2)
        >>> cfg.fake_quantize(jnp.array([[0.1, -1.5, 0.7, 0.2]]))
        Array([[ 0.        , -1.6       ,  0.6533333 ,  0.18666667]], dtype=float32)
    """

    def __init__(
        self,
        dtype: Any,
        granularity: Any = None,
        mapping_type: Any = None,
        eps: float | None = None,
        *,
        group_size: int | None = None,
        is_symmetric: bool | None = None,
    ):
        self.dtype, self.quant_min, self.quant_max = ops.intx_bounds(dtype)
        if group_size is not None and granularity not in ("per_group", None):
            raise ValueError(f"`group_size` conflicts with granularity '{granularity}'")
        if granularity in ("per_group", None):
            if group_size is None:
                raise ValueError("Granularity was 'per_group' but no `group_size` was set")
            granularity = PerGroup(group_size)
        elif isinstance(granularity, str):
            if granularity not in _GRANULARITY_NAMES:
                raise ValueError(f"Unexpected granularity: '{granularity}'")
            granularity = _GRANULARITY_NAMES[granularity]
        self.granularity = ops.granularity(granularity)
        if not isinstance(self.granularity, PerToken | PerAxis | PerGroup):
            raise ValueError(f"Granularity '{self.granularity}' is not supported")
        if isinstance(self.granularity, PerAxis) and self.granularity.axis != 0:
            raise ValueError("Only axis=0 is supported for PerAxis granularity")
        if mapping_type is not None and is_symmetric is not None:
            raise ValueError("Cannot set both `mapping_type` and `is_symmetric`")
        if mapping_type is None:
            mapping_type = "ASYMMETRIC" if is_symmetric is False else "SYMMETRIC"
        self.mapping_type = ops.mapping_name(mapping_type)
        self.eps = eps

    @property
    def is_symmetric(self) -> bool:
        """Whether the mapping is symmetric."""
        return self.mapping_type == "SYMMETRIC"

    def _key(self) -> tuple:
        return (self.dtype, self.granularity, self.mapping_type, self.eps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntxFakeQuantizeConfig) and self._key() == other._key()

    def __hash__(self) -> int:  # equal configs share one compiled fake quantization
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"IntxFakeQuantizeConfig(dtype={self.dtype!r}, granularity={self.granularity}, "
            f"mapping_type={self.mapping_type!r}, eps={self.eps})"
        )

    def fake_quantize(self, x: jax.Array) -> jax.Array:
        """Fake-quantize `x` (weights `(out_features, in_features)` or activations
        `(..., features)`) as torchao's `IntxFakeQuantizer` does (compiled once per shape)."""
        return _fake_quantize(self, jnp.asarray(x, _F32))

    def _fake_quantize(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, _F32)
        detached = jax.lax.stop_gradient(x)
        if isinstance(self.granularity, PerToken):
            if self.is_symmetric:
                raise NotImplementedError("Symmetric per token is not supported yet")
            mapping = "ASYMMETRIC"
        elif not self.is_symmetric:
            raise NotImplementedError("asymmetric per-channel/per-group fake quantization")
        else:
            mapping = "SYMMETRIC"
        block = ops.get_block_size(x.shape, self.granularity)
        s, z = ops.choose_qparams_affine(
            detached, mapping, block, self.quant_min, self.quant_max, self.eps
        )
        return ops.fake_quantize_affine(x, block, s, z, self.quant_min, self.quant_max)


@functools.partial(jax.jit, static_argnums=0)
def _fake_quantize(config: IntxFakeQuantizeConfig, x: jax.Array) -> jax.Array:
    return config._fake_quantize(x)


def _infer_fake_quantize_configs(base_config: Any) -> tuple[Any, Any]:
    """torchao's `_infer_fake_quantize_configs` for the intx base configs."""
    if isinstance(base_config, Int8DynamicActivationIntxWeightConfig):
        if base_config.weight_mapping_type != "SYMMETRIC":
            raise ValueError("Only symmetric weight mapping is supported")
        act = IntxFakeQuantizeConfig("int8", "per_token", is_symmetric=False)
        w_cfg = IntxFakeQuantizeConfig(
            base_config.weight_dtype,
            base_config.weight_granularity,
            base_config.weight_mapping_type,
        )
    elif isinstance(base_config, IntxWeightOnlyConfig):
        if base_config.mapping_type != "SYMMETRIC":
            raise ValueError("Only symmetric mapping is supported")
        act = None
        w_cfg = IntxFakeQuantizeConfig(
            base_config.weight_dtype, base_config.granularity, base_config.mapping_type
        )
    else:
        raise ValueError(f"Unsupported base config {type(base_config).__name__} for QAT")
    if w_cfg.dtype == "int1":
        raise ValueError("Only int2+ is supported")
    return act, w_cfg


class QATConfig:
    """torchao's `QATConfig`: quantization-aware training with `quantize_`, in two steps.

    `step="prepare"` swaps each `nnx.Linear` for a
    [`FakeQuantizedLinear`][jaxopt_port.quantization.FakeQuantizedLinear] whose fake quantization
    is `base_config`'s (`Int8DynamicActivationIntxWeightConfig`: int8 per-token asymmetric
    activations and symmetric intx weights; `IntxWeightOnlyConfig`: weights only) or the given
    `activation_config` / `weight_config`. `step="convert"` swaps each `FakeQuantizedLinear` back
    for an `nnx.Linear` and applies `base_config` to it (no base config: the plain `nnx.Linear`).
    The converted layer's output equals the fake-quantized layer's bit for bit, as in torchao.

    Args:
        base_config: The post-training config to simulate and convert to.
        activation_config: An `IntxFakeQuantizeConfig` for the inputs (without `base_config`).
        weight_config: An `IntxFakeQuantizeConfig` for the weights (without `base_config`).
        step: `"prepare"` or `"convert"`.

    Raises:
        ValueError: torchao's messages for an unknown step or conflicting configs.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization as q
        >>> base = q.Int8DynamicActivationIntxWeightConfig(weight_dtype="int4")
        >>> model = nnx.Sequential(nnx.Linear(64, 4, rngs=nnx.Rngs(0)))
        >>> _ = q.quantize_(model, q.QATConfig(base, step="prepare"))
        >>> x = jnp.linspace(-1.0, 1.0, 128).reshape(2, 64)
        >>> y_fake = model(x)
        >>> _ = q.quantize_(model, q.QATConfig(base, step="convert"))
        >>> bool((model(x) == y_fake).all())
        True
    """

    def __init__(
        self,
        base_config: Any = None,
        activation_config: IntxFakeQuantizeConfig | None = None,
        weight_config: IntxFakeQuantizeConfig | None = None,
        *,
        step: str = "prepare",
    ):
        self.base_config = base_config
        self.activation_config = activation_config
        self.weight_config = weight_config
        self.step = str(getattr(step, "value", step)).lower()
        if self.step not in ("prepare", "convert"):
            raise ValueError("`step` must be one of ['prepare', 'convert']")
        if base_config is not None and activation_config is not None:
            raise ValueError("Cannot specify both `base_config` and `activation_config`")
        if base_config is not None and weight_config is not None:
            raise ValueError("Cannot specify both `base_config` and `weight_config`")
        if self.step == "prepare" and not any((base_config, activation_config, weight_config)):
            raise ValueError(
                "Must specify `base_config`, `activation_config`, or `weight_config` in the "
                "prepare step"
            )
        if self.step == "convert" and (activation_config or weight_config):
            raise ValueError(
                "Cannot specify `weight_config` or `activation_config` in the convert step"
            )
        if isinstance(base_config, IntxFakeQuantizeConfig):
            raise ValueError(
                "IntxFakeQuantizeConfig was passed as `base_config`; pass it as "
                "`activation_config=` or `weight_config=`"
            )


class FakeQuantizedLinear(nnx.Module):
    """torchao's `FakeQuantizedLinear`: a linear layer that trains through fake quantization.

    $y = \\mathrm{fq}_a(x)\\, \\mathrm{fq}_w(W)^T + b$ with the configs'
    [`fake_quantize`][jaxopt_port.quantization.IntxFakeQuantizeConfig.fake_quantize] ($W$ the
    kernel transposed to torch's layout). `kernel` `(in_features, out_features)` and `bias` are
    `nnx.Param`s, as in `nnx.Linear`.

    Args:
        kernel: Float kernel `(in_features, out_features)` (NNX's layout).
        bias: Float bias or `None`.
        activation_config: Fake quantization of the inputs, or `None`.
        weight_config: Fake quantization of the weight, or `None`.
    """

    def __init__(
        self,
        kernel: jax.typing.ArrayLike,
        bias: jax.typing.ArrayLike | None,
        activation_config: IntxFakeQuantizeConfig | None = None,
        weight_config: IntxFakeQuantizeConfig | None = None,
    ):
        self.kernel = nnx.Param(jnp.asarray(kernel))
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias))
        self.activation_config = activation_config
        self.weight_config = weight_config
        self.in_features, self.out_features = self.kernel[...].shape

    def __call__(self, x: jax.Array) -> jax.Array:
        """The fake-quantized linear of `x` `(..., in_features)`."""
        x = jnp.asarray(x, _F32)
        if self.activation_config is not None:
            x = self.activation_config.fake_quantize(x)
        w = jnp.asarray(self.kernel[...], _F32).T
        if self.weight_config is not None:
            w = self.weight_config.fake_quantize(w)
        return ops._float_linear(x, w, None if self.bias is None else self.bias[...])

    def to_linear(self) -> nnx.Linear:
        """The plain `nnx.Linear` with this layer's kernel and bias."""
        linear = nnx.eval_shape(  # shapes only: no random initialization to compile and run
            lambda: nnx.Linear(
                self.in_features,
                self.out_features,
                use_bias=self.bias is not None,
                rngs=nnx.Rngs(0),
            )
        )
        linear.kernel.set_value(self.kernel[...])
        if self.bias is not None:
            linear.bias.set_value(self.bias[...])
        return linear


def qat_swap(module: Any, config: QATConfig) -> Any:
    """The layer `config`'s step makes of `module` (`module` itself when it does not apply)."""
    if config.step == "prepare":
        if not isinstance(module, nnx.Linear):
            return module
        if config.base_config is not None:
            act, w_cfg = _infer_fake_quantize_configs(config.base_config)
        else:
            act, w_cfg = config.activation_config, config.weight_config
        bias = None if module.bias is None else module.bias[...]
        return FakeQuantizedLinear(module.kernel[...], bias, act, w_cfg)
    if not isinstance(module, FakeQuantizedLinear):
        return module
    if config.base_config is None:
        return module.to_linear()
    return AffineQuantizedLinear.from_weight(*_linear_weight(module), config.base_config)
