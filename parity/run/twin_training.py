"""Compare a PyTorch model with its Flax NNX twin, trained side by side with the same optimizer.

:func:`compare` is the public entry point (``parity.compare``); :func:`train_twins` is the
training loop it shares with the suite's twin-model runs (:func:`parity.run.twins.run_model`).
Both frameworks start from the same weights, see the same batches, and each computes its own
gradients through its own model:

- torch: ``zero_grad``, forward, ``backward``, ``step`` (``step(closure)`` for L-BFGS) on each
  optimizer, then ``scheduler.step()``; under torch's default dtype = the run's dtype, so scalar
  state (``step``, NAdam's ``mu_product``) has it too.
- JAX: the transformation :func:`jaxopt_port.optim.from_torch` builds from the live torch
  optimizer(s) and scheduler (an ``optax.partition`` when there are several optimizers), one
  jitted step (compiled once), the NNX model split with ``nnx.split`` into its graph, its
  parameters and its other state (BatchNorm statistics, carried from step to step).

What JAX optimizes, and why it is in torch's layout
    The JAX-side variables are torch's parameters — the same names, shapes and order — and the NNX
    model's parameters are computed from them inside the step by :class:`TorchLayout`, a map
    derived from :func:`jaxopt_port.interop.weights_from_torch` (the converter that moves the
    weights also defines the map: transposes, splits, reshapes and, for RNN biases, the sum
    ``b_ih + b_hh``). Optimizing the NNX parameters instead would not be torch's optimization
    problem: torch updates an LSTM's ``bias_ih`` and ``bias_hh`` separately (their sum moves
    twice as far under SGD), Muon orthogonalizes attention's ``in_proj_weight`` (3E, E) as one
    matrix where NNX has three 3-D kernels, Adafactor factors a conv weight over torch's last two
    axes (the kernel window) where NNX's layout puts the channels, and L-BFGS ravels the
    parameters in torch's order. In torch's layout every optimizer's state has torch's shapes and
    compares key by key with ``optimizer.state[p]`` (via
    :func:`jaxopt_port.optim.per_param_state`).

Figures (:class:`parity.report.results.RunResult`)
    Per step: the loss in each framework before the update; after the update the worst
    parameter difference by torch name (absolute, scaled, relative) and the worst scaled
    optimizer-state difference. float64 is judged on parameters and state (the float64 gate
    `parity.metric.F64_GATE`, 1e-12); float32
    on parameters (the state difference is in the note).
    BatchNorm running statistics are reported in the note and not judged: ``running_mean``
    agrees to rounding; ``running_var`` does not, by design (torch accumulates the unbiased batch
    variance, Flax the biased one; both normalize with the biased one, so the outputs agree).

This module imports only NumPy at import time (``import parity`` stays light); torch, JAX and
Flax are imported when a comparison runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from parity.metric import scaled_difference, state_difference
from parity.report.results import RunResult
from parity.run.layout import TorchLayout

__all__ = ["LOSSES", "train_twins"]


# ------------------------------------------------------------------------------------------------
# losses


def _cross_entropy_torch(out: Any, target: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(out, target)


def _cross_entropy_jax(out: Any, target: Any) -> Any:
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(out, target).mean()


def _mse(out: Any, target: Any) -> Any:  # the same expression in both frameworks
    return ((out - target) ** 2).mean()


#: Loss functions by name: ``(torch_fn, jax_fn)``, each ``(model output, target) -> mean loss``.
LOSSES: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "cross_entropy": (_cross_entropy_torch, _cross_entropy_jax),
    "mse": (_mse, _mse),
}


def _starting_point(
    layout: TorchLayout, nnx_module: Any, torch_values: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The torch-layout parameters JAX starts from: the NNX model's weights, expressed as torch
    parameters.

    Where the NNX model holds torch's weights through the converter, these are torch's own
    values (an LSTM's ``bias_ih`` and ``bias_hh`` stay two). A torch parameter feeding an NNX
    parameter that differs is replaced by the NNX model's weights written back in torch's layout
    (:func:`jaxopt_port.interop.weights_to_numpy`), so a model pair whose weights differ shows it
    from the first step, at the parameter that differs.
    """
    import jax
    from flax import nnx

    from jaxopt_port import interop

    start = {n: torch_values[n] for n in layout.names}
    ours = [np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.state(nnx_module, nnx.Param))]
    mapped = jax.tree_util.tree_leaves(layout.numpy([start[n] for n in layout.names]))
    differ = {
        layout.names[part.source]
        for plan, a, b in zip(layout.plan, ours, mapped, strict=True)
        if not np.array_equal(a, b)
        for part in plan
    }
    if differ:
        written = interop.weights_to_numpy(nnx_module)
        start.update({n: written[n] for n in differ})
    return start


# ------------------------------------------------------------------------------------------------
# the training loop


@dataclasses.dataclass
class _Torch:
    """The torch side: model, optimizers, scheduler and parameter names.

    ``owned[i]`` names optimizer i's parameters in its param_groups order; ``names`` is their
    concatenation, the JAX leaf order (what ``from_torch`` and ``optax.partition`` expect).
    """

    model: Any
    optimizers: list[Any]
    scheduler: Any
    owned: list[list[str]]
    frozen: list[str]

    @property
    def names(self) -> list[str]:
        return [n for names in self.owned for n in names]

    @property
    def specs(self) -> list[Any]:
        """Each optimizer's `parity.specs.optim.OptimSpec` (``None`` for a class not in the table)."""
        from parity.specs.optim import for_torch

        return [for_torch(o) for o in self.optimizers]

    @property
    def step_requires_closure(self) -> bool:
        """An optimizer whose step takes a closure (one ``step(closure)`` per step)."""
        return any(s is not None and s.step_requires_closure for s in self.specs)


def _torch_side(model: Any, build_optimizers: Callable, scheduler: Callable | None) -> _Torch:
    built = build_optimizers(list(model.parameters()))
    optimizers = list(built) if isinstance(built, (list, tuple)) else [built]
    by_id = {id(p): n for n, p in model.named_parameters()}
    owned = [[by_id[id(p)] for g in o.param_groups for p in g["params"]] for o in optimizers]
    names = [n for ns in owned for n in ns]
    if len(set(names)) != len(names):
        raise ValueError("a parameter is in more than one optimizer or param group")
    from parity.specs.optim import for_torch

    closure = [o for o in optimizers if getattr(for_torch(o), "step_requires_closure", False)]
    if closure and len(optimizers) > 1:
        name = type(closure[0]).__name__
        raise ValueError(f"{name} must be the only optimizer (one step(closure) per step)")
    frozen = [n for n in by_id.values() if n not in set(names)]
    return _Torch(model, optimizers, scheduler(optimizers[0]) if scheduler else None, owned, frozen)


def _jax_transformation(side: _Torch) -> Any:
    import optax

    from jaxopt_port import optim

    txs = []
    for i, (o, spec) in enumerate(zip(side.optimizers, side.specs, strict=True)):
        extra = spec.jax_extra_kwargs if spec is not None else {}
        txs.append(optim.from_torch(o, scheduler=side.scheduler if i == 0 else None, **extra))
    if len(txs) == 1:
        return txs[0]
    labels = [f"opt{i}" for i, names in enumerate(side.owned) for _ in names]
    return optax.partition({f"opt{i}": tx for i, tx in enumerate(txs)}, labels)


@contextlib.contextmanager
def _torch_numerics(side: _Torch, dtype: str) -> Iterator[None]:
    """torch's default dtype = the run's, and each optimizer's spec's ``torch_context`` (Muon's
    Newton–Schulz in the parameter dtype: torch runs it in bfloat16, whose CPU matmuls differ
    from XLA's by ~3e-2; JAX gets the spec's ``jax_extra_kwargs``, ``ns_dtype=None``)."""
    from parity.run.optim import torch_dtype

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_dtype(dtype))
        for spec in {s.name: s for s in side.specs if s is not None}.values():
            stack.enter_context(spec.comparison_context())
        yield


def _to_torch(batch: Sequence[np.ndarray], dtype: Any, device: str) -> list[Any]:
    import torch

    return [
        torch.as_tensor(b, dtype=dtype if np.issubdtype(b.dtype, np.floating) else None).to(device)
        for b in batch
    ]


def _to_jax(batch: Sequence[np.ndarray], dtype: Any) -> list[Any]:
    import jax.numpy as jnp

    return [jnp.asarray(b, dtype if np.issubdtype(b.dtype, np.floating) else None) for b in batch]


def _buffers_note(worst: dict[str, float], closure: bool) -> str:
    if not worst:
        return ""
    mean = max((v for k, v in worst.items() if k.endswith("running_mean")), default=0.0)
    var = max((v for k, v in worst.items() if k.endswith("running_var")), default=0.0)
    note = (
        f"; BatchNorm running_mean differs by ≤ {mean:.2g} and running_var by ≤ {var:.2g} "
        "(scaled, not judged: torch accumulates the unbiased batch variance, Flax the biased one)"
    )
    if closure:
        note += "; torch's L-BFGS closure updates them at every evaluation, JAX once per step"
    return note


def train_twins(
    torch_model: Any,
    nnx_model: Any,
    build_optimizers: Callable[[list[Any]], Any],
    data: Iterable[Sequence[Any]],
    result: RunResult,
    *,
    loss: str | tuple[Callable, Callable] = "cross_entropy",
    scheduler: Callable[[Any], Any] | None = None,
    device: str = "cpu",
) -> RunResult:
    """Train both models on ``data``, comparing after every step; fills and judges ``result``.

    Args:
      torch_model: the torch model, in ``result.dtype``, trained in place.
      nnx_model: its NNX twin (not changed), laid out as :mod:`jaxopt_port.interop.weights`
        describes; JAX starts from its weights (torch's own values where it holds torch's
        weights; where not, the difference shows from the first step). Its other state
        (BatchNorm statistics) is carried from step to step.
      build_optimizers: ``params -> optimizer`` or a sequence of optimizers over disjoint
        parameters (e.g. Muon on the matrices and AdamW on the rest); the first one gets the
        scheduler. Parameters in none of them are held constant.
      data: batches ``(*inputs, target)`` of NumPy arrays; ``model(*inputs)`` and
        ``loss(output, target)`` in each framework. Floating arrays are cast to the run's dtype.
      result: the run's identity, dtype and tolerance (``steps`` is set to the number of
        batches; an empty ``optimizer`` to the jaxopt_port names of the optimizers, joined by
        ``+``).
      loss: a :data:`LOSSES` name or ``(torch_fn, jax_fn)``.
      scheduler: ``optimizer -> torch lr scheduler``, stepped after every optimizer step.
      device: torch's device (JAX uses its default device).

    Returns:
      ``result``, filled and judged (:meth:`parity.report.results.RunResult.judge`), ``where`` naming
      the step (for a failing run the first one past the tolerance) and the worst parameter or
      state entry at it.
    """
    import jax

    batches = [tuple(np.asarray(b) for b in batch) for batch in data]
    result.steps = len(batches)
    loss_fns = LOSSES[loss] if isinstance(loss, str) else loss
    with jax.enable_x64(result.dtype == "float64"):
        side = _torch_side(torch_model, build_optimizers, scheduler)
        if not result.optimizer:
            result.optimizer = "+".join(
                s.name if s is not None else type(o).__name__
                for o, s in zip(side.optimizers, side.specs, strict=True)
            )
        with _torch_numerics(side, result.dtype):
            worst_entries = _train(side, nnx_model, batches, result, loss_fns, device)
    return result.judge(worst_entries)


def _jax_step(graphdef: Any, layout: TorchLayout, tx: Any, loss: Callable, closure: bool) -> Any:
    """The jitted JAX step ``(params, opt_state, constants, rest, inputs, target) -> (params,
    opt_state, rest, loss)``: the NNX model rebuilt from torch-layout parameters, its loss and
    gradients, one update (with L-BFGS's extra arguments)."""
    import jax
    import optax
    from flax import nnx

    def forward(params, constants, rest, inputs, target):
        # fresh Variables at this trace level: BatchNorm updates its statistics in place
        rest = jax.tree_util.tree_map(lambda x: x, rest)
        net = nnx.merge(graphdef, layout([*params, *constants]), rest)
        value = loss(net(*inputs), target)
        return value, nnx.split(net, nnx.Param, ...)[2]

    @jax.jit
    def step(params, opt_state, constants, rest, inputs, target):
        (value, new_rest), grads = jax.value_and_grad(forward, has_aux=True)(
            params, constants, rest, inputs, target
        )
        extra = {}
        if closure:  # one update is one torch step(closure)
            value_fn = lambda p: forward(p, constants, rest, inputs, target)[0]
            extra = {"value": value, "grad": grads, "value_fn": value_fn}
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        return optax.apply_updates(params, updates), opt_state, new_rest, value

    return step


def _torch_step(side: _Torch, inputs: Sequence[Any], target: Any, loss: Callable) -> float:
    """One torch step (``step(closure)`` for L-BFGS) and the scheduler's; the loss before it."""

    def closure():
        for o in side.optimizers:
            o.zero_grad()
        value = loss(side.model(*inputs), target)
        value.backward()
        return value

    if side.step_requires_closure:
        value = side.optimizers[0].step(closure)
    else:
        value = closure()
        for o in side.optimizers:
            o.step()
    if side.scheduler is not None:
        side.scheduler.step()
    return float(value.detach())


def _torch_values(side: _Torch) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """torch's parameters and ``optimizer.state`` by parameter name, as float64 NumPy."""
    from parity.run.optim import torch_snapshot

    params, state = {}, {}
    for o, names in zip(side.optimizers, side.owned, strict=True):
        values, entries = torch_snapshot(o, [p for g in o.param_groups for p in g["params"]])
        params.update(zip(names, values, strict=True))
        state.update(zip(names, entries, strict=True))
    return params, state


def _train(
    side: _Torch,
    nnx_model: Any,
    batches: list[tuple[np.ndarray, ...]],
    result: RunResult,
    loss_fns: tuple[Callable, Callable],
    device: str,
) -> list[tuple[str, str]]:
    """The loop of :func:`train_twins`; returns the worst parameter and state entry per step."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from jaxopt_port import interop
    from jaxopt_port.interop.weights import to_numpy
    from parity.run.optim import jax_snapshot

    float64 = result.dtype == "float64"
    dtype, torch_dtype = jnp.dtype(result.dtype), getattr(torch, result.dtype)
    # copies (torch updates its tensors in place, and a JAX array may alias a NumPy one) in
    # torch's dtype (the NNX model's LSTM bias is b_ih + b_hh summed in it)
    values = {k: to_numpy(v).copy() for k, v in side.model.state_dict().items()}
    layout = TorchLayout(nnx_model, values, side.names + side.frozen)
    start = _starting_point(layout, nnx_model, values)
    params = [jnp.asarray(start[n], dtype) for n in side.names]
    constants = [jnp.asarray(start[n], dtype) for n in side.frozen]
    graphdef, _, rest = nnx.split(nnx_model, nnx.Param, ...)
    floating = lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    rest = jax.tree_util.tree_map(floating, rest)
    tx = _jax_transformation(side)
    opt_state = jax.jit(tx.init)(params)
    step = _jax_step(graphdef, layout, tx, loss_fns[1], side.step_requires_closure)
    buffers = [
        n for n, _ in side.model.named_buffers() if n.endswith(("running_mean", "running_var"))
    ]
    buffer_worst: dict[str, float] = {}
    state_worst = 0.0
    worst_entries: list[tuple[str, str]] = []
    for batch in batches:
        *inputs, target = _to_torch(batch, torch_dtype, device)
        result.loss_torch.append(_torch_step(side, inputs, target, loss_fns[0]))
        *inputs, target = _to_jax(batch, dtype)
        params, opt_state, rest, value = step(params, opt_state, constants, rest, inputs, target)
        result.loss_jax.append(float(value))

        jax_params, jax_state = jax_snapshot(params, opt_state)
        torch_params, torch_state = _torch_values(side)
        where = result.record_parameters(
            jax_params, [torch_params[n] for n in side.names], side.names
        )
        state, state_where = state_difference(
            jax_state, [torch_state[n] for n in side.names], side.names
        )
        worst_entries.append((where, state_where))
        state_worst = max(state_worst, state)
        if float64:
            result.state_scaled.append(state)
        if buffers:  # BatchNorm statistics, by torch name
            nnx_params = layout.numpy([*jax_params, *map(np.asarray, constants)])
            ours = interop.weights_to_numpy(nnx.merge(graphdef, nnx_params, rest))
            theirs = dict(side.model.named_buffers())
            for n in buffers:
                s = scaled_difference([ours[n]], [to_numpy(theirs[n])])[1]
                buffer_worst[n] = max(buffer_worst.get(n, 0.0), s)
    if not float64:
        result.tolerance_note += f"; optimizer state differs by ≤ {state_worst:.2g} (not judged)"
    result.tolerance_note += _buffers_note(buffer_worst, side.step_requires_closure)
    return worst_entries
