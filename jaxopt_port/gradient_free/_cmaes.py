"""CMA-ES (Hansen's $(\\mu/\\mu_w, \\lambda)$ covariance matrix adaptation, tutorial form)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_port.gradient_free._common import (
    Strategy,
    check_bounds,
    check_int,
    check_positive,
    draw,
    iteration_key,
    repair,
    sanitize,
    update_best,
)

__all__ = ["CMAState", "cma_es", "cma_parameters"]


class CMAState(NamedTuple):
    """The state of `cma_es`.

    Attributes:
        key: the run's key; iteration $t$ draws from `fold_in(key, t)`.
        iteration: completed `tell`s (generations).
        mean: $m$, the distribution's mean.
        sigma: $\\sigma$, the global step size.
        cov: $C$, the covariance matrix.
        path_sigma: $p_\\sigma$, the conjugate evolution path.
        path_c: $p_c$, the evolution path of $C$.
        best_x: the best point evaluated so far.
        best_f: its value.
    """

    key: jax.Array
    iteration: jax.Array
    mean: jax.Array
    sigma: jax.Array
    cov: jax.Array
    path_sigma: jax.Array
    path_c: jax.Array
    best_x: jax.Array
    best_f: jax.Array


def cma_parameters(dim: int, popsize: int | None = None) -> dict[str, Any]:
    """Hansen's default strategy parameters (positive recombination weights).

    $\\lambda = 4 + \\lfloor 3 \\ln d \\rfloor$, $\\mu = \\lfloor\\lambda/2\\rfloor$,
    $w_i \\propto \\ln\\frac{\\lambda+1}{2} - \\ln i$, $\\mu_\\text{eff} = 1/\\sum w_i^2$,
    $c_\\sigma = \\frac{\\mu_\\text{eff}+2}{d+\\mu_\\text{eff}+5}$,
    $d_\\sigma = 1 + 2\\max(0, \\sqrt{\\frac{\\mu_\\text{eff}-1}{d+1}} - 1) + c_\\sigma$,
    $c_c = \\frac{4 + \\mu_\\text{eff}/d}{d + 4 + 2\\mu_\\text{eff}/d}$,
    $c_1 = \\frac{2}{(d+1.3)^2 + \\mu_\\text{eff}}$,
    $c_\\mu = \\min(1 - c_1, \\frac{2(\\mu_\\text{eff} - 2 + 1/\\mu_\\text{eff})}{(d+2)^2 + \\mu_\\text{eff}})$,
    $\\chi_d = \\sqrt d (1 - \\frac1{4d} + \\frac1{21 d^2})$.

    Examples:
        >>> cma_parameters(10)["popsize"]
        10
    """
    lam = 4 + int(3 * math.log(dim)) if popsize is None else popsize
    mu = lam // 2
    raw = np.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
    weights = raw / raw.sum()
    mu_eff = 1.0 / float(np.sum(weights**2))
    c_sigma = (mu_eff + 2) / (dim + mu_eff + 5)
    c1 = 2 / ((dim + 1.3) ** 2 + mu_eff)
    return {
        "popsize": lam,
        "mu": mu,
        "weights": weights,
        "mu_eff": mu_eff,
        "c_sigma": c_sigma,
        "d_sigma": 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (dim + 1)) - 1) + c_sigma,
        "c_c": (4 + mu_eff / dim) / (dim + 4 + 2 * mu_eff / dim),
        "c1": c1,
        "c_mu": min(1 - c1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((dim + 2) ** 2 + mu_eff)),
        "chi": math.sqrt(dim) * (1 - 1 / (4 * dim) + 1 / (21 * dim**2)),
    }


def _sqrt_and_inverse(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """$C^{1/2}$ and $C^{-1/2}$ (symmetric, from one eigendecomposition; eigenvalues floored at 0)."""
    values, vectors = jnp.linalg.eigh(cov)
    root = jnp.sqrt(jnp.maximum(values, 0))
    inverse = jnp.where(root > 0, 1 / jnp.where(root > 0, root, 1), 0)
    return (vectors * root) @ vectors.T, (vectors * inverse) @ vectors.T


def cma_es(
    dim: int, *, bounds: Any = None, popsize: int | None = None, sigma: float | None = None
) -> Strategy:
    """CMA-ES with rank-one and rank-$\\mu$ updates and cumulative step-size adaptation.

    Generation $g$ samples $x_k = m + \\sigma\\, C^{1/2} z_k$ ($z_k$ standard normal; the symmetric
    square root, so the run does not depend on eigenvector signs), clipped to `bounds`. `tell` sorts
    the candidates by value, takes $y_k = (x_{k:\\lambda} - m)/\\sigma$ (of the points as
    evaluated) and updates, with the constants of `cma_parameters`:

    $$
    \\begin{aligned}
    y_w &= \\textstyle\\sum_{i \\le \\mu} w_i y_i, \\qquad m \\leftarrow m + \\sigma y_w, \\\\
    p_\\sigma &\\leftarrow (1 - c_\\sigma) p_\\sigma + \\sqrt{c_\\sigma (2 - c_\\sigma) \\mu_\\text{eff}}\\, C^{-1/2} y_w, \\\\
    h_\\sigma &= [\\lVert p_\\sigma \\rVert / \\sqrt{1 - (1 - c_\\sigma)^{2(g+1)}} < (1.4 + \\tfrac{2}{d+1}) \\chi_d], \\\\
    p_c &\\leftarrow (1 - c_c) p_c + h_\\sigma \\sqrt{c_c (2 - c_c) \\mu_\\text{eff}}\\, y_w, \\\\
    C &\\leftarrow (1 - c_1 - c_\\mu) C + c_1 (p_c p_c^\\top + (1 - h_\\sigma) c_c (2 - c_c) C)
        + c_\\mu \\textstyle\\sum_{i \\le \\mu} w_i y_i y_i^\\top, \\\\
    \\sigma &\\leftarrow \\sigma \\exp\\big(\\tfrac{c_\\sigma}{d_\\sigma} (\\lVert p_\\sigma \\rVert / \\chi_d - 1)\\big).
    \\end{aligned}
    $$

    Args:
        dim: the number of coordinates.
        bounds: `(lower, upper)` arrays (candidates are clipped), or None.
        popsize: $\\lambda \\ge 2$; default $4 + \\lfloor 3 \\ln d \\rfloor$.
        sigma: initial step size $\\sigma_0$; default 0.3·mean(upper − lower) with bounds, else 1.

    Returns:
        A `Strategy` whose state is a `CMAState` (`x0` is the initial mean).

    Raises:
        ValueError: if `popsize` < 2 or `sigma` is not > 0.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> es = cma_es(3)
        >>> state = es.init(jax.random.key(0), jnp.ones(3))
        >>> es.ask(state)[0].shape
        (7, 3)
    """
    if popsize is not None:
        check_int("popsize", popsize, 2)
    p = cma_parameters(dim, popsize)
    box = check_bounds(bounds, dim)
    if sigma is None:
        sigma = 1.0 if box is None else 0.3 * float(np.mean(box[1] - box[0]))
    sigma = check_positive("sigma", sigma)
    lam, mu = p["popsize"], p["mu"]

    def draws(key, iteration):
        spec = {"z": ((lam, dim), "normal")}
        return draw(iteration_key(key, iteration), spec, jnp.result_type(float))

    def init(key, x0):
        x0 = jnp.asarray(x0)
        if x0.shape != (dim,):
            raise ValueError(f"x0 (the initial mean) must have shape ({dim},); got {x0.shape}")
        zeros = jnp.zeros(dim, x0.dtype)
        return CMAState(
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            mean=x0,
            sigma=jnp.asarray(sigma, x0.dtype),
            cov=jnp.eye(dim, dtype=x0.dtype),
            path_sigma=zeros,
            path_c=zeros,
            best_x=x0,
            best_f=jnp.array(jnp.inf, x0.dtype),
        )

    def ask(state):
        z = draws(state.key, state.iteration)["z"].astype(state.mean.dtype)
        root, _ = _sqrt_and_inverse(state.cov)
        return repair(state.mean + state.sigma * z @ root, box, "clip"), state

    def tell(state, candidates, values):
        values = sanitize(jnp.asarray(values, state.mean.dtype))
        dtype = state.mean.dtype
        weights = jnp.asarray(p["weights"], dtype)
        c_s, c_c, c1, c_mu, mu_eff = p["c_sigma"], p["c_c"], p["c1"], p["c_mu"], p["mu_eff"]
        order = jnp.argsort(values, stable=True)[:mu]
        y = (candidates[order] - state.mean) / state.sigma
        y_w = weights @ y
        mean = state.mean + state.sigma * y_w
        _, inverse_root = _sqrt_and_inverse(state.cov)
        path_sigma = (1 - c_s) * state.path_sigma + math.sqrt(c_s * (2 - c_s) * mu_eff) * (
            inverse_root @ y_w
        )
        norm = jnp.linalg.norm(path_sigma)
        generation = (state.iteration + 1).astype(dtype)
        h = norm / jnp.sqrt(1 - (1 - c_s) ** (2 * generation)) < (1.4 + 2 / (dim + 1)) * p["chi"]
        h = h.astype(dtype)
        path_c = (1 - c_c) * state.path_c + h * math.sqrt(c_c * (2 - c_c) * mu_eff) * y_w
        rank_mu = (y.T * weights) @ y
        cov = (
            (1 - c1 - c_mu) * state.cov
            + c1 * (jnp.outer(path_c, path_c) + (1 - h) * c_c * (2 - c_c) * state.cov)
            + c_mu * rank_mu
        )
        cov = (cov + cov.T) / 2
        sigma_new = state.sigma * jnp.exp((c_s / p["d_sigma"]) * (norm / p["chi"] - 1))
        best_x, best_f = update_best(state.best_x, state.best_f, candidates, values)
        return CMAState(
            key=state.key,
            iteration=state.iteration + 1,
            mean=mean,
            sigma=sigma_new,
            cov=cov,
            path_sigma=path_sigma,
            path_c=path_c,
            best_x=best_x,
            best_f=best_f,
        )

    return Strategy(init, ask, tell, draws, lam, "cma_es")
