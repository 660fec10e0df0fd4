"""A torch lr scheduler moved mid-run torch → JAX → torch, for every scheduler class torch has.

K torch steps; ``optim.from_torch`` and ``optimizer_state_from_torch(..., scheduler=)`` take the
optimizer and the scheduler's position; J JAX steps; back through
``optimizer.load_state_dict(optimizer_state_to_torch(...))`` and ``position_scheduler`` into a
newly built optimizer and scheduler; M more torch steps. Against one unbroken torch run (float64):
the parameters after the JAX steps, the scheduler's whole ``state_dict()`` and the optimizer's
param groups at the hand-over, and the lr (and momentum / β1) of every later step.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_port import interop, optim, schedules
from parity.metric import F64_GATE
from parity.run.training import metric_at

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

K, J, M = 7, 3, 6  # past StepLR's, MultiStepLR's and SequentialLR's milestones, CosineAnnealingLR's
#: T_max (its recursion), a warm restart and a CyclicLR cycle; OneCycleLR past its peak


def _sgd(params):
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.05}]
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def _adam(params):
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.05}]
    return torch.optim.Adam(groups, lr=0.1, betas=(0.9, 0.99))


SCHEDULERS = {
    "LambdaLR": (
        _sgd,
        lambda o: lr_scheduler.LambdaLR(o, [lambda e: 0.9**e, lambda e: 1 / (1 + e)]),
    ),
    "MultiplicativeLR": (_sgd, lambda o: lr_scheduler.MultiplicativeLR(o, lambda e: 0.95)),
    "StepLR": (_sgd, lambda o: lr_scheduler.StepLR(o, 3, gamma=0.5)),
    "MultiStepLR": (_sgd, lambda o: lr_scheduler.MultiStepLR(o, [2, 5, 5, 11], gamma=0.5)),
    "ConstantLR": (_sgd, lambda o: lr_scheduler.ConstantLR(o, 0.5, total_iters=9)),
    "LinearLR": (_sgd, lambda o: lr_scheduler.LinearLR(o, 0.2, 1.0, total_iters=12)),
    "ExponentialLR": (_sgd, lambda o: lr_scheduler.ExponentialLR(o, 0.9)),
    "SequentialLR": (
        _sgd,
        lambda o: lr_scheduler.SequentialLR(
            o,
            [
                lr_scheduler.LinearLR(o, 0.1, total_iters=4),
                lr_scheduler.ExponentialLR(o, 0.9),
                lr_scheduler.CosineAnnealingLR(o, 4),
            ],
            [4, 9],
        ),
    ),
    "CosineAnnealingLR": (_sgd, lambda o: lr_scheduler.CosineAnnealingLR(o, 4, eta_min=0.001)),
    "ChainedScheduler": (
        _sgd,
        lambda o: lr_scheduler.ChainedScheduler(
            [lr_scheduler.ConstantLR(o, 0.5, 5), lr_scheduler.ExponentialLR(o, 0.9)]
        ),
    ),
    "ReduceLROnPlateau": (
        _sgd,
        lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=1, cooldown=1),
    ),
    "CyclicLR": (_sgd, lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 3, mode="triangular2")),
    "CyclicLR-beta1": (_adam, lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 3, max_momentum=0.95)),
    "CosineAnnealingWarmRestarts": (
        _sgd,
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 2, 2, eta_min=0.001),
    ),
    "OneCycleLR": (_sgd, lambda o: lr_scheduler.OneCycleLR(o, [0.5, 0.25], total_steps=20)),
    "OneCycleLR-beta1": (_adam, lambda o: lr_scheduler.OneCycleLR(o, 0.5, total_steps=20)),
    "PolynomialLR": (_sgd, lambda o: lr_scheduler.PolynomialLR(o, total_iters=12, power=2.0)),
    "SWALR": (_sgd, lambda o: torch.optim.swa_utils.SWALR(o, [0.05, 0.02], anneal_epochs=4)),
}


def test_every_torch_scheduler_is_in_the_table():
    classes = {type(make(_sgd(_params()))).__name__ for _, make in SCHEDULERS.values()}
    assert classes == set(schedules.SCHEDULERS)


pytestmark = pytest.mark.usefixtures("torch_float64")


def _params(values=None):
    values = values if values is not None else [np.ones(2), np.ones(3)]
    return [torch.nn.Parameter(torch.tensor(np.asarray(v))) for v in values]


def _hyper(optimizer):
    """What a scheduler writes into the groups: lr and momentum or β1."""
    return [
        (float(g["lr"]), g.get("momentum"), g["betas"][0] if "betas" in g else None)
        for g in optimizer.param_groups
    ]


#: ReduceLROnPlateau moved with a bad epoch counted, and moved back in a cooldown (see below)
PLATEAU_MIN = (
    _sgd,
    lambda o: lr_scheduler.ReduceLROnPlateau(o, "min", factor=0.5, patience=1, cooldown=2),
)


class _Torch:
    def __init__(self, name, values=None):
        self.plateau = name in ("ReduceLROnPlateau", "plateau-min")
        build, make = PLATEAU_MIN if name == "plateau-min" else SCHEDULERS[name]
        self.params = _params(values)
        self.optimizer = build(self.params)
        self.scheduler = make(self.optimizer)

    def step(self, k):
        """One step with gradient 1; returns the hyperparameters it used."""
        used = _hyper(self.optimizer)
        for p in self.params:
            p.grad = torch.ones_like(p)
        self.optimizer.step()
        self.scheduler.step(metric_at(k)) if self.plateau else self.scheduler.step()
        return used

    def groups(self):
        return [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]


def _close(got, want):
    if isinstance(want, dict):
        return set(got) == set(want) and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float) or isinstance(got, float):
        return got == want or math.isclose(got, want, rel_tol=F64_GATE, abs_tol=1e-300)
    if callable(want):  # LambdaLR's lambdas: the same objects are not saved
        return callable(got)
    return type(got) is type(want) and got == want


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_moved_mid_run_continues_torchs_unbroken_run(name):
    unbroken = _Torch(name)
    used, at_handover = [], None
    for k in range(K + J + M):
        if k == K + J:
            at_handover = (unbroken.scheduler.state_dict(), unbroken.groups())
            values_at_handover = [p.detach().numpy().copy() for p in unbroken.params]
        used.append(unbroken.step(k))

    run = _Torch(name)
    for k in range(K):
        run.step(k)
    tx = optim.from_torch(run.optimizer, run.scheduler)  # built from the moved scheduler
    with jax.enable_x64(True):
        params = [jnp.asarray(p.detach().numpy()) for p in run.params]
        state = interop.optimizer_state_from_torch(
            run.optimizer.state_dict(), tx, params, scheduler=run.scheduler
        )
        grads = [jnp.ones_like(p) for p in params]
        for k in range(K, K + J):
            extra = {"value": metric_at(k)} if run.plateau else {}
            updates, state = tx.update(grads, state, params, **extra)
            params = optax.apply_updates(params, updates)
        converted = interop.optimizer_state_to_torch(state, tx, params)
    gap = max(
        float(np.max(np.abs(np.asarray(a) - b)))
        for a, b in zip(params, values_at_handover, strict=True)
    )
    assert gap <= F64_GATE, gap  # the JAX steps used torch's lrs

    back = _Torch(name, values=[np.asarray(p) for p in params])
    back.optimizer.load_state_dict(converted)
    interop.position_scheduler(back.scheduler, state, tx=tx)
    saved, groups = at_handover
    assert _close(back.scheduler.state_dict(), saved), (back.scheduler.state_dict(), saved)
    assert _close(back.groups(), groups)
    later = [back.step(k) for k in range(K + J, K + J + M)]
    assert _close(later, used[K + J :])


def _plateau_fields(scheduler_or_state):
    fields = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
    return {f: float(getattr(scheduler_or_state, f)) for f in fields}


def test_plateau_keeps_best_bad_epochs_and_cooldown_both_ways():
    """ReduceLROnPlateau moved in the middle of a patience count and, on the way back, of a
    cooldown: lr, best, num_bad_epochs, cooldown_counter and last_epoch go to JAX and back (the
    lr alone used to). Moved after 7 steps with one bad epoch counted, JAX cuts the lr at its
    first step as torch does; moved back after 9 with the cooldown running and ``best`` updated
    in JAX."""
    n, m, more = 7, 2, 6
    unbroken = _Torch("plateau-min")
    used = []
    for k in range(n + m + more):
        used.append(unbroken.step(k))
        if k == n + m - 1:
            want_back = _plateau_fields(unbroken.scheduler)

    run = _Torch("plateau-min")
    for k in range(n):
        run.step(k)
    moved = _plateau_fields(run.scheduler)
    assert moved["num_bad_epochs"] == 1 and run.optimizer.param_groups[0]["lr"] == 0.1
    tx = optim.from_torch(run.optimizer, run.scheduler)
    with jax.enable_x64(True):
        params = [jnp.asarray(p.detach().numpy()) for p in run.params]
        with pytest.raises(ValueError, match="pass scheduler=<the torch ReduceLROnPlateau"):
            interop.optimizer_state_from_torch(run.optimizer.state_dict(), tx, params)
        state = interop.optimizer_state_from_torch(
            run.optimizer.state_dict(), tx, params, scheduler=run.scheduler.state_dict()
        )
        plateaus = _plateau_states(state)
        assert len(plateaus) == 2  # one per param group, each with its group's lr
        for plateau, group in zip(plateaus, run.optimizer.param_groups, strict=True):
            assert _plateau_fields(plateau) == moved and float(plateau.lr) == group["lr"]
        grads = [jnp.ones_like(p) for p in params]
        for k in range(n, n + m):
            updates, state = tx.update(grads, state, params, value=metric_at(k))
            params = optax.apply_updates(params, updates)
        converted = interop.optimizer_state_to_torch(state, tx, params)
    assert [float(p.lr) for p in _plateau_states(state)] == [0.05, 0.025]  # cut in JAX
    assert want_back["cooldown_counter"] == 1 and want_back["best"] < moved["best"]

    back = _Torch("plateau-min", values=[np.asarray(p) for p in params])
    back.optimizer.load_state_dict(converted)
    with pytest.raises(ValueError, match="pass the opt_state that holds it"):
        interop.position_scheduler(back.scheduler, count=n + m)
    interop.position_scheduler(back.scheduler, state, tx=tx)
    assert _plateau_fields(back.scheduler) == want_back
    later = [back.step(k) for k in range(n + m, n + m + more)]
    assert _close(later, used[n + m :])


def _plateau_states(state):
    is_plateau = lambda node: isinstance(node, schedules.ReduceLROnPlateauState)
    return [n for n in jax.tree_util.tree_leaves(state, is_leaf=is_plateau) if is_plateau(n)]


def test_counts_per_epoch_and_from_state_dicts():
    run = _Torch("StepLR")
    for k in range(K):
        run.step(k)
    assert interop.scheduler_count(run.scheduler) == K
    assert interop.scheduler_count(run.scheduler.state_dict(), steps_per_epoch=3) == 3 * K
    chained = _Torch("ChainedScheduler")
    for k in range(3):
        chained.step(k)
    assert interop.scheduler_count(chained.scheduler.state_dict()) == 3

    # stepped once per epoch of 3 optimizer steps: after 8 steps, 2 scheduler steps
    per_epoch = _Torch("StepLR")
    interop.position_scheduler(per_epoch.scheduler, count=8, steps_per_epoch=3)
    reference = _Torch("StepLR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference.scheduler.step()
        reference.scheduler.step()
    assert _close(per_epoch.scheduler.state_dict(), reference.scheduler.state_dict())
    assert _hyper(per_epoch.optimizer) == _hyper(reference.optimizer)


def test_bad_inputs_have_clear_messages():
    run = _Torch("StepLR")
    with pytest.raises(ValueError, match="needs the step count: pass opt_state or count="):
        interop.position_scheduler(run.scheduler)
    with pytest.raises(ValueError, match="count must be a non-negative int, got -1"):
        interop.position_scheduler(run.scheduler, count=-1)
    with pytest.raises(ValueError, match="Expected positive integer steps_per_epoch, but got 0"):
        interop.scheduler_count(run.scheduler, steps_per_epoch=0)
    with pytest.raises(TypeError, match="torch lr scheduler or its state_dict"):
        interop.scheduler_count(run.optimizer.param_groups)
    with pytest.raises(ValueError, match="holds no step count"):
        interop.position_scheduler(run.scheduler, optax.EmptyState())
