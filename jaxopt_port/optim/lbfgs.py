"""L-BFGS: `torch.optim.LBFGS` with its strong-Wolfe line search, jittable and compiled once.

One `update` call is one `optimizer.step(closure)`: up to `max_iter` inner iterations run in a
`lax.while_loop`; the curvature history lives in fixed-size ring buffers; the line search and its
zoom phase are while-loops that reproduce every branch of torch's `_strong_wolfe`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxopt_port._core import checks, params_dtype
from jaxopt_port._core.checks import check_lr
from jaxopt_port._core.torch_groups import carries_torch_group
from jaxopt_port.optim._base import Array, LearningRate, increment, lr_at
from jaxopt_port.optim._compile_cache import CompileCache, any_tracer, evaluate, trace
from jaxopt_port.optim._docs import doc

__all__ = ["LBFGSState", "lbfgs", "ordered_history"]

C1, C2 = 1e-4, 0.9
"""torch's constants in `_strong_wolfe` (LBFGS never passes other values)."""
CURVATURE_EPS = 1e-10
"""torch skips a curvature pair `(y, s)` unless `y·s` exceeds this."""
LINE_SEARCH_TOLERANCE_CHANGE = 1e-9
"""The zoom phase stops when `|bracket| · ‖d‖∞` falls below this. torch's `step` does not pass
the group's `tolerance_change` to `_strong_wolfe`, whose default this is."""


class LBFGSState(NamedTuple):
    """Torch's LBFGS state (`optimizer.state[params[0]]`), with the history as ring buffers.

    Vectors are flat (the parameter leaves raveled in `jax.tree_util.tree_leaves` order, as torch
    concatenates its parameters); vectors and scalars are in the parameters' dtype.

    Attributes:
      count: number of `update` calls so far (indexes an lr schedule; not a torch key).
      func_evals: objective evaluations over all steps, counting the caller's `value`.
      n_iter: inner iterations over all steps.
      d: the last search direction.
      t: the last step length.
      old_dirs: `history_size` gradient differences `y` (a ring buffer, see `oldest`).
      old_stps: `history_size` steps `s = t·d`.
      ro: `1 / (y·s)` for each stored pair.
      H_diag: the scale `y·s / y·y` of the initial inverse Hessian (1 before any pair).
      prev_flat_grad: the gradient at the start of the last iteration.
      prev_loss: the loss at the start of the last iteration.
      num_old: how many pairs are stored (torch's `len(old_dirs)`).
      oldest: the ring slot of the oldest stored pair; pair `i` (0 = oldest, torch's list
        order) is in slot `(oldest + i) % history_size`. `ordered_history` unrolls it.
    """

    count: Array
    func_evals: Array
    n_iter: Array
    d: Array
    t: Array
    old_dirs: Array
    old_stps: Array
    ro: Array
    H_diag: Array
    prev_flat_grad: Array
    prev_loss: Array
    num_old: Array
    oldest: Array

    def as_torch_state(self) -> dict[str, Any]:
        """torch's `optimizer.state[params[0]]` (without the scratch `al`): the history as lists
        oldest first (`ordered_history`); host-side, not for use under `jax.jit`.
        [`jaxopt_port.optim.per_param_state`][jaxopt_port.optim.per_param_state] calls it for this
        state, which is not laid out per parameter."""
        out: dict[str, Any] = {"func_evals": self.func_evals, "n_iter": self.n_iter}
        if int(self.n_iter) > 0:  # torch creates the other keys in its first iteration
            out.update(zip(("old_dirs", "old_stps", "ro"), ordered_history(self), strict=True))
            for key in ("d", "t", "H_diag", "prev_flat_grad", "prev_loss"):
                out[key] = getattr(self, key)
        return out


def ordered_history(state: LBFGSState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(old_dirs, old_stps, ro)` as torch's lists hold them: stored pairs only, oldest first.

    A host-side view (its shapes depend on `state.num_old`), for inspection and conversion.
    """
    num_old, oldest = int(state.num_old), int(state.oldest)
    size = state.ro.shape[0]
    order = (oldest + np.arange(num_old)) % size if size else np.arange(0)
    return (
        np.asarray(state.old_dirs)[order],
        np.asarray(state.old_stps)[order],
        np.asarray(state.ro)[order],
    )


# Python's `max(a, b)` / `min(a, b)`: the first argument unless the second is strictly
# better (so NaN handling and ties follow torch's Python code, not IEEE max/min).
def _py_max(a: Array, b: Array) -> Array:
    return jnp.where(b > a, b, a)


def _py_min(a: Array, b: Array) -> Array:
    return jnp.where(b < a, b, a)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through `(x1, f1, g1)` and `(x2, f2, g2)`, clamped to the bounds
    (the interval's midpoint where the cubic has no minimum): torch's `_cubic_interpolate`."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        ordered = x1 <= x2
        xmin_bound, xmax_bound = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    d2 = jnp.sqrt(d2_square)  # NaN where d2_square < 0: that branch is not selected
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(
        d2_square >= 0,
        _py_min(_py_max(min_pos, xmin_bound), xmax_bound),
        (xmin_bound + xmax_bound) / 2.0,
    )


class _Bracketing(NamedTuple):
    t_prev: Array
    f_prev: Array
    g_prev: Array
    gtd_prev: Array
    t: Array
    f_new: Array
    g_new: Array
    gtd_new: Array
    ls_iter: Array
    evals: Array


class _Zoom(NamedTuple):
    bracket: Array  # (2,) step lengths
    bracket_f: Array  # (2,)
    bracket_g: Array  # (2, n)
    bracket_gtd: Array  # (2,)
    low_pos: Array
    high_pos: Array
    done: Array
    insuf_progress: Array
    ls_iter: Array
    evals: Array


def _strong_wolfe(evaluate, t, d, f, g, gtd, max_ls, tolerance_change=LINE_SEARCH_TOLERANCE_CHANGE):
    """torch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9), every branch, as two while-loops.

    `evaluate(t)` returns the loss and flat gradient at `x + t·d`. Returns the loss and gradient at
    the chosen step length, the step length, and the number of evaluations.
    """
    d_norm = jnp.max(jnp.abs(d))
    f_new, g_new = evaluate(t)
    zero = jnp.zeros_like(t)
    one_i = jnp.ones([], jnp.int32)

    def tests(c: _Bracketing):
        armijo_fails = (c.f_new > f + C1 * c.t * gtd) | ((c.ls_iter > 1) & (c.f_new >= c.f_prev))
        curvature_holds = jnp.abs(c.gtd_new) <= -C2 * gtd
        return armijo_fails, curvature_holds, c.gtd_new >= 0

    def bracketing(c: _Bracketing) -> _Bracketing:
        # extrapolate with a cubic, stepping at least 1% beyond t and at most to 10·t
        min_step = c.t + 0.01 * (c.t - c.t_prev)
        max_step = c.t * 10
        t_next = _cubic_interpolate(
            c.t_prev, c.f_prev, c.gtd_prev, c.t, c.f_new, c.gtd_new, bounds=(min_step, max_step)
        )
        f_next, g_next = evaluate(t_next)
        return _Bracketing(
            c.t,
            c.f_new,
            c.g_new,
            c.gtd_new,
            t_next,
            f_next,
            g_next,
            g_next @ d,
            c.ls_iter + 1,
            c.evals + 1,
        )

    def keep_bracketing(c: _Bracketing) -> Array:
        return (c.ls_iter < max_ls) & ~jnp.any(jnp.stack(tests(c)))

    c = jax.lax.while_loop(
        keep_bracketing,
        bracketing,
        _Bracketing(zero, f, g, gtd, t, f_new, g_new, g_new @ d, 0 * one_i, one_i),
    )
    # torch tests `ls_iter == max_ls`; a negative max_ls (max_eval < 1) is refused by lbfgs()
    exhausted = c.ls_iter >= max_ls
    armijo_fails, curvature_holds, _ = tests(c)
    done = ~exhausted & ~armijo_fails & curvature_holds
    pair = lambda a, b: jnp.stack([a, b])
    # exhausted: [0, t]; Wolfe point found: [t] (kept twice); otherwise the bracket [t_prev, t]
    bracket = jnp.where(
        exhausted, pair(zero, c.t), jnp.where(done, pair(c.t, c.t), pair(c.t_prev, c.t))
    )
    first_f = jnp.where(exhausted, f, jnp.where(done, c.f_new, c.f_prev))
    first_g = jnp.where(exhausted, g, jnp.where(done, c.g_new, c.g_prev))
    first_gtd = jnp.where(exhausted, gtd, jnp.where(done, c.gtd_new, c.gtd_prev))
    bracket_f = pair(first_f, c.f_new)
    low_first = done | (bracket_f[0] <= bracket_f[1])
    low_pos = jnp.where(low_first, 0, 1).astype(jnp.int32)

    def keep_zooming(z: _Zoom) -> Array:
        too_small = jnp.abs(z.bracket[1] - z.bracket[0]) * d_norm < tolerance_change
        return ~z.done & (z.ls_iter < max_ls) & ~too_small

    def zooming(z: _Zoom) -> _Zoom:
        b, bf, bg, bgtd = z.bracket, z.bracket_f, z.bracket_g, z.bracket_gtd
        t = _cubic_interpolate(b[0], bf[0], bgtd[0], b[1], bf[1], bgtd[1])
        # insufficient progress: a trial point within 10% of the bracket's length from an end
        # moves to that distance if the last trial was also that close or t is on the boundary
        b_max, b_min = _py_max(b[0], b[1]), _py_min(b[0], b[1])
        eps = 0.1 * (b_max - b_min)
        near_end = _py_min(b_max - t, t - b_min) < eps
        at_end = z.insuf_progress | (t >= b_max) | (t <= b_min)
        moved = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
        t = jnp.where(near_end & at_end, moved, t)
        insuf_progress = near_end & ~at_end

        f_new, g_new = evaluate(t)
        gtd_new = g_new @ d
        low, high = z.low_pos, z.high_pos

        def new_high(_):
            nb, nf = b.at[high].set(t), bf.at[high].set(f_new)
            ng, ngtd = bg.at[high].set(g_new), bgtd.at[high].set(gtd_new)
            new_low = jnp.where(nf[0] <= nf[1], 0, 1).astype(jnp.int32)
            return nb, nf, ng, ngtd, new_low, 1 - new_low, jnp.array(False)

        def new_low(_):
            wolfe = jnp.abs(gtd_new) <= -C2 * gtd
            # the old high becomes the new low's partner when the slope points past it
            swap = ~wolfe & (gtd_new * (b[high] - b[low]) >= 0)
            nb = jnp.where(swap, b.at[high].set(b[low]), b).at[low].set(t)
            nf = jnp.where(swap, bf.at[high].set(bf[low]), bf).at[low].set(f_new)
            ng = jnp.where(swap, bg.at[high].set(bg[low]), bg).at[low].set(g_new)
            ngtd = jnp.where(swap, bgtd.at[high].set(bgtd[low]), bgtd).at[low].set(gtd_new)
            return nb, nf, ng, ngtd, low, high, wolfe

        armijo_fails_or_not_lower = (f_new > f + C1 * t * gtd) | (f_new >= bf[low])
        nb, nf, ng, ngtd, low, high, done = jax.lax.cond(
            armijo_fails_or_not_lower, new_high, new_low, None
        )
        return _Zoom(nb, nf, ng, ngtd, low, high, done, insuf_progress, z.ls_iter + 1, z.evals + 1)

    z = jax.lax.while_loop(
        keep_zooming,
        zooming,
        _Zoom(
            bracket,
            bracket_f,
            pair(first_g, c.g_new),
            pair(first_gtd, c.gtd_new),
            low_pos,
            1 - low_pos,
            done,
            jnp.array(False),
            c.ls_iter,
            c.evals,
        ),
    )
    low = z.low_pos
    return z.bracket_f[low], z.bracket_g[low], z.bracket[low], z.evals


class _Iteration(NamedTuple):
    x: Array
    loss: Array
    flat_grad: Array
    opt_cond: Array
    n_iter: Array  # this step's iterations (torch's local n_iter)
    current_evals: Array
    stop: Array
    state: LBFGSState


def _direction(state: LBFGSState, flat_grad: Array, history_size: int) -> LBFGSState:
    """Store the newest curvature pair (if `y·s > 1e-10`) and compute `d = -H·g` by the
    two-loop recursion, newest pair first, then oldest first (torch's order)."""
    y = flat_grad - state.prev_flat_grad
    s = state.d * state.t
    ys = y @ s
    accept = ys > CURVATURE_EPS
    full = state.num_old == history_size
    slot = (state.oldest + state.num_old) % history_size  # the oldest slot when full
    old_dirs = state.old_dirs.at[slot].set(jnp.where(accept, y, state.old_dirs[slot]))
    old_stps = state.old_stps.at[slot].set(jnp.where(accept, s, state.old_stps[slot]))
    ro = state.ro.at[slot].set(jnp.where(accept, 1.0 / ys, state.ro[slot]))
    oldest = jnp.where(accept & full, (state.oldest + 1) % history_size, state.oldest)
    num_old = jnp.where(accept & ~full, state.num_old + 1, state.num_old)
    H_diag = jnp.where(accept, ys / (y @ y), state.H_diag)

    def slot_of(i):
        return (oldest + i) % history_size

    def newest_first(k, carry):
        q, al = carry
        i = num_old - 1 - k
        j = slot_of(i)
        al_i = (old_stps[j] @ q) * ro[j]
        return q - al_i * old_dirs[j], al.at[i].set(al_i)

    def oldest_first(i, r):
        j = slot_of(i)
        be_i = (old_dirs[j] @ r) * ro[j]
        return r + (al[i] - be_i) * old_stps[j]

    al = jnp.zeros_like(ro)
    q, al = jax.lax.fori_loop(0, num_old, newest_first, (-flat_grad, al))
    d = jax.lax.fori_loop(0, num_old, oldest_first, q * H_diag)
    return state._replace(
        d=d,
        old_dirs=old_dirs,
        old_stps=old_stps,
        ro=ro,
        H_diag=H_diag,
        num_old=num_old,
        oldest=oldest,
    )


class _Options(NamedTuple):
    """The options that shape the compiled loops (static: part of the compile key, by value)."""

    max_iter: int
    max_eval: int
    history_size: int
    line_search_fn: str | None


def _step(
    options: _Options,
    value_and_grad: Callable[[Any], tuple[Array, Any]],
    updates: Any,
    state: LBFGSState,
    params: Any,
    value: Array,
    grad: Any,
    lr: Array,
    tolerance_grad: float | Array,
    tolerance_change: float | Array,
) -> tuple[Any, LBFGSState]:
    """One `optimizer.step(closure)`; `value_and_grad(params) -> (loss, grads)` is the closure
    and `lr` the learning rate of this step."""
    x0, unravel = ravel_pytree(params)
    dtype = x0.dtype
    flat_grad = ravel_pytree(updates if grad is None else grad)[0].astype(dtype)
    loss = jnp.asarray(value, dtype)
    lr_now = jnp.asarray(lr).astype(dtype)

    def flat_value_and_grad(x: Array) -> tuple[Array, Array]:
        f, g = value_and_grad(unravel(x))
        return f.astype(dtype), ravel_pytree(g)[0].astype(dtype)

    def iteration(c: _Iteration) -> _Iteration:
        n_iter = c.n_iter + 1
        st = c.state._replace(n_iter=c.state.n_iter + 1)
        first = st.n_iter == 1
        st = jax.lax.cond(
            first,
            lambda s: s._replace(
                d=-c.flat_grad,
                num_old=jnp.zeros_like(s.num_old),
                oldest=jnp.zeros_like(s.oldest),
                H_diag=jnp.ones_like(s.H_diag),
            ),
            lambda s: _direction(s, c.flat_grad, options.history_size),
            st,
        )
        inverse_l1 = 1.0 / jnp.sum(jnp.abs(c.flat_grad))
        t = jnp.where(first, jnp.where(inverse_l1 < 1.0, inverse_l1, 1.0) * lr_now, lr_now)
        st = st._replace(t=t, prev_flat_grad=c.flat_grad, prev_loss=c.loss)
        d = st.d
        gtd = c.flat_grad @ d

        def move(_):
            if options.line_search_fn == "strong_wolfe":
                loss, flat_grad, t_ls, ls_evals = _strong_wolfe(
                    lambda t: flat_value_and_grad(c.x + t * d),
                    t,
                    d,
                    c.loss,
                    c.flat_grad,
                    gtd,
                    options.max_eval - c.current_evals,
                )
                return c.x + t_ls * d, loss, flat_grad, t_ls, ls_evals
            x = c.x + t * d
            # torch skips the evaluation in the last iteration (its gradient would go unused)
            loss, flat_grad, ls_evals = jax.lax.cond(
                n_iter != options.max_iter,
                lambda: (*flat_value_and_grad(x), jnp.ones([], jnp.int32)),
                lambda: (c.loss, c.flat_grad, jnp.zeros([], jnp.int32)),
            )
            return x, loss, flat_grad, t, ls_evals

        def stay(_):
            return c.x, c.loss, c.flat_grad, t, jnp.zeros([], jnp.int32)

        descent = ~(gtd > -tolerance_change)
        x, loss, flat_grad, t, ls_evals = jax.lax.cond(descent, move, stay, None)
        current_evals = c.current_evals + ls_evals
        st = st._replace(t=t, func_evals=st.func_evals + ls_evals)
        evaluated = descent & ((n_iter != options.max_iter) | (options.line_search_fn is not None))
        opt_cond = jnp.where(evaluated, jnp.max(jnp.abs(flat_grad)) <= tolerance_grad, c.opt_cond)
        stop = (
            ~descent
            | (n_iter == options.max_iter)
            | (current_evals >= options.max_eval)
            | opt_cond
            | (jnp.max(jnp.abs(d * t)) <= tolerance_change)
            | (jnp.abs(loss - st.prev_loss) < tolerance_change)
        )
        return _Iteration(x, loss, flat_grad, opt_cond, n_iter, current_evals, stop, st)

    opt_cond = jnp.max(jnp.abs(flat_grad)) <= tolerance_grad
    one = jnp.ones([], jnp.int32)
    start = _Iteration(
        x0,
        loss,
        flat_grad,
        opt_cond,
        0 * one,
        one,
        opt_cond,
        state._replace(func_evals=state.func_evals + 1),
    )
    end = jax.lax.while_loop(lambda c: (c.n_iter < options.max_iter) & ~c.stop, iteration, start)
    new_state = end.state._replace(count=increment(state.count))
    return unravel(end.x - x0), new_state


def _value_and_grad(value_fn: Callable[[Any], Array]) -> Callable[[Any], tuple[Array, Any]]:
    """torch's `closure()`: the loss at `params` and its gradient."""
    return jax.value_and_grad(lambda p: jnp.asarray(value_fn(p)))


_COMPILED = CompileCache()
"""The eager steps' compiled code, shared by every `lbfgs` instance: one entry per options and
structure of `value_fn` (its data are arguments), the least recently used dropped first."""


def _compiled_step(
    options: _Options, jaxpr: Any, out_tree: Any, consts: list[Any], *dynamic: Any
) -> tuple[Any, LBFGSState]:
    return _step(options, functools.partial(evaluate, jaxpr, out_tree, consts), *dynamic)


def _eager_step(
    options: _Options, value_fn: Callable[[Any], Array], *dynamic: Any
) -> tuple[Any, LBFGSState]:
    """`_step` for a call outside any trace: `value_fn` is traced to a jaxpr, the arrays it
    closes over become arguments, and the step compiles once per options and jaxpr structure,
    whatever the data, the closure object or the `lbfgs` instance (`_compile_cache`)."""
    params = dynamic[2]
    traced = trace(_value_and_grad(value_fn), params)
    step = _COMPILED.get(
        (options, traced.key),
        lambda: jax.jit(functools.partial(_compiled_step, options, traced.jaxpr, traced.out_tree)),
    )
    return step(traced.consts, *dynamic)


def _by_value(options: _Options) -> _Options | None:
    """`options` hashable by value (an integer 0-d array, as `optax.inject_hyperparams` passes
    a count it is not told is static, as a Python int: the same integer arithmetic), or None."""

    def value(x: Any) -> Any:
        if isinstance(x, (jax.Array, np.ndarray)) and x.ndim == 0:
            if jnp.issubdtype(x.dtype, jnp.integer):
                return int(x)
        return x

    options = _Options(*(value(x) for x in options))
    try:
        hash(options)
    except TypeError:
        return None
    return options


def _torch_group(arguments: dict[str, Any]) -> dict[str, Any]:
    """torch's L-BFGS param group: `max_eval=None` stored as `max_iter * 5 // 4`."""
    if arguments["max_eval"] is None:
        return {**arguments, "max_eval": arguments["max_iter"] * 5 // 4}
    return arguments


@carries_torch_group(_torch_group, torch_class="LBFGS")
@doc
def lbfgs(
    lr: LearningRate = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""`torch.optim.LBFGS`: one `update` is one `optimizer.step(closure)`.

    `update(grads, state, params, *, value, value_fn, grad=None)` takes the loss `value` and
    gradient at `params` (torch's first `closure()` call; `grad` defaults to `grads`) and
    `value_fn(params) -> loss`, which it differentiates for every further evaluation (torch's
    later `closure()` calls). Parameters may be any pytree of real arrays; the algorithm runs on
    them raveled in `jax.tree_util.tree_leaves` order, as torch concatenates its parameters.
    With `f` the loss, `g` its gradient, θ the raveled parameters and γ the learning rate:

    ```text
    evals ← 1;  func_evals += 1
    if ‖g‖∞ ≤ tolerance_grad: return                          (no change, no iteration)
    for k = 1 .. max_iter:
        n_iter += 1                                           (counted over all steps)
        if n_iter = 1:  d ← −g;  history ← ∅;  H_diag ← 1
        else:
            y ← g − prev_flat_grad;  s ← t·d
            if y·s > 1e-10:                                   (else the pair is skipped)
                append (y, s, ρ = 1/(y·s)), dropping the oldest beyond history_size
                H_diag ← y·s / y·y
            q ← −g;   for i newest → oldest:  α_i ← ρ_i s_i·q;  q ← q − α_i y_i
            d ← H_diag·q;  for i oldest → newest:  β_i ← ρ_i y_i·d;  d ← d + (α_i − β_i) s_i
        prev_flat_grad ← g;  prev_loss ← f
        t ← min(1, 1/‖g‖₁)·γ  if n_iter = 1  else γ
        if g·d > −tolerance_change: stop
        if line_search_fn = "strong_wolfe":
            f, g, t, e ← strong_wolfe(θ, t, d, f, g, g·d, max_ls = max_eval − evals)
            θ ← θ + t·d
        else:
            θ ← θ + t·d
            if k < max_iter:  f, g ← value_fn(θ), ∇value_fn(θ);  e ← 1   else e ← 0
        evals += e;  func_evals += e
        stop if k = max_iter, evals ≥ max_eval, ‖g‖∞ ≤ tolerance_grad,
                ‖t·d‖∞ ≤ tolerance_change or |f − prev_loss| < tolerance_change
    ```

    `strong_wolfe` is torch's `_strong_wolfe` with c1 = 1e-4, c2 = 0.9: a bracketing phase that
    extrapolates by cubic interpolation clamped to `[t + 0.01 (t − t_prev), 10 t]` until the Armijo
    condition fails, the loss stops decreasing, the strong curvature condition `|g·d| ≤ −c2 g₀·d`
    holds or the slope turns nonnegative; then a zoom phase of cubic interpolation inside the
    bracket (moved to 10% of the bracket's length from an end after insufficient progress) until the
    strong Wolfe conditions hold, the bracket is shorter than `1e-9 / ‖d‖∞` (torch does not pass
    `tolerance_change` to its line search), or `max_ls` evaluations are used. It returns the
    bracket's lower end.

    Args:
      {lr}
        It is read once per `update`, as torch reads `group['lr']` once per `step()`.
      max_iter: maximal number of inner iterations per `update`.
      max_eval: maximal number of evaluations of the objective per `update`, counting `value`
        (default `max_iter * 5 // 4`).
      tolerance_grad: stop when `‖g‖∞ ≤ tolerance_grad` (first-order optimality).
      tolerance_change: stop on a step, loss change or directional derivative below this.
      history_size: number of curvature pairs kept.
      line_search_fn: `None` (fixed steps of length t) or `"strong_wolfe"`.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update` needs the extra arguments
      `value` and `value_fn` and returns the change `θ_new − θ` for `optax.apply_updates`.
      Jittable: the inner loop, line search and history are `lax` loops and fixed-size buffers,
      so the update compiles once.

    Called eagerly (no `jax.jit` around it, as torch's `step(closure)` is called), `update`
    traces `value_and_grad(value_fn)` at each call (about a millisecond for a small loss), passes
    the arrays `value_fn` closes over (a batch, a model's other state) as arguments, and runs a
    step compiled once per `max_iter`/`max_eval`/`history_size`/`line_search_fn`,
    parameter structure and structure of `value_fn`: a new closure per step
    (`value_fn=lambda p: loss(p, batch)`), new data and new `lbfgs` instances reuse it. Given
    the same inputs it returns bit for bit what the jitted `update` returns (a gradient that the
    caller computes eagerly, op by op, can differ from a jitted one in the last bit, which L-BFGS
    may amplify over steps). A Python number that `value_fn` closes over is compiled in as a
    constant, so pass values that change between steps as arrays. The compiled steps of the 32
    most recently used structures are kept.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxopt_port.optim import lbfgs
      >>> f = lambda p: jnp.sum((p["x"] - 3.0) ** 2) + p["b"] ** 2
      >>> params = {"x": jnp.zeros(3), "b": jnp.array(1.0)}
      >>> tx = lbfgs(line_search_fn="strong_wolfe")
      >>> state = tx.init(params)
      >>> @jax.jit
      ... def step(params, state):
      ...     value, grad = jax.value_and_grad(f)(params)
      ...     updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     return optax.apply_updates(params, updates), state
      >>> for _ in range(3):
      ...     params, state = step(params, state)
      >>> print(jnp.round(params["x"], 4), jnp.round(params["b"], 4))
      [3. 3. 3.] 0.0

      The same steps the torch way, eagerly, with a new closure each step:

      >>> params = {"x": jnp.zeros(3), "b": jnp.array(1.0)}
      >>> state = tx.init(params)
      >>> target = jnp.full(3, 3.0)
      >>> for _ in range(3):
      ...     closure = lambda p: jnp.sum((p["x"] - target) ** 2) + p["b"] ** 2
      ...     value, grad = jax.value_and_grad(closure)(params)
      ...     updates, state = tx.update(grad, state, params, value=value, value_fn=closure)
      ...     params = optax.apply_updates(params, updates)
      >>> print(jnp.round(params["x"], 4), jnp.round(params["b"], 4))
      [3. 3. 3.] 0.0

    Warning:
      Differences from torch:

      - `line_search_fn` other than `None` and `"strong_wolfe"` raises `ValueError` here,
        at construction; torch raises `RuntimeError` in the first `step()` that reaches the
        line search.
      - `history_size < 1` or not an integer and, with `"strong_wolfe"`, `max_eval < 1` raise
        `ValueError` at construction, and `max_iter`, `max_eval`, `tolerance_grad`,
        `tolerance_change` that are not real numbers `TypeError`; torch accepts them and fails
        inside `step()` (`IndexError` once a curvature pair is stored, `UnboundLocalError`
        in the line search, `TypeError`).
      - Torch keeps the loss, `prev_loss` and usually `t` as Python floats (double) and
        `H_diag` and `ro` as 0-d tensors (`H_diag` is the int 1 before the first pair); here
        every scalar is in the parameters' dtype. In float64 this is the same arithmetic; in
        float32 torch's double scalars can round differently in the last bit.
      - `update` returns `θ_new − θ`, so `optax.apply_updates` forms `θ + (θ_new − θ)`,
        which may differ from torch's `θ_new` in the last bit.
      - torch's `step` returns the loss at the start; here the caller already holds it
        (`value`). torch's scratch buffer `al` is not kept in the state.
      - Complex parameters (which torch treats as pairs of reals) are not supported.
    """
    check_lr(lr)
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError("only 'strong_wolfe' is supported")
    checks.real(max_eval, "max_eval", optional=True)
    for value, name in ((max_iter, "max_iter"), (tolerance_grad, "tolerance_grad")):
        checks.real(value, name)
    checks.real(tolerance_change, "tolerance_change")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    # torch accepts these and fails inside step(); here they fail at once
    if not history_size >= 1 or not checks.is_integer(history_size):
        raise ValueError(f"Invalid history_size: {history_size} (an integer >= 1 is needed)")
    if line_search_fn is not None and not max_eval >= 1:
        raise ValueError(f"Invalid max_eval: {max_eval} (the line search needs at least 1)")

    def init(params: Any) -> LBFGSState:
        leaves = jax.tree_util.tree_leaves(params)
        dtype = params_dtype(params)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"lbfgs needs real floating-point parameters, got {dtype}")
        n = sum(int(np.prod(leaf.shape)) for leaf in leaves)
        count = jnp.zeros([], jnp.int32)
        vector = jnp.zeros([n], dtype)
        scalar = jnp.zeros([], dtype)
        return LBFGSState(
            count=count,
            func_evals=count,
            n_iter=count,
            d=vector,
            t=scalar,
            old_dirs=jnp.zeros([history_size, n], dtype),
            old_stps=jnp.zeros([history_size, n], dtype),
            ro=jnp.zeros([history_size], dtype),
            H_diag=jnp.ones([], dtype),
            prev_flat_grad=vector,
            prev_loss=scalar,
            num_old=count,
            oldest=count,
        )

    options = _Options(max_iter, max_eval, history_size, line_search_fn)

    def update(
        updates: Any,
        state: LBFGSState,
        params: Any = None,
        *,
        value: Array,
        value_fn: Callable[[Any], Array],
        grad: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, LBFGSState]:
        del extra_args
        if params is None:
            raise ValueError("lbfgs needs params (and value, value_fn) in update")
        lr_now = lr_at(lr, state.count)
        dynamic = (updates, state, params, value, grad, lr_now, tolerance_grad, tolerance_change)
        static = None if any_tracer(dynamic, options) else _by_value(options)
        if static is None:  # under the caller's jit, vmap or grad (or unhashable options): inline
            return _step(options, _value_and_grad(value_fn), *dynamic)
        return _eager_step(static, value_fn, *dynamic)

    return optax.GradientTransformationExtraArgs(init, update)
