"""Pruning: `torch.nn.utils.prune` and `torch.ao.pruning` in JAX, pruning as an Optax
transformation, and models that really shrink.

- `prune`: torch's `torch.nn.utils.prune` functions on arrays (new mask from tensor + mask).
- `sparsifier`, `scheduler`: `WeightNormSparsifier` (and N:M), `CubicSL`, `LambdaSL`.
- `rules`: `Magnitude` and `Structured` rules at a total sparsity level.
- `transform`: `sparsify`, pruning as an Optax transformation around any optimizer.
- `model`: whole params pytrees / NNX models by path pattern; torch's pruned state dicts.
- `shrink`: removing pruned channels from NNX layers; BCOO and packed N:M export.
"""

from jaxopt_port.pruning.model import masks_from_torch, prune_tree, pruned_state_dict
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
from jaxopt_port.pruning.shrink import (
    channel_mask,
    kept_channels,
    pack_n_m,
    shrink_conv_bn,
    shrink_linear,
    size_ratio,
    to_bcoo,
    unpack_n_m,
)
from jaxopt_port.pruning.sparsifier import WeightNormSparsifier, n_m_sparsifier
from jaxopt_port.pruning.transform import (
    SparsifyState,
    apply_masks,
    is_prunable,
    masked,
    masks_of,
    sparsify,
)

__all__ = [
    "BaseScheduler",
    "CubicSL",
    "LambdaSL",
    "Magnitude",
    "SparsifyState",
    "Structured",
    "WeightNormSparsifier",
    "apply_masks",
    "channel_mask",
    "custom_from_mask",
    "global_unstructured",
    "identity",
    "is_prunable",
    "is_pruned",
    "kept_channels",
    "l1_unstructured",
    "ln_structured",
    "masked",
    "masks_from_torch",
    "masks_of",
    "n_m_sparsifier",
    "pack_n_m",
    "prune_tree",
    "pruned_state_dict",
    "random_structured",
    "random_unstructured",
    "remove",
    "shrink_conv_bn",
    "shrink_linear",
    "size_ratio",
    "sparsify",
    "to_bcoo",
    "unpack_n_m",
]
