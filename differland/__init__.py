"""differland: a differentiable DALEC land-surface model in JAX."""

__version__ = "0.1.0"
