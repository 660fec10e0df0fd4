"""PARQ's state to and from torchao's `QuantOptimizer.state_dict()`.

torchao's `QuantOptimizer.state_dict()` is its base optimizer's, with two more entries per
quantized parameter (`"latent"`, `"quants"`) and, in each group with `quant_bits < 16`,
`"cumu_lr"` (and `"num_steps"` in the first such group, `"inv_slope"` once PARQ has run).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_port import interop
from jaxopt_port._core import scalar_dtype, to_numpy, to_tensor
from jaxopt_port.prox.parq import QuantState

__all__ = ["quant_state_from_torch", "quant_state_to_torch"]

_OWN_KEYS = ("latent", "quants")


def _quantized_groups(param_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in param_groups if g.get("quant_bits", 16) < 16]


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
    for i, (latent, quants) in enumerate(zip(state.latent, state.quants, strict=True)):
        if latent is None or i not in out["state"]:
            continue  # not quantized, or not stepped yet
        out["state"][i]["latent"] = to_tensor(latent)
        out["state"][i]["quants"] = to_tensor(quants)
    groups = _quantized_groups(out["param_groups"])
    for k, group in enumerate(groups):
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
    """
    groups = _quantized_groups(state_dict["param_groups"])
    count = int(groups[0].get("num_steps", 0)) if groups else 0
    stripped = {
        "state": {
            i: {k: v for k, v in entry.items() if k not in _OWN_KEYS}
            for i, entry in state_dict["state"].items()
        },
        "param_groups": state_dict["param_groups"],
    }
    inner_state = interop.optimizer_state_from_torch(stripped, inner, params, count=count)
    fresh = tx.init(params)
    leaves = jax.tree_util.tree_leaves(params)
    latent, quants = list(fresh.latent), list(fresh.quants)
    for i, leaf in enumerate(leaves):
        entry = state_dict["state"].get(i, {})
        if latent[i] is not None and "latent" in entry:
            latent[i] = jnp.asarray(to_numpy(entry["latent"]), leaf.dtype)
            quants[i] = jnp.asarray(to_numpy(entry["quants"]), leaf.dtype).reshape(quants[i].shape)
    state = QuantState(
        count=jnp.asarray(count, jnp.int32),
        latent=tuple(latent),
        quants=tuple(quants),
        cumu_lr=jnp.asarray(groups[0].get("cumu_lr", 0.0) if groups else 0.0, scalar_dtype()),
        inv_slope=jnp.asarray(groups[0].get("inv_slope", 1.0) if groups else 1.0, scalar_dtype()),
        inner_state=inner_state,
    )
    # the copies are asynchronous: finish them before torch, which updates its tensors in place,
    # steps again
    return jax.block_until_ready(state)
