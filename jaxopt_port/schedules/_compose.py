"""torch's composite schedulers: SequentialLR (one after another) and ChainedScheduler (all at
once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxopt_port._core import scalar_dtype
from jaxopt_port.schedules._core import TorchSchedule, check_steps_per_epoch, divide

__all__ = ["chained_scheduler", "sequential_lr"]


def _components(name: str, schedulers: Sequence[TorchSchedule], verb: str) -> None:
    if len(schedulers) < 1:
        raise ValueError(f"{name} expects at least one scheduler{verb}, but got no scheduler.")
    for index, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, TorchSchedule):
            raise TypeError(
                f"{name} at index {index} should be a jaxopt_port.schedules schedule, got "
                f"{type(scheduler).__name__} (ReduceLROnPlateau cannot be combined: it needs the "
                "metric at every step)"
            )
        if scheduler.name in ("SequentialLR", "ChainedScheduler"):
            raise ValueError(
                f"{name} at index {index} is a {scheduler.name}: nested composite schedulers are "
                "not supported (torch's nested restarts and chains do not reduce to closed forms)"
            )
        if scheduler.steps_per_epoch != 1:
            raise ValueError(
                f"{name} at index {index} has steps_per_epoch={scheduler.steps_per_epoch}; give "
                f"steps_per_epoch to the {name} instead of to its parts"
            )


def sequential_lr(
    schedulers: Sequence[TorchSchedule], milestones: Sequence[int], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    """`torch.optim.lr_scheduler.SequentialLR`: scheduler i runs from milestone i-1 to milestone i.

    At each milestone the next scheduler restarts from its own step 0 (torch's `_update_lr(0)`),
    so it runs as it would alone from the base lr. Two torch schedulers restart from the lr the
    previous one left instead, and are reproduced: `SWALR` anneals from it and
    `MultiplicativeLR` multiplies it by `lr_lambda(0)`.

    Args:
      schedulers: the parts, built with the same base lr.
      milestones: scheduler steps at which the next part takes over (one fewer than parts).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Examples:
      >>> from jaxopt_port import schedules
      >>> warmup_cosine = schedules.sequential_lr(
      ...     [schedules.linear_lr(0.1, start_factor=0.01, total_iters=100),
      ...      schedules.cosine_annealing_lr(0.1, T_max=900)],
      ...     milestones=[100])
    """
    _components("SequentialLR", schedulers, "")
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more "
            f"than the number of milestone points, but got number of schedulers {len(schedulers)} "
            f"and the number of milestones to be equal to {len(milestones)}"
        )
    milestones = [int(m) for m in milestones]
    segments: list[Callable[[jax.Array], jax.Array]] = [schedulers[0].lr_at_epoch]
    for i, scheduler in enumerate(schedulers[1:], start=1):
        start = milestones[i - 1]
        if scheduler.restart is None:
            segment = lambda t, s=scheduler, start=start: s.lr_at_epoch(t - start)
        else:
            previous, before = segments[-1], start - 1

            def segment(t, s=scheduler, start=start, previous=previous, before=before):
                return s.restart(t - start, previous(jnp.asarray(before)))

        segments.append(segment)

    def value(t: jax.Array) -> jax.Array:
        # bisect_right(milestones, t): the part that is running after t steps
        index = sum((t >= m).astype(jnp.int32) for m in milestones) if milestones else 0
        by_part = [jnp.asarray(segment(t), scalar_dtype()) for segment in segments]
        return jnp.select([index == i for i in range(len(by_part) - 1)], by_part[:-1], by_part[-1])

    return TorchSchedule(
        "SequentialLR", value, schedulers[0].kind, schedulers[0].base_lr, steps_per_epoch
    )


def chained_scheduler(
    schedulers: Sequence[TorchSchedule], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.ChainedScheduler`: every part steps the same lr, in order.

    torch applies each part's recursive step to the lr the previous part left. Multiplicative parts
    (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, MultiplicativeLR)
    multiply it by a factor of the step alone; absolute parts (LambdaLR, CyclicLR, OneCycleLR,
    CosineAnnealingWarmRestarts) overwrite it. So after `t` steps the lr is

    $$
    \eta_t = \eta_0 \prod_i \frac{\eta^{(i)}_t}{\eta_0}
    $$

    with no absolute part, and otherwise the last absolute part's value times the one-step factors
    $\eta^{(i)}_t / \eta^{(i)}_{t-1}$ of the multiplicative parts after it.

    CosineAnnealingLR and SWALR are affine in the lr (and torch's cosine recursion restarts from an
    additive term after each zero), so a chain with either after its last absolute part has no
    closed form here and raises `ValueError`; use
    [`sequential_lr`][jaxopt_port.schedules.sequential_lr] or one schedule.

    Args:
      schedulers: the parts, built with the same base lr.
      steps_per_epoch: optimizer steps per `scheduler.step()`.
    """
    _components("ChainedScheduler", schedulers, " to be chained")
    absolute = [i for i, s in enumerate(schedulers) if s.kind == "absolute"]
    last = absolute[-1] if absolute else -1
    for index, scheduler in enumerate(schedulers[last + 1 :], start=last + 1):
        if scheduler.kind != "multiplicative" or scheduler.name == "CosineAnnealingLR":
            raise ValueError(
                f"ChainedScheduler at index {index}: {scheduler.name} is not multiplicative in "
                "the lr, so its chained recursion has no closed form here; use sequential_lr or a "
                "single schedule"
            )
    tail = schedulers[last + 1 :]

    def one_step_factor(s: TorchSchedule, t: jax.Array) -> jax.Array:
        previous = jnp.where(t > 0, s.lr_at_epoch(jnp.maximum(t - 1, 0)), s.base_lr)
        return divide(s.lr_at_epoch(t), previous)

    def value(t: jax.Array) -> jax.Array:
        if last < 0:
            lr = jnp.asarray(schedulers[0].base_lr, scalar_dtype())
            for s in tail:
                lr = lr * divide(s.lr_at_epoch(t), s.base_lr)
            return lr
        lr = jnp.asarray(schedulers[last].lr_at_epoch(t), scalar_dtype())
        for s in tail:
            lr = lr * one_step_factor(s, t)
        return lr

    check_steps_per_epoch(steps_per_epoch)
    kind = "absolute" if absolute else "multiplicative"
    return TorchSchedule("ChainedScheduler", value, kind, schedulers[0].base_lr, steps_per_epoch)
