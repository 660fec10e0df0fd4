"""A torch CNN with AdamW (two param groups) and a cosine schedule, moved to Flax NNX mid-run, and back.

The journey of docs/migration.md in one script: torch trains 4 steps; the weights go into an NNX
twin (`interop.weights_from_torch`), the optimizer state into an `nnx.Optimizer`
(`interop.nnx_optimizer_from_torch`, matched by name and laid out as the weights); JAX trains 3
steps; everything goes back (`interop.weights_to_torch`, `interop.nnx_optimizer_to_torch`,
`interop.position_scheduler`) and torch trains 3 more. The result is compared with 10 torch steps in
a row, in float64 (measured 2.2e-16); exits 1 if the gap exceeds 1e-12.

    python examples/torch_nnx_round_trip.py

Runs unchanged on CPU, GPU or TPU (JAX's default device; torch on the CPU).
"""

from __future__ import annotations

import copy
import sys

import jax
import jax.numpy as jnp
import optax
import torch
from flax import nnx
from sklearn.datasets import load_digits

from jaxopt_port import interop, optim, schedules, transforms

jax.config.update("jax_enable_x64", True)  # float64 on both sides: the numbers match to ~1e-16
torch.set_default_dtype(torch.float64)


class TorchCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class NnxCNN(nnx.Module):
    """The twin: the same attribute names, channels-last inside, flattened in torch's order."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(1, 8, (3, 3), padding=[(1, 1)] * 2, use_bias=False, rngs=rngs)
        momentum = interop.flax_batchnorm_momentum(0.1)
        self.bn = nnx.BatchNorm(8, momentum=momentum, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(8 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # x: NHWC
        h = nnx.relu(self.bn(self.conv(x)))
        return self.fc(h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1))  # torch flattens C, H, W


def torch_training(model: torch.nn.Module) -> tuple:
    """AdamW without weight decay on biases and norms, and a cosine schedule stepped per batch."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, weight_decay=0.05
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)


def torch_step(model, optimizer, scheduler, xb, yb) -> None:
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.tensor(xb)), torch.tensor(yb)).backward()
    optimizer.step()
    scheduler.step()


@nnx.jit
def jax_step(model: NnxCNN, optimizer: nnx.Optimizer, xb: jax.Array, yb: jax.Array) -> None:
    def loss(m: NnxCNN) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()

    optimizer.update(model, nnx.grad(loss)(model))


def main() -> int:
    digits = load_digits()
    x, y = (digits.data / 16.0).reshape(-1, 1, 8, 8), digits.target
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 640, 64)]  # 10 steps

    torch.manual_seed(0)
    model = TorchCNN()
    start = copy.deepcopy(model.state_dict())
    optimizer, scheduler = torch_training(model)
    for xb, yb in batches[:4]:  # 4 steps in torch
        torch_step(model, optimizer, scheduler, xb, yb)

    # torch -> NNX: the weights, then the optimizer state (matched by name, laid out as the weights)
    nnx_model = nnx.eval_shape(lambda: NnxCNN(nnx.Rngs(0)))
    interop.weights_from_torch(nnx_model, model.state_dict())
    tx = transforms.no_weight_decay(  # torch's two groups, chosen by NNX path (biases, norms)
        optim.adamw, lr=schedules.cosine_annealing_lr(1e-2, T_max=10), weight_decay=0.05
    )
    nnx_optimizer = interop.nnx_optimizer_from_torch(optimizer, nnx_model, tx, torch_model=model)
    for xb, yb in batches[4:7]:  # 3 steps in JAX
        jax_step(nnx_model, nnx_optimizer, jnp.asarray(xb.transpose(0, 2, 3, 1)), jnp.asarray(yb))

    # NNX -> torch: the weights, the optimizer state (a plain load_state_dict), the scheduler
    back = TorchCNN()
    back.load_state_dict(interop.weights_to_torch(nnx_model))
    back_optimizer, back_scheduler = torch_training(back)
    back_optimizer.load_state_dict(
        interop.nnx_optimizer_to_torch(nnx_optimizer, nnx_model, back_optimizer, torch_model=back)
    )
    interop.position_scheduler(back_scheduler, nnx.as_pure(nnx_optimizer.opt_state))
    for xb, yb in batches[7:]:  # 3 more steps in torch
        torch_step(back, back_optimizer, back_scheduler, xb, yb)

    # the same 10 steps in torch alone
    reference = TorchCNN()
    reference.load_state_dict(start)
    ref_optimizer, ref_scheduler = torch_training(reference)
    for xb, yb in batches:
        torch_step(reference, ref_optimizer, ref_scheduler, xb, yb)
    gap = max(
        (a - b).abs().max().item()
        for a, b in zip(back.parameters(), reference.parameters(), strict=True)
    )
    print(f"torch 4 + JAX 3 + torch 3 steps vs torch 10 steps: largest weight difference {gap:.1e}")
    return 0 if gap <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
