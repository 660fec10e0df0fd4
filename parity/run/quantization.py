"""Quantization's section runner: jaxopt_port, torch and the NumPy reference
(`parity.reference.quantization`) on near-tie inputs; torch's converted PTQ models and QAT runs
against ours on the digits data."""

from __future__ import annotations

import numpy as np

from parity.reference.quantization import (
    DTYPE_RANGES,
    F32,
    dequantize,
    fake_quantize,
    near_ties,
    quantize_per_channel,
    quantize_per_tensor,
)


def _row(name, *arrays):
    """Bitwise mismatches of every array against the first (torch's)."""
    want = np.asarray(arrays[0])
    bad = 0
    for got in arrays[1:]:
        got = np.asarray(got)
        if want.dtype.kind == "f":
            bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
            bad += int(np.sum(got.astype(want.dtype).view(bits) != want.view(bits)))
        else:
            bad += int(np.sum(got != want))
    return {"name": name, "mismatches": bad, "compared": int(want.size), "passed": bad == 0}


def run_qat_model_parity(quick: bool = False) -> list[dict]:
    """torch's eager QAT model flow against jaxopt_port's on digits (`parity.run.qat_model`):
    x86 default QAT qconfig, SGD, float32.

    Rows (`mismatches` must be 0): the MLP's converted logits from torch's trained state
    (bitwise), the int8 outputs of each twin converted after its own 50 steps (20 quick), the
    steps where the twins part beyond the measured float32 drift (parameters 1e-7, scales
    2 ulps, zero points equal), and the Conv+BN+ReLU model's converted logits after 30 (10)
    steps restarted from torch's state every step (bitwise).
    """
    import warnings

    import torch

    from jaxopt_port import quantization as Q
    from parity.run import qat_model

    old_engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    rows = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlp = qat_model.train("mlp", 20 if quick else 50)
            theirs, ours = qat_model.converted_logits(mlp["torch"], mlp["nnx"], "mlp")
            fc2 = Q.convert(mlp["nnx"]).fc2
            zero_point = int(mlp["torch"].fc2.activation_post_process.calculate_qparams()[1])
            want_scale = float(mlp["torch"].fc2.activation_post_process.calculate_qparams()[0])
            row = _row(
                "QAT MLP, each trained: converted int8 outputs",
                qat_model.int8_outputs(theirs, want_scale, zero_point),
                qat_model.int8_outputs(ours, float(fc2.scale[...][0]), zero_point),
            )
            row["mismatches"] += int(fc2.zero_point[...][0]) != zero_point
            rows.append(row)
            off = sum(
                r["param"] > 1e-7 or r["scale_ulps"] > 2 or r["zero_point"] > 0
                for r in mlp["records"]
            )
            rows.append(
                {
                    "name": "QAT MLP: steps beyond float32 drift (1e-7, 2 ulps)",
                    "mismatches": off,
                    "compared": len(mlp["records"]),
                    "passed": off == 0,
                }
            )
            qat_model.load_torch_state(mlp["nnx"], mlp["torch"], "mlp")
            rows.append(
                _row(
                    "QAT MLP convert of torch's state: logits",
                    *qat_model.converted_logits(mlp["torch"], mlp["nnx"], "mlp"),
                )
            )
            cnn = qat_model.train("cnn", 10 if quick else 30, teacher_forced=True)
            rows.append(
                _row(
                    "QAT Conv+BN+ReLU convert: logits",
                    *qat_model.converted_logits(cnn["torch"], cnn["nnx"], "cnn"),
                )
            )
    finally:
        torch.backends.quantized.engine = old_engine
    return rows


def run_quantization_parity(seed: int = 0, cases: int = 8, per_case: int = 12_500) -> list[dict]:
    """jaxopt_port (eager and jitted) vs torch (x86 engine) vs this reference.

    Returns plain dict rows: `name`, `mismatches` (bitwise, summed over the JAX and reference
    results), `compared` (inputs per result), `passed`. Needs torch and jaxopt_port.
    """
    import warnings

    import jax
    import torch

    from jaxopt_port import quantization as Q

    rows = []
    rng = np.random.default_rng(seed)
    old_engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for dtype, (lo, hi) in (
                ("quint8", (0, 255)),
                ("qint8", (-20, 20)),
                ("qint32", (-1000, 1000)),
            ):
                scales = np.exp(rng.uniform(-9, 2, cases)).astype(F32)
                zps = rng.integers(lo, hi + 1, cases)
                qlo, qhi = DTYPE_RANGES[dtype] if dtype != "qint32" else (lo, hi)
                x = near_ties(rng, scales[:, None], zps[:, None], qlo, qhi, (cases, per_case))
                tdt = getattr(torch, dtype)
                want = np.stack(
                    [
                        torch.quantize_per_tensor(torch.from_numpy(r), float(s), int(z), tdt)
                        .int_repr()
                        .numpy()
                        for r, s, z in zip(x, scales, zps, strict=True)
                    ]
                )
                f = jax.vmap(lambda r, s, z, d=dtype: Q.quantize_per_tensor(r, s, z, d))
                reference = np.stack(
                    [
                        quantize_per_tensor(r, s, z, dtype)
                        for r, s, z in zip(x, scales, zps, strict=True)
                    ]
                )
                rows.append(
                    _row(
                        f"quantize_per_tensor[{dtype}]",
                        want,
                        f(x, scales, zps),
                        jax.jit(f)(x, scales, zps),
                        reference,
                    )
                )
                if dtype == "qint32":
                    continue
                xc = x.T.copy()
                want = (
                    torch.quantize_per_channel(
                        torch.from_numpy(xc),
                        torch.from_numpy(scales.astype(np.float64)),
                        torch.from_numpy(zps),
                        1,
                        tdt,
                    )
                    .int_repr()
                    .numpy()
                )
                g = jax.jit(lambda x, s, z, d=dtype: Q.quantize_per_channel(x, s, z, 1, d))
                rows.append(
                    _row(
                        f"quantize_per_channel[{dtype}]",
                        want,
                        g(xc, scales, zps),
                        quantize_per_channel(xc, scales, zps, 1, dtype),
                    )
                )
                q = want
                deq = torch._make_per_channel_quantized_tensor(
                    torch.from_numpy(q),
                    torch.from_numpy(scales.astype(np.float64)),
                    torch.from_numpy(zps),
                    1,
                ).dequantize()
                rows.append(
                    _row(
                        f"dequantize per channel[{dtype}]",
                        deq.numpy(),
                        jax.jit(lambda q, s, z: Q.dequantize(q, s, z, axis=1))(q, scales, zps),
                        dequantize(q, scales, zps, axis=1),
                    )
                )
            for qmin, qmax in ((0, 255), (-128, 127), (0, 127)):
                scales = np.exp(rng.uniform(-9, 2, cases)).astype(F32)
                zps = rng.integers(qmin, qmax + 1, cases)
                x = near_ties(
                    rng, scales[:, None], zps[:, None], qmin, qmax, (cases, per_case)
                ).T.copy()
                grad = rng.standard_normal(x.shape).astype(F32)
                xt = torch.from_numpy(x).requires_grad_()
                yt = torch.fake_quantize_per_channel_affine(
                    xt,
                    torch.from_numpy(scales),
                    torch.from_numpy(zps.astype(np.int32)),
                    1,
                    qmin,
                    qmax,
                )
                yt.backward(torch.from_numpy(grad))

                def y_dx(x, s, z, g, qmin=qmin, qmax=qmax):
                    y, vjp = jax.vjp(
                        lambda x: Q.fake_quantize_per_channel_affine(x, s, z, 1, qmin, qmax), x
                    )
                    return y, vjp(g)[0]

                y, dx = jax.jit(y_dx)(x, scales, zps, grad)
                ry, mask = fake_quantize(x, scales, zps, qmin, qmax, axis=1)
                rows.append(
                    _row(f"fake_quantize values [{qmin}, {qmax}]", yt.detach().numpy(), y, ry)
                )
                rows.append(
                    _row(
                        f"fake_quantize gradients [{qmin}, {qmax}]",
                        xt.grad.numpy(),
                        dx,
                        grad * mask.astype(F32),
                    )
                )
            # observers: qparams after a sequence of batches
            from torch.ao import quantization as tq

            for name, kwargs in (
                ("MinMaxObserver", {}),
                ("MinMaxObserver", {"dtype": "qint8", "qscheme": "per_tensor_symmetric"}),
                ("MovingAverageMinMaxObserver", {"reduce_range": True}),
                (
                    "PerChannelMinMaxObserver",
                    {"dtype": "qint8", "qscheme": "per_channel_symmetric"},
                ),
                ("MovingAveragePerChannelMinMaxObserver", {}),
            ):
                tkw = {
                    k: getattr(torch, v) if k in ("dtype", "qscheme") else v
                    for k, v in kwargs.items()
                }
                theirs, ours = getattr(tq, name)(**tkw), getattr(Q, name)(**kwargs)
                state = ours.init(8) if "PerChannel" in name else ours.init()
                update = jax.jit(ours.update)
                for t in range(6):
                    xb = (rng.standard_normal((8, 16)) * 10.0 ** (t - 3)).astype(F32)
                    xb = np.zeros_like(xb) if t == 0 else xb
                    theirs(torch.from_numpy(xb))
                    state = update(state, xb)
                ws, wz = theirs.calculate_qparams()
                s, z = ours.calculate_qparams(state)
                row = _row(f"{name}{kwargs or ''} qparams", ws.numpy(), s)
                row_z = _row("", wz.numpy().astype(np.int64), np.asarray(z).astype(np.int64))
                row["mismatches"] += row_z["mismatches"]
                row["passed"] = row["mismatches"] == 0
                rows.append(row)
    finally:
        torch.backends.quantized.engine = old_engine
    return rows


#: The PTQ model rows: `(row name, twins builder, float weights rounded to multiples of 2^-5,
#: "dynamic" or a static qconfig's name, calibration batches)`. Static rows use dyadic weights
#: (see `parity.specs.ptq_models`), so that both frameworks calibrate on the same activations.
PTQ_MODELS = (
    ("dynamic MLP", "mlp_twins", False, "dynamic", 0),
    ("dynamic MLP per-channel", "mlp_twins", False, "per_channel_dynamic", 0),
    ("static MLP x86", "mlp_twins", True, "x86", 1),
    ("static MLP default_qconfig 3 batches", "mlp_twins", True, "default_qconfig", 3),
    ("static CNN x86", "cnn_twins", True, "x86", 1),
    ("static residual MLP (add) default_qconfig", "residual_twins", True, "default_qconfig", 1),
)
#: The rows of `run_ptq_model_parity(quick=True)` (the x86 qconfig's histogram observers cost
#: ~4 s of compilation per model: none in the quick rows).
PTQ_QUICK = (
    "dynamic MLP",
    "static MLP default_qconfig 3 batches",
    "static residual MLP (add) default_qconfig",
)


def ptq_twins(name: str):
    """Row `name` of `PTQ_MODELS`: torch's converted int8 model, ours, and the digits inputs of
    each (`(theirs, ours, x_torch, x)`). Needs the x86 engine set (`run_ptq_model_parity` does)."""
    import copy

    import torch
    import torch.ao.quantization as tq
    from flax import nnx

    from jaxopt_port import quantization as Q
    from parity.specs import ptq_models

    _, builder, dyadic, config, n_batches = next(m for m in PTQ_MODELS if m[0] == name)
    torch_model, model = getattr(ptq_models, builder)(dyadic=dyadic)
    x = ptq_models.digits()
    x, x_t = ptq_models.images(x) if builder == "cnn_twins" else (x, x)
    x_t = torch.from_numpy(x_t)
    if config == "dynamic":
        theirs = tq.quantize_dynamic(torch_model, {torch.nn.Linear}, dtype=torch.qint8)
        return theirs, Q.quantize_dynamic(model), x_t, x
    if config == "per_channel_dynamic":
        per_channel = Q.QConfig(activation=None, weight=Q.default_per_channel_weight_observer)
        theirs = tq.quantize_dynamic(torch_model, {torch.nn.Linear: tq.per_channel_dynamic_qconfig})
        return theirs, Q.quantize_dynamic(model, {nnx.Linear: per_channel}), x_t, x
    t_model = copy.deepcopy(torch_model)
    if config == "x86":
        t_model.qconfig, qconfig = tq.get_default_qconfig("x86"), Q.get_default_qconfig("x86")
    else:
        t_model.qconfig, qconfig = tq.default_qconfig, Q.default_qconfig
    t_prepared = tq.prepare(t_model)
    prepared = Q.prepare(model, qconfig)
    calibrate = nnx.jit(lambda m, xb: m(xb))
    with torch.no_grad():
        for xb, xb_t in zip(np.split(x, n_batches), x_t.split(len(x) // n_batches), strict=True):
            t_prepared(xb_t)
            calibrate(prepared, xb)
    return tq.convert(t_prepared), Q.convert(prepared), x_t, x


def logits_row(name: str, theirs, ours, x_torch, x) -> dict:
    """torch's int8 model and ours on the same inputs (ours under `nnx.jit`): `worst` the largest
    |Δ logit|, `cases` the inputs (digits rows) compared, `passed` iff every logit is equal bit
    for bit."""
    import torch
    from flax import nnx

    with torch.no_grad():
        want = theirs(x_torch).numpy()
    got = np.asarray(nnx.jit(lambda m, x: m(x))(ours, x))
    if got.shape != want.shape:
        return {"name": f"PTQ {name}: logits", "worst": np.inf, "cases": 0, "passed": False}
    worst = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    passed = _row(name, want, got)["passed"]
    return {"name": f"PTQ {name}: logits", "worst": worst, "cases": len(want), "passed": passed}


def run_ptq_model_parity(quick: bool = False) -> list[dict]:
    """Post-training int8 models on digits, torch's converted model (x86 engine) vs ours.

    One row per `PTQ_MODELS` entry (`PTQ_QUICK` when `quick`): dynamic quantization of an MLP
    (per-tensor and per-channel weights), static `prepare` → calibrate → `convert` of an MLP, a
    small CNN and a residual MLP with a quantized add, all 1797 digits images through both
    converted models; judged bit for bit (`logits_row`). Needs torch and jaxopt_port.
    """
    import warnings

    import torch

    old_engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation, reduce_range
            return [
                logits_row(name, *ptq_twins(name))
                for name, *_ in PTQ_MODELS
                if not quick or name in PTQ_QUICK
            ]
    finally:
        torch.backends.quantized.engine = old_engine
