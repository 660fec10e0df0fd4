"""PARQ (`jaxopt_port.prox`) against torchao 0.18's `torchao.prototype.parq` and the NumPy
reference `parity/reference/prox.py`."""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_port import optim, prox
from parity.reference import prox as ref

with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
    warnings.simplefilter("ignore")
    pytest.importorskip("torchao.prototype.parq")
    from torchao.prototype.parq import optim as tp_optim
    from torchao.prototype.parq import quant as tp_quant


@contextlib.contextmanager
def precision(dtype):
    """float64: x64 in JAX and torch's default dtype float64 (torchao builds its level tables in
    torch's default dtype); float32: neither."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        with jax.enable_x64(dtype == np.float64):
            yield
    finally:
        torch.set_default_dtype(old)


def dyadic(rng, dtype, rows=16, cols=16):
    """Values k/8 whose every mean, residual and sum the quantizers take is exact in float32 (so
    torch's and XLA's different summation orders agree); rows have a nonzero dyadic mean."""
    half = rng.integers(-16, 17, (rows, cols // 2))
    k = np.concatenate([half, -half], 1) + rng.integers(-3, 4, (rows, 1))
    return (rng.permuted(k, axis=1) / 8).astype(dtype)


#: (torchao quantizer, ours, bits in float32, bits in float64): each case compiles, so float64
#: re-checks the dtype-sensitive paths only (LSB's ternary levels take torch's default dtype).
QUANTIZERS = [
    (tp_quant.UnifQuantizer(), prox.UnifQuantizer(), [1, 4], [2]),
    (tp_quant.UnifQuantizer(center=True), prox.UnifQuantizer(center=True), [2], []),
    (tp_quant.UnifQuantizer(scale_method="max"), prox.UnifQuantizer(scale_method="max"), [3], []),
    (tp_quant.MaxUnifQuantizer(), prox.MaxUnifQuantizer(), [2], [4]),
    (tp_quant.TernaryUnifQuantizer(), prox.TernaryUnifQuantizer(), [0], [0]),
    (tp_quant.LSBQuantizer(), prox.LSBQuantizer(), [0, 2, 3], [0, 3]),
]


def _cases(dtype):
    for theirs, ours, bits32, bits64 in QUANTIZERS:
        for b in bits32 if dtype == np.float32 else bits64:
            for dim in (None, -1):
                yield theirs, ours, b, dim


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantizers_bit_equal_to_torchao(dtype):
    rng = np.random.default_rng(0)
    cases = list(_cases(dtype))
    with precision(dtype):
        batches = [np.stack([dyadic(rng, dtype) for _ in range(3)]) for _ in cases]

        @jax.jit  # every case in one program: one compilation
        def quantize_all(batches):
            return [
                jax.vmap(lambda x, ours=ours, b=b, dim=dim: ours.quantize(x, b, dim))(batch)
                for (_, ours, b, dim), batch in zip(cases, batches, strict=True)
            ]

        results = quantize_all(batches)
        for (theirs, ours, b, dim), batch, (q, Q) in zip(cases, batches, results, strict=True):
            for i, x in enumerate(batch):
                tq, tQ = theirs.quantize(torch.from_numpy(x), b, dim=dim)
                where = f"{ours!r} b={b} dim={dim} case {i}"
                assert q.dtype == tq.numpy().dtype, where
                np.testing.assert_array_equal(np.asarray(q[i]), tq.numpy(), err_msg=where)
                np.testing.assert_array_equal(np.asarray(Q[i]), tQ.numpy(), err_msg=where)


def test_unif_quantizer_on_general_float32_inputs():
    """Off the dyadic grid torch's float32 sum (of |p| for the scale) runs in another order than
    XLA's: the levels are within one ulp of torchao's, and q is the same level up to that ulp."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 16, 64)).astype(np.float32)
    q, Q = jax.jit(jax.vmap(lambda x: prox.UnifQuantizer().quantize(x, 2)))(x)
    worst_level, worst_q = 0.0, 0.0
    for i in range(len(x)):
        tq, tQ = tp_quant.UnifQuantizer().quantize(torch.from_numpy(x[i]), 2)
        s = float(tQ[-1] - tQ[-2])
        worst_level = max(worst_level, float(np.max(np.abs(np.asarray(Q[i]) - tQ.numpy()) / s)))
        worst_q = max(worst_q, float(np.max(np.abs(np.asarray(q[i]) - tq.numpy()) / s)))
    eps = np.finfo(np.float32).eps
    assert worst_level <= 2 * eps  # measured 1.8e-7 (1.5 ulp of the top level, in units of s)
    assert worst_q <= 2 * eps  # measured 1.8e-7: no value rounded to another level


def test_unif_quantizer_matches_numpy_reference():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        x = rng.standard_normal((8, 32, 16))
        for per_row in (False, True):
            dim = -1 if per_row else None
            q, Q = jax.jit(jax.vmap(lambda x, dim=dim: prox.UnifQuantizer().quantize(x, 3, dim)))(x)
            for i in range(len(x)):
                rq, rQ = ref.unif_quantize(x[i], 3, per_row)
                # the sum of |p| is in another order than NumPy's pairwise sum
                # measured 4.6e-16 (two ulps of a level)
                np.testing.assert_allclose(np.asarray(Q[i]), rQ, rtol=1e-15, atol=0)
                np.testing.assert_allclose(np.asarray(q[i]), rq, rtol=1e-15, atol=0)


#: (torchao map, ours); steps chosen before, inside and after the window [10, 30)
PROX_MAPS = [
    (tp_optim.ProxHardQuant(), prox.ProxHardQuant()),
    (tp_optim.ProxPARQ(10, 30, steepness=8, anneal_center=0.4), prox.ProxPARQ(10, 30, 8, 0.4)),
    (tp_optim.ProxBinaryRelax(10, 30), prox.ProxBinaryRelax(10, 30)),
]
STEPS = [0, 9, 10, 11, 17, 25, 29, 30, 55]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prox_maps_bit_equal_to_torchao(dtype):
    """Each map on general inputs with torchao's levels, on a refresh step (q from the
    quantizer) and a kept step (q = nearest level, torchao's q=None), every step kind."""
    rng = np.random.default_rng(3)
    with precision(dtype):
        for theirs, ours in PROX_MAPS:
            for dim in (None, -1):
                p = rng.standard_normal((12, 40)).astype(dtype)
                tq, tQ = tp_quant.UnifQuantizer().quantize(torch.from_numpy(p), 2, dim=dim)

                q, Q = tq.numpy(), tQ.numpy()

                @jax.jit
                def run(step, fresh, ours=ours, dim=dim, q=q, Q=Q, p=p):
                    q = jnp.where(fresh, q, prox.nearest_level(jnp.asarray(p), Q, dim))
                    return ours.apply(jnp.asarray(p), q, jnp.asarray(Q), step, dim)

                for step in STEPS:
                    for fresh in (True, False):
                        t = torch.from_numpy(p.copy())
                        theirs.apply_(t, tq if fresh else None, tQ, step_count=step, dim=dim)
                        got, want = np.asarray(run(step, fresh)), t.numpy()
                        where = f"{ours!r} dim={dim} step={step} fresh={fresh}"
                        if isinstance(ours, prox.ProxBinaryRelax) and 10 <= step < 30:
                            # torch's vectorized add_(q, alpha=theta) is a fused multiply-add,
                            # which XLA does not emit: one rounding more (measured 1 ulp)
                            np.testing.assert_array_max_ulp(got, want, maxulp=1)
                        else:
                            np.testing.assert_array_equal(got, want, err_msg=where)


def test_parq_prox_matches_numpy_reference():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        p = rng.standard_normal((6, 50))
        q, Q = ref.unif_quantize(p, 2, per_row=True)
        parq = prox.ProxPARQ(10, 30)
        run = jax.jit(
            lambda step: parq.apply(jnp.asarray(p), jnp.asarray(q), jnp.asarray(Q), step, -1)
        )
        for step in STEPS:
            want = ref.prox_parq(p, Q, q, step, 10, 30)
            np.testing.assert_array_equal(np.asarray(run(step)), want, err_msg=f"step {step}")
        np.testing.assert_array_equal(
            np.asarray(prox.nearest_level(jnp.asarray(p), jnp.asarray(Q), -1)), ref.nearest(p, Q)
        )


def test_inverse_slope_sequence_equals_torchao():
    parq = prox.ProxPARQ(7, 200, steepness=12, anneal_center=0.3)
    want = [tp_optim.parq.normalized_mirror_sigmoid(t, 7, 200, 12, 0.3) for t in range(7, 200)]
    assert parq.rhos() == want  # Python floats, exactly
    assert [ref.mirror_sigmoid(t, 7, 200, 12, 0.3) for t in range(7, 200)] == want
    steps = jnp.arange(0, 210)
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            got = np.asarray(
                jax.jit(jax.vmap(lambda t, dtype=dtype: parq.inv_slope(t, dtype)))(steps)
            )
        tiny = np.finfo(dtype).tiny
        expected = [1.0] * 7 + [max(tiny, r) for r in want] + [0.0] * 10
        np.testing.assert_array_equal(got, np.asarray(expected).astype(dtype))


def _torch_run(dtype, opt, prox_t, quantizer, bits, steps, **kw):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 12)).astype(dtype)
    Y = rng.standard_normal((64, 3)).astype(dtype)
    W0 = (rng.standard_normal((3, 12)) * 0.5).astype(dtype)
    b0 = (rng.standard_normal(3) * 0.1).astype(dtype)
    W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    groups = [{"params": [W], "quant_bits": bits}, {"params": [b]}]
    if opt == "sgd":
        base = torch.optim.SGD(groups, lr=0.05, momentum=0.9, foreach=False)
    else:
        base = torch.optim.AdamW(groups, lr=0.01, foreach=False)
    qopt = tp_optim.QuantOptimizer(base, quantizer, prox_t, **kw)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    hist = []
    for _ in range(steps):
        qopt.zero_grad()
        ((Xt @ W.T + b - Yt) ** 2).mean().backward()
        qopt.step()
        hist.append((W.detach().numpy().copy(), b.detach().numpy().copy()))
    return (X, Y, W0, b0), hist, qopt


def _jax_run(data, opt, prox_j, quantizer, bits, steps, **kw):
    X, Y, W0, b0 = data
    inner = optim.sgd(lr=0.05, momentum=0.9) if opt == "sgd" else optim.adamw(lr=0.01)
    lr = 0.05 if opt == "sgd" else 0.01
    tx = prox.quant_optimizer(inner, quantizer, prox_j, bits=bits, lr=lr, **kw)
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
        hist.append((np.asarray(params["W"]), np.asarray(params["b"]), float(state.inv_slope)))
    assert len(traces) == 1  # compiled once
    return hist, params, state


#: (inner, prox map, options, float64 tolerance), with the measured worst |Δ| over 100 steps.
#: In PARQ's window the slope 1/ρ (up to ~1e3) amplifies the ulp differences of the gradients
#: (torch's and XLA's reductions differ, and `apply_updates` rounds the params): the gap grows
#: ~1e5-fold over the run, in float32 too, where PARQ runs end on other levels for some weights
#: and are therefore compared in float64 only.
RUNS = [
    ("sgd", "parq", {}, 5e-11),  # measured 1.6e-13
    ("adamw", "parq", {"quant_per_channel": True}, 5e-11),  # measured 1.0e-11
    ("sgd", "parq", {"quant_per_channel": True, "quant_shrink": True}, 5e-11),  # 5.4e-14
    ("adamw", "hard", {"quant_shrink": True}, 1e-14),  # measured 4.4e-16
    ("sgd", "binary_relax", {"quant_per_channel": True}, 1e-14),  # measured 2.2e-16
    ("adamw", "binary_relax", {}, 1e-14),  # measured 7.2e-16
]


def _maps(name):
    return {
        "parq": (tp_optim.ProxPARQ(10, 80), prox.ProxPARQ(10, 80)),
        "hard": (tp_optim.ProxHardQuant(), prox.ProxHardQuant()),
        "binary_relax": (tp_optim.ProxBinaryRelax(10, 80), prox.ProxBinaryRelax(10, 80)),
    }[name]


@pytest.mark.parametrize(("opt", "name", "options", "tol"), RUNS)
def test_training_follows_torchao_float64(opt, name, options, tol):
    kw = {"warmup_steps": 5, "quant_period": 7, **options}
    prox_t, prox_j = _maps(name)
    with precision(np.float64):
        data, want, qopt = _torch_run(
            np.float64, opt, prox_t, tp_quant.UnifQuantizer(), 2, 100, **kw
        )
        got, params, state = _jax_run(data, opt, prox_j, prox.UnifQuantizer(), 2, 100, **kw)
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            np.testing.assert_allclose(g[0], w[0], rtol=0, atol=tol, err_msg=f"W step {i}")
            np.testing.assert_allclose(g[1], w[1], rtol=0, atol=tol, err_msg=f"b step {i}")
        snapped = np.asarray(prox.quantized_params(params, state)["W"])
        levels = np.unique(snapped, axis=None) if not options.get("quant_per_channel") else None
    # after annealing every quantized group is on at most 2^b levels, the ones torchao holds
    rows = snapped if options.get("quant_per_channel") else snapped.reshape(1, -1)
    assert all(len(np.unique(r)) <= 4 for r in rows)
    np.testing.assert_allclose(snapped, want[-1][0], rtol=0, atol=tol)
    np.testing.assert_allclose(snapped, np.asarray(params["W"]), rtol=0, atol=1e-15)
    if levels is not None:
        np.testing.assert_allclose(
            levels,
            qopt.state[qopt.param_groups[0]["params"][0]]["quants"].numpy(),
            rtol=0,
            atol=tol,
        )
    if name == "parq":  # torchao records ρ of the step (kept at its last nonzero value)
        # ρ of the step (0 after the window; torchao keeps its last nonzero value there)
        rho = [g[2] for g in got]
        assert rho[:10] == [1.0] * 10
        assert rho[10:80] == prox_j.rhos()
        assert rho[80:] == [0.0] * 20
        assert qopt.param_groups[0]["inv_slope"] == prox_j.rhos()[-1]


def test_training_follows_torchao_float32():
    """float32: hard quantization and BinaryRelax follow torchao to a few ulps over 100 steps."""
    for opt, name, tol in [("adamw", "hard", 1e-6), ("sgd", "binary_relax", 1e-6)]:
        # measured 3.0e-7 (adamw hard), 1.8e-7 (sgd binary_relax)
        prox_t, prox_j = _maps(name)
        kw = {"warmup_steps": 5, "quant_period": 7, "quant_per_channel": True}
        with precision(np.float32):
            data, want, _ = _torch_run(
                np.float32, opt, prox_t, tp_quant.UnifQuantizer(), 2, 100, **kw
            )
            got, _, _ = _jax_run(data, opt, prox_j, prox.UnifQuantizer(), 2, 100, **kw)
        err = max(np.abs(g[0] - w[0]).max() for w, g in zip(want, got, strict=True))
        assert err <= tol, (opt, name, err)


def test_works_in_optax_wrappers_and_groups():
    """Groups by bits (one leaf 2-bit, one 4-bit per block, one float), inside optax.chain and
    optax.MultiSteps; the quantized leaves end on their levels."""
    params = {
        "a": jnp.asarray(np.random.default_rng(6).standard_normal((4, 8)), jnp.float32),
        "b": jnp.asarray(np.random.default_rng(7).standard_normal((2, 8)), jnp.float32),
        "c": jnp.ones(3),
    }
    groups = [
        {"params": "a", "quant_bits": 2},
        {"params": "b", "quant_bits": 4, "quant_block_size": 4},
        {"params": "c", "quant_bits": 16},
    ]
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        prox.quant_optimizer(
            optim.sgd(lr=0.1),
            prox.UnifQuantizer(),
            prox.ProxHardQuant(),
            groups,
            quant_per_channel=True,
        ),
    )
    tx = optax.MultiSteps(tx, every_k_schedule=2)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    for _ in range(4):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    snapped = prox.quantized_params(params, state)
    assert all(len(np.unique(r)) <= 4 for r in np.asarray(snapped["a"]))
    assert all(len(np.unique(r)) <= 16 for r in np.asarray(snapped["b"]).reshape(-1, 4))
    np.testing.assert_array_equal(np.asarray(snapped["c"]), np.asarray(params["c"]))
    # the unquantized leaf: two SGD steps on all-ones gradients clipped to norm 1 (51 entries)
    g = np.float32(1) / np.sqrt(np.float32(51))
    want = 1 - 2 * np.float32(0.1) * g
    np.testing.assert_allclose(np.asarray(params["c"]), want, rtol=2e-7)  # measured 0


def test_errors():
    with pytest.raises(ValueError, match="start before end"):
        prox.ProxPARQ(5, 5)
    with pytest.raises(ValueError, match="steepness"):
        prox.ProxPARQ(0, 5, steepness=0)
    with pytest.raises(ValueError, match="scale_method"):
        prox.UnifQuantizer(scale_method="median")
    with pytest.raises(ValueError, match="TernaryUnifQuantizer"):
        prox.UnifQuantizer().quantize(jnp.ones(3), 0)
    with pytest.raises(NotImplementedError, match="optimal"):
        prox.LSBQuantizer(optimal=True)
    with pytest.raises(ValueError, match="quant_period"):
        prox.quant_optimizer(
            optim.sgd(lr=0.1), prox.UnifQuantizer(), prox.ProxHardQuant(), 2, quant_period=0
        )
    tx = prox.quant_optimizer(
        optim.sgd(lr=0.1),
        prox.UnifQuantizer(),
        prox.ProxHardQuant(),
        [{"params": "w", "quant_bits": 2, "quant_block_size": 3}],
    )
    with pytest.raises(ValueError, match="quant_block_size=3"):
        tx.init({"w": jnp.ones((2, 4))})
    tx = prox.quant_optimizer(optim.sgd(lr=0.1), prox.UnifQuantizer(), prox.ProxHardQuant(), 2)
    state = tx.init({"w": jnp.ones((2, 4))})
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"w": jnp.ones((2, 4))}, state)


def test_quantized_params_during_warmup_are_the_params():
    tx = prox.quant_optimizer(
        optim.sgd(lr=0.1), prox.UnifQuantizer(), prox.ProxHardQuant(), 2, warmup_steps=2
    )
    params = {"w": jnp.arange(8.0).reshape(2, 4)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.ones((2, 4))}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(
        np.asarray(params["w"]), (np.arange(8.0, dtype=np.float32) - np.float32(0.1)).reshape(2, 4)
    )
    np.testing.assert_array_equal(prox.quantized_params(params, state)["w"], params["w"])
    updates, state = tx.update({"w": jnp.ones((2, 4))}, state, params)
    updates, state = tx.update({"w": jnp.ones((2, 4))}, state, params)  # quantized from here
    assert len(np.unique(prox.quantized_params(params, state)["w"])) <= 4


def test_flax_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    tx = prox.quant_optimizer(
        optim.adamw(lr=0.01), prox.UnifQuantizer(), prox.ProxPARQ(0, 5), bits=2
    )
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.ones((5, 4))

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)

    for _ in range(6):
        step(model, opt)
    kernel = np.asarray(model.kernel[...])
    levels = np.asarray(prox.quantized_params(nnx.state(model, nnx.Param), opt.opt_state)["kernel"])
    assert len(np.unique(levels)) <= 4
    np.testing.assert_allclose(kernel, levels, rtol=0, atol=1e-6)  # apply_updates rounding
