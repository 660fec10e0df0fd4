"""jaxopt_port's cross-framework verification suite: torch vs JAX vs a NumPy float64 reference.

`jaxopt-parity` (`python -m parity`) runs the suite; `compare` checks your own torch
model against its Flax NNX twin while training, `check_forward` on one batch, module by
module. Importing `parity` imports NumPy only: torch, JAX and Flax
load when a comparison runs.
"""

from parity.compare import compare
from parity.run.forward import check_forward

__all__ = ["check_forward", "compare"]
