"""torch's eager-mode module fusion (`fuse_modules`, `fuse_modules_qat`) on Flax NNX models.

Fusion replaces a run of layers named by their torch paths with one fused layer in the first
slot and [`Identity`][jaxopt_port.quantization.Identity] in the others, so that
[`prepare`][jaxopt_port.quantization.prepare] / [`prepare_qat`][jaxopt_port.quantization.prepare_qat]
observe (and `convert` quantizes) the fused output once, as torch does:

```python
model.eval()                                              # BatchNorm on running statistics
fused = quantization.fuse_modules(model, [["conv", "bn", "relu"], ["fc1", "relu1"]])
fused = quantization.fuse_modules_qat(model.train(), [["conv", "bn", "relu"]])  # keeps the BN
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._int8 import quantize_weight
from jaxopt_port.quantization._ptq import (
    Quantizable,
    QuantizedConv,
    QuantizedLinear,
    ReLU,
    _copy,
    _set,
)

_F32 = jnp.float32


class Identity(nnx.Module):
    """The identity (torch's `nn.Identity`): what fusion leaves in the slots it emptied."""

    def __call__(self, x):
        return x


class LinearReLU(Quantizable):
    """A Linear followed by ReLU, fused (torch's `torch.ao.nn.intrinsic.LinearReLU`).

    Args:
        linear: The `nnx.Linear`.
    """

    def __init__(self, linear: nnx.Linear) -> None:
        self.linear = linear

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.linear(x))

    def to_quantized(self, scale, zero_point, qconfig) -> QuantizedLinear:
        """torch's `QuantizedLinearReLU`: the weight observed with `qconfig.weight`."""
        bias = None if self.linear.bias is None else self.linear.bias[...]
        weight = quantize_weight(self.linear.kernel[...], qconfig.weight)
        return QuantizedLinear(weight, bias, scale, zero_point, relu=True)


class ConvReLU2d(Quantizable):
    """A 2-D convolution followed by ReLU, fused (torch's `ConvReLU2d`).

    Args:
        conv: The 2-D `nnx.Conv` (with BatchNorm already folded in after eval fusion).
    """

    def __init__(self, conv: nnx.Conv) -> None:
        self.conv = conv

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.conv(x))

    def to_quantized(self, scale, zero_point, qconfig) -> QuantizedConv:
        """torch's `QuantizedConvReLU2d`: the weight observed with `qconfig.weight`."""
        weight = quantize_weight(self.conv.kernel[...], qconfig.weight)
        return QuantizedConv.from_conv(self.conv, weight, scale, zero_point, relu=True)


class ConvBn2d(nnx.Module):
    """A 2-D convolution and its BatchNorm kept apart for quantization-aware training (torch's
    `torch.ao.nn.intrinsic.ConvBn2d`); [`prepare_qat`][jaxopt_port.quantization.prepare_qat]
    turns it into [`QATConvBn2d`][jaxopt_port.quantization.QATConvBn2d]. Until then it computes
    `bn(conv(x))`.

    Args:
        conv: The 2-D `nnx.Conv`.
        bn: The `nnx.BatchNorm` over its output channels.
    """

    relu = False

    def __init__(self, conv: nnx.Conv, bn: nnx.BatchNorm) -> None:
        self.conv, self.bn = conv, bn

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn(self.conv(x))
        return jax.nn.relu(y) if self.relu else y


class ConvBnReLU2d(ConvBn2d):
    """Convolution, BatchNorm and ReLU fused for quantization-aware training (torch's
    `ConvBnReLU2d`): `relu(bn(conv(x)))` until `prepare_qat`.

    Args:
        conv: The 2-D `nnx.Conv`.
        bn: The `nnx.BatchNorm` over its output channels.
    """

    relu = True


def fold_bn_weights(
    kernel: jax.Array,
    bias: jax.Array | None,
    bn: nnx.BatchNorm,
    *,
    linear: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Fold a BatchNorm's running statistics into the preceding layer's kernel and bias.

    torch's `fuse_conv_bn_weights` (and `fuse_linear_bn_weights` with `linear=True`), in float32
    with every product and quotient rounded as torch rounds it, with
    $r = \\mathrm{fl}(1/\\mathrm{fl}(\\sqrt{\\sigma^2 + \\epsilon}))$ (torch's CPU `rsqrt`):

    $$W' = W \\cdot \\mathrm{fl}(\\gamma r), \\qquad
    b' = \\mathrm{fl}(\\mathrm{fl}(\\mathrm{fl}(b - \\mu)\\, r)\\, \\gamma) + \\beta$$

    (Linear: $b' = \\mathrm{fl}(\\mathrm{fl}(b - \\mu)\\,\\mathrm{fl}(\\gamma r)) + \\beta$); the
    bias is zero when absent.

    Args:
        kernel: The Flax kernel, output channels last.
        bias: The layer's bias, or None.
        bn: The `nnx.BatchNorm` (its `scale`, `bias`, `mean`, `var`, `epsilon`).
        linear: Use the Linear formula.

    Returns:
        `(kernel, bias)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> bn.var.set_value(jnp.array([4.0, 0.25]) - bn.epsilon)
        >>> quantization.fold_bn_weights(jnp.ones((3, 2)), None, bn)[0][0]
        Array([0.5, 2. ], dtype=float32)
    """
    n = kernel.shape[-1]
    gamma = jnp.ones((n,), _F32) if bn.scale is None else bn.scale[...]
    beta = jnp.zeros((n,), _F32) if bn.bias is None else bn.bias[...]
    mean, var = bn.mean[...], bn.var[...]
    b = jnp.zeros((n,), _F32) if bias is None else jnp.asarray(bias, _F32)
    rsqrt = _exact.divide(jnp.ones((n,), _F32), jnp.sqrt(var + jnp.float32(bn.epsilon)))
    factor = _exact.no_contract(gamma * rsqrt)
    new_kernel = jnp.asarray(kernel, _F32) * factor
    if linear:
        new_bias = _exact.no_contract((b - mean) * factor) + beta
    else:
        new_bias = _exact.no_contract(_exact.no_contract((b - mean) * rsqrt) * gamma) + beta
    return new_kernel, new_bias


# ------------------------------------------------------------------------- names and patterns
def _child(node, token: str):
    if isinstance(node, nnx.Sequential):
        return node.layers[int(token)]
    if isinstance(node, (nnx.List, list, tuple)) and token.lstrip("-").isdigit():
        return node[int(token)]
    if isinstance(node, Mapping):
        return node[token]
    return getattr(node, token)


def _locate(model, name: str):
    """`(parent, key, node)` for a torch dotted name (`nnx.Sequential` entries by index)."""
    tokens = name.split(".")
    parent = model
    for token in tokens[:-1]:
        parent = _child(parent, token)
    last = tokens[-1]
    if isinstance(parent, nnx.Sequential):
        return parent.layers, int(last), parent.layers[int(last)]
    if isinstance(parent, (nnx.List, list)) and last.lstrip("-").isdigit():
        return parent, int(last), parent[int(last)]
    return parent, last, _child(parent, last)


def _kind(node) -> str:
    if node is jax.nn.relu or isinstance(node, ReLU):
        return "relu"
    if isinstance(node, nnx.Linear):
        return "linear"
    if isinstance(node, nnx.Conv) and len(node.kernel_size) == 2:
        return "conv"
    if isinstance(node, nnx.BatchNorm):
        return "bn"
    return type(node).__name__ if isinstance(node, nnx.Module) else repr(node)


def _check_bn(bn: nnx.BatchNorm, out: int, what: str) -> None:
    if bn.num_features != out:
        raise AssertionError(
            f"Output channel of {what} must match num_features of BatchNorm "
            f"({out} != {bn.num_features})"
        )
    if bn.scale is None or bn.bias is None:
        raise AssertionError("Only support fusing BatchNorm2d with affine set to True")


def _fold(layer, bn: nnx.BatchNorm, linear: bool):
    if not bn.use_running_average:
        raise AssertionError(
            "Fusion only for eval! (call model.eval() first: BatchNorm must use its running "
            "statistics)"
        )
    _check_bn(bn, layer.out_features, "Linear" if linear else "Conv2d")
    fused = nnx.clone(layer)
    bias = None if layer.bias is None else layer.bias[...]
    kernel, bias = fold_bn_weights(layer.kernel[...], bias, bn, linear=linear)
    fused.kernel.set_value(kernel)
    if fused.bias is None:
        fused.bias = nnx.Param(bias)
        fused.use_bias = True
    else:
        fused.bias.set_value(bias)
    return fused


def _fuse_one(mods: Sequence[Any], is_qat: bool):
    kinds = tuple(_kind(m) for m in mods)
    if kinds == ("linear", "relu"):
        return LinearReLU(mods[0])
    if kinds == ("conv", "relu"):
        return ConvReLU2d(mods[0])
    if kinds in (("conv", "bn"), ("conv", "bn", "relu")):
        conv, bn = mods[0], mods[1]
        relu = len(mods) == 3
        if is_qat:
            _check_bn(bn, conv.out_features, "Conv2d")
            return ConvBnReLU2d(conv, bn) if relu else ConvBn2d(conv, bn)
        fused = _fold(conv, bn, linear=False)
        return ConvReLU2d(fused) if relu else fused
    if kinds == ("linear", "bn"):
        if is_qat:
            raise NotImplementedError(
                "fuse_modules_qat: Linear + BatchNorm1d (torch's LinearBn1d QAT module) is not "
                "reproduced; fold it in eval mode with fuse_modules"
            )
        return _fold(mods[0], mods[1], linear=True)
    raise NotImplementedError(
        f"Cannot fuse modules: {kinds} (supported: conv, bn; conv, bn, relu; conv, relu; "
        "linear, relu; linear, bn (eval only))"
    )


def _fuse(model, modules_to_fuse, is_qat: bool, inplace: bool):
    model = _copy(model, inplace)
    groups = (
        [list(modules_to_fuse)]
        if all(isinstance(m, str) for m in modules_to_fuse)
        else [list(g) for g in modules_to_fuse]
    )
    for names in groups:
        slots = [_locate(model, name) for name in names]
        fused = _fuse_one([node for _, _, node in slots], is_qat)
        for i, (parent, key, _) in enumerate(slots):
            _set(parent, key, fused if i == 0 else Identity())
    return model


def fuse_modules(
    model: nnx.Module, modules_to_fuse: Sequence[Any], inplace: bool = False
) -> nnx.Module:
    """Fuse runs of layers for post-training quantization (torch's `fuse_modules`).

    BatchNorm is folded into the layer before it with torch's `fuse_conv_bn_eval` /
    `fuse_linear_bn_eval` arithmetic ([`fold_bn_weights`][jaxopt_port.quantization.fold_bn_weights],
    bit for bit); Conv + ReLU becomes [`ConvReLU2d`][jaxopt_port.quantization.ConvReLU2d] and
    Linear + ReLU [`LinearReLU`][jaxopt_port.quantization.LinearReLU], which `convert` turns into
    int8 layers with the ReLU fused (torch's `QuantizedLinearReLU`, `QuantizedConvReLU2d`).

    Supported runs (by layer type): `nnx.Conv` (2-D) + `nnx.BatchNorm` (+ ReLU), `nnx.Conv` +
    ReLU, `nnx.Linear` + ReLU, `nnx.Linear` + `nnx.BatchNorm`. ReLU is `nnx.relu` (a list or
    `nnx.Sequential` entry) or [`ReLU`][jaxopt_port.quantization.ReLU]. The first slot gets the
    fused layer, the others [`Identity`][jaxopt_port.quantization.Identity].

    Args:
        model: The float model.
        modules_to_fuse: Lists of torch dotted names (`[["conv", "bn", "relu"], ["fc1",
            "relu1"]]`; `nnx.Sequential` entries by index, `"0"`), or one list of names.
        inplace: Modify `model` instead of a copy (torch's default is a copy too).

    Returns:
        The fused model.

    Raises:
        AssertionError: a BatchNorm in training mode (`use_running_average=False`: call
            `model.eval()`; torch's "Fusion only for eval!"), a channel-count mismatch, or a
            BatchNorm without scale or bias.
        NotImplementedError: another run of layer types (torch's "Cannot fuse modules").
        AttributeError: a name that is not in the model.

    Examples:
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.relu)
        >>> fused = quantization.fuse_modules(model, ["0", "1"])
        >>> [type(m).__name__ for m in fused.layers]
        ['LinearReLU', 'Identity']
    """
    return _fuse(model, modules_to_fuse, is_qat=False, inplace=inplace)


def fuse_modules_qat(
    model: nnx.Module, modules_to_fuse: Sequence[Any], inplace: bool = False
) -> nnx.Module:
    """Fuse runs of layers for quantization-aware training (torch's `fuse_modules_qat`).

    Like [`fuse_modules`][jaxopt_port.quantization.fuse_modules], but Conv + BatchNorm (+ ReLU)
    keep the BatchNorm: they become [`ConvBn2d`][jaxopt_port.quantization.ConvBn2d] /
    [`ConvBnReLU2d`][jaxopt_port.quantization.ConvBnReLU2d], which
    [`prepare_qat`][jaxopt_port.quantization.prepare_qat] turns into modules that train the
    BatchNorm and fold it into the fake-quantized weight at every step. Linear + BatchNorm
    (torch's `LinearBn1d`) is not reproduced. Names, slots and the other runs as in
    `fuse_modules`.

    Args:
        model: The float model (BatchNorm layers may be in training mode).
        modules_to_fuse: Lists of torch dotted names, or one list of names.
        inplace: Modify `model` instead of a copy.

    Returns:
        The fused model.

    Raises:
        AssertionError: a channel-count mismatch or a BatchNorm without scale or bias (torch's
            messages).
        NotImplementedError: another run of layer types, or Linear + BatchNorm.
        AttributeError: a name that is not in the model.

    Examples:
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> rngs = nnx.Rngs(0)
        >>> model = nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=rngs), nnx.BatchNorm(4, rngs=rngs),
        ...                        nnx.relu)
        >>> fused = quantization.fuse_modules_qat(model, ["0", "1", "2"])
        >>> [type(m).__name__ for m in fused.layers]
        ['ConvBnReLU2d', 'Identity', 'Identity']
    """
    return _fuse(model, modules_to_fuse, is_qat=True, inplace=inplace)
