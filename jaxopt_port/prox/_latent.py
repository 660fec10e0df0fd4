"""The step both proximal wrappers share: the inner optimizer updates the latent weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port.transforms import param_group_labels


class LatentStep(NamedTuple):
    """One step of the inner optimizer from the latent weights."""

    warm: jax.Array  # still in warmup: the inner optimizer's update is the update
    leaves: list  # the params' leaves
    treedef: Any
    u_leaves: list  # the inner optimizer's update per leaf
    stepped: list  # latent (or param) + update per leaf
    inner_state: Any
    cumu_lr: jax.Array  # the summed lr, after this step


def latent_step(
    inner: optax.GradientTransformation,
    updates: Any,
    inner_state: Any,
    params: Any,
    latent: tuple,
    selected: list,
    count: jax.Array,
    warmup_steps: int,
    cumu_lr: jax.Array,
    lr_fn: Callable[[jax.Array], Any],
    extra: dict,
    heal: jax.Array | bool = False,
) -> LatentStep:
    """Before `warmup_steps` the inner optimizer steps from the params; at `warmup_steps` from
    the params too (the latent weights are first saved then); later the selected leaves step
    from their latent weights. The lr of every step from `warmup_steps` on is summed. Where
    `heal` (PAT's healing phase) the inner optimizer steps from the params and no lr is summed,
    as in warmup."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    warm = count < warmup_steps
    first = count == warmup_steps
    start = [
        jnp.where(warm | first | heal, p, z) if chosen else p
        for p, z, chosen in zip(leaves, latent, selected, strict=True)
    ]
    start = jax.tree_util.tree_unflatten(treedef, start)
    u, inner_state = inner.update(updates, inner_state, start, **extra)
    stepped = jax.tree_util.tree_leaves(optax.apply_updates(start, u))
    lr_now = jnp.asarray(lr_fn(count), scalar_dtype())
    return LatentStep(
        warm=warm,
        leaves=leaves,
        treedef=treedef,
        u_leaves=jax.tree_util.tree_leaves(u),
        stepped=stepped,
        inner_state=inner_state,
        cumu_lr=jnp.where(warm | heal, cumu_lr, cumu_lr + lr_now),
    )


def lr_function(
    lr: Any, inner: optax.GradientTransformation, needed: bool, what: str
) -> Callable[[jax.Array], Any]:
    """The lr summed into gamma, as a schedule of the step: `lr` (a number or a schedule), or
    with `lr=None` the inner optimizer's own when it is a jaxopt_port optimizer whose param groups
    share one lr (number or schedule); otherwise an error if `needed`, else 0."""
    if lr is None:
        lr = _inner_lr(inner)
    if lr is None:
        if needed:
            raise ValueError(
                f"{what}: pass lr=, the inner optimizer's learning rate (a number or the schedule it "
                "uses), which is summed into gamma; it is read from the inner optimizer only when "
                "that is a jaxopt_port optimizer with one lr for all its param groups"
            )
        lr = 0.0
    return lr if callable(lr) else (lambda count: lr)


def _inner_lr(inner: optax.GradientTransformation) -> Any:
    """The one lr of a jaxopt_port optimizer's torch param groups, or `None`."""
    lrs = [group.hyperparams.get("lr") for group in getattr(inner, "torch_groups", ())]
    if not lrs or any(lr is None for lr in lrs):
        return None
    first = lrs[0]
    if callable(first):
        return first if all(lr is first for lr in lrs) else None
    if any(callable(lr) for lr in lrs):
        return None
    values = {float(jnp.asarray(lr)) for lr in lrs}
    return first if len(values) == 1 else None


def group_of_each_leaf(groups: list[dict[str, Any]], params: Any) -> list[dict[str, Any] | None]:
    """Per params leaf (in `tree_leaves` order), the group it belongs to, or `None`.

    Groups from `from_torch` name their leaves by position (`"leaf_indices"`: leaf `i` is torch's
    parameter `i`); the user's select them by path pattern (`"params"`, as in
    `transforms.param_groups`)."""
    leaves = jax.tree_util.tree_leaves(params)
    if all("leaf_indices" in g for g in groups):
        return [
            next((g for g in groups if i in g["leaf_indices"]), None) for i in range(len(leaves))
        ]
    labels = param_group_labels(
        [{"params": g["params"]} for g in groups], params, unmatched="default", allow_empty=True
    )
    return [
        None if label == "default" else groups[int(label.removeprefix("group"))]
        for label in jax.tree_util.tree_leaves(labels)
    ]
