"""torch objects recognised without importing torch, and described for error messages."""

from __future__ import annotations

from typing import Any

__all__ = ["describe_torch_object", "torch_kind"]

_TORCH_BASES = {
    "optimizer": {("torch.optim.optimizer", "Optimizer")},
    "scheduler": {
        ("torch.optim.lr_scheduler", "LRScheduler"),
        ("torch.optim.lr_scheduler", "_LRScheduler"),
        ("torch.optim.lr_scheduler", "ReduceLROnPlateau"),
    },
    "module": {("torch.nn.modules.module", "Module")},
    "tensor": {("torch", "Tensor"), ("torch._tensor", "Tensor")},
}
"""torch base classes by what they are, as `(module, name)`; read from the MRO so that torch
is not imported to recognise them."""


def torch_kind(obj: Any) -> str | None:
    """`"optimizer"`, `"scheduler"`, `"module"` or `"tensor"` for a torch object of that
    kind (an instance, or with `obj` a class, the class itself), else `None`."""
    cls = obj if isinstance(obj, type) else type(obj)
    bases = {(c.__module__, c.__name__) for c in cls.__mro__}
    for kind, names in _TORCH_BASES.items():
        if bases & names:
            return kind
    return None


def describe_torch_object(obj: Any) -> str:
    """What `obj` is, in a few words, for an error message that says what was expected."""
    kind = torch_kind(obj)
    name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    if isinstance(obj, type):
        return f"the class {name} itself, not an instance of it"
    if kind in ("optimizer", "module"):
        return f"the torch {kind} {name}"
    if kind == "scheduler":
        return f"the torch lr scheduler {name}"
    if isinstance(obj, dict):
        return "a dict (a state_dict?)"
    return f"a {type(obj).__module__}.{name}"
