"""Data parallelism on one or many devices and hosts, with PyTorch DDP's numbers.

`train_step(loss_fn, tx)` is one optimizer step on a global batch split over the `"data"` axis
of a device mesh — equal to a single-device step on the whole batch — computed with
`jax.shard_map` (default), `jax.jit` partitioning or `jax.pmap`; with ZeRO-1 optimizer-state
sharding (`zero=1`), gradient accumulation (`micro_batches`) and bf16 mixed precision
(`compute_dtype`). `batch_mean` and `sync_batch_norm` give batch statistics over the global
batch (torch's `SyncBatchNorm`). `initialize` starts a multi-host job on `jax.distributed`.
"""

from jaxopt_port.parallel._batch_stats import batch_mean, data_axis, sync_batch_norm
from jaxopt_port.parallel._distributed import Cluster, detect_environment, initialize
from jaxopt_port.parallel._mesh import (
    DATA_AXIS,
    batch_sharding,
    check_mesh,
    data_mesh,
    process_share,
    replicated,
    shard_batch,
)
from jaxopt_port.parallel._step import BACKENDS, TrainStep, train_step
from jaxopt_port.parallel._zero import bytes_per_device, state_shardings

__all__ = [
    "BACKENDS",
    "DATA_AXIS",
    "Cluster",
    "TrainStep",
    "batch_mean",
    "batch_sharding",
    "bytes_per_device",
    "check_mesh",
    "data_axis",
    "data_mesh",
    "detect_environment",
    "initialize",
    "process_share",
    "replicated",
    "shard_batch",
    "state_shardings",
    "sync_batch_norm",
    "train_step",
]
