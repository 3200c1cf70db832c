"""Local sensitivities against finite differences, the Sobol wrapper against functions whose
indices are known, the prior box against the registry's transform, and one relation between
the local and global rankings at DE-Hai."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_float32

from differland import ModelConfig, default_parameters
from differland.io import read_site_driver
from differland.params import SPECS, ParameterSet, constrain
from differland.sensitivity import (
    ELASTICITY,
    SCALED,
    LocalSensitivities,
    annual_means,
    calendar_years,
    coordinate_derivatives,
    coordinate_function,
    elasticities,
    evaluate_in_batches,
    first_years,
    from_coordinates,
    interaction_share,
    linear_sobol_indices,
    measure,
    ranked,
    sobol_analysis,
    sobol_indices,
    sobol_problem,
    sobol_sample,
    to_coordinates,
)

DAYS = 730  # 2001 and 2002, two whole calendar years of 365 days


@pytest.fixture(scope="module")
def de_hai(fluxsites_dir):
    """The first two years of DE-Hai: (forcing, years) in float64."""
    driver = read_site_driver(fluxsites_dir / "DE-Hai.nc")
    forcing, years = first_years(driver.forcing, driver.dates, 2)
    assert forcing.n_steps == DAYS
    return forcing, years


@pytest.fixture(scope="module")
def local_float32(de_hai):
    forcing, years = de_hai
    params = as_float32(default_parameters("site"))
    return elasticities(params, as_float32(forcing), ModelConfig(), as_float32(years))


def test_calendar_years_weigh_each_year_by_its_length():
    dates = np.arange(np.datetime64("2004-07-01"), np.datetime64("2006-01-01"))
    years = calendar_years(dates)
    assert np.asarray(years.days).tolist() == [366.0, 365.0]
    assert np.asarray(years.index)[[0, 183, 184, -1]].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="2005"):
        calendar_years(np.array(["2004-12-31", "2006-01-01"], dtype="datetime64[D]"))


def test_annual_means_of_whole_years_are_the_mean_annual_sums(de_hai):
    from differland import simulate

    forcing, years = de_hai
    params, config = default_parameters("site"), ModelConfig()
    means = annual_means(params, forcing, config, years)
    outputs = simulate(params, forcing, config).outputs
    for name in ("gpp", "nee", "et"):
        expected = float(jnp.sum(getattr(outputs, name))) / 2.0
        assert float(means[name]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["canopy_efficiency", "autotrophic_respiration_fraction",
                                  "leaf_fall_day"])
def test_local_sensitivities_match_central_differences(de_hai, local_float32, name):
    """Float32 forward-mode derivatives against float64 central differences, normalised as
    :func:`measure` says (a log-scaled, a linear and a date parameter)."""
    forcing, years = de_hai
    params, config = default_parameters("site"), ModelConfig()
    spec, value = SPECS[name], float(params[name])
    step = 1e-4 * (spec.upper - spec.lower)
    above = annual_means(params.replace(**{name: value + step}), forcing, config, years)
    below = annual_means(params.replace(**{name: value - step}), forcing, config, years)
    centre = annual_means(params, forcing, config, years)
    scale = value if measure(name) == ELASTICITY else spec.upper - spec.lower
    for output in ("gpp", "nee", "et"):
        difference = float(above[output] - below[output]) / (2 * step)
        expected = difference * scale / abs(float(centre[output]))
        found = local_float32.normalised[output][name]
        largest = max(abs(s) for s in local_float32.normalised[output].values())
        assert found == pytest.approx(expected, rel=2e-3, abs=1e-4 * largest), output


def test_dates_get_the_scaled_measure_and_positive_parameters_the_elasticity():
    assert measure("leaf_fall_day") == SCALED and measure("labile_release_day") == SCALED
    assert measure("canopy_efficiency") == ELASTICITY
    assert measure("leaf_lifespan") == ELASTICITY


def test_box_coordinates_follow_the_registry_transform():
    """The box's midpoint is where the registry's logistic map puts an unconstrained 0, and
    the coordinates invert."""
    names = ModelConfig().parameter_names()
    problem = sobol_problem(names)
    middle = jnp.asarray([0.5 * (a + b) for a, b in problem["bounds"]])
    centre = from_coordinates(middle, names)
    zeros = constrain(ParameterSet({n: jnp.asarray(0.0) for n in names}))
    for name in names:
        assert float(centre[name]) == pytest.approx(float(zeros[name]), rel=1e-9), name
    physical = ParameterSet(centre)
    assert np.allclose(to_coordinates(physical, names), middle, rtol=1e-12, atol=1e-12)
    assert problem["bounds"][names.index("som_respiration_rate")] == pytest.approx(
        [math.log(1e-7), math.log(1e-3)])
    assert problem["bounds"][names.index("canopy_efficiency")] == [5.0, 50.0]  # linear


def test_coordinate_derivatives_span_the_box():
    """g = dy/dp x dp/dx x (b - a): for a log-scaled p, dy/dp x p x ln(upper / lower)."""
    params = default_parameters("site")
    local = LocalSensitivities(
        values={"y": 2.0}, derivatives={"y": {"som_respiration_rate": 3.0,
                                              "autotrophic_respiration_fraction": -1.0}},
        normalised={}, measures={})
    widths = coordinate_derivatives(local, params)["y"]
    rate = float(params["som_respiration_rate"])
    assert widths["som_respiration_rate"] == pytest.approx(3.0 * rate * math.log(1e4))
    assert widths["autotrophic_respiration_fraction"] == pytest.approx(-1.0 * 0.6)
    shares = linear_sobol_indices(local, params)["y"]
    assert sum(shares.values()) == pytest.approx(1.0)


def _ishigami(x, a=7.0, b=0.1):
    return {"y": jnp.sin(x[:, 0]) + a * jnp.sin(x[:, 1]) ** 2
            + b * x[:, 2] ** 4 * jnp.sin(x[:, 0])}


def test_sobol_indices_of_the_ishigami_function():
    """Closed form (Ishigami & Homma 1990; Saltelli et al. 2008, sect. 4.9) for a = 7,
    b = 0.1 on [-pi, pi]^3."""
    a, b, pi = 7.0, 0.1, math.pi
    v1 = 0.5 * (1 + b * pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * pi**8 * (1 / 18 - 1 / 50)
    variance = v1 + v2 + v13
    problem = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[-pi, pi]] * 3}
    found = sobol_indices(_ishigami, problem, 2**13, batch_size=4096, seed=3)["y"]
    assert found.first_order == pytest.approx([v1 / variance, v2 / variance, 0.0], abs=0.03)
    assert found.total_order == pytest.approx(
        [(v1 + v13) / variance, v2 / variance, v13 / variance], abs=0.03)
    assert found.variance == pytest.approx(variance, rel=0.03)
    assert found.ranked()[0][0] == "x1"


def test_sobol_indices_of_an_additive_function_over_uneven_batches():
    """y = sum a_i x_i with x_i uniform of width w_i: S1 = ST = (a_i w_i)^2 / sum_j (a_j w_j)^2;
    the batch size does not divide the sample, so the last batch is padded."""
    weights = np.array([1.0, 2.0, -3.0])
    bounds = [[0.0, 1.0], [-1.0, 1.0], [2.0, 2.5]]
    widths = np.array([b - a for a, b in bounds])
    truth = (weights * widths) ** 2 / np.sum((weights * widths) ** 2)
    problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": bounds}
    calls = []

    def linear(x):
        calls.append(x.shape)
        return {"y": jnp.asarray(x) @ jnp.asarray(weights)}

    found = sobol_indices(linear, problem, 2**10, batch_size=1000, seed=1)["y"]
    assert set(calls) == {(1000, 3)} and len(calls) == 6  # 5120 rows
    assert found.first_order == pytest.approx(truth, abs=0.02)
    assert found.total_order == pytest.approx(truth, abs=0.02)
    assert interaction_share(found) == pytest.approx(0.0, abs=0.03)


def test_sobol_checks_its_inputs():
    problem = {"num_vars": 2, "names": ["a", "b"], "bounds": [[0.0, 1.0]] * 2}
    with pytest.raises(ValueError, match="power of 2"):
        sobol_sample(problem, 100)
    sample = sobol_sample(problem, 8)
    values = evaluate_in_batches(lambda x: {"y": x[:, 0] / x[:, 1]}, sample, 16)["y"]
    values[3] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        sobol_analysis(problem, {"y": values})


def test_local_and_global_rankings_at_de_hai(de_hai, local_float32):
    """The top local parameter of GPP (the leaf carbon mass per area, which turns foliar
    carbon into LAI) is among the five largest total Sobol indices; for NEE the largest total
    index belongs to a parameter of soil respiration (SOM pool x rate, a product of two
    log-uniform factors whose upper corner dominates the variance), which is not among the
    five largest local elasticities: at the box's centre that flux is negligible."""
    forcing, years = de_hai
    forcing, years = as_float32(forcing), as_float32(years)
    params = as_float32(default_parameters("site"))
    config = ModelConfig()
    names = config.parameter_names()
    function = coordinate_function(params, forcing, config, years, names)
    indices = sobol_indices(function, sobol_problem(names), 256, batch_size=1024, seed=0)

    top_local_gpp = ranked(local_float32.normalised["gpp"])[0][0]
    assert top_local_gpp == "leaf_carbon_mass_per_area"
    assert top_local_gpp in [row[0] for row in indices["gpp"].ranked()[:5]]

    top_global_nee = indices["nee"].ranked()[0][0]
    assert top_global_nee in {"som_respiration_rate", "initial_som_carbon"}
    assert top_global_nee not in [name for name, _ in ranked(local_float32.normalised["nee"])[:5]]
    linear = linear_sobol_indices(local_float32, params)["nee"]
    assert linear[top_global_nee] < 0.01
