"""What every torch scheduler shares here: the schedule object, per-epoch stepping, user callables.

A torch scheduler changes `group["lr"]` in place each `scheduler.step()`. Written as an optax
schedule it is a pure function `count -> lr` of the number of `step()` calls. Most torch
schedulers are *recursive* (each step multiplies the current lr by a factor); where the recursion
telescopes, the closed form is used and agrees with torch's recursion to a few ulps (measured in
tests/test_schedules.py). Where it does not (`MultiplicativeLR`), the recursion is replayed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import checks, scalar_dtype

__all__ = [
    "TorchSchedule",
    "as_traceable",
    "check_base_lr",
    "check_lambda",
    "check_number",
    "check_one_group",
    "check_steps_per_epoch",
    "divide",
    "scalar",
]

KINDS = ("multiplicative", "absolute", "affine")
"""How a scheduler acts when chained (`ChainedScheduler`) with others on one param group:
"multiplicative" ones multiply the current lr by a factor that depends only on the step,
"absolute" ones overwrite it with a value computed from the base lr, "affine" ones do neither."""


def scalar(x: Any) -> jax.Array:
    """`x` in the dtype torch's Python-float scheduler arithmetic corresponds to."""
    return jnp.asarray(x, scalar_dtype())


def divide(numerator: Any, denominator: Any) -> jax.Array:
    """`numerator / denominator` correctly rounded, as torch's Python division is.

    XLA turns a division by a constant into a multiplication by its reciprocal, which is off by an
    ulp about a third of the time; where the lr is a small difference or root of the quotient
    (PolynomialLR near `total_iters`: 9e-11 relative, or a nonzero lr where torch has 0) that
    ulp shows. An optimization barrier on the divisor keeps the true division.
    """
    return scalar(numerator) / jax.lax.optimization_barrier(scalar(denominator))


def check_one_group(value: Any, name: str) -> None:
    """`TypeError` for a list or tuple: torch's schedulers also take one value per param group
    in a list, but a jaxopt_port schedule is one group's."""
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be one number, got {type(value).__name__} {value!r}: a jaxopt_port "
            "schedule is one param group's (for torch's one value per group, build one schedule "
            "per group, or read each with schedules.from_torch(scheduler, group=i))"
        )


def check_number(value: Any, name: str) -> None:
    """`TypeError` unless `value` is one real number (`check_one_group`, then
    `optim.checks.real`)."""
    check_one_group(value, name)
    checks.real(value, name)


def check_base_lr(lr: Any) -> None:
    """The param group's initial lr, checked as torch's optimizer checks it (`0.0 <= lr`, so a
    `str` raises torch's `TypeError`), and one real number."""
    check_one_group(lr, "lr")
    checks.check_lr(lr)
    checks.real(lr, "lr")


def check_lambda(fn: Any, scheduler: str) -> None:
    """A user's `lr_lambda` must be one callable, refused as torch refuses it: LambdaLR calls it
    at construction (`TypeError: 'float' object is not callable`), MultiplicativeLR checks."""
    if isinstance(fn, (list, tuple)):
        raise TypeError(
            "lr_lambda must be one function: a jaxopt_port schedule is one param group's (for "
            "torch's list of one lambda per group, build one schedule per group)"
        )
    if callable(fn):
        return
    if scheduler == "MultiplicativeLR":
        raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    raise TypeError(f"'{type(fn).__name__}' object is not callable")


def check_steps_per_epoch(steps_per_epoch: int) -> None:
    if not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
        raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")


@dataclasses.dataclass(frozen=True, eq=False)
class TorchSchedule:
    """An optax schedule `count -> lr` equal to a torch scheduler's `get_last_lr()[group]`.

    `count` is the number of optimizer updates made so far (optax's convention; 0 for the first
    update). With `steps_per_epoch == 1` the torch scheduler is stepped after every optimizer
    step; with `steps_per_epoch == n` it is stepped once every `n` optimizer steps (once per
    epoch of `n` batches), and the lr at update `count` is the value after `count // n` steps.

    Called with a traced count (inside a jitted update) it is traced in; called with a value (an
    update run eagerly, a plot) it runs compiled, once per instance and count dtype, with the same
    numbers as inside a jitted update.

    Attributes:
      name: the torch class name.
      lr_at_epoch: `epoch -> lr`, the value after `epoch` calls of `scheduler.step()`.
      kind: "multiplicative", "absolute" or "affine" (how it composes in `chained_scheduler`).
      base_lr: torch's `base_lrs[group]`.
      steps_per_epoch: optimizer steps per scheduler step.
      momentum_at_epoch: for `CyclicLR`/`OneCycleLR` with `cycle_momentum`, `epoch ->
        momentum`, the momentum (β1 for Adam-family optimizers) torch writes into the param
        group; otherwise None. `momentum` is the matching optax schedule.
      restart: for `SequentialLR`: `(epoch, lr_in) -> lr` where `lr_in` is the lr when this
        scheduler takes over at a milestone (torch's `_update_lr(0)`); None when the scheduler
        restarts from `base_lr` like its standalone form.
    """

    name: str
    lr_at_epoch: Callable[[jax.Array], jax.Array]
    kind: str
    base_lr: float
    steps_per_epoch: int = 1
    momentum_at_epoch: Callable[[jax.Array], jax.Array] | None = None
    restart: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_steps_per_epoch(self.steps_per_epoch)

    def epoch(self, count: Any) -> jax.Array:
        """The number of scheduler steps taken before optimizer update `count`."""
        count = jnp.asarray(count)
        return count // self.steps_per_epoch if self.steps_per_epoch != 1 else count

    def __call__(self, count: Any) -> jax.Array:
        if not isinstance(count, jax.core.Tracer):  # called outside a trace
            return self._compiled["lr"](count)
        return self._lr(count)

    def _lr(self, count: Any) -> jax.Array:
        return jnp.asarray(self.lr_at_epoch(self.epoch(count)), scalar_dtype())

    @property
    def cycles_momentum(self) -> bool:
        return self.momentum_at_epoch is not None

    def momentum(self, count: Any) -> jax.Array:
        """The momentum (or β1) torch's param group holds at optimizer update `count`."""
        if self.momentum_at_epoch is None:
            raise ValueError(f"{self.name} does not cycle momentum")
        if not isinstance(count, jax.core.Tracer):  # called outside a trace
            return self._compiled["momentum"](count)
        return self._momentum(count)

    def _momentum(self, count: Any) -> jax.Array:
        return jnp.asarray(self.momentum_at_epoch(self.epoch(count)), scalar_dtype())

    @functools.cached_property
    def _compiled(self) -> dict[str, Callable[[Any], jax.Array]]:
        """The schedule compiled for counts given outside a trace (an update called eagerly, a
        plot): once per instance and count dtype, not once per count as op-by-op evaluation of
        its loops (and of `x ** count` in a user's lambda) would, and with the numbers the
        schedule has inside a jitted update."""
        return {"lr": jax.jit(self._lr), "momentum": jax.jit(self._momentum)}

    def per_epoch(self, steps_per_epoch: int) -> TorchSchedule:
        """The same schedule stepped once every `steps_per_epoch` optimizer steps."""
        return dataclasses.replace(self, steps_per_epoch=steps_per_epoch)

    def __repr__(self) -> str:
        per = "" if self.steps_per_epoch == 1 else f", steps_per_epoch={self.steps_per_epoch}"
        return f"{self.name}(base_lr={self.base_lr}{per})"


def _widest(x: Any) -> jax.Array:
    """An integer `x` as int64 under x64 (a Python int for torch), anything else unchanged."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    return x


def as_traceable(fn: Callable[[Any], Any], what: str) -> Callable[[jax.Array], jax.Array]:
    """`fn` (a user's `lr_lambda` or `scale_fn`) as a function of a traced number.

    A function written with `jnp` or plain arithmetic (`lambda e: 0.95 ** e`) is traced as it
    is, given an integer epoch as the widest integer (int64 under x64: JAX divides int32 in
    float32 even under x64, where torch's `1 / (1 + epoch)` is a double). One that needs a
    concrete Python number (`math.cos`, `if e < 10`) runs on the host through
    `jax.pure_callback` with `int`/`float` arguments, exactly as torch calls it.
    """
    probe_int = jax.ShapeDtypeStruct((), jnp.int32)
    try:
        jax.eval_shape(lambda x: jnp.asarray(fn(x), float), probe_int)
        return lambda x: jnp.asarray(fn(_widest(x)), scalar_dtype())
    except (jax.errors.ConcretizationTypeError, TypeError, jax.errors.TracerBoolConversionError):
        pass

    def on_host(x: np.ndarray) -> np.ndarray:
        value = x.item()
        return np.asarray(fn(value), dtype=scalar_dtype())

    def traced(x: jax.Array) -> jax.Array:
        shape = jax.ShapeDtypeStruct((), scalar_dtype())
        return jax.pure_callback(on_host, shape, x, vmap_method="sequential")

    traced.__name__ = f"{what}_on_host"
    return traced
