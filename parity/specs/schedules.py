"""One table of torch lr scheduler configurations, shared by the tests and the parity suite.

Each :class:`ScheduleSpec` builds the torch scheduler on a fresh optimizer and, from the same
arguments, the jaxopt_port schedule through the public factory (so both the factory and
``schedules.from_torch`` are checked against torch). The configurations cover every scheduler
class, every mode and option, and the places where torch's recursion does something an optax
user would not expect: cosine past ``T_max``, duplicate milestones, OneCycle's end,
SequentialLR restarts, SWALR annealing from the lr it finds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from jaxopt_port import schedules

#: Base lr of every configuration; group 1 (when present) uses LR2.
LR = 0.1
LR2 = 0.03


@dataclasses.dataclass(frozen=True)
class SchedulerClass:
    """How one torch scheduler class is built, where it differs from the plain
    ``lr_scheduler.<name>(optimizer, **kwargs)`` and ``factory(lr, **kwargs)``.

    Attributes:
      name: the torch class name.
      torch_module: where the class lives in torch.
      composite: its ``schedulers`` argument is a list of other schedulers (nested specs).
      takes_optimizer: torch's constructor takes the optimizer first.
      sets_lr: it sets the lr itself from its kwargs: the jaxopt_port factory takes no initial lr.
      steps_on_metric: its ``step`` takes the monitored metric.
      own_steps_per_epoch: it has a ``steps_per_epoch`` argument of its own (OneCycleLR's
        ``epochs × steps_per_epoch``), so its factory cannot also step once per epoch.
    """

    name: str
    torch_module: str = "torch.optim.lr_scheduler"
    composite: bool = False
    takes_optimizer: bool = True
    sets_lr: bool = False
    steps_on_metric: bool = False
    own_steps_per_epoch: bool = False


#: The scheduler classes built differently from the plain form (every other class is plain).
SCHEDULER_CLASSES: tuple[SchedulerClass, ...] = (
    SchedulerClass("SequentialLR", composite=True),
    SchedulerClass("ChainedScheduler", composite=True, takes_optimizer=False),
    SchedulerClass("SWALR", torch_module="torch.optim.swa_utils"),
    SchedulerClass("CyclicLR", sets_lr=True),
    SchedulerClass("OneCycleLR", sets_lr=True, own_steps_per_epoch=True),
    SchedulerClass("ReduceLROnPlateau", steps_on_metric=True),
)

#: The torch optimizer a spec's ``optimizer`` names: class name and kwargs besides the lr (SGD
#: has momentum, Adam betas: the param-group keys that cycling schedulers move).
TORCH_OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"momentum": 0.9}),
    "adam": ("Adam", {}),
}


def scheduler_class(name: str) -> SchedulerClass:
    """The row of `SCHEDULER_CLASSES` for torch class ``name`` (a plain row if it has none)."""
    return next((c for c in SCHEDULER_CLASSES if c.name == name), SchedulerClass(name))


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A torch scheduler configuration.

    Attributes:
      name: the torch class name (``schedules.SCHEDULERS`` key).
      kwargs: its arguments (without the optimizer); nested specs for SequentialLR/Chained.
      optimizer: "sgd" (has momentum) or "adam" (has betas): which param-group keys cycling uses.
      id: a readable test id.
    """

    name: str
    kwargs: dict[str, Any]
    optimizer: str = "sgd"
    id: str = ""

    @property
    def cls(self) -> SchedulerClass:
        """How its torch class is built."""
        return scheduler_class(self.name)

    def torch_optimizer(self, params: Any, lr: float = LR) -> Any:
        """The torch optimizer of `TORCH_OPTIMIZERS` that ``optimizer`` names, on ``params``."""
        import torch

        name, kwargs = TORCH_OPTIMIZERS[self.optimizer]
        return getattr(torch.optim, name)(params, lr=lr, **kwargs)

    def torch(self, optimizer: Any) -> Any:
        """The torch scheduler on ``optimizer``."""
        import importlib

        cls = getattr(importlib.import_module(self.cls.torch_module), self.name)
        kwargs = dict(self.kwargs)
        args = [optimizer] if self.cls.takes_optimizer else []
        if self.cls.composite:
            args.append([part.torch(optimizer) for part in kwargs.pop("schedulers")])
        return cls(*args, **kwargs)

    def jax(self, lr: float = LR, **extra: Any) -> Any:
        """The jaxopt_port schedule from the factory, for a group whose initial lr is ``lr``."""
        factory: Callable[..., Any] = getattr(schedules, schedules.SCHEDULERS[self.name])
        kwargs = dict(self.kwargs)
        if self.cls.composite:
            parts = [part.jax(lr) for part in kwargs.pop("schedulers")]
            return factory(parts, **kwargs, **extra)
        if self.cls.sets_lr:
            return factory(**kwargs, **extra)
        return factory(lr, **kwargs, **extra)


def _spec(name: str, id: str, optimizer: str = "sgd", **kwargs: Any) -> ScheduleSpec:
    return ScheduleSpec(name, kwargs, optimizer, id)


def _host_scale(x: Any) -> float:
    """A scale_fn that needs a Python number (math, a branch): runs on the host."""
    return 1.0 if x < 3 else 0.5 * (1 + math.cos(x))


SPECS: tuple[ScheduleSpec, ...] = (
    _spec("LambdaLR", "lambda traced", lr_lambda=lambda e: 0.99**e),
    _spec("LambdaLR", "lambda on host", lr_lambda=lambda e: 1.0 / (1 + e) if e < 500 else 0.5 / (1 + e)),
    _spec("MultiplicativeLR", "multiplicative", lr_lambda=lambda e: 0.995),
    _spec("StepLR", "step", step_size=30),
    _spec("StepLR", "step gamma 0.7", step_size=7, gamma=0.7),
    _spec("MultiStepLR", "multistep duplicate milestones", milestones=[100, 300, 300, 800], gamma=0.5),
    _spec("ConstantLR", "constant", factor=1 / 3, total_iters=40),
    _spec("ConstantLR", "constant defaults"),
    _spec("LinearLR", "linear warmup", start_factor=0.01, total_iters=200),
    _spec("LinearLR", "linear decay", start_factor=1.0, end_factor=0.05, total_iters=700),
    _spec("ExponentialLR", "exponential", gamma=0.995),
    _spec("PolynomialLR", "polynomial", total_iters=900, power=2.0),
    _spec("PolynomialLR", "polynomial defaults"),
    _spec("CosineAnnealingLR", "cosine past T_max", T_max=300),
    _spec("CosineAnnealingLR", "cosine eta_min", T_max=250, eta_min=0.001),
    _spec("CosineAnnealingWarmRestarts", "warm restarts", T_0=50),
    _spec("CosineAnnealingWarmRestarts", "warm restarts T_mult 2", T_0=20, T_mult=2, eta_min=1e-4),
    _spec("CyclicLR", "cyclic triangular", base_lr=0.01, max_lr=0.1, step_size_up=50),
    _spec("CyclicLR", "cyclic triangular2 asymmetric", base_lr=0.01, max_lr=0.1, step_size_up=40, step_size_down=90, mode="triangular2"),
    _spec("CyclicLR", "cyclic exp_range", base_lr=0.01, max_lr=0.1, step_size_up=30, mode="exp_range", gamma=0.999),
    _spec("CyclicLR", "cyclic scale_fn cycle on host", base_lr=0.01, max_lr=0.1, step_size_up=25, scale_fn=_host_scale),
    _spec("CyclicLR", "cyclic scale_fn iterations", base_lr=0.01, max_lr=0.1, step_size_up=25, scale_fn=lambda x: 0.999**x, scale_mode="iterations"),
    _spec("CyclicLR", "cyclic adam betas", optimizer="adam", base_lr=0.001, max_lr=0.01, step_size_up=60, base_momentum=0.85, max_momentum=0.95),
    _spec("CyclicLR", "cyclic no momentum", base_lr=0.01, max_lr=0.1, step_size_up=50, cycle_momentum=False),
    _spec("OneCycleLR", "onecycle cos", max_lr=0.5, total_steps=1200),
    _spec("OneCycleLR", "onecycle linear three phase", max_lr=0.5, total_steps=1200, anneal_strategy="linear", three_phase=True),
    _spec("OneCycleLR", "onecycle epochs adam", optimizer="adam", max_lr=0.01, epochs=12, steps_per_epoch=100, pct_start=0.25, div_factor=10.0),
    _spec("SWALR", "swalr cos", swa_lr=0.02, anneal_epochs=300),
    _spec("SWALR", "swalr linear", swa_lr=0.5, anneal_epochs=7, anneal_strategy="linear"),
    _spec("SWALR", "swalr no annealing", swa_lr=0.02, anneal_epochs=0),
    _spec("SequentialLR", "sequential warmup cosine", schedulers=[
        _spec("LinearLR", "", start_factor=0.01, total_iters=100),
        _spec("CosineAnnealingLR", "", T_max=900)], milestones=[100]),
    _spec("SequentialLR", "sequential three parts", schedulers=[
        _spec("ConstantLR", "", factor=0.5, total_iters=50),
        _spec("ExponentialLR", "", gamma=0.99),
        _spec("StepLR", "", step_size=100, gamma=0.5)], milestones=[200, 600]),
    _spec("SequentialLR", "sequential into swalr and multiplicative", schedulers=[
        _spec("ExponentialLR", "", gamma=0.998),
        _spec("SWALR", "", swa_lr=0.01, anneal_epochs=100),
        _spec("MultiplicativeLR", "", lr_lambda=lambda e: 0.999)], milestones=[300, 700]),
    _spec("ChainedScheduler", "chained multiplicative", schedulers=[
        _spec("ConstantLR", "", factor=0.5, total_iters=20),
        _spec("ExponentialLR", "", gamma=0.998),
        _spec("MultiStepLR", "", milestones=[400, 800], gamma=0.3)]),
    _spec("ChainedScheduler", "chained absolute then step", schedulers=[
        _spec("LinearLR", "", start_factor=0.1, total_iters=50),
        _spec("LambdaLR", "", lr_lambda=lambda e: 0.999**e),
        _spec("StepLR", "", step_size=100, gamma=0.5)]),
)  # fmt: skip

#: Configurations that run ReduceLROnPlateau on a metric sequence (its own test).
PLATEAU_SPECS: tuple[ScheduleSpec, ...] = (
    _spec("ReduceLROnPlateau", "plateau min rel", factor=0.5, patience=3),
    _spec("ReduceLROnPlateau", "plateau min abs cooldown", factor=0.3, patience=2, threshold=0.01, threshold_mode="abs", cooldown=4),
    _spec("ReduceLROnPlateau", "plateau max rel min_lr", mode="max", factor=0.5, patience=1, min_lr=0.01),
    _spec("ReduceLROnPlateau", "plateau max abs eps", mode="max", factor=0.9, patience=0, threshold_mode="abs", eps=0.001),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class InvalidSchedule:
    """Scheduler arguments that must be refused at construction, and how.

    Attributes:
      spec: the scheduler with the bad arguments (built on both sides as in :class:`ScheduleSpec`).
      error: the exception type jaxopt_port raises.
      match: a regex the message must match (``re.search``).
      torch: what torch does, checked by the test against torch itself: ``"same"``: building the
        optimizer (with ``lr``) and the scheduler raises ``error`` with the same message; an
        exception class: torch's constructor accepts them and one of its first ``step()`` calls
        raises that exception; ``"nonfinite"``: its lr becomes non-finite; ``"accepted"``: torch
        runs with them (jaxopt_port refuses what it would not reproduce or what contradicts
        torch's documentation; the factory's docstring says so under Warning).
      lr: the param group's lr (the schedule's first argument; the torch optimizer's lr).
    """

    spec: ScheduleSpec
    error: type[Exception]
    match: str
    torch: Any = "same"
    lr: Any = LR

    @property
    def id(self) -> str:
        def show(v: Any) -> str:
            if isinstance(v, list):
                return f"[{', '.join(show(x) for x in v)}]"
            return getattr(v, "__name__", repr(v)) if callable(v) else repr(v)

        args = ", ".join(f"{k}={show(v)}" for k, v in self.spec.kwargs.items() if k != "schedulers")
        return f"{self.spec.name}({args}{'' if self.lr == LR else f', lr={self.lr!r}'})"


def _bad(
    name: str, match: str, error: type[Exception] = ValueError, torch: Any = "same", lr: Any = LR,
    optimizer: str = "sgd", **kwargs: Any,
) -> InvalidSchedule:  # fmt: skip
    """A row; ``match`` is literal text (escaped here)."""
    return InvalidSchedule(_spec(name, "", optimizer, **kwargs), error, re.escape(match), torch, lr)


#: Arguments every scheduler factory refuses (issue 12: step_lr(step_size=0) gave lr 10.0,
#: cosine_annealing_lr(T_max=0) NaN and a str lr was accepted).
INVALID: tuple[InvalidSchedule, ...] = (
    # the param group's lr, as torch's optimizer checks it
    _bad("ExponentialLR", "'<=' not supported between instances of 'float' and 'str'", TypeError, lr="0.1", optimizer="adam", gamma=0.9),
    _bad("StepLR", "Invalid learning rate: -0.1", lr=-0.1, step_size=3),
    _bad("LambdaLR", "'float' object is not callable", TypeError, lr_lambda=0.5),
    _bad("MultiplicativeLR", "lr_lambda should be a function, but got float", TypeError, lr_lambda=0.5),
    _bad("LambdaLR", "lr_lambda must be one function", TypeError, "accepted", lr_lambda=[lambda e: 1.0]),
    _bad("StepLR", "Expected positive integer step_size, but got 0", torch=ZeroDivisionError, step_size=0),
    _bad("StepLR", "Expected positive integer step_size, but got 2.5", torch="accepted", step_size=2.5),
    _bad("StepLR", "Expected positive integer step_size, but got -3", torch="accepted", step_size=-3),
    _bad("StepLR", "Expected positive integer step_size, but got 3", torch=TypeError, step_size="3"),
    _bad("StepLR", "gamma must be a real number, got str '0.5'", TypeError, TypeError, step_size=3, gamma="0.5"),
    _bad("MultiStepLR", "'int' object is not iterable", TypeError, milestones=5),
    _bad("MultiStepLR", "Expected non-negative integer milestones, but got -1", torch="accepted", milestones=[-1, 5]),
    _bad("MultiStepLR", "Expected non-negative integer milestones, but got 2.5", torch="accepted", milestones=[2.5]),
    _bad("ConstantLR", "Constant multiplicative factor expected to be between 0 and 1.", factor=1.5),
    _bad("ConstantLR", "'>' not supported between instances of 'str' and 'float'", TypeError, factor="0.5"),
    _bad("ConstantLR", "Constant multiplicative factor 0 is not supported", torch=ZeroDivisionError, factor=0.0),
    _bad("ConstantLR", "Expected positive integer total_iters, but got 0", torch="accepted", total_iters=0),
    _bad("LinearLR", "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.", start_factor=0),
    _bad("LinearLR", "Ending multiplicative factor expected to be between 0 and 1.", end_factor=2),
    _bad("LinearLR", "'>' not supported between instances of 'NoneType' and 'float'", TypeError, start_factor=None),
    _bad("LinearLR", "Expected positive integer total_iters, but got 2.5", torch="accepted", total_iters=2.5),
    _bad("ExponentialLR", "gamma must be a real number, got NoneType None", TypeError, TypeError, gamma=None),
    _bad("PolynomialLR", "Expected positive integer total_iters, but got 0", torch="accepted", total_iters=0),
    _bad("PolynomialLR", "Expected non-negative power, but got -1.0", torch=ZeroDivisionError, total_iters=3, power=-1.0),
    _bad("CosineAnnealingLR", "Expected nonzero T_max, but got 0", torch=ZeroDivisionError, T_max=0),
    _bad("CosineAnnealingLR", "T_max must be a real number, got str '10'", TypeError, TypeError, T_max="10"),
    _bad("CosineAnnealingWarmRestarts", "Expected positive integer T_0, but got 0", T_0=0),
    _bad("CosineAnnealingWarmRestarts", "Expected positive integer T_0, but got 2.5", T_0=2.5),
    _bad("CosineAnnealingWarmRestarts", "Expected integer T_mult >= 1, but got 0", T_0=5, T_mult=0),
    _bad("CyclicLR", "mode is invalid and scale_fn is None", base_lr=0.01, max_lr=0.1, mode="x"),
    _bad("CyclicLR", "float division by zero", ZeroDivisionError, base_lr=0.01, max_lr=0.1, step_size_up=0),
    _bad("CyclicLR", "float division by zero", ZeroDivisionError, base_lr=0.01, max_lr=0.1, step_size_down=math.inf),
    _bad("CyclicLR", "cannot convert float NaN to integer", base_lr=0.01, max_lr=0.1, step_size_up=math.nan),
    _bad("CyclicLR", "Expected finite step_size_up and step_size_down, but got inf and 4.0", torch="nonfinite", base_lr=0.01, max_lr=0.1, step_size_up=math.inf, step_size_down=4),
    _bad("CyclicLR", "unsupported operand type(s) for -: 'str' and 'float'", TypeError, base_lr=0.01, max_lr="0.1"),
    _bad("CyclicLR", "unsupported operand type(s) for -: 'float' and 'str'", TypeError, base_lr=0.01, max_lr=0.1, base_momentum="0.8"),
    _bad("CyclicLR", "unsupported operand type(s) for ** or pow(): 'str' and 'int'", TypeError, base_lr=0.01, max_lr=0.1, mode="exp_range", gamma="0.99"),
    _bad("CyclicLR", "max_lr must be one number", TypeError, "accepted", base_lr=0.01, max_lr=[0.1]),
    _bad("OneCycleLR", "You must define either total_steps OR (epochs AND steps_per_epoch)", max_lr=0.1),
    _bad("OneCycleLR", "Expected positive integer total_steps, but got 0", max_lr=0.1, total_steps=0),
    _bad("OneCycleLR", "Expected float between 0 and 1 pct_start, but got 1.5", max_lr=0.1, total_steps=9, pct_start=1.5),
    _bad("OneCycleLR", "unsupported operand type(s) for *: 'NoneType' and 'int'", TypeError, max_lr=0.1, total_steps=9, pct_start=None),
    _bad("OneCycleLR", "anneal_strategy must be one of 'cos' or 'linear', instead got x", max_lr=0.1, total_steps=9, anneal_strategy="x"),
    _bad("OneCycleLR", "float division by zero", ZeroDivisionError, max_lr=0.1, total_steps=10, pct_start=0.1),
    _bad("OneCycleLR", "unsupported operand type(s) for /: 'str' and 'float'", TypeError, max_lr="0.1", total_steps=10),
    _bad("OneCycleLR", "unsupported operand type(s) for -: 'str' and 'float'", TypeError, max_lr=0.1, total_steps=10, max_momentum="0.95"),
    _bad("OneCycleLR", "max_lr must be one number", TypeError, "accepted", max_lr=[0.1], total_steps=10),
    _bad("SWALR", "anneal_strategy must be one of 'cos' or 'linear', instead got x", swa_lr=0.01, anneal_strategy="x"),
    _bad("SWALR", "anneal_epochs must be equal or greater than 0, got -1", swa_lr=0.01, anneal_epochs=-1),
    _bad("SWALR", "can't multiply sequence by non-int of type 'float'", TypeError, swa_lr="0.01"),
    _bad("SWALR", "unsupported operand type(s) for *: 'float' and 'NoneType'", TypeError, swa_lr=None),
    _bad("ReduceLROnPlateau", "Factor should be < 1.0.", factor=1.0),
    _bad("ReduceLROnPlateau", "'>=' not supported between instances of 'str' and 'float'", TypeError, factor="0.5"),
    _bad("ReduceLROnPlateau", "mode x is unknown!", mode="x"),
    _bad("ReduceLROnPlateau", "threshold mode x is unknown!", threshold_mode="x"),
    _bad("ReduceLROnPlateau", "patience must be a real number, got str '10'", TypeError, TypeError, patience="10"),
    _bad("ReduceLROnPlateau", "Expected integer cooldown, but got 1.5", torch="accepted", cooldown=1.5),
    _bad("ReduceLROnPlateau", "min_lr must be one number", TypeError, "accepted", min_lr=[0.0]),
    _bad("SequentialLR", "Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, but got number of schedulers 1 and the number of milestones to be equal to 1", schedulers=[_spec("StepLR", "", step_size=3)], milestones=[2]),
    _bad("ChainedScheduler", "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.", schedulers=[]),
)  # fmt: skip
