"""Names kept for one release after a rename: they still work and warn (`DeprecationWarning`)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["renamed_attributes", "renamed_function"]


def _warn(old: str, new: str, note: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}{note}",
        DeprecationWarning,
        stacklevel=3,
    )


def renamed_function(
    new: Callable[..., Any], old: str, new_name: str, note: str = ""
) -> Callable[..., Any]:
    """`new` under its old name `old`, warning at every call (`new_name`: how to spell the
    new one, e.g. `"interop.weights_from_torch"`)."""

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        _warn(old, new_name, note)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old.rpartition(".")[2]
    alias.__doc__ = f"Deprecated: the old name of [`{new_name}`][jaxopt_port.{new_name}]{note}."
    return alias


def renamed_attributes(module: str, renamed: dict[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module `__getattr__` serving old names: `{old: (new spelling, object)}`."""

    def __getattr__(name: str) -> Any:
        if name in renamed:
            new_name, value = renamed[name]
            _warn(name, new_name, "")
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
