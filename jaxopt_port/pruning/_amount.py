"""torch's checks and arithmetic for a pruning `amount` and `dim`, with torch's exception types
and messages (shapes print as tuples where torch prints `torch.Size([...])`)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_amount", "check_count", "check_dim", "check_structured", "count_to_prune"]


def check_amount(amount: Any) -> None:
    """torch's `_validate_pruning_amount_init`: a real number; an integer `>= 0` or a float in
    `[0, 1]`.

    Raises:
      TypeError: `amount` is not a real number.
      ValueError: a negative integer or a float outside `[0, 1]`.
    """
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or (
        not isinstance(amount, numbers.Integral) and not 0.0 <= float(amount) <= 1.0
    ):
        raise ValueError(
            f"amount={amount} should either be a float in the range [0, 1] or a non-negative "
            "integer"
        )


def count_to_prune(amount: Any, size: int) -> int:
    """torch's `_compute_nparams_toprune`: an integer is a count, a float is
    `round(amount * size)` with Python's round-half-to-even (0.5 of 5 is 2).

    `bool` counts as an integer (`True` prunes one unit; torch 2.13 passes the bool on to
    `topk` and raises `TypeError` there).
    """
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return round(float(amount) * size)


def check_count(count: int, size: int) -> None:
    """torch's `_validate_pruning_amount`: no more units than there are.

    Raises:
      ValueError: `count > size`.
    """
    if count > size:
        raise ValueError(
            f"amount={count} should be smaller than the number of parameters to prune={size}"
        )


def check_structured(shape: tuple[int, ...]) -> None:
    """torch's `_validate_structured_pruning`: channels need at least two dimensions.

    Raises:
      ValueError: a tensor with fewer than two dimensions.
    """
    if len(shape) <= 1:
        raise ValueError(
            "Structured pruning can only be applied to multidimensional tensors. Found tensor of "
            f"shape {tuple(shape)} with {len(shape)} dims"
        )


def check_dim(shape: tuple[int, ...], dim: int, *, pruned_before: bool) -> int:
    """torch's checks of a structured `dim`, in torch's order; returns it non-negative.

    A first pruning runs `_validate_pruning_dim` and then indexes the shape; a later one (an
    existing mask: torch's `PruningContainer`) first normalizes the index itself.

    Raises:
      IndexError: `dim` out of range, with the message torch gives on that path.
    """
    ndim = len(shape)
    if pruned_before:
        if dim < 0 and dim + ndim < 0:
            raise IndexError(f"Index is out of bounds for tensor with dimensions {ndim}")
        if dim >= ndim:
            raise IndexError("list assignment index out of range")
    check_structured(shape)
    if dim >= ndim:
        raise IndexError(f"Invalid index {dim} for tensor of size {tuple(shape)}")
    if dim < -ndim:
        raise IndexError("tuple index out of range")
    return dim % ndim
