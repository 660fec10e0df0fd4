"""torch.nn.utils.prune on arrays: masks bit-equal to torch and to the NumPy reference on random
tie-free cases, torch's errors, random methods by count/structure/distribution."""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils import prune as tprune

from jaxopt_port import pruning
from parity.reference import pruning as ref

SHAPES = [(6, 5), (4, 3, 5), (8, 9), (3, 2, 2, 4), (10, 3)]
# float amounts with a .5 product on these shapes (0.5 of 5, 0.25 of 10, 0.125 of 12), counts
AMOUNTS = [0.5, 0.25, 0.125, 0.3, 0.7, 1, 3, 0]


def tie_free(rng, shapes, dtype):
    """Distinct magnitudes across all the tensors (exact in float32), random signs."""
    sizes = [math.prod(s) for s in shapes]
    # distinct integer parts, random fractions: no two magnitudes (or channel norms) tie
    magnitudes = rng.permutation(sum(sizes)) + 1 + rng.uniform(0.0, 0.5, sum(sizes))
    values = magnitudes * rng.choice([-1.0, 1.0], sum(sizes)) / 8
    parts = np.split(values.astype(dtype), np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]


def module(t):
    m = torch.nn.Module()
    m.weight = torch.nn.Parameter(torch.from_numpy(np.array(t)))
    return m


def same(torch_mask, jax_mask, ref_mask, dtype):
    j = np.asarray(jax_mask)
    assert j.dtype == dtype
    t = torch_mask.detach().numpy()
    return np.array_equal(t, j) and np.array_equal(ref_mask, j)


def run_chain(rng, steps, dtype, shape=None):
    """One random tensor pruned by ``steps`` (names with arguments) in torch, JAX and NumPy."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    (t,) = tie_free(rng, [shape], dtype)
    m, mask, rmask = module(t), None, None
    for name, kwargs in steps:
        scores = None
        if kwargs.pop("scores", False):
            (scores,) = tie_free(rng, [shape], dtype)
            kwargs["importance_scores"] = scores
        tkw = {**kwargs}
        if scores is not None:
            tkw["importance_scores"] = torch.from_numpy(scores)
        getattr(tprune, name)(m, "weight", **tkw)
        mask = getattr(pruning, name)(t, mask=mask, **kwargs)
        rkw = {k: v for k, v in kwargs.items() if k != "importance_scores"}
        rmask = getattr(ref, name)(t, mask=rmask, scores=scores, **rkw)
    return same(m.weight_mask, mask, rmask, np.dtype(dtype))


def random_steps(rng, shape):
    ndim = len(shape)
    steps = []
    for step in range(rng.integers(1, 4)):
        amount = AMOUNTS[rng.integers(len(AMOUNTS))]
        if rng.random() < 0.5:
            steps.append(("l1_unstructured", {"amount": amount, "scores": rng.random() < 0.3}))
        else:
            dim = int(rng.integers(-ndim, ndim))
            # -inf (the smallest entry) ties at 0 once entries are pruned: first step only
            n = [1, 2, math.inf, "fro", 3, -math.inf][
                rng.integers(3 if ndim > 3 else 5 + (step == 0))
            ]
            steps.append(
                (
                    "ln_structured",
                    {"amount": amount, "n": n, "dim": dim, "scores": rng.random() < 0.3},
                )
            )
    return steps


def fits(steps, shape):
    """Whether torch accepts the integer amounts (the alive count is only known by running)."""
    return all(
        isinstance(kw["amount"], float)
        or kw["amount"] <= (math.prod(shape) if name == "l1_unstructured" else shape[kw["dim"]])
        for name, kw in steps
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_chains_match_torch_and_reference(dtype):
    """840 random chains (unstructured and structured, two dims, importance scores, .5
    amounts; with the global and sparsifier cases well over 1000 in all): each mask equals
    torch's and the reference's bit for bit."""
    rng = np.random.default_rng(0 if dtype is np.float32 else 1)
    done = failed = 0
    with jax.enable_x64(dtype is np.float64):
        while done < 420:
            done, failed = one_chain(rng, dtype, done, failed)
    assert failed == 0, f"{failed} of {done} chains differ"


def one_chain(rng, dtype, done, failed):
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        steps = random_steps(rng, shape)
        if not fits(steps, shape):
            continue
        try:
            ok = run_chain(rng, [(n, dict(kw)) for n, kw in steps], dtype, shape)
        except ValueError:  # an int amount above what is still alive: errors tested below
            continue
        return done + 1, failed + (not ok)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_unstructured_twice_with_scores(dtype):
    rng = np.random.default_rng(2)
    with jax.enable_x64(dtype is np.float64):
        global_cases(rng, dtype)


def global_cases(rng, dtype):
    for case in range(60):
        shapes = [SHAPES[(case + k) % len(SHAPES)] for k in range(3)]
        ts = tie_free(rng, shapes, dtype)
        scores = tie_free(rng, shapes, dtype) if case % 3 == 0 else None
        mods = [module(t) for t in ts]
        params = [(m, "weight") for m in mods]
        first, second = [0.5, 0.25, 7][case % 3], [0.5, 3, 0.125][case % 3]
        tprune.global_unstructured(params, tprune.L1Unstructured, amount=first)
        tscores = (
            None
            if scores is None
            else {p: torch.from_numpy(s) for p, s in zip(params, scores, strict=True)}
        )
        tprune.global_unstructured(
            params, tprune.L1Unstructured, importance_scores=tscores, amount=second
        )
        masks = pruning.global_unstructured(ts, first)
        masks = pruning.global_unstructured(ts, second, masks=masks, importance_scores=scores)
        rmasks = ref.global_unstructured(ts, second, ref.global_unstructured(ts, first), scores)
        for m, j, r in zip(mods, masks, rmasks, strict=True):
            assert same(m.weight_mask, j, r, np.dtype(dtype))


def test_global_unstructured_pytree_and_dtypes():
    rng = np.random.default_rng(3)
    a, b = tie_free(rng, [(3, 4), (5,)], np.float64)
    with jax.enable_x64(True):
        out = pruning.global_unstructured({"a": a, "b": b.astype(np.float32)}, 0.5)
    assert out["a"].dtype == jnp.float64 and out["b"].dtype == jnp.float32
    flat = np.abs(np.concatenate([a.reshape(-1), b]))
    kept = np.concatenate([np.asarray(out["a"]).reshape(-1), np.asarray(out["b"])]) == 1
    assert kept.sum() == 9  # round(0.5 * 17) = 8 pruned
    assert flat[~kept].max() < flat[kept].min()


def test_nuclear_norm_and_custom_from_mask_and_identity():
    rng = np.random.default_rng(4)
    (t,) = tie_free(rng, [(5, 3, 4)], np.float64)
    with jax.enable_x64(True):
        m = module(t)
        tprune.ln_structured(m, "weight", 2, "nuc", 0)
        assert np.array_equal(m.weight_mask.numpy(), pruning.ln_structured(t, 2, "nuc", 0))
        new = rng.integers(0, 2, size=t.shape)
        mask = pruning.identity(t)
        tprune.identity(m := module(t), "weight")
        tprune.custom_from_mask(m, "weight", torch.from_numpy(new))
        mask = pruning.custom_from_mask(t, new, mask=mask)
        assert mask.dtype == jnp.float64
        assert np.array_equal(m.weight_mask.numpy(), mask)
        assert np.array_equal(pruning.remove(t, mask), t * new)
        assert not pruning.is_pruned({"w": None}) and pruning.is_pruned({"w": mask})


def test_ties_go_to_the_lowest_index():
    """Tie cases: the count is right, every pruned score ≤ every kept score, and among equal
    scores the lower index is pruned first (unstructured) / kept first (structured)."""
    t = jnp.array([1.0, 2.0, 1.0, 2.0, 1.0, 0.5])
    assert pruning.l1_unstructured(t, 3).tolist() == [0, 1, 0, 1, 1, 0]
    w = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # equal norms
    assert pruning.ln_structured(w, 2, 2, 0)[:, 0].tolist() == [1, 1, 0, 0]
    rng = np.random.default_rng(5)
    for _ in range(50):
        t = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)
        mask = np.asarray(pruning.l1_unstructured(t, 0.5))
        assert (mask == 0).sum() == 12
        assert np.abs(t[mask == 0]).max() <= np.abs(t[mask == 1]).min()


def torch_error(fn):
    try:
        fn()
    except Exception as error:
        return type(error), re.sub(
            r"torch\.Size\(\[([^\]]*)\]\)",
            lambda m: str(tuple(int(x) for x in m.group(1).split(", ") if x)),
            str(error),
        )
    return None


def jax_error(fn):
    try:
        fn()
    except Exception as error:
        return type(error), str(error)
    return None


INVALID_AMOUNTS = [-1, 1.5, -0.1, "a", None, 100, 2.0, 13, 0.5j]


@pytest.mark.parametrize("pruned_before", [False, True])
def test_invalid_amounts_and_dims_raise_torchs_errors(pruned_before):
    rng = np.random.default_rng(6)
    (t,) = tie_free(rng, [(3, 4)], np.float32)
    (v,) = tie_free(rng, [(5,)], np.float32)
    key = jax.random.key(0)
    cases = []
    for amount in INVALID_AMOUNTS:
        cases += [
            ("l1_unstructured", t, {"amount": amount}),
            ("random_unstructured", t, {"amount": amount}),
            ("ln_structured", t, {"amount": amount, "n": 2, "dim": 0}),
            ("random_structured", t, {"amount": amount, "dim": 1}),
        ]
    for dim in [2, -3, 5, -1, 0]:
        for amount in [1, 4, 0.5]:
            cases += [
                ("ln_structured", t, {"amount": amount, "n": 1, "dim": dim}),
                ("random_structured", t, {"amount": amount, "dim": dim}),
            ]
    cases += [
        ("ln_structured", v, {"amount": 1, "n": 2, "dim": 0}),
        ("ln_structured", t, {"amount": 1, "n": "abc", "dim": 0}),
        ("ln_structured", t, {"amount": 1, "n": "nuc", "dim": 0}),
        ("l1_unstructured", t, {"amount": 1, "importance_scores": np.ones((4, 3), np.float32)}),
    ]
    checked = 0
    for name, tensor, kwargs in cases:
        m = module(tensor)
        mask = None
        if pruned_before and tensor.ndim == 2:
            tprune.l1_unstructured(m, "weight", 2)
            mask = pruning.l1_unstructured(tensor, 2)
        tkw = {
            k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()
        }
        expected = torch_error(functools.partial(getattr(tprune, name), m, "weight", **tkw))
        args = (key, tensor) if name.startswith("random") else (tensor,)
        got = jax_error(functools.partial(getattr(pruning, name), *args, mask=mask, **kwargs))
        if expected is not None and expected[0] is AssertionError:  # torch names the module
            expected = (
                AssertionError,
                f"importance_scores should have the same shape as tensor t, got {got[1].split('got ')[-1]}",
            )
        assert got == expected, (name, kwargs, pruned_before)
        checked += expected is not None
    assert checked > 40


def test_global_unstructured_errors_are_torchs():
    ts = tie_free(np.random.default_rng(7), [(3, 4), (5,)], np.float32)
    for amount in (-1, 1.5, "a", None, 100, 0.5j):
        mods = [module(t) for t in ts]
        expected = torch_error(
            functools.partial(
                tprune.global_unstructured,
                [(m, "weight") for m in mods],
                tprune.L1Unstructured,
                amount=amount,
            )
        )
        got = jax_error(functools.partial(pruning.global_unstructured, ts, amount))
        assert expected is not None and got == expected, amount


def test_bool_amount_counts_as_int():
    """torch 2.13 raises TypeError inside topk for amount=True; here it prunes one entry."""
    assert float(pruning.l1_unstructured(jnp.array([3.0, 1.0, 2.0]), True).sum()) == 2.0


def test_random_methods_by_count_structure_and_distribution():
    key = jax.random.key(0)
    t = np.ones((6, 5), np.float32)
    existing = np.asarray(pruning.l1_unstructured(np.arange(30.0).reshape(6, 5), 10))
    counts = np.zeros((6, 5))
    for i in range(400):
        mask = np.asarray(
            pruning.random_unstructured(jax.random.fold_in(key, i), t, 0.5, mask=existing)
        )
        assert (mask == 0).sum() == 20 and np.all(mask <= existing)
        counts += mask == 0
    freq = counts[existing == 1] / 400  # each alive entry pruned with probability 10/20
    assert np.all(np.abs(freq - 0.5) < 0.1), freq  # 4 sigma of a binomial(400, 0.5) / 400
    channel_counts = np.zeros(5)
    for i in range(400):
        mask = np.asarray(pruning.random_structured(jax.random.fold_in(key, i), t, 2, 1))
        dropped = np.all(mask == 0, axis=0)
        assert dropped.sum() == 2 and np.all(mask[:, ~dropped] == 1)
        channel_counts += dropped
    assert np.all(np.abs(channel_counts / 400 - 0.4) < 0.1)
    # the JAX mask applied through torch's custom_from_mask is torch's mask
    m = module(t)
    tprune.custom_from_mask(m, "weight", torch.from_numpy(mask.copy()))
    assert np.array_equal(m.weight_mask.numpy(), pruning.custom_from_mask(t, mask))
