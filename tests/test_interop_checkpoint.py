"""orbax checkpoints: a bitwise round trip, and a run resumed from one equals an unbroken run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_port import interop, optim, schedules
from parity.run.training import jax_steps
from parity.specs.problems import make_problem


def _tx():
    schedule = schedules.one_cycle_lr(0.05, total_steps=40)
    return schedules.with_schedules(
        optim.sgd, lr=schedule, momentum=schedule.momentum, nesterov=True
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_from_a_mid_run_checkpoint_equals_an_unbroken_run(tmp_path, dtype):
    problem = make_problem("mlp", 30, seed=2)
    tx = _tx()
    with jax.enable_x64(dtype == "float64"):
        start = [jnp.asarray(p, dtype) for p in problem.params]
        unbroken, unbroken_state = jax_steps(problem, start, tx.init(start), tx, 30)

        params, state = jax_steps(problem, start, tx.init(start), tx, 12)
        interop.save_checkpoint(tmp_path, 12, params, state)
        del params, state
        like = (start, tx.init(start))
        params, state = interop.restore_checkpoint(tmp_path, like)
        params, state = jax_steps(problem, params, state, tx, 18, start=12)

    for a, b in zip(
        jax.tree_util.tree_leaves((params, state)),
        jax.tree_util.tree_leaves((unbroken, unbroken_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise


def test_round_trip_is_bitwise_and_keeps_dtypes(tmp_path):
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4))), "b": jnp.ones(4)}
        tx = optim.adam(lr=1e-3, amsgrad=True)
        state = tx.init(params)
        grads = jax.tree_util.tree_map(lambda p: p * 0.5, params)
        _, state = tx.update(grads, state, params)
        interop.save_checkpoint(tmp_path, 1, params, state)
        restored = interop.restore_checkpoint(tmp_path, (params, tx.init(params)), step=1)
    for a, b in zip(
        jax.tree_util.tree_leaves((params, state)),
        jax.tree_util.tree_leaves(restored),
        strict=True,
    ):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert interop.latest_step(tmp_path) == 1
    with pytest.raises(FileExistsError, match="step 1 already exists"):
        interop.save_checkpoint(tmp_path, 1, params, state)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        interop.restore_checkpoint(tmp_path / "empty", (params, state))
