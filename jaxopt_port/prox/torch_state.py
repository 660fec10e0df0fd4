"""PARQ's and PAT's states to and from torchao's `QuantOptimizer.state_dict()` and
`PruneOptimizer.state_dict()`.

Both wrappers' `state_dict()` is their base optimizer's with a few more entries:

- `QuantOptimizer`: per quantized parameter `"latent"` and `"quants"`; in each group with
  `quant_bits < 16`, `"cumu_lr"` (and `"num_steps"` in the first such group, `"inv_slope"` once
  PARQ has run).
- `PruneOptimizer`: per pruned parameter `"latent"` (and the metrics `"sparsity_frac"`,
  `"sv_count"`); in each group with a `prox_type`, `"gamma"` and `"reg_lambda"` (and
  `"num_steps"` in the first such group, `"factored_frac"` with an SVD grouper).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_port import interop
from jaxopt_port._core import scalar_dtype, to_numpy, to_tensor
from jaxopt_port.prox.parq import QuantState
from jaxopt_port.prox.pat import PruneState

__all__ = [
    "prune_state_from_torch",
    "prune_state_to_torch",
    "quant_state_from_torch",
    "quant_state_to_torch",
]

_QUANT_KEYS = ("latent", "quants")
_PRUNE_KEYS = ("latent", "sparsity_frac", "sv_count")
"""The wrappers' own per-parameter entries (PAT's last two: metrics torchao only writes)."""


def _is_quantized(group: dict[str, Any]) -> bool:
    return group.get("quant_bits", 16) < 16


def _is_pruned(group: dict[str, Any]) -> bool:
    return bool(group.get("prox_type"))


def _wrapper_groups(
    param_groups: list[dict[str, Any]], chosen: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The groups the wrapper works on (quantized / pruned), in order."""
    return [g for g in param_groups if chosen(g)]


def _check_selection(
    state_dict: dict[str, Any],
    chosen: Callable[[dict[str, Any]], bool],
    selected: Sequence[bool],
    what: str,
) -> None:
    """torch's parameters the wrapper works on must be the leaves `tx` does (leaf i is torch's
    parameter i)."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or "state" not in state_dict:
        raise ValueError(
            f"expected a torchao {what}.state_dict() (a dict with 'state' and 'param_groups'), "
            f"got keys {sorted(state_dict) if isinstance(state_dict, dict) else state_dict!r}"
        )
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(selected):
        raise ValueError(
            f"the {what} state_dict has {len(ids)} parameters but params has {len(selected)} leaves"
        )
    theirs = sorted(i for g in groups if chosen(g) for i in g["params"])
    ours = [i for i, s in enumerate(selected) if s]
    if theirs != ours:
        raise ValueError(
            f"the {what} state_dict works on parameters {theirs} but the transformation on "
            f"leaves {ours} (leaf i is torch's parameter i)"
        )


def _inner_state_from_torch(
    state_dict: dict[str, Any], inner: Any, params: Any, own_keys: tuple[str, ...], count: int
) -> optax.OptState:
    """The inner optimizer's state: the base optimizer's `state_dict` without the wrapper's
    entries."""
    stripped = {
        "state": {
            i: {k: v for k, v in entry.items() if k not in own_keys}
            for i, entry in state_dict["state"].items()
        },
        "param_groups": state_dict["param_groups"],
    }
    return interop.optimizer_state_from_torch(stripped, inner, params, count=count)


def _entries_from_torch(
    state_dict: dict[str, Any], key: str, fresh: tuple, params: Any, what: str
) -> list:
    """Per leaf, torch's per-parameter `key` entry as an array of the leaf's dtype (`fresh`'s
    value where torch has none: not stepped yet, or a leaf the wrapper leaves alone)."""
    out = list(fresh)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
        entry = state_dict["state"].get(i, {})
        if out[i] is None or key not in entry:
            continue
        value = to_numpy(entry[key])
        if value.size != out[i].size:
            raise ValueError(
                f"{what} state_dict entry {key!r} of parameter {i} has shape "
                f"{tuple(value.shape)}, expected {tuple(out[i].shape)}"
            )
        out[i] = jnp.asarray(value, leaf.dtype).reshape(out[i].shape)
    return out


def _entries_to_torch(out: dict[str, Any], **fields: Sequence[Any]) -> None:
    """Write each field's per-leaf arrays into torch's per-parameter state (leaves the wrapper
    leaves alone, `None`, and parameters not stepped yet are skipped)."""
    for key, values in fields.items():
        for i, value in enumerate(values):
            if value is not None and i in out["state"]:
                out["state"][i][key] = to_tensor(value)


def quant_state_to_torch(
    state: QuantState,
    inner: optax.GradientTransformation,
    params: Any,
    param_groups: list[dict[str, Any]],
) -> dict[str, Any]:
    """A torchao `QuantOptimizer` `state_dict()` holding `state` (imports torch).

    Args:
      state: the [`QuantState`][jaxopt_port.prox.QuantState].
      inner: the inner transformation given to `quant_optimizer`.
      params: the params; leaf i is torch's parameter i.
      param_groups: torchao's `param_groups` (`quant_optimizer.state_dict()["param_groups"]`,
        with `quant_bits`); their hyperparameters are kept.

    Returns:
      The `state_dict`, ready for `QuantOptimizer.load_state_dict`.
    """
    count = int(state.count)
    out = interop.optimizer_state_to_torch(
        state.inner_state, inner, params, param_groups=param_groups, count=count
    )
    _entries_to_torch(out, latent=state.latent, quants=state.quants)
    for k, group in enumerate(_wrapper_groups(out["param_groups"], _is_quantized)):
        group["cumu_lr"] = float(state.cumu_lr)
        if k == 0:
            group["num_steps"] = count
        if float(state.inv_slope) != 1.0:
            group["inv_slope"] = float(state.inv_slope)
    return out


def quant_state_from_torch(
    state_dict: dict[str, Any],
    tx: optax.GradientTransformation,
    inner: optax.GradientTransformation,
    params: Any,
) -> QuantState:
    """The [`QuantState`][jaxopt_port.prox.QuantState] of `tx` equal to a torchao
    `QuantOptimizer.state_dict()`.

    Args:
      state_dict: `quant_optimizer.state_dict()` (torchao).
      tx: the `quant_optimizer` transformation.
      inner: its inner transformation.
      params: the params; leaf i is torch's parameter i.

    Returns:
      The state; `inv_slope` is torchao's recorded value (its last nonzero one).

    Raises:
      ValueError: not a `state_dict`, another number of parameters, other parameters quantized
        than `tx` quantizes, or a `latent` / `quants` entry of another size.
    """
    fresh = tx.init(params)
    _check_selection(
        state_dict, _is_quantized, [z is not None for z in fresh.latent], "QuantOptimizer"
    )
    groups = _wrapper_groups(state_dict["param_groups"], _is_quantized)
    count = int(groups[0].get("num_steps", 0)) if groups else 0
    inner_state = _inner_state_from_torch(state_dict, inner, params, _QUANT_KEYS, count)
    state = QuantState(
        count=jnp.asarray(count, jnp.int32),
        latent=tuple(
            _entries_from_torch(state_dict, "latent", fresh.latent, params, "QuantOptimizer")
        ),
        quants=tuple(
            _entries_from_torch(state_dict, "quants", fresh.quants, params, "QuantOptimizer")
        ),
        cumu_lr=jnp.asarray(groups[0].get("cumu_lr", 0.0) if groups else 0.0, scalar_dtype()),
        inv_slope=jnp.asarray(groups[0].get("inv_slope", 1.0) if groups else 1.0, scalar_dtype()),
        inner_state=inner_state,
    )
    # the copies are asynchronous: finish them before torch, which updates its tensors in place,
    # steps again
    return jax.block_until_ready(state)


def prune_state_to_torch(
    state: PruneState,
    inner: optax.GradientTransformation,
    params: Any,
    param_groups: list[dict[str, Any]],
) -> dict[str, Any]:
    r"""A torchao `PruneOptimizer` `state_dict()` holding `state` (imports torch).

    Every entry torchao's `step` reads is written: the base optimizer's state, each pruned
    parameter's `"latent"`, each pruned group's `"gamma"` ($\gamma$) and the first one's
    `"num_steps"`. torchao's metrics (`"sparsity_frac"`, `"sv_count"`, `"factored_frac"`) are
    left out: its next proximal step writes them again.

    Args:
      state: the [`PruneState`][jaxopt_port.prox.PruneState].
      inner: the inner transformation given to `prune_optimizer`.
      params: the params; leaf i is torch's parameter i.
      param_groups: torchao's `param_groups` (`prune_optimizer.state_dict()["param_groups"]`,
        with `prox_type`); their hyperparameters (`reg_lambda`, ...) are kept.

    Returns:
      The `state_dict`, ready for `PruneOptimizer.load_state_dict`.

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> from torchao.prototype.pat.optim import PruneOptimizer
      >>> from jaxopt_port import optim, prox
      >>> w = torch.nn.Parameter(torch.ones(3))
      >>> torch_opt = PruneOptimizer(torch.optim.SGD(
      ...     [{"params": [w], "prox_type": "ProxLasso", "group_type": "ElemGrouper"}], lr=0.1),
      ...     reg_lambda=0.5)
      >>> inner = optim.sgd(lr=0.1)
      >>> tx = prox.prune_optimizer(inner, [{"params": "*", "prox_type": "ProxLasso"}],
      ...                           reg_lambda=0.5)
      >>> params = [jnp.ones(3)]
      >>> _, state = tx.update([jnp.ones(3)], tx.init(params), params)
      >>> sd = prox.prune_state_to_torch(state, inner, params,
      ...                                torch_opt.state_dict()["param_groups"])
      >>> torch_opt.load_state_dict(sd)
      >>> torch_opt.num_steps, round(torch_opt.param_groups[0]["gamma"], 6)
      (1, 0.1)
    """
    count = int(state.count)
    out = interop.optimizer_state_to_torch(
        state.inner_state, inner, params, param_groups=param_groups, count=count
    )
    groups = _wrapper_groups(out["param_groups"], _is_pruned)
    if not groups:
        raise ValueError("param_groups has no group with a 'prox_type' (a PruneOptimizer's)")
    _entries_to_torch(out, latent=state.latent)
    for k, group in enumerate(groups):
        group["gamma"] = float(state.gamma)
        if k == 0:
            group["num_steps"] = count
    return out


def prune_state_from_torch(
    state_dict: dict[str, Any],
    tx: optax.GradientTransformation,
    inner: optax.GradientTransformation,
    params: Any,
) -> PruneState:
    r"""The [`PruneState`][jaxopt_port.prox.PruneState] of `tx` equal to a torchao
    `PruneOptimizer.state_dict()`.

    torchao's metrics (`"sparsity_frac"`, `"sv_count"`, `"factored_frac"`) are not part of the
    state; the healing mask is not either (in torchao and here it is the weights' zeros).

    Args:
      state_dict: `prune_optimizer.state_dict()` (torchao).
      tx: the `prune_optimizer` transformation.
      inner: its inner transformation.
      params: the params; leaf i is torch's parameter i.

    Returns:
      The state.

    Raises:
      ValueError: not a `state_dict`, another number of parameters, other parameters pruned
        than `tx` prunes, pruned groups with different `gamma`s (one $\gamma$ here), or a
        `latent` entry of another size.
    """
    fresh = tx.init(params)
    _check_selection(
        state_dict, _is_pruned, [z is not None for z in fresh.latent], "PruneOptimizer"
    )
    groups = _wrapper_groups(state_dict["param_groups"], _is_pruned)
    gammas = [float(g.get("gamma", 0.0)) for g in groups]
    if len(set(gammas)) > 1:
        raise ValueError(f"one gamma here; the PruneOptimizer's pruned groups have {gammas}")
    count = int(groups[0].get("num_steps", 0)) if groups else 0
    state = PruneState(
        count=jnp.asarray(count, jnp.int32),
        latent=tuple(
            _entries_from_torch(state_dict, "latent", fresh.latent, params, "PruneOptimizer")
        ),
        gamma=jnp.asarray(gammas[0] if gammas else 0.0, scalar_dtype()),
        inner_state=_inner_state_from_torch(state_dict, inner, params, _PRUNE_KEYS, count),
    )
    # the copies are asynchronous: finish them before torch, which updates its tensors in place,
    # steps again
    return jax.block_until_ready(state)
