"""Carbon and water budgets close exactly in the default mode (float64), per step and overall."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import load
from helpers import site_forcing

from differland import (
    CalendarPhenology,
    ClimatePhenology,
    GlobalModel,
    GroundwaterSupply,
    LinearBeta,
    ModelConfig,
    NoWaterStress,
    SiteModel,
    default_parameters,
    initial_state,
    simulate,
    simulate_pixels,
    step,
)
from differland.forcing import Forcing
from differland.params import ParameterSet
from differland.state import CARBON_POOLS, State

TOLERANCE = 1e-10


def _with_defaults(params: ParameterSet) -> ParameterSet:
    """Pixel parameters plus registry defaults for the names a file does not hold."""
    n = np.shape(params[params.names[0]])[0]
    defaults = default_parameters("global")
    return ParameterSet({**{k: np.full(n, float(defaults[k])) for k in defaults.names},
                         **params.to_dict()})


def _prepend(initial: State, states: State) -> State:
    return jax.tree.map(lambda s0, s: np.concatenate([np.asarray(s0)[..., None], s], -1),
                        initial, states)


def _water_input(forcing, outputs):
    """Precipitation plus the groundwater supply where the run has one [mm d-1]."""
    supply = outputs.groundwater_supply
    return np.asarray(forcing.precipitation) + (0.0 if supply is None else supply)


def check_site_budgets(params, forcing, config, network=None):
    trajectory = jax.device_get(simulate(params, forcing, config, network=network))
    states = _prepend(initial_state(params, config), trajectory.states)
    o, dt = trajectory.outputs, np.asarray(forcing.delta_t)
    carbon = sum(getattr(states, pool) for pool in CARBON_POOLS)
    uptake = (o.gpp - o.autotrophic_respiration - o.rh_litter - o.rh_som) * dt
    per_step = np.abs(np.diff(carbon) - uptake) / carbon[1:]
    assert per_step.max() <= TOLERANCE
    assert abs(carbon[-1] - carbon[0] - uptake.sum()) / carbon[0] <= TOLERANCE
    np.testing.assert_allclose(-o.nee * dt, uptake, rtol=1e-12, atol=1e-12)
    # each pool against its own fluxes
    pool_fluxes = {
        "labile_carbon": o.npp_to_labile - o.labile_to_foliar,
        "foliar_carbon": o.npp_to_foliar + o.labile_to_foliar - o.foliar_to_litter,
        "root_carbon": o.npp_to_root - o.root_to_litter,
        "wood_carbon": o.npp_to_wood - o.wood_to_som,
        "litter_carbon": o.foliar_to_litter + o.root_to_litter - o.rh_litter - o.litter_to_som,
        "som_carbon": o.litter_to_som + o.wood_to_som - o.rh_som,
    }
    for pool, net in pool_fluxes.items():
        values = getattr(states, pool)
        assert np.abs(np.diff(values) - net * dt).max() <= TOLERANCE * carbon.max(), pool
        assert values.min() >= -1e-9 * carbon.max(), f"{pool} went negative"
    water = states.soil_water + states.deep_water
    balance = (_water_input(forcing, o) - o.et - o.paw_runoff - o.puw_runoff) * dt
    assert np.abs(np.diff(water) - balance).max() <= TOLERANCE * max(water.max(), 1.0)
    assert abs(water[-1] - water[0] - balance.sum()) <= TOLERANCE * max(water.max(), 1.0)
    for flux in (o.et, o.paw_runoff, o.puw_runoff, o.paw_to_puw, o.rh_litter, o.litter_to_som):
        assert flux.min() >= -1e-12
    return trajectory


@pytest.mark.parametrize("water_stress", [NoWaterStress(), LinearBeta()])
@pytest.mark.parametrize("golden_set", ["mid", "rand1"])
def test_site_budgets_close_over_full_record(fluxsites_dir, golden_dir, golden_set,
                                             water_stress):
    """US-Var, 9 years; rand1 are parameters where the reference loses water."""
    _, params, _ = load(golden_dir / f"dalec990_US-Var_{golden_set}.nc")
    forcing = site_forcing(fluxsites_dir, "US-Var")
    check_site_budgets(params, forcing, ModelConfig(model=SiteModel(), water_stress=water_stress))


def test_reference_mode_loses_water_where_default_does_not(fluxsites_dir, golden_dir):
    """The reference PAW floor bug (drainage recomputed with a precedence slip) leaks water."""
    _, params, _ = load(golden_dir / "dalec990_US-Var_rand1.nc")
    forcing = site_forcing(fluxsites_dir, "US-Var")
    config = ModelConfig(model=SiteModel(), reference_mode=True)
    trajectory = jax.device_get(simulate(params, forcing, config))
    states = _prepend(initial_state(params, config), trajectory.states)
    o = trajectory.outputs
    water = states.soil_water + states.deep_water
    balance = np.asarray(forcing.precipitation) - o.et - o.paw_runoff - o.puw_runoff
    assert np.abs(np.diff(water) - balance).max() > 1.0  # millimetres created or lost
    check_site_budgets(params, forcing, ModelConfig(model=SiteModel()))


def test_foliar_floor_creates_carbon_only_in_reference_mode():
    """At the foliar floor the reference sets leaf litter to 1 gC m-2 d-1 (creates carbon)."""
    params = default_parameters("site")
    state = State(*(jnp.asarray(v) for v in (1.0, 1.0, 50.0, 500.0, 50.0, 500.0, 100.0)),
                  deep_water=jnp.asarray(100.0))
    # A day in the leaf-fall pulse with no light: GPP = 0, so foliage can only lose carbon.
    forcing_t = dict(time=params.leaf_fall_day, t_min=5.0, t_max=10.0, ssrd=0.0, co2=400.0,
                     doy=200.0, burned_area=0.0, vpd=5.0, precipitation=2.0, latitude=45.0,
                     delta_t=1.0, mean_temperature=10.0, mean_precipitation=2.0)
    forcing_t = Forcing(**{k: jnp.asarray(v, jnp.float64) for k, v in forcing_t.items()})
    for reference_mode, creates in [(True, True), (False, False)]:
        config = ModelConfig(model=SiteModel(), reference_mode=reference_mode)
        new, o = step(params, state, forcing_t, config)
        residual = (new.total_carbon() - state.total_carbon()
                    - (o.gpp - o.autotrophic_respiration - o.rh_litter - o.rh_som))
        assert (abs(float(residual)) > 0.5) == creates


@pytest.mark.parametrize("phenology, groundwater", [
    (CalendarPhenology(), False), (ClimatePhenology(), False),
    (CalendarPhenology(water_limited_release=True), False), (CalendarPhenology(), True)])
def test_global_budgets_close_with_fire(golden_dir, phenology, groundwater):
    _, params, forcing = load(golden_dir / "dalec993_synthetic_rand1.nc")
    params = _with_defaults(params)
    config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta(), phenology=phenology,
                         soil_water=(GroundwaterSupply(),) if groundwater else ())
    trajectory = jax.device_get(simulate_pixels(params, forcing, config))
    initial = jax.vmap(lambda p: initial_state(p, config))(params)
    states = _prepend(initial, trajectory.states)
    o, dt = trajectory.outputs, np.asarray(forcing.delta_t)
    assert o.fire_combustion_total.max() > 0.0, "fire is exercised"
    carbon = sum(getattr(states, pool) for pool in CARBON_POOLS)
    uptake = (o.gpp - o.autotrophic_respiration - o.rh_litter - o.rh_som
              - o.fire_combustion_total) * dt
    assert (np.abs(np.diff(carbon, axis=-1) - uptake) / carbon[..., 1:]).max() <= TOLERANCE
    np.testing.assert_allclose(-o.nbe * dt, uptake, rtol=1e-12, atol=1e-12)
    water = states.soil_water
    balance = (_water_input(forcing, o) - o.et - o.runoff) * dt
    assert np.abs(np.diff(water, axis=-1) - balance).max() <= TOLERANCE * water.max()
    assert o.runoff.min() >= 0.0, "runoff is never negative in the default mode"
    for pool in CARBON_POOLS:
        assert getattr(states, pool).min() >= 0.0


def test_drought_leaf_loss_conserves_and_sheds_leaves_only_under_stress(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-SRG")
    params = default_parameters("site").replace(
        initial_plant_available_water=50.0, field_capacity=200.0, drought_leaf_loss_rate=0.05)
    calendar = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    drought = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                          leaf_loss=("drought_leaf_loss",))
    shedding = check_site_budgets(params, forcing, drought)
    base = jax.device_get(simulate(params, forcing, calendar))
    stressed = shedding.outputs.beta < 0.999
    assert stressed.any()
    assert np.all(shedding.outputs.lai[stressed] <= base.outputs.lai[stressed] + 1e-12)
    assert shedding.outputs.lai.mean() < 0.9 * base.outputs.lai.mean()
    # no water stress, no extra leaf loss
    unstressed = ModelConfig(model=SiteModel(), leaf_loss=("drought_leaf_loss",))
    np.testing.assert_allclose(simulate(params, forcing, unstressed).outputs.lai,
                               simulate(params, forcing, ModelConfig()).outputs.lai)


def test_water_limited_decomposition_conserves_and_slows_only_under_stress(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-SRG", n_steps=730)
    params = default_parameters("site").replace(
        initial_plant_available_water=50.0, field_capacity=200.0,
        decomposition_water_sensitivity=0.8)
    limited = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                          decomposition=("water_limited_decomposition",))
    slowed = check_site_budgets(params, forcing, limited).outputs
    first = jax.device_get(step(params, initial_state(params, limited),
                                jax.tree.map(lambda x: x[0], forcing), limited)[1])
    plain = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    base = jax.device_get(step(params, initial_state(params, plain),
                               jax.tree.map(lambda x: x[0], forcing), plain)[1])
    factor = 1.0 - 0.8 * (1.0 - base.beta)
    assert base.beta < 1.0
    for name in ("rh_litter", "rh_som", "litter_to_som", "rh_environmental_modifier"):
        np.testing.assert_allclose(getattr(first, name), factor * getattr(base, name),
                                   rtol=1e-12)
    assert np.all(np.isfinite(slowed.rh_som))
    unstressed = ModelConfig(model=SiteModel(), decomposition=("water_limited_decomposition",))
    np.testing.assert_allclose(simulate(params, forcing, unstressed).outputs.rh_som,
                               simulate(params, forcing, ModelConfig()).outputs.rh_som)


def test_groundwater_supply_conserves_and_carries_the_vegetation_through_a_drought(
        fluxsites_dir):
    """The supply enters the water budget as an inflow and keeps the soil from running dry:
    with the rain of the record cut off after the first year, the plain bucket empties (ET
    and beta fall to nothing), the supplied one settles where the drainage W^2/Q returns
    what it receives minus ET."""
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=1095)
    rain = np.asarray(forcing.precipitation)
    forcing = forcing.replace(precipitation=jnp.asarray(np.where(np.arange(rain.size) < 365,
                                                                 rain, 0.0)))
    params = default_parameters("site").replace(
        initial_plant_available_water=100.0, field_capacity=20.0, wilting_point_fraction=0.05,
        groundwater_supply_rate=1.0)
    plain = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    supplied = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                           soil_water=(GroundwaterSupply(),))
    with_supply = check_site_budgets(params, forcing, supplied)
    without = check_site_budgets(params, forcing, plain)
    assert without.outputs.groundwater_supply is None
    np.testing.assert_allclose(with_supply.outputs.groundwater_supply, 1.0)
    last_year = slice(-365, None)
    assert without.outputs.et[last_year].max() < 1e-3
    assert with_supply.outputs.et[last_year].mean() > 0.3
    assert without.states.soil_water[last_year].max() < 0.1
    assert with_supply.states.soil_water[last_year].mean() > 1.0
    assert without.outputs.beta[last_year].max() == 0.0
    assert with_supply.outputs.beta[last_year].mean() > 0.1
    # a negligible supply is the model without it
    trace = params.replace(groundwater_supply_rate=1e-12)
    np.testing.assert_allclose(simulate(trace, forcing, supplied).outputs.gpp,
                               simulate(trace, forcing, plain).outputs.gpp, rtol=1e-9)


def test_deep_water_uptake_conserves_and_carries_the_vegetation_through_a_drought(
        fluxsites_dir):
    """The rise of deep water only moves water between the buckets (each closes with it) and
    lets the vegetation live on what drained below the roots: with the rain cut off after
    the first year, the plain model's PAW empties within weeks while its PUW only drains
    away; with the rise the vegetation transpires the PUW store through the second year,
    and the rise stops wherever PAW is above Q."""
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=1095)
    rain = np.asarray(forcing.precipitation)
    forcing = forcing.replace(precipitation=jnp.asarray(np.where(np.arange(rain.size) < 365,
                                                                 rain, 0.0)))
    params = default_parameters("site").replace(
        initial_plant_available_water=100.0, initial_plant_unavailable_water=400.0,
        paw_runoff_focal_point=150.0, puw_runoff_focal_point=1e5, paw_to_puw_fraction=0.9,
        field_capacity=20.0, wilting_point_fraction=0.05, deep_water_uptake_rate=0.01)
    plain = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    rising = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         soil_water=("deep_water_uptake",))
    with_rise = check_site_budgets(params, forcing, rising)
    without = check_site_budgets(params, forcing, plain)
    assert without.outputs.deep_water_uptake is None
    o, dt = with_rise.outputs, np.asarray(forcing.delta_t)
    states = _prepend(initial_state(params, rising), with_rise.states)
    paw, puw = states.soil_water, states.deep_water
    np.testing.assert_allclose(np.diff(paw), (forcing.precipitation + o.deep_water_uptake - o.et
                                              - o.paw_runoff - o.paw_to_puw) * dt, atol=1e-9)
    np.testing.assert_allclose(np.diff(puw), (o.paw_to_puw - o.puw_runoff
                                              - o.deep_water_uptake) * dt, atol=1e-9)
    assert o.deep_water_uptake.min() >= 0.0
    np.testing.assert_array_equal(o.deep_water_uptake[paw[:-1] >= 150.0], 0.0)
    second_year = slice(365, 730)
    assert without.outputs.et[second_year].mean() < 0.1
    assert with_rise.outputs.et[second_year].mean() > 0.3
    assert without.outputs.beta[second_year].mean() < 0.03
    assert with_rise.outputs.beta[second_year].mean() > 0.05
    assert with_rise.states.deep_water[-1] < 0.1 * without.states.deep_water[-1]
    # a negligible rate is the model without the option
    trace = params.replace(deep_water_uptake_rate=1e-12)
    np.testing.assert_allclose(simulate(trace, forcing, rising).outputs.gpp,
                               simulate(trace, forcing, plain).outputs.gpp, rtol=1e-6)


def test_deep_water_uptake_needs_the_site_model_and_the_default_mode():
    with pytest.raises(ValueError, match="deep_water_uptake needs the site model"):
        ModelConfig(model=GlobalModel(), soil_water=("deep_water_uptake",))
    with pytest.raises(ValueError, match="reference_mode"):
        ModelConfig(model=SiteModel(), soil_water=("deep_water_uptake",), reference_mode=True)
