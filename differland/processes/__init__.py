"""Process functions of the DALEC step: small, pure, written in ``jax.numpy``."""
