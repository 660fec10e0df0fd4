"""Optimizer state torch ↔ jaxopt_port, and a run resumed across frameworks, for all 15 optimizers.

N steps in JAX, convert (weights, optimizer state, scheduler position), M steps in torch equals
N + M steps in torch; and torch → JAX → torch for every option that makes the first step differ
or reads the step count (``SPECS[...].resume_configs``), against an unbroken torch run. float64 throughout,
and no ``count=``: the count is what torch's state (``step``) or its scheduler (``last_epoch``)
implies.
"""

from __future__ import annotations

import copy
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import max_abs_difference, split

from jaxopt_port import interop, optim
from jaxopt_port.interop import optimizer_state as optimizer_state_module
from parity.metric import F64_GATE
from parity.run.optim import torch_kwargs
from parity.run.training import jax_step_fn, jax_steps, torch_steps
from parity.specs.optim import SPECS, configs_for
from parity.specs.problems import make_problem

torch = pytest.importorskip("torch")

N, M = 4, 4
#: float64. L-BFGS is resumed after 1 step and run 1 more (each step is up to 20 inner iterations
#: with a line search), as its parity spec is compared over 2 steps: over 8 steps its rounding
#: amplification alone reaches 2e-10 (tests/test_optim_lbfgs.py measures torch against itself).


def _config(spec):
    return configs_for(spec)[0].kwargs


class _Run:
    """A torch optimizer and ExponentialLR on the spec's problem, float64."""

    def __init__(self, spec, params=None):
        self.spec = spec
        self.problem = make_problem(spec.problem, sum(split(spec, N, M)), seed=1)
        values = params if params is not None else self.problem.params
        self.params = [torch.nn.Parameter(torch.tensor(np.asarray(p))) for p in values]
        cls = getattr(torch.optim, spec.torch_cls)
        self.optimizer = cls(self.params, **torch_kwargs(cls, _config(spec)))
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.9)

    def steps(self, steps, start):
        with self.spec.comparison_context():
            torch_steps(self.problem, self.params, self.optimizer, self.scheduler, steps, start)

    def numpy(self):
        return [p.detach().numpy().copy() for p in self.params]


def _jax(values):
    return [jnp.asarray(np.asarray(v)) for v in values]


def _numpy(params):
    return [p.detach().numpy().copy() for p in params]


pytestmark = pytest.mark.usefixtures("torch_float64")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_jax_then_torch_equals_torch_throughout(spec):
    n, m = split(spec, N, M)
    reference = _Run(spec)
    reference.steps(n + m, 0)

    fresh = _Run(spec)
    tx = optim.from_torch(fresh.optimizer, scheduler=fresh.scheduler, **spec.jax_extra_kwargs)
    with jax.enable_x64(True):
        params = _jax(fresh.problem.params)
        params, state = jax_steps(
            fresh.problem, params, tx.init(params), tx, n, closure=spec.step_requires_closure
        )
        run = _Run(spec, params=[np.asarray(p) for p in params])
        interop.optimizer_state_into_torch(run.optimizer, state, tx, params)
    interop.position_scheduler(run.scheduler, state)
    assert run.scheduler.last_epoch == n
    run.steps(m, n)
    worst = max_abs_difference(run.numpy(), reference.numpy())
    assert worst <= (
        10 * _lbfgs_own_spread(spec, params) if spec.amplifies_rounding else F64_GATE
    ), worst


def _lbfgs_own_spread(spec, jax_params):
    """How far torch's own second L-BFGS step moves when its first step is off by as much as
    JAX's is (6.4e-14 here): its line search amplifies it ~60x (measured 3.8e-12, while JAX then
    torch lands 9.4e-12 from torch throughout)."""
    first, nudged = _Run(spec), _Run(spec)
    first.steps(1, 0)
    nudged.steps(1, 0)
    gap = max_abs_difference(jax_params, first.numpy())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in nudged.params:
            p.add_(gap * torch.randn(p.shape, generator=generator))
    first.steps(1, 1)
    nudged.steps(1, 1)
    return max_abs_difference(first.numpy(), nudged.numpy())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_state_round_trip_is_lossless(spec):
    n, _ = split(spec, N, M)
    run = _Run(spec)
    run.steps(n, 0)
    state_dict = run.optimizer.state_dict()
    tx = optim.from_torch(run.optimizer, **spec.jax_extra_kwargs)
    with jax.enable_x64(True):
        params = _jax(run.numpy())
        state = interop.optimizer_state_from_torch(state_dict, tx, params)
        back = interop.optimizer_state_to_torch(state, tx, params)
        again = interop.optimizer_state_from_torch(back, tx, params)
    assert set(back["state"]) == set(state_dict["state"])
    for i, entries in state_dict["state"].items():
        assert set(back["state"][i]) == set(entries) - {"al"}, i
        for key in set(entries) - {"al"}:
            want, got = entries[key], back["state"][i][key]
            if isinstance(want, list):
                assert len(want) == len(got)
                for w, g in zip(want, got, strict=True):
                    np.testing.assert_array_equal(np.asarray(g), w.detach().numpy())
            else:
                want = want.to_dense() if getattr(want, "is_sparse", False) else want
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(state), leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shape_mismatch_names_the_entry_and_both_shapes():
    run = _Run(next(s for s in SPECS if s.name == "adam"))
    run.steps(1, 0)
    tx = optim.adam()
    with jax.enable_x64(True):
        params = _jax(run.numpy())
        params[0] = jnp.zeros((2, 2))
        with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\].*\(6, 8\).*\(2, 2\)"):
            interop.optimizer_state_from_torch(run.optimizer.state_dict(), tx, params)
        with pytest.raises(ValueError, match="has 4 parameters, params has 3 leaves"):
            interop.optimizer_state_from_torch(run.optimizer.state_dict(), tx, params[:3])


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_converted_state_is_a_copy_torch_cannot_change(name):
    """On CPU `jnp.asarray(tensor.numpy(), dtype)` shares the tensor's memory: the converted
    momentum buffers (and Adam's moments) then followed torch's later in-place steps."""
    problem = make_problem("mlp", 4, seed=0)
    params = [torch.nn.Parameter(torch.tensor(np.asarray(v))) for v in problem.params]
    kwargs = {"sgd": {"lr": 0.1, "momentum": 0.8}, "adam": {"lr": 0.01}}[name]
    optimizer = getattr(torch.optim, {"sgd": "SGD", "adam": "Adam"}[name])(params, **kwargs)
    torch_steps(problem, params, optimizer, None, 2)
    with jax.enable_x64(True):
        tx = optim.from_torch(optimizer)
        state = interop.optimizer_state_from_torch(
            optimizer.state_dict(), tx, _jax(_numpy(params)), count=2
        )
        before = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(state)]
        torch_steps(problem, params, optimizer, None, 2)
        after = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


# ----------------------------------------------------------------------------- the step count
# Issue 12, item 1: torch keeps no `step` for SGD and Muon, and the count restarted at 0.


def _sgd(values, scheduler=None, **kwargs):
    params = [torch.nn.Parameter(torch.tensor(np.asarray(v))) for v in values]
    optimizer = torch.optim.SGD(params, foreach=False, **kwargs)
    return params, optimizer, (scheduler(optimizer) if scheduler else None)


def test_sgd_momentum_resumed_from_torch_continues_its_buffer():
    """Was 5.2e-2 off after one JAX step (the first-step branch ``buf = g`` taken again)."""
    problem = make_problem("mlp", 4, seed=0)
    reference, optimizer, _ = _sgd(problem.params, lr=0.1, momentum=0.8)
    torch_steps(problem, reference, optimizer, None, 4)
    params, optimizer, _ = _sgd(problem.params, lr=0.1, momentum=0.8)
    torch_steps(problem, params, optimizer, None, 3)
    tx = optim.from_torch(optimizer)
    with jax.enable_x64(True):
        state = interop.optimizer_state_from_torch(optimizer.state_dict(), tx, _jax(_numpy(params)))
        jax_params, _ = jax_steps(problem, _jax(_numpy(params)), state, tx, 1, start=3)
    worst = max_abs_difference(jax_params, _numpy(reference))
    assert worst <= F64_GATE, worst


def _cosine(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=30)


def test_sgd_with_cosine_moved_at_step_20_and_back():
    """The count came from nowhere (1.4e-1 off in JAX in the issue: the schedule restarted), and
    back in torch nothing positioned the scheduler, whose recursive cosine then continues from
    the written lr at its own position (the issue saw lr 16.27 where 0.05 was due)."""
    n, m, more = 20, 3, 4
    problem = make_problem("mlp", n + m + more, seed=0)
    kwargs = {"lr": 0.1, "momentum": 0.9}
    reference, optimizer, scheduler = _sgd(problem.params, _cosine, **kwargs)
    want_lrs = torch_steps(problem, reference, optimizer, scheduler, n + m + more)
    snapshots = []
    reference, optimizer, scheduler = _sgd(problem.params, _cosine, **kwargs)
    for k in range(n + m + more):
        torch_steps(problem, reference, optimizer, scheduler, 1, start=k)
        snapshots.append(_numpy(reference))

    params, optimizer, scheduler = _sgd(problem.params, _cosine, **kwargs)
    torch_steps(problem, params, optimizer, scheduler, n)
    tx = optim.from_torch(optimizer, scheduler)
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=r"cannot infer the step count.*follows a schedule"):
            interop.optimizer_state_from_torch(optimizer.state_dict(), tx, _jax(_numpy(params)))
        state = interop.optimizer_state_from_torch(
            optimizer.state_dict(), tx, _jax(_numpy(params)), scheduler=scheduler
        )
        jax_params, state = jax_steps(problem, _jax(_numpy(params)), state, tx, m, start=n)
        assert max_abs_difference(jax_params, snapshots[n + m - 1]) <= F64_GATE
        converted = interop.optimizer_state_to_torch(state, tx, jax_params)

    params, optimizer, scheduler = _sgd(jax_params, _cosine, **kwargs)
    optimizer.load_state_dict(converted)
    unpositioned = copy.deepcopy(scheduler.state_dict())
    interop.position_scheduler(scheduler, state)
    got_lrs = torch_steps(problem, params, optimizer, scheduler, more, start=n + m)
    np.testing.assert_allclose(got_lrs, want_lrs[n + m :], rtol=1e-14)
    assert max_abs_difference(_numpy(params), snapshots[-1]) <= F64_GATE
    # the control: the same scheduler left where it was built drives the lr off the schedule
    params, optimizer, scheduler = _sgd(jax_params, _cosine, **kwargs)
    optimizer.load_state_dict(converted)
    scheduler.load_state_dict(unpositioned)
    wrong = torch_steps(problem, params, optimizer, scheduler, more, start=n + m)
    off = np.abs(np.asarray(wrong) / np.asarray(want_lrs[n + m :]) - 1)
    assert off.max() > 0.2, off  # measured 0.25


def test_count_errors_say_what_to_pass():
    problem = make_problem("mlp", 2, seed=0)
    params, optimizer, scheduler = _sgd(problem.params, _cosine, lr=0.1)  # no momentum: no state
    torch_steps(problem, params, optimizer, scheduler, 2)
    scheduled = optim.from_torch(optimizer, scheduler)
    with jax.enable_x64(True):
        values = _jax(_numpy(params))
        with pytest.raises(ValueError, match=r"holds nothing that counts steps.*Pass scheduler="):
            interop.optimizer_state_from_torch(optimizer.state_dict(), scheduled, values)
        state = interop.optimizer_state_from_torch(
            optimizer.state_dict(), scheduled, values, scheduler=scheduler.state_dict()
        )
        assert interop.scheduler_count(scheduler) == 2
        assert {int(c) for c in _counts(state)} == {2}
        # explicit count= wins; a bad one is refused
        state = interop.optimizer_state_from_torch(
            optimizer.state_dict(), scheduled, values, count=5
        )
        assert {int(c) for c in _counts(state)} == {5}
        with pytest.raises(ValueError, match="count must be a non-negative int, got -1"):
            interop.optimizer_state_from_torch(optimizer.state_dict(), scheduled, values, count=-1)
        # no schedule: nothing reads the count, and SGD without momentum holds no state
        constant = optim.from_torch(optimizer)
        interop.optimizer_state_from_torch(optimizer.state_dict(), constant, values)
        # a transformation wrapped by optax: its schedules are unknown
        import optax

        momentum, optimizer, _ = _sgd(problem.params, lr=0.1, momentum=0.9)
        torch_steps(problem, momentum, optimizer, None, 1)
        wrapped = optax.chain(optim.sgd(lr=0.1, momentum=0.9))
        with pytest.raises(ValueError, match=r"shows steps were taken.*wrapped by optax"):
            interop.optimizer_state_from_torch(optimizer.state_dict(), wrapped, values)
        fresh = torch.optim.SGD(_sgd(problem.params)[0], lr=0.1, momentum=0.9)
        state = interop.optimizer_state_from_torch(fresh.state_dict(), wrapped, values)
        assert {int(c) for c in _counts(state)} == {0}  # torch holds no buffer: not stepped
        # a scheduler created after the optimizer stepped cannot give the count
        late = _cosine(optimizer)
        with pytest.raises(
            ValueError, match="steps were taken but the scheduler's last_epoch is 0"
        ):
            interop.optimizer_state_from_torch(
                optimizer.state_dict(), optim.from_torch(optimizer, late), values, scheduler=late
            )

    # Adam's step and a per-epoch scheduler must agree
    adam_params = [torch.nn.Parameter(torch.tensor(p)) for p in problem.params]
    adam = torch.optim.Adam(adam_params, lr=0.01)
    step_lr = torch.optim.lr_scheduler.StepLR(adam, step_size=1)
    torch_steps(problem, adam_params, adam, step_lr, 2)
    step_lr.last_epoch = 1  # as if stepped once per epoch of 2 batches
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="taken 2 optimizer steps but the scheduler's"):
            interop.optimizer_state_from_torch(
                adam.state_dict(), optim.from_torch(adam, step_lr), values, scheduler=step_lr
            )
        per_epoch = optim.from_torch(adam, step_lr, steps_per_epoch=2)
        interop.optimizer_state_from_torch(adam.state_dict(), per_epoch, values, scheduler=step_lr)


def _counts(state):
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return [leaf for path, leaf in leaves if getattr(path[-1], "name", None) == "count"]


# ----------------------------------------------------------------------------- torch → JAX → torch
# Every optimizer x the options that change the first step or read the count x K torch steps,
# with and without a scheduler, two param groups: K torch steps, then JAX (state and count from
# torch's state_dict and scheduler, no count=), JAX_STEPS JAX steps, back to torch through a plain
# optimizer.load_state_dict and position_scheduler, MORE torch steps; against one unbroken torch
# run. One jitted JAX step per (option row, scheduler or not), shared by every K.

KS = (1, 2, 7)
JAX_STEPS, MORE = 2, 5
ROWS = [(spec, config) for spec in SPECS for config in spec.resume_configs]


def _row_id(row):
    spec, config = row
    return f"{spec.name}-{config.id}"


def _scheduler(optimizer):
    """The lr crosses zero-free minima and restarts its recursion (T_max < the run's length)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-3)


class _Resume:
    """One option row, with or without the scheduler: builds the torch side, runs the cases."""

    def __init__(self, spec, config, scheduled):
        self.spec, self.config, self.scheduled = spec, config, scheduled
        self.cls = getattr(torch.optim, spec.torch_cls)
        self.kwargs = torch_kwargs(self.cls, config.kwargs)
        self.closure = spec.step_requires_closure
        self.problem = make_problem(spec.problem, max(KS) + JAX_STEPS + MORE, seed=7)
        self.reference = self._unbroken()
        _, optimizer, scheduler = self.build(self.problem.params)
        self.tx = optim.from_torch(optimizer, scheduler, **spec.jax_extra_kwargs)
        self.step = jax_step_fn(self.problem, self.tx, closure=self.closure)  # compiled once

    def build(self, values):
        params = [torch.nn.Parameter(torch.tensor(np.asarray(v))) for v in values]
        if self.closure:  # torch's L-BFGS takes one group only
            groups = [{"params": params}]
        else:
            default_lr = inspect.signature(self.cls).parameters["lr"].default
            lr = self.kwargs.get("lr", default_lr)
            second = self.config.second_group
            second = self.spec.group_overrides if second is None else second
            half = max(1, len(params) // 2)
            groups = [{"params": params[:half]}, {"params": params[half:], "lr": lr / 2, **second}]
        optimizer = self.cls(groups, **self.kwargs)
        return params, optimizer, (_scheduler(optimizer) if self.scheduled else None)

    def torch_steps(self, params, optimizer, scheduler, steps, start):
        with self.spec.comparison_context():
            torch_steps(self.problem, params, optimizer, scheduler, steps, start)

    def _unbroken(self):
        params, optimizer, scheduler = self.build(self.problem.params)
        snapshots = []
        for k in range(len(self.problem.batches)):
            self.torch_steps(params, optimizer, scheduler, 1, k)
            snapshots.append(_numpy(params))
        return snapshots

    def worst(self, k):
        """|θ - unbroken θ| after K torch, JAX_STEPS JAX and MORE torch steps."""
        params, optimizer, scheduler = self.build(self.problem.params)
        self.torch_steps(params, optimizer, scheduler, k, 0)
        if self.closure and k == max(KS):  # the row moves a full history ring, wrapped
            lbfgs_state = optimizer.state_dict()["state"][0]
            assert len(lbfgs_state["old_dirs"]) == self.kwargs["history_size"]
            assert lbfgs_state["n_iter"] > 2 * self.kwargs["history_size"]
        with jax.enable_x64(True):
            values = _jax(_numpy(params))
            state = interop.optimizer_state_from_torch(
                copy.deepcopy(optimizer.state_dict()), self.tx, values, scheduler=scheduler
            )
            values, state = jax_steps(
                self.problem,
                values,
                state,
                self.tx,
                JAX_STEPS,
                k,
                closure=self.closure,
                step=self.step,
            )
            converted = interop.optimizer_state_to_torch(state, self.tx, values)
        params, optimizer, scheduler = self.build(values)
        optimizer.load_state_dict(converted)
        if scheduler is not None:
            interop.position_scheduler(scheduler, state)
        self.torch_steps(params, optimizer, scheduler, MORE, k + JAX_STEPS)
        return max_abs_difference(_numpy(params), self.reference[k + JAX_STEPS + MORE - 1])


_RUNS: dict[tuple[str, str, bool], _Resume] = {}  # built (and compiled) once per session


def _failures(spec, config):
    """{(scheduler or not, K): |Δθ|} for the cases past F64_GATE."""
    bad = {}
    for scheduled in (False, True):
        key = (spec.name, config.desc, scheduled)
        if key not in _RUNS:
            _RUNS[key] = _Resume(spec, config, scheduled)
        run = _RUNS[key]
        for k in KS:
            worst = run.worst(k)
            if not worst <= F64_GATE:
                bad["scheduled" if scheduled else "constant", k] = worst
    return bad


@pytest.mark.parametrize(("spec", "config"), ROWS, ids=[_row_id(r) for r in ROWS])
def test_torch_jax_torch_equals_unbroken_torch(spec, config):
    bad = _failures(spec, config)
    assert not bad, bad


def test_a_converter_that_drops_the_count_fails_the_resume_test(monkeypatch):
    """The planted error: the count restarts at 0 (issue 12's bug), and the table fails."""
    sgd = next(s for s in SPECS if s.name == "sgd")
    real = optimizer_state_module._resolve_count
    monkeypatch.setattr(optimizer_state_module, "_resolve_count", lambda *args: 0 * real(*args))
    bad = _failures(sgd, sgd.resume_configs[0])
    assert {("constant", 2), ("scheduled", 7)} <= set(bad), bad
