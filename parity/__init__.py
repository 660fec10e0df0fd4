"""jaxopt_port's cross-framework verification suite: torch vs JAX vs a NumPy float64 reference.

``jaxopt-parity`` (``python -m parity``) runs the suite; :func:`compare` checks your own torch
model against its Flax NNX twin. Importing ``parity`` imports NumPy only: torch, JAX and Flax
load when a comparison runs.
"""

from parity.comparison import compare

__all__ = ["compare"]
