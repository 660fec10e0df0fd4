"""torchao's low-bit optimizer states through `interop`: codes and scales copied bitwise both
ways, and a run resumed torchao → JAX → torchao that continues as the unbroken torchao run."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from test_optim_lowbit import CLASSES, KWARGS, eager_torchao, step_ulps

from jaxopt_port import interop, optim

with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
    warnings.simplefilter("ignore")
    torchao_optim = pytest.importorskip("torchao.optim")

#: one state above torchao's size rule (8192 values: quantized) and one below (231: plain)
SHAPES = [(64, 128), (33, 7)]
LR = 1e-2
TORCH_STEPS, JAX_STEPS, RESUMED_STEPS = 3, 4, 3


@pytest.fixture(scope="module")
def grads():
    rng = np.random.default_rng(7)
    steps = TORCH_STEPS + JAX_STEPS + RESUMED_STEPS
    return [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]


@pytest.fixture(scope="module")
def start():
    rng = np.random.default_rng(8)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def torchao_steps(opt, tensors, grads):
    with eager_torchao():
        for step_grads in grads:
            for p, g in zip(tensors, step_grads, strict=True):
                p.grad = torch.tensor(g).to(p.dtype)
            opt.step()


def new_torchao(cls, values, dtype=torch.float32, **kwargs):
    tensors = [
        torch.nn.Parameter(torch.tensor(np.asarray(v, np.float32)).to(dtype)) for v in values
    ]
    return getattr(torchao_optim, cls)(tensors, lr=LR, **{**KWARGS, **kwargs}), tensors


def as_bytes(tensor):
    """A tensor's data as bytes (any dtype: FP8 codes, bfloat16 states)."""
    return tensor.detach().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_torchao_state(mine, theirs):
    """Every field of two torchao state entries equal bitwise: the type, its appearance dtype and
    shape, codes, scales, and for 8/4-bit the map and signedness."""
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        got = mine[key]
        assert type(got) is type(value), key
        assert got.dtype == value.dtype and got.shape == value.shape, key
        if hasattr(value, "codes"):
            assert got.codes.dtype == value.codes.dtype and got.codes.shape == value.codes.shape
            assert got.block_size == value.block_size, key
            for field in ("codes", "scale", "qmap"):
                if hasattr(value, field):
                    assert as_bytes(getattr(got, field)) == as_bytes(getattr(value, field)), key
            assert getattr(got, "signed", None) == getattr(value, "signed", None), key
        else:
            assert as_bytes(got) == as_bytes(value), key


#: the six classes, then bfloat16 parameters with stochastic rounding (whose JAX PRNG key torch
#: has no counterpart for: it stays out of torch's state)
FIELD_CASES = [(name, cls, {}, torch.float32) for name, cls, _ in CLASSES] + [
    ("adamw8bit", "AdamW8bit", {"bf16_stochastic_round": True}, torch.bfloat16),
]


@pytest.mark.parametrize(("name", "cls", "kwargs", "dtype"), FIELD_CASES)
def test_every_field_converts_bitwise_both_ways(name, cls, kwargs, dtype, start, grads):
    opt, tensors = new_torchao(cls, start, dtype, **kwargs)
    torchao_steps(opt, tensors, grads[:TORCH_STEPS])
    state_dict = opt.state_dict()
    jax_dtype = jnp.bfloat16 if dtype == torch.bfloat16 else jnp.float32
    params = [jnp.asarray(p.detach().float().numpy(), jax_dtype) for p in tensors]
    tx = optim.from_torch(opt)
    state = interop.optimizer_state_from_torch(state_dict, tx, params)

    big, small = (state_dict["state"][i] for i in (0, 1))
    assert float(state.step) == float(big["step"]) == TORCH_STEPS
    assert set(big) == {"step", "exp_avg", "exp_avg_sq"}
    for key in ("exp_avg", "exp_avg_sq"):
        quantized = getattr(state, key)[0]
        assert isinstance(quantized, optim.QuantizedArray)
        assert as_bytes(big[key].codes) == np.asarray(quantized.codes).tobytes()
        assert as_bytes(big[key].scale) == np.asarray(quantized.scale).tobytes()
        plain = getattr(state, key)[1]
        assert plain.dtype == jax_dtype and np.asarray(plain).tobytes() == as_bytes(small[key])
    # the factory's state has the same structure as from_torch's
    factory_tx = getattr(optim, name)(lr=LR, **KWARGS, **kwargs)
    assert jax.tree.structure(factory_tx.init(params)) == jax.tree.structure(state)

    view = optim.per_param_state(state, params)
    assert isinstance(view[0]["exp_avg"], optim.QuantizedArray) and view[1]["step"] == TORCH_STEPS

    back = interop.optimizer_state_to_torch(state, tx, params)
    assert back["state"].keys() == state_dict["state"].keys()
    for i in state_dict["state"]:
        assert_same_torchao_state(back["state"][i], state_dict["state"][i])
    assert isinstance(back["param_groups"][0]["lr"], torch.Tensor)  # torchao's step needs one
    fresh, _ = new_torchao(cls, start, dtype, **kwargs)
    fresh.load_state_dict(back)
    for i, p in enumerate(fresh.param_groups[0]["params"]):
        assert_same_torchao_state(fresh.state[p], state_dict["state"][i])


@pytest.mark.parametrize(("name", "cls"), [("adamw4bit", "AdamW4bit"), ("adam8bit", "Adam8bit")])
def test_amsgrad_state_goes_to_torchao_and_back(name, cls, start, grads):
    """AMSGrad's `max_exp_avg_sq` (torchao's eager step cannot make one: `torch.maximum` is not
    implemented for its tensors, so the state starts in JAX): JAX → torchao → JAX is bitwise."""
    tx = getattr(optim, name)(lr=LR, amsgrad=True, **KWARGS)
    params = [jnp.asarray(p) for p in start]
    state = tx.init(params)
    for step_grads in grads[:TORCH_STEPS]:
        updates, state = tx.update([jnp.asarray(g) for g in step_grads], state, params)
        params = optax.apply_updates(params, updates)
    opt, _ = new_torchao(cls, params, amsgrad=True)
    opt.load_state_dict(interop.optimizer_state_to_torch(state, tx, params))
    state_dict = opt.state_dict()
    stored = state_dict["state"][0]["max_exp_avg_sq"]
    assert type(stored) is type(state_dict["state"][0]["exp_avg"]) and stored.signed is False
    assert state_dict["state"][0]["exp_avg"].signed is True
    again = interop.optimizer_state_from_torch(state_dict, optim.from_torch(opt), params)
    same = jax.tree.map(
        lambda a, b: np.asarray(a).tobytes() == np.asarray(b).tobytes(), again, state
    )
    assert all(jax.tree.leaves(same))


@pytest.mark.parametrize("name", ["adamw8bit", "adam4bit", "adamw_fp8"])
def test_resumed_run_continues_the_torchao_run(name, start, grads):
    """torchao steps, then JAX steps from the converted state, then torchao again from the state
    converted back: the parameters are those of the torchao run never interrupted."""
    cls = next(c for n, c, _ in CLASSES if n == name)
    unbroken, unbroken_tensors = new_torchao(cls, start)
    torchao_steps(unbroken, unbroken_tensors, grads)

    opt, tensors = new_torchao(cls, start)
    torchao_steps(opt, tensors, grads[:TORCH_STEPS])
    tx = optim.from_torch(opt)
    params = [jnp.asarray(p.detach().numpy()) for p in tensors]
    state = interop.optimizer_state_from_torch(opt.state_dict(), tx, params)

    @jax.jit
    def run(params, state, grads):
        def body(carry, g):
            p, s = carry
            updates, s = tx.update(g, s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (params, state), grads)[0]

    middle = grads[TORCH_STEPS : TORCH_STEPS + JAX_STEPS]
    stacked = [jnp.asarray(np.stack(g)) for g in zip(*middle, strict=True)]
    params, state = run(params, state, stacked)
    assert float(state.step) == TORCH_STEPS + JAX_STEPS

    resumed, resumed_tensors = new_torchao(cls, params)
    resumed.load_state_dict(interop.optimizer_state_to_torch(state, tx, params))
    torchao_steps(resumed, resumed_tensors, grads[TORCH_STEPS + JAX_STEPS :])

    sizes = []
    for mine, theirs in zip(resumed_tensors, unbroken_tensors, strict=True):
        a, b = mine.detach().numpy(), theirs.detach().numpy()
        sizes.append(step_ulps(a, b, LR))
    # the bound tests/test_optim_lowbit.py uses for JAX steps against torchao's eager ones;
    # measured here: 2 step-ulps (8-bit), 1 (4-bit), 1 (FP8) on the large tensor, 0 on the small
    assert max(sizes) <= 16, sizes


def test_mismatched_storage_names_the_entry(start, grads):
    opt, tensors = new_torchao("AdamW8bit", start)
    torchao_steps(opt, tensors, grads[:1])
    state_dict = opt.state_dict()
    params = [jnp.asarray(p.detach().numpy()) for p in tensors]
    cases = [
        # another block size: 32 scales of 256 values, the state expects 64 of 128
        (optim.adamw8bit(block_size=128), r"state\[0\]\['exp_avg'\].*block size 256.*block size 128"),
        # another storage: 8-bit codes in the parameter's shape, the state expects packed 4-bit
        (optim.adamw4bit(), r"state\[0\]\['exp_avg'\].*8-bit codes \(64, 128\).*4-bit codes \(4096,\)"),
        # a block size that does not divide 8192: the state is plain, torch's is quantized
        (optim.adamw8bit(block_size=5000), r"state\[0\]\['exp_avg'\].*OptimState8bit.*expects it plain"),
    ]  # fmt: skip
    for tx, message in cases:
        with pytest.raises(ValueError, match=message):
            interop.optimizer_state_from_torch(state_dict, tx, params)
    # torch's plain state where the jaxopt_port state is quantized
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\].*plain tensor.*quantized"):
        interop.optimizer_state_from_torch(
            torch.optim.AdamW([torch.nn.Parameter(t.detach().clone()) for t in tensors]).state_dict()
            | {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(64, 128), "exp_avg_sq": torch.zeros(64, 128)}}},
            optim.adamw8bit(),
            params,
        )  # fmt: skip
