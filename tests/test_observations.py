"""Observation operators, aggregation, likelihood and skill scores against hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import site_forcing

from differland import ModelConfig, SiteModel, default_parameters, simulate
from differland.likelihood import (
    POOL_INFLOWS,
    POOL_OUTFLOWS,
    Stream,
    gaussian_misfit,
    nnse_loss,
    nse,
    parameter_edcs,
    pool_balance_ratios,
    steady_state_edcs,
    water_drift_edc,
    water_steady_state_edcs,
)
from differland.metrics import skill
from differland.observations import (
    OPERATORS,
    apar_sif,
    calendar_groups,
    spatial_mean,
    temporal_mean,
    water_storage_anomaly,
)
from differland.state import CARBON_POOLS


@pytest.fixture(scope="module")
def run(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "DE-Hai", n_steps=400, start=0)
    params = default_parameters("site")
    return params, forcing, simulate(params, forcing, ModelConfig(model=SiteModel()))


def test_flux_operators_and_signs(run):
    params, forcing, trajectory = run
    o = trajectory.outputs
    predict = {name: np.asarray(op.predict(trajectory, params, forcing))
               for name, op in OPERATORS.items() if name in ("gpp", "reco", "nee", "nbe", "et",
                                                            "lai", "biomass")}
    np.testing.assert_allclose(predict["reco"], o.autotrophic_respiration + o.rh_litter
                               + o.rh_som, rtol=1e-14)
    # NEE positive = to the atmosphere: NEE = RECO - GPP
    np.testing.assert_allclose(predict["nee"], predict["reco"] - predict["gpp"], atol=1e-12)
    np.testing.assert_array_equal(predict["nbe"], predict["nee"])  # no fire at the site
    assert (predict["gpp"] >= 0).all() and (predict["et"] >= 0).all()
    summer = slice(170, 230)
    assert predict["nee"][summer].mean() < 0, "a temperate forest is a summer sink"
    s = trajectory.states
    np.testing.assert_allclose(predict["biomass"], s.labile_carbon + s.foliar_carbon
                               + s.root_carbon + s.wood_carbon)
    np.testing.assert_allclose(predict["lai"], o.lai)
    assert OPERATORS["nee"].units == "gC m-2 d-1" and OPERATORS["et"].units == "mm d-1"


def test_sif_operators(run):
    _, forcing, trajectory = run
    sif = apar_sif(trajectory, forcing, sif_yield=2.0, extinction=0.5)
    lai, ssrd = np.asarray(trajectory.outputs.lai), np.asarray(forcing.ssrd)
    np.testing.assert_allclose(sif, 2.0 * 0.48 * ssrd * (1 - np.exp(-0.5 * lai)), rtol=1e-12)


def test_water_storage_anomaly_removes_mean_over_observed_steps():
    storage = jnp.asarray([10.0, 20.0, 30.0, 1000.0])
    mask = jnp.asarray([1, 1, 1, 0])
    np.testing.assert_allclose(water_storage_anomaly(storage, mask), [-10.0, 0.0, 10.0, 980.0])


def test_temporal_and_spatial_aggregation():
    dates = np.arange("2004-01-30", "2004-03-02", dtype="datetime64[D]")  # Jan 30 .. Mar 1
    groups, n = calendar_groups(dates, "month")
    assert n == 3 and groups[0] == 0 and groups[2] == 1 and groups[-1] == 2
    values = jnp.arange(dates.size, dtype=float)
    means, counts = temporal_mean(values, groups, n)
    np.testing.assert_allclose(means, [0.5, np.arange(2, 31).mean(), 31.0])
    np.testing.assert_array_equal(counts, [2, 29, 1])
    mask = (values != 0).astype(float)
    means, counts = temporal_mean(values, groups, n, mask)
    assert float(means[0]) == 1.0 and float(counts[0]) == 1
    years, n_years = calendar_groups(np.array(["2003-12-31", "2004-01-01"], "datetime64[D]"),
                                     "year")
    assert n_years == 2 and list(np.asarray(years)) == [0, 1]
    grid = jnp.asarray([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])
    mean, weight = spatial_mean(grid, jnp.asarray([1.0, 3.0, 0.0]))
    np.testing.assert_allclose(mean, [2.5, 3.5])
    np.testing.assert_allclose(weight, [4.0, 4.0])
    with pytest.raises(ValueError, match="frequency"):
        calendar_groups(dates, "week")


def test_gaussian_misfit_and_nse_by_hand():
    stream = Stream(values=jnp.asarray([1.0, 2.0, 3.0, 4.0]), mask=jnp.asarray([1, 1, 1, 0.0]),
                    sigma=jnp.asarray([1.0, 2.0, 1.0, 1.0]), weight=jnp.asarray(2.0))
    prediction = jnp.asarray([2.0, 2.0, 1.0, 99.0])
    # 0.5 * ((1/1)^2 + 0 + (2/1)^2) / 3 observed * weight 2
    assert float(gaussian_misfit(prediction, stream)) == pytest.approx(2.0 * 0.5 * 5.0 / 3.0)
    assert float(nse(prediction, stream)) == pytest.approx(1 - 5.0 / 2.0)
    assert float(nnse_loss(prediction, stream)) == pytest.approx(-2.0 / (2 - (1 - 2.5)))


def test_gaps_never_make_nan_gradients():
    values = jnp.asarray([1.0, 2.0, 3.0, 0.0])
    stream = Stream(values=values, mask=jnp.asarray([1.0, 0.0, 1.0, 0.0]),
                    sigma=jnp.asarray([0.5, 0.0, 0.5, 0.0]), weight=jnp.asarray(1.0))

    def loss(prediction):
        return gaussian_misfit(prediction, stream) + nnse_loss(prediction, stream)

    gradient = jax.grad(loss)(jnp.asarray([1.5, jnp.nan, 2.0, jnp.inf]))
    assert np.isfinite(np.asarray(gradient)[[0, 2]]).all()
    assert float(gradient[1]) == 0.0 and float(gradient[3]) == 0.0


def test_parameter_edcs_penalise_violations_only():
    good = default_parameters("site").replace(litter_respiration_rate=1e-3,
                                              som_respiration_rate=1e-5)
    bad = good.replace(litter_respiration_rate=1e-4, som_respiration_rate=5e-4)
    assert float(parameter_edcs(good)["edc_litter_vs_som"]) < 1e-3
    assert float(parameter_edcs(bad)["edc_litter_vs_som"]) > 1.0


def _pool_budget(inflow_per_step, outflow_per_step, year_end_pools, initial=10.0):
    """Outputs/states/initial for 730 steps: each pool's first inflow and first outflow flux
    set per step (fluxes shared between pools, e.g. labile -> foliar, add up; wood's are
    its own) and the same year-end values for every pool."""
    steps = 730
    year_end = np.zeros(steps)
    year_end[[364, 729]] = 1.0
    pool = np.full(steps, initial)
    pool[[364, 729]] = year_end_pools
    fluxes = {name: np.zeros(steps) for names in (*POOL_INFLOWS.values(),
                                                  *POOL_OUTFLOWS.values()) for name in names}
    for pool_name in CARBON_POOLS:
        fluxes[POOL_INFLOWS[pool_name][0]] = np.full(steps, inflow_per_step)
        fluxes[POOL_OUTFLOWS[pool_name][0]] = np.full(steps, outflow_per_step)
    outputs = SimpleNamespace(**{k: jnp.asarray(v) for k, v in fluxes.items()})
    states = SimpleNamespace(**{p: jnp.asarray(pool) for p in CARBON_POOLS})
    first = SimpleNamespace(**{p: jnp.asarray(initial) for p in CARBON_POOLS})
    return outputs, states, first, jnp.asarray(year_end)


def test_pool_balance_ratios_by_hand():
    outputs, states, initial, year_end = _pool_budget(1.0, 1.0, [12.0, 14.0])
    in_out, ratio = pool_balance_ratios(outputs, states, initial, year_end)["wood_carbon"]
    # wood: in = npp_to_wood, out = wood_to_som (shared with nothing else), both 1 per step
    assert float(in_out) == pytest.approx(1.0)
    assert float(ratio) == pytest.approx(13.0 / 10.0)


def test_steady_state_forms_inside_and_outside_tolerance():
    inside = _pool_budget(1.0, 1.0, [10.3, 10.5])  # trend 1.04: within 10 %
    outside = _pool_budget(1.0, 1.0, [13.0, 15.0])  # trend 1.4: outside
    wood = "edc_steady_wood_carbon"
    tolerance_in = float(steady_state_edcs(*inside, form="tolerance")[wood])
    tolerance_out = float(steady_state_edcs(*outside, form="tolerance")[wood])
    assert tolerance_in < 1e-2, "almost no pull inside the tolerance band"
    # outside: about K x (|Rs - Rm| - 0.1) = 90 x 0.3
    assert tolerance_out == pytest.approx(90.0 * 0.3, rel=1e-3)
    quadratic_in = float(steady_state_edcs(*inside, form="quadratic")[wood])
    assert quadratic_in == pytest.approx((np.log(1.04 + 1e-3) / np.log(2.0)) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="form"):
        steady_state_edcs(*inside, form="linear")


def test_water_steady_state_edcs_by_hand():
    """(ln((mean year-end + 1) / (initial + 1)) / ln 2)^2 per water store; a store the model
    lacks is left out; 0 when the year ends average the initial store."""
    year_end = np.zeros(730)
    year_end[[364, 729]] = 1.0
    paw = np.full(730, 50.0)
    paw[[364, 729]] = [99.0, 299.0]  # mean year end 199 = 2^3 x 25 - 1 with initial 24
    puw = np.full(730, 7.0)
    puw[[364, 729]] = [5.0, 9.0]  # mean 7 = initial: no drift
    states = SimpleNamespace(soil_water=jnp.asarray(paw), deep_water=jnp.asarray(puw))
    initial = SimpleNamespace(soil_water=jnp.asarray(24.0), deep_water=jnp.asarray(7.0))
    penalties = water_steady_state_edcs(states, initial, jnp.asarray(year_end))
    assert float(penalties["edc_steady_soil_water"]) == pytest.approx(9.0, rel=1e-5)
    assert float(penalties["edc_steady_deep_water"]) == pytest.approx(0.0, abs=1e-10)
    one_store = SimpleNamespace(soil_water=jnp.asarray(paw), deep_water=None)
    assert set(water_steady_state_edcs(one_store, initial, jnp.asarray(year_end))) == {
        "edc_steady_soil_water"}
    # an empty initial store costs a bounded amount: (log2(200))^2
    empty = SimpleNamespace(soil_water=jnp.asarray(0.0), deep_water=jnp.asarray(7.0))
    assert float(water_steady_state_edcs(states, empty, jnp.asarray(year_end))[
        "edc_steady_soil_water"]) == pytest.approx(np.log2(200.0) ** 2, rel=1e-5)


def test_water_drift_edc_by_hand():
    """(max(|D| - 1/3, 0) / (1/3))^2 with D the later half's mean year-end total water minus
    the earlier half's, in years of precipitation; the first year end left out."""
    year_end = np.zeros(50)
    ends = [9, 19, 29, 39, 49]
    year_end[ends] = 1.0
    paw = np.full(50, 80.0)
    paw[ends] = [1000.0, 60.0, 70.0, 260.0, 280.0]  # first end (spin-up) left out
    puw = np.full(50, 3.0)
    puw[ends] = [500.0, 40.0, 40.0, 140.0, 140.0]
    states = SimpleNamespace(soil_water=jnp.asarray(paw), deep_water=jnp.asarray(puw))
    flags = jnp.asarray(year_end)
    # total: early (100 + 110) / 2 = 105, late (400 + 420) / 2 = 410: D = 305 / 300
    excess = (305.0 / 300.0 - 1.0 / 3.0) / (1.0 / 3.0)
    assert float(water_drift_edc(states, flags, 300.0)) == pytest.approx(excess ** 2, rel=1e-5)
    # drying costs as filling does
    paw_dry, puw_dry = paw.copy(), puw.copy()
    paw_dry[ends] = [1000.0, 260.0, 280.0, 60.0, 70.0]
    puw_dry[ends] = [500.0, 140.0, 140.0, 40.0, 40.0]
    dry = SimpleNamespace(soil_water=jnp.asarray(paw_dry), deep_water=jnp.asarray(puw_dry))
    assert float(water_drift_edc(dry, flags, 300.0)) == pytest.approx(excess ** 2, rel=1e-5)
    # within the tolerance (D = 305 / 1000), one store only, and with too few year ends: 0
    assert float(water_drift_edc(states, flags, 1000.0)) == 0.0
    one_store = SimpleNamespace(soil_water=jnp.asarray(paw), deep_water=None)
    # PAW alone: early 65, late 270: D = 205 / 300
    assert float(water_drift_edc(one_store, flags, 300.0)) == pytest.approx(
        ((205.0 / 300.0 - 1.0 / 3.0) * 3.0) ** 2, rel=1e-5)
    short = np.zeros(50)
    short[[9, 49]] = 1.0
    assert float(water_drift_edc(states, jnp.asarray(short), 1.0)) == 0.0
    gradient = jax.grad(lambda w: water_drift_edc(
        SimpleNamespace(soil_water=w, deep_water=None), flags, 300.0))(jnp.asarray(paw))
    assert np.all(np.isfinite(np.asarray(gradient)))


def test_skill_scores_by_hand():
    observed = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    simulated = np.array([1.5, 2.0, 2.5, 4.0, 7.0])
    scores = skill(simulated, observed)
    assert scores["n"] == 4
    assert scores["nse"] == pytest.approx(1 - 0.5 / 5.0)
    assert scores["rmse"] == pytest.approx(np.sqrt(0.5 / 4))
    assert scores["bias"] == pytest.approx(0.0)
    assert scores["r"] == pytest.approx(np.corrcoef(simulated[:4], observed[:4])[0, 1])
    assert skill(observed, observed)["kge"] == pytest.approx(1.0)
    assert np.isnan(skill([1.0], [1.0])["nse"])
