"""The ranking kernels every mask rule shares: the `k` lowest of the alive entries, ties to the
lowest index.

torch picks entries with `torch.topk`, whose CPU kernel does not break ties in a reproducible
order. These kernels define one: entries are ordered by `(dead, score, index)` with a stable
sort, so among equal scores the entry with the lower flat index is chosen first — the order a
stable top-k (`jax.lax.top_k`) has. Each is compiled once per shape and dtype; `k` is traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["lowest", "lowest_along"]


def lowest(scores: jax.Array, alive: jax.Array, k: jax.Array) -> jax.Array:
    """True for the `k` alive entries of `scores` (any shape) with the lowest scores.

    Dead entries are never chosen; ties go to the lower flat index. `k` may be traced; with
    `k` above the alive count every alive entry is chosen.
    """
    flat_scores, flat_alive = scores.reshape(-1), alive.reshape(-1)
    index = jnp.arange(flat_scores.size, dtype=jnp.int32)
    order = jnp.lexsort((index, flat_scores, ~flat_alive))  # alive first, then by score, index
    rank = jnp.zeros_like(index).at[order].set(index)
    return (flat_alive & (rank < k)).reshape(scores.shape)


def lowest_along(scores: jax.Array, alive: jax.Array, k: jax.Array, axis: int) -> jax.Array:
    """`lowest` within every 1-D slice of `scores` along `axis` (`k` per slice)."""
    moved_scores = jnp.moveaxis(scores, axis, -1)
    moved_alive = jnp.moveaxis(alive, axis, -1)
    chosen = jax.vmap(lowest, in_axes=(0, 0, None))(
        moved_scores.reshape(-1, moved_scores.shape[-1]),
        moved_alive.reshape(-1, moved_alive.shape[-1]),
        k,
    )
    return jnp.moveaxis(chosen.reshape(moved_scores.shape), -1, axis)
