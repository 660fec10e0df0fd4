"""Learnable fake quantization: gradients for the scale and the zero point (LSQ / TQT style).

torch's `_fake_quantize_learnable_per_tensor_affine` and `..._per_channel_affine` (used by
`_LearnableFakeQuantize`). Forward as
[`fake_quantize_per_tensor_affine`][jaxopt_port.quantization.fake_quantize_per_tensor_affine]
with the zero point rounded; backward, per element, with $r = \\mathrm{fl}(1/s)$,
$q = \\mathrm{rint}(\\mathrm{fma}(x, r, z))$ (torch's backward kernel adds the zero point
before rounding, in one fused operation, unlike its forward) and
$\\hat x - x = \\mathrm{fma}(\\mathrm{clamp}(q) - z, s, -x)$ (also fused by the compiler):

$$\\frac{\\partial L}{\\partial x} = g\\,[q_{min} \\le q \\le q_{max}],\\quad
\\frac{\\partial L}{\\partial s} = \\begin{cases}
((g\\,(\\hat x - x))\\, r)\\, \\gamma & q \\text{ in range} \\\\
(g\\,(q_{min} - z))\\,\\gamma & q < q_{min} \\\\
(g\\,(q_{max} - z))\\,\\gamma & q > q_{max}\\end{cases},\\quad
\\frac{\\partial L}{\\partial z} = \\begin{cases} 0 & q \\text{ in range} \\\\
((g \\cdot (-1))\\, s)\\,\\gamma & \\text{otherwise}\\end{cases}$$

summed over the tensor (per channel: over every axis but the channel's), $\\gamma$ = `grad_factor`,
products evaluated left to right in float32 as torch's kernel, and $\\partial L/\\partial x$ is
$g$ times the 0/1 mask (so $-0$ where a negative $g$ is masked, as torch).

Warning:
    torch's per-tensor op rounds the float zero point differently in its two passes: the forward
    uses $\\mathrm{rint}(z)$ (half to even), the backward $\\lfloor z + 0.5 \\rfloor$ (truncating
    $z + 0.5$; half up). Both are reproduced: with $z = 2.5$ the forward quantizes with 2 and the
    gradients are those of 3. The per-channel op uses `round` (half to even) in both passes.

    The element-wise scale and zero-point contributions equal torch's bit for bit; their sum is
    reduced in XLA's order, not torch's, so the summed gradients agree to float32 summation
    rounding (measured in the tests), not bitwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._numerics import (
    _channel_shape,
    _check_axis,
    _fake_quant_core,
    _mask_gradient,
)
from jaxopt_port.quantization._ranges import DTYPES

if TYPE_CHECKING:
    from jax.typing import ArrayLike

_F32 = jnp.float32


def _learnable_grads(x, g, scale, zp, quant_min, quant_max, grad_factor):
    """Element-wise (dx, dscale, dzero_point) of torch's learnable fake-quant backward kernel."""
    r = _exact.divide(_F32(1), scale)
    q = jnp.rint(_exact.fma(x, r, zp))
    below, above = q < quant_min, q > quant_max
    inside = ~(below | above)
    error = _exact.fma(jnp.clip(q, quant_min, quant_max) - zp, scale, -x)  # x_fq - x, fused
    zero = jnp.zeros_like(g)
    dx = _mask_gradient(g, inside)
    d_in = ((g * error) * r) * grad_factor
    d_out = jnp.where(below, g * (quant_min - zp), g * (quant_max - zp)) * grad_factor
    dscale = jnp.where(inside, d_in, d_out)
    dzp = jnp.where(inside, zero, ((g * _F32(-1)) * scale) * grad_factor)
    return dx, dscale, dzp


def _torch_sum(v, axes=None):
    """A sum that is $+0$ when zero, as torch's reductions (they start from $+0$; XLA drops a sum
    over a length-1 axis and keeps a $-0$)."""
    total = jnp.sum(v, axis=axes)
    return jnp.where(total == 0, jnp.zeros_like(total), total)


def _per_tensor_zero_points(zero_point, quant_min, quant_max):
    z = jnp.asarray(zero_point, _F32).reshape(-1)[0]
    forward = jnp.clip(jnp.rint(z), quant_min, quant_max)
    backward = jnp.trunc(jnp.clip(z + _F32(0.5), quant_min, quant_max))
    return forward, backward


@jax.custom_vjp
def _learnable_per_tensor(x, scale, zero_point, quant_min, quant_max, grad_factor):
    zf, _ = _per_tensor_zero_points(zero_point, quant_min, quant_max)
    return _fake_quant_core(x, scale.reshape(-1)[0], zf, quant_min, quant_max)[0]


def _lpt_fwd(x, scale, zero_point, quant_min, quant_max, grad_factor):
    y = _learnable_per_tensor(x, scale, zero_point, quant_min, quant_max, grad_factor)
    return y, (x, scale, zero_point, quant_min, quant_max, grad_factor)


def _lpt_bwd(res, g):
    x, scale, zero_point, quant_min, quant_max, grad_factor = res
    _, zb = _per_tensor_zero_points(zero_point, quant_min, quant_max)
    s = scale.reshape(-1)[0]
    dx, ds, dz = _learnable_grads(x, g, s, zb, quant_min, quant_max, grad_factor)
    ds = _torch_sum(ds).reshape(scale.shape)
    dz = _torch_sum(dz).reshape(jnp.shape(zero_point)).astype(jnp.result_type(zero_point))
    return (
        dx,
        ds,
        dz,
        jnp.zeros_like(quant_min),
        jnp.zeros_like(quant_max),
        jnp.zeros_like(grad_factor),
    )


_learnable_per_tensor.defvjp(_lpt_fwd, _lpt_bwd)


def fake_quantize_learnable_per_tensor_affine(
    x: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike,
    quant_min: int,
    quant_max: int,
    grad_factor: float = 1.0,
) -> jax.Array:
    """Fake quantization differentiable in `scale` and `zero_point`, as torch's
    `_fake_quantize_learnable_per_tensor_affine`.

    The gradients are given in this module's docstring (LSQ's for the scale, TQT's for the zero
    point); `grad_factor` scales both (LSQ suggests $1/\\sqrt{n\\,q_{max}}$).

    Args:
        x: Float array.
        scale: One-element float32 array (torch's `scale` parameter, shape `(1,)`).
        zero_point: One-element float array (a float zero point, rounded inside).
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        grad_factor: Multiplies the scale and zero-point gradients.

    Returns:
        The fake-quantized float32 array.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> f = lambda x, s, z: quantization.fake_quantize_learnable_per_tensor_affine(x, s, z, 0, 3).sum()
        >>> gx, gs, gz = jax.grad(f, argnums=(0, 1, 2))(jnp.array([0.2, 0.9, 5.0]), jnp.array([0.5]), jnp.array([0.0]))
        >>> gx, gs, gz
        (Array([1., 1., 0.], dtype=float32), Array([2.8], dtype=float32), Array([-0.5], dtype=float32))
    """
    x = jnp.asarray(x, _F32)
    scale = jnp.asarray(scale, _F32)
    zero_point = jnp.asarray(zero_point, _F32)
    return _learnable_per_tensor(
        x, scale, zero_point, _F32(quant_min), _F32(quant_max), _F32(grad_factor)
    )


def _per_channel_zero_points(zero_point, quant_min, quant_max, shape):
    return jnp.clip(jnp.rint(zero_point), quant_min, quant_max).reshape(shape)


def fake_quantize_learnable_per_channel_affine(
    x: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike,
    axis: int,
    quant_min: int,
    quant_max: int,
    grad_factor: float = 1.0,
) -> jax.Array:
    """Per-channel learnable fake quantization, torch's `_fake_quantize_learnable_per_channel_affine`.

    Per channel $c$ the per-tensor gradients of this module's docstring, summed over every axis
    but `axis`; the float zero points are rounded half to even and clamped in both passes.

    Args:
        x: Float array.
        scale: One float32 scale per channel.
        zero_point: One float zero point per channel.
        axis: The channel axis.
        quant_min: Lower integer bound.
        quant_max: Upper integer bound.
        grad_factor: Multiplies the scale and zero-point gradients.

    Returns:
        The fake-quantized float32 array.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> f = lambda s: quantization.fake_quantize_learnable_per_channel_affine(
        ...     jnp.array([[0.2, 5.0]]), s, jnp.array([0.0, 1.0]), 1, 0, 3).sum()
        >>> jax.grad(f)(jnp.array([0.5, 1.0]))
        Array([-0.4,  2. ], dtype=float32)
    """
    x = jnp.asarray(x, _F32)
    axis = _check_axis(x, axis)
    shape = _channel_shape(x.ndim, axis)
    reduce_axes = tuple(d for d in range(x.ndim) if d != axis)
    # NumPy scalars: constants in every trace (the custom rule is traced apart from the caller).
    qmin, qmax, gamma = np.float32(quant_min), np.float32(quant_max), np.float32(grad_factor)

    @jax.custom_vjp
    def f(x, scale, zero_point):
        z = _per_channel_zero_points(zero_point, qmin, qmax, shape)
        return _fake_quant_core(x, scale.reshape(shape), z, qmin, qmax)[0]

    def fwd(x, scale, zero_point):
        return f(x, scale, zero_point), (x, scale, zero_point)

    def bwd(res, g):
        x, scale, zero_point = res
        z = _per_channel_zero_points(zero_point, qmin, qmax, shape)
        dx, ds, dz = _learnable_grads(x, g, scale.reshape(shape), z, qmin, qmax, gamma)
        return (
            dx,
            _torch_sum(ds, reduce_axes).reshape(scale.shape),
            _torch_sum(dz, reduce_axes).reshape(zero_point.shape),
        )

    f.defvjp(fwd, bwd)
    return f(x, jnp.asarray(scale, _F32), jnp.asarray(zero_point, _F32))


def _assign_data(value, param):
    """torch's `param.data.copy_(value)` / `clamp_` / `zero_()`: the value changes, the gradient
    still reaches `param` unchanged (the value plus an exact zero that carries the gradient)."""
    return jax.lax.stop_gradient(value) + (param - jax.lax.stop_gradient(param))


class LearnableFakeQuantizeState(NamedTuple):
    """Non-trainable part of a learnable fake-quantizer: observer state and toggles (torch's
    `static_enabled`, `fake_quant_enabled`, `learning_enabled` buffers)."""

    observer: Any
    static_enabled: jnp.ndarray
    fake_quant_enabled: jnp.ndarray
    learning_enabled: jnp.ndarray


class LearnableFakeQuantize:
    """torch's `_LearnableFakeQuantize` in functional form: scale and zero point are trainable
    parameters kept by the caller, the observer and toggles in a state.

    ```python
    lfq = quantization.LearnableFakeQuantize(quantization.MovingAverageMinMaxObserver)
    qparams, state = lfq.init()                # {"scale": (1,), "zero_point": (1,)}
    y, qparams, state = lfq(qparams, state, x)  # torch: y = lfq(x)
    ```

    While `static_enabled` (initially on) the observer sees `x` and its qparams overwrite the
    parameters (as torch copies them into `scale.data`); otherwise the scale is clamped to the
    observer's eps. With fake quantization on, symmetric qschemes zero the zero point and `x` goes
    through [`fake_quantize_learnable_per_tensor_affine`][jaxopt_port.quantization.fake_quantize_learnable_per_tensor_affine]
    (per channel: `..._per_channel_affine`) with `grad_factor` $= 1/\\sqrt{n\\,q_{max}}$ when
    `use_grad_scaling`, else 1; gradients reach `x`, `scale` and `zero_point`. The call returns
    the parameters it used: carry them forward in place of the caller's (torch overwrites its
    parameters' data with the observer's values, the eps clamp and the symmetric zero point;
    as there, these overwrites pass gradients straight through). Gradients reach the parameters
    only while learning is enabled (torch's `requires_grad`).

    Args:
        observer: Observer class or `with_args` constructor.
        quant_min: Lower bound (0).
        quant_max: Upper bound (255).
        scale: Initial scale (1.0).
        zero_point: Initial float zero point (0.0).
        channel_len: Number of channels for per-channel parameters; -1 per tensor.
        use_grad_scaling: LSQ's gradient scaling.
        **observer_kwargs: The observer's keyword arguments.

    Raises:
        AssertionError: torch's messages for an empty range, a bad `channel_len` or bounds
            outside the dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxopt_port import quantization
        >>> lfq = quantization.LearnableFakeQuantize(quantization.MinMaxObserver)
        >>> qparams, state = lfq.init()
        >>> y, qparams, state = lfq(qparams, state, jnp.array([-1.0, 3.0]))
        >>> qparams["zero_point"]
        Array([64.], dtype=float32)
    """

    def __init__(
        self,
        observer: Callable[..., Any],
        quant_min: int = 0,
        quant_max: int = 255,
        scale: float = 1.0,
        zero_point: float = 0.0,
        channel_len: int = -1,
        use_grad_scaling: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        if quant_min >= quant_max:
            raise AssertionError("quant_min must be strictly less than quant_max.")
        if channel_len != -1 and not (isinstance(channel_len, int) and channel_len > 0):
            raise AssertionError("Channel size must be a positive integer.")
        self.quant_min, self.quant_max = quant_min, quant_max
        self.use_grad_scaling = use_grad_scaling
        self.channel_len = channel_len
        self.initial = (float(scale), float(zero_point))
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        _, lo, hi = DTYPES[obs.dtype]
        if lo > quant_min:
            raise AssertionError("quant_min out of bound")
        if quant_max > hi:
            raise AssertionError("quant_max out of bound")
        self.dtype, self.qscheme = obs.dtype, obs.qscheme
        self.ch_axis = getattr(obs, "ch_axis", -1)
        self.eps = obs.eps

    def init(self) -> tuple[dict[str, jax.Array], LearnableFakeQuantizeState]:
        """`(qparams, state)`: the trainable scale and zero point (float32, shape `(1,)` or
        `(channel_len,)`) and the observer state with every toggle on but learning."""
        n = 1 if self.channel_len == -1 else self.channel_len
        qparams = {
            "scale": jnp.full((n,), self.initial[0], _F32),
            "zero_point": jnp.full((n,), self.initial[1], _F32),
        }
        obs = self.activation_post_process
        obs_state = obs.init(self.channel_len) if self.channel_len != -1 else obs.init()
        on, off = jnp.array([1], jnp.uint8), jnp.array([0], jnp.uint8)
        return qparams, LearnableFakeQuantizeState(obs_state, on, on, off)

    @staticmethod
    def toggle_qparam_learning(
        state: LearnableFakeQuantizeState, enabled: bool = True
    ) -> LearnableFakeQuantizeState:
        """Let gradients reach the scale and zero point, or stop them (torch's
        `toggle_qparam_learning`, which sets `requires_grad`)."""
        return state._replace(learning_enabled=jnp.array([int(enabled)], jnp.uint8))

    @staticmethod
    def toggle_observer_update(
        state: LearnableFakeQuantizeState, enabled: bool = True
    ) -> LearnableFakeQuantizeState:
        """Let the observer overwrite the qparams at each call, or not (`static_enabled`)."""
        return state._replace(static_enabled=jnp.array([int(enabled)], jnp.uint8))

    @staticmethod
    def toggle_fake_quant(
        state: LearnableFakeQuantizeState, enabled: bool = True
    ) -> LearnableFakeQuantizeState:
        """Turn fake quantization on or off."""
        return state._replace(fake_quant_enabled=jnp.array([int(enabled)], jnp.uint8))

    @classmethod
    def enable_param_learning(cls, state: LearnableFakeQuantizeState) -> LearnableFakeQuantizeState:
        """Learn the qparams: learning and fake quantization on, observer updates off."""
        state = cls.toggle_qparam_learning(state, True)
        return cls.toggle_observer_update(cls.toggle_fake_quant(state, True), False)

    @classmethod
    def enable_static_estimate(
        cls, state: LearnableFakeQuantizeState
    ) -> LearnableFakeQuantizeState:
        """Observer-driven qparams with fake quantization (learning off)."""
        state = cls.toggle_qparam_learning(state, False)
        return cls.toggle_observer_update(cls.toggle_fake_quant(state, True), True)

    @classmethod
    def enable_static_observation(
        cls, state: LearnableFakeQuantizeState
    ) -> LearnableFakeQuantizeState:
        """Observe only: observer updates on, fake quantization and learning off."""
        state = cls.toggle_qparam_learning(state, False)
        return cls.toggle_observer_update(cls.toggle_fake_quant(state, False), True)

    def __call__(
        self, qparams: dict[str, jax.Array], state: LearnableFakeQuantizeState, x: ArrayLike
    ) -> tuple[jax.Array, dict[str, jax.Array], LearnableFakeQuantizeState]:
        """Returns `(y, qparams_used, new_state)`."""
        x = jnp.asarray(x, _F32)
        obs = self.activation_post_process
        static = state.static_enabled[0] == 1
        obs_state = obs.update(state.observer, jax.lax.stop_gradient(x))
        obs_state = jax.tree_util.tree_map(
            lambda new, old: (
                new if jnp.shape(new) != jnp.shape(old) else jnp.where(static, new, old)
            ),
            obs_state,
            state.observer,
        )
        s_obs, z_obs = obs.calculate_qparams(obs_state)
        learning = state.learning_enabled[0] == 1
        qparams = {k: jnp.where(learning, v, jax.lax.stop_gradient(v)) for k, v in qparams.items()}
        obs_scale = jnp.broadcast_to(s_obs, qparams["scale"].shape)
        obs_zp = jnp.broadcast_to(z_obs, qparams["zero_point"].shape).astype(_F32)
        scale = _assign_data(
            jnp.where(static, obs_scale, jnp.maximum(qparams["scale"], _F32(self.eps))),
            qparams["scale"],
        )
        zero_point = _assign_data(
            jnp.where(static, obs_zp, qparams["zero_point"]), qparams["zero_point"]
        )
        if self.qscheme in ("per_tensor_symmetric", "per_channel_symmetric"):
            zeroed = jnp.where(state.fake_quant_enabled[0] == 1, 0.0, zero_point)
            zero_point = _assign_data(zeroed, qparams["zero_point"])
        gamma = 1.0 / (x.size * self.quant_max) ** 0.5 if self.use_grad_scaling else 1.0
        if self.qscheme in ("per_channel_symmetric", "per_channel_affine"):
            y = fake_quantize_learnable_per_channel_affine(
                x, scale, zero_point, self.ch_axis, self.quant_min, self.quant_max, gamma
            )
        else:
            y = fake_quantize_learnable_per_tensor_affine(
                x, scale, zero_point, self.quant_min, self.quant_max, gamma
            )
        y = jnp.where(state.fake_quant_enabled[0] == 1, y, x)
        used = {"scale": scale, "zero_point": zero_point}
        return y, used, state._replace(observer=obs_state)
