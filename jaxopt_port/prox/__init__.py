"""Proximal optimizer wrappers: quantization-aware training and pruning as Optax transformations
around any optimizer (torchao's PARQ, `torchao.prototype.parq`, and PAT, `torchao.prototype.pat`).

- `quantizers`: the target levels of a tensor (`UnifQuantizer`, `MaxUnifQuantizer`,
  `TernaryUnifQuantizer`, `LSBQuantizer`).
- `proxmaps`: from latent to model weights (`ProxHardQuant`, `ProxPARQ`, `ProxBinaryRelax`).
- `parq`: `quant_optimizer`, the wrapper, and `quantized_params` for export.
- `pat`: `prune_optimizer` (torchao's PAT `PruneOptimizer`) with `ProxLasso`,
  `ProxGroupLasso`, `MinSparsityConstraint` (and its cubic schedule) and `NMSparseConstraint`
  over element, layer, row, column, k-element and conv-filter groups, and healing.
- `from_torch`: a live torchao `QuantOptimizer` / `PruneOptimizer` as the equivalent wrapper
  (`optim.from_torch` reads them through it).
- `torch_state`: PARQ's and PAT's states to and from torchao's `QuantOptimizer.state_dict()` /
  `PruneOptimizer.state_dict()`.
"""

from jaxopt_port._core.hooks import add_wrapper_reader
from jaxopt_port.prox.from_torch import from_torch, read_wrapper
from jaxopt_port.prox.parq import QuantState, quant_optimizer, quantized_params
from jaxopt_port.prox.pat import (
    GROUPERS,
    GlobalMinSparsityConstraint,
    MinRankConstraint,
    MinSparsityConstraint,
    NMSparseConstraint,
    ProxGroupLasso,
    ProxLasso,
    ProxNuclearNorm,
    PruneState,
    cubic_sparsity,
    grouped_view,
    prune_optimizer,
)
from jaxopt_port.prox.proxmaps import (
    ProxBinaryRelax,
    ProxHardQuant,
    ProxMap,
    ProxPARQ,
    nearest_level,
    normalized_mirror_sigmoid,
)
from jaxopt_port.prox.quantizers import (
    LSBQuantizer,
    MaxUnifQuantizer,
    Quantizer,
    TernaryUnifQuantizer,
    UnifQuantizer,
)
from jaxopt_port.prox.torch_state import (
    prune_state_from_torch,
    prune_state_to_torch,
    quant_state_from_torch,
    quant_state_to_torch,
)

__all__ = [
    "GROUPERS",
    "GlobalMinSparsityConstraint",
    "LSBQuantizer",
    "MaxUnifQuantizer",
    "MinRankConstraint",
    "MinSparsityConstraint",
    "NMSparseConstraint",
    "ProxBinaryRelax",
    "ProxGroupLasso",
    "ProxHardQuant",
    "ProxLasso",
    "ProxMap",
    "ProxNuclearNorm",
    "ProxPARQ",
    "PruneState",
    "QuantState",
    "Quantizer",
    "TernaryUnifQuantizer",
    "UnifQuantizer",
    "cubic_sparsity",
    "from_torch",
    "grouped_view",
    "nearest_level",
    "normalized_mirror_sigmoid",
    "prune_optimizer",
    "prune_state_from_torch",
    "prune_state_to_torch",
    "quant_optimizer",
    "quant_state_from_torch",
    "quant_state_to_torch",
    "quantized_params",
]

add_wrapper_reader(read_wrapper)  # optim.from_torch(QuantOptimizer / PruneOptimizer)
