"""torch optimizer ``state_dict()`` ↔ jaxopt_port optimizer state, lossless both ways.

Every jaxopt_port state NamedTuple names its fields as torch names its state keys
(``exp_avg``, ``momentum_buffer``, ``step``, ...), so the conversion is mechanical and written
once for all 15 optimizers: the state ``tx.init(params)`` builds is the template, and each field is
filled from (or read into) ``state_dict["state"][i]`` for the i-th leaf of ``params`` — the
leaf-order convention of ``optim.from_torch``. Fields named ``count`` (optax bookkeeping that
indexes schedules) take the number of optimizer steps taken, read from torch's ``step``.
L-BFGS's single state goes under parameter 0 with its history as torch's lists.

Param groups. A transformation built by a jaxopt_port optimizer, ``optim.from_torch``,
``schedules.with_schedules`` or ``transforms.param_groups`` carries torch's param groups (a
:class:`~jaxopt_port.optim.TorchTransformation`): their hyperparameters, written into the
``state_dict`` so that a plain ``torch_optimizer.load_state_dict`` restores them, and which leaves
each holds. torch numbers its parameters group after group, so with interleaved groups
(``param_groups`` selecting by pattern) torch id ``k`` is the ``k``-th leaf in that order, not
leaf ``k``; leaves of a frozen group have no torch id. Both directions use the same mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port.interop.weights import to_numpy as _numpy
from jaxopt_port.optim._hyperparams import TorchGroup, torch_layout
from jaxopt_port.optim._state import absent as _absent
from jaxopt_port.optim._state import is_array as _is_array
from jaxopt_port.optim._state import per_param_entries, per_param_state
from jaxopt_port.optim.lbfgs import LBFGSState
from jaxopt_port.schedules._core import TorchSchedule

__all__ = ["load_into_torch", "optimizer_state_from_torch", "optimizer_state_to_torch"]


def _cast(value: Any, like: Any, where: str) -> jax.Array:
    array = _numpy(value)
    if array.size == 1 and np.ndim(like) == 0:
        array = array.reshape(())
    if array.shape != tuple(np.shape(like)):
        raise ValueError(
            f"{where}: torch has shape {tuple(array.shape)}, the jaxopt_port state expects "
            f"{tuple(np.shape(like))}"
        )
    return jnp.asarray(array, like.dtype)


class _Filler:
    """Rebuilds a template state with torch's values (the inverse of ``per_param_state``)."""

    def __init__(self, torch_state: list[dict[str, Any]], params: Any, count: int) -> None:
        self.torch_state = torch_state
        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        self.shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        self.count = count

    def fill(self, node: Any) -> Any:
        if isinstance(node, LBFGSState):
            return self._lbfgs(node)
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            served = self._served(node)
            return type(node)(
                *(
                    self._field(name, value, node, served)
                    for name, value in zip(node._fields, node, strict=True)
                )
            )
        if isinstance(node, (tuple, list)):
            return type(node)(self.fill(child) for child in node)
        if isinstance(node, dict):
            return type(node)((k, self.fill(v)) for k, v in node.items())
        return node

    def _served(self, node: Any) -> list[int]:
        """The leaves whose state this NamedTuple holds (all, if it holds no per-leaf field): its
        shared scalars (``step``, ASGD's ``eta``) come from theirs, as ``per_param_state`` puts
        them there."""
        served: set[int] = set()
        for value in node:
            entries = (
                None if _absent(value) else per_param_entries(value, self.treedef, self.shapes)
            )
            served.update(i for i, entry in enumerate(entries or ()) if not _absent(entry))
        return sorted(served) or list(range(len(self.torch_state)))

    def _field(self, name: str, value: Any, node: Any, served: list[int]) -> Any:
        if _absent(value):
            return value
        if name == "count" and _is_array(value) and np.ndim(value) == 0:
            return jnp.asarray(self.count, value.dtype)
        entries = per_param_entries(value, self.treedef, self.shapes)
        if entries is not None:
            filled = []
            for i, entry in enumerate(entries):
                if _absent(entry) or name not in self.torch_state[i]:
                    filled.append(entry)  # torch creates state lazily: not stepped yet
                else:
                    where = f"state[{i}][{name!r}] ({type(node).__name__})"
                    filled.append(_cast(self.torch_state[i][name], entry, where))
            return self.treedef.unflatten(filled)
        if _is_array(value) and np.ndim(value) == 0:
            for i in served:
                if name in self.torch_state[i]:
                    return _cast(self.torch_state[i][name], value, f"state[{i}][{name!r}]")
            return value
        return self.fill(value)

    def _lbfgs(self, node: LBFGSState) -> LBFGSState:
        state = self.torch_state[0] if self.torch_state else {}
        if not state:
            return node
        out = node._replace(
            func_evals=jnp.asarray(state["func_evals"], node.func_evals.dtype),
            n_iter=jnp.asarray(state["n_iter"], node.n_iter.dtype),
            count=jnp.asarray(self.count, node.count.dtype),
        )
        if "d" not in state:
            return out
        history = [np.asarray([_numpy(v) for v in state[k]]) for k in ("old_dirs", "old_stps")]
        ro = np.asarray([float(_numpy(v)) for v in state["ro"]])
        size, num_old = node.ro.shape[0], len(ro)
        if num_old > size:
            raise ValueError(f"torch holds {num_old} L-BFGS pairs, history_size is {size}")

        def ring(values: np.ndarray, like: jax.Array) -> jax.Array:
            buffer = np.zeros(like.shape, like.dtype)
            buffer[:num_old] = values.reshape((num_old, *like.shape[1:]))
            return jnp.asarray(buffer)

        fields = {k: _cast(state[k], getattr(node, k), f"state[0][{k!r}]") for k in ("d", "t", "H_diag", "prev_flat_grad", "prev_loss")}  # fmt: skip
        return out._replace(
            old_dirs=ring(history[0], node.old_dirs),
            old_stps=ring(history[1], node.old_stps),
            ro=ring(ro, node.ro),
            num_old=jnp.asarray(num_old, node.num_old.dtype),
            oldest=jnp.asarray(0, node.oldest.dtype),
            **fields,
        )


def optimizer_state_from_torch(
    state_dict: dict[str, Any],
    tx: optax.GradientTransformation,
    params: Any,
    *,
    count: int | None = None,
) -> optax.OptState:
    """The jaxopt_port state equal to a torch optimizer's ``state_dict()``.

    Args:
      state_dict: ``torch_optimizer.state_dict()`` (tensors or arrays), ``state`` keyed by integer
        ids in ``param_groups`` order.
      tx: the transformation, e.g. ``optim.from_torch(torch_optimizer, scheduler=...)``.
      params: the parameters; leaf i is torch's parameter i — or, when ``tx`` carries several
        param groups (``transforms.param_groups``), torch's parameters are the leaves group after
        group (module docstring).
      count: optimizer steps taken, for ``count`` fields (schedules); by default torch's ``step``
        (L-BFGS has none: pass it, or it stays 0).

    Returns:
      ``tx.init(params)`` with every torch state entry filled in. Parameters torch has no state for
      (not stepped yet) keep the initial state, as torch would create it.

    Raises:
      ValueError: the number of parameters differs, the param groups differ from those ``tx``
        carries in number or size (torch's messages), or an entry has another shape (the message
        names the entry and both shapes). Nothing is returned half-converted.
    """
    leaves = jax.tree_util.tree_leaves(params)
    layout, order = _layout(tx, params)
    groups = state_dict.get("param_groups", [])
    _check_groups(groups, layout, order, len(leaves), "the torch optimizer")
    ids = [i for g in groups for i in g["params"]] or list(range(len(order)))
    torch_state: list[dict[str, Any]] = [{} for _ in leaves]
    for torch_id, leaf in zip(ids, order, strict=True):
        torch_state[leaf] = dict(state_dict["state"].get(torch_id, {}))
    if count is None:
        steps = [float(_numpy(s["step"])) for s in torch_state if "step" in s]
        count = int(max(steps)) if steps else 0
    return _Filler(torch_state, params, count).fill(tx.init(params))


def optimizer_state_to_torch(
    opt_state: optax.OptState,
    tx: optax.GradientTransformation,
    params: Any,
    *,
    param_groups: list[dict[str, Any]] | None = None,
    count: int | None = None,
) -> dict[str, Any]:
    """A torch ``state_dict()`` (NumPy arrays) holding the jaxopt_port state ``opt_state``.

    When ``tx`` carries torch's param groups — it was built by a jaxopt_port optimizer
    (``optim.adamw(...)``), ``optim.from_torch``, ``schedules.with_schedules`` or
    ``transforms.param_groups`` / ``no_weight_decay`` — the result is a complete torch
    ``state_dict``: after turning the arrays into tensors, ``torch_optimizer.load_state_dict``
    loads it into a torch optimizer built over the same parameters with the same group structure
    (whatever hyperparameters it was built with), and leaves its ``param_groups`` as those of a
    torch optimizer trained the same way. Each group holds every torch key of the call (AdamW's
    ``decoupled_weight_decay=True`` too; Muon's ``ns_dtype`` is not torch's); a scheduled value
    is the schedule's value after ``count`` steps, as torch's scheduler leaves it, with torch's
    ``initial_lr`` for a ``jaxopt_port.schedules`` lr; ReduceLROnPlateau's lr is read from
    ``opt_state``; ``from_torch`` also keeps the keys a scheduler added (``max_lr``, ...).

    A transformation wrapped further (``optax.chain``, ``optax.MultiSteps``,
    ``optax.inject_hyperparams``) or built from optax pieces carries no groups: then the result has
    one group with only ``"params"`` unless ``param_groups`` is given, and loads only with
    :func:`load_into_torch` (which keeps the torch optimizer's hyperparameters) or after adding
    the hyperparameters to each group.

    Args:
      opt_state: a state of ``tx``.
      tx: the transformation (its structure is checked; its param groups are written).
      params: the parameters; leaf i becomes torch's parameter i (with several carried groups,
        the leaves group after group: see the module docstring).
      param_groups: torch's ``param_groups`` to store instead of the carried ones (e.g.
        ``torch_optimizer.state_dict()["param_groups"]``); each group's ``"params"`` ids are kept.
      count: the number of optimizer steps taken, at which schedules are evaluated; by default
        the state's (its ``count`` fields and torch's ``step`` entries).

    Returns:
      ``{"state": {i: {key: array}}, "param_groups": [...]}``; ``step`` entries are float arrays
      as torch keeps them; hyperparameters are Python values (or the tensors they were given as).

    Raises:
      ValueError: ``opt_state`` is not a state of ``tx``; ``param_groups`` differs from the
        carried groups in number or size (torch's messages); ``count`` is negative.
    """
    template = jax.tree_util.tree_structure(tx.init(params))
    if jax.tree_util.tree_structure(opt_state) != template:
        raise ValueError("opt_state does not have the structure of tx.init(params)")
    layout, order = _layout(tx, params)
    leaves = jax.tree_util.tree_leaves(params)
    per_param = per_param_state(opt_state, params)
    state: dict[int, dict[str, Any]] = {}
    for torch_id, leaf in enumerate(order):
        if per_param[leaf]:
            state[torch_id] = {k: _to_torch_value(k, v) for k, v in per_param[leaf].items()}
    if param_groups is not None:
        _check_groups(param_groups, layout, order, len(leaves), "param_groups")
        return {"state": state, "param_groups": param_groups}
    if count is None:
        count = _steps_taken(opt_state, per_param)
    elif not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    groups, start = [], 0
    for group, group_leaves in layout:
        sub_state = opt_state
        if group is not None and group.label is not None:
            sub_state = opt_state.inner_states[group.label]
        hyperparams = {} if group is None else _group_values(group.hyperparams, count, sub_state)
        groups.append({**hyperparams, "params": list(range(start, start + len(group_leaves)))})
        start += len(group_leaves)
    return {"state": state, "param_groups": groups}


def _layout(tx: Any, params: Any) -> tuple[list[tuple[TorchGroup | None, list[int]]], list[int]]:
    """``tx``'s torch param groups with their leaves, and the leaf index of each torch id."""
    layout = torch_layout(tx, params)
    return layout, [leaf for _, group_leaves in layout for leaf in group_leaves]


def _check_groups(
    groups: list[dict[str, Any]], layout: list, order: list[int], num_leaves: int, what: str
) -> None:
    """torch's ``load_state_dict`` checks, for ``groups`` against the groups ``tx`` carries."""
    if not groups:
        return
    if len(layout) > 1:  # several carried groups: the structure must be torch's
        if len(groups) != len(layout):
            raise ValueError(
                f"{what} has {len(groups)} parameter groups, tx has {len(layout)}: "
                "loaded state dict has a different number of parameter groups"
            )
        sizes = [len(g["params"]) for g in groups]
        carried = [len(group_leaves) for _, group_leaves in layout]
        if sizes != carried:
            raise ValueError(
                f"{what} has parameter groups of sizes {sizes}, tx's hold {carried} leaves: "
                "loaded state dict contains a parameter group that doesn't match the size of "
                "optimizer's group"
            )
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(order):
        frozen = "" if len(order) == num_leaves else f" ({len(order)} in tx's param groups)"
        raise ValueError(
            f"{what} has {len(ids)} parameters, params has {num_leaves} leaves{frozen}"
        )


def _nodes(tree: Any) -> Iterator[Any]:
    """Every node of a state tree (NamedTuples, tuples, lists, dicts and leaves), depth first."""
    yield tree
    children = tree.values() if isinstance(tree, dict) else tree
    if isinstance(tree, (tuple, list, dict)):
        for child in children:
            yield from _nodes(child)


def _steps_taken(opt_state: Any, per_param: list[dict[str, Any]]) -> int:
    """The number of updates ``opt_state`` has seen: its ``count`` fields (optax bookkeeping,
    L-BFGS's) and torch's ``step`` entries; 0 when it holds neither."""
    counts = [int(np.asarray(entries["step"])) for entries in per_param if "step" in entries]
    for node in _nodes(opt_state):
        count = node.count if "count" in getattr(node, "_fields", ()) else None
        if _is_array(count) and np.ndim(count) == 0:
            counts.append(int(count))
    return max(counts, default=0)


def _group_values(hyperparams: Any, count: int, state: Any) -> dict[str, Any]:
    """A carried group's hyperparameters as torch holds them after ``count`` steps."""
    with jax.enable_x64(True):  # torch's scheduler computes in Python floats
        out = {k: _group_value(k, v, count, state) for k, v in hyperparams.items()}
    lr = hyperparams.get("lr")
    if isinstance(lr, TorchSchedule):
        out.setdefault("initial_lr", lr.base_lr)
    return out


def _group_value(key: str, value: Any, count: int, state: Any) -> Any:
    if isinstance(value, optax.schedules.StatefulSchedule):
        return float(value(_schedule_state(state, key)))
    if callable(value) and not isinstance(value, type):  # a schedule count -> value
        return float(np.asarray(value(count)))
    if isinstance(value, (tuple, list)):  # betas with a scheduled β1
        return type(value)(_group_value(key, v, count, state) for v in value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.size(value) == 1:
        return np.asarray(value).item()
    return value


def _schedule_state(state: Any, key: str) -> Any:
    """The state of the stateful schedule ``optax.inject_hyperparams`` feeds into ``key``."""
    for node in _nodes(state):
        if isinstance(node, optax.schedules.InjectStatefulHyperparamsState):
            if key in node.hyperparams_states:
                return node.hyperparams_states[key]
    raise ValueError(
        f"{key!r} follows a stateful schedule (ReduceLROnPlateau) whose state is not in "
        "opt_state; build the transformation with schedules.with_schedules, or pass "
        "param_groups="
    )


def _to_torch_value(key: str, value: Any) -> Any:
    if key in ("old_dirs", "old_stps", "ro"):  # L-BFGS history: torch keeps lists
        return list(np.asarray(value))
    array = np.asarray(value)
    if key in ("func_evals", "n_iter"):
        return int(array)
    if key == "step":
        return array.astype(np.float64) if array.dtype.kind in "iu" else array
    return array


def load_into_torch(
    optimizer: Any, opt_state: optax.OptState, tx: optax.GradientTransformation, params: Any
) -> None:
    """Load ``opt_state`` into a live torch optimizer built with the same hyperparameters.

    The optimizer keeps its own ``param_groups`` (hyperparameters); its per-parameter state becomes
    ``opt_state``'s. Position a scheduler separately (its ``last_epoch`` is the step count). To
    take the hyperparameters from ``tx`` instead, load :func:`optimizer_state_to_torch`'s result
    (arrays made tensors) with ``optimizer.load_state_dict``.
    """
    import torch  # an interop path: torch is only needed here

    converted = optimizer_state_to_torch(
        opt_state, tx, params, param_groups=optimizer.state_dict()["param_groups"]
    )

    def tensor(value: Any) -> Any:
        if isinstance(value, list):
            return [torch.as_tensor(np.array(v)) for v in value]
        if isinstance(value, np.ndarray):
            return torch.as_tensor(np.array(value))
        return value

    converted["state"] = {
        i: {k: tensor(v) for k, v in entries.items()} for i, entries in converted["state"].items()
    }
    optimizer.load_state_dict(converted)
