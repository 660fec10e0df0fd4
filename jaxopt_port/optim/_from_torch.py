"""Build the jaxopt_port transformation equivalent to a live `torch.optim` optimizer."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from jaxopt_port._core import as_float, describe_torch_object, is_tensor_like, torch_kind
from jaxopt_port._core.hooks import read_wrapper, scheduled_transformation
from jaxopt_port._core.paths import named_leaves
from jaxopt_port._core.torch_groups import (
    TorchGroup,
    carry,
    constructor_only,
    partition,
    torch_factories,
)

__all__ = ["factory_for", "from_torch", "torch_class_key"]


def _check_optimizer(optimizer: Any) -> None:
    if torch_kind(optimizer) == "optimizer" and not isinstance(optimizer, type):
        return
    hints = {
        "scheduler": "; pass its optimizer and the scheduler: "
        "optim.from_torch(scheduler.optimizer, scheduler)",
        "module": "; build the torch optimizer on its parameters first, e.g. "
        "optim.from_torch(torch.optim.AdamW(model.parameters(), lr=1e-3))",
    }
    hint = hints.get(torch_kind(optimizer) or "", "")
    if isinstance(optimizer, dict):
        hint = (
            "; pass the optimizer itself (a state_dict does not name its class). To load a "
            "state_dict into a jaxopt_port state use interop.optimizer_state_from_torch"
        )
    if isinstance(optimizer, type):
        hint = "; build it first: torch.optim.AdamW(model.parameters(), lr=1e-3)"
    raise TypeError(
        "optim.from_torch expects a torch.optim optimizer instance, got "
        f"{describe_torch_object(optimizer)}{hint}"
    )


def torch_class_key(cls: type) -> str:
    """The name a factory declares for `cls` (the keys of
    [`TORCH_CLASSES`][jaxopt_port.optim.TORCH_CLASSES]): `"AdamW"` for `torch.optim`'s classes,
    `"<package>.<Class>"` for other packages' (`"torchao.AdamW8bit"`)."""
    if cls.__module__.startswith("torch.optim"):
        return cls.__name__
    return f"{cls.__module__.partition('.')[0]}.{cls.__name__}"


def factory_for(
    torch_optimizer_class: type,
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """The jaxopt_port factory for a `torch.optim` class (or another package's torch optimizer
    with a declared factory), or for a class derived from one (read as its nearest such base).

    Raises:
      TypeError: for a class with no known torch optimizer among its bases.
    """
    table = torch_factories()
    for cls in torch_optimizer_class.__mro__:
        if torch_class_key(cls) in table:
            return table[torch_class_key(cls)]
    others = "".join(f", {key}" for key in table if "." in key)
    raise TypeError(
        f"no jaxopt_port optimizer for {torch_optimizer_class.__name__}: optim.from_torch reads "
        f"torch.optim's optimizers ({', '.join(k for k in table if '.' not in k)}){others} and "
        "their subclasses"
    )


def _plain(value: Any) -> Any:
    """Tensors (lr, betas) to Python floats; tuples element-wise."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if is_tensor_like(value) and hasattr(value, "numel"):
        return as_float(value)
    return value


def group_kwargs(factory: Callable, group: dict[str, Any], optimizer: Any) -> dict[str, Any]:
    """The factory's keyword arguments read from one torch param group, and the ones torch
    reads from the constructor only (`optimizer.defaults`, or an attribute of the optimizer where
    the class keeps it there, as torchao's `block_size`)."""
    names = inspect.signature(factory).parameters
    kwargs = {name: _plain(group[name]) for name in names if name in group}
    for name in constructor_only(factory):
        if name in optimizer.defaults:
            kwargs[name] = _plain(optimizer.defaults[name])
        elif hasattr(optimizer, name):
            kwargs[name] = _plain(getattr(optimizer, name))
    return kwargs


def from_torch(
    optimizer: Any, scheduler: Any = None, *, steps_per_epoch: int = 1, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """The transformation equivalent to a live torch optimizer, and its lr scheduler.

    Args:
      optimizer: any `torch.optim` optimizer of the 15, with one or several param groups; lr and
        betas may be floats or 1-element tensors. Also torchao's low-bit optimizers
        (`torchao.optim.AdamW8bit`, ...: [`TORCH_CLASSES`][jaxopt_port.optim.TORCH_CLASSES]) and
        torchao's proximal wrappers `QuantOptimizer` (PARQ) and `PruneOptimizer` (PAT) around
        any of these, converted by [`prox.from_torch`][jaxopt_port.prox.from_torch.from_torch].
      scheduler: optionally its freshly built lr scheduler (any `torch.optim.lr_scheduler` class
        or `SWALR`): each group's lr follows `jaxopt_port.schedules.from_torch(scheduler,
        group=i)`, with CyclicLR's and OneCycleLR's momentum / β1 cycling; for ReduceLROnPlateau
        pass the metric to every update as `value=`.
      steps_per_epoch: optimizer steps per `scheduler.step()` (the number of batches when the
        scheduler is stepped once per epoch).
      **overrides: keyword arguments for every group's factory that torch has no counterpart for
        (e.g. `ns_dtype=None` for Muon).

    Returns:
      A [`TorchTransformation`][jaxopt_port.optim.TorchTransformation] for a params pytree whose
        leaves, in
      `jax.tree_util.tree_leaves` order, are the torch parameters in `param_groups` order. As
      in torch, Adagrad's `initial_accumulator_value` is the constructor's for every group. With
      several groups each group's leaves get that group's hyperparameters (`optax.partition` over
      labels `"group0"`, `"group1"`, ...). It carries a copy of every torch param group (all
      its keys, those a scheduler added included; lr, momentum and β1 as their schedules), so
      `interop.optimizer_state_to_torch` writes the `param_groups` torch would hold.

    Raises:
      TypeError: at once, if `optimizer` is not a torch optimizer instance (a module, a
        scheduler, a `state_dict` or the class itself: the message says which and what to pass).
      ValueError: at `init` (and, with several groups, whenever the labels are computed: every
        `update`, `interop`'s converters), if the number of leaves is not torch's number of
        parameters; with several groups also if leaf `i` cannot be torch parameter `i`: its
        shape must be the parameter's shape in torch's layout or in a Flax kernel's layout
        (`Linear` `(out, in)` as `(in, out)`, `Conv` `(out, in, *k)` as `(*k, in,
        out)`, `ConvTranspose` `(in, out, *k)` as `(*k, in, out)` or `(*k, out, in)`).
        The message names the first such leaf by path, the torch parameter it should be (group,
        position, name when the optimizer was built from `named_parameters()`) and what to do.

    Warning:
      With several param groups the order of the leaves decides which hyperparameters each gets, and
      `flax.nnx.Optimizer` orders an NNX model's parameters by sorted path (`bias` before `kernel`),
      which is not torch's order. The shape check catches that whenever two neighbouring parameters
      differ in shape, but it cannot see a wrong order among parameters of the same shape (e.g.
      every leaf a `(d, d)` matrix, or a square `Linear` kernel and its transpose): the leaves then
      silently get other groups' hyperparameters. For NNX models select the groups by path with
      [`jaxopt_port.transforms.param_groups`][jaxopt_port.transforms.param_groups.param_groups] or
      [`jaxopt_port.transforms.no_weight_decay`][jaxopt_port.transforms.no_weight_decay]. With one
      param group every leaf gets the same hyperparameters, so only the number of leaves is checked;
      the order still matters for `interop`'s optimizer-state converters (see there).

    Examples:
      >>> import torch
      >>> from jaxopt_port import optim
      >>> model = torch.nn.Linear(3, 2)
      >>> tx = optim.from_torch(torch.optim.AdamW(model.parameters(), lr=1e-3))
    """
    # torchao's QuantOptimizer / PruneOptimizer: read by jaxopt_port.prox (above optim: _core.hooks)
    wrapped = read_wrapper(optimizer, scheduler, steps_per_epoch, overrides)
    if wrapped is not None:
        return wrapped
    _check_optimizer(optimizer)
    factory = factory_for(type(optimizer))
    groups = optimizer.param_groups
    transforms = []
    for index, group in enumerate(groups):
        kwargs = {**group_kwargs(factory, group, optimizer), **overrides}
        scheduled: dict[str, Any] = {}
        if scheduler is None:
            tx = factory(**kwargs)
        else:  # the schedules layer builds it (it sits above optim: _core.hooks)
            tx, scheduled = scheduled_transformation(
                factory, kwargs, group, scheduler, index, steps_per_epoch
            )
        # torch's group as it is (tensors, Adagrad's own initial_accumulator_value, keys a
        # scheduler added such as initial_lr and max_lr), with the scheduled values following
        # their schedules
        static = copy.deepcopy({k: v for k, v in group.items() if k != "params"})
        transforms.append(carry(tx, [TorchGroup(None, {**static, **scheduled})]))
    expected = _torch_parameters(groups)
    name = factory.__name__
    if len(groups) == 1:
        single = transforms[0]

        def init(params: Any) -> Any:
            _check_leaves(params, expected, name, shapes=False)
            return single.init(params)

        return carry(
            optax.GradientTransformationExtraArgs(init, single.update), single.torch_groups
        )
    labels = [f"group{g}" for g, _, _, _ in expected]

    def param_labels(params):
        _check_leaves(params, expected, name, shapes=True)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), labels)

    return partition({f"group{i}": tx for i, tx in enumerate(transforms)}, param_labels)


# ----------------------------------------------------------------------------- leaf checks

_TorchParameter = tuple[int, int, "str | None", tuple[int, ...]]
"""`(param group, position in the group, torch name or None, torch shape)` per torch parameter."""


def _torch_parameters(groups: list[dict[str, Any]]) -> list[_TorchParameter]:
    """Every torch parameter in param_groups order; names where torch kept them
    (`named_parameters()` given to the optimizer fills the group's `"param_names"`)."""
    out = []
    for g, group in enumerate(groups):
        names = group.get("param_names") or [None] * len(group["params"])
        for k, (p, n) in enumerate(zip(group["params"], names, strict=True)):
            out.append((g, k, n, tuple(p.shape)))
    return out


def flax_layouts(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shapes a leaf standing for a torch parameter of `shape` may have: torch's own, then
    the layouts of Flax kernels (`interop.weights`): a `Linear` kernel `(in, out)` of torch's
    `(out, in)` (every dimension reversed), a `Conv` kernel `(*k, in, out)` of torch's
    `(out, in, *k)` and a `ConvTranspose` kernel `(*k, in, out)` of torch's `(in, out, *k)`.
    """
    layouts = [shape, shape[::-1]]
    if len(shape) >= 3:
        layouts += [(*shape[2:], shape[1], shape[0]), (*shape[2:], shape[0], shape[1])]
    return list(dict.fromkeys(layouts))


def _leaf_path(params: Any, index: int) -> str:
    named, _ = named_leaves(params)
    if len(named) == len(jax.tree_util.tree_leaves(params)):
        return "/".join(named[index][0])
    return jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(params)[0][index][0])


def _check_leaves(
    params: Any, expected: list[_TorchParameter], factory: str, *, shapes: bool
) -> None:
    """Raise `ValueError` unless `params` has one leaf per torch parameter and, with
    `shapes`, leaf `i` has a shape torch parameter `i` can have (`flax_layouts`)."""
    leaves = jax.tree_util.tree_leaves(params)
    groups = len({g for g, _, _, _ in expected})
    if len(leaves) != len(expected):
        sizes = [sum(1 for g, _, _, _ in expected if g == i) for i in range(groups)]
        raise ValueError(
            f"params has {len(leaves)} leaves but the torch optimizer has {len(expected)} "
            f"parameters in {groups} param group(s) (sizes {sizes}); the leaves must be "
            "the torch parameters in param_groups order"
        )
    if not shapes:
        return
    for i, (leaf, (g, k, name, torch_shape)) in enumerate(zip(leaves, expected, strict=True)):
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        layouts = flax_layouts(torch_shape)
        if shape in layouts:
            continue
        which = f"{name!r}, " if name else ""
        other = " or ".join(str(s) for s in layouts[1:])
        allowed = f"{torch_shape} (torch's layout)" + (
            f" or {other} (a Flax kernel's layout)" if other else ""
        )
        raise ValueError(
            f"optim.from_torch: leaf {i} of params ({_leaf_path(params, i)!r}, shape {shape}) "
            f"does not fit torch parameter {i} ({which}param group {g}, position {k}, shape "
            f"{torch_shape}): it must have shape {allowed}. With several param groups, leaf i "
            "gets the hyperparameters of torch parameter i (leaves in jax.tree_util.tree_leaves "
            "order, torch parameters in param_groups order). flax.nnx.Optimizer and nnx.state "
            "order parameters by sorted path (a bias before its kernel), not in torch's order: "
            f"select the groups by path instead, with transforms.param_groups(optim.{factory}, "
            "[{'params': <pattern or predicate>, <hyperparameters>}], ...) or "
            f"transforms.no_weight_decay(optim.{factory}, ...)."
        )
