r"""`torch.nn.utils.prune` on arrays: each function takes a tensor in torch's layout (and the
mask it already has) and returns the new mask.

torch keeps a pruned parameter as `weight_orig` and a buffer `weight_mask` and computes
`weight = weight_mask * weight_orig` before every forward; pruning a parameter again composes
the methods in a `PruningContainer`. Here the mask is an ordinary array: pass the one you have
as `mask=` and keep the one returned. The rules are torch's:

- **Amount.** An `int` is a count, a `float` a fraction: $k = \operatorname{round}(a \cdot n)$
  with Python's round-half-to-even on the host (0.5 of 5 units prunes 2), where $n$ is the number
  of units still alive. `bool` counts as an `int`. Invalid amounts and dims raise torch's
  exception type and message.
- **Composition.** With an existing `mask`, unstructured methods prune among the alive entries
  (`mask == 1`) and structured ones among the alive channels (those whose mask is not all zero),
  as torch's `PruningContainer` does; entries already pruned stay pruned.
- **Importance.** Scores come from the masked tensor $t \odot m$ (torch reads the
  parameter through its pruning hook); `importance_scores` replace them as given.
- **Ties.** torch's `topk` on the CPU does not order equal scores reproducibly. Here ties go to
  the lower flat index, as a stable top-k would: among equal $|t|$ the lower index is pruned
  first (`l1_unstructured`, `global_unstructured`), among equal channel norms the lower index
  is kept first (`ln_structured` keeps the largest norms). On tie-free inputs the masks are
  torch's, bit for bit.
- **Dtype.** Masks have the tensor's dtype.
- **Random methods** take a JAX key instead of torch's global generator: the pruned set is a
  uniformly random subset of the alive units of the right size.

These functions run eagerly (a float amount needs the alive count on the host); the ranking runs
compiled, once per shape and dtype. Inside `jit` use the Optax transformation
[`sparsify`][jaxopt_port.pruning.sparsify].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import to_numpy
from jaxopt_port.pruning._amount import (
    check_amount,
    check_count,
    check_dim,
    count_to_prune,
)
from jaxopt_port.pruning._rank import lowest

__all__ = [
    "custom_from_mask",
    "global_unstructured",
    "identity",
    "is_pruned",
    "l1_unstructured",
    "ln_structured",
    "random_structured",
    "random_unstructured",
    "remove",
]


def _array(t: Any) -> jax.Array:
    return jnp.asarray(to_numpy(t) if hasattr(t, "detach") else t)


def _given_mask(t: jax.Array, mask: Any) -> jax.Array:
    """The mask so far (ones, built on the host, for an unpruned tensor)."""
    if mask is None:
        return jnp.asarray(np.ones(t.shape, t.dtype))
    mask = _array(mask)
    if mask.shape != t.shape:
        raise ValueError(f"mask has shape {mask.shape}, the tensor {t.shape}")
    return mask


def _given_scores(t: jax.Array, importance_scores: Any) -> jax.Array | None:
    if importance_scores is None:
        return None
    scores = _array(importance_scores)
    if scores.shape != t.shape:
        raise AssertionError(
            "importance_scores should have the same shape as tensor t, "
            f"got {scores.shape} vs {t.shape}"
        )
    return scores


def _alive(mask: jax.Array) -> int:
    return int(np.count_nonzero(np.asarray(mask) == 1))


def _masked_scores(t: jax.Array, mask: jax.Array, scores: jax.Array | None) -> jax.Array:
    """torch's importance: the masked tensor (read through the pruning hook) or the scores."""
    return t * mask.astype(t.dtype) if scores is None else scores


@jax.jit
def _drop_smallest(
    t: jax.Array, mask: jax.Array, scores: jax.Array | None, k: jax.Array
) -> jax.Array:
    mask = mask.astype(t.dtype)
    chosen = lowest(jnp.abs(_masked_scores(t, mask, scores)), mask == 1, k)
    return jnp.where(chosen, jnp.zeros_like(mask), mask)


@jax.jit
def _drop_random(key: jax.Array, mask: jax.Array, k: jax.Array) -> jax.Array:
    chosen = lowest(jax.random.uniform(key, mask.shape), mask == 1, k)
    return jnp.where(chosen, jnp.zeros_like(mask), mask)


def _check_norm(n: Any, ndim: int, dim: int) -> None:
    """torch.norm's errors for a string order."""
    if isinstance(n, str):
        axes = [d for d in range(ndim) if d != dim]
        if n not in ("fro", "nuc"):
            raise RuntimeError(f"linalg.matrix_norm: Order {n} not supported.")
        if len(axes) > 2 or (n == "nuc" and len(axes) != 2):
            raise RuntimeError(
                f"linalg.matrix_norm: dim must be a 2-tuple. Got {' '.join(map(str, axes))}"
            )


#: torch's norm orders with their own reduction (others: the general $p$-norm).
_NORM_KINDS = {1: 0, 2: 1, "fro": 1, float("inf"): 2, float("-inf"): 3, 0: 4}


def _row_norms(x: jax.Array, kind: jax.Array, p: jax.Array) -> jax.Array:
    """The norm of every row of a 2-D array, the order picked by a traced `kind`."""
    a = jnp.abs(x)
    return jax.lax.switch(
        kind,
        [
            lambda: jnp.sum(a, axis=1),
            lambda: jnp.sqrt(jnp.sum(a * a, axis=1)),
            lambda: jnp.max(a, axis=1),
            lambda: jnp.min(a, axis=1),
            lambda: jnp.sum(x != 0, axis=1).astype(x.dtype),
            lambda: jnp.sum(a**p, axis=1) ** (1 / p),
        ],
    )


@jax.jit
def _weakest_rows(
    t: jax.Array,
    mask: jax.Array,
    scores: jax.Array,
    use_mask: jax.Array,
    alive: jax.Array,
    keep: jax.Array,
    kind: jax.Array,
    p: jax.Array,
) -> jax.Array:
    """Channels as rows: the alive ones outside the `keep` of largest norm (ties: lower index
    kept). One compilation per 2-D shape and dtype, whatever `dim` and norm."""
    scores = jnp.where(use_mask, t * mask.astype(t.dtype), scores)
    norms = _row_norms(scores, kind, p.astype(t.dtype))
    return alive & ~lowest(-norms, alive, keep)


@jax.jit
def _nuclear_weakest(scores: jax.Array, alive: jax.Array, keep: jax.Array) -> jax.Array:
    norms = jnp.sum(jnp.linalg.svd(scores, compute_uv=False), axis=-1)
    return alive & ~lowest(-norms, alive, keep)


@jax.jit
def _random_channels(key: jax.Array, alive: jax.Array, k: jax.Array) -> jax.Array:
    return lowest(jax.random.uniform(key, alive.shape), alive, k)


def _rows(x: Any, dim: int) -> np.ndarray:
    """`x` with channel `dim` first and the rest flattened, on the host."""
    moved = np.moveaxis(np.asarray(x), dim, 0)
    return moved.reshape(moved.shape[0], -1)


def _without(mask: jax.Array, chosen: Any, dim: int, dtype: Any) -> jax.Array:
    shape = [1] * mask.ndim
    shape[dim] = -1
    given = np.asarray(mask).astype(dtype)
    return jnp.asarray(np.where(np.asarray(chosen).reshape(shape), 0, given).astype(dtype))


@jax.jit
def _drop_smallest_global(
    ts: list[jax.Array], masks: list[jax.Array], scores: list[Any], k: jax.Array
) -> list[jax.Array]:
    """One ranking over the concatenation (torch's `parameters_to_vector`)."""
    masks = [m.astype(t.dtype) for t, m in zip(ts, masks, strict=True)]
    flat = jnp.concatenate(
        [
            jnp.abs(_masked_scores(t, m, s)).reshape(-1)
            for t, m, s in zip(ts, masks, scores, strict=True)
        ]
    )
    flat_mask = jnp.concatenate([m.reshape(-1).astype(flat.dtype) for m in masks])
    chosen = lowest(flat, flat_mask == 1, k)
    out, start = [], 0
    for m in masks:
        part = chosen[start : start + m.size].reshape(m.shape)
        out.append(jnp.where(part, jnp.zeros_like(m), m))
        start += m.size
    return out


def identity(t: Any, *, mask: Any = None) -> jax.Array:
    """torch's `prune.identity`: prunes nothing; the mask so far, or ones.

    Args:
      t: the tensor, in torch's layout.
      mask: its existing mask, if it was pruned before.

    Returns:
      The mask, in `t`'s dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> identity(jnp.ones((2, 2)))
      Array([[1., 1.],
             [1., 1.]], dtype=float32)
    """
    t = _array(t)
    return _given_mask(t, mask).astype(t.dtype)


def l1_unstructured(
    t: Any, amount: int | float, *, mask: Any = None, importance_scores: Any = None
) -> jax.Array:
    r"""torch's `prune.l1_unstructured`: prune the `amount` alive entries of smallest $|s|$.

    $s = t \odot m$ (or `importance_scores`); among the $n$ alive entries ($m = 1$) the $k$
    with the smallest $|s|$ are pruned, $k$ = `amount` or $\operatorname{round}(a n)$; ties go
    to the lower flat index.

    Args:
      t: the tensor (`weight` or `weight_orig`), in torch's layout.
      amount: a count (`int`) or a fraction in `[0, 1]` (`float`) of the alive entries.
      mask: the existing mask (torch's `weight_mask`), if pruned before.
      importance_scores: scores to rank by instead of `t`, same shape.

    Returns:
      The new mask, in `t`'s dtype.

    Raises:
      TypeError: `amount` is not a number.
      ValueError: `amount` out of range, or more than the alive entries.
      AssertionError: `importance_scores` of another shape (torch's type).

    Examples:
      >>> import jax.numpy as jnp
      >>> l1_unstructured(jnp.array([0.3, -0.1, 2.0, 0.5]), amount=0.5)
      Array([0., 0., 1., 1.], dtype=float32)
    """
    check_amount(amount)
    t = _array(t)
    scores = _given_scores(t, importance_scores)
    given = _given_mask(t, mask)
    alive = _alive(given)
    k = count_to_prune(amount, alive)
    check_count(k, alive)
    return _drop_smallest(t, given, scores, k)


def random_unstructured(
    key: jax.Array, t: Any, amount: int | float, *, mask: Any = None
) -> jax.Array:
    """torch's `prune.random_unstructured` with a JAX key: prune `amount` alive entries chosen
    uniformly at random.

    Args:
      key: a JAX PRNG key (torch draws from its global generator, so the masks differ; the
        distribution is the same: every subset of the alive entries of that size is equally
        likely).
      t: the tensor, in torch's layout.
      amount: a count (`int`) or a fraction (`float`) of the alive entries.
      mask: the existing mask, if pruned before.

    Returns:
      The new mask, in `t`'s dtype.

    Raises:
      TypeError, ValueError: as `l1_unstructured`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> int(random_unstructured(jax.random.key(0), jnp.ones(10), amount=3).sum())
      7
    """
    check_amount(amount)
    t = _array(t)
    given = _given_mask(t, mask).astype(t.dtype)
    alive = _alive(given)
    k = count_to_prune(amount, alive)
    check_count(k, alive)
    return _drop_random(key, given, k)


def _structured(
    t: jax.Array,
    amount: Any,
    dim: int,
    mask: Any,
) -> tuple[jax.Array, int, int, np.ndarray]:
    """Shared checks: `(mask so far, dim, count to prune, alive channels)`."""
    check_amount(amount)
    dim = check_dim(t.shape, dim, pruned_before=mask is not None)
    given = _given_mask(t, mask)
    axes = tuple(d for d in range(t.ndim) if d != dim)
    alive = np.asarray(given).sum(axis=axes) != 0
    k = count_to_prune(amount, int(alive.sum()))
    check_count(k, int(alive.sum()))
    return given, dim, k, alive


def ln_structured(
    t: Any,
    amount: int | float,
    n: Any,
    dim: int,
    *,
    mask: Any = None,
    importance_scores: Any = None,
) -> jax.Array:
    r"""torch's `prune.ln_structured`: prune the alive channels along `dim` of smallest
    L`n` norm.

    Channel $c$ scores $\lVert s_{c} \rVert_n$ over every other dimension, $s = t \odot m$ (or
    `importance_scores`); of the alive channels the $n_\text{alive} - k$ largest are kept
    (ties: the lower index is kept) and the rest of the alive ones pruned.

    Args:
      t: the tensor, in torch's layout (a Linear `weight` is `(out, in)`: `dim=0` prunes
        output neurons).
      amount: a count (`int`) or a fraction (`float`) of the alive channels.
      n: the norm order, as torch's `p`: a number, `inf`, `-inf`, `"fro"` or `"nuc"`
        (3-D tensors only).
      dim: the channel dimension.
      mask: the existing mask, if pruned before.
      importance_scores: scores to take the norms of instead of `t`.

    Returns:
      The new mask, in `t`'s dtype.

    Raises:
      TypeError: `amount` is not a number.
      ValueError: `amount` out of range or above the alive channels; `t` has fewer than two
        dimensions.
      IndexError: `dim` out of range (torch's message for the path taken).
      RuntimeError: an unsupported string `n`.

    Examples:
      >>> import jax.numpy as jnp
      >>> ln_structured(jnp.array([[1.0, 2.0], [0.1, 0.2]]), amount=1, n=2, dim=0)
      Array([[1., 1.],
             [0., 0.]], dtype=float32)
    """
    check_amount(amount)  # torch's order: amount, importance scores, dim, count
    t = _array(t)
    scores = _given_scores(t, importance_scores)
    given, dim, k, alive = _structured(t, amount, dim, mask)
    if k == 0:
        return given.astype(t.dtype)
    _check_norm(n, t.ndim, dim)
    keep, alive_j = int(alive.sum()) - k, jnp.asarray(alive)
    if n == "nuc":
        masked = _masked_scores(t, given, scores)
        chosen = _nuclear_weakest(jnp.moveaxis(masked, dim, 0), alive_j, keep)
    else:
        t_rows = jnp.asarray(_rows(t, dim))
        chosen = _weakest_rows(
            t_rows,
            jnp.asarray(_rows(given, dim)),
            t_rows if scores is None else jnp.asarray(_rows(scores, dim)),
            scores is None,
            alive_j,
            keep,
            _NORM_KINDS.get(n, 5),
            np.float64(n if _NORM_KINDS.get(n) is None else 1.0),
        )
    return _without(given, chosen, dim, t.dtype)


def random_structured(
    key: jax.Array, t: Any, amount: int | float, dim: int, *, mask: Any = None
) -> jax.Array:
    """torch's `prune.random_structured` with a JAX key: prune alive channels along `dim`
    chosen uniformly at random.

    Args:
      key: a JAX PRNG key.
      t: the tensor, in torch's layout.
      amount: a count (`int`) or a fraction (`float`) of the alive channels.
      dim: the channel dimension.
      mask: the existing mask, if pruned before.

    Returns:
      The new mask, in `t`'s dtype.

    Raises:
      TypeError, ValueError, IndexError: as `ln_structured`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> m = random_structured(jax.random.key(0), jnp.ones((4, 3)), amount=1, dim=0)
      >>> [float(row.sum()) for row in m].count(0.0)
      1
    """
    t = _array(t)
    given, dim, k, alive = _structured(t, amount, dim, mask)
    if k == 0:
        return given.astype(t.dtype)
    return _without(given, _random_channels(key, jnp.asarray(alive), k), dim, t.dtype)


def global_unstructured(
    tensors: Sequence[Any],
    amount: int | float,
    *,
    masks: Sequence[Any] | None = None,
    importance_scores: Sequence[Any] | None = None,
) -> Any:
    r"""torch's `prune.global_unstructured` with `L1Unstructured`: one ranking over all tensors.

    The scores of every tensor ($t \odot m$, or its `importance_scores`) are concatenated in
    order (torch's `parameters_to_vector`: each flattened row-major), and the $k$ alive
    entries of smallest $|s|$ over all of them are pruned, $k$ counted against the alive entries
    of all tensors together. Ties go to the lower position in the concatenation.

    Args:
      tensors: a list (or any pytree) of tensors in torch's layout.
      amount: a count (`int`) or a fraction (`float`) of all alive entries.
      masks: their existing masks, same structure; `None` (or a `None` entry) for unpruned.
      importance_scores: scores per tensor, same structure; a `None` entry uses the tensor.

    Returns:
      The new masks, same structure as `tensors`, each in its tensor's dtype.

    Raises:
      TypeError, ValueError: as `l1_unstructured`, for the total.

    Examples:
      >>> import jax.numpy as jnp
      >>> a, b = global_unstructured([jnp.array([1.0, 4.0]), jnp.array([2.0, 3.0, 0.5])], 2)
      >>> a, b
      (Array([0., 1.], dtype=float32), Array([1., 1., 0.], dtype=float32))
    """
    check_amount(amount)
    leaves, treedef = jax.tree_util.tree_flatten(tensors)
    leaves = [_array(t) for t in leaves]
    mask_leaves = [None] * len(leaves) if masks is None else treedef.flatten_up_to(masks)
    score_leaves = (
        [None] * len(leaves)
        if importance_scores is None
        else treedef.flatten_up_to(importance_scores)
    )
    given = [_given_mask(t, m) for t, m in zip(leaves, mask_leaves, strict=True)]
    scores = [_given_scores(t, s) for t, s in zip(leaves, score_leaves, strict=True)]
    alive = sum(_alive(m) for m in given)
    k = count_to_prune(amount, alive)
    check_count(k, alive)
    return jax.tree_util.tree_unflatten(treedef, _drop_smallest_global(leaves, given, scores, k))


def custom_from_mask(t: Any, new_mask: Any, *, mask: Any = None) -> jax.Array:
    """torch's `prune.custom_from_mask`: the existing mask times `new_mask`.

    Args:
      t: the tensor, in torch's layout.
      new_mask: the mask to apply (any numeric or boolean dtype), `t`'s shape.
      mask: the existing mask, if pruned before.

    Returns:
      `mask * new_mask` in `t`'s dtype.

    Raises:
      AssertionError: `new_mask` has another shape (torch's type and message).

    Examples:
      >>> import jax.numpy as jnp
      >>> custom_from_mask(jnp.ones(3), jnp.array([0, 1, 0]))
      Array([0., 1., 0.], dtype=float32)
    """
    t = _array(t)
    new_mask = _array(new_mask)
    if new_mask.shape != t.shape:
        raise AssertionError(
            f"default_mask shape {t.shape} must match self.mask shape {new_mask.shape}"
        )
    given = _given_mask(t, mask).astype(t.dtype)
    return given * new_mask.astype(t.dtype)


def remove(t: Any, mask: Any) -> jax.Array:
    """torch's `prune.remove`: make the pruning permanent, `mask * t` (the mask is then
    dropped; nothing is un-pruned).

    Args:
      t: the original tensor (torch's `weight_orig`).
      mask: its mask.

    Returns:
      The pruned tensor, in `t`'s dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> remove(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]))
      Array([0., 2.], dtype=float32)
    """
    t = _array(t)
    return _array(mask).astype(t.dtype) * t


def is_pruned(masks: Any) -> bool:
    """torch's `prune.is_pruned` for a pytree of masks: `True` if any leaf holds a mask.

    Args:
      masks: a pytree whose leaves are masks, or `None` for unpruned tensors (as
        [`prune_tree`][jaxopt_port.pruning.prune_tree] returns).

    Returns:
      Whether anything in it is pruned.

    Examples:
      >>> import jax.numpy as jnp
      >>> is_pruned({"a": None, "b": None}), is_pruned({"a": jnp.ones(2), "b": None})
      (False, True)
    """
    return bool(jax.tree_util.tree_leaves(masks))
