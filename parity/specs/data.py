"""Deterministic batches for the twin models (:mod:`parity.specs.models`), as NumPy arrays.

The digits models read scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes, no
download), scaled to [0, 1]. The transformer reads a seeded synthetic token task: tokens drawn
with probability ∝ 1/(t+1) (Zipf), so that a batch of 32 sequences misses one or two of the 32
tokens (measured 1.2 on average) and SparseAdam's sparse updates skip their embedding rows; the
label is how many of the 8 tokens lie in the upper three quarters of the vocabulary (0, 1, 2, or
3 and more). Each batch is a tuple ``(*inputs, labels)``: float64 inputs (each runner casts them
to its dtype) or int64 tokens, and int64 labels. The same arrays go to both frameworks.
"""

from __future__ import annotations

import numpy as np

from parity.specs.models import MODELS, NUM_CLASSES, SEQUENCE, VOCAB
from parity.specs.problems import digits

__all__ = ["BATCH_SIZE", "batches", "token_labels"]

#: Default batch size per model.
BATCH_SIZE = {"mlp": 64, "cnn": 32, "transformer": 32, "lstm": 32}
_CLASSES = NUM_CLASSES["transformer"]
_ZIPF = 1.0 / np.arange(1, VOCAB + 1)
_ZIPF /= _ZIPF.sum()


def token_labels(tokens: np.ndarray) -> np.ndarray:
    """The synthetic task's label: the number of tokens ``>= VOCAB // 4`` in the sequence, capped
    at 3 (classes 0-3 hold about 4%, 17%, 28% and 51% of the sequences)."""
    return np.minimum((tokens >= VOCAB // 4).sum(-1), _CLASSES - 1).astype(np.int64)


def batches(
    model: str, steps: int, seed: int = 0, batch_size: int | None = None
) -> list[tuple[np.ndarray, ...]]:
    """``steps`` batches for a twin model, deterministic in ``seed``.

    Args:
      model: one of :data:`parity.specs.models.MODELS`.
      steps: number of batches.
      seed: NumPy seed of the sampling (digits rows without replacement within a batch) or of the
        token sequences.
      batch_size: examples per batch (default :data:`BATCH_SIZE`).

    Returns:
      A list of ``(inputs, labels)`` tuples: mlp ``(batch, 64)``, cnn ``(batch, 1, 8, 8)``, lstm
      ``(batch, 8, 8)`` (the image's rows as 8 time steps) float64 in [0, 1]; transformer
      ``(batch, 8)`` int64 tokens; labels ``(batch,)`` int64.

    Example:
      >>> [(images, labels)] = batches("cnn", steps=1, batch_size=4)
      >>> images.shape, labels.shape
      ((4, 1, 8, 8), (4,))
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    size = batch_size or BATCH_SIZE[model]
    rng = np.random.default_rng(seed)
    if model == "transformer":
        out = []
        for _ in range(steps):
            tokens = rng.choice(VOCAB, size=(size, SEQUENCE), p=_ZIPF).astype(np.int64)
            out.append((tokens, token_labels(tokens)))
        return out
    x_all, y_all = digits()
    shape = {"mlp": (64,), "cnn": (1, 8, 8), "lstm": (8, 8)}[model]
    out = []
    for _ in range(steps):
        rows = rng.choice(len(x_all), size=size, replace=False)
        out.append((x_all[rows].reshape(size, *shape), y_all[rows].copy()))
    return out
