"""torch.ao.quantization's observers as functional objects that run under `jax.jit`.

Each observer is built with torch's class name, keyword arguments and defaults, and holds only its
configuration; its statistics live in a NamedTuple state with torch's buffer names:

```python
obs = quantization.MinMaxObserver(dtype="quint8", reduce_range=True)
state = obs.init()
state = obs.update(state, x)            # torch: obs(x)
scale, zero_point = obs.calculate_qparams(state)
```

`update` and `calculate_qparams` are pure functions of arrays: jit them, scan them, keep the state
in a model or an optimizer state. Scale and zero point equal torch's bit for bit after any sequence
of batches (the moving average is evaluated as torch's two float32 operations, not a fused
multiply-add).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._qparams import FLOAT32_EPS, calculate_qparams
from jaxopt_port.quantization._ranges import (
    DtypeName,
    QSchemeName,
    calculate_qmin_qmax,
    dtype_name,
    qscheme_name,
    validate_qmin_qmax,
)

if TYPE_CHECKING:
    import torch
    from jax.typing import ArrayLike
    from typing_extensions import Self

_F32 = jnp.float32
_PER_TENSOR = ("per_tensor_affine", "per_tensor_symmetric")
_PER_CHANNEL = ("per_channel_affine", "per_channel_symmetric", "per_channel_affine_float_qparams")


class MinMaxState(NamedTuple):
    """Running range of an observer (torch's `min_val` / `max_val` buffers).

    Per tensor both are 0-d and start at $+\\infty$ / $-\\infty$; per channel they have one entry
    per channel (shape `(0,)` until the first update when the channel count is not given).
    """

    min_val: jnp.ndarray
    max_val: jnp.ndarray


class _UniformObserver:
    """torch's `UniformQuantizationObserverBase`: range rules, checks and the qparam formula."""

    def __init__(
        self,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = FLOAT32_EPS,
        is_dynamic: bool = False,
    ) -> None:
        del factory_kwargs  # device/dtype placement of torch buffers; states here are float32
        name = str(qscheme).removeprefix("torch.")
        if name not in _PER_TENSOR + _PER_CHANNEL:
            raise AssertionError(
                "Default Observer only works for per_tensor_affine, per_tensor_symmetric, "
                "per_channel_affine, per_channel_symmetric and per_channel_float_qparams "
                "quantization scheme"
            )
        try:
            self.dtype = dtype_name(dtype)
        except ValueError:
            raise AssertionError(
                "Default Observer only works for ('quint8', 'qint8', 'qint32') data type "
                f"(jaxopt_port supports these of torch's), got {dtype!r}"
            ) from None
        self.qscheme = qscheme_name(qscheme)
        if reduce_range:
            warnings.warn(
                "Please use quant_min and quant_max to specify the range for observers. "
                "reduce_range will be deprecated in a future release of PyTorch.",
                stacklevel=3,
            )
        self.reduce_range = bool(reduce_range)
        self.eps = float(eps)
        self.is_dynamic = bool(is_dynamic)
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        if self.has_customized_qrange:
            validate_qmin_qmax(quant_min, quant_max)
        self.quant_min, self.quant_max = calculate_qmin_qmax(
            quant_min, quant_max, self.dtype, self.reduce_range
        )
        symmetric = self.qscheme in ("per_tensor_symmetric", "per_channel_symmetric")
        if symmetric and self.reduce_range and self.dtype == "quint8":
            raise NotImplementedError("Cannot reduce range for symmetric quantization for quint8")

    # An observer is configuration only (its state is separate), so two equal configurations
    # are interchangeable: equal and hashed by value, a jitted function taking one as a static
    # argument compiles once per configuration, not once per module that holds one.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), *sorted(vars(self).items())))

    @classmethod
    def with_args(cls, **kwargs: Any) -> Callable[..., Self]:
        """A constructor with these keyword arguments preset (torch's `Observer.with_args`)."""
        return functools.partial(cls, **kwargs)

    def calculate_qparams(self, state: MinMaxState) -> tuple[jax.Array, jax.Array]:
        """Scale and zero point of the observed range (see
        [`calculate_qparams`][jaxopt_port.quantization.calculate_qparams])."""
        return self._qparams_of(state.min_val, state.max_val)

    def _qparams_of(self, min_val: ArrayLike, max_val: ArrayLike) -> tuple[jax.Array, jax.Array]:
        return calculate_qparams(
            min_val,
            max_val,
            self.quant_min,
            self.quant_max,
            self.qscheme,
            self.dtype,
            self.eps,
            self.has_customized_qrange,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dtype={self.dtype!r}, qscheme={self.qscheme!r}, "
            f"quant_min={self.quant_min}, quant_max={self.quant_max})"
        )


def _moving_average(old, new, c):
    """torch's `old + c * (new - old)`: two float32 roundings (no fused multiply-add)."""
    return _exact.multiply_add(_F32(c), new - old, old)


def _averaged(state: MinMaxState, cur_min, cur_max, c) -> MinMaxState:
    """The moving-average update; ranges still at $(+\\infty, -\\infty)$ take the batch's."""
    first = (state.min_val == jnp.inf) & (state.max_val == -jnp.inf)
    return MinMaxState(
        jnp.where(first, cur_min, _moving_average(state.min_val, cur_min, c)),
        jnp.where(first, cur_max, _moving_average(state.max_val, cur_max, c)),
    )


class MinMaxObserver(_UniformObserver):
    """Running minimum and maximum of everything observed (torch's `MinMaxObserver`).

    $x_{min} \\leftarrow \\min(x_{min}, \\min X)$, $x_{max} \\leftarrow \\max(x_{max}, \\max X)$;
    qparams by [`calculate_qparams`][jaxopt_port.quantization.calculate_qparams]. An empty batch
    leaves the state unchanged.

    Args:
        dtype: `"quint8"` (default), `"qint8"` or `"qint32"`.
        qscheme: `"per_tensor_affine"` (default) or `"per_tensor_symmetric"`.
        **kwargs: torch's other keyword arguments: `reduce_range` (drop one bit, x86
            activations; warns as torch does), `quant_min` / `quant_max` (a custom range, both
            given), `factory_kwargs` (accepted for torch compatibility; ignored), `eps` (smallest
            scale, float32 eps), `is_dynamic` (recorded for torch compatibility).

    Raises:
        NotImplementedError: a per-channel qscheme, or symmetric quint8 with `reduce_range`.
        AssertionError: unknown qscheme or dtype, or an invalid custom range (torch's messages).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> obs = quantization.MinMaxObserver()
        >>> state = obs.update(obs.init(), jnp.array([-1.0, 0.5]))
        >>> state = obs.update(state, jnp.array([3.0]))
        >>> obs.calculate_qparams(state)
        (Array([0.01568628], dtype=float32), Array([64], dtype=int32))
    """

    def __init__(
        self,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
        **kwargs: Any,
    ) -> None:
        if str(qscheme).removeprefix("torch.") not in _PER_TENSOR:
            raise NotImplementedError(
                f"{type(self).__name__}'s qscheme only support torch.per_tensor_symmetric and "
                "torch.per_tensor_affine."
            )
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)

    def init(self) -> MinMaxState:
        """The unobserved state: $(+\\infty, -\\infty)$."""
        return MinMaxState(jnp.array(jnp.inf, _F32), jnp.array(-jnp.inf, _F32))

    def update(self, state: MinMaxState, x: ArrayLike) -> MinMaxState:
        """Observe a batch (torch's `forward`)."""
        x = jnp.asarray(x).astype(_F32)
        if x.size == 0:
            return state
        return MinMaxState(jnp.minimum(x.min(), state.min_val), jnp.maximum(x.max(), state.max_val))


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's minimum and maximum.

    The first batch sets the range; after it
    $x_{min} \\leftarrow x_{min} + c\\,(\\min X - x_{min})$ (same for the maximum), $c$ =
    `averaging_constant`, evaluated in float32 as torch's two operations.

    Args:
        averaging_constant: $c$ (0.01).
        dtype: See [`MinMaxObserver`][jaxopt_port.quantization.MinMaxObserver].
        qscheme: Per-tensor qscheme.
        **kwargs: `reduce_range`, `quant_min`, `quant_max`, `eps`, `is_dynamic`.

    Raises:
        NotImplementedError: per-channel qscheme, or `is_dynamic` with $c \\ne 1$.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> obs = quantization.MovingAverageMinMaxObserver(averaging_constant=0.5)
        >>> state = obs.update(obs.init(), jnp.array([-2.0, 2.0]))
        >>> obs.update(state, jnp.array([0.0, 4.0]))
        MinMaxState(min_val=Array(-1., dtype=float32), max_val=Array(3., dtype=float32))
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
        **kwargs: Any,
    ) -> None:
        if str(qscheme).removeprefix("torch.") not in _PER_TENSOR:
            raise NotImplementedError(
                "MovingAverageMinMaxObserver's qscheme only support torch.per_tensor_symmetric "
                f"and torch.per_tensor_affine. but got: {qscheme}"
            )
        self.averaging_constant = averaging_constant
        if kwargs.get("is_dynamic", False) and averaging_constant != 1:
            raise NotImplementedError(
                "MovingAverageMinMaxObserver doesn't support dynamic quantization for averaging "
                f"constant of {averaging_constant}"
            )
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)

    def update(self, state: MinMaxState, x: ArrayLike) -> MinMaxState:
        """Observe a batch."""
        x = jnp.asarray(x).astype(_F32)
        if x.size == 0:
            return state
        return _averaged(state, x.min(), x.max(), self.averaging_constant)


class PerChannelMinMaxObserver(_UniformObserver):
    """Running minimum and maximum per index of `ch_axis` (torch's `PerChannelMinMaxObserver`).

    Args:
        ch_axis: The channel axis of observed arrays (0).
        dtype: `"quint8"` (default), `"qint8"` or `"qint32"`.
        qscheme: `"per_channel_affine"` (default), `"per_channel_symmetric"` or
            `"per_channel_affine_float_qparams"`.
        **kwargs: `reduce_range`, `quant_min`, `quant_max`, `factory_kwargs`, `eps`, `is_dynamic`.

    Raises:
        NotImplementedError: a per-tensor qscheme, `is_dynamic`, or symmetric quint8 with
            `reduce_range`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> obs = quantization.PerChannelMinMaxObserver(dtype="qint8", qscheme="per_channel_symmetric")
        >>> state = obs.update(obs.init(), jnp.array([[-1.0, 0.5], [0.0, 2.55]]))
        >>> obs.calculate_qparams(state)
        (Array([0.00784314, 0.02      ], dtype=float32), Array([0, 0], dtype=int32))
    """

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_channel_affine",
        **kwargs: Any,
    ) -> None:
        if str(qscheme).removeprefix("torch.") not in _PER_CHANNEL:
            raise NotImplementedError(
                f"{type(self).__name__}'s qscheme only support torch.per_channel_symmetric, "
                "torch.per_channel_affine and torch.per_channel_affine_float_qparams."
            )
        if kwargs.get("is_dynamic", False):
            raise NotImplementedError(f"{type(self).__name__} doesn't support dynamic quantization")
        self.ch_axis = ch_axis
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)

    def init(self, num_channels: int | None = None) -> MinMaxState:
        """The unobserved state: empty as torch's, or $\\pm\\infty$ per channel when the count is
        given (fixed shapes for `jax.lax.scan` and optimizer states)."""
        n = 0 if num_channels is None else num_channels
        return MinMaxState(jnp.full((n,), jnp.inf, _F32), jnp.full((n,), -jnp.inf, _F32))

    def _batch_range(self, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
        y = jnp.moveaxis(jnp.asarray(x).astype(_F32), self.ch_axis, 0)
        y = y.reshape(y.shape[0], -1)
        return y.min(axis=1), y.max(axis=1)

    def update(self, state: MinMaxState, x: ArrayLike) -> MinMaxState:
        """Observe a batch."""
        if jnp.size(x) == 0:
            return state
        cur_min, cur_max = self._batch_range(x)
        if state.min_val.size == 0:
            return MinMaxState(cur_min, cur_max)
        return MinMaxState(jnp.minimum(cur_min, state.min_val), jnp.maximum(cur_max, state.max_val))


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel exponential moving average of minimum and maximum.

    As [`MovingAverageMinMaxObserver`][jaxopt_port.quantization.MovingAverageMinMaxObserver]
    per index of `ch_axis`. torch switches from "first batch" to "average" on the state being
    empty; with a channel count given to `init`, channels still at $\\pm\\infty$ take the batch's
    range, which gives the same numbers.

    Args:
        averaging_constant: $c$ (0.01).
        ch_axis: Channel axis (0).
        dtype: Quantized dtype.
        qscheme: Per-channel qscheme.
        **kwargs: `reduce_range`, `quant_min`, `quant_max`, `eps`, `is_dynamic`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> obs = quantization.MovingAveragePerChannelMinMaxObserver(averaging_constant=0.5)
        >>> state = obs.update(obs.init(), jnp.array([[-2.0, 2.0]]))
        >>> obs.update(state, jnp.array([[0.0, 4.0]]))
        MinMaxState(min_val=Array([-1.], dtype=float32), max_val=Array([3.], dtype=float32))
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int = 0,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_channel_affine",
        **kwargs: Any,
    ) -> None:
        super().__init__(ch_axis=ch_axis, dtype=dtype, qscheme=qscheme, **kwargs)
        self.averaging_constant = averaging_constant

    def update(self, state: MinMaxState, x: ArrayLike) -> MinMaxState:
        """Observe a batch."""
        if jnp.size(x) == 0:
            return state
        cur_min, cur_max = self._batch_range(x)
        if state.min_val.size == 0:
            return MinMaxState(cur_min, cur_max)
        return _averaged(state, cur_min, cur_max, self.averaging_constant)


class FixedQParamsState(NamedTuple):
    """The fixed qparams (torch's `scale` / `zero_point` buffers, shape `(1,)`)."""

    scale: jnp.ndarray
    zero_point: jnp.ndarray


class FixedQParamsObserver:
    """Fixed scale and zero point whatever is observed (torch's `FixedQParamsObserver`; sigmoid,
    tanh, hardsigmoid outputs).

    Args:
        scale: The scale (stored in float32).
        zero_point: The zero point (int32).
        dtype: Quantized dtype name ("quint8").
        qscheme: Per-tensor qscheme ("per_tensor_affine").
        quant_min: Lower bound (0).
        quant_max: Upper bound (255).
        is_dynamic: Must be False.

    Raises:
        NotImplementedError: `is_dynamic=True` (torch's message).

    Examples:
        >>> from jaxopt_port import quantization
        >>> obs = quantization.FixedQParamsObserver(1.0 / 256.0, 0)
        >>> obs.calculate_qparams(obs.update(obs.init(), 5.0))
        (Array([0.00390625], dtype=float32), Array([0], dtype=int32))
    """

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: DtypeName | torch.dtype = "quint8",
        qscheme: QSchemeName | torch.qscheme = "per_tensor_affine",
        quant_min: int = 0,
        quant_max: int = 255,
        is_dynamic: bool = False,
    ) -> None:
        if is_dynamic:
            raise NotImplementedError("FixedQParamsObserver doesn't support dynamic quantization")
        self.scale, self.zero_point = scale, zero_point
        self.dtype, self.qscheme = dtype_name(dtype), qscheme_name(qscheme)
        self.quant_min, self.quant_max = quant_min, quant_max
        self.is_dynamic = False

    with_args = classmethod(_UniformObserver.with_args.__func__)

    def init(self) -> FixedQParamsState:
        """The state: the fixed qparams as arrays."""
        return FixedQParamsState(
            jnp.array([self.scale], _F32), jnp.array([self.zero_point], jnp.int32)
        )

    def update(self, state: FixedQParamsState, x: ArrayLike) -> FixedQParamsState:
        """Observing changes nothing."""
        del x
        return state

    def calculate_qparams(self, state: FixedQParamsState) -> tuple[jax.Array, jax.Array]:
        """`(scale, zero_point)`, as given."""
        return state.scale, state.zero_point


class PlaceholderObserver:
    """Carries a configuration (dtype, `is_dynamic`) and observes nothing (torch's
    `PlaceholderObserver`; e.g. float16 or dynamic quantization).

    Args:
        dtype: Target dtype name ("float32").
        custom_op_name: Recorded.
        compute_dtype: Deprecated; setting it marks dynamic quantization and warns.
        quant_min: Recorded.
        quant_max: Recorded.
        qscheme: Recorded ("per_tensor_affine").
        eps: Recorded (float32 eps).
        is_dynamic: Dynamic quantization.

    Examples:
        >>> from jaxopt_port import quantization
        >>> obs = quantization.PlaceholderObserver(dtype="float16")
        >>> obs.update(obs.init(), 1.0)
        ()
    """

    def __init__(
        self,
        dtype: str | torch.dtype = "float32",
        custom_op_name: str = "",
        compute_dtype: str | torch.dtype | None = None,
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: QSchemeName | torch.qscheme | None = None,
        eps: float | None = None,
        is_dynamic: bool = False,
    ) -> None:
        self.dtype = str(dtype).removeprefix("torch.")
        self.qscheme = "per_tensor_affine" if qscheme is None else qscheme_name(qscheme)
        self.quant_min, self.quant_max = quant_min, quant_max
        self.eps = FLOAT32_EPS if eps is None else eps
        self.custom_op = custom_op_name
        self.is_dynamic = bool(is_dynamic)
        if compute_dtype:
            self.is_dynamic = True
            warnings.warn(
                "Please use `is_dynamic` instead of `compute_dtype`. `compute_dtype` will be "
                "deprecated in a future release of PyTorch.",
                stacklevel=2,
            )

    with_args = classmethod(_UniformObserver.with_args.__func__)

    def init(self) -> tuple[()]:
        """No state."""
        return ()

    def update(self, state: tuple[()], x: ArrayLike) -> tuple[()]:
        """Observing changes nothing."""
        del x
        return state

    def calculate_qparams(self, state: tuple[()]) -> NoReturn:
        """Not defined for a placeholder.

        Raises:
            Exception: always, with torch's message.
        """
        raise Exception("calculate_qparams should not be called for PlaceholderObserver")
