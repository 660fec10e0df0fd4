"""Pruning's section runner: masks and a training run of jaxopt_port, torch and the NumPy
reference (`parity.reference.pruning`) compared."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from parity.reference.pruning import (
    global_unstructured,
    l1_unstructured,
    level_before,
    ln_structured,
    weight_norm_mask,
)


def _row(name: str, worst: float, cases: int) -> dict[str, Any]:
    return {"name": name, "worst": float(worst), "cases": cases, "passed": worst == 0.0}


def run_pruning_parity(cases: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Masks of jaxopt_port, torch and this reference on random tie-free cases.

    For each rule, ``cases`` random tensors (float32 and float64, several shapes, amounts as
    counts and as fractions, existing masks) are pruned three ways; ``worst`` is the largest
    absolute difference between any two of the three masks (0 when all equal bit for bit).

    Args:
      cases: random cases per rule.
      seed: NumPy seed.

    Returns:
      ``[{"name", "worst", "cases", "passed"}]``, one per rule.
    """
    import torch
    from torch.nn.utils import prune as tprune

    from jaxopt_port import pruning

    rng = np.random.default_rng(seed)

    def tensors(shapes: list[tuple[int, ...]], dtype: Any) -> list[np.ndarray]:
        """Tie-free: distinct magnitudes across all the tensors, random signs."""
        sizes = [math.prod(shape) for shape in shapes]
        magnitudes = rng.permutation(sum(sizes)) + 1 + rng.uniform(0.0, 0.5, sum(sizes))
        values = magnitudes * rng.choice([-1.0, 1.0], sum(sizes)) / 7
        parts = np.split(values.astype(dtype), np.cumsum(sizes)[:-1])
        return [p.reshape(shape) for p, shape in zip(parts, shapes, strict=True)]

    def tensor(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return tensors([shape], dtype)[0]

    def module(t: np.ndarray) -> torch.nn.Module:
        m = torch.nn.Module()
        m.weight = torch.nn.Parameter(torch.from_numpy(t.copy()))
        return m

    def worst(*masks: Any) -> float:
        arrays = [np.asarray(m, dtype=np.float64) for m in masks]
        return max(float(np.abs(a - arrays[0]).max(initial=0.0)) for a in arrays[1:])

    rows = []
    shapes = [(6, 5), (4, 3, 5), (8, 9), (3, 2, 2, 4)]
    # l1 then l1 (composition), unstructured
    w = 0.0
    for i in range(cases):
        dtype = (np.float32, np.float64)[i % 2]
        t = tensor(shapes[i % len(shapes)], dtype)
        a1 = [0.3, 4, 0.5][i % 3]
        a2 = [0.25, 2, 0.5][(i // 3) % 3]
        m = module(t)
        tprune.l1_unstructured(m, "weight", a1)
        tprune.l1_unstructured(m, "weight", a2)
        j1 = pruning.l1_unstructured(t, a1)
        j = pruning.l1_unstructured(t, a2, mask=j1)
        r = l1_unstructured(t, a2, l1_unstructured(t, a1))
        w = max(w, worst(m.weight_mask, j, r))
    rows.append(_row("prune.l1_unstructured twice", w, cases))
    # l1 then ln_structured along two dims
    w = 0.0
    for i in range(cases):
        dtype = (np.float32, np.float64)[i % 2]
        t = tensor(shapes[i % len(shapes)], dtype)
        n = [1, 2, math.inf][i % 3]
        m = module(t)
        tprune.l1_unstructured(m, "weight", 0.2)
        tprune.ln_structured(m, "weight", 0.5, n, 0)
        tprune.ln_structured(m, "weight", 1, n, -1)
        j = pruning.l1_unstructured(t, 0.2)
        j = pruning.ln_structured(t, 0.5, n, 0, mask=j)
        j = pruning.ln_structured(t, 1, n, -1, mask=j)
        r = ln_structured(t, 1, n, -1, ln_structured(t, 0.5, n, 0, l1_unstructured(t, 0.2)))
        w = max(w, worst(m.weight_mask, j, r))
    rows.append(_row("prune.l1 → ln_structured(dim 0) → ln_structured(dim -1)", w, cases))
    # global twice
    w = 0.0
    for i in range(cases):
        dtype = (np.float32, np.float64)[i % 2]
        ts = tensors([shapes[(i + k) % len(shapes)] for k in range(3)], dtype)
        mods = [module(t) for t in ts]
        params = [(m, "weight") for m in mods]
        tprune.global_unstructured(params, tprune.L1Unstructured, amount=0.3)
        tprune.global_unstructured(params, tprune.L1Unstructured, amount=5)
        j = pruning.global_unstructured(ts, 5, masks=pruning.global_unstructured(ts, 0.3))
        r = global_unstructured(ts, 5, global_unstructured(ts, 0.3))
        for m, jm, rm in zip(mods, j, r, strict=True):
            w = max(w, worst(m.weight_mask, jm, rm))
    rows.append(_row("prune.global_unstructured twice", w, cases))
    # sparsifier
    from torch.ao.pruning import WeightNormSparsifier

    w = 0.0
    for i in range(cases):
        dtype = (np.float32, np.float64)[i % 2]
        shape = [(8, 12), (7, 10), (5, 9), (6, 6)][i % 4]
        block = [(1, 4), (2, 2), (1, 1), (2, 3)][(i // 4) % 4]
        level = [0.5, 0.3, 0.75, 0.9][(i // 16) % 4]
        t = tensor(shape, dtype)
        model = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0], bias=False))
        with torch.no_grad():
            model[0].weight.copy_(torch.from_numpy(t))
        if dtype == np.float64:
            model.double()
        sp = WeightNormSparsifier(sparsity_level=level, sparse_block_shape=block)
        sp.prepare(model, [{"tensor_fqn": "0.weight"}])
        sp.step()
        tm = model[0].parametrizations.weight[0].mask
        spj = pruning.WeightNormSparsifier(sparsity_level=level, sparse_block_shape=block)
        j = spj.update_mask(t, np.ones_like(t))
        r = weight_norm_mask(t, np.ones_like(t), level, block)
        w = max(w, worst(tm, j, r))
    rows.append(_row("ao.pruning.WeightNormSparsifier", w, cases))
    rows.append(_training_row())
    return rows


def _training_row(steps: int = 120, every: int = 3) -> dict[str, Any]:
    """``WeightNormSparsifier`` + ``CubicSL`` stepped every ``every`` steps while torch's
    ``SGD(momentum=0.9)`` trains a 16-22-10 MLP in float64, against ``pruning.sparsify`` around
    ``optim.sgd``: the masks must be torch's (and the reference's, from torch's weights) at every
    step; ``worst`` is the largest parameter difference (``passed``: masks equal and
    ``worst <= 1e-12``)."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from torch.ao import pruning as tao

    from jaxopt_port import optim, pruning

    cubic = {"init_sl": 0.0, "init_t": 1, "delta_t": 2, "total_t": 10}
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((steps, 12, 16)), rng.standard_normal((steps, 12, 10))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 22), torch.nn.ReLU(), torch.nn.Linear(22, 10)
        )
        init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        sp = tao.WeightNormSparsifier(sparsity_level=0.8, sparse_block_shape=(1, 4))
        sp.prepare(model, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
        sched = tao.CubicSL(sp, **cubic)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
        torch_steps = []
        for t in range(steps):
            opt.zero_grad()
            out = model(torch.from_numpy(xs[t]))
            torch.mean((out - torch.from_numpy(ys[t])) ** 2).backward()
            opt.step()
            if (t + 1) % every == 0:
                sp.step()
                sched.step()
            torch_steps.append(
                [
                    (
                        layer.parametrizations.weight[0].mask.numpy().copy(),
                        layer.parametrizations.weight.original.detach().numpy().copy(),
                        layer.bias.detach().numpy().copy(),
                    )
                    for layer in (model[0], model[2])
                ]
            )
    finally:
        torch.set_default_dtype(default)

    def loss(p: Any, x: Any, y: Any) -> Any:
        h = jnp.maximum(x @ p[0][0].T + p[0][1], 0.0)
        return jnp.mean((h @ p[1][0].T + p[1][1] - y) ** 2)

    worst, masks_equal = 0.0, True
    with jax.enable_x64(True):
        sparsifier = pruning.WeightNormSparsifier(sparsity_level=0.8, sparse_block_shape=(1, 4))
        tx = pruning.sparsify(
            optim.sgd(lr=0.05, momentum=0.9),
            sparsifier,
            schedule=pruning.CubicSL(sparsifier, **cubic),
            every=every,
        )
        params = [(jnp.asarray(init[f"{n}.weight"]), jnp.asarray(init[f"{n}.bias"])) for n in "02"]
        state = tx.init(params)

        @jax.jit
        def step(params: Any, state: Any, x: Any, y: Any) -> Any:
            grads = jax.grad(loss)(pruning.masked(params, state), x, y)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        previous = [np.ones_like(init[f"{n}.weight"]) for n in "02"]
        for t in range(steps):
            params, state = step(params, state, xs[t], ys[t])
            masks = pruning.masks_of(state)
            for i, (mask, orig, bias) in enumerate(torch_steps[t]):
                expected = mask
                if (t + 1) % every == 0:  # the documented rule, from torch's weights
                    expected = weight_norm_mask(
                        orig, previous[i], level_before(t, every, cubic), (1, 4)
                    )
                    previous[i] = expected
                masks_equal &= bool(np.array_equal(masks[i][0], mask))
                masks_equal &= bool(np.array_equal(expected, mask))
                worst = max(
                    worst,
                    float(np.abs(np.asarray(params[i][0]) - orig).max()),
                    float(np.abs(np.asarray(params[i][1]) - bias).max()),
                )
    row = _row("sparsify: WeightNormSparsifier + CubicSL, SGD momentum, f64", worst, steps)
    row["passed"] = masks_equal and worst <= 1e-12
    return row
