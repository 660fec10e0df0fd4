"""jaxopt_port's cross-framework verification suite: torch vs JAX vs a NumPy float64 reference."""
