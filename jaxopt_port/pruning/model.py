r"""Pruning whole models: params pytrees and Flax NNX modules by path pattern, and torch's pruned
`state_dict` (`weight_orig` + `weight_mask`) to NNX and back.

torch prunes a module's parameter `name` by keeping `name_orig` (a parameter) and
`name_mask` (a buffer). Here a model's params pytree stays as it is — it holds the `_orig`
values — and the masks are a second pytree of the same structure, with `None` where a leaf is
not pruned. [`apply_masks`][jaxopt_port.pruning.apply_masks] gives the effective weights (torch's
`name`; and, as `torch.nn.utils.prune.remove` does, makes the pruning permanent when written
back). For an NNX module use `nnx.as_pure(nnx.state(model, nnx.Param))` as the pytree and
`nnx.update(model, apply_masks(params, masks))` to write the effective weights.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import to_numpy
from jaxopt_port.pruning import prune as _prune
from jaxopt_port.pruning.transform import _from_torch, _to_torch, is_prunable
from jaxopt_port.transforms import param_group_labels

__all__ = [
    "masks_from_torch",
    "prune_tree",
    "pruned_state_dict",
]


def _selected(tree: Any, select: Any) -> list[bool]:
    labels = param_group_labels([{"params": is_prunable if select is None else select}], tree)
    return [label == "group0" for label in jax.tree_util.tree_leaves(labels)]


def prune_tree(
    tree: Any,
    method: Callable[..., Any],
    *args: Any,
    select: Any = None,
    masks: Any = None,
    layout: Literal["torch", "flax"] = "torch",
    key: jax.Array | None = None,
    **kwargs: Any,
) -> Any:
    """Apply a `torch.nn.utils.prune` function to every selected leaf of `tree`.

    Each selected leaf is pruned on its own by `method(leaf, *args, mask=..., **kwargs)` (in
    torch's layout), except [`global_unstructured`][jaxopt_port.pruning.global_unstructured],
    which ranks all selected leaves together (torch's `parameters_to_vector` order: the
    leaves in `jax.tree_util` order, each flattened in torch's layout).

    Args:
      tree: a params pytree (plain arrays; for NNX, ``nnx.as_pure(nnx.state(model,
        nnx.Param))``).
      method: `pruning.l1_unstructured`, `ln_structured`, `random_unstructured`,
        `random_structured`, `identity` or `global_unstructured`.
      *args: the method's arguments after the tensor (`amount`; `n, dim` for
        `ln_structured`), as in torch.
      select: which leaves: a path pattern, list of patterns or predicate (the selectors of
        `transforms.param_groups`); default every leaf with two or more dimensions.
      masks: the existing masks (a pytree as returned here), to prune again as torch's
        `PruningContainer` does.
      layout: `"torch"` or `"flax"` (`(in, out)` kernels: the method sees them
        transposed, so `dim=0` still means output neurons).
      key: a JAX key, for the random methods (split per leaf).
      **kwargs: the method's keyword arguments (`importance_scores` is not supported here).

    Returns:
      The masks: `tree`'s structure with a mask (in the leaf's layout and dtype) per selected
      leaf and `None` elsewhere.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxopt_port import pruning
      >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.zeros(2)}
      >>> masks = pruning.prune_tree(params, pruning.l1_unstructured, 0.5)
      >>> masks["w"], masks["b"]
      (Array([[0., 1.],
             [0., 1.]], dtype=float32), None)
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    old = [None] * len(leaves) if masks is None else treedef.flatten_up_to(masks)
    picked = [i for i, pick in enumerate(_selected(tree, select)) if pick]
    out: list[Any] = [None] * len(leaves)
    torch_leaves = {i: _to_torch(jnp.asarray(leaves[i]), layout) for i in picked}
    torch_masks = {
        i: None if old[i] is None else _to_torch(jnp.asarray(old[i]), layout) for i in picked
    }
    if method is _prune.global_unstructured:
        new = method(
            [torch_leaves[i] for i in picked],
            *args,
            masks=[torch_masks[i] for i in picked],
            **kwargs,
        )
        for i, m in zip(picked, new, strict=True):
            out[i] = _from_torch(m, layout)
    else:
        random = "key" in inspect.signature(method).parameters
        keys = list(jax.random.split(key, len(picked))) if random and picked else []
        for n, i in enumerate(picked):
            call_args = (keys[n], torch_leaves[i]) if random else (torch_leaves[i],)
            out[i] = _from_torch(method(*call_args, *args, mask=torch_masks[i], **kwargs), layout)
    for i, m in enumerate(old):
        if out[i] is None and m is not None:
            out[i] = m
    return treedef.unflatten(out)


def _split_pruned(state_dict: Mapping[str, Any]) -> tuple[dict, dict]:
    """`(plain state dict with every `name_orig` renamed `name`, {name: mask})`."""
    plain, masks = {}, {}
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state_dict:
            masks[key[: -len("_mask")]] = to_numpy(value)
        elif key.endswith("_orig"):
            plain[key[: -len("_orig")]] = to_numpy(value)
        else:
            plain[key] = to_numpy(value)
    return plain, masks


def _param_state(module: Any) -> Any:
    from flax import nnx

    return nnx.as_pure(nnx.state(module, nnx.Param))


def masks_from_torch(module: Any, state_dict: Mapping[str, Any]) -> Any:
    """Load a pruned torch model's `state_dict` into the NNX `module` and return its masks.

    The module gets the `_orig` values (torch's `weight_orig`), as the params whose masks
    the result holds; the masks are converted with the weights' layout (a Linear's ``(out,
    in)` mask becomes the kernel's `(in, out)`` one). Keys of unpruned parameters load as
    usual (`interop.weights_from_torch`).

    Args:
      module: an NNX module with the torch model's architecture.
      state_dict: `torch_model.state_dict()` of a model pruned with `torch.nn.utils.prune`
        (keys `*_orig` and `*_mask`).

    Returns:
      `nnx.as_pure(nnx.state(module, nnx.Param))`'s structure with the mask of each pruned
      parameter and `None` elsewhere.
    """
    from jaxopt_port import interop

    plain, masks = _split_pruned(state_dict)
    interop.weights_from_torch(module, plain)
    params = _param_state(module)
    marked = copy.deepcopy(module)  # which params are pruned: load NaN there, find the NaNs
    interop.weights_from_torch(
        marked, {k: (np.full_like(v, np.nan) if k in masks else v) for k, v in plain.items()}
    )
    as_masks = copy.deepcopy(module)
    interop.weights_from_torch(
        as_masks, {k: masks[k].astype(v.dtype) if k in masks else v for k, v in plain.items()}
    )
    flags = [
        bool(np.isnan(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(_param_state(marked))
    ]
    values = jax.tree_util.tree_leaves(_param_state(as_masks))
    treedef = jax.tree_util.tree_structure(params)
    return treedef.unflatten([v if f else None for v, f in zip(values, flags, strict=True)])


def pruned_state_dict(module: Any, masks: Any) -> dict[str, np.ndarray]:
    """The torch `state_dict` of the NNX `module` pruned by `masks`, with torch's pruning
    keys: `name_orig` (the module's value) and `name_mask` for every pruned parameter.

    A torch model pruned the same way (e.g. `prune.identity` on those parameters) loads it
    with `load_state_dict`.

    Args:
      module: the NNX module holding the `_orig` values.
      masks: `nnx.as_pure(nnx.state(module, nnx.Param))`'s structure with masks (`None` for
        unpruned parameters), as [`masks_from_torch`][jaxopt_port.pruning.masks_from_torch] or
        [`prune_tree`][jaxopt_port.pruning.prune_tree] return.

    Returns:
      torch key -> NumPy array in torch's layout.
    """
    from flax import nnx

    from jaxopt_port import interop

    params = _param_state(module)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flat_masks = treedef.flatten_up_to(masks)
    marked, as_masks = copy.deepcopy(module), copy.deepcopy(module)
    nnx.update(
        marked,
        treedef.unflatten(
            [
                jnp.full_like(p, jnp.nan) if m is not None else p
                for p, m in zip(leaves, flat_masks, strict=True)
            ]
        ),
    )
    nnx.update(
        as_masks,
        treedef.unflatten(
            [
                jnp.asarray(m).astype(p.dtype) if m is not None else p
                for p, m in zip(leaves, flat_masks, strict=True)
            ]
        ),
    )
    plain = interop.weights_to_numpy(module)
    nan_keys = {
        k for k, v in interop.weights_to_numpy(marked).items() if np.isnan(v).all() and v.size
    }
    mask_values = interop.weights_to_numpy(as_masks)
    out: dict[str, np.ndarray] = {}
    for key, value in plain.items():
        if key in nan_keys:
            out[key + "_orig"] = value
            out[key + "_mask"] = mask_values[key]
        else:
            out[key] = value
    return out
