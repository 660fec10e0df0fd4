r"""PARQ's quantizers: the target levels $Q$ of a tensor and its hard quantization $q$.

Each quantizer is torchao's `torchao.prototype.parq.quant` class of the same name, in JAX: a
small object holding its options, whose `quantize(p, b, dim=None)` returns `(q, Q)` — `q` the
tensor rounded to its levels, `Q` the sorted levels (shape `(n_levels,)`, or `(rows,
n_levels)` with `dim=-1`, one set per row). Everything is traced and compiles once.

Bitwise notes (measured against torchao 0.18.0 on CPU): every element-wise step (clamp,
true division by the scale, half-to-even rounding, the levels) is bit-equal to torchao. The
mean $\overline{|p|}$ that sets the scale is a float sum in another order than torch's, so on
general float32 inputs it can be one ulp off torch's (and the scale with it); where the sum is
exact in any order (e.g. values on a coarse dyadic grid) the whole result is bit-equal.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LSBQuantizer",
    "MaxUnifQuantizer",
    "Quantizer",
    "TernaryUnifQuantizer",
    "UnifQuantizer",
    "true_divide",
]


def true_divide(x: jax.Array, y: jax.Array) -> jax.Array:
    """`x / y` correctly rounded, `y` broadcast to `x`'s shape (torch's true division).

    XLA rewrites a division by a broadcast value into a multiplication by its reciprocal (two
    roundings: one ulp off in about a third of float32 quotients); an optimization barrier on
    the divisor, once broadcast to the full shape, keeps the division. Under `jax.vmap` the
    divisor is broadcast over the batch too (a plain barrier would be batched before the
    broadcast and the rewrite would come back).
    """
    x = jnp.asarray(x)
    return _divide(x, jnp.broadcast_to(jnp.asarray(y, x.dtype), x.shape))


@jax.custom_batching.custom_vmap
def _divide(x: jax.Array, y: jax.Array) -> jax.Array:
    return x / jax.lax.optimization_barrier(y)


@_divide.def_vmap
def _divide_batched(axis_size: int, in_batched: list, x: jax.Array, y: jax.Array):
    x, y = (
        v if batched else jnp.broadcast_to(v, (axis_size, *v.shape))
        for v, batched in zip((x, y), in_batched, strict=True)
    )
    return _divide(x, y), True


def _keep(dim: int | None) -> bool:
    return dim is not None


def _abs_mean(p: jax.Array, dim: int | None) -> jax.Array:
    # torch's mean: a float sum, then a true division by the count
    total = jnp.sum(jnp.abs(p), axis=dim, keepdims=_keep(dim))
    n = p.size if dim is None else p.shape[dim]
    return true_divide(total, jnp.asarray(n, p.dtype))


def _binary_sign(x: jax.Array) -> jax.Array:
    """`sign(x)` with `sign(0) = 1` (torchao's `binary_sign`)."""
    return jnp.where(x == 0, jnp.ones_like(x), jnp.sign(x))


class Quantizer:
    """Base of the PARQ quantizers.

    Args:
      center: subtract the mean (of the tensor, or of each row with `dim=-1`) before quantizing
        and add it back to `q` and `Q` (torchao's `center`).
    """

    def __init__(self, center: bool = False) -> None:
        self.center = center

    def get_quant_size(self, b: int) -> int:
        """The number of levels for `b` bits."""
        raise NotImplementedError

    def quantize(self, p: jax.Array, b: int, dim: int | None = None) -> tuple[jax.Array, jax.Array]:
        """`(q, Q)`: `p` hard-quantized and its sorted levels (per row with `dim=-1`)."""
        centered, mean = self._centered(p, dim)
        q, Q = self._quantize(centered, b, dim)
        if self.center:
            q, Q = q + mean, Q + mean
        return q, Q

    def _centered(self, p: jax.Array, dim: int | None) -> tuple[jax.Array, jax.Array]:
        if not self.center:
            return p, jnp.zeros((), p.dtype)
        mean = true_divide(
            jnp.sum(p, axis=dim, keepdims=_keep(dim)),
            jnp.asarray(p.size if dim is None else p.shape[dim], p.dtype),
        )
        return p - mean, mean

    def _quantize(self, p: jax.Array, b: int, dim: int | None) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _levels(values: np.ndarray, s: jax.Array, dim: int | None) -> jax.Array:
    """`values · s`: `(n,)` for a scalar scale, `(rows, n)` for a per-row scale `(rows, 1)`."""
    Q = jnp.asarray(values, s.dtype)
    return Q * s if dim is None else Q[None, :] * s


class UnifQuantizer(Quantizer):
    r"""Uniform symmetric quantizer (torchao's `UnifQuantizer`).

    With $r = 2^{b-1} - \text{int\_shift}$ and $z_0$ = `zero_point`:

    $$q_{\max} = \max\bigl(\min(b\,\overline{|p|},\ \max|p|),\ \text{tiny}\bigr)
    \ (\text{`scale\_method="mean"`}),\qquad s = q_{\max} / r,$$
    $$q = \bigl(\operatorname{round}(\operatorname{clamp}(p, -q_{\max}, q_{\max}) / s - z_0)
    + z_0\bigr)\, s,\qquad Q = s\cdot\{-r, -r+1, \dots, r\},$$

    rounding half to even and dividing truly (not by a reciprocal). The defaults give the
    $2^b$ levels $s\cdot\{\pm 0.5, \pm 1.5, \dots\}$.

    Args:
      center: subtract the mean first.
      scale_method: `"mean"` ($q_{\max} = \min(b\,\overline{|p|}, \max|p|)$) or `"max"`
        ($\max|p|$).
      int_shift: $r = 2^{b-1} - \text{int\_shift}$.
      zero_point: the shift $z_0$ around the rounding.

    Examples:
      >>> import jax.numpy as jnp
      >>> q, Q = UnifQuantizer().quantize(jnp.array([-1.0, -0.5, 0.25, 0.25]), 1)
      >>> Q.tolist()  # 1 bit: q_max = min(1 * mean|p|, max|p|) = 0.5, levels ±q_max
      [-0.5, 0.5]
      >>> q.tolist()
      [-0.5, -0.5, 0.5, 0.5]
    """

    def __init__(
        self,
        center: bool = False,
        scale_method: str = "mean",
        int_shift: float = 0.5,
        zero_point: float = 0.5,
    ) -> None:
        if scale_method not in ("max", "mean"):
            raise ValueError(f"Invalid scale_method={scale_method!r}, choices=('mean','max')")
        super().__init__(center)
        self.scale_method = scale_method
        self.int_shift = int_shift
        self.zero_point = zero_point

    def get_quant_size(self, b: int) -> int:
        """$\\lfloor 2^b - 2\\,\\text{int\\_shift} \\rfloor + 1$ levels."""
        return math.floor(2**b - 2 * self.int_shift) + 1

    def _q_max(self, p: jax.Array, b: int, dim: int | None) -> jax.Array:
        a = jnp.abs(p)
        q_max = jnp.max(a, axis=dim, keepdims=_keep(dim))
        if self.scale_method == "mean":
            q_max = jnp.minimum(jnp.asarray(b, p.dtype) * _abs_mean(p, dim), q_max)
        return jnp.maximum(q_max, jnp.finfo(p.dtype).tiny)

    def _quantize(self, p: jax.Array, b: int, dim: int | None) -> tuple[jax.Array, jax.Array]:
        if b == 0:
            raise ValueError("b=0 is ternary: use TernaryUnifQuantizer instead")
        q_max = self._q_max(p, b, dim)
        r = 2 ** (b - 1) - self.int_shift
        s = true_divide(q_max, jnp.asarray(r, p.dtype))
        z0 = jnp.asarray(self.zero_point, p.dtype)
        q = jnp.minimum(jnp.maximum(p, -q_max), q_max)
        q = (jnp.round(true_divide(q, s) - z0) + z0) * s
        return q, _levels(np.arange(-r, r + 1e-5), s, dim)


class MaxUnifQuantizer(UnifQuantizer):
    """[`UnifQuantizer`][jaxopt_port.prox.UnifQuantizer] with torchao's `MaxUnifQuantizer`
    defaults: scale from $\\max|p|$, `int_shift=1`, `zero_point=0` — the $2^b - 1$ levels
    $s\\cdot\\{-(2^{b-1}-1), \\dots, 0, \\dots, 2^{b-1}-1\\}$.

    Args:
      center: subtract the mean first.
      scale_method: as in `UnifQuantizer` (default `"max"`).
      int_shift: default 1.
      zero_point: default 0.
    """

    def __init__(
        self,
        center: bool = False,
        scale_method: str = "max",
        int_shift: float = 1.0,
        zero_point: float = 0.0,
    ) -> None:
        super().__init__(center, scale_method, int_shift, zero_point)


class TernaryUnifQuantizer(Quantizer):
    r"""Ternary uniform quantizer (torchao's `TernaryUnifQuantizer`, used with `b=0`):
    $s = \max(\max|p|, \text{tiny}) / 1.5$, $q = \operatorname{clamp}(\operatorname{round}(p/s),
    -1, 1)\,s$, $Q = s\cdot\{-1, 0, 1\}$.

    Args:
      center: subtract the mean first.
    """

    def get_quant_size(self, b: int) -> int:
        """3 levels."""
        return 3

    def _quantize(self, p: jax.Array, b: int, dim: int | None) -> tuple[jax.Array, jax.Array]:
        if b != 0:
            raise ValueError(f"Unexpected b={b} for ternary case: TernaryUnifQuantizer needs b=0")
        q_max = jnp.maximum(
            jnp.max(jnp.abs(p), axis=dim, keepdims=_keep(dim)), jnp.finfo(p.dtype).tiny
        )
        s = true_divide(q_max, jnp.asarray(1.5, p.dtype))
        q = jnp.clip(jnp.round(true_divide(p, s)), -1, 1) * s
        return q, _levels(np.array([-1.0, 0.0, 1.0]), s, dim)


class LSBQuantizer(Quantizer):
    r"""Least-squares binary quantizer (torchao's `LSBQuantizer`), greedy: $r_0 = p$, and for
    $k = 1..b$: $v_k = \overline{|r_{k-1}|}$, $r_k = r_{k-1} - v_k\,\operatorname{sign}(r_{k-1})$
    (sign 0 = 1); $q = p - r_b$, $Q$ = the sorted $\sum_k \pm v_k$. `b=0` is the simple ternary
    heuristic $v = m\,\overline{|p|}$ ($m$ = `ternary_multiplier`), $Q = v\cdot\{-1, 0, 1\}$, $q$
    the level whose bucket $(\dots, -v/2], (-v/2, v/2], (v/2, \dots)$ holds $p$.

    Args:
      center: subtract the mean first.
      optimal: torchao's exact 2-bit/ternary search; not available here (`NotImplementedError`).
      ternary_multiplier: $m$ for `b=0`.
      levels_dtype: the dtype of the per-tensor ternary levels (`b=0`, `dim=None`) before they
        are cast to the weight's: torchao computes them in torch's default dtype (float32 unless
        changed, also for float64 weights); `None` (default) keeps the weight's dtype, which
        equals torchao whenever torch's default dtype is the weight's.
    """

    def __init__(
        self,
        center: bool = False,
        optimal: bool = False,
        ternary_multiplier: float = 1.1,
        levels_dtype: Any = None,
    ) -> None:
        if optimal:
            raise NotImplementedError(
                "LSBQuantizer(optimal=True) (torchao's data-dependent search) is not available "
                "in JAX; use the greedy optimal=False"
            )
        super().__init__(center)
        self.optimal = optimal
        self.ternary_multiplier = ternary_multiplier
        self.levels_dtype = levels_dtype

    def get_quant_size(self, b: int) -> int:
        """$2^b$ levels ($3$ for `b=0`)."""
        return 2**b if b > 0 else 3

    def _quantize(self, p: jax.Array, b: int, dim: int | None) -> tuple[jax.Array, jax.Array]:
        if b < 0:
            raise ValueError(f"Invalid b={b}; must be nonnegative")
        if b == 0:
            v = jnp.asarray(self.ternary_multiplier, p.dtype) * _abs_mean(p, dim)
            if dim is None and self.levels_dtype is not None:
                # torchao: a 0-d v times a list tensor of torch's default dtype takes that dtype
                v = v.astype(self.levels_dtype)
            Q = _levels(np.array([-1.0, 0.0, 1.0]), v, dim)
            bounds = _levels(np.array([-0.5, 0.5]), v, dim).astype(p.dtype)
            Q = Q.astype(p.dtype)
            return take_levels(Q, bucketize(p, bounds, dim), dim), Q
        r, vs = p, []
        for _ in range(b):
            v = _abs_mean(r, dim)
            r = r - _binary_sign(r) * v
            vs.append(v)
        # the 2^b sign patterns (lexicographic) times the v_k, summed in order as a matmul does
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=b)))
        Q = sum(_levels(signs[:, k], vs[k], dim) for k in range(b))
        return p - r, jnp.sort(Q, axis=-1)


def bucketize(p: jax.Array, bounds: jax.Array, dim: int | None) -> jax.Array:
    """torch's `bucketize(p, bounds)` (right=False): the number of bounds strictly below each
    value; with `dim=-1`, row `i` of `p` against row `i` of `bounds` (torchao's
    `channel_bucketize`)."""
    if dim is None:
        return jnp.searchsorted(bounds, p, side="left", method="compare_all")
    return jax.vmap(lambda b, x: jnp.searchsorted(b, x, side="left", method="compare_all"))(
        bounds, p
    )


def take_levels(Q: jax.Array, idx: jax.Array, dim: int | None) -> jax.Array:
    """`Q[idx]`, per row with `dim=-1`."""
    Q = jnp.asarray(Q)
    return Q[idx] if dim is None else jnp.take_along_axis(Q, idx, axis=1)
