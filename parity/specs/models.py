"""Twin models: each architecture written once in torch and once in Flax NNX.

The NNX twin's attribute names are the torch module names, so the weights move with
:func:`jaxopt_port.interop.weights_from_torch` (never by hand), and both twins take the same
input arrays (the NNX CNN takes torch's NCHW images and transposes them itself). Every choice
that would make the two compute different functions is pinned here:

- GELU: torch's ``nn.GELU()`` is the exact erf form, so NNX uses ``jax.nn.gelu(approximate=False)``.
- LayerNorm: torch's ``eps=1e-5`` (Flax's default is 1e-6); two-pass variance on both sides
  (``use_fast_variance=False``; Flax's fast ``E[x²] - E[x]²`` loses digits in float64).
- BatchNorm in training mode: Flax ``momentum = 1 - torch momentum``
  (:func:`jaxopt_port.interop.flax_batchnorm_momentum`), two-pass variance. Both normalize with
  the biased batch variance, so outputs and gradients agree; the running variance does not
  (torch accumulates the unbiased batch variance, Flax the biased one: see
  ``jaxopt_port/interop/weights.py``), and it is reported, not judged.
- Attention: no mask, no dropout, ``need_weights=False`` in torch; in NNX an ``attention_fn``
  computing ``softmax(q kᵀ/√d) v`` in the inputs' dtype (the default goes through
  ``jax.nn.dot_product_attention``, whose softmax is float32 even for float64 inputs).
- LSTM: torch's gate order and activations are the NNX ``LSTMCell``'s; the carry starts at zero
  on both sides.

Sizes are small on purpose (a training step takes milliseconds on a CPU core).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import torch
from flax import nnx
from torch import nn

from jaxopt_port import interop

__all__ = ["EMBEDDING_MODELS", "MODELS", "NUM_CLASSES", "SEQUENCE", "VOCAB", "make_twins"]

#: The twin models, by name.
MODELS = ("mlp", "cnn", "transformer", "lstm")
#: The models with a token embedding, which ``make_twins(..., sparse=True)`` gives sparse gradients.
EMBEDDING_MODELS = ("transformer",)
#: The transformer's synthetic task (:func:`parity.specs.data.batches`): tokens in ``range(VOCAB)``,
#: sequences of ``SEQUENCE``.
VOCAB, SEQUENCE = 32, 8
#: Classes per model (digits: 10; the token task: 4).
NUM_CLASSES = {"mlp": 10, "cnn": 10, "transformer": 4, "lstm": 10}

_BN_MOMENTUM, _LN_EPS, _BN_EPS = 0.1, 1e-5, 1e-5


# ------------------------------------------------------------------------------------------------
# MLP: digits 64 -> 32 -> 10


class TorchMLP(nn.Module):
    """Linear(64, 32) - tanh - Linear(32, 10) on flattened digits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class NnxMLP(nnx.Module):
    """:class:`TorchMLP` in NNX."""

    def __init__(self, dtype: Any, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(64, 32, param_dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(32, 10, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jnp.tanh(self.fc1(x)))


# ------------------------------------------------------------------------------------------------
# CNN: digits as 1x8x8 images


class TorchCNN(nn.Module):
    """Conv2d(1, 8, 3, padding=1, bias=False) - BatchNorm2d (training mode) - ReLU - MaxPool2d(2)
    - Linear(8*4*4, 10), on ``(batch, 1, 8, 8)`` images.

    The convolution has no bias, as usual before BatchNorm: the batch mean removes it, so its
    gradient is zero up to rounding, which Adam-like optimizers turn into framework-dependent
    updates (measured 2.9e-9 after 20 Adam steps with a bias).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.flatten(1))


class NnxCNN(nnx.Module):
    """:class:`TorchCNN` in NNX: takes NCHW like torch, convolves in NHWC, and flattens in torch's
    (C, H, W) order so that the Linear layer's weights mean the same."""

    def __init__(self, dtype: Any, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(
            1, 8, (3, 3), padding=[(1, 1)] * 2, use_bias=False, param_dtype=dtype, rngs=rngs
        )
        self.bn = nnx.BatchNorm(
            8,
            momentum=interop.flax_batchnorm_momentum(_BN_MOMENTUM),
            epsilon=_BN_EPS,
            use_running_average=False,
            use_fast_variance=False,
            param_dtype=dtype,
            rngs=rngs,
        )
        self.fc = nnx.Linear(8 * 4 * 4, 10, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv(x.transpose(0, 2, 3, 1))
        h = nnx.max_pool(jax.nn.relu(self.bn(h)), (2, 2), strides=(2, 2))
        return self.fc(h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1))


# ------------------------------------------------------------------------------------------------
# Transformer encoder block on token sequences

_WIDTH, _HEADS, _MLP = 16, 2, 32


class TorchTransformer(nn.Module):
    """Token + learned positional embedding, a pre-norm encoder block (LayerNorm,
    MultiheadAttention with 2 heads, LayerNorm, Linear-GELU-Linear, residuals), mean-pool, Linear
    head. ``sparse=True`` gives the token embedding sparse gradients (for SparseAdam).

    The attention has no biases: the key bias adds ``q·b_k`` to every logit of a query, which the
    softmax ignores, so its gradient is zero up to rounding (~1e-18) and Adam-like optimizers
    divide that noise by ``√v + ε`` into updates ~1e-12 that differ between frameworks (measured
    1.3e-12 after 20 Adam steps): a parameter with no signal cannot be compared.
    """

    def __init__(self, sparse: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, _WIDTH, sparse=sparse)
        self.pos = nn.Embedding(SEQUENCE, _WIDTH)
        self.norm1 = nn.LayerNorm(_WIDTH, eps=_LN_EPS)
        self.attn = nn.MultiheadAttention(_WIDTH, _HEADS, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(_WIDTH, eps=_LN_EPS)
        self.fc1 = nn.Linear(_WIDTH, _MLP)
        self.fc2 = nn.Linear(_MLP, _WIDTH)
        self.head = nn.Linear(_WIDTH, NUM_CLASSES["transformer"])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos.weight
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def attention(query: jax.Array, key: jax.Array, value: jax.Array, *args: Any, **kwargs: Any):
    """``softmax(q kᵀ / √d) v`` in the inputs' dtype (an NNX ``attention_fn``; no mask, no
    dropout: the extra arguments NNX passes are ignored)."""
    del args, kwargs
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key) / math.sqrt(query.shape[-1])
    return jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), value)


class NnxTransformer(nnx.Module):
    """:class:`TorchTransformer` in NNX."""

    def __init__(self, dtype: Any, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(VOCAB, _WIDTH, param_dtype=dtype, rngs=rngs)
        self.pos = nnx.Embed(SEQUENCE, _WIDTH, param_dtype=dtype, rngs=rngs)
        norm = dict(epsilon=_LN_EPS, use_fast_variance=False, param_dtype=dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(_WIDTH, **norm)
        self.attn = nnx.MultiHeadAttention(
            _HEADS, _WIDTH, _WIDTH, _WIDTH, attention_fn=attention, decode=False,
            deterministic=True, keep_rngs=False, use_bias=False, param_dtype=dtype, rngs=rngs,
        )  # fmt: skip
        self.norm2 = nnx.LayerNorm(_WIDTH, **norm)
        self.fc1 = nnx.Linear(_WIDTH, _MLP, param_dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(_MLP, _WIDTH, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(_WIDTH, NUM_CLASSES["transformer"], param_dtype=dtype, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens) + self.pos.embedding[...]
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))
        return self.head(x.mean(1))


# ------------------------------------------------------------------------------------------------
# LSTM: digits rows as a sequence of 8 steps with 8 features

_HIDDEN = 32


class TorchLSTM(nn.Module):
    """Linear(8, 32) input projection, LSTM(32, 32, batch_first), Linear head on the last hidden
    state, on ``(batch, 8 steps, 8 features)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, _HIDDEN)
        self.lstm = nn.LSTM(_HIDDEN, _HIDDEN, batch_first=True)
        self.head = nn.Linear(_HIDDEN, NUM_CLASSES["lstm"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.inp(x))
        return self.head(out[:, -1])


class NnxLSTM(nnx.Module):
    """:class:`TorchLSTM` in NNX (``nnx.RNN`` over an ``nnx.LSTMCell``, zero initial carry)."""

    def __init__(self, dtype: Any, rngs: nnx.Rngs) -> None:
        self.inp = nnx.Linear(8, _HIDDEN, param_dtype=dtype, rngs=rngs)
        self.lstm = nnx.RNN(
            nnx.LSTMCell(_HIDDEN, _HIDDEN, param_dtype=dtype, rngs=rngs), rngs=False
        )
        self.head = nnx.Linear(_HIDDEN, NUM_CLASSES["lstm"], param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.inp(x)
        zeros = jnp.zeros((x.shape[0], _HIDDEN), h.dtype)
        out = self.lstm(h, initial_carry=(zeros, zeros))
        return self.head(out[:, -1])


# ------------------------------------------------------------------------------------------------

_TWINS: dict[str, tuple[type[nn.Module], type[nnx.Module]]] = {
    "mlp": (TorchMLP, NnxMLP),
    "cnn": (TorchCNN, NnxCNN),
    "transformer": (TorchTransformer, NnxTransformer),
    "lstm": (TorchLSTM, NnxLSTM),
}


def make_twins(
    name: str, dtype: str = "float64", seed: int = 0, *, sparse: bool = False
) -> tuple[nn.Module, nnx.Module]:
    """A torch model with torch's default initialization (seeded) and its NNX twin holding the
    same weights, moved with :func:`jaxopt_port.interop.weights_from_torch`.

    Args:
      name: one of :data:`MODELS`.
      dtype: ``"float64"`` or ``"float32"``: both models' parameter dtype. For float64 call this
        (and use the NNX model) under ``jax.enable_x64(True)``, or JAX keeps float32.
      seed: torch's initialization seed (the global torch RNG is left as it was). torch
        initializes in float32 and the model is cast, so both dtypes start from the same weights.
      sparse: give the transformer's token embedding sparse gradients (``nn.Embedding(...,
        sparse=True)``, what SparseAdam needs); other models have no embedding.

    Returns:
      ``(torch_module, nnx_module)``, both in training mode (the CNN's BatchNorm uses batch
      statistics and updates its running ones).

    Example:
      >>> import jax
      >>> with jax.enable_x64(True):
      ...     torch_model, nnx_model = make_twins("mlp")
    """
    if name not in _TWINS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    if sparse and name not in EMBEDDING_MODELS:
        raise ValueError(f"the {name} model has no embedding to make sparse")
    torch_cls, nnx_cls = _TWINS[name]
    previous = torch.get_default_dtype()
    # float32 whatever the caller's default: a float64 default draws other initial weights
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch_model = torch_cls(sparse=True) if sparse else torch_cls()
    finally:
        torch.set_default_dtype(previous)
    torch_model = torch_model.to(getattr(torch, dtype)).train()
    # abstract: the NNX initializers are skipped, every value comes from torch
    nnx_model = nnx.eval_shape(lambda: nnx_cls(jnp.dtype(dtype), nnx.Rngs(0)))
    interop.weights_from_torch(nnx_model, torch_model.state_dict())
    return torch_model, nnx_model
