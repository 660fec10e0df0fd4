"""A data-parallel training step — PyTorch DDP's numbers on any number of devices.

`train_step(loss_fn, tx)` builds one compiled program per step: every device computes the gradient
of the mean loss on its rows of the global batch (accumulated over micro-batches when asked), the
gradients are averaged over the data axis — DDP's all-reduce — and the optimizer update runs on the
averaged gradient. The result is one single-device step on the whole global batch, up to the order
of floating-point sums (measured ≤ 1e-15 in float64).

Three backends compute the gradient; the update is the same for all of them:

- `"shard_map"` (default): a per-device function under `jax.shard_map` with explicit
  `lax.pmean` over the data axis (`check_vma=False`, so the gradient of a replicated parameter
  is each device's own and the one `pmean` averages it — see the module notes on the N× trap);
- `"jit"`: the loss on the global batch under `jax.jit`; XLA partitions it and inserts the
  all-reduce;
- `"pmap"`: the same per-device function as `"shard_map"` under `jax.pmap`.

The update runs under `jax.jit` with the parameters replicated and the optimizer state either
replicated (`zero=0`) or split over the data axis (`zero=1`, ZeRO-1; see `_zero.py`), so every
`optax` transformation — all 15 torch optimizers, L-BFGS included — works with every backend.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_port.parallel._batch_stats import mapped_over
from jaxopt_port.parallel._mesh import (
    DATA_AXIS,
    check_batch_size,
    check_mesh,
    data_mesh,
    replicated,
    shard_batch,
)
from jaxopt_port.parallel._zero import state_shardings

__all__ = ["BACKENDS", "TrainStep", "train_step"]

BACKENDS = ("shard_map", "jit", "pmap")
"""The ways a step can compute the data-parallel gradient."""


def _cast_floating(tree: Any, dtype: Any) -> Any:
    def cast(x: Any) -> Any:
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _describe(value: Any) -> str:
    """`a scalar float64 array` / `an array of shape (4,)` / `a dict`: for error messages."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return f"a {type(value).__name__}"
    return f"a scalar {dtype} array" if shape == () else f"a {dtype} array of shape {shape}"


def _path_name(path: tuple) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _copy(tree: Any) -> Any:
    """Fresh buffers for every leaf (module level, so that `jax.jit` compiles it once)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


class TrainStep:
    """One data-parallel optimizer step; build it with
    [`train_step`][jaxopt_port.parallel.train_step].

    Attributes:
      mesh: the device mesh; `data_axis` names the axis the batch is split over.
      backend, zero, micro_batches, compute_dtype: as given to
        [`train_step`][jaxopt_port.parallel.train_step].
      devices: the number of devices on the data axis.
    """

    def __init__(
        self,
        loss_fn: Callable[..., Any],
        tx: optax.GradientTransformation,
        *,
        mesh: Mesh | None,
        backend: str,
        zero: int,
        data_axis: str,
        micro_batches: int,
        compute_dtype: Any,
        has_aux: bool,
        donate: bool,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if zero not in (0, 1):
            raise ValueError(
                f"zero must be 0 (replicated optimizer state) or 1 (ZeRO-1: state split over the "
                f"data axis), got {zero!r}"
            )
        if (
            not isinstance(micro_batches, int)
            or isinstance(micro_batches, bool)
            or micro_batches < 1
        ):
            raise ValueError(f"micro_batches must be a positive int, got {micro_batches!r}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(params, batch), got {loss_fn!r}")
        if not hasattr(tx, "init") or not hasattr(tx, "update"):
            raise TypeError(f"tx must be an optax GradientTransformation, got {type(tx).__name__}")
        self.mesh = data_mesh(axis=data_axis) if mesh is None else mesh
        self.devices = check_mesh(self.mesh, data_axis)
        if backend == "pmap" and len(self.mesh.axis_names) != 1:
            raise ValueError(
                f"backend='pmap' maps over one axis, but the mesh has axes {tuple(self.mesh.axis_names)}; "
                f"use backend='shard_map' or 'jit' with a multi-axis mesh"
            )
        self.loss_fn = loss_fn
        self.tx = optax.with_extra_args_support(tx)
        self.backend = backend
        self.zero = zero
        self.data_axis = data_axis
        self.micro_batches = micro_batches
        self.compute_dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
        self.has_aux = has_aux
        self.donate = donate
        self._replicated = replicated(self.mesh)
        self._compiled: dict[Any, tuple[Callable[..., Any], list[Any], list[Any]]] = {}

    # -- placement ---------------------------------------------------------------------------

    def init(self, params: Any) -> tuple[Any, Any]:
        """`(params, opt_state)` placed on the mesh: parameters replicated on every device,
        optimizer state replicated (`zero=0`) or split over the data axis (`zero=1`).

        The returned parameters are fresh copies (the step donates its inputs), so `params` stays
        valid.
        """
        params = jax.jit(_copy, out_shardings=self._replicated)(params)
        shapes = jax.eval_shape(self.tx.init, params)
        opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings(shapes))(params)
        return params, opt_state

    def state_shardings(self, opt_state: Any) -> Any:
        """The sharding of every leaf of `opt_state` (or of its `jax.eval_shape`)."""
        return state_shardings(opt_state, self.mesh, self.data_axis, self.zero)

    def shard(self, batch: Any) -> Any:
        """Host data → global arrays split over the data axis (this process's share of the rows
        when there are several processes; see [`shard_batch`][jaxopt_port.parallel.shard_batch])."""
        return shard_batch(batch, self.mesh, axis=self.data_axis, micro_batches=self.micro_batches)

    def _check_placed(self, what: str, tree: Any, shardings: list[Any]) -> None:
        """`ValueError` naming the first leaf of `tree` that is not a live array placed as
        `shardings` (the flat list of its leaves' shardings) says.

        A donated buffer is checked first: on several CPU devices, running the step on one
        crashes the interpreter (XLA reports "Buffer has been deleted or donated", then
        segfaults) instead of raising. The paths are computed only for the message.
        """
        leaves = jax.tree_util.tree_leaves(tree)
        if len(leaves) != len(shardings):  # same structure by the cache key; kept as a guard
            raise ValueError(f"{what} has {len(leaves)} leaves, the step expects {len(shardings)}")
        for i, (leaf, want) in enumerate(zip(leaves, shardings, strict=True)):
            if not isinstance(leaf, jax.Array):
                raise ValueError(
                    f"{what}{self._leaf_name(tree, i)} is a {type(leaf).__name__}, not an array "
                    f"placed on the step's mesh: pass the (params, opt_state) returned by "
                    f"step.init(params)"
                )
            if leaf.is_deleted():
                raise ValueError(
                    f"{what}{self._leaf_name(tree, i)} has been deleted: the step donates its "
                    f"params and opt_state to its outputs (donate=True), so the arrays passed to "
                    f"an earlier call are gone; pass the (params, opt_state) that call returned "
                    f"(params, opt_state, loss = step(params, opt_state, batch)), or build the "
                    f"step with train_step(..., donate=False) to keep its inputs"
                )
            if leaf.sharding != want and not leaf.sharding.is_equivalent_to(want, leaf.ndim):
                raise ValueError(
                    f"{what}{self._leaf_name(tree, i)} is on the wrong devices: it has "
                    f"{leaf.sharding}, the step needs {want} "
                    f"(devices {sorted(d.id for d in self.mesh.devices.flat)}); "
                    f"pass the (params, opt_state) returned by step.init(params)"
                )

    @staticmethod
    def _leaf_name(tree: Any, index: int) -> str:
        return _path_name(jax.tree_util.tree_leaves_with_path(tree)[index][0])

    # -- the step ------------------------------------------------------------------------------

    def __call__(self, params: Any, opt_state: Any, batch: Any, **extra_args: Any) -> tuple:
        """One data-parallel step on a global batch; `(params, opt_state, loss)` (and `aux`
        last when `has_aux`).

        `batch` is a pytree whose leaves share a leading (global batch) dimension: host arrays
        (this process's share of the rows when there are several processes) or global arrays from
        `shard`. `extra_args` go to `tx.update` after the step's own `value=loss`,
        `grad=` and `value_fn=` (the loss on this batch, for L-BFGS), so `value=metric`
        overrides what `ReduceLROnPlateau` sees.
        """
        key = jax.tree_util.tree_structure((params, opt_state, extra_args))
        if key not in self._compiled:
            param_sh = [self._replicated] * len(jax.tree_util.tree_leaves(params))
            state_sh = self.state_shardings(opt_state)
            flat_state_sh = jax.tree_util.tree_leaves(state_sh)
            self._compiled[key] = (self._build(state_sh), param_sh, flat_state_sh)
        step, param_sh, state_sh = self._compiled[key]
        self._check_placed("params", params, param_sh)
        self._check_placed("opt_state", opt_state, state_sh)
        out = step(params, opt_state, self.shard(batch), extra_args)
        return out if self.has_aux else out[:3]

    def _build(self, state_sh: Any) -> Callable[..., Any]:
        def step(params: Any, opt_state: Any, batch: Any, extra_args: dict) -> tuple:
            loss, grads, aux = self._gradients(params, batch)
            kwargs = {
                "value": loss,
                "grad": grads,
                "value_fn": lambda p: self._global_loss(p, batch),
                **extra_args,
            }
            updates, opt_state = self.tx.update(grads, opt_state, params, **kwargs)
            params = optax.apply_updates(params, updates)
            return params, opt_state, loss, aux

        return jax.jit(
            step,
            out_shardings=(self._replicated, state_sh, self._replicated, self._replicated),
            donate_argnums=(0, 1) if self.donate else (),
        )

    # -- gradients -----------------------------------------------------------------------------

    def _loss(self, params: Any, batch: Any) -> tuple[jax.Array, Any]:
        """The user's loss on one (micro-)batch, in the compute dtype when mixed precision is on."""
        if self.compute_dtype is not None:
            params = _cast_floating(params, self.compute_dtype)
            batch = _cast_floating(batch, self.compute_dtype)
        out = self.loss_fn(params, batch)
        pair = isinstance(out, (tuple, list))
        if pair and not self.has_aux:
            raise TypeError(
                f"loss_fn returned a {type(out).__name__} of {len(out)}, not a scalar loss; if it "
                f"returns (loss, aux), build the step with train_step(..., has_aux=True) (the step "
                f"then returns aux last)"
            )
        if self.has_aux and not (pair and len(out) == 2):
            got = f"a {type(out).__name__} of {len(out)}" if pair else _describe(out)
            raise TypeError(
                f"with has_aux=True, loss_fn must return a pair (loss, aux), got {got}; for a "
                f"loss_fn returning only the loss, use has_aux=False (the default)"
            )
        loss, aux = out if self.has_aux else (out, None)
        loss = jnp.asarray(loss)
        if loss.shape != ():
            raise ValueError(
                f"loss_fn must return a scalar mean loss, got shape {loss.shape}"
                + (" (with has_aux=True it returns (loss, aux))" if self.has_aux else "")
            )
        if self.compute_dtype is not None:
            loss = loss.astype(jnp.promote_types(loss.dtype, jnp.float32))
        return loss, aux

    def _accumulate(self, params: Any, micro: Any) -> tuple[jax.Array, Any, Any]:
        """Mean loss, mean gradient and last aux over the micro-batches stacked on `micro`'s
        leading axis; the gradient accumulator has the parameters' dtype."""
        value_and_grad = jax.value_and_grad(self._loss, has_aux=True)
        if self.micro_batches == 1:
            (loss, aux), grads = value_and_grad(
                params, jax.tree_util.tree_map(lambda x: x[0], micro)
            )
            return loss, grads, aux

        def body(carry: tuple, batch: Any) -> tuple:
            total, acc = carry
            (loss, aux), grads = value_and_grad(params, batch)
            acc = jax.tree_util.tree_map(lambda a, g: a + g.astype(a.dtype), acc, grads)
            return (total + loss, acc), aux

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        total = jnp.zeros((), jnp.result_type(*jax.tree_util.tree_leaves(params), jnp.float32))
        (total, acc), aux = lax.scan(body, (total, zeros), micro)
        a = self.micro_batches
        grads = jax.tree_util.tree_map(lambda g: g / a, acc)
        return total / a, grads, jax.tree_util.tree_map(lambda x: x[-1], aux)

    def _micro_global(self, batch: Any) -> Any:
        """Global batch `(B, ...)` → `(A, B/A, ...)`: micro-batch `j` is the `j`-th of `A`
        equal chunks of every device's rows (DDP's accumulation under `no_sync`), so no row
        leaves its device."""
        n, a = self.devices, self.micro_batches

        def split(x: jax.Array) -> jax.Array:
            b = x.shape[0] // (n * a)
            x = x.reshape(n, a, b, *x.shape[1:]).swapaxes(0, 1).reshape(a, n * b, *x.shape[1:])
            spec = PartitionSpec(None, self.data_axis)
            return lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

        return jax.tree_util.tree_map(split, batch)

    def _per_device(self, params: Any, local: Any) -> tuple[jax.Array, Any, Any]:
        """One device's rows → (global mean loss, global mean gradient, aux)."""
        a = self.micro_batches
        micro = jax.tree_util.tree_map(lambda x: x.reshape(a, x.shape[0] // a, *x.shape[1:]), local)
        with mapped_over(self.data_axis):
            loss, grads, aux = self._accumulate(params, micro)
        return lax.pmean(loss, self.data_axis), lax.pmean(grads, self.data_axis), aux

    def _gradients(self, params: Any, batch: Any) -> tuple[jax.Array, Any, Any]:
        check_batch_size(
            jax.tree_util.tree_leaves(batch)[0].shape[0], self.devices, self.micro_batches
        )
        if self.backend == "jit":
            return self._accumulate(params, self._micro_global(batch))
        if self.backend == "shard_map":
            mapped = jax.shard_map(
                self._per_device,
                mesh=self.mesh,
                in_specs=(PartitionSpec(), PartitionSpec(self.data_axis)),
                out_specs=PartitionSpec(),
                check_vma=False,
            )
            return mapped(params, batch)
        n = self.devices
        stacked = jax.tree_util.tree_map(
            lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch
        )
        this = weakref.proxy(self)  # JAX's pmap caches keep the function: not the bound method
        mapped = jax.pmap(
            lambda params, local: this._per_device(params, local),
            axis_name=self.data_axis,
            in_axes=(None, 0),
            out_axes=None,
            devices=list(self.mesh.devices.flat),
        )
        return mapped(params, stacked)

    def _global_loss(self, params: Any, batch: Any) -> jax.Array:
        """The mean loss over the global batch as a differentiable function of the parameters
        (for `value_fn`); computed on the global arrays, so any backend gets the same value."""
        micro = self._micro_global(batch)
        losses = lax.map(lambda m: self._loss(params, m)[0], micro)
        return jnp.mean(losses)


def train_step(
    loss_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    backend: str = "shard_map",
    zero: int = 0,
    data_axis: str = DATA_AXIS,
    micro_batches: int = 1,
    compute_dtype: Any = None,
    has_aux: bool = False,
    donate: bool = True,
) -> TrainStep:
    """A data-parallel training step equal to one single-device step on the whole global batch.

    $$
    \\begin{gathered}
      g = \\frac{1}{N A} \\sum_{d=1}^{N} \\sum_{j=1}^{A} ∇_θ\\, \\ell(θ, x_{d,j}), \\qquad
      θ, s ← \\mathrm{apply}(θ, \\mathrm{tx.update}(g, s, θ))
    \\end{gathered}
    $$

    with `N` devices on the data axis, `A = micro_batches` and `x_{d,j}` the `j`-th chunk
    of device `d`'s rows — torch's DDP (with `no_sync` accumulation) on the same global batch.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar` mean loss over the rows of `batch` (with
        `has_aux`, `(loss, aux)`). For batch statistics over the global batch (torch's
        `SyncBatchNorm`) use [`batch_mean`][jaxopt_port.parallel.batch_mean] /
        [`sync_batch_norm`][jaxopt_port.parallel.sync_batch_norm] inside it.
      tx: any optax transformation, e.g. `optim.adamw(lr=1e-3)`. It receives
        `value=loss, grad=g, value_fn=` as extra arguments, so `optim.lbfgs` and
        `schedules.reduce_lr_on_plateau` work.
      mesh: a mesh with a `data_axis` (default: [`data_mesh`][jaxopt_port.parallel.data_mesh] over
        every device).
      backend: `"shard_map"` (default), `"jit"` or `"pmap"` — how the gradient is computed;
        all give the same numbers.
      zero: `0` replicates the optimizer state; `1` splits it over the data axis (ZeRO-1,
        `1/N` of the state bytes per device for leaves with a dimension divisible by `N`).
      data_axis: the mesh axis the batch is split over (default `"data"`).
      micro_batches: gradient accumulation: each device's rows are split into this many chunks,
        processed one after another with the gradient summed in the parameters' dtype.
      compute_dtype: e.g. `jnp.bfloat16` for mixed precision: the loss runs on parameters and
        floating batch leaves cast to it, while the gradient, the accumulator, the optimizer state
        and the (master) parameters keep the parameters' dtype.
      has_aux: `loss_fn` returns `(loss, aux)`; the step returns `aux` (of the last
        micro-batch, taken from the first device, so compute it from global statistics) last.
        A tuple or list returned without `has_aux`, or anything but a pair with it, raises
        `TypeError` when the step is first called.
      donate: donate the input parameters and optimizer state buffers to the outputs (default
        True): after a call, the arrays passed in are deleted, and passing them again raises
        `ValueError` naming the leaf; use the returned ones, or `donate=False` to keep the
        inputs valid (at the cost of a second copy of the parameters and state in memory).

    Returns:
      A [`TrainStep`][jaxopt_port.parallel.TrainStep]: `params, opt_state = step.init(params)`, then
      `params, opt_state, loss = step(params, opt_state, batch)`.

    Examples:
      >>> from jaxopt_port import optim, parallel
      >>> def loss_fn(p, batch):
      ...     return jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)
      >>> step = parallel.train_step(loss_fn, optim.sgd(lr=0.1))
      >>> params, opt_state = step.init({"w": jnp.zeros((3, 1))})
      >>> batch = {"x": jnp.ones((8 * jax.device_count(), 3)), "y": jnp.ones((8 * jax.device_count(), 1))}
      >>> params, opt_state, loss = step(params, opt_state, batch)
    """
    return TrainStep(
        loss_fn,
        tx,
        mesh=mesh,
        backend=backend,
        zero=zero,
        data_axis=data_axis,
        micro_batches=micro_batches,
        compute_dtype=compute_dtype,
        has_aux=has_aux,
        donate=donate,
    )
