"""jaxopt_port.transforms.param_groups against torch's param groups, on dicts and Flax models."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import max_abs_difference
from flax import nnx

from jaxopt_port import optim
from jaxopt_port.transforms import (
    describe_param_groups,
    is_bias_or_norm,
    no_weight_decay,
    param_group_labels,
    param_groups,
)
from parity.metric import F64_GATE

torch = pytest.importorskip("torch")

STEPS = 25
SHAPES = {
    "dense1": {"kernel": (4, 6), "bias": (6,)},
    "norm": {"scale": (6,), "bias": (6,)},
    "dense2": {"kernel": (6, 3), "bias": (3,)},
}
KERNELS = ["dense1/kernel", "dense2/kernel"]
NO_DECAY = ["dense1/bias", "norm/scale", "norm/bias", "dense2/bias"]


def _initial_params() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    params = {m: {k: rng.normal(size=s) * 0.5 for k, s in d.items()} for m, d in SHAPES.items()}
    params["norm"]["scale"] += 1.0
    return params


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(8, 4)), rng.normal(size=(8, 3))) for _ in range(STEPS)]


def _loss(p, x, target, xp):
    """Linear → LayerNorm → tanh → Linear, mean squared error; the same code for torch and jnp."""
    h = x @ p["dense1"]["kernel"] + p["dense1"]["bias"]
    mu = h.sum(-1)[..., None] / h.shape[-1]
    var = ((h - mu) ** 2).sum(-1)[..., None] / h.shape[-1]
    h = (h - mu) / (var + 1e-5) ** 0.5 * p["norm"]["scale"] + p["norm"]["bias"]
    y = xp.tanh(h) @ p["dense2"]["kernel"] + p["dense2"]["bias"]
    return ((y - target) ** 2).mean()


def _torch_run(torch_class, groups, **defaults) -> dict[str, np.ndarray]:
    """``groups``: ``[(paths, overrides)]``; paths not listed are given to no group (frozen)."""
    torch.set_default_dtype(torch.float64)  # float64 scalar state; conftest restores it
    init = _initial_params()
    params = {
        m: {k: torch.nn.Parameter(torch.tensor(v)) for k, v in d.items()} for m, d in init.items()
    }

    def by_path(path):
        module, name = path.split("/")
        return params[module][name]

    optimizer = torch_class(
        [{"params": [by_path(p) for p in paths], **over} for paths, over in groups],
        foreach=False,
        **defaults,
    )
    for x, target in _batches():
        optimizer.zero_grad()
        _loss(params, torch.tensor(x), torch.tensor(target), torch).backward()
        optimizer.step()
    return {f"{m}/{k}": v.detach().numpy() for m, d in params.items() for k, v in d.items()}


def _jax_run(tx: optax.GradientTransformation) -> dict[str, np.ndarray]:
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(jnp.asarray, _initial_params())
        state = tx.init(params)

        @jax.jit
        def step(params, state, x, target):
            grads = jax.grad(_loss)(params, x, target, jnp)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for x, target in _batches():
            params, state = step(params, state, jnp.asarray(x), jnp.asarray(target))
        return {f"{m}/{k}": np.asarray(v) for m, d in params.items() for k, v in d.items()}


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max_abs_difference(a, b)


# (torch class, torch groups, torch defaults, factory, jaxopt_port groups, param_groups kwargs)
PARITY_CASES = {
    "adamw decay / no-decay with its own lr": (
        torch.optim.AdamW,
        [(KERNELS, {}), (NO_DECAY, {"weight_decay": 0.0, "lr": 3e-2})],
        {"lr": 1e-2, "weight_decay": 0.05},
        optim.adamw,
        [{"params": is_bias_or_norm, "weight_decay": 0.0, "lr": 3e-2}],
        {"lr": 1e-2, "weight_decay": 0.05},
    ),
    "sgd momentum, patterns, every leaf in a group": (
        torch.optim.SGD,
        [(KERNELS, {"weight_decay": 1e-2}), (NO_DECAY, {"lr": 0.05, "momentum": 0.5})],
        {"lr": 0.1, "momentum": 0.9},
        optim.sgd,
        [
            {"params": "**/kernel", "weight_decay": 1e-2},
            {"params": ["*/bias", "norm/scale"], "lr": 0.05, "momentum": 0.5},
        ],
        {"lr": 0.1, "momentum": 0.9, "unmatched": "error"},
    ),
    "sgd, leaves in no group are frozen": (
        torch.optim.SGD,
        [(KERNELS, {}), (["norm/scale"], {"lr": 0.02})],
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "nesterov": True},
        optim.sgd,
        [{"params": "*/kernel"}, {"params": "norm/scale", "lr": 0.02}],
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "nesterov": True, "unmatched": "freeze"},
    ),
    "adagrad ignores a group's initial_accumulator_value, as torch does": (
        torch.optim.Adagrad,
        [(KERNELS, {}), (NO_DECAY, {"initial_accumulator_value": 3.0, "lr": 0.05})],
        {"lr": 0.1, "initial_accumulator_value": 0.1, "weight_decay": 1e-3},
        optim.adagrad,
        [{"params": is_bias_or_norm, "initial_accumulator_value": 3.0, "lr": 0.05}],
        {"lr": 0.1, "initial_accumulator_value": 0.1, "weight_decay": 1e-3},
    ),
}


@pytest.mark.parametrize("case", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_matches_torch_param_groups_float64(case):
    torch_class, torch_groups, torch_defaults, factory, groups, kwargs = case
    expected = _torch_run(torch_class, torch_groups, **torch_defaults)
    got = _jax_run(param_groups(factory, groups, **kwargs))
    # measured 1.8e-15 (adamw), 6.1e-16 / 8.9e-16 (sgd), 2.8e-16 (adagrad)
    assert _max_difference(got, expected) <= F64_GATE
    # the groups matter: one group with the constructor's arguments lands far from torch
    ungrouped = _jax_run(factory(**{k: v for k, v in kwargs.items() if k != "unmatched"}))
    assert _max_difference(ungrouped, expected) > 1e-4


def test_no_weight_decay_recipe_matches_torch_float64():
    expected = _torch_run(
        torch.optim.AdamW,
        [(KERNELS, {}), (NO_DECAY, {"weight_decay": 0.0})],
        lr=1e-2,
        weight_decay=0.1,
    )
    got = _jax_run(no_weight_decay(optim.adamw, lr=1e-2, weight_decay=0.1))
    assert _max_difference(got, expected) <= F64_GATE  # measured 5.6e-16


# ----------------------------------------------------------------------------- selection


class _NnxModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(10, 4, rngs=rngs)
        self.conv = nnx.Conv(4, 4, kernel_size=(3,), rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 2, use_bias=False, rngs=rngs)


NNX_NO_DECAY = [
    "blocks/0/bias",
    "blocks/1/bias",
    "bn/bias",
    "bn/scale",
    "conv/bias",
    "norm/bias",
    "norm/scale",
]
NNX_DECAY = ["blocks/0/kernel", "blocks/1/kernel", "conv/kernel", "embed/embedding", "head/kernel"]


def test_recipe_selects_biases_and_norm_scales_of_an_nnx_model():
    # abstract (ShapeDtypeStruct leaves): selection reads the structure only
    state = nnx.state(nnx.eval_shape(lambda: _NnxModel(nnx.Rngs(0))), nnx.Param)
    groups = [{"params": is_bias_or_norm, "weight_decay": 0.0}]
    expected = {"group0": NNX_NO_DECAY, "default": NNX_DECAY}
    assert describe_param_groups(groups, state) == expected
    # the same paths for the arrays nnx.Optimizer.update passes (Variables unwrapped)
    assert describe_param_groups(groups, nnx.as_pure(state)) == expected


class _LinenModel(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(10, 4)(tokens)
        h = nn.Conv(4, (3,))(h)
        h = nn.LayerNorm()(h)
        h = nn.Dense(4, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None,)))(
            h
        )
        h = nn.GroupNorm(num_groups=2)(h)
        return nn.Dense(2, use_bias=False)(h)


def test_recipe_selects_biases_and_norm_scales_of_linen_params():
    variables = jax.eval_shape(_LinenModel().init, jax.random.key(0), jnp.zeros((1, 5), jnp.int32))
    described = describe_param_groups([{"params": is_bias_or_norm}], variables["params"])
    assert described == {
        "group0": [
            "Conv_0/bias",
            "Dense_0/bias",
            "GroupNorm_0/bias",
            "GroupNorm_0/scale",
            "LayerNorm_0/bias",
            "LayerNorm_0/scale",
        ],
        # Dense_0's kernel is boxed in nn.Partitioned; it is named without the box's ".value"
        "default": ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel", "Embed_0/embedding"],
    }


class _Head(NamedTuple):
    w: jax.Array
    b: jax.Array


def _tree():
    layer = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    return {
        "encoder": {"layers": [layer, dict(layer)], "bias": jnp.zeros(2)},
        "head": _Head(jnp.zeros((2, 3)), jnp.zeros(3)),
        "bias": jnp.zeros(()),
    }


SELECTIONS = [
    ("*/bias", ["encoder/bias"]),
    ("**/bias", ["bias", "encoder/bias", "encoder/layers/0/bias", "encoder/layers/1/bias"]),
    ("encoder/**", ["encoder/bias", *(f"encoder/layers/{i}/{k}" for i in (0, 1) for k in ("bias", "kernel"))]),
    ("encoder/layers/?/k*", ["encoder/layers/0/kernel", "encoder/layers/1/kernel"]),
    ("head/[wb]", ["head/w", "head/b"]),
    ("encoder", []),  # anchored: a pattern matches whole paths only
    (["bias", "head/*"], ["bias", "head/w", "head/b"]),
    # the same rules on the names joined by "." (torch's and interop's spelling)
    ("*.bias", ["encoder/bias"]),
    ("**.bias", ["bias", "encoder/bias", "encoder/layers/0/bias", "encoder/layers/1/bias"]),
    ("encoder.layers.1.*", ["encoder/layers/1/bias", "encoder/layers/1/kernel"]),
    ("encoder.**", ["encoder/bias", *(f"encoder/layers/{i}/{k}" for i in (0, 1) for k in ("bias", "kernel"))]),
    ("encoder.layers", []),  # anchored
    (["head.w", "encoder/bias"], ["encoder/bias", "head/w"]),
    (lambda path, leaf: path[1:2] == ("layers",) and leaf.ndim == 2,
     ["encoder/layers/0/kernel", "encoder/layers/1/kernel"]),
]  # fmt: skip


@pytest.mark.parametrize(("selector", "selected"), SELECTIONS, ids=lambda s: str(s)[:20])
def test_selectors(selector, selected):
    tree = _tree()
    described = describe_param_groups([{"params": selector, "name": "picked"}], tree)
    assert described["picked"] == selected
    labels = param_group_labels([{"params": selector}], tree, allow_empty=not selected)
    assert jax.tree_util.tree_leaves(labels).count("group0") == len(selected)


def test_predicate_sees_path_names_and_the_leaf():
    seen = []
    describe_param_groups([{"params": lambda path, leaf: seen.append((path, leaf.shape))}], _tree())
    assert seen[:2] == [(("bias",), ()), (("encoder", "bias"), (2,))]
    assert (("head", "w"), (2, 3)) in seen and (
        ("encoder", "layers", "1", "kernel"),
        (2, 2),
    ) in seen


# ----------------------------------------------------------------------------- errors


def test_overlapping_groups_raise_torchs_error_naming_the_path_and_both_groups():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError) as torch_error:
        torch.optim.SGD([{"params": [p]}, {"params": [p], "lr": 0.1}], lr=1.0)
    groups = [{"params": "**/bias"}, {"params": is_bias_or_norm, "weight_decay": 0.0}]
    tx = param_groups(optim.adamw, groups)
    with pytest.raises(ValueError) as ours:
        tx.init(_tree())
    assert str(ours.value).startswith(str(torch_error.value))
    assert str(ours.value).endswith(
        "'bias' is selected by param group 0 ('**/bias') and param group 1 (is_bias_or_norm)"
    )


def test_unmatched_leaves_default_freeze_or_error():
    tree = _tree()
    groups = [{"params": "encoder/**", "lr": 0.5}]
    assert describe_param_groups(groups, tree)["default"] == ["bias", "head/w", "head/b"]
    assert describe_param_groups(groups, tree, unmatched="freeze")["frozen"] == [
        "bias",
        "head/w",
        "head/b",
    ]
    message = "3 parameter\\(s\\) are in no param group and unmatched='error': 'bias', 'head/w'"
    with pytest.raises(ValueError, match=message):
        param_groups(optim.sgd, groups, unmatched="error").init(tree)
    with pytest.raises(ValueError, match="unmatched must be"):
        param_groups(optim.sgd, groups, unmatched="ignore")


def test_group_selecting_nothing_raises_and_lists_the_paths():
    """Issue 12 item 4: a pattern in another spelling (here torch's "0.*" on a tree whose path is
    "dense1/kernel") selected nothing, silently."""
    params = jax.tree_util.tree_map(jnp.asarray, _initial_params())
    groups = [{"params": "**/bias", "weight_decay": 0.0}, {"params": "0.*", "lr": 9.0}]
    for tx in (param_groups(optim.adamw, groups), no_weight_decay(optim.adamw, "0.*")):
        index = 1 if len(tx.torch_groups) == 3 else 0
        with pytest.raises(ValueError) as info:
            tx.init(params)
        assert str(info.value) == (
            f"param group {index} ('0.*') selects no parameter: patterns are matched against each "
            "path joined by '/' (as listed) and by '.' ('dense1.bias' for 'dense1/bias'), "
            "anchored at both ends; the params have 6 leaves: 'dense1/bias', 'dense1/kernel', "
            "'dense2/bias', 'dense2/kernel', 'norm/bias', 'norm/scale'. Pass allow_empty=True to "
            "allow a group that selects nothing (torch allows an empty 'params' list)."
        )
    with pytest.raises(ValueError, match=r"param group 0 \(<lambda>\) selects no parameter: the"):
        param_group_labels([{"params": lambda path, leaf: leaf.ndim > 2}], params)
    # describe_param_groups is the tool to look: it shows the empty group instead of raising
    assert describe_param_groups(groups, params)["group1"] == []


def test_group_selecting_nothing_is_allowed_with_allow_empty_as_in_torch():
    p = torch.nn.Parameter(torch.zeros(2))
    assert (
        len(torch.optim.SGD([{"params": [p]}, {"params": [], "lr": 0.1}], lr=1.0).param_groups) == 2
    )
    groups = [{"params": "*/kernel", "weight_decay": 0.0}]
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(jnp.asarray, _initial_params())
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        tx = param_groups(
            optim.adamw, [*groups, {"params": "missing/**", "lr": 9.0}], allow_empty=True
        )
        reference = param_groups(optim.adamw, groups)
        got, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        want, _ = jax.jit(reference.update)(grads, reference.init(params), params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    tx = no_weight_decay(optim.adamw, "missing", allow_empty=True)
    assert jax.tree_util.tree_leaves(tx.init(params)) != []


def test_migration_guide_head_group_on_torch_names_and_on_an_nnx_twin():
    """docs/migration.md's per-group lr, ``{"params": "3.*"}``, on its dict of torch names; on an
    ``nnx.Sequential`` twin the same layer is ``layers/3/...`` ("layers.3.*")."""
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 1)
    )
    params = {name: jnp.asarray(p.detach().numpy()) for name, p in model.named_parameters()}
    head = [{"params": "3.*", "lr": 1e-2}]
    assert describe_param_groups(head, params)["group0"] == ["3.bias", "3.weight"]
    param_groups(optim.sgd, head, lr=1e-3, momentum=0.9).init(params)

    twin = nnx.Sequential(
        nnx.Linear(4, 16, rngs=nnx.Rngs(0)),
        jnp.tanh,
        nnx.LayerNorm(16, rngs=nnx.Rngs(0)),
        nnx.Linear(16, 1, rngs=nnx.Rngs(0)),
    )
    state = nnx.state(twin, nnx.Param)
    with pytest.raises(ValueError, match=r"\('3\.\*'\) selects no parameter: .* 'layers/0/bias'"):
        nnx.Optimizer(twin, param_groups(optim.sgd, head, lr=1e-3), wrt=nnx.Param)
    head = [{"params": "layers.3.*", "lr": 1e-2}]
    assert describe_param_groups(head, state)["group0"] == ["layers/3/bias", "layers/3/kernel"]
    nnx.Optimizer(twin, param_groups(optim.sgd, head, lr=1e-3, momentum=0.9), wrt=nnx.Param)


def test_invalid_groups_raise_at_construction():
    with pytest.raises(TypeError, match=r"param group 1 has hyperparameter\(s\) \['betas'\]"):
        param_groups(optim.sgd, [{"params": "a"}, {"params": "b", "betas": (0.9, 0.99)}])
    with pytest.raises(TypeError, match=r"the constructor has hyperparameter\(s\) \['mom'\]"):
        param_groups(optim.sgd, [], mom=0.9)
    with pytest.raises(ValueError, match="param group 0 has no 'params' selector"):
        param_groups(optim.sgd, [{"lr": 0.1}])
    with pytest.raises(TypeError, match="groups select leaves by path"):
        param_groups(optim.sgd, [{"params": [jnp.zeros(2)]}])
    with pytest.raises(ValueError, match="'name' must be a str other than 'default'"):
        param_groups(optim.sgd, [{"params": "a", "name": "default"}])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):  # the factory's, at once
        param_groups(optim.adamw, [{"params": "a", "lr": -1}])


def test_value_dependent_predicate_is_rejected_under_jit():
    tx = param_groups(optim.sgd, [{"params": lambda path, leaf: bool(leaf.sum() > 0)}])
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="may only use the path, shape and dtype"):
        jax.jit(tx.init)(params)


# ----------------------------------------------------------------------------- contract


def test_compiles_once_and_keeps_state_structure():
    tx = no_weight_decay(optim.adamw, lr=1e-2, weight_decay=0.05)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), _initial_params())
    traces = 0

    @jax.jit
    def step(params, state):
        nonlocal traces
        traces += 1
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    structure = jax.tree_util.tree_structure(state)
    abstract = jax.eval_shape(
        tx.init, jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    )
    assert jax.tree_util.tree_structure(abstract) == structure
    for _ in range(4):
        params, state = step(params, state)
    assert traces == 1
    assert jax.tree_util.tree_structure(state) == structure
    assert set(state.inner_states) == {"no_decay", "default"}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


class _NnxMlp(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        kw = {"rngs": rngs, "param_dtype": jnp.float64, "dtype": jnp.float64}
        self.l1 = nnx.Linear(4, 6, **kw)
        self.norm = nnx.LayerNorm(6, **kw)
        self.l2 = nnx.Linear(6, 3, **kw)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.norm(self.l1(x))))


def test_flax_nnx_optimizer_equals_the_functional_loop():
    def loss(model, x):
        return ((model(x) - 1.0) ** 2).mean()

    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 4)))
    tx = param_groups(
        optim.adamw,
        [{"params": is_bias_or_norm, "weight_decay": 0.0}, {"params": "l1/kernel", "lr": 3e-2}],
        lr=1e-2,
        weight_decay=0.1,
    )
    with jax.enable_x64(True):
        model = _NnxMlp(nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        params = start = nnx.as_pure(params)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def nnx_step(model, optimizer):
            optimizer.update(model, nnx.grad(loss)(model, x))

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: loss(nnx.merge(graphdef, p), x))(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        for _ in range(5):
            nnx_step(model, optimizer)
            params, state = step(params, state)
        got = nnx.as_pure(nnx.state(model, nnx.Param))
        moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), got, start)
    assert set(optimizer.opt_state.inner_states) == {"group0", "group1", "default"}
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-14), got, params
    )
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-4  # every group trained
