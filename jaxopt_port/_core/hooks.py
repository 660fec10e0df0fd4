"""Where a lower layer calls code of a layer above it without importing it.

`optim.from_torch(optimizer, scheduler)` needs the schedules package, which sits above optim;
`jaxopt_port.schedules` installs its reader here when it is imported (and `import jaxopt_port`
imports it), so optim never imports upward. Likewise `optim.from_torch` of torchao's wrapper
optimizers (`QuantOptimizer`, `PruneOptimizer`) is read by `jaxopt_port.prox`, which installs its
reader here (`import jaxopt_port` imports it too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "add_wrapper_reader",
    "read_wrapper",
    "scheduled_transformation",
    "set_scheduled_transformation",
]

_SCHEDULED: list[Callable[..., tuple[Any, dict[str, Any]]]] = []
"""`(factory, kwargs, group, scheduler, index, steps_per_epoch) -> (transformation, scheduled
hyperparameters)`, installed by `jaxopt_port.schedules`."""


def set_scheduled_transformation(build: Callable[..., tuple[Any, dict[str, Any]]]) -> None:
    """Install the schedules layer's builder (called once, by `jaxopt_port.schedules`)."""
    _SCHEDULED[:] = [build]


def scheduled_transformation(*args: Any) -> tuple[Any, dict[str, Any]]:
    """The transformation of one torch param group whose hyperparameters follow a torch
    scheduler, and those scheduled hyperparameters (see `schedules._wiring`)."""
    if not _SCHEDULED:  # not reached: importing any jaxopt_port package imports schedules
        raise RuntimeError("import jaxopt_port.schedules to convert a torch scheduler")
    return _SCHEDULED[0](*args)


_WRAPPERS: list[Callable[..., Any]] = []
"""`(optimizer, scheduler, steps_per_epoch, overrides) -> transformation | None`: readers of torch
optimizers that wrap another one, installed by the layers that implement them."""


def add_wrapper_reader(read: Callable[..., Any]) -> None:
    """Install a reader of wrapper optimizers (once per reader; re-importing adds nothing)."""
    if read not in _WRAPPERS:
        _WRAPPERS.append(read)


def read_wrapper(
    optimizer: Any, scheduler: Any, steps_per_epoch: int, overrides: dict[str, Any]
) -> Any:
    """The transformation of a torch wrapper optimizer, or `None` if no reader knows it."""
    for read in _WRAPPERS:
        tx = read(optimizer, scheduler, steps_per_epoch, overrides)
        if tx is not None:
            return tx
    return None
