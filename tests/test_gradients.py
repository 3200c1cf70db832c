"""Reverse-mode gradients agree with central finite differences for every parameter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from golden import load
from helpers import site_forcing, take

from differland import (
    GlobalModel,
    LinearBeta,
    ModelConfig,
    SiteModel,
    default_parameters,
    simulate,
    simulate_pixels,
)
from differland.params import ParameterSet

RELATIVE_STEP = 1e-6


def check_against_finite_differences(loss, params: ParameterSet, rtol: float = 2e-5):
    """Compare d loss / d ln p from AD and from central differences, parameter by parameter."""
    gradient = jax.grad(loss)(params)
    value = loss(params)
    scale = max(abs(float(value)), max(abs(float(gradient[n] * params[n])) for n in params))
    failures = []
    for name in params.names:
        p = params[name]
        up = loss(params.replace(**{name: p * (1 + RELATIVE_STEP)}))
        down = loss(params.replace(**{name: p * (1 - RELATIVE_STEP)}))
        finite = float(up - down) / (2 * RELATIVE_STEP)
        automatic = float(gradient[name] * p)
        if abs(automatic - finite) > rtol * abs(finite) + 1e-7 * scale:
            failures.append(f"{name}: AD {automatic:.8g} vs FD {finite:.8g}")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("start", [0, 180])
def test_site_gradients_match_finite_differences(fluxsites_dir, start):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60, start=start)
    config = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    params = default_parameters("site").replace(initial_plant_available_water=300.0)
    loss = jax.jit(lambda p: jnp.sum(simulate(p, forcing, config).outputs.nee)
                   + 0.1 * jnp.sum(simulate(p, forcing, config).outputs.et))
    check_against_finite_differences(loss, params)


def test_gradient_of_the_groundwater_supply_matches_finite_differences(fluxsites_dir):
    """In the dry summer, where the supply sets the soil water, beta and so GPP and ET."""
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60, start=180)
    config = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         soil_water=("groundwater_supply",))
    params = default_parameters("site").replace(initial_plant_available_water=40.0,
                                                field_capacity=100.0,
                                                groundwater_supply_rate=0.5)

    def loss(p):
        out = simulate(p, forcing, config).outputs
        return jnp.sum(out.nee) + 0.1 * jnp.sum(out.et)

    assert float(jax.grad(loss)(params).groundwater_supply_rate) != 0.0
    check_against_finite_differences(jax.jit(loss), params)


def test_gradient_of_the_deep_water_uptake_matches_finite_differences(fluxsites_dir):
    """In the dry summer, where the rise from PUW sets the soil water, beta and so GPP and
    ET (PAW below its focal point throughout, so the rise is on)."""
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60, start=180)
    config = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         soil_water=("deep_water_uptake",))
    params = default_parameters("site").replace(
        initial_plant_available_water=40.0, initial_plant_unavailable_water=300.0,
        paw_runoff_focal_point=200.0, field_capacity=100.0, deep_water_uptake_rate=0.005)

    def loss(p):
        out = simulate(p, forcing, config).outputs
        return jnp.sum(out.nee) + 0.1 * jnp.sum(out.et)

    assert float(jax.grad(loss)(params).deep_water_uptake_rate) != 0.0
    check_against_finite_differences(jax.jit(loss), params)


def test_global_gradients_match_finite_differences(golden_dir):
    _, params, forcing = load(golden_dir / "dalec993_synthetic_mid.nc")
    forcing = jax.tree.map(lambda x: x[1:3, :24], forcing)  # two burning pixels, two years
    params = take(params, 0)
    config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta())

    def loss(p):
        batch = jax.tree.map(lambda x: jnp.stack([x, x]), p)
        out = simulate_pixels(batch, forcing, config).outputs
        return jnp.sum(out.nbe) + jnp.sum(out.sif) + 0.1 * jnp.sum(out.et)

    check_against_finite_differences(jax.jit(loss), params)


def test_gradient_of_initial_pools_and_of_reference_mode(fluxsites_dir):
    """The reference mode is differentiable too (where its clamps are inactive)."""
    forcing = site_forcing(fluxsites_dir, "DE-Hai", n_steps=30, start=150)
    params = default_parameters("site").replace(initial_plant_available_water=500.0)
    config = ModelConfig(model=SiteModel(), reference_mode=True)
    loss = jax.jit(lambda p: jnp.sum(simulate(p, forcing, config).outputs.gpp))
    gradient = jax.grad(loss)(params)
    assert float(gradient.initial_foliar_carbon) > 0.0
    check_against_finite_differences(loss, params)
