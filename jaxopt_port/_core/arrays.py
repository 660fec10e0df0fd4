"""Array vocabulary every package speaks: scalar precision, dtypes, torch tensors read as NumPy.

torch is never imported here: tensors are recognised by their methods.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "absent",
    "as_float",
    "is_array",
    "is_tensor_like",
    "numel",
    "params_dtype",
    "scalar_dtype",
    "to_numpy",
    "to_tensor",
]


def scalar_dtype() -> jnp.dtype:
    """The dtype JAX uses where torch computes a scalar in Python `float` (double).

    float64 when x64 is enabled, float32 otherwise.
    """
    return jnp.dtype(jnp.float64) if jax.config.jax_enable_x64 else jnp.dtype(jnp.float32)


def params_dtype(params: Any) -> jnp.dtype:
    """The dtype the leaves of `params` (arrays or `jax.ShapeDtypeStruct`s) promote to; JAX's
    default float for no leaves."""
    dtypes = [getattr(leaf, "dtype", leaf) for leaf in jax.tree_util.tree_leaves(params)]
    return jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)


def as_float(value: Any, what: str = "lr") -> float:
    """`float(value)` for a Python number, 0-d/1-element array or torch tensor.

    Raises torch's error for a tensor with more than one element.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    size = value.numel() if hasattr(value, "numel") else np.size(value)
    if size != 1:
        raise ValueError(f"Tensor {what} must be 1-element")
    return float(np.asarray(value).reshape(()))


def is_tensor_like(value: Any) -> bool:
    """True for arrays, tensors and traced values (torch's `isinstance(lr, Tensor)`); False for
    Python numbers (NumPy's float64 is one), strings, lists, None and schedules."""
    if isinstance(value, (int, float)) or callable(value):
        return False
    return isinstance(value, jax.core.Tracer) or (
        hasattr(value, "shape") and hasattr(value, "dtype")
    )


def numel(value: Any) -> int:
    """The number of elements of an array or tensor (torch's `numel()`)."""
    return int(value.numel()) if hasattr(value, "numel") else int(np.size(value))


def is_array(x: Any) -> bool:
    """True for JAX and NumPy arrays and anything with a shape and a dtype (tensors, structs)."""
    return isinstance(x, (jax.Array, np.ndarray)) or (hasattr(x, "shape") and hasattr(x, "dtype"))


def absent(x: Any) -> bool:
    """True where a state tree holds no value for a leaf (`None`, `optax.MaskedNode`)."""
    return x is None or isinstance(x, optax.MaskedNode)


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (detected without importing torch; sparse ones made dense) or array-like as
    a NumPy array.

    A tensor is always copied: on CPU `np.asarray(tensor)` shares the tensor's memory, and so
    would the `jax.Array` built from it, which torch's in-place updates (an optimizer step, a
    momentum buffer's `mul_`) would then change behind JAX's back."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if getattr(value, "is_sparse", False):
            value = value.to_dense()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it exactly
            return np.asarray(value.float()).astype(jnp.bfloat16)
        return np.asarray(value).copy()
    return np.asarray(value)


def to_tensor(value: Any, dtype: Any = None) -> Any:
    """An array (NumPy, JAX, on any device) as a torch CPU tensor of its own dtype, or `dtype`;
    bfloat16 included (NumPy's ml_dtypes bfloat16, which `torch.from_numpy` does not take)."""
    import torch

    array = np.array(value)  # a copy: torch tensors are writable, JAX arrays are not
    if array.dtype == jnp.bfloat16:
        tensor = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor if dtype is None else tensor.to(dtype)
