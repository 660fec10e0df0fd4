"""Meshes for data parallelism and putting host data on them.

A data-parallel mesh has a `"data"` axis (the name is configurable everywhere); the global batch is
split along its leading dimension over that axis, and parameters are replicated over every device of
the mesh. Other mesh axes (a `"model"` axis, say) are left alone: data-parallel arrays are
replicated over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_mesh",
    "data_mesh",
    "process_share",
    "replicated",
    "shard_batch",
]

DATA_AXIS = "data"
"""The default name of the data-parallel mesh axis."""


def data_mesh(devices: Sequence[jax.Device] | None = None, *, axis: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh holding `devices` (default: every device of every process) on `axis`.

    Devices are ordered by process, so each process's devices form one contiguous block of the axis
    and its share of the global batch is one contiguous block of rows
    ([`process_share`][jaxopt_port.parallel.process_share]). The axis type is `Auto`
    (`jax.sharding.Mesh`'s default), so `jax.jit` partitions the parameter update and
    `jax.shard_map` accepts unsharded inputs.

    >>> mesh = data_mesh()
    >>> mesh.shape["data"] == jax.device_count()
    True
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device, got an empty list")
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis,))


def check_mesh(mesh: Mesh, axis: str = DATA_AXIS) -> int:
    """The size of `mesh`'s data axis; `ValueError` if the mesh has no axis named `axis`."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. parallel.data_mesh()), got {type(mesh).__name__}"
        )
    if axis not in mesh.axis_names:
        raise ValueError(
            f"the mesh has axes {tuple(mesh.axis_names)} but no data axis {axis!r}: build one with "
            f"parallel.data_mesh(), or pass data_axis= naming the axis to split the batch over"
        )
    return int(mesh.shape[axis])


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of `mesh` (parameters)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """The sharding of a batch array: leading dimension split over `axis`, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(axis))


def check_batch_size(size: int, devices: int, micro_batches: int = 1) -> None:
    """`ValueError` unless a global batch of `size` rows splits evenly over devices ×
    micro-batches."""
    parts = devices * micro_batches
    if size % parts:
        per = f"{devices} devices" + (
            f" × {micro_batches} micro-batches" if micro_batches > 1 else ""
        )
        raise ValueError(
            f"the global batch has {size} rows, which does not split evenly over {per}: "
            f"pass a multiple of {parts} (e.g. {size - size % parts or parts} or {size + parts - size % parts})"
        )


def _leading_size(batch: Any) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError(
            "the batch is empty: pass a pytree of arrays with a leading batch dimension"
        )
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if None in sizes:
        raise ValueError("every batch leaf needs a leading batch dimension; got a scalar leaf")
    if len(sizes) > 1:
        raise ValueError(
            f"batch leaves disagree on the batch size: leading dimensions {sorted(sizes)}"
        )
    return sizes.pop()


def shard_batch(
    batch: Any, mesh: Mesh | None = None, *, axis: str = DATA_AXIS, micro_batches: int = 1
) -> Any:
    """Place host data on `mesh` as global arrays split along the leading dimension over `axis`.

    In a single process `batch` is the whole global batch. With several processes
    ([`initialize`][jaxopt_port.parallel.initialize]) each process passes its own share — rows
    `process_share(global_size)` — and the result is the global array made of all of them
    (`jax.make_array_from_process_local_data`). Leaves that already are global arrays with this
    sharding are passed through untouched.

    Raises `ValueError` if the global batch does not split evenly over the devices of the data
    axis (times `micro_batches`, when gradients are accumulated).
    """
    mesh = data_mesh(axis=axis) if mesh is None else mesh
    devices = check_mesh(mesh, axis)
    sharding = batch_sharding(mesh, axis)
    processes = jax.process_count()
    check_batch_size(_leading_size(batch) * processes, devices, micro_batches)

    def place(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if processes == 1:
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(
            sharding, x, (x.shape[0] * processes, *x.shape[1:])
        )

    return jax.tree_util.tree_map(place, batch)


def process_share(
    size: int, *, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """The rows of a global batch (or dataset) of `size` rows that this process loads.

    Process `i` of `P` gets the contiguous block `[i·size/P, (i+1)·size/P)`, which is the block its
    devices hold in [`data_mesh`][jaxopt_port.parallel.data_mesh]'s order. `size` must be divisible
    by `P`.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if size % count:
        raise ValueError(
            f"{size} rows do not split evenly over {count} processes: pass a multiple of {count}"
        )
    per = size // count
    return slice(index * per, (index + 1) * per)
