"""ZeRO-1: optimizer state split over the data axis instead of replicated on every device.

Each state leaf is split along one of its dimensions that the data-axis size divides (the largest
such dimension), so a device holds 1/N of it. The update runs under `jax.jit` with these
shardings: XLA computes each device's slice of an elementwise update (Adam's moments, SGD's
momentum) where the slice lives and gathers the parameter change, and inserts whatever collectives a
non-elementwise optimizer (Muon's matrix products, Adafactor's factored moments, L-BFGS's dot
products, global-norm clipping) needs — so the numbers are those of the replicated update, for any
transformation. Leaves with no divisible dimension (the step count, a bias of odd length) stay
replicated; [`bytes_per_device`][jaxopt_port.parallel.bytes_per_device] measures what that costs.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["bytes_per_device", "state_shardings"]


def _leaf_spec(shape: tuple[int, ...], n: int, axis: str) -> PartitionSpec:
    divisible = [d for d, size in enumerate(shape) if size % n == 0 and size >= n]
    if n == 1 or not divisible:
        return PartitionSpec()
    dim = max(divisible, key=lambda d: (shape[d], -d))
    return PartitionSpec(*([None] * dim), axis)


def state_shardings(state: Any, mesh: Mesh, axis: str, zero: int) -> Any:
    """The sharding of every optimizer-state leaf: replicated (`zero=0`) or ZeRO-1 (`zero=1`)."""
    n = int(mesh.shape[axis])

    def sharding(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        spec = _leaf_spec(shape, n, axis) if zero else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map(sharding, state)


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes of `tree`'s arrays held on each device (every shard a device holds, summed).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from jaxopt_port import parallel
      >>> sizes = parallel.bytes_per_device({"w": jnp.zeros((4, 8), jnp.float32), "b": None})
      >>> sizes == {jax.devices()[0]: 4 * 8 * 4}  # an unsharded array: all on the first device
      True
    """
    totals: dict[jax.Device, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals
