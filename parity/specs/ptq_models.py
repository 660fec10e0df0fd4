"""Twin models for post-training int8 quantization: torch eager-mode models with
`QuantStub`/`DeQuantStub` and their Flax NNX twins, the same float weights on both sides.

Used by the quantization section's PTQ model rows (`parity.run.quantization`) and by
`tests/test_quantization_ptq.py`. The twins run digits (`digits()`: 1797 images, float32 in
$[0, 1]$, multiples of $1/16$); the CNNs take images channels first in torch and channels last in
NNX (`images()` gives both).

`dyadic=True` rounds every weight and bias to a multiple of $2^{-5}$: with digits' inputs the
float forward is then exact in float32 in any summation order, so calibration sees the same
activations in torch and XLA (whose float GEMMs otherwise differ in the last bits, which can move
a calibrated range, and with it a scale, by one ulp).

Each builder returns `(torch_model, nnx_model)` in eval mode; the x86 engine
(`torch.backends.quantized.engine = "x86"`) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.ao.quantization as tq
from flax import nnx
from torch import nn

from jaxopt_port import interop
from jaxopt_port import quantization as Q
from parity.specs.problems import digits as _digits

__all__ = ["cnn_twins", "digits", "images", "mlp_twins", "residual_twins"]


def digits() -> np.ndarray:
    """scikit-learn's digits as a `(1797, 64)` float32 array in $[0, 1]$."""
    return _digits()[0].astype(np.float32)


def images(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened digits as images: `(NHWC for NNX, NCHW for torch)`."""
    return x.reshape(-1, 8, 8, 1), x.reshape(-1, 1, 8, 8)


def _round_dyadic(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 32) / 32)


def _twin(torch_model: nn.Module, make: Callable[[], nnx.Module], dyadic: bool):
    """The NNX twin is built abstractly (`nnx.eval_shape`: Flax's initializers would compile a
    dozen small programs just to be overwritten) and filled with torch's weights."""
    torch_model.eval()
    if dyadic:
        _round_dyadic(torch_model)
    model = nnx.eval_shape(make)
    interop.weights_from_torch(model, torch_model.state_dict())
    return torch_model, model


def mlp_twins(seed: int = 0, dyadic: bool = False) -> tuple[nn.Sequential, nnx.Sequential]:
    """Digits MLP 64-128-64-10 with ReLUs, between `QuantStub` and `DeQuantStub`; torch's
    initialisation from `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    torch_model = nn.Sequential(
        tq.QuantStub(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
        tq.DeQuantStub(),
    )

    def make():
        rngs = nnx.Rngs(0)
        return nnx.Sequential(
            Q.QuantStub(),
            nnx.Linear(64, 128, rngs=rngs),
            nnx.relu,
            nnx.Linear(128, 64, rngs=rngs),
            nnx.relu,
            nnx.Linear(64, 10, rngs=rngs),
            Q.DeQuantStub(),
        )

    return _twin(torch_model, make, dyadic)


def cnn_twins(seed: int = 0, dyadic: bool = True) -> tuple[nn.Sequential, nnx.Sequential]:
    """A small CNN on 8×8 digits: Conv2d(1, 8, 3, padding 1) - ReLU - Conv2d(8, 4, 3, stride 2)
    - ReLU - Flatten (torch's channels-first order) - Linear(36, 10)."""
    torch.manual_seed(seed)
    torch_model = nn.Sequential(
        tq.QuantStub(),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(36, 10),
        tq.DeQuantStub(),
    )

    def make():
        rngs = nnx.Rngs(0)
        return nnx.Sequential(
            Q.QuantStub(),
            nnx.Conv(1, 8, (3, 3), padding=1, rngs=rngs),
            nnx.relu,
            nnx.Conv(8, 4, (3, 3), strides=2, padding="VALID", rngs=rngs),
            nnx.relu,
            Q.Flatten(),
            nnx.Linear(36, 10, rngs=rngs),
            Q.DeQuantStub(),
        )

    return _twin(torch_model, make, dyadic)


class TorchResidual(nn.Module):
    """`fc2(x + relu(fc1(x)))` on digits, the skip through `FloatFunctional.add`."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc1 = nn.Linear(64, 64)
        self.relu = nn.ReLU()
        self.skip = torch.ao.nn.quantized.FloatFunctional()
        self.fc2 = nn.Linear(64, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        return self.dequant(self.fc2(self.skip.add(x, self.relu(self.fc1(x)))))


class Residual(nnx.Module):
    """`TorchResidual`'s twin, the skip through `quantization.Add`."""

    def __init__(self, rngs: nnx.Rngs):
        self.quant = Q.QuantStub()
        self.fc1 = nnx.Linear(64, 64, rngs=rngs)
        self.relu = Q.ReLU()
        self.skip = Q.Add()
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)
        self.dequant = Q.DeQuantStub()

    def __call__(self, x):
        x = self.quant(x)
        return self.dequant(self.fc2(self.skip(x, self.relu(self.fc1(x)))))


def residual_twins(seed: int = 0, dyadic: bool = True) -> tuple[TorchResidual, Residual]:
    """The residual MLP (`TorchResidual`, `Residual`)."""
    torch.manual_seed(seed)
    return _twin(TorchResidual(), lambda: Residual(nnx.Rngs(0)), dyadic)
