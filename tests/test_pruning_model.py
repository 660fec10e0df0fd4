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
    )  # measured 3.0e-8
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


def test_shrink_linear_chain_equals_masked_model():
    rng = np.random.default_rng(2)
    first, second = nnx.Linear(12, 16, rngs=nnx.Rngs(0)), nnx.Linear(16, 5, rngs=nnx.Rngs(1))
    first.bias[...] = jnp.asarray(rng.standard_normal(16), jnp.float32)
    kernel_mask = pruning.ln_structured(first.kernel[...].T, 0.5, 2, 0).T  # 8 of 16 neurons
    keep = pruning.kept_channels(kernel_mask)
    assert keep.sum() == 8
    masked = nnx.Linear(12, 16, rngs=nnx.Rngs(0))
    masked.kernel[...] = first.kernel[...] * kernel_mask
    masked.bias[...] = first.bias[...] * pruning.channel_mask(keep, first.bias[...])
    small_first, small_second = pruning.shrink_linear(masked, second, keep)
    assert small_first.kernel[...].shape == (12, 8) and small_second.kernel[...].shape == (8, 5)
    x = jnp.asarray(rng.standard_normal((32, 12)), jnp.float32)
    full = second(nnx.relu(masked(x)))
    small = small_second(nnx.relu(small_first(x)))
    np.testing.assert_allclose(small, full, atol=1e-6)  # measured 1.2e-7 (float32)


def test_shrink_conv_bn_conv_equals_masked_model():
    rng = np.random.default_rng(3)
    conv = nnx.Conv(3, 8, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    bn = nnx.BatchNorm(8, use_running_average=True, rngs=nnx.Rngs(0))
    bn.mean[...] = jnp.asarray(rng.standard_normal(8), jnp.float32)
    bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, 8), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.standard_normal(8), jnp.float32)
    nxt = nnx.Conv(8, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(1))
    # torch layout (out, in, kh, kw): prune 3 of 8 output channels by L1 norm
    torch_kernel = jnp.moveaxis(conv.kernel[...], (-1, -2), (0, 1))
    keep = pruning.kept_channels(pruning.ln_structured(torch_kernel, 3, 1, 0), axis=0)
    assert keep.sum() == 5
    cm = pruning.channel_mask(keep, conv.kernel[...])
    conv.kernel[...] = conv.kernel[...] * cm
    conv.bias[...] = conv.bias[...] * pruning.channel_mask(keep, conv.bias[...])
    bn.scale[...] = bn.scale[...] * pruning.channel_mask(keep, bn.scale[...])
    bn.bias[...] = bn.bias[...] * pruning.channel_mask(keep, bn.bias[...])
    small = pruning.shrink_conv_bn(conv, bn, nxt, keep)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)), jnp.float32)
    chain = nnx.jit(lambda c, b, n, x: n(nnx.relu(b(c(x)))))  # one compilation per model
    full = chain(conv, bn, nxt, x)
    out = chain(*small, x)
    np.testing.assert_allclose(out, full, atol=1e-6)  # measured 0.0 (float32)
    assert small[0].kernel[...].shape[-1] == 5 and small[2].kernel[...].shape[-2] == 5


def test_sparse_export_round_trips_with_size_ratio():
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)
    w24 = w * pruning.n_m_sparsifier(2, 4).update_mask(w, jnp.ones_like(w))
    values, positions = pruning.pack_n_m(w24)
    np.testing.assert_array_equal(pruning.unpack_n_m(values, positions), w24)
    assert pruning.size_ratio((values, positions), w24) == 0.625  # 2 of 4 values + 1 byte each
    w90 = w * pruning.l1_unstructured(w, 0.9)
    bcoo = pruning.to_bcoo(w90)
    np.testing.assert_array_equal(bcoo.todense(), w90)
    # 51 of 512 kept: 4 bytes of value + 2 int32 indices each
    assert pruning.size_ratio(bcoo, w90) == pytest.approx(51 * 12 / (512 * 4))
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        pruning.pack_n_m(w)
