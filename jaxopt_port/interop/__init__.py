"""Carrying training state between PyTorch and JAX: model weights, optimizer state, checkpoints."""

from jaxopt_port.interop.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from jaxopt_port.interop.optimizer_state import (
    load_into_torch,
    optimizer_state_from_torch,
    optimizer_state_to_torch,
)

__all__ = [
    "latest_step",
    "load_into_torch",
    "optimizer_state_from_torch",
    "optimizer_state_to_torch",
    "restore_checkpoint",
    "save_checkpoint",
]
