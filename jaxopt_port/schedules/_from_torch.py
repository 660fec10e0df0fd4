"""Read a live torch scheduler into the equivalent jaxopt_port schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxopt_port._core import as_float, describe_torch_object, torch_kind
from jaxopt_port.schedules import _compose, _cyclic, _decay, _plateau
from jaxopt_port.schedules import _swa as _swa_module
from jaxopt_port.schedules._core import TorchSchedule

__all__ = ["TABLE", "from_torch"]


Reader = Callable[[Any, int, int], "TorchSchedule | _plateau.ReduceLROnPlateau"]


def _base(scheduler: Any, group: int) -> float:
    return as_float(scheduler.base_lrs[group])


def _lambda(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.lambda_lr(_base(s, g), s.lr_lambdas[g])


def _multiplicative(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.multiplicative_lr(_base(s, g), s.lr_lambdas[g])


def _step(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.step_lr(_base(s, g), s.step_size, s.gamma)


def _multi_step(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.multi_step_lr(_base(s, g), s.milestones.elements(), s.gamma)


def _constant(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.constant_lr(_base(s, g), s.factor, s.total_iters)


def _linear(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.linear_lr(_base(s, g), s.start_factor, s.end_factor, s.total_iters)


def _exponential(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.exponential_lr(_base(s, g), s.gamma)


def _polynomial(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.polynomial_lr(_base(s, g), s.total_iters, s.power)


def _cosine(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.cosine_annealing_lr(_base(s, g), s.T_max, s.eta_min)


def _warm_restarts(s: Any, g: int, _: int) -> TorchSchedule:
    return _decay.cosine_annealing_warm_restarts(_base(s, g), s.T_0, s.T_mult, s.eta_min)


def _swa(s: Any, g: int, _: int) -> TorchSchedule:
    swa_lr = as_float(s.optimizer.param_groups[g]["swa_lr"])
    return _swa_module.swalr(_base(s, g), swa_lr, s.anneal_epochs, s._anneal_strategy)


def _cyclic_lr(s: Any, g: int, _: int) -> TorchSchedule:
    momentums = (s.base_momentums[g], s.max_momentums[g]) if s.cycle_momentum else None
    return _cyclic.cyclic_schedule(
        _base(s, g), as_float(s.max_lrs[g]), s.total_size, s.step_ratio, s.mode, s.gamma,
        s._scale_fn_custom, s.scale_mode, momentums, 1,
    )  # fmt: skip


def _one_cycle(s: Any, g: int, _: int) -> TorchSchedule:
    keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
    phases = [tuple(phase[k] for k in keys) for phase in s._schedule_phases]
    group = s.optimizer.param_groups[g]
    names = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")
    values = {k: as_float(group[k]) for k in names if k in group}
    return _cyclic.one_cycle_schedule(phases, values, s._anneal_func_type, s.cycle_momentum, 1)


def _sequential(s: Any, g: int, _: int) -> TorchSchedule:
    return _compose.sequential_lr([_read(part, g) for part in s._schedulers], s._milestones)


def _chained(s: Any, g: int, _: int) -> TorchSchedule:
    return _compose.chained_scheduler([_read(part, g) for part in s._schedulers])


def _plateau_lr(s: Any, g: int, steps_per_epoch: int) -> _plateau.ReduceLROnPlateau:
    return _plateau.reduce_lr_on_plateau(
        as_float(s.optimizer.param_groups[g]["lr"]), s.mode, s.factor, s.patience, s.threshold,
        s.threshold_mode, s.cooldown, s.min_lrs[g], s.eps, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip


TABLE: dict[str, tuple[str, Reader]] = {
    "LambdaLR": ("lambda_lr", _lambda),
    "MultiplicativeLR": ("multiplicative_lr", _multiplicative),
    "StepLR": ("step_lr", _step),
    "MultiStepLR": ("multi_step_lr", _multi_step),
    "ConstantLR": ("constant_lr", _constant),
    "LinearLR": ("linear_lr", _linear),
    "ExponentialLR": ("exponential_lr", _exponential),
    "SequentialLR": ("sequential_lr", _sequential),
    "CosineAnnealingLR": ("cosine_annealing_lr", _cosine),
    "ChainedScheduler": ("chained_scheduler", _chained),
    "ReduceLROnPlateau": ("reduce_lr_on_plateau", _plateau_lr),
    "CyclicLR": ("cyclic_lr", _cyclic_lr),
    "CosineAnnealingWarmRestarts": ("cosine_annealing_warm_restarts", _warm_restarts),
    "OneCycleLR": ("one_cycle_lr", _one_cycle),
    "PolynomialLR": ("polynomial_lr", _polynomial),
    "SWALR": ("swalr", _swa),
}
"""torch scheduler class -> (jaxopt_port factory name, reader of a live instance), for every
scheduler torch has. Exact classes only: a subclass may change `get_lr`."""

_TORCH_MODULES = ("torch.optim.lr_scheduler", "torch.optim.swa_utils")
"""torch's modules that define the classes of `TABLE`."""


def _read(
    scheduler: Any, group: int, steps_per_epoch: int = 1
) -> TorchSchedule | _plateau.ReduceLROnPlateau:
    cls = type(scheduler)
    if cls.__module__ in _TORCH_MODULES and cls.__name__ in TABLE:
        return TABLE[cls.__name__][1](scheduler, group, steps_per_epoch)
    bases = [
        c.__name__
        for c in cls.__mro__[1:]
        if c.__module__ in _TORCH_MODULES and c.__name__ in TABLE
    ]
    subclass = f" (a subclass of {bases[0]}, whose get_lr it may change)" if bases else ""
    raise TypeError(
        f"no jaxopt_port schedule for {cls.__name__}{subclass}: schedules.from_torch reads "
        f"torch's own scheduler classes, {', '.join(TABLE)}; build the schedule with the "
        "factories, e.g. schedules.cosine_annealing_lr(lr, T_max)"
    )


def _check_scheduler(scheduler: Any) -> None:
    if torch_kind(scheduler) == "scheduler" and not isinstance(scheduler, type):
        return
    hint = ""
    if torch_kind(scheduler) == "optimizer" and not isinstance(scheduler, type):
        hint = (
            "; pass the scheduler built on it (for the optimizer itself use optim.from_torch, "
            "which also takes the scheduler: optim.from_torch(optimizer, scheduler))"
        )
    elif isinstance(scheduler, type):
        hint = "; build it first, e.g. torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)"
    elif isinstance(scheduler, dict):
        hint = "; pass the scheduler itself (a state_dict does not name its class)"
    raise TypeError(
        "schedules.from_torch expects a torch.optim.lr_scheduler scheduler (or "
        f"torch.optim.swa_utils.SWALR) instance, got {describe_torch_object(scheduler)}{hint}"
    )


def from_torch(
    scheduler: Any, group: int = 0, *, steps_per_epoch: int = 1
) -> TorchSchedule | _plateau.ReduceLROnPlateau:
    """The schedule equivalent to a torch scheduler, for one param group.

    Args:
      scheduler: a `torch.optim.lr_scheduler` scheduler (any of the 15) or
        `torch.optim.swa_utils.SWALR`, freshly built. Its arguments are read from the object;
        user callables (`lr_lambda`, `scale_fn`) are reused as they are.
      group: the param group whose lr to follow.
      steps_per_epoch: optimizer steps per `scheduler.step()` (1 when the scheduler is stepped
        after every optimizer step, the number of batches when it is stepped once per epoch).

    Returns:
      A [`TorchSchedule`][jaxopt_port.schedules.TorchSchedule] (an optax schedule `count -> lr`,
        with `.momentum` for
      CyclicLR/OneCycleLR), or for ReduceLROnPlateau the stateful schedule of
      [`reduce_lr_on_plateau`][jaxopt_port.schedules.reduce_lr_on_plateau].

    Raises:
      TypeError: for anything but a torch scheduler instance (an optimizer, the class, a
        `state_dict`: the message says what to pass), and for a scheduler class torch does not
        define (a subclass may change `get_lr`, so it is not read as its base).
      IndexError: for a `group` the optimizer does not have.

    Examples:
      >>> import torch
      >>> from jaxopt_port import schedules
      >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
      >>> schedule = schedules.from_torch(torch.optim.lr_scheduler.StepLR(opt, step_size=30))
      >>> float(schedule(30))  # doctest: +ELLIPSIS
      0.0100...
    """
    _check_scheduler(scheduler)
    if not 0 <= group < len(scheduler.optimizer.param_groups):
        raise IndexError(
            f"group {group} out of range: the optimizer has "
            f"{len(scheduler.optimizer.param_groups)} param groups"
        )
    schedule = _read(scheduler, group, steps_per_epoch)
    if isinstance(schedule, TorchSchedule) and steps_per_epoch != 1:
        return schedule.per_epoch(steps_per_epoch)
    return schedule
