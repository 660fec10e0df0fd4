"""One batch through a torch model and its Flax NNX twin: the first module whose output differs.

`check_forward` (`parity.check_forward`) catches what loading the weights cannot: a twin
that computes another function with the same parameter shapes. The classic case is a flatten
after a convolution: torch flattens its `(N, C, H, W)` activation channels first, an NNX model
working in `(N, H, W, C)` flattens channels last, the next `Linear` has the same
`(C·H·W, out)` kernel either way, the weights load without complaint, and the models train
differently from the first step.

How the intermediate values are captured
    torch: a forward hook on every submodule (`register_forward_hook`) records its positional
    inputs and its output each time it runs. NNX: for the duration of the call, the `__call__`
    of every module class in the twin's graph is wrapped (the interception ``nnx.capture(...,
    method_outputs=...)`` uses, restored afterwards) to record the inputs and output of each
    module instance of the twin; `nnx.Sequential`, custom modules, lists of modules and weight
    tying work alike. A module's name is its torch name: the NNX attribute path joined with
    `"."`, without the `layers` of an `nnx.Sequential` (as `jaxopt_port.interop.weights`
    maps keys). The twin runs eagerly (not under `jax.jit`); a module called under a JAX
    transformation inside it (a cell under `nnx.scan`) has no concrete values and is skipped.

What is compared
    Each module call in torch's completion order (children before their parent) with the same
    call of the NNX module of the same name: the outputs, and the inputs, as scaled differences
    (`parity.report.results.leaf_difference`). Activations are compared as they are, or with
    torch's channel axis moved last (NCHW → NHWC) or the first two axes swapped (time-major
    ↔ batch-major), whichever the NNX shape admits and matches best; the report says which. The
    first call whose output is past the tolerance is the finding: if its inputs agreed, the
    difference is inside that module; if they did not, it arose before it, in code between the
    modules (the parent's `forward`/`__call__`), and the inputs are tested for a reordering of
    torch's (the flatten order above is named when it is the one).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from parity.metric import F64_GATE, leaf_difference

__all__ = [
    "F32_FORWARD_TOLERANCE",
    "ForwardCheck",
    "LayerCheck",
    "check_forward",
]

#: The float32 default. Not measured for your model: the suite's twin models (MLP, CNN with
#: BatchNorm, transformer block, LSTM; parity.specs.models) measured at most 4.0e-7 (the CNN's
#: BatchNorm) on one batch; deeper models differ more, so measure and pass `tolerance=`.
F32_FORWARD_TOLERANCE = 1e-5

_LAYOUTS = (
    ("as is", lambda a: a),
    ("channels last (torch NC… → NNX N…C)", lambda a: np.moveaxis(a, 1, -1) if a.ndim >= 3 else None),
    ("first two axes swapped (time-major ↔ batch-major)", lambda a: np.swapaxes(a, 0, 1) if a.ndim >= 2 else None),
)  # fmt: skip


@dataclasses.dataclass
class LayerCheck:
    """One module call compared across the frameworks.

    Attributes:
      name: the torch module name (`""` for the whole model); `label` prints it.
      call: which call of the module it was (0 for the first; a module may run several times).
      torch_type, nnx_type: the two modules' class names.
      output: the worst scaled difference of the outputs (`inf`: shapes that no layout maps).
      input: the worst scaled difference of the positional inputs (`None`: not comparable).
      layout: how torch's output was laid out to compare it (`"as is"`, ``"channels last
        ..."``, ...), or why it could not be.
    """

    name: str
    call: int
    torch_type: str
    nnx_type: str
    output: float
    input: float | None
    layout: str

    @property
    def label(self) -> str:
        """`'fc'` (`fc`'s call 2: `'fc' (call 2)`); the whole model: `the model's output`."""
        text = f"'{self.name}'" if self.name else "the model's output"
        return text + (f" (call {self.call + 1})" if self.call else "")


@dataclasses.dataclass
class ForwardCheck:
    """The result of `check_forward`.

    Attributes:
      passed: at least one module output was compared and every compared one is within
        `tolerance`.
      first: the first module call (in torch's completion order) whose output is past the
        tolerance, or `None`.
      hint: what `first` suggests (inside the module or before it; a reordering of the inputs,
        the flatten order), `""` when it passed.
      layers: every compared call, in torch's completion order.
      not_compared: torch modules that ran but have no NNX module of the same name that ran
        (e.g. `nn.Flatten` or `nn.ReLU` where the twin calls a function), or whose output
        the NNX side computed under a JAX transformation.
      tolerance, dtype: what it ran with.
    """

    passed: bool
    first: LayerCheck | None
    hint: str
    layers: list[LayerCheck]
    not_compared: list[str]
    tolerance: float
    dtype: str

    def summary(self) -> str:
        """One line: where the models first differ and why it may be, or that they agree."""
        if not self.layers:
            return self.hint
        if self.first is None:
            return (
                f"every compared output agrees (worst {max((x.output for x in self.layers), default=0.0):.2g}"
                f" ≤ {self.tolerance:.0e}, {len(self.layers)} module calls)"
            )
        f = self.first
        inner = f" ({f.torch_type} / {f.nnx_type})" if f.name else ""
        return f"first difference at {f.label}{inner}: {f.output:.2g} > {self.tolerance:.0e}; {self.hint}"

    def __str__(self) -> str:
        lines = [f"forward check ({self.dtype}): {self.summary()}"]
        for x in self.layers:
            mark = "  " if x.output <= self.tolerance else "✗ "
            inputs = "—" if x.input is None else f"{x.input:.2g}"
            lines.append(
                f"  {mark}{x.label:<28} {x.torch_type:>20} / {x.nnx_type:<20} output {x.output:.2g}"
                f"  input {inputs}  [{x.layout}]"
            )
        if self.not_compared:
            lines.append("  not compared: " + ", ".join(self.not_compared))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# capture


@dataclasses.dataclass(eq=False)
class _Call:
    name: str
    type: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


def _arrays(tree: Any) -> list[Any]:
    """The array leaves of nested tuples/lists/dicts, in order (anything else is dropped)."""
    if isinstance(tree, (tuple, list)):
        return [a for x in tree for a in _arrays(x)]
    if isinstance(tree, dict):
        return [a for k in tree for a in _arrays(tree[k])]
    return [tree] if hasattr(tree, "shape") and hasattr(tree, "dtype") else []


def _torch_calls(model: Any, inputs: Sequence[Any]) -> list[_Call]:
    """Run `model(*inputs)` with a forward hook on every module; the calls in completion order."""
    import torch

    from jaxopt_port.interop.weights import to_numpy

    calls: list[_Call] = []

    def record(name: str) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            to = lambda xs: [to_numpy(x).copy() for x in _arrays(xs) if torch.is_tensor(x)]
            calls.append(_Call(name, type(module).__name__, to(args), to(output)))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _nnx_names(model: Any) -> dict[int, tuple[str, Any]]:
    """`id(module) -> (torch name, module)` for every module of the twin's graph (first path
    wins, as for weight tying in `jaxopt_port.interop.weights`)."""
    from flax import nnx

    nodes = dict(nnx.iter_graph(model))
    names: dict[int, tuple[str, Any]] = {}
    for path in sorted(nodes, key=len):
        node = nodes[path]
        if not isinstance(node, nnx.Module) or id(node) in names:
            continue
        name = ".".join(
            str(key)
            for i, key in enumerate(path)
            if not (key == "layers" and isinstance(nodes.get(path[:i]), nnx.Sequential))
        )
        names[id(node)] = (name, node)
    return names


@contextlib.contextmanager
def _intercepted(names: dict[int, tuple[str, Any]], calls: list[_Call]) -> Iterator[None]:
    """Wrap `__call__` of the twin's module classes to record its modules' calls."""
    import jax

    from jaxopt_port.interop.weights import to_numpy

    def resolved(cls: type) -> Any:  # from the class's own MRO, never the metaclass's
        return next((k.__dict__["__call__"] for k in cls.__mro__ if "__call__" in k.__dict__), None)

    classes = {type(m) for _, m in names.values()}
    originals = {
        cls: (cls.__dict__.get("__call__"), resolved(cls)) for cls in classes if resolved(cls)
    }
    active: set[int] = set()

    def concrete(xs: Any) -> list[np.ndarray] | None:
        leaves = _arrays(xs)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return None
        return [to_numpy(x).copy() for x in leaves]

    def wrap(original: Any) -> Any:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            key = id(self)
            if key not in names or key in active:  # another model's module, or super().__call__
                return original(self, *args, **kwargs)
            active.add(key)
            try:
                out = original(self, *args, **kwargs)
            finally:
                active.discard(key)
            inputs, outputs = concrete(args), concrete(out)
            if outputs is not None:
                calls.append(_Call(names[key][0], type(self).__name__, inputs or [], outputs))
            return out

        return __call__

    try:
        for cls, (_, resolved) in originals.items():
            cls.__call__ = wrap(resolved)
        yield
    finally:
        for cls, (own, _) in originals.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


# ------------------------------------------------------------------------------------------------
# comparison


def _difference(torch_value: np.ndarray, nnx_value: np.ndarray) -> tuple[float, str]:
    """The smallest scaled difference over the layouts that give torch's value the NNX shape."""
    best = (math.inf, f"shapes {tuple(torch_value.shape)} (torch) and {tuple(nnx_value.shape)}")
    for layout, arrange in _LAYOUTS:
        laid = arrange(torch_value)
        if laid is not None and laid.shape == nnx_value.shape:
            scaled = leaf_difference(nnx_value, laid)[1]
            if not scaled >= best[0]:
                best = (scaled, layout)
    return best


def _differences(torch_values: list[np.ndarray], nnx_values: list[np.ndarray]) -> tuple[float, str]:
    """The worst `_difference` over matching leaves (only the first leaves when the two
    return different numbers of arrays, as torch's LSTM `(out, (h, c))` and NNX's `out`)."""
    if not torch_values or not nnx_values:
        return math.nan, "no arrays"
    pairs = list(zip(torch_values, nnx_values, strict=False))
    note = "" if len(torch_values) == len(nnx_values) else ", first array only"
    worst = max((_difference(t, j) for t, j in pairs), key=lambda d: d[0])
    return worst[0], worst[1] + note


def _divisors(n: int) -> list[int]:
    small = [d for d in range(2, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _reordering(
    torch_in: np.ndarray, nnx_in: np.ndarray, earlier: list[_Call], tolerance: float
) -> str:
    """Why an input differs when it is a reordering of torch's: a channels-last flatten, or any
    permutation of the features (the same values per sample); `""` when it is not.

    A flatten of `C` channels × `S` positions channels last is torch's `(N, C·S)` viewed as
    `(N, C, S)` with the last two axes swapped, whatever the spatial shape; `C` is tried from
    the channel counts of the activations recorded before (torch layout), then every divisor.
    """
    if torch_in.shape != nnx_in.shape or torch_in.ndim < 2:
        return ""
    n = torch_in.shape[0]
    sort = lambda a: np.sort(a.reshape(n, -1), axis=1)
    if not leaf_difference(sort(nnx_in), sort(torch_in))[1] <= tolerance:
        return ""
    generic = (
        "its input holds torch's values per sample in another order (a permutation of the "
        "features: a transpose or reshape in another layout, e.g. a flatten or a head split)"
    )
    if torch_in.ndim != 2:
        return generic
    features = torch_in.shape[1]
    activations = [
        out.shape for call in reversed(earlier) for out in call.outputs
        if out.ndim >= 3 and out.shape[0] == n
    ]  # fmt: skip
    for c in dict.fromkeys([*(shape[1] for shape in activations), *_divisors(features)]):
        if c < 2 or c >= features or features % c:
            continue
        positions = features // c
        channels_last = torch_in.reshape(n, c, positions).swapaxes(1, 2).reshape(n, features)
        if leaf_difference(nnx_in, channels_last)[1] <= tolerance:
            seen = next(
                (s for s in activations if s[1] == c and int(np.prod(s[2:])) == positions), None
            )
            shape = f", here {tuple(seen)}" if seen else ""
            return (
                f"its input is torch's with the features reordered as a channels-last flatten of "
                f"{c} channels × {positions} positions: torch flattens (N, C, H, W){shape} "
                f"channels first, the NNX model flattened a channels-last (N, H, W, C) activation. "
                f"Transpose to channels first before flattening (images: x.transpose(0, 3, 1, "
                f"2).reshape(x.shape[0], -1)), so that the next layer's weights mean what torch's do"
            )
    return generic


def _finding(
    first: LayerCheck, torch_call: _Call, nnx_call: _Call, earlier: list[_Call], tolerance: float
) -> str:
    """The hint for the first differing call."""
    if first.input is not None and first.input <= tolerance:
        return (
            "its inputs agree, so the difference is inside this module: a hyperparameter that "
            "differs (eps, padding, stride, momentum, activation, approximate GELU, ...) or "
            "weights that load into a layout it does not use"
        )
    parent = first.name.rpartition(".")[0] if first.name else None
    where = (
        "in the code between modules"
        + (f" (the forward of '{parent}' / its NNX twin)" if parent else " (the models' forward)")
        if parent is not None
        else "before the model"
    )
    hint = f"its input already differs ({first.input:.2g}): the difference arises {where}"
    if torch_call.inputs and nnx_call.inputs:
        why = _reordering(torch_call.inputs[0], nnx_call.inputs[0], earlier, tolerance)
        if why:
            hint += "; " + why
    return hint


def check_forward(
    torch_model: Any,
    nnx_model: Any,
    inputs: Any,
    *,
    dtype: str | None = None,
    tolerance: float | None = None,
    load_weights: bool = True,
) -> ForwardCheck:
    """Run one batch through a torch model and its Flax NNX twin; name the first module whose
    output differs.

    Use it before `parity.compare` (which runs it itself on the first batch when a
    comparison fails) or whenever a twin loads torch's weights but trains differently: the
    weights converter checks shapes, and a twin can compute another function with the same
    shapes — a flatten in another order, a missing transpose, another `eps` or activation.

    Args:
      torch_model: an `nn.Module`; a copy runs (under `torch.no_grad`), in the mode it is in
        (put both models in eval mode, or use no dropout, for a deterministic comparison).
      nnx_model: its twin as a `flax.nnx.Module` (may be abstract, from `nnx.eval_shape`); a
        clone runs, eagerly.
      inputs: the models' positional inputs: one array, or a tuple of arrays (for a batch
        `(*inputs, target)` as `parity.compare` takes, `batch[:-1]`); NumPy arrays or
        torch tensors, the same arrays for both models. Floating arrays are cast to `dtype`.
      dtype: `"float64"` or `"float32"` (default: the torch model's). float64 separates
        rounding (~1e-16) from a real difference best.
      tolerance: the bound on the scaled difference of each module's output (default: 1e-12 in
        float64; `F32_FORWARD_TOLERANCE` in float32).
      load_weights: load torch's weights into the twin with
        `jaxopt_port.interop.weights_from_torch` first (default); with False the
        twin's own weights are used.

    Returns:
      A `ForwardCheck`: `passed`, `first` (the first differing module call),
      `hint`, every compared call in `layers`; `print(check)` shows them all.

    Raises:
      ValueError: an unknown dtype, or weights the converter cannot load.

    Examples:
      >>> import numpy as np, torch
      >>> from flax import nnx
      >>> import parity
      >>> x = np.random.default_rng(0).normal(size=(4, 3))
      >>> check = parity.check_forward(
      ...     torch.nn.Linear(3, 2).double(), nnx.Linear(3, 2, rngs=nnx.Rngs(0)), x
      ... )
      >>> check.passed
      True
    """
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from jaxopt_port import interop
    from jaxopt_port.interop.weights import to_numpy

    torch_model = copy.deepcopy(torch_model)
    if dtype is None:
        first_param = next(torch_model.parameters(), None)
        dtype = "float32" if first_param is None else str(first_param.dtype).removeprefix("torch.")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}")
    if tolerance is None:
        tolerance = F64_GATE if dtype == "float64" else F32_FORWARD_TOLERANCE
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    arrays = [to_numpy(x) for x in inputs]
    floating = lambda a: np.issubdtype(a.dtype, np.floating)
    torch_model.to(getattr(torch, dtype))
    device = next(torch_model.parameters(), torch.empty(0)).device
    torch_inputs = [
        torch.as_tensor(a, dtype=getattr(torch, dtype) if floating(a) else None).to(device)
        for a in arrays
    ]
    torch_calls = _torch_calls(torch_model, torch_inputs)

    nnx_calls: list[_Call] = []
    with jax.enable_x64(dtype == "float64"):
        twin = nnx.clone(nnx_model)
        if load_weights:
            interop.weights_from_torch(twin, torch_model.state_dict())
        jax_inputs = [jnp.asarray(a, dtype if floating(a) else None) for a in arrays]
        with _intercepted(_nnx_names(twin), nnx_calls):
            twin(*jax_inputs)

    by_name: dict[str, list[_Call]] = {}
    for call in nnx_calls:
        by_name.setdefault(call.name, []).append(call)
    seen: dict[str, int] = {}
    layers: list[LayerCheck] = []
    pairs: list[tuple[int, _Call]] = []  # (index into torch_calls, the NNX call)
    not_compared: list[str] = []
    for index, call in enumerate(torch_calls):
        k = seen[call.name] = seen.get(call.name, -1) + 1
        twins = by_name.get(call.name, [])
        if k >= len(twins):
            label = f"'{call.name}' ({call.type})" if call.name else "the model's output"
            if label not in not_compared:
                not_compared.append(label)
            continue
        twin_call = twins[k]
        output, layout = _differences(call.outputs, twin_call.outputs)
        if math.isnan(output):
            not_compared.append(f"'{call.name}' ({call.type}: no array output on one side)")
            continue
        given = _differences(call.inputs, twin_call.inputs)[0]
        layers.append(
            LayerCheck(
                call.name, k, call.type, twin_call.type, output, None if math.isnan(given) else given, layout
            )
        )  # fmt: skip
        pairs.append((index, twin_call))
    first_index = next((i for i, x in enumerate(layers) if not x.output <= tolerance), None)
    hint = ""
    first = None
    if first_index is not None:
        first = layers[first_index]
        index, twin_call = pairs[first_index]
        hint = _finding(first, torch_calls[index], twin_call, torch_calls[:index], tolerance)
    return ForwardCheck(
        passed=first is None and bool(layers),
        first=first,
        hint=hint if layers else "no module output could be compared",
        layers=layers,
        not_compared=not_compared,
        tolerance=tolerance,
        dtype=dtype,
    )
