r"""Mask rules for the Optax transformation beyond torch's sparsifier: unstructured magnitude and
structured (channel) pruning to a *total* sparsity level.

A rule is any object with `update_mask(weight, mask, level) -> new mask` that runs under
`jit` with a traced `level` (weights in torch's layout);
[`WeightNormSparsifier`][jaxopt_port.pruning.WeightNormSparsifier] is one. Scores come from the
masked weight, so pruned entries score 0 and stay pruned while the level does not fall.

Unlike the `torch.nn.utils.prune` functions (whose float amount is a fraction of what is still
alive), a level here is the fraction of the whole tensor:
$k = \operatorname{round}(s \cdot n)$ (half to even) units end up pruned.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_port.pruning._rank import lowest

__all__ = ["Magnitude", "Structured"]


def _count(level: Any, n: int) -> jax.Array:
    return jnp.clip(jnp.round(jnp.asarray(level) * n), 0, n).astype(jnp.int32)


class Magnitude:
    r"""Unstructured magnitude pruning: the $\operatorname{round}(s n)$ entries of smallest
    $|w \odot m|$ are zero (ties: the lower flat index first).

    Args:
      sparsity_level: the default level (a schedule overrides it).

    Examples:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[0.3, -1.0], [2.0, 0.1]])
      >>> Magnitude(0.5).update_mask(w, jnp.ones_like(w))
      Array([[0., 1.],
             [1., 0.]], dtype=float32)
    """

    def __init__(self, sparsity_level: float = 0.5) -> None:
        self.sparsity_level = sparsity_level

    def scores(self, weight: jax.Array, mask: jax.Array) -> jax.Array:
        """$|w \\odot m|$, the ranking of this rule (global pruning concatenates them)."""
        return jnp.abs(weight * mask)

    def update_mask(self, weight: Any, mask: Any, sparsity_level: Any = None) -> jax.Array:
        """The new mask at `sparsity_level` (default `self.sparsity_level`)."""
        weight = jnp.asarray(weight)
        level = self.sparsity_level if sparsity_level is None else sparsity_level
        scores = self.scores(weight, jnp.asarray(mask).astype(weight.dtype))
        chosen = lowest(scores, jnp.ones(weight.shape, bool), _count(level, weight.size))
        return jnp.where(chosen, 0, 1).astype(weight.dtype)


class Structured:
    r"""Structured pruning of whole channels along `dim` by their L`n` norm (torch's
    `ln_structured` rule at a total level): the $\operatorname{round}(s C)$ channels of smallest
    $\lVert (w \odot m)_c \rVert_n$ are zero (ties: the lower index is kept).

    Args:
      sparsity_level: the default level.
      n: the norm order: 1, 2 or `inf`.
      dim: the channel dimension in torch's layout (`0`: a Linear's output neurons, a Conv's
        output channels).

    Examples:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[1.0, 2.0], [0.1, 0.2], [3.0, 0.0]])
      >>> Structured(0.34, n=2, dim=0).update_mask(w, jnp.ones_like(w))[:, 0]
      Array([1., 0., 1.], dtype=float32)
    """

    def __init__(self, sparsity_level: float = 0.5, n: Any = 2, dim: int = 0) -> None:
        if n not in (1, 2, float("inf")):
            raise ValueError(f"Structured supports n = 1, 2 or inf, got {n!r}")
        self.sparsity_level, self.n, self.dim = sparsity_level, n, dim

    def update_mask(self, weight: Any, mask: Any, sparsity_level: Any = None) -> jax.Array:
        """The new mask at `sparsity_level` (default `self.sparsity_level`)."""
        weight = jnp.asarray(weight)
        level = self.sparsity_level if sparsity_level is None else sparsity_level
        dim = self.dim % weight.ndim
        axes = tuple(d for d in range(weight.ndim) if d != dim)
        a = jnp.abs(weight * jnp.asarray(mask).astype(weight.dtype))
        if self.n == 1:
            norms = a.sum(axes)
        elif self.n == 2:
            norms = jnp.sqrt((a * a).sum(axes))
        else:
            norms = a.max(axes)
        channels = weight.shape[dim]
        keep = lowest(-norms, jnp.ones(channels, bool), channels - _count(level, channels))
        shape = [1] * weight.ndim
        shape[dim] = -1
        return jnp.broadcast_to(keep.reshape(shape), weight.shape).astype(weight.dtype)
