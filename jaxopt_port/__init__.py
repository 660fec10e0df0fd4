"""jaxopt_port: PyTorch's optimization toolkit as Optax gradient transformations, proven to
match."""

# schedules and prox install optim.from_torch's readers of schedulers and of torchao's wrappers
from jaxopt_port import optim, prox, schedules

__version__ = "0.1.0.dev0"
__all__ = ["__version__", "optim", "prox", "schedules"]
