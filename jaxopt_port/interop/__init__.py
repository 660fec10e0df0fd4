"""Carrying training state between PyTorch and JAX: model weights, optimizer state, the
scheduler's position, checkpoints.

Each conversion is named by what it moves and where: `weights_from_torch` / `weights_to_torch`,
`optimizer_state_from_torch` / `optimizer_state_to_torch` (and `optimizer_state_into_torch`
for a live torch optimizer), `nnx_optimizer_from_torch` / `nnx_optimizer_to_torch`.
"""

from jaxopt_port._core import to_numpy, to_tensor
from jaxopt_port.interop._deprecated import load_into_torch, load_torch_state_dict, torch_state_dict
from jaxopt_port.interop.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from jaxopt_port.interop.nnx_optimizer import nnx_optimizer_from_torch, nnx_optimizer_to_torch
from jaxopt_port.interop.optimizer_state import (
    optimizer_state_from_torch,
    optimizer_state_into_torch,
    optimizer_state_to_torch,
)
from jaxopt_port.interop.scheduler_state import position_scheduler, scheduler_count
from jaxopt_port.interop.weights import (
    flax_batchnorm_momentum,
    weights_from_torch,
    weights_to_numpy,
    weights_to_torch,
)

__all__ = [
    "flax_batchnorm_momentum",
    "latest_step",
    "load_into_torch",
    "load_torch_state_dict",
    "nnx_optimizer_from_torch",
    "nnx_optimizer_to_torch",
    "optimizer_state_from_torch",
    "optimizer_state_into_torch",
    "optimizer_state_to_torch",
    "position_scheduler",
    "restore_checkpoint",
    "save_checkpoint",
    "scheduler_count",
    "to_numpy",
    "to_tensor",
    "torch_state_dict",
    "weights_from_torch",
    "weights_to_numpy",
    "weights_to_torch",
]
