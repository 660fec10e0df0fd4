"""Quantization-aware training of the weights as one Optax gradient transformation.

torch's QAT module fake-quantizes its weight at every forward, observing the weight first. Here
the observer state lives in the optimizer state: add one entry *last* in the chain and make one
call in the loss,

```python
tx = optax.chain(optim.sgd(lr=0.1), quantization.fake_quantize_weights())
opt_state = tx.init(params)                  # observes the initial weights

def loss_fn(params, opt_state, batch):
    qparams = quantization.fake_quantized_params(params, opt_state)   # the one call
    return loss(model_apply(qparams, batch))
```

`update` observes the weights the step produces, so every forward fake-quantizes the current
weights with qparams computed from them, as torch's forward does (one forward per step).
Gradients reach the float weights through the straight-through estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_port.quantization._fake_quantize import FakeQuantize, FakeQuantizeState
from jaxopt_port.quantization._qconfig import default_weight_fake_quant


class FakeQuantizeWeightsState(NamedTuple):
    """One `FakeQuantizeState` per quantized weight; `optax.MaskedNode()` elsewhere."""

    fake_quant: Any


def _is_state(x) -> bool:
    return isinstance(x, (FakeQuantizeState, optax.MaskedNode))


def _selected(params, mask):
    if mask is None:
        return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)
    return mask(params) if callable(mask) else mask


def fake_quantize_weights(
    weight: Callable[[], FakeQuantize] = default_weight_fake_quant,
    *,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """Keep a fake-quantizer per weight in the optimizer state (QAT's weight side).

    Args:
        weight: A fake-quantize constructor, as a `QConfig`'s `weight` (torch's
            `default_weight_fake_quant` by default; per-channel ones quantize along their
            `ch_axis`, 0 being torch's output-channel axis: for Flax `(in, out)` kernels use
            `ch_axis=-1`).
        mask: Which leaves to quantize: a pytree of booleans like the params, or a function of the
            params returning one; default every leaf with 2 or more dimensions (weights, not
            biases).

    Returns:
        An `optax.GradientTransformation` that passes updates through unchanged and observes the
            updated weights. Put it last in `optax.chain`.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from jaxopt_port import optim, quantization
        >>> params = {"w": jnp.array([[0.5, -1.0], [0.25, 2.0]]), "b": jnp.zeros(2)}
        >>> tx = optax.chain(optim.sgd(lr=0.1), quantization.fake_quantize_weights())
        >>> opt_state = tx.init(params)
        >>> quantization.fake_quantized_params(params, opt_state)["w"]
        Array([[ 0.5019608, -1.0039216],
               [ 0.2509804,  1.992157 ]], dtype=float32)
    """

    def fq_for(p, selected):
        if not selected:
            return None
        fq = weight()
        n = p.shape[fq.ch_axis] if fq.is_per_channel else None
        return fq, n

    def observe_all(params, states, selected):
        def one(p, st, sel):
            if not sel:
                return st
            fq, _ = fq_for(p, sel)
            return fq(st, p)[1]

        return jax.tree_util.tree_map(one, params, states, selected, is_leaf=_is_state)

    def init(params):
        selected = _selected(params, mask)

        def one(p, sel):
            if not sel:
                return optax.MaskedNode()
            fq, n = fq_for(p, sel)
            return fq.init(n)

        states = jax.tree_util.tree_map(one, params, selected)
        return FakeQuantizeWeightsState(observe_all(params, states, selected))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "fake_quantize_weights needs the params: call update(updates, state, params)"
            )
        new_params = optax.apply_updates(params, updates)
        selected = _selected(params, mask)
        return updates, FakeQuantizeWeightsState(
            observe_all(new_params, state.fake_quant, selected)
        )

    return optax.GradientTransformation(init, update)


def _find(opt_state):
    found = []

    def visit(node):
        if isinstance(node, FakeQuantizeWeightsState):
            found.append(node)
            return
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(opt_state)
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one fake_quantize_weights state in the optimizer state, found "
            f"{len(found)}"
        )
    return found[0]


def fake_quantized_params(
    params: Any,
    opt_state: optax.OptState,
    weight: Callable[[], FakeQuantize] = default_weight_fake_quant,
) -> Any:
    """The params with every observed weight fake-quantized by its state's qparams.

    Args:
        params: The float params.
        opt_state: The optimizer state holding one `fake_quantize_weights` state.
        weight: The same constructor given to
            [`fake_quantize_weights`][jaxopt_port.quantization.fake_quantize_weights].

    Returns:
        Params of the same structure; gradients flow to the float weights straight through.
    """
    state = _find(opt_state)
    fq = weight()

    def one(p, st):
        if isinstance(st, optax.MaskedNode):
            return p
        return fq.fake_quantize(st, p)

    return jax.tree_util.tree_map(one, params, state.fake_quant, is_leaf=_is_state)
