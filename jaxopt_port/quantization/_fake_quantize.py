"""torch's `FakeQuantize` and `FusedMovingAvgObsFakeQuantize` in functional form.

A fake-quantize object holds the configuration; its state holds the observer's state, the current
scale and zero point and the two toggles (torch's buffers `scale`, `zero_point`,
`fake_quant_enabled`, `observer_enabled`):

```python
fq = quantization.FakeQuantize()                 # torch's defaults: moving-average quint8
state = fq.init()
y, state = fq(state, x)                          # torch: y = fq(x)
state = fq.disable_observer(state)               # torch: fq.disable_observer()
```

The call observes `x` when the observer is enabled, recomputes the qparams, and fake-quantizes
`x` with them when fake quantization is enabled (straight-through gradient), all under `jax.jit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_port.quantization._numerics import (
    fake_quantize_per_channel_affine,
    fake_quantize_per_tensor_affine,
)
from jaxopt_port.quantization._observers import (
    MinMaxState,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)
from jaxopt_port.quantization._qparams import choose_quantization_params
from jaxopt_port.quantization._ranges import DTYPES, dtype_name

if TYPE_CHECKING:
    from jax.typing import ArrayLike
    from typing_extensions import Self

_F32 = jnp.float32


class FakeQuantizeState(NamedTuple):
    """State of a fake-quantize object (torch's buffers)."""

    observer: Any
    scale: jnp.ndarray
    zero_point: jnp.ndarray
    fake_quant_enabled: jnp.ndarray
    observer_enabled: jnp.ndarray


class FakeQuantize:
    """Observe, then fake-quantize with the observed qparams (torch's `FakeQuantize`).

    $$y = \\begin{cases}\\mathrm{fake\\_quantize}(x, s, z, q_{min}, q_{max}) &
    \\text{fake quant enabled}\\\\ x & \\text{otherwise}\\end{cases}$$

    with $(s, z)$ recomputed from the observer after it has seen $x$ (when the observer is
    enabled) and kept otherwise; initially $s = 1$, $z = 0$.

    Args:
        observer: An observer class or a `with_args` constructor
            ([`MovingAverageMinMaxObserver`][jaxopt_port.quantization.MovingAverageMinMaxObserver]).
        quant_min: Lower bound passed to the observer (checked against the dtype as torch).
        quant_max: Upper bound.
        is_dynamic: Passed to the observer.
        **observer_kwargs: The observer's keyword arguments (`dtype`, `qscheme`, `reduce_range`,
            `averaging_constant`, `ch_axis`, ...).

    Raises:
        AssertionError: torch's messages for `quant_min > quant_max` or bounds outside the dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> fq = quantization.FakeQuantize(quant_min=0, quant_max=255)
        >>> y, state = fq(fq.init(), jnp.array([-1.0, 0.0, 0.3, 3.0]))
        >>> y
        Array([-1.0039216 ,  0.        ,  0.29803923,  2.9960785 ], dtype=float32)
        >>> state.scale, state.zero_point
        (Array([0.01568628], dtype=float32), Array([64], dtype=int32))
    """

    def __init__(
        self,
        observer: Callable[..., Any] = MovingAverageMinMaxObserver,
        quant_min: int | None = None,
        quant_max: int | None = None,
        is_dynamic: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        if quant_min is not None and quant_max is not None:
            if quant_min > quant_max:
                raise AssertionError("quant_min must be less than or equal to quant_max")
            dtype = observer_kwargs.get("dtype", "quint8")
            dtype = getattr(observer, "keywords", {}).get("dtype", dtype)
            _, lo, hi = DTYPES[dtype_name(dtype)]
            if lo > quant_min:
                raise AssertionError("quant_min out of bound")
            if quant_max > hi:
                raise AssertionError("quant_max out of bound")
            observer_kwargs.update({"quant_min": quant_min, "quant_max": quant_max})
        observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        self.quant_min, self.quant_max = obs.quant_min, obs.quant_max
        self.dtype, self.qscheme, self.is_dynamic = obs.dtype, obs.qscheme, obs.is_dynamic
        self.is_per_channel = isinstance(obs, PerChannelMinMaxObserver)
        self.ch_axis = obs.ch_axis if self.is_per_channel else -1
        self.float_qparams = self.qscheme == "per_channel_affine_float_qparams"

    @classmethod
    def with_args(cls, **kwargs: Any) -> Callable[..., Self]:
        """A constructor with these keyword arguments preset (torch's `with_args`)."""
        return functools.partial(cls, **kwargs)

    def init(self, num_channels: int | None = None) -> FakeQuantizeState:
        """Initial state: unobserved, $s = 1$, $z = 0$, both toggles on. Per channel, give the
        channel count for fixed shapes under `jax.jit` (the qparams then have one entry per
        channel from the start)."""
        obs = self.activation_post_process
        n = 1 if num_channels is None or not self.is_per_channel else num_channels
        obs_state = obs.init(num_channels) if self.is_per_channel else obs.init()
        zp_dtype = _F32 if self.float_qparams else jnp.int32
        return FakeQuantizeState(
            obs_state,
            jnp.ones((n,), _F32),
            jnp.zeros((n,), zp_dtype),
            jnp.array([1], jnp.uint8),
            jnp.array([1], jnp.uint8),
        )

    def _qparams(self, obs_state: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.activation_post_process.calculate_qparams(obs_state)

    def calculate_qparams(self, state: FakeQuantizeState) -> tuple[jax.Array, jax.Array]:
        """The observer's current qparams."""
        return self.activation_post_process.calculate_qparams(state.observer)

    def fake_quantize(self, state: FakeQuantizeState, x: ArrayLike) -> jax.Array:
        """Fake-quantize `x` with the state's qparams, without observing it (identity when fake
        quantization is disabled); the straight-through gradient flows to `x`."""
        x = jnp.asarray(x, _F32)
        if self.is_per_channel:
            y = fake_quantize_per_channel_affine(
                x, state.scale, state.zero_point, self.ch_axis, self.quant_min, self.quant_max
            )
        else:
            y = fake_quantize_per_tensor_affine(
                x, state.scale, state.zero_point, self.quant_min, self.quant_max
            )
        return jnp.where(state.fake_quant_enabled[0] == 1, y, x)

    def __call__(
        self, state: FakeQuantizeState, x: ArrayLike
    ) -> tuple[jax.Array, FakeQuantizeState]:
        """Observe and fake-quantize `x`: returns `(y, new_state)` (torch's `forward`)."""
        x = jnp.asarray(x, _F32)
        observe = state.observer_enabled[0] == 1
        obs_state = self.activation_post_process.update(state.observer, jax.lax.stop_gradient(x))
        scale, zp = self._qparams(obs_state, jax.lax.stop_gradient(x))
        zp = zp.astype(state.zero_point.dtype)

        def pick(new, old):
            # A per-channel state made without a channel count is empty (torch's resize on the
            # first observation): the first observation sets its shape.
            if jnp.shape(old) != jnp.shape(new):
                if jnp.size(old) == 0:
                    return new
                old = jnp.broadcast_to(old, jnp.shape(new))
            return jnp.where(observe, new, old)

        obs_state = jax.tree_util.tree_map(pick, obs_state, state.observer)
        scale, zp = pick(scale, state.scale), pick(zp, state.zero_point)
        state = state._replace(observer=obs_state, scale=scale, zero_point=zp)
        return self.fake_quantize(state, x), state

    @staticmethod
    def enable_fake_quant(state: FakeQuantizeState, enabled: bool = True) -> FakeQuantizeState:
        """Turn fake quantization on or off (torch's `enable_fake_quant`)."""
        return state._replace(fake_quant_enabled=jnp.array([int(enabled)], jnp.uint8))

    @staticmethod
    def disable_fake_quant(state: FakeQuantizeState) -> FakeQuantizeState:
        """Turn fake quantization off."""
        return FakeQuantize.enable_fake_quant(state, False)

    @staticmethod
    def enable_observer(state: FakeQuantizeState, enabled: bool = True) -> FakeQuantizeState:
        """Turn observation (and qparam updates) on or off (torch's `enable_observer`)."""
        return state._replace(observer_enabled=jnp.array([int(enabled)], jnp.uint8))

    @staticmethod
    def disable_observer(state: FakeQuantizeState) -> FakeQuantizeState:
        """Freeze the observer and the qparams."""
        return FakeQuantize.enable_observer(state, False)


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """torch's fused QAT fake-quant: moving-average observer, qparams by fbgemm's rule.

    Same flow as [`FakeQuantize`][jaxopt_port.quantization.FakeQuantize], but the qparams come
    from [`choose_quantization_params`][jaxopt_port.quantization.choose_quantization_params]
    (`preserve_sparsity` for symmetric qschemes) applied to the running range, as
    `torch.fused_moving_avg_obs_fake_quant` does. `calculate_qparams` (what torch's `convert`
    uses) stays the observer's formula, so the training-time and converted qparams differ slightly
    (weight scales by 0.39 %, the ratio 127.5/127 of the two symmetric divisors, measured), exactly
    as in torch.

    The fbgemm rule needs float64 and runs on the host through a callback per tensor or channel.

    Args:
        observer: Moving-average observer class (per tensor or per channel).
        quant_min: Lower bound.
        quant_max: Upper bound.
        **observer_kwargs: The observer's keyword arguments.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> fq = quantization.FusedMovingAvgObsFakeQuantize(quant_min=0, quant_max=255)
        >>> _, state = fq(fq.init(), jnp.array([-1.0, 3.0]))
        >>> state.zero_point
        Array([64], dtype=int32)
    """

    def __init__(
        self,
        observer: Callable[..., Any] = MovingAverageMinMaxObserver,
        quant_min: int = 0,
        quant_max: int = 255,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__(
            observer=observer, quant_min=quant_min, quant_max=quant_max, **observer_kwargs
        )
        self.symmetric = self.qscheme in ("per_tensor_symmetric", "per_channel_symmetric")

    def _qparams(self, obs_state: MinMaxState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        del x
        mn, mx = jnp.atleast_1d(obs_state.min_val), jnp.atleast_1d(obs_state.max_val)
        choose = functools.partial(
            choose_quantization_params,
            quant_min=self.quant_min,
            quant_max=self.quant_max,
            preserve_sparsity=self.symmetric,
        )
        scale, zp = jax.vmap(choose)(mn, mx)
        return scale.astype(_F32), zp.astype(jnp.int32)
