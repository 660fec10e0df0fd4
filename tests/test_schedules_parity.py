"""jaxopt_port.schedules against torch.optim.lr_scheduler, driven by parity/specs/schedules.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_torch_treats_alike

from jaxopt_port import optim, schedules
from parity.metric import F64_GATE
from parity.run.training import jax_steps, metric_at, torch_steps
from parity.specs.problems import make_problem
from parity.specs.schedules import INVALID, LR, LR2, PLATEAU_SPECS, SPECS, ScheduleSpec

torch = pytest.importorskip("torch")

STEPS = 1200
#: float64, relative to torch's lr at every step. Measured worst over SPECS: 3.5e-14
#: (CosineAnnealingLR with eta_min), 3.0e-14 (OneCycleLR linear three-phase); the rest ≤ 3.7e-15.


def _torch_optimizer(spec: ScheduleSpec, groups: int = 1):
    params = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(groups)]
    param_groups = [{"params": [p], "lr": lr} for p, lr in zip(params, (LR, LR2), strict=False)]
    return spec.torch_optimizer(param_groups)


def _torch_sequence(spec: ScheduleSpec, steps: int, group: int = 0, groups: int = 1):
    """torch's lr (and momentum / β1) of ``group`` after k = 0..steps-1 scheduler steps."""
    optimizer = _torch_optimizer(spec, groups)
    scheduler = spec.torch(optimizer)
    lrs, momenta = [], []
    for _ in range(steps):
        g = optimizer.param_groups[group]
        lrs.append(scheduler.get_last_lr()[group])
        momenta.append(g["momentum"] if "momentum" in g else g["betas"][0])
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs, float), np.asarray(momenta, float)


def _evaluate(schedule, counts: int) -> np.ndarray:
    # lax.map keeps the schedule scalar, as in an optimizer update (vmap would let XLA rewrite
    # the divisions into reciprocal multiplications, see schedules._core.divide)
    return np.asarray(jax.jit(lambda c: jax.lax.map(schedule, c))(jnp.arange(counts)))


def _assert_close(got: np.ndarray, want: np.ndarray, rtol: float = F64_GATE) -> None:
    worst = np.max(np.abs(got - want) / np.where(want == 0, 1.0, np.abs(want)))
    zeros_ok = np.all(got[want == 0] == 0)
    assert worst <= rtol and zeros_ok, (worst, int(np.argmax(np.abs(got - want))))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)
def test_schedule_matches_torch_for_1200_steps(spec):
    want, want_momentum = _torch_sequence(spec, STEPS)
    with jax.enable_x64(True):
        for schedule in (spec.jax(), schedules.from_torch(spec.torch(_torch_optimizer(spec)))):
            _assert_close(_evaluate(schedule, STEPS), want)
            if schedule.cycles_momentum:
                momentum = _evaluate(schedule.momentum, STEPS)
                np.testing.assert_allclose(momentum, want_momentum, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("spec", SPECS[::3], ids=lambda s: s.id)
def test_stepping_once_per_epoch(spec):
    per_epoch, epochs = 7, 180
    want, _ = _torch_sequence(spec, epochs)
    with jax.enable_x64(True):
        schedule = schedules.from_torch(spec.torch(_torch_optimizer(spec)), steps_per_epoch=7)
        factory = None if spec.cls.own_steps_per_epoch else spec.jax(steps_per_epoch=7)
        for s in (schedule, factory):
            if s is not None:
                _assert_close(_evaluate(s, per_epoch * epochs), np.repeat(want, per_epoch))


@pytest.mark.parametrize(
    "spec", [s for s in SPECS if s.name in ("CyclicLR", "OneCycleLR", "StepLR", "SequentialLR")]
)
def test_second_param_group(spec):
    want, _ = _torch_sequence(spec, 400, group=1, groups=2)
    with jax.enable_x64(True):
        optimizer = _torch_optimizer(spec, groups=2)
        schedule = schedules.from_torch(spec.torch(optimizer), group=1)
        _assert_close(_evaluate(schedule, 400), want)
    with pytest.raises(IndexError, match="group 2 out of range"):
        schedules.from_torch(spec.torch(_torch_optimizer(spec, groups=2)), group=2)


def _train_both(make_optimizer, make_scheduler, steps: int, plateau: bool = False):
    """torch and ``optim.from_torch(optimizer, scheduler=...)`` on one problem, float64."""
    torch.set_default_dtype(torch.float64)  # torch keeps ASGD's eta in the default dtype
    problem = make_problem("mlp", steps, seed=3)
    params = [torch.nn.Parameter(torch.tensor(p)) for p in problem.params]
    optimizer = make_optimizer(params)
    scheduler = make_scheduler(optimizer)
    tx = optim.from_torch(optimizer, scheduler=scheduler)
    lrs = torch_steps(problem, params, optimizer, scheduler, steps, plateau=plateau)
    with jax.enable_x64(True):
        jax_params = [jnp.asarray(p) for p in problem.params]
        jax_params, state = jax_steps(
            problem, jax_params, tx.init(jax_params), tx, steps, plateau=plateau
        )
        got = [np.asarray(p) for p in jax_params]
    worst = max(np.max(np.abs(g - w.detach().numpy())) for g, w in zip(got, params, strict=True))
    return worst, lrs, state


@pytest.mark.parametrize(
    "make_optimizer, make_scheduler",
    [
        (
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True),
            lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=60),
        ),
        (
            lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
            lambda o: torch.optim.lr_scheduler.CyclicLR(
                o, base_lr=1e-3, max_lr=0.02, step_size_up=7, mode="triangular2"
            ),
        ),
        (
            lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.3),
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=0.02, total_steps=60, three_phase=True, anneal_strategy="linear"
            ),
        ),
        (
            lambda p: torch.optim.ASGD(p, lr=0.02, t0=10),
            lambda o: torch.optim.lr_scheduler.SequentialLR(
                o,
                [
                    torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=10),
                    torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=40),
                ],
                milestones=[10],
            ),
        ),
    ],
    ids=["sgd nesterov onecycle", "adamw cyclic betas", "rmsprop onecycle 3-phase", "asgd seq"],
)
def test_from_torch_wires_lr_and_momentum_cycling_into_the_optimizer(
    make_optimizer, make_scheduler
):
    worst, _, _ = _train_both(make_optimizer, make_scheduler, 60)
    assert worst <= F64_GATE, worst


def test_momentum_cycling_matters():
    """The test above would fail if β1 stayed at its constructor value (it must reach Adam)."""
    problem = make_problem("mlp", 30, seed=3)
    params = [torch.nn.Parameter(torch.tensor(p)) for p in problem.params]
    optimizer = torch.optim.Adam(params, lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02, total_steps=30)
    lr_only = optim.adam(lr=schedules.from_torch(scheduler), betas=(0.95, 0.999))
    torch_steps(problem, params, optimizer, scheduler, 30)
    with jax.enable_x64(True):
        p = [jnp.asarray(x) for x in problem.params]
        p, _ = jax_steps(problem, p, lr_only.init(p), lr_only, 30)
        worst = max(
            np.max(np.abs(np.asarray(a) - b.detach().numpy()))
            for a, b in zip(p, params, strict=True)
        )
    assert worst > 1e-6, worst


@pytest.mark.parametrize("spec", PLATEAU_SPECS, ids=lambda s: s.id)
def test_reduce_lr_on_plateau_follows_torch_through_value(spec):
    steps = 120
    worst, lrs, state = _train_both(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        spec.torch,
        steps,
        plateau=True,
    )
    assert worst <= F64_GATE, worst
    # the lr of the last update: torch's after the metrics of the updates before it
    assert float(state.hyperparams["lr"]) == lrs[-1]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = spec.torch(optimizer)
    for k in range(steps - 1):
        scheduler.step(metric_at(k))
    assert float(state.hyperparams["lr"]) == scheduler.get_last_lr()[0]
    assert len(set(lrs)) > 2, "the metric sequence must trigger several cuts"


def test_reduce_lr_on_plateau_per_epoch_uses_the_metric_at_the_end_of_each_epoch():
    spec = PLATEAU_SPECS[1]
    per_epoch, epochs = 5, 40
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = spec.torch(optimizer)
    want = []
    for e in range(epochs):
        want += [scheduler.get_last_lr()[0]] * per_epoch
        scheduler.step(metric_at(e))
    with jax.enable_x64(True):
        plateau = schedules.from_torch(
            spec.torch(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)),
            steps_per_epoch=per_epoch,
        )
        state, got = plateau.init(), []
        for count in range(per_epoch * epochs):
            got.append(float(plateau(state)))
            metric = metric_at(count // per_epoch) if count % per_epoch == per_epoch - 1 else 1e9
            state = plateau.update(state, value=metric)
    assert got == want


def test_reduce_lr_on_plateau_needs_the_metric():
    tx = schedules.with_schedules(optim.sgd, lr=schedules.reduce_lr_on_plateau(0.1))
    params = jnp.zeros(2)
    with pytest.raises(TypeError, match=r"update\(\.\.\., value=metric\)"):
        tx.update(params, tx.init(params), params)


def test_schedule_compiles_once_and_keeps_the_optimizer_state_structure():
    traces = []
    schedule = schedules.sequential_lr(
        [schedules.linear_lr(0.1, 0.1, total_iters=5), schedules.cosine_annealing_lr(0.1, 20)],
        milestones=[5],
    )
    tx = optim.adam(lr=schedule)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(params, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(30):
        params, state = step(params, state)
    assert len(traces) == 1


def test_optaxs_cosine_decay_is_not_torchs():
    """The divergence documented in docs/schedules.md: optax stays at the end value past T_max."""
    torch_like = schedules.cosine_annealing_lr(0.1, T_max=100)
    optax_cosine = optax.cosine_decay_schedule(0.1, decay_steps=100)
    assert abs(float(torch_like(150)) - 0.05) < 1e-6
    assert float(optax_cosine(150)) == 0.0


def _torch_lrs(row, optimizer, scheduler, steps=10):
    """torch's lr over its first steps, or the exception one of them raises."""
    lrs = []
    try:
        for _ in range(steps):
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step(1.0) if row.spec.cls.steps_on_metric else scheduler.step()
    except Exception as error:  # what torch raises is the thing under test
        return error
    return np.asarray(lrs)


@pytest.mark.parametrize("row", INVALID, ids=lambda row: row.id)
def test_invalid_arguments_are_refused_and_checked_against_torch(row):
    """One row per (scheduler, bad arguments, exception, message) in parity/specs/schedules.py;
    where torch raises at construction it must raise the same type and message here."""
    with pytest.raises(row.error, match=row.match) as ours:
        row.spec.jax(row.lr)

    def build():
        optimizer = row.spec.torch_optimizer([torch.nn.Parameter(torch.zeros(1))], row.lr)
        return optimizer, row.spec.torch(optimizer)

    assert_torch_treats_alike(row, ours, build, lambda built: _torch_lrs(row, *built))


def test_chained_affine_part_and_nesting_are_refused_with_a_reason():
    parts = [schedules.exponential_lr(LR, 0.9), schedules.cosine_annealing_lr(LR, 10)]
    with pytest.raises(ValueError, match="CosineAnnealingLR is not multiplicative"):
        schedules.chained_scheduler(parts)
    inner = schedules.sequential_lr([schedules.linear_lr(LR), schedules.step_lr(LR, 3)], [5])
    with pytest.raises(ValueError, match="nested composite schedulers are not supported"):
        schedules.chained_scheduler([inner, schedules.step_lr(LR, 3)])
    with pytest.raises(TypeError, match="ReduceLROnPlateau cannot be combined"):
        schedules.sequential_lr([schedules.reduce_lr_on_plateau(LR)], milestones=[])


def test_every_torch_scheduler_has_a_factory_and_a_spec():
    names = set(torch.optim.lr_scheduler.__all__) - {"LRScheduler"} | {"SWALR"}
    assert names == set(schedules.SCHEDULERS)
    covered = {s.name for s in SPECS + PLATEAU_SPECS}
    assert covered == names
    for factory in schedules.SCHEDULERS.values():
        assert callable(getattr(schedules, factory))


def test_from_torch_says_what_it_needs_when_given_something_else():
    """Issue 12 item 11: anything but a scheduler failed with an AttributeError."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)

    class MyStepLR(torch.optim.lr_scheduler.StepLR):
        pass

    cases = [
        (optimizer, r"got the torch optimizer SGD; pass the scheduler built on it"),
        (torch.optim.lr_scheduler.StepLR, r"got the class StepLR itself, not an instance of it"),
        (
            torch.optim.lr_scheduler.StepLR(optimizer, 3).state_dict(),
            r"got a dict \(a state_dict\?\); pass the scheduler itself",
        ),
        (0.1, r"got a builtins\.float$"),
    ]
    for given, message in cases:
        with pytest.raises(TypeError, match=r"^schedules\.from_torch expects a torch\.optim\."):
            schedules.from_torch(given)
        with pytest.raises(TypeError, match=message):
            schedules.from_torch(given)
    with pytest.raises(TypeError, match=r"got the torch optimizer SGD"):
        optim.from_torch(optimizer, scheduler=optimizer)
    with pytest.raises(
        TypeError, match=r"^no jaxopt_port schedule for MyStepLR \(a subclass of StepLR, whose"
    ):
        schedules.from_torch(MyStepLR(optimizer, 3))
    # the table is of torch's classes, not of names: a subclass under torch's name is refused too
    same_name = type("StepLR", (torch.optim.lr_scheduler.StepLR,), {"__module__": "user_code"})
    with pytest.raises(TypeError, match=r"^no jaxopt_port schedule for StepLR \(a subclass of"):
        schedules.from_torch(same_name(optimizer, 3))
