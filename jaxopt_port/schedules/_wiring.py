"""Feeding schedules to an optimizer: the lr, torch's momentum / β1 cycling, ReduceLROnPlateau."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port._core.torch_groups import TorchGroup, carry, factory_hyperparams
from jaxopt_port.schedules._core import TorchSchedule
from jaxopt_port.schedules._plateau import ReduceLROnPlateau

__all__ = ["with_schedules"]


def _stateful(value: Any) -> bool:
    return isinstance(value, ReduceLROnPlateau)


def _split_betas(factory: Callable[..., Any]) -> Callable[..., Any]:
    """`factory` with `betas=(b1, b2)` taken as two hyperparameters `beta1` and `beta2`."""
    signature = inspect.signature(factory)
    parameters = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in signature.parameters.values()
        if p.name != "betas"
    ]
    beta1, beta2 = signature.parameters["betas"].default
    parameters += [
        inspect.Parameter("beta1", inspect.Parameter.KEYWORD_ONLY, default=beta1),
        inspect.Parameter("beta2", inspect.Parameter.KEYWORD_ONLY, default=beta2),
    ]

    def split(*, beta1: Any, beta2: Any, **kwargs: Any) -> Any:
        # a scheduled beta1 arrives as an array; torch wants both betas floats or both tensors
        return factory(betas=(beta1, jnp.asarray(beta2, scalar_dtype())), **kwargs)

    split.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    split.__name__ = factory.__name__
    return split


def with_schedules(
    factory: Callable[..., optax.GradientTransformation], **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """`factory(**kwargs)` where the lr, momentum or β1 may follow a schedule, as torch's do.

    `lr` may be a float or any schedule; `momentum` (SGD, RMSprop, Muon) and β1 (the first entry of
    `betas`) may be a schedule too, which is how torch's `CyclicLR` and `OneCycleLR` cycle them:
    pass `momentum=schedule.momentum` or `betas=(schedule.momentum, 0.999)`. `lr` may also be
    [`reduce_lr_on_plateau`][jaxopt_port.schedules.reduce_lr_on_plateau]; then pass the metric to
    every update as `value=`.

    A plain lr schedule goes to the optimizer as it is (so ASGD's one-step-late lr stays torch's);
    the other scheduled values are fed through `optax.inject_hyperparams`, in the scalar dtype
    torch uses (float64 under x64), and read before each update.

    Args:
      factory: a jaxopt_port optimizer factory (`optim.sgd`, `optim.adam`, ...).
      **kwargs: its keyword arguments.

    Returns:
      The transformation; for a jaxopt_port factory a
      [`TorchTransformation`][jaxopt_port.optim.TorchTransformation] carrying `kwargs` (schedules
        included) as
      torch's param-group hyperparameters, like `factory(**kwargs)` does.

    Examples:
      >>> from jaxopt_port import optim, schedules
      >>> cycle = schedules.one_cycle_lr(0.1, total_steps=1000)
      >>> tx = schedules.with_schedules(optim.sgd, lr=cycle, momentum=cycle.momentum)
    """
    betas = kwargs.get("betas")
    scheduled_beta1 = betas is not None and callable(betas[0])
    lr = kwargs.get("lr")
    scheduled = {
        name
        for name, value in kwargs.items()
        if name not in ("lr", "betas") and callable(value) and not isinstance(value, type)
    }
    if not scheduled and not scheduled_beta1 and not _stateful(lr):
        return factory(**kwargs)
    hyperparams = factory_hyperparams(factory, **kwargs)  # betas as given: torch's group key
    if scheduled_beta1:
        kwargs = {k: v for k, v in kwargs.items() if k != "betas"}
        kwargs.update(beta1=betas[0], beta2=betas[1])
        factory = _split_betas(factory)
        scheduled.add("beta1")
    if _stateful(lr):
        scheduled.add("lr")
    static = [name for name in inspect.signature(factory).parameters if name not in scheduled]
    tx = optax.inject_hyperparams(factory, static_args=static, hyperparam_dtype=scalar_dtype())(
        **kwargs
    )
    return tx if hyperparams is None else carry(tx, [TorchGroup(None, hyperparams)])


def schedule_kwargs(schedule: Any, factory_params: Any, group: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that make `factory` follow `schedule` (lr and momentum / β1)."""
    out: dict[str, Any] = {"lr": schedule}
    if isinstance(schedule, TorchSchedule) and schedule.cycles_momentum:
        if "betas" in factory_params:
            out["betas"] = (schedule.momentum, group["betas"][1])
        elif "momentum" in factory_params:
            out["momentum"] = schedule.momentum
        else:
            raise ValueError(
                "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
            )
    return out


def scheduled_transformation(
    factory: Callable[..., Any],
    kwargs: dict[str, Any],
    group: dict[str, Any],
    scheduler: Any,
    index: int,
    steps_per_epoch: int,
) -> tuple[optax.GradientTransformationExtraArgs, dict[str, Any]]:
    """One torch param group's transformation with the hyperparameters `scheduler` drives
    (lr; CyclicLR's and OneCycleLR's momentum or β1) following their schedules, and those
    scheduled values; what `optim.from_torch(optimizer, scheduler)` builds per group."""
    from jaxopt_port.schedules._from_torch import from_torch  # this package's __init__ order

    schedule = from_torch(scheduler, index, steps_per_epoch=steps_per_epoch)
    scheduled = schedule_kwargs(schedule, inspect.signature(factory).parameters, group)
    return with_schedules(factory, **{**kwargs, **scheduled}), scheduled
