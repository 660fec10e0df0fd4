"""torch's param-group hyperparameters, carried by the transformation that uses them.

A torch optimizer keeps its hyperparameters in `param_groups` and saves them in its `state_dict()`;
`load_state_dict` replaces each group's hyperparameters with the saved ones. So that a jaxopt_port
state converts to a *complete* torch `state_dict`, every optimizer factory returns a
[`TorchTransformation`][jaxopt_port.optim.TorchTransformation]: an ordinary
`optax.GradientTransformationExtraArgs` that also holds, per torch param group, a label (its key in
an `optax.partition`, `None` for a single group) and the hyperparameters under torch's group keys —
the factory's arguments as bound, schedules included (evaluated at conversion time). The factories
get this from one decorator, `carries_torch_group`; `optim.from_torch`, `schedules.with_schedules`
and `transforms.param_groups` build their results with `carry` and `partition`.

The carrier is an attribute of the returned object, so wrapping the transformation
(`optax.chain`, `optax.MultiSteps`, `optax.inject_hyperparams`) leaves it behind; the
wrapped transformation still works, it only converts without hyperparameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import jax
import optax

__all__ = [
    "TorchGroup",
    "TorchTransformation",
    "carries_torch_group",
    "carry",
    "constructor_only",
    "factory_hyperparams",
    "partition",
    "single_group",
    "torch_factories",
    "torch_layout",
]

F = TypeVar("F", bound=Callable[..., optax.GradientTransformation])


class TorchGroup(NamedTuple):
    """One torch param group: its `optax.partition` label (`None` for a single group) and its
    hyperparameters under torch's keys (empty when unknown: the group then has only
    `"params"`)."""

    label: Any
    hyperparams: Mapping[str, Any]


class TorchTransformation(optax.GradientTransformationExtraArgs):
    """An `optax.GradientTransformationExtraArgs` that also carries torch's param groups.

    It is the same `(init, update)` pair, so it works wherever an optax transformation does;
    [`jaxopt_port.interop.optimizer_state_to_torch`][jaxopt_port.interop.optimizer_state_to_torch]
    reads the carried groups.

    Attributes:
      torch_groups: the torch param groups in torch's order, each a `TorchGroup`.
      torch_labels: for several groups, the `param_labels` given to `optax.partition` (a
        function of the params or a pytree of labels); leaf `i` belongs to the group with its
        label, and a leaf whose label has no group (a frozen one) has no torch counterpart.
        `None` for a single group holding every leaf.
    """

    # no __slots__: instances hold the two attributes below next to the (init, update) tuple
    torch_groups: tuple[TorchGroup, ...] = ()
    torch_labels: Any = None


def carry(
    tx: optax.GradientTransformation, groups: Sequence[TorchGroup], labels: Any = None
) -> TorchTransformation:
    """`tx` as a [`TorchTransformation`][jaxopt_port.optim.TorchTransformation] carrying `groups`
    (and `labels`, for several)."""
    if labels is None and len(groups) != 1:
        raise ValueError(f"{len(groups)} torch param groups need the labels of optax.partition")
    out = TorchTransformation(tx.init, optax.with_extra_args_support(tx).update)
    out.torch_groups = tuple(groups)
    out.torch_labels = labels
    return out


def single_group(tx: Any) -> Mapping[str, Any] | None:
    """The hyperparameters `tx` carries when it is one torch param group, else `None`."""
    groups = getattr(tx, "torch_groups", ())
    if len(groups) == 1 and getattr(tx, "torch_labels", None) is None:
        return groups[0].hyperparams
    return None


def partition(
    transforms: Mapping[Any, optax.GradientTransformation],
    labels: Any,
    extras: Mapping[Any, Mapping[str, Any]] | None = None,
    frozen: Sequence[Any] = (),
) -> TorchTransformation:
    """`optax.partition(transforms, labels)` carrying one torch param group per label.

    The groups follow the order of `transforms`; each holds the hyperparameters its
    transformation carries (a jaxopt_port optimizer; none for another transformation) updated by
    `extras[label]` (torch's other group keys). The `frozen` labels (`optax.set_to_zero()`)
    get no group: torch would not hold those parameters.
    """
    extras = extras or {}
    groups = [
        TorchGroup(label, {**(single_group(tx) or {}), **extras.get(label, {})})
        for label, tx in transforms.items()
        if label not in frozen
    ]
    return carry(optax.partition(dict(transforms), labels), groups, labels)


# ----------------------------------------------------------------------------- factories

_TORCH_GROUP: dict[Callable[..., Any], Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""Per decorated factory: what torch's constructor does to the arguments to make its group."""
_CONSTRUCTOR_ONLY: dict[Callable[..., Any], tuple[str, ...]] = {}
_TORCH_CLASSES: dict[str, Callable[..., Any]] = {}


def _as_given(arguments: dict[str, Any]) -> dict[str, Any]:
    return arguments


def carries_torch_group(
    torch_group: Callable[[dict[str, Any]], dict[str, Any]] = _as_given,
    *,
    torch_class: str | None = None,
    constructor_only: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Decorate an optimizer factory so that it returns a
    [`TorchTransformation`][jaxopt_port.optim.TorchTransformation].

    Its single group holds the call's arguments as bound, with defaults — torch's param-group
    keys, since the factories take torch's signature — passed through `torch_group` where
    torch's group differs from its constructor's arguments (AdamW's group also holds
    `decoupled_weight_decay=True`; L-BFGS resolves `max_eval=None`; Muon's `ns_dtype` is
    not torch's). Name, signature and docstring are the factory's. `constructor_only` names
    the hyperparameters torch reads from the optimizer's constructor rather than from each param
    group (a torch quirk: Adagrad fills every group's `sum` with the constructor's
    `initial_accumulator_value`); `constructor_only` returns them. `torch_class`
    names the `torch.optim` class the factory stands for: it enters `torch_factories`,
    the table `optim.from_torch` reads (one declaration per optimizer, beside its factory).
    """

    def decorate(factory: F) -> F:
        @functools.wraps(factory)
        def wrapped(*args: Any, **kwargs: Any) -> TorchTransformation:
            tx = factory(*args, **kwargs)  # the factory's own errors come first, unchanged
            return carry(tx, [TorchGroup(None, factory_hyperparams(wrapped, *args, **kwargs))])

        _TORCH_GROUP[wrapped] = torch_group
        _CONSTRUCTOR_ONLY[wrapped] = constructor_only
        if torch_class is not None:
            if torch_class in _TORCH_CLASSES:
                raise ValueError(f"two factories declare torch.optim.{torch_class}")
            _TORCH_CLASSES[torch_class] = wrapped
        return wrapped  # type: ignore[return-value]

    return decorate


def torch_factories() -> dict[str, Callable[..., Any]]:
    """`torch.optim` class name -> the factory declared for it (`carries_torch_group`'s
    `torch_class`), in declaration order; a copy."""
    return dict(_TORCH_CLASSES)


def constructor_only(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The hyperparameters torch reads from `factory`'s constructor only, not per param group
    (declared with `carries_torch_group`; empty for other callables)."""
    try:
        return _CONSTRUCTOR_ONLY.get(factory, ())
    except TypeError:  # unhashable
        return ()


def factory_hyperparams(factory: Callable[..., Any], /, *args: Any, **kwargs: Any) -> dict | None:
    """torch's param-group hyperparameters for `factory(*args, **kwargs)`, values as given
    (schedules included); `None` for a factory not decorated with `carries_torch_group`."""
    torch_group = _TORCH_GROUP.get(factory)
    if torch_group is None:
        return None
    bound = inspect.signature(factory).bind(*args, **kwargs)
    bound.apply_defaults()
    return torch_group(dict(bound.arguments))


# ----------------------------------------------------------------------------- leaf order


def torch_layout(tx: Any, params: Any) -> list[tuple[TorchGroup | None, list[int]]]:
    """The torch param groups of `tx` with the leaf indices of `params` each holds.

    torch numbers its parameters `0, 1, ...` in `param_groups` order, so torch id `k` is the
    `k`-th leaf index in the concatenation of the lists; leaves in no list (frozen ones) have no
    torch counterpart. Within a group the leaves keep `jax.tree_util.tree_leaves` order.

    Returns:
      `[(group, leaf indices)]`; `[(None, every leaf)]` when `tx` carries no groups (leaf
      `i` is then torch's parameter `i`).
    """
    count = len(jax.tree_util.tree_leaves(params))
    groups = getattr(tx, "torch_groups", ())
    labels = getattr(tx, "torch_labels", None)
    if not groups or labels is None:
        return [(groups[0] if groups else None, list(range(count)))]
    leaf_labels = jax.tree_util.tree_leaves(labels(params) if callable(labels) else labels)
    if len(leaf_labels) != count:
        raise ValueError(
            f"the param-group labels have {len(leaf_labels)} leaves, params has {count}"
        )
    return [
        (group, [i for i, label in enumerate(leaf_labels) if label == group.label])
        for group in groups
    ]
