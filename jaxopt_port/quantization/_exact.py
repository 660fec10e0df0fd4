"""Exact float32 arithmetic that XLA cannot rewrite: fma, products and quotients rounded once.

XLA changes float32 results in two ways that matter for bit-exact quantization:

- it *contracts* a multiply feeding an add into one fused multiply-add (one rounding instead of
  two) whenever it fuses the two operations, which it does under `jax.jit` and even for a single
  eager expression;
- it rewrites a division by a broadcast scalar, `x / s`, into `x * (1 / s)` (two roundings), so a
  quotient such as `(max - min) / 255` is not the correctly rounded one torch computes.

The helpers here give the IEEE-754 single-rounding results whatever the compiler does, without
float64: products are split into 12-bit halves (Dekker) whose partial products are exact, so a
contraction of them changes nothing; a product that must stay rounded is passed through
`no_contract` (an integer round trip the compiler
cannot see through); sums are made exact with Knuth's TwoSum; the fused multiply-add is the
Boldo–Melquiond emulation (round to odd, then to nearest).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

_F32 = jnp.float32
_HIGH_MASK = jnp.uint32(0xFFFFF000)
"""Keeps the sign, the exponent and the top 11 stored mantissa bits: 12 significant bits."""
_SPLIT_LIMIT = 2.0**100
"""Beyond this magnitude a float32 is an integer and products no longer need splitting."""


def no_contract(p):
    """Return `p` unchanged, hidden from the compiler's multiply-add contraction.

    The float's bits are XOR-ed with `p != p` (0 unless `p` is NaN, where only a NaN payload bit
    changes): the compiler cannot prove that the value is the product it came from, so an addition
    that follows rounds the product first, as an unfused CPU kernel does.
    """
    bits = lax.bitcast_convert_type(p, jnp.uint32)
    flag = (p != p).astype(jnp.uint32)
    return lax.bitcast_convert_type(bits ^ flag, _F32)


def _split(a):
    high = lax.bitcast_convert_type(lax.bitcast_convert_type(a, jnp.uint32) & _HIGH_MASK, _F32)
    return high, a - high


def two_product(a, b):
    """`(p, e)` with `p = fl(a·b)` and `p + e = a·b` exactly (no overflow or underflow assumed)."""
    p = no_contract(a * b)
    ah, al = _split(a)
    bh, bl = _split(b)
    # Every partial product below is exact, so contracting it into an fma changes nothing.
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def two_sum(a, b):
    """`(s, e)` with `s = fl(a + b)` and `s + e = a + b` exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _add_round_to_odd(a, b):
    s, e = two_sum(a, b)
    even = (lax.bitcast_convert_type(s, jnp.uint32) & 1) == 0
    bumped = jnp.nextafter(s, jnp.where(e > 0, _F32(jnp.inf), _F32(-jnp.inf)))
    return jnp.where((e != 0) & even, bumped, s)


def fma(a, b, c):
    """$\\mathrm{fl}(a b + c)$ rounded once to float32, as the C `fmaf` and x86 `vfmadd` compute.

    Boldo and Melquiond's emulation: $(u_h, u_l) = \\mathrm{TwoProduct}(a, b)$,
    $(t_h, t_l) = \\mathrm{TwoSum}(c, u_h)$, $v = \\mathrm{RO}(t_l + u_l)$ (round to odd),
    result $= \\mathrm{RN}(t_h + v)$. Products too large to split (beyond $2^{100}$) and
    non-finite values fall back to the plain expression, which is then exact or saturated.
    """
    a, b, c = (jnp.asarray(v, _F32) for v in (a, b, c))
    uh, ul = two_product(a, b)
    th, tl = two_sum(c, uh)
    exact = th + _add_round_to_odd(tl, ul)
    plain = uh + c
    usable = jnp.isfinite(exact) & (jnp.abs(uh) < _SPLIT_LIMIT) & (jnp.abs(c) < _SPLIT_LIMIT)
    return jnp.where(usable, exact, plain)


def multiply_add(a, b, c):
    """$\\mathrm{fl}(\\mathrm{fl}(a b) + c)$: two roundings, as an unfused kernel computes."""
    return no_contract(jnp.asarray(a, _F32) * jnp.asarray(b, _F32)) + jnp.asarray(c, _F32)


def divide(a, b):
    """$\\mathrm{fl}(a / b)$ correctly rounded in float32, even where XLA uses a reciprocal.

    The compiler's quotient is within one unit in the last place; of it and its two neighbours
    the one with the smallest exact residual $|a - q b|$ (Dekker's product) is the correctly
    rounded quotient (a binary quotient is never halfway between two floats).
    """
    a = jnp.asarray(a, _F32)
    b = jnp.asarray(b, _F32)
    q = a / b
    down = jnp.nextafter(q, _F32(-jnp.inf))
    up = jnp.nextafter(q, _F32(jnp.inf))

    def residual(c):
        p, e = two_product(c, b)
        return jnp.abs((a - p) - e)

    r_q, r_down, r_up = residual(q), residual(down), residual(up)
    best = jnp.where(r_down < r_q, down, q)
    best = jnp.where(r_up < jnp.minimum(r_q, r_down), up, best)
    usable = jnp.isfinite(q) & (q != 0) & (jnp.abs(q) < _SPLIT_LIMIT) & (jnp.abs(b) < _SPLIT_LIMIT)
    return jnp.where(usable, best, q)
