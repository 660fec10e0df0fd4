"""The names of release 0.1 still work for one release, warn, and do what the new names do."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxopt_port import interop, optim  # noqa: E402


def _layer(seed: int) -> nnx.Linear:
    return nnx.Linear(3, 2, rngs=nnx.Rngs(seed))


def test_old_weight_names_warn_and_match_the_new_ones():
    torch.manual_seed(0)
    source = torch.nn.Linear(3, 2)
    new, old = _layer(1), _layer(2)
    interop.weights_from_torch(new, source.state_dict())
    with pytest.warns(
        DeprecationWarning,
        match=r"interop\.load_torch_state_dict is deprecated.*weights_from_torch",
    ):
        interop.load_torch_state_dict(old, source.state_dict())
    np.testing.assert_array_equal(old.kernel[...], new.kernel[...])
    np.testing.assert_array_equal(new.kernel[...], source.weight.detach().numpy().T)
    with pytest.warns(
        DeprecationWarning, match=r"interop\.torch_state_dict is deprecated.*weights_to_numpy"
    ):
        arrays = interop.torch_state_dict(old)
    tensors = interop.weights_to_torch(old)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())  # as before: NumPy
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert all(np.array_equal(arrays[k], tensors[k].numpy()) for k in tensors)
    assert torch.equal(tensors["weight"], source.weight.detach())


def test_old_optimizer_state_name_warns_and_loads_the_same_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    params = [jnp.asarray(p.detach().numpy()) for p in model.parameters()]
    tx = optim.adam(lr=0.1)
    state = tx.init(params)
    _, state = tx.update([jnp.ones_like(p) for p in params], state, params)
    loaded = []
    for load in (interop.optimizer_state_into_torch, interop.load_into_torch):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        if load is interop.load_into_torch:
            with pytest.warns(
                DeprecationWarning,
                match=r"load_into_torch is deprecated.*optimizer_state_into_torch",
            ):
                load(optimizer, state, tx, params)
        else:
            load(optimizer, state, tx, params)
        loaded.append(optimizer.state_dict()["state"])
    assert loaded[0].keys() == loaded[1].keys() == {0, 1}
    for i in loaded[0]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(loaded[0][i][key], loaded[1][i][key])
        assert torch.equal(loaded[0][i]["exp_avg"], torch.full_like(loaded[0][i]["exp_avg"], 0.1))


def test_old_state_class_names_warn():
    with pytest.warns(
        DeprecationWarning, match=r"ScaleByNAdamState is deprecated.*ScaleByNadamState"
    ):
        from jaxopt_port.optim.nadam import ScaleByNAdamState
    with pytest.warns(
        DeprecationWarning, match=r"ScaleByRAdamState is deprecated.*ScaleByRadamState"
    ):
        from jaxopt_port.optim.radam import ScaleByRAdamState
    assert ScaleByNAdamState is optim.ScaleByNadamState
    assert ScaleByRAdamState is optim.ScaleByRadamState
