"""Choose per-layer pruning ratios with a genetic algorithm, under a size budget.

A 3-layer MLP is trained on scikit-learn's bundled digits (no download). Then each layer's
weights are magnitude-pruned (the smallest $|w|$ of layer $l$ set to zero, a fraction $r_l$ of
them; one shot, no retraining) and `gradient_free.minimize(method="genetic")` searches the ratios
$r \\in [0, 0.99]^3$ that minimise the validation error while keeping at most `--keep` of all
weights (a candidate over budget pays 10 × its excess). The whole population of candidate
ratio vectors is evaluated in one vmapped, compiled call. The result is compared with the uniform
ratio that meets the same budget, on the held-out test rows.

The mask is `pruning.Magnitude`, the rule of torch's `prune.l1_unstructured` at a level that may
be traced (here: each candidate's ratio): prune the `round(r·n)` entries of smallest magnitude.

    python examples/search_pruning_ratios.py [--keep 0.1] [--evals 3000] [--seed 0]

Exit status 1 if the searched ratios do worse than uniform ones on the validation rows.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from jaxopt_port import gradient_free, optim, pruning

SIZES = (64, 128, 64, 10)


def load(seed: int):
    """Standardised digits split 60/20/20 into train, validation and test rows."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x, y = jnp.asarray(x[order], jnp.float32), jnp.asarray(y[order])
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def init(key):
    keys = jax.random.split(key, len(SIZES) - 1)
    return [
        (jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), jnp.zeros(n))
        for k, m, n in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def logits(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def train(params, data, steps: int = 400):
    tx = optim.adam(lr=3e-3)
    state = tx.init(params)

    def loss(params):
        x, y = data
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def error(params, data):
    x, y = data
    return jnp.mean(jnp.argmax(logits(params, x), axis=1) != y)


def pruned(params, ratios):
    rule = pruning.Magnitude()
    return [
        (w * rule.update_mask(w, jnp.ones_like(w), r), b)
        for (w, b), r in zip(params, ratios, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of weights kept")
    parser.add_argument("--evals", type=int, default=3000, help="evaluation budget of the GA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train_set, valid, test = load(args.seed)
    params = train(init(jax.random.key(args.seed)), train_set)
    sizes = jnp.array([w.size for w, _ in params], jnp.float32)

    def objective(ratios):
        kept = jnp.sum(sizes * (1 - jnp.round(ratios * sizes) / sizes)) / jnp.sum(sizes)
        return error(pruned(params, ratios), valid) + 10 * jnp.maximum(kept - args.keep, 0)

    result = gradient_free.minimize(
        objective, jnp.full(3, 1 - args.keep), method="genetic", key=jax.random.key(args.seed),
        max_evals=args.evals, bounds=(0.0, 0.99), popsize=50, mutation="polynomial",
        mutation_rate=0.3,
    )  # fmt: skip
    uniform = jnp.full(3, 1 - args.keep)
    print(
        f"dense model: validation error {float(error(params, valid)):.4f}, test error {float(error(params, test)):.4f}"
    )
    print(
        f"keeping {args.keep:.0%} of {int(sizes.sum())} weights; GA: {result.nfev} evaluations, {result.nit} generations"
    )
    print(
        f"{'ratios':8s} {'layer 1':>8s} {'layer 2':>8s} {'layer 3':>8s} {'kept':>7s} {'valid err':>10s} {'test err':>9s}"
    )
    for name, ratios in (("uniform", uniform), ("GA", result.x)):
        kept = float(jnp.sum(sizes * (1 - jnp.round(ratios * sizes) / sizes)) / jnp.sum(sizes))
        model = pruned(params, ratios)
        r = [float(v) for v in ratios]
        print(f"{name:8s} {r[0]:8.3f} {r[1]:8.3f} {r[2]:8.3f} {kept:7.3f} "
              f"{float(error(model, valid)):10.4f} {float(error(model, test)):9.4f}")  # fmt: skip
    better = float(result.fun) <= float(objective(uniform))
    print("GA objective", float(result.fun), "uniform objective", float(objective(uniform)))
    return 0 if better else 1


if __name__ == "__main__":
    sys.exit(main())
