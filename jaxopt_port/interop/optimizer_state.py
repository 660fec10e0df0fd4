"""torch optimizer ``state_dict()`` ↔ jaxopt_port optimizer state, lossless both ways.

Every jaxopt_port state NamedTuple names its fields as torch names its state keys
(``exp_avg``, ``momentum_buffer``, ``step``, ...), so the conversion is mechanical and written
once for all 15 optimizers: the state ``tx.init(params)`` builds is the template, and each field is
filled from (or read into) ``state_dict["state"][i]`` for the i-th leaf of ``params`` — the
leaf-order convention of ``optim.from_torch``. Fields named ``count`` (optax bookkeeping that
indexes schedules) take the number of optimizer steps taken, read from torch's ``step``.
L-BFGS's single state goes under parameter 0 with its history as torch's lists.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port.interop.weights import to_numpy as _numpy
from jaxopt_port.optim._state import absent as _absent
from jaxopt_port.optim._state import is_array as _is_array
from jaxopt_port.optim._state import per_param_entries, per_param_state
from jaxopt_port.optim.lbfgs import LBFGSState

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
            return type(node)(
                *(
                    self._field(name, value, node)
                    for name, value in zip(node._fields, node, strict=True)
                )
            )
        if isinstance(node, (tuple, list)):
            return type(node)(self.fill(child) for child in node)
        if isinstance(node, dict):
            return type(node)((k, self.fill(v)) for k, v in node.items())
        return node

    def _field(self, name: str, value: Any, node: Any) -> Any:
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
            for i, state in enumerate(self.torch_state):
                if name in state:
                    return _cast(state[name], value, f"state[{i}][{name!r}]")
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
      params: the parameters; leaf i is torch's parameter i.
      count: optimizer steps taken, for ``count`` fields (schedules); by default torch's ``step``
        (L-BFGS has none: pass it, or it stays 0).

    Returns:
      ``tx.init(params)`` with every torch state entry filled in. Parameters torch has no state for
      (not stepped yet) keep the initial state, as torch would create it.

    Raises:
      ValueError: the number of parameters differs, or an entry has another shape (the message
        names the entry and both shapes). Nothing is returned half-converted.
    """
    leaves = jax.tree_util.tree_leaves(params)
    groups = state_dict.get("param_groups", [])
    ids = [i for g in groups for i in g["params"]]
    if ids and len(ids) != len(leaves):
        raise ValueError(
            f"the torch optimizer has {len(ids)} parameters, params has {len(leaves)} leaves"
        )
    order = ids or list(range(len(leaves)))
    torch_state = [dict(state_dict["state"].get(i, {})) for i in order]
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
) -> dict[str, Any]:
    """A torch ``state_dict()`` (NumPy arrays) holding the jaxopt_port state ``opt_state``.

    Args:
      opt_state: a state of ``tx``.
      tx: the transformation (used to check the state's structure).
      params: the parameters; leaf i becomes torch's parameter i.
      param_groups: torch's ``param_groups`` to store (hyperparameters); by default one group
        holding every parameter. Load into a torch optimizer built with the same hyperparameters
        with ``optimizer.load_state_dict(to_torch_tensors(...))`` — see :func:`load_into_torch`.

    Returns:
      ``{"state": {i: {key: array}}, "param_groups": [...]}``; ``step`` entries are float arrays
      as torch keeps them.
    """
    template = jax.tree_util.tree_structure(tx.init(params))
    if jax.tree_util.tree_structure(opt_state) != template:
        raise ValueError("opt_state does not have the structure of tx.init(params)")
    per_param = per_param_state(opt_state, params)
    state: dict[int, dict[str, Any]] = {}
    for i, entries in enumerate(per_param):
        if entries:
            state[i] = {k: _to_torch_value(k, v) for k, v in entries.items()}
    n = len(per_param)
    groups = param_groups if param_groups is not None else [{"params": list(range(n))}]
    return {"state": state, "param_groups": groups}


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
    ``opt_state``'s. Position a scheduler separately (its ``last_epoch`` is the step count).
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
