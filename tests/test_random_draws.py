"""1000 parameter draws over the prior box, corners included: outputs and gradients finite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import load
from helpers import site_forcing, take

from differland import GlobalModel, LinearBeta, ModelConfig, SiteModel, simulate
from differland.params import SPECS, ParameterSet, names_for

N_DRAWS = 1000
N_RANDOM_CORNERS = 254


def prior_draws(variant: str, n: int, seed: int = 0) -> ParameterSet:
    """All-lower and all-upper corners, random corners, then log-uniform interior draws."""
    rng = np.random.default_rng(seed)
    names = names_for(variant)
    u = rng.uniform(size=(n, len(names)))
    u[0], u[1] = 0.0, 1.0
    u[2:2 + N_RANDOM_CORNERS] = rng.integers(0, 2, size=(N_RANDOM_CORNERS, len(names)))
    values = {}
    for j, name in enumerate(names):
        lower, upper = SPECS[name].lower, SPECS[name].upper
        values[name] = jnp.asarray(np.clip(lower * (upper / lower) ** u[:, j], lower, upper))
    return ParameterSet(values)


def check_finite(config, forcing, draws, flux):
    def loss(p):
        outputs = simulate(p, forcing, config).outputs
        return jnp.sum(getattr(outputs, flux)) + jnp.sum(outputs.et)

    values, gradients = jax.jit(jax.vmap(jax.value_and_grad(loss)))(draws)
    outputs = jax.jit(jax.vmap(lambda p: simulate(p, forcing, config)))(draws)
    for leaf in jax.tree.leaves(outputs):
        assert np.isfinite(np.asarray(leaf)).all()
    assert np.isfinite(np.asarray(values)).all()
    for name, gradient in gradients.items():
        bad = ~np.isfinite(np.asarray(gradient))
        assert not bad.any(), f"d/d{name} non-finite for draws {np.flatnonzero(bad)[:5]}"


@pytest.mark.parametrize("water_stress", [LinearBeta()])
def test_site_draws_finite(fluxsites_dir, water_stress):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=365, start=100)
    config = ModelConfig(model=SiteModel(), water_stress=water_stress)
    check_finite(config, forcing, prior_draws("site", N_DRAWS), "nee")


def test_global_draws_finite(golden_dir):
    _, _, forcing = load(golden_dir / "dalec993_synthetic_mid.nc")
    forcing = take(forcing, 2)  # a burning tropical pixel, five years monthly
    config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta())
    check_finite(config, forcing, prior_draws("global", N_DRAWS, seed=1), "nbe")
