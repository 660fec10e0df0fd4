r"""PARQ as an Optax transformation: quantization-aware training by a proximal map around any
optimizer (torchao's `torchao.prototype.parq.QuantOptimizer`).

The state keeps the latent weight $z$ of every quantized leaf; the params are the model's
(quantized) weights. Step $n$ (0-based; $W$ = `warmup_steps`):

1. $n < W$: the inner optimizer's step only.
2. Otherwise the inner optimizer steps from $z$ (from the params at $n = W$, when $z$ is
   first saved) with the gradient taken at the params: $z \leftarrow z + u$.
3. $\gamma = \max(1, \sum \text{lr})$; with `quant_shrink`, $p = z/\gamma$, else $p = z$.
4. Every `quant_period` steps from $W$ on, the quantizer recomputes the levels $Q$ of $p$
   (per leaf; per row with `quant_per_channel`; per block of `quant_block_size` with both).
5. The params become `prox_map.apply(p, q, Q, n)`.

The update returned is the new params minus the old ones, so `optax.apply_updates` lands within
the rounding of that difference (an ulp or a few of the largest of the two) of the proximal
map's value; [`quantized_params`][jaxopt_port.prox.quantized_params] snaps the params onto the
levels exactly (hard-quantized weights, e.g. for export).

Everything is traced (step counters, the period, the annealing tables): the transformation
compiles once and works inside `optax.chain`, `optax.MultiSteps`, `optax.inject_hyperparams` and
`flax.nnx.Optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port.prox._latent import group_of_each_leaf, latent_step, lr_function
from jaxopt_port.prox.proxmaps import ProxMap, nearest_level
from jaxopt_port.prox.quantizers import Quantizer, true_divide

__all__ = ["QuantState", "quant_optimizer", "quantized_params"]


class QuantState(NamedTuple):
    """State of [`quant_optimizer`][jaxopt_port.prox.quant_optimizer].

    Attributes:
      count: steps taken (torchao's `num_steps`).
      latent: one entry per params leaf (in `tree_leaves` order): the latent weight $z$ of a
        quantized leaf (torchao's state `"latent"`), `None` for the others.
      quants: the levels $Q$ of each quantized leaf (torchao's state `"quants"`), `None` for the
        others.
      cumu_lr: the summed lr (torchao's group `"cumu_lr"`; $\\gamma = \\max(1, \\text{cumu\\_lr})$).
      inv_slope: the proximal map's inverse slope at the last step (PARQ's $\\rho$; 1 for maps
        without one).
      inner_state: the inner optimizer's state.
    """

    count: jax.Array
    latent: tuple
    quants: tuple
    cumu_lr: jax.Array
    inv_slope: jax.Array
    inner_state: optax.OptState


class _Leaf(NamedTuple):
    bits: int
    block_size: int | None
    quantizer: Quantizer


def _default_selection(path: tuple[str, ...], leaf: Any) -> bool:
    return len(getattr(leaf, "shape", ())) >= 2


def _groups(bits: int | Sequence[Mapping[str, Any]], params: Any) -> list[Mapping[str, Any]]:
    if isinstance(bits, int):
        return [{"params": _default_selection if params is None else params, "quant_bits": bits}]
    if params is not None:
        raise ValueError("params selects the leaves of an int bits; groups carry their own params")
    for i, group in enumerate(bits):
        if "quant_bits" not in group:
            raise ValueError(f"group {i} has no 'quant_bits': {dict(group)!r}")
    return list(bits)


def _plan(groups: list, quantizer: Quantizer, params: Any) -> list[_Leaf | None]:
    """Per params leaf: how it is quantized, or `None`."""
    leaves = jax.tree_util.tree_leaves(params)
    chosen = group_of_each_leaf(groups, params)
    plan = []
    for group, leaf in zip(chosen, leaves, strict=True):
        if group is None or group["quant_bits"] >= 16:
            plan.append(None)
            continue
        block = group.get("quant_block_size")
        if block is not None and (leaf.ndim > 2 or leaf.shape[-1] % block):
            raise ValueError(
                f"quant_block_size={block} needs a leaf of at most 2 dimensions whose last "
                f"dimension it divides, got shape {tuple(leaf.shape)}"
            )
        plan.append(_Leaf(group["quant_bits"], block, group.get("quantizer", quantizer)))
    return plan


def _layout(p: jax.Array, leaf: _Leaf, per_channel: bool) -> tuple[jax.Array, int | None]:
    """The 2-D (or flat) view torchao quantizes, and its `dim`."""
    if leaf.block_size is not None:
        p = p.reshape(-1, leaf.block_size)
    channel = per_channel and p.ndim > 1
    if channel and p.ndim > 2:
        p = p.reshape(p.shape[0], -1)
    return p, (-1 if channel else None)


def _quants_shape(p: jax.Array, leaf: _Leaf, per_channel: bool) -> tuple[int, ...]:
    view, dim = _layout(jnp.zeros(p.shape, p.dtype), leaf, per_channel)
    n = leaf.quantizer.get_quant_size(leaf.bits)
    return (n,) if dim is None else (view.shape[0], n)


def quant_optimizer(
    inner: optax.GradientTransformation,
    quantizer: Quantizer,
    prox_map: ProxMap,
    bits: int | Sequence[Mapping[str, Any]],
    *,
    params: Any = None,
    warmup_steps: int = 0,
    quant_period: int = 10,
    quant_per_channel: bool = False,
    quant_shrink: bool = False,
    lr: float | Callable[[jax.Array], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Quantization-aware training with a proximal map (PARQ, BinaryRelax, STE) around `inner`
    (module docstring for the exact step).

    Args:
      inner: the optimizer of the latent weights, e.g. `optim.adamw(lr=1e-3)`.
      quantizer: [`UnifQuantizer`][jaxopt_port.prox.UnifQuantizer],
        [`LSBQuantizer`][jaxopt_port.prox.LSBQuantizer], ...
      prox_map: [`ProxPARQ`][jaxopt_port.prox.ProxPARQ],
        [`ProxHardQuant`][jaxopt_port.prox.ProxHardQuant],
        [`ProxBinaryRelax`][jaxopt_port.prox.ProxBinaryRelax].
      bits: an int (the bits of every leaf `params` selects; `0` is ternary), or torch-style
        groups `[{"params": selector, "quant_bits": b, "quant_block_size": k, "quantizer":
        other}, ...]` (the last two optional) with the selectors of `transforms.param_groups`.
        Leaves in no group, or with `quant_bits >= 16`, are not quantized (torchao's rule).
      params: the selector for an int `bits`; default: leaves with two or more dimensions.
      warmup_steps: steps of the inner optimizer alone first.
      quant_period: recompute the levels every `quant_period` steps.
      quant_per_channel: one scale per row (dim 0, torch's layout) instead of per leaf.
      quant_shrink: quantize $z/\gamma$ with $\gamma = \max(1, \sum \text{lr})$.
      lr: the inner optimizer's lr (a number, or a schedule of the step), summed into $\gamma$
        (the state's `cumu_lr`, torchao's group key); only read with `quant_shrink`. `None`: the
        inner optimizer's own when it is a jaxopt_port optimizer with one lr (number or schedule)
        for all its param groups; otherwise required with `quant_shrink`, and `cumu_lr` stays 0
        without it (pass `lr` to export a state whose `cumu_lr` torchao would hold).

    Returns:
      An `optax.GradientTransformationExtraArgs` with a
      [`QuantState`][jaxopt_port.prox.QuantState]; `update` needs `params`.

    Raises:
      ValueError: `quant_period < 1`, `warmup_steps < 0`, a group without `quant_bits`, a
        block size that does not fit a leaf, or `quant_shrink` with no `lr` and an inner optimizer
        whose lr cannot be read.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxopt_port import optim, prox
      >>> tx = prox.quant_optimizer(optim.sgd(lr=0.1), prox.UnifQuantizer(),
      ...                           prox.ProxHardQuant(), bits=1)
      >>> params = {"w": jnp.array([[0.3, -0.2], [0.1, -0.4]])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.zeros((2, 2))}, state, params)
      >>> jnp.unique(optax.apply_updates(params, updates)["w"]).tolist()
      [-0.25, 0.25]
    """
    if quant_period < 1:
        raise ValueError(f"quant_period must be a positive int, got {quant_period}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    groups = _groups(bits, params)
    lr_fn = lr_function(lr, inner, quant_shrink, "quant_optimizer(quant_shrink=True)")

    def init(params: Any) -> QuantState:
        plan = _plan(groups, quantizer, params)
        leaves = jax.tree_util.tree_leaves(params)
        return QuantState(
            count=jnp.zeros((), jnp.int32),
            latent=tuple(
                None if s is None else jnp.zeros(p.shape, p.dtype)
                for p, s in zip(leaves, plan, strict=True)
            ),
            quants=tuple(
                None if s is None else jnp.zeros(_quants_shape(p, s, quant_per_channel), p.dtype)
                for p, s in zip(leaves, plan, strict=True)
            ),
            cumu_lr=jnp.zeros((), scalar_dtype()),
            inv_slope=jnp.ones((), scalar_dtype()),
            inner_state=inner.init(params),
        )

    def update(updates: Any, state: QuantState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError("quant_optimizer needs params in update (the weights it quantizes)")
        plan = _plan(groups, quantizer, params)
        n = state.count
        step = latent_step(
            inner,
            updates,
            state.inner_state,
            params,
            state.latent,
            [s is not None for s in plan],
            n,
            warmup_steps,
            state.cumu_lr,
            lr_fn,
            extra,
        )
        warm, leaves, treedef, u_leaves = step.warm, step.leaves, step.treedef, step.u_leaves
        stepped, inner_state, cumu_lr = step.stepped, step.inner_state, step.cumu_lr
        gamma = jnp.maximum(1.0, cumu_lr)
        refresh = (n - warmup_steps) % quant_period == 0
        out_updates, new_latent, new_quants = [], [], []
        for i, (p, z, s) in enumerate(zip(leaves, stepped, plan, strict=True)):
            if s is None:
                out_updates.append(u_leaves[i])
                new_latent.append(None)
                new_quants.append(None)
                continue
            x = true_divide(z, gamma.astype(z.dtype)) if quant_shrink else z
            view, dim = _layout(x, s, quant_per_channel)
            Q_old = state.quants[i]

            def fresh(view=view, dim=dim, s=s):
                return s.quantizer.quantize(view, s.bits, dim=dim)

            def kept(view=view, dim=dim, Q_old=Q_old):
                return nearest_level(view, Q_old, dim), Q_old

            q, Q = jax.lax.cond(refresh, fresh, kept)
            out = prox_map.apply(view, q, Q, n, dim).reshape(p.shape)
            out_updates.append(jnp.where(warm, u_leaves[i], (out - p).astype(p.dtype)))
            new_latent.append(jnp.where(warm, state.latent[i], z))
            new_quants.append(jnp.where(warm, Q_old, Q))
        rho = prox_map.inv_slope(n, scalar_dtype())
        return jax.tree_util.tree_unflatten(treedef, out_updates), QuantState(
            count=optax.safe_increment(n),
            latent=tuple(new_latent),
            quants=tuple(new_quants),
            cumu_lr=cumu_lr,
            inv_slope=state.inv_slope if rho is None else jnp.where(warm, state.inv_slope, rho),
            inner_state=inner_state,
        )

    return optax.GradientTransformationExtraArgs(init, update)


def quantized_params(params: Any, state: Any) -> Any:
    """The params snapped onto their levels: every quantized leaf replaced by its nearest level
    of the state's $Q$ (exactly the hard-quantized weight torchao holds after annealing; use it
    to export), the other leaves unchanged.

    Args:
      params: the params pytree.
      state: a [`QuantState`][jaxopt_port.prox.QuantState] or a state holding one (inside
        `optax.chain`, `optax.MultiSteps`, ...).

    Returns:
      The params with the same structure; before the first quantization step (during warmup,
      when no levels exist yet) the params unchanged.
    """
    found = [
        s
        for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, QuantState))
        if isinstance(s, QuantState)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one QuantState in the state, found {len(found)}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for p, Q in zip(leaves, found[0].quants, strict=True):
        if Q is None:
            out.append(p)
            continue
        view = p.reshape(Q.shape[0], -1) if Q.ndim == 2 else p
        snapped = nearest_level(view, Q, None if Q.ndim == 1 else -1).reshape(p.shape)
        out.append(jnp.where(jnp.all(Q == 0), p, snapped))  # no levels yet (warmup)
    return jax.tree_util.tree_unflatten(treedef, out)
