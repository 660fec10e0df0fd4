r"""`torch.ao.pruning`'s sparsity schedulers as functions of the scheduler epoch.

A torch scheduler sets its sparsifier's `sparsity_level` at every `scheduler.step()`;
constructing it already steps once (`last_epoch` becomes 0). Here a scheduler is an object
whose `level(epoch)` gives the level torch's scheduler sets at `last_epoch == epoch`; it
works on a traced `epoch` inside `jit`. The sparsifier's level at construction is the final
(base) level $s_f$, as in torch.

- [`CubicSL`][jaxopt_port.pruning.CubicSL] (Zhu & Gupta 2017):
  $s_t = s_f + (s_0 - s_f)\left(1 - \frac{t - t_0}{n\,\Delta t}\right)^3$ clamped to
  $[s_0, s_f]$, and 0 before $t_0$ when `initially_zero`. torch computes it in Python
  doubles; here the levels of every epoch up to $t_0 + n\Delta t$ (after which it is constant)
  are computed the same way on the host and looked up, so they are torch's bit for bit (with
  x64 off they are rounded to float32, and a sparsifier's $\operatorname{round}(s\,n)$ can then
  differ from torch's by one where $s\,n$ lies within float32 rounding of a half).
- [`LambdaSL`][jaxopt_port.pruning.LambdaSL]: $s_t = s_f\,\lambda(t)$; inside `jit` the
  Python `sl_lambda` runs on the host through `jax.pure_callback` with a Python `int`
  epoch, so the level is torch's Python double (rounded to float32 when x64 is off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port._core import scalar_dtype

__all__ = ["BaseScheduler", "CubicSL", "LambdaSL"]


class BaseScheduler:
    """A sparsity-level schedule over scheduler epochs (torch's `BaseScheduler`).

    Subclasses implement `get_sl`. `last_epoch` is ignored: epochs count
    `scheduler.step()` calls from construction (torch's default `last_epoch=-1`).

    Args:
      sparsifier: the [`WeightNormSparsifier`][jaxopt_port.pruning.WeightNormSparsifier] (or
        anything with a `sparsity_level`) whose level is the final one, or that level itself.
    """

    def __init__(self, sparsifier: Any) -> None:
        self.base_sl = float(getattr(sparsifier, "sparsity_level", sparsifier))

    def get_sl(self, epoch: Any) -> Any:
        """The level at `epoch` (a Python int or a traced integer)."""
        raise NotImplementedError

    def level(self, epoch: Any) -> jax.Array:
        """The level at `epoch` as a scalar array (float64 under x64)."""
        return jnp.asarray(self.get_sl(epoch), scalar_dtype())

    def __call__(self, epoch: Any) -> jax.Array:
        return self.level(epoch)


class LambdaSL(BaseScheduler):
    """torch's `LambdaSL`: `base level * sl_lambda(epoch)`.

    Args:
      sparsifier: the sparsifier (or its final level).
      sl_lambda: `epoch -> factor`, a Python function of an `int`.

    Examples:
      >>> sched = LambdaSL(0.8, lambda epoch: epoch / 10)
      >>> round(float(sched(5)), 6)
      0.4
    """

    def __init__(self, sparsifier: Any, sl_lambda: Callable[[Any], Any]) -> None:
        super().__init__(sparsifier)
        self.sl_lambda = sl_lambda

    def get_sl(self, epoch: Any) -> Any:
        if isinstance(epoch, (int, np.integer)):
            return self.base_sl * self.sl_lambda(int(epoch))
        dtype = scalar_dtype()
        return jax.pure_callback(
            lambda e: np.asarray(self.base_sl * self.sl_lambda(int(e)), dtype),
            jax.ShapeDtypeStruct((), dtype),
            epoch,
        )


class CubicSL(BaseScheduler):
    r"""torch's `CubicSL` (module docstring for the formula).

    Args:
      sparsifier: the sparsifier (or its final level $s_f$).
      init_sl: $s_0$ (default 0).
      init_t: $t_0$, the epoch pruning starts (default 0).
      delta_t: $\Delta t$, epochs per pruning step (default 10).
      total_t: $n$, the number of pruning steps (default 100).
      initially_zero: level 0 before $t_0$ instead of $s_0$.

    Examples:
      >>> sched = CubicSL(0.9, init_sl=0.0, delta_t=1, total_t=10)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
      [0.0, 0.7875, 0.9, 0.9]
    """

    def __init__(
        self,
        sparsifier: Any,
        init_sl: float = 0.0,
        init_t: int = 0,
        delta_t: int = 10,
        total_t: int = 100,
        initially_zero: bool = False,
    ) -> None:
        super().__init__(sparsifier)
        self.init_sl, self.init_t = init_sl, init_t
        self.delta_t, self.total_t = delta_t, total_t
        self.initially_zero = initially_zero
        end = max(init_t + delta_t * total_t, 0)
        self._table = np.array([self.torch_level(t) for t in range(end + 2)], dtype=np.float64)

    def torch_level(self, t: int) -> float:
        """torch's `sparsity_compute_fn` at epoch `t`, in Python doubles."""
        if self.initially_zero and t < self.init_t:
            return 0.0
        s_0, s_f = self.init_sl, self.base_sl
        s_t = s_f + (s_0 - s_f) * (1.0 - (t - self.init_t) / (self.delta_t * self.total_t)) ** 3
        return max(s_0, min(s_f, s_t))

    def get_sl(self, epoch: Any) -> Any:
        if isinstance(epoch, (int, np.integer)):
            return self.torch_level(int(epoch))
        table = jnp.asarray(self._table, scalar_dtype())
        return table[jnp.clip(epoch, 0, len(self._table) - 1)]
