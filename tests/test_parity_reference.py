"""The NumPy float64 reference itself: independent of the library, complete, and the textbook rules.

Its agreement with torch (and JAX's with it) for every optimizer and configuration is tested in
``test_optim_parity.py``; here the textbook variants, which torch does not have, meet it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_port import optim
from parity import reference
from parity.metric import F64_GATE
from parity.specs.problems import make_problem


def test_the_reference_shares_no_code_with_jax_or_the_library():
    """Every module of parity.reference imports only NumPy, the standard library and itself."""
    import sys

    imported = set()
    for path in sorted(Path(reference.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported |= {n.split(".")[0] for n in names if not n.startswith("parity.reference")}
    assert imported - {"numpy"} <= set(sys.stdlib_module_names), imported


def test_the_reference_has_every_rule_the_library_has():
    textbook = {f"textbook_{name}" for name in ("sgd", "momentum", "rmsprop", "adam")}
    assert set(reference.NAMES) == set(optim.OPTIMIZERS) | textbook


def test_unknown_options_and_rules_are_refused():
    with pytest.raises(TypeError, match="unexpected options \\['nesterov'\\]"):
        reference.make("adam", [np.zeros(2)], nesterov=True)
    with pytest.raises(ValueError, match="unknown rule 'adamm'"):
        reference.make("adamm", [np.zeros(2)])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("sgd", {"lr": 0.1}),
        ("momentum", {"lr": 0.05, "momentum": 0.9}),
        ("rmsprop", {"lr": 0.01, "beta": 0.9, "eps": 1e-3}),
        ("adam", {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-3}),
    ],
)
def test_textbook_rules_match_the_reference(name, kwargs):
    """50 steps of jaxopt_port.optim.textbook.<name> against the reference, float64, ≤ 1e-12."""
    problem = make_problem("mlp", 50)
    ref = reference.make(f"textbook_{name}", problem.params, **kwargs)
    with jax.enable_x64(True):
        tx = getattr(optim.textbook, name)(**kwargs)
        grad = jax.jit(jax.grad(problem.jax_loss))
        params = [jnp.asarray(p) for p in problem.params]
        state = tx.init(params)
        for batch in problem.batches:
            batch = [jnp.asarray(b) for b in batch]
            ref.step([np.asarray(g) for g in grad([jnp.asarray(p) for p in ref.params], *batch)])
            updates, state = tx.update(grad(params, *batch), state, params)
            params = optax.apply_updates(params, updates)
    worst = max(
        float(np.max(np.abs(np.asarray(p) - q))) for p, q in zip(params, ref.params, strict=True)
    )
    # measured: sgd 0, momentum 4.8e-15, rmsprop 2.2e-16, adam 3.3e-16
    assert worst <= F64_GATE, f"textbook {name}: {worst:.3g} from the reference"
