"""torch-style param groups: per-group hyperparameters for any jaxopt_port optimizer.

`torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)`
becomes `param_groups(optim.adamw, [{"params": is_bias_or_norm, "weight_decay": 0.0}],
lr=3e-4)`: each group is one call of the factory with the constructor's keyword arguments
updated by the group's, and `optax.partition` routes every leaf to its group.

torch lists the parameter tensors of a group; JAX arrays have no identity that survives `jit`,
so a group *selects* leaves of the params pytree by their path instead:

- a **pattern** string, matched against the leaf's path in two spellings; it selects the leaf
  if it matches either:

  1. the path's names joined by `"/"` (`"encoder/layers/0/bias"`), the pattern split into
     components at `"/"`;
  2. the path's names joined by `"."` (`"encoder.layers.0.bias"`, the spelling of torch's
     parameter names and of `interop.weights`' keys), both split into components at `"."` —
     so a dict key `"0.weight"` is the two components `0` and `weight` here.

  Within a spelling, matching is component-wise and anchored at both ends: `*`, `?` and
  `[seq]` are `fnmatch` wildcards inside one component (they never cross a separator); a
  component that is exactly `**` matches zero or more whole components. So `"*/bias"` (or
  `"*.bias"`) is a `bias` exactly one level down, `"**/bias"` (`"**.bias"`) a `bias` at
  any depth (the top level included) and `"encoder/**"` everything under `encoder`.
  Case-sensitive. The names are the pytree's (Flax's `kernel`/`scale`, not torch's
  `weight`), and an `nnx.Sequential` keeps its layers under `layers`: torch's
  `"3.weight"` of an `nn.Sequential` is `"layers.3.kernel"` in its NNX twin, selected by
  `"layers.3.*"` (the dict of torch names in docs/migration.md is selected by `"3.*"`).
- a **list of patterns**: a leaf is selected if any pattern matches.
- a **predicate** `(path: tuple[str, ...], leaf) -> bool`. It runs while tracing too, so it
  must decide from the path, shape, `ndim` and dtype only, never from the values.

Path names: a dict key or `DictKey` is `str(key)`, an attribute (`GetAttrKey`, NamedTuples,
dataclasses) its name, a list/tuple index (`SequenceKey`) `str(index)`. A Flax
`nnx.Variable` (`nnx.state(model, nnx.Param)`) or Linen `AxisMetadata` box
(`nn.Partitioned`) counts as one leaf at the box's path, so a `nnx.Linear` bias is
`("linear", "bias")` whether the tree holds Variables (`Optimizer.init`) or plain arrays
(`Optimizer.update`), and the predicate sees the array inside.

Differences from torch, all deliberate:

- Leaves selected by no group go to a `"default"` group with the constructor's arguments
  (`unmatched="default"`), so the common recipe needs one group only. torch has no such
  leaves: a parameter left out of every group is simply not optimized — `unmatched="freeze"`
  reproduces that, `unmatched="error"` raises instead.
- A group that selects no leaf raises `ValueError` (at `init`/`update`, when the params are first
  seen), listing some of the paths there are: it is almost always a pattern that does not match the
  tree's spelling. torch allows a group with an empty params list; `allow_empty=True` allows it here
  too. [`describe_param_groups`][jaxopt_port.transforms.describe_param_groups] shows what each group
  selects.
- As in torch, a leaf in two groups raises `ValueError("some parameters appear in more than
  one parameter group ...")`; the message also names the path and both groups.
- As in torch, Adagrad's `initial_accumulator_value` is the constructor's for every group (a
  group's value is ignored by torch).

A group may carry a `"name"` (torch keeps any extra key); it becomes the group's label in the
optimizer state and in [`describe_param_groups`][jaxopt_port.transforms.describe_param_groups],
instead of `"group<i>"`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Literal, TypeAlias

import jax
import numpy as np
import optax

from jaxopt_port._core.paths import named_leaves as _named_leaves
from jaxopt_port._core.paths import path_names
from jaxopt_port._core.torch_groups import constructor_only, partition, single_group

__all__ = [
    "Selector",
    "describe_param_groups",
    "is_bias_or_norm",
    "no_weight_decay",
    "param_group_labels",
    "param_groups",
    "path_names",
]

Selector: TypeAlias = str | Sequence[str] | Callable[[tuple[str, ...], Any], bool]
"""A group's `"params"`: a glob pattern, a list of patterns, or `(path, leaf) -> bool`."""
Unmatched: TypeAlias = Literal["default", "freeze", "error"]

DEFAULT_LABEL = {"default": "default", "freeze": "frozen"}
"""Label of the leaves no group selects (`unmatched="default"` or `"freeze"`)."""
_RESERVED = ("params", "name")
"""Group keys that are not hyperparameters."""


# ----------------------------------------------------------------------------- selectors


def _match_parts(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(rest, names[i:]) for i in range(len(names) + 1))
    return bool(names) and fnmatchcase(names[0], head) and _match_parts(rest, names[1:])


def _as_predicate(selector: Any, where: str) -> Callable[[tuple[str, ...], Any], bool]:
    if isinstance(selector, str):
        selector = [selector]
    if callable(selector):
        return selector
    if isinstance(selector, Sequence) and all(isinstance(p, str) for p in selector):
        slash = [tuple(p.split("/")) for p in selector]
        dot = [tuple(p.split(".")) for p in selector]

        def predicate(names: tuple[str, ...], leaf: Any) -> bool:
            dotted = tuple(".".join(names).split("."))
            return any(_match_parts(p, names) for p in slash) or any(
                _match_parts(p, dotted) for p in dot
            )

        return predicate
    raise TypeError(
        f"{where}: 'params' must be a glob pattern, a list of patterns or a predicate "
        f"(path, leaf) -> bool, got {type(selector).__name__}. JAX arrays have no identity "
        "that survives jit, so groups select leaves by path rather than by listing arrays."
    )


def _describe_selector(selector: Any) -> str:
    if isinstance(selector, str) or not callable(selector):
        return repr(selector if isinstance(selector, str) else list(selector))
    return getattr(selector, "__name__", repr(selector))


def is_bias_or_norm(path: tuple[str, ...], leaf: Any) -> bool:
    """The leaves the usual recipe exempts from weight decay: biases and normalization scales.

    Selected: every leaf whose last path name is `"bias"`, and every leaf with at most one
    dimension — Flax's `LayerNorm`/`BatchNorm`/`GroupNorm`/`RMSNorm` `scale`, torch-named
    norm `weight`\\ s, biases under any name, and scalars. Kernels, convolution filters and
    embeddings (two or more dimensions) are not. This is timm's rule
    (`param.ndim <= 1 or name.endswith(".bias")`).

    Examples:
      >>> import jax.numpy as jnp
      >>> is_bias_or_norm(("LayerNorm_0", "scale"), jnp.ones(4))
      True
      >>> is_bias_or_norm(("Dense_0", "kernel"), jnp.ones((3, 4)))
      False
    """
    return (bool(path) and path[-1] == "bias") or np.ndim(leaf) <= 1


# ----------------------------------------------------------------------------- groups


def _checked_groups(groups: Sequence[Mapping[str, Any]]) -> list[tuple[str, Callable, str]]:
    """`[(label, predicate, description)]`; raises for a malformed group."""
    if isinstance(groups, Mapping) or not isinstance(groups, Sequence):
        raise TypeError(
            f"groups must be a sequence of dicts (torch's param groups), got {type(groups).__name__}"
        )
    checked, labels = [], set()
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping):
            raise TypeError(f"param group {i} must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"param group {i} has no 'params' selector")
        label = group.get("name", f"group{i}")
        if not isinstance(label, str) or label in labels or label in DEFAULT_LABEL.values():
            raise ValueError(
                f"param group {i}: 'name' must be a str other than 'default', 'frozen' and the "
                f"other groups' labels, got {label!r}"
            )
        labels.add(label)
        where = f"param group {i}" + (f" ({label!r})" if "name" in group else "")
        selector = group["params"]
        checked.append((label, _as_predicate(selector, where), _describe_selector(selector)))
    return checked


def _label_of(names: tuple[str, ...], leaf: Any, checked: list, unmatched: str) -> str | None:
    hits = []
    for index, (label, predicate, description) in enumerate(checked):
        try:
            selected = bool(predicate(names, leaf))
        except jax.errors.ConcretizationTypeError as error:
            raise TypeError(
                f"the predicate of param group {index} ({description}) depends on the values of "
                f"{'/'.join(names)!r}; it runs while tracing, so it may only use the path, "
                "shape and dtype"
            ) from error
        if selected:
            hits.append((index, label, description))
    if len(hits) > 1:
        (i, _, a), (j, _, b) = hits[:2]
        raise ValueError(
            "some parameters appear in more than one parameter group: "
            f"{'/'.join(names)!r} is selected by param group {i} ({a}) and param group {j} ({b})"
        )
    if hits:
        return hits[0][1]
    return None if unmatched == "error" else DEFAULT_LABEL[unmatched]


def _check_unmatched(unmatched: str) -> None:
    if unmatched not in ("default", "freeze", "error"):
        raise ValueError(f"unmatched must be 'default', 'freeze' or 'error', got {unmatched!r}")


def _shown(paths: Sequence[str], limit: int = 10) -> str:
    return ", ".join(repr(p) for p in paths[:limit]) + (", ..." if len(paths) > limit else "")


def _check_selected(checked: list, names: list, labels: list) -> None:
    """Raise `ValueError` for the first group that selects no leaf."""
    used = set(labels)
    for index, (label, _, description) in enumerate(checked):
        if label in used:
            continue
        paths = ["/".join(n) for n in names]
        rule = ""
        if description.startswith(("'", '"', "[")) and names:  # patterns, not a predicate
            dotted = ".".join(names[0])
            rule = (
                "patterns are matched against each path joined by '/' (as listed) and by '.' "
                f"({dotted!r} for {paths[0]!r}), anchored at both ends; "
            )
        raise ValueError(
            f"param group {index} ({description}) selects no parameter: {rule}the params have "
            f"{len(paths)} leaves: {_shown(paths, 8)}. Pass allow_empty=True to allow a group "
            "that selects nothing (torch allows an empty 'params' list)."
        )


def _labels(
    checked: list, params: Any, unmatched: str, allow_empty: bool = True
) -> tuple[list, list, Any]:
    """`(names per leaf, label per leaf, treedef)`; raises on overlaps, with
    `unmatched="error"` on leaves no group selects and without `allow_empty` on a group that
    selects no leaf."""
    _check_unmatched(unmatched)
    named, treedef = _named_leaves(params)
    names = [n for n, _ in named]
    labels = [_label_of(n, leaf, checked, unmatched) for n, leaf in named]
    missing = ["/".join(n) for n, label in zip(names, labels, strict=True) if label is None]
    if missing:
        raise ValueError(
            f"{len(missing)} parameter(s) are in no param group and unmatched='error': "
            f"{_shown(missing)}"
        )
    if not allow_empty:
        _check_selected(checked, names, labels)
    return names, labels, treedef


def param_group_labels(
    groups: Sequence[Mapping[str, Any]],
    params: Any,
    *,
    unmatched: Unmatched = "default",
    allow_empty: bool = False,
) -> Any:
    """The label of every leaf of `params`, as the pytree `optax.partition` takes.

    Args:
      groups: torch-style param groups (only their `"params"` and `"name"` are read).
      params: the params pytree (arrays, `jax.ShapeDtypeStruct`\\ s, tracers, Flax states).
      unmatched: where leaves no group selects go — see
        [`param_groups`][jaxopt_port.transforms.param_groups.param_groups].
      allow_empty: allow a group that selects no leaf (default: `ValueError`), as in
        [`param_groups`][jaxopt_port.transforms.param_groups.param_groups].

    Returns:
      A pytree with the structure of `params` (Flax boxes replaced by their label) whose leaves
      are `"group<i>"` (or the group's `"name"`), `"default"` or `"frozen"`.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
      >>> param_group_labels([{"params": "**/bias"}], params)
      {'dense': {'bias': 'group0', 'kernel': 'default'}}
    """
    _, labels, treedef = _labels(_checked_groups(groups), params, unmatched, allow_empty)
    return jax.tree_util.tree_unflatten(treedef, labels)


def describe_param_groups(
    groups: Sequence[Mapping[str, Any]], params: Any, *, unmatched: Unmatched = "default"
) -> dict[str, list[str]]:
    """What went where: every group's label with the `"/"`-joined paths it selects.

    Every group appears, in order and also when it selects nothing (this is the tool to find such a
    group, so it does not raise for it), followed by the unmatched leaves' group (`"default"` or
    `"frozen"`) when there are any. Otherwise raises as
    [`param_groups`][jaxopt_port.transforms.param_groups.param_groups] would (overlaps, unmatched
    leaves with `unmatched="error"`).

    Args:
      groups: torch-style param groups.
      params: the params pytree.
      unmatched: `"default"`, `"freeze"` or `"error"`, as in
        [`param_groups`][jaxopt_port.transforms.param_groups.param_groups].

    Returns:
      `{label: [path, ...]}`, paths in `jax.tree_util` leaf order.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
      >>> describe_param_groups([{"params": is_bias_or_norm}], params)
      {'group0': ['dense/bias'], 'default': ['dense/kernel']}
    """
    checked = _checked_groups(groups)
    names, labels, _ = _labels(checked, params, unmatched)
    described: dict[str, list[str]] = {label: [] for label, _, _ in checked}
    for n, label in zip(names, labels, strict=True):
        described.setdefault(label, []).append("/".join(n))
    return described


def _hyperparameter_names(factory: Callable) -> set[str] | None:
    """The factory's keyword names; None if it takes `**kwargs` (anything goes)."""
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _check_names(factory: Callable, given: Mapping[str, Any], where: str) -> None:
    names = _hyperparameter_names(factory)
    unknown = sorted(set(given) - set(_RESERVED) - names) if names is not None else []
    if unknown:
        name = getattr(factory, "__name__", repr(factory))
        raise TypeError(
            f"{where} has hyperparameter(s) {unknown} that {name} does not take; "
            f"it takes {sorted(names)}"
        )


def param_groups(
    factory: Callable[..., optax.GradientTransformation],
    groups: Sequence[Mapping[str, Any]],
    /,
    *,
    unmatched: Unmatched = "default",
    allow_empty: bool = False,
    **defaults: Any,
) -> optax.GradientTransformationExtraArgs:
    """torch's param groups for a jaxopt_port optimizer: `factory(**defaults)` per group, with
    each group's hyperparameters overriding the constructor's.

    Group `i` gets `factory(**{**defaults, **group_hyperparameters})` and the leaves its
    `"params"` selector selects (module docstring: patterns, predicates, path names). The
    result is an `optax.partition` over labels `"group0"`, `"group1"`, ... (as
    `optim.from_torch` labels a several-group torch optimizer; a group's `"name"` replaces
    its label) plus `"default"`/`"frozen"` for the unmatched leaves. Labels are computed from
    the tree structure only, so `init`/`update` trace once under `jax.jit` and work inside
    `optax` wrappers and `flax.nnx.Optimizer`.

    Args:
      factory: a jaxopt_port optimizer factory, e.g. `optim.adamw` (any callable returning an
        optax transformation).
      groups: a sequence of dicts, each with `"params"` (a
        [`Selector`][jaxopt_port.transforms.Selector]), an optional `"name"` and hyperparameters for
        `factory`.
      unmatched: the leaves no group selects: `"default"` (default) puts them in a
        `"default"` group with the constructor's arguments; `"freeze"` never changes them
        (torch's behaviour for a parameter given to no group); `"error"` raises `ValueError`
        at `init`/`update` listing them.
      allow_empty: if False (default), a group that selects no leaf raises `ValueError` at
        `init`/`update` (naming the group and listing some of the paths there are); if True
        such a group is allowed and optimizes nothing, as torch's group with an empty params list.
      **defaults: the factory's keyword arguments (torch's constructor arguments).

    Returns:
      An `optax.GradientTransformationExtraArgs`; its state is an `optax.PartitionState`
      whose `inner_states` are keyed by label. It is a
      [`TorchTransformation`][jaxopt_port.optim.TorchTransformation] carrying torch's param groups
        for
      `interop.optimizer_state_to_torch`: the groups in order (hyperparameters as torch's group
      would hold them, `"name"` included), then `"default"`; frozen leaves are in none, as
      torch would not hold them. Torch numbers its parameters group after group, so the torch
      id of a leaf is its position in that order, not its leaf index, when groups interleave.

    Raises:
      TypeError: at once, for a hyperparameter the factory does not take or a selector of the
        wrong type. The factory's own `ValueError` (torch's message) also comes at once.
      ValueError: at `init`/`update`, for a leaf selected by two groups (naming the path and
        both groups), an unmatched leaf with `unmatched="error"`, or a group that selects no
        leaf unless `allow_empty=True`.

    Examples:
      >>> from jaxopt_port import optim
      >>> from jaxopt_port.transforms import is_bias_or_norm, param_groups
      >>> tx = param_groups(
      ...     optim.adamw, [{"params": is_bias_or_norm, "weight_decay": 0.0}],
      ...     lr=3e-4, weight_decay=0.05)
    """
    checked = _checked_groups(groups)
    _check_unmatched(unmatched)
    _check_names(factory, defaults, "the constructor")
    held = constructor_only(factory)
    transforms: dict[str, optax.GradientTransformation] = {}
    torch_keys: dict[str, dict[str, Any]] = {}  # what torch's group holds beyond the call
    for i, ((label, _, _), group) in enumerate(zip(checked, groups, strict=True)):
        _check_names(factory, group, f"param group {i}")
        kwargs = {**defaults, **{k: v for k, v in group.items() if k not in _RESERVED}}
        for name in held:  # torch reads these from the constructor only
            kwargs.pop(name, None)
            if name in defaults:
                kwargs[name] = defaults[name]
        transforms[label] = factory(**kwargs)
        carried = single_group(transforms[label]) or {}
        torch_keys[label] = {k: v for k, v in group.items() if k == "name" or k in carried}
    if unmatched == "default":
        transforms[DEFAULT_LABEL["default"]] = factory(**defaults)
    elif unmatched == "freeze":
        transforms[DEFAULT_LABEL["freeze"]] = optax.set_to_zero()

    def labels(tree: Any) -> Any:
        _, leaf_labels, treedef = _labels(checked, tree, unmatched, allow_empty)
        return jax.tree_util.tree_unflatten(treedef, leaf_labels)

    return partition(transforms, labels, torch_keys, frozen=(DEFAULT_LABEL["freeze"],))


def no_weight_decay(
    factory: Callable[..., optax.GradientTransformation],
    /,
    selector: Selector = is_bias_or_norm,
    *,
    allow_empty: bool = False,
    **defaults: Any,
) -> optax.GradientTransformationExtraArgs:
    """The usual recipe in one line: `weight_decay=0` for the leaves `selector` picks (biases and
    norm scales by default, [`is_bias_or_norm`][jaxopt_port.transforms.is_bias_or_norm]), the
    constructor's arguments for every other leaf.

    Same as `param_groups(factory, [{"params": selector, "weight_decay": 0.0}], **defaults)`;
    the no-decay group is labelled `"no_decay"`, the rest `"default"`.

    Args:
      factory: a jaxopt_port optimizer factory with a `weight_decay` argument.
      selector: the leaves without weight decay (a pattern, list of patterns or predicate).
      allow_empty: allow a model where `selector` selects nothing (default: `ValueError` at
        `init`, see [`param_groups`][jaxopt_port.transforms.param_groups.param_groups]).
      **defaults: the factory's keyword arguments, `weight_decay` included.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Examples:
      >>> from jaxopt_port import optim
      >>> from jaxopt_port.transforms import no_weight_decay
      >>> tx = no_weight_decay(optim.adamw, lr=3e-4, weight_decay=0.05)
    """
    return param_groups(
        factory,
        [{"params": selector, "weight_decay": 0.0, "name": "no_decay"}],
        allow_empty=allow_empty,
        **defaults,
    )
