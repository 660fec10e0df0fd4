"""The interop names of release 0.1, kept for one release as aliases that warn.

The API now names each conversion by what it moves and where: `weights_from_torch` /
`weights_to_torch` beside `optimizer_state_from_torch` / `optimizer_state_to_torch`.
"""

from __future__ import annotations

from jaxopt_port._core.deprecation import renamed_function
from jaxopt_port.interop.optimizer_state import optimizer_state_into_torch
from jaxopt_port.interop.weights import weights_from_torch, weights_to_numpy

__all__ = ["load_into_torch", "load_torch_state_dict", "torch_state_dict"]

_SAME = " (same arguments)"
load_torch_state_dict = renamed_function(
    weights_from_torch, "interop.load_torch_state_dict", "interop.weights_from_torch", _SAME
)
"""Deprecated alias of [`weights_from_torch`][jaxopt_port.interop.weights_from_torch] (same
arguments); warns, and goes in the next release."""
torch_state_dict = renamed_function(
    weights_to_numpy,
    "interop.torch_state_dict",
    "interop.weights_to_numpy",
    " (same arguments; NumPy arrays, as before: weights_to_torch gives tensors)",
)
"""Deprecated alias of [`weights_to_numpy`][jaxopt_port.interop.weights_to_numpy] (same
arguments; NumPy arrays, as before: [`weights_to_torch`][jaxopt_port.interop.weights_to_torch]
gives tensors); warns, and goes in the next release."""
load_into_torch = renamed_function(
    optimizer_state_into_torch,
    "interop.load_into_torch",
    "interop.optimizer_state_into_torch",
    _SAME,
)
"""Deprecated alias of
[`optimizer_state_into_torch`][jaxopt_port.interop.optimizer_state_into_torch] (same arguments);
warns, and goes in the next release."""
