"""1000 parameter draws over the prior box, corners included: outputs and gradients finite.

The site calibration's default configuration (hybrid neural water stress and ET) is checked
in float32, the default precision, over the full nine-year US-Var record: the lower corner of
the lifespans sheds ~99.9 % of the labile and foliar pools every year, so that they and the
LAI fall through ~1e-19 (where squares underflow in float32) within the record.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import load
from helpers import as_float32, site_forcing, take

from differland import GlobalModel, LinearBeta, ModelConfig, SiteModel, simulate
from differland.calibrate.site import SiteCalibrationConfig
from differland.params import SPECS, ParameterSet, names_for
from differland.processes.neural import init_network

N_DRAWS = 1000
N_RANDOM_CORNERS = 254
LIFESPANS = ("leaf_lifespan", "labile_lifespan")
N_FAST_LIFESPAN_CORNERS = 8  # random corners with both lifespans at their lower bound
N_FAST_INTERIOR = 16  # interior draws, as drawn and moved to the lower lifespan corner


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


def at_lower_lifespans(draws: ParameterSet) -> ParameterSet:
    """The draws with the leaf and labile lifespans both at their lower bound."""
    return draws.replace(**{name: jnp.full_like(draws[name], SPECS[name].lower)
                            for name in LIFESPANS})


def fast_draws(draws: ParameterSet) -> ParameterSet:
    """A few of :func:`prior_draws`' draws: the all-lower and all-upper corners, random corners
    with both lifespans at their lower bound, and interior draws as drawn and moved there."""
    lower = np.ones(len(draws.leaf_lifespan), bool)
    for name in LIFESPANS:
        lower &= np.asarray(draws[name]) == SPECS[name].lower
    corners = 2 + np.flatnonzero(lower[2:2 + N_RANDOM_CORNERS])[:N_FAST_LIFESPAN_CORNERS]
    interior = np.arange(2 + N_RANDOM_CORNERS, 2 + N_RANDOM_CORNERS + N_FAST_INTERIOR)
    pick = np.concatenate([[0, 1], corners, interior])
    chosen = take(draws, pick)
    moved = at_lower_lifespans(take(draws, interior))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), chosen, moved)


def check_finite(config, forcing, draws, flux, network=None, dtype=None):
    """Outputs, the loss sum(flux) + sum(ET) and its gradient finite for every draw (and of
    ``dtype`` where given)."""
    def loss(p):
        outputs = simulate(p, forcing, config, network=network).outputs
        return jnp.sum(getattr(outputs, flux)) + jnp.sum(outputs.et)

    values, gradients = jax.jit(jax.vmap(jax.value_and_grad(loss)))(draws)
    outputs = jax.jit(jax.vmap(lambda p: simulate(p, forcing, config, network=network)))(draws)
    for leaf in jax.tree.leaves((values, gradients, outputs)):
        assert dtype is None or leaf.dtype == dtype
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


def check_calibration_default(fluxsites_dir, draws):
    """:func:`check_finite` for the site calibration's default model configuration, in
    float32, over the full US-Var record."""
    config = SiteCalibrationConfig().model_config
    forcing = as_float32(site_forcing(fluxsites_dir, "US-Var"))
    network = init_network(jax.random.PRNGKey(0), config, dtype=jnp.float32)
    check_finite(config, forcing, as_float32(draws), "nee", network=network, dtype=jnp.float32)


def test_calibration_default_corners_finite_in_float32(fluxsites_dir):
    draws = fast_draws(prior_draws("site", N_DRAWS))
    assert len(draws.leaf_lifespan) == 2 + N_FAST_LIFESPAN_CORNERS + 2 * N_FAST_INTERIOR
    check_calibration_default(fluxsites_dir, draws)


@pytest.mark.slow
def test_calibration_default_draws_finite_in_float32(fluxsites_dir):
    check_calibration_default(fluxsites_dir, prior_draws("site", N_DRAWS))
