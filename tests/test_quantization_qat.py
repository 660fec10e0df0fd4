"""FakeQuantize modules (functional), QConfigs and QAT's optax weight transform against torch."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_port import optim
from jaxopt_port import quantization as Q

torch = pytest.importorskip("torch")
tq = pytest.importorskip("torch.ao.quantization")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's reduce_range deprecation
        yield


def _qat_state(opt_state):
    (state,) = [s for s in opt_state if isinstance(s, Q.FakeQuantizeWeightsState)]
    return state


FAKE_QUANTS = [
    "default_fake_quant",
    "default_weight_fake_quant",
    "default_per_channel_weight_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
]


@pytest.mark.parametrize("name", FAKE_QUANTS)
def test_fake_quantize_sequence_bitwise(name):
    """Outputs, gradients, scale and zero point after each batch, with the observer frozen at
    step 4 and fake quantization off at step 6 (torch's toggles)."""
    rng = np.random.default_rng(len(name))
    theirs = getattr(tq, name)()
    ours = getattr(Q, name)()
    shape = (5, 7)
    state = ours.init(num_channels=shape[0] if ours.is_per_channel else None)

    def step(state, x, g):
        (y, new_state), vjp = jax.vjp(lambda x: ours(state, x), x, has_aux=False)
        return y, new_state, vjp((g, jax.tree_util.tree_map(jnp.zeros_like, new_state)))[0]

    step = jax.jit(step)
    for t in range(8):
        x = (rng.standard_normal(shape) * (1 + t) + 0.3 * t).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        if t == 4:
            theirs.disable_observer()
            state = ours.disable_observer(state)
        if t == 6:
            theirs.disable_fake_quant()
            state = ours.disable_fake_quant(state)
        xt = torch.from_numpy(x).requires_grad_()
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        y, state, dx = step(state, x, g)
        np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy())
        np.testing.assert_array_equal(np.asarray(dx), xt.grad.numpy())
        np.testing.assert_array_equal(np.asarray(state.scale), theirs.scale.numpy())
        np.testing.assert_array_equal(np.asarray(state.zero_point), theirs.zero_point.numpy())
    # convert() recomputes with the observer's formula; for the fused kind that differs from the
    # fbgemm qparams used in training.
    for got, want in zip(ours.calculate_qparams(state), theirs.calculate_qparams(), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want.numpy())


def test_qconfigs_match_torch():
    def describe(obj):
        obs = getattr(obj, "activation_post_process", obj)
        return (
            type(obj).__name__,
            type(obs).__name__,
            str(obs.dtype).removeprefix("torch."),
            str(obs.qscheme).removeprefix("torch."),
            obs.quant_min,
            obs.quant_max,
            getattr(obs, "averaging_constant", None),
            getattr(obs, "ch_axis", None),
        )

    pairs = [
        (Q.default_qconfig, tq.default_qconfig),
        (Q.default_qat_qconfig, tq.default_qat_qconfig),
    ]
    for backend in ("x86", "fbgemm", "qnnpack", "onednn"):
        for version in (0, 1):
            pairs.append(
                (
                    Q.get_default_qat_qconfig(backend, version),
                    tq.get_default_qat_qconfig(backend, version),
                )
            )
    for ours, theirs in pairs:
        assert describe(ours.activation()) == describe(theirs.activation())
        assert describe(ours.weight()) == describe(theirs.weight())
    with pytest.raises(AssertionError, match="not supported"):
        Q.get_default_qat_qconfig("cuda")
    with pytest.raises(AssertionError, match="not supported"):
        Q.get_default_qconfig("x86", version=1)


def test_qat_optax_transform_follows_torch():
    """50 SGD steps of a linear model whose weight is fake-quantized per channel (torch's x86
    QAT weight config) by the optax transform vs torch's FakeQuantize in the forward."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.standard_normal((64, 4)).astype(np.float32)
    w0 = (rng.standard_normal((4, 8)) * 0.5).astype(np.float32)
    b0 = np.zeros(4, np.float32)

    weight_fq = tq.default_per_channel_weight_fake_quant()
    w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    opt = torch.optim.SGD([w, b], lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        out = torch.from_numpy(x) @ weight_fq(w).T + b
        ((out - torch.from_numpy(y)) ** 2).mean().backward()
        opt.step()

    config = Q.default_per_channel_weight_fake_quant
    tx = optax.chain(optim.sgd(lr=0.1), Q.fake_quantize_weights(config))
    params = {"b": jnp.asarray(b0), "w": jnp.asarray(w0)}
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state):
        def loss(params):
            q = Q.fake_quantized_params(params, opt_state, config)
            return jnp.mean((x @ q["w"].T + q["b"] - y) ** 2)

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(50):
        params, opt_state = train_step(params, opt_state)
    w_diff = np.abs(np.asarray(params["w"]) - w.detach().numpy()).max()
    b_diff = np.abs(np.asarray(params["b"]) - b.detach().numpy()).max()
    # float32 matmul rounding differs between XLA and torch; measured 4.5e-8 (w), 7.5e-9 (b).
    assert w_diff <= 2e-7 and b_diff <= 2e-7, (w_diff, b_diff)
    # The qparams the next forward uses: observed from the final weights.
    weight_fq(w)
    state = _qat_state(opt_state).fake_quant["w"]
    np.testing.assert_array_equal(
        np.asarray(state.scale), weight_fq.scale.numpy()
    )  # measured equal
    np.testing.assert_array_equal(np.asarray(state.zero_point), weight_fq.zero_point.numpy())


def test_per_channel_fake_quantize_without_channel_count_like_torch():
    """init() without a channel count: the first observation sizes the qparams (torch resizes)."""
    w = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    ours = Q.default_per_channel_weight_fake_quant()
    y, state = ours(ours.init(), w)
    theirs = tq.default_per_channel_weight_fake_quant()
    np.testing.assert_array_equal(np.asarray(y), theirs(torch.from_numpy(w)).numpy())
    np.testing.assert_array_equal(np.asarray(state.scale), theirs.scale.numpy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"observer": "MovingAverageMinMaxObserver", "use_grad_scaling": True},
        {
            "observer": "MovingAveragePerChannelMinMaxObserver",
            "quant_min": -128,
            "quant_max": 127,
            "dtype": "qint8",
            "qscheme": "per_channel_symmetric",
            "channel_len": 5,
        },
    ],
    ids=["per_tensor", "per_channel"],
)
def test_learnable_fake_quantize_follows_torch(kwargs):
    """Observer phase (qparams copied from the observer), then learning: outputs and input
    gradients bitwise, scale / zero-point gradients to float32 summation order, 6 SGD steps."""
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

    obs_name = kwargs["observer"]
    rest = {k: v for k, v in kwargs.items() if k != "observer"}
    t_rest = {k: getattr(torch, v) if k in ("dtype", "qscheme") else v for k, v in rest.items()}
    theirs = _LearnableFakeQuantize(getattr(tq, obs_name), **t_rest)
    ours = Q.LearnableFakeQuantize(getattr(Q, obs_name), **rest)
    qparams, state = ours.init()
    rng = np.random.default_rng(4)
    lr = np.float32(0.01)

    def run(qparams, state, x, g):
        (y, used, new_state), vjp = jax.vjp(
            lambda x, qp: ours(qp, state, x), x, qparams, has_aux=False
        )
        zeros = jax.tree_util.tree_map(jnp.zeros_like, (used, new_state))
        dx, dq = vjp((g, *zeros))
        return y, used, new_state, dx, dq

    run = jax.jit(run)
    for t in range(8):
        if t == 2:
            theirs.enable_param_learning()
            state = ours.enable_param_learning(state)
        x = (rng.standard_normal((5, 6)) * (1 + 0.2 * t)).astype(np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)
        theirs.scale.grad = theirs.zero_point.grad = None  # an optimizer loop's zero_grad
        xt = torch.from_numpy(x).requires_grad_()
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        y, used, state, dx, dq = run(qparams, state, x, g)
        np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy())
        np.testing.assert_array_equal(np.asarray(dx), xt.grad.numpy())
        np.testing.assert_array_equal(np.asarray(used["scale"]), theirs.scale.detach().numpy())
        np.testing.assert_array_equal(
            np.asarray(used["zero_point"]), theirs.zero_point.detach().numpy()
        )
        qparams = used  # torch copies the observer's qparams into its parameters
        if t >= 2:  # learning: compare the parameter gradients, then take an SGD step in both
            # Both float32 sums against the exact sum of the element-wise terms (bit-equal, see
            # test_quantization_numerics), relative to the sum of their magnitudes: measured 5.2e-8.
            terms = _learnable_terms(x, g, used, ours)
            for key, param in (("scale", theirs.scale), ("zero_point", theirs.zero_point)):
                exact, size = terms[key]
                for got in (np.asarray(dq[key]), param.grad.numpy()):
                    assert np.all(np.abs(got - exact) <= 1e-6 * size), (key, got, exact)
                with torch.no_grad():
                    param -= torch.from_numpy(lr * param.grad.numpy())
            # continue from torch's parameters so each step compares one gradient
            qparams = {
                "scale": jnp.asarray(theirs.scale.detach().numpy()),
                "zero_point": jnp.asarray(theirs.zero_point.detach().numpy()),
            }


def _learnable_terms(x, g, used, lfq):
    """Exact (float64) sums and magnitude sums of the learnable op's per-element gradients."""
    from parity.reference import quantization as ref

    scale = np.asarray(used["scale"])
    zp = np.asarray(used["zero_point"])
    per_channel = lfq.qscheme.startswith("per_channel")
    if per_channel:  # channels on axis 0; round half to even
        scale, zp, axes = (
            scale[:, None],
            np.clip(np.rint(zp), lfq.quant_min, lfq.quant_max)[:, None],
            1,
        )
    else:  # the per-tensor backward's trunc(z + 0.5)
        zp = np.trunc(np.clip(zp + np.float32(0.5), lfq.quant_min, lfq.quant_max))
        axes = None
    gamma = 1.0 / (x.size * lfq.quant_max) ** 0.5 if lfq.use_grad_scaling else 1.0
    _, ds, dz = ref.learnable_fake_quantize_grads(
        x, g, scale, zp, lfq.quant_min, lfq.quant_max, gamma
    )
    return {
        key: (
            np.sum(v, axis=axes, dtype=np.float64),
            np.sum(np.abs(v), axis=axes, dtype=np.float64),
        )
        for key, v in (("scale", ds), ("zero_point", dz))
    }
