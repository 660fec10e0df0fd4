"""A NumPy float64 reference of the gradient-free optimizers: plain loops over the documented formulas.

Each reference replays a run of `jaxopt_port.gradient_free` from the same random draws: it takes
the starting state and the standard variates of every iteration (`Strategy.draws(key, t)`, drawn
once with JAX keys) as arrays, and returns the state after every iteration under the JAX state's
field names, so the two trajectories compare leaf by leaf. Only NumPy is imported; the JAX side
and the comparison are `parity.run.gradient_free`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "CASES",
    "REFERENCES",
    "TEST_FUNCTIONS",
    "annealing_reference",
    "cma_es_reference",
    "differential_evolution_reference",
    "dual_annealing_reference",
    "es_gradient_reference",
    "function_by_name",
    "genetic_reference",
    "temperature_reference",
    "visiting_temperature_reference",
]


# --- standard test functions, written once for NumPy (xp=np) and JAX (xp=jax.numpy) ----------------


def rastrigin(x, xp=np):
    """$10 d + \\sum_i (x_i^2 - 10\\cos 2\\pi x_i)$, minimum 0 at 0, bounds ±5.12."""
    return 10 * x.shape[-1] + xp.sum(x**2 - 10 * xp.cos(2 * math.pi * x), axis=-1)


def ackley(x, xp=np):
    """$-20 e^{-0.2\\sqrt{\\overline{x^2}}} - e^{\\overline{\\cos 2\\pi x}} + 20 + e$, minimum 0 at 0, bounds ±32.768."""
    a = -20 * xp.exp(-0.2 * xp.sqrt(xp.mean(x**2, axis=-1)))
    return a - xp.exp(xp.mean(xp.cos(2 * math.pi * x), axis=-1)) + 20 + math.e


def rosenbrock(x, xp=np):
    """$\\sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2$, minimum 0 at 1, bounds ±5 (scipy's `rosen`)."""
    return xp.sum(100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2, axis=-1)


def schwefel(x, xp=np):
    """$418.9829\\,d - \\sum_i x_i \\sin\\sqrt{|x_i|}$, minimum ≈ 0 at 420.9687, bounds ±500."""
    return 418.9828872724338 * x.shape[-1] - xp.sum(x * xp.sin(xp.sqrt(xp.abs(x))), axis=-1)


def griewank(x, xp=np):
    """$1 + \\sum_i x_i^2/4000 - \\prod_i \\cos(x_i/\\sqrt i)$, minimum 0 at 0, bounds ±600."""
    i = xp.arange(1, x.shape[-1] + 1)
    return 1 + xp.sum(x**2, axis=-1) / 4000 - xp.prod(xp.cos(x / xp.sqrt(i)), axis=-1)


#: name → (function(x, xp), half-width of the usual search box).
TEST_FUNCTIONS: dict[str, tuple[Callable, float]] = {
    "rastrigin": (rastrigin, 5.12),
    "ackley": (ackley, 32.768),
    "rosenbrock": (rosenbrock, 5.0),
    "schwefel": (schwefel, 500.0),
    "griewank": (griewank, 600.0),
}


# --- shared pieces ---------------------------------------------------------------------------------


def _box(bounds, dim):
    if bounds is None:
        return None
    return tuple(np.broadcast_to(np.asarray(b, np.float64), (dim,)).copy() for b in bounds)


def _scale(value, box, dim, unbounded):
    if value is None:
        value = unbounded if box is None else 0.1 * (box[1] - box[0])
    return np.broadcast_to(np.asarray(value, np.float64), (dim,))


def _repair(x, box, mode):
    if box is None:
        return x
    lower, upper = box
    if mode == "clip":
        return np.clip(x, lower, upper)
    width = upper - lower
    safe = np.where(width > 0, width, 1)
    folded = np.mod(x - lower, 2 * safe)
    return np.where(width > 0, lower + safe - np.abs(folded - safe), lower)


def _evaluate(fun, candidates):
    values = np.array([float(fun(c)) for c in candidates])
    return np.where(np.isnan(values), np.inf, values)


def _update_best(best_x, best_f, candidates, values):
    i = int(np.argmin(values))
    if values[i] < best_f:
        return candidates[i].copy(), float(values[i])
    return best_x, best_f


def _stack(records: list[dict]) -> dict[str, np.ndarray]:
    return {name: np.stack([np.asarray(r[name]) for r in records]) for name in records[0]}


def _at(draws: dict, t: int) -> dict:
    return {name: np.asarray(value[t]) for name, value in draws.items()}


# --- simulated annealing ---------------------------------------------------------------------------


def temperature_reference(schedule, k, t0, cooling_rate, final_temperature, horizon):
    """$T_k$ of the four cooling schedules (see `gradient_free.temperature`)."""
    if schedule == "exponential":
        return t0 * cooling_rate**k
    if schedule == "linear":
        return t0 + (final_temperature - t0) * min(k / horizon, 1.0)
    if schedule == "logarithmic":
        return t0 * math.log(2) / math.log(k + 2)
    return t0 / (1 + k)


def annealing_reference(fun, start, draws, *, dim, bounds=None, **options):
    """Replay `simulated_annealing`: `start["x"]` the `(C, d)` starting points."""
    schedule = options.get("schedule", "exponential")
    t0 = options.get("initial_temperature", 1.0)
    rate = options.get("cooling_rate", 0.95)
    final = options.get("final_temperature", 1e-3)
    horizon = options.get("horizon")
    proposal = options.get("proposal", "gaussian")
    restart = options.get("restart")
    restart_after = options.get("restart_after", 100)
    box = _box(bounds, dim)
    step_size = _scale(options.get("step_size"), box, dim, 1.0)
    x = np.array(start["x"], np.float64)
    chains = x.shape[0]
    fx = np.full(chains, np.inf)
    k = np.zeros(chains, int)
    stall = np.zeros(chains, int)
    chain_best = np.full(chains, np.inf)
    best_x, best_f = x[0].copy(), np.inf
    records = []
    for t in range(len(next(iter(draws.values())))):
        d = _at(draws, t)
        if t == 0:
            candidates = x.copy()
        else:
            step = step_size * d["step"]
            if options.get("move", "all") == "one":
                step[:, np.arange(dim) != (t - 1) % dim] = 0
            mode = "reflect" if proposal == "reflect" else "clip"
            candidates = _repair(x + step, box, mode)
        values = _evaluate(fun, candidates)
        for c in range(chains):
            delta = values[c] - fx[c]
            temp = temperature_reference(schedule, k[c], t0, rate, final, horizon)
            if delta <= 0 or d["accept"][c] < math.exp(-delta / temp):
                x[c], fx[c] = candidates[c], values[c]
            if values[c] < chain_best[c] or t == 0:
                stall[c] = 0
            else:
                stall[c] += 1
            chain_best[c] = min(chain_best[c], values[c])
            k[c] += t > 0
        best_x, best_f = _update_best(best_x, best_f, candidates, values)
        if restart is not None:
            for c in range(chains):
                if stall[c] >= restart_after:
                    if restart == "best":
                        x[c], fx[c] = best_x, best_f
                    else:
                        x[c] = box[0] + d["restart"][c] * (box[1] - box[0])
                        fx[c] = np.inf
                    chain_best[c], k[c], stall[c] = fx[c], 0, 0
        records.append(
            {"x": x.copy(), "fx": fx.copy(), "step": k.copy(), "stall": stall.copy(),
             "chain_best": chain_best.copy(), "best_x": best_x.copy(), "best_f": best_f}
        )  # fmt: skip
    return _stack(records)


# --- dual annealing (generalized simulated annealing, the annealing part) ---------------------------


def visiting_temperature_reference(i, initial_temp=5230.0, visit=2.62):
    """$T_i = T_0 (2^{q_v-1} - 1)/((i + 2)^{q_v-1} - 1)$."""
    t1 = math.exp((visit - 1) * math.log(2.0)) - 1.0
    return initial_temp * t1 / (math.exp((visit - 1) * math.log(i + 2.0)) - 1.0)


def dual_annealing_reference(fun, start, draws, *, dim, bounds=None, **options):
    """Replay `dual_annealing` with `no_local_search=True`: `start["x"]` the `(C, d)` starting
    points; Tsallis visiting steps, generalized acceptance, restarts (Tsallis & Stariolo 1996, in
    scipy's arrangement: a Markov chain of $2d$ proposals per temperature)."""
    assert options.get("no_local_search"), "the reference replays the annealing part only"
    t0 = options.get("initial_temp", 5230.0)
    qv = options.get("visit", 2.62)
    qa = options.get("accept", -5.0)
    restart_temp = t0 * options.get("restart_temp_ratio", 2e-5)
    lower, upper = _box(bounds, dim)
    width = upper - lower
    factor2 = math.exp((4.0 - qv) * math.log(qv - 1.0))
    factor3 = math.exp((2.0 - qv) * math.log(2.0) / (qv - 1.0))
    factor4_p = math.sqrt(math.pi) * factor2 / (factor3 * (3.0 - qv))
    factor5 = 1.0 / (qv - 1.0) - 0.5
    factor6 = math.pi * (1.0 - factor5) / math.sin(math.pi * (1.0 - factor5))
    factor6 /= math.exp(math.lgamma(2.0 - factor5))
    x = np.array(start["x"], np.float64)
    chains = x.shape[0]
    fx = np.full(chains, np.inf)
    chain_x, chain_f = x.copy(), np.full(chains, np.inf)
    step = np.zeros(chains, int)
    anneal = np.zeros(chains, int)
    improved = np.ones(chains, bool)
    phase = np.zeros(chains, int)
    best_x, best_f = x[0].copy(), np.inf
    records = []
    for t in range(len(next(iter(draws.values())))):
        d = _at(draws, t)
        candidates = x.copy()
        for c in range(chains):
            if t == 0:
                continue
            if phase[c] == 3:
                candidates[c] = lower + d["restart"][c] * width
                continue
            temp = visiting_temperature_reference(anneal[c], t0, qv)
            j = step[c]
            factor4 = factor4_p * math.exp(math.log(temp) / (qv - 1.0))
            scale = math.exp(-(qv - 1.0) * math.log(factor6 / factor4) / (3.0 - qv))
            indices = range(dim) if j < dim else [j - dim]
            for k in indices:
                z1, z2 = d["visit"][c, 0 if j >= dim else k]
                visit = z1 * scale / math.exp((qv - 1.0) * math.log(abs(z2)) / (3.0 - qv))
                if visit > 1e8:
                    visit = 1e8 * d["tail"][c, 0]
                elif visit < -1e8:
                    visit = -1e8 * d["tail"][c, 1 if j < dim else 0]
                v = math.fmod(math.fmod(x[c, k] + visit - lower[k], width[k]) + width[k], width[k])
                v += lower[k]
                if abs(v - lower[k]) < 1e-10:
                    v += 1e-10
                candidates[c, k] = v
        values = _evaluate(fun, candidates)
        for c in range(chains):
            e = values[c]
            if t == 0 or phase[c] == 3:
                x[c], fx[c] = candidates[c], e
                if t == 0:
                    chain_x[c], chain_f[c] = candidates[c], e
                step[c], anneal[c], improved[c], phase[c] = 0, 0, True, 0
                continue
            temp = visiting_temperature_reference(anneal[c], t0, qv)
            if e < fx[c]:
                x[c], fx[c] = candidates[c], e
                if e < chain_f[c]:
                    chain_x[c], chain_f[c] = candidates[c], e
                    improved[c] = True
            else:
                pqv_temp = 1.0 - (1.0 - qa) * (e - fx[c]) / (temp / (anneal[c] + 1))
                pqv = math.exp(math.log(pqv_temp) / (1.0 - qa)) if pqv_temp > 0 else 0.0
                if d["accept"][c] <= pqv:
                    x[c], fx[c] = candidates[c], e
            step[c] += 1
            if step[c] == 2 * dim:
                step[c], anneal[c], improved[c] = 0, anneal[c] + 1, False
                if visiting_temperature_reference(anneal[c], t0, qv) < restart_temp:
                    phase[c] = 3
        best_x, best_f = _update_best(best_x, best_f, candidates, values)
        records.append(
            {"x": x.copy(), "fx": fx.copy(), "chain_x": chain_x.copy(), "chain_f": chain_f.copy(),
             "step": step.copy(), "anneal": anneal.copy(), "improved": improved.copy(),
             "phase": phase.copy(), "best_x": best_x.copy(), "best_f": best_f}
        )  # fmt: skip
    return _stack(records)


# --- genetic algorithm -----------------------------------------------------------------------------


def _roulette(weights, u):
    total = float(np.sum(weights))
    if not (total > 0 and math.isfinite(total)):
        return min(math.floor(u * len(weights)), len(weights) - 1)
    running, count = 0.0, 0
    for w in weights:
        running += w
        count += running <= u * total
    return min(count, len(weights) - 1)


def genetic_reference(fun, start, draws, *, dim, bounds=None, **options):
    """Replay `genetic`: `start["population"]` the `(P, d)` starting population."""
    genome = options.get("genome", "real")
    selection = options.get("selection", "tournament")
    crossover = options.get("crossover") or ("sbx" if genome == "real" else "uniform")
    mutation = options.get("mutation") or ("bit_flip" if genome == "binary" else "gaussian")
    rate_c = options.get("crossover_rate", 0.9)
    rate_m = options.get("mutation_rate") or 1.0 / dim
    alpha = options.get("blend_alpha", 0.5)
    eta_c = options.get("sbx_eta", 15.0)
    eta_m = options.get("polynomial_eta", 20.0)
    elitism = options.get("elitism", 1)
    boundary = options.get("boundary", "clip")
    box = _box(bounds, dim)
    scale = _scale(options.get("mutation_scale"), box, dim, 0.1)
    pop = np.array(start["population"], np.float64)
    size = pop.shape[0]
    fitness = np.full(size, np.inf)
    best_x, best_f = pop[0].copy(), np.inf

    def fix(x):
        if genome == "integer":
            return _repair(np.round(x), box, "clip")
        return _repair(x, box, boundary) if genome == "real" else x

    records = []
    for t in range(len(next(iter(draws.values())))):
        d = _at(draws, t)
        if t == 0:
            candidates = pop.copy()
        else:
            if selection == "roulette":
                finite = fitness[np.isfinite(fitness)]
                worst = finite.max() if finite.size else -np.inf
                weights = worst - np.where(np.isfinite(fitness), fitness, worst)
            elif selection == "rank":
                ranks = np.empty(size, int)
                ranks[np.argsort(fitness, kind="stable")] = np.arange(size)
                weights = (size - ranks).astype(np.float64)
            parents = []
            for j in range(len(d["select"])):
                if selection == "tournament":
                    entrants = d["select"][j]
                    parents.append(int(entrants[int(np.argmin(fitness[entrants]))]))
                else:
                    parents.append(_roulette(weights, float(d["select"][j])))
            kids = []
            for pair in range(len(d["crossover_apply"])):
                p, q = pop[parents[2 * pair]].copy(), pop[parents[2 * pair + 1]].copy()
                c, c2 = p.copy(), q.copy()
                if d["crossover_apply"][pair] < rate_c:
                    for j in range(dim):
                        if crossover == "one_point":
                            head = j < d["crossover"][pair]
                            c[j], c2[j] = (p[j], q[j]) if head else (q[j], p[j])
                        elif crossover == "uniform":
                            swap = d["crossover"][pair, j] < 0.5
                            c[j], c2[j] = (q[j], p[j]) if swap else (p[j], q[j])
                        elif crossover == "blend":
                            low, width = min(p[j], q[j]), abs(p[j] - q[j])
                            span = (1 + 2 * alpha) * width
                            c[j] = low - alpha * width + d["crossover"][0, pair, j] * span
                            c2[j] = low - alpha * width + d["crossover"][1, pair, j] * span
                        else:
                            u, e = d["crossover"][pair, j], 1.0 / (eta_c + 1.0)
                            beta = (2 * u) ** e if u <= 0.5 else (1 / (2 * (1 - u))) ** e
                            c[j] = 0.5 * ((1 + beta) * p[j] + (1 - beta) * q[j])
                            c2[j] = 0.5 * ((1 - beta) * p[j] + (1 + beta) * q[j])
                kids += [c, c2]
            kids = np.array(kids[: size - elitism])
            for i in range(len(kids)):
                for j in range(dim):
                    if d["mutate"][i, j] < rate_m:
                        if mutation == "bit_flip":
                            kids[i, j] = 1 - kids[i, j]
                        elif mutation == "gaussian":
                            kids[i, j] += scale[j] * d["mutation"][i, j]
                        else:
                            u, e = d["mutation"][i, j], 1.0 / (eta_m + 1.0)
                            delta = (2 * u) ** e - 1 if u < 0.5 else 1 - (2 * (1 - u)) ** e
                            kids[i, j] += delta * (box[1][j] - box[0][j])
            elites = pop[np.argsort(fitness, kind="stable")[:elitism]]
            candidates = np.concatenate([elites, fix(kids)])
        values = _evaluate(fun, candidates)
        best_x, best_f = _update_best(best_x, best_f, candidates, values)
        pop, fitness = candidates, values
        records.append({"population": pop, "fitness": fitness, "best_x": best_x, "best_f": best_f})
    return _stack(records)


# --- differential evolution ------------------------------------------------------------------------


def differential_evolution_reference(fun, start, draws, *, dim, bounds=None, **options):
    """Replay `differential_evolution`: `start["population"]` the starting population; with
    `updating="immediate"` one member per iteration."""
    strategy = options.get("strategy", "best1bin")
    mutation = options.get("mutation", (0.5, 1.0))
    cr = options.get("recombination", 0.7)
    boundary = options.get("boundary", "random")
    immediate = options.get("updating", "deferred") == "immediate"
    box = _box(bounds, dim)
    pop = np.array(start["population"], np.float64)
    size = pop.shape[0]
    fitness = np.full(size, np.inf)
    best_x, best_f = pop[0].copy(), np.inf
    records = []

    def trial_for(i, d, row, f):
        taken = [i]
        for j in range(d["members"].shape[1]):
            r = math.floor(d["members"][row, j] * (size - 1 - j))
            for excluded in sorted(taken):
                r += r >= excluded
            taken.append(r)
        r = taken[1:]
        if strategy == "best1bin":
            mutant = pop[int(np.argmin(fitness))] + f * (pop[r[0]] - pop[r[1]])
        else:
            mutant = pop[r[0]] + f * (pop[r[1]] - pop[r[2]])
        forced = int(d["forced"][row])
        trial = pop[i].copy()
        for j in range(dim):
            if d["crossover"][row, j] < cr or j == forced:
                trial[j] = mutant[j]
        if boundary != "random":
            return _repair(trial, box, boundary)
        if box is not None:
            for j in range(dim):
                if trial[j] < box[0][j] or trial[j] > box[1][j]:
                    u = d["crossover"][row, j]
                    fresh = u / cr if u < cr else (u - cr) / (1 - cr)
                    trial[j] = box[0][j] + fresh * (box[1][j] - box[0][j])
        return trial

    def scale(d):
        if isinstance(mutation, (tuple, list)):
            return mutation[0] + float(d["dither"]) * (mutation[1] - mutation[0])
        return mutation

    for t in range(len(next(iter(draws.values())))):
        d = _at(draws, t)
        if immediate:
            i = t % size
            if t < size:
                candidate = pop[i].copy()
            else:
                candidate = trial_for(i, d, 0, scale(_at(draws, t - i)))
            value = _evaluate(fun, candidate[None])[0]
            best_x, best_f = _update_best(best_x, best_f, candidate[None], np.array([value]))
            if value <= fitness[i]:
                pop[i], fitness[i] = candidate, value
        else:
            if t == 0:
                candidates = pop.copy()
            else:
                f = scale(d)
                candidates = np.stack([trial_for(i, d, i, f) for i in range(size)])
            values = _evaluate(fun, candidates)
            best_x, best_f = _update_best(best_x, best_f, candidates, values)
            for i in range(size):
                if values[i] <= fitness[i]:
                    pop[i], fitness[i] = candidates[i], values[i]
        records.append(
            {
                "population": pop.copy(),
                "fitness": fitness.copy(),
                "best_x": best_x,
                "best_f": best_f,
            }
        )
    return _stack(records)


# --- CMA-ES ----------------------------------------------------------------------------------------


def cma_es_reference(fun, start, draws, *, dim, bounds=None, popsize=None, sigma=None):
    """Replay `cma_es` (Hansen's tutorial formulas): `start` holds `mean`, `sigma`, `cov`."""
    lam = 4 + int(3 * math.log(dim)) if popsize is None else popsize
    mu = lam // 2
    raw = np.array([math.log((lam + 1) / 2) - math.log(i) for i in range(1, mu + 1)])
    w = raw / raw.sum()
    mu_eff = 1 / np.sum(w**2)
    c_s = (mu_eff + 2) / (dim + mu_eff + 5)
    d_s = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (dim + 1)) - 1) + c_s
    c_c = (4 + mu_eff / dim) / (dim + 4 + 2 * mu_eff / dim)
    c1 = 2 / ((dim + 1.3) ** 2 + mu_eff)
    c_mu = min(1 - c1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((dim + 2) ** 2 + mu_eff))
    chi = math.sqrt(dim) * (1 - 1 / (4 * dim) + 1 / (21 * dim**2))
    box = _box(bounds, dim)
    mean = np.array(start["mean"], np.float64)
    step = float(start["sigma"])
    cov = np.array(start["cov"], np.float64)
    p_s, p_c = np.zeros(dim), np.zeros(dim)
    best_x, best_f = mean.copy(), np.inf

    def roots(c):
        values, vectors = np.linalg.eigh(c)
        root = np.sqrt(np.maximum(values, 0))
        inv = np.array([1 / r if r > 0 else 0.0 for r in root])
        return (vectors * root) @ vectors.T, (vectors * inv) @ vectors.T

    records = []
    for t in range(len(next(iter(draws.values())))):
        z = _at(draws, t)["z"]
        root, inverse_root = roots(cov)
        candidates = _repair(mean + step * z @ root, box, "clip")
        values = _evaluate(fun, candidates)
        best_x, best_f = _update_best(best_x, best_f, candidates, values)
        y = (candidates[np.argsort(values, kind="stable")[:mu]] - mean) / step
        y_w = sum(w[i] * y[i] for i in range(mu))
        mean = mean + step * y_w
        p_s = (1 - c_s) * p_s + math.sqrt(c_s * (2 - c_s) * mu_eff) * (inverse_root @ y_w)
        norm = float(np.linalg.norm(p_s))
        h = float(norm / math.sqrt(1 - (1 - c_s) ** (2 * (t + 1))) < (1.4 + 2 / (dim + 1)) * chi)
        p_c = (1 - c_c) * p_c + h * math.sqrt(c_c * (2 - c_c) * mu_eff) * y_w
        rank_mu = sum(w[i] * np.outer(y[i], y[i]) for i in range(mu))
        cov = (
            (1 - c1 - c_mu) * cov
            + c1 * (np.outer(p_c, p_c) + (1 - h) * c_c * (2 - c_c) * cov)
            + c_mu * rank_mu
        )
        cov = (cov + cov.T) / 2
        step = step * math.exp((c_s / d_s) * (norm / chi - 1))
        records.append(
            {"mean": mean, "sigma": step, "cov": cov, "path_sigma": p_s, "path_c": p_c,
             "best_x": best_x, "best_f": best_f}
        )  # fmt: skip
    return _stack(records)


# --- evolution-strategies gradient -----------------------------------------------------------------


def es_gradient_reference(loss, theta, noise, sigma, fitness_shaping="none"):
    """$\\hat g = \\frac{1}{2n\\sigma}\\sum_i (F(\\theta + \\sigma\\varepsilon_i) - F(\\theta - \\sigma\\varepsilon_i))\\varepsilon_i$."""
    n = noise.shape[0]
    values = [float(loss(theta + sigma * e)) for e in noise] + [
        float(loss(theta - sigma * e)) for e in noise
    ]
    values = np.array(values)
    if fitness_shaping == "centered_rank":
        ranks = np.empty(2 * n)
        ranks[np.argsort(values, kind="stable")] = np.arange(2 * n)
        values = ranks / (2 * n - 1) - 0.5
    grad = np.zeros_like(theta)
    for i in range(n):
        grad += (values[i] - values[n + i]) * noise[i]
    return grad / (2 * n * sigma)


#: method → reference replaying it.
REFERENCES: dict[str, Callable] = {
    "simulated_annealing": annealing_reference,
    "genetic": genetic_reference,
    "differential_evolution": differential_evolution_reference,
    "cma_es": cma_es_reference,
    "dual_annealing": dual_annealing_reference,
}

#: One row per option family: (name, method, options, test function, dim, bounds half-width or None).
#: Together they use every schedule, proposal, restart, genome, selection, crossover and mutation.
CASES: list[tuple[str, str, dict, str, int, float | None]] = [
    ("sa-exponential-gaussian", "simulated_annealing", {"chains": 3, "schedule": "exponential", "initial_temperature": 5.0}, "rastrigin", 4, None),
    ("sa-linear-cauchy-clip", "simulated_annealing", {"chains": 3, "schedule": "linear", "horizon": 20, "proposal": "cauchy", "initial_temperature": 3.0, "step_size": 0.3}, "ackley", 4, 5.0),
    ("sa-logarithmic-reflect-restart-best-one-coordinate", "simulated_annealing", {"chains": 4, "schedule": "logarithmic", "proposal": "reflect", "restart": "best", "restart_after": 3, "move": "one"}, "rastrigin", 3, 5.12),
    ("sa-fast-gaussian-restart-random", "simulated_annealing", {"chains": 4, "schedule": "fast", "restart": "random", "restart_after": 2, "initial_temperature": 10.0}, "griewank", 3, 20.0),
    ("ga-real-tournament-sbx-gaussian", "genetic", {"popsize": 12, "selection": "tournament", "crossover": "sbx", "mutation": "gaussian", "mutation_rate": 0.3}, "rastrigin", 4, 5.12),
    ("ga-real-roulette-blend-polynomial-reflect", "genetic", {"popsize": 11, "selection": "roulette", "crossover": "blend", "mutation": "polynomial", "boundary": "reflect", "elitism": 2, "mutation_rate": 0.4}, "ackley", 4, 5.0),
    ("ga-real-rank-one_point-unbounded", "genetic", {"popsize": 10, "selection": "rank", "crossover": "one_point", "mutation_rate": 0.5, "elitism": 0}, "rosenbrock", 4, None),
    ("ga-binary-tournament-uniform-bit_flip", "genetic", {"popsize": 10, "genome": "binary", "crossover": "uniform", "tournament_size": 2, "crossover_rate": 0.6, "mutation_rate": 0.2}, "onemax", 8, None),
    ("ga-integer-roulette-uniform-gaussian", "genetic", {"popsize": 12, "genome": "integer", "selection": "roulette", "mutation_scale": 2.0, "mutation_rate": 0.5}, "rastrigin", 4, 5.0),
    ("de-best1bin-dither-random-bounds", "differential_evolution", {"popsize": 10}, "rosenbrock", 3, 1.5),
    ("de-rand1bin-reflect-random-init-fixed-F", "differential_evolution", {"popsize": 10, "strategy": "rand1bin", "init": "random", "mutation": 0.8, "recombination": 0.9, "boundary": "reflect"}, "rastrigin", 3, 5.12),
    ("de-best1bin-immediate-dither", "differential_evolution", {"popsize": 6, "updating": "immediate"}, "rosenbrock", 3, 1.5),
    ("cma_es-bounded", "cma_es", {}, "rosenbrock", 4, 2.0),
    ("dual_annealing-restart", "dual_annealing", {"chains": 3, "no_local_search": True, "initial_temp": 1.0, "restart_temp_ratio": 0.4, "visit": 1.5}, "rastrigin", 3, 5.12),
]  # fmt: skip


def onemax(x, xp=np):
    """The number of zero bits (minimised by all ones): a binary test function."""
    return xp.sum(1 - x, axis=-1)


def function_by_name(name):
    return onemax if name == "onemax" else TEST_FUNCTIONS[name][0]
