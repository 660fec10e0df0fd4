"""A NumPy reference of the pruning mask rules, and the pruning parity check.

The reference imports only NumPy and states each rule the way the documentation does, so JAX and
torch are both checked against the written rule rather than against each other:

- amount: ``int`` = count; ``float`` = ``round(amount * alive)`` (Python, half to even).
- unstructured (``l1_unstructured``, ``global_unstructured``): among the alive entries
  (``mask == 1``) prune the ``k`` with the smallest ``|score|``, ``score = t * mask`` unless
  importance scores are given; ties to the lower flat index.
- structured (``ln_structured``): a channel is alive if its mask is not all zero; keep the
  ``alive - k`` alive channels of largest L``n`` norm of the score (ties: lower index kept),
  prune the other alive ones.
- ``WeightNormSparsifier``: scores ``w*w`` (L2) or ``|w|`` (L1) of the masked weight; block
  scores = the mean of each block's in-bound entries (ragged edge blocks average what they have);
  ``k = clamp(round(level * blocks), 0, blocks - 1)`` lowest blocks are pruned (ties to the lower
  block index); with ``zeros_per_block`` below the block size only that many smallest entries of
  each pruned block are zeroed (a ragged block zeros at most its in-bound entries).
- ``CubicSL``: ``s_t = s_f + (s_0 - s_f) (1 - (t - t_0) / (dt n))^3`` clamped to ``[s_0, s_f]``
  (0 before ``t_0`` when ``initially_zero``); ``LambdaSL``: ``s_t = s_f * f(t)``.

`parity.run.pruning.run_pruning_parity` compares jaxopt_port's masks with torch's and with these rules on
random tie-free cases and returns one plain dict per check (``name``, ``worst`` difference,
``cases``, ``passed``), for the parity CLI to print and write to its report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "count_to_prune",
    "cubic_sl",
    "global_unstructured",
    "l1_unstructured",
    "lambda_sl",
    "ln_structured",
    "weight_norm_mask",
]


def count_to_prune(amount: int | float, alive: int) -> int:
    """An ``int`` amount is a count; a ``float`` is ``round(amount * alive)``, half to even."""
    if isinstance(amount, (int, np.integer)):
        return int(amount)
    return round(float(amount) * alive)


def _lowest(scores: np.ndarray, alive: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` alive entries of smallest score; ties to the lower flat index."""
    flat, ok = scores.reshape(-1), alive.reshape(-1)
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(flat[candidates], kind="stable")]
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[order[:k]] = True
    return chosen.reshape(scores.shape)


def l1_unstructured(
    t: np.ndarray, amount: int | float, mask: np.ndarray | None = None, scores: Any = None
) -> np.ndarray:
    """The new mask of ``torch.nn.utils.prune.l1_unstructured`` (rule in the module docstring)."""
    mask = np.ones_like(t) if mask is None else mask.astype(t.dtype)
    score = t * mask if scores is None else scores
    alive = mask == 1
    k = count_to_prune(amount, int(alive.sum()))
    out = mask.copy()
    out[_lowest(np.abs(score), alive, k)] = 0
    return out


def _norm(x: np.ndarray, n: Any, axes: tuple[int, ...]) -> np.ndarray:
    a = np.abs(x)
    if n == "fro" or n == 2:
        return np.sqrt((a * a).sum(axis=axes))
    if n == math.inf:
        return a.max(axis=axes)
    if n == -math.inf:
        return a.min(axis=axes)
    if n == 0:
        return (x != 0).sum(axis=axes).astype(x.dtype)
    if n == 1:
        return a.sum(axis=axes)
    return (a**n).sum(axis=axes) ** (1.0 / n)


def ln_structured(
    t: np.ndarray,
    amount: int | float,
    n: Any,
    dim: int,
    mask: np.ndarray | None = None,
    scores: Any = None,
) -> np.ndarray:
    """The new mask of ``torch.nn.utils.prune.ln_structured``."""
    dim = dim % t.ndim
    axes = tuple(d for d in range(t.ndim) if d != dim)
    pruned_before = mask is not None
    mask = np.ones_like(t) if mask is None else mask.astype(t.dtype)
    score = t * mask if scores is None else scores
    alive = mask.sum(axis=axes) != 0 if pruned_before else np.ones(t.shape[dim], dtype=bool)
    k = count_to_prune(amount, int(alive.sum()))
    if k == 0:
        return mask.copy()
    keep = _lowest(-_norm(score, n, axes), alive, int(alive.sum()) - k)
    drop = alive & ~keep
    shape = [1] * t.ndim
    shape[dim] = -1
    return np.where(drop.reshape(shape), 0, mask).astype(t.dtype)


def global_unstructured(
    tensors: Sequence[np.ndarray],
    amount: int | float,
    masks: Sequence[Any] | None = None,
    scores: Sequence[Any] | None = None,
) -> list[np.ndarray]:
    """The new masks of ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``."""
    masks = masks or [None] * len(tensors)
    scores = scores or [None] * len(tensors)
    full = [
        np.ones_like(t) if m is None else m.astype(t.dtype)
        for t, m in zip(tensors, masks, strict=True)
    ]
    flat_scores = np.concatenate(
        [
            (t * m if s is None else s).reshape(-1)
            for t, m, s in zip(tensors, full, scores, strict=True)
        ]
    )
    flat_mask = np.concatenate([m.reshape(-1) for m in full]).astype(flat_scores.dtype)
    new = l1_unstructured(flat_scores, amount, flat_mask, scores=flat_scores)
    out, start = [], 0
    for t in tensors:
        out.append(new[start : start + t.size].reshape(t.shape).astype(t.dtype))
        start += t.size
    return out


def weight_norm_mask(
    w: np.ndarray,
    mask: np.ndarray,
    level: float,
    block: tuple[int, int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: int = 2,
) -> np.ndarray:
    """The new mask of ``torch.ao.pruning.WeightNormSparsifier.update_mask`` for a 2-D weight."""
    bh, bw = block
    size = bh * bw
    zeros = size if zeros_per_block is None else zeros_per_block
    if level <= 0 or zeros == 0:
        return np.ones_like(w)
    if level >= 1.0 and zeros == size:
        return np.zeros_like(w)
    masked = w * mask
    score = masked * masked if norm == 2 else np.abs(masked)
    h, wd = w.shape
    nh, nw = -(-h // bh), -(-wd // bw)
    blocks = np.array(
        [
            [score[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw].mean() for j in range(nw)]
            for i in range(nh)
        ]
    ).reshape(-1)
    if level >= 1.0:
        pruned_blocks = np.ones(blocks.size, dtype=bool)
    else:
        k = min(max(round(level * blocks.size), 0), blocks.size - 1)
        pruned_blocks = _lowest(blocks, np.ones(blocks.size, dtype=bool), k)
    out = np.ones_like(w)
    for b in np.flatnonzero(pruned_blocks):
        i, j = divmod(int(b), nw)
        rows, cols = slice(i * bh, (i + 1) * bh), slice(j * bw, (j + 1) * bw)
        patch = score[rows, cols]
        chosen = _lowest(patch, np.ones(patch.shape, dtype=bool), zeros)
        out[rows, cols][chosen] = 0
    return out


def cubic_sl(
    t: int,
    s_f: float,
    s_0: float = 0.0,
    t_0: int = 0,
    dt: int = 10,
    n: int = 100,
    initially_zero: bool = False,
) -> float:
    """``torch.ao.pruning.CubicSL``'s level at scheduler epoch ``t``."""
    if initially_zero and t < t_0:
        return 0
    s_t = s_f + (s_0 - s_f) * (1.0 - (t - t_0) / (dt * n)) ** 3
    return max(s_0, min(s_f, s_t))


def lambda_sl(t: int, s_f: float, fn: Callable[[int], float]) -> float:
    """``torch.ao.pruning.LambdaSL``'s level at scheduler epoch ``t``."""
    return s_f * fn(t)


# ----------------------------------------------------------------------------- parity


def level_before(t: int, every: int, cubic: dict[str, Any], final: float = 0.8) -> float:
    """The level the sparsifier used at the mask update after step ``t``: epoch = updates so far."""
    return cubic_sl(
        (t + 1) // every - 1,
        final,
        cubic["init_sl"],
        cubic["init_t"],
        cubic["delta_t"],
        cubic["total_t"],
    )
