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
from collections.abc import Callable
from typing import Any

from jaxopt_port import schedules

#: Base lr of every configuration; group 1 (when present) uses LR2.
LR = 0.1
LR2 = 0.03


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

    def torch(self, optimizer: Any) -> Any:
        """The torch scheduler on ``optimizer``."""
        import torch

        if self.name in ("SequentialLR", "ChainedScheduler"):
            parts = [part.torch(optimizer) for part in self.kwargs["schedulers"]]
            cls = getattr(torch.optim.lr_scheduler, self.name)
            if self.name == "ChainedScheduler":
                return cls(parts)
            return cls(optimizer, parts, milestones=self.kwargs["milestones"])
        if self.name == "SWALR":
            return torch.optim.swa_utils.SWALR(optimizer, **self.kwargs)
        return getattr(torch.optim.lr_scheduler, self.name)(optimizer, **self.kwargs)

    def jax(self, lr: float = LR, **extra: Any) -> Any:
        """The jaxopt_port schedule from the factory, for a group whose initial lr is ``lr``."""
        factory: Callable[..., Any] = getattr(schedules, schedules.SCHEDULERS[self.name])
        if self.name in ("SequentialLR", "ChainedScheduler"):
            parts = [part.jax(lr) for part in self.kwargs["schedulers"]]
            rest = {k: v for k, v in self.kwargs.items() if k != "schedulers"}
            return factory(parts, **rest, **extra)
        if self.name in ("CyclicLR", "OneCycleLR"):  # they set the lr themselves
            return factory(**self.kwargs, **extra)
        return factory(lr, **self.kwargs, **extra)


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
