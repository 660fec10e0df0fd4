"""Prune a digits MLP four ways and compare accuracy, sparsity, size and speed.

    python examples/prune_digits.py                   # CPU defaults, well under a minute
    python examples/prune_digits.py --platform gpu    # same code on a GPU (or tpu)
    python examples/prune_digits.py --plot prune.png  # also save a bar chart

A 64-256-256-10 MLP (Flax NNX) trains on scikit-learn's digits (1797 8×8 images, shipped with the
wheel), then:

1. **one-shot global magnitude**: the 90 % smallest weights over all kernels are pruned at once
   (torch's ``global_unstructured``), then fine-tuned with the masks fixed;
2. **gradual cubic**: from the dense model, magnitude pruning to 95 % along torch's ``CubicSL``
   schedule while fine-tuning (``pruning.sparsify``, masks recomputed every few steps);
3. **2:4**: every group of four input weights keeps its two largest (``n_m_sparsifier``),
   fine-tuned, exported packed (values + positions);
4. **channel removal**: half of the hidden neurons of both hidden layers pruned by L2 norm
   (``Structured``), fine-tuned, then physically removed (``shrink_linear``): the smaller model
   computes what the masked one does, in less time.

Prints a table (test accuracy, sparsity of the kernels, bytes of the exported weights relative
to dense, forward time of the test set relative to dense) and exits 1 if the 90 % model is more
than ``--max-drop`` points below the dense one or the shrunk model differs from the masked one.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"), default=None)
    parser.add_argument("--epochs", type=int, default=20, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=2.0, help="accuracy points (exit 1)")
    parser.add_argument("--plot", help="save a bar chart of accuracy and sparsity here")
    parser.add_argument("--timing-repeats", type=int, default=200, help="forward calls timed")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.platform:
        jax.config.update("jax_platforms", args.platform)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from jaxopt_port import optim, pruning

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    x_test_j, y_test_j = jnp.asarray(x_test), jnp.asarray(y_test)
    rng = np.random.default_rng(args.seed)

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)]
            )

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = nnx.relu(layer(h))
            return self.layers[-1](h)

    def loss_fn(model, xb, yb):
        logits = model(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def batches():
        order = rng.permutation(len(x_train))
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[i : i + args.batch_size]
            yield jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])

    def train(model, tx, epochs, masked=False):
        """Train ``model`` in place; with ``masked`` the sparsify state's masks are applied to
        the model's params after every step (``hard=True`` keeps them applied already)."""
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer, xb, yb):
            grads = nnx.grad(loss_fn)(model, xb, yb)
            optimizer.update(model, grads)

        for _ in range(epochs):
            for xb, yb in batches():
                step(model, optimizer, xb, yb)
        return optimizer

    def accuracy(model):
        return float(jnp.mean(jnp.argmax(model(x_test_j), -1) == y_test_j)) * 100

    def kernels(model):
        return [layer.kernel[...] for layer in model.layers]

    def sparsity(model):
        ks = kernels(model)
        return float(sum(int(jnp.sum(k == 0)) for k in ks) / sum(k.size for k in ks)) * 100

    def forward_time(model, repeats=args.timing_repeats):
        fn = nnx.jit(lambda m, xb: m(xb))
        jax.block_until_ready(fn(model, x_test_j))
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(model, x_test_j)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / repeats

    def bcoo_ratio(model):
        """Bytes of the kernels exported as BCOO (values + indices) over the dense kernels'."""
        ks = kernels(model)
        return sum(pruning.size_ratio(pruning.to_bcoo(k), k) * k.nbytes for k in ks) / sum(
            k.nbytes for k in ks
        )

    def sgd():
        return optim.sgd(lr=args.lr, momentum=0.9)

    def copy(model):
        return nnx.clone(model)

    sizes = (64, 256, 256, 10)
    dense = MLP(sizes, nnx.Rngs(args.seed))
    train(dense, sgd(), args.epochs)
    rows = [("dense", dense, None)]
    dense_bytes = sum(k.nbytes for k in kernels(dense))

    # 1. one-shot global magnitude 90 %: masks at init from the trained weights, fixed
    one_shot = copy(dense)
    tx = pruning.sparsify(
        sgd(),
        pruning.Magnitude(0.9),
        every=None,
        init_masks=True,
        scope="global",
        layout="flax",
        hard=True,
    )
    one_shot_state = nnx.Optimizer(one_shot, tx, wrt=nnx.Param).opt_state  # masks of dense
    masks = pruning.masks_of(nnx.as_pure(one_shot_state))
    nnx.update(one_shot, pruning.apply_masks(nnx.as_pure(nnx.state(one_shot, nnx.Param)), masks))
    before = accuracy(one_shot)
    train(one_shot, tx, args.finetune_epochs)
    rows.append(("global magnitude 90%", one_shot, bcoo_ratio(one_shot)))

    # 2. gradual cubic to 95 %: CubicSL over the mask updates while fine-tuning
    gradual = copy(dense)
    steps_per_epoch = len(x_train) // args.batch_size
    every = max(steps_per_epoch // 2, 1)
    updates = args.finetune_epochs * steps_per_epoch // every
    schedule = pruning.CubicSL(
        0.95, init_sl=0.0, init_t=0, delta_t=1, total_t=max(updates * 2 // 3, 1)
    )
    tx = pruning.sparsify(
        sgd(),
        pruning.Magnitude(),
        schedule=schedule,
        every=every,
        scope="global",
        layout="flax",
        hard=True,
    )
    train(gradual, tx, args.finetune_epochs)
    rows.append(("gradual cubic 95%", gradual, bcoo_ratio(gradual)))

    # 3. 2:4 along torch's input features (the Flax kernel's rows)
    two_four = copy(dense)
    tx = pruning.sparsify(
        sgd(),
        pruning.n_m_sparsifier(2, 4),
        every=1,
        layout="flax",
        hard=True,
        params=lambda path, leaf: path[-1] == "kernel" and leaf.shape[0] % 4 == 0,
    )
    train(two_four, tx, args.finetune_epochs)
    packed = [pruning.pack_n_m(k.T) for k in kernels(two_four)]  # torch's (out, in) layout
    ratio = (
        sum(
            pruning.size_ratio(p, k) * k.nbytes
            for p, k in zip(packed, kernels(two_four), strict=True)
        )
        / dense_bytes
    )
    rows.append(("2:4 semi-structured", two_four, ratio))

    # 4. channel removal: half the neurons of each hidden layer, by L2 norm
    channels = copy(dense)
    tx = pruning.sparsify(
        sgd(),
        pruning.Structured(0.5, n=2, dim=0),
        every=None,
        init_masks=True,
        layout="flax",
        hard=True,
        params=["layers/0/kernel", "layers/1/kernel"],
    )
    train(channels, tx, args.finetune_epochs)
    layers = list(channels.layers)
    keeps = [pruning.kept_channels(layers[i].kernel[...]) for i in (0, 1)]
    for i, keep in enumerate(keeps):  # dead neurons must output 0: zero their biases too
        layers[i].bias[...] = layers[i].bias[...] * pruning.channel_mask(keep, layers[i].bias[...])
    shrunk = copy(channels)
    a, b = pruning.shrink_linear(shrunk.layers[0], shrunk.layers[1], keeps[0])
    b, c = pruning.shrink_linear(b, shrunk.layers[2], keeps[1])
    shrunk.layers = nnx.List([a, b, c])
    logits = channels(x_test_j)
    # relative to the largest logit: float32 sums over 256 vs 128 terms round differently
    difference = float(jnp.max(jnp.abs(shrunk(x_test_j) - logits)) / jnp.max(jnp.abs(logits)))
    rows.append(("50% neurons (masked)", channels, 1.0))
    rows.append(
        ("50% neurons removed", shrunk, sum(k.nbytes for k in kernels(shrunk)) / dense_bytes)
    )

    base_time = None
    print(f"{'model':24s} {'accuracy %':>10s} {'sparsity %':>10s} {'size':>6s} {'time':>6s}")
    results = {}
    for name, model, size in rows:
        acc = accuracy(model)
        results[name] = acc
        seconds = forward_time(model)
        base_time = base_time or seconds
        t = seconds / base_time
        print(f"{name:24s} {acc:10.2f} {sparsity(model):10.1f} {size or 1.0:6.3f} {t:6.2f}")
    print(f"one-shot 90% before fine-tuning: {before:.2f} %")
    print(f"shrunk vs masked model: max |difference| / max |logit| = {difference:.2e}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar(list(results), list(results.values()))
        ax.set_ylim(min(results.values()) - 5, 100)
        ax.set_ylabel("test accuracy %")
        ax.tick_params(axis="x", labelrotation=20)
        fig.tight_layout()
        fig.savefig(args.plot)
    drop = results["dense"] - results["global magnitude 90%"]
    ok = drop <= args.max_drop and difference <= 1e-6
    print(f"90% global magnitude: {drop:.2f} points below dense ({'ok' if ok else 'FAILED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
