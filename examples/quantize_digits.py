"""Post-training int8 quantization of a digits MLP, in JAX and in torch side by side.

    python examples/quantize_digits.py                  # CPU, well under a minute
    python examples/quantize_digits.py --platform gpu   # same code on a GPU (or tpu)

A 64-128-64-10 MLP (Flax NNX, with `QuantStub` / `DeQuantStub` around it as torch's eager mode
wants) trains on scikit-learn's digits; its twin in torch gets the same weights. Then:

1. **dynamic**: `quantization.quantize_dynamic` (int8 weights, activations quantized per call)
   and torch's `quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`;
2. **static**: `prepare` → calibrate on the training images → `convert` (x86 default qconfig:
   histogram observers, 7-bit activations, per-channel int8 weights), and torch's eager
   `prepare` / `convert` calibrated on the same images;
3. **QAT**: `fuse_modules_qat` (Linear+ReLU) → `prepare_qat` (x86 default QAT qconfig: fused
   moving-average fake-quantizers) → fine-tune the trained model a few epochs with fake
   quantization → `convert`, and torch's eager QAT flow on the same batches.

Prints test accuracy, the size of the state (bytes of `nnx.state`; torch: `torch.save` of the
`state_dict`) relative to float32, forward time of the test set, and how many test rows give
the same logits (bit for bit) and the same prediction as torch's int8 model. Exits 1 if the
dynamic model loses more than `--max-drop` points, its state is less than 3.7× smaller, or its
logits differ from torch's on any row, or if the QAT int8 model loses more than `--max-drop`
points or predicts differently from torch's QAT int8 model on any row.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import time
import warnings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"), default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=0.5, help="accuracy points (exit 1)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs")
    parser.add_argument("--qat-lr", type=float, default=0.01)
    parser.add_argument("--timing-repeats", type=int, default=50, help="forward calls timed")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.platform:
        jax.config.update("jax_platforms", args.platform)
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import torch.ao.quantization as tq
    from flax import nnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from jaxopt_port import interop, optim, quantization

    warnings.filterwarnings("ignore", category=UserWarning)  # reduce_range, quantized tensors
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization
    torch.backends.quantized.engine = "x86"

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    rng = np.random.default_rng(args.seed)
    rngs = nnx.Rngs(args.seed)
    model = nnx.Sequential(
        quantization.QuantStub(),
        nnx.Linear(64, 128, rngs=rngs),
        nnx.relu,
        nnx.Linear(128, 64, rngs=rngs),
        nnx.relu,
        nnx.Linear(64, 10, rngs=rngs),
        quantization.DeQuantStub(),
    )

    def loss_fn(model, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    optimizer = nnx.Optimizer(model, optim.sgd(lr=args.lr, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        optimizer.update(model, nnx.grad(loss_fn)(model, xb, yb))

    def batches(epochs):
        for _ in range(epochs):
            order = rng.permutation(len(x_train))
            for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
                yield order[i : i + args.batch_size]

    for idx in batches(args.epochs):
        step(model, optimizer, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))

    twin = torch.nn.Sequential(
        tq.QuantStub(),
        torch.nn.Linear(64, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
        tq.DeQuantStub(),
    ).eval()
    twin.load_state_dict(interop.weights_to_torch(model))

    apply = nnx.jit(lambda m, xb: m(xb))
    x_test_j, x_test_t = jnp.asarray(x_test), torch.from_numpy(x_test)

    def jax_logits(m):
        return np.asarray(apply(m, x_test_j))

    def torch_logits(m):
        with torch.no_grad():
            return m(x_test_t).numpy()

    def accuracy(logits):
        return float(np.mean(np.argmax(logits, -1) == y_test)) * 100

    def jax_bytes(m):
        return sum(v.nbytes for v in jax.tree_util.tree_leaves(nnx.state(m)))

    def torch_bytes(m):
        buffer = io.BytesIO()
        torch.save(m.state_dict(), buffer)
        return buffer.getbuffer().nbytes

    def jax_time(m):
        jax.block_until_ready(apply(m, x_test_j))
        start = time.perf_counter()
        for _ in range(args.timing_repeats):
            out = apply(m, x_test_j)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / args.timing_repeats

    def torch_time(m):
        torch_logits(m)
        start = time.perf_counter()
        for _ in range(args.timing_repeats):
            torch_logits(m)
        return (time.perf_counter() - start) / args.timing_repeats

    dynamic = quantization.quantize_dynamic(model)
    dynamic_t = tq.quantize_dynamic(twin, {torch.nn.Linear}, dtype=torch.qint8)

    prepared = quantization.prepare(model)  # x86 default qconfig
    apply(prepared, jnp.asarray(x_train))  # calibration: the training images, one batch
    static = quantization.convert(prepared)
    twin_static = copy.deepcopy(twin)
    twin_static.qconfig = tq.get_default_qconfig("x86")
    prepared_t = tq.prepare(twin_static)
    with torch.no_grad():
        prepared_t(torch.from_numpy(x_train))
    static_t = tq.convert(prepared_t)

    # QAT: fine-tune the trained float model with fake quantization, in both frameworks
    fuse = [["1", "2"], ["3", "4"]]  # Linear + ReLU pairs (torch's names of Sequential entries)
    qat = quantization.prepare_qat(quantization.fuse_modules_qat(model, fuse))  # x86 default
    twin_qat = tq.fuse_modules_qat(copy.deepcopy(twin).train(), fuse)
    twin_qat.qconfig = tq.get_default_qat_qconfig("x86")
    twin_qat = tq.prepare_qat(twin_qat)
    qat_optimizer = nnx.Optimizer(qat, optim.sgd(lr=args.qat_lr, momentum=0.9), wrt=nnx.Param)
    torch_optimizer = torch.optim.SGD(twin_qat.parameters(), lr=args.qat_lr, momentum=0.9)
    for idx in batches(args.qat_epochs):
        step(qat, qat_optimizer, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))
        torch_optimizer.zero_grad()
        logits = twin_qat(torch.from_numpy(x_train[idx]))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_train[idx])).backward()
        torch_optimizer.step()
    qat_int8 = quantization.convert(qat)
    qat_int8_t = tq.convert(twin_qat.eval())

    float_logits = jax_logits(model)
    float_acc = accuracy(float_logits)
    float_bytes, float_bytes_t = jax_bytes(model), torch_bytes(twin)
    rows = []
    for name, ours, theirs in (
        ("float32", model, twin),
        ("dynamic int8", dynamic, dynamic_t),
        ("static int8", static, static_t),
        ("QAT int8", qat_int8, qat_int8_t),
    ):
        lo, lt = jax_logits(ours), torch_logits(theirs)
        rows.append(
            {
                "name": name,
                "acc": accuracy(lo),
                "acc_torch": accuracy(lt),
                "size": float_bytes / jax_bytes(ours),
                "size_torch": float_bytes_t / torch_bytes(theirs),
                "ms": jax_time(ours) * 1e3,
                "ms_torch": torch_time(theirs) * 1e3,
                "bitwise": int(np.sum(np.all(lo == lt, axis=1))),
                "agree": int(np.sum(np.argmax(lo, -1) == np.argmax(lt, -1))),
            }
        )

    n = len(x_test)
    print(f"digits test set: {n} rows; platform {jax.devices()[0].platform}")
    header = (
        f"{'model':<13} {'acc %':>6} {'torch %':>8} {'smaller':>8} {'torch':>6} "
        f"{'ms':>7} {'torch ms':>9} {'bitwise':>8} {'same pred':>10}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['name']:<13} {r['acc']:>6.2f} {r['acc_torch']:>8.2f} {r['size']:>7.2f}× "
            f"{r['size_torch']:>5.2f}× {r['ms']:>7.3f} {r['ms_torch']:>9.3f} "
            f"{r['bitwise']:>4}/{n} {r['agree']:>6}/{n}"
        )
    dyn = rows[1]
    failures = []
    if float_acc - dyn["acc"] > args.max_drop:
        failures.append(f"dynamic int8 lost {float_acc - dyn['acc']:.2f} points")
    if dyn["size"] < 3.7:
        failures.append(f"dynamic int8 state only {dyn['size']:.2f}× smaller")
    if dyn["bitwise"] != n:
        failures.append(f"dynamic int8 logits differ from torch's on {n - dyn['bitwise']} rows")
    qat_row = rows[3]
    if float_acc - qat_row["acc"] > args.max_drop:
        failures.append(f"QAT int8 lost {float_acc - qat_row['acc']:.2f} points")
    if qat_row["agree"] != n:
        failures.append(f"QAT int8 predictions differ from torch's on {n - qat_row['agree']} rows")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
