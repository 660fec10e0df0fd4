"""Forward time and size of a pruned MLP: dense vs masked vs shrunk, JAX and torch, one run.

What is measured
    An MLP ``d -> h -> h -> d`` (ReLU, float32, batch ``--batch``) whose hidden layers lose
    ``--prune`` of their neurons by L2 norm. Per framework, the forward pass of:

    * ``dense``: the unpruned model;
    * ``masked``: the pruned model as pruning leaves it. JAX: the weights multiplied by their
      masks once (the zeros still cost); torch: ``torch.nn.utils.prune.ln_structured``, whose
      forward pre-hooks multiply ``weight_orig * weight_mask`` on every call;
    * ``shrunk``: the pruned neurons removed (``pruning.shrink_linear``; in torch, the same
      smaller ``nn.Linear``\\ s);
    * JAX only, ``bcoo 90%``: the dense layers at 90 % unstructured sparsity as
      ``jax.experimental.sparse`` BCOO matrices (what sparse storage buys on this backend).

    The contenders take turns (one call each per round); the median over the rounds is
    reported, in ms, with its ratio to the same framework's dense model, plus the parameter
    bytes relative to dense.

Run from the repository root:

    python -m benchmarks.pruning [--width 1024] [--hidden 4096] [--batch 256] [--prune 0.5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prune", type=float, default=0.5, help="fraction of hidden neurons")
    parser.add_argument("--rounds", type=int, default=10)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from jax.experimental import sparse
    from torch.nn.utils import prune as tprune

    from jaxopt_port import interop, pruning

    torch.set_num_threads(torch.get_num_threads())
    sizes = (args.width, args.hidden, args.hidden, args.width)
    layers = [
        nnx.Linear(a, b, rngs=nnx.Rngs(i)) for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]
    x = np.random.default_rng(0).standard_normal((args.batch, args.width)).astype(np.float32)
    xj, xt = jnp.asarray(x), torch.from_numpy(x)

    # masks: the hidden layers' output neurons by L2 norm (torch's layout: dim 0)
    keeps, masked_layers = [], []
    for i, layer in enumerate(layers):
        m = nnx.clone(layer)
        if i < 2:
            mask = pruning.ln_structured(layer.kernel[...].T, args.prune, 2, 0).T
            keep = pruning.kept_channels(mask)
            keeps.append(keep)
            m.kernel[...] = layer.kernel[...] * mask
            m.bias[...] = layer.bias[...] * pruning.channel_mask(keep, layer.bias[...])
        masked_layers.append(m)
    a, b = pruning.shrink_linear(masked_layers[0], masked_layers[1], keeps[0])
    b, c = pruning.shrink_linear(b, masked_layers[2], keeps[1])
    shrunk_layers = [a, b, c]

    def jax_forward(ls):
        params = [(layer.kernel[...], layer.bias[...]) for layer in ls]

        @jax.jit
        def f(params, x):
            for i, (k, bias) in enumerate(params):
                x = x @ k + bias
                x = jax.nn.relu(x) if i < len(params) - 1 else x
            return x

        return lambda: jax.block_until_ready(f(params, xj))

    def bcoo_forward(ls):
        params = [
            (sparse.BCOO.fromdense(k.T * pruning.l1_unstructured(k.T, 0.9)), bias)
            for k, bias in ((layer.kernel[...], layer.bias[...]) for layer in ls)
        ]

        @jax.jit
        def f(params, x):
            for i, (w, bias) in enumerate(params):
                x = (w @ x.T).T + bias
                x = jax.nn.relu(x) if i < len(params) - 1 else x
            return x

        return lambda: jax.block_until_ready(f(params, xj)), params

    def torch_model(ls):
        model = torch.nn.Sequential()
        for i, layer in enumerate(ls):
            lin = torch.nn.Linear(layer.in_features, layer.out_features)
            state = interop.weights_to_numpy(layer)
            lin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            model.append(lin)
            if i < len(ls) - 1:
                model.append(torch.nn.ReLU())
        return model

    t_dense = torch_model(layers)
    t_masked = torch_model(layers)
    for i in (0, 2):
        tprune.ln_structured(t_masked[i], "weight", args.prune, 2, 0)
        tprune.custom_from_mask(
            t_masked[i], "bias", torch.from_numpy(np.asarray(keeps[i // 2], np.float32))
        )
    t_shrunk = torch_model(shrunk_layers)

    def torch_forward(model):
        def run():
            with torch.no_grad():
                return model(xt)

        return run

    bcoo_run, bcoo_params = bcoo_forward(layers)
    contenders = {
        ("JAX", "dense"): jax_forward(layers),
        ("JAX", "masked"): jax_forward(masked_layers),
        ("JAX", "shrunk"): jax_forward(shrunk_layers),
        ("JAX", "bcoo 90%"): bcoo_run,
        ("torch", "dense"): torch_forward(t_dense),
        ("torch", "masked"): torch_forward(t_masked),
        ("torch", "shrunk"): torch_forward(t_shrunk),
    }
    for run in contenders.values():
        run()
        run()
    times = {key: [] for key in contenders}
    for r in range(args.rounds):
        keys = list(contenders)
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            contenders[key]()
            start = time.perf_counter()
            contenders[key]()
            times[key].append(time.perf_counter() - start)

    def nbytes(ls):
        return sum(layer.kernel[...].nbytes + layer.bias[...].nbytes for layer in ls)

    dense_bytes = nbytes(layers)
    sizes_rel = {
        "dense": 1.0,
        "masked": 1.0,
        "shrunk": nbytes(shrunk_layers) / dense_bytes,
        "bcoo 90%": sum(
            pruning.size_ratio(w, w.todense()) * w.todense().nbytes + bias.nbytes
            for w, bias in bcoo_params
        )
        / dense_bytes,
    }
    print(
        f"MLP {sizes}, batch {args.batch}, {args.prune:.0%} of hidden neurons pruned, "
        f"{jax.devices()[0].platform}, median of {args.rounds} rounds"
    )
    print(f"{'framework':9s} {'model':9s} {'ms':>8s} {'/ dense':>8s} {'bytes / dense':>14s}")
    for (framework, name), ts in times.items():
        ms = statistics.median(ts) * 1e3
        base = statistics.median(times[(framework, "dense")]) * 1e3
        print(f"{framework:9s} {name:9s} {ms:8.3f} {ms / base:8.2f} {sizes_rel[name]:14.3f}")
    jd = statistics.median(times[("JAX", "shrunk")])
    td = statistics.median(times[("torch", "shrunk")])
    print(f"shrunk: JAX / torch = {jd / td:.2f}")


if __name__ == "__main__":
    main()
