"""What a caller handed the interop functions: torch objects recognized without importing torch,
clear errors for the wrong one, and the key prefixes of wrapped torch models."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from jaxopt_port._core import torch_kind

__all__ = [
    "WRAPPER_PREFIXES",
    "check_module_state_dict",
    "check_optimizer_state_dict",
    "strip_wrapper_prefixes",
]


def check_module_state_dict(state_dict: Any, where: str) -> None:
    """Raise a clear TypeError unless `state_dict` is a module's state dict (a mapping of keys
    to arrays): for a torch module, optimizer or scheduler, an optimizer's `state_dict()`, a
    checkpoint holding a state dict under some key, or anything else (torch's message first)."""
    kind = torch_kind(state_dict)
    given = type(state_dict).__name__
    if kind == "module":
        raise TypeError(
            f"{where} expects a state_dict, got the torch nn.Module {given}: pass its .state_dict()"
        )
    if kind is not None:
        raise TypeError(
            f"{where} expects a torch module's state_dict (model weights), got the torch {kind} "
            f"{given}; its state goes to interop.nnx_optimizer_from_torch or "
            "interop.optimizer_state_from_torch"
        )
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
    if "state" in state_dict and "param_groups" in state_dict:
        raise TypeError(
            f"{where} expects a torch module's state_dict (model weights), got a torch optimizer's "
            "state_dict() (keys 'state' and 'param_groups'); it goes to "
            "interop.nnx_optimizer_from_torch or interop.optimizer_state_from_torch"
        )
    nested = [k for k, v in state_dict.items() if isinstance(v, Mapping)]
    if nested:
        raise TypeError(
            f"{where} expects a mapping of torch keys to tensors; the values under {nested} are "
            f"dicts (a checkpoint?): pass the model's state_dict, e.g. checkpoint[{nested[0]!r}]"
        )


def check_optimizer_state_dict(value: Any, where: str, *, live_ok: bool = False) -> None:
    """Raise a clear TypeError unless `value` is a torch optimizer's `state_dict()` (a mapping
    with `"state"` and `"param_groups"`) or, with `live_ok`, a torch optimizer: for a live
    optimizer otherwise (pass its `state_dict()`), a torch module or scheduler, a model's state
    dict, or anything else."""
    kind = torch_kind(value)
    given = type(value).__name__
    expected = (
        "a torch optimizer or its state_dict()" if live_ok else "a torch optimizer's state_dict()"
    )
    if kind == "optimizer" and not live_ok:
        raise TypeError(
            f"{where} expects {expected}, got the torch optimizer {given}: pass its .state_dict()"
        )
    if kind not in (None, "optimizer"):
        raise TypeError(f"{where} expects {expected}, got the torch {kind} {given}")
    if kind is None and not (
        isinstance(value, Mapping) and {"state", "param_groups"} <= set(value)
    ):
        keys = (
            f" with keys {list(value)[:5]} (a model's state_dict?)"
            if isinstance(value, Mapping)
            else ""
        )
        raise TypeError(
            f"{where} expects {expected} (a dict with 'state' and 'param_groups'), got {given}{keys}"
        )


WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes torch wrappers add to a module's `state_dict()` and `named_parameters()`:
`DistributedDataParallel`/`DataParallel` (`module.`) and `torch.compile`
(`_orig_mod.`)."""


def strip_wrapper_prefixes(keys: Sequence[str], expected: Collection[str]) -> list[str]:
    """`keys` without the wrapper prefixes of `WRAPPER_PREFIXES` that hide them.

    The prefixes every key carries are peeled one at a time (`_orig_mod.`, then `module.`,
    ...); of the key lists on the way, the first one with the most `expected` keys wins. So a
    model whose attribute really is `module` keeps its keys, and the same model wrapped in DDP
    loses one `module.`.

    Examples:
      >>> strip_wrapper_prefixes(["_orig_mod.module.fc.weight"], {"fc.weight"})
      ['fc.weight']
    """
    expected = set(expected)
    candidates = [list(keys)]
    while candidates[-1]:
        names = candidates[-1]
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in names)), None)
        if prefix is None:
            break
        candidates.append([k[len(prefix) :] for k in names])
    return max(candidates, key=lambda names: sum(k in expected for k in names))
