"""Every optimizer × every configuration: JAX vs torch vs the NumPy float64 reference.

Driven by ``parity.specs.optim.SPECS``: torch's own ``optim_db`` option combinations plus ours
(an lr schedule, two param groups, options optim_db leaves out).
"""

from __future__ import annotations

import dataclasses

import optax
import pytest

from parity.metric import F64_GATE
from parity.run.optim import max_difference, run_jax, run_reference, run_torch
from parity.specs import optim as optim_specs
from parity.specs.optim import SPECS, Config, configs_for, spec

# the hard float64 gate; measured worst: JAX vs torch 8.6e-13 and JAX vs the reference 9.0e-13
# (L-BFGS search direction, lr=0.001), torch vs the reference 2.7e-13; without L-BFGS all <= 4e-14

CASES = [pytest.param(s, c, id=f"{s.name}-{c.id}") for s in SPECS for c in configs_for(s)]


@pytest.mark.parametrize(("s", "config"), CASES)
def test_float64_jax_torch_and_the_reference_agree(s, config):
    torch_run = run_torch(s, config, "float64")
    jax_run = run_jax(s, config, "float64")
    reference_run = run_reference(s, config)
    for pair, (a, b) in {
        "JAX vs torch": (jax_run, torch_run),
        "JAX vs the NumPy reference": (jax_run, reference_run),
        "torch vs the NumPy reference": (torch_run, reference_run),
    }.items():
        diff, where = max_difference(a, b)
        assert diff <= F64_GATE, f"{pair}: {diff:.3g} at {where}"


@pytest.mark.parametrize(("s", "config"), CASES)
def test_float32_within_measured_tolerance(s, config):
    diff, where = max_difference(
        run_jax(s, config, "float32"), run_torch(s, config, "float32"), state=False
    )
    assert diff <= s.f32_atol, (
        f"float32 JAX vs torch: {diff:.3g} at {where} (tolerance {s.f32_atol})"
    )


def test_every_torch_optimizer_has_a_spec():
    import torch

    torch_names = {
        name
        for name in dir(torch.optim)
        if isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
        and name != "Optimizer"
    }
    assert torch_names == {s.torch_cls for s in SPECS}
    assert len(torch_names) == 15


def test_epsilon_inside_the_root_is_caught(monkeypatch):
    """A deliberately wrong Adam (the textbook ε placement) must fail the float64 gate."""
    from jaxopt_port import optim

    def wrong_adam(lr=1e-3, eps=1e-8, **kwargs):
        return optax.chain(
            optim.scale_by_adam(eps=eps, eps_in_sqrt=True), optim.scale_by_learning_rate(lr)
        )

    s = spec("adam")
    config = Config("large eps", {"lr": 0.01, "eps": 1e-3})
    torch_run = run_torch(s, config)
    reference_run = run_reference(s, config)
    monkeypatch.setattr(optim, "adam", wrong_adam)
    wrong = run_jax(s, config)
    for against, run in (("torch", torch_run), ("the reference", reference_run)):
        diff, where = max_difference(wrong, run)
        assert diff > 1e-4, f"ε inside the root not caught by {against} ({diff:.3g} at {where})"


def test_lr_one_step_late_is_caught(monkeypatch):
    """Shifting the lr schedule by one step must fail the gate: torch's timing is matched exactly."""
    s = dataclasses.replace(spec("sgd"), steps=20)
    config = Config("scheduled", {"lr": 0.05, "momentum": 0.9}, schedule="decay")
    torch_run = run_torch(s, config)
    decay = optim_specs.SCHEDULES["decay"]
    monkeypatch.setitem(optim_specs.SCHEDULES, "decay", lambda k: decay(k + 1))
    diff, where = max_difference(run_jax(s, config), torch_run)
    assert diff > 1e-6, f"a one-step-late lr was not caught ({diff:.3g} at {where})"


@pytest.mark.parametrize("s", SPECS, ids=[s.name for s in SPECS])
def test_from_torch_of_a_live_optimizer_matches_torch(s):
    """``optim.from_torch`` of a torch optimizer built with non-default options (the first such
    configuration in the table) trains as torch does, float64, ≤ 1e-12."""
    import torch

    from jaxopt_port import optim
    from parity.run.optim import torch_dtype
    from parity.specs.problems import make_problem

    config = next(c for c in configs_for(s) if c.kwargs and not c.schedule and not c.groups)
    with torch_dtype("float64"):
        params = [torch.nn.Parameter(torch.tensor(p)) for p in make_problem(s.problem, 1).params]
        torch_optimizer = getattr(torch.optim, s.torch_cls)(params, **config.kwargs)
    tx = optim.from_torch(torch_optimizer, **s.jax_extra_kwargs)
    diff, where = max_difference(run_jax(s, config, tx=tx), run_torch(s, config))
    assert diff <= F64_GATE, f"{config.id}: {diff:.3g} at {where}"
