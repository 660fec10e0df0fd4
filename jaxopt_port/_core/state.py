"""A torch-shaped view of any jaxopt_port optimizer state: one dict per parameter.

Every state NamedTuple names its fields as torch names its state keys, so the view is mechanical:
a field holding one entry per parameter gives that entry to each parameter; a scalar field
(`step`, `eta`, `mu_product`, ...) is shared by the parameters its NamedTuple serves; fields
named `count` are bookkeeping and are left out, and so are JAX PRNG keys (torch draws from its
global generator). A state that is not laid out per parameter
(L-BFGS's one global state) gives its torch view itself through an `as_torch_state()` method;
torch files it under the first parameter, and so does this view. A quantized entry (the low-bit
optimizers' `QuantizedArray`: a NamedTuple of `codes` and `scale`) is one entry, as torchao's
`OptimState8bit` / `OptimState4bit` / `OptimStateFp8` tensor is one state value.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from jaxopt_port._core.arrays import absent, is_array

__all__ = ["absent", "is_array", "is_quantized", "per_param_entries", "per_param_state"]


def is_quantized(entry: Any) -> bool:
    """True for one quantized state tensor: a NamedTuple of exactly `codes` and `scale` (the
    low-bit optimizers' `QuantizedArray`, recognised here without importing `optim`)."""
    return isinstance(entry, tuple) and getattr(entry, "_fields", None) == ("codes", "scale")


def per_param_entries(value: Any, treedef: Any, shapes: list[tuple[int, ...]]) -> list[Any] | None:
    """`value` as one entry per parameter, or None if it is not laid out like the parameters."""
    try:
        entries = treedef.flatten_up_to(value)
    except (ValueError, TypeError):
        return None
    for entry, shape in zip(entries, shapes, strict=True):
        if absent(entry) or is_quantized(entry):
            continue
        if not is_array(entry) or (entry.ndim == 0 and len(shape) != 0):
            return None
    return entries


def _is_prng_key(value: Any) -> bool:
    """A typed JAX PRNG key (the low-bit optimizers' stochastic rounding): JAX's own randomness,
    which torch, drawing from its global generator, keeps no state for."""
    return jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key)


def _walk(
    node: Any, treedef: Any, shapes: list[tuple[int, ...]], out: list[dict[str, Any]]
) -> None:
    if hasattr(node, "as_torch_state") and out:  # not per parameter: torch keys it by the first
        out[0].update(node.as_torch_state())
        return
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        scalars = {}
        served: set[int] = set()
        for name, value in zip(node._fields, node, strict=True):
            if name == "count" or absent(value):
                continue
            entries = per_param_entries(value, treedef, shapes)
            if entries is not None:
                for i, entry in enumerate(entries):
                    if not absent(entry):
                        out[i][name] = entry
                        served.add(i)
            elif is_array(value) and np.ndim(value) == 0 and not _is_prng_key(value):
                scalars[name] = value
            else:
                _walk(value, treedef, shapes, out)
        for i in served or range(len(out)):
            for name, value in scalars.items():
                out[i][name] = value
    elif isinstance(node, (tuple, list)):
        for child in node:
            _walk(child, treedef, shapes, out)
    elif isinstance(node, dict):
        for child in node.values():
            _walk(child, treedef, shapes, out)


def per_param_state(opt_state: optax.OptState, params: Any) -> list[dict[str, Any]]:
    """Per-parameter state dicts keyed as torch keys `optimizer.state[p]`.

    Args:
      opt_state: a state returned by a jaxopt_port optimizer (possibly inside optax wrappers that
        keep their inner state in NamedTuples, tuples or dicts, such as `optax.chain` and
        `optax.partition`).
      params: the parameters; the i-th dict belongs to the i-th leaf of
        `jax.tree_util.tree_leaves(params)`.

    Returns:
      A list with one dict per parameter leaf. Host-side (L-BFGS's history lists have the length
      `num_old`), so not for use under `jax.jit`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [tuple(np.shape(leaf)) for leaf in leaves]
    out: list[dict[str, Any]] = [{} for _ in leaves]
    _walk(opt_state, treedef, shapes, out)
    return out
