"""Griffe extension for the API reference: fill the optimizers' shared argument descriptions.

The optimizer docstrings name shared argument text by placeholders (`{lr}`, `{maximize}`, ...)
that `jaxopt_port.optim._docs.doc` fills when the module is imported. Griffe reads the source
statically, so this extension applies the same `fill` to every function decorated with `doc`:
the page shows what `help()` shows.
"""

from __future__ import annotations

from typing import Any

import griffe

from jaxopt_port.optim._docs import fill


class SharedArguments(griffe.Extension):
    """Fill `{name}` placeholders of `@doc`-decorated functions' docstrings."""

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        if func.docstring and any(str(d.value) == "doc" for d in func.decorators):
            func.docstring.value = fill(func.docstring.value)
