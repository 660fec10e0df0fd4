"""Torch's constructor checks, with torch's messages, written once for every optimizer.

Each check evaluates torch's own expression (`0.0 <= eps`, `0.0 <= betas[0] < 1.0`) on the
value as given, so a value of the wrong type fails exactly as in torch: a `str`, `None` or a
list raises the `TypeError` Python raises for the comparison (`'<=' not supported between
instances of 'float' and 'str'`), a tensor with several elements torch's `RuntimeError`, a
one-element `betas` tuple `IndexError`. Traced values (`optax.inject_hyperparams`) and
schedules are not checked.

torch does not check some arguments at all and fails only inside `step()` (a `str` for SGD's
`dampening`, a float `history_size` for L-BFGS) or computes NaN from a finite value
(RMSprop's `alpha > 1`). `real` and `integer` reject those at construction instead;
each optimizer's docstring lists them under Warning.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core.arrays import is_tensor_like, numel
from jaxopt_port._core.torch_objects import describe_torch_object, torch_kind

__all__ = [
    "check",
    "check_adam_family",
    "check_betas",
    "check_lr",
    "check_schedule_object",
    "integer",
    "is_integer",
    "nonnegative",
    "real",
]


def check_schedule_object(value: Any, name: str = "lr") -> None:
    """`TypeError` for a schedule object an optimizer factory cannot call with the update count:
    a stateful schedule (`schedules.reduce_lr_on_plateau`) or a torch lr scheduler."""
    if callable(value) and hasattr(value, "init") and hasattr(value, "update"):
        raise TypeError(
            f"{name} is a stateful schedule ({type(value).__name__}): its value follows the "
            "metric, not the update count, so an optimizer cannot call it. Build the optimizer "
            f"with jaxopt_port.schedules.with_schedules(optim.<name>, {name}=schedule, ...) and "
            "pass the metric to every update as value=metric"
        )
    if torch_kind(value) == "scheduler":
        raise TypeError(
            f"{name} is {describe_torch_object(value)}: convert it with "
            f"jaxopt_port.schedules.from_torch(scheduler) and pass the result as {name} (or "
            "convert optimizer and scheduler together: optim.from_torch(optimizer, scheduler))"
        )


def _at_least_zero(value: Any) -> Any:
    return 0.0 <= value


def check_lr(
    lr: Any,
    message: str = "Invalid learning rate: {}",
    ok: Callable[[Any], Any] = _at_least_zero,
) -> None:
    """torch's constructor checks of `lr`, in torch's order, on the value as given.

    A tensor or array must have one element (`ValueError("Tensor lr must be 1-element")`), then
    `ok(lr)` — torch's expression, `0.0 <= lr` unless given — must hold
    (`ValueError(message.format(lr))`). Evaluating torch's own expression on the value as given
    raises torch's own `TypeError` for a `str`, `None` or a list. Schedules and traced
    values are not checked, except that a stateful schedule or a torch lr scheduler raises
    `TypeError` saying what to use instead (`check_schedule_object`).
    """
    check_schedule_object(lr)
    if callable(lr) or isinstance(lr, jax.core.Tracer):
        return
    if is_tensor_like(lr) and numel(lr) != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not ok(lr):
        raise ValueError(message.format(lr))


def _unchecked(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer) or callable(value)


def check(value: Any, ok: Callable[[Any], Any], message: str) -> None:
    """Raise `ValueError(message.format(value))` unless `ok(value)`.

    `ok` is torch's expression, evaluated on the value as given (see the module docstring);
    traced values and schedules are not checked.
    """
    if _unchecked(value):
        return
    if not ok(value):
        raise ValueError(message.format(value))


def nonnegative(value: Any, message: str) -> None:
    """torch's `if not 0.0 <= value: raise ValueError(message)`."""
    check(value, lambda v: 0.0 <= v, message)


def check_betas(betas: Any) -> None:
    """torch's `0.0 <= betas[i] < 1.0` for i = 0, 1, with torch's messages (and, indexing as
    torch does, torch's errors for a `betas` that is not a pair)."""
    for index in (0, 1):
        check(
            betas[index], lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index {index}: {{}}"
        )


def check_adam_family(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """The checks Adam, AdamW, Adamax, NAdam and RAdam share, in torch's order."""
    check_lr(lr)
    nonnegative(eps, "Invalid epsilon value: {}")
    check_betas(betas)
    nonnegative(weight_decay, "Invalid weight_decay value: {}")


def _is_real_array(value: Any) -> bool:
    """A 1-element NumPy or JAX array of a real dtype (bfloat16 included)."""
    return (
        is_tensor_like(value)
        and torch_kind(value) != "tensor"
        and jnp.issubdtype(value.dtype, jnp.number)
        and not jnp.issubdtype(value.dtype, jnp.complexfloating)
        and numel(value) == 1
    )


def real(value: Any, name: str, *, optional: bool = False) -> None:
    """`TypeError` unless `value` is a real number, for an argument torch does not check.

    Accepted: Python and NumPy real numbers (`bool` included, as in torch's arithmetic), 1-element
    NumPy/JAX arrays, traced values; `None` too if `optional`. A torch tensor is refused with
    a hint (the transformation computes with JAX); `float(t)` converts it.
    """
    if _unchecked(value) or (optional and value is None):
        return
    if isinstance(value, numbers.Real) or _is_real_array(value):
        return
    hint = f"; pass float({name})" if torch_kind(value) == "tensor" else ""
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}{hint}")


def is_integer(value: Any) -> bool:
    """An `int`, a NumPy integer or a 1-element integer NumPy/JAX array (as
    `optax.inject_hyperparams` passes an integer hyperparameter); traced values count too."""
    if isinstance(value, (int, np.integer, jax.core.Tracer)):
        return True
    return (
        is_tensor_like(value)
        and torch_kind(value) != "tensor"
        and jnp.issubdtype(value.dtype, jnp.integer)
        and numel(value) == 1
    )


def integer(value: Any, name: str, minimum: int | None = None, *, what: str = "") -> None:
    """torch's scheduler-style `ValueError(f"Expected {what} integer {name}, but got {value}")`
    unless `value` is an `int` (or NumPy integer) and, if given, `>= minimum`; `what`
    defaults to "positive" for `minimum == 1` and "non-negative" for 0."""
    if isinstance(value, jax.core.Tracer):
        return
    if is_integer(value) and (minimum is None or value >= minimum):
        return
    if not what and minimum is not None:
        what = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
    raise ValueError(f"Expected {what + ' ' if what else ''}integer {name}, but got {value}")
