"""Quantized dtypes and qschemes by torch's names, and torch's quantization range rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

import jax.numpy as jnp

if TYPE_CHECKING:
    import torch
    from jax.typing import DTypeLike

DtypeName: TypeAlias = Literal["quint8", "qint8", "qint32", "uint8", "int8", "int32"]
"""torch's quantized dtype names, and the plain integer names its observers accept beside them."""
QSchemeName: TypeAlias = Literal[
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
]
"""torch's qscheme names."""

DTYPES = {
    "quint8": (jnp.uint8, 0, 255),
    "qint8": (jnp.int8, -128, 127),
    "qint32": (jnp.int32, -(2**31), 2**31 - 1),
}
"""torch's quantized dtype name → (storage dtype of the integer values, qmin, qmax)."""
_ALIASES = {"uint8": "quint8", "int8": "qint8", "int32": "qint32"}
"""Plain integer names torch's observers accept beside the quantized ones, with the same ranges."""
QSCHEMES: tuple[str, ...] = get_args(QSchemeName)


def dtype_name(dtype: DtypeName | torch.dtype) -> str:
    """torch's name for a quantized dtype given as a string or a torch dtype (`torch.qint8`)."""
    name = str(dtype).removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unsupported quantized dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return name


def qscheme_name(qscheme: QSchemeName | torch.qscheme) -> str:
    """torch's name for a qscheme given as a string or a torch qscheme (`torch.per_tensor_affine`)."""
    name = str(qscheme).removeprefix("torch.")
    if name not in QSCHEMES:
        raise ValueError(f"unsupported qscheme {qscheme!r}; expected one of {list(QSCHEMES)}")
    return name


def storage_dtype(dtype: DtypeName | torch.dtype) -> DTypeLike:
    """The JAX integer dtype that holds `dtype`'s values (`uint8`, `int8` or `int32`)."""
    return DTYPES[dtype_name(dtype)][0]


def validate_qmin_qmax(quant_min: int, quant_max: int) -> None:
    """torch's check of a user-given range: it must contain 0 and be non-empty.

    Raises:
        AssertionError: with torch's message, as `torch.ao.quantization` raises it.
    """
    if not quant_min <= 0 <= quant_max:
        raise AssertionError("Used-specified quantization range must include 0.")
    if quant_min >= quant_max:
        raise AssertionError(
            "qmin must be strictly less than qmax for user-specified quantization range."
        )


def calculate_qmin_qmax(
    quant_min: int | None,
    quant_max: int | None,
    dtype: DtypeName | torch.dtype = "quint8",
    reduce_range: bool = False,
) -> tuple[int, int]:
    """The integer range an observer quantizes to, as torch's `calculate_qmin_qmax`.

    Without a custom range: quint8 $[0, 255]$, qint8 $[-128, 127]$, qint32
    $[-2^{31}, 2^{31}-1]$; `reduce_range=True` takes one bit off the 8-bit types ($[0, 127]$,
    $[-64, 63]$; the x86 engine's default for activations, so its activations are 7-bit). A custom
    range (both bounds given) is halved with floor division when `reduce_range` is set.

    Args:
        quant_min: Lower bound, or None for the dtype's.
        quant_max: Upper bound, or None for the dtype's.
        dtype: `"quint8"`, `"qint8"` or `"qint32"` (or the torch dtype).
        reduce_range: Drop one bit of range.

    Returns:
        `(qmin, qmax)`.

    Raises:
        AssertionError: torch's messages for a range that excludes 0, is empty, or is wider than
            the dtype's bits.

    Examples:
        >>> from jaxopt_port import quantization
        >>> quantization.calculate_qmin_qmax(None, None, "quint8", reduce_range=True)
        (0, 127)
        >>> quantization.calculate_qmin_qmax(-8, 7, "qint8")
        (-8, 7)
    """
    name = dtype_name(dtype)
    if quant_min is not None and quant_max is not None:
        validate_qmin_qmax(quant_min, quant_max)
        qrange_len = quant_max - quant_min + 1
        if name == "qint8" and not 0 < qrange_len <= 256:
            raise AssertionError(
                "quantization range should be positive and not exceed the maximum bit range (=256)."
            )
        if name == "qint32" and not 0 < qrange_len <= 2**32:
            raise AssertionError(
                "quantization range should be positive and not exceed the maximum bit range "
                "(=4294967296)."
            )
        if reduce_range:
            quant_min, quant_max = quant_min // 2, quant_max // 2
        return quant_min, quant_max
    if name == "qint8":
        return (-64, 63) if reduce_range else (-128, 127)
    if name == "quint8":
        return (0, 127) if reduce_range else (0, 255)
    return -(2**31), 2**31 - 1
