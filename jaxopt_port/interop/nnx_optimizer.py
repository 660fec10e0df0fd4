"""A torch optimizer's state <-> a Flax `nnx.Optimizer` over the NNX twin of the torch model.

[`nnx_optimizer_from_torch`][jaxopt_port.interop.nnx_optimizer_from_torch] builds (or fills) an
`nnx.Optimizer` from a torch optimizer;
[`nnx_optimizer_to_torch`][jaxopt_port.interop.nnx_optimizer_to_torch] writes an `nnx.Optimizer`'s
state as the `state_dict()` a torch optimizer loads. Use them with
[`weights_from_torch`][jaxopt_port.interop.weights_from_torch] /
[`weights_to_torch`][jaxopt_port.interop.weights_to_torch] for the weights:

```python
interop.weights_from_torch(model, torch_model.state_dict())
optimizer = interop.nnx_optimizer_from_torch(torch_optimizer, model, tx, torch_model=torch_model)
...  # train with optimizer.update(model, grads)
torch_model.load_state_dict(interop.weights_to_torch(model))
torch_optimizer.load_state_dict(
    interop.nnx_optimizer_to_torch(optimizer, model, torch_optimizer, torch_model=torch_model))
```

**Matching by name**

`nnx.Optimizer` keeps its state over `nnx.state(model, wrt)`, whose leaves NNX sorts by path
(`fc/bias` before `fc/kernel`), in NNX's layout (a Linear kernel is torch's weight
transposed). So a torch parameter is matched to its NNX variable by *name*, never by position:
torch's name of each parameter (`fc.weight`) comes from `param_names` in the optimizer's
`state_dict()` (torch keeps them when the optimizer was built from
`model.named_parameters()`), else from `torch_model` (the torch module: by identity for a
live optimizer, in `named_parameters()` order for a one-group state dict; or the names
themselves, in the optimizer's parameter order), and the name leads to the NNX variable as in
`weights` (`fc.weight` -> `fc.kernel`). The `module.` (DDP) and
`_orig_mod.` (`torch.compile`) prefixes of a wrapped torch model's names are removed as there.

**State layouts**

An entry laid out like its parameter (`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`,
`momentum_buffer`, `sum`, `square_avg`, `acc_delta`, `grad_avg`, `exp_inf`, `ax`,
`prev`, `step_size`, Adafactor's `variance`, ...) follows the parameter's layout mapping
exactly: Linear/Conv/ConvTranspose transposes, axis permutations and flips, the split of
MultiheadAttention's packed `in_proj_weight` into query/key/value kernels and of an RNN's
`weight_ih`/`weight_hh` into per-gate kernels. The mapping is the weight converter's own
(`element_sources`), so every element lands where its weight
lands, bit for bit. Scalar entries (`step`, ASGD's `eta` and `mu`, NAdam's
`mu_product`) are copied as they are.

Not supported, with a ValueError that names the parameter:

- RNN biases: the NNX cell's one bias holds torch's `bias_ih + bias_hh`, two torch
  parameters with their own state (and the twin trains differently: see the weights module's
  divergences). `bias=False` RNNs convert.
- Adafactor's factored `row_var`/`col_var` of a parameter whose NNX layout differs from
  torch's (a Linear or Conv kernel): they average over the *last two* dimensions, which are
  other axes in the NNX layout, so Adafactor itself computes something else on the NNX twin.
  Parameters with torch's layout (Embedding, norms, biases) convert.

L-BFGS keeps one state for all parameters, its vectors (`d`, `prev_flat_grad`, the
`old_dirs`/`old_stps` history) over torch's parameters flattened in torch's order; the NNX
side flattens `nnx.state(model, wrt)` in its leaf order and layout (as
`optim.lbfgs` ravels its params). These vectors are permuted element for element between the
two flattenings; scalars (`t`, `H_diag`, `ro`, `prev_loss`, `func_evals`,
`n_iter`) are copied. L-BFGS then runs the same algorithm in another coordinate order: its
dot products sum in another order (measured: 6.7e-16 from torch's next step in float64).

**Param groups**

With several torch param groups the transformation must give every NNX leaf its torch group's
hyperparameters. `optim.from_torch` assumes torch's parameter order, which an `nnx.Optimizer` does
not have (NNX sorts paths); build `tx` with the pattern-based
[`jaxopt_port.transforms.param_groups`][jaxopt_port.transforms.param_groups.param_groups] or
[`no_weight_decay`][jaxopt_port.transforms.no_weight_decay] over NNX paths instead
(`no_weight_decay(optim.adamw, lr=..., weight_decay=...)` is torch's "no weight decay on biases and
norms" pair of groups). Both functions check that each of `tx`'s groups holds exactly the parameters
of one torch group (in any group order, reordered by name), that `tx` freezes exactly the NNX leaves
the torch optimizer does not hold, and (from torch) that the numeric and boolean hyperparameters the
two share are equal (`lr` unless `tx` schedules it, `weight_decay`, `betas`, `momentum`, `nesterov`, ...;
relative tolerance 1e-6), raising a ValueError that names the leaf, its torch parameter and both
groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxopt_port._core import to_numpy
from jaxopt_port.interop._nnx_match import (
    Match,
    check_hyperparams,
    match_torch,
    torch_names,
    torch_side,
)
from jaxopt_port.interop.optimizer_state import (
    optimizer_state_from_torch,
    optimizer_state_to_torch,
    to_tensor,
)
from jaxopt_port.interop.weights import _placed

__all__ = ["nnx_optimizer_from_torch", "nnx_optimizer_to_torch"]

#: Per-parameter entries that are not laid out like the parameter (Adafactor's factored second
#: moment: means over the last and the second-to-last dimension).
_FACTORED = frozenset({"row_var", "col_var"})
#: L-BFGS's state, kept under torch's first parameter; of it, the flat vectors over all parameters.
_LBFGS = frozenset(
    {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
     "prev_loss", "al"}
)  # fmt: skip
_LBFGS_FLAT = frozenset({"d", "prev_flat_grad", "old_dirs", "old_stps"})


# ----------------------------------------------------------------------------- torch -> NNX


def _gather(match: Match, leaf: int, arrays: dict[int, np.ndarray]) -> np.ndarray:
    """Leaf `leaf`'s value from torch arrays laid out like their parameters (by position)."""
    src = match.sources[leaf]
    owners = match.owners[leaf]
    if len(owners) == 1:
        return arrays[owners[0]].ravel()[src - match.offsets[owners[0]]]
    out = np.empty(src.shape, np.result_type(*(arrays[p].dtype for p in owners)))
    for p in owners:
        mine = (src >= match.offsets[p]) & (src < match.offsets[p + 1])
        out[mine] = arrays[p].ravel()[src[mine] - match.offsets[p]]
    return out


def _leaf_state(match: Match, leaf: int, where: str) -> dict[str, Any]:
    """The torch state of leaf `leaf`'s parameter(s) in the NNX layout."""
    side, owners = match.side, match.owners[leaf]
    states = [
        {k: v for k, v in side.state_dict["state"].get(side.ids[p], {}).items() if k not in _LBFGS}
        for p in owners
    ]  # fmt: skip
    if any(set(s) != set(states[0]) for s in states):
        raise ValueError(
            f"{where}: the torch parameters {[side.names[p] for p in owners]} of the NNX leaf "
            f"{match.leaves[leaf]!r} hold different state keys"
        )
    out: dict[str, Any] = {}
    for key, value in states[0].items():
        arrays = {p: to_numpy(s[key]) for p, s in zip(owners, states, strict=True)}
        if key not in _FACTORED and all(arrays[p].shape == match.shapes[p] for p in owners):
            out[key] = _gather(match, leaf, arrays)
        elif np.ndim(arrays[owners[0]]) == 0 or match.identity(leaf):
            out[key] = value  # a scalar (step, eta, mu_product), or torch's layout is NNX's
        else:
            p = owners[0]
            raise ValueError(
                f"{where}: state[{side.ids[p]}][{key!r}] of the torch parameter "
                f"{side.names[p]!r} has shape {arrays[p].shape}, not laid out like the parameter "
                f"{match.shapes[p]}, and the NNX variable {match.leaves[leaf]!r} holds that "
                f"parameter in another layout {match.sources[leaf].shape}: this state has no "
                "counterpart there (Adafactor's row_var/col_var average over torch's last two "
                "dimensions, other axes in the NNX layout)"
            )
    return out


def _flat_permutation(match: Match, where: str) -> np.ndarray:
    """`nnx_flat = torch_flat[P]`: the NNX leaves raveled in leaf order from torch's flattening."""
    if any(src is None for src in match.sources):
        raise ValueError(f"{where}: L-BFGS must hold every NNX leaf of wrt")
    return np.concatenate([src.ravel() for src in match.sources])


def _lbfgs_from_torch(match: Match, state: Mapping[str, Any], where: str) -> dict[str, Any]:
    permutation = _flat_permutation(match, where)
    out = dict(state)
    for key in _LBFGS_FLAT & set(state):
        if isinstance(state[key], (list, tuple)):
            out[key] = [to_numpy(v)[permutation] for v in state[key]]
        else:
            out[key] = to_numpy(state[key])[permutation]
    return out


def _count(opt_state: Any, state_dict: Mapping[str, Any], count: int | None) -> int:
    """The step count for `nnx.Optimizer.step`: `count`, else the state's `count` fields,
    else torch's largest `step`."""
    if count is not None:
        return int(count)
    counts = [int(v) for _, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count") if np.ndim(v) == 0]  # fmt: skip
    steps = [float(to_numpy(s["step"])) for s in state_dict["state"].values() if "step" in s]
    return max(counts + [int(s) for s in steps], default=0)


def nnx_optimizer_from_torch(
    torch_optimizer: Any,
    model: nnx.Module,
    tx: optax.GradientTransformation | nnx.Optimizer,
    *,
    torch_model: Any = None,
    wrt: Any = nnx.Param,
    count: int | None = None,
    **state_kwargs: Any,
) -> nnx.Optimizer:
    """An `nnx.Optimizer` over `model` holding a torch optimizer's state.

    Each torch parameter is matched to its NNX variable by name and its state entries are laid out
    as the weight is (module docstring); the result's `opt_state` is what
    [`optimizer_state_from_torch`][jaxopt_port.interop.optimizer_state_from_torch] gives for
    `nnx.state(model, wrt)`, so count inference and errors are that function's. The weights
    themselves are not touched: load them with
    [`weights_from_torch`][jaxopt_port.interop.weights_from_torch].

    Args:
      torch_optimizer: the torch optimizer, or its `state_dict()` (a checkpoint's).
      model: the NNX twin of the torch model (names and layouts as in
        `weights`).
      tx: the transformation (e.g. `transforms.no_weight_decay(optim.adamw, ...)`; see the
        module docstring for param groups), or an `nnx.Optimizer` over `model` to fill in
        place (its `tx` and `wrt` are used).
      torch_model: how to name torch's parameters when the `state_dict` has no
        `param_names` (an optimizer built from `model.parameters()`): the torch
        `nn.Module` (matched by identity with a live optimizer; with a `state_dict`, one
        param group in `named_parameters()` order), or the names in the optimizer's parameter
        order. Default None.
      wrt: the `nnx.Optimizer`'s filter (default `nnx.Param`); ignored when `tx` is an
        `nnx.Optimizer`.
      count: optimizer steps taken, passed to `optimizer_state_from_torch` (default None: read
        from torch's state there). Also written to the `nnx.Optimizer`'s `step`.
      **state_kwargs: further keywords for `optimizer_state_from_torch`.

    Returns:
      The `nnx.Optimizer` (`tx` itself when given one), its state equal to torch's.

    Raises:
      TypeError: `torch_optimizer` is neither a torch optimizer nor its `state_dict()` (a
        torch module, a model's state dict, ...), or `torch_model` is of the wrong kind.
      ValueError: a parameter that cannot be named or has no NNX counterpart; state without an
        NNX layout (RNN biases, Adafactor's factored moments of a transposed kernel); param
        groups or hyperparameters that differ between `tx` and torch (naming the leaf, its
        torch parameter and both groups); and `optimizer_state_from_torch`'s errors. Nothing
        is changed on error.

    Examples:
      >>> import torch
      >>> from flax import nnx
      >>> from jaxopt_port import interop, optim
      >>> torch_model = torch.nn.Linear(3, 2)
      >>> torch_optimizer = torch.optim.AdamW(torch_model.parameters(), lr=1e-3)
      >>> torch_model(torch.ones(1, 3)).sum().backward()
      >>> torch_optimizer.step()
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> interop.weights_from_torch(model, torch_model.state_dict())
      >>> optimizer = interop.nnx_optimizer_from_torch(
      ...     torch_optimizer, model, optim.adamw(lr=1e-3), torch_model=torch_model)
      >>> int(optimizer.step[...])
      1
    """
    where = "nnx_optimizer_from_torch"
    existing = tx if isinstance(tx, nnx.Optimizer) else None
    if existing is not None:
        tx, wrt = existing.tx, existing.wrt
    side = torch_side(torch_optimizer, torch_model, where)
    params = nnx.state(model, wrt)
    pure = nnx.as_pure(params)
    match = match_torch(side, model, params, tx, where)
    check_hyperparams(match, where)
    state: dict[int, dict[str, Any]] = {}
    for k, leaf in enumerate(match.order):
        entries = _leaf_state(match, leaf, where)
        if entries:
            state[k] = entries
    first = side.state_dict["state"].get(side.ids[0], {}) if side.ids else {}
    if "func_evals" in first:
        lbfgs = _lbfgs_from_torch(match, {k: v for k, v in first.items() if k in _LBFGS}, where)
        state.setdefault(0, {}).update(lbfgs)
    groups, start = [], 0
    torch_groups = side.state_dict["param_groups"]
    for g, size in zip(match.torch_group, match.sizes, strict=True):
        hyperparams = {} if g is None else torch_groups[g]
        group = {k: v for k, v in hyperparams.items() if k not in ("params", "param_names")}
        groups.append({**group, "params": list(range(start, start + size))})
        start += size
    if count is not None:
        state_kwargs["count"] = count
    opt_state = optimizer_state_from_torch(
        {"state": state, "param_groups": groups}, tx, pure, **state_kwargs
    )
    optimizer = existing if existing is not None else nnx.Optimizer(model, tx, wrt=wrt)
    template = optimizer.opt_state
    boxes = jax.tree_util.tree_leaves(template, is_leaf=lambda x: isinstance(x, nnx.Variable))
    if jax.tree_util.tree_structure(nnx.as_pure(template)) != jax.tree_util.tree_structure(
        opt_state
    ):
        raise ValueError(f"{where}: the nnx.Optimizer's state is not tx.init's for this model")
    values = jax.tree_util.tree_leaves(opt_state)
    placed = [_placed(np.asarray(v), box) for v, box in zip(values, boxes, strict=True)]
    for box, value in zip(boxes, placed, strict=True):
        box.set_value(value)
    optimizer.step[...] = _count(opt_state, side.state_dict, count)
    return optimizer


# ----------------------------------------------------------------------------- NNX -> torch


def _as_tensor(value: Any) -> Any:
    """NumPy arrays (the re-laid-out state) as torch tensors, lists of them element-wise; tensors
    and Python values as they are."""
    if isinstance(value, list):
        return [_as_tensor(v) for v in value]
    return to_tensor(value) if isinstance(value, np.ndarray) else value


def _scatter(match: Match, entries: dict[int, dict[str, Any]], where: str) -> dict[int, dict]:
    """Per torch position, its state from the NNX leaves' `entries` (by leaf), torch's layout."""
    flats: dict[int, dict[str, np.ndarray]] = {}  # position -> key -> torch flat array
    filled: dict[int, dict[str, np.ndarray]] = {}
    out: dict[int, dict[str, Any]] = {}
    for leaf, leaf_entries in entries.items():
        src = match.sources[leaf]
        for key, value in leaf_entries.items():
            array = to_numpy(value) if hasattr(value, "shape") else None
            if key not in _FACTORED and array is not None and array.shape == src.shape:
                for p in match.owners[leaf]:
                    start, stop = int(match.offsets[p]), int(match.offsets[p + 1])
                    flat = flats.setdefault(p, {}).setdefault(key, np.empty(stop - start, array.dtype))  # fmt: skip
                    done = filled.setdefault(p, {}).setdefault(key, np.zeros(stop - start, bool))
                    mine = (src >= start) & (src < stop)
                    flat[src[mine] - start] = array[mine]
                    done[src[mine] - start] = True
                    out.setdefault(p, {})[key] = None  # keeps torch's key order
            elif array is None or array.ndim == 0 or match.identity(leaf):
                for p in match.owners[leaf]:
                    out.setdefault(p, {})[key] = value
            else:
                raise ValueError(
                    f"{where}: the state entry {key!r} of the NNX leaf {match.leaves[leaf]!r} has "
                    f"shape {array.shape}, not the leaf's {src.shape}, and torch holds "
                    f"{torch_names(match.side, match.owners[leaf])} in another layout: this "
                    "state has no counterpart there (Adafactor's row_var/col_var average over "
                    "the last two dimensions, other axes in torch's layout)"
                )
    for p, keys in flats.items():
        for key, flat in keys.items():
            if not filled[p][key].all():
                raise ValueError(
                    f"{where}: only some NNX leaves of the torch parameter "
                    f"{match.side.names[p]!r} hold {key!r}"
                )
            out[p][key] = flat.reshape(match.shapes[p])
    return out


def nnx_optimizer_to_torch(
    optimizer: nnx.Optimizer,
    model: nnx.Module,
    torch_optimizer: Any,
    *,
    torch_model: Any = None,
    count: int | None = None,
) -> dict[str, Any]:
    """The `state_dict()` of `torch_optimizer` holding an `nnx.Optimizer`'s state.

    Each NNX leaf's state goes to its torch parameter by name, laid out as the weight is (module
    docstring): `torch_optimizer.load_state_dict(result)` loads it, and `torch.save` saves it.
    The state is [`optimizer_state_to_torch`][jaxopt_port.interop.optimizer_state_to_torch]'s for
    `nnx.state(model, optimizer.wrt)`: each torch group gets the hyperparameters the matching
    group of `optimizer.tx` carries (a scheduled lr as torch's scheduler leaves it after the
    state's step count), over the keys of `torch_optimizer`'s own group (kept where `tx`
    carries none, e.g. `tx` wrapped in `optax.chain`); `"params"` and `"param_names"` are
    `torch_optimizer`'s. Position a torch scheduler with
    [`position_scheduler`][jaxopt_port.interop.position_scheduler]. The weights go with
    [`weights_to_torch`][jaxopt_port.interop.weights_to_torch].

    Args:
      optimizer: the `nnx.Optimizer` (its `tx`, `wrt` and `opt_state` are read).
      model: the NNX model it optimizes.
      torch_optimizer: the torch optimizer to load into (built over the torch model's parameters
        with torch's group structure; its hyperparameters and state do not matter), or its
        `state_dict()`: it gives torch's parameter numbering and groups.
      torch_model: names torch's parameters, as in
        [`nnx_optimizer_from_torch`][jaxopt_port.interop.nnx_optimizer_from_torch] (not needed when
        the optimizer was built from `model.named_parameters()`).
      count: optimizer steps taken, at which schedules are evaluated (default: the state's).

    Returns:
      `{"state": {id: {key: tensor}}, "param_groups": [...]}` with torch tensors (L-BFGS's
      history as lists of tensors, its counters as ints), ready for `load_state_dict`.

    Raises:
      TypeError, ValueError: as
        [`nnx_optimizer_from_torch`][jaxopt_port.interop.nnx_optimizer_from_torch] (hyperparameters
        are written, not compared), and `optimizer_state_to_torch`'s errors.

    Examples:
      >>> import torch
      >>> from flax import nnx
      >>> from jaxopt_port import interop, optim
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(model, optim.adamw(lr=1e-3), wrt=nnx.Param)
      >>> torch_model = torch.nn.Linear(3, 2)
      >>> torch_optimizer = torch.optim.AdamW(torch_model.parameters())
      >>> torch_optimizer.load_state_dict(interop.nnx_optimizer_to_torch(
      ...     optimizer, model, torch_optimizer, torch_model=torch_model))
      >>> torch_optimizer.param_groups[0]["lr"]
      0.001
    """
    where = "nnx_optimizer_to_torch"
    if not isinstance(optimizer, nnx.Optimizer):
        raise TypeError(f"{where} expects an nnx.Optimizer, got {type(optimizer).__name__}")
    side = torch_side(torch_optimizer, torch_model, where)
    tx = optimizer.tx
    params = nnx.state(model, optimizer.wrt)
    pure = nnx.as_pure(params)
    match = match_torch(side, model, params, tx, where)
    converted = optimizer_state_to_torch(nnx.as_pure(optimizer.opt_state), tx, pure, count=count)
    by_leaf = {
        leaf: {k: v for k, v in converted["state"].get(k_id, {}).items() if k not in _LBFGS}
        for k_id, leaf in enumerate(match.order)
    }
    by_position = _scatter(match, by_leaf, where)
    lbfgs = {k: v for k, v in converted["state"].get(0, {}).items() if k in _LBFGS}
    if lbfgs:
        permutation = _flat_permutation(match, where)
        for key in _LBFGS_FLAT & set(lbfgs):
            vectors = lbfgs[key] if isinstance(lbfgs[key], (list, tuple)) else [lbfgs[key]]
            back = []
            for vector in vectors:
                array = to_numpy(vector)
                flat = np.empty_like(array)
                flat[permutation] = array
                back.append(flat)
            lbfgs[key] = back if isinstance(lbfgs[key], (list, tuple)) else back[0]
        by_position.setdefault(0, {}).update(lbfgs)
    state = {
        side.ids[p]: {k: _as_tensor(v) for k, v in entries.items()}
        for p, entries in sorted(by_position.items())
    }
    groups = []
    for g, torch_group in enumerate(side.state_dict["param_groups"]):
        j = match.torch_group.index(g) if g in match.torch_group else None
        carried = {} if j is None else converted["param_groups"][j]
        groups.append(
            {
                **{k: v for k, v in torch_group.items() if k != "params"},
                **{k: v for k, v in carried.items() if k != "params"},
                "params": list(torch_group["params"]),
            }
        )
    return {"state": state, "param_groups": groups}
