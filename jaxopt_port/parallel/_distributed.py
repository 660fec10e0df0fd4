"""Multi-host start-up on JAX's own distributed runtime (`jax.distributed`).

[`initialize`][jaxopt_port.parallel.initialize] finds out how the job was launched — SLURM (`srun`),
Open MPI (`mpirun`), a Cloud TPU pod slice, or an explicit coordinator address — and calls
`jax.distributed.initialize` so every process sees every device of the job. Afterwards
`jax.devices()` lists all of them, [`data_mesh`][jaxopt_port.parallel.data_mesh] spans all hosts,
and each process loads only its share of each global batch
([`process_share`][jaxopt_port.parallel.process_share]), which
[`shard_batch`][jaxopt_port.parallel.shard_batch] assembles into global arrays. On one host with no
cluster environment it does nothing, so the same script runs on a laptop and on a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax

__all__ = ["Cluster", "detect_environment", "initialize"]


class Cluster(NamedTuple):
    """Where this process stands in the job, as [`initialize`][jaxopt_port.parallel.initialize] left
    it."""

    #: How the job was started: "slurm", "ompi", "tpu", "explicit", "single", or "existing" (you
    #: called `jax.distributed.initialize` yourself before).
    environment: str
    process_index: int
    process_count: int
    #: The devices attached to this process / of the whole job.
    local_devices: list
    devices: list


def _int(env: Mapping[str, str], name: str) -> int | None:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def detect_environment(env: Mapping[str, str] | None = None) -> str | None:
    """The multi-process launcher this process runs under, from its environment variables.

    `"slurm"` (`SLURM_JOB_ID`, `SLURM_STEP_NODELIST`, `SLURM_NTASKS` > 1, `SLURM_PROCID`,
    `SLURM_LOCALID`), `"ompi"` (`OMPI_MCA_orte_hnp_uri` set by `mpirun`), `"tpu"`
    (`TPU_WORKER_HOSTNAMES` naming more than one host), or `None` for a single process. These
    are the variables `jax.distributed` itself reads to find the coordinator.
    """
    env = os.environ if env is None else env
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and (_int(env, "SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_int(env, "OMPI_COMM_WORLD_SIZE") or 2) > 1:
        return "ompi"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def _cluster(environment: str) -> Cluster:
    return Cluster(
        environment,
        jax.process_index(),
        jax.process_count(),
        list(jax.local_devices()),
        list(jax.devices()),
    )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> Cluster:
    """Start this process's part of a multi-host job with `jax.distributed.initialize`.

    Call it first thing, before any other JAX operation. With no arguments it detects SLURM, Open
    MPI or a Cloud TPU pod ([`detect_environment`][jaxopt_port.parallel.detect_environment]) and
    lets JAX read the coordinator, process count and index from it; on a single host with none of
    these it does nothing and returns a one-process [`Cluster`][jaxopt_port.parallel.Cluster].
    Anywhere else pass all three of `coordinator_address` (`"host:port"` of process 0),
    `num_processes` and `process_id`.

    Example (two processes on one machine, as the tests run it):

    ```python
    cluster = parallel.initialize("127.0.0.1:12355", num_processes=2, process_id=rank)
    mesh = parallel.data_mesh()            # every device of every process
    rows = parallel.process_share(global_batch_size)
    ```

    If `jax.distributed` is already running (you called `jax.distributed.initialize` yourself,
    e.g. on a Cloud TPU slice whose hosts are found through the metadata server rather than
    `TPU_WORKER_HOSTNAMES`), `initialize()` with no arguments just describes that job.

    Raises:
      ValueError: an explicit start missing one of its three arguments, or out-of-range values.
      RuntimeError: an explicit start when `jax.distributed` is already initialized.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError(
                "an explicit multi-process start needs coordinator_address ('host:port' of process "
                f"0), num_processes and process_id together; got coordinator_address="
                f"{coordinator_address!r}, num_processes={num_processes!r}, process_id={process_id!r}"
            )
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes must be a positive int, got {num_processes!r}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be an int in [0, {num_processes}), got {process_id!r}"
            )
        environment = "explicit"
    else:
        if jax.distributed.is_initialized():
            return _cluster("existing")
        environment = detect_environment()
        if environment is None:
            return _cluster("single")
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialized in this process")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return _cluster(environment)
