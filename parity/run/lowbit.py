"""The low-bit section's runner: torchao's low-bit optimizers and its int8 dynamic config against
jaxopt_port and the NumPy float32 reference (`parity.reference.lowbit`).

Optimizers: every low-bit class (`AdamW8bit`, `Adam8bit`, `AdamW4bit`, `Adam4bit`, `AdamWFp8`,
`AdamFp8`) runs a fixed gradient stream (a decaying learning rate, gradient scales drawn per step)
over three float32 parameters: 8192 values (states quantized, blocks spanning rows), 5000 values
(above the size rule's 4096 but not a whole number of blocks: states stay float32) and 231 values
(below the rule, not a multiple of torch's vector width). torchao runs eagerly (`torch.compile`
replaced by the identity within the run: its compiled path takes ~18 s per first step); jaxopt_port
runs every step in one compiled `lax.scan`. Then `AdamW8bit` trains a twin 64-128-64-10 tanh MLP
on digits batches, each framework computing its own gradients (in float64, cast to float32).

The int8 dynamic config (`Int8DynamicActivationInt8WeightConfig`) quantizes twin 64-128-64-10
MLPs (torch and Flax NNX, the same weights) and runs them on all 1797 digits rows and on random
rows over four decades of magnitude.
"""

from __future__ import annotations

import unittest.mock
import warnings
from typing import Any

import numpy as np

from parity.reference import lowbit as ref

#: (jaxopt_port factory, torchao class, storage): every low-bit class.
CLASSES = (
    ("adamw8bit", "AdamW8bit", 8),
    ("adam8bit", "Adam8bit", 8),
    ("adamw4bit", "AdamW4bit", 4),
    ("adam4bit", "Adam4bit", 4),
    ("adamw_fp8", "AdamWFp8", "fp8"),
    ("adam_fp8", "AdamFp8", "fp8"),
)
SHAPES = ((64, 128), (5000,), (33, 7))
KWARGS = {"weight_decay": 0.1, "betas": (0.9, 0.999), "eps": 1e-8}
#: The issue's bound on the parameters' distance from torchao eager, in step-ulps (`step_ulps`).
ULP_BOUND = 16
#: The bound of the twin training run (`_training_rows`), in step-ulps. The distance grows with
#: the steps (torch's eager `sqrt`, not correctly rounded, fed back through the gradients):
#: measured 5 after 10 steps, 32 after 40, 70 after 100; the codes stayed identical throughout.
TRAINING_ULP_BOUND = 64


def _row(name: str, worst: float, cases: int, passed: bool, **extra: Any) -> dict[str, Any]:
    return {"name": name, "worst": float(worst), "cases": cases, "passed": passed, **extra}


def gradient_stream(steps: int, seed: int = 0):
    """`(params, grads, lrs)`: float32 NumPy arrays; `lrs` decays by 3% a step (values exact in
    float32 on both sides)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    scales = rng.uniform(0.1, 3.0, size=steps)
    grads = [[(rng.standard_normal(s) * c).astype(np.float32) for s in SHAPES] for c in scales]
    lrs = (1e-2 * 0.97 ** np.arange(steps)).astype(np.float32)
    return params, grads, lrs


def step_ulps(a: np.ndarray, b: np.ndarray, lr: float) -> float:
    """`max |a - b|` in ulps of `max(|b|, lr)`: a parameter's ulps, or a step's for a parameter
    passing near zero (where its own ulps shrink without bound)."""
    spacing = np.spacing(np.maximum(np.abs(b), np.float32(lr)))
    return float(np.max(np.abs(a.astype(np.float64) - b) / spacing))


def _bit_mismatches(a: Any, b: Any) -> int:
    """Values of `a` and `b` whose bytes differ (float8 codes compared as bytes)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.itemsize != b.dtype.itemsize:
        return max(a.size, b.size)
    bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return int(np.sum(a.view(bits) != b.view(bits)))


def eager_torchao():
    """torchao's step without torch.compile: its `torch.compile(fn)(...)` becomes `fn(...)`."""
    import torch

    return unittest.mock.patch.object(torch, "compile", lambda fn, **_: fn)


def _run_torchao(cls: str, params, grads, lrs):
    import torch

    with warnings.catch_warnings():  # torchao warns about its CUDA libraries on import
        warnings.simplefilter("ignore")
        import torchao.optim

    tensors = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    opt = getattr(torchao.optim, cls)(tensors, lr=float(lrs[0]), **KWARGS)
    with eager_torchao():
        for lr, step_grads in zip(lrs, grads, strict=True):
            opt.param_groups[0]["lr"].fill_(float(lr))
            for p, g in zip(tensors, step_grads, strict=True):
                p.grad = torch.tensor(g)
            opt.step()
    return [p.detach().numpy() for p in tensors], [opt.state[p] for p in tensors]


def _run_jax(name: str, params, grads, lrs):
    """All steps in one compiled `lax.scan`; the learning rate follows the table `lrs`."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxopt_port import optim

    table = jnp.asarray(lrs)
    tx = getattr(optim, name)(lr=lambda count: table[count], **KWARGS)

    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        return (optax.apply_updates(p, updates), state), None

    @jax.jit
    def run(p, gs):
        return jax.lax.scan(body, (p, tx.init(p)), gs)[0]

    stacked = [jnp.asarray(np.stack(g)) for g in zip(*grads, strict=True)]
    p, state = run([jnp.asarray(p) for p in params], stacked)
    return [np.asarray(x) for x in p], state


def _run_reference(bits: Any, decoupled: bool, params, grads, lrs):
    from jaxopt_port.optim import _lowbit_maps as maps  # torchao's tables, shipped as constants

    tables = {
        8: (maps.SIGNED_8BIT, maps.UNSIGNED_8BIT),
        4: (maps.SIGNED_4BIT, maps.UNSIGNED_4BIT),
        "fp8": (None, None),
    }[bits]
    out, states = [], []
    for i, p in enumerate(params):
        state = ref.LowBitState()
        for lr, step_grads in zip(lrs, grads, strict=True):
            new = ref.lowbit_adam_step(
                p,
                step_grads[i],
                state,
                tables=tables,
                block_size=128 if bits == 4 else 256,
                lr=float(lr),
                decoupled=decoupled,
                **KWARGS,
            )
            p = ref.apply_as_update(p, new)
        out.append(p)
        states.append(state)
    return out, states


def _packed(codes: np.ndarray, bits: Any) -> np.ndarray:
    """The reference's codes (one per value; FP8: the float8 values as float32) in the layout of
    the stored state: 4-bit codes two per byte, the first value in the high nibble."""
    if bits == 4:
        flat = codes.reshape(-1)
        return (flat[::2] << 4) | flat[1::2]
    return codes


def _state_bytes_torchao(states) -> int:
    """Bytes of torchao's moments: codes, scales and its copy of the map per quantized state."""
    total = 0
    for state in states:
        for key in ("exp_avg", "exp_avg_sq"):
            t = state[key]
            parts = [t]
            if hasattr(t, "codes"):
                parts = [t.codes, t.scale, *([t.qmap] if hasattr(t, "qmap") else [])]
            total += sum(x.numel() * x.element_size() for x in parts)
    return total


def optimizer_rows(name: str, cls: str, bits: Any, stream) -> list[dict[str, Any]]:
    """The four rows of one class on `stream` (`gradient_stream`): see `run_lowbit_parity`."""
    import jax
    import torch

    from jaxopt_port import optim

    params, grads, lrs = stream
    t_params, t_states = _run_torchao(cls, params, grads, lrs)
    j_params, j_state = _run_jax(name, params, grads, lrs)
    r_params, r_states = _run_reference(bits, name.startswith("adamw"), params, grads, lrs)
    codes_vs_torchao = codes_vs_reference = params_vs_reference = 0
    for i, (t_state, r_state) in enumerate(zip(t_states, r_states, strict=True)):
        for key in ("exp_avg", "exp_avg_sq"):
            mine, theirs, expected = getattr(j_state, key)[i], t_state[key], r_state.moments[key]
            if isinstance(mine, optim.QuantizedArray) != hasattr(theirs, "codes"):
                codes_vs_torchao += params[i].size  # quantized on one side only
            elif isinstance(mine, optim.QuantizedArray):
                codes = theirs.codes.view(torch.uint8) if bits == "fp8" else theirs.codes
                codes_vs_torchao += _bit_mismatches(mine.codes, codes.numpy())
                codes_vs_torchao += _bit_mismatches(mine.scale, theirs.scale.numpy())
                stored = np.asarray(mine.codes, np.float32 if bits == "fp8" else np.uint8)
                codes_vs_reference += _bit_mismatches(stored, _packed(expected[0], bits))
                codes_vs_reference += _bit_mismatches(mine.scale, expected[1])
            else:
                params_vs_reference += _bit_mismatches(mine, expected)
    for mine, expected in zip(j_params, r_params, strict=True):
        params_vs_reference += _bit_mismatches(mine, expected)
    ulps = max(
        step_ulps(mine, theirs, float(lrs.min()))
        for mine, theirs in zip(j_params, t_params, strict=True)
    )
    ours_bytes = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(j_state[1:3]))
    extra_bytes = max(0, ours_bytes - _state_bytes_torchao(t_states))
    steps, values = len(lrs), sum(p.size for p in params)
    return [
        _row(f"{name} codes+scales vs torchao", codes_vs_torchao, steps, codes_vs_torchao == 0),
        _row(
            f"{name} params vs torchao, step-ulps over {ULP_BOUND} (measured {ulps:.0f})",
            max(0.0, ulps - ULP_BOUND),
            values,
            ulps <= ULP_BOUND,
            ulps=ulps,
        ),
        _row(
            f"{name} vs NumPy reference, differing params+codes+scales",
            params_vs_reference + codes_vs_reference,
            steps,
            params_vs_reference + codes_vs_reference == 0,
        ),
        _row(f"{name} state bytes over torchao's", extra_bytes, 1, extra_bytes == 0),
    ]


def _training_rows(steps: int, seed: int) -> list[dict[str, Any]]:
    """`AdamW8bit` training a twin 64-128-64-10 tanh MLP on digits batches, torchao eager against
    `optim.adamw8bit`, each framework computing its own gradients.

    Both keep float32 parameters in torch's `(out, in)` layout (so the blocks are the same
    values) and compute the loss and its gradient in float64 from them, cast to float32: the
    gradients then agree up to float64 rounding, and the runs differ only by the optimizer's
    float32 arithmetic (torch's eager `sqrt`) fed back through the parameters.
    """
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from jaxopt_port import optim
    from parity.specs.problems import digits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao.optim

    x_all, y_all = digits()
    rng = np.random.default_rng(seed)
    sizes = ((64, 128), (128, 64), (64, 10))
    params = []
    for k, n in sizes:
        params += [rng.uniform(-1, 1, (n, k)) / np.sqrt(k), rng.uniform(-1, 1, n) / np.sqrt(k)]
    params = [p.astype(np.float32) for p in params]
    batches = [rng.choice(len(x_all), 64, replace=False) for _ in range(steps)]

    def forward(xp, ps, x):
        h = x
        for i in range(0, len(ps), 2):
            h = h @ ps[i].T + ps[i + 1]
            h = xp.tanh(h) if i < len(ps) - 2 else h
        return h

    def jax_loss(ps, x, y):
        logits = forward(jnp, [p.astype(jnp.float64) for p in ps], x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    tx = optim.adamw8bit(lr=1e-3)

    @jax.jit
    def jax_step(ps, state, x, y):
        grads = [g.astype(jnp.float32) for g in jax.grad(jax_loss)(ps, x, y)]
        updates, state = tx.update(grads, state, ps)
        return optax.apply_updates(ps, updates), state

    with jax.enable_x64(True):
        ps = [jnp.asarray(p) for p in params]
        state = tx.init(ps)
        for idx in batches:
            ps, state = jax_step(ps, state, x_all[idx], y_all[idx])
        j_params = [np.asarray(p) for p in ps]

    tensors = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    opt = torchao.optim.AdamW8bit(tensors, lr=1e-3)
    with eager_torchao():
        for idx in batches:
            ps64 = [t.double() for t in tensors]
            logits = forward(torch, ps64, torch.tensor(x_all[idx]))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y_all[idx]))
            grads = torch.autograd.grad(loss, ps64)
            for t, g in zip(tensors, grads, strict=True):
                t.grad = g.float()
            opt.step()
    ulps = max(
        step_ulps(mine, theirs.detach().numpy(), 1e-3)
        for mine, theirs in zip(j_params, tensors, strict=True)
    )
    codes = sum(
        _bit_mismatches(getattr(state, key)[i].codes, opt.state[tensors[i]][key].codes.numpy())
        for i in (0, 2)  # the two quantized kernels
        for key in ("exp_avg", "exp_avg_sq")
    )
    return [
        _row(
            f"adamw8bit twin MLP training vs torchao, step-ulps over {TRAINING_ULP_BOUND} "
            f"(measured {ulps:.0f})",
            max(0.0, ulps - TRAINING_ULP_BOUND),
            steps,
            ulps <= TRAINING_ULP_BOUND,
            ulps=ulps,
        ),
        _row("adamw8bit twin MLP training vs torchao, differing codes", codes, steps, codes == 0),
    ]


def _int8_dynamic_row(seed: int) -> dict[str, Any]:
    """Twin MLPs quantized by torchao's and jaxopt_port's `Int8DynamicActivationInt8WeightConfig`:
    mismatching int8 weights, scales and outputs (jitted), all 1797 digits rows and 256 random
    rows."""
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from jaxopt_port import quantization as q
    from parity.specs.problems import digits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao.quantization as torchao_q

    rng = np.random.default_rng(seed)
    sizes = ((64, 128, 0.2), (128, 64, 0.1), (64, 10, 0.1))
    torch_layers, nnx_layers = [], []
    for k, n, scale in sizes:
        w = (rng.standard_normal((n, k)) * scale).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        lin = torch.nn.Linear(k, n)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layer = nnx.eval_shape(lambda k=k, n=n: nnx.Linear(k, n, rngs=nnx.Rngs(0)))
        layer.kernel.set_value(jnp.asarray(w.T))
        layer.bias.set_value(jnp.asarray(b))
        torch_layers.append(lin)
        nnx_layers.append(layer)
    relu = torch.nn.ReLU
    tmodel = torch.nn.Sequential(torch_layers[0], relu(), torch_layers[1], relu(), torch_layers[2])
    model = nnx.Sequential(nnx_layers[0], nnx.relu, nnx_layers[1], nnx.relu, nnx_layers[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torchao_q.quantize_(tmodel, torchao_q.Int8DynamicActivationInt8WeightConfig())
    q.quantize_(model, q.Int8DynamicActivationInt8WeightConfig())
    random_rows = rng.standard_normal((256, 64)) * 10 ** rng.uniform(-2, 2, (256, 1))
    x = np.concatenate([digits()[0], random_rows]).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    mismatches = _bit_mismatches(nnx.jit(lambda m, v: m(v))(model, x), expected)
    for i in (0, 2, 4):
        mismatches += _bit_mismatches(model.layers[i].qdata[...], tmodel[i].weight.qdata.numpy())
        mismatches += _bit_mismatches(model.layers[i].scale[...], tmodel[i].weight.scale.numpy())
    return _row(
        "int8 dynamic config: twin MLP weights+scales+outputs vs torchao, differing values",
        mismatches,
        len(x),
        mismatches == 0,
    )


def run_lowbit_parity(quick: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """Every low-bit optimizer against torchao eager and the NumPy reference, and the int8
    dynamic config on twin MLPs.

    Rows per optimizer (see the module docstring for the stream): torchao's codes and scales
    (`worst`: how many differ; 0 required); the parameters' distance from torchao eager in
    step-ulps (`step_ulps`), given as `worst` = the excess over `ULP_BOUND` (0 when within
    it, so the float64 gate judges it; the measured ulps are in the row's name and its `ulps`);
    parameters, codes and scales against the NumPy reference (how many differ; 0 required);
    bytes of the moments beyond torchao's (0 required). Two rows for `AdamW8bit` training a twin
    MLP (`_training_rows`): the parameters' step-ulps beyond `TRAINING_ULP_BOUND` and the
    differing codes (0 required). One row for the int8 dynamic config (differing weights,
    scales and outputs; 0 required).

    Args:
      quick: 10 steps instead of 40 on the stream, 5 instead of 40 in the training run.
      seed: NumPy seed of the stream and the MLP.

    Returns:
      `[{"name", "worst", "cases", "passed"}]`, one per rule.
    """
    stream = gradient_stream(10 if quick else 40, seed)
    rows = []
    for name, cls, bits in CLASSES:
        rows.extend(optimizer_rows(name, cls, bits, stream))
    rows.extend(_training_rows(5 if quick else 40, seed))
    rows.append(_int8_dynamic_row(seed))
    return rows
