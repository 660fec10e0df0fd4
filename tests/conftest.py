"""Shared test setup: torch's default dtype is restored after every test."""

from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the parity tests compare against torch (pip install -e .[test])"
)


@pytest.fixture(autouse=True)
def _restore_torch_default_dtype():
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)
