"""Every `torch.optim.lr_scheduler` scheduler, and `swa_utils.SWALR`, as an optax schedule.

Each factory is the snake-case name of the torch class, takes the param group's initial lr first
(torch reads it from the optimizer) and then torch's arguments with torch's names and defaults, and
returns a [`TorchSchedule`][jaxopt_port.schedules.TorchSchedule] — a callable `count -> lr` usable
anywhere optax takes a schedule — equal to `scheduler.get_last_lr()` after `count` calls of
`scheduler.step()`. `steps_per_epoch=n` steps it once every `n` optimizer updates.
[`from_torch`][jaxopt_port.schedules.from_torch] reads a live torch scheduler;
[`with_schedules`][jaxopt_port.schedules.with_schedules] feeds torch's momentum cycling and
[`reduce_lr_on_plateau`][jaxopt_port.schedules.reduce_lr_on_plateau] to an optimizer.

Arguments are checked as torch checks them, with torch's exception types and messages (where
torch's constructor computes the first lr with them, the same Python arithmetic runs here). What
torch accepts but fails on at a later `step()` (`step_size=0`: `ZeroDivisionError`), turns
into NaN, or runs differently from its documentation (a fractional `total_iters`) is refused at
construction; each factory's Warning says which. Each argument is one value: torch's lists of one
value per param group are one schedule per group here.
"""

from jaxopt_port._core.hooks import set_scheduled_transformation
from jaxopt_port.schedules._compose import chained_scheduler, sequential_lr
from jaxopt_port.schedules._core import TorchSchedule
from jaxopt_port.schedules._cyclic import cyclic_lr, one_cycle_lr
from jaxopt_port.schedules._decay import (
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multi_step_lr,
    multiplicative_lr,
    polynomial_lr,
    step_lr,
    warm_restart_position,
)
from jaxopt_port.schedules._from_torch import TABLE, from_torch
from jaxopt_port.schedules._plateau import (
    ReduceLROnPlateau,
    ReduceLROnPlateauState,
    reduce_lr_on_plateau,
)
from jaxopt_port.schedules._swa import swalr
from jaxopt_port.schedules._wiring import scheduled_transformation, with_schedules

set_scheduled_transformation(scheduled_transformation)  # for optim.from_torch(optimizer, scheduler)

SCHEDULERS = {torch_name: factory for torch_name, (factory, _) in TABLE.items()}
"""torch scheduler class name -> jaxopt_port factory name, for every scheduler torch has."""

__all__ = [
    "SCHEDULERS",
    "ReduceLROnPlateau",
    "ReduceLROnPlateauState",
    "TorchSchedule",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "from_torch",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
    "swalr",
    "warm_restart_position",
    "with_schedules",
]
