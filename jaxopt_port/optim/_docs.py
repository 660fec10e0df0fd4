"""Argument descriptions shared by the optimizer docstrings, written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

ARGS = {
    "lr": "lr: learning rate γ: a float, a 1-element array or tensor, or an optax schedule "
    "``count -> lr`` evaluated at the number of previous updates (torch's lr at its k-th "
    "``step()`` when a scheduler steps after each). A torch scheduler converts with "
    "``schedules.from_torch``; ``schedules.reduce_lr_on_plateau`` goes through "
    "``schedules.with_schedules`` (either given here raises ``TypeError`` saying so).",
    "weight_decay": "weight_decay: L2 penalty λ added to the gradient (``g += λθ``). ``True`` "
    "raises ``TypeError`` (torch accepts it and fails in ``step()``).",
    "decoupled_weight_decay": "decoupled_weight_decay: if True, decay the parameters instead "
    "(``θ *= 1 - γλ``, AdamW-style) rather than adding ``λθ`` to the gradient.",
    "maximize": "maximize: maximize the objective (the gradient is negated first).",
    "kernel_flags": "foreach, fused, capturable, differentiable: torch's kernel choices. Accepted "
    "for signature compatibility; they change nothing here (torch's kernels agree to rounding).",
    "returns": "An ``optax.GradientTransformationExtraArgs``. ``update(grads, state, params)`` "
    "returns the parameter change to pass to ``optax.apply_updates``. It is a "
    ":class:`~jaxopt_port.optim.TorchTransformation`: it also carries these arguments as torch's "
    "param-group hyperparameters, which ``interop.optimizer_state_to_torch`` writes into the "
    "torch ``state_dict``.",
}


def doc(func: F) -> F:
    """Fill ``{lr}``, ``{maximize}``, ... in ``func.__doc__`` from :data:`ARGS`."""
    if func.__doc__:
        func.__doc__ = func.__doc__.format(**ARGS)
    return func
