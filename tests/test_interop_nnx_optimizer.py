"""jaxopt_port.interop.nnx_optimizer: a torch optimizer's state <-> flax.nnx.Optimizer on an NNX twin.

The resume test is issue 12's second "Done when": an NNX twin of a torch CNN (Conv, BatchNorm,
Linear), torch AdamW / SGD with momentum in two param groups (no weight decay on biases and norms)
and a scheduler; K torch steps, then the nnx.Optimizer, J JAX steps, back to torch through a plain
``load_state_dict``, L more torch steps: equal to one unbroken torch run in float64. The layout
test checks the state of every layer kind the weight converter knows against the weight converter
itself, and the round trip bit for bit.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import max_abs_difference
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxopt_port import interop, optim, schedules
from jaxopt_port.optim import per_param_state
from jaxopt_port.transforms import no_weight_decay, param_groups
from parity.metric import F64_GATE
from parity.run.optim import torch_dtype

torch = pytest.importorskip("torch", reason="these tests compare against torch")
nn = torch.nn

# The float64 gate. Measured: parameters at most 1.1e-16, optimizer state 1.7e-16 (SGD's
# momentum_buffer; AdamW's 4.2e-17) after K + J + L = 8 steps, every tensor of both cases.
K, J, L = 3, 3, 2


pytestmark = pytest.mark.usefixtures("torch_float64")


class TorchCNN(nn.Module):
    """Conv (no bias: BatchNorm follows, and a bias there only has a zero gradient whose
    rounding noise Adam amplifies to ~1e-10) -> BatchNorm -> ReLU -> flatten -> Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class NnxCNN(nnx.Module):
    """The twin, channels-last, in training mode; it flattens in torch's (C, H, W) order."""

    def __init__(self):
        kw = {"param_dtype": jnp.float64, "rngs": nnx.Rngs(0)}
        self.conv = nnx.Conv(1, 4, (3, 3), strides=2, padding=[(1, 1)] * 2, use_bias=False, **kw)
        self.bn = nnx.BatchNorm(4, momentum=interop.flax_batchnorm_momentum(0.1), epsilon=1e-5, **kw)  # fmt: skip
        self.fc = nnx.Linear(64, 10, **kw)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return self.fc(h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1))


def _twin() -> NnxCNN:
    """Abstract (no random initializers run): the torch weights make it concrete."""
    with jax.enable_x64(True):
        return nnx.eval_shape(NnxCNN)


_rng = np.random.default_rng(0)
BATCHES = [(_rng.normal(size=(16, 1, 8, 8)), _rng.integers(0, 10, 16)) for _ in range(K + J + L)]


def _groups(model, named):
    """torch's usual pair: weight decay on kernels, none on biases and norm weights."""

    def pick(decay):
        return [
            (n, p) if named else p for n, p in model.named_parameters() if (p.ndim > 1) == decay
        ]

    return [{"params": pick(True)}, {"params": pick(False), "weight_decay": 0.0}]


CASES = {
    # torch optimizer and scheduler; the same in jaxopt_port; how the torch parameters are named
    "adamw_cosine": dict(
        torch=lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
        tx=lambda: no_weight_decay(
            optim.adamw, lr=schedules.cosine_annealing_lr(1e-2, T_max=10), weight_decay=0.1
        ),
        named=False,  # names by identity through torch_model=
        existing=False,
        kwargs={},
    ),
    "sgd_momentum_step": dict(
        torch=lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        tx=lambda: no_weight_decay(
            optim.sgd,
            lr=schedules.step_lr(0.05, step_size=2, gamma=0.5),
            momentum=0.9,
            weight_decay=1e-3,
        ),
        named=True,  # built from named_parameters(): its state_dict names them
        existing=True,  # fill an nnx.Optimizer built beforehand
        # torch's SGD keeps no step: the count comes from the scheduler (K steps taken).
        kwargs={"scheduler": "torch"},
    ),
}


class _TorchRun:
    def __init__(self, case, weights):
        self.model = TorchCNN()
        self.model.load_state_dict(weights)
        self.optimizer = case["torch"](_groups(self.model, case["named"]))
        self.scheduler = case["scheduler"](self.optimizer)

    def step(self, i):
        x, y = BATCHES[i]
        self.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.model(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()

    def by_name(self):
        """name -> (parameter, its optimizer state)."""
        return {
            n: (
                p.detach().numpy().copy(),
                {k: v.detach().numpy().copy() for k, v in self.optimizer.state[p].items()},
            )
            for n, p in self.model.named_parameters()
        }


@nnx.jit
def _jax_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))


@pytest.mark.parametrize("name", CASES)
def test_resume_through_nnx_optimizer_equals_unbroken_torch(name):
    case = CASES[name]
    torch.manual_seed(0)
    weights = copy.deepcopy(TorchCNN().state_dict())
    reference = _TorchRun(case, weights)
    for i in range(K + J):
        reference.step(i)
    middle = reference.by_name()
    for i in range(K + J, K + J + L):
        reference.step(i)

    first = _TorchRun(case, weights)
    for i in range(K):
        first.step(i)
    model = _twin()
    with jax.enable_x64(True):
        interop.weights_from_torch(model, first.model.state_dict())
        tx = case["tx"]()
        if case["existing"]:
            tx = nnx.Optimizer(model, tx, wrt=nnx.Param)
        torch_model = None if case["named"] else first.model
        optimizer = interop.nnx_optimizer_from_torch(
            first.optimizer, model, tx, torch_model=torch_model,
            **{k: first.scheduler if v == "torch" else v for k, v in case["kwargs"].items()},
        )  # fmt: skip
        assert optimizer is tx or not case["existing"]
        assert int(optimizer.step[...]) == K
        for i in range(K, K + J):
            x, y = BATCHES[i]
            _jax_step(model, optimizer, jnp.asarray(np.moveaxis(x, 1, -1)), jnp.asarray(y))
        jax_weights = interop.weights_to_numpy(model)

        last = _TorchRun(case, {k: torch.from_numpy(v) for k, v in jax_weights.items()})
        state_dict = interop.nnx_optimizer_to_torch(
            optimizer, model, last.optimizer, torch_model=None if case["named"] else last.model
        )
    last.optimizer.load_state_dict(state_dict)
    interop.position_scheduler(last.scheduler, nnx.as_pure(optimizer.opt_state))
    for i in range(K + J, K + J + L):
        last.step(i)

    for n, (p, _) in middle.items():  # the JAX steps themselves
        assert max_abs_difference(jax_weights[n], p) <= F64_GATE, n
    resumed = last.by_name()
    assert set(resumed) == set(reference.by_name())
    for n, (p, state) in reference.by_name().items():
        q, resumed_state = resumed[n]
        assert max_abs_difference(q, p) <= F64_GATE, n
        assert set(resumed_state) == set(state), n
        for key, value in state.items():
            assert max_abs_difference(resumed_state[key], value) <= F64_GATE, (n, key)
    assert [g["lr"] for g in last.optimizer.param_groups] == pytest.approx(
        [g["lr"] for g in reference.optimizer.param_groups], rel=1e-14
    )
    assert [g["weight_decay"] for g in last.optimizer.param_groups] == [
        g["weight_decay"] for g in reference.optimizer.param_groups
    ]


# ----------------------------------------------------------------------------- every layout


class TorchZoo(nn.Module):
    """One of every layer kind the weight converter maps (RNNs without biases: see below)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, (2, 3))
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.flipped = nn.ConvTranspose1d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.ln = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.embed = nn.Embedding(5, 4)
        self.attn = nn.MultiheadAttention(4, 2)
        self.lstm = nn.LSTM(4, 3, num_layers=2, bias=False)
        self.gru = nn.GRU(3, 2, bias=False)
        self.head = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


class NnxZoo(nnx.Module):
    def __init__(self):
        kw = {"param_dtype": jnp.float64, "rngs": nnx.Rngs(0)}
        self.conv = nnx.Conv(2, 3, (2, 3), **kw)
        self.up = nnx.ConvTranspose(3, 2, (2, 2), strides=2, transpose_kernel=True, **kw)
        self.flipped = nnx.ConvTranspose(2, 3, (3,), transpose_kernel=False, **kw)
        self.bn = nnx.BatchNorm(3, **kw)
        self.ln = nnx.LayerNorm(4, **kw)
        self.gn = nnx.GroupNorm(4, num_groups=2, **kw)
        self.embed = nnx.Embed(5, 4, **kw)
        self.attn = nnx.MultiHeadAttention(2, 4, decode=False, **kw)
        self.lstm = nnx.List([nnx.RNN(nnx.LSTMCell(4, 3, **kw)), nnx.RNN(nnx.LSTMCell(3, 3, **kw))])
        self.gru = nnx.RNN(nnx.GRUCell(3, 2, **kw))
        self.head = nnx.Sequential(nnx.Linear(4, 3, **kw), jnp.tanh, nnx.Linear(3, 2, **kw))


def _zoo(state_dict) -> NnxZoo:
    with jax.enable_x64(True):
        model = nnx.eval_shape(NnxZoo)
        interop.weights_from_torch(model, state_dict)
    return model


def _not_rnn_bias(path, leaf):
    """The NNX cells' biases: torch's bias=False RNNs have none to train, so tx freezes them."""
    return not (path[0] in ("lstm", "gru") and path[-1] == "bias")


ZOO_OPTIMIZERS = {
    # torch optimizer, its state for a parameter (scalars shared, as torch's are), the same in JAX
    "adam_amsgrad": (
        lambda params: torch.optim.Adam(params, lr=1e-3, amsgrad=True),
        lambda p, g: {
            "step": torch.tensor(3.0),
            "exp_avg": torch.randn_like(p, generator=g),
            "exp_avg_sq": torch.rand_like(p, generator=g),
            "max_exp_avg_sq": torch.rand_like(p, generator=g),
        },
        lambda: param_groups(
            optim.adam, [{"params": _not_rnn_bias}], unmatched="freeze", lr=1e-3, amsgrad=True
        ),
    ),
    "asgd": (
        lambda params: torch.optim.ASGD(params, lr=1e-2),
        lambda p, g: {
            "step": torch.tensor(3.0),
            "eta": torch.tensor(0.0099),
            "mu": torch.tensor(1.0),
            "ax": torch.randn_like(p, generator=g),
        },
        lambda: param_groups(optim.asgd, [{"params": _not_rnn_bias}], unmatched="freeze", lr=1e-2),
    ),
}


@pytest.mark.parametrize("name", ZOO_OPTIMIZERS)
def test_state_follows_each_weight_layout_and_round_trips_bitwise(name):
    make_torch, make_state, make_tx = ZOO_OPTIMIZERS[name]
    torch_model = TorchZoo()
    torch_optimizer = make_torch(torch_model.parameters())
    g = torch.Generator().manual_seed(0)
    for p in torch_model.parameters():
        torch_optimizer.state[p] = make_state(p, g)
    model = _zoo(torch_model.state_dict())
    with jax.enable_x64(True):
        optimizer = interop.nnx_optimizer_from_torch(
            torch_optimizer, model, make_tx(), torch_model=torch_model
        )
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        leaves = per_param_state(nnx.as_pure(optimizer.opt_state), params)
        paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]  # fmt: skip
        frozen = [not _not_rnn_bias(tuple(str(k.key) for k in path), None) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]  # fmt: skip
        assert sum(frozen) == 9  # 4 gate biases per LSTM layer, the GRU cell's input bias
        # Each per-element entry, loaded as if it were the weights, is what the NNX state holds.
        sample = torch_optimizer.state[next(torch_model.parameters())]
        for key, value in sample.items():
            if value.ndim == 0:
                for leaf, skip in zip(leaves, frozen, strict=True):
                    assert skip or float(leaf[key]) == float(value), key
                continue
            as_weights = dict(torch_model.state_dict())
            as_weights.update({n: torch_optimizer.state[p][key] for n, p in torch_model.named_parameters()})  # fmt: skip
            expected = jax.tree_util.tree_leaves(nnx.as_pure(nnx.state(_zoo(as_weights), nnx.Param)))  # fmt: skip
            for path, leaf, want, skip in zip(paths, leaves, expected, frozen, strict=True):
                if skip:
                    assert leaf == {}, path
                else:
                    np.testing.assert_array_equal(leaf[key], want, err_msg=f"{path} {key}")
        back = interop.nnx_optimizer_to_torch(optimizer, model, torch_optimizer, torch_model=torch_model)  # fmt: skip
    original = torch_optimizer.state_dict()
    assert set(back["state"]) == set(original["state"])
    for i, entries in original["state"].items():
        assert set(back["state"][i]) == set(entries), i
        for key, value in entries.items():
            assert back["state"][i][key].dtype == value.dtype, (i, key)
            assert torch.equal(back["state"][i][key], value), (i, key)
    assert [g["params"] for g in back["param_groups"]] == [g["params"] for g in original["param_groups"]]  # fmt: skip
    fresh = make_torch(TorchZoo().parameters())
    fresh.load_state_dict(back)
    assert fresh.param_groups[0]["lr"] == torch_optimizer.param_groups[0]["lr"]


# ----------------------------------------------------------------------------- L-BFGS


def test_lbfgs_flat_vectors_follow_the_nnx_flattening_round_trip_and_resume():
    """torch flattens its parameters in its order and layout, optim.lbfgs ravels the NNX leaves
    (sorted paths, NNX layout): each flat vector is permuted element for element."""
    torch_model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    torch_optimizer = torch.optim.LBFGS(torch_model.parameters(), history_size=3, max_iter=4)
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 2)

    def closure():
        torch_optimizer.zero_grad()
        loss = ((torch_model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    torch_optimizer.step(closure)
    torch_state = torch_optimizer.state_dict()["state"][0]
    assert len(torch_state["old_dirs"]) >= 2

    def twin():
        kw = {"param_dtype": jnp.float64, "rngs": nnx.Rngs(0)}
        return nnx.Sequential(nnx.Linear(3, 4, **kw), jnp.tanh, nnx.Linear(4, 2, **kw))

    def nnx_flat(torch_flat):
        """A torch-ordered flat vector, split into torch's parameters, loaded as the weights of
        a twin and raveled as optim.lbfgs ravels its params."""
        sizes = np.cumsum([p.numel() for p in torch_model.parameters()])[:-1]
        pieces = np.split(torch_flat.numpy(), sizes)
        named = [(n, p.shape) for n, p in torch_model.named_parameters()]
        with jax.enable_x64(True):
            other = nnx.eval_shape(twin)
            weights = {n: piece.reshape(s) for (n, s), piece in zip(named, pieces, strict=True)}
            interop.weights_from_torch(other, weights)
            return ravel_pytree(nnx.as_pure(nnx.state(other, nnx.Param)))[0]

    with jax.enable_x64(True):
        model = nnx.eval_shape(twin)
        interop.weights_from_torch(model, torch_model.state_dict())
        tx = optim.lbfgs(history_size=3, max_iter=4)
        optimizer = interop.nnx_optimizer_from_torch(
            torch_optimizer, model, tx, torch_model=torch_model
        )
        state = nnx.as_pure(optimizer.opt_state)
        np.testing.assert_array_equal(state.d, nnx_flat(torch_state["d"]))
        np.testing.assert_array_equal(state.prev_flat_grad, nnx_flat(torch_state["prev_flat_grad"]))
        for k, vector in enumerate(torch_state["old_dirs"]):
            np.testing.assert_array_equal(state.old_dirs[k], nnx_flat(vector))
        for k, vector in enumerate(torch_state["old_stps"]):
            np.testing.assert_array_equal(state.old_stps[k], nnx_flat(vector))
        assert float(state.H_diag) == float(torch_state["H_diag"])
        back = interop.nnx_optimizer_to_torch(optimizer, model, torch_optimizer, torch_model=torch_model)  # fmt: skip
    for key, value in torch_state.items():
        if key == "al":  # torch's scratch buffer, not state (recomputed every iteration)
            continue
        mine = back["state"][0][key]
        if isinstance(value, list):
            assert len(mine) == len(value) and all(map(torch.equal, mine, value)), key
        elif isinstance(value, torch.Tensor):
            assert torch.equal(mine, value), key
        else:
            assert mine == value, key

    # And the resumed L-BFGS takes torch's next step (measured 6.7e-16 in the weights: the same
    # algorithm, with dot products summed in another coordinate order).
    torch_optimizer.step(closure)
    with jax.enable_x64(True):
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        loss = lambda params: jnp.mean((nnx.merge(graphdef, params, rest)(xj) - yj) ** 2)
        _lbfgs_step(model, optimizer, loss)
        weights = interop.weights_to_numpy(model)
    for name, value in torch_model.state_dict().items():
        assert max_abs_difference(weights[name], value.numpy()) <= F64_GATE, name


@nnx.jit(static_argnums=2)
def _lbfgs_step(model, optimizer, loss):
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    value, grad = jax.value_and_grad(loss)(params)
    optimizer.update(model, grad, value=value, grad=grad, value_fn=loss)


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def cnn():
    """A torch CNN stepped once by AdamW in two groups, and its twin."""
    with torch_dtype("float64"):  # module scope: restored here, not by conftest's per-test reset
        return _cnn()


def _cnn():
    torch.manual_seed(0)
    torch_model = TorchCNN()
    torch_optimizer = torch.optim.AdamW(_groups(torch_model, named=False), lr=1e-2, weight_decay=0.1)  # fmt: skip
    x, y = BATCHES[0]
    nn.functional.cross_entropy(torch_model(torch.tensor(x)), torch.tensor(y)).backward()
    torch_optimizer.step()
    model = _twin()
    with jax.enable_x64(True):
        interop.weights_from_torch(model, torch_model.state_dict())
    return torch_model, torch_optimizer, model


def _adamw(**kwargs):
    return no_weight_decay(optim.adamw, **{"lr": 1e-2, "weight_decay": 0.1, **kwargs})


def _from_torch(torch_optimizer, model, tx, **kwargs):
    with jax.enable_x64(True):
        return interop.nnx_optimizer_from_torch(torch_optimizer, model, tx, **kwargs)


def test_errors_name_what_was_wrong(cnn):
    torch_model, torch_optimizer, model = cnn
    with pytest.raises(TypeError, match=r"expects a torch optimizer or its state_dict.*got the torch module TorchCNN"):  # fmt: skip
        _from_torch(torch_model, model, _adamw(), torch_model=torch_model)
    with pytest.raises(TypeError, match=r"with keys \['conv.weight'.*a model's state_dict\?"):
        _from_torch(torch_model.state_dict(), model, _adamw(), torch_model=torch_model)
    with pytest.raises(ValueError, match=r"needs the torch name of each .* pass torch_model="):
        _from_torch(torch_optimizer.state_dict(), model, _adamw())
    with pytest.raises(ValueError, match=r"state_dict has 2 param groups .* pass the live torch"):
        _from_torch(torch_optimizer.state_dict(), model, _adamw(), torch_model=torch_model)
    with pytest.raises(ValueError, match=r"no counterpart in the NNX NnxCNN, whose torch keys are"):
        names = ["conv.weight", "fc.weight", "bn.weight", "bn.bias", "head.bias"]
        _from_torch(torch_optimizer.state_dict(), model, _adamw(), torch_model=names)
    # One group in tx, two in torch: the biases would get the kernels' weight decay.
    with pytest.raises(ValueError, match=r"tx's param group 0 holds the NNX leaves 'bn/bias' \(torch 'bn.bias', torch param group 1\) and 'conv/kernel' \(torch 'conv.weight', torch param group 0\).*transforms.param_groups"):  # fmt: skip
        _from_torch(torch_optimizer, model, optim.adamw(lr=1e-2, weight_decay=0.1), torch_model=torch_model)  # fmt: skip
    with pytest.raises(ValueError, match=r"'default' has weight_decay=0.05, the torch param group 0 .* weight_decay=0.1"):  # fmt: skip
        _from_torch(torch_optimizer, model, _adamw(weight_decay=0.05), torch_model=torch_model)
    with pytest.raises(ValueError, match=r"has lr=0.02, .* has lr=0.01 \(a torch scheduler moves it: give tx the schedule"):  # fmt: skip
        _from_torch(torch_optimizer, model, _adamw(lr=0.02), torch_model=torch_model)
    with pytest.raises(ValueError, match=r"has amsgrad=True, .* has amsgrad=False"):
        _from_torch(torch_optimizer, model, _adamw(amsgrad=True), torch_model=torch_model)
    only_fc = nnx.All(nnx.Param, nnx.PathContains("fc"))
    with pytest.raises(ValueError, match=r"holds \['bn.bias', 'bn.weight', 'conv.weight'\], but their NNX variables are not all in the nnx.Optimizer's wrt filter"):  # fmt: skip
        _from_torch(torch_optimizer, model, _adamw(), torch_model=torch_model, wrt=only_fc)
    with pytest.raises(TypeError, match=r"expects an nnx.Optimizer, got dict"):
        interop.nnx_optimizer_to_torch({}, model, torch_optimizer, torch_model=torch_model)


def test_an_error_leaves_the_nnx_optimizer_as_it_was(cnn):
    torch_model, torch_optimizer, model = cnn
    with jax.enable_x64(True):
        optimizer = nnx.Optimizer(model, _adamw(weight_decay=0.05), wrt=nnx.Param)
    before = jax.tree_util.tree_leaves(nnx.as_pure(optimizer.opt_state))
    with pytest.raises(ValueError, match="weight_decay"):
        _from_torch(torch_optimizer, model, optimizer, torch_model=torch_model)
    after = jax.tree_util.tree_leaves(nnx.as_pure(optimizer.opt_state))
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert int(optimizer.step[...]) == 0


def test_parameters_torch_does_not_train_must_be_frozen_in_tx(cnn):
    torch_model, _, model = cnn
    trained = [p for n, p in torch_model.named_parameters() if not n.startswith("bn.")]
    torch_optimizer = torch.optim.AdamW(trained, lr=1e-2, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"tx optimizes the NNX leaf 'bn/bias', which holds no parameter of the torch optimizer.*unmatched='freeze'"):  # fmt: skip
        _from_torch(torch_optimizer, model, optim.adamw(lr=1e-2, weight_decay=0.0), torch_model=torch_model)  # fmt: skip
    tx = param_groups(optim.adamw, [{"params": ["conv/**", "fc/**"]}], unmatched="freeze", lr=1e-2, weight_decay=0.0)  # fmt: skip
    optimizer = _from_torch(torch_optimizer, model, tx, torch_model=torch_model)
    assert int(optimizer.step[...]) == 0
    frozen = param_groups(optim.adamw, [{"params": ["conv/**"]}], unmatched="freeze", lr=1e-2, weight_decay=0.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"the torch optimizer trains \['fc.bias'\] \(NNX leaf 'fc/bias'\), which tx freezes"):  # fmt: skip
        _from_torch(torch_optimizer, model, frozen, torch_model=torch_model)


def _stepped(torch_model, torch_optimizer, *inputs):
    out = torch_model(*inputs)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    torch_optimizer.step()
    return torch_optimizer


def test_state_without_an_nnx_counterpart_raises():
    # An RNN cell's one bias is torch's bias_ih + bias_hh: two parameters, two states.
    lstm = nn.LSTM(3, 2, batch_first=True)
    optimizer = _stepped(lstm, torch.optim.Adam(lstm.parameters()), torch.ones(1, 2, 3))
    with jax.enable_x64(True):
        cell = nnx.eval_shape(lambda: nnx.RNN(nnx.LSTMCell(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))))  # fmt: skip
        interop.weights_from_torch(cell, lstm.state_dict())
    with pytest.raises(ValueError, match=r"bias_ih_l0 \+ bias_hh_l0 \(RNN at <root>\): the NNX cell holds their sum"):  # fmt: skip
        _from_torch(optimizer, cell, optim.adam(), torch_model=lstm)
    # Adafactor's row_var / col_var average over torch's last two axes: other axes in NNX.
    linear = nn.Linear(3, 2)
    optimizer = _stepped(linear, torch.optim.Adafactor(linear.parameters()), torch.ones(1, 3))
    with jax.enable_x64(True):
        twin = nnx.eval_shape(lambda: nnx.Linear(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))  # fmt: skip
        interop.weights_from_torch(twin, linear.state_dict())
    with pytest.raises(ValueError, match=r"state\[0\]\['row_var'\] of the torch parameter 'weight' has shape \(2, 1\).*Adafactor"):  # fmt: skip
        _from_torch(optimizer, twin, optim.adafactor(), torch_model=linear)


def test_names_of_a_wrapped_torch_model_lose_the_wrapper_prefix(cnn):
    torch_model, torch_optimizer, model = cnn
    wrapped = nn.DataParallel(torch_model)  # named_parameters: module.conv.weight, ...
    assert next(wrapped.named_parameters())[0] == "module.conv.weight"
    optimizer = _from_torch(torch_optimizer, model, _adamw(), torch_model=wrapped)
    with jax.enable_x64(True):
        back = interop.nnx_optimizer_to_torch(optimizer, model, torch_optimizer, torch_model=wrapped)  # fmt: skip
    for i, entries in torch_optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            assert torch.equal(back["state"][i][key], value), (i, key)
