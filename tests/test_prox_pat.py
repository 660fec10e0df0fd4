"""PAT (`jaxopt_port.prox.prune_optimizer`, `ProxLasso`, `ProxGroupLasso`) against torchao 0.18's
`torchao.prototype.pat`."""

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
    pytest.importorskip("torchao.prototype.pat")
    from torchao.prototype.pat import group as tp_group
    from torchao.prototype.pat import optim as tp_optim
    from torchao.prototype.pat.optim.prox_executor import apply_prox_to_param


def torchao_prox(p, prox_type, group_type, reg_lambda, gamma, grouper_kwargs=None, **options):
    """One proximal step of torchao's executor on a copy of `p`."""
    t = torch.from_numpy(p.copy())
    prox_map = getattr(tp_optim, prox_type)(reg_lambda, **options)
    kwargs = {
        "gamma": gamma,
        "gamma_index_slope": 0.0,
        "disable_vmap": group_type in ("ElemGrouper", "LayerGrouper"),
        "is_svd_grouper": False,
        "zero_elts_are_counts": bool(options),
    }
    apply_prox_to_param(t, prox_map, getattr(tp_group, group_type), grouper_kwargs or {}, kwargs)
    return t.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prox_maps_bit_equal_to_torchao(dtype):
    """Values k/8 (squared norms exact in any summation order), λ and γ dyadic (λγ exact in
    float32 too); shapes 2-D and 4-D (conv, grouped after flattening dims 1..). x64 on: λτγ in
    float64 as torchao's Python floats, then rounded once to the weights' dtype."""
    rng = np.random.default_rng(0)
    lam, gamma = 0.25, 0.75
    with jax.enable_x64(True):
        for shape in [(6, 10), (4, 3, 2, 2)]:
            z = (rng.integers(-12, 13, shape) / 8).astype(dtype)
            z[1] = 0  # a pruned row
            z[2] = np.sign(z[2] + 0.01) / 8  # a row (and entries) the maps prune
            for prox_type, cls in [
                ("ProxLasso", prox.ProxLasso),
                ("ProxGroupLasso", prox.ProxGroupLasso),
            ]:
                for group_type in ("ElemGrouper", "LayerGrouper", "Dim0Grouper", "Dim1Grouper"):
                    prox_map = cls(lam)
                    got = jax.jit(lambda z, m=prox_map, g=group_type: m.apply(z, gamma, g))(z)
                    want = torchao_prox(z, prox_type, group_type, lam, gamma)
                    where = f"{prox_type} {group_type} {shape}"
                    np.testing.assert_array_equal(np.asarray(got), want, err_msg=where)
                    if prox_type == "ProxLasso" or group_type == "Dim0Grouper":
                        assert (np.asarray(got) == 0).sum() > (z == 0).sum(), where  # it prunes


def test_zero_weight_with_zero_lambda_stays_zero():
    """torchao: 1 - 0/0 = NaN for an exact zero when λγ = 0 (the default reg_lambda); here 0."""
    z = np.array([[0.0, 1.5], [0.0, 0.0]], np.float32)
    for prox_type, cls in [("ProxLasso", prox.ProxLasso), ("ProxGroupLasso", prox.ProxGroupLasso)]:
        want = torchao_prox(z, prox_type, "Dim0Grouper", 0.0, 0.5)
        assert np.isnan(want).any()  # torchao's NaN
        got = np.asarray(cls(0.0).apply(jnp.asarray(z), 0.5, "Dim0Grouper"))
        np.testing.assert_array_equal(got, np.where(np.isnan(want), 0.0, want))
        np.testing.assert_array_equal(got, z)  # λ = 0: the identity


def _torch_run(opt, steps, data):
    X, Y, W0, b0 = data
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    groups = [
        {"params": [W], "prox_type": "ProxGroupLasso", "group_type": "Dim0Grouper"},
        {"params": [b], "prox_type": "ProxLasso", "group_type": "ElemGrouper", "reg_lambda": 0.5},
    ]
    if opt == "sgd":
        base = torch.optim.SGD(groups, lr=0.05, momentum=0.9, foreach=False)
    else:
        base = torch.optim.AdamW(groups, lr=0.01, foreach=False)
    popt = tp_optim.PruneOptimizer(base, warmup_steps=3, reg_lambda=0.05)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    hist = []
    for _ in range(steps):
        popt.zero_grad()
        ((Xt @ W.T + b - Yt) ** 2).mean().backward()
        popt.step()
        hist.append(
            (W.detach().numpy().copy(), b.detach().numpy().copy(), base.param_groups[0]["gamma"])
        )
    return hist


def _jax_run(opt, steps, data):
    X, Y, W0, b0 = data
    inner = optim.sgd(lr=0.05, momentum=0.9) if opt == "sgd" else optim.adamw(lr=0.01)
    groups = [
        {"params": "W", "prox_type": "ProxGroupLasso", "group_type": "Dim0Grouper"},
        {"params": "b", "prox_type": "ProxLasso", "reg_lambda": 0.5},
    ]
    tx = prox.prune_optimizer(
        inner, groups, warmup_steps=3, reg_lambda=0.05, lr=0.05 if opt == "sgd" else 0.01
    )
    params = {"W": jnp.asarray(W0), "b": jnp.asarray(b0)}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        grads = jax.grad(lambda p: jnp.mean((X @ p["W"].T + p["b"] - Y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    hist = []
    for _ in range(steps):
        params, state = step(params, state)
        hist.append((np.asarray(params["W"]), np.asarray(params["b"]), float(state.gamma)))
    assert len(traces) == 1  # compiled once
    return hist


@pytest.mark.parametrize(("opt", "tol"), [("sgd", 5e-15), ("adamw", 5e-15)])  # 6.7e-16, 7.8e-16
def test_training_follows_torchao_float64(opt, tol):
    """60 steps: row group lasso on W, element lasso on b; rows and entries really get pruned."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 12))
    W_true = rng.standard_normal((6, 12)) * np.array([0, 0, 0, 1, 1, 1])[:, None]
    data = (X, X @ W_true.T, rng.standard_normal((6, 12)) * 0.3, rng.standard_normal(6) * 0.1)
    with jax.enable_x64(True):
        want = _torch_run(opt, 60, data)
        got = _jax_run(opt, 60, data)
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        np.testing.assert_allclose(g[0], w[0], rtol=0, atol=tol, err_msg=f"W step {i}")
        np.testing.assert_allclose(g[1], w[1], rtol=0, atol=tol, err_msg=f"b step {i}")
        assert g[2] == w[2]  # γ, the summed lr, exactly
    pruned_rows = (got[-1][0] == 0).all(axis=1)
    np.testing.assert_array_equal(pruned_rows, (want[-1][0] == 0).all(axis=1))
    assert pruned_rows.any() and not pruned_rows.all()


def test_errors():
    with pytest.raises(ValueError, match="MinRankConstraint"):
        prox.prune_optimizer(optim.sgd(lr=0.1), [{"params": "w", "prox_type": "MinRankConstraint"}])
    with pytest.raises(ValueError, match="group_type 'SVDGrouper'"):
        prox.prune_optimizer(
            optim.sgd(lr=0.1),
            [{"params": "w", "prox_type": "ProxLasso", "group_type": "SVDGrouper"}],
        )
    tx = prox.prune_optimizer(optim.sgd(lr=0.1), [{"params": "w", "prox_type": "ProxLasso"}])
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


def test_from_torch_follows_torchao():
    """`prox.from_torch` of a live PruneOptimizer (column group lasso, element lasso), 30 steps."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 12))
    W_true = rng.standard_normal((6, 12)) * (np.arange(12) >= 4)  # columns 0-3 unused
    W0, b0 = rng.standard_normal((6, 12)) * 0.3, rng.standard_normal(6) * 0.1
    with jax.enable_x64(True):
        W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
        b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
        base = torch.optim.SGD(
            [
                {"params": [W], "prox_type": "ProxGroupLasso", "group_type": "Dim1Grouper"},
                {"params": [b], "prox_type": "ProxLasso", "group_type": "ElemGrouper"},
            ],
            lr=0.05,
            momentum=0.9,
            foreach=False,
        )
        popt = tp_optim.PruneOptimizer(base, warmup_steps=2, reg_lambda=0.05)
        tx = prox.from_torch(popt)
        params = [jnp.asarray(W0), jnp.asarray(b0)]  # torch's order
        state = tx.init(params)
        Y = X @ W_true.T

        @jax.jit
        def step(params, state):
            g = jax.grad(lambda p: jnp.mean((X @ p[0].T + p[1] - Y) ** 2))(params)
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        for i in range(30):
            params, state = step(params, state)
            popt.zero_grad()
            ((Xt @ W.T + b - Yt) ** 2).mean().backward()
            popt.step()
            # measured 8.9e-16
            np.testing.assert_allclose(
                np.asarray(params[0]), W.detach().numpy(), rtol=0, atol=5e-15, err_msg=f"{i}"
            )
            np.testing.assert_allclose(
                np.asarray(params[1]), b.detach().numpy(), rtol=0, atol=5e-15, err_msg=f"{i}"
            )
        assert (np.asarray(params[0]) == 0).all(axis=0).any()  # some columns pruned


#: (group_type, torchao grouper kwargs, shape): every grouper the constraints take
CONSTRAINT_GROUPERS = [
    ("Dim0Grouper", {}, (8, 12)),
    ("Dim1Grouper", {}, (8, 12)),
    ("KElementGrouper", {"k": 4}, (6, 12)),
    ("Dim0Grouper", {}, (6, 3, 2, 2)),
    ("ConvFilterGrouper", {}, (5, 3, 2, 2)),
    ("AttentionHeadGrouperDim0", {"num_heads": 4}, (8, 6)),
    ("AttentionHeadGrouperDim1", {"num_heads": 3}, (4, 12)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constraints_and_new_groupers_bit_equal_to_torchao(dtype):
    """MinSparsityConstraint and NMSparseConstraint over the row, column, k-element and
    conv-filter groupers on tie-free random inputs (distinct magnitudes and group norms), and
    ProxGroupLasso over the new groupers on values k/8: bit-equal, and they really prune."""
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        for group_type, gk, shape in CONSTRAINT_GROUPERS:
            z = rng.permutation(np.prod(shape)) + 1.0 + rng.uniform(0, 0.5, shape).ravel()
            z = (z * rng.choice([-1, 1], z.size) / z.size).reshape(shape).astype(dtype)
            cases = [
                ("MinSparsityConstraint", prox.MinSparsityConstraint(0.4), {"min_sparsity": 0.4}),
                ("NMSparseConstraint", prox.NMSparseConstraint(2), {"n_nonzero": 2}),
                ("ProxGroupLasso", prox.ProxGroupLasso(0.6), {}),
            ]
            for name, ours, options in cases:
                lam = 0.6 if name == "ProxGroupLasso" else 0.0
                k = gk.get("k", gk.get("num_heads"))
                if name == "ProxGroupLasso":  # values k/8: squared norms exact in any order
                    z = (rng.integers(-12, 13, shape) / 8).astype(dtype)
                got = jax.jit(lambda z, m=ours, g=group_type, k=k: m.apply(z, 0.75, g, k))(z)
                want = torchao_prox(z, name, group_type, lam, 0.75, gk, **options)
                where = f"{name} {group_type} {shape}"
                np.testing.assert_array_equal(np.asarray(got), want, err_msg=where)
                if name == "ProxGroupLasso":
                    assert (want != z).any() and (want != 0).any(), where  # it shrinks
                else:
                    assert 0 < (want == 0).mean() < 1, where  # it prunes, not everything
    # the 2:4 pattern: two nonzeros in every four consecutive entries
    z = rng.standard_normal((4, 16))
    two_four = np.asarray(
        prox.NMSparseConstraint(2).apply(jnp.asarray(z), 0.0, "KElementGrouper", k=4)
    )
    assert ((two_four.reshape(-1, 4) != 0).sum(1) == 2).all()


def test_cubic_sparsity_schedule_equals_torchaos():
    from types import SimpleNamespace

    group = {"min_sparsity": 0.7, "min_sparsity_schedule": True}
    for n in range(50):
        popt = SimpleNamespace(num_steps=n, warmup_steps=3, healing_start_step=40)
        want = tp_optim.PruneOptimizer._effective_min_sparsity(popt, group)
        assert prox.cubic_sparsity(0.7, n, 3, 40) == want, n


def _torch_constrained_run(opt, steps, data):
    X, Y, W0, b0 = data
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    groups = [
        {
            "params": [W],
            "prox_type": "MinSparsityConstraint",
            "group_type": "Dim0Grouper",
            "min_sparsity": 0.5,
            "min_sparsity_schedule": True,
        },
        {"params": [b], "prox_type": "ProxLasso", "group_type": "ElemGrouper", "reg_lambda": 0.5},
    ]
    if opt == "sgd":
        base = torch.optim.SGD(groups, lr=0.05, momentum=0.9, foreach=False)
    else:
        base = torch.optim.AdamW(groups, lr=0.01, foreach=False)
    popt = tp_optim.PruneOptimizer(base, warmup_steps=3, healing_start_step=30)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    hist = []
    for _ in range(steps):
        popt.zero_grad()
        ((Xt @ W.T + b - Yt) ** 2).mean().backward()
        popt.step()
        hist.append((W.detach().numpy().copy(), b.detach().numpy().copy()))
    return hist


@pytest.mark.parametrize(("opt", "tol"), [("sgd", 1e-14), ("adamw", 1e-14)])  # 8.9e-16, 7.8e-16
def test_min_sparsity_schedule_and_healing_follow_torchao_float64(opt, tol):
    """Rows pruned along the cubic ramp to 50 % by step 29, then 30 healing steps: the pruned
    rows stay exactly zero (frozen mask, masked gradients) while the rest keeps training."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 12))
    W_true = rng.standard_normal((6, 12)) * np.array([0, 0, 1, 1, 1, 1])[:, None]
    data = (X, X @ W_true.T, rng.standard_normal((6, 12)) * 0.3, rng.standard_normal(6) * 0.1)
    with jax.enable_x64(True):
        want = _torch_constrained_run(opt, 60, data)
        inner = optim.sgd(lr=0.05, momentum=0.9) if opt == "sgd" else optim.adamw(lr=0.01)
        groups = [
            {
                "params": "W",
                "prox_type": "MinSparsityConstraint",
                "group_type": "Dim0Grouper",
                "min_sparsity": 0.5,
                "min_sparsity_schedule": True,
            },
            {"params": "b", "prox_type": "ProxLasso", "reg_lambda": 0.5},
        ]
        tx = prox.prune_optimizer(
            inner, groups, warmup_steps=3, lr=0.05 if opt == "sgd" else 0.01, healing_start_step=30
        )
        params = {"W": jnp.asarray(data[2]), "b": jnp.asarray(data[3])}
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: jnp.mean((X @ p["W"].T + p["b"] - data[1]) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        got = []
        for _ in range(60):
            params, state = step(params, state)
            got.append((np.asarray(params["W"]), np.asarray(params["b"])))
    zero_rows = [(w[0] == 0).all(axis=1).sum() for w in want]
    assert zero_rows[3] == 0 and zero_rows[10] in (1, 2) and zero_rows[29] == 3  # the ramp
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        np.testing.assert_allclose(g[0], w[0], rtol=0, atol=tol, err_msg=f"W step {i}")
        np.testing.assert_allclose(g[1], w[1], rtol=0, atol=tol, err_msg=f"b step {i}")
        np.testing.assert_array_equal(g[0] == 0, w[0] == 0, err_msg=f"mask step {i}")
    # healing: the mask of step 29 is frozen, the kept weights still move
    np.testing.assert_array_equal(got[-1][0] == 0, got[29][0] == 0)
    assert not np.array_equal(got[-1][0], got[29][0])


def test_from_torch_converts_constraints_groupers_and_healing(torch_float64):
    """A live PruneOptimizer (N:M on k-element groups, the cubic min-sparsity ramp on rows,
    healing) converted by `prox.from_torch` follows torchao (measured ≤ 4.4e-16)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        X, Y = rng.standard_normal((32, 8)), rng.standard_normal((32, 6))
        W1 = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((6, 8))))
        W2 = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((6, 8))))
        groups = [
            {
                "params": [W1],
                "prox_type": "NMSparseConstraint",
                "group_type": "KElementGrouper",
                "k": 4,
                "n_nonzero": 2,
            },
            {
                "params": [W2],
                "prox_type": "MinSparsityConstraint",
                "group_type": "Dim0Grouper",
                "min_sparsity": 0.5,
                "min_sparsity_schedule": True,
            },
        ]
        base = torch.optim.SGD(groups, lr=0.02, momentum=0.9, foreach=False)
        popt = tp_optim.PruneOptimizer(base, warmup_steps=2, healing_start_step=20)
        tx = prox.from_torch(popt)
        params = [jnp.asarray(W1.detach().numpy()), jnp.asarray(W2.detach().numpy())]
        state = tx.init(params)

        def loss(p, x):
            return ((x @ p[0].T + x @ p[1].T - Y) ** 2).mean()

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.grad(loss)(params, X), state, params)
            return optax.apply_updates(params, updates), state

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        worst = 0.0
        for _ in range(30):
            popt.zero_grad()
            ((Xt @ W1.T + Xt @ W2.T - Yt) ** 2).mean().backward()
            popt.step()
            params, state = step(params, state)
            for ours, theirs in zip(params, (W1, W2), strict=True):
                t = theirs.detach().numpy()
                np.testing.assert_array_equal(np.asarray(ours) == 0, t == 0)
                worst = max(worst, float(np.abs(np.asarray(ours) - t).max()))
        assert worst <= 5e-15, worst
        assert (np.asarray(params[0]).reshape(-1, 4) != 0).sum(1).max() <= 2  # 2:4
        assert (np.asarray(params[1]) == 0).all(1).sum() == 3  # half of the rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_min_sparsity_bit_equal_to_torchao(dtype):
    """One budget over three leaves of different shapes, every score type, row / element /
    layer / k-element groups, tie-free inputs: the same groups zeroed as torchao's
    `apply_global_prox`."""
    from torchao.prototype.pat.optim.prox_executor import apply_global_prox

    rng = np.random.default_rng(11)
    shapes = [(6, 8), (4, 8), (10, 8)]
    sizes = [int(np.prod(s)) for s in shapes]
    values = (rng.permutation(sum(sizes)) + 1.0 + rng.uniform(0, 0.5, sum(sizes))) / sum(sizes)
    values *= rng.choice([-1, 1], values.size)
    zs = [
        v.reshape(s).astype(dtype)
        for v, s in zip(np.split(values, np.cumsum(sizes)[:-1]), shapes, strict=True)
    ]
    with jax.enable_x64(True):
        for group_type, gk in [
            ("Dim0Grouper", {}),
            ("ElemGrouper", {}),
            ("LayerGrouper", {}),
            ("KElementGrouper", {"k": 4}),
        ]:
            for score_type in ("rms", "l2", "param_cost"):
                ts = [torch.from_numpy(z.copy()) for z in zs]
                theirs = tp_optim.GlobalMinSparsityConstraint(0.0, 0.4, score_type)
                apply_global_prox(ts, theirs, getattr(tp_group, group_type), gk, 0.4)
                ours, k = prox.GlobalMinSparsityConstraint(0.4, score_type), gk.get("k")
                got = jax.jit(lambda zs, m=ours, g=group_type, k=k: m.apply_many(zs, g, k))(zs)
                where = f"{group_type} {score_type}"
                for g, t in zip(got, ts, strict=True):
                    np.testing.assert_array_equal(np.asarray(g), t.numpy(), err_msg=where)
                zeros = sum((t.numpy() == 0).sum() for t in ts)
                assert 0 < zeros < sum(sizes), where


def test_global_min_sparsity_training_follows_torchao(torch_float64):
    """PruneOptimizer with one global budget over two leaves (rows, the cubic ramp to 60 %,
    healing), SGD, 40 float64 steps, through `prox.from_torch` (measured ≤ 2.2e-16)."""
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((32, 8)), rng.standard_normal((32, 6))
    W1 = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((6, 8))))
    W2 = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((6, 8)) * 0.5))
    group = {
        "params": [W1, W2],
        "prox_type": "GlobalMinSparsityConstraint",
        "group_type": "Dim0Grouper",
        "min_sparsity": 0.6,
        "min_sparsity_schedule": True,
    }
    base = torch.optim.SGD([group], lr=0.02, momentum=0.9, foreach=False)
    popt = tp_optim.PruneOptimizer(base, warmup_steps=2, healing_start_step=25)
    with jax.enable_x64(True):
        tx = prox.from_torch(popt)
        params = [jnp.asarray(W1.detach().numpy()), jnp.asarray(W2.detach().numpy())]
        state = tx.init(params)

        def loss(p):
            return ((X @ p[0].T + X @ p[1].T - Y) ** 2).mean()

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        worst = 0.0
        for _ in range(40):
            popt.zero_grad()
            ((Xt @ W1.T + Xt @ W2.T - Yt) ** 2).mean().backward()
            popt.step()
            params, state = step(params, state)
            for ours, theirs in zip(params, (W1, W2), strict=True):
                t = theirs.detach().numpy()
                np.testing.assert_array_equal(np.asarray(ours) == 0, t == 0)
                worst = max(worst, float(np.abs(np.asarray(ours) - t).max()))
    assert worst <= 5e-15, worst
    zero_rows = [int((np.asarray(p) == 0).all(1).sum()) for p in params]
    assert sum(zero_rows) == 8 and zero_rows[0] != zero_rows[1]  # ⌈0.6·12⌉, unevenly split


def torchao_svd_prox(z, prox_type, reg_lambda, gamma, **options):
    t = torch.from_numpy(z.copy())
    kwargs = {
        "gamma": gamma,
        "gamma_index_slope": 0.0,
        "disable_vmap": False,
        "is_svd_grouper": True,
        "zero_elts_are_counts": prox_type == "MinRankConstraint",
    }
    prox_map = getattr(tp_optim, prox_type)(reg_lambda, **options)
    sv_count = torch.zeros(1, dtype=torch.int)
    apply_prox_to_param(t, prox_map, tp_group.SVDGrouper, {}, kwargs, sv_count=sv_count)
    return t.numpy(), int(sv_count[0])


@pytest.mark.parametrize(("dtype", "tol"), [(np.float32, 2e-6), (np.float64, 5e-15)])
def test_svd_maps_follow_torchao(dtype, tol):
    """ProxNuclearNorm and MinRankConstraint with SVDGrouper, 2-D and 4-D leaves: XLA's SVD is
    not torch's, so the rebuilt weights agree to the SVD's rounding (measured: float32 1.1e-6,
    float64 1.3e-15 relative to the largest entry), and the ranks are equal."""
    rng = np.random.default_rng(13)
    with jax.enable_x64(True):
        for shape in [(8, 6), (6, 3, 2, 2)]:
            z = rng.standard_normal(shape).astype(dtype)
            for name, ours, options in [
                ("ProxNuclearNorm", prox.ProxNuclearNorm(1.2), {}),
                ("MinRankConstraint", prox.MinRankConstraint(0.5), {"min_sparsity": 0.5}),
            ]:
                lam = 1.2 if name == "ProxNuclearNorm" else 0.0
                want, rank = torchao_svd_prox(z, name, lam, 1.5, **options)
                got = np.asarray(jax.jit(lambda z, m=ours: m.apply(z, 1.5, "SVDGrouper"))(z))
                scale = np.abs(want).max()
                where = f"{name} {shape}"
                np.testing.assert_allclose(
                    got / scale, want / scale, rtol=0, atol=tol, err_msg=where
                )
                view = got.reshape(shape[0], -1).astype(np.float64)
                assert np.linalg.matrix_rank(view, tol=1e-4 * scale) == rank, where
                assert rank < min(view.shape), where  # the rank really dropped


def test_nuclear_norm_training_follows_torchao(torch_float64):
    """ProxNuclearNorm on an SVD-grouped leaf, SGD, 30 float64 steps through `prox.from_torch`:
    the SVDs differ in rounding only (measured ≤ 2.7e-15), and the rank drops as torchao's."""
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((32, 8)), rng.standard_normal((32, 6))
    W = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((6, 8))))
    group = {"params": [W], "prox_type": "ProxNuclearNorm", "group_type": "SVDGrouper"}
    base = torch.optim.SGD([group], lr=0.05, momentum=0.9, foreach=False)
    popt = tp_optim.PruneOptimizer(base, warmup_steps=2, reg_lambda=2.0)
    with jax.enable_x64(True):
        tx = prox.from_torch(popt)
        params = [jnp.asarray(W.detach().numpy())]
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: ((X @ p[0].T - Y) ** 2).mean())(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        worst = 0.0
        for _ in range(30):
            popt.zero_grad()
            ((Xt @ W.T - Yt) ** 2).mean().backward()
            popt.step()
            params, state = step(params, state)
            worst = max(worst, float(np.abs(np.asarray(params[0]) - W.detach().numpy()).max()))
    assert worst <= 1e-14, worst
    ranks = [
        np.linalg.matrix_rank(w, tol=1e-8) for w in (np.asarray(params[0]), W.detach().numpy())
    ]
    assert ranks[0] == ranks[1] < 6


def test_constraint_errors():
    sgd = optim.sgd(lr=0.1)
    with pytest.raises(ValueError, match="requires 'min_sparsity'"):
        prox.prune_optimizer(sgd, [{"params": "w", "prox_type": "MinSparsityConstraint"}])
    with pytest.raises(ValueError, match="requires 'n_nonzero'"):
        prox.prune_optimizer(sgd, [{"params": "w", "prox_type": "NMSparseConstraint"}])
    ramp = {"params": "w", "prox_type": "MinSparsityConstraint", "min_sparsity": 0.5}
    with pytest.raises(ValueError, match="finite healing_start_step"):
        prox.prune_optimizer(sgd, [{**ramp, "min_sparsity_schedule": True}])
    with pytest.raises(ValueError, match="warmup_steps"):
        prox.prune_optimizer(sgd, [ramp], warmup_steps=5, healing_start_step=5)
    rank = {"params": "w", "prox_type": "MinRankConstraint", "min_sparsity": 0.5}
    with pytest.raises(ValueError, match="prox_through_heal"):
        prox.prune_optimizer(sgd, [{**rank, "group_type": "SVDGrouper"}], healing_start_step=9)
    with pytest.raises(ValueError, match="SVDGrouper"):
        prox.ProxNuclearNorm(0.1).apply(jnp.ones((3, 3)), 1.0, "Dim0Grouper")
    with pytest.raises(ValueError, match="attention-head grouper"):
        prox.MinSparsityConstraint(0.5).apply(jnp.ones((3, 3)), 1.0, "ElemGrouper")
    with pytest.raises(ValueError, match="dividing the row length 6"):
        prox.NMSparseConstraint(2).apply(jnp.ones((3, 6)), 1.0, "KElementGrouper", k=4)
    with pytest.raises(ValueError, match="num_heads"):
        prox.grouped_view(jnp.ones((6, 4)), "AttentionHeadGrouperDim0", 4)
    with pytest.raises(ValueError, match="at most the group size"):
        prox.NMSparseConstraint(5).apply(jnp.ones((3, 4)), 1.0, "Dim0Grouper")
    with pytest.raises(ValueError, match=r"min_sparsity must be in \[0, 1\]"):
        prox.MinSparsityConstraint(1.5)
    with pytest.raises(ValueError, match="score_type"):
        prox.GlobalMinSparsityConstraint(0.5, "max")


def test_lr_is_read_from_the_inner_optimizer_or_required():
    """γ sums the inner optimizer's lr: read from a jaxopt_port optimizer when omitted (the same
    result as passing it), and required where it cannot be read (a default of 0 would silently
    never prune)."""
    group = [{"params": "w", "prox_type": "ProxLasso"}]
    params = {"w": jnp.array([1.0, 0.05, -0.5, 0.3])}
    grads = {"w": jnp.array([0.1, -0.2, 0.3, 0.0])}

    def two_steps(tx):
        p, state = params, tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return np.asarray(p["w"])

    given = two_steps(prox.prune_optimizer(optim.sgd(lr=0.5), group, reg_lambda=0.2, lr=0.5))
    read = two_steps(prox.prune_optimizer(optim.sgd(lr=0.5), group, reg_lambda=0.2))
    np.testing.assert_array_equal(read, given)
    unpruned = two_steps(prox.prune_optimizer(optim.sgd(lr=0.5), group, reg_lambda=0.2, lr=0.0))
    assert np.abs(given).sum() < np.abs(unpruned).sum() - 0.5  # γ > 0 shrank the weights
    schedule = optax.linear_schedule(0.5, 0.1, 2)
    np.testing.assert_array_equal(
        two_steps(prox.prune_optimizer(optim.sgd(lr=schedule), group, reg_lambda=0.2)),
        two_steps(prox.prune_optimizer(optim.sgd(lr=schedule), group, reg_lambda=0.2, lr=schedule)),
    )
    with pytest.raises(ValueError, match="prune_optimizer: pass lr="):
        prox.prune_optimizer(optax.sgd(0.5), group, reg_lambda=0.2)
    with pytest.raises(ValueError, match=r"quant_optimizer\(quant_shrink=True\): pass lr="):
        prox.quant_optimizer(
            optax.sgd(0.5), prox.UnifQuantizer(), prox.ProxHardQuant(), 2, quant_shrink=True
        )
