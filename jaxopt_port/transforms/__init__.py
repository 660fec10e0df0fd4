"""Gradient transformations around the optimizers: torch's gradient clipping."""

from jaxopt_port.transforms.clipping import (
    ClipGradNormState,
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value,
    clip_grad_value_,
    total_norm,
)

__all__ = [
    "ClipGradNormState",
    "clip_grad_norm",
    "clip_grad_norm_",
    "clip_grad_value",
    "clip_grad_value_",
    "total_norm",
]
