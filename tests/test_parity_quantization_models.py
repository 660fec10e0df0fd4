"""The quantization section's PTQ model rows (`parity.run.quantization.run_ptq_model_parity`):
torch's converted int8 models against ours on all digits rows, judged bit for bit."""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from parity.run import packages  # noqa: E402
from parity.run import quantization as runner  # noqa: E402


@pytest.fixture(scope="module")
def quick_run():
    """The quick rows, and the twins they were computed from (recorded on the way)."""
    twins = {}
    honest = runner.ptq_twins

    def recording(name):
        twins[name] = honest(name)
        return twins[name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "ptq_twins", recording)
        rows = runner.run_ptq_model_parity(quick=True)
    return rows, twins


def test_the_quick_rows_pass_on_every_digits_row(quick_run):
    rows, twins = quick_run
    assert [row["name"] for row in rows] == [f"PTQ {name}: logits" for name in runner.PTQ_QUICK]
    assert set(twins) == set(runner.PTQ_QUICK)
    assert all(row["passed"] and row["worst"] == 0 and row["cases"] == 1797 for row in rows), rows
    assert packages.package_result("quantization", rows, "float32").passed


def _plant(layer, delta_at):
    """`layer`'s int8 weight with the code at `delta_at` moved one step toward zero."""
    w = layer.weight.get_value()
    values = np.asarray(w.values).copy()
    values[delta_at] -= np.sign(values[delta_at]) if values[delta_at] else -1
    layer.weight.set_value(dataclasses.replace(w, values=jnp.asarray(values)))


@pytest.mark.parametrize(
    "name, layer, at",
    [
        ("dynamic MLP", lambda m: m.layers[5], (3, 0)),  # DynamicQuantizedLinear, the head
        ("static residual MLP (add) default_qconfig", lambda m: m.fc1, (36, 7)),  # before the add
    ],
)
def test_one_int8_code_off_fails_its_row(quick_run, name, layer, at):
    """One weight code off by one in our converted model: its row fails with a nonzero |Δ logit|
    (the other rows' models are untouched)."""
    _, twins = quick_run
    theirs, ours, x_t, x = twins[name]
    planted = nnx.clone(ours)  # the fixture's models stay honest
    _plant(layer(planted), at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = runner.logits_row(name, theirs, planted, x_t, x)
    assert not row["passed"] and row["worst"] > 0, row
    assert not packages.package_result("quantization", [row], "float32").passed


def test_the_section_collects_the_ptq_and_qat_rows(monkeypatch):
    """The quantization section's rows: numerics, then PTQ model rows, then QAT model rows."""
    numerics = [{"name": "numerics", "mismatches": 0, "compared": 1, "passed": True}]
    models = [{"name": "PTQ model", "worst": 0.0, "cases": 1797, "passed": True}]
    qat = [{"name": "QAT model", "mismatches": 0, "compared": 17970, "passed": True}]
    seen = []
    monkeypatch.setattr(runner, "run_quantization_parity", lambda **kw: numerics)
    monkeypatch.setattr(runner, "run_ptq_model_parity", lambda quick: seen.append(quick) or models)
    monkeypatch.setattr(runner, "run_qat_model_parity", lambda quick: seen.append(quick) or qat)
    spec = next(p for p in packages.PACKAGES if p.name == "quantization")
    assert spec.rows(True) == numerics + models + qat and seen == [True, True]
