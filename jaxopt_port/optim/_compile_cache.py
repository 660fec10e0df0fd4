"""Compile once for eager calls that run a user's function inside compiled code.

An `update` called eagerly (no `jax.jit` around it) that traces a user's function inside a
`lax` loop (L-BFGS's `value_fn`) would compile that loop on every call: the function is a new
object each time (`lambda p: loss(p, batch)`), and the arrays it closes over are baked into the
compiled code as constants. Every compilation also keeps LLVM code mapped, so a few hundred eager
calls exhaust the process's memory maps (measured: ~220 more per eager L-BFGS step, until LLVM
cannot allocate and the process crashes).

Here the user's function is traced to a jaxpr (`trace`), the arrays it closes over are
hoisted out as arguments (`consts`), and the compiled code is looked up by the jaxpr's
*structure* (`CompileCache`): the same loss with new data, or a new closure of the same
code, reuses the compiled code, across calls and across optimizer instances.

What the structural key covers. The printed jaxpr holds every primitive, its parameters, the
avals of the inputs and closed-over arrays, and the values of scalar literals (a Python float the
function closes over is such a literal: a new value is a new key; pass values that change between
calls as arrays). Objects whose printed form does not identify them — those printed with their
address, as Python functions are (a `jax.pure_callback`'s host function), and the arrays of an
inner closed jaxpr — enter the key by identity, so a new host function compiles anew (and
nothing stale is ever reused). Custom derivative rules (`custom_jvp`/`custom_vjp`) are exempt:
trace the function *with* its derivatives (`jax.value_and_grad`), so that the rules are applied
while tracing, and the jaxpr is then only evaluated, never differentiated again.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

__all__ = ["COMPILE_CACHE_SIZE", "CompileCache", "Traced", "any_tracer", "evaluate", "trace"]

COMPILE_CACHE_SIZE = 32
"""How many compiled functions a `CompileCache` keeps (least recently used dropped first).
Each holds its executable (a few MB and ~200 memory maps on XLA:CPU) until dropped."""

_DERIVATIVE_RULE_PRIMITIVES = frozenset(
    {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
)
"""Primitives whose callable parameters are derivative rules, unused when the jaxpr is evaluated."""
_PLAIN = (str, int, float, complex, bool, type(None), np.dtype)


class _Same:
    """A key part equal only to the same object (callables, arrays): holds it alive while keyed."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _unprinted(jaxpr: jex.core.Jaxpr) -> tuple[_Same, ...]:
    """The objects in `jaxpr`'s equations (recursively) that its printed form does not identify."""
    found: list[_Same] = []

    def visit(primitive: str, value: Any) -> None:
        if isinstance(value, _PLAIN):
            return
        if isinstance(value, jex.core.Jaxpr):
            visit_jaxpr(value)
        elif isinstance(value, jex.core.ClosedJaxpr):
            visit_jaxpr(value.jaxpr)
            found.extend(_Same(c) for c in value.consts)
        elif isinstance(value, (tuple, list, set, frozenset)):
            for item in value:
                visit(primitive, item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(primitive, item)
        elif primitive not in _DERIVATIVE_RULE_PRIMITIVES and " at 0x" in repr(value):
            # printed as "<function f at 0xXXXX>": identified by the object itself. A
            # pure_callback's wrapper is new per trace; the user's function inside is not.
            found.append(_Same(getattr(value, "callback_func", value)))

    def visit_jaxpr(j: jex.core.Jaxpr) -> None:
        for eqn in j.eqns:
            for value in eqn.params.values():
                visit(eqn.primitive.name, value)

    visit_jaxpr(jaxpr)
    return tuple(found)


class Traced(NamedTuple):
    """A function traced at some argument avals, with its closed-over arrays hoisted.

    Attributes:
      key: hashable, equal for two traces of the same computation (see the module docstring).
      jaxpr: the open jaxpr; its constvars take `consts`, its invars the flattened arguments.
      consts: the arrays the function closed over, in `jaxpr.constvars` order.
      out_tree: the structure of the function's output.
    """

    key: Hashable
    jaxpr: jex.core.Jaxpr
    consts: list[Any]
    out_tree: Any


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    # strongly typed, as arrays rebuilt from a raveled vector are (weak Python scalars are not)
    return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf))


def trace(fn: Callable[..., Any], *args: Any) -> Traced:
    """Trace `fn` at the shapes and dtypes of `args` (their values are not used)."""
    abstract = jax.tree_util.tree_map(_abstract, args)
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*abstract)
    key = (
        jax.tree_util.tree_structure(args),
        str(closed.jaxpr),
        _unprinted(closed.jaxpr),
        bool(jax.config.jax_enable_x64),
    )
    return Traced(key, closed.jaxpr, list(closed.consts), jax.tree_util.tree_structure(out_shape))


def evaluate(jaxpr: jex.core.Jaxpr, out_tree: Any, consts: Any, *args: Any) -> Any:
    """`fn(*args)` for the `fn` that `trace` traced to `jaxpr` (any `consts` of the
    same avals: the arrays it closes over at this call)."""
    outs = jax.core.eval_jaxpr(jaxpr, consts, *jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(out_tree, outs)


def any_tracer(*trees: Any) -> bool:
    """Whether any leaf of `trees` is a tracer (the call is being traced, e.g. under jit)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


class CompileCache:
    """A bounded map `key -> compiled function`, least recently used dropped first.

    Dropping a `jax.jit` function frees its executables (measured: 100 dropped functions leave
    the memory maps flat; 100 kept ones add ~300).

    Attributes:
      misses: how many functions `get` has built (a compilation counter for tests).
    """

    def __init__(self, maxsize: int = COMPILE_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self.misses = 0
        self._entries: collections.OrderedDict[Hashable, Callable[..., Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """The function stored under `key`; `build()` stored there first if there is none."""
        with self._lock:
            fn = self._entries.get(key)
            if fn is not None:
                self._entries.move_to_end(key)
                return fn
            self.misses += 1
            fn = self._entries[key] = build()
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return fn

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
