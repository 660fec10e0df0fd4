"""The one measure of how far two runs are apart, and the float64 gate.

For one parameter or state leaf, with ``b`` the reference side (torch, or the run compared
against), the *scaled difference* is

$$\\frac{\\max_i |a_i - b_i|}{\\max(1, \\max_i |b_i|)}$$

absolute for leaves of magnitude up to 1 and relative to the leaf's largest entry above. Every
runner, report and test of the project measures with the functions here and judges float64 runs
against `F64_GATE`.

Non-finite values, one policy everywhere: a NaN in ``a`` where ``b`` also has NaN, or the same
infinity on both sides, is equal (it is torch's behaviour, reproduced); a NaN or an infinity on
one side only is an infinite difference, as is a shape mismatch. The scale ``max|b|`` is taken over
``b``'s finite entries.

This module imports NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "F64_GATE",
    "gate_note",
    "leaf_difference",
    "scaled",
    "scaled_difference",
    "state_difference",
    "worst_scaled",
]

#: The float64 gate: JAX vs torch vs the NumPy reference, scaled difference of the parameters
#: and every optimizer-state leaf, after every step of a run of at least 50 steps (2 for L-BFGS).
F64_GATE = 1e-12


def gate_note(judged: str) -> str:
    """The tolerance note of a run judged on the float64 gate, naming what is judged.

    Example:
      >>> gate_note("parameters")
      'float64 gate (≤ 1e-12 scaled): parameters'
    """
    return f"float64 gate (≤ {F64_GATE:g} scaled): {judged}"


def leaf_difference(a: Any, b: Any) -> tuple[float, float, float]:
    """One leaf: ``(max|a-b|, scaled, max|a-b| / max|b|)``.

    Args:
      a: the compared side (JAX), any array-like.
      b: the reference side (torch), the same shape.

    Returns:
      The absolute, scaled and relative difference (see the module docstring); all three ``inf``
      for a shape mismatch or a NaN or infinity on one side only; the relative one is ``inf``
      where ``b`` is all zeros and ``a`` is not.

    Example:
      >>> leaf_difference([1.0, 4.0], [1.0, 2.0])
      (2.0, 1.0, 1.0)
      >>> leaf_difference([float("nan"), 1.0], [float("nan"), 1.0])
      (0.0, 0.0, 0.0)
      >>> leaf_difference([float("nan")], [0.0])
      (inf, inf, inf)
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf, math.inf, math.inf
    if a.size == 0:
        return 0.0, 0.0, 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities and NaN in the same place
    if np.any(~same & ~(np.isfinite(a) & np.isfinite(b))):
        return math.inf, math.inf, math.inf
    diff = float(np.max(np.where(same, 0.0, np.abs(a - b))))
    size = float(np.max(np.abs(b), where=np.isfinite(b), initial=0.0))
    relative = diff / size if size > 0 else (0.0 if diff == 0 else math.inf)
    return diff, diff / max(1.0, size), relative


def scaled(a: Any, b: Any) -> float:
    """The scaled difference of one leaf (`leaf_difference`'s second figure).

    Example:
      >>> scaled([3.0, 0.5], [2.0, 0.5])
      0.5
    """
    return leaf_difference(a, b)[1]


def scaled_difference(
    a: Sequence[Any], b: Sequence[Any], names: Sequence[str] | None = None
) -> tuple[float, float, float, str]:
    """The worst `leaf_difference` over matching leaves.

    Args:
      a: the compared leaves.
      b: the reference leaves, in the same order.
      names: a label per leaf (default ``leaf[i]``).

    Returns:
      ``(abs, scaled, relative, where)``, each the worst over the leaves; ``where`` names the
      leaf with the worst scaled difference (the first of equals). Different numbers of leaves
      are an infinite difference.
    """
    if len(a) != len(b):
        return math.inf, math.inf, math.inf, f"{len(a)} leaves vs {len(b)}"
    worst_abs = worst_scaled = worst_rel = 0.0
    where = ""
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        d, s, r = leaf_difference(x, y)
        worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, r)
        if not s <= worst_scaled:
            worst_scaled, where = s, names[i] if names is not None else f"leaf[{i}]"
    return worst_abs, worst_scaled, worst_rel, where


def worst_scaled(a: Sequence[Any], b: Sequence[Any]) -> float:
    """The worst scaled difference over matching leaves (`scaled_difference`'s second figure).

    Example:
      >>> worst_scaled([[1.0], [5.0]], [[1.0], [4.0]])
      0.25
    """
    return scaled_difference(a, b)[1]


def state_difference(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
) -> tuple[float, str]:
    """The worst scaled difference over every optimizer-state entry of matching parameters.

    Args:
      a: one dict per parameter, keyed as torch's ``optimizer.state[p]``.
      b: the reference side, the same parameters in the same order.
      names: a label per parameter (default ``state[i]``).

    Returns:
      ``(scaled, where)``, ``where`` as ``name['key']``; ``inf`` when a parameter's keys differ.
    """
    labels, xs, ys = [], [], []
    for i, (sa, sb) in enumerate(zip(a, b, strict=True)):
        name = names[i] if names is not None else f"state[{i}]"
        if set(sa) != set(sb):
            return math.inf, f"{name} state keys {sorted(sa)} vs {sorted(sb)}"
        for key in sorted(sb):
            labels.append(f"{name}[{key!r}]")
            xs.append(sa[key])
            ys.append(sb[key])
    _, worst, _, where = scaled_difference(xs, ys, labels)
    return worst, where
