"""torch's eager QAT model flow on Flax NNX: fuse_modules(_qat), prepare_qat, training, convert.

The twin runs (`parity.run.qat_model`) train torch's prepared model and ours on the same digits
batches with SGD, x86 default QAT qconfig, float32, and compare after every step.
"""

from __future__ import annotations

import copy
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_port import quantization as Q

torch = pytest.importorskip("torch")
tq = pytest.importorskip("torch.ao.quantization")
pytest.importorskip("sklearn")
from parity.run import qat_model  # noqa: E402  (needs torch and scikit-learn)

pytestmark = pytest.mark.usefixtures("quiet_quantization", "x86_engine")


@pytest.fixture(scope="module")
def mlp_run():
    """50 SGD steps, each twin on its own (float drift accumulates)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qat_model.train("mlp", 50)


@pytest.fixture(scope="module")
def cnn_run():
    """30 SGD steps of the Conv+BN+ReLU model, ours restarted from torch's state after every
    step; observers disabled before step 16, BatchNorm statistics frozen before step 22."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toggles = {16: "disable_observer", 22: "freeze_bn_stats"}
        return qat_model.train("cnn", 30, teacher_forced=True, toggles=toggles)


_apply = nnx.jit(lambda model, x: model(x))


# ------------------------------------------------------------------------------- the MLP run
def test_qat_mlp_follows_torch(mlp_run):
    """Weights and biases within float32 GEMM rounding of torch's after every step; zero points
    equal, scales within 2 ulps. The scales are not all bit-equal: XLA's float32 GEMM sums in
    another order than torch's, so an observed activation range (and a weight after the
    updates) can differ in its last bit, and with it the scale."""
    records = mlp_run["records"]
    assert len(records) == 50
    assert max(r["param"] for r in records) <= 1e-7  # measured 3.0e-8
    assert max(r["zero_point"] for r in records) == 0
    assert max(r["scale_ulps"] for r in records) <= 2  # measured 2 (1 from step 0)


def test_qat_mlp_convert_matches_torch(mlp_run):
    """Each twin converted after its own training: the int8 outputs are equal on all 1797 rows;
    the logits differ only through the output scale (1 ulp apart), so not bit for bit."""
    theirs, ours = qat_model.converted_logits(mlp_run["torch"], mlp_run["nnx"], "mlp")
    converted = Q.convert(mlp_run["nnx"])
    scale, zp = converted.fc2.scale[...][0], converted.fc2.zero_point[...][0]
    want_scale = mlp_run["torch"].fc2.activation_post_process.calculate_qparams()[0]
    np.testing.assert_array_equal(
        qat_model.int8_outputs(ours, scale, zp),
        qat_model.int8_outputs(theirs, want_scale.item(), zp),
    )
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.max(np.abs(ours - theirs)) <= 1e-6  # measured 6.0e-8


def test_qat_mlp_convert_of_torchs_state_bitwise(mlp_run):
    """torch's trained parameters and fake-quantizer buffers loaded into ours: `convert` gives
    torch's converted logits bit for bit on all 1797 rows (QuantizedLinearReLU included)."""
    ours = nnx.clone(mlp_run["nnx"])
    qat_model.load_torch_state(ours, mlp_run["torch"], "mlp")
    theirs, got = qat_model.converted_logits(mlp_run["torch"], ours, "mlp")
    np.testing.assert_array_equal(got, theirs)
    converted = Q.convert(ours)
    assert type(converted.fc1).__name__ == "QuantizedLinear" and converted.fc1.relu
    assert isinstance(converted.relu1, Q.Identity)


# ------------------------------------------------------------------------------- the CNN run
def test_qat_cnn_steps_follow_torch(cnn_run):
    """Every step from torch's state (conv + BatchNorm folded into the fake-quantized weight,
    BN in training mode, then frozen): parameters and BN statistics close to torch's, qparams
    within 1 ulp. A step can move a fake-quantized value across a rounding boundary that
    torch's does not cross (its float32 conv differs in the last bit): then one gradient
    differs by about a quantum times the learning rate (measured once, 2.9e-5)."""
    params = np.array([r["param"] for r in cnn_run["records"]])
    assert np.max(params) <= 5e-5  # measured 2.9e-5 (step 22)
    assert np.sum(params > 1.2e-7) <= 3  # measured 2 of 50 steps; the rest <= 1.2e-7
    assert max(r["zero_point"] for r in cnn_run["records"]) == 0
    assert max(r["scale_ulps"] for r in cnn_run["records"]) <= 1  # measured 1


def test_qat_cnn_convert_bitwise(cnn_run):
    """ConvBnReLU2d → QuantizedConv (BatchNorm folded as torch's `fuse_conv_bn_weights`,
    fused ReLU): logits equal torch's converted model on all 1797 rows."""
    theirs, ours = qat_model.converted_logits(cnn_run["torch"], cnn_run["nnx"], "cnn")
    np.testing.assert_array_equal(ours, theirs)


# --------------------------------------------------------------------------------- toggles
def test_toggles_match_their_meaning():
    """disable_observer freezes qparams and ranges; disable_fake_quant gives the float model's
    output; freeze_bn_stats keeps the running statistics (and uses them); enabling undoes."""
    _, model = qat_model.twins("cnn")
    x = jnp.asarray(qat_model.digits()[0][:32]).reshape(-1, 8, 8, 1)
    _apply(model, x)
    Q.disable_observer(model)
    states = jax_leaves(nnx.state(model, Q.ObserverState))
    _apply(model, x * 2.0)
    for before, after in zip(states, jax_leaves(nnx.state(model, Q.ObserverState)), strict=True):
        np.testing.assert_array_equal(before, after)
    Q.disable_fake_quant(model)
    Q.freeze_bn_stats(model)
    layer = model.conv.module
    stats = np.asarray(layer.bn.var[...])
    float_model = nnx.Sequential(
        layer.conv, layer.bn, nnx.relu, Q.Flatten(), model.fc.module
    )  # the same variables, float layers
    float_model.layers[1].use_running_average = True
    want = np.asarray(nnx.jit(lambda m, v: m(v))(float_model, x))
    float_model.layers[1].use_running_average = False  # back to training mode
    got = np.asarray(_apply(model, x))
    assert np.max(np.abs(got - want)) <= 2e-7  # measured 6.0e-8
    np.testing.assert_array_equal(layer.bn.var[...], stats)
    Q.update_bn_stats(model)
    Q.enable_observer(model)
    Q.enable_fake_quant(model)
    _apply(model, x)
    assert not np.array_equal(layer.bn.var[...], stats)
    assert int(model.quant.activation_post_process.get_value().observer_enabled[0]) == 1


def jax_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


# --------------------------------------------------------------------------------- fusion
def _bn_stats(bn, rng):
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))
        bn.bias.copy_(torch.from_numpy(rng.normal(size=n).astype(np.float32)))
        bn.running_mean.copy_(torch.from_numpy(rng.normal(size=n).astype(np.float32)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3.0, n).astype(np.float32)))


def _nnx_bn(bn):
    out = nnx.BatchNorm(bn.num_features, epsilon=bn.eps, rngs=nnx.Rngs(0))
    out.scale.set_value(jnp.asarray(bn.weight.detach().numpy()))
    out.bias.set_value(jnp.asarray(bn.bias.detach().numpy()))
    out.mean.set_value(jnp.asarray(bn.running_mean.numpy()))
    out.var.set_value(jnp.asarray(bn.running_var.numpy()))
    return out


def test_fuse_modules_eval_folds_batchnorm_bitwise():
    """Conv+BN+ReLU, Conv+BN (conv without bias) and Linear+BN in eval mode: the folded kernels
    and biases equal torch's `fuse_modules` results bit for bit (64 channels each)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    t = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3),
        torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 1, bias=False),
        torch.nn.BatchNorm2d(64),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 64),
        torch.nn.BatchNorm1d(64),
    ).eval()
    for i in (1, 4, 7):
        _bn_stats(t[i], rng)
    fused_t = tq.fuse_modules(t, [["0", "1", "2"], ["3", "4"], ["6", "7"]])
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Conv(3, 64, (3, 3), rngs=rngs),
        _nnx_bn(t[1]),
        nnx.relu,
        nnx.Conv(64, 64, (1, 1), use_bias=False, rngs=rngs),
        _nnx_bn(t[4]),
        Q.Flatten(),
        nnx.Linear(64, 64, rngs=rngs),
        _nnx_bn(t[7]),
    )
    model.layers[0].kernel.set_value(
        jnp.asarray(t[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    )
    model.layers[0].bias.set_value(jnp.asarray(t[0].bias.detach().numpy()))
    model.layers[3].kernel.set_value(
        jnp.asarray(t[3].weight.detach().numpy().transpose(2, 3, 1, 0))
    )
    model.layers[6].kernel.set_value(jnp.asarray(t[6].weight.detach().numpy().T))
    model.layers[6].bias.set_value(jnp.asarray(t[6].bias.detach().numpy()))
    model.eval()
    fused = Q.fuse_modules(model, [["0", "1", "2"], ["3", "4"], ["6", "7"]])
    assert [type(m).__name__ for m in fused.layers] == [
        "ConvReLU2d", "Identity", "Identity", "Conv", "Identity", "Flatten", "Linear", "Identity"
    ]  # fmt: skip
    assert isinstance(model.layers[1], nnx.BatchNorm)  # a copy, as torch's default
    pairs = (
        (fused.layers[0].conv, fused_t[0][0], (2, 3, 1, 0)),
        (fused.layers[3], fused_t[3], (2, 3, 1, 0)),
        (fused.layers[6], fused_t[6], (1, 0)),
    )
    for ours, theirs, perm in pairs:
        want = theirs.weight.detach().numpy().transpose(perm)
        np.testing.assert_array_equal(np.asarray(ours.kernel[...]), want)
        np.testing.assert_array_equal(np.asarray(ours.bias[...]), theirs.bias.detach().numpy())


def test_fuse_modules_errors():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=rngs), nnx.BatchNorm(4, rngs=rngs))
    with pytest.raises(AssertionError, match="Fusion only for eval"):
        Q.fuse_modules(model, ["0", "1"])  # BatchNorm in training mode, as torch
    with pytest.raises(NotImplementedError, match="Cannot fuse modules"):
        Q.fuse_modules(model, ["1", "0"])
    with pytest.raises(AttributeError):
        Q.fuse_modules(nnx.Module(), ["conv", "bn"])
    wrong = nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=rngs), nnx.BatchNorm(5, rngs=rngs))
    with pytest.raises(AssertionError, match="must match num_features"):
        Q.fuse_modules_qat(wrong, ["0", "1"])
    linear_bn = nnx.Sequential(nnx.Linear(2, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs))
    with pytest.raises(NotImplementedError, match="LinearBn1d"):
        Q.fuse_modules_qat(linear_bn, ["0", "1"])
    with pytest.raises(AssertionError, match="training mode"):
        Q.prepare_qat(nnx.Sequential(nnx.BatchNorm(4, use_running_average=True, rngs=rngs)))


def test_ptq_with_fused_linear_relu_bitwise():
    """Post-training flow with `fuse_modules` (Linear+ReLU → QuantizedLinear with fused ReLU,
    torch's QuantizedLinearReLU): dyadic weights, so the float calibration forward is exact in
    any summation order; logits equal torch's on all 1797 digits."""
    x = qat_model.digits()[0]
    torch.manual_seed(1)
    t = torch.nn.Sequential(
        tq.QuantStub(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10),
        tq.DeQuantStub(),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.round(p * 32) / 32)
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        Q.QuantStub(), nnx.Linear(64, 32, rngs=rngs), nnx.relu, nnx.Linear(32, 10, rngs=rngs),
        Q.DeQuantStub(),
    )  # fmt: skip
    for i in (1, 3):
        model.layers[i].kernel.set_value(jnp.asarray(t[i].weight.detach().numpy().T))
        model.layers[i].bias.set_value(jnp.asarray(t[i].bias.detach().numpy()))
    fused_t = copy.deepcopy(t)
    fused_t = tq.fuse_modules(fused_t, [["1", "2"]])
    fused_t.qconfig = tq.default_qconfig
    prepared_t = tq.prepare(fused_t)
    prepared_t(torch.from_numpy(x))
    theirs = tq.convert(prepared_t)(torch.from_numpy(x)).detach().numpy()
    prepared = Q.prepare(Q.fuse_modules(model, [["1", "2"]]), Q.default_qconfig)
    _apply(prepared, jnp.asarray(x))
    converted = Q.convert(prepared)
    assert converted.layers[1].relu and isinstance(converted.layers[2], Q.Identity)
    np.testing.assert_array_equal(np.asarray(_apply(converted, jnp.asarray(x))), theirs)
