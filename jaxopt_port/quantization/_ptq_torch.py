"""Converted int8 models to and from the `state_dict` of torch's quantized modules.

torch keeps a quantized Linear's weight and bias in packed parameters
(`<name>._packed_params._packed_params = (qint8 weight, float bias)`, built and read with torch's
own `torch._make_per_tensor_quantized_tensor` / `_make_per_channel_quantized_tensor`,
`int_repr()`, `q_scale()`, `q_per_channel_scales()`), its output qparams in `<name>.scale` /
`<name>.zero_point` (placeholders 1.0 and 0 for the dynamic Linear), and a `Quantize` layer's
qparams in `<name>.scale` / `<name>.zero_point` of shape `(1,)`. Names are the NNX paths joined
with `"."`, `nnx.Sequential`'s `layers` left out, as for float weights.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_port._core import to_numpy
from jaxopt_port.quantization._int8 import QuantizedArray
from jaxopt_port.quantization._ptq import (
    DynamicQuantizedLinear,
    Quantize,
    QuantizedAdd,
    QuantizedConv,
    QuantizedLinear,
    _dotted,
)

if TYPE_CHECKING:
    import torch

_LINEARS = (DynamicQuantizedLinear, QuantizedLinear)


def _quantized_layers(model):
    for path, node in nnx.iter_graph(model):
        if isinstance(node, (*_LINEARS, Quantize, QuantizedConv, QuantizedAdd)):
            name = _dotted(model, path)
            yield name, (name + "." if name else ""), node


def _weight_to_torch(w: QuantizedArray) -> torch.Tensor:
    import torch

    values = np.asarray(w.values)
    # Flax (in, out) → torch (out, in); (kh, kw, in, out) → (out, in, kh, kw)
    values = values.T if values.ndim == 2 else values.transpose(3, 2, 0, 1)
    values = torch.from_numpy(np.ascontiguousarray(values))
    scale, zero_point = np.asarray(w.scale), np.asarray(w.zero_point)
    if scale.size == 1:
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero_point[0]))
    return torch._make_per_channel_quantized_tensor(
        values,
        torch.from_numpy(scale.astype(np.float64)),
        torch.from_numpy(zero_point.astype(np.int64)),
        0,
    )


def _weight_from_torch(qweight: Any) -> QuantizedArray:
    import torch

    values = qweight.int_repr().numpy()
    values = values.T if values.ndim == 2 else values.transpose(2, 3, 1, 0)
    if qweight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale = np.array([qweight.q_scale()], np.float32)
        zero_point = np.array([qweight.q_zero_point()], np.int32)
    else:
        scale = qweight.q_per_channel_scales().numpy().astype(np.float32)
        zero_point = qweight.q_per_channel_zero_points().numpy().astype(np.int32)
    return QuantizedArray(jnp.asarray(values), jnp.asarray(scale), jnp.asarray(zero_point))


def quantized_weights_to_torch(model: nnx.Module) -> collections.OrderedDict[str, Any]:
    """A converted model's int8 state as the `state_dict` of its torch twin.

    Covers [`DynamicQuantizedLinear`][jaxopt_port.quantization.DynamicQuantizedLinear]
    (torch's `nnqd.Linear`), [`QuantizedLinear`][jaxopt_port.quantization.QuantizedLinear]
    (`nnq.Linear`), [`QuantizedConv`][jaxopt_port.quantization.QuantizedConv] (`nnq.Conv2d`:
    `weight`, `bias`, `scale`, `zero_point`), [`QuantizedAdd`][jaxopt_port.quantization.QuantizedAdd]
    (`nnq.QFunctional`) and [`Quantize`][jaxopt_port.quantization.Quantize] (`nnq.Quantize`); the
    result carries torch's module versions (`_metadata`), so
    `torch_quantized_model.load_state_dict(...)` takes it. Weights are rebuilt with torch's
    quantized-tensor constructors: a one-column weight is written per tensor (per channel with
    one channel is the same numbers).

    Args:
        model: A model from [`quantize_dynamic`][jaxopt_port.quantization.quantize_dynamic] or
            [`convert`][jaxopt_port.quantization.convert].

    Returns:
        torch's keys → tensors (and packed `(weight, bias)` tuples).

    Examples:
        >>> import warnings
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> qmodel = quantization.quantize_dynamic(
        ...     nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0))))
        >>> with warnings.catch_warnings():  # torch's deprecation of quantized tensors
        ...     warnings.simplefilter("ignore")
        ...     state_dict = quantization.quantized_weights_to_torch(qmodel)
        >>> sorted(state_dict)
        ['0._packed_params._packed_params', '0._packed_params.dtype', '0.scale', '0.zero_point']
    """
    import torch
    from torch.ao.nn.quantized import Conv2d as QConv2d
    from torch.ao.nn.quantized import Linear as QLinear
    from torch.ao.nn.quantized import QFunctional
    from torch.ao.nn.quantized import Quantize as QQuantize
    from torch.ao.nn.quantized.dynamic import Linear as DLinear
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    state_dict: collections.OrderedDict[str, Any] = collections.OrderedDict()
    metadata: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()
    for name, prefix, node in _quantized_layers(model):
        if isinstance(node, Quantize):
            state_dict[prefix + "scale"] = torch.from_numpy(np.asarray(node.scale[...]).copy())
            state_dict[prefix + "zero_point"] = torch.from_numpy(
                np.asarray(node.zero_point[...]).astype(np.int64)
            )
            metadata[name] = {"version": QQuantize._version}
            continue
        if isinstance(node, QuantizedAdd):
            state_dict[prefix + "scale"] = torch.tensor(float(node.scale[...][0]))
            state_dict[prefix + "zero_point"] = torch.tensor(int(node.zero_point[...][0]))
            metadata[name] = {"version": QFunctional._version}
            continue
        if isinstance(node, QuantizedConv):
            state_dict[prefix + "weight"] = _weight_to_torch(node.weight.get_value())
            state_dict[prefix + "bias"] = (
                None if node.bias is None else torch.from_numpy(np.asarray(node.bias[...]).copy())
            )
            state_dict[prefix + "scale"] = torch.tensor(float(node.scale[...][0]))
            state_dict[prefix + "zero_point"] = torch.tensor(int(node.zero_point[...][0]))
            metadata[name] = {"version": QConv2d._version}
            continue
        dynamic = isinstance(node, DynamicQuantizedLinear)
        if dynamic:
            scale, zero_point = 1.0, 0
        else:
            scale, zero_point = float(node.scale[...][0]), int(node.zero_point[...][0])
        bias = None if node.bias is None else torch.from_numpy(np.asarray(node.bias[...]).copy())
        state_dict[prefix + "scale"] = torch.tensor(scale)
        state_dict[prefix + "zero_point"] = torch.tensor(zero_point)
        state_dict[prefix + "_packed_params.dtype"] = torch.qint8
        state_dict[prefix + "_packed_params._packed_params"] = (
            _weight_to_torch(node.weight.get_value()),
            bias,
        )
        metadata[name] = {"version": (DLinear if dynamic else QLinear)._version}
        metadata[prefix + "_packed_params"] = {"version": LinearPackedParams._version}
    state_dict._metadata = metadata  # type: ignore[attr-defined]
    return state_dict


def quantized_weights_from_torch(model: nnx.Module, state_dict: Mapping[str, Any]) -> None:
    """Fill a converted model's int8 state from a torch quantized model's `state_dict`, in place.

    The inverse of
    [`quantized_weights_to_torch`][jaxopt_port.quantization.quantized_weights_to_torch]: build
    the NNX model with the same architecture (e.g. `quantize_dynamic` or `prepare`/`convert` of
    the float twin), then load torch's integers, scales and zero points into it; the model then
    computes what torch's does, bit for bit.

    Args:
        model: A model with the quantized layers.
        state_dict: `torch_quantized_model.state_dict()`.

    Raises:
        ValueError: naming every missing key and every weight whose shape differs.
    """
    problems = []
    updates = []
    for _, prefix, node in _quantized_layers(model):
        if isinstance(node, (Quantize, QuantizedAdd)):
            keys = ("scale", "zero_point")
        elif isinstance(node, QuantizedConv):
            keys = ("scale", "zero_point", "weight")
        else:
            keys = ("scale", "zero_point", "_packed_params._packed_params")
        missing = [prefix + k for k in keys if prefix + k not in state_dict]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
            continue
        scale = np.asarray(to_numpy(state_dict[prefix + "scale"]), np.float32).reshape(1)
        zero_point = np.asarray(to_numpy(state_dict[prefix + "zero_point"])).reshape(1)
        if isinstance(node, (Quantize, QuantizedAdd)):
            updates.append((node, None, None, scale, zero_point))
            continue
        if isinstance(node, QuantizedConv):
            qweight, bias = state_dict[prefix + "weight"], state_dict.get(prefix + "bias")
        else:
            qweight, bias = state_dict[prefix + "_packed_params._packed_params"]
        weight = _weight_from_torch(qweight)
        want = node.weight.get_value().values.shape
        if weight.values.shape != want:
            problems.append(
                f"{prefix}: torch weight {tuple(qweight.shape)} gives an NNX kernel "
                f"{weight.values.shape}, the model has {want}"
            )
            continue
        updates.append((node, weight, bias, scale, zero_point))
    if problems:
        raise ValueError("quantized_weights_from_torch: " + "; ".join(problems))
    for node, weight, bias, scale, zero_point in updates:
        if weight is not None:
            node.weight.set_value(weight)
            if node.bias is not None and bias is not None:
                node.bias[...] = jnp.asarray(to_numpy(bias), jnp.float32)
        if not isinstance(node, DynamicQuantizedLinear):
            node.scale[...] = jnp.asarray(scale)
            node.zero_point[...] = jnp.asarray(zero_point.astype(np.int32))
