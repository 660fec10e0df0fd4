"""Every `torch.optim` optimizer as an Optax gradient transformation with torch's numbers.

Each factory takes torch's keyword names and defaults, refuses invalid arguments with torch's
exception types and messages (a `str` lr raises the `TypeError` torch's own comparison raises;
arguments torch only fails on inside `step()` are refused at construction), accepts a float or an
optax schedule for `lr` and returns an `optax.GradientTransformationExtraArgs` — a
[`TorchTransformation`][jaxopt_port.optim.TorchTransformation], which also carries the call's
arguments as torch's param-group hyperparameters, for `interop.optimizer_state_to_torch`. State
NamedTuples name their fields after torch's state keys;
[`per_param_state`][jaxopt_port.optim.per_param_state] shows any state the way `optimizer.state`
does.
"""

from jaxopt_port._core.state import per_param_state
from jaxopt_port._core.torch_groups import TorchTransformation, torch_factories
from jaxopt_port.optim import textbook
from jaxopt_port.optim._from_torch import factory_for, from_torch, torch_class_key
from jaxopt_port.optim._lowbit import (
    QuantizedAdamState,
    adam4bit,
    adam8bit,
    adam_fp8,
    adamw4bit,
    adamw8bit,
    adamw_fp8,
    quantized_adam,
    stochastic_round_to_bf16,
)
from jaxopt_port.optim._lowbit_quant import QuantizedArray
from jaxopt_port.optim._lowbit_wrap import QuantizedMomentsState, quantize_moments
from jaxopt_port.optim._primitives import (
    CountState,
    MomentumState,
    add_decoupled_weight_decay,
    add_weight_decay,
    maximize_gradient,
    scale_by_learning_rate,
    scale_by_momentum,
)
from jaxopt_port.optim.adadelta import ScaleByAdadeltaState, adadelta, scale_by_adadelta
from jaxopt_port.optim.adafactor import ScaleByAdafactorState, adafactor, scale_by_adafactor
from jaxopt_port.optim.adagrad import ScaleByAdagradState, adagrad, scale_by_adagrad
from jaxopt_port.optim.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from jaxopt_port.optim.adamax import ScaleByAdamaxState, adamax, scale_by_adamax
from jaxopt_port.optim.asgd import ScaleByAsgdState, asgd, scale_by_asgd
from jaxopt_port.optim.lbfgs import LBFGSState, lbfgs
from jaxopt_port.optim.muon import ScaleByMuonState, muon, scale_by_muon
from jaxopt_port.optim.nadam import ScaleByNadamState, nadam, scale_by_nadam
from jaxopt_port.optim.radam import ScaleByRadamState, radam, scale_by_radam
from jaxopt_port.optim.rmsprop import ScaleByRmsState, rmsprop, scale_by_rms
from jaxopt_port.optim.rprop import ScaleByRpropState, rprop, scale_by_rprop
from jaxopt_port.optim.sgd import sgd
from jaxopt_port.optim.sparse_adam import ScaleBySparseAdamState, scale_by_sparse_adam, sparse_adam

TORCH_CLASSES = torch_factories()
"""torch optimizer class -> its factory (what [`from_torch`][jaxopt_port.optim.from_torch] and
[`factory_for`][jaxopt_port.optim.factory_for] read; subclasses are read as their base): `"AdamW"`
for `torch.optim`'s classes, `"<package>.<Class>"` for other packages' (see
[`torch_class_key`][jaxopt_port.optim.torch_class_key])."""

OPTIMIZERS = tuple(sorted(f.__name__ for key, f in TORCH_CLASSES.items() if "." not in key))
"""The torch.optim optimizers available, by jaxopt_port name."""

__all__ = [
    "OPTIMIZERS",
    "TORCH_CLASSES",
    "CountState",
    "LBFGSState",
    "MomentumState",
    "QuantizedAdamState",
    "QuantizedArray",
    "QuantizedMomentsState",
    "ScaleByAdadeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAsgdState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleBySparseAdamState",
    "TorchTransformation",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adam4bit",
    "adam8bit",
    "adam_fp8",
    "adamax",
    "adamw",
    "adamw4bit",
    "adamw8bit",
    "adamw_fp8",
    "add_decoupled_weight_decay",
    "add_weight_decay",
    "asgd",
    "factory_for",
    "from_torch",
    "lbfgs",
    "maximize_gradient",
    "muon",
    "nadam",
    "per_param_state",
    "quantize_moments",
    "quantized_adam",
    "radam",
    "rmsprop",
    "rprop",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_sparse_adam",
    "sgd",
    "sparse_adam",
    "stochastic_round_to_bf16",
    "textbook",
    "torch_class_key",
]
