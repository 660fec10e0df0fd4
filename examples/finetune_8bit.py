"""Fine-tune a digits MLP with 8-bit AdamW and with float32 AdamW: accuracy and optimizer memory.

    python examples/finetune_8bit.py                  # CPU defaults, well under a minute
    python examples/finetune_8bit.py --platform gpu   # same code on a GPU (or tpu)

A 64-512-512-10 MLP (Flax NNX, GELU) is pretrained with SGD on the digits 0-4 only (scikit-learn's
digits, 1797 8×8 images shipped with the wheel), then fine-tuned on all ten digits twice from the
same weights: with `optim.adamw8bit` (torchao's `AdamW8bit`: both moments stored as 8-bit codes
with one float32 scale per block of 256 values, for every kernel of at least 4096 values and a
whole number of blocks) and with `optim.adamw` (float32 moments, torch's `AdamW`).

GELU, not ReLU: with ReLU hidden units the 8-bit run of this recipe diverges (10 % test
accuracy; parameter updates up to ~460x the learning rate within the first steps) while float32
AdamW reaches 97.6 %. This is torchao's scheme, not the port: a torch twin of this script with
torchao's `AdamW8bit` also ends at 10 % (torch's `AdamW`: 96.2 %), and from random weights (no
pretraining) both 8-bit runs match float32 (97.3 % here). The cause was not analysed further
(presumably second-moment entries quantized to code 0 under a large block maximum while the
first moment keeps a nonzero code).

Prints a table (test accuracy, bytes of the optimizer state, their ratio to float32 AdamW's) and
exits 1 if the 8-bit run ends more than `--max-drop` points below the float32 run or its state
is more than `--max-state-ratio` of float32's.
"""

from __future__ import annotations

import argparse
import itertools
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"), default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=5, help="SGD on digits 0-4")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs, all digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=2.0, help="accuracy points (exit 1)")
    parser.add_argument("--max-state-ratio", type=float, default=0.3, help="(exit 1)")
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

    from jaxopt_port import optim

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    x_test_j, y_test_j = jnp.asarray(x_test), jnp.asarray(y_test)

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)]
            )

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = nnx.gelu(layer(h))
            return self.layers[-1](h)

    def loss_fn(model, xb, yb):
        logits = model(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def train(model, tx, epochs, xs, ys, seed):
        """Train `model` in place; returns the final optimizer state (what we measure).

        A functional loop over the model's pure state, one jitted step (`nnx.Optimizer` works
        too: `nnx.Optimizer(model, optim.adamw8bit(), wrt=nnx.Param)`)."""
        graphdef, params = nnx.split(model)
        params = nnx.as_pure(params)
        opt_state = tx.init(params)
        rng = np.random.default_rng(seed)

        @jax.jit
        def step(params, opt_state, xb, yb):
            grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), xb, yb))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        for _ in range(epochs):
            order = rng.permutation(len(xs))
            for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
                idx = order[i : i + args.batch_size]
                batch = jnp.asarray(xs[idx]), jnp.asarray(ys[idx])
                params, opt_state = step(params, opt_state, *batch)
        nnx.update(model, params)
        return opt_state

    def accuracy(model):
        return float(jnp.mean(jnp.argmax(model(x_test_j), -1) == y_test_j)) * 100

    def state_bytes(opt_state):
        return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(opt_state))

    pretrained = MLP((64, 512, 512, 10), nnx.Rngs(args.seed))
    first_half = y_train < 5
    sgd = optim.sgd(lr=0.05, momentum=0.9)
    train(pretrained, sgd, args.pretrain_epochs, x_train[first_half], y_train[first_half], 1)
    print(f"pretrained on digits 0-4: test accuracy on all digits {accuracy(pretrained):.2f} %")

    results = {}
    for name, tx in (
        ("adamw (float32)", optim.adamw(lr=args.lr)),
        ("adamw8bit", optim.adamw8bit(lr=args.lr)),
    ):
        model = nnx.clone(pretrained)
        opt_state = train(model, tx, args.epochs, x_train, y_train, args.seed)
        results[name] = (accuracy(model), state_bytes(opt_state))

    f32_accuracy, f32_bytes = results["adamw (float32)"]
    print(f"\n{'optimizer':<16} {'test acc %':>10} {'state bytes':>12} {'/ float32':>10}")
    for name, (acc, nbytes) in results.items():
        print(f"{name:<16} {acc:>10.2f} {nbytes:>12,} {nbytes / f32_bytes:>10.3f}")
    acc8, bytes8 = results["adamw8bit"]
    drop, ratio = f32_accuracy - acc8, bytes8 / f32_bytes
    print(f"\n8-bit accuracy drop {drop:.2f} points; 8-bit state / float32 state {ratio:.3f}")
    ok = drop <= args.max_drop and ratio <= args.max_state_ratio
    if not ok:
        print(f"FAIL: drop > {args.max_drop} points or ratio > {args.max_state_ratio}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
