"""Compiled once: eager L-BFGS updates, eagerly evaluated schedules, every optimizer called eagerly.

Used the torch way — a Python loop calling ``tx.update`` without ``jax.jit`` around it — L-BFGS
once compiled its loops on every call (~0.9 s a step) and never freed the code: after a few hundred
steps LLVM could not allocate and the interpreter crashed. Here: memory maps and compilations over
300 eager steps, 300 instances and 300 schedule counts (in a subprocess, tests/compile_worker.py);
what the compile cache keys on (one compilation per options and loss structure, none per closure,
data or instance; a host callback or a changed Python constant is a new entry, never a stale one);
that the eager update returns bit for bit the jitted update's numbers; schedules and every other
optimizer compile nothing per eager call.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _subprocess import run_json

from jaxopt_port import optim, schedules
from jaxopt_port.optim._compile_cache import CompileCache
from parity.specs.optim import SPECS

lbfgs_module = importlib.import_module("jaxopt_port.optim.lbfgs")

#: Memory-map growth allowed over 300 eager calls. Measured: 0 for each loop (L-BFGS steps,
#: L-BFGS instances, schedule counts). Before the fix each eager L-BFGS step or new instance
#: compiled once and added ~96 maps (this loss, no line search; ~210 with strong_wolfe), each
#: MultiplicativeLR count ~5: the worker gave up after 51 steps at 4898 maps.
MAP_GROWTH = 50


@contextlib.contextmanager
def counting_compiles():
    """Counts XLA compilations (backend compiles) in the block: ``with ... as n: ...; n[0]``."""
    count = [0]

    def listener(event: str, duration: float, **kwargs) -> None:
        count[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts lines of /proc/self/maps")
def test_300_eager_steps_instances_and_schedule_counts_keep_memory_maps_flat():
    result = run_json(
        ["tests/compile_worker.py", "300", "lbfgs_steps", "lbfgs_instances", "schedule_counts"],
        devices=1,
        timeout=300,
    )
    for what, got in result.items():
        assert got["calls"] == 300, f"{what}: gave up after {got['calls']} calls, {got}"
        assert got["compiles"] == 0, f"{what}: {got}"
        assert got["maps"] <= MAP_GROWTH, f"{what}: {got}"


# ----------------------------------------------------------------------------------------------
# What the eager L-BFGS step compiles for.


def _least_squares(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(12, 4)), dtype), jnp.asarray(rng.normal(size=12), dtype)


def _residuals(a, b):
    """A new closure over the data, as a torch loop builds its ``closure`` each step."""
    return lambda p: jnp.sum((a @ p - b) ** 2)


def _eager_step(tx, state, params, value_fn):
    value, grad = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
    return optax.apply_updates(params, updates), state


def test_eager_lbfgs_compiles_once_per_options_and_loss_structure():
    cache = lbfgs_module._COMPILED
    make = lambda **kw: optim.lbfgs(**{"max_iter": 4, "history_size": 3, "lr": 0.5, **kw})
    params = jnp.zeros(4)
    tx = make()
    state = tx.init(params)
    start = cache.misses
    with counting_compiles() as compiles:
        for seed in range(4):  # a new closure and new data each step: one compilation in all
            a, b = _least_squares(seed)
            params, state = _eager_step(tx, state, params, _residuals(a, b))
        first = compiles[0]
    assert cache.misses == start + 1
    with counting_compiles() as compiles:
        for seed in range(3):  # new instances with the same options: none
            a, b = _least_squares(seed)
            tx = make()
            _eager_step(tx, tx.init(params), params, _residuals(a, b))
        assert compiles[0] == 0, "a new instance compiled again"
    assert cache.misses == start + 1
    assert first >= 1

    # under the caller's jit the update is traced in, the cache is not used
    a, b = _least_squares(0)

    @jax.jit
    def jitted(params, state, a, b):
        value_fn = lambda p: jnp.sum((a @ p - b) ** 2)
        value, grad = jax.value_and_grad(value_fn)(params)
        return tx.update(grad, state, params, value=value, value_fn=value_fn)

    jitted(params, state, a, b)
    assert cache.misses == start + 1

    # another option, another loss structure, another Python constant: one compilation each
    _eager_step(
        make(history_size=2),
        make(history_size=2).init(params),
        params,
        lambda p: 0.0 + jnp.sum((a @ p - b) ** 2),
    )
    assert cache.misses == start + 2
    _eager_step(tx, state, params, lambda p: jnp.sum(jnp.abs(a @ p - b)))
    assert cache.misses == start + 3


def test_integer_options_given_as_arrays_compile_once():
    """``optax.inject_hyperparams`` without ``static_args`` passes max_iter and history_size as
    0-d integer arrays (a new lbfgs instance each update): keyed by value, not compiled per call."""
    tx = optax.inject_hyperparams(optim.lbfgs)(lr=0.5, max_iter=4, history_size=3)
    params = jnp.zeros(4)
    state = tx.init(params)
    params, state = _eager_step(tx, state, params, _residuals(*_least_squares(0)))
    with counting_compiles() as compiles:
        for seed in range(1, 4):
            params, state = _eager_step(tx, state, params, _residuals(*_least_squares(seed)))
    assert compiles[0] == 0


def test_a_changed_python_constant_or_host_function_is_never_reused():
    """The structural key must not hand back code compiled for other values: a closed-over Python
    float is part of the code (a literal), a ``pure_callback``'s host function is keyed by identity.

    Known answers: L-BFGS's first iteration from 0 on ``s·Σ(p − c)²`` moves by ``t·2s·c`` per entry,
    ``t = min(1, 1/‖g‖₁)`` (lr 1), so ``p₁ = c·min(1, 1/(4s·|c|))·2s`` for 2 entries.
    """
    tx = optim.lbfgs(max_iter=1)
    params = jnp.zeros(2)
    cache = lbfgs_module._COMPILED

    def expected(s, c):
        return np.full(2, c * min(1.0, 1.0 / (4 * s * abs(c))) * 2 * s)

    def towards(c):
        return lambda p: jnp.sum((p - c) ** 2)

    for c in (0.1, 2.0):  # a Python float closed over: a new entry per value
        start = cache.misses
        got, _ = _eager_step(tx, tx.init(params), params, towards(c))
        np.testing.assert_allclose(np.asarray(got), expected(1.0, c), rtol=1e-6)
        assert cache.misses == start + 1

    def with_host_scale(s):
        host = lambda: np.asarray(s, np.float32)  # a new host function per scale

        def value_fn(p):
            scale = jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32))
            return scale * jnp.sum((p - 0.1) ** 2)

        return value_fn

    first, second = with_host_scale(0.5), with_host_scale(3.0)
    for value_fn, s in ((first, 0.5), (second, 3.0), (first, 0.5)):
        got, _ = _eager_step(tx, tx.init(params), params, value_fn)
        np.testing.assert_allclose(np.asarray(got), expected(s, 0.1), rtol=1e-6)


def _loss(p, a, b):
    # logsumexp and relu carry custom derivative rules (custom_jvp), resolved when traced
    r = a @ p["w"] + p["c"] - b
    return jnp.sum(r**2) + 0.1 * jnp.sum(p["w"] ** 4) + 0.1 * jax.nn.logsumexp(jax.nn.relu(r))


def _eager_and_jitted_runs(tx, dtype):
    """Three updates eagerly and under jit, from the same gradients, with new data each step."""
    value_and_grad = jax.jit(jax.value_and_grad(_loss))

    def update(params, state, a, b, value, grad):
        value_fn = lambda p: _loss(p, a, b)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
        return optax.apply_updates(params, updates), state

    runs = []
    for step in (update, jax.jit(update)):
        params = {"w": jnp.zeros(4, dtype), "c": jnp.ones([], dtype)}
        state = tx.init(params)
        for seed in range(3):
            a, b = _least_squares(seed, dtype)
            value, grad = value_and_grad(params, a, b)
            params, state = step(params, state, a, b, value, grad)
        runs.append(jax.tree_util.tree_leaves((params, state)))
    return runs


@pytest.mark.slow
def test_eager_update_returns_the_jitted_update_bit_for_bit():
    """Same inputs, new data each step: the eager step with its data hoisted equals the update
    traced into the caller's jit, in every leaf (both line searches and dtypes, a TorchSchedule,
    hyperparameters as arrays)."""
    with jax.enable_x64(True):
        tx = optim.lbfgs(
            lr=schedules.step_lr(0.5, 2, 0.5), line_search_fn="strong_wolfe", max_iter=6,
            history_size=3,
        )  # fmt: skip
        eager, jitted = _eager_and_jitted_runs(tx, jnp.float64)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(j))
    # lr and tolerances as float32 arrays, and a new lbfgs instance at every update
    tx = optax.inject_hyperparams(optim.lbfgs, static_args=("max_iter", "history_size"))(
        lr=0.7, max_iter=5, history_size=2, tolerance_change=1e-12
    )
    eager, jitted = _eager_and_jitted_runs(tx, jnp.float32)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(j))


def test_compile_cache_keeps_the_most_recently_used():
    cache = CompileCache(maxsize=3)
    for key in "abcd":
        cache.get(key, lambda key=key: key.upper())
    assert len(cache) == 3 and cache.misses == 4
    assert cache.get("b", lambda: "rebuilt") == "B"  # kept, now the most recent
    cache.get("e", lambda: "E")  # drops c, the least recently used
    assert cache.get("c", lambda: "rebuilt") == "rebuilt"
    assert cache.get("b", lambda: "rebuilt") == "B"
    assert cache.misses == 6


# ----------------------------------------------------------------------------------------------
# Schedules and the other optimizers, evaluated eagerly.

EAGER_SCHEDULES = {
    # loops over the count: MultiplicativeLR's product, warm restarts' growing periods
    "multiplicative": lambda: schedules.multiplicative_lr(0.1, lambda epoch: 0.95),
    "warm restarts T_mult=2": lambda: schedules.cosine_annealing_warm_restarts(0.1, 3, T_mult=2),
    "sequential": lambda: schedules.sequential_lr(
        [schedules.linear_lr(0.1), schedules.multiplicative_lr(0.1, lambda e: 0.9)], [4]
    ),
    "per epoch": lambda: schedules.multiplicative_lr(0.1, lambda e: 0.9, steps_per_epoch=3),
    # x ** count with a concrete count is lax.integer_pow, a compilation per exponent
    "lambda 0.95**epoch": lambda: schedules.lambda_lr(0.1, lambda epoch: 0.95**epoch),
    "one cycle (lr and momentum)": lambda: schedules.one_cycle_lr(0.1, total_steps=40),
}


@pytest.mark.parametrize("make", EAGER_SCHEDULES.values(), ids=list(EAGER_SCHEDULES))
def test_eager_schedule_compiles_once_and_gives_the_jitted_values(make):
    counts = 40
    with jax.enable_x64(True):
        schedule = make()
        with counting_compiles() as compiles:
            eager = [schedule(jnp.asarray(k, jnp.int32)) for k in range(counts)]
            momenta = (
                [schedule.momentum(jnp.asarray(k, jnp.int32)) for k in range(counts)]
                if schedule.cycles_momentum
                else []
            )
        assert compiles[0] <= 1 + bool(momenta), f"{compiles[0]} compilations for {counts} counts"
        # the values tests/test_schedules_parity.py compares with torch: the schedule traced in
        jitted = jax.jit(lambda c: jax.lax.map(schedule, c))(jnp.arange(counts, dtype=jnp.int32))
        np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
        if momenta:
            jitted = jax.jit(lambda c: jax.lax.map(schedule.momentum, c))(
                jnp.arange(counts, dtype=jnp.int32)
            )
            np.testing.assert_array_equal(np.asarray(momenta), np.asarray(jitted))


def test_every_other_optimizer_compiles_nothing_per_eager_update():
    """After the first eager update, further updates and new instances compile nothing."""
    worst = {}
    schedule = schedules.step_lr(0.01, 2)  # one schedule for all: an instance compiles once
    for s in SPECS:
        if s.step_requires_closure:
            continue
        params = [jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), jnp.linspace(0.5, 1.0, 6).reshape(3, 2)]
        grads = [jnp.cos(p) for p in params]
        make = lambda s=s: getattr(optim, s.name)(lr=schedule, **s.jax_extra_kwargs)
        tx = make()
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        with counting_compiles() as compiles:
            for _ in range(2):
                _, state = tx.update(grads, state, params)
            tx = make()
            tx.update(grads, tx.init(params), params)
        worst[s.name] = compiles[0]
    assert not any(worst.values()), worst


def test_a_plain_callable_lr_compiles_once_eagerly_and_is_freed_with_its_optimizer():
    """``lr=lambda c: 0.5 * 0.9 ** c``: evaluated op by op, ``0.9 ** count`` compiled an
    ``integer_pow`` per count (one compilation per eager step, for every optimizer)."""
    import gc
    import weakref

    params = [jnp.linspace(-1.0, 1.0, 6)]
    schedule = lambda c: 0.5 * 0.9**c
    tx = optim.sgd(lr=schedule)  # the update is -lr·g: the lr's value, compared below
    state = tx.init(params)
    eager = []
    for _ in range(2):
        updates, state = tx.update(params, state, params)
        eager.append(updates[0])
    with counting_compiles() as compiles:
        for _ in range(20):
            updates, state = tx.update(params, state, params)
            eager.append(updates[0])
    assert compiles[0] == 0
    # the values the jitted update has
    jitted, state = [], tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(22):
        updates, state = step(params, state, params)
        jitted.append(updates[0])
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    held = weakref.ref(schedule)
    del schedule, tx, state, step
    gc.collect()
    assert held() is None  # the compiled form does not keep the schedule alive
