"""Post-training quantization of Flax NNX models to int8, as torch's eager-mode flows.

Dynamic (weights int8 ahead of time, activations quantized per call from their range):

```python
qmodel = quantization.quantize_dynamic(model)          # torch: quantize_dynamic(m, {nn.Linear})
```

Static (activation ranges calibrated beforehand, int8 from `Quantize` to `DeQuantize`); mark where
quantized computation starts and ends with `QuantStub` / `DeQuantStub`, as in torch:

```python
model = nnx.Sequential(quantization.QuantStub(), nnx.Linear(64, 128, rngs=rngs), nnx.relu,
                       nnx.Linear(128, 10, rngs=rngs), quantization.DeQuantStub())
prepared = quantization.prepare(model)                 # observers after QuantStub and Linear
for batch in calibration_batches:
    prepared(batch)                                    # eagerly or under nnx.jit
qmodel = quantization.convert(prepared)                # int8 layers, torch's requantization
```

Layers are replaced in the module tree (attributes, `nnx.List`, `nnx.Dict`, `nnx.Sequential`
entries); without `inplace=True` the model is copied first (torch's default too). Converted layers
keep their integer weights and qparams in
[`QuantizedVariable`][jaxopt_port.quantization.QuantizedVariable]s, so `nnx.state(qmodel)` is the
int8 checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

from jaxopt_port.quantization._fake_quantize import FakeQuantize
from jaxopt_port.quantization._int8 import (
    QuantizedArray,
    QuantizedVariable,
    add,
    conv2d,
    linear,
    linear_dynamic,
    quantize_weight,
    relu,
)
from jaxopt_port.quantization._numerics import quantize_per_tensor
from jaxopt_port.quantization._observers import PlaceholderObserver
from jaxopt_port.quantization._qconfig import QConfig, default_weight_observer, get_default_qconfig
from jaxopt_port.quantization._rnn import DynamicQuantizedRNN

if TYPE_CHECKING:
    import torch

_F32 = jnp.float32

default_dynamic_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(
        dtype="quint8", quant_min=0, quant_max=255, is_dynamic=True
    ),
    weight=default_weight_observer,
)
"""torch's `default_dynamic_qconfig`: activations quantized per call, symmetric qint8 weights."""


class ObserverState(nnx.Variable):
    """An observer's statistics inside a prepared model (torch's `activation_post_process`)."""


# ------------------------------------------------------------------------------ the tree walk
def _get(node, key):
    return node[key] if isinstance(key, int) or isinstance(node, Mapping) else getattr(node, key)


def _set(node, key, value) -> None:
    value = nnx.data(value)  # a function entry of a list was static; its replacement is data
    if isinstance(key, int) or isinstance(node, (nnx.Dict, dict)):
        node[key] = value
    else:
        setattr(node, key, value)


def _dotted(model, path) -> str:
    """The torch name of a path: `nnx.Sequential` contributes no `layers` element."""
    parts, node = [], model
    for key in path:
        if not (key == "layers" and isinstance(node, nnx.Sequential)):
            parts.append(str(key))
        node = _get(node, key)
    return ".".join(parts)


def _swap(model, select: Callable[[Any, str], Any | None]):
    """Replace every node `n` (modules, and plain functions in lists) for which
    `select(n, torch_name)` returns a replacement; the root may be replaced too."""
    found = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.Module, nnx.List)):
            children = (
                [(i, v) for i, v in enumerate(node)]
                if isinstance(node, nnx.List)
                else [(None, node)]
            )
            for key, child in children:
                full = path if key is None else (*path, key)
                if key is not None and isinstance(child, nnx.Module):
                    continue  # visited as a node of its own
                new = select(child, _dotted(model, full))
                if new is not None:
                    found.append((full, new))
    # a replaced layer takes its sub-layers with it (a fused layer's inner Linear stays inside)
    paths = {path for path, _ in found}
    found = [
        (path, new) for path, new in found if not any(path[:i] in paths for i in range(len(path)))
    ]
    for path, new in found:
        if not path:
            model = new
            continue
        parent = model
        for key in path[:-1]:
            parent = _get(parent, key)
        _set(parent, path[-1], new)
    return model


def _copy(model, inplace: bool):
    return model if inplace else nnx.clone(model)


# ----------------------------------------------------------------------------------- dynamic
class DynamicQuantizedLinear(nnx.Module):
    """A Linear with int8 weights and activations quantized at every call (torch's
    `torch.ao.nn.quantized.dynamic.Linear`); see
    [`linear_dynamic`][jaxopt_port.quantization.linear_dynamic] for the arithmetic.

    Args:
        weight: The quantized kernel `(in, out)`.
        bias: Float bias `(out,)`, or None.
        reduce_range: 7-bit activations (x86 and fbgemm: True).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> qlayer = quantization.DynamicQuantizedLinear.from_float(layer)
        >>> qlayer.weight.get_value().values.dtype
        dtype('int8')
    """

    def __init__(
        self, weight: QuantizedArray, bias: jax.Array | None = None, reduce_range: bool = True
    ) -> None:
        self.in_features, self.out_features = weight.values.shape
        self.weight = QuantizedVariable(weight)
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, _F32))
        self.reduce_range = reduce_range

    @classmethod
    def from_float(
        cls, module: nnx.Linear, qconfig: QConfig = default_dynamic_qconfig
    ) -> DynamicQuantizedLinear:
        """Quantize an `nnx.Linear`'s kernel with `qconfig.weight` (torch's `from_float`)."""
        bias = None if module.bias is None else module.bias[...]
        return cls(quantize_weight(module.kernel[...], qconfig.weight), bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        return linear_dynamic(x, self.weight.get_value(), bias, self.reduce_range)


def _qconfig_for(spec, module, name: str):
    if isinstance(spec, Mapping):
        for key, qconfig in spec.items():
            if (isinstance(key, str) and key == name) or (
                isinstance(key, type) and isinstance(module, key)
            ):
                return qconfig
        return None
    for key in spec:
        if (isinstance(key, str) and key == name) or (
            isinstance(key, type) and isinstance(module, key)
        ):
            return default_dynamic_qconfig
    return None


def quantize_dynamic(
    model: nnx.Module,
    qconfig_spec: Iterable[type | str] | Mapping[type | str, QConfig] | None = None,
    dtype: str | torch.dtype = "qint8",
    inplace: bool = False,
) -> nnx.Module:
    """Replace Linear, LSTM and GRU layers by dynamically quantized int8 ones (torch's
    `quantize_dynamic`).

    Each selected `nnx.Linear` becomes a
    [`DynamicQuantizedLinear`][jaxopt_port.quantization.DynamicQuantizedLinear]: its kernel is
    quantized once with the qconfig's weight observer (torch's default: symmetric qint8 per
    tensor, $s = \\max|w| / 127.5$), and every call quantizes the input to 7-bit quint8 from its
    minimum and maximum, multiplies in int32 and rescales in float32. Logits equal torch's
    `quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` on the x86 engine bit for bit,
    eagerly and under `jax.jit`.

    Each selected `nnx.RNN` over an `LSTMCell`, `OptimizedLSTMCell` or `GRUCell` becomes a
    [`DynamicQuantizedRNN`][jaxopt_port.quantization.DynamicQuantizedRNN] (torch's dynamic
    LSTM/GRU): the same int8 products and torch's order of operations; only `sigmoid`/`tanh` are
    not bitwise (an ulp apart on some inputs), which changes a result only when it moves a 7-bit
    code of the next step's hidden input (measured: all 1797 digits rows bit for bit on GRU,
    2-layer LSTM and bidirectional GRU models; 1 row off on an LSTM).
    Under the default spec an `nnx.RNN` over another cell (`SimpleCell`) stays float, as torch
    leaves `nn.RNN`.

    Args:
        qconfig_spec: Which layers: a set of types (`{nnx.Linear, nnx.RNN}`, the default) and/or torch
            names of layers (`"layers.0"`, the dotted path with `nnx.Sequential`'s `layers`
            left out), each quantized with `default_dynamic_qconfig`; or a dict from type or name
            to a `QConfig` (its `weight` observer is used, e.g. per-channel weights with
            `default_per_channel_weight_observer`).
        model: The float model (any NNX module; a bare `nnx.Linear` is replaced and returned).
        dtype: `"qint8"` (torch's default).
        inplace: Modify `model` instead of a copy.

    Returns:
        The quantized model.

    Raises:
        NotImplementedError: `dtype` `"float16"`, `"quint8"` or `"quint4x2"`, or a selected
            layer that is neither an `nnx.Linear` nor an `nnx.RNN` over an LSTM or GRU cell
            (EmbeddingBag and the single-step cells are not reproduced).
        ValueError: another dtype (torch's message).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
        >>> qmodel = quantization.quantize_dynamic(model)
        >>> type(qmodel.layers[0]).__name__, qmodel(jnp.ones((1, 4))).shape
        ('DynamicQuantizedLinear', (1, 2))
    """
    name = str(dtype).removeprefix("torch.")
    if name == "float16":
        raise NotImplementedError(
            "quantize_dynamic with dtype float16 (fbgemm's fp16 GEMM) is not reproduced; "
            "use dtype='qint8'"
        )
    if name in ("quint8", "quint4x2"):
        raise NotImplementedError(
            f"quantize_dynamic with dtype {name} (torch's weight-only EmbeddingBag "
            "quantization) is not reproduced; use dtype='qint8'"
        )
    if name != "qint8":
        raise ValueError(
            f"Don't know how to quantize with default settings for {dtype}. Provide full qconfig "
            "please"
        )
    spec = {nnx.Linear, nnx.RNN} if qconfig_spec is None else qconfig_spec

    def select(node, torch_name):
        if not isinstance(node, nnx.Module):
            return None
        qconfig = _qconfig_for(spec, node, torch_name)
        if qconfig is None:
            return None
        if isinstance(node, nnx.Linear):
            return DynamicQuantizedLinear.from_float(node, qconfig)
        if isinstance(node, nnx.RNN):
            if qconfig_spec is None and not DynamicQuantizedRNN.converts(node):
                return None  # torch's default set leaves nn.RNN (tanh/relu) float
            return DynamicQuantizedRNN.from_float(node, qconfig)
        raise NotImplementedError(
            f"quantize_dynamic converts nnx.Linear and nnx.RNN (LSTM, GRU) layers; "
            f"{torch_name or 'the model'} is a {type(node).__name__}"
        )

    return _swap(_copy(model, inplace), select)


# ------------------------------------------------------------------------------------ static
class QuantStub(nnx.Module):
    """Where quantized computation starts (torch's `QuantStub`): the identity until `prepare`
    observes its output and `convert` replaces it by
    [`Quantize`][jaxopt_port.quantization.Quantize]."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class DeQuantStub(nnx.Module):
    """Where quantized computation ends (torch's `DeQuantStub`): the identity until `convert`
    replaces it by [`DeQuantize`][jaxopt_port.quantization.DeQuantize]."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class ReLU(nnx.Module):
    """ReLU for float arrays and [`QuantizedArray`][jaxopt_port.quantization.QuantizedArray]s
    ($\\max(q, z)$, the qparams kept, as torch's ReLU on a quantized tensor). `convert` puts it
    in place of bare `nnx.relu` entries of lists and `nnx.Sequential`."""

    def __call__(self, x):
        return relu(x) if isinstance(x, QuantizedArray) else jax.nn.relu(x)


class Flatten(nnx.Module):
    """Flatten all but the batch axis in torch's order (channels first), for float arrays and
    [`QuantizedArray`][jaxopt_port.quantization.QuantizedArray]s (qparams kept, as torch's
    `flatten` of a quantized tensor).

    Channels-last `(N, H, W, C)` activations are flattened as torch flattens `(N, C, H, W)`, so
    a Linear after it takes torch's weights unchanged.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> quantization.Flatten()(jnp.arange(8).reshape(1, 2, 2, 2))
        Array([[0, 2, 4, 6, 1, 3, 5, 7]], dtype=int32)
    """

    def __call__(self, x):
        def flat(a):
            a = jnp.moveaxis(a, -1, 1) if a.ndim > 2 else a
            return a.reshape(a.shape[0], -1)

        if isinstance(x, QuantizedArray):
            return QuantizedArray(flat(x.values), x.scale, x.zero_point)
        return flat(x)


class Add(nnx.Module):
    """Addition that static quantization can observe and convert (torch's `FloatFunctional`
    used as `self.ff.add(a, b)`): `a + b` until [`convert`][jaxopt_port.quantization.convert]
    makes it a [`QuantizedAdd`][jaxopt_port.quantization.QuantizedAdd] with the calibrated
    output qparams.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> quantization.Add()(jnp.ones(2), jnp.ones(2))
        Array([2., 2.], dtype=float32)
    """

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return a + b


class QuantizedAdd(nnx.Module):
    """Quantized addition with fixed output qparams (torch's `QFunctional.add`); see
    [`add`][jaxopt_port.quantization.add].

    Args:
        scale: Output scale.
        zero_point: Output zero point.
    """

    def __init__(self, scale: jax.Array, zero_point: jax.Array) -> None:
        self.scale = QuantizedVariable(jnp.asarray(scale, _F32).reshape(1))
        self.zero_point = QuantizedVariable(jnp.asarray(zero_point, jnp.int32).reshape(1))

    def __call__(self, a: QuantizedArray, b: QuantizedArray) -> QuantizedArray:
        return add(a, b, self.scale[...], self.zero_point[...])


class Quantizable(nnx.Module):
    """Base of float layers that [`convert`][jaxopt_port.quantization.convert] turns into int8
    layers by their own rule (fused and QAT layers); `prepare` observes their output."""

    def to_quantized(
        self, scale: jax.Array, zero_point: jax.Array, qconfig: QConfig
    ) -> nnx.Module:  # pragma: no cover - every subclass overrides it
        """The int8 layer, given the output qparams and the layer's `QConfig`."""
        raise NotImplementedError


class Observed(nnx.Module):
    """A layer whose output an observer or fake-quantizer watches (torch's module with an
    `activation_post_process` child after `prepare` / `prepare_qat`).

    With an observer (`prepare`) the output passes unchanged; with a fake-quantizer
    (`prepare_qat`: `FakeQuantize`, `FusedMovingAvgObsFakeQuantize`) the output is observed and
    fake-quantized, and its state (torch's buffers) lives in the `activation_post_process`
    variable.

    Args:
        module: The float layer (`QuantStub`, `nnx.Linear`, a fused or QAT layer, ...).
        qconfig: The `QConfig` its conversion uses (activation observer now, weight observer
            at `convert`).
    """

    def __init__(self, module: nnx.Module, qconfig: QConfig) -> None:
        self.module = module
        self.qconfig = qconfig
        self.observer = qconfig.activation()
        self.activation_post_process = ObserverState(self.observer.init())

    def __call__(self, *args: jax.Array) -> jax.Array:
        y = self.module(*args)
        state = self.activation_post_process.get_value()
        if isinstance(self.observer, FakeQuantize):
            y, state = self.observer(state, y)
        else:
            state = self.observer.update(state, y)
        self.activation_post_process.set_value(state)
        return y

    def calculate_qparams(self) -> tuple[jax.Array, jax.Array]:
        """The observer's `(scale, zero_point)` for what it has seen (compiled once per
        observer; an observer that saw nothing answers eagerly, with torch's warning). For a
        fake-quantizer: its observer's formula, as torch's `convert` computes them (not the
        fused fake-quantizer's training-time fbgemm qparams)."""
        observer, state = self.observer, self.activation_post_process.get_value()
        if isinstance(observer, FakeQuantize):
            observer, state = observer.activation_post_process, state.observer
        min_val = getattr(state, "min_val", None)
        if min_val is not None and bool(jnp.all(jnp.isposinf(min_val))):
            return observer.calculate_qparams(state)
        return _calculate_qparams(observer, state)


@functools.partial(jax.jit, static_argnums=0)
def _calculate_qparams(observer, state):
    return observer.calculate_qparams(state)


class Quantize(nnx.Module):
    """Float to quint8 with calibrated qparams (torch's `nnq.Quantize`)."""

    def __init__(self, scale: jax.Array, zero_point: jax.Array) -> None:
        self.scale = QuantizedVariable(jnp.asarray(scale, _F32).reshape(1))
        self.zero_point = QuantizedVariable(jnp.asarray(zero_point, jnp.int32).reshape(1))

    def __call__(self, x: jax.Array) -> QuantizedArray:
        s, z = self.scale[...], self.zero_point[...]
        return QuantizedArray(quantize_per_tensor(x, s[0], z[0], "quint8"), s, z)


class DeQuantize(nnx.Module):
    """Quantized back to float32 (torch's `nnq.DeQuantize`)."""

    def __call__(self, x: QuantizedArray) -> jax.Array:
        return x.dequantize()


class QuantizedLinear(nnx.Module):
    """A statically quantized Linear, quint8 in and out (torch's `nnq.Linear`); see
    [`linear`][jaxopt_port.quantization.linear] for the requantization.

    Args:
        weight: The quantized kernel `(in, out)`.
        bias: Float bias, or None.
        scale: Output scale.
        zero_point: Output zero point.
        relu: ReLU fused into the output (torch's `nniq.LinearReLU`).
    """

    def __init__(
        self,
        weight: QuantizedArray,
        bias: jax.Array | None,
        scale: jax.Array,
        zero_point: jax.Array,
        relu: bool = False,
    ) -> None:
        self.relu = relu
        self.in_features, self.out_features = weight.values.shape
        self.weight = QuantizedVariable(weight)
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, _F32))
        self.scale = QuantizedVariable(jnp.asarray(scale, _F32).reshape(1))
        self.zero_point = QuantizedVariable(jnp.asarray(zero_point, jnp.int32).reshape(1))

    def __call__(self, x: QuantizedArray) -> QuantizedArray:
        bias = None if self.bias is None else self.bias[...]
        return linear(
            x,
            self.weight.get_value(),
            bias,
            self.scale[...],
            self.zero_point[...],
            relu=self.relu,
        )


class QuantizedConv(nnx.Module):
    """A statically quantized 2-D convolution, channels last, quint8 in and out (torch's
    `nnq.Conv2d` on x86); see [`conv2d`][jaxopt_port.quantization.conv2d].

    Args:
        weight: The quantized kernel `(kh, kw, C_in / groups, C_out)`.
        bias: Float bias, or None.
        scale: Output scale.
        zero_point: Output zero point.
        strides: Window strides.
        padding: Padding in `lax.conv_general_dilated`'s form.
        dilation: Kernel dilation.
        groups: Feature groups.
        relu: ReLU fused into the output (torch's `nniq.ConvReLU2d`).
    """

    def __init__(
        self,
        weight: QuantizedArray,
        bias: jax.Array | None,
        scale: jax.Array,
        zero_point: jax.Array,
        *,
        strides: Any = 1,
        padding: Any = "VALID",
        dilation: Any = 1,
        groups: int = 1,
        relu: bool = False,
    ) -> None:
        self.relu = relu
        self.weight = QuantizedVariable(weight)
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, _F32))
        self.scale = QuantizedVariable(jnp.asarray(scale, _F32).reshape(1))
        self.zero_point = QuantizedVariable(jnp.asarray(zero_point, jnp.int32).reshape(1))
        self.strides, self.padding, self.dilation, self.groups = strides, padding, dilation, groups

    @classmethod
    def from_conv(
        cls,
        conv: nnx.Conv,
        weight: QuantizedArray,
        scale: jax.Array,
        zero_point: jax.Array,
        *,
        bias: jax.Array | None = None,
        relu: bool = False,
    ) -> QuantizedConv:
        """The quantized counterpart of a 2-D `nnx.Conv` with its hyperparameters (`bias`
        replaces the conv's own, e.g. after folding a BatchNorm into it)."""
        if bias is None and conv.bias is not None:
            bias = conv.bias[...]
        return cls(weight, bias, scale, zero_point, relu=relu, **conv_args(conv))

    def __call__(self, x: QuantizedArray) -> QuantizedArray:
        bias = None if self.bias is None else self.bias[...]
        return conv2d(
            x,
            self.weight.get_value(),
            bias,
            self.scale[...],
            self.zero_point[...],
            strides=self.strides,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )


def conv_args(conv: nnx.Conv) -> dict[str, Any]:
    """`strides`, `padding` (in `lax.conv_general_dilated`'s form), `dilation` and `groups` of
    a 2-D zero-padded `nnx.Conv`, the only kind quantization reproduces.

    Raises:
        NotImplementedError: another convolution.
    """
    if len(conv.kernel_size) != 2 or conv.input_dilation not in (1, (1, 1)):
        raise NotImplementedError(
            "convert quantizes 2-D convolutions without input dilation only; got kernel "
            f"size {conv.kernel_size}, input dilation {conv.input_dilation}"
        )
    if conv.padding in ("CIRCULAR", "REFLECT") or getattr(conv, "mask", None) is not None:
        raise NotImplementedError(
            f"convert quantizes zero-padded convolutions only; got padding {conv.padding!r}"
        )
    padding = (
        conv.padding if isinstance(conv.padding, str) else canonicalize_padding(conv.padding, 2)
    )
    return {
        "strides": conv.strides,
        "padding": padding,
        "dilation": conv.kernel_dilation,
        "groups": conv.feature_group_count,
    }


def prepare(model: nnx.Module, qconfig: QConfig | None = None, inplace: bool = False) -> nnx.Module:
    """Attach observers for static quantization (torch's eager-mode `prepare`).

    Every `QuantStub`, `nnx.Linear`, `nnx.Conv` (2-D) and [`Add`][jaxopt_port.quantization.Add]
    is wrapped in an
    [`Observed`][jaxopt_port.quantization.Observed] layer that records its output's range with
    `qconfig.activation` (torch observes the same places; a ReLU shares its input's qparams).
    Run calibration data through the result (eagerly or under `nnx.jit`), then
    [`convert`][jaxopt_port.quantization.convert].

    Args:
        model: The float model, with `QuantStub` / `DeQuantStub` around the part to quantize.
        qconfig: The `QConfig`; default `get_default_qconfig("x86")` (histogram observer,
            7-bit quint8 activations; per-channel symmetric qint8 weights).
        inplace: Modify `model` instead of a copy.

    Returns:
        The model with observers; it computes what the float model computes.

    Examples:
        >>> import warnings
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(quantization.QuantStub(), nnx.Linear(4, 2, rngs=nnx.Rngs(0)),
        ...                        quantization.DeQuantStub())
        >>> with warnings.catch_warnings():  # torch's reduce_range deprecation warning
        ...     warnings.simplefilter("ignore")
        ...     prepared = quantization.prepare(model)
        >>> _ = prepared(jnp.linspace(-1.0, 1.0, 12).reshape(3, 4))
        >>> qmodel = quantization.convert(prepared)
        >>> [type(m).__name__ for m in qmodel.layers]
        ['Quantize', 'QuantizedLinear', 'DeQuantize']
    """
    qconfig = get_default_qconfig("x86") if qconfig is None else qconfig

    def select(node, _):
        if isinstance(node, (QuantStub, nnx.Linear, nnx.Conv, Add, Quantizable)):
            return Observed(node, qconfig)
        return None

    return _swap(_copy(model, inplace), select)


def convert(model: nnx.Module, inplace: bool = False) -> nnx.Module:
    """Replace observed layers by int8 ones (torch's eager-mode `convert`).

    `QuantStub` → [`Quantize`][jaxopt_port.quantization.Quantize], `nnx.Linear` →
    [`QuantizedLinear`][jaxopt_port.quantization.QuantizedLinear], `nnx.Conv` →
    [`QuantizedConv`][jaxopt_port.quantization.QuantizedConv], `Add` →
    [`QuantizedAdd`][jaxopt_port.quantization.QuantizedAdd] (weights quantized with the
    qconfig's weight observer, output qparams from the calibrated observer), `DeQuantStub` →
    [`DeQuantize`][jaxopt_port.quantization.DeQuantize], bare `nnx.relu` entries →
    [`ReLU`][jaxopt_port.quantization.ReLU]. The converted model's outputs equal torch's
    converted twin (same weights, same calibration batches, x86 engine) bit for bit.

    Args:
        model: A model from [`prepare`][jaxopt_port.quantization.prepare], calibrated.
        inplace: Modify `model` instead of a copy.

    Returns:
        The quantized model.
    """

    def select(node, _):
        if node is jax.nn.relu:
            return ReLU()
        if isinstance(node, DeQuantStub):
            return DeQuantize()
        if not isinstance(node, Observed):
            return None
        scale, zero_point = node.calculate_qparams()
        inner = node.module
        if isinstance(inner, QuantStub):
            return Quantize(scale, zero_point)
        if isinstance(inner, Add):
            return QuantizedAdd(scale, zero_point)
        if isinstance(inner, Quantizable):
            return inner.to_quantized(scale, zero_point, node.qconfig)
        weight = quantize_weight(inner.kernel[...], node.qconfig.weight)
        if isinstance(inner, nnx.Conv):
            return QuantizedConv.from_conv(inner, weight, scale, zero_point)
        bias = None if inner.bias is None else inner.bias[...]
        return QuantizedLinear(weight, bias, scale, zero_point)

    return _swap(_copy(model, inplace), select)
