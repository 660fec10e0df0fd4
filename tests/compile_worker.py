"""Run in a subprocess by tests/test_optim_compile_cache.py: memory maps and compilations over many eager
calls, printed as one JSON line.

A regression here (a compilation per call) exhausts the process's memory maps and LLVM then
crashes the interpreter, so it must not run inside pytest. Each loop stops early once the maps
grow past ``GIVE_UP`` (far above any bound the test allows), so a regression fails in seconds.

Usage: ``python tests/compile_worker.py N WHAT...`` with WHAT among ``lbfgs_steps`` (N eager
steps, a new closure and new data each), ``lbfgs_instances`` (N new instances, one eager step
each) and ``schedule_counts`` (a schedule evaluated eagerly at N counts); prints
``{WHAT: {"calls", "maps", "compiles"}}``.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port import optim, schedules

GIVE_UP = 3000
compiles = 0


def _count(event: str, duration: float, **kwargs) -> None:
    global compiles
    compiles += event == "/jax/core/compile/backend_compile_duration"


jax.monitoring.register_event_duration_secs_listener(_count)


def maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def least_squares(seed: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(20, 5))), jnp.asarray(rng.normal(size=20))


def eager_step(tx, state, params, data):
    """torch's ``optimizer.step(closure)`` loop written eagerly: a new closure every step."""
    a, b = data
    closure = lambda p: jnp.sum((a @ p - b) ** 2)
    value, grad = jax.value_and_grad(closure)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=closure)
    return optax.apply_updates(params, updates), state


def main(what: str, n: int) -> dict:
    batches = [least_squares(seed) for seed in range(10)]
    params = jnp.zeros(5)
    tx = optim.lbfgs(lr=0.5, max_iter=5, history_size=4)
    schedule = schedules.multiplicative_lr(0.1, lambda epoch: 0.99)

    def one(k: int, state):
        nonlocal params, tx
        if what == "lbfgs_steps":
            params, state = eager_step(tx, state, params, batches[k % len(batches)])
            return state
        if what == "lbfgs_instances":
            tx = optim.lbfgs(lr=0.5, max_iter=5, history_size=4)
            eager_step(tx, tx.init(params), params, batches[k % len(batches)])
            return state
        float(schedule(jnp.asarray(k, jnp.int32)))
        return state

    state = tx.init(params)
    for k in range(2):  # warm up: first compilations, first allocations
        state = one(k, state)
    start_maps, start_compiles = maps(), compiles
    done = 0
    for k in range(n):
        state = one(k, state)
        done += 1
        if k % 25 == 0 and maps() - start_maps > GIVE_UP:
            break
    return {"calls": done, "maps": maps() - start_maps, "compiles": compiles - start_compiles}


if __name__ == "__main__":
    n = int(sys.argv[1])
    print(json.dumps({what: main(what, n) for what in sys.argv[2:]}))
