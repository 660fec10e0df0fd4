"""`QConfig` and torch's default configurations (observer and fake-quantize constructors)."""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxopt_port.quantization._fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from jaxopt_port.quantization._histogram import HistogramObserver
from jaxopt_port.quantization._observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

_BACKENDS = ["fbgemm", "x86", "qnnpack", "onednn"]


class QConfig(NamedTuple):
    """How to quantize a layer: constructors (not instances) for its activation and weight
    observers or fake-quantizers, as torch's `QConfig`.

    Examples:
        >>> from jaxopt_port import quantization
        >>> qconfig = quantization.QConfig(
        ...     activation=quantization.MinMaxObserver.with_args(reduce_range=True),
        ...     weight=quantization.default_weight_observer)
        >>> qconfig.weight().qscheme
        'per_tensor_symmetric'
    """

    activation: Any
    weight: Any


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
"""torch's `default_observer`: MinMax over quint8 $[0, 127]$."""
default_weight_observer = MinMaxObserver.with_args(dtype="qint8", qscheme="per_tensor_symmetric")
"""torch's `default_weight_observer`: symmetric qint8 MinMax."""
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype="qint8", qscheme="per_channel_symmetric"
)
"""torch's `default_per_channel_weight_observer`."""
default_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=0,
    quant_max=255,
    dtype="quint8",
    qscheme="per_tensor_affine",
    reduce_range=True,
)
"""torch's `default_fake_quant` (activations): moving average, quint8, 7-bit (`reduce_range`)."""
default_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype="qint8",
    qscheme="per_tensor_symmetric",
    reduce_range=False,
)
"""torch's `default_weight_fake_quant`: moving average, symmetric qint8."""
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype="qint8",
    qscheme="per_channel_symmetric",
    reduce_range=False,
    ch_axis=0,
)
"""torch's `default_per_channel_weight_fake_quant` (channel axis 0, torch's output channels)."""
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype="qint8",
    qscheme="per_channel_symmetric",
)
"""torch's `default_fused_per_channel_wt_fake_quant`."""
default_qconfig = QConfig(activation=default_observer, weight=default_weight_observer)
"""torch's `default_qconfig`."""
default_qat_qconfig = QConfig(activation=default_fake_quant, weight=default_weight_fake_quant)
"""torch's `default_qat_qconfig`."""


def _check_backend(backend, version, allowed_versions, name):
    if backend not in _BACKENDS:
        raise AssertionError(
            f"backend: {backend} not supported. backend must be one of {_BACKENDS}"
        )
    if version not in allowed_versions:
        raise AssertionError(
            f"Version number: {version} in {name} is not supported. Version "
            f"number must be {' or '.join(map(str, allowed_versions))}"
        )


def get_default_qconfig(backend: str = "x86", version: int = 0) -> QConfig:
    """torch's default post-training qconfig for a backend (`get_default_qconfig`).

    Activations: [`HistogramObserver`][jaxopt_port.quantization.HistogramObserver], with
    `reduce_range` (7-bit) on x86 and fbgemm; weights: per-channel symmetric qint8
    (`default_per_channel_weight_observer`), per-tensor on qnnpack. (torch also warns on onednn
    when the CPU lacks VNNI; that hardware check is not reproduced.)

    Args:
        backend: `"x86"`, `"fbgemm"`, `"qnnpack"` or `"onednn"`.
        version: 0.

    Returns:
        The `QConfig`.

    Raises:
        AssertionError: an unknown backend or version (torch's message).

    Examples:
        >>> from jaxopt_port import quantization
        >>> quantization.get_default_qconfig("qnnpack").weight().qscheme
        'per_tensor_symmetric'
    """
    _check_backend(backend, version, (0,), "get_default_qconfig")
    activation = HistogramObserver.with_args(reduce_range=backend in ("x86", "fbgemm"))
    weight = (
        default_weight_observer if backend == "qnnpack" else default_per_channel_weight_observer
    )
    return QConfig(activation=activation, weight=weight)


def get_default_qat_qconfig(backend: str = "x86", version: int = 1) -> QConfig:
    """torch's default QAT qconfig for a backend (`torch.ao.quantization.get_default_qat_qconfig`).

    Version 0: `FakeQuantize` with a moving-average observer for activations (quint8,
    `reduce_range` on x86/fbgemm, so 7-bit) and per-channel symmetric qint8 weights (per-tensor
    on qnnpack). Version 1 (torch's default argument): the fused
    [`FusedMovingAvgObsFakeQuantize`][jaxopt_port.quantization.FusedMovingAvgObsFakeQuantize],
    which fake-quantizes with fbgemm's qparams during training.

    Args:
        backend: `"x86"`, `"fbgemm"`, `"qnnpack"` or `"onednn"`.
        version: 0 or 1.

    Returns:
        The `QConfig`.

    Raises:
        AssertionError: an unknown backend or version (torch's message).

    Examples:
        >>> import warnings
        >>> from jaxopt_port import quantization
        >>> qconfig = quantization.get_default_qat_qconfig("x86", version=0)
        >>> with warnings.catch_warnings():  # torch's reduce_range deprecation warning
        ...     warnings.simplefilter("ignore")
        ...     act = qconfig.activation()
        >>> act.quant_min, act.quant_max, qconfig.weight().qscheme
        (0, 127, 'per_channel_symmetric')
    """
    _check_backend(backend, version, (0, 1), "get_default_qat_qconfig")
    reduce_range = backend in ("x86", "fbgemm")
    if version == 0:
        activation = FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver,
            quant_min=0,
            quant_max=255,
            reduce_range=reduce_range,
        )
        weight = (
            default_weight_fake_quant
            if backend == "qnnpack"
            else default_per_channel_weight_fake_quant
        )
        return QConfig(activation=activation, weight=weight)
    activation = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=reduce_range
    )
    if backend == "qnnpack":
        weight = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver,
            quant_min=-128,
            quant_max=127,
            dtype="qint8",
            qscheme="per_tensor_symmetric",
        )
    else:
        weight = default_fused_per_channel_wt_fake_quant
    return QConfig(activation=activation, weight=weight)
