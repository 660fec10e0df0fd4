"""Helpers shared by the test files (one copy each): the repository root, differences and
closeness of pytrees, and how a resumed run is split."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

#: The repository root (the parent of tests/).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def max_abs_difference(a: Any, b: Any) -> float:
    """``max|a - b|`` over the matching leaves of two pytrees (arrays, lists, dicts), in float64."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(
        (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0))
            for x, y in pairs
        ),
        default=0.0,
    )


def assert_close(a: Any, b: Any, atol: float = 0.0) -> None:
    """Every leaf of ``a`` within ``atol`` of ``b``'s (``atol=0``: equal), in float64."""
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0, atol=atol
        )


def split(spec: Any, n: int, m: int) -> tuple[int, int]:
    """``(n, m)`` steps before and after a resume, within the spec's parity run: an optimizer
    compared over fewer than ``n + m`` steps (L-BFGS: 2) is split in halves of its ``steps``."""
    if spec.steps >= n + m:
        return n, m
    return spec.steps // 2, spec.steps - spec.steps // 2


def assert_torch_treats_alike(row: Any, ours: Any, build: Any, first_steps: Any) -> None:
    """Check what torch does with an invalid-input row's arguments, as ``row.torch`` says.

    Args:
      row: the row (``error``, ``torch``: ``"same"``, ``"nonfinite"``, ``"accepted"`` or an
        exception class).
      ours: the ``pytest.raises`` info of jaxopt_port's refusal.
      build: builds the torch object with the row's arguments (may raise).
      first_steps: runs torch's first steps on what ``build`` returned: the values it produced
        (an array) or the exception it raised.
    """
    import pytest

    if row.torch == "same":
        with pytest.raises(row.error) as theirs:
            build()
        assert str(ours.value) == str(theirs.value)
        return
    outcome = first_steps(build())  # torch's constructor accepts them
    if row.torch == "nonfinite":
        assert isinstance(outcome, np.ndarray) and not np.all(np.isfinite(outcome)), outcome
    elif row.torch == "accepted":
        assert isinstance(outcome, np.ndarray), outcome
    else:
        assert isinstance(outcome, row.torch), outcome
