"""Proximal optimizer wrappers: quantization-aware training as an Optax transformation around
any optimizer (torchao's PARQ, `torchao.prototype.parq`).

- `quantizers`: the target levels of a tensor (`UnifQuantizer`, `MaxUnifQuantizer`,
  `TernaryUnifQuantizer`, `LSBQuantizer`).
- `proxmaps`: from latent to model weights (`ProxHardQuant`, `ProxPARQ`, `ProxBinaryRelax`).
- `parq`: `quant_optimizer`, the wrapper, and `quantized_params` for export.
"""

from jaxopt_port.prox.parq import QuantState, quant_optimizer, quantized_params
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

__all__ = [
    "LSBQuantizer",
    "MaxUnifQuantizer",
    "ProxBinaryRelax",
    "ProxHardQuant",
    "ProxMap",
    "ProxPARQ",
    "QuantState",
    "Quantizer",
    "TernaryUnifQuantizer",
    "UnifQuantizer",
    "nearest_level",
    "normalized_mirror_sigmoid",
    "quant_optimizer",
    "quantized_params",
]
