"""jaxopt_port: PyTorch's optimization toolkit as Optax gradient transformations, proven to
match."""

from jaxopt_port import optim, schedules  # schedules installs optim.from_torch's scheduler reader

__version__ = "0.1.0.dev0"
__all__ = ["__version__", "optim", "schedules"]
