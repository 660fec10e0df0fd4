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
$1 - 0/0$); here the weight stays 0. Healing, `prox_freq`, `gamma_index_slope` and the
constraint maps (`MinSparsityConstraint`, N:M, nuclear norm, SVD groupers) are not available yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port._core import scalar_dtype
from jaxopt_port.prox._latent import latent_step, lr_function
from jaxopt_port.transforms import param_group_labels

__all__ = ["GROUPERS", "ProxGroupLasso", "ProxLasso", "PruneState", "prune_optimizer"]

GROUPERS = {"ElemGrouper": None, "LayerGrouper": None, "Dim0Grouper": 1, "Dim1Grouper": 0}
"""The groupers: name → how a 2-D view's groups lie (`None`: one group, the whole leaf)."""


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

    def apply(self, z: jax.Array, gamma: Any, group_type: str) -> jax.Array:
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

    def apply(self, z: jax.Array, gamma: Any, group_type: str) -> jax.Array:
        """The proximal map of `z` at cumulative lr `gamma`, groups by `group_type`."""
        view = z.reshape(z.shape[0], -1) if z.ndim > 2 else z
        axis = GROUPERS[group_type]
        if axis is None or view.ndim < 2:
            axis, size = None, view.size
        else:
            size = view.shape[axis]
        norm = jnp.sqrt(jnp.sum(view * view, axis=axis, keepdims=axis is not None))
        thr = _threshold(self.reg_lambda * math.sqrt(size), gamma)
        return (view * _multiplier(norm, thr)).reshape(z.shape)


class PruneState(NamedTuple):
    """State of [`prune_optimizer`][jaxopt_port.prox.prune_optimizer].

    Attributes:
      count: steps taken (torchao's `num_steps`).
      latent: per params leaf, the latent weight of a pruned leaf (torchao's state `"latent"`),
        `None` for the others.
      gamma: the cumulative lr (torchao's group `"gamma"`).
      inner_state: the inner optimizer's state.
    """

    count: jax.Array
    latent: tuple
    gamma: jax.Array
    inner_state: optax.OptState


_PROX_TYPES = {"ProxLasso": ProxLasso, "ProxGroupLasso": ProxGroupLasso}


def _prune_plan(groups: list, reg_lambda: float, params: Any) -> list:
    leaves = jax.tree_util.tree_leaves(params)
    if all("leaf_indices" in g for g in groups):  # from torch: leaf i is torch's parameter i
        chosen = [
            next((g for g in groups if i in g["leaf_indices"]), None) for i in range(len(leaves))
        ]
    else:
        labels = param_group_labels(
            [{"params": g["params"]} for g in groups], params, unmatched="default", allow_empty=True
        )
        chosen = [
            None if label == "default" else groups[int(label.removeprefix("group"))]
            for label in jax.tree_util.tree_leaves(labels)
        ]
    plan = []
    for group in chosen:
        if group is None:
            plan.append(None)
            continue
        prox_map = group["prox_type"]
        if isinstance(prox_map, str):
            prox_map = _PROX_TYPES[prox_map](group.get("reg_lambda", reg_lambda))
        plan.append((prox_map, group.get("group_type", "ElemGrouper")))
    return plan


def _checked(groups: Sequence[Mapping[str, Any]]) -> list:
    for i, group in enumerate(groups):
        prox_type = group.get("prox_type")
        if isinstance(prox_type, str) and prox_type not in _PROX_TYPES:
            raise ValueError(
                f"group {i}: prox_type {prox_type!r} is not available; expected one of "
                f"{sorted(_PROX_TYPES)} or a ProxLasso/ProxGroupLasso instance"
            )
        if prox_type is None:
            raise ValueError(f"group {i} has no 'prox_type': {dict(group)!r}")
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
    lr: float | Callable[[jax.Array], Any] = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal pruning (PAT) around `inner` (module docstring for the maps).

    Args:
      inner: the optimizer of the latent weights.
      groups: torch-style groups `[{"params": selector, "prox_type": "ProxLasso" |
        "ProxGroupLasso" | instance, "group_type": "ElemGrouper" | "LayerGrouper" |
        "Dim0Grouper" | "Dim1Grouper", "reg_lambda": λ}]` (selectors as in
        `transforms.param_groups`); leaves in no group are not pruned.
      warmup_steps: steps of the inner optimizer alone first.
      reg_lambda: $\lambda$ of groups that do not set one.
      lr: the inner optimizer's lr (number or schedule of the step), summed into $\gamma$.

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
    lr_fn = lr_function(lr)

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
        )
        out, latent = [], []
        for i, (p, z, s) in enumerate(zip(step.leaves, step.stepped, plan, strict=True)):
            if s is None:
                out.append(step.u_leaves[i])
                latent.append(None)
                continue
            pruned = s[0].apply(z, step.cumu_lr, s[1])
            out.append(jnp.where(step.warm, step.u_leaves[i], (pruned - p).astype(p.dtype)))
            latent.append(jnp.where(step.warm, state.latent[i], z))
        new_state = PruneState(
            count=optax.safe_increment(state.count),
            latent=tuple(latent),
            gamma=step.cumu_lr,
            inner_state=step.inner_state,
        )
        return jax.tree_util.tree_unflatten(step.treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init, update)
