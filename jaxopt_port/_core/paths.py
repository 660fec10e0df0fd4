"""Leaf paths of a params pytree, named the way param-group selectors and error messages show them.

Shared by `transforms.param_groups` (which selects leaves by path) and `optim.from_torch`
(which names the leaf that does not fit the torch parameter it stands for).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import jax

__all__ = ["named_leaves", "path_names"]


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """The names of a `jax.tree_util` key path, as selectors see them.

    Examples:
      >>> import jax
      >>> [(path, _)] = jax.tree_util.tree_flatten_with_path({"dense": [1.0]})[0]
      >>> path_names(path)
      ('dense', '0')
    """
    return tuple(_key_name(key) for key in path)


def _box_types() -> tuple[type, ...]:
    """Flax's boxes around one array. A tree can only hold them once flax has been imported, so
    the library does not import flax itself."""
    boxes = []
    if "flax.nnx" in sys.modules:
        boxes.append(sys.modules["flax.nnx"].Variable)
    if "flax.core.meta" in sys.modules:
        boxes.append(sys.modules["flax.core.meta"].AxisMetadata)
    return tuple(boxes)


def named_leaves(params: Any) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
    """`[(path names, leaf)]` with Flax boxes as single leaves, and the treedef to unflatten."""
    boxes = _box_types()
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=(lambda x: isinstance(x, boxes)) if boxes else None
    )
    named = []
    for path, leaf in flat:
        if boxes and isinstance(leaf, boxes):
            inner = jax.tree_util.tree_leaves(leaf)
            leaf = inner[0] if len(inner) == 1 else leaf
        named.append((path_names(path), leaf))
    return named, treedef
