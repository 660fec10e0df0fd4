"""Which NNX leaf holds which torch parameter, and how a transformation's param groups meet torch's.

The matching behind `jaxopt_port.interop.nnx_optimizer` (its docstring describes the rules):
torch's parameters named (`torch_side`), placed element by element in the NNX model through
the weight converter's layout mapping, and checked against `tx`'s groups (`match_torch`) and
hyperparameters (`check_hyperparams`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxopt_port._core import to_numpy, torch_kind
from jaxopt_port._core.torch_groups import TorchGroup, torch_layout
from jaxopt_port.interop._torch_inputs import check_optimizer_state_dict
from jaxopt_port.interop.weights import element_sources

__all__ = ["Match", "TorchSide", "check_hyperparams", "match_torch", "torch_names", "torch_side"]

_KERNEL_KEYS = frozenset({"foreach", "fused", "capturable", "differentiable"})
"""Group keys that select torch kernels only (their results agree to ≤ 2e-15 on CPU)."""


@dataclasses.dataclass(frozen=True)
class TorchSide:
    """A torch optimizer's `state_dict()` and the name of each of its parameters.

    Positions `0, 1, ...` are torch's parameters in `param_groups` order: `ids[p]` is the
    key of parameter `p` in `state_dict["state"]`, `names[p]` its module name, `group[p]`
    its param group.
    """

    state_dict: Mapping[str, Any]
    ids: list[Any]
    names: list[str]
    group: list[int]


def torch_side(torch_optimizer: Any, torch_model: Any, where: str) -> TorchSide:
    check_optimizer_state_dict(torch_optimizer, where, live_ok=True)
    live = torch_optimizer if torch_kind(torch_optimizer) == "optimizer" else None
    state_dict = torch_optimizer if live is None else live.state_dict()
    groups = state_dict["param_groups"]
    ids = [i for g in groups for i in g["params"]]
    group = [n for n, g in enumerate(groups) for _ in g["params"]]
    names = _names(groups, live, torch_model, len(ids), where)
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{where}: the torch optimizer holds {twice} more than once")
    return TorchSide(state_dict, ids, names, group)


def _names(
    groups: list[dict[str, Any]], live: Any, torch_model: Any, count: int, where: str
) -> list[str]:
    """torch's name of each parameter of the optimizer, in `param_groups` order."""
    if groups and all("param_names" in g for g in groups):
        return [n for g in groups for n in g["param_names"]]
    how = (
        "pass torch_model= (the torch nn.Module, or the parameter names in the optimizer's "
        "order), or build the torch optimizer from model.named_parameters()"
    )
    if torch_model is None:
        raise ValueError(
            f"{where} needs the torch name of each of the optimizer's parameters to find its NNX "
            f"variable (NNX orders parameters by path, not as torch does): {how}"
        )
    if torch_kind(torch_model) == "module":
        named = list(torch_model.named_parameters())
        if live is not None:
            by_identity = {id(p): n for n, p in named}
            names = []
            for g, group in enumerate(live.param_groups):
                for p in group["params"]:
                    if id(p) not in by_identity:
                        raise ValueError(
                            f"{where}: a parameter of the torch optimizer (param group {g}, shape "
                            f"{tuple(p.shape)}) is not a parameter of torch_model "
                            f"{type(torch_model).__name__}"
                        )
                    names.append(by_identity[id(p)])
            return names
        if len(groups) == 1 and count == len(named):
            return [n for n, _ in named]
        raise ValueError(
            f"{where}: the state_dict has {len(groups)} param groups with {count} parameters and "
            f"torch_model has {len(named)}; a state_dict only numbers its parameters, so pass "
            "the live torch optimizer, the parameter names in its order as torch_model=, or a "
            "state_dict of an optimizer built from model.named_parameters()"
        )
    if isinstance(torch_model, str) or not isinstance(torch_model, Sequence):
        raise TypeError(
            f"{where}: torch_model must be a torch nn.Module or a sequence of parameter names, "
            f"got {type(torch_model).__name__}"
        )
    names = list(torch_model)
    if len(names) != count or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{where}: torch_model must name each of the optimizer's {count} parameters in its "
            f"order, got {len(names)} entries"
        )
    return names


def _key(entry: Any) -> Any:
    """A `jax.tree_util` path entry of an `nnx.State` as `nnx.iter_graph` spells it."""
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return entry


@dataclasses.dataclass(frozen=True)
class Match:
    """Which torch elements each NNX leaf holds, and how `tx`'s groups meet torch's.

    `sources[i]`: for leaf `i` of `params` (`nnx.state(model, wrt)`, matched to the
    model's variables by path), the position of each of its elements in torch's parameters
    flattened one after the other (`offsets`), or None; `owners[i]`: those parameters.
    `order`: `tx`'s leaves group after group (`torch_layout`), the order
    `optimizer_state_from_torch`/`_to_torch` number them; `tx_groups[j]`: `tx`'s group
    `j`, with `sizes[j]` leaves, and its torch group `torch_group[j]` (None when it holds no
    leaf).
    """

    side: TorchSide
    shapes: list[tuple[int, ...]]
    offsets: np.ndarray
    leaves: list[str]
    sources: list[np.ndarray | None]
    owners: list[list[int]]
    order: list[int]
    sizes: list[int]
    tx_groups: list[TorchGroup | None]
    torch_group: list[int | None]

    def identity(self, leaf: int) -> bool:
        """Leaf `leaf` is one torch parameter in torch's layout."""
        (p,) = self.owners[leaf]
        src = self.sources[leaf]
        return src.shape == self.shapes[p] and bool(
            np.array_equal(src.ravel(), np.arange(self.offsets[p], self.offsets[p + 1]))
        )


def match_torch(side: TorchSide, model: nnx.Module, params: Any, tx: Any, where: str) -> Match:
    shapes, found = element_sources(model, side.names)
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    pure = nnx.as_pure(params)
    paths = [tuple(_key(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(pure)[0]]  # fmt: skip
    leaves = ["/".join(map(str, path)) for path in paths]
    sources: list[np.ndarray | None] = []
    for path, name in zip(paths, leaves, strict=True):
        src = found.get(path)
        if src is not None and np.any(src < 0):
            raise ValueError(
                f"{where}: the NNX variable {name!r} holds elements of torch parameters the "
                "torch optimizer does not hold and of ones it does"
            )
        sources.append(src)
    uses = np.zeros(int(offsets[-1]), np.int64)
    for src in sources:
        if src is not None:
            np.add.at(uses, src.ravel(), 1)
    owner_of = lambda elements: sorted({side.names[int(p)] for p in np.searchsorted(offsets, elements, "right") - 1})  # fmt: skip
    if np.any(uses == 0):
        raise ValueError(
            f"{where}: the torch optimizer holds {owner_of(np.flatnonzero(uses == 0))}, but their "
            "NNX variables are not all in the nnx.Optimizer's wrt filter (nnx.state(model, wrt))"
        )
    if np.any(uses > 1):
        raise ValueError(
            f"{where}: elements of {owner_of(np.flatnonzero(uses > 1))} are held by more than "
            "one NNX variable"
        )
    owners = [
        sorted({int(p) for p in np.searchsorted(offsets, src.ravel(), "right") - 1})
        if src is not None
        else []
        for src in sources
    ]
    layout = torch_layout(tx, pure)
    order = [leaf for _, group_leaves in layout for leaf in group_leaves]
    held = set(order)
    for leaf, src in enumerate(sources):
        if src is None and leaf in held:
            raise ValueError(
                f"{where}: tx optimizes the NNX leaf {leaves[leaf]!r}, which holds no parameter "
                "of the torch optimizer; if torch does not train it, freeze it in tx "
                "(transforms.param_groups(..., unmatched='freeze')) or leave it out of wrt"
            )
        if src is not None and leaf not in held:
            raise ValueError(
                f"{where}: the torch optimizer trains {[side.names[p] for p in owners[leaf]]} (NNX leaf "
                f"{leaves[leaf]!r}), which tx freezes"
            )
    torch_group: list[int | None] = []
    for j, (group, group_leaves) in enumerate(layout):
        seen: dict[int, int] = {}  # torch group -> a leaf of tx's group j in it
        for leaf in group_leaves:
            for p in owners[leaf]:
                seen.setdefault(side.group[p], leaf)
        if len(seen) > 1:
            (g1, a), (g2, b) = list(seen.items())[:2]
            label = f"{group.label!r}" if group is not None and group.label is not None else str(j)
            raise ValueError(
                f"{where}: tx's param group {label} holds the NNX leaves {leaves[a]!r} (torch "
                f"{torch_names(side, owners[a])}, torch param group {g1}) and {leaves[b]!r} "
                f"(torch {torch_names(side, owners[b])}, torch param group {g2}), so one of them "
                "would get the other group's hyperparameters. Build tx with "
                "transforms.param_groups (patterns over NNX paths) or "
                "transforms.no_weight_decay so that each of its groups selects the parameters "
                f"of one torch group: {_torch_groups(side)}"
            )
        torch_group.append(next(iter(seen), None))
    matched = [g for g in torch_group if g is not None]
    if len(set(matched)) != len(matched):
        g = next(g for g in matched if matched.count(g) > 1)
        raise ValueError(
            f"{where}: torch param group {g} is split over {matched.count(g)} of tx's param "
            f"groups; each torch group needs one group of tx: {_torch_groups(side)}"
        )
    return Match(
        side=side,
        shapes=shapes,
        offsets=offsets,
        leaves=leaves,
        sources=sources,
        owners=owners,
        order=order,
        sizes=[len(group_leaves) for _, group_leaves in layout],
        tx_groups=[group for group, _ in layout],
        torch_group=torch_group,
    )


def torch_names(side: TorchSide, positions: list[int]) -> str:
    names = [side.names[p] for p in positions]
    return repr(names[0]) if len(names) == 1 else repr(names)


def _torch_groups(side: TorchSide) -> str:
    groups: dict[int, list[str]] = {}
    for name, g in zip(side.names, side.group, strict=True):
        groups.setdefault(g, []).append(name)
    return "; ".join(f"torch group {g} holds {names}" for g, names in groups.items())


# ----------------------------------------------------------------------------- hyperparameters


def _number(value: Any) -> float | bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if hasattr(value, "shape") and not callable(value) and np.size(to_numpy(value)) == 1:
        return float(to_numpy(value).reshape(()))
    return None  # a schedule, a string, None: not compared


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return True
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=0.0)


def check_hyperparams(match: Match, where: str) -> None:
    torch_groups = match.side.state_dict["param_groups"]
    for j, (group, g) in enumerate(zip(match.tx_groups, match.torch_group, strict=True)):
        if group is None or g is None:
            continue
        for key, mine in group.hyperparams.items():
            if key in _KERNEL_KEYS or key not in torch_groups[g]:
                continue
            if not _same(mine, torch_groups[g][key]):
                label = group.label if group.label is not None else j
                hint = (
                    " (a torch scheduler moves it: give tx the schedule, e.g. "
                    "schedules.from_torch(scheduler, group=i))"
                    if key == "lr"
                    else ""
                )
                raise ValueError(
                    f"{where}: tx's param group {label!r} has {key}={mine!r}, the torch param "
                    f"group {g} holding the same parameters has {key}={torch_groups[g][key]!r}"
                    + hint
                )
