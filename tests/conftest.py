"""Shared test setup: torch's default dtype is reset to the session's after every test."""

from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the parity tests compare against torch (pip install -e .[test])"
)


#: The session's default, read before any test or fixture runs: a module-scoped fixture that sets
#: the default runs before a function-scoped fixture could record it, so "restore what was there"
#: would keep the leak (it once changed the twin models' initial weights for later files).
SESSION_DEFAULT_DTYPE = torch.get_default_dtype()


@pytest.fixture(autouse=True)
def _restore_torch_default_dtype():
    yield
    torch.set_default_dtype(SESSION_DEFAULT_DTYPE)


@pytest.fixture
def torch_float64():
    """torch's default dtype float64 for the test (scalar state such as ``step`` follows it);
    restored afterwards like every test's. Use with ``pytest.mark.usefixtures``."""
    torch.set_default_dtype(torch.float64)


@pytest.fixture
def quiet_quantization():
    """torch.ao.quantization's deprecation and reduce_range notices silenced for the test."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reduce_range / quantized tensor notices
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization itself
        yield


@pytest.fixture(scope="module")
def x86_engine():
    """torch's quantized engine pinned to x86 for the module, restored afterwards."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = before
