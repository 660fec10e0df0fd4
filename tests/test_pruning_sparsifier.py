"""torch.ao.pruning: WeightNormSparsifier masks and CubicSL/LambdaSL levels against torch and the
NumPy reference; the ragged zeros_per_block case (torch crashes) against the reference."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.ao import pruning as tao

from jaxopt_port import pruning
from parity.reference import pruning as ref
from parity.run import pruning as run_pruning


def tie_free(rng, shape, dtype):
    n = math.prod(shape)
    magnitudes = rng.permutation(n) + 1 + rng.uniform(0.0, 0.5, n)
    return (magnitudes * rng.choice([-1.0, 1.0], n) / 8).astype(dtype).reshape(shape)


def torch_sparsifier(w, **kwargs):
    model = torch.nn.Sequential(torch.nn.Linear(w.shape[1], w.shape[0], bias=False))
    model = model.to(torch.float64 if w.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w))
    sp = tao.WeightNormSparsifier(**kwargs)
    sp.prepare(model, [{"tensor_fqn": "0.weight"}])
    return model, sp


def torch_mask(model):
    return model[0].parametrizations.weight[0].mask.numpy().astype(np.float64)


CASES = [  # (shape, block, zeros_per_block): torch handles these
    ((8, 12), (1, 4), None),
    ((7, 10), (1, 4), None),  # ragged columns, whole blocks
    ((5, 9), (2, 2), None),  # ragged both ways
    ((6, 6), (2, 3), None),
    ((8, 8), (1, 1), None),
    ((8, 12), (1, 4), 2),  # inside blocks, shape divisible
    ((6, 8), (2, 2), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_norm_sparsifier_matches_torch_over_steps(dtype):
    """Masks over three sparsifier steps at rising levels (sticky: scores from the masked
    weight), norms 1 and 2, equal to torch's and the reference's."""
    rng = np.random.default_rng(0)
    checked = 0
    with jax.enable_x64(dtype is np.float64):
        for case in range(35):
            shape, block, zeros = CASES[case % len(CASES)]
            norm = (None, 1)[case // len(CASES) % 2]
            w = tie_free(rng, shape, dtype)
            model, sp = torch_sparsifier(
                w, sparsity_level=0.3, sparse_block_shape=block, zeros_per_block=zeros, norm=norm
            )
            ours = pruning.WeightNormSparsifier(0.3, block, zeros, norm)
            mask, rmask = np.ones_like(w), np.ones_like(w)
            for level in (0.3, 0.5, [0.75, 0.9, 0.625][case % 3]):
                sp.groups[0]["sparsity_level"] = level
                sp.step()
                mask = ours.update_mask(w, mask, level)
                rmask = ref.weight_norm_mask(w, rmask, level, block, zeros, norm or 2)
                assert mask.dtype == dtype
                np.testing.assert_array_equal(torch_mask(model), mask)
                np.testing.assert_array_equal(rmask, mask)
                checked += 1
            if case < len(CASES):  # a traced level (as inside the Optax transformation)
                traced = jax.jit(lambda lv, m=mask, o=ours, w=w: o.update_mask(w, m, lv))
                np.testing.assert_array_equal(traced(level), ours.update_mask(w, mask, level))
    assert checked == 105  # masks per dtype, 210 in all


def test_levels_0_and_1_and_zero_zeros():
    w = tie_free(np.random.default_rng(1), (4, 8), np.float32)
    for level, zeros, expected in [(0.0, None, 1.0), (1.0, None, 0.0), (0.7, 0, 1.0)]:
        model, sp = torch_sparsifier(w, sparsity_level=level, zeros_per_block=zeros)
        sp.step()
        mask = pruning.WeightNormSparsifier(level, (1, 4), zeros).update_mask(w, np.ones_like(w))
        np.testing.assert_array_equal(torch_mask(model), mask)
        assert np.all(np.asarray(mask) == expected)


def test_ragged_zeros_per_block_is_done_right():
    """torch 2.13 crashes or returns a padded mask here; ours has the weight's shape, zeros the
    ``z`` smallest in-bound entries of every pruned block, and equals the reference."""
    rng = np.random.default_rng(2)
    w = tie_free(rng, (5, 10), np.float32)
    _, sp = torch_sparsifier(w, sparsity_level=0.5, sparse_block_shape=(2, 4), zeros_per_block=3)
    with pytest.raises(RuntimeError):
        sp.step()
    ours = pruning.WeightNormSparsifier(0.5, (2, 4), 3)
    mask = np.asarray(ours.update_mask(w, np.ones_like(w)))
    assert mask.shape == w.shape
    np.testing.assert_array_equal(mask, ref.weight_norm_mask(w, np.ones_like(w), 0.5, (2, 4), 3))
    # k = round(0.5 * 9 blocks) = 4 pruned blocks; the ragged ones hold 2, 4 or 8 entries
    assert 4 * 2 <= (mask == 0).sum() <= 4 * 3


def test_n_m_is_two_of_four():
    w = tie_free(np.random.default_rng(3), (6, 16), np.float32)
    mask = np.asarray(pruning.n_m_sparsifier(2, 4).update_mask(w, np.ones_like(w)))
    groups = np.abs(w).reshape(6, 4, 4)
    kept = mask.reshape(6, 4, 4) == 1
    assert np.all(kept.sum(-1) == 2)
    assert np.all(np.where(kept, groups, np.inf).min(-1) > np.where(kept, -np.inf, groups).max(-1))


def test_sparsifier_errors_are_torchs():
    w = np.ones((4, 8), np.float32)
    for zeros in (5, -1):
        _, sp = torch_sparsifier(w, zeros_per_block=zeros)
        with pytest.raises(ValueError) as expected:
            sp.step()
        with pytest.raises(ValueError, match=re.escape(str(expected.value))):
            pruning.WeightNormSparsifier(zeros_per_block=zeros).update_mask(w, w)
    with pytest.raises(NotImplementedError, match=r"L-3 is not yet implemented\."):
        pruning.WeightNormSparsifier(norm=3)
    with pytest.raises(ValueError, match="2-D weights"):
        pruning.WeightNormSparsifier().update_mask(np.ones((2, 2, 4)), np.ones((2, 2, 4)))


def test_schedulers_match_torch():
    """Levels at every scheduler epoch, in Python and traced (the table lookup is exact)."""
    _, sp = torch_sparsifier(np.ones((4, 8), np.float32), sparsity_level=0.9)
    kwargs = [
        {"init_sl": 0.1, "init_t": 3, "delta_t": 2, "total_t": 7},
        {"init_sl": 0.0, "init_t": 5, "delta_t": 3, "total_t": 4, "initially_zero": True},
        {},
    ]
    with jax.enable_x64(True):
        for kw in kwargs:
            sp.groups[0]["sparsity_level"] = 0.9
            torch_sched = tao.CubicSL(sp, **kw)
            ours = pruning.CubicSL(pruning.WeightNormSparsifier(0.9), **kw)
            traced = jax.jit(ours.level)
            for epoch in range(40):
                expected = torch_sched.get_last_sl()[0]
                assert ours.level(epoch) == expected
                assert traced(jnp.asarray(epoch)) == expected
                sp.step()
                torch_sched.step()
        sp.groups[0]["sparsity_level"] = 0.8
        lam = tao.LambdaSL(sp, lambda epoch: epoch / 20)
        ours = pruning.LambdaSL(0.8, lambda epoch: epoch / 20)
        for epoch in range(30):
            assert float(jax.jit(ours.level)(epoch)) == lam.get_last_sl()[0]
            sp.step()
            lam.step()


def test_parity_rows():
    """The rows the parity CLI will show: every rule equal across JAX, torch and NumPy."""
    rows = run_pruning.run_pruning_parity(cases=6)
    assert len(rows) == 5 and all(row["passed"] for row in rows), rows
    assert all(row["worst"] == 0.0 for row in rows[:4])  # masks: bit for bit
    assert rows[4]["worst"] <= 1e-12  # the training run's params; measured 1.4e-16
