"""Build the jaxopt_port transformation equivalent to a live ``torch.optim`` optimizer."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxopt_port.optim._base import as_float, is_tensor_like
from jaxopt_port.optim._hyperparams import TorchGroup, carry, partition

__all__ = ["factory_for", "from_torch"]


def _snake(name: str) -> str:
    return {
        "AdamW": "adamw",
        "RMSprop": "rmsprop",
        "NAdam": "nadam",
        "RAdam": "radam",
        "ASGD": "asgd",
        "LBFGS": "lbfgs",
        "SGD": "sgd",
        "SparseAdam": "sparse_adam",
    }.get(name, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())


def factory_for(
    torch_optimizer_class: type,
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """The jaxopt_port factory for a ``torch.optim`` class (or one derived from it)."""
    from jaxopt_port import optim

    for cls in torch_optimizer_class.__mro__:
        factory = getattr(optim, _snake(cls.__name__), None)
        if factory is not None and cls.__module__.startswith("torch.optim"):
            return factory
    raise TypeError(f"no jaxopt_port optimizer for {torch_optimizer_class.__name__}")


def _plain(value: Any) -> Any:
    """Tensors (lr, betas) to Python floats; tuples element-wise."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if is_tensor_like(value) and hasattr(value, "numel"):
        return as_float(value)
    return value


#: Hyperparameters torch reads from the constructor, not from the param group (torch quirks):
#: Adagrad fills every group's ``sum`` with the constructor's ``initial_accumulator_value``.
CONSTRUCTOR_ONLY = {"adagrad": ("initial_accumulator_value",)}


def group_kwargs(
    factory: Callable, group: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """The factory's keyword arguments read from one torch param group."""
    names = inspect.signature(factory).parameters
    kwargs = {name: _plain(group[name]) for name in names if name in group}
    for name in CONSTRUCTOR_ONLY.get(factory.__name__, ()):
        kwargs[name] = _plain(defaults[name])
    return kwargs


def from_torch(
    optimizer: Any, scheduler: Any = None, *, steps_per_epoch: int = 1, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """The transformation equivalent to a live torch optimizer, and its lr scheduler.

    Args:
      optimizer: any ``torch.optim`` optimizer of the 15, with one or several param groups; lr and
        betas may be floats or 1-element tensors.
      scheduler: optionally its freshly built lr scheduler (any ``torch.optim.lr_scheduler`` class
        or ``SWALR``): each group's lr follows ``jaxopt_port.schedules.from_torch(scheduler,
        group=i)``, with CyclicLR's and OneCycleLR's momentum / β1 cycling; for ReduceLROnPlateau
        pass the metric to every update as ``value=``.
      steps_per_epoch: optimizer steps per ``scheduler.step()`` (the number of batches when the
        scheduler is stepped once per epoch).
      **overrides: keyword arguments for every group's factory that torch has no counterpart for
        (e.g. ``ns_dtype=None`` for Muon).

    Returns:
      A :class:`~jaxopt_port.optim.TorchTransformation` for a params pytree whose leaves, in
      ``jax.tree_util.tree_leaves`` order, are the torch parameters in ``param_groups`` order. As
      in torch, Adagrad's ``initial_accumulator_value`` is the constructor's for every group. With
      several groups each group's leaves get that group's hyperparameters (``optax.partition`` over
      labels ``"group0"``, ``"group1"``, ...); ``init`` raises if the number of leaves differs
      from torch's number of parameters. It carries a copy of every torch param group (all its
      keys, those a scheduler added included; lr, momentum and β1 as their schedules), so
      ``interop.optimizer_state_to_torch`` writes the ``param_groups`` torch would hold.

    Example:
      >>> import torch
      >>> from jaxopt_port import optim
      >>> model = torch.nn.Linear(3, 2)
      >>> tx = optim.from_torch(torch.optim.AdamW(model.parameters(), lr=1e-3))
    """
    factory = factory_for(type(optimizer))
    groups = optimizer.param_groups
    transforms = []
    for index, group in enumerate(groups):
        kwargs = {**group_kwargs(factory, group, optimizer.defaults), **overrides}
        scheduled: dict[str, Any] = {}
        if scheduler is None:
            tx = factory(**kwargs)
        else:
            from jaxopt_port import schedules  # schedules sit above optim
            from jaxopt_port.schedules._wiring import schedule_kwargs

            schedule = schedules.from_torch(scheduler, index, steps_per_epoch=steps_per_epoch)
            names = inspect.signature(factory).parameters
            scheduled = schedule_kwargs(schedule, names, group)
            tx = schedules.with_schedules(factory, **{**kwargs, **scheduled})
        # torch's group as it is (tensors, Adagrad's own initial_accumulator_value, keys a
        # scheduler added such as initial_lr and max_lr), with the scheduled values following
        # their schedules
        static = copy.deepcopy({k: v for k, v in group.items() if k != "params"})
        transforms.append(carry(tx, [TorchGroup(None, {**static, **scheduled})]))
    if len(groups) == 1:
        return transforms[0]
    sizes = [len(g["params"]) for g in groups]
    labels = [f"group{i}" for i, n in enumerate(sizes) for _ in range(n)]

    def param_labels(params):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if len(leaves) != len(labels):
            raise ValueError(
                f"params has {len(leaves)} leaves but the torch optimizer has {len(labels)} "
                f"parameters in {len(groups)} param groups (sizes {sizes}); the leaves must be "
                "the torch parameters in param_groups order"
            )
        return jax.tree_util.tree_unflatten(treedef, labels)

    return partition({f"group{i}": tx for i, tx in enumerate(transforms)}, param_labels)
