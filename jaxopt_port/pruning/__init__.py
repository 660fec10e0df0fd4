"""Pruning: ``torch.nn.utils.prune`` and ``torch.ao.pruning`` in JAX, pruning as an Optax
transformation, and models that really shrink.
"""

from jaxopt_port.pruning.model import apply_masks, masks_from_torch, prune_tree, pruned_state_dict
from jaxopt_port.pruning.prune import (
    custom_from_mask,
    global_unstructured,
    identity,
    is_pruned,
    l1_unstructured,
    ln_structured,
    random_structured,
    random_unstructured,
    remove,
)
from jaxopt_port.pruning.rules import Magnitude, Structured
from jaxopt_port.pruning.scheduler import BaseScheduler, CubicSL, LambdaSL
from jaxopt_port.pruning.sparsifier import WeightNormSparsifier, n_m_sparsifier
from jaxopt_port.pruning.transform import SparsifyState, is_prunable, masked, masks_of, sparsify

__all__ = [
    "BaseScheduler",
    "CubicSL",
    "LambdaSL",
    "Magnitude",
    "SparsifyState",
    "Structured",
    "WeightNormSparsifier",
    "apply_masks",
    "custom_from_mask",
    "global_unstructured",
    "identity",
    "is_prunable",
    "is_pruned",
    "l1_unstructured",
    "ln_structured",
    "masked",
    "masks_from_torch",
    "masks_of",
    "n_m_sparsifier",
    "prune_tree",
    "pruned_state_dict",
    "random_structured",
    "random_unstructured",
    "remove",
    "sparsify",
]
