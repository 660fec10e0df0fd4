"""The one table of optimizer specs that drives every optimizer test and parity run.

Like torch's ``optim_db``: each :class:`OptimSpec` names the torch class and the jaxopt_port
factory, the problem it trains, the option combinations to run (torch's own ``optim_db`` inputs
plus ours), the invalid inputs torch rejects, and the float32 tolerance we measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODEL_F32_DEFAULT",
    "SPECS",
    "Config",
    "Invalid",
    "OptaxNearest",
    "OptimSpec",
    "configs_for",
    "for_torch",
    "spec",
    "torch_muon_ns_in_param_dtype",
]

KERNEL_FLAGS = ("foreach", "fused", "capturable", "differentiable")


@dataclass(frozen=True)
class Config:
    """One option combination: torch kwargs, an optional lr schedule, optional param groups."""

    desc: str
    kwargs: dict[str, Any]
    schedule: str | None = None  # a name in SCHEDULES: lr at update k = base lr * factor(k)
    groups: bool = False  # two param groups: the second with lr / 2 (and other overrides)
    #: the second group's overrides (besides lr / 2) where the spec's group_overrides do not fit
    second_group: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.desc.replace(" ", "_").replace(",", "")


def _decay(k: Any) -> Any:
    if not isinstance(k, int):
        import jax.numpy as jnp

        k = jnp.asarray(k, jnp.result_type(float))
    return 0.97**k


def _warmup_cosine(k: Any) -> Any:
    if isinstance(k, int):
        return min(1.0, (k + 1) / 5) * (0.55 + 0.45 * math.cos(math.pi * k / 50))
    import jax.numpy as jnp

    k = jnp.asarray(k, jnp.result_type(float))  # the count arrives as int32
    return jnp.minimum(1.0, (k + 1) / 5) * (0.55 + 0.45 * jnp.cos(math.pi * k / 50))


#: Multiplicative lr factors: ``factor(k)`` for update k (works on Python ints and JAX arrays).
SCHEDULES = {"decay": _decay, "warmup_cosine": _warmup_cosine}

#: Placeholders in ``Invalid.kwargs`` for torch tensors (the table imports no torch): a 1-element
#: tensor and a 2-element one.
TENSOR, TENSOR2 = "tensor", "tensor2"


@dataclass(frozen=True)
class Invalid:
    """Constructor arguments that must be refused, and how.

    Attributes:
      kwargs: the arguments (``TENSOR``/``TENSOR2`` stand for tensors).
      error: the exception type jaxopt_port raises at construction.
      match: a regex the message must match (``re.search``).
      torch: what torch does with the same arguments, checked by the test against torch itself:
        ``"same"``: its constructor raises ``error`` with the same message; an exception class:
        its constructor accepts them and its first steps raise that exception; ``"nonfinite"``:
        its constructor accepts them and its first steps give non-finite numbers; ``"accepted"``:
        torch runs with them (jaxopt_port refuses what it cannot reproduce or what contradicts
        torch's documentation; the docstring's Warning says so).
    """

    kwargs: dict[str, Any]
    error: type[Exception] = ValueError
    match: str = ""
    torch: Any = "same"

    @property
    def id(self) -> str:
        return "-".join(f"{k}={v!r}" for k, v in self.kwargs.items())


def _bad(match: str, error: type[Exception] = ValueError, torch: Any = "same", **kwargs: Any):
    """An :class:`Invalid` row; ``match`` is literal text (escaped here)."""
    return Invalid(kwargs, error, re.escape(match), torch)


def _str_vs(op: str, left: str = "float", right: str = "str") -> str:
    """Python's message for a comparison torch makes with a value of the wrong type."""
    return f"'{op}' not supported between instances of '{left}' and '{right}'"


@contextmanager
def torch_muon_ns_in_param_dtype() -> Iterator[None]:
    """Run torch's Muon Newton–Schulz iteration in the gradient's dtype instead of bfloat16.

    torch runs it in bfloat16, whose CPU matmuls differ from XLA's by ~3e-2 after a few steps;
    the comparisons run both sides in the parameter dtype (JAX with ``ns_dtype=None``).
    """
    import torch
    from torch.optim import _muon

    original = _muon._zeropower_via_newtonschulz

    def patched(grad, ns_coefficients, ns_steps, eps):
        a, b, c = ns_coefficients
        x = grad.clone()
        if grad.size(0) > grad.size(1):
            x = x.T
        x = x / x.norm().clamp(min=eps)
        for _ in range(ns_steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.T if grad.size(0) > grad.size(1) else x

    _muon._zeropower_via_newtonschulz = patched
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


@dataclass(frozen=True)
class OptaxNearest:
    """optax's closest transformation to a torch optimizer, set up with torch's hyperparameters
    (its own defaults where it cannot take torch's).

    Attributes:
      row: the row's name in the comparison.
      text: how it is shown (the optax call, or why there is none).
      factory: the optax attribute path (``"adam"``, ``"contrib.muon"``; ``""``: none).
      args: its positional arguments.
      kwargs: its keyword arguments.
      torch_kwargs: the torch optimizer's arguments for the row (its defaults otherwise).
    """

    row: str
    text: str
    factory: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    torch_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """The optax transformation, or ``None`` where there is none."""
        if not self.factory:
            return None
        import functools

        import optax

        return functools.reduce(getattr, self.factory.split("."), optax)(*self.args, **self.kwargs)


#: float32 tolerance of a twin-model run for a (model, optimizer) pair without a measured entry.
MODEL_F32_DEFAULT = 1e-4


@dataclass(frozen=True)
class OptimSpec:
    """How to test one optimizer.

    Attributes:
      name: jaxopt_port factory name (``jaxopt_port.optim.<name>``).
      torch_cls: class name in ``torch.optim``.
      problem: a name in ``parity.specs.problems.PROBLEMS``.
      extra_configs: configurations beyond torch's own ``optim_db`` inputs.
      invalid: arguments refused at construction (each row is checked against torch too).
      f32_atol: max |Δθ| after ``steps`` float32 steps, measured (see the comment at each entry).
      group_overrides: kwargs of the second param group in the param-groups config.
      steps: number of optimizer steps in a parity run.
      resume_configs: the options whose first step differs from the later ones or that read the
        step count (bias corrections, Adafactor's relative step, Adagrad's lr_decay, ASGD's t0,
        NAdam's momentum decay, RAdam's rectification, Rprop's first step, SGD's first momentum
        buffer, L-BFGS's history): tests/test_interop_resume.py moves each between torch and JAX
        mid-run, with two param groups, with and without a scheduler.
      step_requires_closure: torch's ``step`` takes a closure that re-evaluates the loss
        (L-BFGS): a parity step is one ``step(closure)`` on one fixed batch, and the JAX update
        receives ``value``, ``grad`` and ``value_fn`` (optax.lbfgs's extra arguments).
      jax_extra_kwargs: keyword arguments added to the jaxopt_port factory and to
        ``optim.from_torch`` in every comparison with torch.
      torch_context: a function returning the context manager torch runs under in every
        comparison (``None``: none); it imports torch itself.
      static_args: arguments ``optax.inject_hyperparams`` must keep as Python values (they set
        loop counts or shapes).
      example_kwargs: torch kwargs for short generic checks (compiles once, optax wrappers,
        Flax NNX), over the factory's defaults.
      constructor_only: options torch reads in the constructor only, so that a param group's
        own value has no effect.
      amplifies_rounding: torch disagrees with itself beyond the float64 gate over runs longer
        than ``steps`` (rounding amplified); a resumed run is judged against torch's own spread.
      takes: which parameters of a twin model it trains: ``"all"``, ``"matrices"`` (2-D, not
        embedding tables) or ``"sparse"`` (embedding tables with sparse gradients; only models
        with an embedding, built with ``sparse=True``).
      companion: the torch optimizer class name and kwargs that train the parameters it does
        not take.
      model_kwargs: torch kwargs on the twin models: an lr that makes them train visibly in a
        few dozen steps (torch's defaults elsewhere).
      model_steps: optimizer steps of a twin-model run.
      model_f32_atol: float32 tolerance per twin model on the worst scaled parameter
        difference: about 3x the worst measured after ``model_steps`` steps with
        ``model_kwargs``, seed 0, over the default and the scheduled configurations. Optimizers
        that divide by √v (Adam family, Adagrad, RMSprop) pass a gradient's relative error on to
        the step, and the LSTM's float32 gradient is the least accurate: against float64 at the
        same weights its worst entry is off by 1.1e-2 relative (lstm.weight_ih_l0; MLP 4.6e-4,
        transformer 8.0e-5, CNN 3.1e-5), hence its larger entries. Rprop's sign-based steps are
        bitwise equal. A model without an entry gets `MODEL_F32_DEFAULT` (not measured).
      reference: the rule's name in `parity.reference` (default: ``name``).
      optax_nearest: optax's closest transformations, measured against torch by
        ``python -m parity.run.optax_gap``.
    """

    name: str
    torch_cls: str
    problem: str = "mlp"
    extra_configs: tuple[Config, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    f32_atol: float = 1e-5
    group_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 50
    resume_configs: tuple[Config, ...] = ()
    step_requires_closure: bool = False
    jax_extra_kwargs: dict[str, Any] = field(default_factory=dict)
    torch_context: Callable[[], AbstractContextManager[Any]] | None = None
    static_args: tuple[str, ...] = ()
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    constructor_only: tuple[str, ...] = ()
    amplifies_rounding: bool = False
    takes: str = "all"
    companion: tuple[str, dict[str, Any]] | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model_steps: int = 20
    model_f32_atol: dict[str, float] = field(default_factory=dict)
    reference: str = ""
    optax_nearest: tuple[OptaxNearest, ...] = ()

    @property
    def reference_name(self) -> str:
        """The rule's name in `parity.reference`."""
        return self.reference or self.name

    def comparison_context(self) -> AbstractContextManager[Any]:
        """``torch_context()``, or a context that does nothing."""
        return self.torch_context() if self.torch_context is not None else nullcontext()


def _c(
    desc: str,
    schedule: str | None = None,
    groups: bool = False,
    second_group: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Config:
    return Config(desc, kwargs, schedule, groups, second_group)


_LR_TYPES = (
    _bad(_str_vs("<="), TypeError, lr="0.001"),  # issue 12: a str lr was accepted
    _bad(_str_vs("<=", right="NoneType"), TypeError, lr=None),
    _bad("Tensor lr must be 1-element", lr=TENSOR2),
)
_NEG = (
    _bad("Invalid learning rate: -0.1", lr=-0.1),
    _bad("Invalid weight_decay value: -1", weight_decay=-1),
    *_LR_TYPES,
)
#: torch accepts weight_decay=True and its coupled L2 term fails in step()
_BOOL_DECAY = _bad(
    "weight_decay must be a real number, got bool True", TypeError, RuntimeError, weight_decay=True
)
_ADAM_FAMILY_INVALID = (
    *_NEG,
    _bad("Invalid epsilon value: -1e-08", eps=-1e-8),
    _bad("Invalid beta parameter at index 0: 1.0", betas=(1.0, 0.9)),
    _bad("Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0)),
    _bad("Invalid beta parameter at index 0: -0.1", betas=(-0.1, 0.9)),
    _bad(_str_vs("<="), TypeError, betas=(0.9, "0.999")),
    _bad("tuple index out of range", IndexError, betas=(0.9,)),
    _bad("'float' object is not subscriptable", TypeError, betas=0.9),
    _bad(_str_vs("<="), TypeError, eps="1e-8"),
)

SPECS: tuple[OptimSpec, ...] = (
    OptimSpec(
        "adadelta",
        "Adadelta",
        optax_nearest=(
            OptaxNearest(
                "adadelta", "optax.adadelta(1.0, rho=0.9, eps=1e-6)", "adadelta", (1.0, 0.9, 1e-6)
            ),
        ),
        model_kwargs={"lr": 1.0},
        model_f32_atol={
            "mlp": 2e-07,  # measured 4.47e-08
            "cnn": 2e-07,  # measured 5.96e-08
            "transformer": 4e-07,  # measured 1.18e-07
            "lstm": 2e-07,  # measured 5.96e-08
        },
        extra_configs=(
            _c("scheduled", "decay", lr=0.5),
            _c("groups", groups=True, weight_decay=0.05),
        ),
        resume_configs=(_c("weight decay", lr=0.5, weight_decay=0.05),),
        invalid=(
            *_NEG,
            _bad("Invalid rho value: 1.1", rho=1.1),
            _bad("Invalid rho value: -0.1", rho=-0.1),
            _bad("Invalid epsilon value: -1.0", eps=-1.0),
            _bad(_str_vs("<="), TypeError, rho="0.9"),
            _BOOL_DECAY,
        ),
        group_overrides={"rho": 0.8},
        f32_atol=5e-7,  # measured 1.69e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "adafactor",
        "Adafactor",
        optax_nearest=(OptaxNearest("adafactor", "optax.adafactor(1e-2)", "adafactor", (1e-2,)),),
        model_kwargs={"lr": 0.01},
        model_f32_atol={
            "mlp": 7e-08,  # measured 2.24e-08
            "cnn": 4e-07,  # measured 1.17e-07
            "transformer": 4e-07,  # measured 1.09e-07
            "lstm": 2e-07,  # measured 4.47e-08
        },
        extra_configs=(
            _c("explicit eps1", eps=(1e-20, 1e-3), lr=0.05),
            _c("scheduled", "warmup_cosine", lr=0.05, weight_decay=0.1),
            _c("groups", groups=True, lr=0.02),
        ),
        resume_configs=(_c("relative step, decay", lr=0.05, weight_decay=0.1),),
        invalid=(
            _bad("Learning rate should be >= 0 but is: -0.1", lr=-0.1),
            _bad(_str_vs("<="), TypeError, lr="0.01"),
            _bad("Tensor lr must be 1-element", lr=TENSOR2),
            _bad("beta2_decay should be <= 0 but is: 0.5", beta2_decay=0.5),
            _bad(_str_vs(">="), TypeError, beta2_decay="-0.8"),
            _bad("epsilon1 should be >= 0 but is: -1e-30", eps=(-1e-30, 1e-3)),
            _bad("epsilon2 should be >= 0 but is: -1.0", eps=(None, -1.0)),
            _bad(_str_vs("<="), TypeError, eps=(None, "1e-3")),
            _bad("Clipping threshold d should be >= 1 but is: 0.5", d=0.5),
            _bad(_str_vs("<="), TypeError, d="1.0"),
            _bad("weight_decay should be >= 0 but is: -1", weight_decay=-1),
        ),
        group_overrides={"d": 2.0, "weight_decay": 0.05},
        f32_atol=2e-6,  # measured 9.54e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "adagrad",
        "Adagrad",
        optax_nearest=(
            OptaxNearest(
                "adagrad",
                "optax.adagrad(1e-2, initial_accumulator_value=0, eps=1e-10)",
                "adagrad",
                (1e-2,),
                {"initial_accumulator_value": 0.0, "eps": 1e-10},
            ),
            OptaxNearest("adagrad (optax defaults)", "optax.adagrad(1e-2)", "adagrad", (1e-2,)),
        ),
        constructor_only=("initial_accumulator_value",),
        model_kwargs={"lr": 0.05},
        model_f32_atol={
            "mlp": 7e-07,  # measured 2.24e-07
            "cnn": 2e-06,  # measured 5.22e-07
            "transformer": 7e-06,  # measured 2.00e-06
            "lstm": 0.0002,  # measured 3.86e-05
        },
        extra_configs=(
            _c("eps", eps=1e-2, lr=0.05),
            _c("scheduled with lr_decay", "decay", lr=0.05, lr_decay=0.01),
            _c("groups", groups=True, lr=0.05),
        ),
        resume_configs=(_c("lr_decay", lr=0.05, lr_decay=0.1, initial_accumulator_value=0.1),),
        invalid=(
            *_NEG,
            _bad("Invalid lr_decay value: -0.5", lr_decay=-0.5),
            _bad("Invalid initial_accumulator_value value: -1", initial_accumulator_value=-1),
            _bad("Invalid epsilon value: -1", eps=-1),
            _bad(_str_vs("<=", right="NoneType"), TypeError, lr_decay=None),
            _BOOL_DECAY,
        ),
        group_overrides={"lr_decay": 0.1, "initial_accumulator_value": 0.2},
        f32_atol=5e-7,  # measured 1.79e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "adam",
        "Adam",
        optax_nearest=(
            OptaxNearest("adam", "optax.adam(1e-3)", "adam", (1e-3,)),
            OptaxNearest(
                "adam amsgrad",
                "optax.amsgrad(1e-3)",
                "amsgrad",
                (1e-3,),
                torch_kwargs={"amsgrad": True},
            ),
        ),
        model_kwargs={"lr": 3e-3},
        model_f32_atol={
            "mlp": 3e-07,  # measured 8.20e-08
            "cnn": 3e-07,  # measured 8.94e-08 (worst of default and StepLR)
            "transformer": 2e-07,  # measured 5.96e-08
            "lstm": 2e-05,  # measured 4.89e-06
        },
        extra_configs=(
            _c("amsgrad maximize", lr=0.01, amsgrad=True, maximize=True),
            _c("large eps", lr=0.01, eps=1e-3),
            _c("decoupled", lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
            _c("scheduled", "warmup_cosine", lr=0.01, amsgrad=True, weight_decay=0.1),
            _c("groups", groups=True, lr=0.01, weight_decay=0.1),
        ),
        resume_configs=(_c("amsgrad, bias corrections", lr=0.01, amsgrad=True, weight_decay=0.1),),
        invalid=(
            *_ADAM_FAMILY_INVALID,
            _bad(
                "lr as a Tensor is not supported for capturable=False and foreach=True",
                lr=TENSOR,
                foreach=True,
            ),
            _bad("betas must be either both floats or both Tensors", betas=(0.9, TENSOR)),
            _bad("betas must be either both floats or both Tensors", betas=(0, 0.999)),
            # torch's range check comes first and fails on the 2-element tensor
            _bad(
                "Boolean value of Tensor with more than one value is ambiguous",
                RuntimeError,
                betas=(TENSOR, TENSOR2),
            ),
            _BOOL_DECAY,
        ),
        group_overrides={"weight_decay": 0.0, "betas": (0.8, 0.99), "amsgrad": True},
        f32_atol=2e-6,  # measured 5.96e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "adamax",
        "Adamax",
        optax_nearest=(OptaxNearest("adamax", "optax.adamax(2e-3)", "adamax", (2e-3,)),),
        model_kwargs={"lr": 5e-3},
        model_f32_atol={
            "mlp": 4e-07,  # measured 1.12e-07
            "cnn": 2e-07,  # measured 5.22e-08
            "transformer": 6e-07,  # measured 1.79e-07
            "lstm": 3e-05,  # measured 8.12e-06
        },
        extra_configs=(
            _c("scheduled", "decay", lr=0.02),
            _c("groups", groups=True, weight_decay=0.1),
        ),
        resume_configs=(_c("bias correction", lr=0.02),),
        invalid=_ADAM_FAMILY_INVALID,
        group_overrides={"betas": (0.5, 0.9)},
        f32_atol=5e-7,  # measured 1.59e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "adamw",
        "AdamW",
        optax_nearest=(
            OptaxNearest(
                "adamw",
                "optax.adamw(1e-3, weight_decay=1e-2)",
                "adamw",
                (1e-3,),
                {"weight_decay": 1e-2},
            ),
            OptaxNearest("adamw (optax defaults)", "optax.adamw(1e-3)", "adamw", (1e-3,)),
        ),
        model_kwargs={"lr": 3e-3},
        model_f32_atol={
            "mlp": 5e-07,  # measured 1.49e-07 (worst of default and CosineAnnealingLR)
            "cnn": 2e-06,  # measured 5.86e-07
            "transformer": 3e-06,  # measured 9.05e-07
            "lstm": 2e-05,  # measured 4.94e-06
        },
        extra_configs=(
            _c("scheduled", "warmup_cosine", lr=0.01, weight_decay=0.1),
            _c("groups", groups=True, lr=0.01),
        ),
        resume_configs=(_c("decoupled decay", lr=0.01, weight_decay=0.1),),
        invalid=_ADAM_FAMILY_INVALID,
        group_overrides={"weight_decay": 0.0},
        f32_atol=2e-6,  # measured 9.54e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "asgd",
        "ASGD",
        optax_nearest=(OptaxNearest("asgd", "none"),),
        model_kwargs={"lr": 0.1},
        model_f32_atol={
            "mlp": 3e-07,  # measured 8.94e-08
            "cnn": 2e-06,  # measured 4.52e-07
            "transformer": 3e-06,  # measured 9.47e-07
            "lstm": 9e-07,  # measured 2.68e-07
        },
        extra_configs=(
            _c("averaging", lr=0.05, t0=5, lambd=0.01, alpha=0.6),
            _c("scheduled", "warmup_cosine", lr=0.05, t0=10),
            _c("groups", groups=True, lr=0.05, t0=5),
        ),
        resume_configs=(_c("averaging from t0", lr=0.05, t0=2, lambd=0.01, alpha=0.6),),
        invalid=(
            *_NEG,
            _bad("lambd must be a real number, got str '1e-4'", TypeError, TypeError, lambd="1e-4"),
            _bad("t0 must be a real number, got NoneType None", TypeError, TypeError, t0=None),
            _BOOL_DECAY,
        ),
        group_overrides={"lambd": 0.1, "t0": 20},
        f32_atol=3e-6,  # measured 1.31e-06 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "lbfgs",
        "LBFGS",
        optax_nearest=(
            OptaxNearest("lbfgs", "optax.lbfgs(): one update is one iteration, not one torch step"),
        ),
        step_requires_closure=True,
        static_args=("max_iter", "max_eval", "history_size"),
        example_kwargs={"lr": 0.5, "max_iter": 3},
        amplifies_rounding=True,
        # L-BFGS: one step is up to max_iter (here 4) evaluations, and its curvature pairs
        # y = g_new - g_old lose digits as it converges, so torch soon disagrees with itself:
        # torch against torch with the batch rows permuted (the same sums in another order)
        # differs in the parameters by 1.6e-14 after 4 steps and 1.6e-13 after 6 on the LSTM, and
        # by 6.8e-5 after 20 on the MLP. JAX against torch after 4 steps: 2.8e-14 in the
        # parameters and 3.1e-13 in the state (LSTM, the worst model; 3.5e-8 after 20 steps on
        # the MLP).
        model_steps=4,
        model_kwargs={"lr": 0.5, "max_iter": 4},
        model_f32_atol={
            "mlp": 2e-05,  # measured 3.81e-06
            "cnn": 3e-06,  # measured 8.94e-07
            "transformer": 6e-06,  # measured 1.97e-06
            "lstm": 6e-05,  # measured 1.89e-05
        },
        extra_configs=(
            _c("small history", lr=0.5, max_iter=5, history_size=3),
            _c(
                "strong wolfe small history",
                line_search_fn="strong_wolfe",
                max_iter=4,
                history_size=2,
            ),
            _c("scheduled", "decay", lr=0.5, max_iter=3),
            # each of torch's stopping tests
            _c("stop at start on the gradient", tolerance_grad=10.0),
            _c("stop on the gradient", tolerance_grad=1e-2),
            _c("stop on the loss change", tolerance_change=1e-3),
            _c("stop on the evaluation budget", max_eval=7),
            _c("stop on the step size", lr=0.5, tolerance_change=0.1),
            _c("stop on the direction", tolerance_change=10.0),
            # the strong-Wolfe line search extrapolating (and running out of evaluations) and zooming
            # with moves away from the bracket's ends; tests/test_optim_lbfgs.py tests it on its own
            _c("line search extrapolation", line_search_fn="strong_wolfe", lr=0.05),
            _c("line search zoom", line_search_fn="strong_wolfe", lr=10.0),
        ),
        # 14 steps of 2 iterations wrap the history; at lr=0.5 torch amplifies a 1e-15 nudge to
        # 5.2e-12 by the end (against itself), at lr=0.2 to 4.9e-15 (resumed: <= 4.2e-16)
        resume_configs=(_c("history wraps", lr=0.2, max_iter=2, history_size=3),),
        invalid=(
            _bad("Invalid learning rate: -0.1", lr=-0.1),
            *_LR_TYPES,
            _bad(
                "Invalid history_size: 2.5 (an integer >= 1 is needed)",
                torch=TypeError,
                history_size=2.5,
            ),
            _bad(
                "Invalid history_size: 0 (an integer >= 1 is needed)",
                torch=IndexError,
                history_size=0,
            ),
            _bad(
                "tolerance_grad must be a real number, got str",
                TypeError,
                TypeError,
                tolerance_grad="1e-7",
            ),
            _bad("only 'strong_wolfe' is supported", torch=RuntimeError, line_search_fn="wolfe"),
        ),
        # measured 1.08e-4 (torch's "Tensor lr", 0.001: y = g(x + s) - g(x) is a difference of
        # gradients ~1e3 times larger than itself, losing 3 of float32's 7 digits); every other
        # configuration <= 1.5e-5 (lr=0.01), the others <= 3.8e-6
        f32_atol=2e-4,
        # Two steps are up to 40 inner iterations, each with its own evaluation. Beyond that the
        # curvature pairs (y = g_new - g_old) lose digits as the gradient converges and torch
        # disagrees with itself by more than 1e-12 (measured 1e-10 in H_diag at step 3 and 5e-2
        # in the parameters at step 20 with lr=0.01): tests/test_optim_lbfgs.py shows that JAX then
        # differs from torch no more than torch differs from itself.
        steps=2,
    ),
    OptimSpec(
        "muon",
        "Muon",
        optax_nearest=(OptaxNearest("muon", "optax.contrib.muon(1e-3)", "contrib.muon", (1e-3,)),),
        # parity runs use the parameter dtype for Newton–Schulz on both sides: torch's bfloat16
        # matmuls and XLA's differ by ~3e-2 after a few steps
        jax_extra_kwargs={"ns_dtype": None},
        torch_context=torch_muon_ns_in_param_dtype,
        static_args=("ns_steps",),
        # in bfloat16 a 1-ulp change of the input (as optax's wrappers make) moves the
        # Newton–Schulz output by ~5e-6; the generic checks run it in float32 (ns_dtype=None)
        example_kwargs={"lr": 0.02},
        takes="matrices",
        companion=("AdamW", {"lr": 3e-3}),
        model_kwargs={"lr": 0.02},
        model_f32_atol={
            "mlp": 2e-06,  # measured 6.41e-07
            "cnn": 2e-06,  # measured 6.29e-07
            "transformer": 2e-05,  # measured 4.12e-06
            "lstm": 7e-06,  # measured 2.32e-06
        },
        problem="mlp_nobias",
        extra_configs=(
            _c("plain momentum", lr=0.02, nesterov=False),
            _c("match_rms_adamw", lr=0.02, adjust_lr_fn="match_rms_adamw"),
            _c("scheduled", "warmup_cosine", lr=0.02),
            _c("groups", groups=True, lr=0.02),
        ),
        resume_configs=(
            _c(
                "nesterov, plain momentum in group 2",
                second_group={"nesterov": False, "momentum": 0.5, "weight_decay": 0.0},
                lr=0.02,
                weight_decay=0.05,
            ),
        ),
        invalid=(
            _bad("Learning rate should be >= 0 but is: -0.1", lr=-0.1),
            _bad(_str_vs("<="), TypeError, lr="0.02"),
            _bad("Tensor lr must be 1-element", lr=TENSOR2),
            _bad("momentum should be >= 0 but is: -0.5", momentum=-0.5),
            _bad("weight decay should be >= 0 but is: -1", weight_decay=-1),
            _bad(
                "Adjust learning rate function arbitrary is not supported", adjust_lr_fn="arbitrary"
            ),
            _bad("Expected integer ns_steps, but got 5.0", torch=TypeError, ns_steps=5.0),
            _bad("Number of steps must be less than 100", torch=ValueError, ns_steps=100),
            _bad("eps must be a real number, got str '1e-7'", TypeError, TypeError, eps="1e-7"),
        ),
        group_overrides={"momentum": 0.5, "weight_decay": 0.0},
        f32_atol=3e-6,  # measured 1.37e-06 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "nadam",
        "NAdam",
        optax_nearest=(OptaxNearest("nadam", "optax.nadam(2e-3)", "nadam", (2e-3,)),),
        model_kwargs={"lr": 3e-3},
        model_f32_atol={
            "mlp": 4e-07,  # measured 1.19e-07
            "cnn": 8e-07,  # measured 2.33e-07
            "transformer": 2e-06,  # measured 5.66e-07
            "lstm": 2e-05,  # measured 5.15e-06
        },
        extra_configs=(
            _c(
                "scheduled", "warmup_cosine", lr=0.01, weight_decay=0.1, decoupled_weight_decay=True
            ),
            _c("groups", groups=True, lr=0.01),
        ),
        resume_configs=(
            _c(
                "momentum decay, decoupled",
                lr=0.01,
                momentum_decay=0.04,
                weight_decay=0.1,
                decoupled_weight_decay=True,
            ),
        ),
        invalid=(
            *_ADAM_FAMILY_INVALID,
            _bad("Invalid momentum_decay value: -0.2", momentum_decay=-0.2),
            _BOOL_DECAY,
        ),
        group_overrides={"momentum_decay": 0.01, "weight_decay": 0.1},
        f32_atol=3e-6,  # measured 1.01e-06 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "radam",
        "RAdam",
        optax_nearest=(OptaxNearest("radam", "optax.radam(1e-3)", "radam", (1e-3,)),),
        model_kwargs={"lr": 3e-3},
        model_f32_atol={
            "mlp": 4e-07,  # measured 1.04e-07
            "cnn": 4e-07,  # measured 1.19e-07
            "transformer": 6e-07,  # measured 1.79e-07
            "lstm": 4e-07,  # measured 1.19e-07
        },
        extra_configs=(
            _c("scheduled", "decay", lr=0.01, weight_decay=0.1),
            _c("groups", groups=True, lr=0.01),
        ),
        resume_configs=(
            _c(
                "rectified from step 6, decoupled",
                lr=0.01,
                weight_decay=0.1,
                decoupled_weight_decay=True,
            ),
        ),
        invalid=_ADAM_FAMILY_INVALID,
        group_overrides={"betas": (0.9, 0.99), "weight_decay": 0.1, "decoupled_weight_decay": True},
        f32_atol=3e-6,  # measured 1.31e-06 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "rmsprop",
        "RMSprop",
        optax_nearest=(
            OptaxNearest(
                "rmsprop",
                "optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False)",
                "rmsprop",
                (1e-2, 0.99, 1e-8),
                {"eps_in_sqrt": False},
            ),
            OptaxNearest(
                "rmsprop (ε in the root)",
                "optax.rmsprop(1e-2, decay=0.99, eps=1e-8)",
                "rmsprop",
                (1e-2, 0.99, 1e-8),
            ),
        ),
        model_kwargs={"lr": 1e-3},
        model_f32_atol={
            "mlp": 2e-06,  # measured 4.77e-07
            "cnn": 4e-07,  # measured 1.15e-07
            "transformer": 4e-07,  # measured 1.19e-07
            "lstm": 2e-05,  # measured 3.87e-06
        },
        extra_configs=(
            _c("momentum uncentered", lr=0.005, momentum=0.9),
            _c("scheduled momentum", "warmup_cosine", lr=0.005, momentum=0.5, centered=True),
            _c("groups", groups=True, lr=0.005),
        ),
        resume_configs=(_c("centered momentum", lr=0.005, momentum=0.9, centered=True),),
        invalid=(
            *_NEG,
            _bad("Invalid epsilon value: -1", eps=-1),
            _bad("Invalid momentum value: -1.0", momentum=-1.0),
            _bad("Invalid alpha value: -0.5", alpha=-0.5),
            _bad("Invalid alpha value: 1.5 (at most 1 is needed)", torch="nonfinite", alpha=1.5),
            _BOOL_DECAY,
        ),
        group_overrides={"alpha": 0.9, "momentum": 0.3},
        f32_atol=2e-6,  # measured 5.13e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "rprop",
        "Rprop",
        optax_nearest=(OptaxNearest("rprop", "optax.rprop(1e-2)", "rprop", (1e-2,)),),
        model_kwargs={"lr": 1e-3},
        model_f32_atol={
            "mlp": 0.0,  # measured 0: bitwise equal to torch
            "cnn": 0.0,  # measured 0: bitwise equal to torch
            "transformer": 0.0,  # measured 0: bitwise equal to torch
            "lstm": 0.0,  # measured 0: bitwise equal to torch
        },
        extra_configs=(
            _c("large steps", lr=0.1, step_sizes=(1e-3, 0.2)),
            _c("scheduled (ignored)", "decay", lr=0.05),
            _c("groups", groups=True, lr=0.05),
        ),
        resume_configs=(_c("first step", lr=0.05),),
        invalid=(
            _bad("Invalid learning rate: -0.1", lr=-0.1),
            *_LR_TYPES,
            _bad("Invalid eta values: 1.0, 0.5", etas=(1.0, 0.5)),
            _bad("Invalid eta values: 0.5, 0.9", etas=(0.5, 0.9)),
            _bad("Invalid eta values: 0.0, 1.2", etas=(0.0, 1.2)),
            _bad(_str_vs("<"), TypeError, etas=("0.5", 1.2)),
            _bad(_str_vs("<"), TypeError, etas=(0.5, "1.2")),
            _bad(
                "step_sizes[1] must be a real number, got str '50'",
                TypeError,
                TypeError,
                step_sizes=(1e-6, "50"),
            ),
        ),
        group_overrides={"etas": (0.3, 1.5)},
        f32_atol=0.0,  # measured 0: bitwise equal to torch after 50 float32 steps (every config)
    ),
    OptimSpec(
        "sgd",
        "SGD",
        optax_nearest=(OptaxNearest("sgd", "optax.sgd(1e-3)", "sgd", (1e-3,)),),
        model_kwargs={"lr": 0.1, "momentum": 0.9},
        model_f32_atol={
            "mlp": 2e-07,  # measured 6.33e-08 (worst of default and OneCycleLR-cos)
            "cnn": 2e-06,  # measured 4.47e-07
            "transformer": 4e-07,  # measured 1.19e-07
            "lstm": 2e-07,  # measured 4.47e-08
        },
        extra_configs=(
            _c("nesterov maximize", lr=0.005, momentum=0.5, nesterov=True, maximize=True),
            _c("scheduled momentum", "warmup_cosine", lr=0.05, momentum=0.9, dampening=0.1),
            _c("groups", groups=True, lr=0.05, momentum=0.9),
        ),
        resume_configs=(
            _c(
                "dampening, weight decay, nesterov in group 2",
                second_group={"momentum": 0.5, "dampening": 0.0, "nesterov": True},
                lr=0.05,
                momentum=0.9,
                dampening=0.1,
                weight_decay=0.01,
            ),
            _c("no momentum", lr=0.05),
        ),
        invalid=(
            _bad("Invalid learning rate: -0.1", lr=-0.1),
            _bad("Invalid weight_decay value: -1", weight_decay=-1),
            _bad("Tensor lr must be 1-element", lr=TENSOR2),
            # torch's `lr < 0.0`: other operand order, and NaN passes (its parameters become NaN)
            _bad(_str_vs("<", "str", "float"), TypeError, lr="0.001"),
            _bad("Invalid learning rate: nan", torch="nonfinite", lr=math.nan),
            _bad("Invalid momentum value: -0.5", momentum=-0.5),
            _bad(_str_vs("<", "NoneType", "float"), TypeError, momentum=None),
            _bad("Nesterov momentum requires a momentum and zero dampening", nesterov=True),
            _bad(
                "Nesterov momentum requires a momentum and zero dampening",
                nesterov=True,
                momentum=0.9,
                dampening=0.1,
            ),
            _bad(
                "dampening must be a real number, got str '0.1'",
                TypeError,
                TypeError,
                momentum=0.9,
                dampening="0.1",
            ),
            _BOOL_DECAY,
        ),
        group_overrides={"momentum": 0.5, "weight_decay": 0.01, "nesterov": True},
        f32_atol=5e-7,  # measured 1.19e-07 after 50 float32 steps (worst config)
    ),
    OptimSpec(
        "sparse_adam",
        "SparseAdam",
        optax_nearest=(
            OptaxNearest(
                "sparse_adam", "optax.adam(1e-3) (dense: every row moves)", "adam", (1e-3,)
            ),
        ),
        takes="sparse",
        companion=("Adam", {"lr": 3e-3}),
        model_kwargs={"lr": 0.01},
        model_f32_atol={
            "transformer": 4e-07,  # measured 1.15e-07
        },
        problem="embedding",
        extra_configs=(
            _c("scheduled", "decay", lr=0.05),
            _c("groups", groups=True, lr=0.05),
        ),
        resume_configs=(_c("bias correction", lr=0.05),),
        invalid=(
            _bad("Invalid learning rate: 0.0", lr=0.0),
            _bad("Invalid learning rate: -0.1", lr=-0.1),
            _bad(_str_vs("<"), TypeError, lr="0.001"),
            _bad("Tensor lr must be 1-element", lr=TENSOR2),
            _bad("Invalid epsilon value: 0.0", eps=0.0),
            _bad("Invalid beta parameter at index 0: 1.0", betas=(1.0, 0.9)),
            _bad("Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0)),
            _bad("tuple index out of range", IndexError, betas=(0.9,)),
        ),
        group_overrides={"betas": (0.5, 0.9)},
        f32_atol=5e-7,  # measured 1.17e-07 after 50 float32 steps (worst config)
    ),
)


def spec(name: str) -> OptimSpec:
    """The spec of one optimizer by jaxopt_port name."""
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"no spec named {name!r}; expected one of {[s.name for s in SPECS]}")


def for_torch(optimizer: Any) -> OptimSpec | None:
    """The spec of a live torch optimizer (or its class), its subclasses recognised by their
    closest torch.optim base; ``None`` for a class the table does not know."""
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    by_torch: dict[str, OptimSpec] = {}
    for s in SPECS:  # the first row of a torch class is its spec
        by_torch.setdefault(s.torch_cls, s)
    for base in cls.__mro__:
        if base.__name__ in by_torch and base.__module__.startswith("torch.optim"):
            return by_torch[base.__name__]
    return None


def torch_db_configs(s: OptimSpec) -> tuple[Config, ...]:
    """Torch's own ``optim_db`` option combinations for this optimizer (needs torch, expecttest)."""
    from torch.testing._internal.common_optimizers import optim_db

    for info in optim_db:
        if info.optim_cls.__name__ == s.torch_cls:
            inputs = info.optim_inputs_func(device="cpu")
            return tuple(
                Config(f"torch {i.desc}", dict(i.kwargs)) for i in inputs if i.params is None
            )
    raise KeyError(f"{s.torch_cls} is not in torch's optim_db")


def configs_for(s: OptimSpec) -> tuple[Config, ...]:
    """Every configuration to run: torch's ``optim_db`` inputs, then ours."""
    return (*torch_db_configs(s), *s.extra_configs)
