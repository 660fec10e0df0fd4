"""torch DDP, JAX on 8 devices and JAX in 2 processes, on the same model, data and global batches.

``python tests/parallel_ddp_worker.py MODE OUT.npz [args]`` writes every recorded array to OUT:

- ``ddp``: torch ``DistributedDataParallel`` (gloo, 2 processes from ``torch.multiprocessing.spawn``
  on 127.0.0.1), each rank taking its half of every global batch, SGD (momentum) and Adam with
  ``foreach=False``, float64 and float32;
- ``jax``: ``parallel.train_step`` on every device of this process (8 simulated), every backend;
- ``process PORT INDEX``: one of 2 JAX processes (``parallel.initialize`` on 127.0.0.1, 2 devices
  each), each feeding its ``process_share`` of every global batch; process 0 writes OUT;
- ``single``: the same JAX training on one device with the whole batch (no parallel code).

The model is an MLP 64 → 32 → 10 in torch's layout (``weight`` is (out, in)); initial weights and
batches come from NumPy seeds, so both frameworks see the same numbers.
"""

from __future__ import annotations

import os
import sys

import numpy as np

STEPS = 10
GLOBAL_BATCH = 32
WORLD = 2
CONFIGS = [(dtype, opt) for dtype in ("float64", "float32") for opt in ("sgd", "adam")]
HYPER = {"sgd": {"lr": 0.1, "momentum": 0.9}, "adam": {"lr": 1e-2}}


def initial_params(dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": (rng.normal(size=(32, 64)) / 8).astype(dtype),
        "fc1.bias": (rng.normal(size=32) / 8).astype(dtype),
        "fc2.weight": (rng.normal(size=(10, 32)) / 6).astype(dtype),
        "fc2.bias": (rng.normal(size=10) / 6).astype(dtype),
    }


def batches(dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        (rng.normal(size=(GLOBAL_BATCH, 64)).astype(dtype), rng.integers(0, 10, GLOBAL_BATCH))
        for _ in range(STEPS)
    ]


# -- torch DDP -------------------------------------------------------------------------------------


def _ddp_rank(rank: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    torch.set_num_threads(1)
    record = {}
    for dtype, name in CONFIGS:
        torch.set_default_dtype(getattr(torch, dtype))  # Adam's step scalar in the run's dtype
        model = torch.nn.Sequential()
        model.add_module("fc1", torch.nn.Linear(64, 32))
        model.add_module("tanh", torch.nn.Tanh())
        model.add_module("fc2", torch.nn.Linear(32, 10))
        with torch.no_grad():
            for key, value in initial_params(dtype).items():
                model.get_parameter(key).copy_(torch.from_numpy(value))
        ddp = DistributedDataParallel(model)
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name]
        opt = cls(ddp.parameters(), foreach=False, **HYPER[name])
        rows = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        for step, (x, y) in enumerate(batches(dtype)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                ddp(torch.from_numpy(x[rows])), torch.from_numpy(y[rows])
            )
            loss.backward()
            opt.step()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            record[f"{dtype}/{name}/loss/{step}"] = (mean / WORLD).numpy()
            for key, p in model.named_parameters():
                record[f"{dtype}/{name}/{key}/{step}"] = p.detach().numpy().copy()
    if rank == 0:
        np.savez(out, **record)
    dist.barrier()
    dist.destroy_process_group()


def ddp(out: str, port: str) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(int(port), out), nprocs=WORLD, join=True)


# -- JAX ---------------------------------------------------------------------------------------------


def _jax_loss(p, batch):
    import jax.numpy as jnp
    import optax

    h = jnp.tanh(batch["x"] @ p["fc1.weight"].T + p["fc1.bias"])
    logits = h @ p["fc2.weight"].T + p["fc2.bias"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


def _tx(name: str):
    from jaxopt_port import optim

    return getattr(optim, name)(**HYPER[name])


def _train(step_fn, dtype: str, rows: slice | None = None) -> dict[str, np.ndarray]:
    """Run ``step_fn(params, state, batch)`` over the batches; parameters after every step."""
    import jax

    record = {}
    params, state = step_fn.init(initial_params(dtype))
    for step, (x, y) in enumerate(batches(dtype)):
        if rows is not None:
            x, y = x[rows], y[rows]
        params, state, loss = step_fn(params, state, {"x": x, "y": y})
        record[f"loss/{step}"] = np.asarray(jax.block_until_ready(loss))
        for key, value in params.items():
            # fully replicated: this process's copy is the whole array
            record[f"{key}/{step}"] = np.asarray(value.addressable_data(0))
    return record


def jax_devices(out: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxopt_port import parallel

    record = {}
    for dtype, name in CONFIGS:
        for backend in parallel.BACKENDS:
            step = parallel.train_step(_jax_loss, _tx(name), backend=backend)
            assert step.devices == 8, step.devices
            for key, value in _train(step, dtype).items():
                record[f"{backend}/{dtype}/{name}/{key}"] = value
    np.savez(out, **record)


class _OneDevice:
    """The single-device reference: value_and_grad + update on the whole batch, jitted."""

    def __init__(self, tx):
        import jax
        import optax

        self.tx = tx

        @jax.jit
        def step(params, state, batch):
            loss, grads = jax.value_and_grad(_jax_loss)(params, batch)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        self.step = step

    def init(self, params):
        import jax.numpy as jnp

        params = {k: jnp.asarray(v) for k, v in params.items()}
        return params, self.tx.init(params)

    def __call__(self, params, state, batch):
        return self.step(params, state, batch)


def single(out: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    record = {}
    for dtype, name in CONFIGS:
        for key, value in _train(_OneDevice(_tx(name)), dtype).items():
            record[f"{dtype}/{name}/{key}"] = value
    np.savez(out, **record)


def process(out: str, port: str, index: str) -> None:
    from jaxopt_port import parallel

    cluster = parallel.initialize(f"127.0.0.1:{port}", num_processes=WORLD, process_id=int(index))
    import jax

    jax.config.update("jax_enable_x64", True)
    assert cluster.process_count == WORLD and len(cluster.devices) == 2 * WORLD, cluster
    rows = parallel.process_share(GLOBAL_BATCH)
    record = {}
    for dtype, name in CONFIGS[:2]:  # float64
        for backend in ("shard_map", "jit"):
            step = parallel.train_step(_jax_loss, _tx(name), backend=backend)
            for key, value in _train(step, dtype, rows).items():
                record[f"{backend}/{dtype}/{name}/{key}"] = value
    if cluster.process_index == 0:
        np.savez(out, **record)
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode, out, *rest = sys.argv[1:]
    {"ddp": ddp, "jax": jax_devices, "single": single, "process": process}[mode](out, *rest)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of gloo / jax.distributed threads
