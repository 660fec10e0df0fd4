"""A plain NumPy float64 reference of every update rule jaxopt_port implements.

`make(name, params, **torch_kwargs)` builds one; see `parity.reference.optim` for the rules.
"""

from parity.reference.optim import NAMES, Reference, make

__all__ = ["NAMES", "Reference", "make"]
