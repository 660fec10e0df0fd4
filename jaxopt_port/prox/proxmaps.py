r"""PARQ's proximal maps: from the latent weight $z$ (after the inner optimizer's step) and the
levels $Q$ to the model's weight $p$ (torchao's `ProxHardQuant`, `ProxPARQ`, `ProxBinaryRelax`).

Each map's `apply(p, q, Q, step, dim)` returns the new weight; `q` is the hard quantization of
`p` (the quantizer's on a step that recomputes $Q$, else the nearest level of $Q$ — torchao's
`q=None` case). The step-dependent coefficients ($\rho_t$, $\theta_t$) are computed on the host
in Python floats, exactly as torchao computes them, once per step of the annealing window, and
the table is indexed by the traced step: the sequences equal torchao's bit for bit, in float32
and float64 alike.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.prox.quantizers import bucketize, take_levels, true_divide

__all__ = [
    "ProxBinaryRelax",
    "ProxHardQuant",
    "ProxMap",
    "ProxPARQ",
    "nearest_level",
    "normalized_mirror_sigmoid",
]


def nearest_level(p: jax.Array, Q: jax.Array, dim: int | None) -> jax.Array:
    """The level of the sorted `Q` nearest to each value of `p` (a tie at a midpoint goes to the
    lower level), per row with `dim=-1` — torchao's `Q[bucketize(p, (Q[:-1] + Q[1:]) / 2)]`."""
    mid = (Q[..., :-1] + Q[..., 1:]) / 2
    return take_levels(Q, bucketize(p, mid, dim), dim)


def normalized_mirror_sigmoid(t: float, t1: float, t2: float, s: float, c: float) -> float:
    r"""PARQ's inverse slope $\rho_t$, decreasing from 1 at $t_1$ towards 0 at $t_2$ (Python
    floats, torchao's formula): with $f = (t - t_1)/(t_2 - t_1)$ and $\sigma(x) = 1/(1 + e^x)$,
    $$\rho_t = \frac{\sigma(s(f - c)) - \sigma(s/2)}{\sigma(-s/2) - \sigma(s/2)}.$$

    Args:
      t: the step, $t_1 \le t < t_2$.
      t1: `anneal_start`.
      t2: `anneal_end`.
      s: `steepness`.
      c: `anneal_center`.

    Returns:
      $\rho_t$ as a Python float.

    Raises:
      ValueError: `t` outside $[t_1, t_2)$.
    """
    if not t1 <= t < t2:
        raise ValueError(f"Normalized sigmoid: ensure t1 <= t < t2, got t={t}, t1={t1}, t2={t2}")
    ft = (t - t1) / (t2 - t1)
    st = 1 / (1 + math.exp(s * (ft - c)))
    s1 = 1 / (1 + math.exp(-0.5 * s))
    s2 = 1 / (1 + math.exp(0.5 * s))
    return (st - s2) / (s1 - s2)


def _table(values: list[float], dtype: jnp.dtype, step: jax.Array, start: int) -> jax.Array:
    """`values[step - start]` (clamped to the table) in `dtype`, rounded once from the double."""
    table = jnp.asarray(np.asarray(values, np.float64), dtype)
    return table[jnp.clip(step - start, 0, len(values) - 1)]


class ProxMap:
    """Base of the PARQ proximal maps."""

    def apply(
        self, p: jax.Array, q: jax.Array, Q: jax.Array, step: jax.Array, dim: int | None = None
    ) -> jax.Array:
        """The new weight from `p` (latent, possibly shrunk), its hard quantization `q`, the
        levels `Q` and the step (torchao's `num_steps` before this step)."""
        raise NotImplementedError

    def inv_slope(self, step: jax.Array, dtype: jnp.dtype) -> jax.Array | None:
        """The inverse slope at `step` (PARQ's $\\rho_t$), `None` for maps without one."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ProxHardQuant(ProxMap):
    """Hard quantization (the straight-through estimator): $p \\leftarrow q$.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = jnp.array([0.2, 0.9])
      >>> ProxHardQuant().apply(p, jnp.array([0.5, 1.5]), jnp.array([-0.5, 0.5]), 0).tolist()
      [0.5, 1.5]
    """

    def apply(self, p, q, Q, step, dim=None):
        return q


class ProxPARQ(ProxMap):
    r"""PARQ's piecewise-affine proximal map with an annealed slope (torchao's `ProxPARQ`).

    Before `anneal_start` the weight is the latent $p$ unchanged ($\rho = 1$); from
    `anneal_end` on it is $q$. In between, with $\rho_t$ =
    [`normalized_mirror_sigmoid`][jaxopt_port.prox.normalized_mirror_sigmoid]$(t)$ (at least the
    dtype's smallest normal), $[q_\text{lo}, q_\text{hi}]$ the levels around $p$
    ($q_\text{lo}$ the largest level $< p$, $q_\text{hi}$ the smallest $\ge p$, both clamped
    into $Q$) and $c = (q_\text{lo} + q_\text{hi})/2$:
    $$p \leftarrow \operatorname{clamp}\bigl(c + (p - c)/\rho_t,\ q_\text{lo},\ q_\text{hi}\bigr).$$

    Args:
      anneal_start: first step of the annealing.
      anneal_end: first step of hard quantization (`> anneal_start`).
      steepness: $s > 0$ of the sigmoid.
      anneal_center: $c$ of the sigmoid (fraction of the window).

    Raises:
      ValueError: `anneal_start >= anneal_end` or `steepness <= 0`.
    """

    def __init__(
        self, anneal_start: int, anneal_end: int, steepness: float = 10, anneal_center: float = 0.5
    ) -> None:
        if not anneal_start < anneal_end:
            raise ValueError(
                f"PARQ annealing: start before end (anneal_start={anneal_start}, "
                f"anneal_end={anneal_end})"
            )
        if not steepness > 0:
            raise ValueError(f"PARQ annealing steepness should be positive, got {steepness}")
        self.anneal_start = anneal_start
        self.anneal_end = anneal_end
        self.steepness = steepness
        self.anneal_center = anneal_center

    def rhos(self) -> list[float]:
        """$\\rho_t$ for every step of the window `[anneal_start, anneal_end)` (Python floats)."""
        return [
            normalized_mirror_sigmoid(
                t, self.anneal_start, self.anneal_end, self.steepness, self.anneal_center
            )
            for t in range(self.anneal_start, self.anneal_end)
        ]

    def inv_slope(self, step, dtype):
        tiny = jnp.finfo(dtype).tiny
        rho = jnp.maximum(_table(self.rhos(), dtype, step, self.anneal_start), tiny)
        one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
        return jnp.where(
            step < self.anneal_start, one, jnp.where(step >= self.anneal_end, zero, rho)
        )

    def apply(self, p, q, Q, step, dim=None):
        rho = self.inv_slope(step, p.dtype)
        idx = bucketize(p, Q, dim)
        n = Q.shape[-1]
        lo = take_levels(Q, jnp.maximum(idx - 1, 0), dim)
        hi = take_levels(Q, jnp.minimum(idx, n - 1), dim)
        center = (lo + hi) / 2
        soft = jnp.minimum(jnp.maximum(center + true_divide(p - center, rho), lo), hi)
        return jnp.where(step < self.anneal_start, p, jnp.where(step >= self.anneal_end, q, soft))


class ProxBinaryRelax(ProxMap):
    r"""BinaryRelax (torchao's `ProxBinaryRelax`): before `anneal_start` the weight is the latent
    $p$; from `anneal_end` on it is $q$; in between
    $p \leftarrow (1 - \theta_t)\,p + \theta_t\,q$ with
    $\theta_t = (t - t_\text{start})/(t_\text{end} - t_\text{start})$.

    Args:
      anneal_start: first step of the relaxation.
      anneal_end: first step of hard quantization.
    """

    def __init__(self, anneal_start: int, anneal_end: int) -> None:
        if not anneal_start < anneal_end:
            raise ValueError(
                f"BinaryRelax annealing: start before end (anneal_start={anneal_start}, "
                f"anneal_end={anneal_end})"
            )
        self.anneal_start = anneal_start
        self.anneal_end = anneal_end

    def apply(self, p, q, Q, step, dim=None):
        span = self.anneal_end - self.anneal_start
        thetas = [t / span for t in range(span)]
        theta = _table(thetas, p.dtype, step, self.anneal_start)
        keep = _table([1 - t for t in thetas], p.dtype, step, self.anneal_start)
        relaxed = p * keep + theta * q
        return jnp.where(
            step < self.anneal_start, p, jnp.where(step >= self.anneal_end, q, relaxed)
        )
