"""The twin models (parity.specs.models), their training runs (parity.run.twins) and parity.compare.

Each twin pair computes the same function and gradients; a run of each model with Adam and SGD
stays within the float64 gate while the loss falls; a planted layout error (a transposed square
matrix, in the converter or after it) fails its run and names the parameter; compare() passes
for a user's pair and fails when the pair differs; the worked example runs.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys

import numpy as np
import pytest
from _helpers import ROOT

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
pytest.importorskip("sklearn")

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import parity  # noqa: E402
from jaxopt_port.interop import weights  # noqa: E402
from jaxopt_port.interop.weights import to_numpy  # noqa: E402
from parity.metric import F64_GATE, scaled_difference  # noqa: E402
from parity.run import twins  # noqa: E402
from parity.run.layout import TorchLayout  # noqa: E402
from parity.run.optim import torch_dtype  # noqa: E402
from parity.specs import data, models  # noqa: E402

#: Per model: steps and torch kwargs that make the loss fall visibly within the run (measured:
#: the mean of the last 3 losses is 0.1 to 1.3 below the first).
TRAINING = {
    "mlp": (8, {"adam": {"lr": 0.01}, "sgd": {"lr": 0.5, "momentum": 0.9}}),
    "cnn": (8, {"adam": {"lr": 0.01}, "sgd": {"lr": 0.1, "momentum": 0.9}}),
    "transformer": (8, {"adam": {"lr": 0.01}, "sgd": {"lr": 0.1, "momentum": 0.9}}),
    "lstm": (16, {"adam": {"lr": 0.03}, "sgd": {"lr": 1.0, "momentum": 0.9}}),
}


@pytest.mark.parametrize("name", models.MODELS)
def test_twins_compute_the_same_outputs_and_gradients(name):
    inputs, target = data.batches(name, 1, seed=3)[0]
    with torch_dtype("float64"), jax.enable_x64(True):
        torch_model, nnx_model = models.make_twins(name, "float64", seed=1)
        x = torch.as_tensor(inputs)
        out_torch = torch_model(x)
        torch.nn.functional.cross_entropy(out_torch, torch.as_tensor(target)).backward()
        names = [n for n, _ in torch_model.named_parameters()]
        state = {k: to_numpy(v) for k, v in torch_model.state_dict().items()}
        layout = TorchLayout(nnx_model, state, names)
        graphdef, _, rest = nnx.split(nnx_model, nnx.Param, ...)

        def loss(params):
            net = nnx.merge(graphdef, layout(params), jax.tree_util.tree_map(lambda a: a, rest))
            logits = net(jnp.asarray(inputs))
            return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean(), logits

        grad_fn = jax.jit(jax.grad(loss, has_aux=True))
        grads, out_jax = grad_fn([jnp.asarray(state[n]) for n in names])
    assert scaled_difference([out_jax], [to_numpy(out_torch)])[1] <= F64_GATE
    torch_grads = [to_numpy(p.grad) for p in torch_model.parameters()]
    assert all(np.any(g != 0) for g in torch_grads)
    _, worst, _, where = scaled_difference(grads, torch_grads, names)
    assert worst <= F64_GATE, where


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("name", models.MODELS)
def test_model_run_passes_the_float64_gate_while_training(name, optimizer):
    steps, kwargs = TRAINING[name]
    result = twins.run_model(name, optimizer, kwargs[optimizer], steps=steps)
    assert result.error is None, result.error
    assert result.passed, (result.worst, result.where)
    assert (result.kind, result.model, result.optimizer, result.dtype) == (
        "model", name, optimizer, "float64"
    )  # fmt: skip
    for figures in (
        result.loss_torch, result.loss_jax, result.param_abs, result.param_scaled,
        result.param_rel, result.state_scaled,
    ):  # fmt: skip
        assert len(figures) == steps
    np.testing.assert_allclose(result.loss_jax, result.loss_torch, rtol=F64_GATE)
    assert np.mean(result.loss_torch[-3:]) < result.loss_torch[0] - 0.1
    assert 0 < result.worst <= F64_GATE
    assert result.where.startswith(("parameters after step", "optimizer state after step"))


def test_make_twins_draws_the_same_weights_whatever_torch_default_dtype():
    # torch draws other values in a float64 default; a leaked default once changed the runs
    with jax.enable_x64(True):
        reference = models.make_twins("transformer", "float64", seed=1)[0].state_dict()
        with torch_dtype("float64"):
            again = models.make_twins("transformer", "float64", seed=1)[0].state_dict()
    assert torch.get_default_dtype() == torch.float32
    assert all(torch.equal(reference[k], again[k]) for k in reference)


def test_the_jax_step_compiles_once_whatever_the_number_of_steps():
    compiles: list[str] = []

    def listen(event: str, duration: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        counts = []
        for steps in (2, 2, 6):  # the first run also compiles the eager operations it meets
            compiles.clear()
            assert twins.run_model("mlp", "sgd", {"lr": 0.1}, steps=steps).passed
            counts.append(len(compiles))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert counts[1] == counts[2] > 0, counts


def _transposed_out_projection(layer):
    """The attention binding, with torch's (square) out_proj.weight loaded untransposed."""
    binding = _original_attention(layer)
    flip = lambda arrays: {k: (v.T if k == "out_proj.weight" else v) for k, v in arrays.items()}
    return dataclasses.replace(
        binding,
        load=lambda arrays: binding.load(flip(arrays)),
        dump=lambda: flip(binding.dump()),
    )


_original_attention = weights._bind_attention


def test_a_transpose_planted_in_the_converter_fails_the_run(monkeypatch):
    monkeypatch.setattr(weights, "_bind_attention", _transposed_out_projection)
    result = twins.run_model("transformer", "sgd", {"lr": 0.1}, steps=3)
    assert result.error is None, result.error
    assert not result.passed
    assert result.loss_jax[0] != pytest.approx(result.loss_torch[0], rel=1e-9, abs=0)
    assert result.param_scaled[0] > 1e-6  # from the first step on
    assert result.where.startswith("parameters after step ")


def test_a_square_kernel_transposed_after_conversion_fails_the_run_naming_it(monkeypatch):
    original = models.make_twins

    def make_twins(*args, **kwargs):
        torch_model, nnx_model = original(*args, **kwargs)
        kernel = nnx_model.lstm.cell.hf.kernel  # 32 x 32: the shapes cannot tell
        kernel.set_value(kernel[...].T)
        return torch_model, nnx_model

    monkeypatch.setattr(models, "make_twins", make_twins)
    result = twins.run_model("lstm", "adam", {"lr": 0.01}, steps=2)
    assert result.error is None, result.error
    assert not result.passed and result.param_scaled[0] > 0.1
    assert result.where.startswith("parameters after step ")
    assert result.where.startswith("parameters after step 1: lstm.weight_hh_l0"), result.where


def test_an_unsupported_pair_is_an_error_result_not_a_crash():
    result = twins.run_model("mlp", "sparse_adam", {"lr": 0.01}, steps=2)
    assert result.error is not None and "sparse" in result.error
    assert not result.passed
    assert "sparse_adam" not in twins.optimizers_for("mlp")
    assert "sparse_adam" in twins.optimizers_for("transformer")


class _TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(5, 7)
        self.out = torch.nn.Linear(7, 3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


class _NnxNet(nnx.Module):
    def __init__(self, activation=jax.nn.relu) -> None:
        rngs = nnx.Rngs(0)
        self.hidden = nnx.Linear(5, 7, rngs=rngs)
        self.out = nnx.Linear(7, 3, rngs=rngs)
        self.activation = activation

    def __call__(self, x):
        return self.out(self.activation(self.hidden(x)))


def _user_data(steps: int = 6) -> list[tuple[object, object]]:
    rng = np.random.default_rng(0)
    return [
        (torch.as_tensor(rng.normal(size=(16, 5))), rng.integers(0, 3, size=16))
        for _ in range(steps)
    ]


def test_compare_passes_for_a_user_pair_and_leaves_both_models_alone():
    torch.manual_seed(0)
    torch_model, flax_model = _TorchNet(), _NnxNet()
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    kernel = np.asarray(flax_model.hidden.kernel[...])
    result = parity.compare(
        torch_model, flax_model,
        optimizer=functools.partial(torch.optim.RMSprop, lr=0.01, momentum=0.5, foreach=False),
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5),
        data=_user_data(), dtype="float64",
    )  # fmt: skip
    assert result.passed, (result.worst, result.where)
    assert (result.kind, result.optimizer, result.model, result.steps) == (
        "user", "rmsprop", "_TorchNet", 6
    )  # fmt: skip
    assert len(result.state_scaled) == 6 and result.seconds > 0
    assert all(torch.equal(v, before[k]) for k, v in torch_model.state_dict().items())
    np.testing.assert_array_equal(flax_model.hidden.kernel[...], kernel)


def test_compare_fails_when_the_models_differ():
    torch.manual_seed(0)
    result = parity.compare(
        _TorchNet(), _NnxNet(activation=jax.nn.gelu),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        data=_user_data(3), dtype="float64",
    )  # fmt: skip
    assert not result.passed and result.param_scaled[0] > 1e-6
    # the first step past the tolerance, with the parameter, then where the worst is
    worst_step = int(np.argmax(result.param_scaled)) + 1
    assert worst_step > 1, result.param_scaled  # else the test could not tell first from worst
    assert result.where.startswith("parameters after step 1: "), result.where
    assert f"parameters after step {worst_step}); " in result.where, result.where
    # the forward check on the first batch: the activation between the two layers differs
    assert "; forward check on the first batch: first difference at 'out' (Linear / Linear)" in (
        result.where
    )
    assert result.where.endswith(
        "the difference arises in the code between modules (the models' forward)"
    ), result.where
    assert result.worst == max(result.param_scaled)


def test_compare_fails_when_the_weights_differ():
    torch.manual_seed(0)
    result = parity.compare(
        _TorchNet(), _NnxNet(),
        optimizer=functools.partial(torch.optim.Adam, lr=0.01),
        data=_user_data(2), dtype="float64", load_weights=False,
    )  # fmt: skip
    assert not result.passed and result.worst > 1e-3


@pytest.mark.multiprocess
def test_importing_parity_imports_neither_torch_nor_jax():
    code = "import sys, parity; print(sorted({'torch', 'jax', 'flax'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_compare_own_model_example_runs_and_writes_a_report(tmp_path):
    out = subprocess.run(
        [sys.executable, "examples/compare_own_model.py", "--steps", "8", "--report", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS" in out.stdout
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report.md").is_file()


# -- parity.check_forward: the first module whose output differs --------------------------------


class _TorchSeqCNN(torch.nn.Module):
    """Sequential blocks with torch modules for the activation and the flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))

    def forward(self, x):
        return self.head(self.features(x))


def _flatten_nchw(x):  # torch's order: channels first
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


def _flatten_nhwc(x):  # the trap: same shape, other order
    return x.reshape(x.shape[0], -1)


class _NnxSeqCNN(nnx.Module):
    """The twin: nnx.Sequential blocks whose positions match torch's keys; functions where torch
    has the parameterless ReLU and Flatten modules."""

    def __init__(self, flatten) -> None:
        rngs = nnx.Rngs(0)
        f64 = jnp.float64
        self.features = nnx.Sequential(
            nnx.Conv(2, 4, (3, 3), padding="VALID", param_dtype=f64, rngs=rngs), jax.nn.relu
        )
        self.head = nnx.Sequential(flatten, nnx.Linear(4 * 4 * 4, 3, param_dtype=f64, rngs=rngs))

    def __call__(self, x):
        return self.head(self.features(x.transpose(0, 2, 3, 1)))


def _images(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2, 6, 6))


@pytest.fixture(scope="module")
def seq_cnn():
    torch.manual_seed(0)
    with jax.enable_x64(True):
        return _TorchSeqCNN().double(), {
            f.__name__: nnx.eval_shape(lambda f=f: _NnxSeqCNN(f))
            for f in (_flatten_nchw, _flatten_nhwc)
        }


def test_check_forward_passes_a_correct_twin_layer_by_layer(seq_cnn):
    torch_model, twins_ = seq_cnn
    check = parity.check_forward(torch_model, twins_["_flatten_nchw"], _images())
    assert check.passed and check.first is None and check.hint == "", str(check)
    names = [(x.name, x.torch_type, x.nnx_type) for x in check.layers]
    assert names == [
        ("features.0", "Conv2d", "Conv"),
        ("features", "Sequential", "Sequential"),
        ("head.1", "Linear", "Linear"),
        ("head", "Sequential", "Sequential"),
        ("", "_TorchSeqCNN", "_NnxSeqCNN"),
    ]
    assert all(x.output <= F64_GATE for x in check.layers)  # measured ≤ 1.8e-15
    assert check.layers[0].layout.startswith("channels last")  # conv output NCHW vs NHWC
    # torch modules that the twin replaces by functions are listed, not compared
    assert check.not_compared == ["'features.1' (ReLU)", "'head.0' (Flatten)"]
    assert "every compared output agrees" in check.summary()


def test_check_forward_names_the_layer_after_a_channels_last_flatten(seq_cnn):
    torch_model, twins_ = seq_cnn
    check = parity.check_forward(torch_model, twins_["_flatten_nhwc"], _images())
    assert not check.passed
    # the convolution still agrees; the first output that differs is the Linear's
    assert [x.output <= F64_GATE for x in check.layers[:2]] == [True, True]
    assert check.first.name == "head.1" and check.first.torch_type == "Linear"
    assert check.first.output > 1e-2 and check.first.input > 1e-2
    assert "the difference arises in the code between modules (the forward of 'head'" in check.hint
    assert (
        "its input is torch's with the features reordered as a channels-last flatten of 4 channels"
        " × 16 positions: torch flattens (N, C, H, W), here (5, 4, 4, 4) channels first"
    ) in check.hint
    assert (
        "Transpose to channels first before flattening (images: x.transpose(0, 3, 1, 2)"
        in check.hint
    )
    assert check.summary().startswith("first difference at 'head.1' (Linear / Linear): ")
    assert "✗ 'head.1'" in str(check)


class _ShuffledMLP(models.NnxMLP):
    """The MLP twin with its hidden features reversed before fc2: a permutation, not a flatten."""

    def __call__(self, x):
        return self.fc2(jnp.tanh(self.fc1(x))[:, ::-1])


class _NhwcFlattenCNN(models.NnxCNN):
    """The CNN twin flattening its pooled (N, 4, 4, 8) activation channels last."""

    def __call__(self, x):
        h = self.conv(x.transpose(0, 2, 3, 1))
        h = nnx.max_pool(jax.nn.relu(self.bn(h)), (2, 2), strides=(2, 2))
        return self.fc(h.reshape(h.shape[0], -1))


class _OtherEpsTransformer(models.NnxTransformer):
    """The transformer twin with Flax's default LayerNorm eps (1e-6) in norm1 instead of torch's."""

    def __init__(self, dtype, rngs):
        super().__init__(dtype, rngs)
        self.norm1 = nnx.LayerNorm(16, use_fast_variance=False, param_dtype=dtype, rngs=rngs)


@pytest.mark.parametrize(
    ("name", "planted", "first", "hint"),
    [
        ("mlp", _ShuffledMLP, "fc2", "its input holds torch's values per sample in another order"),
        ("transformer", _OtherEpsTransformer, "norm1", "its inputs agree, so the difference is inside this module"),
        # the pooled activation was never a module output: the 8 channels come from 'bn'
        ("cnn", _NhwcFlattenCNN, "fc", "channels-last flatten of 8 channels × 16 positions: torch flattens (N, C, H, W) channels first"),
        ("lstm", None, None, None),
        ("cnn", None, None, None),
    ],
)  # fmt: skip
def test_check_forward_on_the_suite_twins(name, planted, first, hint):
    batch = data.batches(name, 1, seed=3)[0]
    with jax.enable_x64(True):
        torch_model, twin = models.make_twins(name, "float64", seed=1)
        if planted is not None:
            twin = nnx.eval_shape(lambda: planted(jnp.float64, nnx.Rngs(0)))
    check = parity.check_forward(torch_model, twin, batch[:-1])
    if planted is None:  # nnx.RNN's cell runs under nnx.scan: the RNN itself is compared
        assert check.passed, str(check)
        assert max(x.output for x in check.layers) <= F64_GATE  # measured ≤ 2.9e-15
        return
    assert not check.passed and check.first.name == first, str(check)
    assert check.hint.startswith(hint) if "inside" in hint else hint in check.hint, check.hint


def test_compare_reports_the_forward_check_when_a_twin_trains_differently(seq_cnn):
    torch_model, twins_ = seq_cnn
    rng = np.random.default_rng(1)
    batches = [(_images(8, seed=k), rng.integers(0, 3, 8)) for k in range(2)]
    result = parity.compare(
        torch_model, twins_["_flatten_nhwc"],  # loads without complaint: the shapes match
        optimizer=functools.partial(torch.optim.SGD, lr=0.1), data=batches,
    )  # fmt: skip
    assert not result.passed and result.loss_jax[0] != pytest.approx(result.loss_torch[0])
    assert result.where.startswith("parameters after step 1: head.1."), result.where
    assert "; forward check on the first batch: first difference at 'head.1'" in result.where
    assert "channels-last flatten" in result.where


def test_check_forward_leaves_the_module_classes_as_they_were_even_when_the_twin_raises(seq_cnn):
    torch_model, _ = seq_cnn
    classes = (nnx.Conv, nnx.Linear, nnx.Sequential, _NnxSeqCNN)
    before = {cls: cls.__dict__.get("__call__") for cls in classes}

    def broken(x):
        raise RuntimeError("planted")

    with jax.enable_x64(True):
        twin = nnx.eval_shape(lambda: _NnxSeqCNN(broken))
    with pytest.raises(RuntimeError, match="planted"):
        parity.check_forward(torch_model, twin, _images())
    assert {cls: cls.__dict__.get("__call__") for cls in classes} == before
    assert "__call__" not in _NnxSeqCNN.__mro__[1].__dict__  # nnx.Module gained none


class _TorchShared(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Linear(4, 4)

    def forward(self, a, b):
        return self.f(a) + self.f(b)


class _NnxShared(nnx.Module):
    def __init__(self, scale) -> None:
        self.f = nnx.Linear(4, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        self.scale = scale

    def __call__(self, a, b):
        return self.f(a) + self.f(b * self.scale)


@pytest.mark.parametrize("scale", [1.0, 1.0001])
def test_check_forward_pairs_the_calls_of_a_module_called_twice(scale):
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(3, 4))
    with jax.enable_x64(True):
        twin = _NnxShared(scale)
    check = parity.check_forward(_TorchShared().double(), twin, (x, 2 * x))
    assert [(x.name, x.call) for x in check.layers] == [("f", 0), ("f", 1), ("", 0)]
    assert check.layers[0].output <= F64_GATE  # the first call agrees either way
    if scale == 1.0:
        assert check.passed, str(check)
    else:
        assert check.first.label == "'f' (call 2)" and check.first.input > 1e-5, str(check)
        assert "its input already differs" in check.hint
