"""Dynamically quantized LSTM and GRU layers (torch's `torch.ao.nn.quantized.dynamic.LSTM/GRU`).

torch's dynamic LSTM/GRU on CPU (`torch.quantized_lstm` / `torch.quantized_gru`,
`use_dynamic=True`) keeps two int8 weight matrices per layer, each quantized per tensor with all
the gates stacked, and runs every product through the dynamic int8 Linear (fbgemm, 7-bit
activations from the min and max of the whole input of that call):

- the input projection of the *whole sequence* in one call (so the input's qparams come from the
  whole `(time, batch, features)` input, not from each step), its bias $b_{ih}$ included;
- per step, the hidden projection of the carry $h_{t-1}$ (qparams from that step's $h$), its bias
  $b_{hh}$ included;
- the gates in float32, in torch's order and formulas.

The int8 products, the requantization and every addition and product follow torch's kernels
operation for operation; what is not bitwise is the elementwise `sigmoid`/`tanh`: torch's CPU
kernels use SLEEF's vectorised `exp`/`tanh` (AVX2/AVX-512), XLA its own approximations, and the
two differ by one ulp on about 0.4 % (`sigmoid`) and 59 % (`tanh`) of float32 inputs. So a
sequence matches torch to a few float32 ulps, and a later step's dynamic qparams, computed from
a carry that is an ulp off, can move one 7-bit code of the hidden input; tolerances are measured in
the tests and docs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_port.quantization import _exact
from jaxopt_port.quantization._int8 import (
    QuantizedArray,
    QuantizedVariable,
    linear_dynamic,
    quantize_weight,
)
from jaxopt_port.quantization._qconfig import QConfig, default_weight_observer

_F32 = jnp.float32

#: The cells `quantize_dynamic` converts, with the number of gates (torch's `mode`).
_GATES = {nnx.LSTMCell: 4, nnx.OptimizedLSTMCell: 4, nnx.GRUCell: 3}


def _mul(a, b):
    """A float32 product that an addition after it cannot fuse into a multiply-add."""
    return _exact.no_contract(a * b)


def _lstm_cell(gates: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch's LSTM cell from its pre-activations `(..., 4H)` in gate order i, f, g, o.

    $c' = \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g)$, $h' = \\sigma(o) \\odot \\tanh(c')$,
    each product rounded before the sum (torch's unfused kernel). Returns `(c', h')`.
    """
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = _mul(jax.nn.sigmoid(f), c) + _mul(jax.nn.sigmoid(i), jnp.tanh(g))
    return c_new, jax.nn.sigmoid(o) * jnp.tanh(c_new)


def _gru_cell(input_gates: jax.Array, hidden_gates: jax.Array, h: jax.Array) -> jax.Array:
    """torch's GRU cell from the input and hidden projections `(..., 3H)` (gates r, z, n).

    $r = \\sigma(W_{hr}h + W_{ir}x)$, $z = \\sigma(W_{hz}h + W_{iz}x)$,
    $n = \\tanh(W_{in}x + (W_{hn}h) \\odot r)$, $h' = (h - n) \\odot z + n$ (torch's form of
    $(1 - z) \\odot n + z \\odot h$, the one `nnx.GRUCell` computes; equal in exact arithmetic).
    """
    ir, iz, in_ = jnp.split(input_gates, 3, axis=-1)
    hr, hz, hn = jnp.split(hidden_gates, 3, axis=-1)
    r = jax.nn.sigmoid(hr + ir)
    z = jax.nn.sigmoid(hz + iz)
    n = jnp.tanh(in_ + _mul(hn, r))
    return _mul(h - n, z) + n


def _cell_weights(cell: nnx.Module) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An NNX cell's `(input kernel (I, G·H), hidden kernel (H, G·H), bias (G·H,))`, gates in
    torch's order; the cell's one bias is torch's $b_{ih} + b_{hh}$."""
    if isinstance(cell, nnx.LSTMCell):
        ins = [cell.ii, cell.if_, cell.ig, cell.io]
        hid = [cell.hi, cell.hf, cell.hg, cell.ho]
        return (
            jnp.concatenate([m.kernel[...] for m in ins], axis=-1),
            jnp.concatenate([m.kernel[...] for m in hid], axis=-1),
            jnp.concatenate([m.bias[...] for m in hid]),
        )
    if isinstance(cell, nnx.OptimizedLSTMCell):
        return cell.dense_i.kernel[...], cell.dense_h.kernel[...], cell.dense_h.bias[...]
    return cell.dense_i.kernel[...], cell.dense_h.kernel[...], cell.dense_i.bias[...]


class DynamicQuantizedRNN(nnx.Module):
    """An LSTM or GRU layer with int8 weights and activations quantized at every product
    (torch's `torch.ao.nn.quantized.dynamic.LSTM` / `GRU`, one layer, one direction).

    Called like the `nnx.RNN` it replaces: inputs `(batch, time, features)` (or time first with
    `time_major`), outputs the hidden state of every step; `return_carry=True` returns
    `(carry, outputs)` with the carry as the NNX cell's (`(c, h)` for an LSTM, `h` for a GRU).

    Args:
        kind: `"lstm"` or `"gru"`.
        weight_ih: The quantized input kernel `(in, G·H)`, gates stacked in torch's order
            (LSTM i, f, g, o; GRU r, z, n).
        weight_hh: The quantized hidden kernel `(H, G·H)`.
        bias_ih: Float bias of the input projection `(G·H,)` (torch's `bias_ih_l0`).
        bias_hh: Float bias of the hidden projection `(G·H,)` (torch's `bias_hh_l0`).
        time_major: Inputs are `(time, batch, features)`.
        return_carry: Return `(carry, outputs)` by default.
        reverse: Run from the last step to the first (the backward half of a bidirectional
            layer, `nnx.Bidirectional`; torch's `bidirectional=True`).
        keep_order: With `reverse`, return the outputs in the input's time order.
        reduce_range: 7-bit activations (torch's x86 and fbgemm engines: True).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxopt_port import quantization
        >>> rnn = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
        >>> qrnn = quantization.DynamicQuantizedRNN.from_float(rnn)
        >>> qrnn.kind, qrnn(jnp.ones((2, 5, 3))).shape
        ('lstm', (2, 5, 4))
    """

    def __init__(
        self,
        kind: str,
        weight_ih: QuantizedArray,
        weight_hh: QuantizedArray,
        bias_ih: jax.Array,
        bias_hh: jax.Array,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        reduce_range: bool = True,
    ) -> None:
        gates = {"lstm": 4, "gru": 3}.get(kind)
        if gates is None:
            raise ValueError(f"kind must be 'lstm' or 'gru'; got {kind!r}")
        self.kind = kind
        self.input_size, width = weight_ih.values.shape
        self.hidden_size = width // gates
        expected = {
            "weight_hh": (self.hidden_size, width),
            "bias_ih": (width,),
            "bias_hh": (width,),
        }
        for name, value in (
            ("weight_hh", weight_hh.values),
            ("bias_ih", bias_ih),
            ("bias_hh", bias_hh),
        ):
            if width % gates or tuple(jnp.shape(value)) != expected[name]:
                raise ValueError(
                    f"{name} has shape {tuple(jnp.shape(value))}; a {kind.upper()} with "
                    f"weight_ih of shape {(self.input_size, width)} needs {expected[name]} "
                    f"({gates} gates of {width // gates})"
                )
        self.weight_ih = QuantizedVariable(weight_ih)
        self.weight_hh = QuantizedVariable(weight_hh)
        self.bias_ih = nnx.Param(jnp.asarray(bias_ih, _F32))
        self.bias_hh = nnx.Param(jnp.asarray(bias_hh, _F32))
        self.time_major, self.return_carry, self.reduce_range = (
            time_major,
            return_carry,
            reduce_range,
        )
        self.reverse, self.keep_order = reverse, keep_order

    @classmethod
    def from_float(cls, module: nnx.RNN, qconfig: QConfig | None = None) -> DynamicQuantizedRNN:
        """Quantize an `nnx.RNN` over an `LSTMCell`, `OptimizedLSTMCell` or `GRUCell`.

        The stacked kernels are quantized with `qconfig.weight` (torch's default: symmetric qint8
        per tensor); the cell's one bias becomes $b_{ih}$ and $b_{hh} = 0$ (the split torch's
        float twin of the cell has after `interop.weights_to_torch`).

        Raises:
            NotImplementedError: another cell (torch's dynamic RNNs are LSTM and GRU).
        """
        observer = default_weight_observer if qconfig is None else qconfig.weight
        cell = module.cell
        if not cls.converts(module):
            raise NotImplementedError(
                f"quantize_dynamic converts nnx.RNN over LSTMCell, OptimizedLSTMCell or GRUCell "
                f"(torch's dynamic LSTM and GRU); this one runs a {type(cell).__name__}"
            )
        w_ih, w_hh, bias = _cell_weights(cell)
        return cls(
            "lstm" if _GATES[type(cell)] == 4 else "gru",
            quantize_weight(w_ih, observer),
            quantize_weight(w_hh, observer),
            bias,
            jnp.zeros_like(bias),
            time_major=module.time_major,
            return_carry=module.return_carry,
            reverse=module.reverse,
            keep_order=module.keep_order,
        )

    @staticmethod
    def converts(module: nnx.RNN) -> bool:
        """Whether `from_float` converts `module` (its cell is an LSTM or GRU cell)."""
        return type(module.cell) in _GATES

    def _zero_carry(self, batch: int) -> Any:
        """Zeros, as torch's default `hx` and the NNX cell's `initialize_carry`."""
        h = jnp.zeros((batch, self.hidden_size), _F32)
        return (h, h) if self.kind == "lstm" else h

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        seq_lengths: jax.Array | None = None,
        rngs: Any = None,
    ) -> Any:
        """Run the layer over `inputs`; the keywords are `nnx.RNN.__call__`'s (`rngs` unused)."""
        if seq_lengths is not None:
            raise NotImplementedError(
                "seq_lengths (padded sequences of different lengths) is not supported by the "
                "dynamically quantized RNN; run sequences of one length per call"
            )
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        x = jnp.asarray(inputs, _F32)
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs must be (batch, time, {self.input_size}) "
                f"({'time, batch' if time_major else 'batch, time'} first); got shape {x.shape}"
            )
        x = x if time_major else jnp.swapaxes(x, 0, 1)
        carry = self._zero_carry(x.shape[1]) if initial_carry is None else initial_carry
        carry, outputs = _run_sequence(
            self.kind, bool(self.reduce_range), bool(reverse), bool(keep_order),
            x, carry, self.weight_ih.get_value(), self.bias_ih[...],
            self.weight_hh.get_value(), self.bias_hh[...],
        )  # fmt: skip
        outputs = outputs if time_major else jnp.swapaxes(outputs, 0, 1)
        return (carry, outputs) if return_carry else outputs


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _run_sequence(kind, reduce_range, reverse, keep_order, x, carry, w_ih, b_ih, w_hh, b_hh):
    """The layer over a time-major sequence: `(final carry, outputs)`, one compiled program per
    shape and option (eagerly, `lax.scan` would trace its body again at every call)."""
    # The whole sequence's input projection in one call: one set of activation qparams.
    projected = linear_dynamic(x, w_ih, b_ih, reduce_range)

    def step(carry, input_gates):
        h = carry[1] if kind == "lstm" else carry
        hidden_gates = linear_dynamic(h, w_hh, b_hh, reduce_range)
        if kind == "lstm":
            c, h = _lstm_cell(hidden_gates + input_gates, carry[0])
            return (c, h), h
        h = _gru_cell(input_gates, hidden_gates, h)
        return h, h

    carry, outputs = jax.lax.scan(step, carry, projected[::-1] if reverse else projected)
    return carry, outputs[::-1] if reverse and keep_order else outputs
