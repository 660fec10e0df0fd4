r"""Pruning as an Optax transformation: masks in the optimizer state, a sparsity schedule, and
torch's reparametrization of the gradient.

torch prunes a parameter by reparametrizing it, $w = w_\text{orig} \odot m$ (a
`torch.nn.utils.prune` hook or a `torch.ao.pruning` parametrization), so the optimizer
updates $w_\text{orig}$ with the gradient $\nabla_{w_\text{orig}} = \nabla_w \odot m$, and a
sparsifier recomputes $m$ from the masked weight every few steps. [`sparsify`][jaxopt_port.pruning.sparsify] does the same
around any Optax optimizer:

1. the gradients of the selected leaves are multiplied by their masks and passed to `inner`;
2. after every `every`-th step the masks are recomputed by `sparsifier.update_mask` from the
   weight after this step, at the level the schedule gives for the number of mask updates done
   so far (torch's scheduler epoch) — torch's ``optimizer.step(); sparsifier.step();
   scheduler.step()``;
3. `hard=False` (torch's reparametrization): the params are torch's `weight_orig`, updated
   unmasked (pruned entries keep moving with momentum or weight decay, as in torch); the model
   must use the effective weight [`masked`][jaxopt_port.pruning.masked]`(params, opt_state)`.
   `hard=True`: the params *are* the effective weight — the update also zeroes every pruned
   entry, so $\theta_{t+1} = (\theta_t + u_t) \odot m_{t+1}$ exactly and the model uses the
   params as they are. While masks only shrink (pruned entries score 0, so they stay pruned)
   both equal torch's effective `weight` bit for bit; if a falling level revives an entry,
   `hard=True` revives it at 0 where torch revives `weight_orig`.

Everything is traced: the transformation compiles once, and works inside `optax.chain`,
`optax.MultiSteps`, `optax.inject_hyperparams` and `flax.nnx.Optimizer`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port.pruning._rank import lowest
from jaxopt_port.pruning.rules import Magnitude
from jaxopt_port.transforms import param_group_labels

__all__ = ["SparsifyState", "apply_masks", "is_prunable", "masked", "masks_of", "sparsify"]


class SparsifyState(NamedTuple):
    """State of [`sparsify`][jaxopt_port.pruning.sparsify].

    Attributes:
      count: optimizer steps taken.
      epoch: mask updates done (torch's scheduler `last_epoch`).
      masks: the params' structure with the mask of every pruned leaf (in the leaf's layout and
        dtype) and `None` for the others.
      inner_state: the inner optimizer's state.
    """

    count: jax.Array
    epoch: jax.Array
    masks: Any
    inner_state: optax.OptState


def is_prunable(path: tuple[str, ...], leaf: Any) -> bool:
    """The default selection: leaves with at least two dimensions (weights and kernels, not
    biases or norm scales), as `torch.ao.pruning` prunes every `nn.Linear` weight."""
    return len(getattr(leaf, "shape", ())) >= 2


def _to_torch(x: jax.Array, layout: str) -> jax.Array:
    if layout == "torch" or x.ndim < 2:
        return x
    if x.ndim == 2:  # Flax Linear kernel (in, out) -> torch weight (out, in)
        return x.T
    return jnp.moveaxis(x, (-1, -2), (0, 1))  # Conv (*k, in, out) -> (out, in, *k)


def _from_torch(x: jax.Array, layout: str) -> jax.Array:
    if layout == "torch" or x.ndim < 2:
        return x
    if x.ndim == 2:
        return x.T
    return jnp.moveaxis(x, (0, 1), (-1, -2))


def _level(schedule: Any, sparsifier: Any, epoch: jax.Array) -> jax.Array:
    if schedule is None:
        schedule = getattr(sparsifier, "sparsity_level", 1.0)
    value = schedule(epoch) if callable(schedule) else schedule
    return jnp.asarray(value, scalar_dtype())


def sparsify(
    inner: optax.GradientTransformation,
    sparsifier: Any,
    *,
    schedule: Any = None,
    every: int | None = 1,
    init_masks: bool = False,
    params: Any = None,
    layout: Literal["torch", "flax"] = "torch",
    scope: Literal["layer", "global"] = "layer",
    hard: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Prune while training: masks in the state, gradients masked into `inner` (module
    docstring for the exact update).

    Args:
      inner: the optimizer, e.g. `optim.sgd(lr=0.1, momentum=0.9)`.
      sparsifier: the mask rule, anything with `update_mask(weight, mask, level)`:
        [`WeightNormSparsifier`][jaxopt_port.pruning.WeightNormSparsifier] (blocks; torch's
        `torch.ao.pruning` rule), [`n_m_sparsifier`][jaxopt_port.pruning.n_m_sparsifier]
        (2:4), [`Magnitude`][jaxopt_port.pruning.Magnitude] (unstructured),
        [`Structured`][jaxopt_port.pruning.Structured] (channels).
      schedule: the level per mask update: `None` (the sparsifier's `sparsity_level`), a
        number, a [`CubicSL`][jaxopt_port.pruning.CubicSL]/
        [`LambdaSL`][jaxopt_port.pruning.LambdaSL], or any `epoch -> level` (an optax
        schedule of the epoch, e.g. `optax.polynomial_schedule(0.0, 0.9, 3, 100)`).
      every: recompute the masks after every `every` optimizer steps; `None`: never
        (one-shot with `init_masks=True`).
      init_masks: compute the masks in `init` (epoch 0's level; the epoch then starts at 1),
        as calling `sparsifier.step(); scheduler.step()` before training. Default: all ones,
        as after torch's `prepare`.
      params: which leaves are pruned: a path pattern, list of patterns or predicate ``(path,
        leaf) -> bool` as in `transforms.param_groups`; `None`` (default):
        [`is_prunable`][jaxopt_port.pruning.is_prunable], every leaf with two or more dimensions
        (a default that is not callable, so `optax.inject_hyperparams` does not take it for a
        schedule).
      layout: `"torch"` (default: leaves are in torch's layout) or `"flax"` (2-D leaves are
        Flax `(in, out)` kernels and 3-D+ leaves `(*k, in, out)` conv kernels; the rule sees
        them in torch's layout, so blocks and channels mean what they mean in torch).
      scope: `"layer"` (each leaf to the level) or `"global"` (one magnitude ranking over all
        selected leaves, torch's `global_unstructured`; needs a
        [`Magnitude`][jaxopt_port.pruning.Magnitude] rule).
      hard: also mask the updates so the params stay the effective (masked) weight.

    Returns:
      An `optax.GradientTransformationExtraArgs` with a
      [`SparsifyState`][jaxopt_port.pruning.SparsifyState]; `update` needs `params`.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxopt_port import optim, pruning
      >>> tx = pruning.sparsify(optim.sgd(lr=0.1), pruning.Magnitude(0.5))
      >>> params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
      >>> pruning.masks_of(state)["w"]
      Array([[0., 0., 0., 0.],
             [1., 1., 1., 1.]], dtype=float32)
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if scope == "global" and not isinstance(sparsifier, Magnitude):
        raise ValueError("scope='global' ranks magnitudes across leaves: use pruning.Magnitude")
    if layout not in ("torch", "flax"):
        raise ValueError(f"layout must be 'torch' or 'flax', got {layout!r}")
    if every is not None and (not isinstance(every, int) or every < 1):
        raise ValueError(f"every must be a positive int or None, got {every!r}")
    inner = optax.with_extra_args_support(inner)
    selector = is_prunable if params is None else params

    def selected(tree: Any) -> list[bool]:
        labels = param_group_labels([{"params": selector}], tree)
        return [label == "group0" for label in jax.tree_util.tree_leaves(labels)]

    def new_masks(leaves: list, masks: tuple, level: jax.Array) -> tuple:
        if scope == "global":
            return _global_masks(sparsifier, leaves, masks, level, layout)
        return tuple(
            None
            if m is None
            else _from_torch(
                sparsifier.update_mask(_to_torch(w, layout), _to_torch(m, layout), level),
                layout,
            ).astype(m.dtype)
            for w, m in zip(leaves, masks, strict=True)
        )

    def init(tree: Any) -> SparsifyState:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        masks = tuple(
            jnp.ones(jnp.shape(w), w.dtype) if pick else None
            for w, pick in zip(leaves, selected(tree), strict=True)
        )
        epoch = jnp.zeros([], jnp.int32)
        if init_masks:
            masks = new_masks(leaves, masks, _level(schedule, sparsifier, epoch))
            epoch = epoch + 1
        return SparsifyState(
            jnp.zeros([], jnp.int32), epoch, treedef.unflatten(masks), inner.init(tree)
        )

    def update(
        updates: Any, state: SparsifyState, params: Any = None, **extra: Any
    ) -> tuple[Any, SparsifyState]:
        if params is None:
            raise ValueError("sparsify needs params: call update(grads, state, params)")
        grads, treedef = jax.tree_util.tree_flatten(updates)
        old = tuple(treedef.flatten_up_to(state.masks))
        grads = [g if m is None else g * m for g, m in zip(grads, old, strict=True)]
        inner_updates, inner_state = inner.update(
            treedef.unflatten(grads), state.inner_state, params, **extra
        )
        flat_updates = treedef.flatten_up_to(inner_updates)
        flat_params = treedef.flatten_up_to(params)
        count = state.count + 1
        masks, epoch = old, state.epoch
        if every is not None:
            due = count % every == 0

            def recompute() -> tuple:
                stepped = [p + u for p, u in zip(flat_params, flat_updates, strict=True)]
                return new_masks(stepped, old, _level(schedule, sparsifier, epoch))

            masks = jax.lax.cond(due, recompute, lambda: old)
            epoch = epoch + due.astype(epoch.dtype)
        if hard:
            flat_updates = [
                u if m is None else jnp.where(m == 1, u, -p)
                for u, m, p in zip(flat_updates, masks, flat_params, strict=True)
            ]
        new_state = SparsifyState(count, epoch, treedef.unflatten(masks), inner_state)
        return treedef.unflatten(flat_updates), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _global_masks(
    rule: Magnitude, leaves: list, masks: tuple, level: jax.Array, layout: str
) -> tuple:
    """One magnitude ranking over the selected leaves, concatenated in torch's layout (torch's
    `parameters_to_vector` order)."""
    picked = [
        (i, _to_torch(w, layout), _to_torch(m, layout))
        for i, (w, m) in enumerate(zip(leaves, masks, strict=True))
        if m is not None
    ]
    if not picked:
        return masks
    scores = jnp.concatenate([rule.scores(w, m.astype(w.dtype)).reshape(-1) for _, w, m in picked])
    n = scores.size
    k = jnp.clip(jnp.round(level * n), 0, n).astype(jnp.int32)
    chosen = lowest(scores, jnp.ones(n, bool), k)
    out, start = list(masks), 0
    for i, w, m in picked:
        part = chosen[start : start + w.size].reshape(w.shape)
        out[i] = _from_torch(jnp.where(part, 0, 1).astype(m.dtype), layout)
        start += w.size
    return tuple(out)


def _find(state: Any) -> SparsifyState:
    found = [
        s
        for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, SparsifyState))
        if isinstance(s, SparsifyState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected one SparsifyState in the optimizer state (from pruning.sparsify), "
            f"found {len(found)}"
        )
    return found[0]


def masks_of(opt_state: Any) -> Any:
    """The masks held by the [`sparsify`][jaxopt_port.pruning.sparsify] inside `opt_state`
    (also inside `optax.chain`, `MultiSteps` and `inject_hyperparams` states).

    Args:
      opt_state: the optimizer state.

    Returns:
      The params' structure with a mask per pruned leaf and `None` for the others.

    Raises:
      ValueError: `opt_state` holds no or several `SparsifyState`.
    """
    return _find(opt_state).masks


def masked(params: Any, opt_state: Any) -> Any:
    r"""The effective weights $\theta \odot m$ (torch's `weight`) for `hard=False`:
    [`apply_masks`][jaxopt_port.pruning.apply_masks] with the masks in `opt_state`.

    Args:
      params: the params (torch's `weight_orig` for the pruned leaves).
      opt_state: the optimizer state holding the masks.

    Returns:
      The params with the masks applied.
    """
    return apply_masks(params, _find(opt_state).masks)


def apply_masks(tree: Any, masks: Any) -> Any:
    r"""The effective weights: every masked leaf times its mask, $\theta \odot m$ (torch's
    `weight` from `weight_orig` and `weight_mask`; written back, torch's `remove`).

    Args:
      tree: the params (torch's `_orig` values for the pruned leaves).
      masks: masks with `tree`'s structure, `None` for unpruned leaves.

    Returns:
      `tree` with the masks applied, each leaf in its dtype.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    flat_masks = treedef.flatten_up_to(masks)
    return treedef.unflatten(
        [
            p if m is None else jnp.asarray(p) * jnp.asarray(m).astype(jnp.asarray(p).dtype)
            for p, m in zip(leaves, flat_masks, strict=True)
        ]
    )
