"""The bottom layer: helpers every jaxopt_port package shares, importing no other jaxopt_port code.

- `arrays`: scalar precision, dtypes, torch tensors read as NumPy.
- `torch_objects`: torch optimizers, schedulers, modules and tensors
  recognised without importing torch.
- `torch_groups`: torch's param-group hyperparameters carried by a
  transformation ([`TorchTransformation`][jaxopt_port.optim.TorchTransformation]).
- `paths`: leaf paths of a pytree, named as selectors and messages show them.

Layers above, in import order: `optim` → `schedules` → `transforms` → `interop` →
`parallel`; nothing imports upward (tests/test_layering.py).
"""

from jaxopt_port._core.arrays import (
    absent,
    as_float,
    is_array,
    is_tensor_like,
    numel,
    params_dtype,
    scalar_dtype,
    to_numpy,
    to_tensor,
)
from jaxopt_port._core.paths import named_leaves, path_names
from jaxopt_port._core.torch_objects import describe_torch_object, torch_kind

__all__ = [
    "absent",
    "as_float",
    "describe_torch_object",
    "is_array",
    "is_tensor_like",
    "named_leaves",
    "numel",
    "params_dtype",
    "path_names",
    "scalar_dtype",
    "to_numpy",
    "to_tensor",
    "torch_kind",
]
