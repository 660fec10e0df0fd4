"""NumPy reference of PARQ (torchao's `torchao.prototype.parq`): the uniform quantizer and the
PARQ / hard / BinaryRelax proximal maps, written from the documented formulas (imports NumPy only).

All arithmetic is in the input's dtype with true (correctly rounded) division and half-to-even
rounding, as torch does it eagerly.
"""

from __future__ import annotations

import math

import numpy as np


def unif_quantize(p: np.ndarray, b: int, per_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`UnifQuantizer()` (scale from the mean, levels s·{±0.5, ±1.5, ...}): `(q, Q)`."""
    axis, keep = (-1, True) if per_row else (None, False)
    a = np.abs(p)
    n = p.shape[-1] if per_row else p.size
    mean = np.sum(a, axis=axis, keepdims=keep) / p.dtype.type(n)
    q_max = np.minimum(p.dtype.type(b) * mean, np.max(a, axis=axis, keepdims=keep))
    q_max = np.maximum(q_max, np.finfo(p.dtype).tiny)
    r = 2 ** (b - 1) - 0.5
    s = q_max / p.dtype.type(r)
    half = p.dtype.type(0.5)
    q = (np.round(np.clip(p, -q_max, q_max) / s - half) + half) * s
    levels = np.arange(-r, r + 1e-5).astype(p.dtype)
    return q, (levels * s if not per_row else levels[None, :] * s)


def mirror_sigmoid(t: int, t1: int, t2: int, s: float = 10.0, c: float = 0.5) -> float:
    """PARQ's inverse slope ρ_t on [t1, t2) (Python floats)."""
    f = (t - t1) / (t2 - t1)
    st = 1 / (1 + math.exp(s * (f - c)))
    s1 = 1 / (1 + math.exp(-0.5 * s))
    s2 = 1 / (1 + math.exp(0.5 * s))
    return (st - s2) / (s1 - s2)


def _rows(p: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (p[None, :], Q[None, :]) if Q.ndim == 1 else (p, Q)


def nearest(p: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The nearest level (ties to the lower one), per row for a 2-D `Q`."""
    P, L = _rows(p, Q)
    mid = (L[:, :-1] + L[:, 1:]) / P.dtype.type(2)
    out = np.stack([L[i][np.searchsorted(mid[i], P[i], side="left")] for i in range(len(P))])
    return out.reshape(p.shape)


def prox_parq(p: np.ndarray, Q: np.ndarray, q: np.ndarray, t: int, t1: int, t2: int) -> np.ndarray:
    """ProxPARQ(t1, t2) at step t."""
    if t < t1:
        return p.copy()
    if t >= t2:
        return q.copy()
    rho = p.dtype.type(max(np.finfo(p.dtype).tiny, mirror_sigmoid(t, t1, t2)))
    P, L = _rows(p, Q)
    out = np.empty_like(P)
    for i in range(len(P)):
        idx = np.searchsorted(L[i], P[i], side="left")
        lo = L[i][np.maximum(idx - 1, 0)]
        hi = L[i][np.minimum(idx, L.shape[1] - 1)]
        c = (lo + hi) / P.dtype.type(2)
        out[i] = np.minimum(np.maximum(c + (P[i] - c) / rho, lo), hi)
    return out.reshape(p.shape)
