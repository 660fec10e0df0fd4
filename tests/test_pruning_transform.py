"""pruning.sparsify: the Done-when run against torch.ao.pruning (WeightNormSparsifier + CubicSL,
SGD momentum, float64, masks every step, params ≤ 1e-12), compile-once, optax wrappers, NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.utils.prune
from torch.ao import pruning as tao

from jaxopt_port import optim, pruning

STEPS, EVERY = 120, 3
SIZES = (16, 22, 10)  # 22 input features: ragged (1, 4) blocks in the second weight
CUBIC = {"init_sl": 0.0, "init_t": 1, "delta_t": 2, "total_t": 10}


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((STEPS, 12, SIZES[0]))
    y = rng.standard_normal((STEPS, 12, SIZES[-1]))
    return x, y


def forward(p, x):
    h = jnp.maximum(x @ p["0"]["weight"].T + p["0"]["bias"], 0.0)
    return h @ p["2"]["weight"].T + p["2"]["bias"]


def loss_fn(p, x, y):
    return jnp.mean((forward(p, x) - y) ** 2)


@pytest.fixture(scope="module")
def torch_run():
    """torch: per step, the masks, the effective weights and every parameter."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(SIZES[0], SIZES[1]),
            torch.nn.ReLU(),
            torch.nn.Linear(SIZES[1], SIZES[2]),
        )
        init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        sp = tao.WeightNormSparsifier(sparsity_level=0.8, sparse_block_shape=(1, 4))
        sp.prepare(model, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
        sched = tao.CubicSL(sp, **CUBIC)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
        x, y = data()
        record = []
        for t in range(STEPS):
            opt.zero_grad()
            loss = torch.mean((model(torch.from_numpy(x[t])) - torch.from_numpy(y[t])) ** 2)
            loss.backward()
            opt.step()
            if (t + 1) % EVERY == 0:
                sp.step()
                sched.step()
            record.append(
                {
                    name: {
                        "mask": layer.parametrizations.weight[0].mask.numpy().copy(),
                        "effective": layer.weight.detach().numpy().copy(),
                        "orig": layer.parametrizations.weight.original.detach().numpy().copy(),
                        "bias": layer.bias.detach().numpy().copy(),
                    }
                    for name, layer in (("0", model[0]), ("2", model[2]))
                }
            )
        return init, record
    finally:
        torch.set_default_dtype(default)


def jax_params(init):
    return {
        name: {
            "weight": jnp.asarray(init[f"{name}.weight"]),
            "bias": jnp.asarray(init[f"{name}.bias"]),
        }
        for name in ("0", "2")
    }


def make_tx(hard):
    sparsifier = pruning.WeightNormSparsifier(sparsity_level=0.8, sparse_block_shape=(1, 4))
    return pruning.sparsify(
        optim.sgd(lr=0.05, momentum=0.9),
        sparsifier,
        schedule=pruning.CubicSL(sparsifier, **CUBIC),
        every=EVERY,
        hard=hard,
    )


@pytest.mark.parametrize("hard", [False, True])
def test_weight_norm_cubic_sgd_momentum_matches_torch(torch_run, hard):
    """Torch's masks at every step; params within 1e-12 of torch's ``original`` (soft) or
    effective weight (hard), every step, float64."""
    init, record = torch_run
    traces = []
    with jax.enable_x64(True):
        tx = make_tx(hard)
        params = jax_params(init)
        state = tx.init(params)

        @jax.jit
        def step(params, state, x, y):
            traces.append(1)
            model_params = params if hard else pruning.masked(params, state)
            grads = jax.grad(loss_fn)(model_params, x, y)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        x, y = data()
        worst = 0.0
        pruned = []
        for t in range(STEPS):
            params, state = step(params, state, x[t], y[t])
            masks = pruning.masks_of(state)
            effective = pruning.masked(params, state)
            for name in ("0", "2"):
                expected = record[t][name]
                np.testing.assert_array_equal(masks[name]["weight"], expected["mask"])
                assert masks[name]["bias"] is None
                mine = params[name]["weight"]
                theirs = expected["effective"] if hard else expected["orig"]
                worst = max(
                    worst,
                    float(np.max(np.abs(mine - theirs))),
                    float(np.max(np.abs(effective[name]["weight"] - expected["effective"]))),
                    float(np.max(np.abs(params[name]["bias"] - expected["bias"]))),
                )
            pruned.append(float((masks["0"]["weight"] == 0).mean()))
    assert worst <= 1e-12, (
        worst
    )  # measured 1.4e-16 (soft), 1.1e-16 (hard): the forward matmuls differ, masks are equal
    assert len(traces) == 1  # compiled once
    assert pruned[0] == 0.0 and pruned[-1] >= 0.75  # the cubic schedule actually ran


def test_wrappers_chain_multisteps_inject_hyperparams():
    """The same masks through optax.chain, inject_hyperparams (a traced level) and MultiSteps
    (masks update once per k micro-steps)."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((8, 12)), jnp.float32), "b": jnp.zeros(8)}
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
        for _ in range(6)
    ]
    rule = pruning.Magnitude()

    def run(tx, n=6):
        state = tx.init(params)
        p = params
        for g in grads[:n]:
            updates, state = jax.jit(tx.update)(g, state, p)
            p = optax.apply_updates(p, updates)
        return p, state

    plain = pruning.sparsify(optim.sgd(lr=0.1), rule, schedule=0.5, every=2, hard=True)
    p_plain, s_plain = run(plain)
    chained = optax.chain(
        optax.identity(),
        pruning.sparsify(optim.sgd(lr=0.1), rule, schedule=0.5, every=2, hard=True),
    )
    p_chain, s_chain = run(chained)
    injected = optax.inject_hyperparams(pruning.sparsify, static_args=("every", "hard"))(
        optim.sgd(lr=0.1), rule, schedule=0.5, every=2, hard=True
    )
    p_inj, s_inj = run(injected)
    for p, s in ((p_chain, s_chain), (p_inj, s_inj)):
        np.testing.assert_array_equal(pruning.masks_of(s)["w"], pruning.masks_of(s_plain)["w"])
        np.testing.assert_array_equal(p["w"], p_plain["w"])
    mask = np.asarray(pruning.masks_of(s_plain)["w"])
    assert (mask == 0).sum() == 48 and np.all(np.asarray(p_plain["w"])[mask == 0] == 0)
    multi = optax.MultiSteps(
        pruning.sparsify(optim.sgd(lr=0.1), rule, schedule=0.5, every=1), every_k_schedule=3
    )
    _, s_multi = run(multi)
    assert int(sparsify_state(s_multi).epoch) == 2  # 6 micro-steps = 2 real steps


def sparsify_state(state):
    return next(
        s
        for s in jax.tree_util.tree_leaves(
            state, is_leaf=lambda x: isinstance(x, pruning.SparsifyState)
        )
        if isinstance(s, pruning.SparsifyState)
    )


def test_global_scope_equals_global_unstructured():
    """scope='global' with init_masks is torch's global_unstructured at that level."""
    rng = np.random.default_rng(2)
    params = {
        "a": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((4, 7)), jnp.float32),
    }
    tx = pruning.sparsify(
        optim.sgd(lr=0.1),
        pruning.Magnitude(),
        schedule=0.6,
        every=None,
        init_masks=True,
        scope="global",
    )
    masks = pruning.masks_of(tx.init(params))
    a, b = pruning.global_unstructured([params["a"], params["b"]], 0.6)
    np.testing.assert_array_equal(masks["a"], a)
    np.testing.assert_array_equal(masks["b"], b)


def test_nnx_optimizer_flax_layout_two_four():
    """nnx.Optimizer with Flax kernels (layout='flax'): 2:4 along torch's input features."""
    from flax import nnx

    model = nnx.Sequential(
        nnx.Linear(8, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 4, rngs=nnx.Rngs(1))
    )
    tx = pruning.sparsify(
        optim.sgd(lr=0.01), pruning.n_m_sparsifier(2, 4), every=1, layout="flax", hard=True
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = jnp.ones((3, 8)), jnp.zeros((3, 4))

    @nnx.jit
    def train(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)

    train(model, optimizer)
    kernel = np.asarray(model.layers[0].kernel[...])  # (in, out) = torch weight transposed
    groups = kernel.T.reshape(16, 2, 4)  # torch (out, in): groups of 4 input features
    assert np.all((groups != 0).sum(-1) == 2)

    # the state converts to torch: weight_orig/weight_mask that a pruned torch model loads
    masks = pruning.masks_of(nnx.as_pure(optimizer.opt_state))
    sd = pruning.pruned_state_dict(model, masks)
    twin = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    for i in (0, 2):
        torch.nn.utils.prune.identity(twin[i], "weight")
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert np.all((twin[0].weight_mask.numpy().reshape(16, 2, 4) != 0).sum(-1) == 2)
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    out = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, model(jnp.asarray(x)), atol=1e-6)  # measured 8.9e-8 (float32)


def test_init_on_shape_structs_and_stable_state_structure():
    params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(4)}
    structs = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    tx = pruning.sparsify(optim.sgd(lr=0.1, momentum=0.9), pruning.Magnitude(0.5), every=2)
    abstract = jax.eval_shape(tx.init, structs)
    state = tx.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    assert pruning.masks_of(abstract)["w"].shape == (4, 8) and pruning.masks_of(state)["b"] is None
    _, new_state = tx.update(params, state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert all(
        a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True)
    )
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, state)


def test_structured_and_magnitude_rules_equal_torchs_functions():
    """First pruning at level s: ``Structured`` is ``ln_structured(amount=s)``, ``Magnitude`` is
    ``l1_unstructured(amount=s)`` (both count against every unit), also in Flax layout."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.standard_normal((10, 7)), jnp.float32)
    for rule, expected in (
        (pruning.Structured(0.5, n=2, dim=0), pruning.ln_structured(w, 0.5, 2, 0)),
        (pruning.Structured(0.3, n=1, dim=1), pruning.ln_structured(w, 0.3, 1, 1)),
        (pruning.Magnitude(0.45), pruning.l1_unstructured(w, 0.45)),
    ):
        for layout, leaf in (("torch", w), ("flax", w.T)):
            tx = pruning.sparsify(
                optim.sgd(lr=0.1), rule, every=None, init_masks=True, layout=layout
            )
            mask = pruning.masks_of(tx.init({"w": leaf}))["w"]
            np.testing.assert_array_equal(mask if layout == "torch" else mask.T, expected)
