"""The step both proximal wrappers share: the inner optimizer updates the latent weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype


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


def lr_function(lr: Any) -> Callable[[jax.Array], Any]:
    """A schedule of the step from a number or a schedule."""
    return lr if callable(lr) else (lambda count: lr)
