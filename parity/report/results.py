"""The figures one parity run records, how a run is judged, and their JSON form.

Every runner (the optimizer-formula runs of :mod:`parity.run.suite`, the twin-model runs of
:mod:`parity.run.twins`, a user's :func:`parity.compare`) produces :class:`RunResult`; the terminal
table, ``--json`` and ``--report`` (:mod:`parity.report`) read nothing else.

Differences are *scaled* (`parity.metric`): for each parameter or state leaf,
``max|a - b| / max(1, max|b|)``. A run passes when its worst scaled difference — parameters after
every step, the optimizer state at the end (the state after every step is recorded and plotted)
and, where it applies, the NumPy reference — is within its tolerance: float64 the gate
`parity.metric.F64_GATE` (1e-12); float32 a tolerance measured per optimizer or model, with the
measured value beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from parity.metric import scaled_difference

__all__ = [
    "SCHEMA",
    "RunResult",
    "json_safe",
]

#: Version of the JSON layout written by ``--json`` (bump on incompatible changes).
SCHEMA = 1


@dataclass
class RunResult:
    """One run: the same model and optimizer trained in torch and in JAX (and the reference).

    Attributes:
      kind: ``"optimizer"`` (a formula run on a small problem, with the NumPy reference) or
        ``"model"`` (a twin-model run) or ``"user"`` (:func:`parity.compare`).
      optimizer: jaxopt_port name (``"adamw"``).
      config: the option set, e.g. ``"amsgrad"``, ``"default"``, ``"OneCycleLR"``.
      model: the problem or model name (``"mlp"``, ``"cnn"``, ...).
      dtype: ``"float64"``, ``"float32"`` or ``"bfloat16"``.
      tolerance: the bound ``worst`` must meet; ``tolerance_note`` says where it comes from.
      loss_torch, loss_jax: the training loss at each step (before the update), per framework.
      loss_reference: the NumPy reference's loss at each step, where it applies.
      param_abs, param_scaled, param_rel: after each step, the worst JAX-vs-torch parameter
        difference: absolute, scaled (see module doc) and relative to the leaf's largest entry.
      state_scaled: after each step, the worst scaled optimizer-state difference (empty where
        state is compared only at the end; then ``state_final`` holds it).
      reference_scaled: worst scaled difference of either framework from the NumPy reference at
        the end (``None`` where no reference applies).
      worst: the judged figure: the largest of every difference above; ``where`` names it.
      seconds: wall time of the run; ``error``: the exception text if the run crashed.
    """

    kind: str
    optimizer: str
    config: str
    model: str
    dtype: str
    steps: int
    tolerance: float
    tolerance_note: str = ""
    loss_torch: list[float] = field(default_factory=list)
    loss_jax: list[float] = field(default_factory=list)
    loss_reference: list[float] | None = None
    param_abs: list[float] = field(default_factory=list)
    param_scaled: list[float] = field(default_factory=list)
    param_rel: list[float] = field(default_factory=list)
    state_scaled: list[float] = field(default_factory=list)
    state_final: float | None = None
    reference_scaled: float | None = None
    worst: float = math.nan
    where: str = ""
    seconds: float = 0.0
    error: str | None = None

    @property
    def id(self) -> str:
        """``optimizer/config/model/dtype``, unique within a suite; what the CLI and report name."""
        return f"{self.optimizer}/{self.config}/{self.model}/{self.dtype}"

    @property
    def passed(self) -> bool:
        return self.error is None and self.worst <= self.tolerance

    @property
    def miss(self) -> float:
        """How many times the tolerance the worst difference is (``inf`` for a crashed run)."""
        if self.error is not None:
            return math.inf
        if self.worst == 0:
            return 0.0
        return self.worst / self.tolerance if self.tolerance > 0 else math.inf

    def record_parameters(
        self, jax: Sequence[Any], torch: Sequence[Any], names: Sequence[str] | None = None
    ) -> str:
        """Append one step's parameter differences (absolute, scaled, relative); returns the
        name of the parameter with the worst scaled difference."""
        d, scaled, rel, where = scaled_difference(jax, torch, names)
        self.param_abs.append(d)
        self.param_scaled.append(scaled)
        self.param_rel.append(rel)
        return where

    def judge(self, entries: Sequence[tuple[str, str]] | None = None) -> RunResult:
        """Fill ``worst`` and ``where`` from the recorded figures; returns ``self``.

        ``worst`` is the largest judged figure: the parameters after every step, the optimizer
        state after the last step (or ``state_final``) and the NumPy reference (``inf`` if any is
        NaN). ``where`` names, for a run that fails, the *first* point past the tolerance in step
        order — ``"parameters after step 3"`` when the parameters leave it at step 3, even if they
        are worse later (then ``" (first past the tolerance; worst 0.0021: parameters after step
        20)"`` follows) — and, for a run that passes, the point of ``worst``.

        Args:
          entries: per step, ``(parameter, state entry)`` naming the worst leaf of that step's
            parameter and optimizer-state differences; the one at the named point is appended
            (``"parameters after step 3: fc.weight"``).
        """
        # (value, label, (step index, column) into entries), in step order
        points: list[tuple[float, str, tuple[int, int] | None]] = [
            (v, f"parameters after step {k + 1}", (k, 0)) for k, v in enumerate(self.param_scaled)
        ]
        if self.state_scaled:  # judged at the end; every step is recorded
            k = len(self.state_scaled)
            points.append((self.state_scaled[-1], f"optimizer state after step {k}", (k - 1, 1)))
        if self.state_final is not None:
            points.append((self.state_final, "optimizer state at the end", None))
        if self.reference_scaled is not None:
            points.append((self.reference_scaled, "NumPy reference at the end", None))
        if not points:
            self.worst, self.where = math.inf, "nothing was compared"
            return self

        def name(point: tuple[float, str, tuple[int, int] | None]) -> str:
            value, label, entry = point
            if entries is not None and entry is not None and entry[0] < len(entries):
                leaf = entries[entry[0]][entry[1]]
                label += f": {leaf}" if leaf else ""
            return label + (" (NaN)" if math.isnan(value) else "")

        nan = next((p for p in points if math.isnan(p[0])), None)
        worst = nan if nan is not None else max(points, key=lambda p: p[0])
        self.worst = math.inf if nan is not None else worst[0]
        first = next((p for p in points if not p[0] <= self.tolerance), None)
        if first is None or first is worst:
            self.where = name(worst)
        else:
            figure = "NaN" if nan is not None else f"{worst[0]:.2g}"
            self.where = f"{name(first)} (first past the tolerance; worst {figure}: {worst[1]})"
        return self

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(id=self.id, passed=self.passed)
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: _from_json(v) for k, v in data.items() if k in names})


def json_safe(value: Any) -> Any:
    """``value`` with inf and NaN as strings (JSON has no such numbers), NumPy scalars as Python's."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def _from_json(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value
