"""``import jaxopt_port`` and every one of its modules leaves torch unimported.

torch is only for conversions, imported inside the functions that take or return torch objects;
a JAX user without torch installed must be able to use every package.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Imports each module in turn (the package first), and names the first one after which torch,
# or any module below it, is in sys.modules.
_PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    def torch_loaded():
        return sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:3]

    import jaxopt_port
    names = ["jaxopt_port"] + sorted(
        m.name for m in pkgutil.walk_packages(jaxopt_port.__path__, "jaxopt_port.")
    )
    for name in names:
        importlib.import_module(name)
        if torch_loaded():
            print(f"importing {name} loaded {torch_loaded()}")
            sys.exit(1)
    print(len(names), "modules")
    """
)


def _probe(prelude: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", prelude + _PROBE], capture_output=True, text=True, timeout=120
    )


def test_no_jaxopt_port_module_imports_torch():
    result = _probe()
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-2]) > 40  # every module was imported, not just the top


def test_the_probe_catches_a_module_that_imports_torch():
    # plant an import of torch in one module, as a stray top-level `import torch` would
    planted = textwrap.dedent(
        """
        import importlib.abc, sys
        class Plant(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "jaxopt_port.transforms.clipping":
                    sys.meta_path.remove(self)
                    import torch  # noqa: F401
                return None
        sys.meta_path.insert(0, Plant())
        """
    )
    result = _probe(planted)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("importing jaxopt_port"), result.stdout
