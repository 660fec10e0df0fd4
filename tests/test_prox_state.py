"""PARQ's state to and from torchao's `QuantOptimizer.state_dict()`: every field bitwise, and
resuming either way. Training resumes after the annealing window (step 12 > anneal_end 10):
inside it, PARQ's slope amplifies ulp differences of the gradients into other levels (a run
traced differently lands elsewhere), which would test chaos, not the conversion."""

from __future__ import annotations

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
