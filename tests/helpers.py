"""Small builders shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import jax
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
