"""Scenarios for tests/test_parallel_train_step.py, each run in a fresh interpreter with simulated CPU devices.

``python tests/parallel_worker.py SCENARIO`` prints one JSON line. The references are computed here
without jaxopt_port.parallel: the optimizer on the whole global batch on one device (plain
``jax.value_and_grad`` + ``tx.update``), a closed-form NumPy gradient, or torch's batch norm.
Every step blocks (on a 2-core machine, collectives that are not blocked on can hang).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port import optim, parallel
from parity.metric import scaled, worst_scaled

BACKENDS = parallel.BACKENDS
STEPS = 8
GLOBAL_BATCH = 32

#: L-BFGS amplifies rounding ~3× per step on this problem whatever computes the gradient: on one
#: device, summing the same mean loss as 8 chunk means instead of one moves the parameters by
#: 2.9e-15, 6.9e-15, 1.7e-14, 6.5e-14, 2.0e-13, 8.0e-13, 9.7e-12 after steps 1–7. It is compared
#: over 3 steps, where that inherent spread is ≤ 2e-14.
LBFGS_STEPS = 3

#: Optimizers of the device-count matrix, each with its number of steps: elementwise state (SGD,
#: Adam), a decoupled one (AdamW), factored non-elementwise state (Adafactor) and global dot
#: products (L-BFGS).
OPTIMIZERS = {
    "sgd": (lambda: optim.sgd(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), STEPS),
    "adam": (lambda: optim.adam(lr=1e-2, amsgrad=True), STEPS),
    "adamw": (lambda: optim.adamw(lr=1e-2), STEPS),
    "adafactor": (lambda: optim.adafactor(lr=1e-2), STEPS),
    "lbfgs": (lambda: optim.lbfgs(lr=1, max_iter=4, history_size=3), LBFGS_STEPS),
}


def tree_scaled(a, b) -> float:
    """The worst scaled difference (`parity.metric`) over two pytrees' leaves."""
    return worst_scaled(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))


def mlp_params(dtype, seed: int = 0) -> dict:
    """A 64 → 32 → 10 MLP; the 10-wide leaves have no dimension divisible by 8 (stay replicated
    under ZeRO-1)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.normal(size=(64, 32)) / 8).astype(dtype),
        "b1": np.zeros(32, dtype),
        "w2": (rng.normal(size=(32, 10)) / 6).astype(dtype),
        "b2": np.zeros(10, dtype),
    }


def mlp_loss(p, batch):
    h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


def batches(dtype, steps: int = STEPS, size: int = GLOBAL_BATCH, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"x": rng.normal(size=(size, 64)).astype(dtype), "y": rng.integers(0, 10, size=size)}
        for _ in range(steps)
    ]


def single_device(loss_fn, tx, params, data):
    """The reference: the optimizer on the whole global batch, on one device, no parallel code."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        value_fn = lambda p: loss_fn(p, batch)
        updates, state = tx.update(grads, state, params, value=loss, grad=grads, value_fn=value_fn)
        return optax.apply_updates(params, updates), state, loss

    history = []
    for batch in data:
        params, state, loss = step(params, state, batch)
        history.append((params, float(loss)))
    return history, state


def train(step, params, data):
    params, state = step.init(params)
    history = []
    for batch in data:
        params, state, loss = step(params, state, batch)
        # the step donates its inputs: keep host copies
        history.append((jax.tree_util.tree_map(np.asarray, params), float(loss)))
    return history, state


def state_ratio(state) -> float:
    """Optimizer-state bytes on the fullest device over the bytes of the whole state."""
    total = sum(x.nbytes for x in jax.tree_util.tree_leaves(state) if isinstance(x, jax.Array))
    return max(parallel.bytes_per_device(state).values()) / total


#: (dtype, optimizer, zero values, micro-batch values) of the matrix, every backend each: the whole
#: backend × zero × accumulation product for SGD and Adam in float64; ZeRO-1 for non-elementwise
#: state (Adafactor's factored moments, L-BFGS's dot products); float32 at the defaults.
MATRIX = [
    ("float64", "sgd", (0, 1), (1, 2)),
    ("float64", "adam", (0, 1), (1, 2)),
    ("float64", "adafactor", (1,), (2,)),
    ("float64", "lbfgs", (1,), (1,)),
    ("float32", "sgd", (0,), (1,)),
    ("float32", "adam", (0,), (1,)),
]


def matrix() -> list[dict]:
    """The MATRIX runs on all devices vs the single-device run on the whole global batch."""
    rows = []
    for dtype, name, zeros, micros in MATRIX:
        make, steps = OPTIMIZERS[name]
        data = batches(dtype, steps=steps)
        reference, ref_state = single_device(mlp_loss, make(), mlp_params(dtype), data)
        for backend in BACKENDS:
            for zero in zeros:
                for micro in micros:
                    step = parallel.train_step(
                        mlp_loss, make(), backend=backend, zero=zero, micro_batches=micro
                    )
                    history, state = train(step, mlp_params(dtype), data)
                    rows.append({
                        "dtype": dtype, "optimizer": name, "backend": backend, "zero": zero,
                        "micro_batches": micro, "steps": len(data),
                        "params": max(tree_scaled(h[0], r[0]) for h, r in zip(history, reference, strict=True)),
                        "loss": max(abs(h[1] - r[1]) for h, r in zip(history, reference, strict=True)),
                        "state": tree_scaled(state, ref_state),
                        "state_ratio": state_ratio(state),
                        "param_dtypes": sorted({str(v.dtype) for v in history[-1][0].values()}),
                    })  # fmt: skip
    return rows


def gradient() -> list[dict]:
    """One SGD step with lr=1 on least squares: Δθ = −∇, against the NumPy closed form
    ``∇ = 2 Xᵀ(Xw − y)/B`` on the global batch (an N× gradient misses by N−1)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(GLOBAL_BATCH, 5)), rng.normal(size=(GLOBAL_BATCH,))
    w = rng.normal(size=5)
    expected = 2 * x.T @ (x @ w - y) / GLOBAL_BATCH
    loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)
    rows = []
    # a 2-axis mesh: the batch split over "data" (4), replicated over "model" (2)
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    runs = [(b, None) for b in BACKENDS] + [("shard_map", mesh), ("jit", mesh)]
    for backend, on in runs:
        step = parallel.train_step(loss_fn, optim.sgd(lr=1.0), backend=backend, mesh=on)
        params, state = step.init({"w": w})
        params, state, loss = step(params, state, {"x": x, "y": y})
        got = w - np.asarray(params["w"])
        rows.append({
            "backend": backend if on is None else f"{backend} 4x2", "devices": step.devices,
            "gradient": scaled(got, expected),
            "ratio": float(np.linalg.norm(got) / np.linalg.norm(expected)),
            "loss": abs(float(loss) - float(np.mean((x @ w - y) ** 2))),
        })  # fmt: skip
    return rows


def bn_loss(p, batch):
    """Conv-free CNN head in torch's NCHW layout: BN over (N, H, W) per channel, then a linear."""
    y, rm, rv = parallel.sync_batch_norm(
        batch["x"], p["running_mean"], p["running_var"], p["weight"], p["bias"]
    )
    h = jnp.tanh(y).reshape(y.shape[0], -1)
    loss = jnp.mean((h @ p["w"] - batch["t"]) ** 2)
    return loss, {"running_mean": rm, "running_var": rv}


def sync_bn() -> dict:
    """sync_batch_norm on 8 devices (every backend) vs torch's F.batch_norm on the global batch:
    output, gradients and running statistics; then 5 training steps vs one device."""
    import torch

    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(5)
    x = rng.normal(loc=0.5, scale=2.0, size=(GLOBAL_BATCH, 3, 4, 4))
    t = rng.normal(size=(GLOBAL_BATCH, 2))
    params = {
        "weight": rng.normal(size=3), "bias": rng.normal(size=3), "w": rng.normal(size=(48, 2)) / 7,
        "running_mean": rng.normal(size=3), "running_var": rng.uniform(0.5, 2, size=3),
    }  # fmt: skip
    # torch: the global batch through F.batch_norm(training=True), gradient of the same loss.
    tp = {k: torch.tensor(v, requires_grad=k in ("weight", "bias", "w")) for k, v in params.items()}
    rm, rv = tp["running_mean"].clone(), tp["running_var"].clone()
    ty = torch.nn.functional.batch_norm(
        torch.tensor(x), rm, rv, tp["weight"], tp["bias"], training=True, momentum=0.1, eps=1e-5
    )
    tloss = torch.mean((torch.tanh(ty).reshape(GLOBAL_BATCH, -1) @ tp["w"] - torch.tensor(t)) ** 2)
    tloss.backward()
    torch_grads = {k: tp[k].grad.numpy() for k in ("weight", "bias", "w")}

    out = {"backends": {}}
    trainable = ("weight", "bias", "w")
    for backend in BACKENDS:
        # SGD lr=1 on the trainable leaves (Δ = −∇), the running stats passed through as aux.
        def loss_fn(p, batch):
            loss, aux = bn_loss(p, batch)
            return loss, aux

        tx = optax.masked(optim.sgd(lr=1.0), {k: k in trainable for k in params})
        step = parallel.train_step(loss_fn, tx, backend=backend, has_aux=True)
        placed, state = step.init(params)
        new, state, loss, aux = step(placed, state, {"x": x, "t": t})
        grads = {k: params[k] - np.asarray(new[k]) for k in trainable}
        out["backends"][backend] = {
            "loss": abs(float(loss) - float(tloss.detach())),
            "grad": max(scaled(grads[k], torch_grads[k]) for k in trainable),
            "running_mean": scaled(aux["running_mean"], rm.numpy()),
            "running_var": scaled(aux["running_var"], rv.numpy()),
        }
    # Local (per-device) statistics would differ: the check can fail.
    local_mean = x[: GLOBAL_BATCH // 8].mean(axis=(0, 2, 3))
    out["local_vs_global_mean"] = scaled(local_mean, x.mean(axis=(0, 2, 3)))
    out["forward"] = scaled(
        jax.jit(lambda p, b: parallel.sync_batch_norm(b, None, None, p["weight"], p["bias"])[0])(
            params, x
        ),
        ty.detach().numpy(),
    )
    return out


def flax_nnx() -> dict:
    """A Flax NNX model (Linear → BatchNorm → relu → Linear) through nnx.split/merge: its
    BatchNorm with axis_name="data" under shard_map and pmap (and axis_name=None under jit) vs
    the same model trained on one device, 5 SGD steps; running statistics returned as aux."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, axis_name):
            rngs, f64 = nnx.Rngs(0), jnp.float64
            self.fc1 = nnx.Linear(16, 32, rngs=rngs, param_dtype=f64)
            self.bn = nnx.BatchNorm(32, axis_name=axis_name, rngs=rngs, param_dtype=f64)
            self.fc2 = nnx.Linear(32, 4, rngs=rngs, param_dtype=f64)

        def __call__(self, x):
            return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))

    rng = np.random.default_rng(7)
    data = [{"x": rng.normal(size=(32, 16)), "y": rng.integers(0, 4, 32)} for _ in range(5)]

    def setup(axis_name):
        graphdef, params, stats = nnx.split(Net(axis_name), nnx.Param, nnx.BatchStat)
        stats = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), stats)  # flax makes f32

        def loss_fn(p, batch):
            model = nnx.merge(graphdef, p["params"], p["stats"])
            logits = model(batch["x"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
            return loss, nnx.state(model, nnx.BatchStat)

        tx = optax.multi_transform(
            {"train": optim.sgd(lr=0.1, momentum=0.9), "frozen": optax.set_to_zero()},
            {"params": "train", "stats": "frozen"},
        )
        return {"params": params, "stats": stats}, loss_fn, tx

    params, loss_fn, tx = setup(None)
    state = tx.init(params)

    @jax.jit
    def one_device(p, s, batch):
        (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
        u, s = tx.update(g, s, p)
        return {**optax.apply_updates(p, u), "stats": stats}, s

    for batch in data:
        params, state = one_device(params, state, batch)
    out = {}
    for backend in BACKENDS:
        p, loss_fn, tx = setup(None if backend == "jit" else "data")
        step = parallel.train_step(loss_fn, tx, backend=backend, has_aux=True)
        p, s = step.init(p)
        for batch in data:
            p, s, _, stats = step(p, s, batch)
            p = {**p, "stats": stats}
        out[backend] = tree_scaled(p, params)
    return out


def bf16() -> list[dict]:
    """compute_dtype=bfloat16 with float32 master parameters: SGD with lr=1e-4 moves every
    parameter by ~1e-5, far below bfloat16's resolution near the weights (2**-8 relative), so the
    steps survive only if the masters stay float32. Compared with the same steps in float32."""
    data = batches("float32", steps=3)
    make = lambda: optim.sgd(lr=1e-4, momentum=0.9)
    start = mlp_params("float32")
    f32, _ = single_device(mlp_loss, make(), start, data)
    moved = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - b, f32[-1][0], start)

    def delta_rel(params) -> float:
        """Relative error of the parameter change against float32 training (worst leaf)."""
        delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a, np.float64) - b, params, start)
        pairs = zip(jax.tree_util.tree_leaves(delta), jax.tree_util.tree_leaves(moved), strict=True)
        return max(float(np.linalg.norm(d - m) / np.linalg.norm(m)) for d, m in pairs)

    # the control: bfloat16 parameters (no float32 masters) lose the small steps
    bf16_params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.bfloat16), start)
    control, _ = single_device(mlp_loss, make(), bf16_params, data)
    rows = [
        {"backend": "control: bfloat16 params, one device", "delta_rel": delta_rel(control[-1][0])}
    ]
    for backend in BACKENDS:
        for micro in (1, 2):
            step = parallel.train_step(
                mlp_loss, make(), backend=backend, micro_batches=micro, compute_dtype=jnp.bfloat16
            )
            history, state = train(step, start, data)
            rows.append({
                "backend": backend, "micro_batches": micro,
                "param_dtypes": sorted({str(v.dtype) for v in history[-1][0].values()}),
                "state_dtypes": sorted({str(v.dtype) for v in jax.tree_util.tree_leaves(state)
                                        if jnp.issubdtype(v.dtype, jnp.floating)}),
                "delta_rel": delta_rel(history[-1][0]),
                "loss_rel": max(abs(h[1] - r[1]) / abs(r[1]) for h, r in zip(history, f32, strict=True)),
            })  # fmt: skip
    return rows


def long_run() -> dict:
    """1000 blocked steps on every device (default backend) complete and keep matching."""
    data = batches("float64", steps=10)
    step = parallel.train_step(mlp_loss, optim.sgd(lr=0.05, momentum=0.9))
    params, state = step.init(mlp_params("float64"))
    start = time.perf_counter()
    losses = []
    for i in range(1000):
        params, state, loss = step(params, state, data[i % 10])
        losses.append(float(jax.block_until_ready(loss)))
    out = {"steps": len(losses), "seconds": time.perf_counter() - start,
           "first": losses[0], "last": losses[-1], "devices": step.devices}  # fmt: skip
    out.update(lifetimes())
    return out


def lifetimes() -> dict:
    """What a program that builds steps again and again keeps: compilations of a second ``init``
    (each compiled a fresh copy function), and the step objects still alive after they are dropped (a pmap
    step was kept alive by JAX's pmap caches, ~43 memory maps each with Adam, until
    ``jax.clear_caches()``)."""
    import gc
    import weakref

    compiles = [0]

    def listener(event: str, duration: float, **kwargs) -> None:
        compiles[0] += event == "/jax/core/compile/backend_compile_duration"

    data = batches("float64", steps=1)[0]
    out, alive = {}, {}
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for backend in BACKENDS:
            refs = []
            for _ in range(4):
                step = parallel.train_step(mlp_loss, optim.adam(lr=1e-3), backend=backend)
                params, state = step.init(mlp_params("float64"))
                before = compiles[0]
                step.init(mlp_params("float64"))  # again: compiled before
                out[f"init_compiles_{backend}"] = compiles[0] - before
                jax.block_until_ready(step(params, state, data))
                refs.append(weakref.ref(step))
                del step, params, state
            gc.collect()
            alive[backend] = sum(r() is not None for r in refs)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    out["alive_after_drop"] = alive
    return out


def errors() -> dict:
    """The messages a user sees for each misuse (on 8 devices)."""
    out = {}
    loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"]) ** 2)

    def message(fn):
        try:
            fn()
        except (ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    step = parallel.train_step(loss_fn, optim.sgd(lr=0.1))
    params, state = step.init({"w": np.ones((3, 1))})
    out["not_divisible"] = message(lambda: step(params, state, {"x": np.ones((30, 3))}))
    step2 = parallel.train_step(loss_fn, optim.sgd(lr=0.1), micro_batches=2)
    p2, s2 = step2.init({"w": np.ones((3, 1))})
    out["not_divisible_micro"] = message(lambda: step2(p2, s2, {"x": np.ones((24, 3))}))
    one = jax.device_put(np.ones((3, 1)), jax.devices()[3])
    out["wrong_devices"] = message(lambda: step({"w": one}, state, {"x": np.ones((32, 3))}))
    out["host_params"] = message(
        lambda: step({"w": np.ones((3, 1))}, state, {"x": np.ones((32, 3))})
    )
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("x", "y"))
    out["no_data_axis"] = message(
        lambda: parallel.train_step(loss_fn, optim.sgd(lr=0.1), mesh=mesh)
    )
    out["pmap_multi_axis"] = message(
        lambda: parallel.train_step(
            loss_fn,
            optim.sgd(lr=0.1),
            mesh=jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model")),
            backend="pmap",
        )
    )
    # donated inputs: after a step, the arrays passed to it are deleted (XLA segfaulted on them)
    batch = {"x": np.ones((32, 3))}
    momentum = parallel.train_step(loss_fn, optim.sgd(lr=0.1, momentum=0.9))
    p0, s0 = momentum.init({"w": np.ones((3, 1))})
    p1, s1, _ = momentum(p0, s0, batch)
    out["donated_params"] = message(lambda: momentum(p0, s1, batch))
    out["donated_state"] = message(lambda: momentum(p1, s0, batch))
    # the refused calls consumed nothing: the returned arrays still make the second step
    # (w = 1 - 0.1·6 = 0.4 after the first, so the loss is (3·0.4)² = 1.44)
    out["loss_after_donated"] = float(momentum(p1, s1, batch)[2])
    keep = parallel.train_step(loss_fn, optim.sgd(lr=0.1, momentum=0.9), donate=False)
    p0, s0 = keep.init({"w": np.ones((3, 1))})
    out["kept_inputs"] = [float(keep(p0, s0, batch)[2]) for _ in range(2)]
    # nothing was half-applied: the step still works after the errors, params unchanged so far
    out["params_intact"] = bool(np.all(np.asarray(params["w"]) == 1.0))
    _, _, loss = step(params, state, {"x": np.ones((32, 3))})
    out["loss_after_errors"] = float(loss)
    return out


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    scenarios = {
        f.__name__: f for f in (matrix, gradient, sync_bn, flax_nnx, bf16, long_run, errors)
    }
    print(json.dumps(scenarios[sys.argv[1]]()))
