"""A NumPy reference of the pruning mask rules, and the pruning parity check.

The reference imports only NumPy and states each rule the way the documentation does, so JAX and
torch are both checked against the written rule rather than against each other:

- amount: ``int`` = count; ``float`` = ``round(amount * alive)`` (Python, half to even).
- unstructured (``l1_unstructured``, ``global_unstructured``): among the alive entries
  (``mask == 1``) prune the ``k`` with the smallest ``|score|``, ``score = t * mask`` unless
  importance scores are given; ties to the lower flat index.
- structured (``ln_structured``): a channel is alive if its mask is not all zero; keep the
  ``alive - k`` alive channels of largest L``n`` norm of the score (ties: lower index kept),
  prune the other alive ones.
- ``WeightNormSparsifier``: scores ``w*w`` (L2) or ``|w|`` (L1) of the masked weight; block
  scores = the mean of each block's in-bound entries (ragged edge blocks average what they have);
  ``k = clamp(round(level * blocks), 0, blocks - 1)`` lowest blocks are pruned (ties to the lower
  block index); with ``zeros_per_block`` below the block size only that many smallest entries of
  each pruned block are zeroed (a ragged block zeros at most its in-bound entries).
- ``CubicSL``: ``s_t = s_f + (s_0 - s_f) (1 - (t - t_0) / (dt n))^3`` clamped to ``[s_0, s_f]``
  (0 before ``t_0`` when ``initially_zero``); ``LambdaSL``: ``s_t = s_f * f(t)``.

:func:`run_pruning_parity` compares jaxopt_port's masks with torch's and with these rules on
random tie-free cases and returns one plain dict per check (``name``, ``worst`` difference,
``cases``, ``passed``), for the parity CLI to print and write to its report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "count_to_prune",
    "cubic_sl",
    "global_unstructured",
    "l1_unstructured",
    "lambda_sl",
    "ln_structured",
    "run_pruning_parity",
    "weight_norm_mask",
]


def count_to_prune(amount: int | float, alive: int) -> int:
    """An ``int`` amount is a count; a ``float`` is ``round(amount * alive)``, half to even."""
    if isinstance(amount, (int, np.integer)):
        return int(amount)
    return round(float(amount) * alive)


def _lowest(scores: np.ndarray, alive: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` alive entries of smallest score; ties to the lower flat index."""
    flat, ok = scores.reshape(-1), alive.reshape(-1)
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(flat[candidates], kind="stable")]
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[order[:k]] = True
    return chosen.reshape(scores.shape)


def l1_unstructured(
    t: np.ndarray, amount: int | float, mask: np.ndarray | None = None, scores: Any = None
) -> np.ndarray:
    """The new mask of ``torch.nn.utils.prune.l1_unstructured`` (rule in the module docstring)."""
    mask = np.ones_like(t) if mask is None else mask.astype(t.dtype)
    score = t * mask if scores is None else scores
    alive = mask == 1
    k = count_to_prune(amount, int(alive.sum()))
    out = mask.copy()
    out[_lowest(np.abs(score), alive, k)] = 0
    return out


def _norm(x: np.ndarray, n: Any, axes: tuple[int, ...]) -> np.ndarray:
    a = np.abs(x)
    if n == "fro" or n == 2:
        return np.sqrt((a * a).sum(axis=axes))
    if n == math.inf:
        return a.max(axis=axes)
    if n == -math.inf:
        return a.min(axis=axes)
    if n == 0:
        return (x != 0).sum(axis=axes).astype(x.dtype)
    if n == 1:
        return a.sum(axis=axes)
    return (a**n).sum(axis=axes) ** (1.0 / n)


def ln_structured(
    t: np.ndarray,
    amount: int | float,
    n: Any,
    dim: int,
    mask: np.ndarray | None = None,
    scores: Any = None,
) -> np.ndarray:
    """The new mask of ``torch.nn.utils.prune.ln_structured``."""
    dim = dim % t.ndim
    axes = tuple(d for d in range(t.ndim) if d != dim)
    pruned_before = mask is not None
    mask = np.ones_like(t) if mask is None else mask.astype(t.dtype)
    score = t * mask if scores is None else scores
    alive = mask.sum(axis=axes) != 0 if pruned_before else np.ones(t.shape[dim], dtype=bool)
    k = count_to_prune(amount, int(alive.sum()))
    if k == 0:
        return mask.copy()
    keep = _lowest(-_norm(score, n, axes), alive, int(alive.sum()) - k)
    drop = alive & ~keep
    shape = [1] * t.ndim
    shape[dim] = -1
    return np.where(drop.reshape(shape), 0, mask).astype(t.dtype)


def global_unstructured(
    tensors: Sequence[np.ndarray],
    amount: int | float,
    masks: Sequence[Any] | None = None,
    scores: Sequence[Any] | None = None,
) -> list[np.ndarray]:
    """The new masks of ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``."""
    masks = masks or [None] * len(tensors)
    scores = scores or [None] * len(tensors)
    full = [
        np.ones_like(t) if m is None else m.astype(t.dtype)
        for t, m in zip(tensors, masks, strict=True)
    ]
    flat_scores = np.concatenate(
        [
            (t * m if s is None else s).reshape(-1)
            for t, m, s in zip(tensors, full, scores, strict=True)
        ]
    )
    flat_mask = np.concatenate([m.reshape(-1) for m in full]).astype(flat_scores.dtype)
    new = l1_unstructured(flat_scores, amount, flat_mask, scores=flat_scores)
    out, start = [], 0
    for t in tensors:
        out.append(new[start : start + t.size].reshape(t.shape).astype(t.dtype))
        start += t.size
    return out


def weight_norm_mask(
    w: np.ndarray,
    mask: np.ndarray,
    level: float,
    block: tuple[int, int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: int = 2,
) -> np.ndarray:
    """The new mask of ``torch.ao.pruning.WeightNormSparsifier.update_mask`` for a 2-D weight."""
    bh, bw = block
    size = bh * bw
    zeros = size if zeros_per_block is None else zeros_per_block
    if level <= 0 or zeros == 0:
        return np.ones_like(w)
    if level >= 1.0 and zeros == size:
        return np.zeros_like(w)
    masked = w * mask
    score = masked * masked if norm == 2 else np.abs(masked)
    h, wd = w.shape
    nh, nw = -(-h // bh), -(-wd // bw)
    blocks = np.array(
        [
            [score[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw].mean() for j in range(nw)]
            for i in range(nh)
        ]
    ).reshape(-1)
    if level >= 1.0:
        pruned_blocks = np.ones(blocks.size, dtype=bool)
    else:
        k = min(max(round(level * blocks.size), 0), blocks.size - 1)
        pruned_blocks = _lowest(blocks, np.ones(blocks.size, dtype=bool), k)
    out = np.ones_like(w)
    for b in np.flatnonzero(pruned_blocks):
        i, j = divmod(int(b), nw)
        rows, cols = slice(i * bh, (i + 1) * bh), slice(j * bw, (j + 1) * bw)
        patch = score[rows, cols]
        chosen = _lowest(patch, np.ones(patch.shape, dtype=bool), zeros)
        out[rows, cols][chosen] = 0
    return out


def cubic_sl(
    t: int,
    s_f: float,
    s_0: float = 0.0,
    t_0: int = 0,
    dt: int = 10,
    n: int = 100,
    initially_zero: bool = False,
) -> float:
    """``torch.ao.pruning.CubicSL``'s level at scheduler epoch ``t``."""
    if initially_zero and t < t_0:
        return 0
    s_t = s_f + (s_0 - s_f) * (1.0 - (t - t_0) / (dt * n)) ** 3
    return max(s_0, min(s_f, s_t))


def lambda_sl(t: int, s_f: float, fn: Callable[[int], float]) -> float:
    """``torch.ao.pruning.LambdaSL``'s level at scheduler epoch ``t``."""
    return s_f * fn(t)


# ----------------------------------------------------------------------------- parity


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


def level_before(t: int, every: int, cubic: dict[str, Any], final: float = 0.8) -> float:
    """The level the sparsifier used at the mask update after step ``t``: epoch = updates so far."""
    return cubic_sl(
        (t + 1) // every - 1,
        final,
        cubic["init_sl"],
        cubic["init_t"],
        cubic["delta_t"],
        cubic["total_t"],
    )
