"""The prox section's runner: PARQ (`prox.quant_optimizer`) and PAT (`prox.prune_optimizer`)
against torchao 0.18's `torchao.prototype.parq` / `torchao.prototype.pat` and the NumPy reference
(`parity.reference.prox`).

Rules (one row each):

- every quantizer, per tensor and per row, float32 and float64, on inputs whose sums are exact in
  any order (values k/8): `q` and `Q` bit-equal to torchao (`worst`: mismatching values);
- every proximal map (hard, PARQ, BinaryRelax) on general inputs before, inside and after its
  window, on refresh and kept steps: bit-equal (`worst`: mismatching values), except BinaryRelax
  inside the window in float32, which is within 1 ulp (torch's `add_(q, alpha=θ)` is a fused
  multiply-add; `worst`: values more than 1 ulp off) and in float64 (`worst`: the largest
  difference);
- PAT's `ProxLasso` / `ProxGroupLasso` over the element, layer, row and column groupers, float32
  and float64: bit-equal;
- PAT's `MinSparsityConstraint`, `NMSparseConstraint` over the row, column, k-element,
  conv-filter and attention-head groupers and `GlobalMinSparsityConstraint` over three leaves,
  float32 and float64, tie-free inputs: bit-equal to torchao and the reference;
- `ProxNuclearNorm` / `MinRankConstraint` with `SVDGrouper` (float64): XLA's SVD against torch's
  and NumPy's, the largest difference of the rebuilt weights, judged against the float64 gate;
- the cubic min-sparsity ramp: equal to torchao's and the reference's;
- the $\\rho_t$ sequence of `ProxPARQ`: equal to torchao's and the reference's (Python floats),
  and the traced float32/float64 tables equal to those values rounded;
- float64 training runs (a linear model, 100 steps; 60 in quick mode) of PARQ, PAT (lasso) and
  PAT (the min-sparsity ramp, then healing) with SGD (momentum) and AdamW: the largest
  difference of the weights from torchao's and from the reference's after every step, judged
  against the float64 gate.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from parity.metric import F64_GATE
from parity.reference import optim as ref_optim
from parity.reference import prox as ref


def _row(name: str, worst: float, cases: int, passed: bool | None = None) -> dict[str, Any]:
    worst = float(worst)
    return {
        "name": name,
        "worst": worst,
        "cases": cases,
        "passed": worst == 0.0 if passed is None else passed,
    }


@contextlib.contextmanager
def _precision(dtype: Any) -> Iterator[None]:
    """x64 in JAX and torch's default dtype for float64 (torchao builds its levels in torch's
    default dtype); neither for float32."""
    import jax
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        with jax.enable_x64(dtype == np.float64):
            yield
    finally:
        torch.set_default_dtype(old)


def _torchao() -> tuple[Any, Any, Any, Any, Any]:
    with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
        warnings.simplefilter("ignore")
        from torchao.prototype.parq import optim as parq_optim
        from torchao.prototype.parq import quant as parq_quant
        from torchao.prototype.pat import group as pat_group
        from torchao.prototype.pat import optim as pat_optim
        from torchao.prototype.pat.optim.prox_executor import apply_prox_to_param
    return parq_optim, parq_quant, pat_group, pat_optim, apply_prox_to_param


def _dyadic(rng: np.random.Generator, dtype: Any, rows: int = 16, cols: int = 16) -> np.ndarray:
    """Values k/8 whose every mean, residual and sum the quantizers take is exact in float32."""
    half = rng.integers(-16, 17, (rows, cols // 2))
    k = np.concatenate([half, -half], 1) + rng.integers(-3, 4, (rows, 1))
    return (rng.permuted(k, axis=1) / 8).astype(dtype)


def _mismatches(got: Any, want: Any) -> int:
    return int(np.sum(np.asarray(got) != np.asarray(want)))


def _quantizer_rows(rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    import jax
    import torch

    from jaxopt_port import prox

    _, tq, _, _, _ = _torchao()
    # (torchao quantizer, ours, bits): LSB's ternary levels take torch's default dtype
    quantizers = [
        (tq.UnifQuantizer(), prox.UnifQuantizer(), [2, 4]),
        (tq.UnifQuantizer(center=True), prox.UnifQuantizer(center=True), [2]),
        (tq.MaxUnifQuantizer(), prox.MaxUnifQuantizer(), [3]),
        (tq.TernaryUnifQuantizer(), prox.TernaryUnifQuantizer(), [0]),
        (tq.LSBQuantizer(), prox.LSBQuantizer(), [0, 2]),
    ]
    mismatches = cases = 0
    for dtype in (np.float32, np.float64):
        with _precision(dtype):
            configs = [
                (theirs, ours, b, dim)
                for theirs, ours, bits in quantizers
                for b in (bits[:1] if quick else bits)
                for dim in (None, -1)
            ]
            batch = np.stack([_dyadic(rng, dtype) for _ in range(4)])

            @jax.jit
            def run(batch, configs=configs):  # one compilation for every configuration
                return [
                    jax.vmap(lambda x, o=ours, b=b, d=dim: o.quantize(x, b, d))(batch)
                    for _, ours, b, dim in configs
                ]

            for (theirs, _, b, dim), (q, Q) in zip(configs, run(batch), strict=True):
                for i, p in enumerate(batch):
                    tq_, tQ = theirs.quantize(torch.from_numpy(p.copy()), b, dim=dim)
                    mismatches += _mismatches(q[i], tq_.numpy())
                    mismatches += _mismatches(Q[i], tQ.numpy())
                    cases += 1
    return [_row("PARQ quantizers (q and Q), f32+f64: values off torchao", mismatches, cases)]


def _prox_map_rows(rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import torch

    from jaxopt_port import prox

    to, tq, _, _, _ = _torchao()
    maps = [
        (to.ProxHardQuant(), prox.ProxHardQuant()),
        (to.ProxPARQ(10, 30, steepness=8, anneal_center=0.4), prox.ProxPARQ(10, 30, 8, 0.4)),
        (to.ProxBinaryRelax(10, 30), prox.ProxBinaryRelax(10, 30)),
    ]
    steps = [0, 10, 17, 29, 30] if quick else [0, 9, 10, 11, 17, 25, 29, 30, 55]
    bit_off = fused_off = cases = fused_cases = 0
    fused_worst64 = 0.0
    for dtype in (np.float32, np.float64):
        with _precision(dtype):
            for theirs, ours in maps:
                for dim in (None, -1):
                    p = rng.standard_normal((12, 40)).astype(dtype)
                    tq_, tQ = tq.UnifQuantizer().quantize(torch.from_numpy(p), 2, dim=dim)
                    q, Q = tq_.numpy(), tQ.numpy()

                    @jax.jit
                    def run(step, fresh, ours=ours, dim=dim, q=q, Q=Q, p=p):
                        q = jnp.where(fresh, q, prox.nearest_level(jnp.asarray(p), Q, dim))
                        return ours.apply(jnp.asarray(p), q, jnp.asarray(Q), step, dim)

                    for step in steps:
                        for fresh in (True, False):
                            t = torch.from_numpy(p.copy())
                            theirs.apply_(t, tq_ if fresh else None, tQ, step_count=step, dim=dim)
                            got, want = np.asarray(run(step, fresh)), t.numpy()
                            fused = isinstance(ours, prox.ProxBinaryRelax) and 10 <= step < 30
                            fused_cases += fused
                            if not fused:
                                cases += 1
                                bit_off += _mismatches(got, want)
                            elif dtype == np.float32:
                                ulp = np.spacing(np.abs(want).astype(np.float32))
                                fused_off += int(np.sum(np.abs(got - want) > ulp))
                            else:
                                fused_worst64 = max(fused_worst64, float(np.abs(got - want).max()))
    return [
        _row(
            "PARQ prox maps (hard, PARQ, BinaryRelax), f32+f64: values off torchao", bit_off, cases
        ),
        _row(
            "ProxBinaryRelax in its window, f32: values > 1 ulp off torchao (FMA)",
            fused_off,
            fused_cases // 2,
        ),
        _row(
            "ProxBinaryRelax in its window, f64: |Δ| from torchao (FMA)",
            fused_worst64,
            fused_cases // 2,
            fused_worst64 <= F64_GATE,
        ),
    ]


def _pat_map_rows(rng: np.random.Generator) -> list[dict[str, Any]]:
    import jax
    import torch

    from jaxopt_port import prox

    _, _, tg, to, apply_prox = _torchao()
    lam, gamma = 0.25, 0.75
    off = cases = 0
    for dtype in (np.float32, np.float64):
        with _precision(np.float64):  # λτγ in float64, as torchao's Python floats
            for shape in [(6, 10), (4, 3, 2, 2)]:
                z = (rng.integers(-12, 13, shape) / 8).astype(dtype)
                z[1] = 0
                z[2] = np.sign(z[2] + 0.01) / 8
                configs = [
                    (name, cls(lam), group)
                    for name, cls in [
                        ("ProxLasso", prox.ProxLasso),
                        ("ProxGroupLasso", prox.ProxGroupLasso),
                    ]
                    for group in ("ElemGrouper", "LayerGrouper", "Dim0Grouper", "Dim1Grouper")
                ]

                @jax.jit
                def run(z, configs=configs):  # one compilation for every configuration
                    return [m.apply(z, gamma, g) for _, m, g in configs]

                for (name, _, group), got in zip(configs, run(z), strict=True):
                    t = torch.from_numpy(z.copy())
                    kwargs = {
                        "gamma": gamma,
                        "gamma_index_slope": 0.0,
                        "disable_vmap": group in ("ElemGrouper", "LayerGrouper"),
                        "is_svd_grouper": False,
                        "zero_elts_are_counts": False,
                    }
                    apply_prox(t, getattr(to, name)(lam), getattr(tg, group), {}, kwargs)
                    off += _mismatches(got, t.numpy())
                    cases += 1
    return [
        _row("PAT ProxLasso/ProxGroupLasso × groupers, f32+f64: values off torchao", off, cases)
    ]


def _constraint_rows(rng: np.random.Generator) -> list[dict[str, Any]]:
    """MinSparsityConstraint / NMSparseConstraint over the row, column, k-element, conv-filter and
    attention-head groupers on tie-free inputs: ours, torchao's and the reference's values, and the
    cubic min-sparsity ramp."""
    import jax
    import torch

    from jaxopt_port import prox

    _, _, tg, to, apply_prox = _torchao()
    groupers = [
        ("Dim0Grouper", {}, (8, 12)),
        ("Dim1Grouper", {}, (8, 12)),
        ("KElementGrouper", {"k": 4}, (6, 12)),
        ("ConvFilterGrouper", {}, (5, 3, 2, 2)),
        ("AttentionHeadGrouperDim0", {"num_heads": 4}, (8, 6)),
        ("AttentionHeadGrouperDim1", {"num_heads": 3}, (4, 12)),
    ]
    maps = [
        ("MinSparsityConstraint", {"min_sparsity": 0.4}, prox.MinSparsityConstraint(0.4)),
        ("NMSparseConstraint", {"n_nonzero": 2}, prox.NMSparseConstraint(2)),
    ]
    off = cases = 0
    for dtype in (np.float32, np.float64):
        with _precision(np.float64):
            for group, gk, shape in groupers:
                size = int(np.prod(shape))
                z = rng.permutation(size) + 1.0 + rng.uniform(0, 0.5, size)
                z = (z * rng.choice([-1, 1], size) / size).reshape(shape).astype(dtype)
                for name, options, ours in maps:
                    k = gk.get("k", gk.get("num_heads"))
                    got = jax.jit(lambda z, m=ours, g=group, k=k: m.apply(z, 0.0, g, k))(z)
                    t = torch.from_numpy(z.copy())
                    kwargs = {
                        "gamma": 0.0,
                        "gamma_index_slope": 0.0,
                        "disable_vmap": False,
                        "is_svd_grouper": False,
                        "zero_elts_are_counts": True,
                    }
                    apply_prox(t, getattr(to, name)(0.0, **options), getattr(tg, group), gk, kwargs)
                    if name == "MinSparsityConstraint":
                        want = ref.min_sparsity(z, 0.4, group, k)
                    else:
                        want = ref.nm_sparse(z, 2, group, k)
                    off += _mismatches(got, t.numpy()) + _mismatches(want, t.numpy())
                    cases += 1
    # one global budget over three leaves (torchao's apply_global_prox)
    from torchao.prototype.pat.optim.prox_executor import apply_global_prox

    global_off = global_cases = 0
    shapes = [(6, 8), (4, 8), (10, 8)]
    sizes = [int(np.prod(s)) for s in shapes]
    for dtype in (np.float32, np.float64):
        with _precision(np.float64):
            values = rng.permutation(sum(sizes)) + 1.0 + rng.uniform(0, 0.5, sum(sizes))
            values *= rng.choice([-1, 1], values.size) / sum(sizes)
            parts = np.split(values, np.cumsum(sizes)[:-1])
            zs = [v.reshape(s).astype(dtype) for v, s in zip(parts, shapes, strict=True)]
            for group, score_type in [("Dim0Grouper", "rms"), ("ElemGrouper", "l2")]:
                ours = prox.GlobalMinSparsityConstraint(0.4, score_type)
                got = jax.jit(lambda zs, m=ours, g=group: m.apply_many(zs, g))(zs)
                ts = [torch.from_numpy(z.copy()) for z in zs]
                theirs = to.GlobalMinSparsityConstraint(0.0, 0.4, score_type)
                apply_global_prox(ts, theirs, getattr(tg, group), {}, 0.4)
                want = ref.global_min_sparsity(zs, 0.4, group, score_type)
                for g, t, r in zip(got, ts, want, strict=True):
                    global_off += _mismatches(g, t.numpy()) + _mismatches(r, t.numpy())
                global_cases += 1
    # SVD-grouped maps (XLA's SVD vs torch's and NumPy's: their rounding, float64)
    svd_worst, svd_cases = 0.0, 0
    with _precision(np.float64):
        for shape in [(8, 6), (6, 3, 2, 2)]:
            z = rng.standard_normal(shape)
            for name, ours, options, reference in [
                ("ProxNuclearNorm", prox.ProxNuclearNorm(1.2), {}, ref.nuclear_norm(z, 1.2, 1.5)),
                (
                    "MinRankConstraint",
                    prox.MinRankConstraint(0.5),
                    {"min_sparsity": 0.5},
                    ref.min_rank(z, 0.5),
                ),
            ]:
                got = np.asarray(jax.jit(lambda z, m=ours: m.apply(z, 1.5, "SVDGrouper"))(z))
                t = torch.from_numpy(z.copy())
                kwargs = {
                    "gamma": 1.5,
                    "gamma_index_slope": 0.0,
                    "disable_vmap": False,
                    "is_svd_grouper": True,
                    "zero_elts_are_counts": bool(options),
                }
                lam = 1.2 if name == "ProxNuclearNorm" else 0.0
                theirs = getattr(to, name)(lam, **options)
                count = torch.zeros(1, dtype=torch.int)
                apply_prox(t, theirs, tg.SVDGrouper, {}, kwargs, sv_count=count)
                want = t.numpy()
                svd_worst = max(
                    svd_worst,
                    float(np.abs(got - want).max()),
                    float(np.abs(reference - want).max()),
                )
                svd_cases += 1
    ramp_off = 0
    for n in range(60):
        stub = type("Stub", (), {"num_steps": n, "warmup_steps": 4, "healing_start_step": 50})
        group = {"min_sparsity": 0.7, "min_sparsity_schedule": True}
        want = to.PruneOptimizer._effective_min_sparsity(stub, group)
        ramp_off += prox.cubic_sparsity(0.7, n, 4, 50) != want
        ramp_off += ref.cubic_sparsity(0.7, n, 4, 50) != want
    return [
        _row("PAT MinSparsity/NMSparse × groupers, f32+f64: values off torchao/ref", off, cases),
        _row(
            "PAT GlobalMinSparsity over 3 leaves, f32+f64: values off torchao/ref",
            global_off,
            global_cases,
        ),
        _row(
            "PAT ProxNuclearNorm/MinRank (SVDGrouper), f64: |Δ| from torchao/ref",
            svd_worst,
            svd_cases,
            svd_worst <= F64_GATE,
        ),
        _row("PAT cubic min-sparsity ramp (Python floats): values off torchao/ref", ramp_off, 60),
    ]


def _rho_rows() -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from jaxopt_port import prox

    to, _, _, _, _ = _torchao()
    parq = prox.ProxPARQ(7, 200, steepness=12, anneal_center=0.3)
    want = [to.parq.normalized_mirror_sigmoid(t, 7, 200, 12, 0.3) for t in range(7, 200)]
    reference = [ref.mirror_sigmoid(t, 7, 200, 12, 0.3) for t in range(7, 200)]
    off = sum(a != b for a, b in zip(parq.rhos(), want, strict=True))
    off += sum(a != b for a, b in zip(reference, want, strict=True))
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            got = jax.jit(jax.vmap(lambda t, d=dtype: parq.inv_slope(t, d)))(jnp.arange(210))
        tiny = np.finfo(dtype).tiny
        expected = [1.0] * 7 + [max(tiny, r) for r in want] + [0.0] * 10
        off += _mismatches(got, np.asarray(expected).astype(dtype))
    return [_row("ProxPARQ ρ_t sequence (Python floats, f32/f64 tables): values off", off, 210)]


def _linear_problem() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 12))
    W_true = rng.standard_normal((6, 12)) * np.array([0, 0, 0, 1, 1, 1])[:, None]
    return X, X @ W_true.T, rng.standard_normal((6, 12)) * 0.3, rng.standard_normal(6) * 0.1


def _training_rows(steps: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from jaxopt_port import optim, prox

    to_parq, tq, _, to_pat, _ = _torchao()
    X, Y, W0, b0 = _linear_problem()
    warmup, period, t1, t2 = 5, 7, 10, steps - 20
    lam_w, lam_b = 0.05, 0.5

    def grad(params: list) -> list:
        r = 2 * (X @ params[0].T + params[1] - Y) / Y.size
        return [r.T @ X, r.sum(0)]

    rows = []
    for opt, lr in (("sgd", 0.05), ("adamw", 0.01)):
        options = {"momentum": 0.9} if opt == "sgd" else {}
        for wrapper in ("PARQ", "PAT", "PAT min-sparsity ramp + healing"):
            healing = steps // 2 if "healing" in wrapper else None
            if "healing" in wrapper:
                w_group = {
                    "prox_type": "MinSparsityConstraint",
                    "group_type": "Dim0Grouper",
                    "min_sparsity": 0.5,
                    "min_sparsity_schedule": True,
                }
            else:
                w_group = {"prox_type": "ProxGroupLasso", "group_type": "Dim0Grouper"}
            # torchao
            with _precision(np.float64):
                W = torch.nn.Parameter(torch.from_numpy(W0.copy()))
                b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
                if wrapper == "PARQ":
                    groups = [{"params": [W], "quant_bits": 2}, {"params": [b]}]
                else:
                    groups = [
                        {"params": [W], **w_group},
                        {
                            "params": [b],
                            "prox_type": "ProxLasso",
                            "group_type": "ElemGrouper",
                            "reg_lambda": lam_b,
                        },
                    ]
                cls = torch.optim.SGD if opt == "sgd" else torch.optim.AdamW
                base = cls(groups, lr=lr, foreach=False, **options)
                if wrapper == "PARQ":
                    wrapped = to_parq.QuantOptimizer(
                        base,
                        tq.UnifQuantizer(),
                        to_parq.ProxPARQ(t1, t2),
                        warmup_steps=warmup,
                        quant_period=period,
                    )
                else:
                    wrapped = to_pat.PruneOptimizer(
                        base,
                        warmup_steps=warmup,
                        reg_lambda=lam_w,
                        **({} if healing is None else {"healing_start_step": healing}),
                    )
                Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
                theirs = []
                for _ in range(steps):
                    wrapped.zero_grad()
                    ((Xt @ W.T + b - Yt) ** 2).mean().backward()
                    wrapped.step()
                    theirs.append([W.detach().numpy().copy(), b.detach().numpy().copy()])
            # jaxopt_port
            inner = optim.sgd(lr=lr, **options) if opt == "sgd" else optim.adamw(lr=lr)
            if wrapper == "PARQ":
                tx = prox.quant_optimizer(
                    inner,
                    prox.UnifQuantizer(),
                    prox.ProxPARQ(t1, t2),
                    bits=2,
                    params="W",
                    warmup_steps=warmup,
                    quant_period=period,
                )
            else:
                groups_j = [
                    {"params": "W", **w_group},
                    {"params": "b", "prox_type": "ProxLasso", "reg_lambda": lam_b},
                ]
                tx = prox.prune_optimizer(
                    inner,
                    groups_j,
                    warmup_steps=warmup,
                    reg_lambda=lam_w,
                    lr=lr,
                    healing_start_step=healing,
                )
            ours = []
            with jax.enable_x64(True):
                params = {"W": jnp.asarray(W0), "b": jnp.asarray(b0)}
                state = tx.init(params)

                @jax.jit
                def step(params: Any, state: Any, tx: Any = tx) -> Any:
                    g = jax.grad(lambda p: jnp.mean((X @ p["W"].T + p["b"] - Y) ** 2))(params)
                    updates, state = tx.update(g, state, params)
                    return optax.apply_updates(params, updates), state

                for _ in range(steps):
                    params, state = step(params, state)
                    ours.append([np.asarray(params["W"]), np.asarray(params["b"])])
            # the reference
            reference_opt = ref_optim.make(opt, [W0, b0], lr=lr, **options)
            if wrapper == "PARQ":
                maps = {0: ref.parq_map(2, warmup, period, t1, t2)}
            elif healing is None:
                maps = {
                    0: lambda z, n, gamma: ref.group_lasso_rows(z, lam_w, gamma),
                    1: lambda z, n, gamma: ref.lasso(z, lam_b, gamma),
                }
            else:

                def ramp(z: np.ndarray, n: int, gamma: float, healing: int = healing) -> Any:
                    sparsity = ref.cubic_sparsity(0.5, n, warmup, healing)
                    return ref.min_sparsity(z, sparsity, "Dim0Grouper")

                maps = {0: ramp, 1: lambda z, n, gamma: ref.lasso(z, lam_b, gamma)}
            reference = ref.latent_run(reference_opt, grad, steps, maps, warmup, healing)
            to_torch = to_ref = 0.0
            for a, t, r in zip(ours, theirs, reference, strict=True):
                for x, y, z in zip(a, t, r, strict=True):
                    to_torch = max(to_torch, float(np.abs(x - y).max()))
                    to_ref = max(to_ref, float(np.abs(x - z).max()), float(np.abs(y - z).max()))
            name = f"{wrapper} training, {opt}, f64, {steps} steps: |Δ|"
            rows.append(_row(f"{name} from torchao", to_torch, steps, to_torch <= F64_GATE))
            rows.append(_row(f"{name} from the reference", to_ref, steps, to_ref <= F64_GATE))
    return rows


def run_prox_parity(quick: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """PARQ and PAT against torchao and the NumPy reference (the module docstring's rules).

    Args:
      quick: fewer bit widths, steps of the maps and training steps.
      seed: NumPy seed of the random inputs.

    Returns:
      `[{"name", "worst", "cases", "passed"}]`, one per rule.
    """
    rng = np.random.default_rng(seed)
    return [
        *_quantizer_rows(rng, quick),
        *_prox_map_rows(rng, quick),
        *_pat_map_rows(rng),
        *_constraint_rows(rng),
        *_rho_rows(),
        *_training_rows(60 if quick else 100),
    ]
