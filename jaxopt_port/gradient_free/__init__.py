"""Gradient-free optimizers: simulated annealing, dual annealing, genetic algorithms, differential
evolution, CMA-ES, and an evolution-strategies gradient estimator as an Optax transformation.

Every method is a `Strategy` of pure functions — `init(key, x0)`, `ask(state)`,
`tell(state, candidates, values)` — with every random number drawn by `draws(key, iteration)`,
so a run is reproducible by key and a NumPy implementation can replay it. `minimize` runs the
ask → evaluate → tell loop in one compiled call, evaluating each population with one `jax.vmap`
(optionally split over the devices of a mesh), with early stopping, a callback and a progress bar.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_port import gradient_free
    >>> result = gradient_free.minimize(
    ...     lambda x: jnp.sum(x**2), jnp.full(2, 3.0), method="simulated_annealing",
    ...     key=jax.random.key(0), max_evals=2000, chains=4, step_size=0.3)
    >>> bool(result.fun < 1e-2), result.nfev
    (True, 2000)
"""

from jaxopt_port.gradient_free._annealing import (
    COOLING_SCHEDULES,
    PROPOSALS,
    AnnealingState,
    simulated_annealing,
    temperature,
)
from jaxopt_port.gradient_free._cmaes import CMAState, cma_es, cma_parameters
from jaxopt_port.gradient_free._common import BOUNDARY_MODES, Strategy, repair
from jaxopt_port.gradient_free._dual_annealing import (
    DualAnnealingState,
    dual_annealing,
    visiting_temperature,
)
from jaxopt_port.gradient_free._es_gradient import ESGradientState, centered_ranks, es_gradient
from jaxopt_port.gradient_free._evolution import (
    DE_STRATEGIES,
    EvolutionState,
    differential_evolution,
    distinct_indices,
)
from jaxopt_port.gradient_free._genetic import (
    CROSSOVERS,
    GENOMES,
    MUTATIONS,
    SELECTIONS,
    GeneticState,
    genetic,
)
from jaxopt_port.gradient_free._minimize import (
    METHODS,
    OptimizeResult,
    Progress,
    evaluate_population,
    minimize,
)

__all__ = [
    "BOUNDARY_MODES",
    "COOLING_SCHEDULES",
    "CROSSOVERS",
    "DE_STRATEGIES",
    "GENOMES",
    "METHODS",
    "MUTATIONS",
    "PROPOSALS",
    "SELECTIONS",
    "AnnealingState",
    "CMAState",
    "DualAnnealingState",
    "ESGradientState",
    "EvolutionState",
    "GeneticState",
    "OptimizeResult",
    "Progress",
    "Strategy",
    "centered_ranks",
    "cma_es",
    "cma_parameters",
    "differential_evolution",
    "distinct_indices",
    "dual_annealing",
    "es_gradient",
    "evaluate_population",
    "genetic",
    "minimize",
    "repair",
    "simulated_annealing",
    "temperature",
    "visiting_temperature",
]
