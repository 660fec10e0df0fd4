"""torchao's `quantize_` on Flax NNX models: swap linear layers in place for quantized ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

from jaxopt_port.quantization._torchao import (
    PTQ_CONFIGS,
    AffineQuantizedLinear,
    _linear_weight,
    from_torchao_config,
)
from jaxopt_port.quantization._torchao_qat import FakeQuantizedLinear, QATConfig, qat_swap


def _child(node: Any, key: Any) -> Any:
    return node[key] if isinstance(key, int) else getattr(node, key)


def _torch_name(model: nnx.Module, path: tuple) -> str:
    """torch's module name for an NNX path: `nnx.Sequential`'s `layers` element dropped."""
    parts, node = [], model
    for key in path:
        if not (key == "layers" and isinstance(node, nnx.Sequential)):
            parts.append(str(key))
        node = _child(node, key)
    return ".".join(parts)


def _is_linear(module: Any, name: str) -> bool:
    return isinstance(module, nnx.Linear | FakeQuantizedLinear)


def _ptq_swap(module: Any, config: Any) -> Any:
    if isinstance(module, nnx.Linear | FakeQuantizedLinear):
        return AffineQuantizedLinear.from_weight(*_linear_weight(module), config)
    return module


def quantize_(
    model: nnx.Module,
    config: Any,
    filter_fn: Callable[[nnx.Module, str], bool] | None = None,
) -> nnx.Module:
    """torchao's `quantize_` on a Flax NNX model: swap its linear layers in place.

    Every submodule for which `filter_fn(module, name)` is true (default: every `nnx.Linear`, and
    QAT's fake-quantized linears) is replaced, in its parent, by the layer `config` makes:
    a [`AffineQuantizedLinear`][jaxopt_port.quantization.AffineQuantizedLinear] for the inference configs, a
    [`FakeQuantizedLinear`][jaxopt_port.quantization.FakeQuantizedLinear] or its conversion for
    [`QATConfig`][jaxopt_port.quantization.QATConfig]. `name` is torch's module name
    (`"0"`, `"encoder.fc1"`; an `nnx.Sequential`'s `layers` attribute is skipped, as in
    torch's `nn.Sequential`).

    Args:
        model: An NNX module; modified in place.
        config: One of `Int8DynamicActivationInt8WeightConfig`, `Int8WeightOnlyConfig`,
            `IntxWeightOnlyConfig`, `Int8DynamicActivationIntxWeightConfig`, `QATConfig`; torchao's
            objects of the first four classes are accepted too (torch dtypes, granularities and
            mapping types in them included).
        filter_fn: Which modules to swap; `None` for the linear layers.

    Returns:
        `model` (the replacement itself when `model` is a selected linear layer, which cannot be
        swapped in place).

    Raises:
        TypeError: `config` is not one of those configs.
        ValueError: a torchao config with an option not implemented here (a packed intx format,
            the HQQ algorithm, a scale dtype, `weight_only_decode`).

    Examples:
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
        >>> _ = quantization.quantize_(model, quantization.Int8WeightOnlyConfig(),
        ...                            filter_fn=lambda m, name: name == "2")
        >>> [type(m).__name__ for m in (model.layers[0], model.layers[2])]
        ['Linear', 'AffineQuantizedLinear']
    """
    config = from_torchao_config(config)
    if isinstance(config, QATConfig):
        swap = qat_swap
    elif isinstance(config, PTQ_CONFIGS):
        swap = _ptq_swap
    else:
        raise TypeError(
            f"config must be one of {[c.__name__ for c in (*PTQ_CONFIGS, QATConfig)]}, "
            f"got {type(config).__name__}"
        )
    filter_fn = _is_linear if filter_fn is None else filter_fn
    for path, module in list(nnx.iter_modules(model)):
        if not filter_fn(module, _torch_name(model, path)):
            continue
        new = swap(module, config)
        if new is module:
            continue
        if not path:
            return new
        parent = model
        for key in path[:-1]:
            parent = _child(parent, key)
        if isinstance(path[-1], int):
            parent[path[-1]] = new
        else:
            setattr(parent, path[-1], new)
    return model
