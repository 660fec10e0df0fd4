"""Block-wise quantization of optimizer states, as torchao's `OptimState8bit`,
`OptimState4bit` and `OptimStateFp8` store them.

A state tensor is cut, in C order, into blocks of `block_size` values; each block keeps one
float32 scale, its absolute maximum (clipped below at $10^{-12}$; for FP8 divided by 448, the
largest float8_e4m3fn), and each value the code of the map entry nearest to `value / scale`
(ties go to the larger code). Dequantization is `map[code] * scale`.

Every step below rounds where torch rounds. XLA would otherwise (a) turn a division by a
broadcast scale into a multiplication by its reciprocal (a one-ulp difference in 1 of 4 values,
enough to move a code across a boundary) and (b) fuse a product into the following addition as one
multiply-add; `divide` and `rounded` stop them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxopt_port.optim._lowbit_maps import SIGNED_4BIT, SIGNED_8BIT, UNSIGNED_4BIT, UNSIGNED_8BIT

__all__ = [
    "MIN_QUANTIZED_SIZE",
    "QuantizedArray",
    "StateFormat",
    "divide",
    "nearest_code",
    "opaque_zero",
    "rounded",
]

#: States with fewer values stay unquantized (torchao follows bitsandbytes).
MIN_QUANTIZED_SIZE = 4096
_FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
_SCALE_MIN = np.float32(1e-12)


class QuantizedArray(NamedTuple):
    """One quantized state tensor, stored as torchao stores it.

    Attributes:
      codes: `uint8` codes in the state's shape (8-bit), two 4-bit codes per byte in a flat
        array (4-bit: the first value in the high nibble), or `float8_e4m3fn` values in the
        state's shape (FP8).
      scale: float32, one per block of `block_size` values in C order.
    """

    codes: jax.Array
    scale: jax.Array


def as_quantized(stored: Any) -> QuantizedArray | None:
    """`stored` as a `QuantizedArray`, or `None` for a plain array.

    `flax.nnx.Optimizer` writes each update's state back into its own containers, which turns a
    `QuantizedArray` into a mapping with the same two fields: both forms are read here."""
    if isinstance(stored, QuantizedArray) or hasattr(stored, "dtype"):
        return stored if isinstance(stored, QuantizedArray) else None
    try:
        return QuantizedArray(stored["codes"], stored["scale"])
    except (KeyError, TypeError, AttributeError):
        return None


def opaque_zero(value: jax.Array) -> jax.Array:
    """A uint32 zero XLA cannot see is zero: the sign bit of `value`, a non-negative float32
    that is an input of the computation (the step counter)."""
    return lax.bitcast_convert_type(value.astype(jnp.float32), jnp.uint32) >> 31


def rounded(x: jax.Array, zero: jax.Array) -> jax.Array:
    """`x` (float32, a product), rounded on its own: what follows cannot fuse it into a
    multiply-add.

    torch rounds every operation on its own; XLA (LLVM) fuses a product into a following addition
    (one rounding, not two). Passing `x` through its bits xor an opaque zero
    (`opaque_zero`) costs two integer operations per value and stops it.
    """
    bits = lax.bitcast_convert_type(x, jnp.uint32) ^ zero
    return lax.bitcast_convert_type(bits, jnp.float32)


def divide(x: jax.Array, y: jax.Array) -> jax.Array:
    """`x / y` correctly rounded, `y` broadcast to `x`'s shape (torch's true division).

    XLA rewrites a division by a broadcast value into a multiplication by its reciprocal (two
    roundings, one ulp off in about a quarter of the values); an optimization barrier around the
    broadcast divisor keeps the division.
    """
    return x / lax.optimization_barrier(jnp.broadcast_to(y, x.shape))


def nearest_code(x: jax.Array, table: np.ndarray) -> jax.Array:
    """The code of the map entry nearest to each value of `x`; a tie goes to the larger code.

    torchao's branchless binary search: the largest code whose entry is `<= x` (0 below the
    map, and for NaN), then one up where `x - map[c] >= (map[c+1] - map[c]) / 2`.
    """
    levels = jnp.asarray(table)
    size = len(table)
    codes = jnp.zeros(x.shape, jnp.int32)
    step = size // 2
    while step:
        codes = codes + jnp.where(x >= levels[codes + step], step, 0)
        step //= 2
    up = jnp.minimum(codes + 1, size - 1)
    down_value = levels[codes]
    residual = x - down_value
    return jnp.where(residual >= (levels[up] - down_value) * 0.5, up, codes).astype(jnp.uint8)


@dataclass(frozen=True)
class StateFormat:
    """How one optimizer state is stored: `bits` 8 or 4 with a map, or `"fp8"`.

    Attributes:
      bits: 8, 4 or `"fp8"` (float8_e4m3fn codes).
      signed: the signed dynamic-tree map (Adam's first moment) or the unsigned one (second
        moment: dynamic tree in 8 bits, linear $k/16$ in 4 bits). Ignored for FP8.
      block_size: values per scale.
    """

    bits: Any
    signed: bool
    block_size: int

    @property
    def table(self) -> np.ndarray:
        if self.bits == 8:
            return SIGNED_8BIT if self.signed else UNSIGNED_8BIT
        return SIGNED_4BIT if self.signed else UNSIGNED_4BIT

    def quantized(self, size: int) -> bool:
        """torchao's size rule: only states of at least 4096 values that fill whole blocks are
        quantized; the others stay plain tensors in the parameter's dtype."""
        return size >= MIN_QUANTIZED_SIZE and size % self.block_size == 0

    def zeros(self, shape: tuple[int, ...]) -> QuantizedArray:
        """The quantized zero state (all codes 0, all scales 0), as torchao initialises it."""
        size = int(np.prod(shape, dtype=np.int64))
        scale = jnp.zeros(size // self.block_size, jnp.float32)
        if self.bits == "fp8":
            return QuantizedArray(jnp.zeros(shape, jnp.float8_e4m3fn), scale)
        if self.bits == 4:
            return QuantizedArray(jnp.zeros(size // 2, jnp.uint8), scale)
        return QuantizedArray(jnp.zeros(shape, jnp.uint8), scale)

    def quantize(self, x: jax.Array, zero: jax.Array) -> QuantizedArray:
        """Quantize a float32 state (torchao's `copy_` into the quantized tensor); `zero`:
        `opaque_zero`."""
        blocks = x.reshape(-1, self.block_size)
        scale = jnp.maximum(jnp.max(jnp.abs(blocks), axis=1), _SCALE_MIN)
        if self.bits == "fp8":
            scale = divide(scale, jnp.float32(_FP8_MAX))
            codes = divide(blocks, scale[:, None]).astype(jnp.float8_e4m3fn)
            return QuantizedArray(codes.reshape(x.shape), scale)
        codes = nearest_code(divide(blocks, scale[:, None]), self.table).reshape(-1)
        if self.bits == 4:
            return QuantizedArray((codes[::2] << 4) | codes[1::2], scale)
        return QuantizedArray(codes.reshape(x.shape), scale)

    def dequantize(self, q: QuantizedArray, shape: tuple[int, ...], zero: jax.Array) -> jax.Array:
        """The float32 state `map[code] * scale` (FP8: `float32(code) * scale`), rounded on
        its own (`zero`: `opaque_zero`)."""
        if self.bits == "fp8":
            values = q.codes.astype(jnp.float32)
        else:
            codes = q.codes
            if self.bits == 4:
                codes = jnp.stack([codes >> 4, codes & 0b1111], axis=-1)
            values = jnp.asarray(self.table)[codes.astype(jnp.int32)]
        blocks = values.reshape(-1, self.block_size) * q.scale[:, None]
        return rounded(blocks.reshape(shape), zero)
