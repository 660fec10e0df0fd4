"""jaxopt_port.transforms clipping against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_port import optim, transforms
from parity.metric import F64_GATE
from parity.specs.problems import make_problem

torch = pytest.importorskip("torch")

NORM_TYPES = [2.0, 1.0, 3.0, 0.5, 0.0, float("inf"), float("-inf")]


def _grads(seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=shape) for shape in [(4, 3), (3,), (), (2, 2, 2)]]


def _torch_clip(grads, max_norm, norm_type, dtype=torch.float64):
    params = [torch.zeros(g.shape, dtype=dtype, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g, dtype=dtype)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    return [p.grad.double().numpy() for p in params], float(norm)


@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clipping", "not clipping"])
def test_clip_grad_norm_matches_torch_float64(norm_type, max_norm):
    grads = _grads()
    expected, expected_norm = _torch_clip(grads, max_norm, norm_type)
    with jax.enable_x64(True):
        clipped, norm = transforms.clip_grad_norm_(
            [jnp.asarray(g) for g in grads], max_norm, norm_type
        )
        np.testing.assert_allclose(float(norm), expected_norm, rtol=1e-13, atol=0)
        for got, want in zip(clipped, expected, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")], ids=str)
def test_clip_grad_norm_float32_within_measured_tolerance(norm_type):
    grads = [g.astype(np.float32) for g in _grads(1, scale=3.0)]
    expected, _ = _torch_clip(grads, 0.5, norm_type, torch.float32)
    clipped, _ = transforms.clip_grad_norm_([jnp.asarray(g) for g in grads], 0.5, norm_type)
    worst = max(
        float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(clipped, expected, strict=True)
    )
    # measured 0 (bitwise equal) for both norms here; 1e-7, about one float32 ulp of these values,
    # leaves room for another summation order of the 2-norm on other CPUs
    assert worst <= 1e-7, worst


def test_clipping_uses_torchs_epsilon_not_optaxs_plain_ratio():
    """torch scales by max_norm / (norm + 1e-6): a relative 1e-6/norm below optax's factor."""
    with jax.enable_x64(True):
        grads = [jnp.array([3.0, 4.0])]  # norm 5
        clipped, _ = transforms.clip_grad_norm_(grads, 1.0)
        optax_clipped, _ = optax.clip_by_global_norm(1.0).update(grads, None)
        np.testing.assert_allclose(
            np.asarray(clipped[0]), np.array([3.0, 4.0]) / (5 + 1e-6), rtol=1e-15
        )
        assert not np.allclose(
            np.asarray(clipped[0]), np.asarray(optax_clipped[0]), rtol=1e-8, atol=0
        )


def test_clip_grad_value_matches_torch():
    grads = _grads(2, scale=2.0)
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(params, 0.7)
    with jax.enable_x64(True):
        clipped = transforms.clip_grad_value_([jnp.asarray(g) for g in grads], 0.7)
        tx_clipped, _ = transforms.clip_grad_value(0.7).update(
            [jnp.asarray(g) for g in grads], optax.EmptyState()
        )
    for a, b, p in zip(clipped, tx_clipped, params, strict=True):
        np.testing.assert_array_equal(np.asarray(a), p.grad.numpy())
        np.testing.assert_array_equal(np.asarray(b), p.grad.numpy())


def test_nonfinite_norm_raises_torchs_error_eagerly_and_under_jit():
    grads = [np.array([1.0, np.inf]), np.array([2.0])]
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g)
    with pytest.raises(RuntimeError) as torch_error:
        torch.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    jax_grads = [jnp.asarray(g, jnp.float32) for g in grads]
    with pytest.raises(RuntimeError) as ours:
        transforms.clip_grad_norm_(jax_grads, 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(torch_error.value)
    tx = transforms.clip_grad_norm(1.0, error_if_nonfinite=True)
    step = jax.jit(tx.update)
    with pytest.raises(Exception, match="is non-finite, so it cannot be clipped"):
        jax.block_until_ready(step(jax_grads, tx.init(jax_grads)))
    # without the flag, torch and JAX both scale by the non-finite norm (NaN and zeros here)
    clipped, norm = transforms.clip_grad_norm_(jax_grads, 1.0)
    assert np.isinf(float(norm)) and np.isnan(np.asarray(clipped[0])[1])


def test_no_gradients_have_norm_zero():
    assert float(transforms.total_norm({})) == 0.0 == float(torch.nn.utils.clip_grad_norm_([], 1.0))


def test_clipped_sgd_trains_as_torch_does():
    """50 steps: loss.backward(); clip_grad_norm_(params, 0.5); SGD momentum step — float64."""
    problem = make_problem("mlp", 50)
    params = [torch.nn.Parameter(torch.tensor(p)) for p in problem.params]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    torch_norms = []
    for batch in problem.batches:
        optimizer.zero_grad()
        problem.torch_loss(params, batch).backward()
        torch_norms.append(float(torch.nn.utils.clip_grad_norm_(params, 0.5)))
        optimizer.step()
    with jax.enable_x64(True):
        tx = optax.chain(transforms.clip_grad_norm(0.5), optim.sgd(lr=0.1, momentum=0.9))
        jax_params = [jnp.asarray(p) for p in problem.params]
        state = tx.init(jax_params)

        @jax.jit
        def step(p, state, batch):
            grads = jax.grad(problem.jax_loss)(p, *batch)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        jax_norms = []
        for batch in problem.batches:
            jax_params, state = step(jax_params, state, [jnp.asarray(b) for b in batch])
            jax_norms.append(float(state[0].total_norm))
    assert sum(n > 0.5 for n in torch_norms) > 10, "the run should clip on many steps"
    np.testing.assert_allclose(jax_norms, torch_norms, rtol=F64_GATE)
    for a, b in zip(jax_params, params, strict=True):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=0, atol=F64_GATE)
