"""Every ``torch.optim.lr_scheduler`` scheduler, and ``swa_utils.SWALR``, as an optax schedule.

Each factory is the snake-case name of the torch class, takes the param group's initial lr first
(torch reads it from the optimizer) and then torch's arguments with torch's names and defaults,
and returns a :class:`TorchSchedule` — a callable ``count -> lr`` usable anywhere optax takes a
schedule — equal to ``scheduler.get_last_lr()`` after ``count`` calls of ``scheduler.step()``.
``steps_per_epoch=n`` steps it once every ``n`` optimizer updates. :func:`from_torch` reads a
live torch scheduler; :func:`with_schedules` feeds torch's momentum cycling and
:func:`reduce_lr_on_plateau` to an optimizer.

Arguments are checked as torch checks them, with torch's exception types and messages (where
torch's constructor computes the first lr with them, the same Python arithmetic runs here). What
torch accepts but fails on at a later ``step()`` (``step_size=0``: ``ZeroDivisionError``), turns
into NaN, or runs differently from its documentation (a fractional ``total_iters``) is refused at
construction; each factory's Warning says which. Each argument is one value: torch's lists of one
value per param group are one schedule per group here.
"""

from jaxopt_port.schedules._compose import chained_scheduler, sequential_lr
from jaxopt_port.schedules._core import TorchSchedule
from jaxopt_port.schedules._cyclic import cyclic_lr, one_cycle_lr, swalr
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
)
from jaxopt_port.schedules._from_torch import from_torch
from jaxopt_port.schedules._plateau import (
    ReduceLROnPlateau,
    ReduceLROnPlateauState,
    reduce_lr_on_plateau,
)
from jaxopt_port.schedules._wiring import with_schedules

#: torch scheduler class name -> jaxopt_port factory name, for every scheduler torch has.
SCHEDULERS = {
    "LambdaLR": "lambda_lr",
    "MultiplicativeLR": "multiplicative_lr",
    "StepLR": "step_lr",
    "MultiStepLR": "multi_step_lr",
    "ConstantLR": "constant_lr",
    "LinearLR": "linear_lr",
    "ExponentialLR": "exponential_lr",
    "SequentialLR": "sequential_lr",
    "CosineAnnealingLR": "cosine_annealing_lr",
    "ChainedScheduler": "chained_scheduler",
    "ReduceLROnPlateau": "reduce_lr_on_plateau",
    "CyclicLR": "cyclic_lr",
    "CosineAnnealingWarmRestarts": "cosine_annealing_warm_restarts",
    "OneCycleLR": "one_cycle_lr",
    "PolynomialLR": "polynomial_lr",
    "SWALR": "swalr",
}

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
    "with_schedules",
]
