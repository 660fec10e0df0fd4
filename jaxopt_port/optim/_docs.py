"""Argument descriptions shared by the optimizer docstrings, written once.

A docstring names a shared description by a placeholder on a line of its own, `{lr}`; `doc`
replaces exactly the placeholders named in `ARGS` (indenting a description of several lines as
the placeholder is) and leaves every other brace alone, so the LaTeX in the
docstrings is written with ordinary single braces (`\\theta_{t-1}`). The docs site's build fills
the same placeholders through `fill` (a griffe extension in `docs/`), so the page and `help()`
show the same text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

ARGS = {
    "lr": "lr: learning rate γ: a float, a 1-element array or tensor, or an optax schedule "
    "`count -> lr` evaluated at the number of previous updates (torch's lr at its k-th "
    "`step()` when a scheduler steps after each). A torch scheduler converts with "
    "[`schedules.from_torch`][jaxopt_port.schedules.from_torch]; "
    "[`schedules.reduce_lr_on_plateau`][jaxopt_port.schedules.reduce_lr_on_plateau] goes through "
    "[`schedules.with_schedules`][jaxopt_port.schedules.with_schedules] (either given here raises "
    "`TypeError` saying so).",
    "weight_decay": "weight_decay: L2 penalty λ added to the gradient (`g += λθ`). `True` "
    "raises `TypeError` (torch accepts it and fails in `step()`).",
    "decoupled_weight_decay": "decoupled_weight_decay: if True, decay the parameters instead "
    "(`θ *= 1 - γλ`, AdamW-style) rather than adding `λθ` to the gradient.",
    "maximize": "maximize: maximize the objective (the gradient is negated first).",
    "foreach": "foreach: torch's choice of kernel; accepted for signature compatibility, it "
    "changes nothing here (torch's kernels agree to rounding).",
    "fused": "fused: torch's choice of kernel; accepted and ignored, as `foreach`.",
    "capturable": "capturable: torch's CUDA-graph capture switch; accepted and ignored, as "
    "`foreach`.",
    "differentiable": "differentiable: torch's autograd-through-step switch; accepted and ignored "
    "(JAX differentiates through any update).",
    "returns": "An `optax.GradientTransformationExtraArgs`. `update(grads, state, params)` "
    "returns the parameter change to pass to `optax.apply_updates`. It is a "
    "[`TorchTransformation`][jaxopt_port.optim.TorchTransformation]: it also carries these "
    "arguments as torch's param-group hyperparameters, which "
    "[`interop.optimizer_state_to_torch`][jaxopt_port.interop.optimizer_state_to_torch] writes "
    "into the torch `state_dict`.",
}


_PLACEHOLDER = re.compile(r"^([ \t]*)\{(" + "|".join(ARGS) + r")\}", re.MULTILINE)


def fill(text: str) -> str:
    """`text` with each line `{name}` whose name is a key of `ARGS` replaced by its description,
    every line of it indented as the placeholder."""

    def description(match: re.Match[str]) -> str:
        indent, name = match.groups()
        return indent + ARGS[name].replace("\n", "\n" + indent)

    return _PLACEHOLDER.sub(description, text)


def doc(func: F) -> F:
    """Fill `{lr}`, `{maximize}`, ... in `func.__doc__` from `ARGS` (see `fill`)."""
    if func.__doc__:
        func.__doc__ = fill(func.__doc__)
    return func
