"""Train a small CNN on the digits data, data-parallel on every device: GPUs, a TPU, or CPU.

    python examples/data_parallel.py                       # every device JAX sees
    python examples/data_parallel.py --simulate-devices 8  # CPU: 8 simulated devices
    python examples/data_parallel.py --zero 1 --micro-batches 2 --bf16 --backend jit

The model (conv 3×3 → SyncBatchNorm → relu → conv 3×3 → relu → 2×2 average pool → linear) trains
with AdamW through ``parallel.train_step``: each device takes its share of every global batch,
gradients are averaged over all of them (torch DDP's numbers), and BatchNorm statistics cover the
global batch (``parallel.sync_batch_norm``). The BatchNorm running statistics live in the parameter
tree under ``"stats"``, frozen for the optimizer (``optax.set_to_zero``) and refreshed from the
step's ``aux``. Prints a progress bar, throughput, per-device memory, the final loss and the test
accuracy, and exits 1 if the accuracy is below ``--min-accuracy``.

Several hosts: every host runs the same command (SLURM, Open MPI and TPU pods are detected by
``parallel.initialize()``), or pass ``--coordinator HOST:PORT --num-processes P --process-id I``;
see examples/multi_host.md. Simulated CPU devices are for correctness, not speed: they share the
machine's cores.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--simulate-devices",
        type=int,
        default=0,
        metavar="N",
        help="CPU only: run on N simulated CPU devices",
    )
    parser.add_argument("--backend", default="shard_map", choices=("shard_map", "jit", "pmap"))
    parser.add_argument(
        "--zero",
        type=int,
        default=0,
        choices=(0, 1),
        help="1: split the optimizer state over the devices (ZeRO-1)",
    )
    parser.add_argument("--micro-batches", type=int, default=1, help="gradient accumulation")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 masters")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=0.9,
        help="exit 1 if the test accuracy ends below this",
    )
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (explicit multi-host start)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    return parser.parse_args(argv)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.simulate_devices:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.simulate_devices)

    from jaxopt_port import parallel

    cluster = parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    return train(args, cluster)


def train(args: argparse.Namespace, cluster) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from sklearn.datasets import load_digits

    from jaxopt_port import optim, parallel

    lead = cluster.process_index == 0
    say = print if lead else (lambda *a, **k: None)

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), channels last
    y = digits.target.astype(np.int32)
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    def conv(h, w):
        return jax.lax.conv_general_dilated(
            h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def forward(params, images, train: bool):
        p, s = params["net"], params["stats"]
        h = conv(images, p["conv1"]) + p["conv1_bias"]
        if train:
            h, mean, var = parallel.sync_batch_norm(
                h, s["mean"], s["var"], p["bn_weight"], p["bn_bias"], feature_axis=-1
            )
        else:
            h = (h - s["mean"]) * jax.lax.rsqrt(s["var"] + 1e-5) * p["bn_weight"] + p["bn_bias"]
            mean, var = s["mean"], s["var"]
        h = jax.nn.relu(h)
        h = jax.nn.relu(conv(h, p["conv2"]) + p["conv2_bias"])
        h = h.reshape(h.shape[0], 4, 2, 4, 2, h.shape[-1]).mean(axis=(2, 4))  # 2×2 average pool
        logits = h.reshape(h.shape[0], -1) @ p["fc"] + p["fc_bias"]
        return logits, {"mean": mean, "var": var}

    def loss_fn(params, batch):
        logits, stats = forward(params, batch["x"], train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), stats)

    k1, k2, k3 = jax.random.split(jax.random.key(args.seed), 3)
    he = lambda k, shape, fan_in: jax.random.normal(k, shape) * np.sqrt(2.0 / fan_in)
    params = {
        "net": {
            "conv1": he(k1, (3, 3, 1, 16), 9), "conv1_bias": jnp.zeros(16),
            "bn_weight": jnp.ones(16), "bn_bias": jnp.zeros(16),
            "conv2": he(k2, (3, 3, 16, 32), 144), "conv2_bias": jnp.zeros(32),
            "fc": he(k3, (512, 10), 512), "fc_bias": jnp.zeros(10),
        },
        "stats": {"mean": jnp.zeros(16), "var": jnp.ones(16)},
    }  # fmt: skip
    tx = optax.multi_transform(
        {"train": optim.adamw(lr=args.lr, weight_decay=1e-4), "frozen": optax.set_to_zero()},
        {"net": "train", "stats": "frozen"},
    )
    step = parallel.train_step(
        loss_fn, tx, backend=args.backend, zero=args.zero, micro_batches=args.micro_batches,
        compute_dtype=jnp.bfloat16 if args.bf16 else None, has_aux=True,
    )  # fmt: skip
    params, opt_state = step.init(params)

    devices = step.mesh.devices.flat
    say(
        f"{step.devices} {jax.devices()[0].platform} devices on {cluster.process_count} "
        f"process(es), backend={args.backend}, zero={args.zero}, micro_batches="
        f"{args.micro_batches}, {'bf16' if args.bf16 else 'fp32'} compute, global batch "
        f"{args.batch_size} ({args.batch_size // step.devices} per device)"
    )
    rows = parallel.process_share(args.batch_size)  # this process's rows of each global batch
    per_epoch = len(x_train) // args.batch_size
    total = per_epoch * args.epochs if not args.steps else min(args.steps, per_epoch * args.epochs)
    rng = np.random.default_rng(args.seed)  # the same order on every process

    losses, start, done = [], None, 0
    bar = _progress(total, enabled=lead)
    with bar:
        while done < total:
            order = rng.permutation(len(x_train))
            for i in range(per_epoch):
                if done == total:
                    break
                index = order[i * args.batch_size : (i + 1) * args.batch_size][rows]
                batch = {"x": x_train[index], "y": y_train[index]}
                params, opt_state, loss, stats = step(params, opt_state, batch)
                params = {**params, "stats": stats}
                losses.append(float(loss))  # waits for the step (no unblocked collectives)
                done += 1
                if start is None:
                    start = time.perf_counter()  # after the first (compiling) step
                bar.advance(losses[-1])
    seconds = time.perf_counter() - start if start is not None and done > 1 else float("nan")
    throughput = (done - 1) * args.batch_size / seconds

    host = jax.tree_util.tree_map(lambda a: np.asarray(a.addressable_data(0)), params)
    logits, _ = jax.jit(forward, static_argnums=2)(host, x_test, False)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == y_test))

    memory = {**parallel.bytes_per_device(params)}
    state_bytes = parallel.bytes_per_device(opt_state)
    say(f"steps {done}: loss {losses[0]:.4f} → {losses[-1]:.4f}; test accuracy {accuracy:.4f}")
    say(f"throughput {throughput:,.0f} examples/s over {done - 1} steps ({seconds:.2f} s)")
    for device in list(devices)[: min(8, step.devices)]:
        if device.process_index != cluster.process_index:
            continue
        used = (device.memory_stats() or {}).get("bytes_in_use")
        say(
            f"  {device}: params {memory.get(device, 0):,} B, optimizer state "
            f"{state_bytes.get(device, 0):,} B"
            + (f", in use {used:,} B" if used is not None else "")
        )
    total_state = sum(a.nbytes for a in jax.tree_util.tree_leaves(opt_state))
    say(f"optimizer state per device / whole state: {max(state_bytes.values()) / total_state:.3f}")
    if accuracy < args.min_accuracy:
        print(f"FAIL: test accuracy {accuracy:.4f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


class _progress:
    """A rich progress bar when rich is installed (and this is process 0), else a few lines."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.count, self.bar = total, enabled, 0, None
        if enabled:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self.bar = Progress(
                    TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                )  # fmt: skip
            except ImportError:
                pass

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, loss=float("nan"))
        return self

    def advance(self, loss: float) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss)
        elif self.enabled and (
            self.count % max(1, self.total // 10) == 0 or self.count == self.total
        ):
            print(f"  step {self.count}/{self.total}  loss {loss:.4f}", flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


if __name__ == "__main__":
    raise SystemExit(main())
