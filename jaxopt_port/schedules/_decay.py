r"""torch's decaying schedulers: Lambda, Multiplicative, Step, MultiStep, Constant, Linear,
Exponential, Polynomial, CosineAnnealing and CosineAnnealingWarmRestarts.

Each factory takes the param group's initial lr (torch's `base_lrs[group]`) and the scheduler's own
arguments with torch's names and defaults, and returns a
[`TorchSchedule`][jaxopt_port.schedules.TorchSchedule]: an optax schedule `count -> lr` whose value
at update `count` is `scheduler.get_last_lr()[group]` after `count` calls of `scheduler.step()`
(`count // steps_per_epoch` when stepping per epoch).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core.checks import integer
from jaxopt_port.schedules._core import (
    TorchSchedule,
    as_traceable,
    check_base_lr,
    check_lambda,
    check_number,
    divide,
    scalar,
)

__all__ = [
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "polynomial_lr",
    "step_lr",
    "warm_restart_position",
]


def lambda_lr(
    lr: float, lr_lambda: Callable[[Any], Any], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.LambdaLR`: $\eta_t = \eta_0 \cdot \lambda(t)$.

    Args:
      lr: the initial lr of the param group.
      lr_lambda: `epoch -> factor`. Traced if it can be (`jnp` or plain arithmetic); otherwise
        called on the host with a Python `int`, as torch calls it. One function: torch's list
        of one per param group raises `TypeError` here (one schedule per group).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Examples:
      >>> from jaxopt_port import schedules
      >>> schedule = schedules.lambda_lr(0.1, lambda epoch: 0.95**epoch)
    """
    check_base_lr(lr)
    check_lambda(lr_lambda, "LambdaLR")
    factor = as_traceable(lr_lambda, "lr_lambda")
    return TorchSchedule("LambdaLR", lambda t: lr * factor(t), "absolute", lr, steps_per_epoch)


def multiplicative_lr(
    lr: float, lr_lambda: Callable[[Any], Any], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.MultiplicativeLR`: $\eta_t = \eta_{t-1}\,\lambda(t)$.

    The product $\eta_0 \prod_{s=1}^{t} \lambda(s)$ is replayed factor by factor in torch's
    order (bitwise equal to torch), so evaluating it costs `t` calls of `lr_lambda`.

    Args:
      lr: the initial lr of the param group.
      lr_lambda: `epoch -> factor` (traced, or called on the host as in
        [`lambda_lr`][jaxopt_port.schedules.lambda_lr]).
      steps_per_epoch: optimizer steps per `scheduler.step()`.
    """
    check_base_lr(lr)
    check_lambda(lr_lambda, "MultiplicativeLR")
    factor = as_traceable(lr_lambda, "lr_lambda")

    def product(t: jax.Array, start: jax.Array, first: int) -> jax.Array:
        return jax.lax.fori_loop(first, t + 1, lambda s, value: value * factor(s), scalar(start))

    # In SequentialLR torch restarts it with _update_lr(0): the incoming lr times lr_lambda(0).
    return TorchSchedule(
        "MultiplicativeLR",
        lambda t: product(t, lr, 1),
        "multiplicative",
        lr,
        steps_per_epoch,
        restart=lambda t, lr_in: product(t, lr_in, 0),
    )


def step_lr(
    lr: float, step_size: int, gamma: float = 0.1, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.StepLR`: $\eta_t = \eta_0\,\gamma^{\lfloor t/s \rfloor}$.

    Args:
      lr: the initial lr of the param group.
      step_size: period s of the decay, in scheduler steps (a positive integer).
      gamma: multiplicative factor.
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      A `step_size` that is not a positive integer raises `ValueError`. torch does not check
      it: 0 raises `ZeroDivisionError` at its first `step()`, a negative one decays every
      `|step_size|` steps and a fractional one at the steps its multiples hit exactly.
    """
    check_base_lr(lr)
    integer(step_size, "step_size", 1)
    check_number(gamma, "gamma")
    return TorchSchedule(
        "StepLR",
        lambda t: lr * jnp.power(scalar(gamma), scalar(t // step_size)),
        "multiplicative",
        lr,
        steps_per_epoch,
    )


def multi_step_lr(
    lr: float, milestones: Iterable[int], gamma: float = 0.1, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.MultiStepLR`: times γ at each milestone.

    $\eta_t = \eta_0\,\gamma^{|\{m \in M : m \le t\}|}$; a milestone listed twice counts twice,
    as in torch (its `Counter`).

    Args:
      lr: the initial lr of the param group.
      milestones: scheduler steps at which the lr is multiplied by `gamma` (non-negative
        integers).
      gamma: multiplicative factor.
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      A milestone that is not a non-negative integer raises `ValueError`; torch never reaches
      it (its lr never decays there).
    """
    check_base_lr(lr)
    milestones = list(milestones)  # read once: an iterator is consumed
    for milestone in milestones:
        integer(milestone, "milestones", 0)
    check_number(gamma, "gamma")
    marks = np.asarray(sorted(Counter(milestones).elements()), dtype=np.int64)

    def value(t: jax.Array) -> jax.Array:
        passed = jnp.sum(jnp.asarray(marks, jnp.int32) <= t) if marks.size else 0
        return lr * jnp.power(scalar(gamma), scalar(passed))

    return TorchSchedule("MultiStepLR", value, "multiplicative", lr, steps_per_epoch)


def constant_lr(
    lr: float,
    factor: float = 1.0 / 3,
    total_iters: int = 5,
    *,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.ConstantLR`: $\eta_0 f$ until `total_iters`, then back.

    torch multiplies by `f` at step 0 and by `1.0 / f` at `total_iters`; the value after that
    is $(\eta_0 f)(1/f)$, which can differ from $\eta_0$ in the last bit — reproduced.

    Args:
      lr: the initial lr of the param group.
      factor: the factor f in (0, 1].
      total_iters: scheduler steps at the reduced lr (a positive integer).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      `factor=0` raises `ValueError`: torch accepts it and raises `ZeroDivisionError` at
      step `total_iters`, where it divides by it. A `total_iters` that is not a positive
      integer raises `ValueError`: torch then never restores the lr.
    """
    check_base_lr(lr)
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
    if factor == 0:
        raise ValueError(
            "Constant multiplicative factor 0 is not supported: torch divides by it at step "
            "total_iters (ZeroDivisionError)"
        )
    integer(total_iters, "total_iters", 1)
    low = lr * factor
    back = low * (1.0 / factor) if factor != 0 else math.nan

    def value(t: jax.Array) -> jax.Array:
        return jnp.where(t < total_iters, scalar(low), scalar(back))

    return TorchSchedule("ConstantLR", value, "multiplicative", lr, steps_per_epoch)


def linear_lr(
    lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
    *,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.LinearLR`: the factor moves linearly from start to end.

    $\eta_t = \eta_0\,(s + (e - s)\min(t, T)/T)$.

    Args:
      lr: the initial lr of the param group.
      start_factor: factor s at step 0, in (0, 1].
      end_factor: factor e from `total_iters` on, in [0, 1].
      total_iters: T, scheduler steps of the ramp (a positive integer).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      A `total_iters` that is not a positive integer raises `ValueError`; torch accepts it
      (0 or a negative one keeps the start factor forever, a fractional one stops its ramp early).
    """
    check_base_lr(lr)
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
    integer(total_iters, "total_iters", 1)

    def value(t: jax.Array) -> jax.Array:
        progress = divide(jnp.minimum(t, total_iters), total_iters)
        return lr * (start_factor + (end_factor - start_factor) * progress)

    return TorchSchedule("LinearLR", value, "multiplicative", lr, steps_per_epoch)


def exponential_lr(lr: float, gamma: float, *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.ExponentialLR`: $\eta_t = \eta_0\,\gamma^t$.

    Args:
      lr: the initial lr of the param group.
      gamma: multiplicative factor per scheduler step.
      steps_per_epoch: optimizer steps per `scheduler.step()`.
    """
    check_base_lr(lr)
    check_number(gamma, "gamma")
    return TorchSchedule(
        "ExponentialLR",
        lambda t: lr * jnp.power(scalar(gamma), scalar(t)),
        "multiplicative",
        lr,
        steps_per_epoch,
    )


def polynomial_lr(
    lr: float, total_iters: int = 5, power: float = 1.0, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.PolynomialLR`: $\eta_t = \eta_0 (1 - \min(t, T)/T)^p$.

    Args:
      lr: the initial lr of the param group.
      total_iters: T, scheduler steps until the lr reaches 0 (it stays 0 afterwards; a positive
        integer).
      power: p (>= 0).
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      A `total_iters` that is not a positive integer raises `ValueError` (torch keeps the
      initial lr for 0 or a negative one and stops early for a fractional one), and so does a
      negative `power` (torch raises `ZeroDivisionError` at step `total_iters`).
    """
    check_base_lr(lr)
    integer(total_iters, "total_iters", 1)
    check_number(power, "power")
    if power < 0:
        raise ValueError(
            f"Expected non-negative power, but got {power}: torch raises ZeroDivisionError at "
            "step total_iters"
        )

    def value(t: jax.Array) -> jax.Array:
        remaining = 1.0 - divide(jnp.minimum(t, total_iters), total_iters)
        return lr * jnp.power(remaining, scalar(power))

    return TorchSchedule("PolynomialLR", value, "multiplicative", lr, steps_per_epoch)


def _half_cosine(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`(1 + cos(pi * numerator / denominator)) / 2` written as torch writes it."""
    return (1 + jnp.cos(divide(math.pi * scalar(numerator), denominator))) / 2


def cosine_annealing_lr(
    lr: float, T_max: int, eta_min: float = 0.0, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.CosineAnnealingLR`, periodic past `T_max` as torch's is.

    $$
    \eta_t = \eta_{min} + (\eta_0 - \eta_{min})\,\frac{1 + \cos(\pi t / T_{max})}{2}
    $$

    torch computes it recursively, $\eta_t = \frac{1+\cos(\pi t/T)}{1+\cos(\pi(t-1)/T)}
    (\eta_{t-1} - \eta_{min}) + \eta_{min}$, which telescopes to the closed form above, so it does
    not stop at $\eta_{min}$ after `T_max`: it rises again, with period `2 * T_max`.
    `optax.cosine_decay_schedule` stays at its end value instead.

    Args:
      lr: the initial lr of the param group.
      T_max: half period, in scheduler steps.
      eta_min: minimum lr.
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      `T_max=0` raises `ValueError` here; torch accepts it and raises `ZeroDivisionError` at
      its first `step()` (the closed form would be NaN).
    """
    check_base_lr(lr)
    check_number(T_max, "T_max")
    if T_max == 0:
        raise ValueError(
            "Expected nonzero T_max, but got 0: torch raises ZeroDivisionError at its first step"
        )
    check_number(eta_min, "eta_min")
    kind = "multiplicative" if eta_min == 0 else "affine"
    return TorchSchedule(
        "CosineAnnealingLR",
        lambda t: eta_min + (lr - eta_min) * _half_cosine(t, T_max),
        kind,
        lr,
        steps_per_epoch,
    )


def warm_restart_position(t: jax.Array, T_0: int, T_mult: int) -> tuple[jax.Array, jax.Array]:
    """CosineAnnealingWarmRestarts' position after `t` scheduler steps: `(T_cur, T_i)`, the
    steps into the current period and that period's length, with torch's integer recursion
    (periods `T_0, T_0·T_mult, T_0·T_mult², ...`). Jittable in `t`."""
    t = jnp.asarray(t, jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    if T_mult == 1:
        return t % T_0, jnp.asarray(T_0, t.dtype)

    def cond(carry):
        start, period = carry
        return start + period <= t

    def body(carry):
        start, period = carry
        return start + period, period * T_mult

    start, period = jax.lax.while_loop(cond, body, (jnp.zeros_like(t), jnp.asarray(T_0, t.dtype)))
    return t - start, period


def cosine_annealing_warm_restarts(
    lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""`torch.optim.lr_scheduler.CosineAnnealingWarmRestarts` (SGDR).

    $$
    \eta_t = \eta_{min} + (\eta_0 - \eta_{min})\,\frac{1 + \cos(\pi T_{cur}/T_i)}{2}
    $$

    with $T_{cur}$ the steps since the last restart and $T_i = T_0 T_{mult}^i$ the
    length of the i-th period.

    Args:
      lr: the initial lr of the param group.
      T_0: length of the first period, in scheduler steps.
      T_mult: growth factor of the period (an integer ≥ 1).
      eta_min: minimum lr.
      steps_per_epoch: optimizer steps per `scheduler.step()`.
    """
    check_base_lr(lr)
    if T_0 <= 0 or not isinstance(T_0, int):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not isinstance(T_mult, int):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not isinstance(eta_min, (float, int)):
        raise ValueError(
            f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
        )

    def value(t: jax.Array) -> jax.Array:
        t_cur, t_i = warm_restart_position(t, T_0, T_mult)
        return eta_min + (lr - eta_min) * _half_cosine(t_cur, scalar(t_i))

    return TorchSchedule("CosineAnnealingWarmRestarts", value, "absolute", lr, steps_per_epoch)
