"""Model weights between a PyTorch `nn.Module` state dict and a Flax NNX module.

[`weights_from_torch`][jaxopt_port.interop.weights_from_torch] fills an existing NNX module
(parameters and batch statistics) from `torch_module.state_dict()`;
[`weights_to_torch`][jaxopt_port.interop.weights_to_torch] goes back, to the tensors
`torch_module.load_state_dict(...)` takes
([`weights_to_numpy`][jaxopt_port.interop.weights_to_numpy]: the same as NumPy arrays, without
torch). Reading never imports torch: a state dict is any mapping of name -> array-like (torch
tensors are detached and moved to the CPU, recognized by their `detach`/`cpu` methods).

**Key correspondence**

The NNX attribute path joined with `"."` is the torch module prefix: torch
`self.fc1 = nn.Linear(...)` is NNX `self.fc1 = nnx.Linear(...)`, and `fc1.weight` is `fc1.kernel`.
List indices are path elements, so `nn.Sequential`/`nn.ModuleList` index `0` is index `0` of an
`nnx.List` (or an `nnx.data([...])` list, `nnx.Dict` key, ...); an `nnx.Sequential` contributes no
`layers` element, so `nnx.Sequential(a, b)` has torch's `nn.Sequential(a, b)` keys `0.*` and `1.*`.
A list whose elements are all `nnx.RNN` or `nnx.Bidirectional` is one multi-layer torch RNN
(`weight_ih_l{k}`, `..._l{k}_reverse`). Any other `nnx.Param`/`nnx.BatchStat` (a custom
`nn.Parameter` or buffer) maps to the key of its path unchanged. RNG state, caches and other
variables are not part of the state dict. A module reachable under two paths (weight tying) is
visited once, under its first path. The module may be abstract
(`nnx.eval_shape(lambda: Model(...))`, which skips the random initializers): loading makes its
parameters and batch statistics concrete (RNG state, as in `nnx.RNN` or dropout, stays abstract).
Wrapped torch modules: `DistributedDataParallel`/`DataParallel` prefix every key with `module.` and
`torch.compile` with `_orig_mod.`. When *every* key carries such a prefix and more keys match the
NNX module without it, [`weights_from_torch`][jaxopt_port.interop.weights_from_torch] removes it
(nested ones too: `_orig_mod.module.` from a compiled DDP model), as
`torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` would; a model whose attribute
really is `module` keeps its keys. [`weights_to_torch`][jaxopt_port.interop.weights_to_torch] writes
the unwrapped model's keys (load them with `ddp_model.module.load_state_dict(...)`).

**Layouts (torch -> NNX; every conversion is a permutation, reshape or flip, so it is exact)**

========================  ======================================  =============================
torch                     torch tensor                            NNX variable
========================  ======================================  =============================
Linear                    weight (out, in)                        Linear kernel (in, out)
Conv1d/2d/3d              weight (out, in/groups, *k)             Conv kernel (*k, in/groups, out)
ConvTranspose1d/2d/3d     weight (in, out, *k)                    ConvTranspose kernel
                                                                  (*k, out, in) if
                                                                  `transpose_kernel=True`, else
                                                                  (*k, in, out) spatially flipped
BatchNorm1d/2d/3d         weight, bias, running_mean/var          scale, bias, mean, var
LayerNorm, RMSNorm,       weight, bias                            scale, bias
GroupNorm
Embedding                 weight (num, dim)                       embedding (num, dim)
MultiheadAttention        in_proj_weight (3E, E) = [q; k; v]      query/key/value kernel
                          (or q/k/v_proj_weight), in_proj_bias,   (E_in, heads, head_dim), bias
                          out_proj.weight (E, E), out_proj.bias   (heads, head_dim); out kernel
                                                                  (heads, head_dim, E), bias (E,)
LSTM (gates i, f, g, o)   weight_ih_l0 (4H, I), weight_hh_l0      RNN(LSTMCell): ii/if_/ig/io
                          (4H, H), bias_ih_l0, bias_hh_l0 (4H,)   kernels (I, H), hi/hf/hg/ho
                                                                  kernels (H, H), biases (H,);
                                                                  RNN(OptimizedLSTMCell):
                                                                  dense_i/dense_h (I|H, 4H)
GRU (gates r, z, n)       same with 3H                            RNN(GRUCell): dense_i (I, 3H)
                                                                  + bias, dense_h (H, 3H)
RNN (tanh or relu)        same with H                             RNN(SimpleCell): dense_i + bias,
                                                                  dense_h
========================  ======================================  =============================

**Divergences (read before trusting outputs)**

- Activations: torch is channels-first (NCHW), Flax channels-last (NHWC); transpose inputs and
  outputs, weights are handled here. Build the NNX layer with torch's hyperparameters: Conv
  `padding=p` is `[(p, p)] * n` (`"same"`/`"valid"` are `"SAME"`/`"VALID"`; only
  `padding_mode="zeros"` has a Flax counterpart); ConvTranspose `padding=p,
  output_padding=q, dilation=d` is `[(d*(k-1)-p, d*(k-1)-p+q)] * n`; norm `eps` defaults
  differ (torch LayerNorm/GroupNorm 1e-5 and RMSNorm `finfo(dtype).eps`; Flax
  LayerNorm/RMSNorm/GroupNorm 1e-6), pass `epsilon`.
- BatchNorm momentum: torch `running = (1-m)*running + m*batch`, Flax
  `running = m'*running + (1-m')*batch`, so `m' = 1 - m`
  ([`flax_batchnorm_momentum`][jaxopt_port.interop.flax_batchnorm_momentum]). torch's
  `momentum=None` (cumulative average) has no Flax counterpart.
- BatchNorm running variance in training mode: torch adds the *unbiased* batch variance
  (`n/(n-1)` times the biased one, n = elements per channel), Flax the biased one, so after
  one training step the running variances differ by `m * var_batch / (n-1)` (measured with
  m = 0.1, n = 12: 0.0066 to 0.044, 0.6% to 3.4% of the running variance). Both normalize
  the batch with the biased variance, so training-mode outputs agree, and so do inference
  outputs from the same running statistics.
- `num_batches_tracked` has no Flax slot: it is accepted and ignored on load (it is optional,
  as in old torch checkpoints) and written as `weights_to_torch(..., num_batches_tracked=n)`
  (default 0). torch reads it only when `momentum=None`.
- RNN biases: torch has `b_ih` and `b_hh`; Flax cells have one bias per gate, so it holds
  `b_ih + b_hh` (exact in function, not bitwise in the split). Exported, the sum goes to
  `bias_ih` and `bias_hh` is zero. GRU's `b_hn` sits inside `r * (W_hn h + b_hn)` and
  cannot be folded; Flax's GRUCell has no slot for it, so a non-zero `b_hn` raises.
  Round trips are bitwise when torch's `bias_hh` is zero. Activations are not weights:
  build cells with torch's (sigmoid/tanh, the defaults; SimpleCell `activation_fn`).
  Training is not the same: torch steps `b_ih` and `b_hh` separately, each with the
  gradient of the sum, so its effective bias moves by two optimizer steps per step (with SGD
  twice as far) where the Flax cell's moves by one; their optimizer states have no NNX
  counterpart either (`interop.nnx_optimizer_from_torch` raises for them).
- Flatten after a convolution: torch flattens `(N, C, H, W)` in C, H, W order; an NNX twin
  that runs channels-last and writes `x.reshape(n, -1)` flattens `(N, H, W, C)` in H, W, C
  order. The next Linear's weight loads without complaint (its shape is the same), but every
  input feature meets another weight column: the twin computes something else and trains
  differently (measured on digits, `Conv2d(1, 8, 3, padding=1)` then `Linear(512, 10)`:
  cross-entropy 1.8e-2 apart at step 0; 8.9e-16 with the transpose below). Write the twin to
  flatten as torch does, `x.transpose(0, 3, 1, 2).reshape(n, -1)` (channels first, then
  flatten), or keep the channels-last flatten and permute the Linear's input rows once after
  loading: `kernel.reshape(C, H, W, out).transpose(1, 2, 0, 3).reshape(H * W * C, out)`
  (the kernel and its optimizer state then no longer follow this module's layout mapping:
  prefer the transpose). `parity`'s one-batch forward check names the first layer whose
  output differs.
- Float64 pitfalls on the NNX side: `nnx.MultiHeadAttention`'s default `attention_fn`
  (`jax.nn.dot_product_attention` when dropout is off) computes the softmax in float32 even
  for float64 inputs (measured 1.2e-7 from torch), so a float64 comparison needs an
  `attention_fn` computing `softmax(q k^T / sqrt(d)) v` in the input dtype;
  `nnx.SimpleCell` computes in `dtype=float32` unless given `dtype`.
- Not supported (they raise): LSTM `proj_size`, ConvTranspose `groups > 1` (Flax's
  ConvTranspose has no feature groups), MultiheadAttention `add_bias_kv` and `kdim !=
  vdim`, NNX `MultiHeadAttention` with `normalize_qk` or fewer key/value heads,
  `SimpleCell(residual=True)`, LayerNorm/RMSNorm over more than the last dimension
  (torch's `normalized_shape` with two or more entries).
- Dtypes: loaded values keep the torch dtype (float64 stays float64 under
  `jax.enable_x64`); exported values keep the NNX dtype (bfloat16 arrays are
  `ml_dtypes.bfloat16`, which `torch.from_numpy` does not take: cast them first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_port._core import to_numpy, to_tensor
from jaxopt_port.interop._torch_inputs import check_module_state_dict, strip_wrapper_prefixes

__all__ = [
    "element_sources",
    "flax_batchnorm_momentum",
    "to_numpy",
    "weights_from_torch",
    "weights_to_numpy",
    "weights_to_torch",
]

Shape = tuple[int, ...]
Path = tuple[Any, ...]
Updates = list[tuple[nnx.Variable, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class _Binding:
    """How the tensors of one torch layer correspond to the variables of one NNX layer.

    Attributes:
      shapes: torch key suffix -> the torch shape the NNX layer implies, for every key it reads.
      load: validated torch arrays by suffix -> `(variable, new value)` pairs (values in the
        torch layout converted to the NNX one, torch dtype kept).
      dump: the layer's current values as torch arrays by suffix.
      optional: groups of suffixes that may be absent together (never only some of a group).
      summed: groups of suffixes whose sum one NNX variable holds (an RNN cell's bias), so that no
        element of theirs has a place of its own.
    """

    shapes: dict[str, Shape]
    load: Callable[[dict[str, np.ndarray]], Updates]
    dump: Callable[[], dict[str, np.ndarray]]
    optional: tuple[frozenset[str], ...] = ()
    summed: tuple[frozenset[str], ...] = ()


def _value(var: nnx.Variable) -> np.ndarray:
    return np.asarray(var[...])


def _merge(bindings: Sequence[_Binding]) -> _Binding:
    def load(arrays: dict[str, np.ndarray]) -> Updates:
        return [
            u for b in bindings for u in b.load({k: arrays[k] for k in b.shapes if k in arrays})
        ]

    return _Binding(
        shapes={k: s for b in bindings for k, s in b.shapes.items()},
        load=load,
        dump=lambda: {k: a for b in bindings for k, a in b.dump().items()},
        optional=tuple(g for b in bindings for g in b.optional),
        summed=tuple(g for b in bindings for g in b.summed),
    )


def _one_to_one(
    pairs: Iterable[
        tuple[
            str,
            nnx.Variable | None,
            Callable[[np.ndarray], np.ndarray],
            Callable[[np.ndarray], np.ndarray],
        ]
    ],
) -> _Binding:
    """Bind torch tensors to NNX variables one to one: `(suffix, variable, to_nnx, to_torch)`.

    `to_torch` is also applied to a stride-0 stand-in of the variable's shape (no memory) to
    learn the torch shape, so it must only permute, flip or reshape.
    """
    pairs = [p for p in pairs if p[1] is not None]
    proxy = lambda shape: np.broadcast_to(np.zeros((), np.int8), shape)
    return _Binding(
        shapes={sfx: tuple(to_torch(proxy(var.shape)).shape) for sfx, var, _, to_torch in pairs},
        load=lambda arrays: [(var, to_nnx(arrays[sfx])) for sfx, var, to_nnx, _ in pairs],
        dump=lambda: {sfx: to_torch(_value(var)) for sfx, var, _, to_torch in pairs},
    )


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _bind_linear(layer: nnx.Linear) -> _Binding:
    return _one_to_one(
        [("weight", layer.kernel, _transpose, _transpose), ("bias", layer.bias, _same, _same)]
    )


def _conv_layouts(n: int) -> tuple[Callable, Callable]:
    """torch (out, in, *k) <-> NNX (*k, in, out) for `n` spatial dimensions."""
    return (
        lambda w: w.transpose(*range(2, n + 2), 1, 0),
        lambda k: k.transpose(n + 1, n, *range(n)),
    )


def _bind_conv(layer: nnx.Conv | nnx.ConvTranspose) -> _Binding:
    n = len(layer.kernel.shape) - 2
    to_nnx, to_torch = _conv_layouts(n)
    if isinstance(layer, nnx.ConvTranspose) and not layer.transpose_kernel:
        # Without transpose_kernel, lax.conv_transpose correlates with the kernel as given (*k, in,
        # out); torch's transposed convolution is that with the spatial axes flipped.
        spatial = tuple(range(n))
        to_nnx = lambda w: np.flip(w.transpose(*range(2, n + 2), 0, 1), spatial)
        to_torch = lambda k: np.flip(k, spatial).transpose(n, n + 1, *range(n))
    # With transpose_kernel=True, lax reads its (*k, out, in) kernel as the forward convolution
    # whose gradient it computes: torch's (in, out, *k) weight in the Conv layout above.
    return _one_to_one(
        [("weight", layer.kernel, to_nnx, to_torch), ("bias", layer.bias, _same, _same)]
    )


def _bind_norm(layer: nnx.LayerNorm | nnx.RMSNorm | nnx.GroupNorm) -> _Binding:
    return _one_to_one(
        [
            ("weight", layer.scale, _same, _same),
            ("bias", getattr(layer, "bias", None), _same, _same),
        ]
    )


def _bind_batchnorm(layer: nnx.BatchNorm, num_batches_tracked: int) -> _Binding:
    counter = _Binding(
        shapes={"num_batches_tracked": ()},
        load=lambda arrays: [],
        dump=lambda: {"num_batches_tracked": np.array(num_batches_tracked, dtype=np.int64)},
        optional=(frozenset({"num_batches_tracked"}),),
    )
    stats = _one_to_one(
        [
            ("weight", layer.scale, _same, _same),
            ("bias", layer.bias, _same, _same),
            ("running_mean", layer.mean, _same, _same),
            ("running_var", layer.var, _same, _same),
        ]
    )
    return _merge([stats, counter])


def _bind_embed(layer: nnx.Embed) -> _Binding:
    return _one_to_one([("weight", layer.embedding, _same, _same)])


def _bind_attention(layer: nnx.MultiHeadAttention) -> _Binding:
    q, k, v, o = layer.query, layer.key, layer.value, layer.out
    e_in, heads, head_dim = q.kernel.shape
    e = heads * head_dim
    kdim, kv_heads = k.kernel.shape[:2]
    where = "nnx.MultiHeadAttention"
    if layer.normalize_qk:
        raise ValueError(f"{where} with normalize_qk=True has LayerNorm weights torch lacks")
    if kv_heads != heads:
        raise ValueError(
            f"{where} with {kv_heads} key/value heads for {heads} query heads has no torch counterpart"
        )
    if e != e_in or o.kernel.shape[-1] != e_in:
        raise ValueError(
            f"torch nn.MultiheadAttention maps embed_dim -> embed_dim; this {where} has "
            f"in_features={e_in}, qkv_features={e}, out_features={o.kernel.shape[-1]}"
        )
    packed = kdim == e  # torch packs q, k, v exactly when kdim == vdim == embed_dim
    has_bias = q.bias is not None
    in_rows = {"q": e, "k": kdim, "v": kdim}
    lins = {"q": q, "k": k, "v": v}
    shapes: dict[str, Shape] = (
        {"in_proj_weight": (3 * e, e)}
        if packed
        else {"q_proj_weight": (e, e), "k_proj_weight": (e, kdim), "v_proj_weight": (e, kdim)}
    )
    shapes["out_proj.weight"] = (e, e)
    if has_bias:
        shapes["in_proj_bias"] = (3 * e,)
        shapes["out_proj.bias"] = (e,)

    def load(a: dict[str, np.ndarray]) -> Updates:
        if packed:
            ws = dict(zip("qkv", np.split(a["in_proj_weight"], 3), strict=True))
        else:
            ws = {n: a[f"{n}_proj_weight"] for n in "qkv"}
        out: Updates = [
            (lins[n].kernel, ws[n].T.reshape(in_rows[n], heads, head_dim)) for n in "qkv"
        ]
        out.append((o.kernel, a["out_proj.weight"].T.reshape(heads, head_dim, e)))
        if has_bias:
            bs = np.split(a["in_proj_bias"], 3)
            out += [
                (lins[n].bias, b.reshape(heads, head_dim)) for n, b in zip("qkv", bs, strict=True)
            ]
            out.append((o.bias, a["out_proj.bias"]))
        return out

    def dump() -> dict[str, np.ndarray]:
        ws = {n: _value(lins[n].kernel).reshape(in_rows[n], e).T for n in "qkv"}
        out = (
            {"in_proj_weight": np.concatenate([ws[n] for n in "qkv"])}
            if packed
            else {f"{n}_proj_weight": ws[n] for n in "qkv"}
        )
        out["out_proj.weight"] = _value(o.kernel).reshape(e, e).T
        if has_bias:
            out["in_proj_bias"] = np.concatenate([_value(lins[n].bias).reshape(e) for n in "qkv"])
            out["out_proj.bias"] = _value(o.bias)
        return out

    return _Binding(shapes=shapes, load=load, dump=dump)


def _cell_slots(
    cell: nnx.Module,
) -> tuple[list[nnx.Variable], list[nnx.Variable], list[nnx.Variable], int]:
    """An RNN cell's variables whose concatenations (along the last axis) are torch's tensors.

    Returns `(input kernels, hidden kernels, biases, gates)`: `concat(input kernels).T` is
    `weight_ih`, `concat(hidden kernels).T` is `weight_hh`, `concat(biases)` is `bias_ih +
    bias_hh`, each in torch's gate order.
    """
    if isinstance(cell, nnx.LSTMCell):
        ins, hid = [cell.ii, cell.if_, cell.ig, cell.io], [cell.hi, cell.hf, cell.hg, cell.ho]
        return [m.kernel for m in ins], [m.kernel for m in hid], [m.bias for m in hid], 4
    if isinstance(cell, nnx.OptimizedLSTMCell):
        return [cell.dense_i.kernel], [cell.dense_h.kernel], [cell.dense_h.bias], 4
    if isinstance(cell, nnx.GRUCell):
        return [cell.dense_i.kernel], [cell.dense_h.kernel], [cell.dense_i.bias], 3
    if isinstance(cell, nnx.SimpleCell):
        if cell.residual:
            raise ValueError("nnx.SimpleCell(residual=True) adds the carry; torch nn.RNN does not")
        return [cell.dense_i.kernel], [cell.dense_h.kernel], [cell.dense_i.bias], 1
    raise ValueError(f"no torch counterpart for the RNN cell {type(cell).__name__}")


def _split_last(a: np.ndarray, like: Sequence[nnx.Variable]) -> list[np.ndarray]:
    return np.split(a, np.cumsum([v.shape[-1] for v in like])[:-1], axis=-1)


def _bind_cell(cell: nnx.Module, sfx: str) -> _Binding:
    ins, hid, biases, gates = _cell_slots(cell)
    hidden = hid[0].shape[0]
    n_in = ins[0].shape[0]
    w_ih, w_hh, b_ih, b_hh = (
        f"weight_ih{sfx}",
        f"weight_hh{sfx}",
        f"bias_ih{sfx}",
        f"bias_hh{sfx}",
    )
    g = gates * hidden
    is_gru = isinstance(cell, nnx.GRUCell)

    def load(a: dict[str, np.ndarray]) -> Updates:
        if b_ih in a:
            if is_gru and np.any(a[b_hh][2 * hidden :]):
                raise ValueError(
                    f"{b_hh}[{2 * hidden}:] (torch GRU's b_hn, inside r * (W_hn h + b_hn)) is "
                    "not zero, and nnx.GRUCell has no bias there: it cannot be folded into the "
                    "input bias; use a cell that has it or retrain with b_hn = 0"
                )
            bias = a[b_ih] + a[b_hh]
        else:  # torch bias=False
            bias = np.zeros(g, a[w_ih].dtype)
        return [
            *zip(ins, _split_last(a[w_ih].T, ins), strict=True),
            *zip(hid, _split_last(a[w_hh].T, hid), strict=True),
            *zip(biases, _split_last(bias, biases), strict=True),
        ]

    def dump() -> dict[str, np.ndarray]:
        bias = np.concatenate([_value(v) for v in biases])
        return {
            w_ih: np.concatenate([_value(v) for v in ins], axis=-1).T,
            w_hh: np.concatenate([_value(v) for v in hid], axis=-1).T,
            b_ih: bias,
            b_hh: np.zeros_like(bias),
        }

    return _Binding(
        shapes={w_ih: (g, n_in), w_hh: (g, hidden), b_ih: (g,), b_hh: (g,)},
        load=load,
        dump=dump,
        optional=(frozenset({b_ih, b_hh}),),
        summed=(frozenset({b_ih, b_hh}),),
    )


def _is_rnn_stack(node: Any) -> bool:
    return (
        isinstance(node, (nnx.List, list, tuple))
        and len(node) > 0
        and all(isinstance(m, (nnx.RNN, nnx.Bidirectional)) for m in node)
    )


def _bind_rnn_stack(layers: Sequence[nnx.RNN | nnx.Bidirectional]) -> _Binding:
    bindings = []
    for k, layer in enumerate(layers):
        if isinstance(layer, nnx.Bidirectional):
            bindings.append(_bind_cell(layer.forward_rnn.cell, f"_l{k}"))
            bindings.append(_bind_cell(layer.backward_rnn.cell, f"_l{k}_reverse"))
        else:
            bindings.append(_bind_cell(layer.cell, f"_l{k}"))
    return _merge(bindings)


def _bind_variable(var: nnx.Variable) -> _Binding:
    return _one_to_one([("", var, _same, _same)])


def _binding_for(node: Any, num_batches_tracked: int) -> _Binding | None:
    """The binding of a known NNX layer (or list of RNN layers), else None."""
    if _is_rnn_stack(node):
        return _bind_rnn_stack(list(node))
    if isinstance(node, (nnx.RNN, nnx.Bidirectional)):
        return _bind_rnn_stack([node])
    if isinstance(node, nnx.BatchNorm):
        return _bind_batchnorm(node, num_batches_tracked)
    binders: tuple[tuple[type, Callable[[Any], _Binding]], ...] = (
        (nnx.Linear, _bind_linear),
        ((nnx.Conv, nnx.ConvTranspose), _bind_conv),
        ((nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm), _bind_norm),
        (nnx.Embed, _bind_embed),
        (nnx.MultiHeadAttention, _bind_attention),
    )
    for cls, bind in binders:
        if isinstance(node, cls):
            return bind(node)
    if isinstance(node, (nnx.Param, nnx.BatchStat)):
        return _bind_variable(node)
    return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _bindings(module: nnx.Module, num_batches_tracked: int = 0) -> list[tuple[str, str, _Binding]]:
    """`(torch prefix, description, binding)` for every layer and loose variable of `module`."""
    nodes: dict[Path, Any] = dict(nnx.iter_graph(module))
    claimed: set[Path] = set()
    out = []
    for path in sorted(nodes, key=len):  # stable: parents before children, else graph order
        if any(path[:i] in claimed for i in range(len(path))):
            continue
        node = nodes[path]
        binding = _binding_for(node, num_batches_tracked)
        if binding is None:
            continue
        claimed.add(path)
        # nnx.Sequential keeps its layers in `.layers`; torch's nn.Sequential has none.
        prefix = ".".join(
            str(key)
            for i, key in enumerate(path)
            if not (key == "layers" and isinstance(nodes.get(path[:i]), nnx.Sequential))
        )
        out.append(
            (prefix, f"{type(node).__name__} at {'.'.join(map(str, path)) or '<root>'}", binding)
        )
    seen: dict[str, str] = {}
    for prefix, where, binding in out:
        for sfx in binding.shapes:
            key = _join(prefix, sfx)
            if key in seen:
                raise ValueError(f"torch key {key!r} would come from both {seen[key]} and {where}")
            seen[key] = where
    return out


def element_sources(
    module: nnx.Module, keys: Sequence[str]
) -> tuple[list[Shape], dict[Path, np.ndarray]]:
    """Where each element of `module`'s variables comes from among the torch tensors `keys`.

    The tensors `keys` are numbered as one flat vector: `keys[0]` raveled in C order, then
    `keys[1]`, and so on. Every NNX variable holding elements of them gets an integer array (int32
    below 2**31 elements) of its own shape with each element's position in that vector (-1 for an
    element from no key in `keys`). The positions are found by loading position arrays through the
    same bindings that [`weights_from_torch`][jaxopt_port.interop.weights_from_torch] loads weights
    through, so they follow the weights' layout mapping exactly (transposes, axis permutations,
    flips, splits): anything laid out like a parameter (optimizer state such as `exp_avg`) converts
    as `nnx_value = torch_flat[positions]`, and back by the inverse scatter, bit for bit.

    Args:
      module: the NNX module (see the module docstring for the key correspondence).
      keys: torch keys of parameters, e.g. a torch optimizer's parameters by name (a wrapped
        model's `module.`/`_orig_mod.` prefixes are removed as on loading).

    Returns:
      `(shapes, sources)`: the torch shape of each key, and `{path: positions}` for the
      variables holding elements of `keys`, by their path in `module` (as `nnx.iter_graph`
      and `nnx.state` give it: `("fc", "kernel")`).

    Raises:
      ValueError: a key that is not a key of `module`'s torch state dict (listing some that
        are), or one whose elements the NNX module does not hold one to one — an RNN cell's single
        bias holds torch's `bias_ih + bias_hh`.
    """
    owner: dict[str, tuple[int, str]] = {}
    bindings = _bindings(module)
    for b, (prefix, _, binding) in enumerate(bindings):
        for sfx in binding.shapes:
            owner[_join(prefix, sfx)] = (b, sfx)
    keys = strip_wrapper_prefixes(keys, owner)
    unknown = [k for k in keys if k not in owner]
    if unknown:
        known = sorted(owner)
        raise ValueError(
            f"torch parameter(s) {unknown[:10]} have no counterpart in the NNX "
            f"{type(module).__name__}, whose torch keys are {known[:20]}"
            + (" ..." if len(known) > 20 else "")
        )
    shapes = [bindings[owner[k][0]][2].shapes[owner[k][1]] for k in keys]
    offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    positions_dtype = np.int32 if offsets[-1] < np.iinfo(np.int32).max else np.int64
    by_binding: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_binding.setdefault(owner[key][0], []).append(index)
    path_of = {id(node): path for path, node in nnx.iter_graph(module)}
    sources: dict[Path, np.ndarray] = {}
    problems: dict[str, None] = {}  # ordered, without repeats
    for b, indices in by_binding.items():
        prefix, where, binding = bindings[b]
        zeros = {sfx: np.zeros(shape, positions_dtype) for sfx, shape in binding.shapes.items()}
        for index in indices:
            key, start, size = keys[index], int(offsets[index]), int(np.prod(shapes[index]))
            summed = [g for g in binding.summed if owner[key][1] in g]
            if summed:
                both = " + ".join(_join(prefix, s) for s in sorted(summed[0], reverse=True))
                problems[f"{both} ({where}): the NNX cell holds their sum, one bias per gate"] = (
                    None
                )
                continue
            marked = (
                start + 1 + np.arange(size, dtype=positions_dtype)
            )  # 0 marks "from another key"
            try:
                updates = binding.load({**zeros, owner[key][1]: marked.reshape(shapes[index])})
            except ValueError as error:
                problems[f"{key} ({where}): its elements have no slots of their own ({error})"] = (
                    None
                )
                continue
            uses = np.zeros(size, np.int64)
            for var, array in updates:
                array = np.asarray(array)
                hit = array != 0
                if not hit.any():
                    continue
                positions = array[hit] - 1
                inside = (positions >= start) & (positions < start + size)
                np.add.at(uses, positions[inside] - start, 1)
                if not inside.all():  # arithmetic on the marks: not a rearrangement
                    uses[:] = 0
                target = sources.setdefault(
                    path_of[id(var)], np.full(np.shape(array), -1, positions_dtype)
                )
                taken = target[hit] >= 0
                if taken.any():
                    other = keys[int(np.searchsorted(offsets, target[hit][taken][0], "right")) - 1]
                    problems[f"{key} and {other} ({where}): one NNX variable combines them"] = None
                target[hit] = positions
            if np.any(uses != 1):
                problems[f"{key} ({where}): the NNX layer does not hold each element once"] = None
    if problems:
        raise ValueError(
            "these torch parameters have no element-for-element counterpart in the NNX "
            f"{type(module).__name__}:\n  " + "\n  ".join(problems)
        )
    return shapes, sources


def _shape(value: Any) -> Shape:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _placed(value: np.ndarray, var: nnx.Variable) -> jax.Array:
    """`value` as a JAX array placed as `var`'s value is: committed to its devices and sharding
    if it is, else (or for an abstract value without sharding) on the default device."""
    old = var.get_value()
    sharding = getattr(old, "sharding", None)
    if sharding is None or (isinstance(old, jax.Array) and not old.committed):
        return jnp.asarray(value)
    return jax.device_put(value, sharding)


def weights_from_torch(
    module: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True
) -> None:
    """Fill `module`'s parameters and batch statistics from a torch `state_dict`, in place.

    Every key is checked and every new value built before the module changes, so a failing load
    leaves the module as it was. Values keep the torch dtype.

    Args:
      module: an NNX module with the architecture of the torch module (see the module docstring
        for the key and layout correspondence).
      state_dict: torch key -> tensor (`torch_module.state_dict()`), or any array-likes. The
        `module.` (DDP) and `_orig_mod.` (`torch.compile`) prefixes of a wrapped model's
        keys are removed (module docstring).
      strict: as torch's `load_state_dict`: if True (default) missing and unexpected keys are
        errors; if False they are ignored and variables without a key keep their values. Shape
        mismatches are errors either way.

    Raises:
      TypeError: `state_dict` is not a mapping of keys to arrays: a torch module (pass its
        `state_dict()`), a torch optimizer or its `state_dict()`, a checkpoint dict holding
        the state dict under a key, or anything else (torch's `Expected state_dict to be
        dict-like` message).
      ValueError: naming every missing or unexpected key and every shape mismatch (with the torch
        shape and the shape the NNX layer implies), or a torch tensor with no NNX counterpart
        (e.g. a non-zero GRU `b_hn`).

    Examples:
      >>> import torch
      >>> from flax import nnx
      >>> from jaxopt_port.interop.weights import weights_from_torch
      >>> layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> weights_from_torch(layer, torch.nn.Linear(3, 2).state_dict())
    """
    check_module_state_dict(state_dict, "weights_from_torch")
    bindings = _bindings(module)
    all_keys = {_join(prefix, sfx) for prefix, _, b in bindings for sfx in b.shapes}
    state_dict = dict(
        zip(strip_wrapper_prefixes(list(state_dict), all_keys), state_dict.values(), strict=True)
    )
    problems: list[str] = []
    expected: set[str] = set()
    pending: list[tuple[_Binding, dict[str, np.ndarray]]] = []
    for prefix, where, binding in bindings:
        arrays: dict[str, np.ndarray] = {}
        missing: list[str] = []
        absent_ok = {
            sfx
            for group in binding.optional
            if not any(_join(prefix, s) in state_dict for s in group)
            for sfx in group
        }
        for sfx, shape in binding.shapes.items():
            key = _join(prefix, sfx)
            expected.add(key)
            if key not in state_dict:
                if sfx not in absent_ok:
                    missing.append(sfx)
                continue
            got = _shape(state_dict[key])
            if got != shape:
                problems.append(
                    f"size mismatch for {key}: the torch tensor has shape {got}, "
                    f"the {where} needs {shape} (torch layout)"
                )
            else:
                arrays[sfx] = to_numpy(state_dict[key])
        if missing and strict:
            problems += [
                f"missing key {_join(prefix, s)} (shape {binding.shapes[s]}, for the {where})"
                for s in missing
            ]
        elif missing:
            current = binding.dump()
            arrays.update({s: current[s] for s in missing})
        pending.append((binding, arrays))
    if strict:
        problems += [
            f"unexpected key {key} (shape {_shape(state_dict[key])})"
            for key in state_dict
            if key not in expected
        ]
    if problems:
        raise ValueError(
            f"Error(s) loading a torch state_dict into {type(module).__name__}:\n  "
            + "\n  ".join(problems)
        )
    updates = [(var, _placed(value, var)) for b, arrays in pending for var, value in b.load(arrays)]
    for var, value in updates:
        var.set_value(value)


def weights_to_numpy(module: nnx.Module, *, num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
    """The torch `state_dict` of `module`, as writable C-contiguous NumPy arrays.

    Args:
      module: an NNX module (see the module docstring for the key and layout correspondence).
      num_batches_tracked: the value written for every BatchNorm's `num_batches_tracked`
        (int64, shape ()), which Flax does not count (default 0).

    Returns:
      torch key -> array in torch's layout and the NNX dtype;
      `torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` accepts it.

    Examples:
      >>> import torch
      >>> from flax import nnx
      >>> from jaxopt_port.interop.weights import weights_to_numpy
      >>> sd = weights_to_numpy(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      >>> torch.nn.Linear(3, 2).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
      <All keys matched successfully>
    """
    return {
        _join(prefix, sfx): np.array(array, order="C", copy=True)
        for prefix, _, binding in _bindings(module, num_batches_tracked)
        for sfx, array in binding.dump().items()
    }


def weights_to_torch(module: nnx.Module, *, num_batches_tracked: int = 0) -> dict[str, Any]:
    """The torch `state_dict` of `module`, as CPU tensors `torch_module.load_state_dict` takes
    (imports torch; [`weights_to_numpy`][jaxopt_port.interop.weights_to_numpy] gives the same values
    as NumPy arrays).

    Args:
      module: an NNX module (see the module docstring for the key and layout correspondence).
      num_batches_tracked: the value written for every BatchNorm's `num_batches_tracked`
        (int64, shape ()), which Flax does not count (default 0).

    Returns:
      torch key -> tensor in torch's layout and the NNX dtype (bfloat16 included).

    Examples:
      >>> import torch
      >>> from flax import nnx
      >>> from jaxopt_port import interop
      >>> layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> torch.nn.Linear(3, 2).load_state_dict(interop.weights_to_torch(layer))
      <All keys matched successfully>
    """
    arrays = weights_to_numpy(module, num_batches_tracked=num_batches_tracked)
    return {key: to_tensor(value) for key, value in arrays.items()}


def flax_batchnorm_momentum(torch_momentum: float | None) -> float:
    """The `nnx.BatchNorm` momentum equivalent to torch's BatchNorm `momentum`.

    torch: `running = (1 - m) * running + m * batch`; Flax: `running = m' * running + (1 - m') *
    batch`; so `m' = 1 - m`.

    Args:
      torch_momentum: torch's `momentum` (default 0.1). `None` (cumulative moving average) has
        no Flax counterpart and raises ValueError.

    Returns:
      `1 - torch_momentum`.

    Examples:
      >>> flax_batchnorm_momentum(0.1)
      0.9
    """
    if torch_momentum is None:
        raise ValueError(
            "torch BatchNorm momentum=None (a cumulative average) has no Flax counterpart"
        )
    return 1.0 - torch_momentum
