"""The examples run and their JAX numbers agree with torch's (they check themselves and exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from parity.metric import F64_GATE

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resume_from_torch_example_continues_torchs_loss_curve():
    result = subprocess.run(
        [sys.executable, "examples/resume_from_torch.py", "--torch-epochs", "1", "--jax-epochs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    resumed = [row for row in rows if row[:1] in (["2"], ["3"])]
    assert len(resumed) == 2
    for _, jax_loss, torch_loss in resumed:
        # float32 epoch-mean losses, printed to 6 decimals: measured ≤ 1e-6 apart
        assert abs(float(jax_loss) - float(torch_loss)) <= 2e-6


def test_data_parallel_example_trains_on_eight_simulated_devices():
    result = subprocess.run(
        [sys.executable, "examples/data_parallel.py", "--simulate-devices", "8", "--zero", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # the example exits 1 itself if the test accuracy ends below 0.9 (measured 0.939)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "8 cpu devices on 1 process(es)" in out
    first, last = (float(v) for v in out.split("steps 132: loss ")[1].split(";")[0].split(" → "))
    assert last < first / 20  # measured 2.73 → 0.024
    # ZeRO-1: 1/8 of the AdamW moments per device, plus the step counters (measured 0.126)
    ratio = float(out.split("optimizer state per device / whole state: ")[1].split()[0])
    assert 0.125 <= ratio <= 0.13


def test_torch_nnx_round_trip_example_equals_an_unbroken_torch_run():
    result = subprocess.run(
        [sys.executable, "examples/torch_nnx_round_trip.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # the example exits 1 itself if the gap exceeds 1e-12 (measured 2.2e-16)
    assert result.returncode == 0, result.stdout + result.stderr
    gap = float(result.stdout.split("largest weight difference ")[1])
    assert gap <= F64_GATE
