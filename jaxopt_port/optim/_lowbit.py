"""torchao's low-bit Adam and AdamW (`torchao.optim`): moments stored in 8 bits, 4 bits or FP8.

One building block, `quantized_adam`, computes torchao's `single_param_adam` step; the six
factories only choose the storage format and the kind of weight decay.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_port._core import checks
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import Array, LearningRate, lerp, lr_at
from jaxopt_port.optim._docs import doc
from jaxopt_port.optim._lowbit_quant import (
    StateFormat,
    as_quantized,
    divide,
    opaque_zero,
    rounded,
)

__all__ = [
    "QuantizedAdamState",
    "adam4bit",
    "adam8bit",
    "adam_fp8",
    "adamw4bit",
    "adamw8bit",
    "adamw_fp8",
    "quantized_adam",
    "stochastic_round_to_bf16",
]

F32 = jnp.float32


class QuantizedAdamState(NamedTuple):
    """State of `quantized_adam`, named as torchao names its state keys.

    Attributes:
      step: float32 number of updates so far (torchao's `state["step"]`, also float32: it stops
        growing at $2^{24}$).
      exp_avg: first moment per leaf: a `QuantizedArray` (codes and block scales) where
        the size rule quantizes it, else a plain array in the parameter's dtype.
      exp_avg_sq: second moment per leaf, stored the same way.
      max_exp_avg_sq: AMSGrad's running maximum of the second moment, stored the same way;
        `None` unless `amsgrad`.
      key: the PRNG key of bf16 stochastic rounding; `None` unless `bf16_stochastic_round`.
    """

    step: Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any
    key: Any


def stochastic_round_to_bf16(key: jax.Array, x: jax.Array) -> jax.Array:
    """float32 `x` rounded to bfloat16 stochastically (torchao's `_fp32_to_bf16_sr`).

    Each value is truncated to its upper 16 bits, then moved one bfloat16 step away from zero with
    probability (lower 16 bits)$/2^{16}$, so the result is unbiased: $E[\\mathrm{sr}(x)] = x$.
    torchao draws the 16 random bits from torch's global generator; here they come from `key`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.full(4096, 1.0 + 2.0**-9, jnp.float32)  # a quarter of the way to the next bf16
      >>> y = stochastic_round_to_bf16(jax.random.key(0), x)
      >>> bool(jnp.all((y == 1.0) | (y == 1.0 + 2.0**-7)))
      True
    """
    bits = jax.lax.bitcast_convert_type(x.astype(F32), jnp.uint32)
    random = jax.random.bits(key, x.shape, jnp.uint16).astype(jnp.uint32)
    truncated = bits & jnp.uint32(0xFFFF0000)
    rounded = jnp.where(random < (bits & 0xFFFF), truncated + jnp.uint32(0x10000), truncated)
    return jax.lax.bitcast_convert_type(rounded, F32).astype(jnp.bfloat16)


def _change(new: jax.Array, old: jax.Array, zero: jax.Array) -> jax.Array:
    """`new - old` as an update: `optax.apply_updates` then gives `new` exactly whenever the
    subtraction is exact (the two within a factor 2 of each other). `new` is hidden from XLA
    first, which would otherwise simplify `(old - a - b) - old` to `-a - b`."""
    return (rounded(new.astype(F32), zero) - old.astype(F32)).astype(old.dtype)


def _check_arguments(lr: Any, betas: Any, eps: Any, block_size: Any) -> int:
    """torchao's constructor checks and messages (no check of weight_decay), then the block size,
    returned as an `int` (`optax.inject_hyperparams` passes it as a concrete array)."""
    checks.check_lr(lr)
    checks.nonnegative(eps, "Invalid epsilon value: {}")
    checks.check_betas(betas)
    try:
        if isinstance(block_size, (bool, float)):
            raise TypeError
        block = operator.index(block_size)
    except TypeError:
        raise TypeError(
            f"block_size must be an int, got {block_size!r} (with optax.inject_hyperparams, "
            "pass static_args=('block_size',))"
        ) from None
    if block < 1:
        raise ValueError(f"block_size must be a positive number of values, got {block}")
    return block


def quantized_adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    decoupled_weight_decay: bool = False,
    bits: Any = 8,
    block_size: int = 256,
    bf16_stochastic_round: bool = False,
    key: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""torchao's low-bit Adam step (`single_param_adam`) as one Optax transformation.

    Every leaf is computed in float32 whatever its dtype, as torchao does:

    $$
    \begin{aligned}
    \theta &\leftarrow \theta - (\gamma\lambda)\,\theta \ \text{(decoupled)}, \qquad
    g \leftarrow g + \lambda\theta \ \text{(otherwise)} \\
    m &= \mathrm{lerp}(\mathrm{deq}(m_q), g, 1-\beta_1), \qquad
    v = \mathrm{lerp}(\mathrm{deq}(v_q), g^2, 1-\beta_2), \qquad
    m_q, v_q \leftarrow \mathrm{quantize}(m), \mathrm{quantize}(v) \\
    \theta &\leftarrow \theta - \gamma\,\frac{m}{1-\beta_1^t}
        \Big/ \Big(\frac{\sqrt{v}}{\sqrt{1-\beta_2^t}} + \epsilon\Big)
    \end{aligned}
    $$

    The step uses this step's *unquantized* $m$ and $v$; only the stored states are quantized.
    With `amsgrad` the stored maximum $\hat v = \max(\mathrm{deq}(\hat v_q), v)$ replaces $v$
    in the denominator. A state is quantized only if its parameter has at least 4096 values and
    a whole number of blocks; otherwise it is a plain array in the parameter's dtype (rounded
    from float32 after each step, as torchao's `copy_` rounds it).

    The update returned is (new parameter) $-$ (parameter), so `optax.apply_updates` gives the
    new parameter exactly whenever the two are within a factor 2 of each other. `params` is
    required.

    Args:
      lr: learning rate γ (a float or a schedule `count -> lr`), used in float32.
      betas: (β1, β2).
      eps: ε, added outside the square root.
      weight_decay: λ.
      amsgrad: keep the running maximum of the second moment (quantized like it).
      decoupled_weight_decay: AdamW's decay of the parameter instead of the L2 term in the gradient.
      bits: 8, 4 or `"fp8"`: the storage of the moments (8: dynamic-tree maps; 4: signed
        dynamic-tree map for $m$, linear map for $v$; `"fp8"`: float8_e4m3fn codes).
      block_size: values per scale.
      bf16_stochastic_round: round bfloat16 parameters stochastically (other dtypes round to
        nearest).
      key: PRNG key for the stochastic rounding (default `jax.random.key(0)`).

    Returns:
      An `optax.GradientTransformationExtraArgs` with state `QuantizedAdamState`.

    Raises:
      ValueError: from `update` when `params` is `None`.
    """
    beta1, beta2 = betas
    first = StateFormat(bits, True, int(block_size))
    second = StateFormat(bits, False, int(block_size))
    if bf16_stochastic_round and key is None:
        key = jax.random.key(0)

    def zeros(fmt: StateFormat, p: Any) -> Any:
        shape = tuple(p.shape)
        if fmt.quantized(int(np.prod(shape, dtype=np.int64))):
            return fmt.zeros(shape)
        return jnp.zeros(shape, p.dtype)

    def init(params):
        def states(fmt):
            return jax.tree_util.tree_map(lambda p: zeros(fmt, p), params)

        return QuantizedAdamState(
            step=jnp.zeros([], F32),
            exp_avg=states(first),
            exp_avg_sq=states(second),
            max_exp_avg_sq=states(second) if amsgrad else None,
            key=key if bf16_stochastic_round else None,
        )

    def load(fmt: StateFormat, stored: Any, shape: tuple[int, ...], zero: jax.Array) -> jax.Array:
        quantized = as_quantized(stored)
        if quantized is not None:
            return fmt.dequantize(quantized, shape, zero)
        return stored.astype(F32)

    def store(fmt: StateFormat, stored: Any, value: jax.Array, zero: jax.Array) -> Any:
        if as_quantized(stored) is not None:
            return fmt.quantize(value, zero)
        return value.astype(stored.dtype)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "the low-bit Adam update computes the new parameters: call "
                "update(grads, state, params)"
            )
        step = state.step + 1
        zero = opaque_zero(state.step)
        lr_t = lr_at(lr, state.step.astype(jnp.int32)).astype(F32)
        bias_correction1 = 1 - jnp.power(F32(beta1), step)
        bias_correction2 = 1 - jnp.power(F32(beta2), step)
        wd = F32(weight_decay)
        decay = lr_t * wd

        treedef = jax.tree_util.tree_structure(updates)
        grads = treedef.flatten_up_to(updates)
        leaves = treedef.flatten_up_to(params)
        exp_avgs = treedef.flatten_up_to(state.exp_avg)
        exp_avg_sqs = treedef.flatten_up_to(state.exp_avg_sq)
        maxima = treedef.flatten_up_to(state.max_exp_avg_sq) if amsgrad else [None] * len(grads)
        new_key, keys = state.key, [None] * len(grads)
        if bf16_stochastic_round:
            new_key, *keys = jax.random.split(state.key, len(grads) + 1)

        outputs = []
        for g, p, m_q, v_q, max_q, k in zip(
            grads, leaves, exp_avgs, exp_avg_sqs, maxima, keys, strict=True
        ):
            shape = tuple(p.shape)
            p32, g32 = p.astype(F32), g.astype(F32)
            if decoupled_weight_decay:
                p32 = p32 - rounded(decay * p32, zero)
            else:
                g32 = g32 + rounded(wd * p32, zero)
            m = lerp(load(first, m_q, shape, zero), g32, 1 - beta1)
            v = lerp(load(second, v_q, shape, zero), rounded(g32 * g32, zero), 1 - beta2)
            denom_v, new_max = v, None
            if amsgrad:
                denom_v = jnp.maximum(load(second, max_q, shape, zero), v)
                new_max = store(second, max_q, denom_v, zero)
            denom = divide(jnp.sqrt(denom_v), jnp.sqrt(bias_correction2)) + F32(eps)
            p32 = p32 - lr_t * divide(m, bias_correction1) / denom
            if bf16_stochastic_round and p.dtype == jnp.bfloat16:
                new_p = stochastic_round_to_bf16(k, p32)
            else:
                new_p = p32.astype(p.dtype)
            outputs.append(
                (
                    _change(new_p, p, zero),
                    store(first, m_q, m, zero),
                    store(second, v_q, v, zero),
                    new_max,
                )
            )

        def tree(i):
            return treedef.unflatten([out[i] for out in outputs])

        return tree(0), QuantizedAdamState(
            step=step,
            exp_avg=tree(1),
            exp_avg_sq=tree(2),
            max_exp_avg_sq=tree(3) if amsgrad else None,
            key=new_key,
        )

    return optax.GradientTransformationExtraArgs(init, update)


def _torchao_group(arguments: dict[str, Any]) -> dict[str, Any]:
    """torchao's param group holds lr, betas, eps, weight_decay and amsgrad; `block_size` and
    `bf16_stochastic_round` are attributes of the optimizer."""
    return {k: arguments[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}


_LOWBIT_DOC = r"""`torchao.optim.{cls}`: Adam{w} with its moments stored in {storage}.

    {decay}

    See `quantized_adam` for the step as computed (float32 throughout, torchao's rounding).

    Args:
      {{lr}}
      betas: (β1, β2).
      eps: ε, outside the square root.
      weight_decay: λ (default {default_wd}, torchao's).
      amsgrad: keep the running maximum of the second moment, quantized like it. torchao 0.18
        crashes with `amsgrad=True`; here it works (tested against a float32 reference of the
        same formula).
      block_size: values per block scale (default {block}).
      bf16_stochastic_round: round bfloat16 parameters stochastically instead of to nearest.
      key: PRNG key of the stochastic rounding (torchao uses torch's global generator);
        default `jax.random.key(0)`.

    Returns:
      An `optax.GradientTransformationExtraArgs` (a `TorchTransformation` carrying torchao's
      param group) with state `QuantizedAdamState`. `update` needs `params`.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_port import optim
      >>> params = dict(w=jnp.ones((64, 128)), b=jnp.zeros(128))
      >>> tx = optim.{name}(lr=1e-3)
      >>> state = tx.init(params)
      >>> type(state.exp_avg["w"]).__name__, state.exp_avg["b"].dtype  # w: 8192 values, b: 128
      ('QuantizedArray', dtype('float32'))
      >>> updates, state = tx.update(params, state, params)
      >>> params = optax.apply_updates(params, updates)
    """


def _factory(name: str, cls: str, bits: Any, decoupled: bool, block: int, weight_decay: float):
    storage = {8: "8 bits", 4: "4 bits", "fp8": "FP8 (float8_e4m3fn)"}[bits]
    decay = (
        "Decoupled weight decay: $\\theta \\leftarrow \\theta - (\\gamma\\lambda)\\theta$ first."
        if decoupled
        else "Weight decay as an L2 term: $g \\leftarrow g + \\lambda\\theta$."
    )

    def factory(
        lr: LearningRate = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = weight_decay,
        amsgrad: bool = False,
        *,
        block_size: int = block,
        bf16_stochastic_round: bool = False,
        key: jax.Array | None = None,
    ) -> optax.GradientTransformationExtraArgs:
        block = _check_arguments(lr, betas, eps, block_size)
        return quantized_adam(
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            decoupled_weight_decay=decoupled,
            bits=bits,
            block_size=block,
            bf16_stochastic_round=bool(bf16_stochastic_round),
            key=key,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = _LOWBIT_DOC.format(
        cls=cls,
        w="W" if decoupled else "",
        storage=storage,
        decay=decay,
        default_wd=weight_decay,
        block=block,
        name=name,
    )
    return carries_torch_group(
        _torchao_group,
        torch_class=f"torchao.{cls}",
        # torchao keeps these on the optimizer, not in its param groups
        constructor_only=("block_size", "bf16_stochastic_round"),
    )(doc(factory))


adam8bit = _factory("adam8bit", "Adam8bit", 8, False, 256, 0)
"""`torchao.optim.Adam8bit`: Adam with 8-bit moments, weight decay as an L2 term:
`adam8bit(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
block_size=256, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adam8bit)`
gives the full text with an example."""
adamw8bit = _factory("adamw8bit", "AdamW8bit", 8, True, 256, 1e-2)
"""`torchao.optim.AdamW8bit`: Adam with 8-bit moments, weight decay decoupled:
`adamw8bit(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
block_size=256, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adamw8bit)`
gives the full text with an example."""
adam4bit = _factory("adam4bit", "Adam4bit", 4, False, 128, 0)
"""`torchao.optim.Adam4bit`: Adam with 4-bit moments, weight decay as an L2 term:
`adam4bit(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
block_size=128, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adam4bit)`
gives the full text with an example."""
adamw4bit = _factory("adamw4bit", "AdamW4bit", 4, True, 128, 1e-2)
"""`torchao.optim.AdamW4bit`: Adam with 4-bit moments, weight decay decoupled:
`adamw4bit(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
block_size=128, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adamw4bit)`
gives the full text with an example."""
adam_fp8 = _factory("adam_fp8", "AdamFp8", "fp8", False, 256, 0)
"""`torchao.optim.AdamFp8`: Adam with FP8 (float8_e4m3fn) moments, weight decay as an L2 term:
`adam_fp8(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
block_size=256, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adam_fp8)`
gives the full text with an example."""
adamw_fp8 = _factory("adamw_fp8", "AdamWFp8", "fp8", True, 256, 1e-2)
"""`torchao.optim.AdamWFp8`: Adam with FP8 (float8_e4m3fn) moments, weight decay decoupled:
`adamw_fp8(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
block_size=256, bf16_stochastic_round=False, key=None)`, torchao's arguments and defaults.
The step as computed: [`quantized_adam`][jaxopt_port.optim.quantized_adam]; `help(optim.adamw_fp8)`
gives the full text with an example."""
