"""The import graph of jaxopt_port: strict one-directional layers, public names across packages.

Layers, lowest first (a package imports only from packages before it in :data:`LAYERS`):
``_core`` (shared helpers) → ``optim`` → ``schedules`` → ``transforms`` → ``interop`` →
``parallel`` → ``pruning`` → ``quantization`` → ``prox`` → ``gradient_free``. Across packages only public
names: ``jaxopt_port.optim`` or ``jaxopt_port.interop.weights``, never ``jaxopt_port.optim._state``;
``jaxopt_port._core`` is the one private package every layer may use. Imports inside functions
count too (a lazy upward import is still an upward import).
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxopt_port"

#: Lowest first. A package missing here fails the test until it is given its place.
LAYERS = (
    "_core",
    "optim",
    "schedules",
    "transforms",
    "interop",
    "parallel",
    "pruning",
    "quantization",
    "prox",
    "gradient_free",
)


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names it may bring)`` for every import statement in ``tree``;
    ``from x import y`` may bring ``x.y``, which can be a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name, [f"{name}.{a.name}" for a in node.names]))
    return found


def _problem(own: str | None, target: list[str]) -> str | None:
    package = target[1]
    if package not in LAYERS:
        # a name the top package re-exports (``from jaxopt_port import optim``) or a private one
        return "a private name of the top package" if package.startswith("_") else None
    if own is not None:
        if own not in LAYERS:
            return f"package {own!r} has no place in LAYERS"
        if LAYERS.index(package) > LAYERS.index(own):
            return f"upward ({own} is below {package})"
    private = [p for p in target[2:] if p.startswith("_") and not p.startswith("__")]
    if private and package != "_core":
        return f"private module or name {'.'.join(target[:2] + private[:1])}"
    return None


def violations(source: str, module: str) -> list[str]:
    """What is wrong with the imports of ``module`` (dotted name) whose code is ``source``: one
    line per offending import statement."""
    parts = module.split(".")
    own = parts[1] if len(parts) > 1 else None  # None: jaxopt_port/__init__.py, the top
    problems = []
    for line, name, brought in _imports(ast.parse(source), module):
        for full in [name, *brought]:
            target = full.split(".")
            if target[0] != "jaxopt_port" or len(target) < 2 or target[1] == own:
                continue
            problem = _problem(own, target)
            if problem is not None:
                problems.append(f"{module}:{line} imports {name}: {problem}")
                break
    return problems


def _modules() -> list[tuple[str, pathlib.Path]]:
    root = PACKAGE.parent
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found.append((name.removesuffix(".__init__"), path))
    return found


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_no_upward_or_private_cross_package_import():
    problems = [p for name, path in _modules() for p in violations(path.read_text(), name)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("jaxopt_port.optim._from_torch", "from jaxopt_port import schedules", "upward (optim is below schedules)"),
        ("jaxopt_port.optim.sgd", "def f():\n    import jaxopt_port.interop.weights", "upward"),
        ("jaxopt_port.interop.weights", "from jaxopt_port.optim._state import absent", "private module or name jaxopt_port.optim._state"),
        ("jaxopt_port.interop.weights", "from jaxopt_port.optim import _state", "private module or name jaxopt_port.optim._state"),
        ("jaxopt_port.schedules._core", "from ..optim._base import lr_at", "private module or name jaxopt_port.optim._base"),
        ("jaxopt_port._core.arrays", "from jaxopt_port.optim import sgd", "upward (_core is below optim)"),
        ("jaxopt_port.interop.weights", "from jaxopt_port.optim import sgd\nfrom jaxopt_port._core import to_numpy", None),
        ("jaxopt_port.optim._state", "from jaxopt_port.optim.lbfgs import LBFGSState", None),  # same package
    ],
)  # fmt: skip
def test_a_planted_import_is_caught(module, source, expected):
    found = violations(textwrap.dedent(source), module)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
