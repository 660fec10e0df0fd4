"""Twin quantization-aware training runs on digits: torch's eager flow (`fuse_modules_qat`,
`prepare_qat` with `get_default_qat_qconfig("x86")`, `convert`) and jaxopt_port's on Flax NNX,
started from the same weights and fed the same batches.

Two models: `"mlp"` (QuantStub → Linear+ReLU fused → Linear → DeQuantStub) and `"cnn"`
(QuantStub → Conv2d+BatchNorm2d+ReLU fused → Flatten → Linear → DeQuantStub). Used by
`tests/test_quantization_qat_model.py` and the parity row `run_qat_model_parity`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

KINDS = ("mlp", "cnn")
HIDDEN = 32
CHANNELS = 8


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits, pixels scaled to [0, 1] (multiples of 1/16), and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


def inputs(kind: str, x: np.ndarray) -> tuple[Any, Any]:
    """The batch for torch (`(N, 1, 8, 8)` for the CNN) and for JAX (channels last)."""
    import jax.numpy as jnp
    import torch

    if kind == "cnn":
        return torch.from_numpy(x).reshape(-1, 1, 8, 8), jnp.asarray(x).reshape(-1, 8, 8, 1)
    return torch.from_numpy(x), jnp.asarray(x)


def _torch_model(kind: str, seed: int):
    import torch
    import torch.ao.quantization as tq

    torch.manual_seed(seed)

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.fc1, self.relu1 = torch.nn.Linear(64, HIDDEN), torch.nn.ReLU()
            self.fc2 = torch.nn.Linear(HIDDEN, 10)

        def forward(self, x):
            return self.dequant(self.fc2(self.relu1(self.fc1(self.quant(x)))))

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv = torch.nn.Conv2d(1, CHANNELS, 3, padding=1)
            self.bn, self.relu = torch.nn.BatchNorm2d(CHANNELS), torch.nn.ReLU()
            self.flat, self.fc = torch.nn.Flatten(), torch.nn.Linear(CHANNELS * 64, 10)

        def forward(self, x):
            x = self.relu(self.bn(self.conv(self.quant(x))))
            return self.dequant(self.fc(self.flat(x)))

    return (MLP if kind == "mlp" else CNN)().train()


def _nnx_model(kind: str):
    from flax import nnx

    from jaxopt_port import quantization as Q

    rngs = nnx.Rngs(0)

    class MLP(nnx.Module):
        def __init__(self):
            self.quant, self.dequant = Q.QuantStub(), Q.DeQuantStub()
            self.fc1, self.relu1 = nnx.Linear(64, HIDDEN, rngs=rngs), Q.ReLU()
            self.fc2 = nnx.Linear(HIDDEN, 10, rngs=rngs)

        def __call__(self, x):
            return self.dequant(self.fc2(self.relu1(self.fc1(self.quant(x)))))

    class CNN(nnx.Module):
        def __init__(self):
            self.quant, self.dequant = Q.QuantStub(), Q.DeQuantStub()
            self.conv = nnx.Conv(1, CHANNELS, (3, 3), padding=1, rngs=rngs)
            # torch's BatchNorm2d: momentum 0.1 is Flax's 0.9
            self.bn = nnx.BatchNorm(CHANNELS, momentum=0.9, epsilon=1e-5, rngs=rngs)
            self.relu, self.flat = Q.ReLU(), Q.Flatten()
            self.fc = nnx.Linear(CHANNELS * 64, 10, rngs=rngs)

        def __call__(self, x):
            x = self.relu(self.bn(self.conv(self.quant(x))))
            return self.dequant(self.fc(self.flat(x)))

    return (MLP if kind == "mlp" else CNN)()


FUSE = {"mlp": [["fc1", "relu1"]], "cnn": [["conv", "bn", "relu"]]}
QAT_LAYERS = {"mlp": ("fc1", "fc2"), "cnn": ("conv", "fc")}


def _layouts(tensor_name: str, ndim: int) -> Callable[[np.ndarray], np.ndarray]:
    if tensor_name.endswith("weight") and "bn" not in tensor_name:
        return (lambda a: a.T) if ndim == 2 else (lambda a: a.transpose(2, 3, 1, 0))
    return lambda a: a


def tensors(torch_model, nnx_model, kind: str) -> Iterator[tuple[str, Any, Any, Callable]]:
    """`(name, torch tensor, NNX variable, torch layout → Flax layout)` for every parameter and
    BatchNorm statistic of the prepared twins."""
    for layer in QAT_LAYERS[kind]:
        t, j = getattr(torch_model, layer), getattr(nnx_model, layer).module
        pairs = [("weight", t.weight, j.kernel if hasattr(j, "kernel") else j.conv.kernel)]
        bias = j.bias if hasattr(j, "kernel") else j.conv.bias
        pairs.append(("bias", t.bias, bias))
        if hasattr(t, "bn"):
            pairs += [
                ("bn.weight", t.bn.weight, j.bn.scale),
                ("bn.bias", t.bn.bias, j.bn.bias),
                ("bn.running_mean", t.bn.running_mean, j.bn.mean),
                ("bn.running_var", t.bn.running_var, j.bn.var),
            ]
        for name, tensor, variable in pairs:
            yield f"{layer}.{name}", tensor, variable, _layouts(name, tensor.dim())


def fake_quants(torch_model, nnx_model, kind: str) -> Iterator[tuple[str, Any, Any]]:
    """`(name, torch fake-quant module, NNX state variable)` for every fake-quantizer."""
    yield (
        "quant",
        torch_model.quant.activation_post_process,
        nnx_model.quant.activation_post_process,
    )
    for layer in QAT_LAYERS[kind]:
        t, j = getattr(torch_model, layer), getattr(nnx_model, layer)
        yield f"{layer}.weight_fake_quant", t.weight_fake_quant, j.module.weight_fake_quant
        yield (
            f"{layer}.activation_post_process",
            t.activation_post_process,
            j.activation_post_process,
        )


def load_torch_state(nnx_model, torch_model, kind: str) -> None:
    """Copy torch's parameters, BatchNorm statistics and fake-quantizer buffers into the NNX
    twin (in place)."""
    import jax.numpy as jnp

    def like(old, value):
        old = jnp.asarray(old)
        # a copy: JAX may alias a NumPy buffer on CPU, and torch updates its tensors in place
        return jnp.array(np.array(value), old.dtype).reshape(old.shape)

    for _, tensor, variable, layout in tensors(torch_model, nnx_model, kind):
        variable.set_value(like(variable[...], layout(tensor.detach().numpy())))
    for _, fq, variable in fake_quants(torch_model, nnx_model, kind):
        state = variable.get_value()
        obs = fq.activation_post_process
        observer = state.observer._replace(
            min_val=like(state.observer.min_val, obs.min_val.numpy()),
            max_val=like(state.observer.max_val, obs.max_val.numpy()),
        )
        variable.set_value(
            state._replace(
                observer=observer,
                scale=like(state.scale, fq.scale.numpy()),
                zero_point=like(state.zero_point, fq.zero_point.numpy()),
                fake_quant_enabled=like(state.fake_quant_enabled, fq.fake_quant_enabled.numpy()),
                observer_enabled=like(state.observer_enabled, fq.observer_enabled.numpy()),
            )
        )


def twins(kind: str, seed: int = 0):
    """The prepared QAT twins `(torch_model, nnx_model)` with the same initial weights."""
    import jax.numpy as jnp
    import torch.ao.quantization as tq

    from jaxopt_port import quantization as Q

    torch_model, nnx_model = _torch_model(kind, seed), _nnx_model(kind)
    for layer in QAT_LAYERS[kind]:
        t, j = getattr(torch_model, layer), getattr(nnx_model, layer)
        j.kernel.set_value(jnp.array(_layouts("weight", t.weight.dim())(t.weight.detach().numpy())))
        j.bias.set_value(jnp.array(t.bias.detach().numpy()))
    fused = tq.fuse_modules_qat(torch_model, FUSE[kind])
    fused.qconfig = tq.get_default_qat_qconfig("x86")
    prepared = tq.prepare_qat(fused)
    return prepared, Q.prepare_qat(Q.fuse_modules_qat(nnx_model, FUSE[kind]))


def _ulps(a, b) -> int:
    a = np.asarray(a, np.float32).ravel().view(np.int32).astype(np.int64)
    b = np.asarray(b, np.float32).ravel().view(np.int32).astype(np.int64)
    return int(np.max(np.abs(a - b), initial=0))


def compare(torch_model, nnx_model, kind: str) -> dict[str, float]:
    """This step's largest parameter / statistic difference, scale difference in float32 ulps
    and zero-point difference over all fake-quantizers."""
    param = max(
        float(np.max(np.abs(layout(t.detach().numpy()) - np.asarray(v[...]))))
        for _, t, v, layout in tensors(torch_model, nnx_model, kind)
    )
    ulps, zp = 0, 0
    for _, fq, variable in fake_quants(torch_model, nnx_model, kind):
        state = variable.get_value()
        ulps = max(ulps, _ulps(fq.scale.numpy(), state.scale))
        dz = np.abs(fq.zero_point.numpy().astype(np.int64) - np.asarray(state.zero_point))
        zp = max(zp, int(np.max(dz)))
    return {"param": param, "scale_ulps": ulps, "zero_point": zp}


def train(
    kind: str,
    steps: int = 50,
    *,
    lr: float = 0.1,
    batch: int = 64,
    seed: int = 0,
    teacher_forced: bool = False,
    toggles: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Train both twins with SGD on the same batches; compare after every step.

    Args:
        kind: `"mlp"` or `"cnn"`.
        steps: SGD steps.
        lr: Learning rate.
        batch: Rows per step.
        seed: Weights and batch order.
        teacher_forced: After each comparison, copy torch's state into the NNX twin, so that
            every step starts from the same state (float drift cannot accumulate).
        toggles: Step → `"disable_observer"` or `"freeze_bn_stats"`, applied to both before
            that step (torch: `model.apply(...)`).

    Returns:
        `torch`, `nnx` (the trained twins), `records` (one `compare` dict per step).
    """
    import jax.numpy as jnp
    import optax
    import torch
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.quantization as tq
    from flax import nnx

    from jaxopt_port import optim
    from jaxopt_port import quantization as Q

    torch_model, nnx_model = twins(kind, seed)
    x, y = digits()
    rng = np.random.default_rng(seed)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=lr)
    optimizer = nnx.Optimizer(nnx_model, optim.sgd(lr=lr), wrt=nnx.Param)

    def loss_fn(model, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    @nnx.jit
    def step(model, optimizer, xb, yb):
        optimizer.update(model, nnx.grad(loss_fn)(model, xb, yb))

    records = []
    for i in range(steps):
        toggle = (toggles or {}).get(i)
        if toggle == "disable_observer":
            torch_model.apply(tq.disable_observer)
            Q.disable_observer(nnx_model)
        elif toggle == "freeze_bn_stats":
            torch_model.apply(nniqat.freeze_bn_stats)
            Q.freeze_bn_stats(nnx_model)
        idx = rng.choice(len(x), batch, replace=False)
        xt, xj = inputs(kind, x[idx])
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(torch_model(xt), torch.from_numpy(y[idx])).backward()
        torch_opt.step()
        step(nnx_model, optimizer, xj, jnp.asarray(y[idx]))
        records.append(compare(torch_model, nnx_model, kind))
        if teacher_forced:
            load_torch_state(nnx_model, torch_model, kind)
    return {"torch": torch_model, "nnx": nnx_model, "records": records}


def converted_logits(torch_model, nnx_model, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits of both converted int8 models on all 1797 digits (torch's `convert` on an
    `eval()` copy, so the twins stay trainable)."""
    import copy

    import torch
    import torch.ao.quantization as tq

    from jaxopt_port import quantization as Q

    xt, xj = inputs(kind, digits()[0])
    converted = tq.convert(copy.deepcopy(torch_model).eval())
    with torch.no_grad():
        theirs = converted(xt).numpy()
    return theirs, np.asarray(_apply(Q.convert(nnx_model), xj))


def int8_outputs(logits: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A converted model's quint8 outputs back from its dequantized logits $(q - z)s$."""
    return np.rint(logits / np.float32(scale)).astype(np.int64) + int(zero_point)


def _apply(model, x):
    from flax import nnx

    return nnx.jit(lambda m, v: m(v))(model, x)
