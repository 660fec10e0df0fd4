"""PARQ's and PAT's states to and from torchao's `QuantOptimizer.state_dict()` /
`PruneOptimizer.state_dict()`: every field bitwise, and resuming either way. PARQ: Training resumes after the annealing window (step 12 > anneal_end 10):
inside it, PARQ's slope amplifies ulp differences of the gradients into other levels (a run
traced differently lands elsewhere), which would test chaos, not the conversion."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_port import optim, prox

with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
    warnings.simplefilter("ignore")
    pytest.importorskip("torchao.prototype.parq")
    from torchao.prototype.parq import optim as tp_optim
    from torchao.prototype.parq import quant as tp_quant
    from torchao.prototype.pat.optim import PruneOptimizer

KW = {"warmup_steps": 3, "quant_period": 4, "quant_per_channel": True}
RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((32, 8)), RNG.standard_normal((32, 3))
W0, B0 = RNG.standard_normal((3, 8)) * 0.5, RNG.standard_normal(3) * 0.1


def torch_optimizer(W, b):
    base = torch.optim.SGD(
        [{"params": [W], "quant_bits": 2}, {"params": [b]}], lr=0.05, momentum=0.9, foreach=False
    )
    return tp_optim.QuantOptimizer(base, tp_quant.UnifQuantizer(), tp_optim.ProxPARQ(2, 10), **KW)


def torch_steps(opt, W, b, n):
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(n):
        opt.zero_grad()
        ((Xt @ W.T + b - Yt) ** 2).mean().backward()
        opt.step()


INNER = optim.sgd(lr=0.05, momentum=0.9)
TX = prox.quant_optimizer(INNER, prox.UnifQuantizer(), prox.ProxPARQ(2, 10), 2, lr=0.05, **KW)


@jax.jit
def jax_step(params, state):
    grads = jax.grad(lambda p: jnp.mean((X @ p["W"].T + p["b"] - Y) ** 2))(params)
    updates, state = TX.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def jax_steps(params, state, n):
    for _ in range(n):
        params, state = jax_step(params, state)
    return params, state


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    with jax.enable_x64(True):
        yield
    torch.set_default_dtype(old)


def test_state_fields_equal_torchao_in_the_window(float64):
    """At step 7 (inside the window): latent, levels, count, Σ lr and ρ equal torchao's."""
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(B0.copy()))
    opt = torch_optimizer(W, b)
    torch_steps(opt, W, b, 7)
    params = {"W": jnp.array(W.detach().numpy()), "b": jnp.array(b.detach().numpy())}
    params = jax.block_until_ready(params)  # copied before torch steps W and b in place
    state = prox.quant_state_from_torch(opt.state_dict(), TX, INNER, params)
    torch_state = opt.state[W]
    np.testing.assert_array_equal(np.asarray(state.latent[0]), torch_state["latent"].numpy())
    np.testing.assert_array_equal(np.asarray(state.quants[0]), torch_state["quants"].numpy())
    np.testing.assert_array_equal(
        np.asarray(state.inner_state[0].momentum_buffer["W"]),
        torch_state["momentum_buffer"].numpy(),
    )
    group = opt.param_groups[0]
    assert int(state.count) == group["num_steps"] == 7
    assert float(state.cumu_lr) == group["cumu_lr"]
    assert float(state.inv_slope) == group["inv_slope"]
    back = prox.quant_state_to_torch(state, INNER, params, opt.state_dict()["param_groups"])
    for key in ("num_steps", "cumu_lr", "inv_slope"):
        assert back["param_groups"][0][key] == group[key]
    for key in ("latent", "quants", "momentum_buffer"):
        np.testing.assert_array_equal(back["state"][0][key].numpy(), torch_state[key].numpy())
    # the state owns its memory: torch stepping on (in place) leaves it alone (it once shared
    # the momentum buffers, and resumed runs went astray at random)
    before = [np.array(x) for x in jax.tree_util.tree_leaves(state)]
    torch_steps(opt, W, b, 3)
    for x, y in zip(before, jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(y), x)


def test_resume_torchao_in_jax(float64):
    W, b = (
        torch.nn.Parameter(torch.from_numpy(W0.copy())),
        torch.nn.Parameter(torch.from_numpy(B0.copy())),
    )
    opt = torch_optimizer(W, b)
    torch_steps(opt, W, b, 12)
    params = {"W": jnp.array(W.detach().numpy()), "b": jnp.array(b.detach().numpy())}
    params = jax.block_until_ready(params)  # copied before torch steps W and b in place
    state = prox.quant_state_from_torch(opt.state_dict(), TX, INNER, params)
    assert int(state.count) == 12
    params, state = jax_steps(params, state, 10)
    torch_steps(opt, W, b, 10)
    # measured 1.4e-17
    np.testing.assert_allclose(np.asarray(params["W"]), W.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(params["b"]), b.detach().numpy(), rtol=0, atol=1e-15)


def test_resume_jax_in_torchao(float64):
    params = {"W": jnp.asarray(W0), "b": jnp.asarray(B0)}
    params, state = jax_steps(params, TX.init(params), 12)
    W = torch.nn.Parameter(torch.from_numpy(np.array(params["W"])))
    b = torch.nn.Parameter(torch.from_numpy(np.array(params["b"])))
    opt = torch_optimizer(W, b)
    sd = prox.quant_state_to_torch(state, INNER, params, opt.state_dict()["param_groups"])
    opt.load_state_dict(sd)
    assert opt.num_steps == 12
    params, state = jax_steps(params, state, 10)
    torch_steps(opt, W, b, 10)
    # measured 1.1e-16
    np.testing.assert_allclose(np.asarray(params["W"]), W.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(params["b"]), b.detach().numpy(), rtol=0, atol=1e-15)


def test_from_torch_follows_torchao(float64):
    """`prox.from_torch` of a live QuantOptimizer (AdamW, 4-entry blocks per channel,
    BinaryRelax, shrink): 30 steps alongside torchao."""
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(B0.copy()))
    base = torch.optim.AdamW(
        [{"params": [b]}, {"params": [W], "quant_bits": 3, "quant_block_size": 4}],
        lr=0.01,
        foreach=False,
    )
    opt = tp_optim.QuantOptimizer(
        base,
        tp_quant.UnifQuantizer(),
        tp_optim.ProxBinaryRelax(3, 15),
        warmup_steps=2,
        quant_period=3,
        quant_per_channel=True,
        quant_shrink=True,
    )
    tx = prox.from_torch(opt)
    params = [jnp.asarray(B0), jnp.asarray(W0)]  # leaves in torch's order: b, W
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean((X @ p[1].T + p[0] - Y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(30):
        params, state = step(params, state)
        torch_steps(opt, W, b, 1)
        # measured 5.8e-16
        np.testing.assert_allclose(
            np.asarray(params[1]), W.detach().numpy(), rtol=0, atol=5e-15, err_msg=f"step {i}"
        )
    blocks = np.asarray(prox.quantized_params(params, state)[1]).reshape(-1, 4)
    assert all(len(np.unique(r)) <= 8 for r in blocks)
    with pytest.raises(ValueError, match="QuantOptimizer"):
        prox.from_torch(base)


@pytest.mark.parametrize("build_on", ["wrapper", "base"])
def test_optim_from_torch_reads_the_wrapper_and_its_scheduler(float64, build_on):
    """`optim.from_torch(QuantOptimizer, scheduler)`: the inner optimizer follows the scheduler and
    gamma sums the scheduled lr (quant_shrink), 30 steps alongside torchao."""
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(B0.copy()))
    base = torch.optim.SGD(
        [{"params": [W], "quant_bits": 3}, {"params": [b]}], lr=0.3, momentum=0.9, foreach=False
    )
    opt = tp_optim.QuantOptimizer(
        base,
        tp_quant.UnifQuantizer(),
        tp_optim.ProxHardQuant(),
        warmup_steps=2,
        quant_period=3,
        quant_per_channel=True,
        quant_shrink=True,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        opt if build_on == "wrapper" else base, step_size=4, gamma=0.5
    )
    tx = optim.from_torch(opt, scheduler)
    params = [jnp.asarray(W0), jnp.asarray(B0)]
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean((X @ p[0].T + p[1] - Y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(30):
        params, state = step(params, state)
        torch_steps(opt, W, b, 1)
        scheduler.step()
        # measured 1.7e-16 (with a constant lr summed into gamma: 0.30)
        np.testing.assert_allclose(
            np.asarray(params[0]), W.detach().numpy(), rtol=0, atol=5e-15, err_msg=f"step {i}"
        )
    assert float(state.cumu_lr) == pytest.approx(sum(0.3 * 0.5 ** (k // 4) for k in range(2, 30)))


# PAT: warmup (steps 0-1), proximal steps (2-8), healing (9-): every phase, both directions
PAT_KW = {"warmup_steps": 2, "healing_start_step": 9}
PAT_GROUPS = {
    "lasso-adamw": {"prox_type": "ProxLasso", "group_type": "ElemGrouper", "reg_lambda": 1.0},
    "scheduled-min-sparsity-sgd": {
        "prox_type": "MinSparsityConstraint",
        "group_type": "Dim1Grouper",
        "min_sparsity": 0.5,
        "min_sparsity_schedule": True,
    },
}
PAT_METRICS = ("sparsity_frac", "sv_count", "factored_frac")
"""torchao's records of its last proximal step, not read by its step (not converted)."""


def pat_torch_optimizer(case, W, b):
    groups = [{"params": [W], **PAT_GROUPS[case]}, {"params": [b]}]
    if case == "lasso-adamw":
        base = torch.optim.AdamW(groups, lr=0.05, foreach=False)
    else:
        base = torch.optim.SGD(groups, lr=0.05, momentum=0.9, foreach=False)
    return PruneOptimizer(base, **PAT_KW)


@functools.cache
def pat_jax(case):
    """(inner, tx, jitted step) of a case, built and compiled once."""
    inner = optim.adamw(lr=0.05) if case == "lasso-adamw" else optim.sgd(lr=0.05, momentum=0.9)
    tx = prox.prune_optimizer(inner, [{"params": "W", **PAT_GROUPS[case]}], lr=0.05, **PAT_KW)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean((X @ p["W"].T + p["b"] - Y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return inner, tx, step


def pat_jax_steps(case, params, state, n):
    step = pat_jax(case)[2]
    for _ in range(n):
        params, state = step(params, state)
    return params, state


def torch_pair(W, b):
    return torch.nn.Parameter(torch.from_numpy(W.copy())), torch.nn.Parameter(
        torch.from_numpy(B0.copy() if b is None else b.copy())
    )


def as_params(W, b):
    params = {"W": jnp.array(W.detach().numpy()), "b": jnp.array(b.detach().numpy())}
    return jax.block_until_ready(params)  # copied before torch steps W and b in place


def assert_state_dicts_equal(ours, theirs, atol=0.0):
    """Every entry of torchao's state_dict but its metrics (`atol=0`: bit for bit)."""
    assert ours["state"].keys() == theirs["state"].keys()
    for i, entry in theirs["state"].items():
        assert set(ours["state"][i]) == set(entry) - set(PAT_METRICS), i
        for key in ours["state"][i]:
            np.testing.assert_allclose(
                ours["state"][i][key].numpy(), entry[key].numpy(), rtol=0, atol=atol, err_msg=key
            )
    for mine, group in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        assert mine.keys() == group.keys() - set(PAT_METRICS)
        for key in ("gamma", "num_steps", "reg_lambda", "params"):
            assert mine.get(key) == group.get(key), key


@pytest.mark.parametrize("case", sorted(PAT_GROUPS))
def test_pat_state_fields_equal_torchao(float64, case):
    """After a warmup step, a proximal step and a healing step: the state converted from
    torchao's holds its latent weights, gamma, count and base state bit for bit, and converts
    back to torchao's state_dict bit for bit; a JAX run's state converts to the state_dict of the
    same torchao run."""
    inner, tx, _ = pat_jax(case)
    W, b = torch_pair(W0, None)
    opt = pat_torch_optimizer(case, W, b)
    params = {"W": jnp.asarray(W0), "b": jnp.asarray(B0)}
    state, done = tx.init(params), 0
    for n in (1, 5, 11):
        torch_steps(opt, W, b, n - done)
        params, state = pat_jax_steps(case, params, state, n - done)
        done = n
        sd = opt.state_dict()
        torch_params = as_params(W, b)
        converted = prox.prune_state_from_torch(sd, tx, inner, torch_params)
        np.testing.assert_array_equal(np.asarray(converted.latent[0]), opt.state[W]["latent"])
        assert converted.latent[1] is None
        assert int(converted.count) == opt.num_steps == n
        assert float(converted.gamma) == opt.param_groups[0]["gamma"]
        assert float(converted.gamma) == pytest.approx(0.05 * max(0, min(n, 9) - 2))
        back = prox.prune_state_to_torch(converted, inner, torch_params, sd["param_groups"])
        assert_state_dicts_equal(back, sd)
        # the two runs' states (warmup's latent included): measured 1.2e-15 (lasso-adamw, its
        # latent at step 11) and 4.4e-16 (scheduled-min-sparsity-sgd, its momentum)
        ours = prox.prune_state_to_torch(state, inner, params, sd["param_groups"])
        assert_state_dicts_equal(ours, sd, atol=5e-15)


@pytest.mark.parametrize("case", sorted(PAT_GROUPS))
def test_pat_resume_torchao_in_jax(float64, case):
    """Resumed at a proximal step (5) and while healing (11), 6 more steps of each."""
    inner, tx, _ = pat_jax(case)
    for start in (5, 11):
        W, b = torch_pair(W0, None)
        opt = pat_torch_optimizer(case, W, b)
        torch_steps(opt, W, b, start)
        params = as_params(W, b)
        state = prox.prune_state_from_torch(opt.state_dict(), tx, inner, params)
        params, state = pat_jax_steps(case, params, state, 6)
        torch_steps(opt, W, b, 6)
        assert int(state.count) == opt.num_steps == start + 6
        # measured 1.9e-16 (lasso-adamw, from step 5), 5.6e-17 (scheduled-min-sparsity-sgd)
        for ours, theirs in ((params["W"], W), (params["b"], b)):
            np.testing.assert_allclose(
                np.asarray(ours), theirs.detach().numpy(), rtol=0, atol=1e-15, err_msg=start
            )
        zeros = np.asarray(params["W"]) == 0  # pruned, and kept at 0 while healing
        assert zeros.any()
        np.testing.assert_array_equal(zeros, W.detach().numpy() == 0)


@pytest.mark.parametrize("case", sorted(PAT_GROUPS))
def test_pat_resume_jax_in_torchao(float64, case):
    """A JAX run handed to torchao (`load_state_dict`) at a proximal step (5) and while healing
    (11), 6 more steps of each."""
    inner, tx, _ = pat_jax(case)
    for start in (5, 11):
        params = {"W": jnp.asarray(W0), "b": jnp.asarray(B0)}
        params, state = pat_jax_steps(case, params, tx.init(params), start)
        W, b = torch_pair(np.array(params["W"]), np.array(params["b"]))
        opt = pat_torch_optimizer(case, W, b)
        sd = prox.prune_state_to_torch(state, inner, params, opt.state_dict()["param_groups"])
        opt.load_state_dict(sd)
        assert opt.num_steps == start
        params, state = pat_jax_steps(case, params, state, 6)
        torch_steps(opt, W, b, 6)
        # measured 1.9e-16 (lasso-adamw, from step 5), 1.4e-16 (scheduled-min-sparsity-sgd)
        for ours, theirs in ((params["W"], W), (params["b"], b)):
            np.testing.assert_allclose(
                np.asarray(ours), theirs.detach().numpy(), rtol=0, atol=1e-15, err_msg=start
            )
        zeros = np.asarray(params["W"]) == 0
        assert zeros.any()
        np.testing.assert_array_equal(zeros, W.detach().numpy() == 0)


def test_pat_state_errors_name_the_mismatch(float64):
    case = "lasso-adamw"
    inner, tx, _ = pat_jax(case)
    W, b = torch_pair(W0, None)
    opt = pat_torch_optimizer(case, W, b)
    torch_steps(opt, W, b, 3)
    params = as_params(W, b)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="state_dict"):
        prox.prune_state_from_torch({"state": {}}, tx, inner, params)
    with pytest.raises(ValueError, match=r"works on parameters \[1\] but .* leaves \[0\]"):
        other = pat_torch_optimizer(case, *torch_pair(W0, None))
        swapped = {"state": sd["state"], "param_groups": other.state_dict()["param_groups"]}
        swapped["param_groups"] = [dict(g) for g in swapped["param_groups"]]
        swapped["param_groups"][0]["params"], swapped["param_groups"][1]["params"] = [1], [0]
        prox.prune_state_from_torch(swapped, tx, inner, params)
    with pytest.raises(ValueError, match=r"2 parameters but params has 3 leaves"):
        prox.prune_state_from_torch(sd, tx, inner, {**params, "c": jnp.zeros(2)})
    bad = {"state": {0: {**sd["state"][0], "latent": torch.zeros(4)}, 1: sd["state"][1]}}
    with pytest.raises(ValueError, match=r"'latent' of parameter 0 has shape \(4,\), expected"):
        prox.prune_state_from_torch({**bad, "param_groups": sd["param_groups"]}, tx, inner, params)
    both = prox.prune_optimizer(inner, [{"params": "*", **PAT_GROUPS[case]}], lr=0.05, **PAT_KW)
    two = [
        {**g, "prox_type": "ProxLasso", "gamma": 0.1 * (k + 1)}
        for k, g in enumerate(sd["param_groups"])
    ]
    with pytest.raises(ValueError, match=r"one gamma here.*\[0.1, 0.2\]"):
        prox.prune_state_from_torch({**sd, "param_groups": two}, both, inner, params)
    with pytest.raises(ValueError, match="no group with a 'prox_type'"):
        plain = [{k: v for k, v in g.items() if k != "prox_type"} for g in sd["param_groups"]]
        prox.prune_state_to_torch(
            prox.prune_state_from_torch(sd, tx, inner, params), inner, params, plain
        )
