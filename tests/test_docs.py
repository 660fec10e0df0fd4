"""The docs site: the API pages cover every public name, each has a docstring, and the snippets of
docs/migration.md run top to bottom."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: API page -> the package whose `__all__` it must cover.
API_PAGES = {
    "api/optim.md": "jaxopt_port.optim",
    "api/schedules.md": "jaxopt_port.schedules",
    "api/transforms.md": "jaxopt_port.transforms",
    "api/interop.md": "jaxopt_port.interop",
    "api/parallel.md": "jaxopt_port.parallel",
    "api/pruning.md": "jaxopt_port.pruning",
    "api/quantization.md": "jaxopt_port.quantization",
    "api/prox.md": "jaxopt_port.prox",
    "api/gradient_free.md": "jaxopt_port.gradient_free",
    "api/parity.md": "parity",
}
DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.MULTILINE)


def directives(page: str) -> list[str]:
    """The dotted paths of the `::: path` (mkdocstrings) directives of a docs page."""
    return DIRECTIVE.findall((DOCS / page).read_text())


def resolve(path: str) -> object:
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def missing_names(package: str, paths: list[str]) -> list[str]:
    """The names of `package.__all__` that no path documents: a path documents `name` when it
    ends in `name` and names the very object `package.name` is (the optimizers are documented as
    `jaxopt_port.optim.adam.adam`, since the submodule `adam` shadows the function for griffe)."""
    module = importlib.import_module(package)
    documented = {(p.rsplit(".", 1)[-1], id(resolve(p))) for p in paths}
    return [name for name in module.__all__ if (name, id(getattr(module, name))) not in documented]


def test_every_public_package_has_an_api_page():
    packages = {
        f"jaxopt_port.{p.name}"
        for p in (ROOT / "jaxopt_port").iterdir()
        if (p / "__init__.py").exists() and not p.name.startswith("_")
    }
    assert packages - set(API_PAGES.values()) == set()


@pytest.mark.parametrize("page", sorted(API_PAGES))
def test_api_page_lists_every_public_name(page):
    assert missing_names(API_PAGES[page], directives(page)) == []


def test_missing_name_is_flagged():
    paths = directives("api/optim.md")
    planted = [p for p in paths if p != "jaxopt_port.optim.adam.adam"]
    assert missing_names("jaxopt_port.optim", planted) == ["adam"]
    # A path that ends in the name but is another object does not count.
    swapped = [*planted, "jaxopt_port.optim.textbook.adam"]
    assert missing_names("jaxopt_port.optim", swapped) == ["adam"]


def undocumented(paths: list[str], search_path: Path = ROOT) -> list[str]:
    """The paths whose object has no docstring as the site reads it (griffe, from the source)."""
    griffe = pytest.importorskip("griffe", reason="the docs tools: pip install -e .[docs]")
    loader = griffe.GriffeLoader(search_paths=[str(search_path)])
    for top in sorted({p.split(".")[0] for p in paths}):
        loader.load(top)
    loader.resolve_aliases(implicit=True)
    return [p for p in paths if not loader.modules_collection[p].docstring]


def test_every_documented_name_has_a_docstring():
    paths = [p for page in API_PAGES for p in directives(page)]
    assert undocumented(paths) == []


def test_missing_docstring_is_flagged(tmp_path):
    package = tmp_path / "planted_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""A package."""\n\n\ndef told():\n    """Has one."""\n\n\ndef untold():\n    pass\n'
    )
    paths = ["planted_pkg.told", "planted_pkg.untold"]
    assert undocumented(paths, tmp_path) == ["planted_pkg.untold"]


# docstring markup ----------------------------------------------------------------------------------

#: reST that the site does not render: Sphinx roles, `.. math::`/`.. note::` directives, the doubled
#: braces `str.format` once forced into LaTeX.
RESTRUCTURED = re.compile(
    r":(func|class|meth|mod|data|attr|obj|exc|math):`|^\s*\.\. \w+::|\{\{", re.M
)


def docstrings(source: str) -> list[tuple[int, str]]:
    """`(line, text)` of every docstring of a module's source: the module's, its classes' and
    functions', and the string that follows an assignment (an attribute's, as griffe reads it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for index, statement in enumerate(body):
            is_string = (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            )
            follows = index == 0 or isinstance(body[index - 1], (ast.Assign, ast.AnnAssign))
            if is_string and follows:
                found.append((statement.lineno, statement.value.value))
    return found


def restructured(source: str) -> list[int]:
    """The lines of the docstrings of `source` that hold reST markup or doubled braces."""
    return [line for line, text in docstrings(source) if RESTRUCTURED.search(text)]


def test_docstrings_are_markdown():
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "jaxopt_port").rglob("*.py"))
        for line in restructured(path.read_text())
    ]
    assert bad == []


def test_restructured_markup_is_flagged():
    source = (
        '"""Module."""\n\nX = 1\n"""See :func:`f`."""\n\n\ndef f():\n'
        '    r"""Math.\n\n    .. math::\n        a\n    """\n\n\n'
        'def g():\n    r"""$\\theta_{{t}}$"""\n\n\ndef h():\n    r"""$\\theta_{t}$, `x`."""\n'
    )
    assert restructured(source) == [4, 8, 16]


# docs/migration.md -------------------------------------------------------------------------------

FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Marks a snippet that is not run, with the reason: `<!-- not run: reason -->` just above it.
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """`(line, code, reason not run or None)` for each fenced Python block of a markdown text."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(1), reason.group(1) if reason else None))
    return blocks


def test_python_blocks_reads_the_not_run_marker():
    text = "a\n\n```python\nx = 1\n```\n\n<!-- not run: needs a GPU -->\n```python\ny\n```\n"
    assert python_blocks(text) == [(4, "x = 1\n", None), (9, "y\n", "needs a GPU")]


def test_migration_snippets_run_top_to_bottom():
    blocks = python_blocks((DOCS / "migration.md").read_text())
    run = [(line, code) for line, code, reason in blocks if reason is None]
    assert len(run) >= 20, "most of the page's snippets are meant to run"
    namespace: dict = {"__name__": "migration_md"}
    for line, code in run:
        exec(compile(code, f"docs/migration.md:{line}", "exec"), namespace)


# the optimizers' shared argument text -----------------------------------------------------------


def test_fill_replaces_only_known_placeholders_on_their_own_line():
    from jaxopt_port.optim._docs import ARGS, fill

    text = "Math $\\theta_{t-1}$ {lr} stays.\n\n    Args:\n      {maximize}\n      {foreach}\n"
    filled = fill(text)
    assert filled.startswith("Math $\\theta_{t-1}$ {lr} stays.")  # not on a line of its own
    assert f"      {ARGS['maximize']}\n      {ARGS['foreach']}\n" in filled


def optimizer_docstrings(extensions: list[str]) -> dict[str, tuple[str, str]]:
    """`name -> (help() text, griffe text)` for every optimizer factory."""
    import inspect

    griffe = pytest.importorskip("griffe", reason="the docs tools: pip install -e .[docs]")
    from jaxopt_port import optim

    loader = griffe.GriffeLoader(
        search_paths=[str(ROOT)], extensions=griffe.load_extensions(*extensions)
    )
    loader.load("jaxopt_port")
    loader.resolve_aliases(implicit=True)
    paths = {path.rsplit(".", 1)[-1]: path for path in directives("api/optim.md")}
    return {
        name: (
            inspect.cleandoc(getattr(optim, name).__doc__),
            loader.modules_collection[paths[name]].docstring.value,
        )
        for name in sorted({*optim.OPTIMIZERS, "adamw"})
    }


def test_api_page_shows_what_help_shows():
    pairs = optimizer_docstrings([str(DOCS / "griffe_shared_args.py")])
    assert len(pairs) >= 15
    assert [name for name, (runtime, page) in pairs.items() if runtime != page] == []
    # Without the extension the page would show the placeholders.
    bare = optimizer_docstrings([])
    assert [name for name, (runtime, page) in bare.items() if runtime != page] == sorted(bare)
