"""jaxopt_port.parallel: a data-parallel step on 8 simulated CPU devices equals one device.

The multi-device scenarios live in tests/parallel_worker.py and run in subprocesses with 8
simulated CPU devices and a timeout (one subprocess per scenario, shared by its tests); the
references there use no parallel code: the optimizer on the whole global batch on one device, a
NumPy closed-form gradient, torch's batch norm on the global batch. Argument checks and the
single-process helpers run here, on this process's one device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _subprocess import run_json
from parallel_worker import BACKENDS, MATRIX

from jaxopt_port import optim, parallel
from parity.metric import F64_GATE

torch = pytest.importorskip("torch")

#: float32, 8 devices vs one, worst over 8 steps of SGD/Adam and every backend: parameters
#: measured 6.0e-8 (scaled), loss 4.8e-7, optimizer state 4.5e-8.
F32 = {"params": 2.4e-7, "loss": 2e-6, "state": 1.8e-7}


def _scenario(name: str):
    return run_json(["tests/parallel_worker.py", name], timeout=420)


@pytest.fixture(scope="module")
def matrix():
    rows = _scenario("matrix")
    return {
        (r["dtype"], r["optimizer"], r["backend"], r["zero"], r["micro_batches"]): r for r in rows
    }


MATRIX_IDS = [
    pytest.param(
        (dtype, name, backend, zero, micro), id=f"{dtype}-{name}-{backend}-zero{zero}-micro{micro}"
    )
    for dtype, name, zeros, micros in MATRIX
    for backend in BACKENDS
    for zero in zeros
    for micro in micros
]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("key", MATRIX_IDS)
def test_eight_devices_equal_one_device(matrix, key):
    row = matrix[key]
    dtype = key[0]
    assert row["param_dtypes"] == [dtype]
    if dtype == "float64":
        assert row["params"] <= F64_GATE, row
        assert row["state"] <= F64_GATE, row
        assert row["loss"] <= F64_GATE, row
    else:
        for what, tol in F32.items():
            assert row[what] <= tol, (what, row)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero1_splits_optimizer_state_over_devices(matrix):
    # The MLP's state: leaves of 64·32, 32 and 32·10 elements split 8 ways, the 10-element b2
    # leaf and the step counters whole. SGD: float64 momentum buffers + two int32 counters.
    for backend in BACKENDS:
        sgd = matrix[("float64", "sgd", backend, 1, 1)]["state_ratio"]
        assert sgd == pytest.approx((8 * (2400 / 8 + 10) + 8) / (8 * 2410 + 8), rel=F64_GATE)
    for backend in BACKENDS:
        assert matrix[("float64", "adam", backend, 1, 1)]["state_ratio"] <= 0.13
        assert matrix[("float64", "adam", backend, 0, 1)]["state_ratio"] == 1.0
    # Adafactor's factored row/column moments: 10-long columns stay whole (measured 0.224).
    assert matrix[("float64", "adafactor", "jit", 1, 2)]["state_ratio"] <= 0.23


@pytest.fixture(scope="module")
def gradient():
    return {r["backend"]: r for r in _scenario("gradient")}


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("backend", [*BACKENDS, "shard_map 4x2", "jit 4x2"])
def test_one_step_gradient_is_the_global_mean(gradient, backend):
    # SGD lr=1 on least squares: the parameter change is −∇ of the mean loss over the whole
    # global batch (NumPy closed form); an N× gradient (psum instead of pmean) gives ratio 8.
    # "4x2": a (data 4, model 2) mesh, the batch split over the data axis only.
    row = gradient[backend]
    assert row["devices"] == (4 if "4x2" in backend else 8)
    assert row["ratio"] == pytest.approx(1.0, abs=F64_GATE)
    assert row["gradient"] <= F64_GATE
    assert row["loss"] <= F64_GATE


@pytest.fixture(scope="module")
def sync_bn():
    return _scenario("sync_bn")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_batch_norm_equals_torch_on_the_global_batch(sync_bn, backend):
    row = sync_bn["backends"][backend]
    for what in ("loss", "grad", "running_mean", "running_var"):
        assert row[what] <= F64_GATE, (what, row)
    assert sync_bn["forward"] <= F64_GATE
    # one device's rows alone give other statistics: the comparison above can fail
    assert sync_bn["local_vs_global_mean"] > 0.1


@pytest.mark.slow
@pytest.mark.multiprocess
def test_flax_nnx_model_with_its_batch_norm_equals_one_device():
    # nnx.split/merge inside loss_fn; nnx.BatchNorm(axis_name="data") under shard_map and pmap,
    # axis_name=None under jit (the arrays are global there); measured 2.2e-16
    for backend, difference in _scenario("flax_nnx").items():
        assert difference <= F64_GATE, (backend, difference)


@pytest.fixture(scope="module")
def bf16():
    return _scenario("bf16")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bf16_compute_keeps_float32_masters(bf16):
    control, *rows = bf16
    # bfloat16 parameters lose SGD steps of ~1e-5 (measured relative error 29.8)
    assert control["delta_rel"] > 1.0
    assert len(rows) == 2 * len(BACKENDS)
    for row in rows:
        assert row["param_dtypes"] == ["float32"] and row["state_dtypes"] == ["float32"], row
        # the parameter change vs float32 training: the bfloat16 gradient's error, measured
        # 6.1e-3 for every backend and micro-batching (bfloat16's unit roundoff is 3.9e-3)
        assert row["delta_rel"] <= 1.5e-2, row
        # the loss computed in bfloat16, measured ≤ 2.9e-3 relative
        assert row["loss_rel"] <= 8e-3, row


@pytest.mark.slow
@pytest.mark.multiprocess
def test_thousand_steps_on_eight_devices_complete():
    out = _scenario("long_run")
    assert out["steps"] == 1000 and out["devices"] == 8
    assert out["last"] < out["first"] / 10
    # building steps again and again: init compiles nothing new (it compiled a fresh copy lambda
    # on every call), and dropped steps are freed (pmap's caches kept every one alive)
    assert all(out[f"init_compiles_{b}"] == 0 for b in ("shard_map", "jit", "pmap")), out
    assert out["alive_after_drop"] == {"shard_map": 0, "jit": 0, "pmap": 0}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_errors_name_the_problem_and_leave_state_intact():
    out = _scenario("errors")
    assert "30 rows" in out["not_divisible"] and "multiple of 8" in out["not_divisible"]
    assert "2 micro-batches" in out["not_divisible_micro"]
    assert "multiple of 16" in out["not_divisible_micro"]
    assert out["wrong_devices"].startswith("ValueError: params['w'] is on the wrong devices")
    assert "step.init(params)" in out["wrong_devices"]
    assert "is a ndarray, not an array placed" in out["host_params"]
    assert "no data axis 'data'" in out["no_data_axis"] and "('x', 'y')" in out["no_data_axis"]
    assert "backend='pmap' maps over one axis" in out["pmap_multi_axis"]
    assert out["params_intact"]
    # a donated (deleted) input: a clear error naming the leaf, not a segfault
    for key, leaf in (("donated_params", "params['w']"), ("donated_state", "opt_state")):
        assert out[key].startswith(f"ValueError: {leaf}"), out[key]
        assert "has been deleted: the step donates its params and opt_state" in out[key]
        assert "donate=False" in out[key]
    assert out["loss_after_donated"] == pytest.approx(1.44, rel=1e-15)
    assert out["kept_inputs"] == [9.0, 9.0]  # donate=False: the same inputs twice
    assert (
        out["loss_after_errors"] == 9.0
    )  # mean((1+1+1)²) on a batch of ones: nothing half-applied


# -- single process, this process's devices -------------------------------------------------------


def _loss(p, b):
    return jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "dp"}, "backend must be one of ('shard_map', 'jit', 'pmap'), got 'dp'"),
        ({"zero": 2}, "zero must be 0 (replicated optimizer state) or 1"),
        ({"micro_batches": 0}, "micro_batches must be a positive int, got 0"),
        ({"mesh": parallel.data_mesh(), "data_axis": "batch"}, "no data axis 'batch'"),
    ],
)
def test_train_step_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parallel.train_step(_loss, optim.sgd(lr=0.1), **kwargs)


def test_train_step_rejects_a_non_transformation():
    with pytest.raises(TypeError, match="tx must be an optax GradientTransformation"):
        parallel.train_step(_loss, lambda g: g)


def test_loss_must_be_a_scalar():
    step = parallel.train_step(lambda p, b: (b["x"] @ p["w"]) ** 2, optim.sgd(lr=0.1))
    params, state = step.init({"w": np.ones((2, 1), np.float32)})
    with pytest.raises(
        ValueError, match=r"loss_fn must return a scalar mean loss, got shape \(4, 1\)"
    ):
        step(params, state, {"x": np.ones((4, 2), np.float32)})


def test_loss_returning_aux_without_has_aux_says_so():
    batch = {"x": np.ones((4, 2), np.float32)}
    with_aux = lambda p, b: (_loss2(p, b), {"column_sums": jnp.sum(b["x"], axis=0)})
    step = parallel.train_step(with_aux, optim.sgd(lr=0.1))
    params, state = step.init({"w": np.ones((2, 1), np.float32)})
    with pytest.raises(
        TypeError,
        match=r"loss_fn returned a tuple of 2, not a scalar loss; if it returns \(loss, aux\), "
        r"build the step with train_step\(\.\.\., has_aux=True\)",
    ):
        step(params, state, batch)
    # the reverse: has_aux=True with a loss_fn returning only the loss
    plain = parallel.train_step(_loss2, optim.sgd(lr=0.1), has_aux=True)
    with pytest.raises(
        TypeError,
        match=r"with has_aux=True, loss_fn must return a pair \(loss, aux\), got a scalar "
        r"float32 array; .* has_aux=False",
    ):
        plain(params, state, batch)
    triple = parallel.train_step(lambda p, b: (_loss2(p, b), 1, 2), optim.sgd(lr=0.1), has_aux=True)
    with pytest.raises(TypeError, match=r"got a tuple of 3"):
        triple(params, state, batch)
    # nothing was donated by the refused calls; the right flag trains on the same arrays
    fixed = parallel.train_step(with_aux, optim.sgd(lr=0.1), has_aux=True)
    _, _, loss, aux = fixed(params, state, batch)
    assert float(loss) == 4.0  # mean((1 + 1)²) on ones
    np.testing.assert_array_equal(aux["column_sums"], [4.0, 4.0])


def _loss2(p, b):
    return jnp.mean((b["x"] @ p["w"]) ** 2)


def test_single_device_step_is_the_plain_step():
    # On one device the step is value_and_grad + update: bitwise equal to writing it out.
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(8, 3)).astype(np.float32),
        "y": rng.normal(size=(8, 1)).astype(np.float32),
    }
    params = {"w": rng.normal(size=(3, 1)).astype(np.float32)}
    tx = optim.adam(lr=0.1)
    step = parallel.train_step(_loss, tx, mesh=parallel.data_mesh(jax.devices()[:1]))
    p, s = step.init(params)
    ref_p, ref_s = params, tx.init(params)

    @jax.jit
    def reference(params, state):
        loss, g = jax.value_and_grad(_loss)(params, batch)
        u, state = tx.update(g, state, params)
        return jax.tree_util.tree_map(lambda a, b: a + b, params, u), state, loss

    for _ in range(3):
        p, s, loss = step(p, s, batch)
        ref_p, ref_s, ref_loss = reference(ref_p, ref_s)
        np.testing.assert_array_equal(np.asarray(p["w"]), np.asarray(ref_p["w"]))
        assert float(loss) == float(ref_loss)
    # the inputs were donated, the caller's params were copied by init and stay valid
    np.testing.assert_array_equal(params["w"], np.asarray(step.init(params)[0]["w"]))


def test_sync_batch_norm_outside_a_step_is_torch_batch_norm():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3, 2, 2))
    w, b, rm, rv = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(1, 2, 3)
    with jax.enable_x64(True):
        y, new_rm, new_rv = parallel.sync_batch_norm(x, rm, rv, w, b, momentum=0.3, eps=1e-3)
        y_last, *_ = parallel.sync_batch_norm(
            np.moveaxis(x, 1, -1), None, None, w, b, eps=1e-3, feature_axis=-1
        )
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(
        torch.tensor(x),
        trm,
        trv,
        torch.tensor(w),
        torch.tensor(b),
        training=True,
        momentum=0.3,
        eps=1e-3,
    )
    np.testing.assert_allclose(np.asarray(y), ty.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(new_rm), trm.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(new_rv), trv.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        np.moveaxis(np.asarray(y_last), -1, 1), ty.numpy(), rtol=0, atol=1e-14
    )
    with pytest.raises(ValueError, match="momentum=None"):
        parallel.sync_batch_norm(x, rm, rv, momentum=None)


def test_process_share_and_mesh():
    assert parallel.process_share(12, process_index=1, process_count=3) == slice(4, 8)
    assert parallel.process_share(12) == slice(0, 12)
    with pytest.raises(ValueError, match="10 rows do not split evenly over 3 processes"):
        parallel.process_share(10, process_count=3)
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count()
    with pytest.raises(ValueError, match="at least one device"):
        parallel.data_mesh([])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, "slurm"),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
          "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, None),
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "4"}, "ompi"),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "t0"}, None),
    ],
)  # fmt: skip
def test_detect_environment(env, expected):
    assert parallel.detect_environment(env) == expected


def test_initialize_checks_explicit_arguments_and_is_a_no_op_alone(monkeypatch):
    with pytest.raises(ValueError, match=r"needs coordinator_address .* together"):
        parallel.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match=r"process_id must be an int in \[0, 2\), got 2"):
        parallel.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    for key in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(key, raising=False)
    cluster = parallel.initialize()
    assert cluster.environment == "single" and cluster.process_count == 1
    assert cluster.devices == jax.devices()
