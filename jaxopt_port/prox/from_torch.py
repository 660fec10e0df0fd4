"""A live torchao `QuantOptimizer` / `PruneOptimizer` as the equivalent `quant_optimizer` /
`prune_optimizer` (no torch import)."""

from __future__ import annotations

import sys
from typing import Any

import optax

from jaxopt_port import optim, schedules
from jaxopt_port.prox import proxmaps, quantizers
from jaxopt_port.prox.parq import quant_optimizer
from jaxopt_port.prox.pat import prune_optimizer

__all__ = ["from_torch", "read_wrapper"]

_WRAPPERS = {"QuantOptimizer": "torchao.prototype.parq", "PruneOptimizer": "torchao.prototype.pat"}
"""torchao's wrapper classes -> the package that defines them."""

_QUANTIZERS = {
    "UnifQuantizer": (
        quantizers.UnifQuantizer,
        ("center", "scale_method", "int_shift", "zero_point"),
    ),
    "MaxUnifQuantizer": (
        quantizers.MaxUnifQuantizer,
        ("center", "scale_method", "int_shift", "zero_point"),
    ),
    "TernaryUnifQuantizer": (quantizers.TernaryUnifQuantizer, ("center",)),
    "LSBQuantizer": (quantizers.LSBQuantizer, ("center", "optimal", "ternary_multiplier")),
}
"""torchao class name → (our class, the attributes its constructor takes)"""
_PROX_MAPS = {
    "ProxHardQuant": (proxmaps.ProxHardQuant, ()),
    "ProxPARQ": (proxmaps.ProxPARQ, ("anneal_start", "anneal_end", "steepness", "anneal_center")),
    "ProxBinaryRelax": (proxmaps.ProxBinaryRelax, ("anneal_start", "anneal_end")),
}


def _convert(obj: Any, table: dict, what: str) -> Any:
    name = type(obj).__name__
    if name not in table:
        raise ValueError(
            f"{what} {name} has no jaxopt_port equivalent; expected one of {sorted(table)}"
        )
    cls, attrs = table[name]
    return cls(**{a: getattr(obj, a) for a in attrs})


def read_wrapper(
    optimizer: Any, scheduler: Any, steps_per_epoch: int, overrides: dict[str, Any]
) -> optax.GradientTransformationExtraArgs | None:
    """`optim.from_torch`'s reader of torchao's wrappers (installed in `_core.hooks` by
    `jaxopt_port.prox`): their transformation, `None` for any other object."""
    cls = type(optimizer)
    if not cls.__module__.startswith(_WRAPPERS.get(cls.__name__, "\0")):
        return None
    return from_torch(optimizer, scheduler, steps_per_epoch=steps_per_epoch, **overrides)


def from_torch(
    optimizer: Any, scheduler: Any = None, *, steps_per_epoch: int = 1, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """The [`quant_optimizer`][jaxopt_port.prox.quant_optimizer] equal to a live torchao
    `QuantOptimizer` (or the [`prune_optimizer`][jaxopt_port.prox.prune_optimizer] equal to a
    `PruneOptimizer`), around `optim.from_torch(optimizer.base_optimizer)`.

    The params pytree's leaves, in `jax.tree_util.tree_leaves` order, are torch's parameters in
    `param_groups` order (the contract of `optim.from_torch`); groups with `quant_bits < 16` are
    quantized with their `quant_bits` and `quant_block_size`, and torchao's
    `group_quantizer_map` is kept.

    `optim.from_torch(optimizer)` calls this for these two classes.

    Args:
      optimizer: a `torchao.prototype.parq.optim.QuantOptimizer` or
        `torchao.prototype.pat.optim.PruneOptimizer`.
      scheduler: optionally its freshly built torch lr scheduler (built on the wrapper or on its
        `base_optimizer`): the inner optimizer follows it as in `optim.from_torch`, and the lr
        summed into gamma is the first quantized (pruned) group's scheduled lr.
      steps_per_epoch: optimizer steps per `scheduler.step()`.
      **overrides: passed to `optim.from_torch` for the base optimizer.

    Returns:
      The transformation.

    Raises:
      ValueError: another object, an unknown quantizer or proximal map, quantized groups with
        different learning rates while `quant_shrink` sums one, or `anneal_wd_frac > 0`.
    """
    name = type(optimizer).__name__
    if name == "PruneOptimizer" and hasattr(optimizer, "base_optimizer"):
        return _prune_from_torch(optimizer, scheduler, steps_per_epoch, overrides)
    if name != "QuantOptimizer" or not hasattr(optimizer, "base_optimizer"):
        raise ValueError(f"expected a torchao QuantOptimizer or PruneOptimizer, got {name}")
    if optimizer.anneal_wd_frac > 0:
        raise ValueError("QuantOptimizer(anneal_wd_frac > 0) is not available in jaxopt_port")
    quantizer = _convert(optimizer.quantizer, _QUANTIZERS, "quantizer")
    overrides = optimizer.group_quantizer_map or {}
    groups, offset, k, lrs, first = [], 0, 0, [], None
    for index, group in enumerate(optimizer.param_groups):
        size = len(group["params"])
        if group.get("quant_bits", 16) < 16:
            spec = {
                "leaf_indices": frozenset(range(offset, offset + size)),
                "quant_bits": group["quant_bits"],
                "quant_block_size": group.get("quant_block_size"),
            }
            if k in overrides:
                spec["quantizer"] = _convert(overrides[k], _QUANTIZERS, "quantizer")
            groups.append(spec)
            lrs.append(float(group["lr"]))
            first = index if first is None else first
            k += 1
        offset += size
    if optimizer.quant_shrink and len(set(lrs)) > 1:
        raise ValueError(f"quant_shrink sums one lr here; the quantized groups have lrs {lrs}")
    inner, lr = _inner(optimizer, scheduler, steps_per_epoch, overrides, first, lrs)
    return quant_optimizer(
        inner,
        quantizer,
        _convert(optimizer.prox_map, _PROX_MAPS, "proximal map"),
        groups,
        warmup_steps=optimizer.warmup_steps,
        quant_period=optimizer.quant_period,
        quant_per_channel=optimizer.quant_per_channel,
        quant_shrink=optimizer.quant_shrink,
        lr=lr,
    )


def _prune_from_torch(
    optimizer: Any, scheduler: Any, steps_per_epoch: int, overrides: dict[str, Any]
) -> optax.GradientTransformationExtraArgs:
    healing = None if optimizer.healing_start_step == sys.maxsize else optimizer.healing_start_step
    groups, offset, lrs, first = [], 0, [], None
    for index, group in enumerate(optimizer.param_groups):
        size = len(group["params"])
        if group.get("prox_type"):
            for key, default in (("prox_freq", 1), ("gamma_index_slope", 0.0)):
                if group.get(key, default) != default:
                    raise ValueError(
                        f"PruneOptimizer group key {key}={group[key]!r} is not available"
                    )
            converted = {
                "leaf_indices": frozenset(range(offset, offset + size)),
                "prox_type": group["prox_type"],
                "group_type": group.get("group_type", "ElemGrouper"),
                "reg_lambda": group["reg_lambda"],
            }
            for key in (
                "k",
                "num_heads",
                "min_sparsity",
                "min_sparsity_schedule",
                "n_nonzero",
                "score_type",
                "prox_through_heal",
            ):
                if key in group:
                    converted[key] = group[key]
            groups.append(converted)
            lrs.append(float(group["lr"]))
            first = index if first is None else first
        offset += size
    if len(set(lrs)) > 1:
        raise ValueError(f"gamma sums one lr here; the pruned groups have lrs {lrs}")
    inner, lr = _inner(optimizer, scheduler, steps_per_epoch, overrides, first, lrs)
    return prune_optimizer(
        inner, groups, warmup_steps=optimizer.warmup_steps, lr=lr, healing_start_step=healing
    )


def _inner(
    optimizer: Any,
    scheduler: Any,
    steps_per_epoch: int,
    overrides: dict[str, Any],
    first: int | None,
    lrs: list[float],
) -> tuple[optax.GradientTransformation, Any]:
    """The converted base optimizer, and the lr summed into gamma: the first quantized (pruned)
    group's, scheduled when a scheduler is given."""
    inner = optim.from_torch(
        optimizer.base_optimizer, scheduler, steps_per_epoch=steps_per_epoch, **overrides
    )
    if scheduler is None or first is None:
        return inner, (lrs[0] if lrs else 0.0)
    return inner, schedules.from_torch(scheduler, group=first, steps_per_epoch=steps_per_epoch)
