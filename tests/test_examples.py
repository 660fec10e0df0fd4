"""The examples run and their JAX numbers agree with torch's (they check themselves and exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
