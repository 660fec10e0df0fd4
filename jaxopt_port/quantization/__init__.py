"""torch.ao.quantization's numerics and observers in JAX, bit for bit with torch's x86 kernels.

- Numerics: [`quantize_per_tensor`][jaxopt_port.quantization.quantize_per_tensor],
  [`quantize_per_channel`][jaxopt_port.quantization.quantize_per_channel],
  [`dequantize`][jaxopt_port.quantization.dequantize], the fake-quantize ops (straight-through
  gradients) and their learnable variants.
- Quantization parameters: the observers' formula
  ([`calculate_qparams`][jaxopt_port.quantization.calculate_qparams]) and fbgemm's
  ([`choose_quantization_params`][jaxopt_port.quantization.choose_quantization_params]).
- Observers with torch's class names and keyword arguments, as functional
  `init() / update(state, x) / calculate_qparams(state)` objects that run under `jax.jit`.
- torchao's `quantize_` on Flax NNX models with its int8 / intx inference configs
  ([`Int8DynamicActivationInt8WeightConfig`][jaxopt_port.quantization.Int8DynamicActivationInt8WeightConfig]
  bit for bit), the same kernels on arrays, and its QAT configs
  ([`QATConfig`][jaxopt_port.quantization.QATConfig]).
- `FakeQuantize` / `FusedMovingAvgObsFakeQuantize` (functional), `QConfig` and torch's defaults,
  and QAT's weight side as one Optax transformation
  ([`fake_quantize_weights`][jaxopt_port.quantization.fake_quantize_weights]).
- torch's eager QAT model flow on Flax NNX models:
  [`fuse_modules`][jaxopt_port.quantization.fuse_modules] /
  [`fuse_modules_qat`][jaxopt_port.quantization.fuse_modules_qat],
  [`prepare_qat`][jaxopt_port.quantization.prepare_qat] (QAT layers with fake-quantized weights
  and activations), the observer / fake-quant / BatchNorm toggles, then `convert`.
- Post-training int8 on Flax NNX models:
  [`quantize_dynamic`][jaxopt_port.quantization.quantize_dynamic] and
  [`prepare`][jaxopt_port.quantization.prepare] → calibrate →
  [`convert`][jaxopt_port.quantization.convert], equal to torch's converted models bit for bit;
  the int8 kernels on plain arrays ([`linear_dynamic`][jaxopt_port.quantization.linear_dynamic],
  [`linear`][jaxopt_port.quantization.linear]) and torch `state_dict` export/import.

Dtypes and qschemes are torch's names as strings (`"quint8"`, `"per_tensor_affine"`, ...); torch
objects (`torch.quint8`) are accepted too.
"""

from jaxopt_port.quantization._fake_quantize import (
    FakeQuantize,
    FakeQuantizeState,
    FusedMovingAvgObsFakeQuantize,
)
from jaxopt_port.quantization._fuse import (
    ConvBn2d,
    ConvBnReLU2d,
    ConvReLU2d,
    Identity,
    LinearReLU,
    fold_bn_weights,
    fuse_modules,
    fuse_modules_qat,
)
from jaxopt_port.quantization._histogram import HistogramObserver, HistogramState
from jaxopt_port.quantization._int8 import (
    QuantizedArray,
    add,
    conv2d,
    linear,
    linear_dynamic,
    quantize_weight,
    relu,
)
from jaxopt_port.quantization._learnable import (
    LearnableFakeQuantize,
    LearnableFakeQuantizeState,
    fake_quantize_learnable_per_channel_affine,
    fake_quantize_learnable_per_tensor_affine,
)
from jaxopt_port.quantization._numerics import (
    dequantize,
    fake_quantize_per_channel_affine,
    fake_quantize_per_tensor_affine,
    quantize_per_channel,
    quantize_per_tensor,
)
from jaxopt_port.quantization._observers import (
    FixedQParamsObserver,
    FixedQParamsState,
    MinMaxObserver,
    MinMaxState,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from jaxopt_port.quantization._ptq import (
    Add,
    DeQuantize,
    DeQuantStub,
    DynamicQuantizedLinear,
    Flatten,
    Observed,
    ObserverState,
    Quantizable,
    Quantize,
    QuantizedAdd,
    QuantizedConv,
    QuantizedLinear,
    QuantizedVariable,
    QuantStub,
    ReLU,
    convert,
    default_dynamic_qconfig,
    prepare,
    quantize_dynamic,
)
from jaxopt_port.quantization._ptq_torch import (
    quantized_weights_from_torch,
    quantized_weights_to_torch,
)
from jaxopt_port.quantization._qat import (
    FakeQuantizeWeightsState,
    fake_quantize_weights,
    fake_quantized_params,
)
from jaxopt_port.quantization._qat_modules import (
    QATConv2d,
    QATConvBn2d,
    QATLinear,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
    freeze_bn_stats,
    prepare_qat,
    update_bn_stats,
)
from jaxopt_port.quantization._qconfig import (
    QConfig,
    default_fake_quant,
    default_fused_per_channel_wt_fake_quant,
    default_observer,
    default_per_channel_weight_fake_quant,
    default_per_channel_weight_observer,
    default_qat_qconfig,
    default_qconfig,
    default_weight_fake_quant,
    default_weight_observer,
    get_default_qat_qconfig,
    get_default_qconfig,
)
from jaxopt_port.quantization._qparams import calculate_qparams, choose_quantization_params
from jaxopt_port.quantization._ranges import calculate_qmin_qmax
from jaxopt_port.quantization._rnn import DynamicQuantizedRNN
from jaxopt_port.quantization._torchao import (
    AffineQuantizedLinear,
    Int8DynamicActivationInt8WeightConfig,
    Int8DynamicActivationIntxWeightConfig,
    Int8WeightOnlyConfig,
    IntxWeightOnlyConfig,
    quantized_linear_from_torch,
    quantized_linear_to_torch,
)
from jaxopt_port.quantization._torchao_ops import (
    PerAxis,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    choose_qparams_affine,
    dequantize_affine,
    fake_quantize_affine,
    get_block_size,
    int8_asymmetric_per_token,
    int8_dynamic_activation_int8_weight_linear,
    int8_quantize_weight,
    int8_weight_only_linear,
    intx_linear,
    intx_quantize_weight,
    quantize_affine,
)
from jaxopt_port.quantization._torchao_qat import (
    FakeQuantizedLinear,
    IntxFakeQuantizeConfig,
    QATConfig,
)
from jaxopt_port.quantization._torchao_quantize import quantize_

__all__ = [
    "Add",
    "AffineQuantizedLinear",
    "ConvBn2d",
    "ConvBnReLU2d",
    "ConvReLU2d",
    "DeQuantStub",
    "DeQuantize",
    "DynamicQuantizedLinear",
    "DynamicQuantizedRNN",
    "FakeQuantize",
    "FakeQuantizeState",
    "FakeQuantizeWeightsState",
    "FakeQuantizedLinear",
    "FixedQParamsObserver",
    "FixedQParamsState",
    "Flatten",
    "FusedMovingAvgObsFakeQuantize",
    "HistogramObserver",
    "HistogramState",
    "Identity",
    "Int8DynamicActivationInt8WeightConfig",
    "Int8DynamicActivationIntxWeightConfig",
    "Int8WeightOnlyConfig",
    "IntxFakeQuantizeConfig",
    "IntxWeightOnlyConfig",
    "LearnableFakeQuantize",
    "LearnableFakeQuantizeState",
    "LinearReLU",
    "MinMaxObserver",
    "MinMaxState",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "Observed",
    "ObserverState",
    "PerAxis",
    "PerChannelMinMaxObserver",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "PerToken",
    "PlaceholderObserver",
    "QATConfig",
    "QATConv2d",
    "QATConvBn2d",
    "QATLinear",
    "QConfig",
    "QuantStub",
    "Quantizable",
    "Quantize",
    "QuantizedAdd",
    "QuantizedArray",
    "QuantizedConv",
    "QuantizedLinear",
    "QuantizedVariable",
    "ReLU",
    "add",
    "calculate_qmin_qmax",
    "calculate_qparams",
    "choose_qparams_affine",
    "choose_quantization_params",
    "conv2d",
    "convert",
    "default_dynamic_qconfig",
    "default_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
    "default_observer",
    "default_per_channel_weight_fake_quant",
    "default_per_channel_weight_observer",
    "default_qat_qconfig",
    "default_qconfig",
    "default_weight_fake_quant",
    "default_weight_observer",
    "dequantize",
    "dequantize_affine",
    "disable_fake_quant",
    "disable_observer",
    "enable_fake_quant",
    "enable_observer",
    "fake_quantize_affine",
    "fake_quantize_learnable_per_channel_affine",
    "fake_quantize_learnable_per_tensor_affine",
    "fake_quantize_per_channel_affine",
    "fake_quantize_per_tensor_affine",
    "fake_quantize_weights",
    "fake_quantized_params",
    "fold_bn_weights",
    "freeze_bn_stats",
    "fuse_modules",
    "fuse_modules_qat",
    "get_block_size",
    "get_default_qat_qconfig",
    "get_default_qconfig",
    "int8_asymmetric_per_token",
    "int8_dynamic_activation_int8_weight_linear",
    "int8_quantize_weight",
    "int8_weight_only_linear",
    "intx_linear",
    "intx_quantize_weight",
    "linear",
    "linear_dynamic",
    "prepare",
    "prepare_qat",
    "quantize_",
    "quantize_affine",
    "quantize_dynamic",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_weight",
    "quantized_linear_from_torch",
    "quantized_linear_to_torch",
    "quantized_weights_from_torch",
    "quantized_weights_to_torch",
    "relu",
    "update_bn_stats",
]
