"""``optimizer_state_to_torch`` writes torch's param groups: a plain ``load_state_dict`` restores
the hyperparameters, for all 15 optimizers, under schedulers and with several param groups.

float64. Every comparison is against a torch optimizer built and trained the same way.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import max_abs_difference, split

from jaxopt_port import interop, optim, schedules
from jaxopt_port.transforms import param_groups
from parity.metric import F64_GATE
from parity.run.optim import torch_dtype, torch_kwargs
from parity.run.training import jax_steps, torch_steps
from parity.specs.optim import SPECS
from parity.specs.problems import make_problem

torch = pytest.importorskip("torch")

N, M = 3, 3
#: float64: JAX for N steps, then torch, equals torch throughout (measured <= 4.5e-16 for all 15;
#: L-BFGS, split 1 + 1 as in tests/test_interop_resume.py, 1.0e-15 in its "small history"
#: configuration).
#: Hyperparameters equal exactly, or to this relative difference (schedules evaluated in JAX).
REL = 1e-15


pytestmark = pytest.mark.usefixtures("torch_float64")


def _kwargs(spec):
    """Non-default hyperparameters the parity suite runs: the spec's second param group (its
    groups configuration with the group overrides and half the lr) as the only group; L-BFGS,
    which has no groups configuration, its first configuration of ours."""
    config = next((c for c in spec.extra_configs if c.groups), None)
    if config is None:
        return next(c for c in spec.extra_configs if c.schedule is None).kwargs
    factory = getattr(optim, spec.name)
    lr = config.kwargs.get("lr", inspect.signature(factory).parameters["lr"].default)
    return {**config.kwargs, "lr": lr / 2, **spec.group_overrides}


def _kind(value):
    """What torch keeps: a tensor's dtype, shape and layout, a list's kinds, a Python type."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.layout)
    if isinstance(value, list):
        return ("list", len(value), sorted({str(_kind(v)) for v in value}))
    return type(value).__name__


def _assert_kinds_are_torchs(got, want):
    """Every state entry of ``got`` of the type, dtype and shape torch keeps in ``want`` (its
    scratch ``al`` aside); SparseAdam's sparse-gradient state is dense in torch too."""
    assert set(got) == set(want)
    for i, entries in want.items():
        assert set(got[i]) == set(entries) - {"al"}, i
        kinds = {k: (_kind(got[i][k]), _kind(v)) for k, v in entries.items() if k != "al"}
        bad = {k: pair for k, pair in kinds.items() if pair[0] != pair[1]}
        assert not bad, (i, bad)


def _same_value(got, want, rel=REL):
    if isinstance(want, torch.Tensor) or isinstance(got, torch.Tensor):
        return _same_value(float(got), float(want), rel)  # a tensor lr: by value
    if isinstance(want, (tuple, list)):
        return (
            isinstance(got, type(want))
            and len(got) == len(want)
            and all(_same_value(g, w, rel) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, float) and not isinstance(got, bool):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=rel, abs_tol=0)
    return type(got) is type(want) and got == want


def _assert_groups_equal(got, want, rel=REL):
    """Every key of every group (``"params"``: torch's ids) equal."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w), (sorted(set(g) ^ set(w)), w)
        bad = {k: (g[k], w[k]) for k in w if not _same_value(g[k], w[k], rel)}
        assert not bad, bad


def _torch_params(values):
    return [torch.nn.Parameter(torch.tensor(np.asarray(p))) for p in values]


def _numpy(params):
    return [p.detach().numpy().copy() for p in params]


# ----------------------------------------------------------------------------- every optimizer


def test_factories_carry_exactly_torchs_group_keys():
    """The carried keys of all 15 are those of the installed torch's param group."""
    for spec in SPECS:
        cls = getattr(torch.optim, spec.torch_cls)
        torch_group = cls([torch.nn.Parameter(torch.zeros(3, 3))]).param_groups[0]
        tx = getattr(optim, spec.name)(**spec.jax_extra_kwargs)
        assert isinstance(tx, optim.TorchTransformation), spec.name
        [group] = tx.torch_groups
        assert set(group.hyperparams) == set(torch_group) - {"params"}, spec.name
        for key in group.hyperparams:  # torch's defaults too
            assert _same_value(group.hyperparams[key], torch_group[key]), (spec.name, key)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_plain_load_state_dict_restores_hyperparameters(spec):
    n, m = split(spec, N, M)
    cls = getattr(torch.optim, spec.torch_cls)
    kwargs = torch_kwargs(cls, _kwargs(spec))
    problem = make_problem(spec.problem, n + m, seed=2)

    reference_params = _torch_params(problem.params)
    reference = cls(reference_params, **kwargs)
    with spec.comparison_context():
        torch_steps(problem, reference_params, reference, None, n)
        want_groups = copy.deepcopy(reference.state_dict()["param_groups"])
        want_state = copy.deepcopy(reference.state_dict()["state"])
        torch_steps(problem, reference_params, reference, None, m, start=n)

    tx = getattr(optim, spec.name)(**kwargs, **spec.jax_extra_kwargs)
    with jax.enable_x64(True):
        params = [jnp.asarray(p) for p in problem.params]
        params, state = jax_steps(
            problem, params, tx.init(params), tx, n, closure=spec.step_requires_closure
        )
        converted = interop.optimizer_state_to_torch(state, tx, params)
        with torch_dtype("float32"):  # torch's scalar state follows its default dtype
            converted32 = interop.optimizer_state_to_torch(state, tx, params)
    _assert_kinds_are_torchs(converted["state"], want_state)
    with torch_dtype("float32"), spec.comparison_context():
        float32_default = cls(_torch_params(problem.params), **kwargs)
        torch_steps(problem, float32_default.param_groups[0]["params"], float32_default, None, n)
    _assert_kinds_are_torchs(converted32["state"], float32_default.state_dict()["state"])

    buffer = io.BytesIO()  # a torch checkpoint file, read back with torch.load's safe loader
    torch.save(converted, buffer)
    buffer.seek(0)
    resumed_params = _torch_params(params)
    resumed = cls(resumed_params)  # torch's defaults: loading must set the hyperparameters
    default_groups = resumed.state_dict()["param_groups"]
    assert any(not _same_value(default_groups[0][k], v) for k, v in want_groups[0].items())
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _assert_groups_equal(resumed.state_dict()["param_groups"], want_groups)
    with spec.comparison_context():
        torch_steps(problem, resumed_params, resumed, None, m, start=n)
    worst = max_abs_difference(_numpy(resumed_params), _numpy(reference_params))
    assert worst <= F64_GATE, worst


def test_tensor_lr_stays_a_tensor():
    lr = torch.tensor(0.01)
    tx = optim.sgd(lr=lr, momentum=0.9)
    with jax.enable_x64(True):
        params = [jnp.ones(3)]
        converted = interop.optimizer_state_to_torch(tx.init(params), tx, params)
    [group] = converted["param_groups"]
    assert isinstance(group["lr"], torch.Tensor) and float(group["lr"]) == 0.01
    optimizer = torch.optim.SGD(_torch_params([np.ones(3)]))
    optimizer.load_state_dict(converted)
    assert float(optimizer.param_groups[0]["lr"]) == 0.01
    assert optimizer.param_groups[0]["momentum"] == 0.9


# ----------------------------------------------------------------------------- schedules


def _one_cycle(optimizer):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=12)


def _cyclic(optimizer):
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=0.001, max_lr=0.05, step_size_up=3, mode="triangular2"
    )


def _plateau(optimizer):
    # parity.run.training.metric_at falls after step 0: in "max" mode a cut every second step
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)


SCHEDULED = [
    pytest.param("SGD", {"lr": 0.01, "momentum": 0.9}, _one_cycle, id="sgd-one_cycle"),
    pytest.param("AdamW", {"lr": 0.01, "betas": (0.9, 0.99)}, _one_cycle, id="adamw-one_cycle"),
    pytest.param("RMSprop", {"lr": 0.01, "momentum": 0.5}, _cyclic, id="rmsprop-cyclic"),
    pytest.param("Adam", {"lr": 0.02}, _plateau, id="adam-plateau"),
]


@pytest.mark.parametrize(("name", "kwargs", "make_scheduler"), SCHEDULED)
def test_scheduled_hyperparameters_are_torchs_after_n_steps(name, kwargs, make_scheduler):
    n = 7  # OneCycleLR past its peak, CyclicLR in its second cycle, a plateau cut
    plateau = make_scheduler is _plateau
    problem = make_problem("mlp", n, seed=3)
    cls = getattr(torch.optim, name)

    torch_params = _torch_params(problem.params)
    optimizer = cls(torch_params, foreach=False, **kwargs)
    scheduler = make_scheduler(optimizer)
    fresh = cls(_torch_params(problem.params), foreach=False, **kwargs)
    tx = optim.from_torch(fresh, scheduler=make_scheduler(fresh))
    torch_steps(problem, torch_params, optimizer, scheduler, n, plateau=plateau)
    want = optimizer.state_dict()["param_groups"]

    with jax.enable_x64(True):
        params = [jnp.asarray(p) for p in problem.params]
        params, state = jax_steps(problem, params, tx.init(params), tx, n, plateau=plateau)
        converted = interop.optimizer_state_to_torch(state, tx, params)
    got = converted["param_groups"]
    _assert_groups_equal(got, want, rel=F64_GATE)
    assert got[0]["lr"] != fresh.param_groups[0]["lr"]  # the schedule moved it
    if not plateau:
        scheduled = "betas" if "betas" in want[0] else "momentum"
        assert got[0][scheduled] != fresh.param_groups[0][scheduled]

    # and a fresh torch optimizer loads them
    resumed = cls(_torch_params(params))
    resumed.load_state_dict(converted)
    _assert_groups_equal(resumed.state_dict()["param_groups"], want, rel=F64_GATE)


def test_with_schedules_writes_initial_lr_and_the_cycled_momentum():
    """Without ``from_torch``: a jaxopt_port schedule gives torch's ``initial_lr`` (its
    ``base_lr``), any other schedule only the lr."""
    n = 4
    params_np = [np.ones((2, 3))]
    optimizer = torch.optim.SGD(_torch_params(params_np), lr=0.01, momentum=0.9)
    scheduler = _one_cycle(optimizer)
    with warnings.catch_warnings():  # stepping the scheduler without optimizer steps warns
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(n):
            scheduler.step()
    want = optimizer.param_groups[0]

    cycle = schedules.one_cycle_lr(0.05, total_steps=12)
    decay = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    with jax.enable_x64(True):
        params = [jnp.asarray(p) for p in params_np]
        grads = [jnp.ones((2, 3))]
        for tx, lr, momentum in [
            (schedules.with_schedules(optim.sgd, lr=cycle, momentum=cycle.momentum), None, None),
            (optim.sgd(lr=decay, momentum=0.9), 0.1 * 0.5**n, 0.9),
        ]:
            state = tx.init(params)
            for _ in range(n):
                _, state = tx.update(grads, state, params)
            [group] = interop.optimizer_state_to_torch(state, tx, params)["param_groups"]
            if lr is None:
                assert group["initial_lr"] == want["initial_lr"] == cycle.base_lr
                assert math.isclose(group["lr"], want["lr"], rel_tol=F64_GATE)
                assert math.isclose(group["momentum"], want["momentum"], rel_tol=F64_GATE)
            else:
                assert "initial_lr" not in group
                assert math.isclose(group["lr"], lr, rel_tol=REL)
                assert group["momentum"] == momentum
            # count= overrides the state's step count
            [group] = interop.optimizer_state_to_torch(state, tx, params, count=0)["param_groups"]
            assert group["lr"] == float(tx.torch_groups[0].hyperparams["lr"](0))


# ----------------------------------------------------------------------------- param groups


@pytest.mark.parametrize("name", ["adam", "asgd"])
def test_from_torch_with_two_groups(name):
    """Each group's hyperparameters and state (ASGD's ``eta`` differs per group) go both ways."""
    spec = next(s for s in SPECS if s.name == name)
    cls = getattr(torch.optim, spec.torch_cls)
    kwargs = torch_kwargs(cls, next(c for c in spec.extra_configs if c.groups).kwargs)
    second = {"lr": kwargs["lr"] / 2, **spec.group_overrides}
    problem = make_problem(spec.problem, N, seed=4)

    def build(values, hyperparams=True):
        ps = _torch_params(values)
        groups = [{"params": ps[:2]}, {"params": ps[2:], **(second if hyperparams else {})}]
        return ps, cls(groups, **(kwargs if hyperparams else {}))

    torch_params, optimizer = build(problem.params)
    tx = optim.from_torch(build(problem.params)[1])
    torch_steps(problem, torch_params, optimizer, None, N)
    want = optimizer.state_dict()

    with jax.enable_x64(True):
        params = [jnp.asarray(p) for p in problem.params]
        params, state = jax_steps(problem, params, tx.init(params), tx, N)
        converted = interop.optimizer_state_to_torch(state, tx, params)
        _assert_groups_equal(converted["param_groups"], want["param_groups"])
        _assert_states_close(converted["state"], want["state"])
        # round trip from torch -> to torch -> from torch, bitwise
        from_torch = interop.optimizer_state_from_torch(want, tx, params)
        back = interop.optimizer_state_to_torch(from_torch, tx, params)
        again = interop.optimizer_state_from_torch(back, tx, params)
    _assert_states_close(back["state"], want["state"], tol=0.0)
    _assert_groups_equal(back["param_groups"], want["param_groups"], rel=0.0)
    _assert_trees_equal(from_torch, again)

    _, resumed = build(_numpy(torch_params), hyperparams=False)
    resumed.load_state_dict(converted)
    _assert_groups_equal(resumed.state_dict()["param_groups"], want["param_groups"])


def _assert_states_close(got, want, tol=F64_GATE):
    assert set(got) == set(want)
    for i, entries in want.items():
        assert set(got[i]) == set(entries), i
        for key, value in entries.items():
            value = value.to_dense() if getattr(value, "is_sparse", False) else value
            difference = np.max(np.abs(np.asarray(got[i][key], float) - np.asarray(value, float)))
            assert difference <= tol, (i, key, difference)


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _named_problem():
    """Leaves a/bias a/kernel b/bias b/kernel head/w (tree order); a loss over all of them."""
    rng = np.random.default_rng(5)
    values = {
        "a": {"bias": rng.normal(size=3), "kernel": rng.normal(size=(2, 3))},
        "b": {"bias": rng.normal(size=3), "kernel": rng.normal(size=(3, 3))},
        "head": {"w": rng.normal(size=3)},
    }
    x = rng.normal(size=(4, 2))

    def loss(p, x, tanh):
        h = tanh(x @ p["a"]["kernel"] + p["a"]["bias"])
        h = tanh(h @ p["b"]["kernel"] + p["b"]["bias"])
        return ((h @ p["head"]["w"] - 1.0) ** 2).mean()

    return values, x, loss


def test_param_groups_interleaved_and_frozen():
    """Pattern groups interleave in leaf order; torch numbers its parameters group after group,
    and holds no frozen leaf."""
    values, x, loss = _named_problem()
    groups = [
        {"params": "*/bias", "lr": 0.02, "name": "biases"},
        {"params": "*/kernel", "weight_decay": 0.1, "amsgrad": True},
    ]
    tx = param_groups(optim.adam, groups, unmatched="freeze", lr=0.01, betas=(0.8, 0.99))

    def torch_model(hyperparams=True):
        t = {k: {n: torch.nn.Parameter(torch.tensor(v)) for n, v in d.items()} for k, d in values.items()}  # fmt: skip
        biases = [t["a"]["bias"], t["b"]["bias"]]
        kernels = [t["a"]["kernel"], t["b"]["kernel"]]
        if not hyperparams:
            return t, torch.optim.Adam([{"params": biases}, {"params": kernels}])
        torch_groups = [{**groups[0], "params": biases}, {**groups[1], "params": kernels}]
        return t, torch.optim.Adam(torch_groups, lr=0.01, betas=(0.8, 0.99), foreach=None)

    t, optimizer = torch_model()
    for _ in range(N):
        optimizer.zero_grad()
        loss(t, torch.tensor(x), torch.tanh).backward()
        optimizer.step()
    want = optimizer.state_dict()

    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(jnp.asarray, values)

        @jax.jit
        def step(params, state):
            grads = jax.grad(loss)(params, jnp.asarray(x), jnp.tanh)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        for _ in range(N):
            params, state = step(params, state)
        converted = interop.optimizer_state_to_torch(state, tx, params)
        _assert_groups_equal(converted["param_groups"], want["param_groups"])
        _assert_states_close(converted["state"], want["state"])
        from_torch = interop.optimizer_state_from_torch(want, tx, params)
        back = interop.optimizer_state_to_torch(from_torch, tx, params)
        again = interop.optimizer_state_from_torch(back, tx, params)
    np.testing.assert_array_equal(params["head"]["w"], values["head"]["w"])  # frozen
    _assert_states_close(back["state"], want["state"], tol=0.0)
    _assert_groups_equal(back["param_groups"], want["param_groups"], rel=0.0)
    _assert_trees_equal(from_torch, again)
    # the state of b/bias (torch id 1, leaf 2) is in leaf 2's place
    inner = from_torch.inner_states["biases"].inner_state
    exp_avg = next(s for s in jax.tree_util.tree_leaves(inner, is_leaf=_is_adam) if _is_adam(s))
    np.testing.assert_array_equal(exp_avg.exp_avg["b"]["bias"], want["state"][1]["exp_avg"])

    _, resumed = torch_model(hyperparams=False)
    resumed.load_state_dict(converted)
    _assert_groups_equal(resumed.state_dict()["param_groups"], want["param_groups"])


def _is_adam(node):
    return type(node).__name__ == "ScaleByAdamState"


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_have_clear_messages():
    values, _, _ = _named_problem()
    groups = [{"params": "*/bias"}, {"params": "*/kernel"}]
    tx = param_groups(optim.sgd, groups, unmatched="freeze", lr=0.1)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(jnp.asarray, values)
        state = tx.init(params)
        with pytest.raises(ValueError, match="different number of parameter groups"):
            interop.optimizer_state_to_torch(state, tx, params, param_groups=[{"params": [0]}])
        converted = interop.optimizer_state_to_torch(state, tx, params)
        assert [g["params"] for g in converted["param_groups"]] == [[0, 1], [2, 3]]
        converted["param_groups"][0]["params"] = [0]
        converted["param_groups"][1]["params"] = [1, 2, 3]
        with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
            interop.optimizer_state_from_torch(converted, tx, params)
        with pytest.raises(ValueError, match="count must be a non-negative int, got -1"):
            interop.optimizer_state_to_torch(state, tx, params, count=-1)

        single = optim.sgd(lr=0.1)
        with pytest.raises(ValueError, match="param_groups has 3 parameters, params has 5 leaves"):
            interop.optimizer_state_to_torch(
                single.init(params), single, params, param_groups=[{"params": [0, 1, 2]}]
            )

        # a stateful schedule given straight to a factory (whose state then lacks the schedule's)
        # is refused when the factory is called (issue 12 item 11), before any conversion
        with pytest.raises(TypeError, match="lr is a stateful schedule"):
            optim.sgd(lr=schedules.reduce_lr_on_plateau(0.1))

    # a transformation wrapped further carries no groups: one group, "params" only
    chained = optax.chain(optim.adam(lr=0.1))
    with jax.enable_x64(True):
        flat = [jnp.ones(2)]
        converted = interop.optimizer_state_to_torch(chained.init(flat), chained, flat)
    assert converted["param_groups"] == [{"params": [0]}]
