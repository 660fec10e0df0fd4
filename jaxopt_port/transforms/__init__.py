"""Gradient transformations around the optimizers: torch's gradient clipping."""

from jaxopt_port.transforms.clipping import (
    ClipGradNormState,
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value,
    clip_grad_value_,
    total_norm,
)
from jaxopt_port.transforms.param_groups import (
    Selector,
    describe_param_groups,
    is_bias_or_norm,
    no_weight_decay,
    param_group_labels,
    param_groups,
    path_names,
)

__all__ = [
    "ClipGradNormState",
    "Selector",
    "clip_grad_norm",
    "clip_grad_norm_",
    "clip_grad_value",
    "clip_grad_value_",
    "describe_param_groups",
    "is_bias_or_norm",
    "no_weight_decay",
    "param_group_labels",
    "param_groups",
    "path_names",
    "total_norm",
]
