"""Torch's parameter layout mapped onto a Flax NNX model's parameters (:class:`TorchLayout`).

The map is derived from :func:`jaxopt_port.interop.weights_from_torch`: the converter that moves
the weights also defines which torch tensors (transposed, split, reshaped, or summed for RNN biases)
make each NNX parameter. Why the parity runs optimize torch's layout: :mod:`parity.run.twin_training`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["TorchLayout"]


@dataclasses.dataclass(frozen=True)
class _Part:
    """One torch parameter's contribution to one NNX parameter.

    Either a view — ``source.transpose(perm)``, then ``[start:stop]`` along ``axis`` (if not
    None), reshaped to ``shape`` — or, where no view matches, a gather of ``index`` from the
    raveled source, zero outside ``mask`` (if not None).
    """

    source: int
    shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None
    axis: int | None = None
    start: int = 0
    stop: int = 0
    index: np.ndarray | None = None
    mask: np.ndarray | None = None

    def apply(self, arrays: Sequence[Any], xp: Any) -> Any:
        x = arrays[self.source]
        if self.index is not None:
            part = xp.reshape(x, (-1,))[self.index]
            return part if self.mask is None else xp.where(self.mask, part, 0)
        x = xp.transpose(x, self.perm)
        if self.axis is not None:
            x = x[(slice(None),) * self.axis + (slice(self.start, self.stop),)]
        return xp.reshape(x, self.shape)


def _view(source: int, index: np.ndarray, shape: tuple[int, ...]) -> _Part | None:
    """``index`` (positions in the raveled torch array of ``shape``) as a transpose, one slice
    and a reshape, if it is one: cheaper to compile and run than a gather."""
    base = np.arange(math.prod(shape)).reshape(shape)
    for perm in itertools.permutations(range(len(shape))):
        t = base.transpose(perm)
        if t.size == index.size:
            if np.array_equal(t.reshape(index.shape), index):
                return _Part(source, index.shape, perm)
            continue
        first = np.unravel_index(int(np.argmax(t == index.flat[0])), t.shape)
        for axis in range(t.ndim):
            other = t.size // t.shape[axis]
            if index.size % other or any(c for a, c in enumerate(first) if a != axis):
                continue
            start, stop = int(first[axis]), int(first[axis]) + index.size // other
            cut = t[(slice(None),) * axis + (slice(start, stop),)]
            if cut.size == index.size and np.array_equal(cut.reshape(index.shape), index):
                return _Part(source, index.shape, perm, axis, start, stop)
    return None


class TorchLayout:
    """The NNX model's parameters as a function of torch's parameters, traceable by JAX.

    Built by loading, for each torch parameter in turn, the indices ``1..n`` (all else zero) with
    :func:`jaxopt_port.interop.weights_from_torch` into a copy of the NNX model: where index
    ``i`` of torch parameter ``k`` lands is where that entry goes. The converter only permutes,
    reshapes, splits and flips (and sums an RNN's two biases), so each NNX parameter is a sum of
    views (transpose, slice, reshape) or gathers of torch parameters, and its gradient flows back
    to torch's entries exactly. Construction checks that the map reproduces the converter on the
    actual weights bit for bit.

    Args:
      nnx_module: the NNX model (not changed).
      state_dict: its torch twin's ``state_dict`` as NumPy arrays.
      names: the torch parameter names, in the order of the arrays :meth:`__call__` takes.

    Raises:
      ValueError: the converter rejects a key, or its conversion is not a rearrangement.
    """

    def __init__(
        self, nnx_module: Any, state_dict: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> None:
        import jax
        from flax import nnx

        from jaxopt_port import interop

        self.names = tuple(names)
        graphdef, params, rest = nnx.split(nnx_module, nnx.Param, ...)
        self.treedef = jax.tree_util.tree_structure(params)
        zeros = {k: np.zeros(np.shape(v)) for k, v in state_dict.items()}

        def probe(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            probed = nnx.merge(graphdef, params, rest, copy=True)
            with jax.enable_x64(True):  # index values stay exact
                interop.weights_from_torch(probed, arrays)
                return [
                    np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.state(probed, nnx.Param))
                ]

        leaves = probe(zeros)
        #: per NNX parameter leaf, the torch parameters' contributions (summed)
        self.plan: list[list[_Part]] = [[] for _ in leaves]
        covered = [np.zeros(leaf.shape, bool) for leaf in leaves]
        for i, name in enumerate(self.names):
            shape = tuple(np.shape(state_dict[name]))
            index = np.arange(1, math.prod(shape) + 1, dtype=np.float64).reshape(shape)
            for j, got in enumerate(probe({**zeros, name: index})):
                hit = got != 0
                if not hit.any():
                    continue
                if np.any(got[hit] != np.round(got[hit])):
                    raise ValueError(f"converting {name} into the NNX model is not a rearrangement")
                covered[j] |= hit
                where = got.astype(np.int64) - 1
                if hit.all():
                    part = _view(i, where, shape) or _Part(i, got.shape, index=where)
                else:
                    part = _Part(i, got.shape, index=where, mask=hit)
                self.plan[j].append(part)
        # entries no torch parameter reaches (a loose NNX constant) keep the module's values
        current = [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]
        self._constants = [
            None if c.all() else np.where(c, 0, v) for c, v in zip(covered, current, strict=True)
        ]
        actual = probe({k: np.asarray(v, np.float64) for k, v in state_dict.items()})
        mapped = self.numpy([np.asarray(state_dict[n], np.float64) for n in self.names])
        for j, (a, b) in enumerate(zip(actual, jax.tree_util.tree_leaves(mapped), strict=True)):
            if not np.array_equal(a, b):
                raise ValueError(f"the map differs from the converter at NNX parameter {j}")

    def _assemble(self, arrays: Sequence[Any], xp: Any) -> Any:
        import jax

        leaves = []
        for plan, constant in zip(self.plan, self._constants, strict=True):
            value = None
            for part in plan:
                x = part.apply(arrays, xp)
                value = x if value is None else value + x
            if constant is not None:
                c = xp.asarray(constant, dtype=arrays[0].dtype if arrays else None)
                value = c if value is None else value + c
            leaves.append(value)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def __call__(self, arrays: Sequence[Any]) -> Any:
        """The NNX parameter state (an ``nnx.State`` of ``nnx.Param``) from torch-layout JAX
        arrays in :attr:`names` order; traceable and differentiable."""
        import jax.numpy as jnp

        return self._assemble(arrays, jnp)

    def numpy(self, arrays: Sequence[np.ndarray]) -> Any:
        """:meth:`__call__` in NumPy (for checks outside JAX)."""
        return self._assemble([np.asarray(a) for a in arrays], np)
