"""Every invalid value torch rejects is rejected here with torch's exact message."""

from __future__ import annotations

import pytest
import torch

from jaxopt_port import optim
from parity.optim_specs import SPECS

TENSOR = "tensor"  # placeholder in the spec table for a 1-element tensor hyperparameter


def _materialize(value):
    if value == TENSOR:
        return torch.tensor(0.001)
    if isinstance(value, tuple):
        return tuple(_materialize(v) for v in value)
    return value


def _torch_message(torch_cls, kwargs):
    with pytest.raises(ValueError) as info:
        torch_cls([torch.zeros(2, 2, requires_grad=True)], **kwargs)
    return str(info.value)


INVALID = [
    pytest.param(s, kwargs, id=f"{s.name}-{'-'.join(f'{k}={v}' for k, v in kwargs.items())}")
    for s in SPECS
    for kwargs in (*s.invalid, {"lr": "tensor2"})
]


@pytest.mark.parametrize(("s", "kwargs"), INVALID)
def test_invalid_value_rejected_with_torch_message(s, kwargs):
    kwargs = {k: _materialize(v) for k, v in kwargs.items()}
    if kwargs.get("lr") == "tensor2":
        kwargs["lr"] = torch.tensor([1e-3, 1e-3])
    expected = _torch_message(getattr(torch.optim, s.torch_cls), kwargs)
    with pytest.raises(ValueError) as info:
        getattr(optim, s.name)(**kwargs)
    assert str(info.value) == expected


def _torch_db_errors():
    from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db

    cases = []
    for info in optim_db:
        spec_names = [s.name for s in SPECS if s.torch_cls == info.optim_cls.__name__]
        if not spec_names:
            continue
        for error in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
            oi = error.optimizer_error_input
            if oi.params is None and error.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
                cases.append(
                    pytest.param(spec_names[0], oi.kwargs, error, id=f"{spec_names[0]}-{oi.desc}")
                )
    return cases


@pytest.mark.parametrize(("name", "kwargs", "error"), _torch_db_errors())
def test_torch_optim_db_error_inputs(name, kwargs, error):
    with pytest.raises(error.error_type, match=error.error_regex):
        getattr(optim, name)(**kwargs)


def test_muon_rejects_non_matrix_parameters_like_torch():
    import jax.numpy as jnp

    with pytest.raises(ValueError) as info:
        torch.optim.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError) as ours:
        optim.muon().init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)})
    assert str(ours.value) == str(info.value)


def test_from_torch_rejects_a_params_tree_of_the_wrong_size():
    import jax.numpy as jnp

    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    tx = optim.from_torch(torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=0.01))
    with pytest.raises(
        ValueError, match=r"params has 3 leaves but the torch optimizer has 2 parameters"
    ):
        tx.init([jnp.zeros(2), jnp.zeros(3), jnp.zeros(1)])
