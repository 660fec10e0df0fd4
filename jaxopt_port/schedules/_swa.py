r"""`torch.optim.swa_utils.SWALR`: the learning rate of stochastic weight averaging."""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxopt_port.schedules._core import TorchSchedule, check_base_lr, check_number, divide, scalar

__all__ = ["swalr"]


def swalr(
    lr: float,
    swa_lr: float,
    anneal_epochs: int = 10,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    *,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""`torch.optim.swa_utils.SWALR`: anneal from the current lr to `swa_lr`, then hold it.

    $$
    \eta_t = \alpha_t\,\eta_{swa} + (1 - \alpha_t)\,\eta_0, \qquad
                  \alpha_t = a(\min(1, t / \max(1, E)))
    $$

    with $a(\tau) = (1 - \cos \pi\tau)/2$ ("cos") or $\tau$ ("linear"). torch recovers
    $\eta_0$ each step by inverting the previous step's mix; the closed form agrees to a few
    ulps. In `SequentialLR` torch anneals from the lr the previous scheduler left.

    Args:
      lr: the lr of the param group when SWALR starts.
      swa_lr: the lr to anneal to.
      anneal_epochs: E, scheduler steps of the annealing (0: jump to `swa_lr` at step 1).
      anneal_strategy: "cos" or "linear".
      steps_per_epoch: optimizer steps per `scheduler.step()`.

    Warning:
      A `swa_lr` that is not one real number raises `TypeError` (for a `str` or `None`
      torch's own, from its first step at construction); torch also takes a list with one
      `swa_lr` per param group, which is one schedule per group here.
    """
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
        )
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
    check_base_lr(lr)
    if not isinstance(swa_lr, (list, tuple)):
        _ = 0.0 * swa_lr  # as torch's first step: its TypeError for a str or None swa_lr
    check_number(swa_lr, "swa_lr")
    if anneal_strategy == "cos":
        alpha_of = lambda tau: (1 - jnp.cos(math.pi * tau)) / 2
    else:
        alpha_of = lambda tau: tau

    def mix(t: jax.Array, start: Any) -> jax.Array:
        step = jnp.maximum(t, 1) if anneal_epochs == 0 else t
        alpha = alpha_of(jnp.clip(divide(step, max(1, anneal_epochs)), 0.0, 1.0))
        return jnp.where(alpha == 1, scalar(swa_lr), swa_lr * alpha + start * (1 - alpha))

    return TorchSchedule(
        "SWALR",
        lambda t: mix(t, lr),
        "affine",
        lr,
        steps_per_epoch,
        restart=mix,
    )
