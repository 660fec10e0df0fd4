"""torchao 0.18's int8 / intx inference configs and QAT configs against torchao on CPU.

Bitwise: every quantized weight, scale and zero point; the int8 dynamic config's outputs (eagerly
and under jit, random layers and a digits MLP on all 1797 rows); dynamically quantized
activations; QAT's fake-quantized forward and gradient. Float matrix products (weight-only and
intx configs) are compared with tolerances measured against torchao, written beside them.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_port import quantization as q

torch = pytest.importorskip("torch")
with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
    warnings.simplefilter("ignore")
    torchao_q = pytest.importorskip("torchao.quantization")
    from torchao.quantization.qat import IntxFakeQuantizeConfig as TIntxFQ
    from torchao.quantization.qat import QATConfig as TQATConfig
    from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        _apply_int8_act_asym_per_token_quant_dequant,
    )

ASYM = torchao_q.MappingType.ASYMMETRIC

#: (torchao config factory, our config)
FLOAT_GEMM_CASES = [
    (lambda: torchao_q.Int8WeightOnlyConfig(), q.Int8WeightOnlyConfig()),
    (
        lambda: torchao_q.Int8WeightOnlyConfig(granularity=torchao_q.PerGroup(32)),
        q.Int8WeightOnlyConfig(q.PerGroup(32)),
    ),
    (
        lambda: torchao_q.IntxWeightOnlyConfig(torch.int4, torchao_q.PerGroup(32)),
        q.IntxWeightOnlyConfig("int4", q.PerGroup(32)),
    ),
    (lambda: torchao_q.IntxWeightOnlyConfig(), q.IntxWeightOnlyConfig()),
    (
        lambda: torchao_q.Int8DynamicActivationIntxWeightConfig(),
        q.Int8DynamicActivationIntxWeightConfig(),
    ),
    (
        lambda: torchao_q.Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_mapping_type=ASYM
        ),
        q.Int8DynamicActivationIntxWeightConfig("int4", weight_mapping_type="ASYMMETRIC"),
    ),
]
FLOAT_GEMM_RTOL = 1.5e-6
"""Largest |ours − torchao| / max |torchao| over FLOAT_GEMM_CASES: measured 6.4e-7 (the float32
product's summation order; quantized operands are bitwise equal)."""


QAT_GRAD_RTOL = 1e-6
"""Kernel gradients of a fake-quantized MLP against torchao's: measured 2.3e-7 (float32
products in the forward and backward passes; the fake-quant gradient itself is bitwise)."""


def torchao_quantize(module, config, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torchao_q.quantize_(module, config, **kwargs)
    return module


def torch_linear(rng, k, n, scale=1.0):
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32) * scale))
        lin.bias.copy_(torch.from_numpy(rng.standard_normal(n).astype(np.float32)))
    return lin


def nnx_linear(lin) -> nnx.Linear:
    n, k = lin.weight.shape
    layer = nnx.eval_shape(lambda: nnx.Linear(k, n, rngs=nnx.Rngs(0)))  # no random init
    layer.kernel.set_value(jnp.asarray(lin.weight.detach().numpy().T))
    layer.bias.set_value(jnp.asarray(lin.bias.detach().numpy()))
    return layer


def run_torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


INT8_DYNAMIC_VARIANTS = [
    ({}, {}),
    ({"act_mapping_type": ASYM}, {"act_mapping_type": "ASYMMETRIC"}),
    ({"granularity": torchao_q.PerTensor()}, {"granularity": q.PerTensor()}),
    ({"reduce_range": True}, {"reduce_range": True}),
    (
        {"granularity": [torchao_q.PerRow(), torchao_q.PerTensor()]},
        {"granularity": [q.PerRow(), q.PerTensor()]},
    ),
]


@pytest.mark.parametrize("variant", range(len(INT8_DYNAMIC_VARIANTS)))
def test_int8_dynamic_random_layers_bitwise(variant):
    """Weights, scales and outputs bit for bit under jit (8 random layers per config variant,
    one compiled vmapped call): weight and input magnitudes over 4 decades, an all-zero token
    (scale eps), 3-D inputs, odd sizes."""
    t_kw, kw = INT8_DYNAMIC_VARIANTS[variant]
    cfg = q.Int8DynamicActivationInt8WeightConfig(**kw)
    rng = np.random.default_rng(variant)
    n, k, cases = 23, 77, 8
    lins = [torch_linear(rng, k, n, float(10 ** rng.uniform(-2, 2))) for _ in range(cases)]
    w = np.stack([lin.weight.detach().numpy() for lin in lins])
    b = np.stack([lin.bias.detach().numpy() for lin in lins])
    x = rng.standard_normal((cases, 2, 9, k)) * 10 ** rng.uniform(-2, 2, (cases, 1, 1, 1))
    x = x.astype(np.float32)
    x[:, 0, 0] = 0.0
    for lin in lins:
        torchao_quantize(lin, torchao_q.Int8DynamicActivationInt8WeightConfig(**t_kw))
    g_act, g_w = cfg.granularity

    def ours(w, b, x):
        qw, sw = q.int8_quantize_weight(w, g_w, reduce_range=cfg.reduce_range)
        y = q.int8_dynamic_activation_int8_weight_linear(
            x,
            qw,
            sw,
            b,
            act_granularity=g_act,
            act_mapping_type=cfg.act_mapping_type,
            reduce_range=cfg.reduce_range,
        )
        return qw, sw, y

    qw, sw, y = jax.jit(jax.vmap(ours))(w, b, x)
    for i, lin in enumerate(lins):
        np.testing.assert_array_equal(qw[i], lin.weight.qdata.numpy())
        np.testing.assert_array_equal(sw[i], lin.weight.scale.numpy())
        np.testing.assert_array_equal(y[i], run_torch(lin, x[i]), err_msg=f"layer {i}")
    exported = q.quantized_linear_to_torch(q.AffineQuantizedLinear(qw[0], sw[0], None, b[0], cfg))
    np.testing.assert_array_equal(run_torch(exported, x[0]), y[0])
    assert q.quantized_linear_from_torch(lins[0]).config == cfg


def test_int8_dynamic_in_features_one_against_numpy():
    """torchao crashes for in_features == 1 (its per-token scale reshape); ours follows the
    documented formula, checked here in NumPy float32, eagerly (op by op) and under jit."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 1)).astype(np.float32)
    x = rng.standard_normal((7, 1)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    qw, sw = q.int8_quantize_weight(w)
    y = q.int8_dynamic_activation_int8_weight_linear(x, qw, sw, b)
    y_jit = jax.jit(q.int8_dynamic_activation_int8_weight_linear)(x, qw, sw, b)

    def quant(v):
        s = np.maximum(np.abs(v).max(-1, keepdims=True) / np.float32(127.5), np.finfo("f4").eps)
        s = s.astype(np.float32)
        return np.clip(np.rint(v * (np.float32(1) / s)), -128, 127).astype(np.int32), s

    (qx, sx), (qw_ref, sw_ref) = quant(x), quant(w)
    ref = ((qx @ qw_ref.T).astype(np.float32) * sx) * sw_ref.reshape(-1) + b
    np.testing.assert_array_equal(qw, qw_ref)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(y_jit, ref)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32)


def test_int8_dynamic_digits_mlp_and_export(digits):
    """A 64-128-64-10 MLP on all 1797 digits rows: bitwise with torchao eagerly and under jit;
    the layers exported to torchao tensors and read back are the same numbers."""
    rng = np.random.default_rng(2)
    layers = [torch_linear(rng, 64, 128, 0.2), torch_linear(rng, 128, 64, 0.1)]
    layers.append(torch_linear(rng, 64, 10, 0.1))
    tmodel = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    model = nnx.Sequential(
        nnx_linear(layers[0]), nnx.relu, nnx_linear(layers[1]), nnx.relu, nnx_linear(layers[2])
    )
    q.quantize_(model, q.Int8DynamicActivationInt8WeightConfig())
    torchao_quantize(tmodel, torchao_q.Int8DynamicActivationInt8WeightConfig())
    expected = run_torch(tmodel, digits)
    np.testing.assert_array_equal(model(jnp.asarray(digits)), expected)
    with jax.disable_jit():  # op by op: no fusion at all
        np.testing.assert_array_equal(model(jnp.asarray(digits)), expected)
    np.testing.assert_array_equal(nnx.jit(lambda mod, v: mod(v))(model, digits), expected)

    exported = torch.nn.Sequential(
        *[
            m if not isinstance(m, q.AffineQuantizedLinear) else q.quantized_linear_to_torch(m)
            for m in (
                model.layers[0],
                torch.nn.ReLU(),
                model.layers[2],
                torch.nn.ReLU(),
                model.layers[4],
            )
        ]
    )
    np.testing.assert_array_equal(run_torch(exported, digits), expected)
    back = q.quantized_linear_from_torch(tmodel[2])
    np.testing.assert_array_equal(back.qdata[...], model.layers[2].qdata[...])
    np.testing.assert_array_equal(back.scale[...], model.layers[2].scale[...])
    h = jnp.asarray(rng.standard_normal((20, 128)), jnp.float32)
    np.testing.assert_array_equal(back(h), model.layers[2](h))


@pytest.mark.parametrize("case", range(len(FLOAT_GEMM_CASES)))
def test_float_gemm_configs(case):
    """Quantized values, scales, zero points, dequantized weights and (dynamic) activations
    bitwise; outputs within the float product's rounding; export to torchao and back."""
    t_cfg, cfg = FLOAT_GEMM_CASES[case]
    rng = np.random.default_rng(10 + case)
    lin = torch_linear(rng, 96, 24)
    ours = q.quantize_(nnx_linear(lin), cfg)
    assert q.quantize_(nnx_linear(lin), t_cfg()).config == cfg  # torchao's config object too
    torchao_quantize(lin, t_cfg())
    w = lin.weight
    np.testing.assert_array_equal(ours.qdata[...], w.qdata.numpy())
    np.testing.assert_array_equal(ours.scale[...], w.scale.numpy())
    if ours.zero_point is not None:
        np.testing.assert_array_equal(ours.zero_point[...], w.zero_point.numpy())
    np.testing.assert_array_equal(ours.dequantize(), w.dequantize().numpy())
    x = (rng.standard_normal((3, 5, 96)) * 2).astype(np.float32)
    if isinstance(cfg, q.Int8DynamicActivationIntxWeightConfig):
        np.testing.assert_array_equal(
            jax.jit(q.int8_asymmetric_per_token)(x),
            _apply_int8_act_asym_per_token_quant_dequant(torch.from_numpy(x)).numpy(),
        )
    expected = run_torch(lin, x)
    for y in (ours(jnp.asarray(x)), nnx.jit(lambda mod, v: mod(v))(ours, x)):
        assert np.abs(np.asarray(y) - expected).max() <= FLOAT_GEMM_RTOL * np.abs(expected).max()
    exported = q.quantized_linear_to_torch(ours)
    np.testing.assert_array_equal(run_torch(exported, x), expected)
    back = q.quantized_linear_from_torch(lin)
    np.testing.assert_array_equal(back(jnp.asarray(x)), ours(jnp.asarray(x)))


def test_qat_fake_quantize_forward_and_gradient_bitwise():
    """int4 per-group-32 symmetric weights and int8 per-token asymmetric activations: forward
    and gradient (torchao's straight-through round: ḡ·s·r, masked by the clamp) bit for bit."""
    rng = np.random.default_rng(3)
    cases = [
        (
            TIntxFQ(torch.int4, group_size=32, is_symmetric=True),
            q.IntxFakeQuantizeConfig("int4", group_size=32, is_symmetric=True),
            (12, 96),
            3.0,
        ),
        (
            TIntxFQ(torch.int8, "per_token", is_symmetric=False),
            q.IntxFakeQuantizeConfig("int8", "per_token", is_symmetric=False),
            (2, 9, 40),
            10.0,
        ),
        (
            TIntxFQ(torch.int4, "per_channel"),
            q.IntxFakeQuantizeConfig("int4", "per_channel"),
            (7, 33),
            1.0,
        ),
    ]
    for t_cfg, cfg, shape, mag in cases:
        x = (rng.standard_normal(shape) * mag).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = IntxFakeQuantizer(t_cfg)(xt)
        yt.backward(torch.from_numpy(g))
        y, vjp = jax.vjp(jax.jit(cfg.fake_quantize), jnp.asarray(x))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(vjp(jnp.asarray(g))[0], xt.grad.numpy())


def test_qat_prepare_convert_against_torchao():
    """prepare → FakeQuantizedLinear (fake-quantized weights torchao's bit for bit, outputs
    within the float product's rounding); convert → outputs equal the fake-quantized forward
    bitwise, in ours as in torchao."""
    rng = np.random.default_rng(4)
    base_t = torchao_q.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4)
    base = q.Int8DynamicActivationIntxWeightConfig(weight_dtype="int4")
    tmodel = torch.nn.Sequential(
        torch_linear(rng, 64, 32), torch.nn.ReLU(), torch_linear(rng, 32, 10)
    )
    model = nnx.Sequential(nnx_linear(tmodel[0]), nnx.relu, nnx_linear(tmodel[2]))
    torchao_quantize(tmodel, TQATConfig(base_t, step="prepare"))
    q.quantize_(model, q.QATConfig(base, step="prepare"))
    assert isinstance(model.layers[0], q.FakeQuantizedLinear)
    x = (rng.standard_normal((50, 64)) * 2).astype(np.float32)
    w_fq = model.layers[0].weight_config.fake_quantize(model.layers[0].kernel[...].T)
    np.testing.assert_array_equal(
        w_fq, tmodel[0].weight_fake_quantizer(tmodel[0].weight).detach().numpy()
    )
    xt = torch.from_numpy(x)
    loss_t = (tmodel(xt) ** 2).sum()
    loss_t.backward()
    fake_t = tmodel(xt).detach().numpy()

    @nnx.jit
    def forward_and_grad(mod, v):
        return mod(v), nnx.grad(lambda m: jnp.sum(m(v) ** 2))(mod)

    fake, grads = forward_and_grad(model, jnp.asarray(x))
    fake = np.asarray(fake)
    assert np.abs(fake - fake_t).max() <= FLOAT_GEMM_RTOL * np.abs(fake_t).max()
    for i in (0, 2):  # straight-through gradients through float products
        g, g_t = grads["layers"][i]["kernel"][...].T, tmodel[i].weight.grad.numpy()
        assert np.abs(g - g_t).max() <= QAT_GRAD_RTOL * np.abs(g_t).max()

    torchao_quantize(tmodel, TQATConfig(base_t, step="convert"))
    q.quantize_(model, q.QATConfig(base, step="convert"))
    assert isinstance(model.layers[0], q.AffineQuantizedLinear)
    np.testing.assert_array_equal(run_torch(tmodel, x), fake_t)  # torchao's own claim
    np.testing.assert_array_equal(nnx.jit(lambda mod, v: mod(v))(model, x), fake)
    np.testing.assert_array_equal(model.layers[0].qdata[...], tmodel[0].weight.qdata.numpy())
    np.testing.assert_array_equal(model.layers[0].scale[...], tmodel[0].weight.scale.numpy())


def test_quantize_filter_names_and_errors():
    class Net(nnx.Module):
        def __init__(self):
            self.fc1 = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
            self.blocks = nnx.List([nnx.Linear(4, 4, rngs=nnx.Rngs(1)) for _ in range(2)])

    names = []
    net = Net()
    q.quantize_(net, q.Int8WeightOnlyConfig(), lambda m, name: names.append(name) or name != "fc1")
    assert sorted(names) == ["", "blocks", "blocks.0", "blocks.1", "fc1"]
    assert isinstance(net.fc1, nnx.Linear)
    assert all(isinstance(b, q.AffineQuantizedLinear) for b in net.blocks)
    with pytest.raises(TypeError, match="config must be one of"):
        q.quantize_(net, object())
    with pytest.raises(ValueError, match="Only PerTensor and PerRow"):
        q.Int8DynamicActivationInt8WeightConfig(granularity=q.PerGroup(32))
    with pytest.raises(ValueError, match="PerAxis\\(0\\) or PerGroup"):
        q.IntxWeightOnlyConfig(granularity=q.PerAxis(1))
    with pytest.raises(ValueError, match=r"int1 \.\.\. int8"):
        q.IntxWeightOnlyConfig("int16")
    with pytest.raises(ValueError, match="`step` must be one of"):
        q.QATConfig(q.IntxWeightOnlyConfig(), step="train")
    with pytest.raises(ValueError, match="Cannot specify both"):
        q.QATConfig(
            q.IntxWeightOnlyConfig(), weight_config=q.IntxFakeQuantizeConfig("int4", group_size=32)
        )
    with pytest.raises(ValueError, match="`group_size` conflicts"):
        q.IntxFakeQuantizeConfig("int4", "per_token", group_size=32)
    with pytest.raises(NotImplementedError, match="Symmetric per token"):
        q.IntxFakeQuantizeConfig("int8", "per_token").fake_quantize(jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="weight_only_decode=True is not supported"):
        q.quantize_(net, torchao_q.Int8DynamicActivationInt8WeightConfig(weight_only_decode=True))
    with pytest.raises(TypeError, match="Int8Tensor or IntxUnpackedToInt8Tensor"):
        q.quantized_linear_from_torch(torch.nn.Linear(2, 2))


def test_qat_weight_only_and_explicit_configs():
    """A weights-only base config converts bitwise to its fake-quantized forward; explicit
    fake-quantize configs convert (without a base config) back to the same nnx.Linear."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((6, 64)), jnp.float32)
    base = q.IntxWeightOnlyConfig("int4", q.PerGroup(32))
    layer = q.quantize_(nnx_linear(torch_linear(rng, 64, 8)), q.QATConfig(base))
    assert layer.activation_config is None
    assert layer.weight_config == q.IntxFakeQuantizeConfig("int4", group_size=32)
    fake = layer(x)
    np.testing.assert_array_equal(q.quantize_(layer, q.QATConfig(base, step="convert"))(x), fake)

    lin = nnx_linear(torch_linear(rng, 64, 8))
    act = q.IntxFakeQuantizeConfig("int8", "per_token", is_symmetric=False)
    prepared = q.quantize_(lin, q.QATConfig(activation_config=act))
    assert prepared.weight_config is None
    np.testing.assert_array_equal(prepared(x), lin(q.int8_asymmetric_per_token(x)))
    restored = q.quantize_(prepared, q.QATConfig(step="convert"))
    assert type(restored) is nnx.Linear
    np.testing.assert_array_equal(restored.kernel[...], lin.kernel[...])
    np.testing.assert_array_equal(restored.bias[...], lin.bias[...])
