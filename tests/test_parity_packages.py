"""The package sections of jaxopt-parity (parity.run.packages): one run per package, judged on
its rules, listed by the CLI beside the optimizer and model runs."""

from __future__ import annotations

import math

from parity.metric import F64_GATE
from parity.run import packages, suite


def test_a_package_run_passes_only_when_every_rule_does():
    rows = [
        {"name": "masks", "worst": 0.0, "cases": 3, "passed": True},
        {"name": "training", "worst": 1.4e-16, "passed": True},
    ]
    result = packages.package_result("pruning", rows)
    assert result.passed and result.worst == 1.4e-16 and result.tolerance == F64_GATE
    assert result.where.startswith("training") and "masks 0" in result.tolerance_note
    # a rule that failed by its own bound fails the run even when its figure is below the gate
    rows[0] = {"name": "masks", "worst": 0.0, "cases": 3, "passed": False}
    failed = packages.package_result("pruning", rows)
    assert not failed.passed and failed.worst == math.inf and failed.where.startswith("masks")
    # mismatch counts (quantization's rows) are figures too
    counted = packages.package_result(
        "quantization", [{"name": "per_tensor", "mismatches": 2, "passed": False}], "float32"
    )
    assert not counted.passed and counted.dtype == "float32"


def test_the_cli_selects_each_package_by_model_and_dtype():
    names = [p.name for p in packages.PACKAGES]
    cases = suite.select(models=names)
    assert [(c.kind, c.model, c.dtype) for c in cases] == [
        (p.name, p.name, p.dtype) for p in packages.PACKAGES
    ]
    assert suite.select(models=["quantization"], dtypes=["float64"]) == []
    assert all(c.kind not in names for c in suite.select(models=["formula"], quick=True))


def test_the_prox_section_passes_its_rules_in_quick_mode():
    """PARQ/PAT against torchao 0.18 and the NumPy reference: bit-equal maps, ρ_t, and float64
    training runs of both wrappers with SGD and AdamW (quick: 60 steps)."""
    import pytest

    pytest.importorskip("torchao")
    rows = packages.PACKAGES[[p.name for p in packages.PACKAGES].index("prox")].rows(True)
    assert all(row["passed"] for row in rows), [r for r in rows if not r["passed"]]
    assert all(row["cases"] > 0 for row in rows)
    training = [row for row in rows if "training" in row["name"]]
    # {PARQ, PAT lasso, PAT min-sparsity ramp + healing} × {SGD, AdamW} × {torchao, reference}
    assert len(training) == 12
    # real float64 comparisons, not copies: nonzero and within the gate (measured: PARQ
    # ≤ 8.7e-14, PAT ≤ 8.9e-16)
    assert all(0 < row["worst"] <= F64_GATE for row in training)
    bitwise = [row for row in rows if "values off torchao" in row["name"]]
    assert len(bitwise) == 6 and all(row["worst"] == 0 for row in bitwise)
    assert packages.package_result("prox", rows).passed


def test_the_lowbit_rules_catch_one_code_and_a_few_ulps(monkeypatch):
    """The lowbit section's rows for one class pass on a short stream, and fail when one stored
    code is off by one or the parameters are 40 ulps off (as the run's figures)."""
    import numpy as np
    import pytest

    pytest.importorskip("torchao", reason="the lowbit section compares with torchao")
    from parity.run import lowbit

    stream = lowbit.gradient_stream(3)
    rows = lowbit.optimizer_rows("adamw8bit", "AdamW8bit", 8, stream)
    assert [row["passed"] for row in rows] == [True] * 4 and max(r["worst"] for r in rows) == 0
    assert rows[1]["ulps"] <= lowbit.ULP_BOUND  # measured 2

    honest = lowbit._run_jax

    def broken(name, params, grads, lrs):
        p, state = honest(name, params, grads, lrs)
        m = state.exp_avg[0]
        state = state._replace(
            exp_avg=[m._replace(codes=m.codes.at[3, 5].add(1)), *state.exp_avg[1:]]
        )
        p[0] = p[0] + 40 * np.spacing(np.maximum(np.abs(p[0]), lrs.min()))
        return p, state

    monkeypatch.setattr(lowbit, "_run_jax", broken)
    codes, ulps, reference, size = lowbit.optimizer_rows("adamw8bit", "AdamW8bit", 8, stream)
    assert not codes["passed"] and codes["worst"] == 1
    assert not ulps["passed"] and 40 - 2 - lowbit.ULP_BOUND <= ulps["worst"] <= 40 + 2
    assert not reference["passed"] and reference["worst"] == 8192 + 1
    assert size["passed"]
    result = packages.package_result("lowbit", [codes, ulps, reference, size], "float32")
    assert not result.passed and result.worst == math.inf
