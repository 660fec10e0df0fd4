"""Run multi-device and multi-process JAX code in subprocesses with timeouts.

Simulated CPU devices must be configured before JAX's first use and collectives on a 2-core machine
can hang, so every multi-device test runs its JAX code in a fresh interpreter with
``JAX_NUM_CPU_DEVICES`` set and a timeout, and reads back one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence

from _helpers import ROOT

TESTS = os.path.join(ROOT, "tests")


def environment(devices: int = 8, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ``devices`` simulated CPU devices, the repo importable."""
    env = dict(os.environ)
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


def run(
    args: Sequence[str],
    *,
    devices: int = 8,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python *args`` in the repository root; fails with the child's output if it fails."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment(devices, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"`python {' '.join(args)}` exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def run_json(args: Sequence[str], **kwargs) -> object:
    """:func:`run`, then the JSON value on the child's last line of stdout."""
    out = run(args, **kwargs).stdout.strip().splitlines()
    return json.loads(out[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
