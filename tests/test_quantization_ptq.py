"""Post-training int8 quantization (dynamic and static) against torch's x86 kernels, bit for bit."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_port import quantization as Q
from parity.reference import quantization as ref

torch = pytest.importorskip("torch")
tq = pytest.importorskip("torch.ao.quantization")
pytest.importorskip("sklearn.datasets")

from parity.specs import ptq_models  # noqa: E402  (imports torch)

pytestmark = pytest.mark.usefixtures("quiet_quantization", "x86_engine")


@pytest.fixture(scope="module")
def digits():
    return ptq_models.digits()


@pytest.fixture(scope="module")
def twins():
    """The digits MLP in torch and NNX (`parity.specs.ptq_models`), same float weights."""
    return ptq_models.mlp_twins()


@pytest.fixture(scope="module")
def dyadic_twins(digits):
    """The MLP with weights and biases rounded to multiples of 2^-5: the float forward (digits
    are multiples of 1/16) is exact in float32 in any summation order, so calibration sees the
    same activations in torch and XLA, whose float GEMMs otherwise differ in the last bits
    (which moves calibrated ranges by an ulp)."""
    torch_model, model = ptq_models.mlp_twins(dyadic=True)
    float_model = nnx.Sequential(*list(model.layers)[1:-1])
    np.testing.assert_array_equal(  # the premise: float forwards agree exactly
        np.asarray(_apply(float_model, digits)),
        torch_model[1:-1](torch.from_numpy(digits)).detach().numpy(),
    )
    return torch_model, model


_apply = nnx.jit(lambda model, x: model(x))


def _assert_outputs(model, x, want, eager=False):
    """Under `nnx.jit` (and eagerly: op by op, so nothing is fused or contracted)."""
    np.testing.assert_array_equal(np.asarray(_apply(model, x)), want)
    if eager:
        np.testing.assert_array_equal(np.asarray(model(x)), want)


def _linears(torch_model):
    return [m for m in torch_model if isinstance(m, torch.nn.Linear)]


# ------------------------------------------------------------------------------------ dynamic
def test_quantize_dynamic_digits_bitwise(twins, digits):
    """All 1797 digits rows through torch's dynamic int8 MLP and ours: equal logits; the int8
    weights and scales equal torch's packed weights; the NumPy reference gives the same."""
    torch_model, model = twins
    theirs = tq.quantize_dynamic(torch_model, {torch.nn.Linear}, dtype=torch.qint8)
    want = theirs(torch.from_numpy(digits)).detach().numpy()
    ours = Q.quantize_dynamic(model)
    _assert_outputs(ours, digits, want, eager=True)
    assert isinstance(model.layers[1], nnx.Linear)  # not in place by default, as torch
    x = digits
    for i, (layer, float_layer) in enumerate(zip((1, 3, 5), _linears(torch_model), strict=True)):
        qw = theirs[layer].weight()
        got = ours.layers[layer].weight.get_value()
        np.testing.assert_array_equal(np.asarray(got.values).T, qw.int_repr().numpy())
        np.testing.assert_array_equal(np.asarray(got.scale), np.float32(qw.q_scale()))
        q_w, s_w = ref.quantize_weight_symmetric(float_layer.weight.detach().numpy())
        np.testing.assert_array_equal(q_w, qw.int_repr().numpy())
        x = ref.linear_dynamic(x, q_w, s_w, float_layer.bias.detach().numpy())
        x = np.maximum(x, np.float32(0)) if i < 2 else x
    np.testing.assert_array_equal(x, want)


def test_quantize_dynamic_per_channel_and_selection(twins, digits):
    torch_model, model = twins
    per_channel = Q.QConfig(activation=None, weight=Q.default_per_channel_weight_observer)
    theirs = tq.quantize_dynamic(torch_model, {torch.nn.Linear: tq.per_channel_dynamic_qconfig})
    ours = Q.quantize_dynamic(model, {nnx.Linear: per_channel})
    want = theirs(torch.from_numpy(digits)).detach().numpy()
    _assert_outputs(ours, digits, want)
    assert np.asarray(ours.layers[3].weight.get_value().scale).shape == (64,)
    # layers selected by torch's dotted names (nnx.Sequential's `layers` is not part of them)
    ours = Q.quantize_dynamic(model, {"1", "5"})
    assert [type(m).__name__ for m in ours.layers][1::2] == [
        "DynamicQuantizedLinear",
        "Linear",
        "DynamicQuantizedLinear",
    ]
    np.testing.assert_array_equal(ours.layers[3].kernel[...], model.layers[3].kernel[...])


def _packed(weight, bias):
    qw = Q.quantize_weight(jnp.asarray(weight.T))
    tw = torch.quantize_per_tensor(
        torch.from_numpy(weight), float(qw.scale[0]), 0, torch.qint8
    )  # same qparams as torch's default weight observer (checked above on digits)
    tb = None if bias is None else torch.from_numpy(bias)
    return qw, torch.ops.quantized.linear_prepack(tw, tb)


CASES = [
    # (input shape, out features, input offset, input scale, bias, reduce_range)
    ((7, 5), 3, 0.0, 1.0, True, True),
    ((7, 5), 3, 0.0, 1.0, True, False),
    ((2, 6, 9), 4, 3.0, 0.5, True, True),  # all positive, 3-D
    ((6, 9), 4, -5.0, 2.0, False, True),  # all negative, no bias
    ((4, 8), 2, 0.0, 1e-6, True, True),  # a tiny range: fbgemm's 6.1e-5 floor
]


@pytest.mark.parametrize("shape, out, offset, spread, with_bias, reduce_range", CASES)
def test_linear_dynamic_matches_torch(shape, out, offset, spread, with_bias, reduce_range):
    rng = np.random.default_rng(sum(shape) + out)
    x = (offset + spread * rng.standard_normal(shape)).astype(np.float32)
    w = rng.standard_normal((out, shape[-1])).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32) if with_bias else None
    qw, packed = _packed(w, b)
    want = torch.ops.quantized.linear_dynamic(torch.from_numpy(x), packed, reduce_range).numpy()
    f = jax.jit(Q.linear_dynamic, static_argnames="reduce_range")  # eager: the digits tests
    np.testing.assert_array_equal(np.asarray(f(x, qw, b, reduce_range=reduce_range)), want)
    bias = np.zeros(out, np.float32) if b is None else b
    got = ref.linear_dynamic(x, np.asarray(qw.values).T, qw.scale, bias, reduce_range)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------- static
@pytest.mark.parametrize(
    "config, n_batches",
    [("x86", 1), ("default_qconfig", 3)],
    ids=["x86-histogram-per-channel", "minmax-per-tensor-3-batches"],
)
def test_static_digits_bitwise(dyadic_twins, digits, config, n_batches):
    """prepare → calibrate → convert: logits on all 1797 rows, every layer's qparams and int8
    weights equal torch's; the NumPy reference kernels reproduce torch's converted model."""
    torch_model, model = dyadic_twins
    if config == "x86":
        theirs_qconfig, qconfig = tq.get_default_qconfig("x86"), Q.get_default_qconfig("x86")
    else:
        theirs_qconfig, qconfig = tq.default_qconfig, Q.default_qconfig
    t_model = copy.deepcopy(torch_model)
    t_model.qconfig = theirs_qconfig
    t_prepared = tq.prepare(t_model)
    prepared = Q.prepare(model, qconfig)
    for batch in np.split(digits, n_batches):
        t_prepared(torch.from_numpy(batch))
        _apply(prepared, batch)
    theirs = tq.convert(t_prepared)
    ours = Q.convert(prepared)
    want = theirs(torch.from_numpy(digits)).numpy()
    _assert_outputs(ours, digits, want, eager=n_batches == 1)
    s, z = float(theirs[0].scale), int(theirs[0].zero_point)
    q = ref.quantize_per_tensor(digits, s, z, "quint8").astype(np.int64)
    for layer in (1, 3, 5):
        t, o = theirs[layer], ours.layers[layer]
        assert (float(o.scale[...][0]), int(o.zero_point[...][0])) == (t.scale, t.zero_point)
        qw = t.weight()
        w = o.weight.get_value()
        np.testing.assert_array_equal(np.asarray(w.values).T, qw.int_repr().numpy())
        per_channel = qw.qscheme() == torch.per_channel_affine
        scales = qw.q_per_channel_scales().numpy() if per_channel else [qw.q_scale()]
        np.testing.assert_array_equal(np.asarray(w.scale), np.float32(scales))
        q = ref.linear_static(
            q,
            s,
            z,
            qw.int_repr().numpy(),
            w.scale,
            t.bias().detach().numpy(),
            t.scale,
            t.zero_point,
        )
        s, z = t.scale, t.zero_point
        q = np.maximum(q, z) if layer < 5 else q
    np.testing.assert_array_equal((q - z).astype(np.float32) * np.float32(s), want)


# ----------------------------------------------------------------------- torch state_dict
def test_state_dict_to_and_from_torch(twins, digits):
    """Our int8 model loads into torch's quantized twin and torch's into ours; both then compute
    the other's logits bit for bit (dynamic and static models)."""
    torch_model, model = twins
    x = torch.from_numpy(digits)
    # dynamic: our weights into torch's model built from other float weights
    ours = Q.quantize_dynamic(model)
    theirs = tq.quantize_dynamic(ptq_models.mlp_twins(seed=1)[0], {torch.nn.Linear})
    theirs.load_state_dict(Q.quantized_weights_to_torch(ours))
    np.testing.assert_array_equal(theirs(x).detach().numpy(), np.asarray(ours(digits)))
    # static: torch's calibrated int8 model into ours built from other float weights
    t_model = copy.deepcopy(torch_model)
    t_model.qconfig = tq.get_default_qconfig("x86")
    t_prepared = tq.prepare(t_model)
    t_prepared(x[:300])
    theirs = tq.convert(t_prepared)
    ours = Q.convert(Q.prepare(ptq_models.mlp_twins(seed=1)[1]))  # uncalibrated: qparams 1, 0
    Q.quantized_weights_from_torch(ours, theirs.state_dict())
    np.testing.assert_array_equal(np.asarray(_apply(ours, digits)), theirs(x).numpy())
    back = tq.convert(tq.prepare(t_model))  # fresh torch twin, other qparams
    back.load_state_dict(Q.quantized_weights_to_torch(ours))
    np.testing.assert_array_equal(back(x).numpy(), theirs(x).numpy())


# ------------------------------------------------------------------------------------ errors
def test_errors(twins):
    _, model = twins
    with pytest.raises(NotImplementedError, match="float16"):
        Q.quantize_dynamic(model, dtype="float16")
    with pytest.raises(ValueError, match="Don't know how to quantize with default settings"):
        Q.quantize_dynamic(model, dtype="qint32")
    with pytest.raises(NotImplementedError, match="EmbeddingBag"):
        Q.quantize_dynamic(model, dtype="quint8")
    with pytest.raises(NotImplementedError, match="Sequential"):
        Q.quantize_dynamic(model, {nnx.Sequential})
    with pytest.raises(ValueError, match="ch_axis=1"):
        Q.quantize_weight(
            jnp.ones((3, 2)),
            Q.PerChannelMinMaxObserver.with_args(
                ch_axis=1, dtype="qint8", qscheme="per_channel_symmetric"
            ),
        )
    w = Q.QuantizedArray(jnp.ones((1, 1, 1, 1), jnp.int8), jnp.ones(1), jnp.ones(1, jnp.int32))
    x = Q.QuantizedArray(jnp.ones((1, 2, 2, 1), jnp.uint8), jnp.ones(1), jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match="symmetric weights"):
        Q.conv2d(x, w, None, 1.0, 0)
    with pytest.raises(ValueError, match=r"missing 1\.scale"):
        Q.quantized_weights_from_torch(Q.quantize_dynamic(model), {})


def test_static_cnn_digits_bitwise(digits):
    """A small CNN (padding, stride 2, per-channel weights, a Linear head after torch's
    channels-first flatten, x86 qconfig) on all 1797 images: torch's converted model and ours
    agree bit for bit (dyadic weights, see `dyadic_twins`), also after exchanging state dicts."""
    torch_model, model = ptq_models.cnn_twins()
    x, x_t = ptq_models.images(digits)
    x_t = torch.from_numpy(x_t)
    np.testing.assert_array_equal(  # the premise: float forwards agree exactly
        np.asarray(_apply(model, x)), torch_model(x_t).detach().numpy()
    )
    torch_model.qconfig = tq.get_default_qconfig("x86")
    t_prepared = tq.prepare(torch_model)
    t_prepared(x_t)
    prepared = Q.prepare(model)
    _apply(prepared, x)
    theirs = tq.convert(t_prepared)
    want = theirs(x_t).numpy()
    ours = Q.convert(prepared)
    _assert_outputs(ours, x, want)  # jit only (eager: the MLP tests)
    # state dicts both ways, into twins calibrated on other images (other qparams)
    other_t = tq.prepare(copy.deepcopy(torch_model))
    other_t(x_t[:50])
    other_t = tq.convert(other_t)
    other_t.load_state_dict(Q.quantized_weights_to_torch(ours))
    np.testing.assert_array_equal(other_t(x_t).numpy(), want)
    other = Q.convert(Q.prepare(model))  # never calibrated: torch's default qparams 1, 0
    Q.quantized_weights_from_torch(other, theirs.state_dict())
    np.testing.assert_array_equal(np.asarray(_apply(other, x)), want)


def test_requantization_random_qparams():
    """Random int8 inputs, weights and qparams (1.7·10^5 outputs): `linear` (fbgemm) and `conv2d`
    (oneDNN) equal torch's kernels and the NumPy reference. (On 3·10^6 such outputs, fbgemm's
    formula applied to the convolution differed from torch on 5, oneDNN's steps with $1/s_y$
    instead of the division on 1: measured while choosing the formula.)"""
    rng = np.random.default_rng(0)
    linear = jax.jit(Q.linear)
    conv = jax.jit(lambda x, w, b, s, z: Q.conv2d(x, w, b, s, z, padding=((1, 1), (1, 1))))
    for _ in range(4):
        s_x, s_y = np.float32(rng.uniform(0.001, 0.1)), np.float32(rng.uniform(0.001, 0.05))
        z_x, z_y = (int(v) for v in rng.integers(0, 128, 2))
        s_w = rng.uniform(0.001, 0.02, 16).astype(np.float32)
        b = (rng.standard_normal(16) * 0.3).astype(np.float32)
        t_sw = torch.from_numpy(s_w.astype(np.float64))
        zeros = torch.zeros(16, dtype=torch.int64)
        qx = rng.integers(0, 128, (256, 32)).astype(np.uint8)
        qw = rng.integers(-128, 128, (16, 32)).astype(np.int8)
        tw = torch._make_per_channel_quantized_tensor(torch.from_numpy(qw), t_sw, zeros, 0)
        tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(qx), float(s_x), z_x)
        packed = torch.ops.quantized.linear_prepack(tw, torch.from_numpy(b))
        want = torch.ops.quantized.linear(tx, packed, float(s_y), z_y).int_repr().numpy()
        x = Q.QuantizedArray(jnp.asarray(qx), jnp.array([s_x]), jnp.array([z_x]))
        w = Q.QuantizedArray(jnp.asarray(qw.T), jnp.asarray(s_w), jnp.zeros(16, jnp.int32))
        np.testing.assert_array_equal(np.asarray(linear(x, w, b, s_y, z_y).values), want)
        got = ref.linear_static(qx, s_x, z_x, qw, s_w, b, s_y, z_y)
        np.testing.assert_array_equal(got, want)

        qx = rng.integers(0, 128, (24, 4, 10, 10)).astype(np.uint8)
        qw = rng.integers(-128, 128, (16, 4, 3, 3)).astype(np.int8)
        tw = torch._make_per_channel_quantized_tensor(torch.from_numpy(qw), t_sw, zeros, 0)
        tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(qx), float(s_x), z_x)
        packed = torch.ops.quantized.conv2d_prepack(
            tw, torch.from_numpy(b), [1, 1], [1, 1], [1, 1], 1
        )
        want = torch.ops.quantized.conv2d(tx, packed, float(s_y), z_y).int_repr().numpy()
        want = want.transpose(0, 2, 3, 1)
        x = Q.QuantizedArray(
            jnp.asarray(qx.transpose(0, 2, 3, 1)), jnp.array([s_x]), jnp.array([z_x])
        )
        w = Q.QuantizedArray(
            jnp.asarray(qw.transpose(2, 3, 1, 0)), jnp.asarray(s_w), jnp.zeros(16, jnp.int32)
        )
        np.testing.assert_array_equal(np.asarray(conv(x, w, b, s_y, z_y).values), want)
        acc = np.asarray(
            jax.lax.conv_general_dilated(
                jnp.asarray(qx.transpose(0, 2, 3, 1), jnp.int32) - z_x,
                jnp.asarray(qw.transpose(2, 3, 1, 0), jnp.int32),
                (1, 1),
                ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        )
        np.testing.assert_array_equal(ref.requantize_onednn(acc, s_x, s_w, b, s_y, z_y), want)


def test_static_residual_add_bitwise(digits):
    """A residual MLP with torch's `FloatFunctional.add` / our `Add`, observed and converted:
    logits on all 1797 rows bit for bit (dyadic weights), also after exchanging state dicts;
    `add` and `add(relu=True)` on 10^5
    random pairs equal torch's `quantized.add` / `add_relu` (eagerly and under jit)."""
    torch_model, model = ptq_models.residual_twins()
    torch_model.qconfig = tq.get_default_qconfig("x86")
    t_prepared = tq.prepare(torch_model)
    x_t = torch.from_numpy(digits)
    t_prepared(x_t)
    prepared = Q.prepare(model)
    _apply(prepared, digits)
    theirs = tq.convert(t_prepared)
    want = theirs(x_t).numpy()
    ours = Q.convert(prepared)
    _assert_outputs(ours, digits, want)
    other = Q.convert(Q.prepare(model))  # never calibrated: torch's default qparams 1, 0
    Q.quantized_weights_from_torch(other, theirs.state_dict())
    np.testing.assert_array_equal(np.asarray(_apply(other, digits)), want)
    other_t = tq.convert(tq.prepare(copy.deepcopy(torch_model)))  # uncalibrated torch twin
    other_t.load_state_dict(Q.quantized_weights_to_torch(ours))
    np.testing.assert_array_equal(other_t(x_t).numpy(), want)

    rng = np.random.default_rng(1)
    s_a, s_b, s_y = (np.float32(v) for v in rng.uniform(0.001, 0.1, 3))
    z_a, z_b, z_y = (int(v) for v in rng.integers(0, 128, 3))
    q_a, q_b = rng.integers(0, 256, (2, 100_000)).astype(np.uint8)
    t_a = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q_a), float(s_a), z_a)
    t_b = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q_b), float(s_b), z_b)
    a = Q.QuantizedArray(jnp.asarray(q_a), jnp.array([s_a]), jnp.array([z_a]))
    b = Q.QuantizedArray(jnp.asarray(q_b), jnp.array([s_b]), jnp.array([z_b]))
    jitted = jax.jit(Q.add, static_argnames="relu")
    for relu, op in ((False, torch.ops.quantized.add), (True, torch.ops.quantized.add_relu)):
        want = op(t_a, t_b, float(s_y), z_y).int_repr().numpy()
        for fn in (Q.add, jitted):
            np.testing.assert_array_equal(np.asarray(fn(a, b, s_y, z_y, relu=relu).values), want)


def test_eager_int8_layers_and_convert_compile_once_per_shape_and_configuration():
    """A converted model called eagerly compiles each int8 kernel once per shape (not its few
    dozen operations one by one), and `convert` computes the qparams of layers whose observers
    are configured alike with one program (observers compare by configuration)."""
    from jaxopt_port.quantization import _int8, _ptq

    assert Q.MinMaxObserver() == Q.MinMaxObserver() != Q.MinMaxObserver(reduce_range=True)
    assert hash(Q.HistogramObserver()) == hash(Q.HistogramObserver())
    model = nnx.Sequential(
        nnx.Linear(6, 5, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(5, 5, rngs=nnx.Rngs(1))
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
    dynamic = Q.quantize_dynamic(model)
    before = _int8._linear_dynamic._cache_size()
    want = np.asarray(dynamic(x))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(dynamic(x)), want)
    assert _int8._linear_dynamic._cache_size() - before <= 2  # the two weight shapes
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x: dynamic(x))(x)), want)
    prepared = Q.prepare(model, Q.default_qconfig)
    prepared(x)
    before = _ptq._calculate_qparams._cache_size()
    Q.convert(prepared)
    # Linear, ReLU and Linear outputs: one observer configuration, one state shape (compiled
    # here or by an earlier test; by observer identity it would be three new programs)
    assert _ptq._calculate_qparams._cache_size() - before <= 1
