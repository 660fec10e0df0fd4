r"""`torch.ao.pruning.WeightNormSparsifier` as a mask rule, and N:M sparsity built on it.

torch's sparsifier attaches a mask parametrization to each `nn.Linear` weight and recomputes
the mask at every `sparsifier.step()`. Here the rule is a pure function of the weight, its
current mask and the sparsity level — [`WeightNormSparsifier.update_mask`][jaxopt_port.pruning.WeightNormSparsifier.update_mask] — so it runs under
`jit` with a traced level (the Optax transformation [`sparsify`][jaxopt_port.pruning.sparsify]
calls it inside its update).

The rule, for a 2-D weight $W$ (torch's layout, `(out, in)` for a Linear) with mask $M$,
blocks of shape $b_h \times b_w$ starting at index 0 and level $s$:

1. scores $S = (W \odot M)^2$ (`norm=2`, the default) or $|W \odot M|$ (`norm=1`) — from the
   *masked* weight, so pruned entries score 0 and stay pruned;
2. block score = the mean of the block's entries; a ragged edge block (shape not divisible by the
   block) averages only its in-bound entries (torch's `avg_pool2d(ceil_mode=True)`);
3. $k = \min(\max(\operatorname{round}(s\,n_\text{blocks}), 0), n_\text{blocks} - 1)$ with
   round-half-to-even; the $k$ lowest blocks are pruned (ties: the lower block index first, in
   row-major block order); $s \ge 1$ prunes every block, $s \le 0$ none;
4. with `zeros_per_block` $z$ below the block size only the $z$ smallest-scored entries of each
   pruned block are zeroed (ties: the lower position in the block, row-major).

The new mask replaces the old one (torch does not intersect them).

Warning:
  Divergences from torch 2.13: with `zeros_per_block` below the block size on a weight whose
  shape does not divide into blocks, torch either crashes (`logical_or` shape mismatch) or
  returns a mask of the padded shape. Here the mask has the weight's shape and a ragged block
  zeros its `z` smallest in-bound entries (all of them if it has `z` or fewer). torch's
  masks are float32 (bool after a `zeros_per_block` update); here they have the weight's
  dtype. Weights with other than two dimensions raise `ValueError` (torch fails inside
  `avg_pool2d`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import scalar_dtype
from jaxopt_port.pruning._rank import lowest, lowest_along

__all__ = ["WeightNormSparsifier", "n_m_sparsifier"]


class WeightNormSparsifier:
    """torch's `WeightNormSparsifier`: zero the blocks of lowest mean norm.

    Args:
      sparsity_level: the fraction of blocks to prune (default 0.5); a scheduler or the Optax
        transformation's schedule overrides it per step.
      sparse_block_shape: `(block rows, block columns)` in torch's layout (default `(1, 4)`:
        four consecutive input features of one output neuron).
      zeros_per_block: zeros in every pruned block (default: the whole block).
      norm: `2` (default, scores $w^2$), `1` (scores $|w|$) or a callable `w -> scores`
        (written with `jax.numpy`).

    Raises:
      NotImplementedError: another integer `norm` (torch's message).

    Examples:
      >>> import jax.numpy as jnp
      >>> sp = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 2))
      >>> w = jnp.array([[1.0, 2.0, 0.1, 0.2], [3.0, 4.0, 5.0, 6.0]])
      >>> sp.update_mask(w, jnp.ones_like(w))
      Array([[0., 0., 0., 0.],
             [1., 1., 1., 1.]], dtype=float32)
    """

    def __init__(
        self,
        sparsity_level: float = 0.5,
        sparse_block_shape: tuple[int, int] = (1, 4),
        zeros_per_block: int | None = None,
        norm: Callable[[jax.Array], jax.Array] | int | None = None,
    ) -> None:
        if zeros_per_block is None:
            zeros_per_block = math.prod(sparse_block_shape)
        if norm is None:
            norm = 2
        if callable(norm):
            self.norm_fn = norm
        elif norm == 1:
            self.norm_fn = jnp.abs
        elif norm == 2:
            self.norm_fn = _square
        else:
            raise NotImplementedError(f"L-{norm} is not yet implemented.")
        self.sparsity_level = sparsity_level
        self.sparse_block_shape = tuple(int(b) for b in sparse_block_shape)
        self.zeros_per_block = int(zeros_per_block)
        self.defaults = {
            "sparsity_level": sparsity_level,
            "sparse_block_shape": self.sparse_block_shape,
            "zeros_per_block": self.zeros_per_block,
        }

    def __repr__(self) -> str:
        return f"WeightNormSparsifier({self.defaults})"

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise torch's errors for `zeros_per_block`, and `ValueError` for a weight that is
        not 2-D."""
        size = math.prod(self.sparse_block_shape)
        if self.zeros_per_block > size:
            raise ValueError(
                "Number of zeros per block cannot be more than the total number of elements in "
                "that block."
            )
        if self.zeros_per_block < 0:
            raise ValueError("Number of zeros per block should be positive.")
        if len(shape) != 2:
            raise ValueError(
                f"WeightNormSparsifier works on 2-D weights (torch's Linear), got shape "
                f"{tuple(shape)}"
            )

    def update_mask(self, weight: Any, mask: Any, sparsity_level: Any = None) -> jax.Array:
        """The new mask (torch's `update_mask`) for `weight` with its current `mask`.

        Args:
          weight: the 2-D weight in torch's layout (`weight_orig`/`original`: it is masked
            here).
          mask: its current mask (ones before the first update).
          sparsity_level: the level to prune to (a Python float, or a traced scalar inside
            `jit`); default `self.sparsity_level`.

        Returns:
          The new mask, in `weight`'s dtype.

        Raises:
          ValueError: `zeros_per_block` out of range (torch's messages) or a weight that is
            not 2-D.
        """
        weight = jnp.asarray(weight)
        self.check(weight.shape)
        level = self.sparsity_level if sparsity_level is None else sparsity_level
        k = None
        if isinstance(level, (int, float)):  # torch's Python arithmetic, on the host
            n_blocks = math.prod(_blocks(weight.shape, self.sparse_block_shape))
            k = min(max(round(level * n_blocks), 0), n_blocks - 1)
        return _weight_norm_mask(
            weight,
            jnp.asarray(mask).astype(weight.dtype),
            jnp.asarray(level, scalar_dtype()),
            jnp.asarray(-1 if k is None else k, jnp.int32),
            self.norm_fn,
            self.sparse_block_shape,
            self.zeros_per_block,
        )


def n_m_sparsifier(n: int = 2, m: int = 4) -> WeightNormSparsifier:
    """N:M semi-structured sparsity (2:4 by default) as a sparsifier: in every group of `m`
    consecutive entries along the last dimension (a Linear's input features) the `n` of
    largest $|w|$ are kept.

    It is ``WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, m),
    zeros_per_block=m - n, norm=1)`: every block is pruned, `m - n`` zeros in each (ties: the
    lower position is pruned first).

    Args:
      n: entries kept per group.
      m: group size.

    Returns:
      A [`WeightNormSparsifier`][jaxopt_port.pruning.WeightNormSparsifier].

    Examples:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[0.1, -3.0, 2.0, 0.5]])
      >>> n_m_sparsifier(2, 4).update_mask(w, jnp.ones_like(w))
      Array([[0., 1., 1., 0.]], dtype=float32)
    """
    if not 0 <= n <= m:
        raise ValueError(f"N:M sparsity needs 0 <= n <= m, got n={n}, m={m}")
    return WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, m), zeros_per_block=m - n, norm=1
    )


def _square(w: jax.Array) -> jax.Array:
    return w * w


def _blocks(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _weight_norm_mask(
    weight: jax.Array,
    mask: jax.Array,
    level: jax.Array,
    host_k: jax.Array,
    norm_fn: Callable[[jax.Array], jax.Array],
    block: tuple[int, int],
    zeros: int,
) -> jax.Array:
    """The rule of the module docstring; `host_k >= 0` is `k` computed on the host, `-1`
    computes it here from the traced `level`."""
    (h, w), (bh, bw) = weight.shape, block
    nh, nw = _blocks(weight.shape, block)
    size = bh * bw
    if zeros == 0:
        return jnp.ones_like(weight)
    score = norm_fn(weight * mask)
    inside = np.zeros((nh * bh, nw * bw), dtype=bool)
    inside[:h, :w] = True
    # (nh, nw, bh*bw): the entries of every block, row-major inside the block
    padded = jnp.zeros((nh * bh, nw * bw), score.dtype).at[:h, :w].set(score)
    per_block = padded.reshape(nh, bh, nw, bw).transpose(0, 2, 1, 3).reshape(nh, nw, size)
    in_block = inside.reshape(nh, bh, nw, bw).transpose(0, 2, 1, 3).reshape(nh, nw, size)
    total = per_block[..., 0]
    for i in range(1, size):  # avg_pool2d's order: row-major through the window
        total = total + per_block[..., i]
    means = (total / in_block.sum(-1).astype(score.dtype)).reshape(-1)
    n_blocks = nh * nw
    k = jnp.where(
        host_k >= 0, host_k, jnp.clip(jnp.round(level * n_blocks), 0, n_blocks - 1)
    ).astype(jnp.int32)
    pruned_blocks = jnp.where(
        level >= 1.0, True, lowest(means, jnp.ones(n_blocks, dtype=bool), k)
    ).reshape(nh, nw, 1)
    if zeros >= size:
        chosen = jnp.broadcast_to(pruned_blocks, (nh, nw, size))
    else:
        in_flat = jnp.asarray(in_block.reshape(nh * nw, size))
        inner = lowest_along(per_block.reshape(nh * nw, size), in_flat, zeros, axis=1)
        chosen = pruned_blocks & inner.reshape(nh, nw, size)
    full = chosen.reshape(nh, nw, bh, bw).transpose(0, 2, 1, 3).reshape(nh * bh, nw * bw)
    new = jnp.where(full[:h, :w], 0, 1).astype(weight.dtype)
    return jnp.where(level <= 0, jnp.ones_like(weight), new)
