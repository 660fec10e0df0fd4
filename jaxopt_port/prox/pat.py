r"""PAT (torchao's `torchao.prototype.pat.PruneOptimizer`) as an Optax transformation: sparsity by
a proximal map of the latent weights after every step of any optimizer.

The step is PARQ's ([`quant_optimizer`][jaxopt_port.prox.quant_optimizer]): after `warmup_steps`
the inner optimizer updates the latent weight $z$ of every pruned leaf (at the first step from
the params), $\gamma \leftarrow \gamma + \text{lr}$ (the cumulative learning rate, torchao's group
`gamma`), and the params become the proximal map of $z$ with strength $\lambda\gamma$:

- `ProxLasso` (any grouper): $p = z \cdot \max\bigl(0,\ 1 - \lambda\gamma/|z|\bigr)$, element-wise
  soft thresholding.
- `ProxGroupLasso`: per group $g$ (a row with `"Dim0Grouper"`, a column with `"Dim1Grouper"`,
  the whole leaf with `"LayerGrouper"` or `"ElemGrouper"` — torchao applies the map to the whole
  tensor for both), $p_g = z_g \cdot \max\bigl(0,\ 1 - \lambda\sqrt{n_g}\,\gamma/\lVert z_g\rVert_2\bigr)$,
  $n_g$ the group's size. Leaves with more than two dimensions are grouped after flattening
  dims 1.. (torchao's `flatten(start_dim=1)`).

$\lambda\tau\gamma$ is formed in the scalar dtype (float64 with x64 on, like torchao's Python
floats; float32 otherwise, one rounding more) and rounded once to the weights' dtype.

Differences from torchao: where $z = 0$ (or $z_g = 0$) and $\lambda\gamma = 0$ — the default
`reg_lambda=0`, and every step's $0/0$ — torchao returns NaN (its multiplier is
$1 - 0/0$); here the weight stays 0.

Hard constraints: `MinSparsityConstraint` (the smallest groups zeroed, optionally along torchao's
cubic ramp) and `NMSparseConstraint` (N largest entries kept per group), over rows, columns,
k-element chunks, conv filters and attention heads; healing (`healing_start_step`: a frozen mask
and masked gradients); `GlobalMinSparsityConstraint` (one budget over all the leaves of a
group); `ProxNuclearNorm` and `MinRankConstraint` on the singular values (`SVDGrouper`). Not
available yet: `prox_freq`, `gamma_index_slope`, `PackedSVDGrouper`, healing through a
`MinRankConstraint` (`prox_through_heal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port.prox._latent import group_of_each_leaf, latent_step, lr_function

__all__ = [
    "GROUPERS",
    "GlobalMinSparsityConstraint",
    "MinRankConstraint",
    "MinSparsityConstraint",
    "NMSparseConstraint",
    "ProxGroupLasso",
    "ProxLasso",
    "ProxNuclearNorm",
    "PruneState",
    "cubic_sparsity",
    "grouped_view",
    "prune_optimizer",
]

GROUPERS = {
    "ElemGrouper": None,
    "LayerGrouper": None,
    "Dim0Grouper": 1,
    "Dim1Grouper": 0,
    "KElementGrouper": 1,
    "ConvFilterGrouper": 1,
    "AttentionHeadGrouperDim0": 1,
    "AttentionHeadGrouperDim1": 1,
    "SVDGrouper": None,
}
"""The groupers: name → the axis of the grouped 2-D view a group runs along (`None`: one group,
the whole leaf). The view: dims 1.. flattened (`Dim0Grouper`: rows, `Dim1Grouper`: columns);
`KElementGrouper` (group key `k`): each row cut into chunks of `k` consecutive entries;
`ConvFilterGrouper`: a `(out, in, ...)` kernel viewed as `(out·in, ...)`, one group per
input-channel filter; `AttentionHeadGrouperDim0` / `Dim1` (group key `num_heads`): one group per
attention head of a packed projection, its `out / num_heads` consecutive rows (Dim0) or
`in / num_heads` consecutive columns (Dim1); `SVDGrouper`: the singular values of the leaf's
2-D view (for `ProxNuclearNorm` and `MinRankConstraint` only)."""


def grouped_view(z: jax.Array, group_type: str, k: int | None = None) -> jax.Array:
    """The 2-D view of `z` whose rows (or, for `Dim1Grouper`, columns) are torchao's groups.

    Args:
      z: the leaf, in torch's layout.
      group_type: a key of [`GROUPERS`][jaxopt_port.prox.GROUPERS].
      k: `KElementGrouper`'s `k`, or the attention-head groupers' `num_heads`.

    Raises:
      ValueError: `KElementGrouper` without `k` or with a row length `k` does not divide (torchao
        pads the last chunk; not available here), or `ConvFilterGrouper` on a leaf that is not
        3-D or 4-D.
    """
    if group_type == "ConvFilterGrouper":
        if not 2 < z.ndim <= 4:
            raise ValueError(f"ConvFilterGrouper needs a 3-D or 4-D leaf, got shape {z.shape}")
        return z.reshape(z.shape[0] * z.shape[1], -1)
    if group_type.startswith("AttentionHeadGrouper"):
        axis = 0 if group_type.endswith("Dim0") else 1
        if z.ndim != 2 or k is None or k < 1 or z.shape[axis] % k:
            raise ValueError(
                f"{group_type} needs a 2-D leaf and a 'num_heads' dividing its dim {axis}, got "
                f"shape {tuple(z.shape)} and num_heads={k!r}"
            )
        if axis == 0:
            return z.reshape(k, -1)
        return z.reshape(z.shape[0], k, -1).transpose(1, 0, 2).reshape(k, -1)
    view = z.reshape(z.shape[0], -1) if z.ndim > 2 else z
    if group_type == "KElementGrouper":
        if k is None or k < 1 or view.shape[-1] % k:
            raise ValueError(
                f"KElementGrouper needs a positive 'k' dividing the row length {view.shape[-1]}"
                f" (torchao pads the last chunk; not available here), got k={k!r}"
            )
        view = view.reshape(-1, k)
    return view


def _multiplier(norm: jax.Array, threshold: jax.Array) -> jax.Array:
    r"""$\max(0, 1 - t/\lVert\cdot\rVert)$, and 0 where the norm is 0 (torchao: NaN if t = 0).

    torch evaluates `t / norm` (a Python float over a tensor) as `norm.reciprocal() * t`: two
    roundings, reproduced.
    """
    safe = jnp.where(norm == 0, jnp.ones_like(norm), norm)
    recip = jax.lax.optimization_barrier(1 / safe)  # XLA would fold (1/x)·t into t/x
    ratio = _rounded(recip * threshold.astype(norm.dtype), safe)
    mult = jnp.maximum(1 - ratio, 0)
    return jnp.where(norm == 0, jnp.zeros_like(mult), mult)


def _rounded(x: jax.Array, positive: jax.Array) -> jax.Array:
    """`x` (a product) rounded on its own, so the subtraction that follows is not fused with it
    into a multiply-add (torch rounds both; LLVM contracts them, and drops an optimization
    barrier here): its bits xor the sign bit of `positive`, a zero XLA cannot see is zero."""
    bits = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    width = jnp.iinfo(bits).bits - 1
    zero = jax.lax.bitcast_convert_type(positive, bits) >> width
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, bits) ^ zero, x.dtype)


def _threshold(scale: float, gamma: Any) -> jax.Array:
    r"""$\lambda\tau\gamma$ in the scalar dtype (torch: Python floats), rounded once to the
    weights' dtype by the caller."""
    return jnp.asarray(scale, scalar_dtype()) * jnp.asarray(gamma, scalar_dtype())


class ProxLasso:
    r"""Soft thresholding $p = z\cdot\max(0, 1 - \lambda\gamma/|z|)$ (torchao's `ProxLasso`).

    Args:
      reg_lambda: $\lambda$.

    Examples:
      >>> import jax.numpy as jnp
      >>> ProxLasso(0.5).apply(jnp.array([2.0, -0.25, 0.0]), 1.0, "ElemGrouper").tolist()
      [1.5, -0.0, 0.0]
    """

    def __init__(self, reg_lambda: float = 0.0) -> None:
        self.reg_lambda = reg_lambda

    def apply(self, z: jax.Array, gamma: Any, group_type: str, **grouping: Any) -> jax.Array:
        """The proximal map of `z` at cumulative lr `gamma` (the grouper does not matter)."""
        return z * _multiplier(jnp.abs(z), _threshold(self.reg_lambda * 1.0, gamma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reg_lambda={self.reg_lambda!r})"


class ProxGroupLasso(ProxLasso):
    r"""Group soft thresholding
    $p_g = z_g\cdot\max(0, 1 - \lambda\sqrt{n_g}\,\gamma/\lVert z_g\rVert_2)$ (torchao's
    `ProxGroupLasso`); the groups come from the grouper (module docstring).

    Args:
      reg_lambda: $\lambda$.
    """

    def apply(
        self, z: jax.Array, gamma: Any, group_type: str, k: int | None = None, **grouping: Any
    ) -> jax.Array:
        """The proximal map of `z` at cumulative lr `gamma`, groups by `group_type` (and `k`)."""
        view = grouped_view(z, group_type, k) if z.ndim > 1 else z
        axis = GROUPERS[group_type]
        if axis is None or view.ndim < 2:
            axis, size = None, view.size
        else:
            size = view.shape[axis]
        norm = jnp.sqrt(jnp.sum(view * view, axis=axis, keepdims=axis is not None))
        thr = _threshold(self.reg_lambda * math.sqrt(size), gamma)
        return _ungrouped(view * _multiplier(norm, thr), z, group_type, k)


def _groups_as_rows(view: jax.Array, group_type: str) -> jax.Array:
    return view.T if GROUPERS[group_type] == 0 else view


def _ungrouped(view: jax.Array, z: jax.Array, group_type: str, k: int | None) -> jax.Array:
    """`grouped_view`'s inverse: the view back in `z`'s shape."""
    if group_type == "AttentionHeadGrouperDim1":
        return view.reshape(k, z.shape[0], -1).transpose(1, 0, 2).reshape(z.shape)
    return view.reshape(z.shape)


_CONSTRAINT_GROUPERS = (
    "Dim0Grouper",
    "Dim1Grouper",
    "KElementGrouper",
    "ConvFilterGrouper",
    "AttentionHeadGrouperDim0",
    "AttentionHeadGrouperDim1",
)


def _zero_smallest(view: jax.Array, scores: jax.Array, n_zero: Any) -> jax.Array:
    """Zero the rows of `view` (or entries, for scores of its shape) whose scores are among the
    `n_zero` smallest along the last axis of `scores` (torch's `topk(largest=False)`; ties: the
    lower index goes first)."""
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)
    drop = ranks < n_zero
    if drop.ndim < view.ndim:
        drop = drop[:, None]
    return jnp.where(drop, jnp.zeros_like(view), view)


def _constraint_groups(z: jax.Array, group_type: str, k: int | None, name: str) -> jax.Array:
    """The groups of `z` as rows, for a constraint map."""
    if group_type not in _CONSTRAINT_GROUPERS:
        raise ValueError(
            f"{name} needs a row, column, k-element, conv-filter or attention-head grouper, "
            f"got {group_type!r}"
        )
    return _groups_as_rows(grouped_view(z, group_type, k), group_type)


class MinSparsityConstraint:
    r"""Zero the $\lceil s\,n_g\rceil$ groups of smallest L2 norm (torchao's
    `MinSparsityConstraint`; $s$ = `min_sparsity`, $n_g$ the leaf's number of groups; λ and γ
    are not used). Groups: rows (`Dim0Grouper`), columns (`Dim1Grouper`), chunks of `k`
    (`KElementGrouper`; `k=1`: magnitude pruning of the whole leaf), conv filters or attention
    heads.

    With the group key `min_sparsity_schedule=True`,
    [`prune_optimizer`][jaxopt_port.prox.prune_optimizer] ramps $s$ along torchao's cubic
    schedule ([`cubic_sparsity`][jaxopt_port.prox.cubic_sparsity]).

    Args:
      min_sparsity: the fraction $s \in [0, 1]$ of groups zeroed.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[3.0, 0.0], [0.5, 0.5], [-2.0, 1.0]])
      >>> MinSparsityConstraint(0.3).apply(z, 1.0, "Dim0Grouper").tolist()
      [[3.0, 0.0], [0.0, 0.0], [-2.0, 1.0]]
    """

    def __init__(self, min_sparsity: float, reg_lambda: float = 0.0) -> None:
        if not 0.0 <= min_sparsity <= 1.0:
            raise ValueError(f"min_sparsity must be in [0, 1], but got {min_sparsity}")
        self.min_sparsity = min_sparsity
        self.reg_lambda = reg_lambda

    def n_groups(self, shape: tuple[int, ...], group_type: str, k: int | None = None) -> int:
        """The number of groups of a leaf of `shape`."""
        view = grouped_view(jnp.zeros(shape), group_type, k)
        return _groups_as_rows(view, group_type).shape[0]

    def n_zero(self, n_groups: int, sparsity: float | None = None) -> int:
        r"""$\lceil s\,n_g\rceil$ in Python floats, as torchao (`sparsity` overrides $s$)."""
        return math.ceil((self.min_sparsity if sparsity is None else sparsity) * n_groups)

    def apply(
        self,
        z: jax.Array,
        gamma: Any,
        group_type: str,
        k: int | None = None,
        n_zero: Any = None,
    ) -> jax.Array:
        """`z` with its smallest groups zeroed; `n_zero` (possibly traced) overrides the count."""
        rows = _constraint_groups(z, group_type, k, "MinSparsityConstraint")
        if n_zero is None:
            n_zero = self.n_zero(rows.shape[0])
        norms = jnp.sqrt(jnp.sum(rows * rows, axis=1))
        out = _zero_smallest(rows, norms, n_zero)
        return _ungrouped(_groups_as_rows(out, group_type), z, group_type, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_sparsity={self.min_sparsity!r})"


class GlobalMinSparsityConstraint(MinSparsityConstraint):
    r"""One budget over all the leaves of a group (torchao's `GlobalMinSparsityConstraint`): the
    $\lceil s\,N\rceil$ groups of smallest score among the $N$ groups of every leaf of the
    group are zeroed. Scores: `"rms"` ($\lVert z_g\rVert_2/\sqrt{n_g}$), `"l2"`
    ($\lVert z_g\rVert_2$) or `"param_cost"` ($\lVert z_g\rVert_2/n_g$). Groups as for
    [`MinSparsityConstraint`][jaxopt_port.prox.MinSparsityConstraint], plus `ElemGrouper` (each
    entry a group: global magnitude pruning) and `LayerGrouper` (each leaf one group).

    Args:
      min_sparsity: the fraction $s$ of all the groups zeroed.
      score_type: `"rms"`, `"l2"` or `"param_cost"`.

    Examples:
      >>> import jax.numpy as jnp
      >>> m = GlobalMinSparsityConstraint(0.5, "l2")
      >>> [x.tolist() for x in m.apply_many([jnp.array([[3.0, -1.0]]), jnp.array([[0.5, 2.0]])],
      ...                                     "ElemGrouper")]
      [[[3.0, 0.0]], [[0.0, 2.0]]]
    """

    def __init__(self, min_sparsity: float, score_type: str = "rms", reg_lambda: float = 0.0):
        super().__init__(min_sparsity, reg_lambda)
        if score_type not in ("rms", "l2", "param_cost"):
            raise ValueError(f"score_type must be one of rms/l2/param_cost, got {score_type!r}")
        self.score_type = score_type

    def _rows(self, z: jax.Array, group_type: str, k: int | None) -> jax.Array:
        if group_type == "ElemGrouper":
            return z.reshape(-1, 1)
        if group_type == "LayerGrouper":
            return z.reshape(1, -1)
        return _constraint_groups(z, group_type, k, type(self).__name__)

    def _back(self, rows: jax.Array, z: jax.Array, group_type: str, k: int | None) -> jax.Array:
        if group_type in ("ElemGrouper", "LayerGrouper"):
            return rows.reshape(z.shape)
        return _ungrouped(_groups_as_rows(rows, group_type), z, group_type, k)

    def n_groups(self, shape: tuple[int, ...], group_type: str, k: int | None = None) -> int:
        """The number of groups of a leaf of `shape`."""
        return self._rows(jnp.zeros(shape), group_type, k).shape[0]

    def score(self, rows: jax.Array) -> jax.Array:
        """One score per row (group)."""
        norm = jnp.sqrt(jnp.sum(rows * rows, axis=1))
        size = rows.shape[1]
        if self.score_type == "rms":
            return norm / jnp.asarray(math.sqrt(size), norm.dtype)
        if self.score_type == "param_cost":
            return norm / jnp.asarray(size, norm.dtype)
        return norm

    def apply_many(
        self, zs: Sequence[jax.Array], group_type: str, k: int | None = None, n_zero: Any = None
    ) -> list[jax.Array]:
        """The leaves `zs` with the globally smallest groups zeroed (`n_zero` overrides the
        count)."""
        rows = [self._rows(z, group_type, k) for z in zs]
        scores = jnp.concatenate([self.score(r) for r in rows])
        if n_zero is None:
            n_zero = self.n_zero(scores.shape[0])
        ranks = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
        out, offset = [], 0
        for r, z in zip(rows, zs, strict=True):
            drop = (ranks[offset : offset + r.shape[0]] < n_zero)[:, None]
            out.append(self._back(jnp.where(drop, jnp.zeros_like(r), r), z, group_type, k))
            offset += r.shape[0]
        return out

    def apply(
        self,
        z: jax.Array,
        gamma: Any,
        group_type: str,
        k: int | None = None,
        n_zero: Any = None,
    ) -> jax.Array:
        """The map on one leaf alone (a group of one leaf)."""
        return self.apply_many([z], group_type, k, n_zero)[0]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_sparsity={self.min_sparsity!r}, "
            f"score_type={self.score_type!r})"
        )


def _svd_map(z: jax.Array, shrink: Callable[[jax.Array], jax.Array]) -> jax.Array:
    r"""`z` rebuilt from its SVD with the singular values `shrink`-ed (torchao's `SVDGrouper`:
    the squeezed leaf, dims 1.. flattened; $(U \cdot S) V^H$)."""
    view = jnp.squeeze(z)
    if view.ndim > 2:
        view = view.reshape(view.shape[0], -1)
    u, sv, vh = jnp.linalg.svd(view, full_matrices=False)
    return ((u * shrink(sv)) @ vh).reshape(z.shape)


def _svd_only(group_type: str, name: str) -> None:
    if group_type != "SVDGrouper":
        raise ValueError(f"{name} needs group_type 'SVDGrouper', got {group_type!r}")


class ProxNuclearNorm(ProxLasso):
    r"""Soft thresholding of the singular values, $\sigma_i \leftarrow \max(0, \sigma_i -
    \lambda\gamma)$, the proximal map of the nuclear norm (torchao's `ProxNuclearNorm` with
    `SVDGrouper`); the weight is rebuilt as $U\,\operatorname{diag}(\sigma)\,V^H$.

    The SVD is XLA's (LAPACK on CPU), not torch's: the rebuilt weights agree with torchao's to
    the SVD's rounding (float64 ~1e-15, float32 ~1e-6 relative), not bit for bit.

    Args:
      reg_lambda: $\lambda$.
    """

    def apply(self, z: jax.Array, gamma: Any, group_type: str, **grouping: Any) -> jax.Array:
        """The map of `z` at cumulative lr `gamma` (`group_type` must be `"SVDGrouper"`)."""
        _svd_only(group_type, type(self).__name__)
        thr = _threshold(self.reg_lambda * 1.0, gamma)
        return _svd_map(z, lambda sv: jnp.maximum(sv - thr.astype(sv.dtype), 0))


class MinRankConstraint(MinSparsityConstraint):
    r"""Zero the $\lceil s\,r\rceil$ smallest of the $r$ singular values (torchao's
    `MinRankConstraint` with `SVDGrouper`; the rank drops to $r - \lceil s\,r\rceil$); λ and γ
    are not used; `min_sparsity_schedule` ramps $s$ as for
    [`MinSparsityConstraint`][jaxopt_port.prox.MinSparsityConstraint]. SVD as in
    [`ProxNuclearNorm`][jaxopt_port.prox.ProxNuclearNorm].

    Args:
      min_sparsity: the fraction $s$ of singular values zeroed.
    """

    def n_groups(self, shape: tuple[int, ...], group_type: str, k: int | None = None) -> int:
        """The number of singular values of a leaf of `shape`."""
        dims = [d for d in shape if d != 1]
        rows = dims[0] if dims else 1
        return min(rows, math.prod(dims[1:])) if len(dims) > 1 else 1

    def apply(
        self,
        z: jax.Array,
        gamma: Any,
        group_type: str,
        k: int | None = None,
        n_zero: Any = None,
    ) -> jax.Array:
        """`z` with its smallest singular values zeroed (`n_zero` overrides the count)."""
        _svd_only(group_type, type(self).__name__)
        if n_zero is None:
            n_zero = self.n_zero(self.n_groups(z.shape, group_type))

        def shrink(sv: jax.Array) -> jax.Array:  # sorted descending: the last ones
            return jnp.where(jnp.arange(sv.shape[-1]) >= sv.shape[-1] - n_zero, 0, sv)

        return _svd_map(z, shrink)


class NMSparseConstraint:
    r"""Keep the `n_nonzero` largest-magnitude entries of every group and zero the rest
    (torchao's `NMSparseConstraint`; N:M sparsity with `KElementGrouper`, `k` = M; λ and γ are not
    used).

    Args:
      n_nonzero: N, the entries kept per group.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[0.1, -3.0, 2.0, 0.5], [1.0, 2.0, -4.0, 3.0]])
      >>> NMSparseConstraint(2).apply(z, 1.0, "KElementGrouper", k=4).tolist()  # 2:4
      [[0.0, -3.0, 2.0, 0.0], [0.0, 0.0, -4.0, 3.0]]
    """

    def __init__(self, n_nonzero: int, reg_lambda: float = 0.0) -> None:
        if n_nonzero < 0:
            raise ValueError(f"n_nonzero must be non-negative, but got {n_nonzero}")
        self.n_nonzero = n_nonzero
        self.reg_lambda = reg_lambda

    def apply(
        self, z: jax.Array, gamma: Any, group_type: str, k: int | None = None, **grouping: Any
    ) -> jax.Array:
        """`z` with all but the `n_nonzero` largest |entries| of each group zeroed."""
        rows = _constraint_groups(z, group_type, k, "NMSparseConstraint")
        if self.n_nonzero > rows.shape[1]:
            raise ValueError(
                f"n_nonzero ({self.n_nonzero}) must be at most the group size ({rows.shape[1]})"
            )
        out = _zero_smallest(rows, jnp.abs(rows), rows.shape[1] - self.n_nonzero)
        return _ungrouped(_groups_as_rows(out, group_type), z, group_type, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_nonzero={self.n_nonzero!r})"


def cubic_sparsity(target: float, step: int, warmup_steps: int, healing_start_step: int) -> float:
    r"""torchao's cubic ramp of `min_sparsity` (`PruneOptimizer._effective_min_sparsity`):
    0 up to `warmup_steps`, the target from `healing_start_step - 1` on, and in between
    $s\,(1 - (1 - t)^3)$ with $t = (n - W)/(H - W)$ (Python floats).

    Examples:
      >>> [round(cubic_sparsity(0.8, n, 2, 10), 4) for n in (2, 3, 6, 9)]
      [0.0, 0.2641, 0.7, 0.8]
    """
    if step >= healing_start_step - 1:
        return target
    if step <= warmup_steps:
        return 0.0
    t = (step - warmup_steps) / (healing_start_step - warmup_steps)
    return target * (1 - (1 - t) ** 3)


class PruneState(NamedTuple):
    """State of [`prune_optimizer`][jaxopt_port.prox.prune_optimizer].

    Attributes:
      count: steps taken (torchao's `num_steps`).
      latent: per params leaf, the latent weight of a pruned leaf (torchao's state `"latent"`:
        during warmup the weights after the first step, unused; while healing the last proximal
        step's), `None` for the others.
      gamma: the cumulative lr (torchao's group `"gamma"`).
      inner_state: the inner optimizer's state.
    """

    count: jax.Array
    latent: tuple
    gamma: jax.Array
    inner_state: optax.OptState


_PROX_TYPES = {
    "ProxLasso": ProxLasso,
    "ProxGroupLasso": ProxGroupLasso,
    "MinSparsityConstraint": MinSparsityConstraint,
    "GlobalMinSparsityConstraint": GlobalMinSparsityConstraint,
    "NMSparseConstraint": NMSparseConstraint,
    "ProxNuclearNorm": ProxNuclearNorm,
    "MinRankConstraint": MinRankConstraint,
}


class _Pruned(NamedTuple):
    prox_map: Any
    group_type: str
    k: int | None
    schedule: bool  # min_sparsity along the cubic ramp
    group: int  # the id of its group (a global constraint spans the group's leaves)


def _make_map(group: Mapping[str, Any], reg_lambda: float) -> Any:
    prox_map = group["prox_type"]
    if not isinstance(prox_map, str):
        return prox_map
    lam = group.get("reg_lambda", reg_lambda)
    if prox_map == "MinSparsityConstraint":
        return MinSparsityConstraint(group["min_sparsity"], lam)
    if prox_map == "GlobalMinSparsityConstraint":
        return GlobalMinSparsityConstraint(
            group["min_sparsity"], group.get("score_type", "rms"), lam
        )
    if prox_map == "MinRankConstraint":
        return MinRankConstraint(group["min_sparsity"], lam)
    if prox_map == "NMSparseConstraint":
        return NMSparseConstraint(group["n_nonzero"], lam)
    return _PROX_TYPES[prox_map](lam)


def _prune_plan(groups: list, reg_lambda: float, params: Any) -> list:
    chosen = group_of_each_leaf(groups, params)
    plan = []
    for group in chosen:
        if group is None:
            plan.append(None)
            continue
        plan.append(
            _Pruned(
                _make_map(group, reg_lambda),
                group.get("group_type", "ElemGrouper"),
                group.get("num_heads", group.get("k")),
                bool(group.get("min_sparsity_schedule", False)),
                id(group),
            )
        )
    return plan


def _checked(groups: Sequence[Mapping[str, Any]]) -> list:
    for i, group in enumerate(groups):
        prox_type = group.get("prox_type")
        if isinstance(prox_type, str) and prox_type not in _PROX_TYPES:
            raise ValueError(
                f"group {i}: prox_type {prox_type!r} is not available; expected one of "
                f"{sorted(_PROX_TYPES)} or an instance of one"
            )
        if prox_type is None:
            raise ValueError(f"group {i} has no 'prox_type': {dict(group)!r}")
        for name, key in (
            ("MinSparsityConstraint", "min_sparsity"),
            ("GlobalMinSparsityConstraint", "min_sparsity"),
            ("MinRankConstraint", "min_sparsity"),
            ("NMSparseConstraint", "n_nonzero"),
        ):
            if prox_type == name and key not in group:
                raise ValueError(f"group {i}: {name} requires {key!r} in the group")
        name = prox_type if isinstance(prox_type, str) else type(prox_type).__name__
        svd_maps = ("ProxNuclearNorm", "MinRankConstraint")
        if (group.get("group_type") == "SVDGrouper") != (name in svd_maps):
            raise ValueError(
                f"group {i}: group_type 'SVDGrouper' goes with {' or '.join(svd_maps)} and they "
                f"with it, got {name} with {group.get('group_type', 'ElemGrouper')!r}"
            )
        if group.get("group_type", "ElemGrouper") not in GROUPERS:
            raise ValueError(
                f"group {i}: group_type {group['group_type']!r} is not available; expected one "
                f"of {sorted(GROUPERS)}"
            )
    return list(groups)


def prune_optimizer(
    inner: optax.GradientTransformation,
    groups: Sequence[Mapping[str, Any]],
    *,
    warmup_steps: int = 0,
    reg_lambda: float = 0.0,
    lr: float | Callable[[jax.Array], Any] | None = None,
    healing_start_step: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal pruning (PAT) around `inner` (module docstring for the maps).

    Args:
      inner: the optimizer of the latent weights.
      groups: torch-style groups `[{"params": selector, "prox_type": "ProxLasso" |
        "ProxGroupLasso" | "MinSparsityConstraint" | "NMSparseConstraint" | instance,
        "group_type": a key of [`GROUPERS`][jaxopt_port.prox.GROUPERS], "reg_lambda": λ}]`
        (selectors as in `transforms.param_groups`), with `"k"` for `KElementGrouper`,
        `"num_heads"` for the attention-head groupers,
        `"min_sparsity"` (and optionally `"min_sparsity_schedule": True`, the cubic ramp up to
        `healing_start_step - 1`) for `MinSparsityConstraint`, `"n_nonzero"` for
        `NMSparseConstraint`; leaves in no group are not pruned.
      warmup_steps: steps of the inner optimizer alone first.
      reg_lambda: $\lambda$ of groups that do not set one.
      lr: the inner optimizer's lr (number or schedule of the step), summed into $\gamma$.
        `None`: the inner optimizer's own, when it is a jaxopt_port optimizer with one lr
        (number or schedule) for all its param groups; required otherwise.
      healing_start_step: from this step on (torchao's healing phase) no proximal map: the
        inner optimizer steps the weights themselves, with the gradients of the pruned leaves'
        zero entries set to 0 and those entries kept at 0 (a frozen mask); $\gamma$ stops.
        `None`: never.

    Raises:
      ValueError: an unknown `prox_type` / `group_type`, a constraint without its key,
        `min_sparsity_schedule` without `healing_start_step`, or
        `healing_start_step <= warmup_steps`, or no `lr` with an inner optimizer whose lr cannot
        be read (an optax one, or param groups with different lrs).

    Returns:
      An `optax.GradientTransformationExtraArgs` with a
      [`PruneState`][jaxopt_port.prox.PruneState]; `update` needs `params`.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_port import optim, prox
      >>> tx = prox.prune_optimizer(optim.sgd(lr=0.5), [{"params": "w", "prox_type": "ProxLasso"}],
      ...                           reg_lambda=0.2, lr=0.5)
      >>> params = {"w": jnp.array([1.0, 0.05, -0.5])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.zeros(3)}, state, params)
      >>> optax.apply_updates(params, updates)["w"].tolist()
      [0.8999999761581421, 0.0, -0.4000000059604645]
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    groups = _checked(groups)
    if healing_start_step is not None and healing_start_step <= warmup_steps:
        raise ValueError(f"Invalid warmup_steps={warmup_steps} >= {healing_start_step=}")
    rank_groups = [
        g
        for g in groups
        if g["prox_type"] == "MinRankConstraint" or isinstance(g["prox_type"], MinRankConstraint)
    ]
    if healing_start_step is not None and (
        rank_groups or any(g.get("prox_through_heal") for g in groups)
    ):
        raise ValueError(
            "healing with MinRankConstraint (torchao reapplies it while healing, "
            "prox_through_heal) is not available"
        )
    if healing_start_step is None and any(g.get("min_sparsity_schedule") for g in groups):
        raise ValueError("min_sparsity_schedule requires a finite healing_start_step")
    lr_fn = lr_function(lr, inner, True, "prune_optimizer")

    def n_zero_now(s: _Pruned, n_groups: int, count: jax.Array) -> Any:
        """The scheduled count of zero groups (of `n_groups`) at this step (a host table of
        torchao's Python-float ramp, indexed by the traced step), or `None` for the map's own."""
        if not (s.schedule and isinstance(s.prox_map, MinSparsityConstraint)):
            return None
        target = s.prox_map.min_sparsity
        table = [
            s.prox_map.n_zero(n_groups, cubic_sparsity(target, n, warmup_steps, healing_start_step))
            for n in range(healing_start_step)
        ]
        return jnp.asarray(table, jnp.int32)[jnp.minimum(count, healing_start_step - 1)]

    def init(params: Any) -> PruneState:
        plan = _prune_plan(groups, reg_lambda, params)
        leaves = jax.tree_util.tree_leaves(params)
        return PruneState(
            count=jnp.zeros((), jnp.int32),
            latent=tuple(
                None if s is None else jnp.zeros(p.shape, p.dtype)
                for p, s in zip(leaves, plan, strict=True)
            ),
            gamma=jnp.zeros((), scalar_dtype()),
            inner_state=inner.init(params),
        )

    def update(updates: Any, state: PruneState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError("prune_optimizer needs params in update (the weights it prunes)")
        plan = _prune_plan(groups, reg_lambda, params)
        heal = False if healing_start_step is None else state.count >= healing_start_step
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if healing_start_step is not None:  # the frozen mask: no gradient on pruned entries
            grads = [
                g if s is None else jnp.where(heal & (p == 0), jnp.zeros_like(g), g)
                for g, p, s in zip(treedef.flatten_up_to(updates), leaves, plan, strict=True)
            ]
            updates = jax.tree_util.tree_unflatten(treedef, grads)
        step = latent_step(
            inner,
            updates,
            state.inner_state,
            params,
            state.latent,
            [s is not None for s in plan],
            state.count,
            warmup_steps,
            state.gamma,
            lr_fn,
            extra,
            heal,
        )
        pruned_all = {}  # a global constraint: every leaf of its group at once
        for gid in {
            s.group for s in plan if s and isinstance(s.prox_map, GlobalMinSparsityConstraint)
        }:
            idx = [i for i, s in enumerate(plan) if s is not None and s.group == gid]
            s = plan[idx[0]]
            total = sum(s.prox_map.n_groups(leaves[i].shape, s.group_type, s.k) for i in idx)
            outs = s.prox_map.apply_many(
                [step.stepped[i] for i in idx], s.group_type, s.k, n_zero_now(s, total, state.count)
            )
            pruned_all.update(zip(idx, outs, strict=True))
        out, latent = [], []
        for i, (p, z, s) in enumerate(zip(step.leaves, step.stepped, plan, strict=True)):
            u = step.u_leaves[i]
            if s is None:
                out.append(u)
                latent.append(None)
                continue
            if i in pruned_all:
                pruned = pruned_all[i]
            else:
                options = {"k": s.k}
                n_groups = s.prox_map.n_groups(p.shape, s.group_type, s.k) if s.schedule else 0
                n_zero = n_zero_now(s, n_groups, state.count)
                if n_zero is not None:
                    options["n_zero"] = n_zero
                pruned = s.prox_map.apply(z, step.cumu_lr, s.group_type, **options)
            healed = jnp.where(p == 0, jnp.zeros_like(u), u)  # re-zeroed after the step
            out.append(
                jnp.where(step.warm, u, jnp.where(heal, healed, (pruned - p).astype(p.dtype)))
            )
            # torchao keeps (and never reads) the weights after the first warmup step as the
            # latent until its first proximal step saves them anew: kept the same, for its
            # state_dict
            first_warm = step.warm & (state.count == 0)
            latent.append(jnp.where(first_warm, z, jnp.where(step.warm | heal, state.latent[i], z)))
        new_state = PruneState(
            count=optax.safe_increment(state.count),
            latent=tuple(latent),
            gamma=step.cumu_lr,
            inner_state=step.inner_state,
        )
        return jax.tree_util.tree_unflatten(step.treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init, update)
