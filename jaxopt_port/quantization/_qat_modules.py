"""torch's eager-mode quantization-aware training on Flax NNX models: `prepare_qat`, the QAT
layers it puts in, and the toggles torch applies with `model.apply(...)`.

```python
model = quantization.fuse_modules_qat(model, [["fc1", "relu1"]])
qat = quantization.prepare_qat(model)          # x86 default: get_default_qat_qconfig("x86")
optimizer = nnx.Optimizer(qat, optim.sgd(lr=0.1), wrt=nnx.Param)
...                                            # train: every forward fake-quantizes
quantization.disable_observer(qat)             # torch: qat.apply(disable_observer)
quantization.freeze_bn_stats(qat)              # torch: qat.apply(nniqat.freeze_bn_stats)
qmodel = quantization.convert(qat)             # int8, as torch's convert
```

Fake-quantizer states (torch's `scale`, `zero_point`, `fake_quant_enabled`,
`observer_enabled` buffers and the observer's running range) live in
[`ObserverState`][jaxopt_port.quantization.ObserverState] variables and are updated by the
forward, eagerly or under `nnx.jit`; an optimizer built with `wrt=nnx.Param` leaves them alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._fake_quantize import FakeQuantize, FakeQuantizeState
from jaxopt_port.quantization._fuse import ConvBn2d, ConvReLU2d, LinearReLU, fold_bn_weights
from jaxopt_port.quantization._int8 import QuantizedArray, quantize_kernel
from jaxopt_port.quantization._observers import PerChannelMinMaxObserver
from jaxopt_port.quantization._ptq import (
    ObserverState,
    Quantizable,
    QuantizedConv,
    QuantizedLinear,
    _copy,
    _swap,
    conv_args,
    prepare,
)
from jaxopt_port.quantization._qconfig import QConfig, get_default_qat_qconfig

_F32 = jnp.float32
_TO_TORCH = {2: (1, 0), 4: (3, 2, 0, 1)}
"""Flax kernel axes → torch's weight layout (output channels first) for Linear and Conv2d."""


class _FakeQuantizedWeight(Quantizable):
    """The weight side shared by the QAT layers: a fake-quantizer (static configuration) and
    its state (torch's `weight_fake_quant` module and buffers)."""

    def _init_weight(self, qconfig: QConfig, out_features: int) -> None:
        self.qconfig = qconfig
        self.weight_quantizer = qconfig.weight()
        n = out_features if self.weight_quantizer.is_per_channel else None
        self.weight_fake_quant = ObserverState(self.weight_quantizer.init(n))

    def _fake_quant_weight(self, kernel: jax.Array) -> jax.Array:
        y, state = _fake_quant_kernel(
            self.weight_quantizer, self.weight_fake_quant.get_value(), kernel
        )
        self.weight_fake_quant.set_value(state)
        return y

    def _quantize_weight(self, kernel: jax.Array) -> QuantizedArray:
        """torch's `convert`: the weight fake-quantizer sees the weight once more (updating its
        running range when its observer is on), then the weight is quantized with its
        observer's `calculate_qparams` (the observers' formula, not fbgemm's)."""
        return _quantize_kernel(self.weight_quantizer, self.weight_fake_quant.get_value(), kernel)


def _fake_quant_kernel(quantizer: FakeQuantize, state: FakeQuantizeState, kernel: jax.Array):
    """Observe and fake-quantize a Flax kernel in torch's layout (per channel along the output
    channels, torch's `ch_axis=0`): `(fake-quantized kernel, new state)`."""
    perm = _TO_TORCH[kernel.ndim]
    y, state = quantizer(state, jnp.transpose(kernel, perm))
    return jnp.transpose(y, [perm.index(i) for i in range(len(perm))]), state


@functools.partial(jax.jit, static_argnums=0)
def _quantize_kernel(quantizer: FakeQuantize, state: FakeQuantizeState, kernel: jax.Array):
    _, state = _fake_quant_kernel(quantizer, state, kernel)
    scale, zero_point = quantizer.calculate_qparams(state)
    per_channel = isinstance(quantizer.activation_post_process, PerChannelMinMaxObserver)
    return quantize_kernel(kernel, scale, zero_point, per_channel, quantizer.dtype)


@jax.custom_jvp
def _divide(a, b):
    """torch's division, correctly rounded whatever XLA does to `a / b`, and differentiable."""
    return _exact.divide(a, b)


@_divide.defjvp
def _divide_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    q = _divide(a, b)
    return q, (da - q * db) / b


def _conv(x, kernel, args):
    strides, dilation = args["strides"], args["dilation"]
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(strides,) * 2 if isinstance(strides, int) else tuple(strides),
        padding=args["padding"],
        rhs_dilation=(dilation,) * 2 if isinstance(dilation, int) else tuple(dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=args["groups"],
    )


class QATLinear(_FakeQuantizedWeight):
    """A Linear that fake-quantizes its weight at every call (torch's `nnqat.Linear`, and
    `nniqat.LinearReLU` with `relu=True`):

    $$y = x\\,\\mathrm{fq}_w(W) + b \\quad(\\text{then } \\max(y, 0) \\text{ with } \\texttt{relu})$$

    where $\\mathrm{fq}_w$ is `qconfig.weight` observing and fake-quantizing the kernel in
    torch's layout (per output feature for per-channel configs); gradients reach the float
    kernel straight through.

    Args:
        linear: The float `nnx.Linear` (its kernel and bias variables are taken over).
        qconfig: The `QConfig` (its `weight` is used here, its `activation` by `prepare_qat`).
        relu: Fused ReLU.
    """

    def __init__(self, linear: nnx.Linear, qconfig: QConfig, relu: bool = False) -> None:
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel, self.bias, self.relu = linear.kernel, linear.bias, relu
        self._init_weight(qconfig, linear.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x, self._fake_quant_weight(self.kernel[...]))
        if self.bias is not None:
            y = y + self.bias[...]
        return jax.nn.relu(y) if self.relu else y

    def to_quantized(self, scale, zero_point, qconfig) -> QuantizedLinear:
        """torch's `nnq.Linear.from_float` / `nniq.LinearReLU.from_float` of the QAT layer."""
        bias = None if self.bias is None else self.bias[...]
        weight = self._quantize_weight(self.kernel[...])
        return QuantizedLinear(weight, bias, scale, zero_point, relu=self.relu)


class QATConv2d(_FakeQuantizedWeight):
    """A 2-D convolution that fake-quantizes its weight at every call (torch's `nnqat.Conv2d`,
    and `nniqat.ConvReLU2d` with `relu=True`), channels last like `nnx.Conv`.

    Args:
        conv: The float 2-D `nnx.Conv` (its variables are taken over; zero padding only).
        qconfig: The `QConfig`.
        relu: Fused ReLU.
    """

    def __init__(self, conv: nnx.Conv, qconfig: QConfig, relu: bool = False) -> None:
        self.args = conv_args(conv)
        self.conv, self.relu = conv, relu
        self._init_weight(qconfig, conv.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = _conv(x, self._fake_quant_weight(self.conv.kernel[...]), self.args)
        if self.conv.bias is not None:
            y = y + self.conv.bias[...]
        return jax.nn.relu(y) if self.relu else y

    def to_quantized(self, scale, zero_point, qconfig) -> QuantizedConv:
        """torch's `nnq.Conv2d.from_float` / `nniq.ConvReLU2d.from_float` of the QAT layer."""
        weight = self._quantize_weight(self.conv.kernel[...])
        return QuantizedConv.from_conv(self.conv, weight, scale, zero_point, relu=self.relu)


class QATConvBn2d(_FakeQuantizedWeight):
    """Convolution + BatchNorm (+ ReLU) trained with the BatchNorm folded into the
    fake-quantized weight (torch's `nniqat.ConvBn2d` / `ConvBnReLU2d`, its default
    "approximate" forward). With $\\sigma_r = \\sqrt{\\sigma^2_{run} + \\epsilon}$ and
    $f = \\gamma / \\sigma_r$ per output channel:

    $$c = \\mathrm{conv}(x, \\mathrm{fq}_w(W f)) / f + b, \\qquad
    y = \\mathrm{BN}(c)$$

    where BN is in training mode (batch statistics; running mean and unbiased running variance
    updated with torch's momentum $1 - m_{flax}$) unless the statistics are frozen
    ([`freeze_bn_stats`][jaxopt_port.quantization.freeze_bn_stats]) or the BatchNorm is in eval
    mode (`use_running_average`), then it uses the running statistics. `convert` folds the
    BatchNorm into the kernel and bias (torch's `fuse_conv_bn_weights`,
    [`fold_bn_weights`][jaxopt_port.quantization.fold_bn_weights]) and quantizes that.

    Args:
        fused: A [`ConvBn2d`][jaxopt_port.quantization.ConvBn2d] or
            [`ConvBnReLU2d`][jaxopt_port.quantization.ConvBnReLU2d] from `fuse_modules_qat`.
        qconfig: The `QConfig`.
        freeze_bn: Start with frozen statistics.
    """

    def __init__(self, fused: ConvBn2d, qconfig: QConfig, freeze_bn: bool = False) -> None:
        self.args = conv_args(fused.conv)
        self.conv, self.bn, self.relu = fused.conv, fused.bn, fused.relu
        self.freeze_bn = freeze_bn
        self._init_weight(qconfig, fused.conv.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        bn, conv = self.bn, self.conv
        eps = jnp.float32(bn.epsilon)
        running_std = jnp.sqrt(bn.var[...] + eps)
        factor = _divide(bn.scale[...], running_std)
        kernel = self._fake_quant_weight(conv.kernel[...] * factor)
        c = _divide(_conv(x, kernel, self.args), factor)
        if conv.bias is not None:
            c = c + conv.bias[...]
        if self.freeze_bn or bn.use_running_average:
            mean, var = bn.mean[...], bn.var[...]
        else:
            axes = tuple(range(c.ndim - 1))
            mean = jnp.mean(c, axes)
            var = jnp.mean(jnp.square(c - mean), axes)
            n = c.size // c.shape[-1]
            m = jnp.float32(1.0 - bn.momentum)  # torch's momentum
            keep = jnp.float32(bn.momentum)
            unbiased = var * jnp.float32(n / max(n - 1, 1))
            bn.mean.set_value(lax.stop_gradient(keep * bn.mean[...] + m * mean))
            bn.var.set_value(lax.stop_gradient(keep * bn.var[...] + m * unbiased))
        alpha = bn.scale[...] / jnp.sqrt(var + eps)
        y = c * alpha + (bn.bias[...] - mean * alpha)
        return jax.nn.relu(y) if self.relu else y

    def to_quantized(self, scale, zero_point, qconfig) -> QuantizedConv:
        """torch's `nnq.Conv2d.from_float` / `nniq.ConvReLU2d.from_float` of the QAT layer:
        BatchNorm folded, then the folded weight observed and quantized."""
        bias = None if self.conv.bias is None else self.conv.bias[...]
        kernel, bias = fold_bn_weights(self.conv.kernel[...], bias, self.bn)
        weight = self._quantize_weight(kernel)
        return QuantizedConv.from_conv(
            self.conv, weight, scale, zero_point, bias=bias, relu=self.relu
        )


def prepare_qat(
    model: nnx.Module, qconfig: QConfig | None = None, inplace: bool = False
) -> nnx.Module:
    """Prepare a model for quantization-aware training (torch's eager-mode `prepare_qat`).

    Layers are swapped for QAT layers that fake-quantize their weight with `qconfig.weight` at
    every call: `nnx.Linear` → [`QATLinear`][jaxopt_port.quantization.QATLinear],
    [`LinearReLU`][jaxopt_port.quantization.LinearReLU] → `QATLinear(relu=True)`, 2-D
    `nnx.Conv` / [`ConvReLU2d`][jaxopt_port.quantization.ConvReLU2d] →
    [`QATConv2d`][jaxopt_port.quantization.QATConv2d],
    [`ConvBn2d`][jaxopt_port.quantization.ConvBn2d] / `ConvBnReLU2d` →
    [`QATConvBn2d`][jaxopt_port.quantization.QATConvBn2d]. Then, as torch's `prepare`, the
    outputs of `QuantStub`, the QAT layers and [`Add`][jaxopt_port.quantization.Add] get an
    activation fake-quantizer (`qconfig.activation`, in an
    [`Observed`][jaxopt_port.quantization.Observed] wrapper). Fuse first
    ([`fuse_modules_qat`][jaxopt_port.quantization.fuse_modules_qat]) so a ReLU is not
    quantized separately.

    Training the result is training torch's prepared model: each call observes and
    fake-quantizes (straight-through gradients), the fake-quantizer states are updated in place
    (`nnx.jit` carries them). [`convert`][jaxopt_port.quantization.convert] then gives the int8
    model; with the fused default qconfig the training-time qparams (fbgemm's rule) and the
    converted ones (the observers' rule) differ slightly, exactly as in torch.

    Args:
        model: The float model, with `QuantStub` / `DeQuantStub` around the part to quantize;
            BatchNorm layers in training mode.
        qconfig: The `QConfig`; default `get_default_qat_qconfig("x86")` (fused moving-average
            fake-quantizers: 7-bit quint8 activations, per-channel symmetric qint8 weights).
        inplace: Modify `model` instead of a copy.

    Returns:
        The QAT model.

    Raises:
        AssertionError: a BatchNorm in eval mode (torch: "prepare_qat only works on models in
            training mode").

    Examples:
        >>> import warnings
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(quantization.QuantStub(), nnx.Linear(4, 2, rngs=nnx.Rngs(0)),
        ...                        quantization.DeQuantStub())
        >>> with warnings.catch_warnings():  # torch's reduce_range deprecation warning
        ...     warnings.simplefilter("ignore")
        ...     qat = quantization.prepare_qat(model)
        >>> [type(m).__name__ for m in qat.layers]
        ['Observed', 'Observed', 'DeQuantStub']
        >>> _ = qat(jnp.linspace(-1.0, 1.0, 12).reshape(3, 4))
        >>> [type(m).__name__ for m in quantization.convert(qat).layers]
        ['Quantize', 'QuantizedLinear', 'DeQuantize']
    """
    qconfig = get_default_qat_qconfig("x86") if qconfig is None else qconfig
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm) and node.use_running_average:
            raise AssertionError(
                "prepare_qat only works on models in training mode (a BatchNorm uses its "
                "running average: call model.train())"
            )

    def select(node, _):
        if isinstance(node, LinearReLU):
            return QATLinear(node.linear, qconfig, relu=True)
        if isinstance(node, nnx.Linear):
            return QATLinear(node, qconfig)
        if isinstance(node, ConvReLU2d):
            return QATConv2d(node.conv, qconfig, relu=True)
        if isinstance(node, nnx.Conv):
            return QATConv2d(node, qconfig)
        if isinstance(node, ConvBn2d):
            return QATConvBn2d(node, qconfig)
        return None

    return prepare(_swap(_copy(model, inplace), select), qconfig, inplace=True)


# -------------------------------------------------------------------------------- toggles
def _fake_quant_states(model) -> list[ObserverState]:
    return [
        node
        for _, node in nnx.iter_graph(model)
        if isinstance(node, ObserverState) and isinstance(node.get_value(), FakeQuantizeState)
    ]


def _toggle(model, change: Callable[[FakeQuantizeState], FakeQuantizeState]) -> Any:
    for variable in _fake_quant_states(model):
        variable.set_value(change(variable.get_value()))
    return model


def disable_observer(model: nnx.Module) -> nnx.Module:
    """Freeze every fake-quantizer's observer and qparams in the model (torch's
    `model.apply(torch.ao.quantization.disable_observer)`), in place.

    Examples:
        >>> import warnings
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     qat = quantization.prepare_qat(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
        >>> qat = quantization.disable_observer(qat)
        >>> int(qat.activation_post_process.get_value().observer_enabled[0])
        0
    """
    return _toggle(model, FakeQuantize.disable_observer)


def enable_observer(model: nnx.Module) -> nnx.Module:
    """Turn every fake-quantizer's observer back on (torch's `enable_observer`), in place."""
    return _toggle(model, FakeQuantize.enable_observer)


def disable_fake_quant(model: nnx.Module) -> nnx.Module:
    """Let every fake-quantizer pass its input through unchanged (torch's
    `disable_fake_quant`), in place; observers keep observing."""
    return _toggle(model, FakeQuantize.disable_fake_quant)


def enable_fake_quant(model: nnx.Module) -> nnx.Module:
    """Turn fake quantization back on everywhere (torch's `enable_fake_quant`), in place."""
    return _toggle(model, FakeQuantize.enable_fake_quant)


def _set_freeze_bn(model, frozen: bool):
    for _, node in nnx.iter_graph(model):
        if isinstance(node, QATConvBn2d):
            node.freeze_bn = frozen
    return model


def freeze_bn_stats(model: nnx.Module) -> nnx.Module:
    """Make every [`QATConvBn2d`][jaxopt_port.quantization.QATConvBn2d] use (and stop updating)
    its running statistics (torch's `model.apply(nniqat.freeze_bn_stats)`), in place."""
    return _set_freeze_bn(model, True)


def update_bn_stats(model: nnx.Module) -> nnx.Module:
    """Let every `QATConvBn2d` train its BatchNorm on batch statistics again (torch's
    `update_bn_stats`), in place."""
    return _set_freeze_bn(model, False)
