"""Training loops written once for torch and for JAX on a parity problem, with a scheduler.

Both loops take the batches of the same :class:`parity.specs.problems.Problem` from step ``start`` on,
so a run can be split (N steps in one framework, M in the other) and compared with an unbroken one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parity.specs.problems import Problem

__all__ = ["jax_step_fn", "jax_steps", "metric_at", "torch_steps"]


def metric_at(k: int) -> float:
    """A validation metric that falls, stalls and jumps: it exercises ReduceLROnPlateau's rules."""
    return 1.0 / (1 + k // 4) + 0.02 * ((k * 7) % 5) + (0.5 if k % 23 == 0 else 0.0)


def torch_steps(
    problem: Problem,
    params: Sequence[Any],
    optimizer: Any,
    scheduler: Any = None,
    steps: int = 1,
    start: int = 0,
    plateau: bool = False,
) -> list[float]:
    """``steps`` torch steps (``scheduler.step()`` after each); returns the lr used at each."""
    lrs = []
    for k in range(start, start + steps):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        batch = problem.batches[k]

        def closure(batch=batch):
            optimizer.zero_grad()
            loss = problem.torch_loss(list(params), batch)
            loss.backward()
            return loss

        optimizer.step(closure)
        if scheduler is not None:
            scheduler.step(metric_at(k)) if plateau else scheduler.step()
    return lrs


def jax_step_fn(problem: Problem, tx: Any, plateau: bool = False, closure: bool = False) -> Any:
    """One jitted JAX update ``(params, state, batch, metric) -> (params, state)`` on ``problem``'s
    loss; with ``plateau`` the metric goes in as ``value=``; ``closure`` passes the loss and
    ``value_fn`` as an optimizer whose torch step takes a closure (L-BFGS) needs them. Build it once and reuse it: it compiles once per shape."""
    import jax
    import optax

    @jax.jit
    def step(params: list[Any], state: Any, batch: Any, metric: Any) -> tuple[list[Any], Any]:
        value_fn = lambda p: problem.jax_loss(p, *batch)
        value, grads = jax.value_and_grad(value_fn)(params)
        if closure:  # one update is one torch step(closure)
            extra: dict[str, Any] = {"value": value, "grad": grads, "value_fn": value_fn}
        else:
            extra = {"value": metric} if plateau else {}
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    return step


def jax_steps(
    problem: Problem,
    params: list[Any],
    state: Any,
    tx: Any,
    steps: int,
    start: int = 0,
    plateau: bool = False,
    closure: bool = False,
    step: Any = None,
) -> tuple[list[Any], Any]:
    """``steps`` JAX updates from batch ``start`` on, jitted once (:func:`jax_step_fn`, or
    ``step``, one built by it for the same ``problem``, ``tx`` and flags)."""
    import jax.numpy as jnp

    step = step or jax_step_fn(problem, tx, plateau, closure)
    for k in range(start, start + steps):
        batch = [jnp.asarray(b) for b in problem.batches[k]]
        params, state = step(params, state, batch, np.float64(metric_at(k)))
    return params, state
