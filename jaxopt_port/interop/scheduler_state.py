"""A torch lr scheduler's position ↔ the step count of a jaxopt_port optimizer state.

A torch scheduler keeps its position itself (`last_epoch`, `_step_count`, `_last_lr` and what each
class derives from them) and writes the lr into the optimizer's param groups; a jaxopt_port schedule
is a function of the state's step count. [`scheduler_count`][jaxopt_port.interop.scheduler_count]
reads the count from a scheduler; [`position_scheduler`][jaxopt_port.interop.position_scheduler]
puts a live scheduler (and the lr, momentum or β1 it owns in the optimizer's param groups) where an
unbroken torch run would have it after that many optimizer steps. ReduceLROnPlateau's position is
its state (`best`, `num_bad_epochs`, `cooldown_counter`, `last_epoch` and the lr), held on the JAX
side in [`ReduceLROnPlateauState`][jaxopt_port.schedules.ReduceLROnPlateauState]: it is carried both
ways.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port._core.torch_groups import torch_layout
from jaxopt_port.schedules import (
    ReduceLROnPlateau,
    ReduceLROnPlateauState,
    TorchSchedule,
    warm_restart_position,
)

__all__ = ["position_scheduler", "scheduler_count"]

_PLATEAU_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
"""What identifies a ReduceLROnPlateau `state_dict()` (it is not an `LRScheduler` position)."""


# ----------------------------------------------------------------------------- state trees


def nodes(tree: Any) -> Iterator[Any]:
    """Every node of a state tree (NamedTuples, tuples, lists, dicts and leaves), depth first."""
    yield tree
    children = tree.values() if isinstance(tree, dict) else tree
    if isinstance(tree, (tuple, list, dict)):
        for child in children:
            yield from nodes(child)


def replace_nodes(tree: Any, match: Callable[[Any], bool], new: Callable[[Any], Any]) -> Any:
    """`tree` with every node for which `match` holds replaced by `new(node)`."""
    if match(tree):
        return new(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(replace_nodes(child, match, new) for child in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(replace_nodes(child, match, new) for child in tree)
    if isinstance(tree, dict):
        return type(tree)((k, replace_nodes(v, match, new)) for k, v in tree.items())
    return tree


def steps_in_state(opt_state: Any) -> int | None:
    """The updates `opt_state` has seen: the largest of its scalar `count` fields (optax's
    bookkeeping, L-BFGS's) and `step` fields (torch's); `None` when it holds neither."""
    counts = []
    for node in nodes(opt_state):
        for name in ("count", "step"):
            value = getattr(node, name, None) if name in getattr(node, "_fields", ()) else None
            if value is not None and hasattr(value, "shape") and np.ndim(value) == 0:
                counts.append(int(np.asarray(value)))
    return max(counts) if counts else None


def group_states(opt_state: Any, tx: Any, params: Any = None) -> list[Any]:
    """The part of `opt_state` that holds each torch param group `tx` carries, in torch's
    group order: the whole state for a single group, `inner_states[label]` for several."""
    groups = getattr(tx, "torch_groups", ())
    if len(groups) <= 1 or getattr(tx, "torch_labels", None) is None:
        return [opt_state]
    if params is not None:
        torch_layout(tx, params)  # checks the labels against params
    return [opt_state.inner_states[group.label] for group in groups]


# ----------------------------------------------------------------------------- torch schedulers


def as_state_dict(scheduler: Any) -> dict[str, Any]:
    """A torch scheduler's `state_dict()` (a live scheduler, or the dict itself)."""
    if isinstance(scheduler, dict):
        return scheduler
    if hasattr(scheduler, "state_dict") and hasattr(scheduler, "optimizer"):
        return scheduler.state_dict()
    raise TypeError(
        "scheduler must be a torch lr scheduler or its state_dict(), got "
        f"{type(scheduler).__name__}"
    )


def is_plateau(scheduler: Any) -> bool:
    """Whether `scheduler` (live, or its `state_dict()`) is a ReduceLROnPlateau."""
    return all(key in as_state_dict(scheduler) for key in _PLATEAU_KEYS)


def scheduler_count(scheduler: Any, *, steps_per_epoch: int = 1) -> int:
    """The number of optimizer steps a torch scheduler's position stands for.

    That is `last_epoch` (the number of `scheduler.step()` calls; a ChainedScheduler's parts
    all hold it) times `steps_per_epoch`. A scheduler stepped once per epoch of `n` batches
    (`steps_per_epoch=n`) gives the count at the start of the epoch it is in.

    Args:
      scheduler: a `torch.optim.lr_scheduler` scheduler (any of the 15), `SWALR`, or the
        `state_dict()` of one (as saved in a checkpoint).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Returns:
      The count, as the `count=` of
        [`optimizer_state_from_torch`][jaxopt_port.interop.optimizer_state_from_torch].

    Raises:
      ValueError: the scheduler holds no position (a ChainedScheduler whose parts disagree, a
        negative `last_epoch`), or `steps_per_epoch` is not a positive int.

    Examples:
      >>> import torch
      >>> from jaxopt_port import interop
      >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
      >>> scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=30)
      >>> interop.scheduler_count(scheduler)
      0
    """
    if not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
        raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
    state = as_state_dict(scheduler)
    if "last_epoch" in state:
        epoch = state["last_epoch"]
    else:  # ChainedScheduler: its parts step together
        epochs = {part.get("last_epoch") for part in state.get("_schedulers", ())}
        if len(epochs) != 1 or None in epochs:
            raise ValueError(
                f"the scheduler's state has no single last_epoch (its parts hold {sorted(epochs)})"
            )
        (epoch,) = epochs
    if not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"the scheduler's last_epoch is {epoch!r}: it has not been initialized")
    return int(epoch) * int(steps_per_epoch)


def plateau_values(state: ReduceLROnPlateauState, scheduler: Any, lr: Any) -> Any:
    """`state` holding a torch ReduceLROnPlateau's position (its `state_dict()` or itself)
    and the param group's `lr`."""
    saved = as_state_dict(scheduler)
    dtype = scalar_dtype()
    return state._replace(
        lr=jnp.asarray(float(lr), dtype),
        best=jnp.asarray(float(saved["best"]), dtype),
        num_bad_epochs=jnp.asarray(int(saved["num_bad_epochs"]), state.num_bad_epochs.dtype),
        cooldown_counter=jnp.asarray(int(saved["cooldown_counter"]), state.cooldown_counter.dtype),
        last_epoch=jnp.asarray(int(saved["last_epoch"]), state.last_epoch.dtype),
    )


def _plateau_states(opt_state: Any, tx: Any) -> list[ReduceLROnPlateauState]:
    """One ReduceLROnPlateau state per torch param group (torch's order when `tx` is given)."""
    parts = group_states(opt_state, tx) if tx is not None else [opt_state]
    found = [[n for n in nodes(part) if isinstance(n, ReduceLROnPlateauState)] for part in parts]
    if tx is None:
        found = [[state] for state in found[0]]
    if not all(found):
        raise ValueError("opt_state holds no ReduceLROnPlateau state (schedules.with_schedules)")
    if len(found) > 1 and tx is None and len({float(f[0].lr) for f in found}) > 1:
        raise ValueError(
            "opt_state holds a ReduceLROnPlateau state per param group: pass tx= so that each "
            "goes to its torch group"
        )
    return [f[0] for f in found]


# ----------------------------------------------------------------------------- positioning


def _set_value(group: dict[str, Any], key: str, value: float) -> None:
    """`group[key] = value` as torch's schedulers write it (a tensor lr is filled in place)."""
    current = group.get(key)
    if hasattr(current, "fill_"):
        current.fill_(value)
    else:
        group[key] = value


def _last_lrs(optimizer: Any) -> list[Any]:
    """torch's `_last_lr`: the groups' lrs, tensors cloned."""
    return [
        g["lr"].clone() if hasattr(g["lr"], "clone") else g["lr"] for g in optimizer.param_groups
    ]


def _uses_base_step(scheduler: Any) -> bool:
    """Whether `scheduler.step` is `LRScheduler.step` (which counts `_step_count`)."""
    from torch.optim.lr_scheduler import LRScheduler

    return type(scheduler).step is LRScheduler.step


def _place(scheduler: Any, epoch: int, last_lr: list[Any]) -> None:
    """Write one (non-composite) scheduler's own position after `epoch` steps."""
    scheduler.last_epoch = epoch
    if _uses_base_step(scheduler):
        scheduler._step_count = epoch + 1  # the constructor's step is the first
    if type(scheduler).__name__ == "CosineAnnealingWarmRestarts":
        with jax.enable_x64(True):
            t_cur, t_i = warm_restart_position(max(epoch, 0), scheduler.T_0, scheduler.T_mult)
        scheduler.T_cur, scheduler.T_i = int(t_cur), int(t_i)
    scheduler._last_lr = list(last_lr)


def _unstarted(scheduler: Any) -> None:
    """A SequentialLR part that has not taken over yet: as its constructor and SequentialLR's
    `recursive_undo` leave it."""
    _place(scheduler, 0, getattr(scheduler, "_last_lr", []))
    scheduler.last_epoch = -1
    if _uses_base_step(scheduler):
        scheduler._step_count = 1


def _values(scheduler: Any, epoch: int, schedules_: list[TorchSchedule]) -> list[float]:
    with jax.enable_x64(True):  # torch's schedulers compute in Python floats
        return [float(s.lr_at_epoch(jnp.asarray(epoch))) for s in schedules_]


def _write_lrs(scheduler: Any, lrs: list[float]) -> None:
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        _set_value(group, "lr", lr)


def _write_momentum(scheduler: Any, epoch: int, schedules_: list[TorchSchedule]) -> None:
    """CyclicLR's and OneCycleLR's momentum / β1, which they write into the groups."""
    if not all(s.cycles_momentum for s in schedules_):
        return
    with jax.enable_x64(True):
        momenta = [float(s.momentum_at_epoch(jnp.asarray(epoch))) for s in schedules_]
    for group, momentum in zip(scheduler.optimizer.param_groups, momenta, strict=True):
        if getattr(scheduler, "use_beta1", False):
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum


def _position_sequential(scheduler: Any, epoch: int, schedules_: list[TorchSchedule]) -> None:
    from bisect import bisect_right

    milestones = list(scheduler._milestones)
    active = bisect_right(milestones, epoch)
    starts = [0, *milestones]
    for index, part in enumerate(scheduler._schedulers):
        if index > active:
            _unstarted(part)
            continue
        # a finished part last stepped at the epoch before the next milestone
        last = epoch if index == active else milestones[index] - 1
        _place(part, last - starts[index], _values(scheduler, last, schedules_))
    scheduler.last_epoch = epoch


def _position_chained(scheduler: Any, epoch: int, schedules_: list[TorchSchedule]) -> None:
    """Every part at `epoch - 1` and the lr torch held then, then torch's own step: the parts
    step the lr in turn, so what each one leaves (its `_last_lr`) is torch's arithmetic."""
    before = max(epoch - 1, 0)
    lrs = _values(scheduler, before, schedules_)
    for part in scheduler._schedulers:
        _place(part, before, lrs)
    _write_lrs(scheduler, lrs)
    if epoch > 0:
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()


def position_scheduler(
    scheduler: Any,
    opt_state: optax.OptState | None = None,
    *,
    count: int | None = None,
    steps_per_epoch: int = 1,
    tx: optax.GradientTransformation | None = None,
) -> None:
    """Put a live torch scheduler where an unbroken torch run would have it after `count`
    optimizer steps, and write the lr (and cycled momentum / β1) it owns into its optimizer.

    The lrs are those of `jaxopt_port.schedules.from_torch(scheduler, group=i)` after
    `count // steps_per_epoch` scheduler steps; every attribute the class derives from its
    position is written as torch's `step()` leaves it: `last_epoch`, `_step_count`,
    `_last_lr`; CosineAnnealingWarmRestarts' `T_cur` and `T_i`; each SequentialLR part
    (finished, running or not started); each ChainedScheduler part (positioned one step earlier,
    then stepped by torch, so that the parts' lrs are torch's own arithmetic). So torch's
    recursive forms (CosineAnnealingLR, MultiplicativeLR, SWALR, the chainable ones) continue
    from the right lr. ReduceLROnPlateau takes its whole position from `opt_state`: `best`,
    `num_bad_epochs`, `cooldown_counter`, `last_epoch` and each group's lr.

    Call it after `optimizer.load_state_dict(interop.optimizer_state_to_torch(...))` (or
    [`optimizer_state_into_torch`][jaxopt_port.interop.optimizer_state_into_torch]), with the
    scheduler built over that optimizer as the original was (its arguments and base lrs are read,
    not restored).

    Args:
      scheduler: a `torch.optim.lr_scheduler` scheduler (any of the 15) or `SWALR`.
      opt_state: the jaxopt_port state the optimizer was loaded from; its step count (the largest
        `count` / `step` in it) is used when `count` is not given; required for
        ReduceLROnPlateau.
      count: optimizer steps taken (overrides the state's).
      steps_per_epoch: optimizer steps per `scheduler.step()`.
      tx: the transformation of `opt_state`; needed only for ReduceLROnPlateau with several
        param groups whose lrs differ (it maps each group's plateau state to its torch group).

    Raises:
      ValueError: no count (neither `count` nor a state holding one), a negative count,
        ReduceLROnPlateau without its state in `opt_state`.

    Warning:
      A ChainedScheduler positioned at count 0 reports the chain's lr as each part's
      `get_last_lr()` (torch reports what each part left when it was built). Momentum cycled
      by a part of a SequentialLR is not written (`optim.from_torch` does not follow it either).

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> from jaxopt_port import interop, optim, schedules
      >>> model = torch.nn.Linear(3, 1)
      >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
      >>> scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
      >>> interop.position_scheduler(scheduler, count=20)
      >>> scheduler.last_epoch, round(optimizer.param_groups[0]["lr"], 6)
      (20, 0.090451)
    """
    if count is None:
        if opt_state is None:
            raise ValueError("position_scheduler needs the step count: pass opt_state or count=")
        count = steps_in_state(opt_state)
        if count is None:
            raise ValueError("opt_state holds no step count (count or step field): pass count=")
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    if not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
        raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
    if is_plateau(scheduler):
        if opt_state is None:
            raise ValueError(
                "ReduceLROnPlateau's position is its state (best, num_bad_epochs, ...): pass the "
                "opt_state that holds it"
            )
        _position_plateau(scheduler, _plateau_states(opt_state, tx))
        return
    from jaxopt_port import schedules  # schedules.from_torch reads the scheduler's arguments

    epoch = int(count) // int(steps_per_epoch)
    groups = range(len(scheduler.optimizer.param_groups))
    schedules_ = [schedules.from_torch(scheduler, group=i) for i in groups]
    name = type(scheduler).__name__
    if name == "ChainedScheduler":
        _position_chained(scheduler, epoch, schedules_)
        return
    lrs = _values(scheduler, epoch, schedules_)
    _write_lrs(scheduler, lrs)
    _write_momentum(scheduler, epoch, schedules_)
    if name == "SequentialLR":
        _position_sequential(scheduler, epoch, schedules_)
        scheduler._last_lr = _last_lrs(scheduler.optimizer)
    else:
        _place(scheduler, epoch, _last_lrs(scheduler.optimizer))


def _position_plateau(scheduler: Any, states: list[ReduceLROnPlateauState]) -> None:
    groups = scheduler.optimizer.param_groups
    if len(states) != len(groups):
        if len(states) != 1:
            raise ValueError(
                f"opt_state holds {len(states)} ReduceLROnPlateau states, the optimizer has "
                f"{len(groups)} param groups"
            )
        states = states * len(groups)
    first = states[0]
    scheduler.best = float(first.best)
    scheduler.num_bad_epochs = int(first.num_bad_epochs)
    scheduler.cooldown_counter = int(first.cooldown_counter)
    scheduler.last_epoch = int(first.last_epoch)
    for group, state in zip(groups, states, strict=True):
        _set_value(group, "lr", float(state.lr))
    scheduler._last_lr = _last_lrs(scheduler.optimizer)


def plateau_of(tx: Any) -> list[ReduceLROnPlateau]:
    """The ReduceLROnPlateau schedules `tx`'s carried groups follow."""
    return [
        g.hyperparams["lr"]
        for g in getattr(tx, "torch_groups", ())
        if isinstance(g.hyperparams.get("lr"), ReduceLROnPlateau)
    ]
