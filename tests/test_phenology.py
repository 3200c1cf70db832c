"""Climate-driven phenology: the growing-season index, its rates, budgets and gradients; the
calendar pulses with a water-limited labile release."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import site_forcing
from test_conservation import check_site_budgets
from test_gradients import check_against_finite_differences

from differland import (
    CalendarPhenology,
    ClimatePhenology,
    ModelConfig,
    SiteModel,
    default_parameters,
    initial_state,
    simulate,
    step,
)
from differland.processes import phenology
from differland.processes.photosynthesis import day_length

CLIMATE = ModelConfig(model=SiteModel(), phenology=ClimatePhenology())
WATER_CALENDAR = ModelConfig(model=SiteModel(),
                             phenology=CalendarPhenology(water_limited_release=True))


def _climate_parameters():
    return default_parameters("site").replace(
        growing_season_temperature=278.15, growing_season_daylength=11.0, growing_season_vpd=20.0,
        growing_season_water=5.0, leaf_growth_rate=0.05, leaf_senescence_rate=0.1,
        initial_plant_available_water=300.0)


def test_growing_season_factors_against_hand_values():
    option = ClimatePhenology()
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    latitude, doy = 45.0, 170.0
    hours = float(day_length(latitude, doy))
    index = phenology.growing_season_weather_index(
        t_min=7.0, vpd=40.0, latitude=latitude, doy=doy, temperature_threshold=278.15,
        daylength_threshold=hours, vpd_threshold=20.0, option=option)
    # temperature half-width above the threshold, day length at it, VPD twice the threshold
    np.testing.assert_allclose(index, sigmoid(1.0) * 0.5 * 1.0 / (1.0 + 2.0**4), rtol=1e-12)
    water = phenology.growing_season_water_factor(jnp.array([25.0, 50.0, 1e4]), 50.0, option)
    np.testing.assert_allclose(water, [1.0 / (1.0 + 2.0**4), 0.5, 1.0], rtol=1e-9)
    np.testing.assert_allclose(phenology.index_driven_rates(0.25, 0.04, 0.1), [0.01, 0.075])


@pytest.mark.parametrize("rates", ["both", "fall"])
def test_step_uses_the_running_index_of_its_weather_and_soil_water(fluxsites_dir, rates):
    forcing = jax.tree.map(lambda x: x[0], site_forcing(fluxsites_dir, "US-Ha1", n_steps=1))
    params = _climate_parameters()
    config = ModelConfig(model=SiteModel(), phenology=ClimatePhenology(index_rates=rates))
    state = initial_state(params, config)
    out = jax.device_get(step(params, state, forcing, config)[1])
    index = phenology.growing_season_weather_index(
        forcing.t_min, forcing.vpd, forcing.latitude, forcing.doy, 278.15, 11.0, 20.0,
        config.phenology) * phenology.growing_season_water_factor(300.0, 5.0, config.phenology)
    # the rates follow the running mean, which starts at initial_index and moves towards
    # the step's index with a 21-day e-folding time
    index = 0.5 + (index - 0.5) * (1.0 - np.exp(-1.0 / 21.0))
    # added to the calendar pulses of the same step
    calendar = jax.device_get(step(params, initial_state(params, ModelConfig()), forcing,
                                   ModelConfig())[1])
    release, fall = calendar.labile_release_factor, calendar.leaf_fall_factor
    # with the index on leaf fall only, the release is the calendar's whatever the index
    growth = 0.05 * index if rates == "both" else 0.0
    senescence = 0.1 * (1.0 - index)
    np.testing.assert_allclose(out.labile_release_factor, release + growth, rtol=1e-12)
    np.testing.assert_allclose(out.leaf_fall_factor, fall + senescence, rtol=1e-12)


def test_climate_phenology_conserves_carbon_and_water(fluxsites_dir):
    check_site_budgets(_climate_parameters(), site_forcing(fluxsites_dir, "US-SRG"), CLIMATE)


def test_leaves_follow_the_weather_not_the_calendar(fluxsites_dir):
    """A warmer spring brings leaf-out forward and a drier soil (relative to the
    plants' threshold) holds fewer leaves; the calendar
    phenology keeps its dates whatever the weather."""
    forcing = site_forcing(fluxsites_dir, "US-Ha1", n_steps=365)
    warm = dataclasses.replace(forcing, t_min=forcing.t_min + 4.0, t_max=forcing.t_max + 4.0)
    params = _climate_parameters().replace(initial_plant_available_water=3000.0,
                                           paw_runoff_focal_point=1e5)

    def leaf_out_day(config, f):
        release = np.asarray(simulate(params, f, config).outputs.labile_release_factor)
        return int(np.argmax(release > 0.5 * release.max()))

    assert leaf_out_day(CLIMATE, warm) < leaf_out_day(CLIMATE, forcing) - 5
    calendar = ModelConfig(model=SiteModel())
    assert leaf_out_day(calendar, warm) == leaf_out_day(calendar, forcing)
    dry = params.replace(growing_season_water=1000.0)
    wet_lai = simulate(params, forcing, CLIMATE).outputs.lai
    dry_lai = simulate(dry, forcing, CLIMATE).outputs.lai
    assert float(jnp.mean(dry_lai)) < 0.8 * float(jnp.mean(wet_lai))


SENESCENCE = ModelConfig(model=SiteModel(), phenology=ClimatePhenology(index_rates="fall"))


def test_index_on_one_rate_conserves_carbon_and_water(fluxsites_dir):
    check_site_budgets(_climate_parameters(), site_forcing(fluxsites_dir, "US-Var"), SENESCENCE)


def test_index_rates_option_is_checked():
    with pytest.raises(ValueError, match="index_rates"):
        ClimatePhenology(index_rates="onset")


@pytest.mark.parametrize("config", [CLIMATE, SENESCENCE], ids=["climate", "fall"])
def test_climate_phenology_gradients_match_finite_differences(fluxsites_dir, config):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60, start=300)
    params = _climate_parameters()

    def loss(p):
        out = simulate(p, forcing, config).outputs
        return jnp.sum(out.lai) + jnp.sum(out.nee) + 0.1 * jnp.sum(out.et)

    check_against_finite_differences(jax.jit(loss), params)


def test_water_limited_release_waits_for_soil_water(fluxsites_dir):
    """Each step releases (the calendar pulse + what dry steps held back) x 1 / (1 + (W_half /
    W)^4) of the start-of-step soil water; the rest is carried, fading over 60 days; leaf fall
    keeps its calendar pulse."""
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=730)
    params = default_parameters("site").replace(growing_season_water=40.0)
    calendar = jax.device_get(simulate(params, forcing, ModelConfig(model=SiteModel())))
    limited = jax.device_get(simulate(params, forcing, WATER_CALENDAR))
    start_water = np.concatenate([[params.initial_plant_available_water],
                                  limited.states.soil_water[:-1]])
    factor = 1.0 / (1.0 + (40.0 / np.maximum(start_water, 1e-6)) ** 4)  # W floored at 1e-6
    assert factor.min() < 0.2 and factor.max() > 0.8, "dry and wet seasons are both exercised"
    pulse = calendar.outputs.labile_release_factor  # daily steps: the loss coefficient itself
    owed, released, carried = 0.0, [], []
    for day in range(len(pulse)):
        owed += pulse[day]
        released.append(owed * factor[day])
        owed = (owed - released[-1]) * np.exp(-1.0 / 60.0)
        carried.append(owed)
    np.testing.assert_allclose(limited.outputs.labile_release_factor, released, rtol=1e-9,
                               atol=1e-15)
    np.testing.assert_allclose(limited.states.deferred_release, carried, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(limited.outputs.leaf_fall_factor,
                               calendar.outputs.leaf_fall_factor, rtol=1e-12)
    # held-back release leaves after the pulse, when the soil wets
    late = (np.asarray(released) > 10.0 * pulse) & (np.asarray(released) > 1e-4)
    assert late.any()
    assert limited.outputs.labile_to_foliar[late].sum() > 0.0


def test_water_limited_release_conserves_and_differentiates(fluxsites_dir):
    params = default_parameters("site").replace(growing_season_water=40.0)
    check_site_budgets(params, site_forcing(fluxsites_dir, "US-SRG"), WATER_CALENDAR)
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60, start=300)

    def loss(p):
        out = simulate(p, forcing, WATER_CALENDAR).outputs
        return jnp.sum(out.lai) + jnp.sum(out.nee) + 0.1 * jnp.sum(out.et)

    check_against_finite_differences(jax.jit(loss), params)
