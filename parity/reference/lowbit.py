"""A NumPy float32 reference of torchao's low-bit Adam/AdamW (``torchao.optim``), written from the
formula and torchao 0.18's rounding, independent of JAX and torch.

Every operation is one float32 NumPy operation (correctly rounded), except ``lerp``, which torch's
CPU kernel evaluates as one fused multiply-add, ``fma(w, end - start, start)``: emulated here in
float64 (the product of two float32 values is exact in float64; the sum is rounded twice, which
differs from one rounding only on a float64 tie, never met in practice). Bias corrections are
$1 - \\mathrm{fl}(\\beta^t)$ with $\\beta$ and $t$ in float32 and the power correctly rounded.

The quantization maps are arguments (torchao's tables), so that this module checks the
arithmetic, not a copy of the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LowBitState",
    "apply_as_update",
    "dequantize",
    "fp8_e4m3fn",
    "lowbit_adam_step",
    "quantize",
]

F32 = np.float32
MIN_QUANTIZED_SIZE = 4096


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch's CPU ``lerp`` with a scalar weight: ``fma(w, end - start, start)`` for
    ``|w| < 0.5``, else ``fma(w - 1, end - start, end)``."""
    w = F32(weight)
    diff = (end - start).astype(np.float64)
    if abs(w) < 0.5:
        return (np.float64(w) * diff + start.astype(np.float64)).astype(F32)
    return (np.float64(w - F32(1)) * diff + end.astype(np.float64)).astype(F32)


def fp8_e4m3fn(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float8_e4m3fn value (ties to even), as float32.

    e4m3fn: 3 mantissa bits, exponent bias 7, no infinities, largest 448; subnormals below
    $2^{-6}$ with step $2^{-9}$. Inputs here have $|x| \\le 448$ (up to rounding).
    """
    x = np.asarray(x, np.float64)
    mag = np.abs(x)
    exponent = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    step = 2.0 ** (np.maximum(exponent, -6) - 3)
    rounded = np.round(mag / step) * step  # np.round: half to even, exact in float64
    return (np.sign(x) * np.minimum(rounded, 448.0)).astype(F32)


def quantize(x: np.ndarray, table: np.ndarray | None, block_size: int):
    """torchao's block quantization of a float32 state: ``(codes, scale)``.

    ``table`` None means FP8: scale $= \\max|x| / 448$ per block, codes the float8 values (as
    float32). Otherwise scale $= \\max|x|$ (clipped at 1e-12) and codes the index of the nearest
    table entry to ``x / scale``, ties to the larger index (as uint8, one per value).
    """
    blocks = x.reshape(-1, block_size)
    scale = np.maximum(np.abs(blocks).max(axis=1), F32(1e-12)).astype(F32)
    if table is None:
        scale = (scale / F32(448.0)).astype(F32)
        return fp8_e4m3fn(blocks / scale[:, None]).reshape(x.shape), scale
    normalized = (blocks / scale[:, None]).astype(F32)
    below = np.clip(np.searchsorted(table, normalized, side="right") - 1, 0, len(table) - 1)
    up = np.minimum(below + 1, len(table) - 1)
    residual = normalized - table[below]
    codes = np.where(residual >= (table[up] - table[below]) * F32(0.5), up, below)
    return codes.astype(np.uint8).reshape(x.shape), scale


def dequantize(codes: np.ndarray, scale: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """``table[codes] * scale`` per block (FP8: ``codes * scale``), float32."""
    values = codes.astype(F32) if table is None else table[codes.astype(np.int64)]
    block_size = codes.size // scale.size
    return (values.reshape(-1, block_size) * scale[:, None]).astype(F32).reshape(codes.shape)


@dataclass
class LowBitState:
    """One parameter's state: each moment is ``(codes, scale)`` when quantized, else an array."""

    step: int = 0
    moments: dict = field(default_factory=dict)


def lowbit_adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    state: LowBitState,
    *,
    tables: tuple[np.ndarray | None, np.ndarray | None],
    block_size: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
    amsgrad: bool = False,
) -> np.ndarray:
    """One torchao step of a float32 parameter; updates ``state`` in place, returns the parameter.

    ``tables``: (map of the first moment, map of the second moment), ``None`` for FP8. A state is
    quantized iff the parameter has at least 4096 values and a whole number of blocks.
    """
    quantized = param.size >= MIN_QUANTIZED_SIZE and param.size % block_size == 0
    names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    owners = {"exp_avg": 0, "exp_avg_sq": 1, "max_exp_avg_sq": 1}

    def load(name):
        stored = state.moments.get(name)
        if stored is None:
            return np.zeros(param.shape, F32)
        if quantized:
            return dequantize(*stored, tables[owners[name]])
        return stored

    def save(name, value):
        state.moments[name] = (
            quantize(value, tables[owners[name]], block_size) if quantized else value
        )

    beta1, beta2 = betas
    state.step += 1
    step = F32(state.step)
    lr32, wd32 = F32(lr), F32(weight_decay)
    p, g = param.astype(F32), grad.astype(F32)
    if decoupled:
        p = p - (lr32 * wd32) * p
    else:
        g = g + wd32 * p
    bias_correction1 = F32(1) - F32(np.float64(F32(beta1)) ** np.float64(step))
    bias_correction2 = F32(1) - F32(np.float64(F32(beta2)) ** np.float64(step))
    m = _lerp(load("exp_avg"), g, 1 - beta1)
    v = _lerp(load("exp_avg_sq"), g * g, 1 - beta2)
    values = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = values["max_exp_avg_sq"] = np.maximum(load("max_exp_avg_sq"), v)
    for name in names:
        save(name, values[name])
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + F32(eps)
    return (p - lr32 * (m / bias_correction1) / denom).astype(F32)


def apply_as_update(param: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The parameter an Optax transformation reaches when it returns ``new - param`` and
    ``optax.apply_updates`` adds it back, in float32: ``new`` itself whenever the subtraction is
    exact (the two within a factor 2), else one more rounding of the size of the step."""
    param = param.astype(F32)
    return (param + (new.astype(F32) - param)).astype(F32)
