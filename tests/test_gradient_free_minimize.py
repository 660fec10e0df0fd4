"""gradient_free.minimize: the result contract, reproducibility, early stopping, callbacks, errors,
solving known problems, the ES gradient inside optax.chain, and population sharding over devices."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _subprocess import run_json

from jaxopt_port import gradient_free, optim
from jaxopt_port.gradient_free import _common, _minimize
from parity.reference import gradient_free as ref


def sphere(x):
    return jnp.sum((x - 0.5) ** 2)


def ackley(x):
    return ref.ackley(x, jnp)


def rosenbrock(x):
    return ref.rosenbrock(x, jnp)


def onemax(x):
    return ref.onemax(x, jnp)


@pytest.fixture(scope="module")
def ga_run():
    with jax.enable_x64(True):
        return gradient_free.minimize(
            sphere, jnp.zeros(4), method="genetic", key=jax.random.key(1), max_evals=1010,
            bounds=(-2.0, 2.0), popsize=50,
        )  # fmt: skip


def test_result_fields(ga_run):
    r = ga_run
    assert (r.nit, r.nfev) == (20, 1000)
    assert r.message.startswith("max_evals reached")
    history = np.asarray(r.history)
    assert history.shape == (20,) and np.all(np.diff(history) <= 0)
    assert history[-1] == float(r.fun) == float(r.state.best_f)
    assert float(r.fun) == pytest.approx(float(np.sum((np.asarray(r.x) - 0.5) ** 2)), abs=1e-15)
    assert r.x.dtype == jnp.float64 and float(r.fun) < 1e-2


def test_minimize_is_the_ask_tell_loop_and_reproducible_by_key():
    """minimize = init, then ask → vmap(fun) → tell per iteration; same key, same run; runs
    differing only in key share one compilation."""
    options = {"chains": 4, "schedule": "fast", "proposal": "cauchy", "step_size": np.full(3, 0.2)}
    key = jax.random.key(5)
    compiled = _minimize._run._cache_size()
    with jax.enable_x64(True):
        result = gradient_free.minimize(
            ackley, jnp.full(3, 1.5), method="simulated_annealing", key=key, max_evals=400,
            **options,
        )  # fmt: skip
        again = gradient_free.minimize(
            ackley, jnp.full(3, 1.5), method="simulated_annealing", key=key, max_evals=400,
            **options,
        )  # fmt: skip
        other = gradient_free.minimize(
            ackley, jnp.full(3, 1.5), method="simulated_annealing", key=jax.random.key(6),
            max_evals=400, **options,
        )  # fmt: skip
        # equal options (arrays compared by value) and the same fun: one compiled loop, any key
        assert _minimize._run._cache_size() == compiled + 1
        sa = gradient_free.simulated_annealing(3, **options)
        state = sa.init(key, jnp.full(3, 1.5))

        @jax.jit
        def step(state):
            x, state = sa.ask(state)
            return sa.tell(state, x, jax.vmap(ackley)(x))

        for _ in range(100):
            state = step(state)
    assert np.array_equal(result.x, state.best_x) and result.fun == state.best_f
    assert np.array_equal(result.state.x, state.x)
    assert np.array_equal(result.x, again.x) and np.array_equal(result.history, again.history)
    assert not np.array_equal(result.history, other.history)


def test_early_stopping_callback_and_progress(capsys):
    seen = []

    def callback(info):
        seen.append(info)
        return info.nit >= 20

    with jax.enable_x64(True):
        by_target = gradient_free.minimize(
            sphere, jnp.zeros(3), method="differential_evolution", key=jax.random.key(0),
            max_evals=10_000, bounds=(-1.0, 1.0), popsize=20, target=1e-6,
        )  # fmt: skip
        by_patience = gradient_free.minimize(
            lambda x: jnp.floor(jnp.sum(x**2)), jnp.full(2, 0.1), method="differential_evolution",
            key=jax.random.key(0), max_evals=10_000, bounds=(-1.0, 1.0), popsize=20, patience=5,
        )  # fmt: skip
        by_callback = gradient_free.minimize(
            sphere, jnp.zeros(3), method="differential_evolution", key=jax.random.key(0),
            max_evals=10_000, bounds=(-1.0, 1.0), popsize=20, callback=callback,
            callback_every=7, progress=True,
        )  # fmt: skip
    # the run stops at the first iteration whose best is ≤ target
    history = np.asarray(by_target.history)
    assert history[-1] <= 1e-6 < history[-2] and by_target.nit < 500
    assert by_target.message == "target 1e-06 reached"
    # floor(|x|²) is 0 from the start: 5 iterations without improvement after the first
    assert by_patience.nit == 6 and by_patience.message.startswith("no improvement")
    assert [s.nit for s in seen] == [7, 14, 21] and by_callback.nit == 21
    assert by_callback.message == "stopped by callback"
    assert seen[-1].nfev == 21 * 20 and seen[-1].fun == float(by_callback.history[-1])
    err = capsys.readouterr().err
    assert "21/500 it" in err and "420 evals" in err


def test_cma_es_solves_rosenbrock_10d():
    """CMA-ES reaches Rosenbrock's minimum (0 at x = 1) in 10 dimensions."""
    with jax.enable_x64(True):
        r = gradient_free.minimize(
            rosenbrock, jnp.zeros(10), method="cma_es", key=jax.random.key(0),
            max_evals=12_000, sigma=0.5, target=1e-10,
        )  # fmt: skip
    assert float(r.fun) <= 1e-10 and np.allclose(r.x, 1.0, atol=1e-4), (r.fun, r.nfev)


def test_genetic_binary_and_integer_genomes_find_their_optima():
    with jax.enable_x64(True):
        bits = gradient_free.minimize(
            onemax, jnp.zeros(24), method="genetic", key=jax.random.key(0),
            max_evals=4000, genome="binary", popsize=40, target=0.0,
        )  # fmt: skip
        ints = gradient_free.minimize(
            lambda x: jnp.sum((x - jnp.array([3.0, -2.0, 7.0])) ** 2) + 0.25 * jnp.sum(jnp.sin(x) ** 2),
            jnp.zeros(3), method="genetic", key=jax.random.key(0), max_evals=3000,
            genome="integer", bounds=(-10.0, 10.0), popsize=30,
        )  # fmt: skip
    assert float(bits.fun) == 0.0 and np.all(np.asarray(bits.x) == 1.0)
    assert np.asarray(ints.x).tolist() == [3.0, -2.0, 7.0]


def test_es_gradient_trains_a_non_differentiable_loss_with_optim_adam():
    """A 0-1 classification loss has zero gradient almost everywhere; ES + Adam still learns."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5))
    labels = features @ np.array([1.0, -2.0, 0.5, 0.0, 1.5]) > 0

    def error_rate(params):
        scores = jnp.asarray(features) @ params["w"] + params["b"]
        return jnp.mean((scores > 0) != jnp.asarray(labels))

    params = {"w": jnp.asarray(rng.normal(size=5)), "b": jnp.zeros(())}
    assert all(
        float(jnp.abs(g).max()) == 0
        for g in jax.tree_util.tree_leaves(jax.grad(error_rate)(params))
    )
    tx = optax.chain(
        gradient_free.es_gradient(error_rate, key=jax.random.key(0), sigma=0.2, num_pairs=32,
                                  fitness_shaping="centered_rank"),
        optim.adam(lr=0.05),
    )  # fmt: skip
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(params, state, params)
        return optax.apply_updates(params, updates), state

    start = float(error_rate(params))
    for _ in range(150):
        params, state = step(params, state)
    assert start > 0.3 and float(error_rate(params)) < 0.05, (start, float(error_rate(params)))
    assert int(state[0].count) == 150


BAD_OPTIONS = [
    ({"method": "nelder_mead"}, "method must be one of"),
    ({"method": "genetic", "population": 10}, "unexpected keyword argument 'population'"),
    ({"method": "simulated_annealing", "schedule": "cosine"}, "schedule must be one of"),
    ({"method": "simulated_annealing", "cooling_rate": 1.0}, r"cooling_rate must lie in \(0, 1\)"),
    ({"method": "simulated_annealing", "initial_temperature": 0.0}, "initial_temperature must be a finite number > 0"),
    ({"method": "simulated_annealing", "proposal": "reflect"}, "proposal='reflect' reflects at the bounds"),
    ({"method": "simulated_annealing", "restart": "random"}, "restart='random' draws a point inside the bounds"),
    ({"method": "simulated_annealing", "step_size": -1.0}, "step_size must be finite and > 0"),
    ({"method": "genetic", "bounds": (np.zeros(3), np.ones(2))}, r"upper bound has shape \(2,\); expected a scalar or shape \(3,\)"),
    ({"method": "genetic", "bounds": (1.0, 0.0)}, "lower bound > upper bound at coordinate 0"),
    ({"method": "genetic", "bounds": (0.0,)}, r"bounds must be a \(lower, upper\) pair"),
    ({"method": "genetic", "bounds": (-np.inf, 1.0)}, "the lower bound must be finite"),
    ({"method": "genetic", "genome": "binary", "crossover": "sbx"}, "binary genomes take 'one_point' or 'uniform'"),
    ({"method": "genetic", "genome": "binary", "mutation": "gaussian"}, "does not fit genome='binary'"),
    ({"method": "genetic", "genome": "integer"}, "integer genomes need bounds"),
    ({"method": "genetic", "mutation": "polynomial"}, "polynomial mutation scales by the bound width"),
    ({"method": "genetic", "elitism": 50}, r"elitism must be < popsize \(50\)"),
    ({"method": "genetic", "mutation_scale": 0.0}, "mutation_scale must be finite and > 0"),
    ({"method": "genetic", "crossover_rate": 1.5}, r"crossover_rate must be a probability in \[0, 1\]"),
    ({"method": "genetic", "selection": "boltzmann"}, "selection must be one of"),
    ({"method": "differential_evolution", "popsize": 3}, "popsize must be an integer >= 4"),
    ({"method": "differential_evolution", "mutation": (1.0, 0.5)}, "mutation must be F > 0 or a range"),
    ({"method": "cma_es", "sigma": -0.1}, "sigma must be a finite number > 0"),
    ({"method": "genetic", "max_evals": 49}, "max_evals=49 is less than one population of 50"),
    ({"method": "genetic", "x0": np.zeros((2, 2, 3))}, "x0 must be a non-empty 1-D floating array"),
    ({"method": "genetic", "x0": np.zeros(3, np.int32)}, "x0 must be a non-empty 1-D floating array"),
    ({"method": "genetic", "x0": np.zeros((7, 3))}, r"x0 must have shape \(3,\) or \(50, 3\)"),
    ({"method": "genetic", "fun": lambda x: x**2}, r"fun must map one point of shape \(3,\) to a scalar"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "message"), BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_input_says_what_was_expected(kwargs, message):
    kwargs = dict(kwargs)
    fun = kwargs.pop("fun", sphere)
    x0 = kwargs.pop("x0", np.zeros(3))
    kwargs.setdefault("max_evals", 1000)
    with pytest.raises(ValueError, match=message):
        gradient_free.minimize(fun, x0, key=jax.random.key(0), **kwargs)


SHARDED = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jaxopt_port import gradient_free, parallel
    from parity.reference.gradient_free import rastrigin

    mesh = parallel.data_mesh()
    fun = lambda x: rastrigin(x, jnp)
    kw = dict(method="differential_evolution", key=jax.random.key(0), max_evals=800,
              bounds=(-5.12, 5.12), popsize=16)
    plain = gradient_free.minimize(fun, jnp.ones(6), **kw)
    sharded = gradient_free.minimize(fun, jnp.ones(6), mesh=mesh, **kw)
    values = jax.jit(lambda c: gradient_free.evaluate_population(fun, c, mesh=mesh))(
        jnp.ones((16, 6)))
    loss = lambda p: rastrigin(p["w"], jnp)
    grads = []
    for m in (None, mesh):
        tx = gradient_free.es_gradient(loss, key=jax.random.key(1), num_pairs=8, mesh=m)
        p = {"w": jnp.ones(6)}
        grads.append(jax.jit(tx.update)(p, tx.init(p), p)[0]["w"])
    try:
        gradient_free.minimize(fun, jnp.ones(6), mesh=mesh, **{**kw, "popsize": 10})
        error = ""
    except ValueError as e:
        error = str(e)
    print(json.dumps({
        "devices": jax.device_count(),
        "value_devices": len(values.sharding.device_set),
        "same_x": bool(jnp.array_equal(plain.x, sharded.x)),
        "same_history": bool(jnp.array_equal(plain.history, sharded.history)),
        "grad_gap": float(jnp.max(jnp.abs(grads[0] - grads[1])) / jnp.max(jnp.abs(grads[0]))),
        "error": error,
    }))
    """
)


def test_population_sharded_over_four_devices_gives_the_same_run():
    out = run_json(["-c", SHARDED], devices=4, timeout=180)
    assert out["devices"] == 4 and out["value_devices"] == 4, json.dumps(out)
    assert out["same_x"] and out["same_history"], json.dumps(out)
    # the ES estimate's sum over perturbations is split over devices (another summation order)
    assert out["grad_gap"] <= 1e-13, json.dumps(out)  # measured 6.2e-15 (relative)
    assert "does not split over the 4 devices" in out["error"]


def test_es_gradient_under_inject_hyperparams_equals_the_plain_transformation():
    """sigma injected as a hyperparameter (an array in the state) gives the same estimate."""

    def loss(p):
        return jnp.sum(jnp.floor(4 * p) ** 2)

    static = ("loss_fn", "key", "num_pairs", "fitness_shaping", "mesh", "axis")
    injected = optax.inject_hyperparams(gradient_free.es_gradient, static_args=static)(
        loss, key=jax.random.key(0), sigma=0.5
    )
    plain = gradient_free.es_gradient(loss, key=jax.random.key(0), sigma=0.5)
    p = jnp.linspace(-1.0, 2.0, 4)
    got, state = jax.jit(injected.update)(p, injected.init(p), p)
    expected, _ = plain.update(p, plain.init(p), p)
    assert float(state.hyperparams["sigma"]) == 0.5
    np.testing.assert_array_equal(got, expected)


def test_es_gradient_transformation_contract():
    """init on ShapeDtypeStructs, float32 in → float32 out, a stable state, one compilation."""
    params = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(4, jnp.float32)}
    tx = gradient_free.es_gradient(
        lambda p: jnp.sum(jnp.abs(p["a"])) + jnp.sum(p["b"] ** 2),
        key=jax.random.key(2),
        num_pairs=4,
    )
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state = tx.init(shapes)
    update = jax.jit(tx.update)
    for _ in range(3):
        updates, new_state = update(params, state, params)
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
        state = new_state
    assert all(u.dtype == jnp.float32 for u in jax.tree_util.tree_leaves(updates))
    assert jax.tree_util.tree_map(jnp.shape, updates) == jax.tree_util.tree_map(jnp.shape, params)
    assert update._cache_size() == 1 and int(state.count) == 3
    with pytest.raises(ValueError, match="pass params to update"):
        tx.update(params, state)


def test_dual_annealing_local_search_finds_the_rosenbrock_valley_floor():
    """Annealing alone stalls on Rosenbrock's curved valley; the local search (projected L-BFGS on
    forward differences, every evaluation counted) reaches the minimum at (1, ..., 1)."""
    rosen = ref.TEST_FUNCTIONS["rosenbrock"][0]
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(0).uniform(-5, 5, 4))
        runs = {
            flag: gradient_free.minimize(
                lambda x: rosen(x, jnp),
                x0,
                method="dual_annealing",
                key=jax.random.key(1),
                max_evals=4000,
                bounds=(-5.0, 5.0),
                no_local_search=flag,
            )
            for flag in (False, True)
        }
    searched = runs[False]
    assert searched.nfev == 4000 and searched.nit == 4000
    assert float(searched.fun) < 1e-8  # measured 2.1e-11
    assert np.allclose(np.asarray(searched.x), 1.0, atol=1e-4)  # measured 7.9e-6
    assert float(runs[True].fun) > 1e3 * float(searched.fun)
    assert float(rosen(np.asarray(searched.x))) == pytest.approx(float(searched.fun), rel=1e-12)


def test_dual_annealing_rejects_missing_bounds_and_bad_parameters():
    with pytest.raises(ValueError, match="needs bounds"):
        gradient_free.dual_annealing(3)
    with pytest.raises(ValueError, match="visit must be in"):
        gradient_free.dual_annealing(3, bounds=(-1.0, 1.0), visit=3.5)
    with pytest.raises(ValueError, match="restart_temp_ratio"):
        gradient_free.dual_annealing(3, bounds=(-1.0, 1.0), restart_temp_ratio=1.0)


@pytest.mark.parametrize("size", [1, 2, 7, 1652, 14851])
def test_threefry_uniform_is_jax_random_uniform_bit_for_bit(size):
    """The unrolled threefry behind every strategy's draws gives `jax.random.uniform`'s bits (so
    a run is the same as with `jax.random.uniform`), in float32 and float64, and other keys fall
    back to `jax.random.uniform` itself."""
    key = jax.random.fold_in(jax.random.key(42), size)
    got = jax.jit(_common.threefry_uniform, static_argnums=(1, 2))(key, size, jnp.float32)
    assert np.array_equal(got, jax.random.uniform(key, (size,), jnp.float32))
    with jax.enable_x64(True):
        got = jax.jit(_common.threefry_uniform, static_argnums=(1, 2))(key, size, jnp.float64)
        assert np.array_equal(got, jax.random.uniform(key, (size,), jnp.float64))
    rbg = jax.random.key(3, impl="rbg")
    got = _common.threefry_uniform(rbg, size, jnp.float32)
    assert np.array_equal(got, jax.random.uniform(rbg, (size + size % 2,), jnp.float32)[:size])


def test_iteration_key_is_fold_in():
    key = jax.random.key(5)
    steps = jnp.arange(0, 4000, 37, dtype=jnp.int32)
    got = jax.jit(jax.vmap(lambda t: jax.random.key_data(_common.iteration_key(key, t))))(steps)
    expected = jax.vmap(lambda t: jax.random.key_data(jax.random.fold_in(key, t)))(steps)
    assert np.array_equal(got, expected)


def test_dual_annealing_gradient_probes_are_scipy_lbfgsb_probes_bit_for_bit():
    """The local search's forward differences step where scipy's L-BFGS-B (`jac=None`) steps:
    $+10^{-8}$; reversed at an upper bound; the relative step $\\sqrt{\\epsilon}\\,\\mathrm{sign}(x)
    \\max(1, |x|)$ where $x + 10^{-8} = x$; the distance to the farther bound in a box narrower than
    the step. Chain $c$ probes coordinate $c$ of the same point; scipy's probes are recorded."""
    from scipy import optimize

    lower = np.array([-2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -1e9, -1e9, 0.0])
    upper = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1e9, 1e9, 5e-9])
    x0 = np.array([0.5, -1.5, 1 - 5e-9, 0.0, -2.0, 1.0, 5e8, -5e8, 2e-9])
    dim = x0.size
    seen = []

    def record(x):
        seen.append(x.copy())
        return float(np.sum(np.cos(x)))

    box = list(zip(lower, upper, strict=True))
    optimize.minimize(record, x0, method="L-BFGS-B", bounds=box, options={"maxiter": 1})
    expected = np.stack(seen[1 : dim + 1])  # seen[0] is x0 itself
    with jax.enable_x64(True):
        da = gradient_free.dual_annealing(dim, bounds=(lower, upper), chains=dim)
        state = da.init(jax.random.key(0), jnp.asarray(x0))
        state = state._replace(
            iteration=jnp.ones((), jnp.int32),
            phase=jnp.ones((dim,), jnp.int32),  # the gradient phase
            ls_x=jnp.broadcast_to(jnp.asarray(x0), (dim, dim)),
            ls_coord=jnp.arange(dim, dtype=jnp.int32),
        )
        probes, _ = da.ask(state)
    np.testing.assert_array_equal(np.asarray(probes), expected)
