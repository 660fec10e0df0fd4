r"""torch's cyclical schedulers, CyclicLR and OneCycleLR, with their momentum cycling.

With `cycle_momentum` (torch's default) torch also writes a momentum into the param group at every
step (`group["momentum"]`, or β1 of `group["betas"]` for Adam-family optimizers), overwriting the
optimizer's own value from construction on. The returned schedule carries it as
[`TorchSchedule.momentum`][jaxopt_port.schedules.TorchSchedule.momentum];
`optim.from_torch(optimizer, scheduler=...)` and
[`jaxopt_port.schedules.with_schedules`][jaxopt_port.schedules.with_schedules] feed it to the
optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxopt_port.schedules._core import (
    TorchSchedule,
    as_traceable,
    check_number,
    check_one_group,
    divide,
    scalar,
)

__all__ = ["cyclic_lr", "one_cycle_lr"]


def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    *,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.CyclicLR`: the lr cycles between `base_lr` and `max_lr`.

    With `c = floor(1 + t / (u + d))` the cycle, `x = 1 + t/(u + d) - c` the position in it and
    `h = x / r` on the way up (`x <= r = u/(u + d)`), `(x - 1)/(r - 1)` on the way down:

    $$
    \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\,h\,s(\cdot), \qquad
                  m_t = m_{max} - (m_{max} - m_{base})\,h\,s(\cdot)
    $$

    with `s` = 1 (triangular), $2^{1-c}$ (triangular2), $\gamma^t$ (exp_range) or
    `scale_fn` evaluated at the cycle or the iteration (`scale_mode`). The built-in modes
    choose their own `scale_mode`, as torch does. No optax schedule cycles like this.

    Args:
      base_lr: lower lr bound (torch writes it into the param group at construction).
      max_lr: upper lr bound.
      step_size_up: steps from `base_lr` to `max_lr`.
      step_size_down: steps back down (`step_size_up` if None).
      mode: "triangular", "triangular2" or "exp_range" (ignored when `scale_fn` is given).
      gamma: the base of exp_range.
      scale_fn: custom `x -> scale` (traced, or called on the host with a Python number).
      scale_mode: whether `scale_fn` gets the cycle number or the iteration.
      cycle_momentum: also cycle momentum / β1, inversely to the lr.
      base_momentum: lower momentum bound.
      max_momentum: upper momentum bound (the momentum at step 0).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      Invalid arguments fail as in torch's constructor, which computes step 0's lr and momentum
      with them (`step_size_up=0`: `ZeroDivisionError`; a `str` `max_lr`: `TypeError`).
      An infinite step size raises `ValueError` here; torch accepts it and its lr is NaN.
    """
    check_one_group(base_lr, "base_lr")
    check_one_group(max_lr, "max_lr")
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total_size = up + down
    step_ratio = up / total_size
    if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")
    momentums = (base_momentum, max_momentum) if cycle_momentum else None
    for value, name in zip(momentums or (), ("base_momentum", "max_momentum"), strict=False):
        check_one_group(value, name)
    _cyclic_first_step(
        base_lr, max_lr, total_size, step_ratio, mode, gamma, scale_fn, scale_mode, momentums
    )
    for value, name in zip((base_lr, max_lr, *(momentums or ())), _CYCLIC_NUMBERS, strict=False):
        check_number(value, name)
    if not math.isfinite(total_size):
        raise ValueError(
            f"Expected finite step_size_up and step_size_down, but got {up} and {down}: "
            "torch's lr is NaN with them"
        )
    return cyclic_schedule(
        base_lr, max_lr, up + down, up / (up + down), mode, gamma, scale_fn, scale_mode,
        (base_momentum, max_momentum) if cycle_momentum else None, steps_per_epoch,
    )  # fmt: skip


_CYCLIC_NUMBERS = ("base_lr", "max_lr", "base_momentum", "max_momentum")


def _cyclic_first_step(
    base_lr: Any,
    max_lr: Any,
    total_size: float,
    step_ratio: float,
    mode: str,
    gamma: Any,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
    momentums: tuple[Any, Any] | None,
) -> None:
    """torch's `CyclicLR.get_lr` at step 0, in Python numbers, as its constructor runs it: the
    same arguments raise the same exceptions here (a `str` `gamma` in exp_range mode, a zero
    `step_size_up`, a NaN step size)."""
    cycle = math.floor(1 + 0 / total_size)
    x = 1.0 + 0 / total_size - cycle
    height = x / step_ratio if x <= step_ratio else (x - 1) / (step_ratio - 1)
    if scale_fn is not None:
        scale = scale_fn(cycle if scale_mode == "cycle" else 0)
    elif mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:
        scale = gamma**0
    _ = base_lr + (max_lr - base_lr) * height * scale
    if momentums is not None:
        base_momentum, max_momentum = momentums
        _ = max_momentum - (max_momentum - base_momentum) * height * scale


def cyclic_schedule(
    base_lr: float,
    max_lr: float,
    total_size: float,
    step_ratio: float,
    mode: str,
    gamma: float,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
    momentums: tuple[float, float] | None,
    steps_per_epoch: int,
) -> TorchSchedule:
    """CyclicLR from torch's own attributes (`total_size`, `step_ratio`), as from_torch reads
    them."""
    if scale_fn is not None:
        scale = as_traceable(scale_fn, "scale_fn")
    elif mode == "triangular":
        scale, scale_mode = (lambda x: scalar(1.0)), "cycle"
    elif mode == "triangular2":
        scale, scale_mode = (lambda x: 1 / jnp.power(scalar(2.0), scalar(x) - 1)), "cycle"
    else:
        scale, scale_mode = (lambda x: jnp.power(scalar(gamma), scalar(x))), "iterations"

    def position(t: jax.Array) -> tuple[jax.Array, jax.Array]:
        cycle = jnp.floor(1 + divide(t, total_size))
        x = 1.0 + divide(t, total_size) - cycle
        height = jnp.where(x <= step_ratio, divide(x, step_ratio), divide(x - 1, step_ratio - 1))
        return height, scale(cycle if scale_mode == "cycle" else t)

    def lr_at(t: jax.Array) -> jax.Array:
        height, s = position(t)
        return base_lr + (max_lr - base_lr) * height * s

    momentum_at = None
    if momentums is not None:
        base_momentum, max_momentum = momentums

        def momentum_at(t: jax.Array) -> jax.Array:
            height, s = position(t)
            return max_momentum - (max_momentum - base_momentum) * height * s

    return TorchSchedule(
        "CyclicLR", lr_at, "absolute", base_lr, steps_per_epoch, momentum_at_epoch=momentum_at
    )


def _anneal(strategy: str, cos: Callable[[Any], Any] = jnp.cos) -> Callable[[Any, Any, Any], Any]:
    """torch's annealing from `start` to `end` at fraction `pct`; `cos=math.cos` computes
    it in Python numbers, as torch does."""
    if strategy == "cos":
        return lambda start, end, pct: end + (start - end) / 2.0 * (cos(math.pi * pct) + 1)
    return lambda start, end, pct: (end - start) * pct + start


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    *,
    scheduler_steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.OneCycleLR` (1cycle), two or three phases, cos or linear.

    The lr rises from `max_lr / div_factor` to `max_lr` by step `pct_start * T - 1` and falls
    to `max_lr / div_factor / final_div_factor` at step `T - 1` (`three_phase`: back to the
    initial lr by `2 * pct_start * T - 2` first); momentum moves the opposite way between
    `max_momentum` and `base_momentum`. optax's `cosine_onecycle_schedule` peaks one step later
    and ends at `T`.

    torch evaluates step `total_steps` with the last phase's formula continued, and raises
    `ValueError` at the next `step()`; a traced schedule cannot raise, so the formula keeps
    going past it — keep `count <= total_steps`.

    Args:
      max_lr: peak lr.
      total_steps: T; or give `epochs` and `steps_per_epoch` (T = their product), as in torch.
      epochs: see `total_steps`.
      steps_per_epoch: see `total_steps` (torch's meaning: batches per epoch, the scheduler is
        still stepped per batch).
      pct_start: fraction of the cycle spent rising.
      anneal_strategy: "cos" or "linear".
      cycle_momentum: also cycle momentum / β1.
      base_momentum: lower momentum bound.
      max_momentum: upper momentum bound (the momentum at step 0).
      div_factor: initial lr = max_lr / div_factor.
      final_div_factor: minimum lr = initial lr / final_div_factor.
      three_phase: use the three-phase variant.
      scheduler_steps_per_epoch: optimizer steps per `scheduler.step()` (1: the usual per-batch
        stepping; named apart from torch's `steps_per_epoch`, which means something else here).

    Warning:
      Invalid arguments fail as in torch's constructor, which computes step 0 with them (a first
      phase of length 0, `pct_start * total_steps == 1`: `ZeroDivisionError`; a `str`
      momentum: `TypeError`). `max_lr` and the momenta are one group's values: torch's lists
      of one per param group raise `TypeError` here, as do torch tensors (pass `float(t)`).
    """
    if total_steps is not None:
        if total_steps <= 0 or not isinstance(total_steps, int):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
    elif epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(
                f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
            )
        total_steps = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    # torch's order: the phase table (float(pct_start * total_steps)), then the checks
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
            (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
        ]  # fmt: skip
    else:
        phases = [
            (float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
        ]  # fmt: skip
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
        )
    check_one_group(max_lr, "max_lr")
    initial_lr = max_lr / div_factor
    values = {
        "initial_lr": initial_lr,
        "max_lr": max_lr,
        "min_lr": initial_lr / final_div_factor,
        "max_momentum": max_momentum,
        "base_momentum": base_momentum,
    }
    momenta = ("max_momentum", "base_momentum") if cycle_momentum else ()
    for name in momenta:
        check_one_group(values[name], name)
    _one_cycle_first_step(phases, values, anneal_strategy, cycle_momentum)
    for name in ("max_lr", *momenta):
        check_number(values[name], name)
    check_number(div_factor, "div_factor")
    check_number(final_div_factor, "final_div_factor")
    return one_cycle_schedule(
        phases, values, anneal_strategy, cycle_momentum, scheduler_steps_per_epoch
    )


def _one_cycle_first_step(
    phases: list[tuple[float, str, str, str, str]],
    values: dict[str, Any],
    anneal_strategy: str,
    cycle_momentum: bool,
) -> None:
    """torch's `OneCycleLR.get_lr` at step 0, in Python numbers, as its constructor runs it:
    the same arguments raise the same exceptions here (a first phase of length 0, e.g.
    `pct_start * total_steps == 1`: `ZeroDivisionError`; a `str` momentum: `TypeError`)."""
    anneal = _anneal(anneal_strategy, math.cos)
    start = 0.0
    for index, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if 0 <= end or index == len(phases) - 1:
            pct = (0 - start) / (end - start)
            anneal(values[lr0], values[lr1], pct)
            if cycle_momentum:
                anneal(values[m0], values[m1], pct)
            return
        start = end


def one_cycle_schedule(
    phases: list[tuple[float, str, str, str, str]],
    values: dict[str, float],
    anneal_strategy: str,
    cycle_momentum: bool,
    steps_per_epoch: int,
) -> TorchSchedule:
    """OneCycleLR from torch's phase table `(end_step, start_lr, end_lr, start_momentum,
    end_momentum)` and the param group's values for those keys, as from_torch reads them."""
    anneal = _anneal(anneal_strategy)
    starts = [0.0] + [phase[0] for phase in phases[:-1]]

    def piecewise(t: jax.Array, key: int) -> jax.Array:
        """torch's phase loop: the first phase with `t <= end_step` (the last one otherwise)."""
        t = scalar(t)
        by_phase = [
            anneal(values[phase[key]], values[phase[key + 1]], divide(t - start, phase[0] - start))
            for start, phase in zip(starts, phases, strict=True)
        ]
        in_phase = [t <= phase[0] for phase in phases[:-1]]
        return jnp.select(in_phase, by_phase[:-1], by_phase[-1])

    return TorchSchedule(
        "OneCycleLR",
        lambda t: piecewise(t, 1),
        "absolute",
        values["initial_lr"],
        steps_per_epoch,
        momentum_at_epoch=(lambda t: piecewise(t, 3)) if cycle_momentum else None,
    )
