"""torch's ReduceLROnPlateau as an optax stateful schedule fed the metric through `value=`."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_port._core import scalar_dtype
from jaxopt_port._core.checks import integer
from jaxopt_port.schedules._core import check_base_lr, check_number, check_steps_per_epoch

__all__ = ["ReduceLROnPlateau", "ReduceLROnPlateauState", "reduce_lr_on_plateau"]


class ReduceLROnPlateauState(NamedTuple):
    """torch's ReduceLROnPlateau attributes, plus the optimizer-step counter for per-epoch use."""

    lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array
    count: jax.Array


class ReduceLROnPlateau:
    """An `optax.StatefulSchedule`: `__call__` gives the lr, `update(state, value=m)` steps it.

    Built by [`reduce_lr_on_plateau`][jaxopt_port.schedules.reduce_lr_on_plateau]; see there.
    """

    def __init__(
        self,
        lr: float,
        mode: str,
        factor: float,
        patience: int,
        threshold: float,
        threshold_mode: str,
        cooldown: int,
        min_lr: float,
        eps: float,
        steps_per_epoch: int,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        check_steps_per_epoch(steps_per_epoch)
        # torch does not check these and fails at its first step(metric) (TypeError)
        check_base_lr(lr)
        for value, name in ((patience, "patience"), (threshold, "threshold"), (eps, "eps")):
            check_number(value, name)
        check_number(min_lr, "min_lr")
        integer(cooldown, "cooldown")
        self.lr, self.mode, self.factor, self.patience = lr, mode, factor, patience
        self.threshold, self.threshold_mode, self.cooldown = threshold, threshold_mode, cooldown
        self.min_lr, self.eps, self.steps_per_epoch = min_lr, eps, steps_per_epoch

    def init(self) -> ReduceLROnPlateauState:
        dtype = scalar_dtype()
        worse = jnp.inf if self.mode == "min" else -jnp.inf
        zero = jnp.zeros([], jnp.int32)
        return ReduceLROnPlateauState(
            lr=jnp.asarray(self.lr, dtype),
            best=jnp.asarray(worse, dtype),
            num_bad_epochs=zero,
            cooldown_counter=zero,
            last_epoch=zero,
            count=zero,
        )

    def __call__(self, state: ReduceLROnPlateauState, **extra_args: Any) -> jax.Array:
        del extra_args
        return state.lr

    def _is_better(self, a: jax.Array, best: jax.Array) -> jax.Array:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _step(self, state: ReduceLROnPlateauState, metric: jax.Array) -> ReduceLROnPlateauState:
        """torch's `ReduceLROnPlateau.step(metric)`."""
        better = self._is_better(metric, state.best)
        best = jnp.where(better, metric, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(
            in_cooldown, state.cooldown_counter - 1, state.cooldown_counter
        )
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > self.patience
        new_lr = jnp.maximum(state.lr * self.factor, self.min_lr)
        lr = jnp.where(reduce & (state.lr - new_lr > self.eps), new_lr, state.lr)
        return ReduceLROnPlateauState(
            lr=lr,
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, bad),
            cooldown_counter=jnp.where(reduce, self.cooldown, cooldown_counter),
            last_epoch=state.last_epoch + 1,
            count=state.count,
        )

    def update(
        self, state: ReduceLROnPlateauState, value: Any = None, **extra_args: Any
    ) -> ReduceLROnPlateauState:
        """Step on the metric `value` at the last optimizer step of each epoch."""
        del extra_args
        if value is None:
            raise TypeError(
                "ReduceLROnPlateau needs the metric: pass it as update(..., value=metric)"
            )
        metric = jnp.asarray(value, scalar_dtype())
        stepped = self._step(state, metric)
        if self.steps_per_epoch != 1:
            end_of_epoch = (state.count + 1) % self.steps_per_epoch == 0
            stepped = jax.tree_util.tree_map(
                lambda new, old: jnp.where(end_of_epoch, new, old), stepped, state
            )
        return stepped._replace(count=state.count + 1)


def reduce_lr_on_plateau(
    lr: float,
    mode: Literal["min", "max"] = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: Literal["rel", "abs"] = "rel",
    cooldown: int = 0,
    min_lr: float = 0,
    eps: float = 1e-8,
    *,
    steps_per_epoch: int = 1,
) -> ReduceLROnPlateau:
    r"""`torch.optim.lr_scheduler.ReduceLROnPlateau` as an `optax.StatefulSchedule`.

    After a metric that is not better than the best so far by `threshold` (relative: below
    `best * (1 - threshold)` in "min" mode; absolute: below `best - threshold`) for more than
    `patience` epochs, the lr becomes `max(lr * factor, min_lr)` unless that changes it by
    `eps` or less; then `cooldown` epochs are ignored. Unlike `optax.contrib.reduce_on_plateau`
    it cuts after `patience + 1` bad epochs, has `threshold_mode`, `min_lr` and `eps`, and
    gives the absolute lr rather than a scale.

    Feed it with `optax.inject_hyperparams` (or
    [`with_schedules`][jaxopt_port.schedules.with_schedules]) and pass the metric at every update as
    `value=`; the metric of the update that ends an epoch is used (every update with
    `steps_per_epoch=1`). As in torch, the metric passed at an update changes the lr from the next
    update on.

    Args:
      lr: the lr of the param group when the scheduler is created.
      mode: "min" (the metric should fall) or "max".
      factor: multiplier of the lr at a plateau (< 1).
      patience: bad epochs tolerated before a cut.
      threshold: how much better counts as better.
      threshold_mode: "rel" or "abs".
      cooldown: epochs to wait after a cut before counting bad epochs again.
      min_lr: lower bound of the lr.
      eps: cuts smaller than this are skipped.
      steps_per_epoch: optimizer steps per `scheduler.step(metric)`.

    Warning:
      `patience`, `threshold`, `eps` or `min_lr` that is not a real number (or a list of
      one `min_lr` per group: this schedule is one group's) raises `TypeError` and a
      `cooldown` that is not an integer `ValueError` here; torch accepts them and fails at
      its first `step(metric)`.

    Examples:
      >>> from jaxopt_port import optim, schedules
      >>> plateau = schedules.reduce_lr_on_plateau(0.1, factor=0.5, patience=2)
      >>> tx = schedules.with_schedules(optim.sgd, lr=plateau, momentum=0.9)
      >>> # updates, state = tx.update(grads, state, params, value=val_loss)
    """
    return ReduceLROnPlateau(
        lr, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps,
        steps_per_epoch,
    )  # fmt: skip
