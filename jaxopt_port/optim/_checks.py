"""Torch's constructor checks, with torch's messages, written once for every optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxopt_port.optim._base import as_float, check_lr

__all__ = ["check", "check_adam_family", "check_betas", "check_lr", "nonnegative"]


def check(value: Any, ok: Callable[[float], bool], message: str) -> None:
    """Raise ``ValueError(message.format(value))`` unless ``ok(value)``; traced values are not checked."""
    if isinstance(value, jax.core.Tracer) or callable(value):
        return
    number = value if isinstance(value, (int, float)) else as_float(value)
    if not ok(number):
        raise ValueError(message.format(number))


def nonnegative(value: Any, message: str) -> None:
    check(value, lambda v: 0.0 <= v, message)


def check_betas(betas: tuple[Any, Any]) -> None:
    """``0 <= beta < 1`` for both, with torch's messages."""
    for index, beta in enumerate(betas):
        check(beta, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index {index}: {{}}")


def check_adam_family(lr: Any, betas: tuple[Any, Any], eps: Any, weight_decay: Any) -> None:
    """The checks Adam, AdamW, Adamax, NAdam and RAdam share, in torch's order."""
    check_lr(lr)
    nonnegative(eps, "Invalid epsilon value: {}")
    check_betas(betas)
    nonnegative(weight_decay, "Invalid weight_decay value: {}")
