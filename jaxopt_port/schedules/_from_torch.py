"""Read a live torch scheduler into the equivalent jaxopt_port schedule."""

from __future__ import annotations

from typing import Any

from jaxopt_port._core import as_float, describe_torch_object, torch_kind
from jaxopt_port.schedules import _compose, _cyclic, _decay, _plateau
from jaxopt_port.schedules._core import TorchSchedule

__all__ = ["from_torch"]


def _read(
    scheduler: Any, group: int, steps_per_epoch: int = 1
) -> TorchSchedule | _plateau.ReduceLROnPlateau:
    name = type(scheduler).__name__
    base = as_float(scheduler.base_lrs[group]) if hasattr(scheduler, "base_lrs") else None
    if name == "LambdaLR":
        return _decay.lambda_lr(base, scheduler.lr_lambdas[group])
    if name == "MultiplicativeLR":
        return _decay.multiplicative_lr(base, scheduler.lr_lambdas[group])
    if name == "StepLR":
        return _decay.step_lr(base, scheduler.step_size, scheduler.gamma)
    if name == "MultiStepLR":
        return _decay.multi_step_lr(base, scheduler.milestones.elements(), scheduler.gamma)
    if name == "ConstantLR":
        return _decay.constant_lr(base, scheduler.factor, scheduler.total_iters)
    if name == "LinearLR":
        return _decay.linear_lr(
            base, scheduler.start_factor, scheduler.end_factor, scheduler.total_iters
        )
    if name == "ExponentialLR":
        return _decay.exponential_lr(base, scheduler.gamma)
    if name == "PolynomialLR":
        return _decay.polynomial_lr(base, scheduler.total_iters, scheduler.power)
    if name == "CosineAnnealingLR":
        return _decay.cosine_annealing_lr(base, scheduler.T_max, scheduler.eta_min)
    if name == "CosineAnnealingWarmRestarts":
        return _decay.cosine_annealing_warm_restarts(
            base, scheduler.T_0, scheduler.T_mult, scheduler.eta_min
        )
    if name == "SWALR":
        swa_lr = as_float(scheduler.optimizer.param_groups[group]["swa_lr"])
        return _cyclic.swalr(base, swa_lr, scheduler.anneal_epochs, scheduler._anneal_strategy)
    if name == "CyclicLR":
        momentums = None
        if scheduler.cycle_momentum:
            momentums = (scheduler.base_momentums[group], scheduler.max_momentums[group])
        return _cyclic.cyclic_schedule(
            base,
            as_float(scheduler.max_lrs[group]),
            scheduler.total_size,
            scheduler.step_ratio,
            scheduler.mode,
            scheduler.gamma,
            scheduler._scale_fn_custom,
            scheduler.scale_mode,
            momentums,
            1,
        )
    if name == "OneCycleLR":
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        phases = [tuple(phase[k] for k in keys) for phase in scheduler._schedule_phases]
        g = scheduler.optimizer.param_groups[group]
        names = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")
        values = {k: as_float(g[k]) for k in names if k in g}
        return _cyclic.one_cycle_schedule(
            phases, values, scheduler._anneal_func_type, scheduler.cycle_momentum, 1
        )
    if name == "SequentialLR":
        parts = [_read(s, group) for s in scheduler._schedulers]
        return _compose.sequential_lr(parts, scheduler._milestones)
    if name == "ChainedScheduler":
        return _compose.chained_scheduler([_read(s, group) for s in scheduler._schedulers])
    if name == "ReduceLROnPlateau":
        return _plateau.reduce_lr_on_plateau(
            as_float(scheduler.optimizer.param_groups[group]["lr"]),
            scheduler.mode,
            scheduler.factor,
            scheduler.patience,
            scheduler.threshold,
            scheduler.threshold_mode,
            scheduler.cooldown,
            scheduler.min_lrs[group],
            scheduler.eps,
            steps_per_epoch=steps_per_epoch,
        )
    from jaxopt_port.schedules import SCHEDULERS  # the package imports this module

    bases = [c.__name__ for c in type(scheduler).__mro__[1:] if c.__name__ in SCHEDULERS]
    subclass = f" (a subclass of {bases[0]}, whose get_lr it may change)" if bases else ""
    raise TypeError(
        f"no jaxopt_port schedule for {name}{subclass}: schedules.from_torch reads torch's own "
        f"scheduler classes, {', '.join(SCHEDULERS)}; build the schedule with the factories, "
        "e.g. schedules.cosine_annealing_lr(lr, T_max)"
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
      scheduler: a ``torch.optim.lr_scheduler`` scheduler (any of the 15) or
        ``torch.optim.swa_utils.SWALR``, freshly built. Its arguments are read from the object;
        user callables (``lr_lambda``, ``scale_fn``) are reused as they are.
      group: the param group whose lr to follow.
      steps_per_epoch: optimizer steps per ``scheduler.step()`` (1 when the scheduler is stepped
        after every optimizer step, the number of batches when it is stepped once per epoch).

    Returns:
      A :class:`TorchSchedule` (an optax schedule ``count -> lr``, with ``.momentum`` for
      CyclicLR/OneCycleLR), or for ReduceLROnPlateau the stateful schedule of
      :func:`reduce_lr_on_plateau`.

    Raises:
      TypeError: for anything but a torch scheduler instance (an optimizer, the class, a
        ``state_dict``: the message says what to pass), and for a scheduler class torch does not
        define (a subclass may change ``get_lr``, so it is not read as its base).
      IndexError: for a ``group`` the optimizer does not have.

    Example:
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
