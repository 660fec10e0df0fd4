"""jaxopt_port.interop.weights: torch state dicts <-> Flax NNX modules, checked by running both.

One table (CASES) drives the generic tests: a torch module and the NNX module of the same
architecture, inputs in torch's layout, and how each side runs them. Every case is compared in
float64 (outputs within 1e-12) in both directions, and torch -> NNX -> torch is checked bitwise.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_port.interop._torch_inputs import check_optimizer_state_dict
from jaxopt_port.interop.weights import (
    flax_batchnorm_momentum,
    weights_from_torch,
    weights_to_numpy,
)
from parity.metric import F64_GATE

torch = pytest.importorskip("torch", reason="these tests compare against torch")
nn = torch.nn

# The float64 gate. Measured: at most 3.6e-15 absolute (2.0e-15 by _max_error, conv2d with
# |y| up to 10) over all cases and both directions; most cases are within 4e-16.


def _f64() -> dict:
    return {"param_dtype": jnp.float64, "rngs": nnx.Rngs(0)}


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def _channels_first(y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -1, 1)


def _run_torch(module, xs):
    out = module(*(torch.from_numpy(x) for x in xs))
    return out.detach().numpy()


@nnx.jit
def _call(module, *xs):
    """One compilation per architecture and input shapes, shared by the tests of a case (the same
    ops run eagerly compile one by one, and nnx.RNN's scan compiles on every call)."""
    return module(*xs)


def _run_nnx(module, xs):
    return np.asarray(_call(module, *(jnp.asarray(x) for x in xs)))


def _run_nnx_channels_last(module, xs):
    return _channels_first(_run_nnx(module, [_channels_last(x) for x in xs]))


def _run_torch_rnn(module, xs):
    return module(torch.from_numpy(xs[0]))[0].detach().numpy()


def _run_torch_attention(module, xs):
    q, kv = (torch.from_numpy(x) for x in xs)
    return module(q, kv, kv, need_weights=False)[0].detach().numpy()


def _attention_float64(query, key, value, bias=None, mask=None, **_):
    """softmax(q k^T / sqrt(d)) v in the inputs' dtype. nnx's default attention_fn goes through
    jax.nn.dot_product_attention, whose softmax is float32 even for float64 inputs (measured
    1.25e-7 from torch here)."""
    assert bias is None and mask is None
    logits = jnp.einsum("...qhd,...khd->...hqk", query / np.sqrt(query.shape[-1]), key)
    return jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), value)


def _build(ctor: Callable[[], nnx.Module]) -> nnx.Module:
    """``ctor()`` with zeros for every value (a fixed key for RNG state). nnx.eval_shape skips the
    random initializers: run eagerly each costs XLA compilations, seconds per layer on 2 cores."""
    module = nnx.eval_shape(ctor)
    for _, var in nnx.iter_graph(module):
        if isinstance(var, nnx.Variable):
            abstract = var.get_value()
            if jax.dtypes.issubdtype(abstract.dtype, jax.dtypes.prng_key):
                var.set_value(jax.random.key(0))
            else:
                var.set_value(jnp.asarray(np.zeros(abstract.shape, abstract.dtype)))
    return module


def _normal(*shape: int, seed: int = 1) -> Callable[[], tuple[np.ndarray, ...]]:
    return lambda: (np.random.default_rng(seed).normal(size=shape),)


@dataclasses.dataclass(frozen=True)
class Case:
    """A torch layer and its NNX counterpart (built under float64) with inputs to compare them."""

    name: str
    torch_module: Callable[[], nn.Module]
    nnx_module: Callable[[], nnx.Module]
    inputs: Callable[[], tuple[np.ndarray, ...]]
    run_torch: Callable = _run_torch
    run_nnx: Callable = _run_nnx
    train_batches: int = 0  # training-mode passes before eval, for non-trivial BatchNorm stats


class TorchNet(nn.Module):
    """Conv2d + BatchNorm2d in a Sequential, a ModuleList of Linears, a head and a bare Parameter."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.randn(2))

    def forward(self, x):
        h = self.features(x).mean((2, 3))
        for block in self.blocks:
            h = torch.tanh(block(h))
        return self.head(h) * self.scale


class NnxNet(nnx.Module):
    def __init__(self):
        kw = _f64()
        self.features = nnx.Sequential(
            nnx.Conv(3, 4, (3, 3), padding=[(1, 1)] * 2, **kw),
            nnx.BatchNorm(4, use_running_average=True, epsilon=1e-5, **kw),
            nnx.relu,
        )
        self.blocks = nnx.List([nnx.Linear(4, 4, **kw), nnx.Linear(4, 4, **kw)])
        self.head = nnx.Linear(4, 2, **kw)
        self.scale = nnx.Param(jnp.zeros(2, jnp.float64))

    def __call__(self, x):
        h = self.features(x).mean((1, 2))
        for block in self.blocks:
            h = jnp.tanh(block(h))
        return self.head(h) * self.scale[...]


def _lstm_stack(cell, sizes, bidirectional):
    def rnn(n_in):
        return nnx.RNN(cell(n_in, 4, **_f64()))

    layers = [nnx.Bidirectional(rnn(n), rnn(n)) if bidirectional else rnn(n) for n in sizes]
    return nnx.Sequential(*layers)


_conv_tp = lambda k, s, p, q, d: [(d * (k - 1) - p, d * (k - 1) - p + q)]

CASES = [
    Case("linear", lambda: nn.Linear(5, 4), lambda: nnx.Linear(5, 4, **_f64()), _normal(3, 5)),
    Case(
        "linear_no_bias",
        lambda: nn.Linear(5, 4, bias=False),
        lambda: nnx.Linear(5, 4, use_bias=False, **_f64()),
        _normal(2, 3, 5),
    ),
    Case(
        "conv1d_groups_stride",
        lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2),
        lambda: nnx.Conv(4, 6, (3,), strides=2, padding=[(1, 1)], feature_group_count=2, **_f64()),
        _normal(2, 4, 11),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv2d_same_dilation",
        lambda: nn.Conv2d(4, 6, (3, 4), padding="same", dilation=2),
        lambda: nnx.Conv(4, 6, (3, 4), padding="SAME", kernel_dilation=2, **_f64()),
        _normal(2, 4, 9, 10),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv2d_groups_no_bias",
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False),
        lambda: nnx.Conv(
            4,
            6,
            (3, 3),
            strides=2,
            padding=[(1, 1)] * 2,
            feature_group_count=2,
            use_bias=False,
            **_f64(),
        ),
        _normal(2, 4, 7, 8),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv3d",
        lambda: nn.Conv3d(2, 3, (2, 3, 2), padding=(1, 0, 1)),
        lambda: nnx.Conv(2, 3, (2, 3, 2), padding=[(1, 1), (0, 0), (1, 1)], **_f64()),
        _normal(2, 2, 4, 5, 3),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv_transpose1d",
        lambda: nn.ConvTranspose1d(3, 4, 4, stride=3, padding=2, output_padding=1),
        lambda: nnx.ConvTranspose(
            3, 4, (4,), strides=3, padding=_conv_tp(4, 3, 2, 1, 1), transpose_kernel=True, **_f64()
        ),
        _normal(2, 3, 6),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv_transpose2d",
        lambda: nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),
        lambda: nnx.ConvTranspose(
            3,
            5,
            (3, 3),
            strides=2,
            padding=_conv_tp(3, 2, 1, 1, 1) * 2,
            transpose_kernel=True,
            **_f64(),
        ),
        _normal(2, 3, 5, 6),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "conv_transpose2d_flipped_kernel_dilation",
        lambda: nn.ConvTranspose2d(3, 5, 3, stride=(1, 2), dilation=2),
        lambda: nnx.ConvTranspose(
            3,
            5,
            (3, 3),
            strides=(1, 2),
            padding=_conv_tp(3, 1, 0, 0, 2) * 2,
            kernel_dilation=2,
            transpose_kernel=False,
            **_f64(),
        ),
        _normal(2, 3, 5, 6),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "batchnorm1d",
        lambda: nn.BatchNorm1d(5),
        lambda: nnx.BatchNorm(5, use_running_average=True, epsilon=1e-5, **_f64()),
        _normal(8, 5),
        train_batches=3,
    ),
    Case(
        "batchnorm2d",
        lambda: nn.BatchNorm2d(4, momentum=0.3),
        lambda: nnx.BatchNorm(4, use_running_average=True, epsilon=1e-5, **_f64()),
        _normal(3, 4, 5, 5),
        run_nnx=_run_nnx_channels_last,
        train_batches=3,
    ),
    Case(
        "layernorm",
        lambda: nn.LayerNorm(6),
        lambda: nnx.LayerNorm(6, epsilon=1e-5, **_f64()),
        _normal(3, 4, 6),
    ),
    Case(
        "groupnorm",
        lambda: nn.GroupNorm(3, 6),
        lambda: nnx.GroupNorm(6, num_groups=3, epsilon=1e-5, **_f64()),
        _normal(2, 6, 4, 4),
        run_nnx=_run_nnx_channels_last,
    ),
    Case(
        "rmsnorm",
        lambda: nn.RMSNorm(6, eps=1e-6),
        lambda: nnx.RMSNorm(6, epsilon=1e-6, **_f64()),
        _normal(3, 6),
    ),
    Case(
        "embedding",
        lambda: nn.Embedding(10, 4),
        lambda: nnx.Embed(10, 4, **_f64()),
        lambda: (np.random.default_rng(1).integers(0, 10, size=(3, 5)),),
    ),
    Case(
        "multihead_attention",
        lambda: nn.MultiheadAttention(8, 2, batch_first=True),
        lambda: nnx.MultiHeadAttention(
            2, 8, decode=False, attention_fn=_attention_float64, **_f64()
        ),
        lambda: (np.random.default_rng(1).normal(size=(2, 5, 8)),) * 2,
        run_torch=_run_torch_attention,
        run_nnx=lambda m, xs: _run_nnx(m, xs[:1]),
    ),
    Case(
        "multihead_attention_kdim_no_bias",
        lambda: nn.MultiheadAttention(8, 4, bias=False, kdim=3, vdim=3, batch_first=True),
        lambda: nnx.MultiHeadAttention(
            4,
            8,
            in_kv_features=3,
            use_bias=False,
            decode=False,
            attention_fn=_attention_float64,
            **_f64(),
        ),
        lambda: (
            np.random.default_rng(1).normal(size=(2, 5, 8)),
            np.random.default_rng(2).normal(size=(2, 6, 3)),
        ),
        run_torch=_run_torch_attention,
    ),
    Case(
        "lstm",
        lambda: nn.LSTM(3, 4, batch_first=True),
        lambda: nnx.RNN(nnx.LSTMCell(3, 4, **_f64())),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "lstm_optimized_cell",
        lambda: nn.LSTM(3, 4, batch_first=True),
        lambda: nnx.RNN(nnx.OptimizedLSTMCell(3, 4, **_f64())),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "lstm_2_layers_bidirectional",
        lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
        lambda: _lstm_stack(nnx.LSTMCell, [3, 8], bidirectional=True),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "gru",
        lambda: nn.GRU(3, 4, batch_first=True),
        lambda: nnx.RNN(nnx.GRUCell(3, 4, **_f64())),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "gru_2_layers",
        lambda: nn.GRU(3, 4, num_layers=2, batch_first=True),
        lambda: _lstm_stack(nnx.GRUCell, [3, 4], bidirectional=False),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "rnn_tanh",
        lambda: nn.RNN(3, 4, batch_first=True),
        # SimpleCell computes in its `dtype`, float32 unless given (the other cells infer it)
        lambda: nnx.RNN(nnx.SimpleCell(3, 4, dtype=jnp.float64, **_f64())),
        _normal(2, 5, 3),
        run_torch=_run_torch_rnn,
    ),
    Case(
        "composite_sequential_modulelist_parameter",
        TorchNet,
        NnxNet,
        _normal(2, 3, 6, 6),
        run_nnx=_run_nnx_channels_last,
        train_batches=2,
    ),
]
CASE_IDS = [c.name for c in CASES]


def _torch_model(case: Case) -> nn.Module:
    """The case's torch module in float64, with random values everywhere (norm weights and biases
    included) and, for BatchNorm, running statistics from a few training passes."""
    torch.set_default_dtype(torch.float64)  # restored by tests/conftest.py
    torch.manual_seed(0)
    module = case.torch_module()
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0.0, 0.5)
            if name.startswith("bias_hh") and isinstance(module, nn.GRU):
                p[2 * module.hidden_size :] = 0.0  # b_hn: nnx.GRUCell has no slot for it
    module.train()
    for seed in range(case.train_batches):
        module(*(torch.from_numpy(x * (1 + seed) + seed) for x in case.inputs()))
    return module.eval()


def _nnx_model(case: Case) -> nnx.Module:
    """The case's NNX module with random float64 values everywhere (positive variances)."""
    module = _build(case.nnx_module)
    rng = np.random.default_rng(3)
    for path, var in nnx.iter_graph(module):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            value = rng.normal(0.0, 0.5, size=var.shape)
            var.set_value(jnp.asarray(np.abs(value) + 0.5 if path[-1] == "var" else value))
    return module


def _max_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest error, absolute where |want| <= 1 and relative above."""
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def _snapshot(module: nnx.Module) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, path)): np.array(var[...])
        for path, var in nnx.iter_graph(module)
        if isinstance(var, (nnx.Param, nnx.BatchStat))
    }


def _assert_snapshot_equal(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert np.array_equal(before[key], after[key]), key


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torch_to_nnx_outputs_match_in_float64(case):
    model = _torch_model(case)
    xs = case.inputs()
    want = case.run_torch(model, xs)
    with jax.enable_x64(True):
        module = _build(case.nnx_module)
        weights_from_torch(module, model.state_dict())
        for var in (v for _, v in nnx.iter_graph(module) if isinstance(v, nnx.Param)):
            assert var[...].dtype == jnp.float64
        got = case.run_nnx(module, xs)
    assert got.shape == want.shape
    assert _max_error(got, want) <= F64_GATE, _max_error(got, want)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nnx_to_torch_outputs_match_in_float64(case):
    xs = case.inputs()
    with jax.enable_x64(True):
        module = _nnx_model(case)
        want = case.run_nnx(module, xs)
        sd = weights_to_numpy(module)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = case.torch_module().eval()
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert not result.missing_keys and not result.unexpected_keys
    got = case.run_torch(model, xs)
    assert _max_error(got, want) <= F64_GATE, _max_error(got, want)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_round_trip_torch_nnx_torch_is_bitwise(case):
    model = _torch_model(case)
    if isinstance(model, nn.RNNBase):
        with torch.no_grad():  # NNX stores b_ih + b_hh: bitwise only when b_hh is zero
            for name, p in model.named_parameters():
                if name.startswith("bias_hh"):
                    p.zero_()
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    counts = {int(v) for k, v in want.items() if k.endswith("num_batches_tracked")}
    with jax.enable_x64(True):
        module = _build(case.nnx_module)
        weights_from_torch(module, model.state_dict())
        got = weights_to_numpy(module, num_batches_tracked=counts.pop() if counts else 0)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert np.array_equal(got[key], want[key]), key
    model.load_state_dict({k: torch.from_numpy(v) for k, v in got.items()})


def test_lstm_biases_are_folded_into_one_and_exported_as_bias_ih():
    case = CASES[CASE_IDS.index("lstm")]
    model = _torch_model(case)
    sd = model.state_dict()
    with jax.enable_x64(True):
        module = _build(case.nnx_module)
        weights_from_torch(module, sd)
        got = weights_to_numpy(module)
    np.testing.assert_array_equal(got["bias_ih_l0"], (sd["bias_ih_l0"] + sd["bias_hh_l0"]).numpy())
    np.testing.assert_array_equal(got["bias_hh_l0"], np.zeros(16))


def test_gru_with_nonzero_b_hn_raises_and_leaves_the_module_unchanged():
    case = CASES[CASE_IDS.index("gru")]
    model = _torch_model(case)
    with torch.no_grad():
        model.bias_hh_l0[-1] = 0.25
    with jax.enable_x64(True):
        module = _nnx_model(case)
        before = _snapshot(module)
        with pytest.raises(ValueError, match=r"bias_hh_l0\[8:\].*b_hn"):
            weights_from_torch(module, model.state_dict())
        _assert_snapshot_equal(before, _snapshot(module))


def test_rnn_without_biases_loads_zero_biases():
    torch.set_default_dtype(torch.float64)
    model = nn.LSTM(3, 4, bias=False, batch_first=True)
    with jax.enable_x64(True):
        module = _build(CASES[CASE_IDS.index("lstm_optimized_cell")].nnx_module)
        module.cell.dense_h.bias.set_value(jnp.ones(16))
        weights_from_torch(module, model.state_dict())
        assert np.array_equal(np.asarray(module.cell.dense_h.bias[...]), np.zeros(16))
        x = np.random.default_rng(0).normal(size=(2, 5, 3))
        got = _run_nnx(module, (x,))
    assert _max_error(got, _run_torch_rnn(model, (x,))) <= F64_GATE


def test_batchnorm_training_mode_outputs_match_and_running_var_differs_by_unbiasing():
    """One training step from the same state: outputs and running means agree; running variances
    differ by m * var_batch / (n - 1) (torch adds the unbiased batch variance, Flax the biased)."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    momentum = 0.1
    model = nn.BatchNorm2d(4, momentum=momentum)
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(3, 4, 2, 2))  # n = 12 per channel
    with torch.no_grad():
        model.running_mean.normal_()
        model.running_var.uniform_(0.5, 1.5)
    with jax.enable_x64(True):
        module = _build(
            lambda: nnx.BatchNorm(
                4, momentum=flax_batchnorm_momentum(momentum), epsilon=1e-5, **_f64()
            )
        )
        weights_from_torch(module, model.state_dict())
        got = _channels_first(np.asarray(module(jnp.asarray(_channels_last(x)))))
        flax_var = np.asarray(module.var[...])
        flax_mean = np.asarray(module.mean[...])
    want = model.train()(torch.from_numpy(x)).detach().numpy()
    assert _max_error(got, want) <= F64_GATE
    assert _max_error(flax_mean, model.running_mean.numpy()) <= F64_GATE
    n = x.size // x.shape[1]
    batch_var = x.var(axis=(0, 2, 3))  # biased
    difference = model.running_var.numpy() - flax_var
    assert _max_error(difference, momentum * batch_var / (n - 1)) <= F64_GATE
    assert np.min(difference) > 1e-3  # measured 0.0066 to 0.044 here: not a rounding effect


def test_flax_batchnorm_momentum():
    assert flax_batchnorm_momentum(0.1) == 1.0 - 0.1
    with pytest.raises(ValueError, match="momentum=None"):
        flax_batchnorm_momentum(None)


def test_output_comparison_catches_an_untransposed_kernel():
    """A square, non-symmetric weight loaded without the transpose must give other outputs."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    x = np.random.default_rng(0).normal(size=(3, 4))
    want = _run_torch(model, (x,))
    with jax.enable_x64(True):
        module = _build(lambda: nnx.Linear(4, 4, **_f64()))
        module.kernel.set_value(jnp.asarray(model.weight.detach().numpy()))  # the wrong layout
        module.bias.set_value(jnp.asarray(model.bias.detach().numpy()))
        wrong = _run_nnx(module, (x,))
        weights_from_torch(module, model.state_dict())
        right = _run_nnx(module, (x,))
    assert _max_error(right, want) <= F64_GATE
    assert _max_error(wrong, want) > 1e-2


COMPOSITE = CASES[CASE_IDS.index("composite_sequential_modulelist_parameter")]


def test_composite_keys_are_torchs():
    model = _torch_model(COMPOSITE)
    with jax.enable_x64(True):
        keys = set(weights_to_numpy(_build(NnxNet)))
    assert keys == set(model.state_dict())
    assert "features.1.running_var" in keys and "blocks.1.weight" in keys and "scale" in keys


def _load_error(module, sd, **kwargs) -> str:
    before = _snapshot(module)
    with pytest.raises(ValueError) as info:
        weights_from_torch(module, sd, **kwargs)
    _assert_snapshot_equal(before, _snapshot(module))  # nothing half-converted
    return str(info.value)


def test_missing_key_names_the_key_and_its_shape():
    model = _torch_model(COMPOSITE)
    sd = model.state_dict()
    del sd["head.bias"]
    with jax.enable_x64(True):
        message = _load_error(_nnx_model(COMPOSITE), sd)
    assert "missing key head.bias (shape (2,)" in message


def test_unexpected_key_names_the_key_and_its_shape():
    model = _torch_model(COMPOSITE)
    sd = model.state_dict()
    sd["head.extra"] = torch.zeros(2, 3)
    with jax.enable_x64(True):
        message = _load_error(_nnx_model(COMPOSITE), sd)
    assert "unexpected key head.extra (shape (2, 3))" in message


def test_shape_mismatch_names_the_key_and_both_shapes_and_changes_nothing():
    """The head is the last layer loaded: the layers before it must stay as they were."""
    model = _torch_model(COMPOSITE)
    sd = model.state_dict()
    sd["head.weight"] = torch.zeros(3, 4)
    with jax.enable_x64(True):
        message = _load_error(_nnx_model(COMPOSITE), sd)
    assert "size mismatch for head.weight" in message
    assert "(3, 4)" in message and "(2, 4)" in message


def test_every_problem_is_reported_at_once():
    model = _torch_model(COMPOSITE)
    sd = model.state_dict()
    del sd["blocks.0.bias"]
    sd["features.0.weight"] = torch.zeros(1)
    sd["other"] = torch.zeros(())
    with jax.enable_x64(True):
        message = _load_error(_nnx_model(COMPOSITE), sd)
    for part in [
        "missing key blocks.0.bias",
        "size mismatch for features.0.weight",
        "unexpected key other",
    ]:
        assert part in message


def test_wrapper_prefixes_of_ddp_and_torch_compile_are_removed():
    model = _torch_model(COMPOSITE)
    expected = {k: v.numpy() for k, v in model.state_dict().items() if "num_batches" not in k}
    wrapped = {
        "DataParallel": nn.DataParallel(model).state_dict(),  # as DistributedDataParallel
        "torch.compile": torch.compile(model).state_dict(),
        "compiled DDP": {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()},
    }
    for name, sd in wrapped.items():
        assert all(k.startswith(("module.", "_orig_mod.")) for k in sd), name
        with jax.enable_x64(True):
            module = _nnx_model(COMPOSITE)
            weights_from_torch(module, sd)
            got = weights_to_numpy(module)
        for k, v in expected.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{name}: {k}")
    partly = {("module." if k.startswith("head") else "") + k: v for k, v in model.state_dict().items()}  # fmt: skip
    with jax.enable_x64(True):
        message = _load_error(_nnx_model(COMPOSITE), partly)
    assert "unexpected key module.head.weight" in message and "missing key head.weight" in message


class _TorchHolder(nn.Module):
    def __init__(self):
        super().__init__()
        self.module = nn.Linear(3, 2)


class _NnxHolder(nnx.Module):
    def __init__(self):
        self.module = nnx.Linear(3, 2, **_f64())


def test_a_model_whose_attribute_is_named_module_keeps_its_keys():
    torch.set_default_dtype(torch.float64)
    holder = _TorchHolder()
    for sd in [holder.state_dict(), nn.DataParallel(holder).state_dict()]:
        with jax.enable_x64(True):
            module = _build(_NnxHolder)
            weights_from_torch(module, sd)
            got = weights_to_numpy(module)
        np.testing.assert_array_equal(got["module.weight"], holder.module.weight.detach().numpy())


def test_something_other_than_a_state_dict_says_what_to_pass():
    model = _torch_model(COMPOSITE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError) as torch_error:
        model.load_state_dict([("head.bias", torch.zeros(2))])
    cases = [
        (model, r"^weights_from_torch expects a state_dict, got the torch nn.Module TorchNet: pass its \.state_dict\(\)$"),
        (optimizer, r"model weights\), got the torch optimizer SGD; its state goes to interop\.nnx_optimizer_from_torch"),
        (optimizer.state_dict(), r"got a torch optimizer's state_dict\(\) \(keys 'state' and 'param_groups'\)"),
        ({"model": model.state_dict(), "epoch": 3}, r"the values under \['model'\] are dicts \(a checkpoint\?\): pass the model's state_dict, e\.g\. checkpoint\['model'\]"),
        ([("head.bias", torch.zeros(2))], "^" + re.escape(str(torch_error.value)) + "$"),
    ]  # fmt: skip
    with jax.enable_x64(True):
        module = _nnx_model(COMPOSITE)
        before = _snapshot(module)
        for value, message in cases:
            with pytest.raises(TypeError, match=message):
                weights_from_torch(module, value)
    _assert_snapshot_equal(before, _snapshot(module))


def test_an_optimizer_where_its_state_dict_is_expected_says_so():
    """The check optimizer-state functions run first (a live optimizer is welcome where
    ``live_ok``, as in ``interop.nnx_optimizer_from_torch``)."""
    model = _torch_model(COMPOSITE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    where = "optimizer_state_from_torch"
    cases = [
        (optimizer, r"^optimizer_state_from_torch expects a torch optimizer's state_dict\(\), got the torch optimizer SGD: pass its \.state_dict\(\)$"),
        (model, r"got the torch module TorchNet$"),
        (torch.optim.lr_scheduler.StepLR(optimizer, 2), r"got the torch scheduler StepLR$"),
        (model.state_dict(), r"got OrderedDict with keys \['scale', 'features.0.weight', .*\] \(a model's state_dict\?\)$"),
        ([], r"\(a dict with 'state' and 'param_groups'\), got list$"),
    ]  # fmt: skip
    for value, message in cases:
        with pytest.raises(TypeError, match=message):
            check_optimizer_state_dict(value, where)
    check_optimizer_state_dict(optimizer.state_dict(), where)
    check_optimizer_state_dict(optimizer, where, live_ok=True)


def test_strict_false_ignores_unexpected_keys_and_keeps_values_of_missing_ones():
    model = _torch_model(COMPOSITE)
    sd = model.state_dict()
    del sd["head.bias"]
    sd["other"] = torch.zeros(())
    with jax.enable_x64(True):
        module = _nnx_model(COMPOSITE)
        head_bias = np.asarray(module.head.bias[...])
        weights_from_torch(module, sd, strict=False)
        got = weights_to_numpy(module)
    np.testing.assert_array_equal(got["head.bias"], head_bias)
    np.testing.assert_array_equal(got["head.weight"], sd["head.weight"].numpy())


def test_unsupported_torch_options_are_errors():
    torch.set_default_dtype(torch.float64)
    projected = nn.LSTM(3, 4, proj_size=2, batch_first=True).state_dict()
    bias_kv = nn.MultiheadAttention(8, 2, add_bias_kv=True).state_dict()
    with jax.enable_x64(True):
        message = _load_error(_build(CASES[CASE_IDS.index("lstm")].nnx_module), projected)
        assert "unexpected key weight_hr_l0" in message
        message = _load_error(
            _build(CASES[CASE_IDS.index("multihead_attention")].nnx_module), bias_kv
        )
        assert "unexpected key bias_k" in message
    with pytest.raises(ValueError, match="normalize_qk"):
        weights_from_torch(
            nnx.eval_shape(
                lambda: nnx.MultiHeadAttention(2, 8, normalize_qk=True, rngs=nnx.Rngs(0))
            ),
            nn.MultiheadAttention(8, 2).state_dict(),
        )


def test_values_keep_the_torch_dtype():
    torch.manual_seed(0)
    float32 = nn.Linear(3, 2).float()
    bfloat16 = nn.Linear(3, 2).to(torch.bfloat16)
    with jax.enable_x64(True):
        module = _build(lambda: nnx.Linear(3, 2, **_f64()))
        weights_from_torch(module, float32.state_dict())
        assert module.kernel[...].dtype == jnp.float32
        np.testing.assert_array_equal(
            np.asarray(module.kernel[...]).T, float32.weight.detach().numpy()
        )
        weights_from_torch(module, bfloat16.state_dict())
        assert module.bias[...].dtype == jnp.bfloat16
        np.testing.assert_array_equal(
            np.asarray(module.bias[...], np.float32), bfloat16.bias.detach().float().numpy()
        )


def test_numpy_state_dict_and_bare_nnx_sequential_root():
    """Any mapping of array-likes loads; an nnx.Sequential root has nn.Sequential's keys."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = np.random.default_rng(0).normal(size=(5, 3))
    with jax.enable_x64(True):
        module = _build(
            lambda: nnx.Sequential(nnx.Linear(3, 4, **_f64()), jnp.tanh, nnx.Linear(4, 2, **_f64()))
        )
        weights_from_torch(module, {k: v.numpy() for k, v in model.state_dict().items()})
        got = _run_nnx(module, (x,))
    assert _max_error(got, _run_torch(model, (x,))) <= F64_GATE


def test_loads_into_an_abstract_module():
    """nnx.eval_shape skips the initializers; loading makes the parameters concrete."""
    case = CASES[CASE_IDS.index("conv2d_groups_no_bias")]
    model = _torch_model(case)
    xs = case.inputs()
    with jax.enable_x64(True):
        module = nnx.eval_shape(case.nnx_module)
        weights_from_torch(module, model.state_dict())
        got = case.run_nnx(module, xs)
    assert _max_error(got, case.run_torch(model, xs)) <= F64_GATE


def test_loaded_values_are_placed_like_the_values_they_replace():
    torch.set_default_dtype(torch.float64)
    device = jax.devices()[-1]
    with jax.enable_x64(True):
        module = _build(lambda: nnx.Linear(3, 2, **_f64()))
        module.kernel.set_value(jax.device_put(module.kernel[...], device))
        weights_from_torch(module, nn.Linear(3, 2).state_dict())
        kernel, bias = module.kernel[...], module.bias[...]
    assert kernel.committed and kernel.sharding == jax.sharding.SingleDeviceSharding(device)
    assert not bias.committed
