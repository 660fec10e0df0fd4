"""NumPy reference of PARQ (torchao's `torchao.prototype.parq`) and PAT
(`torchao.prototype.pat`): the uniform quantizer, the PARQ proximal map, the lasso maps and the
latent-weight training step of both wrappers, written from the documented formulas (imports
NumPy only).

All arithmetic is in the input's dtype with true (correctly rounded) division and half-to-even
rounding, as torch does it eagerly.
"""

from __future__ import annotations

import math

import numpy as np


def unif_quantize(p: np.ndarray, b: int, per_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`UnifQuantizer()` (scale from the mean, levels s·{±0.5, ±1.5, ...}): `(q, Q)`."""
    axis, keep = (-1, True) if per_row else (None, False)
    a = np.abs(p)
    n = p.shape[-1] if per_row else p.size
    mean = np.sum(a, axis=axis, keepdims=keep) / p.dtype.type(n)
    q_max = np.minimum(p.dtype.type(b) * mean, np.max(a, axis=axis, keepdims=keep))
    q_max = np.maximum(q_max, np.finfo(p.dtype).tiny)
    r = 2 ** (b - 1) - 0.5
    s = q_max / p.dtype.type(r)
    half = p.dtype.type(0.5)
    q = (np.round(np.clip(p, -q_max, q_max) / s - half) + half) * s
    levels = np.arange(-r, r + 1e-5).astype(p.dtype)
    return q, (levels * s if not per_row else levels[None, :] * s)


def mirror_sigmoid(t: int, t1: int, t2: int, s: float = 10.0, c: float = 0.5) -> float:
    """PARQ's inverse slope ρ_t on [t1, t2) (Python floats)."""
    f = (t - t1) / (t2 - t1)
    st = 1 / (1 + math.exp(s * (f - c)))
    s1 = 1 / (1 + math.exp(-0.5 * s))
    s2 = 1 / (1 + math.exp(0.5 * s))
    return (st - s2) / (s1 - s2)


def _rows(p: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (p[None, :], Q[None, :]) if Q.ndim == 1 else (p, Q)


def nearest(p: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The nearest level (ties to the lower one), per row for a 2-D `Q`."""
    P, L = _rows(p, Q)
    mid = (L[:, :-1] + L[:, 1:]) / P.dtype.type(2)
    out = np.stack([L[i][np.searchsorted(mid[i], P[i], side="left")] for i in range(len(P))])
    return out.reshape(p.shape)


def prox_parq(p: np.ndarray, Q: np.ndarray, q: np.ndarray, t: int, t1: int, t2: int) -> np.ndarray:
    """ProxPARQ(t1, t2) at step t."""
    if t < t1:
        return p.copy()
    if t >= t2:
        return q.copy()
    rho = p.dtype.type(max(np.finfo(p.dtype).tiny, mirror_sigmoid(t, t1, t2)))
    P, L = _rows(p, Q)
    out = np.empty_like(P)
    for i in range(len(P)):
        idx = np.searchsorted(L[i], P[i], side="left")
        lo = L[i][np.maximum(idx - 1, 0)]
        hi = L[i][np.minimum(idx, L.shape[1] - 1)]
        c = (lo + hi) / P.dtype.type(2)
        out[i] = np.minimum(np.maximum(c + (P[i] - c) / rho, lo), hi)
    return out.reshape(p.shape)


def _shrink(z: np.ndarray, norm: np.ndarray, threshold: float) -> np.ndarray:
    r"""$z\cdot\max(0, 1 - t/\lVert z_g\rVert)$, 0 where the norm is 0 (torchao: NaN if t = 0)."""
    safe = np.where(norm == 0, 1.0, norm)
    mult = np.maximum(1 - threshold / safe, 0)
    return z * np.where(norm == 0, 0.0, mult).astype(z.dtype)


def lasso(z: np.ndarray, reg_lambda: float, gamma: float) -> np.ndarray:
    """PAT's `ProxLasso(reg_lambda)` at cumulative lr `gamma`: element-wise soft thresholding."""
    return _shrink(z, np.abs(z), reg_lambda * gamma)


def group_lasso_rows(z: np.ndarray, reg_lambda: float, gamma: float) -> np.ndarray:
    r"""PAT's `ProxGroupLasso(reg_lambda)` with `Dim0Grouper`: a group per row of the 2-D view
    (dims 1.. flattened), threshold $\lambda\sqrt{n_g}\gamma$."""
    view = z.reshape(z.shape[0], -1)
    norm = np.sqrt(np.sum(view * view, axis=1, keepdims=True))
    return _shrink(view, norm, reg_lambda * math.sqrt(view.shape[1]) * gamma).reshape(z.shape)


def latent_run(
    opt, grad, steps: int, maps: dict, warmup: int, healing: int | None = None
) -> list[list]:
    """A run of torchao's latent-weight wrappers (`QuantOptimizer`, `PruneOptimizer`).

    Args:
      opt: a reference optimizer (`parity.reference.optim.make(...)`: `.params`, `.lr`,
        `.step(grads)`) over the model's parameters.
      grad: `params -> grads` (the gradient at the model's weights).
      steps: steps to take.
      maps: parameter index → `prox(z, n, gamma) -> weight` for the wrapped parameters.
      warmup: steps of the optimizer alone first.
      healing: from this step on (PAT's healing) the optimizer steps the weights themselves,
        with the wrapped parameters' gradients zeroed where the weight is 0 and those entries
        kept at 0; no proximal map, $\\gamma$ stops.

    Returns:
      The model's parameters after every step.

    Step $n$: before `warmup` the optimizer alone; from then on the optimizer steps the latent
    $z$ of each wrapped parameter (at $n$ = `warmup` from the weight, when $z$ is first saved),
    $\\gamma \\mathrel{+}= \\text{lr}$, and the weight becomes `prox(z, n, gamma)`.
    """
    weights = [p.copy() for p in opt.params]
    latent: dict[int, np.ndarray] = {}
    gamma, out = 0.0, []
    for n in range(steps):
        g = grad(weights)
        if healing is not None and n >= healing:
            masks = {i: weights[i] != 0 for i in maps}
            opt.params = [w.copy() for w in weights]
            opt.step([np.where(masks[i], g[i], 0.0) if i in masks else g[i] for i in range(len(g))])
            weights = [
                np.where(masks[i], p, 0.0) if i in masks else p.copy()
                for i, p in enumerate(opt.params)
            ]
            out.append([w.copy() for w in weights])
            continue
        opt.params = [
            latent[i] if (i in latent and n > warmup) else w.copy() for i, w in enumerate(weights)
        ]
        opt.step(g)
        weights = [p.copy() for p in opt.params]
        if n >= warmup:
            gamma += opt.lr
            for i, prox in maps.items():
                latent[i] = opt.params[i].copy()
                weights[i] = prox(latent[i], n, gamma)
        out.append([w.copy() for w in weights])
    return out


def parq_map(bits: int, warmup: int, period: int, t1: int, t2: int, per_row: bool = False):
    """`prox(z, n, gamma)` of PARQ with `UnifQuantizer()` and `ProxPARQ(t1, t2)` (no shrink):
    the levels are recomputed every `period` steps from `warmup` on and kept in between (`q`
    the nearest level then)."""
    levels: dict[str, np.ndarray] = {}

    def prox(z: np.ndarray, n: int, gamma: float) -> np.ndarray:
        if (n - warmup) % period == 0:
            q, levels["Q"] = unif_quantize(z, bits, per_row)
        else:
            q = nearest(z, levels["Q"])
        return prox_parq(z, levels["Q"], q, n, t1, t2)

    return prox


def _group_rows(z: np.ndarray, group_type: str, k: int | None) -> np.ndarray:
    """PAT's groups as the rows of a 2-D array (a copy)."""
    if group_type == "ConvFilterGrouper":
        return z.reshape(z.shape[0] * z.shape[1], -1).copy()
    if group_type == "AttentionHeadGrouperDim0":  # k = num_heads: consecutive rows per head
        return z.reshape(k, -1).copy()
    if group_type == "AttentionHeadGrouperDim1":  # consecutive columns per head
        heads = np.split(z, k, axis=1)
        return np.stack([h.ravel() for h in heads])
    view = z.reshape(z.shape[0], -1)
    if group_type == "Dim1Grouper":
        return view.T.copy()
    if group_type == "KElementGrouper":
        return view.reshape(-1, k).copy()
    return view.copy()


def _ungroup(rows: np.ndarray, z: np.ndarray, group_type: str) -> np.ndarray:
    if group_type == "Dim1Grouper":
        return rows.T.reshape(z.shape)
    if group_type == "AttentionHeadGrouperDim1":
        return np.concatenate([r.reshape(z.shape[0], -1) for r in rows], axis=1)
    return rows.reshape(z.shape)


def min_sparsity(
    z: np.ndarray, sparsity: float, group_type: str, k: int | None = None
) -> np.ndarray:
    """`MinSparsityConstraint(sparsity)`: the ceil(sparsity · groups) groups of smallest L2 norm
    zeroed (ties: the lower index first)."""
    rows = _group_rows(z, group_type, k)
    n_zero = math.ceil(sparsity * rows.shape[0])
    norms = np.sqrt(np.sum(rows * rows, axis=1))
    rows[np.argsort(norms, kind="stable")[:n_zero]] = 0
    return _ungroup(rows, z, group_type)


def nm_sparse(z: np.ndarray, n_nonzero: int, group_type: str, k: int | None = None) -> np.ndarray:
    """`NMSparseConstraint(n_nonzero)`: all but the n_nonzero largest |entries| of every group
    zeroed (ties: the lower index first)."""
    rows = _group_rows(z, group_type, k)
    for row in rows:
        row[np.argsort(np.abs(row), kind="stable")[: row.size - n_nonzero]] = 0
    return _ungroup(rows, z, group_type)


def cubic_sparsity(target: float, step: int, warmup: int, healing: int) -> float:
    """PAT's cubic ramp of min_sparsity: 0 up to warmup, target from healing - 1 on, in between
    target · (1 - (1 - t)^3) with t = (step - warmup) / (healing - warmup)."""
    if step >= healing - 1:
        return target
    if step <= warmup:
        return 0.0
    t = (step - warmup) / (healing - warmup)
    return target * (1 - (1 - t) ** 3)


def global_min_sparsity(
    zs: list[np.ndarray],
    sparsity: float,
    group_type: str,
    score_type: str = "rms",
    k: int | None = None,
) -> list[np.ndarray]:
    """`GlobalMinSparsityConstraint(sparsity, score_type)`: of all the groups of all `zs`, the
    ceil(sparsity · total) of smallest score zeroed (rms: norm/sqrt(size), l2: norm,
    param_cost: norm/size; ElemGrouper: each entry a group, LayerGrouper: each leaf one)."""
    rows = []
    for z in zs:
        if group_type == "ElemGrouper":
            rows.append(z.reshape(-1, 1).copy())
        elif group_type == "LayerGrouper":
            rows.append(z.reshape(1, -1).copy())
        else:
            rows.append(_group_rows(z, group_type, k))
    divisor = {"rms": lambda n: math.sqrt(n), "l2": lambda n: 1.0, "param_cost": lambda n: n}
    scores = np.concatenate(
        [np.sqrt(np.sum(r * r, axis=1)) / divisor[score_type](r.shape[1]) for r in rows]
    )
    drop = np.zeros(scores.size, bool)
    drop[np.argsort(scores, kind="stable")[: math.ceil(sparsity * scores.size)]] = True
    out, offset = [], 0
    for r, z in zip(rows, zs, strict=True):
        r[drop[offset : offset + len(r)]] = 0
        offset += len(r)
        grouped = group_type not in ("ElemGrouper", "LayerGrouper")
        out.append(_ungroup(r, z, group_type) if grouped else r.reshape(z.shape))
    return out


def _svd_rebuilt(z: np.ndarray, shrink) -> np.ndarray:
    view = np.squeeze(z)
    if view.ndim > 2:
        view = view.reshape(view.shape[0], -1)
    u, sv, vh = np.linalg.svd(view, full_matrices=False)
    return ((u * shrink(sv)) @ vh).reshape(z.shape)


def nuclear_norm(z: np.ndarray, reg_lambda: float, gamma: float) -> np.ndarray:
    """PAT's `ProxNuclearNorm` with `SVDGrouper`: singular values max(0, σ - λγ)."""
    return _svd_rebuilt(z, lambda sv: np.maximum(sv - z.dtype.type(reg_lambda * gamma), 0))


def min_rank(z: np.ndarray, sparsity: float) -> np.ndarray:
    """PAT's `MinRankConstraint` with `SVDGrouper`: the ceil(sparsity · r) smallest of the r
    singular values zeroed."""

    def shrink(sv: np.ndarray) -> np.ndarray:
        out = sv.copy()
        out[np.argsort(sv, kind="stable")[: math.ceil(sparsity * sv.size)]] = 0
        return out

    return _svd_rebuilt(z, shrink)
