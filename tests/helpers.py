"""Small builders shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from differland.forcing import Forcing
from differland.io import read_site_driver


def site_forcing(fluxsites_dir: Path, site: str = "US-Var", n_steps: int | None = None,
                 start: int = 0) -> Forcing:
    """Forcing of a real site driver, optionally a window of ``n_steps`` from ``start``."""
    forcing = read_site_driver(fluxsites_dir / f"{site}.nc").forcing
    if n_steps is None:
        return forcing
    return jax.tree.map(lambda x: np.asarray(x)[start:start + n_steps], forcing)


def take(tree, index):
    """Leaf-wise ``x[index]`` of a pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def as_float32(tree):
    """The pytree with its floating-point leaves in float32 (the default precision; the tests
    run JAX with float64 enabled)."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)
