"""examples/prune_digits.py runs and checks itself: 90 % global magnitude within 2 points of
dense, the channel-removed model equal to the masked one (exit 1 otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_prune_digits_example(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [
            sys.executable,
            "examples/prune_digits.py",
            "--epochs",
            "10",
            "--finetune-epochs",
            "5",
            "--timing-repeats",
            "10",
            "--plot",
            str(tmp_path / "prune.png"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "global magnitude 90%" in result.stdout and (tmp_path / "prune.png").exists()
