"""Model-level pruning: params pytrees and NNX by path pattern, torch's pruned state_dict
(weight_orig/weight_mask) to NNX and back, channel removal, sparse export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch.nn.utils import prune as tprune

from jaxopt_port import pruning


def twins():
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(12, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, 3),
    )
    jmodel = nnx.Sequential(
        nnx.Linear(12, 16, rngs=nnx.Rngs(0)),
        nnx.relu,
        nnx.Linear(16, 10, rngs=nnx.Rngs(1)),
        nnx.relu,
        nnx.Linear(10, 3, rngs=nnx.Rngs(2)),
    )
    return tmodel, jmodel


def test_torch_pruned_state_dict_to_nnx_and_back():
    tmodel, jmodel = twins()
    tprune.l1_unstructured(tmodel[0], "weight", 0.4)
    tprune.ln_structured(tmodel[2], "weight", 0.3, 2, 0)
    tprune.l1_unstructured(tmodel[2], "bias", 3)
    masks = pruning.masks_from_torch(jmodel, tmodel.state_dict())
    params = nnx.as_pure(nnx.state(jmodel, nnx.Param))
    # the masks are the ones prune_tree computes in Flax layout, path patterns selecting
    again = pruning.prune_tree(
        params, pruning.l1_unstructured, 0.4, select="layers/0/kernel", layout="flax"
    )
    again = pruning.prune_tree(
        params,
        pruning.ln_structured,
        0.3,
        2,
        0,
        select="layers/2/kernel",
        layout="flax",
        masks=again,
    )
    again = pruning.prune_tree(
        params, pruning.l1_unstructured, 3, select="layers/2/bias", masks=again
    )
    for got, want in zip(
        jax.tree_util.tree_leaves(masks), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert masks["layers"][4]["kernel"] is None
    # the effective NNX model computes torch's pruned model's outputs
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    nnx.update(jmodel, pruning.apply_masks(params, masks))
    np.testing.assert_allclose(
        jmodel(jnp.asarray(x)), tmodel(torch.from_numpy(x)).detach().numpy(), atol=1e-6
    )  # measured 4.8e-7
    # back: a torch model pruned the same way (identity) loads the NNX model's pruned state dict
    nnx.update(jmodel, params)  # the _orig values again
    sd = pruning.pruned_state_dict(jmodel, masks)
    fresh, _ = twins()
    for layer, name in ((fresh[0], "weight"), (fresh[2], "weight"), (fresh[2], "bias")):
        tprune.identity(layer, name)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    for key, value in tmodel.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy())


def test_prune_tree_global_and_random_and_errors():
    rng = np.random.default_rng(1)
    params = {
        "a": {"kernel": jnp.asarray(rng.standard_normal((4, 6)))},
        "b": {"kernel": jnp.asarray(rng.standard_normal((6, 3))), "bias": jnp.zeros(3)},
    }
    masks = pruning.prune_tree(params, pruning.global_unstructured, 0.5, layout="flax")
    flat = pruning.global_unstructured([params["a"]["kernel"].T, params["b"]["kernel"].T], 0.5)
    np.testing.assert_array_equal(masks["a"]["kernel"], flat[0].T)
    np.testing.assert_array_equal(masks["b"]["kernel"], flat[1].T)
    assert masks["b"]["bias"] is None and pruning.is_pruned(masks)
    masks = pruning.prune_tree(
        params, pruning.random_structured, 1, 0, key=jax.random.key(0), layout="flax"
    )
    assert int((np.asarray(masks["a"]["kernel"]).sum(0) == 0).sum()) == 1  # one output neuron
    with pytest.raises(ValueError, match="selects no parameter"):
        pruning.prune_tree(params, pruning.l1_unstructured, 1, select="nothing/*")
