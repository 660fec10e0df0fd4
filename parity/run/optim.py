"""Run one optimizer configuration in torch, in JAX and in the NumPy reference, and compare.

The three runs start from the same parameters and see the same batches; each framework computes
its own gradients at its own parameters. The result holds final parameters and per-parameter
state (torch's keys) for each, and :func:`max_difference` measures them against each other.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.metric import scaled_difference, state_difference
from parity.specs.optim import KERNEL_FLAGS, SCHEDULES, Config, OptimSpec
from parity.specs.problems import Problem, make_problem

__all__ = [
    "Run",
    "base_lr",
    "jax_snapshot",
    "jax_transformation",
    "max_difference",
    "param_groups",
    "run_jax",
    "run_reference",
    "run_torch",
    "torch_dtype",
    "torch_kwargs",
    "torch_snapshot",
]


@dataclass
class Run:
    """Final parameters and per-parameter state (dicts keyed as torch keys), as float64 NumPy.

    With ``record=True`` the runners also fill ``losses`` (the training loss at each step, before
    its update) and ``history`` (``(params, state)`` after each step, as the final pair).
    """

    params: list[np.ndarray]
    state: list[dict[str, np.ndarray]]
    losses: list[float] = field(default_factory=list)
    history: list[tuple[list[np.ndarray], list[dict[str, np.ndarray]]]] = field(
        default_factory=list
    )


@contextlib.contextmanager
def torch_dtype(dtype: str) -> Iterator[None]:
    """Torch's default dtype for the duration (scalar state such as ``step`` follows it)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, list):  # LBFGS's history (old_dirs, old_stps, ro), oldest first
        x = np.stack([_to_numpy(v) for v in x]) if x else np.zeros((0,))
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_sparse:
            x = x.to_dense()
        x = x.to(dtype=__import__("torch").float64).cpu().numpy()
    x = np.array(x, dtype=np.float64)  # a copy: torch and the reference update in place
    return x.reshape(0) if x.size == 0 else x  # an empty history, whatever its vector length


def base_lr(spec_kwargs: dict[str, Any], factory: Any) -> float:
    lr = spec_kwargs.get("lr", inspect.signature(factory).parameters["lr"].default)
    return float(lr)


def torch_kwargs(torch_cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """kwargs for torch, with ``foreach=False`` (the single-tensor reference kernels).

    A tensor lr is re-created in the current default dtype: torch's ``optim_db`` builds it in
    float32, and Muon and SparseAdam then multiply it into other scalars in float32 (a documented
    torch quirk worth ~8e-7 relative in float64 runs, not reproduced here).
    """
    import torch

    kwargs = dict(kwargs)
    if isinstance(kwargs.get("lr"), torch.Tensor):
        kwargs["lr"] = torch.tensor(float(kwargs["lr"]))
    params = inspect.signature(torch_cls).parameters
    if "foreach" in params and "foreach" not in kwargs and not kwargs.get("fused"):
        kwargs["foreach"] = False
    return kwargs


def param_groups(
    problem: Problem, spec: OptimSpec, config: Config, lr: float
) -> list[dict[str, Any]]:
    """Two param groups: the first half of the leaves with the config, the rest with overrides."""
    half = max(1, len(problem.params) // 2)
    overrides = spec.group_overrides if config.second_group is None else config.second_group
    second = {"lr": lr / 2, **overrides}
    return [{"indices": range(half)}, {"indices": range(half, len(problem.params)), **second}]


def run_torch(
    spec: OptimSpec, config: Config, dtype: str = "float64", seed: int = 0, record: bool = False
) -> Run:
    """``spec.steps`` torch steps (``foreach=False``) under torch's default ``dtype``."""
    import torch

    problem = make_problem(spec.problem, spec.steps, seed)
    torch_cls = getattr(torch.optim, spec.torch_cls)
    with torch_dtype(dtype), spec.comparison_context():
        params = [
            torch.nn.Parameter(torch.tensor(p, dtype=getattr(torch, dtype))) for p in problem.params
        ]
        kwargs = torch_kwargs(torch_cls, config.kwargs)
        lr = float(kwargs.get("lr", inspect.signature(torch_cls).parameters["lr"].default))
        if config.groups:
            groups = [
                {"params": [params[i] for i in g.pop("indices")], **g}
                for g in param_groups(problem, spec, config, lr)
            ]
            optimizer = torch_cls(groups, **kwargs)
        else:
            optimizer = torch_cls(params, **kwargs)
        group_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        run = Run([], [])
        for k in range(spec.steps):
            if config.schedule:
                factor = SCHEDULES[config.schedule](k)
                for group, lr in zip(optimizer.param_groups, group_lrs, strict=True):
                    group["lr"] = lr * factor
            batch = problem.batches[0 if spec.step_requires_closure else k]

            def closure(batch=batch):
                optimizer.zero_grad()
                loss = problem.torch_loss(params, batch)
                loss.backward()
                return loss

            loss = optimizer.step(closure)
            if record:
                run.losses.append(float(loss.detach()))
                run.history.append(torch_snapshot(optimizer, params))
        run.params, run.state = torch_snapshot(optimizer, params)
        return run


def torch_snapshot(optimizer: Any, params: list[Any]) -> tuple[list[np.ndarray], list[dict]]:
    """``params`` and their optimizer state (torch's keys) as float64 NumPy copies."""
    # LBFGS's "al" is scratch space for its two-loop recursion (None where never written)
    state = [
        {key: _to_numpy(v) for key, v in optimizer.state[p].items() if key != "al"} for p in params
    ]
    return [_to_numpy(p) for p in params], state


def jax_transformation(spec: OptimSpec, config: Config, torch_optimizer: Any = None) -> Any:
    """The jaxopt_port transformation for a config (scheduled lr as an optax schedule)."""
    from jaxopt_port import optim

    factory = getattr(optim, spec.name)
    kwargs = dict(config.kwargs)
    kwargs.update(spec.jax_extra_kwargs)
    if config.schedule:
        base = base_lr(kwargs, factory)
        factor = SCHEDULES[config.schedule]
        kwargs["lr"] = lambda count: base * factor(count)
    return factory(**kwargs)


def run_jax(
    spec: OptimSpec,
    config: Config,
    dtype: str = "float64",
    seed: int = 0,
    tx: Any = None,
    record: bool = False,
) -> Run:
    """``spec.steps`` jaxopt_port steps, jitted as one ``lax.scan`` (x64 on for float64).

    ``tx`` replaces the transformation the config describes (to run optax's own optimizers).
    """
    import jax

    with jax.enable_x64(dtype == "float64"):
        return _run_jax(spec, config, dtype, seed, tx, record)


def _run_jax(spec: OptimSpec, config: Config, dtype: str, seed: int, tx: Any, record: bool) -> Run:
    import jax
    import jax.numpy as jnp
    import optax

    from jaxopt_port import optim

    problem = make_problem(spec.problem, spec.steps, seed)
    if tx is None and config.groups:
        import torch

        with torch_dtype(dtype):
            dummies = [torch.nn.Parameter(torch.zeros(p.shape)) for p in problem.params]
            torch_cls = getattr(torch.optim, spec.torch_cls)
            lr = float(
                config.kwargs.get("lr", inspect.signature(torch_cls).parameters["lr"].default)
            )
            groups = [
                {"params": [dummies[i] for i in g.pop("indices")], **g}
                for g in param_groups(problem, spec, config, lr)
            ]
            tx = optim.from_torch(torch_cls(groups, **config.kwargs), **spec.jax_extra_kwargs)
    elif tx is None:
        tx = jax_transformation(spec, config)
    params = [jnp.asarray(p, dtype) for p in problem.params]
    batches = [jnp.asarray(np.stack(column)) for column in zip(*problem.batches, strict=True)]
    state = tx.init(params)
    if spec.step_requires_closure:
        batch = [b[0] for b in batches]
        value_fn = lambda p: problem.jax_loss(p, *batch)

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(value_fn)(params)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=value_fn
            )
            params = optax.apply_updates(params, updates)
            return (params, state), (value, params, state)

        outputs = []
        for _ in range(spec.steps):
            (params, state), out = step(params, state)
            outputs.append(out)
        trace = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outputs) if record else None
    else:

        @jax.jit
        def train(params, state, batches):
            def body(carry, batch):
                params, state = carry
                value, grads = jax.value_and_grad(problem.jax_loss)(params, *batch)
                updates, state = tx.update(grads, state, params)
                params = optax.apply_updates(params, updates)
                return (params, state), ((value, params, state) if record else None)

            return jax.lax.scan(body, (params, state), batches)

        (params, state), trace = train(params, state, batches)
    run = Run(*jax_snapshot(params, state))
    if record:
        # one transfer to the host, then NumPy slices (eager jax indexing dispatches per leaf)
        values, param_steps, state_steps = jax.device_get(trace)
        run.losses = [float(v) for v in np.asarray(values)]
        for k in range(spec.steps):
            at = lambda tree, k=k: jax.tree_util.tree_map(lambda x: x[k], tree)
            run.history.append(jax_snapshot(at(param_steps), at(state_steps)))
    return run


def jax_snapshot(params: Any, state: Any) -> tuple[list[np.ndarray], list[dict]]:
    """The leaves of ``params`` and their per-parameter state (torch's keys) as float64 NumPy."""
    from jaxopt_port import optim

    per_param = optim.per_param_state(state, params)
    return (
        [_to_numpy(p) for p in params],
        [{k: _to_numpy(v) for k, v in d.items()} for d in per_param],
    )


def run_reference(spec: OptimSpec, config: Config, seed: int = 0, record: bool = False) -> Run:
    """``spec.steps`` steps of the NumPy float64 reference, fed torch-autograd gradients."""
    import torch

    from parity import reference

    problem = make_problem(spec.problem, spec.steps, seed)
    kwargs = {k: _plain(v) for k, v in config.kwargs.items() if k not in KERNEL_FLAGS}
    params = [np.array(p, dtype=np.float64) for p in problem.params]
    torch_cls = getattr(torch.optim, spec.torch_cls)
    lr = float(kwargs.get("lr", inspect.signature(torch_cls).parameters["lr"].default))
    if config.groups:
        parts = []
        for g in param_groups(problem, spec, config, lr):
            indices = list(g.pop("indices"))
            # torch's Adagrad fills its sums in the constructor, from the constructor's argument
            for key in spec.constructor_only:
                g.pop(key, None)
            parts.append(
                (
                    indices,
                    reference.make(
                        spec.reference_name, [params[i] for i in indices], **{**kwargs, **g}
                    ),
                )
            )
    else:
        parts = [(list(range(len(params))), reference.make(spec.reference_name, params, **kwargs))]
    group_lrs = [ref.lr for _, ref in parts]

    def current() -> list[np.ndarray]:
        out: list[Any] = [None] * len(params)
        for indices, ref in parts:
            for i, p in zip(indices, ref.params, strict=True):
                out[i] = p
        return out

    def torch_grads(values: list[np.ndarray], batch: Any) -> tuple[float, list[np.ndarray]]:
        with torch_dtype("float64"):
            tensors = [torch.tensor(v, requires_grad=True) for v in values]
            loss = problem.torch_loss(tensors, batch)
            loss.backward()
            return float(loss.detach()), [_to_numpy(t.grad) for t in tensors]

    def snapshot() -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        state: list[dict[str, np.ndarray]] = [{} for _ in params]
        for indices, ref in parts:
            for i, s in zip(indices, ref.state, strict=True):
                state[i] = {key: _to_numpy(v) for key, v in s.items()}
        return [_to_numpy(p) for p in current()], state

    run = Run([], [])
    for k in range(spec.steps):
        if config.schedule:
            factor = SCHEDULES[config.schedule](k)
            for (_, ref), lr in zip(parts, group_lrs, strict=True):
                ref.lr = lr * factor
        if spec.step_requires_closure:
            ((_, ref),) = parts
            losses: list[float] = []

            def closure(
                values: list[np.ndarray], losses: list[float] = losses
            ) -> tuple[float, list[np.ndarray]]:
                loss, grads = torch_grads(values, problem.batches[0])
                losses.append(loss)
                return loss, grads

            ref.step(closure)
            loss = losses[0]  # torch's step(closure) returns the first evaluation
        else:
            loss, grads = torch_grads(current(), problem.batches[k])
            for indices, ref in parts:
                ref.step([grads[i] for i in indices])
        if record:
            run.losses.append(loss)
            run.history.append(snapshot())
    run.params, run.state = snapshot()
    return run


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "numel"):
        return float(value)
    return value


def max_difference(a: Run, b: Run, *, state: bool = True) -> tuple[float, str]:
    """The largest scaled difference between two runs (`parity.metric`), and where it is.

    Every parameter and, with ``state``, every state entry is compared; ``b`` is the reference
    side. A state key present in one run but not the other is an infinite difference.
    """
    names = [f"param[{i}]" for i in range(len(b.params))]
    _, worst, _, where = scaled_difference(a.params, b.params, names)
    if state:
        state_worst, state_where = state_difference(a.state, b.state)
        if not state_worst <= worst:
            worst, where = state_worst, state_where
    return worst, where
