"""Every optimizer is a well-behaved Optax transformation.

For each spec: compiles once, keeps the parameter dtype and a stable state, initializes from
``jax.ShapeDtypeStruct``, and gives the same numbers inside optax's wrappers and
``flax.nnx.Optimizer`` as on its own.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _helpers import assert_close

from jaxopt_port import optim
from parity.specs.optim import SPECS
from parity.specs.problems import make_problem

SPEC_IDS = [pytest.param(s, id=s.name) for s in SPECS]


def _kwargs(s):
    """The spec's ``example_kwargs`` with its ``jax_extra_kwargs`` (Muon's Newton–Schulz in
    float32 here; tests/test_optim_special.py covers bfloat16)."""
    return {**s.example_kwargs, **s.jax_extra_kwargs}


def _setup(s, dtype=jnp.float32):
    problem = make_problem(s.problem, steps=4)
    params = [jnp.asarray(p, dtype) for p in problem.params]
    batches = [tuple(jnp.asarray(b) for b in batch) for batch in problem.batches]
    return problem, params, batches


def _update(s, tx, problem, params, state, batch):
    """One update; LBFGS gets its value and value_fn."""
    loss = functools.partial(lambda b, p: problem.jax_loss(p, *b), batch)
    value, grads = jax.value_and_grad(loss)(params)
    if s.step_requires_closure:
        return tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
    return tx.update(grads, state, params)


def _train(s, tx, steps=3, dtype=jnp.float32):
    problem, params, batches = _setup(s, dtype)
    state = tx.init(params)
    for k in range(steps):
        updates, state = _update(s, tx, problem, params, state, batches[k])
        params = optax.apply_updates(params, updates)
    return params, state


def _factory(s, **overrides):
    return getattr(optim, s.name)(**{**_kwargs(s), **overrides})


@pytest.mark.parametrize("s", SPEC_IDS)
def test_compiles_once(s):
    problem, params, batches = _setup(s)
    tx = _factory(s)
    traces = 0

    @jax.jit
    def step(params, state, batch):
        nonlocal traces
        traces += 1
        updates, state = _update(s, tx, problem, params, state, batch)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for batch in batches:
        params, state = step(params, state, batch)
    assert traces == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("s", SPEC_IDS)
def test_keeps_dtype_and_state_structure(s, dtype):
    with jax.enable_x64(dtype == "float64"):
        problem, params, batches = _setup(s, jnp.dtype(dtype))
        tx = _factory(s)
        state = tx.init(params)
        updates, new_state = _update(s, tx, problem, params, state, batches[0])
        assert [u.dtype for u in updates] == [p.dtype for p in params]
        chex.assert_trees_all_equal_structs(state, new_state)
        chex.assert_trees_all_equal_dtypes(state, new_state)
        chex.assert_trees_all_equal_shapes(state, new_state)


@pytest.mark.parametrize("s", SPEC_IDS)
def test_init_on_shape_dtype_struct(s):
    _, params, _ = _setup(s)
    tx = _factory(s)
    abstract = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params]
    expected = jax.eval_shape(tx.init, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(tx.init(abstract), expected)
    chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(tx.init, abstract), expected)


@pytest.mark.parametrize("s", SPEC_IDS)
def test_inside_chain(s):
    plain, _ = _train(s, _factory(s))
    chained, _ = _train(s, optax.chain(optax.identity(), _factory(s), optax.identity()))
    assert_close(chained, plain)


@pytest.mark.parametrize("s", SPEC_IDS)
def test_inject_hyperparams(s):
    lr = _kwargs(s).get("lr", 0.01)
    kwargs = {k: v for k, v in _kwargs(s).items() if k != "lr"}
    factory = getattr(optim, s.name)
    plain, _ = _train(s, factory(lr=lr, **kwargs))
    tx = optax.inject_hyperparams(factory, static_args=s.static_args)(lr=lr, **kwargs)
    injected, state = _train(s, tx)
    # Identical arithmetic: hyperparameters arrive as float32 arrays instead of Python floats.
    assert_close(injected, plain, atol=5e-7)  # measured ≤ 1.2e-7 (1 ulp at |θ| ≈ 1), most bitwise
    assert float(state.hyperparams["lr"]) == pytest.approx(lr)


@pytest.mark.parametrize("s", [p for p in SPEC_IDS if not p.values[0].step_requires_closure])
def test_multi_steps_averages_micro_batches(s):
    problem, params, batches = _setup(s)
    tx = _factory(s)
    loss = lambda p, b: problem.jax_loss(p, *b)
    g1, g2 = (jax.grad(loss)(params, b) for b in batches[:2])
    updates, _ = tx.update(
        jax.tree_util.tree_map(lambda a, b: (a + b) / 2, g1, g2), tx.init(params), params
    )
    expected = optax.apply_updates(params, updates)
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    state = multi.init(params)
    p = params
    for g in (g1, g2):
        u, state = multi.update(g, state, p)
        p = optax.apply_updates(p, u)
    assert_close(p, expected, atol=5e-7)  # the mean is formed in another order: measured ≤ 1.2e-7


@pytest.mark.parametrize("s", SPEC_IDS)
def test_apply_if_finite_skips_a_nan_step(s):
    problem, params, batches = _setup(s)
    tx = optax.apply_if_finite(_factory(s), max_consecutive_errors=3)
    state = tx.init(params)
    nan_grads = [jnp.full_like(p, jnp.nan) for p in params]
    if s.step_requires_closure:
        updates, state = tx.update(
            nan_grads, state, params, value=jnp.nan, grad=nan_grads, value_fn=lambda p: 0.0
        )
    else:
        updates, state = tx.update(nan_grads, state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in updates)
    assert int(state.notfinite_count) == 1
    updates, state = _update(s, tx, problem, params, state, batches[0])
    expected, _ = _train(s, _factory(s), steps=1)
    # Under apply_if_finite's select XLA fuses differently: measured ≤ 6e-8 (1 ulp), most bitwise.
    assert_close(optax.apply_updates(params, updates), expected, atol=5e-7)


@pytest.mark.parametrize(
    "s",
    [
        p
        for p in SPEC_IDS
        if not p.values[0].step_requires_closure and p.values[0].takes != "sparse"
    ],
)
def test_flax_nnx_optimizer(s):
    from flax import nnx

    use_bias = s.takes != "matrices"  # Muon takes 2-D parameters only
    model = nnx.Linear(4, 3, use_bias=use_bias, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 4))
    y = jax.random.normal(jax.random.key(2), (8, 3))
    loss = lambda m: jnp.mean((m(x) - y) ** 2)
    tx = _factory(s)
    params = nnx.state(model, nnx.Param)
    state = tx.init(params)
    for _ in range(3):
        grads = nnx.grad(lambda p: loss(nnx.merge(nnx.graphdef(model), p)))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    optimizer = nnx.Optimizer(model, _factory(s), wrt=nnx.Param)
    for _ in range(3):
        optimizer.update(model, nnx.grad(loss)(model))
    assert_close(nnx.state(model, nnx.Param), params)
