"""torch optimizer `state_dict()` ↔ jaxopt_port optimizer state, lossless both ways.

Every jaxopt_port state NamedTuple names its fields as torch names its state keys
(`exp_avg`, `momentum_buffer`, `step`, ...), so the conversion is mechanical and written
once for all 15 optimizers: the state `tx.init(params)` builds is the template, and each field is
filled from (or read into) `state_dict["state"][i]` for the i-th leaf of `params` — the
leaf-order convention of `optim.from_torch`. Fields named `count` (optax bookkeeping that
indexes schedules and SGD's first momentum step) take the number of optimizer steps taken, as
torch's state implies it: its `step`, or an attached scheduler's position, or (where nothing
reads more than "stepped or not") its momentum buffers; otherwise the conversion asks for it.
Values go to torch as the tensors and Python numbers torch itself keeps. L-BFGS's single state
goes under parameter 0 with its history as torch's lists.

Param groups. A transformation built by a jaxopt_port optimizer, `optim.from_torch`,
`schedules.with_schedules` or `transforms.param_groups` carries torch's param groups (a
[`TorchTransformation`][jaxopt_port.optim.TorchTransformation]): their hyperparameters, written into
the `state_dict` so that a plain `torch_optimizer.load_state_dict` restores them, and which leaves
each holds. torch numbers its parameters group after group, so with interleaved groups
(`param_groups` selecting by pattern) torch id `k` is the `k`-th leaf in that order, not leaf `k`;
leaves of a frozen group have no torch id. Both directions use the same mapping.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port._core import absent as _absent
from jaxopt_port._core import is_array as _is_array
from jaxopt_port._core import numel, to_tensor
from jaxopt_port._core import to_numpy as _numpy
from jaxopt_port._core.state import is_quantized, per_param_entries, per_param_state
from jaxopt_port._core.torch_groups import TorchGroup, torch_layout
from jaxopt_port.interop._torch_inputs import check_optimizer_state_dict
from jaxopt_port.interop.scheduler_state import (
    as_state_dict,
    group_states,
    is_plateau,
    nodes,
    plateau_of,
    plateau_values,
    replace_nodes,
    scheduler_count,
    steps_in_state,
)
from jaxopt_port.optim import QuantizedAdamState
from jaxopt_port.optim.lbfgs import LBFGSState
from jaxopt_port.optim.sparse_adam import ScaleBySparseAdamState
from jaxopt_port.schedules import ReduceLROnPlateau, ReduceLROnPlateauState, TorchSchedule

__all__ = [
    "optimizer_state_from_torch",
    "optimizer_state_into_torch",
    "optimizer_state_to_torch",
    "to_tensor",
]


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


def _is_torchao_state(value: Any) -> bool:
    """A torchao low-bit state tensor (`OptimState8bit`, `OptimState4bit`, `OptimStateFp8`)."""
    return hasattr(value, "codes") and hasattr(value, "scale")


def _storage(codes: Any, scale: Any, shape: tuple[int, ...]) -> tuple[str, int]:
    """(storage, block size) of quantized `codes` with `scale`s for a tensor of `shape`: FP8
    codes are float8_e4m3fn in the tensor's shape, 8-bit ones uint8 in its shape, 4-bit ones
    two per byte in a flat array."""
    size = int(np.prod(shape, dtype=np.int64))
    scales = max(numel(scale), 1)
    if "float8" in str(codes.dtype):
        return "FP8", size // scales
    if tuple(codes.shape) == tuple(shape):
        return "8-bit", size // scales
    return "4-bit", 2 * numel(codes) // scales


def _entry_from_torch(value: Any, like: Any, where: str) -> Any:
    """One per-parameter entry: a plain array, or a `QuantizedArray` copied bitwise from
    torchao's state tensor."""
    quantized = is_quantized(like)
    if quantized == _is_torchao_state(value):
        return _quantized_from_torch(value, like, where) if quantized else _cast(value, like, where)
    shape = tuple(value.shape)
    if quantized:
        storage, block = _storage(like.codes, like.scale, shape)
        got, expected = "a plain tensor", f"quantized ({storage}, block size {block})"
    else:
        storage, block = _storage(value.codes, value.scale, shape)
        got, expected = f"{type(value).__name__} ({storage}, block size {block})", "plain"
    raise ValueError(
        f"{where}: torch holds {got} of shape {shape}, the jaxopt_port state expects it "
        f"{expected}: the storage or block size differs (torchao quantizes states of at least "
        "4096 values that fill whole blocks)"
    )


def _quantized_from_torch(value: Any, like: Any, where: str) -> Any:
    """torchao's state tensor `value` as `like`'s `QuantizedArray`: codes and scales bitwise."""
    import torch  # an interop path: value is a torchao tensor

    shape = tuple(value.shape)
    theirs, mine = (
        _storage(value.codes, value.scale, shape),
        _storage(like.codes, like.scale, shape),
    )
    codes = value.codes.detach().cpu()
    if codes.dtype == torch.float8_e4m3fn:
        codes = codes.view(torch.uint8)
    codes, scale = np.asarray(codes).copy(), _numpy(value.scale)
    if (
        theirs != mine
        or codes.shape != tuple(like.codes.shape)
        or scale.shape != tuple(like.scale.shape)
        or scale.dtype != like.scale.dtype
    ):
        raise ValueError(
            f"{where}: torch's {type(value).__name__} of shape {shape} holds {theirs[0]} codes "
            f"{tuple(codes.shape)} with {scale.size} {scale.dtype} scales (block size "
            f"{theirs[1]}), the jaxopt_port state expects {mine[0]} codes "
            f"{tuple(like.codes.shape)} with {like.scale.size} float32 scales (block size "
            f"{mine[1]})"
        )
    return type(like)(jnp.asarray(codes.view(like.codes.dtype)), jnp.asarray(scale))


class _Filler:
    """Rebuilds a template state with torch's values (the inverse of `per_param_state`)."""

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
        shared scalars (`step`, ASGD's `eta`) come from theirs, as `per_param_state` puts
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
                    filled.append(_entry_from_torch(self.torch_state[i][name], entry, where))
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
    scheduler: Any = None,
) -> optax.OptState:
    """The jaxopt_port state equal to a torch optimizer's `state_dict()`.

    The step count (optax's `count` fields: schedules, SGD's first-step branch) is what torch's
    state implies, never a guess:

    * torch's `step` entries (every optimizer but SGD, Muon and L-BFGS), or
    * the attached scheduler's `last_epoch` (times its `steps_per_epoch`) when
      `scheduler=` is given; with both, they must agree;
    * otherwise 0 when torch holds no state where it would after a step (SGD with momentum,
      Muon, L-BFGS not stepped yet), and a lower bound of 1 when it does (a momentum buffer, an
      L-BFGS history) provided nothing in `tx` reads the exact count: no param group of `tx`
      follows a schedule. When the exact count matters and torch's state does not give it
      (SGD/Muon/L-BFGS under a schedule, SGD without momentum under a schedule, or a `tx`
      wrapped by optax so that its groups are unknown), it raises and asks for `count=` or
      `scheduler=`.

    With `scheduler=` a ReduceLROnPlateau's whole position goes into `tx`'s plateau state
    (`best`, `num_bad_epochs`, `cooldown_counter`, `last_epoch`, and each group's lr).

    Args:
      state_dict: `torch_optimizer.state_dict()` (tensors or arrays), `state` keyed by integer
        ids in `param_groups` order.
      tx: the transformation, e.g. `optim.from_torch(torch_optimizer, scheduler=...)`.
      params: the parameters; leaf i is torch's parameter i — or, when `tx` carries several
        param groups (`transforms.param_groups`), torch's parameters are the leaves group after
        group (module docstring).
      count: optimizer steps taken; overrides what torch's state implies.
      scheduler: the torch lr scheduler attached to the optimizer, or its `state_dict()`
        (default None): its position gives the count, and ReduceLROnPlateau's state.

    torchao's low-bit optimizers (`AdamW8bit`, `Adam4bit`, `AdamWFp8`, ...): each
    `OptimState8bit` / `OptimState4bit` / `OptimStateFp8` fills the `QuantizedArray` of
    `tx.init(params)` with its `codes` and `scale` bit for bit; the storage (8-bit, 4-bit, FP8)
    and block size must be `tx`'s.

    Returns:
      `tx.init(params)` with every torch state entry filled in. Parameters torch has no state for
      (not stepped yet) keep the initial state, as torch would create it.

    Raises:
      ValueError: the number of parameters differs, the param groups differ from those `tx`
        carries in number or size (torch's messages), an entry has another shape (the message
        names the entry and both shapes; for a torchao state, both storages and block sizes),
        the count cannot be inferred where it matters or
        torch's `step` and the scheduler disagree, or `tx` follows ReduceLROnPlateau and
        steps were taken but no `scheduler=` holds its position. Nothing is returned
        half-converted.

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> from jaxopt_port import interop, optim
      >>> model = torch.nn.Linear(3, 1)
      >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
      >>> scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
      >>> model(torch.ones(2, 3)).sum().backward(); optimizer.step(); scheduler.step()
      >>> tx = optim.from_torch(optimizer, scheduler)
      >>> params = [jnp.array(p.detach().numpy()) for p in model.parameters()]
      >>> state = interop.optimizer_state_from_torch(
      ...     optimizer.state_dict(), tx, params, scheduler=scheduler)
      >>> int(state[0].count)  # SGD keeps no step: the scheduler's last_epoch gives it
      1
    """
    check_optimizer_state_dict(state_dict, "optimizer_state_from_torch")
    leaves = jax.tree_util.tree_leaves(params)
    layout, order = _layout(tx, params)
    groups = state_dict.get("param_groups", [])
    _check_groups(groups, layout, order, len(leaves), "the torch optimizer")
    ids = [i for g in groups for i in g["params"]] or list(range(len(order)))
    torch_state: list[dict[str, Any]] = [{} for _ in leaves]
    for torch_id, leaf in zip(ids, order, strict=True):
        torch_state[leaf] = dict(state_dict["state"].get(torch_id, {}))
    plateaus = plateau_of(tx)
    if plateaus and scheduler is None and (count or _stepped(torch_state)):
        raise ValueError(
            "tx's lr follows ReduceLROnPlateau, whose position (best, num_bad_epochs, "
            "cooldown_counter, last_epoch) torch keeps in the scheduler, not in the optimizer: "
            "pass scheduler=<the torch ReduceLROnPlateau or its state_dict()>"
        )
    template = tx.init(params)
    count = _resolve_count(count, torch_state, template, tx, params, scheduler)
    state = _Filler(torch_state, params, count).fill(template)
    if plateaus and scheduler is not None:
        if not is_plateau(scheduler):
            raise ValueError(
                "tx's lr follows ReduceLROnPlateau but scheduler= is not a ReduceLROnPlateau "
                "(or its state_dict())"
            )
        lrs = [g.get("lr") for g in groups] or list(as_state_dict(scheduler)["_last_lr"])
        state = _fill_plateaus(state, tx, params, scheduler, lrs)
    return state


def _resolve_count(
    count: int | None, torch_state: list[dict[str, Any]], template: Any, tx: Any, params: Any,
    scheduler: Any,
) -> int:  # fmt: skip
    """The optimizer steps torch's state implies (see `optimizer_state_from_torch`)."""
    if count is not None:
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        return int(count)
    per_epoch = _steps_per_epoch(tx)
    epochs = None if scheduler is None else scheduler_count(scheduler)
    reason = _count_dependence(tx)
    steps = [float(_numpy(s["step"])) for s in torch_state if "step" in s]
    stepped = any(torch_state)
    if steps:
        taken = int(max(steps))
        if epochs is not None and reason is not None and taken // per_epoch != epochs:
            raise ValueError(
                f"torch's state has taken {taken} optimizer steps but the scheduler's last_epoch "
                f"is {epochs} (steps_per_epoch={per_epoch}): a jaxopt_port schedule is evaluated "
                "at the optimizer step count, so they must agree (give optim.from_torch the "
                "scheduler's steps_per_epoch); pass count= to choose"
            )
        return taken
    if epochs is not None:
        if per_epoch != 1:
            raise ValueError(
                f"torch keeps no step count for this optimizer and the scheduler steps once every "
                f"{per_epoch} optimizer steps: after {epochs} scheduler steps the count is "
                f"between {epochs * per_epoch} and {epochs * per_epoch + per_epoch - 1}; pass "
                "count="
            )
        if epochs == 0 and stepped:
            raise ValueError(
                "torch's state shows steps were taken but the scheduler's last_epoch is 0 (was it "
                "created after them?): the count it gives would restart the optimizer; pass count="
            )
        return epochs
    if not stepped and any(per_param_state(template, params)):
        return 0  # torch holds state after any step of this optimizer, and holds none
    if reason is None:
        return 1 if stepped else 0  # only "stepped or not" matters (SGD's first buffer)
    shows = "shows steps were taken" if stepped else "holds nothing that counts steps"
    raise ValueError(
        f"cannot infer the step count: torch's state_dict has no 'step' for this optimizer and "
        f"{shows}, but the count matters: {reason}. Pass scheduler=<the torch scheduler or its "
        "state_dict()> or count=<optimizer steps taken>"
    )


def _stepped(torch_state: list[dict[str, Any]]) -> bool:
    """Whether torch's state shows a step: a positive `step`, or state without one."""
    return any(float(_numpy(s["step"])) > 0 if "step" in s else bool(s) for s in torch_state)


def _steps_per_epoch(tx: Any) -> int:
    for group in getattr(tx, "torch_groups", ()):
        lr = group.hyperparams.get("lr")
        if isinstance(lr, (TorchSchedule, ReduceLROnPlateau)):
            return int(lr.steps_per_epoch)
    return 1


def _count_dependence(tx: Any) -> str | None:
    """Why `tx` may read the exact step count, or None when it does not."""
    groups = getattr(tx, "torch_groups", ())
    if not groups:
        return (
            "tx carries no torch param groups (a transformation wrapped by optax), so whether "
            "it follows a schedule is unknown"
        )
    for index, group in enumerate(groups):
        if not group.hyperparams:
            return (
                f"param group {index} holds a transformation without torch hyperparameters, "
                "which may follow a schedule"
            )
        for key, value in group.hyperparams.items():
            if _scheduled(value):
                return f"param group {index}'s {key!r} follows a schedule of the step count"
    return None


def _scheduled(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_scheduled(v) for v in value)
    return callable(value) and not isinstance(value, type)


def _fill_plateaus(state: Any, tx: Any, params: Any, scheduler: Any, lrs: list[Any]) -> Any:
    """`state` with each group's ReduceLROnPlateau state holding the torch scheduler's."""

    def is_injected(node: Any) -> bool:
        return isinstance(node, optax.InjectStatefulHyperparamsState) and any(
            isinstance(v, ReduceLROnPlateauState) for v in node.hyperparams_states.values()
        )

    def filled(lr: Any) -> Any:
        lr = float(_numpy(lr))

        def fill(node: Any) -> Any:
            schedule_states, hyperparams = dict(node.hyperparams_states), dict(node.hyperparams)
            for key, value in schedule_states.items():
                if isinstance(value, ReduceLROnPlateauState):
                    schedule_states[key] = plateau_values(value, scheduler, lr)
                    if key in hyperparams:
                        hyperparams[key] = jnp.asarray(lr, hyperparams[key].dtype)
            return node._replace(hyperparams=hyperparams, hyperparams_states=schedule_states)

        return fill

    parts = group_states(state, tx, params)
    if len(lrs) != len(parts):
        raise ValueError(f"the scheduler has {len(lrs)} lrs, tx has {len(parts)} param groups")
    if len(parts) == 1:
        return replace_nodes(state, is_injected, filled(lrs[0]))
    inner = dict(state.inner_states)
    for group, lr in zip(tx.torch_groups, lrs, strict=True):
        inner[group.label] = replace_nodes(inner[group.label], is_injected, filled(lr))
    return state._replace(inner_states=inner)


def optimizer_state_to_torch(
    opt_state: optax.OptState,
    tx: optax.GradientTransformation,
    params: Any,
    *,
    param_groups: list[dict[str, Any]] | None = None,
    count: int | None = None,
) -> dict[str, Any]:
    """A torch `state_dict()` holding the jaxopt_port state `opt_state`, ready for
    `torch_optimizer.load_state_dict` and `torch.save`.

    Every value is of the type and dtype torch itself keeps (imports torch): per-parameter state
    as tensors of the state's dtype (the parameters'; `load_state_dict` casts them to the torch
    parameters' dtype); `step`, ASGD's `eta` and `mu` and NAdam's `mu_product` as 0-d
    tensors of torch's scalar dtype (float32, float64 when `torch.get_default_dtype()` is
    float64); SparseAdam's `step` and L-BFGS's `func_evals` and `n_iter` as Python ints;
    L-BFGS's `old_dirs`, `old_stps` and `ro` as lists of tensors (oldest first), `d`,
    `prev_flat_grad` and `H_diag` as tensors, `t` and `prev_loss` as Python floats. A
    `QuantizedArray` (torchao's low-bit optimizers) becomes torchao's `OptimState8bit`,
    `OptimState4bit` or `OptimStateFp8` with the same codes and scales, built by torchao's
    constructors with its maps (signed for `exp_avg`, unsigned for `exp_avg_sq` and
    `max_exp_avg_sq`; imports torchao), and their groups' lr is a float32 tensor, as torchao
    keeps it.

    When `tx` carries torch's param groups — it was built by a jaxopt_port optimizer
    (`optim.adamw(...)`), `optim.from_torch`, `schedules.with_schedules` or
    `transforms.param_groups` / `no_weight_decay` — the result is a complete torch
    `state_dict`: `torch_optimizer.load_state_dict` loads it into a torch optimizer built over
    the same parameters with the same group structure (whatever hyperparameters it was built
    with), and leaves its `param_groups` as those of a torch optimizer trained the same way.
    Each group holds every torch key of the call (AdamW's `decoupled_weight_decay=True` too;
    Muon's `ns_dtype` is not torch's); a scheduled value is the schedule's value after
    `count` steps, as torch's scheduler leaves it, with torch's `initial_lr` for a
    `jaxopt_port.schedules` lr; ReduceLROnPlateau's lr is read from `opt_state`;
    `from_torch` also keeps the keys a scheduler added (`max_lr`, ...). A torch scheduler's
    own position is written by [`position_scheduler`][jaxopt_port.interop.position_scheduler].

    A transformation wrapped further (`optax.chain`, `optax.MultiSteps`, `optax.inject_hyperparams`)
    or built from optax pieces carries no groups: then the result has one group with only `"params"`
    unless `param_groups` is given, and loads only with
    [`optimizer_state_into_torch`][jaxopt_port.interop.optimizer_state_into_torch] (which keeps the
    torch optimizer's hyperparameters) or after adding the hyperparameters to each group.

    Args:
      opt_state: a state of `tx`.
      tx: the transformation (its structure is checked; its param groups are written).
      params: the parameters; leaf i becomes torch's parameter i (with several carried groups,
        the leaves group after group: see the module docstring).
      param_groups: torch's `param_groups` to store instead of the carried ones (e.g.
        `torch_optimizer.state_dict()["param_groups"]`); each group's `"params"` ids are kept.
      count: the number of optimizer steps taken, at which schedules are evaluated; by default
        the state's (its `count` fields and torch's `step` entries).

    Returns:
      `{"state": {i: {key: value}}, "param_groups": [...]}`; hyperparameters are Python values
      (or the tensors they were given as).

    Raises:
      ValueError: `opt_state` is not a state of `tx`; `param_groups` differs from the
        carried groups in number or size (torch's messages); `count` is negative.

    Warning:
      torch keeps L-BFGS's `t` as the type of its lr (or a tensor after a first step shorter
      than the lr); here it is a Python float of the same value. L-BFGS's scratch list `al` is
      left out: torch creates it at the next step.

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> from jaxopt_port import interop, optim
      >>> tx = optim.adamw(lr=1e-3)
      >>> params = [jnp.ones((2, 3)), jnp.zeros(2)]
      >>> state = tx.update([jnp.ones((2, 3)), jnp.ones(2)], tx.init(params), params)[1]
      >>> model = torch.nn.Linear(3, 2)  # weight (2, 3), bias (2,)
      >>> optimizer = torch.optim.AdamW(model.parameters())
      >>> optimizer.load_state_dict(interop.optimizer_state_to_torch(state, tx, params))
      >>> optimizer.state_dict()["state"][0]["step"]
      tensor(1.)
    """
    import torch  # an interop path: torch is only needed here

    template = jax.tree_util.tree_structure(tx.init(params))
    if jax.tree_util.tree_structure(opt_state) != template:
        raise ValueError("opt_state does not have the structure of tx.init(params)")
    layout, order = _layout(tx, params)
    leaves = jax.tree_util.tree_leaves(params)
    per_param = per_param_state(opt_state, params)
    int_step = _int_step_leaves(opt_state, params)
    state: dict[int, dict[str, Any]] = {}
    for torch_id, leaf in enumerate(order):
        if per_param[leaf]:
            state[torch_id] = {
                k: _quantized_to_torch(torch, k, v, leaves[leaf])
                if is_quantized(v)
                else _to_torch_value(torch, k, v, leaf in int_step)
                for k, v in per_param[leaf].items()
            }
    if param_groups is not None:
        _check_groups(param_groups, layout, order, len(leaves), "param_groups")
        return {"state": state, "param_groups": param_groups}
    if count is None:
        count = steps_in_state(opt_state) or 0
    elif not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    groups, start = [], 0
    for group, group_leaves in layout:
        sub_state = opt_state
        if group is not None and group.label is not None:
            sub_state = opt_state.inner_states[group.label]
        hyperparams = {} if group is None else _group_values(group.hyperparams, count, sub_state)
        if "lr" in hyperparams and any(isinstance(n, QuantizedAdamState) for n in nodes(sub_state)):
            # torchao's low-bit optimizers keep lr as a float32 tensor (their step refuses a float)
            hyperparams["lr"] = torch.tensor(float(hyperparams["lr"]), dtype=torch.float32)
        groups.append({**hyperparams, "params": list(range(start, start + len(group_leaves)))})
        start += len(group_leaves)
    return {"state": state, "param_groups": groups}


def _layout(tx: Any, params: Any) -> tuple[list[tuple[TorchGroup | None, list[int]]], list[int]]:
    """`tx`'s torch param groups with their leaves, and the leaf index of each torch id."""
    layout = torch_layout(tx, params)
    return layout, [leaf for _, group_leaves in layout for leaf in group_leaves]


def _check_groups(
    groups: list[dict[str, Any]], layout: list, order: list[int], num_leaves: int, what: str
) -> None:
    """torch's `load_state_dict` checks, for `groups` against the groups `tx` carries."""
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


def _group_values(hyperparams: Any, count: int, state: Any) -> dict[str, Any]:
    """A carried group's hyperparameters as torch holds them after `count` steps."""
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
    """The state of the stateful schedule `optax.inject_hyperparams` feeds into `key`."""
    for node in nodes(state):
        if isinstance(node, optax.schedules.InjectStatefulHyperparamsState):
            if key in node.hyperparams_states:
                return node.hyperparams_states[key]
    raise ValueError(
        f"{key!r} follows a stateful schedule (ReduceLROnPlateau) whose state is not in "
        "opt_state; build the transformation with schedules.with_schedules, or pass "
        "param_groups="
    )


_SCALAR_KEYS = ("step", "eta", "mu", "mu_product")
"""Scalar state torch keeps in its scalar dtype (`torch.optim.optimizer._get_scalar_dtype`)."""
_HISTORY_KEYS = ("old_dirs", "old_stps", "ro")
"""L-BFGS's history: torch keeps lists of tensors, oldest first."""


def _to_torch_value(torch: Any, key: str, value: Any, int_step: bool) -> Any:
    """One state entry as torch keeps it (`optimizer_state_to_torch`'s docstring)."""
    if key in _HISTORY_KEYS:
        return [to_tensor(row) for row in np.asarray(value)]
    if key in ("func_evals", "n_iter") or (key == "step" and int_step):
        return int(np.asarray(value))
    if key in ("t", "prev_loss"):
        return float(np.asarray(value))
    if key in _SCALAR_KEYS and np.ndim(value) == 0:
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        return to_tensor(np.asarray(value, np.float64), scalar)
    return to_tensor(value)


_UNSIGNED_KEYS = ("exp_avg_sq", "max_exp_avg_sq")
"""States torchao quantizes with its unsigned map (the first moment uses the signed one)."""


def _quantized_to_torch(torch: Any, key: str, value: Any, param: Any) -> Any:
    """A `QuantizedArray` as the torchao state tensor holding the same codes and scales, built
    with torchao's own constructor and its maps; its dtype is the parameter's, as torchao's."""
    shape = tuple(np.shape(param))
    storage, _ = _storage(value.codes, value.scale, shape)
    codes = np.asarray(value.codes)
    scale = to_tensor(value.scale)
    dtype = to_tensor(np.zeros((), param.dtype)).dtype
    if storage == "FP8":
        from torchao.optim.subclass_fp8 import OptimStateFp8

        codes = torch.from_numpy(codes.view(np.uint8).copy()).view(torch.float8_e4m3fn)
        return OptimStateFp8(codes, scale, dtype=dtype)
    signed = key not in _UNSIGNED_KEYS
    if storage == "8-bit":
        from torchao.optim import subclass_8bit as module

        extra: tuple[Any, ...] = ()
        cls = module.OptimState8bit
    else:
        from torchao.optim import subclass_4bit as module

        extra = (torch.Size(shape),)
        cls = module.OptimState4bit
    table = module.get_qmap_signed() if signed else module.get_qmap_unsigned()
    qmap = torch.tensor(table, dtype=torch.float32)
    return cls(to_tensor(codes), scale, qmap, signed, *extra, dtype=dtype)


def _int_step_leaves(opt_state: Any, params: Any) -> set[int]:
    """The leaves whose `step` torch keeps as a Python int (SparseAdam's)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [tuple(np.shape(leaf)) for leaf in leaves]
    out: set[int] = set()
    for node in nodes(opt_state):
        if isinstance(node, ScaleBySparseAdamState):
            entries = per_param_entries(node.exp_avg, treedef, shapes) or ()
            out.update(i for i, entry in enumerate(entries) if not _absent(entry))
    return out


def optimizer_state_into_torch(
    optimizer: Any, opt_state: optax.OptState, tx: optax.GradientTransformation, params: Any
) -> None:
    """Load `opt_state` into a live torch optimizer built with the same hyperparameters.

    The optimizer keeps its own `param_groups` (hyperparameters); its per-parameter state becomes
    `opt_state`'s ([`optimizer_state_to_torch`][jaxopt_port.interop.optimizer_state_to_torch]'s
    tensors). A scheduled lr is the scheduler's to write: position the scheduler with
    [`position_scheduler`][jaxopt_port.interop.position_scheduler]. To take the hyperparameters from
    `tx` instead, use `optimizer.load_state_dict(optimizer_state_to_torch(opt_state, tx, params))`.
    """
    optimizer.load_state_dict(
        optimizer_state_to_torch(
            opt_state, tx, params, param_groups=optimizer.state_dict()["param_groups"]
        )
    )
