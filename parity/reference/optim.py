"""A plain NumPy float64 reference of every update rule jaxopt_port implements.

Written from the algorithms in torch.optim's documentation (the pseudo-code boxes of each class,
and torch's source where the documentation leaves a detail open, named at each place) and from the
textbook formulas, in the plainest form: one Python loop over parameters, float64 NumPy arrays,
no JAX and no jaxopt_port. The parity tests check JAX and torch against it.

Usage::

    ref = make("adam", [w, b], lr=1e-3)   # torch's keyword names and defaults
    ref.step([grad_w, grad_b])            # one optimizer step; ref.params are the new values
    ref.state                             # one dict per parameter, keyed as torch's state
    ref.lr = 5e-4                         # what an lr scheduler does to param_groups[0]["lr"]

``lbfgs`` steps with a closure instead: ``ref.step(closure)``, ``closure(params) -> (loss, grads)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = ["NAMES", "Reference", "make"]


class Reference:
    """Parameters, per-parameter state and hyperparameters of one optimizer (one param group)."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Sequence[np.ndarray], **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected options {sorted(unknown)}")
        self.hp = {**self.defaults, **kwargs}
        self.lr = float(self.hp.pop("lr"))
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def step(self, grads: Sequence[np.ndarray]) -> None:
        sign = -1.0 if self.hp.get("maximize") else 1.0
        for i, g in enumerate(grads):
            self.params[i] = self.update(self.params[i], sign * np.asarray(g), self.state[i])

    def update(self, p: np.ndarray, g: np.ndarray, s: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError


def _l2(p: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
    """L2 regularization as torch adds it: the gradient of (weight_decay / 2)·‖θ‖²."""
    return g + weight_decay * p if weight_decay else g


# ------------------------------------------------------------------------------------------------
# torch.optim


class SGD(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        g = _l2(p, g, h["weight_decay"])
        if h["momentum"]:
            if "momentum_buffer" not in s:
                b = g.copy()  # first step: b₁ = g₁
            else:
                b = h["momentum"] * s["momentum_buffer"] + (1 - h["dampening"]) * g
            s["momentum_buffer"] = b
            g = g + h["momentum"] * b if h["nesterov"] else b
        return p - self.lr * g


class Adam(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        maximize=False,
        decoupled_weight_decay=False,
    )

    def update(self, p, g, s):
        h = self.hp
        (b1, b2), lr = h["betas"], self.lr
        if not s:
            s.update(step=0.0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
            if h["amsgrad"]:
                s["max_exp_avg_sq"] = np.zeros_like(p)
        s["step"] += 1
        t = s["step"]
        if h["decoupled_weight_decay"]:
            p = p * (1 - lr * h["weight_decay"])
        else:
            g = _l2(p, g, h["weight_decay"])
        s["exp_avg"] = s["exp_avg"] + (1 - b1) * (g - s["exp_avg"])
        s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
        v = s["exp_avg_sq"]
        if h["amsgrad"]:
            s["max_exp_avg_sq"] = v = np.maximum(s["max_exp_avg_sq"], v)
        # θ ← θ − γ m̂ / (√v̂ + ε), with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + h["eps"]
        return p - (lr / (1 - b1**t)) * s["exp_avg"] / denom


class AdamW(Adam):
    defaults: ClassVar[dict[str, Any]] = {
        **Adam.defaults,
        "weight_decay": 1e-2,
        "decoupled_weight_decay": True,
    }

    def __init__(self, params, **kwargs):
        if "decoupled_weight_decay" in kwargs:
            raise TypeError("AdamW got unexpected options ['decoupled_weight_decay']")
        super().__init__(params, **kwargs)


class Adamax(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        b1, b2 = h["betas"]
        if not s:
            s.update(step=0.0, exp_avg=np.zeros_like(p), exp_inf=np.zeros_like(p))
        s["step"] += 1
        g = _l2(p, g, h["weight_decay"])
        s["exp_avg"] = s["exp_avg"] + (1 - b1) * (g - s["exp_avg"])
        s["exp_inf"] = np.maximum(b2 * s["exp_inf"], np.abs(g) + h["eps"])
        return p - self.lr / (1 - b1 ** s["step"]) * s["exp_avg"] / s["exp_inf"]


class NAdam(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        maximize=False,
    )

    def update(self, p, g, s):
        h = self.hp
        (b1, b2), lr, psi = h["betas"], self.lr, h["momentum_decay"]
        if not s:
            s.update(
                step=0.0, mu_product=1.0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p)
            )
        s["step"] += 1
        t = s["step"]
        if h["decoupled_weight_decay"]:
            p = p * (1 - lr * h["weight_decay"])
        else:
            g = _l2(p, g, h["weight_decay"])
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        s["mu_product"] *= mu
        s["exp_avg"] = s["exp_avg"] + (1 - b1) * (g - s["exp_avg"])
        s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
        denom = np.sqrt(s["exp_avg_sq"] / (1 - b2**t)) + h["eps"]
        p = p - lr * (1 - mu) / (1 - s["mu_product"]) * g / denom
        return p - lr * mu_next / (1 - s["mu_product"] * mu_next) * s["exp_avg"] / denom


class RAdam(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        decoupled_weight_decay=False,
        maximize=False,
    )

    def update(self, p, g, s):
        h = self.hp
        (b1, b2), lr = h["betas"], self.lr
        if not s:
            s.update(step=0.0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        s["step"] += 1
        t = s["step"]
        if h["decoupled_weight_decay"]:
            p = p * (1 - lr * h["weight_decay"])
        else:
            g = _l2(p, g, h["weight_decay"])
        s["exp_avg"] = s["exp_avg"] + (1 - b1) * (g - s["exp_avg"])
        s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
        m_hat = s["exp_avg"] / (1 - b1**t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t <= 5:  # the variance is not tractable yet: an un-adapted momentum step
            return p - lr * m_hat
        rect = math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )
        adaptive = math.sqrt(1 - b2**t) / (np.sqrt(s["exp_avg_sq"]) + h["eps"])
        return p - lr * m_hat * adaptive * rect


class Adagrad(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        maximize=False,
    )

    def update(self, p, g, s):
        h = self.hp
        if not s:
            s.update(step=0.0, sum=np.full_like(p, h["initial_accumulator_value"]))
        s["step"] += 1
        g = _l2(p, g, h["weight_decay"])
        clr = self.lr / (1 + (s["step"] - 1) * h["lr_decay"])
        s["sum"] = s["sum"] + g * g
        return p - clr * g / (np.sqrt(s["sum"]) + h["eps"])


class Adadelta(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        rho, eps = h["rho"], h["eps"]
        if not s:
            s.update(step=0.0, square_avg=np.zeros_like(p), acc_delta=np.zeros_like(p))
        s["step"] += 1
        g = _l2(p, g, h["weight_decay"])
        s["square_avg"] = rho * s["square_avg"] + (1 - rho) * g * g
        delta = np.sqrt(s["acc_delta"] + eps) / np.sqrt(s["square_avg"] + eps) * g
        s["acc_delta"] = rho * s["acc_delta"] + (1 - rho) * delta * delta
        return p - self.lr * delta


class RMSprop(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        alpha = h["alpha"]
        if not s:
            s.update(step=0.0, square_avg=np.zeros_like(p))
            if h["momentum"] > 0:
                s["momentum_buffer"] = np.zeros_like(p)
            if h["centered"]:
                s["grad_avg"] = np.zeros_like(p)
        s["step"] += 1
        g = _l2(p, g, h["weight_decay"])
        s["square_avg"] = alpha * s["square_avg"] + (1 - alpha) * g * g
        v = s["square_avg"]
        if h["centered"]:  # v − (E[g])²: an estimate of the gradient's variance
            s["grad_avg"] = s["grad_avg"] + (1 - alpha) * (g - s["grad_avg"])
            v = v - s["grad_avg"] ** 2
        step = g / (np.sqrt(v) + h["eps"])
        if h["momentum"] > 0:
            s["momentum_buffer"] = h["momentum"] * s["momentum_buffer"] + step
            step = s["momentum_buffer"]
        return p - self.lr * step


class Rprop(Reference):
    """The lr is read once, at the first step, as the initial step size (torch's behaviour)."""

    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False
    )

    def update(self, p, g, s):
        (eta_minus, eta_plus), (step_min, step_max) = self.hp["etas"], self.hp["step_sizes"]
        if not s:
            s.update(step=0.0, prev=np.zeros_like(p), step_size=np.full_like(p, self.lr))
        s["step"] += 1
        agreement = g * s["prev"]
        factor = np.where(agreement > 0, eta_plus, np.where(agreement < 0, eta_minus, 1.0))
        s["step_size"] = np.clip(s["step_size"] * factor, step_min, step_max)
        g = np.where(agreement < 0, 0.0, g)  # after a sign change: no move, forget the gradient
        s["prev"] = g
        return p - np.sign(g) * s["step_size"]


class ASGD(Reference):
    """Averaged SGD. eta (the step size) is computed after each step from that step's lr, so an lr
    change reaches the parameters one step late (torch's behaviour)."""

    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        if not s:
            s.update(step=0.0, eta=self.lr, mu=1.0, ax=np.zeros_like(p))
        s["step"] += 1
        t = s["step"]
        g = _l2(p, g, h["weight_decay"])
        p = p * (1 - h["lambd"] * s["eta"]) - s["eta"] * g
        s["ax"] = p.copy() if s["mu"] == 1 else s["ax"] + s["mu"] * (p - s["ax"])
        s["eta"] = self.lr / (1 + h["lambd"] * self.lr * t) ** h["alpha"]
        s["mu"] = 1 / max(1.0, t - h["t0"])
        return p


class SparseAdam(Reference):
    """Adam on the entries present in a sparse gradient only. The reference takes dense gradients
    and, as an embedding's sparse gradient holds exactly the looked-up rows, treats an entry as
    present where its gradient is nonzero."""

    defaults: ClassVar[dict[str, Any]] = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False)

    def update(self, p, g, s):
        b1, b2 = self.hp["betas"]
        if not s:
            s.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        s["step"] += 1
        t = s["step"]
        present = g != 0
        m = np.where(present, s["exp_avg"] + (1 - b1) * (g - s["exp_avg"]), s["exp_avg"])
        v = np.where(
            present, s["exp_avg_sq"] + (1 - b2) * (g * g - s["exp_avg_sq"]), s["exp_avg_sq"]
        )
        s["exp_avg"], s["exp_avg_sq"] = m, v
        step_size = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        return np.where(present, p - step_size * m / (np.sqrt(v) + self.hp["eps"]), p)


class Adafactor(Reference):
    """Adafactor as torch documents it: factored second moments for matrices, relative step sizes,
    update clipping by d; ``eps = (eps1, eps2)`` with eps1 = None meaning float64's machine eps."""

    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False
    )

    def update(self, p, g, s):
        h = self.hp
        eps1, eps2 = h["eps"]
        eps1 = np.finfo(np.float64).eps if eps1 is None else eps1
        if not s:
            s["step"] = 0.0
            if p.ndim > 1:
                s["row_var"] = np.zeros((*p.shape[:-1], 1))
                s["col_var"] = np.zeros((*p.shape[:-2], 1, p.shape[-1]))
            else:
                s["variance"] = np.zeros_like(p)
        s["step"] += 1
        t = s["step"]
        beta2_t = 1 - t ** h["beta2_decay"]  # the weight of the past: 1 − t^(−0.8)
        rho = min(self.lr, 1 / math.sqrt(t))
        alpha = max(eps2, np.sqrt(np.sum(p * p) / p.size)) * rho  # RMS(θ) before the decay
        p = p * (1 - self.lr * h["weight_decay"])
        if p.ndim > 1:
            row_mean = np.mean(g * g, axis=-1, keepdims=True)
            col_mean = np.mean(g * g, axis=-2, keepdims=True)
            s["row_var"] = beta2_t * s["row_var"] + (1 - beta2_t) * row_mean
            s["col_var"] = beta2_t * s["col_var"] + (1 - beta2_t) * col_mean
            row_scale = np.maximum(np.mean(s["row_var"], axis=-2, keepdims=True), eps1)
            v = s["row_var"] @ s["col_var"] / row_scale
        else:
            s["variance"] = beta2_t * s["variance"] + (1 - beta2_t) * g * g
            v = s["variance"]
        u = g / np.sqrt(np.maximum(v, eps1 * eps1))
        clip = max(1.0, np.sqrt(np.sum(u * u) / u.size) / h["d"])
        return p - alpha / clip * u


class Muon(Reference):
    """Momentum orthogonalized by a quintic Newton–Schulz iteration; 2-D parameters only. The
    iteration runs in float64 here (torch runs it in bfloat16; the parity runs patch torch to the
    parameter dtype, as ``jaxopt_port.optim.muon(ns_dtype=None)`` does)."""

    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1e-3,
        weight_decay=0.1,
        momentum=0.95,
        nesterov=True,
        ns_coefficients=(3.4445, -4.775, 2.0315),
        eps=1e-7,
        ns_steps=5,
        adjust_lr_fn=None,
    )

    def update(self, p, g, s):
        h = self.hp
        beta = h["momentum"]
        if not s:
            s["momentum_buffer"] = np.zeros_like(p)
        s["momentum_buffer"] = beta * s["momentum_buffer"] + (1 - beta) * g
        u = (1 - beta) * g + beta * s["momentum_buffer"] if h["nesterov"] else s["momentum_buffer"]
        a, b, c = h["ns_coefficients"]
        x = u.T if u.shape[0] > u.shape[1] else u
        x = x / max(np.linalg.norm(x), h["eps"])
        for _ in range(h["ns_steps"]):  # X ← aX + (bA + cA²)X, A = XXᵀ
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        u = x.T if u.shape[0] > u.shape[1] else x
        rows, cols = p.shape
        if h["adjust_lr_fn"] in (None, "original"):
            ratio = math.sqrt(max(1.0, rows / cols))
        elif h["adjust_lr_fn"] == "match_rms_adamw":
            ratio = 0.2 * math.sqrt(max(rows, cols))
        else:
            ratio = 1.0
        return p * (1 - self.lr * h["weight_decay"]) - self.lr * ratio * u


# ------------------------------------------------------------------------------------------------
# LBFGS: torch's algorithm (its documentation points to minFunc; the details, the strong-Wolfe line
# search with c1 = 1e-4, c2 = 0.9 and its stopping tests, are those of torch's source).


def _cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic matching values and slopes at x1, x2, clamped to the bounds; the
    midpoint of the bounds where the cubic has no real critical point."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if not disc >= 0:
        return (lo + hi) / 2
    d2 = math.sqrt(disc)
    if x1 <= x2:
        t = x2 - (x2 - x1) * (g2 + d2 - d1) / (g2 - g1 + 2 * d2)
    else:
        t = x1 - (x1 - x2) * (g1 + d2 - d1) / (g1 - g2 + 2 * d2)
    return min(max(t, lo), hi)


def _strong_wolfe(phi, t, f, g, gtd, d, max_ls, c1=1e-4, c2=0.9, tolerance_change=1e-9):
    """Line search along d from step t: returns (f, g, t, evaluations) at the accepted step."""
    d_norm = float(np.max(np.abs(d)))
    f_new, g_new = phi(t)
    evals, ls_iter = 1, 0
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done, bracket = False, None
    while ls_iter < max_ls:  # bracketing: grow t until an interval holds a Wolfe point
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket = [(t_prev, f_prev, g_prev, gtd_prev), (t, f_new, g_new, gtd_new)]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [(t, f_new, g_new, gtd_new)] * 2, True
            break
        if gtd_new >= 0:
            bracket = [(t_prev, f_prev, g_prev, gtd_prev), (t, f_new, g_new, gtd_new)]
            break
        t_next = _cubic_minimum(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(t + 0.01 * (t - t_prev), 10 * t)
        )
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new = phi(t)
        gtd_new = float(g_new @ d)
        evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket = [(0.0, f, g, gtd), (t, f_new, g_new, None)]
    low = 0 if bracket[0][1] <= bracket[1][1] else 1
    insufficient = False
    while not done and ls_iter < max_ls:  # zoom: shrink the interval onto a Wolfe point
        (a, fa, _, ga), (b, fb, _, gb) = bracket
        if abs(b - a) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(a, fa, ga, b, fb, gb)
        hi_end, lo_end = max(a, b), min(a, b)
        eps = 0.1 * (hi_end - lo_end)
        if min(hi_end - t, t - lo_end) < eps:  # too close to an end of the interval
            if insufficient or t >= hi_end or t <= lo_end:
                t = hi_end - eps if abs(t - hi_end) < abs(t - lo_end) else lo_end + eps
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new = phi(t)
        gtd_new = float(g_new @ d)
        evals += 1
        ls_iter += 1
        high = 1 - low
        point = (t, f_new, g_new, gtd_new)
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = point
            low = 0 if bracket[0][1] <= bracket[1][1] else 1
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = point
    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evals


class LBFGS(Reference):
    defaults: ClassVar[dict[str, Any]] = dict(
        lr=1,
        max_iter=20,
        max_eval=None,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        history_size=100,
        line_search_fn=None,
    )

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        if self.hp["max_eval"] is None:
            self.hp["max_eval"] = self.hp["max_iter"] * 5 // 4
        self.state[0].update(func_evals=0, n_iter=0)

    def step(self, closure: Callable[[list[np.ndarray]], tuple[float, list[np.ndarray]]]) -> None:
        h, s = self.hp, self.state[0]
        shapes = [p.shape for p in self.params]
        sizes = [p.size for p in self.params]

        def unflat(x):
            return [
                a.reshape(shape)
                for a, shape in zip(np.split(x, np.cumsum(sizes)[:-1]), shapes, strict=True)
            ]

        def evaluate(x):
            loss, grads = closure(unflat(x))
            return float(loss), np.concatenate([np.ravel(g) for g in grads])

        x = np.concatenate([p.ravel() for p in self.params])
        loss, g = evaluate(x)
        evals = 1
        s["func_evals"] += 1
        if np.max(np.abs(g)) <= h["tolerance_grad"]:
            return
        k = 0
        while k < h["max_iter"]:
            k += 1
            s["n_iter"] += 1
            if s["n_iter"] == 1:  # steepest descent, empty memory
                d = -g
                s.update(old_dirs=[], old_stps=[], ro=[], H_diag=1.0)
            else:  # store (y, s) if it has positive curvature, then the two-loop recursion
                y, step = g - s["prev_flat_grad"], s["t"] * s["d"]
                ys = float(y @ step)
                if ys > 1e-10:
                    if len(s["old_dirs"]) == h["history_size"]:
                        for key in ("old_dirs", "old_stps", "ro"):
                            s[key].pop(0)
                    s["old_dirs"].append(y)
                    s["old_stps"].append(step)
                    s["ro"].append(1.0 / ys)
                    s["H_diag"] = ys / float(y @ y)
                q, alphas = -g, {}
                for i in reversed(range(len(s["old_dirs"]))):
                    alphas[i] = float(s["old_stps"][i] @ q) * s["ro"][i]
                    q = q - alphas[i] * s["old_dirs"][i]
                d = q * s["H_diag"]
                for i in range(len(s["old_dirs"])):
                    beta = float(s["old_dirs"][i] @ d) * s["ro"][i]
                    d = d + (alphas[i] - beta) * s["old_stps"][i]
            s["d"], s["prev_flat_grad"], s["prev_loss"] = d, g, loss
            t = min(1.0, 1.0 / np.sum(np.abs(g))) * self.lr if s["n_iter"] == 1 else self.lr
            s["t"] = t
            gtd = float(g @ d)
            if gtd > -h["tolerance_change"]:
                break
            if h["line_search_fn"] == "strong_wolfe":
                loss, g, t, n = _strong_wolfe(
                    lambda t, x=x, d=d: evaluate(x + t * d),
                    t, loss, g, gtd, d, h["max_eval"] - evals,
                )  # fmt: skip
                x = x + t * d
            elif h["line_search_fn"] is None:
                x = x + t * d
                n = 0
                if k != h["max_iter"]:  # the last iteration's gradient would go unused
                    loss, g = evaluate(x)
                    n = 1
            else:
                raise ValueError("only 'strong_wolfe' is supported")
            s["t"] = t
            evals += n
            s["func_evals"] += n
            if (
                k == h["max_iter"]
                or evals >= h["max_eval"]
                or (n and np.max(np.abs(g)) <= h["tolerance_grad"])
                or np.max(np.abs(d * t)) <= h["tolerance_change"]
                or abs(loss - s["prev_loss"]) < h["tolerance_change"]
            ):
                break
        self.params = unflat(x)


# ------------------------------------------------------------------------------------------------
# Textbook rules, as commonly written (ε inside the root where the textbook puts it there).


class TextbookSGD(Reference):
    """θ ← θ − α∇J(θ)."""

    defaults: ClassVar[dict[str, Any]] = dict(lr=1e-3)

    def update(self, p, g, s):
        return p - self.lr * g


class TextbookMomentum(Reference):
    """θₜ₊₁ = θₜ − α∇J(θₜ) + β(θₜ − θₜ₋₁), with θ₋₁ = θ₀."""

    defaults: ClassVar[dict[str, Any]] = dict(lr=1e-3, momentum=0.9)

    def update(self, p, g, s):
        previous = s.get("previous", p)
        s["previous"] = p
        return p - self.lr * g + self.hp["momentum"] * (p - previous)


class TextbookRMSprop(Reference):
    """v ← βv + (1 − β)g²;  θ ← θ − α g / √(v + ε)."""

    defaults: ClassVar[dict[str, Any]] = dict(lr=1e-3, beta=0.9, eps=1e-8)

    def update(self, p, g, s):
        beta = self.hp["beta"]
        s["v"] = beta * s.get("v", 0.0) + (1 - beta) * g * g
        return p - self.lr * g / np.sqrt(s["v"] + self.hp["eps"])


class TextbookAdam(Reference):
    """m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  θ ← θ − α m̂ / √(v̂ + ε)."""

    defaults: ClassVar[dict[str, Any]] = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    def update(self, p, g, s):
        b1, b2 = self.hp["betas"]
        s["t"] = s.get("t", 0) + 1
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        m_hat, v_hat = s["m"] / (1 - b1 ** s["t"]), s["v"] / (1 - b2 ** s["t"])
        return p - self.lr * m_hat / np.sqrt(v_hat + self.hp["eps"])


_CLASSES: dict[str, type[Reference]] = {
    "adadelta": Adadelta,
    "adafactor": Adafactor,
    "adagrad": Adagrad,
    "adam": Adam,
    "adamax": Adamax,
    "adamw": AdamW,
    "asgd": ASGD,
    "lbfgs": LBFGS,
    "muon": Muon,
    "nadam": NAdam,
    "radam": RAdam,
    "rmsprop": RMSprop,
    "rprop": Rprop,
    "sgd": SGD,
    "sparse_adam": SparseAdam,
    "textbook_sgd": TextbookSGD,
    "textbook_momentum": TextbookMomentum,
    "textbook_rmsprop": TextbookRMSprop,
    "textbook_adam": TextbookAdam,
}

#: Every rule the reference implements: torch.optim's 15 optimizers and the textbook variants.
NAMES = tuple(_CLASSES)


def make(name: str, params: Sequence[np.ndarray], **kwargs: Any) -> Reference:
    """The reference optimizer ``name`` over copies of ``params`` with torch's keyword options."""
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; expected one of {', '.join(NAMES)}") from None
    return cls(params, **kwargs)
