r"""Quantize and prune a digits MLP by proximal training (PARQ, PAT) and compare with one-shot
post-training quantization and pruning of the float model.

    python examples/parq_digits.py                  # CPU defaults, about 15 s
    python examples/parq_digits.py --platform gpu   # same code on a GPU (or tpu)

A 64-32-32-10 MLP (plain JAX, weights in torch's `(out, in)` layout) trains on scikit-learn's
digits (1797 8×8 images, shipped with the wheel) four ways from the same initialization:

1. **float**: AdamW alone;
2. **PARQ 4-bit** and **PARQ 2-bit**: `prox.quant_optimizer` around the same AdamW, every weight
   matrix on 2^b levels per output neuron (`UnifQuantizer`, per channel), annealed in by
   `ProxPARQ` after a float warmup and hard-quantized at the end;
3. **PAT 80 % rows**: `prox.prune_optimizer` around SGD (momentum 0.9) with `ProxGroupLasso` over
   the rows (output neurons) of both hidden layers after the same float warmup; `--reg-lambda`
   is tuned so that about 80 % of those rows end exactly at zero. (Around AdamW the group lasso
   prunes all or nothing: Adam's steps are about `lr` whatever the gradient, so a row's latent
   norm and the threshold $\lambda\sqrt{n}\gamma$ grow at the same rate, and λ ≈ 0.7 tips
   every row over.)

It then applies the one-shot baselines to the trained float model: **PTQ 2-bit** (the same
`UnifQuantizer`, per output neuron, applied once) and **one-shot 80 % rows** (`pruning.
ln_structured`, L2 norm, 80 % of the rows of both hidden layers; no fine-tuning).

Prints a table (test accuracy, distinct values per output neuron of the weight matrices, zero
rows of the hidden layers) and exits 1 unless 2-bit PARQ is within `--max-drop` points of float
and at least `--min-gain` points above 2-bit PTQ.
"""

from __future__ import annotations

import argparse
import itertools
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"), default=None)
    parser.add_argument("--epochs", type=int, default=60, help="training epochs of every model")
    parser.add_argument("--hidden", type=int, default=32, help="neurons of both hidden layers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--pat-lr", type=float, default=0.1, help="PAT's SGD (momentum 0.9) lr")
    parser.add_argument("--reg-lambda", type=float, default=0.06, help="PAT's group lasso λ")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=2.0, help="2-bit PARQ below float")
    parser.add_argument("--min-gain", type=float, default=3.0, help="2-bit PARQ above 2-bit PTQ")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.platform:
        jax.config.update("jax_platforms", args.platform)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from jaxopt_port import optim, prox, pruning

    epochs = args.epochs
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    steps_per_epoch = len(x_train) // args.batch_size
    total = epochs * steps_per_epoch
    rng = np.random.default_rng(args.seed)
    # the same batches for every model: (epochs, steps, batch) indices
    order = np.stack([rng.permutation(len(x_train)) for _ in range(epochs)])
    order = order[:, : steps_per_epoch * args.batch_size].reshape(epochs, steps_per_epoch, -1)
    xb, yb = jnp.asarray(x_train[order]), jnp.asarray(y_train[order])

    sizes = (64, args.hidden, args.hidden, 10)
    keys = jax.random.split(jax.random.key(args.seed), len(sizes) - 1)
    init = []
    for key, (n_in, n_out) in zip(keys, itertools.pairwise(sizes), strict=True):
        bound = 1 / np.sqrt(n_in)  # torch's Linear initialization
        kw, kb = jax.random.split(key)
        init.append(
            {
                "weight": jax.random.uniform(kw, (n_out, n_in), minval=-bound, maxval=bound),
                "bias": jax.random.uniform(kb, (n_out,), minval=-bound, maxval=bound),
            }
        )

    def forward(params, h):
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["weight"].T + layer["bias"])
        return h @ params[-1]["weight"].T + params[-1]["bias"]

    def loss_fn(params, xs, ys):
        logits = forward(params, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    def train(tx):
        """Train from `init` for `epochs` epochs (one compiled scan over all the steps)."""

        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss_fn)(params, *batch)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        @jax.jit
        def run(params, xs, ys):
            xs = xs.reshape(-1, *xs.shape[2:])
            ys = ys.reshape(-1, *ys.shape[2:])
            (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), (xs, ys))
            return params, state

        return run(init, xb, yb)

    def accuracy(params):
        logits = forward(params, jnp.asarray(x_test))
        return float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y_test))) * 100

    def levels(params):
        """The most distinct values in one row (output neuron) of any weight matrix."""
        return max(
            max(len(np.unique(row)) for row in np.asarray(layer["weight"])) for layer in params
        )

    def zero_rows(params):
        """Fraction of the hidden layers' rows that are exactly zero."""
        zero = [np.all(np.asarray(layer["weight"]) == 0, axis=1) for layer in params[:-1]]
        return float(np.mean(np.concatenate(zero))) * 100

    def adamw():
        return optim.adamw(lr=args.lr, weight_decay=1e-4)

    weights = "*/weight"
    results = []

    dense, _ = train(adamw())
    results.append(("float", dense))

    warmup = total // 5
    for bits in (4, 2):
        tx = prox.quant_optimizer(
            adamw(),
            prox.UnifQuantizer(),
            prox.ProxPARQ(anneal_start=warmup, anneal_end=total - total // 10),
            bits,
            params=weights,
            warmup_steps=warmup,
            quant_period=10,
            quant_per_channel=True,
        )
        params, state = train(tx)
        results.append((f"PARQ {bits}-bit", prox.quantized_params(params, state)))

    groups = [
        {"params": f"{i}/weight", "prox_type": "ProxGroupLasso", "group_type": "Dim0Grouper"}
        for i in range(len(sizes) - 2)
    ]
    sgd = optim.sgd(lr=args.pat_lr, momentum=0.9)
    tx = prox.prune_optimizer(
        sgd, groups, warmup_steps=warmup, reg_lambda=args.reg_lambda, lr=args.pat_lr
    )
    pat, _ = train(tx)
    results.append(("PAT 80% rows", pat))

    def ptq(w):
        q, _ = prox.UnifQuantizer().quantize(w, 2, dim=-1)  # one scale per output neuron
        return q

    results.append(("PTQ 2-bit", [dict(layer, weight=ptq(layer["weight"])) for layer in dense]))
    one_shot = [
        dict(layer, weight=layer["weight"] * pruning.ln_structured(layer["weight"], 0.8, 2, 0))
        for layer in dense[:-1]
    ] + [dense[-1]]
    results.append(("one-shot 80% rows", one_shot))

    print(f"seed {args.seed}, {epochs} epochs of {steps_per_epoch} steps")
    print(f"{'model':20s} {'accuracy %':>10s} {'levels/row':>10s} {'zero rows %':>11s}")
    acc = {}
    for name, params in results:
        acc[name] = accuracy(params)
        print(f"{name:20s} {acc[name]:10.2f} {levels(params):10d} {zero_rows(params):11.1f}")
    drop = acc["float"] - acc["PARQ 2-bit"]
    gain = acc["PARQ 2-bit"] - acc["PTQ 2-bit"]
    ok = drop <= args.max_drop and gain >= args.min_gain and levels(results[2][1]) <= 4
    print(
        f"2-bit PARQ: {drop:.2f} points below float, {gain:.2f} above 2-bit PTQ "
        f"({'ok' if ok else 'FAILED'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
