"""Torch's constructor checks, with torch's messages, written once for every optimizer.

Each check evaluates torch's own expression (``0.0 <= eps``, ``0.0 <= betas[0] < 1.0``) on the
value as given, so a value of the wrong type fails exactly as in torch: a ``str``, ``None`` or a
list raises the ``TypeError`` Python raises for the comparison (``'<=' not supported between
instances of 'float' and 'str'``), a tensor with several elements torch's ``RuntimeError``, a
one-element ``betas`` tuple ``IndexError``. Traced values (``optax.inject_hyperparams``) and
schedules are not checked.

torch does not check some arguments at all and fails only inside ``step()`` (a ``str`` for SGD's
``dampening``, a float ``history_size`` for L-BFGS) or computes NaN from a finite value
(RMSprop's ``alpha > 1``). :func:`real` and :func:`integer` reject those at construction instead;
each optimizer's docstring lists them under Warning.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import is_tensor_like, numel, torch_kind
from jaxopt_port.optim._base import check_lr

__all__ = [
    "check",
    "check_adam_family",
    "check_betas",
    "check_lr",
    "integer",
    "is_integer",
    "nonnegative",
    "real",
]


def _unchecked(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer) or callable(value)


def check(value: Any, ok: Callable[[Any], Any], message: str) -> None:
    """Raise ``ValueError(message.format(value))`` unless ``ok(value)``.

    ``ok`` is torch's expression, evaluated on the value as given (see the module docstring);
    traced values and schedules are not checked.
    """
    if _unchecked(value):
        return
    if not ok(value):
        raise ValueError(message.format(value))


def nonnegative(value: Any, message: str) -> None:
    """torch's ``if not 0.0 <= value: raise ValueError(message)``."""
    check(value, lambda v: 0.0 <= v, message)


def check_betas(betas: Any) -> None:
    """torch's ``0.0 <= betas[i] < 1.0`` for i = 0, 1, with torch's messages (and, indexing as
    torch does, torch's errors for a ``betas`` that is not a pair)."""
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
    """``TypeError`` unless ``value`` is a real number, for an argument torch does not check.

    Accepted: Python and NumPy real numbers (``bool`` included, as in torch's arithmetic), 1-element
    NumPy/JAX arrays, traced values; ``None`` too if ``optional``. A torch tensor is refused with
    a hint (the transformation computes with JAX); ``float(t)`` converts it.
    """
    if _unchecked(value) or (optional and value is None):
        return
    if isinstance(value, numbers.Real) or _is_real_array(value):
        return
    hint = f"; pass float({name})" if torch_kind(value) == "tensor" else ""
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}{hint}")


def is_integer(value: Any) -> bool:
    """An ``int``, a NumPy integer or a 1-element integer NumPy/JAX array (as
    ``optax.inject_hyperparams`` passes an integer hyperparameter); traced values count too."""
    if isinstance(value, (int, np.integer, jax.core.Tracer)):
        return True
    return (
        is_tensor_like(value)
        and torch_kind(value) != "tensor"
        and jnp.issubdtype(value.dtype, jnp.integer)
        and numel(value) == 1
    )


def integer(value: Any, name: str, minimum: int | None = None, *, what: str = "") -> None:
    """torch's scheduler-style ``ValueError(f"Expected {what} integer {name}, but got {value}")``
    unless ``value`` is an ``int`` (or NumPy integer) and, if given, ``>= minimum``; ``what``
    defaults to "positive" for ``minimum == 1`` and "non-negative" for 0."""
    if isinstance(value, jax.core.Tracer):
        return
    if is_integer(value) and (minimum is None or value >= minimum):
        return
    if not what and minimum is not None:
        what = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
    raise ValueError(f"Expected {what + ' ' if what else ''}integer {name}, but got {value}")
