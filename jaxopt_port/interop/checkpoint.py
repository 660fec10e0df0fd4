"""Checkpoints of a training run (params, optimizer state, schedule position) with orbax.

The schedule position is the optimizer state's own step counters (`step` / `count` fields),
so restoring the state restores where every schedule is. A checkpoint is one orbax
`StandardCheckpointer` directory per step under `directory`; restoring needs a template
(`like`) with the same structure, e.g. `(params, tx.init(params))`, and gives arrays
bitwise equal to the saved ones, in the saved dtypes.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

__all__ = ["latest_step", "restore_checkpoint", "save_checkpoint"]


def _path(directory: str | os.PathLike, step: int) -> str:
    return os.path.join(os.path.abspath(os.fspath(directory)), f"step_{int(step):08d}")


def save_checkpoint(directory: str | os.PathLike, step: int, params: Any, opt_state: Any) -> str:
    """Write `params` and `opt_state` as the checkpoint of `step`; returns its path.

    Raises `FileExistsError` if that step was already saved (nothing is overwritten).
    """
    import orbax.checkpoint as ocp

    path = _path(directory, step)
    if os.path.exists(path):
        raise FileExistsError(f"a checkpoint for step {step} already exists at {path}")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, {"params": params, "opt_state": opt_state})
    checkpointer.wait_until_finished()
    checkpointer.close()
    return path


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest step saved under `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    steps = [int(name[5:]) for name in os.listdir(directory) if name.startswith("step_")]
    return max(steps) if steps else None


def restore_checkpoint(
    directory: str | os.PathLike, like: tuple[Any, Any], step: int | None = None
) -> tuple[Any, Any]:
    """`(params, opt_state)` saved at `step` (the latest by default).

    Args:
      directory: where [`save_checkpoint`][jaxopt_port.interop.save_checkpoint] wrote.
      like: `(params, opt_state)` of the same structure, shapes and dtypes (arrays or
        `jax.ShapeDtypeStruct`), e.g. `(params, tx.init(params))`.
      step: which checkpoint; the newest if None.
    """
    import orbax.checkpoint as ocp

    if step is None:
        step = latest_step(directory)
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {directory}")
    params_like, state_like = like
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x,
        {"params": params_like, "opt_state": state_like},
    )
    checkpointer = ocp.StandardCheckpointer()
    restored = checkpointer.restore(_path(directory, step), abstract)
    checkpointer.close()
    return restored["params"], restored["opt_state"]
