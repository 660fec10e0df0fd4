"""Any optimizer's moment states stored in 8 or 4 bits (or FP8): torchao's storage, generalised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port.optim._lowbit_quant import StateFormat, as_quantized

__all__ = ["UNSIGNED_STATES", "QuantizedMomentsState", "quantize_moments"]

#: State fields that never hold negative values (second moments, accumulated squares, infinity
#: norms), stored with the unsigned map: their names in jaxopt_port (torch's) and in optax.
UNSIGNED_STATES = (
    "exp_avg_sq",
    "max_exp_avg_sq",
    "square_avg",
    "acc_delta",
    "sum",
    "exp_inf",
    "nu",
    "sum_of_squares",
)


class QuantizedMomentsState(NamedTuple):
    """State of `quantize_moments`: the inner optimizer's state with every large float leaf
    replaced by a `QuantizedArray`."""

    inner: Any


def _name(path: tuple) -> str:
    """The innermost attribute or key name on a pytree path (`""` if none)."""
    for key in reversed(path):
        name = getattr(key, "name", getattr(key, "key", None))
        if isinstance(name, str):
            return name
    return ""


def quantize_moments(
    tx: optax.GradientTransformation,
    *,
    bits: Any = 8,
    block_size: int | None = None,
    min_size: int = 4096,
    unsigned: Sequence[str] = UNSIGNED_STATES,
) -> optax.GradientTransformationExtraArgs:
    """`tx` with its large floating-point state leaves stored in `bits` (torchao's storage).

    Every state leaf of a floating dtype with at least `min_size` values and a whole number of
    blocks is kept as block-quantized codes and float32 scales (see `optim.adamw8bit`): 8 bits
    with the dynamic-tree maps, 4 bits with the 4-bit signed map or the linear map, or FP8. A
    leaf whose field is named in `unsigned` uses the unsigned map (8 and 4 bits). Each
    `update` dequantizes the state, runs `tx.update` and quantizes the new state, so — as in
    torchao — the step itself uses the unquantized new moments and only what is stored is
    rounded. Counters, scalars and small leaves stay as they are.

    Args:
      tx: any Optax transformation (a jaxopt_port optimizer, `optax.adam(...)`, a chain).
      bits: 8, 4 or `"fp8"`.
      block_size: values per scale (default 256; 128 for 4 bits, torchao's).
      min_size: smallest leaf quantized (torchao's 4096).
      unsigned: names of state fields that are never negative.

    Returns:
      An `optax.GradientTransformationExtraArgs` with state `QuantizedMomentsState`;
      extra arguments are passed on to `tx`.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_port import optim
      >>> tx = optim.quantize_moments(optax.adam(1e-3), bits=4)
      >>> params = {"w": jnp.ones((64, 128))}
      >>> state = tx.init(params)
      >>> type(state.inner[0].mu["w"]).__name__
      'QuantizedArray'
      >>> updates, state = tx.update(params, state, params)
    """
    if block_size is None:
        block_size = 128 if bits == 4 else 256
    inner = optax.with_extra_args_support(tx)
    zero = jnp.uint32(0)  # no bitwise contract with torch here: XLA may fuse freely

    def fmt(path: tuple) -> StateFormat:
        return StateFormat(bits, _name(path) not in unsigned, block_size)

    def eligible(leaf: Any) -> bool:
        size = leaf.size if hasattr(leaf, "size") else 0
        return (
            jnp.issubdtype(leaf.dtype, jnp.floating) and size >= min_size and size % block_size == 0
        )

    def compress(state: Any) -> Any:
        def one(path, leaf):
            if eligible(leaf):
                return fmt(path).quantize(leaf.astype(jnp.float32), zero)
            return leaf

        return jax.tree_util.tree_map_with_path(one, state)

    def expand(stored: Any, template: Any) -> Any:
        def one(path, spec, leaf):
            quantized = as_quantized(leaf)
            if quantized is not None:
                return fmt(path).dequantize(quantized, spec.shape, zero).astype(spec.dtype)
            return leaf

        return jax.tree_util.tree_map_with_path(one, template, stored)

    def init(params):
        return QuantizedMomentsState(inner=compress(tx.init(params)))

    def update(updates, state, params=None, **extra_args):
        template = jax.eval_shape(tx.init, params if params is not None else updates)
        full = expand(state.inner, template)
        updates, full = inner.update(updates, full, params, **extra_args)
        return updates, QuantizedMomentsState(inner=compress(full))

    return optax.GradientTransformationExtraArgs(init, update)
