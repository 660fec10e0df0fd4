"""`parity.compare`: check your own torch model against its Flax NNX twin while training.

Both models train side by side with the same optimizer (JAX runs
`jaxopt_port.optim.from_torch` of the torch optimizer and scheduler), and after every step the
parameters (by torch name) and every optimizer-state entry are compared. The training engine is
`parity.run.twin_training.train_twins`, shared with the suite's twin-model runs; its module
docstring says what is compared and why the JAX side optimizes torch's parameter layout.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from parity.metric import F64_GATE, gate_note
from parity.report.results import RunResult
from parity.run.twin_training import LOSSES, train_twins

__all__ = ["F32_USER_TOLERANCE", "compare"]

#: `compare`'s float32 tolerance when none is given. Not measured for the user's model: the
#: twin models measured up to 3.9e-5 (LSTM with Adagrad, `model_f32_atol` in parity.specs.optim) after 20
#: steps; float32 differences grow with the number of steps and the model's sensitivity, so
#: measure and pass `tolerance=` for a long or sensitive run.
F32_USER_TOLERANCE = 1e-4


def compare(
    torch_model: Any,
    flax_model: Any,
    *,
    optimizer: Callable[[list[Any]], Any],
    data: Iterable[Sequence[Any]],
    loss_fn: str | tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] | None = None,
    scheduler: Callable[[Any], Any] | None = None,
    steps: int | None = None,
    dtype: str | None = None,
    tolerance: float | None = None,
    load_weights: bool = True,
    name: str = "default",
) -> RunResult:
    """Train a torch model and its Flax NNX twin side by side and compare them after every step.

    torch runs the optimizer you build; JAX runs `jaxopt_port.optim.from_torch` of it (and
    of the scheduler), so the hyperparameters are the same by construction. After every step
    the parameters (by torch name) and every optimizer-state entry are compared (see the module
    docstring). Neither model is changed: torch trains a copy, JAX a functional copy. Muon's
    Newton–Schulz iteration runs in the parameter dtype on both sides during the comparison
    (torch's default bfloat16 matmuls and XLA's differ by ~3e-2 after a few steps).

    Args:
      torch_model: an `nn.Module`.
      flax_model: its twin as a `flax.nnx.Module`, laid out as
        `jaxopt_port.interop.weights` describes (attribute names = torch module names;
        `nnx.Linear` for `nn.Linear`, ...). It may be abstract (`nnx.eval_shape`).
      optimizer: `params -> torch optimizer` (`params` is `list(torch_model.parameters())`
        of the copy): a torch optimizer class (its defaults), ``functools.partial(torch.optim.
        AdamW, lr=1e-3)``, or a function building param groups; it may return several
        optimizers over disjoint parameters (e.g. Muon on the matrices, AdamW on the rest).
        Parameters in no optimizer are held constant. Pass `foreach=False` for torch's
        single-tensor reference kernels (the others differ from it by ~1e-15).
      data: batches `(*inputs, target)` of NumPy arrays or torch tensors: the models are
        called as `model(*inputs)` (the same arrays in both frameworks: an NNX model of a
        channels-first torch model transposes them itself).
      loss_fn: `"cross_entropy"` (default; integer class targets, mean over the batch),
        `"mse"`, or a pair `(torch_fn, jax_fn)`, each `(output, target) -> mean loss`.
      scheduler: `optimizer -> torch lr scheduler` for the first optimizer (e.g. ``lambda o:
        torch.optim.lr_scheduler.StepLR(o, 5)``), stepped after every optimizer step.
      steps: train on the first `steps` batches (default: all of `data`).
      dtype: `"float64"` or `"float32"` (default: the torch model's); both models are cast.
      tolerance: the bound on the worst scaled difference (default: the float64 gate
        `parity.metric.F64_GATE`, 1e-12, in float64; `F32_USER_TOLERANCE` in float32).
      load_weights: set the Flax model's weights from the torch model with
        `jaxopt_port.interop.weights_from_torch` first (default); with False its own
        weights are used (if they are not torch's, the comparison shows it from step 1).
      name: `RunResult.config`, to tell several comparisons apart in a report.

    Returns:
      A judged `parity.report.results.RunResult` (`kind="user"`, `model` = the torch class
      name): `result.passed`, `result.worst` and `result.where` (the step and the
      parameter or state entry; for a failing run the first step past the tolerance, followed by
      the finding of `parity.check_forward` on the first batch: the first module whose
      output differs, or that the forward passes agree), per-step `loss_torch`, `loss_jax`, `param_scaled`,
      `state_scaled`; `parity.report.write_report(directory, [result], meta)` renders it.

    Raises:
      ValueError: an unknown dtype or loss, weights the converter cannot load, L-BFGS with
        another optimizer.

    Examples:
      >>> import functools
      >>> import numpy as np
      >>> import torch
      >>> from flax import nnx
      >>> import parity
      >>> rng = np.random.default_rng(0)
      >>> data = [(rng.normal(size=(8, 4)), rng.integers(0, 3, 8)) for _ in range(5)]
      >>> result = parity.compare(
      ...     torch.nn.Linear(4, 3), nnx.Linear(4, 3, rngs=nnx.Rngs(0)),
      ...     optimizer=functools.partial(torch.optim.AdamW, lr=1e-2, foreach=False),
      ...     data=data, dtype="float64",
      ... )
      >>> result.passed
      True
    """
    import jax
    import torch
    from flax import nnx

    from jaxopt_port import interop
    from jaxopt_port.interop.weights import to_numpy

    start = time.perf_counter()
    given = torch_model, flax_model
    torch_model = copy.deepcopy(torch_model)
    if dtype is None:
        dtype = str(next(torch_model.parameters()).dtype).removeprefix("torch.")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}")
    loss_fn = "cross_entropy" if loss_fn is None else loss_fn
    if isinstance(loss_fn, str) and loss_fn not in LOSSES:
        raise ValueError(f"unknown loss {loss_fn!r}; expected one of {list(LOSSES)} or a pair")
    torch_model.to(getattr(torch, dtype))
    batches = [
        tuple(to_numpy(x) for x in batch)
        for batch in (data if steps is None else itertools.islice(data, steps))
    ]
    if dtype == "float64":
        default, note = (
            F64_GATE,
            gate_note("parameters and optimizer state"),
        )
    else:
        default = F32_USER_TOLERANCE
        note = "float32 default tolerance (not measured for this model), parameters"
    result = RunResult(
        "user", "", name, type(torch_model).__name__, dtype, len(batches),
        tolerance=default if tolerance is None else tolerance,
        tolerance_note=note if tolerance is None else "given by the caller",
    )  # fmt: skip
    with jax.enable_x64(dtype == "float64"):
        flax_model = nnx.clone(flax_model)  # the caller's model stays as it is
        if load_weights:
            interop.weights_from_torch(flax_model, torch_model.state_dict())
    device = str(next(torch_model.parameters()).device)
    train_twins(
        torch_model, flax_model, optimizer, batches, result, loss=loss_fn, scheduler=scheduler,
        device=device,
    )  # fmt: skip
    if not result.passed and batches:
        result.where += "; forward check on the first batch: " + _forward_finding(
            *given, batches[0][:-1], dtype, load_weights
        )
    result.seconds = time.perf_counter() - start
    return result


def _forward_finding(
    torch_model: Any, flax_model: Any, inputs: Sequence[Any], dtype: str, load_weights: bool
) -> str:
    """`parity.check_forward`'s one-line finding for a failed comparison (or why it could
    not run: it is a diagnosis, never a second failure)."""
    from parity.run.forward import check_forward

    try:
        check = check_forward(torch_model, flax_model, tuple(inputs), dtype=dtype, load_weights=load_weights)  # fmt: skip
    except Exception as error:
        return f"could not run ({type(error).__name__}: {error})"
    return check.summary()
