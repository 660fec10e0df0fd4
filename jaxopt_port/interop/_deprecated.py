"""The interop names of release 0.1, kept for one release as aliases that warn.

The API now names each conversion by what it moves and where: `weights_from_torch` /
`weights_to_torch` beside `optimizer_state_from_torch` / `optimizer_state_to_torch`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from jaxopt_port.interop.optimizer_state import optimizer_state_into_torch
from jaxopt_port.interop.weights import weights_from_torch, weights_to_numpy

__all__ = ["load_into_torch", "load_torch_state_dict", "torch_state_dict"]


def _alias(new: Callable[..., Any], old: str, what: str = "") -> Callable[..., Any]:
    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"interop.{old} is deprecated and will be removed in the next release; use "
            f"interop.{new.__name__} (same arguments{what})",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = (
        f"Deprecated alias of [`{new.__name__}`][jaxopt_port.interop.{new.__name__}]{what}."
    )
    return alias


load_torch_state_dict = _alias(weights_from_torch, "load_torch_state_dict")
"""Deprecated alias of [`weights_from_torch`][jaxopt_port.interop.weights_from_torch] (same
arguments); warns, and goes in the next release."""
torch_state_dict = _alias(
    weights_to_numpy,
    "torch_state_dict",
    "; NumPy arrays, as before: weights_to_torch gives tensors",
)
"""Deprecated alias of [`weights_to_numpy`][jaxopt_port.interop.weights_to_numpy] (same
arguments; NumPy arrays, as before: [`weights_to_torch`][jaxopt_port.interop.weights_to_torch]
gives tensors); warns, and goes in the next release."""
load_into_torch = _alias(optimizer_state_into_torch, "load_into_torch")
"""Deprecated alias of
[`optimizer_state_into_torch`][jaxopt_port.interop.optimizer_state_into_torch] (same arguments);
warns, and goes in the next release."""
