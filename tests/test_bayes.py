"""Bayesian site calibration: priors, the log density against the gradient loss, NUTS runs,
resumption after the warmup, and refused configurations."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from differland.calibrate import bayes
from differland.calibrate.site import (
    CalibrationConfigError,
    free_parameter_names,
    make_site_problem,
)
from differland.cli import main
from differland.io import read_site_driver
from differland.likelihood import gaussian_misfit
from differland.observations import predict
from differland.params import SPECS, ParameterSet, constrain, unconstrain
from differland.posterior_workflows import (
    _arviz,
    correlated_pairs,
    posterior_site,
    site_posterior_problem,
)

REPO = Path(__file__).resolve().parents[1]


def site_problem(fluxsites_dir, config: bayes.PosteriorConfig, n_steps: int):
    """The posterior's problem on the first ``n_steps`` days of US-Var."""
    driver = read_site_driver(fluxsites_dir / "US-Var.nc")
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, config.calibration)
    return problem.window(n_steps)


@pytest.fixture(scope="module")
def default_problem(fluxsites_dir):
    config = bayes.PosteriorConfig()
    return config, site_problem(fluxsites_dir, config, 365)


def test_sampler_coordinates_are_the_registry_unconstrained_values():
    names = ("litter_to_som_rate", "autotrophic_respiration_fraction", "leaf_lifespan")
    config = bayes.posterior_config_from_dict({"parameter_scales": {"leaf_lifespan":
                                                                    "log_excess"}})
    z = jnp.asarray([-2.5, 0.3, 1.7])
    for name, value in zip(names, z, strict=True):
        box = bayes.prior_box(config.calibration, name, bayes.PriorSpec())
        physical = bayes.biject_to(box)(value)
        expected = constrain(ParameterSet({name: value}),
                             scales=dict(config.calibration.parameter_scales))[name]
        np.testing.assert_allclose(physical, expected, rtol=1e-12)
        back = unconstrain(ParameterSet({name: physical}),
                           scales=dict(config.calibration.parameter_scales))[name]
        np.testing.assert_allclose(bayes.biject_to(box).inv(physical), back, rtol=1e-10)
    assert bayes.prior_box(config.calibration, "leaf_lifespan", bayes.PriorSpec()).scale == \
        "log_excess"


def test_prior_predictive_draws_are_finite_and_inside_the_bounds(default_problem):
    config, problem = default_problem
    config = dataclasses.replace(config, priors=(
        ("canopy_efficiency", bayes.PriorSpec("normal", loc=20.0, scale=5.0)),
        ("litter_respiration_rate", bayes.PriorSpec("lognormal", median=2e-3, scale=0.5)),
        ("leaf_lifespan", bayes.PriorSpec("uniform", lower=1.05, upper=1.5))))
    draws = bayes.predictive_draws(problem, config, jax.random.PRNGKey(3), num_samples=12,
                                   model_predictions=True)
    for name in free_parameter_names(problem.config):
        values = draws[name]
        assert values.shape == (12,)
        assert np.all((values >= SPECS[name].lower) & (values <= SPECS[name].upper)), name
        assert np.unique(values).size > 1, name
    assert np.all((draws["leaf_lifespan"] >= 1.05) & (draws["leaf_lifespan"] <= 1.5))
    for name in bayes.likelihood_streams(problem):
        for site in (f"obs_{name}", f"prediction_{name}"):
            assert draws[site].shape == (12, 365)
            assert np.all(np.isfinite(draws[site])), site


def test_log_density_is_minus_the_observation_count_times_the_gaussian_misfit(
        default_problem):
    """log p(z | y) = -sum_s (n_s / w_s) L_s - sum_s sum_t ln sigma_st - (N / 2) ln(2 pi)
    - (constraint terms of the loss) + sum_i [ln sigmoid(z_i) + ln sigmoid(-z_i)], with L_s
    the stream's term of the gradient loss (gaussian_misfit with normalise=True: w_s x 0.5 x
    the mean over the n_s observed calibration steps of the squared standardised residual)
    and the last sum the uniform prior of the position in each box, in the unconstrained
    coordinates NUTS samples."""
    config, problem = default_problem
    theta = jax.tree.map(lambda x: x[0], problem.initial_guesses(1, 11))
    density = float(jax.jit(lambda t: bayes.log_density(problem, config, t))(theta))

    params, trajectory = problem.run(theta)
    terms = problem.loss_terms(theta, problem.calibration_steps)
    expected, count = 0.0, 0
    for name, stream in bayes.likelihood_streams(problem).items():
        observed = np.asarray(stream.mask) > 0
        n = int(observed.sum())
        misfit = float(gaussian_misfit(predict(name, trajectory, params, problem.forcing),
                                       stream, normalise=True))
        assert misfit == pytest.approx(float(terms[name]), rel=1e-12)
        expected -= n / float(stream.weight) * misfit
        expected -= float(np.sum(np.log(np.asarray(stream.sigma)[observed])))
        count += n
    expected -= 0.5 * count * math.log(2.0 * math.pi)
    expected -= sum(float(value) for key, value in terms.items() if key not in problem.streams)
    z = theta["params"]
    expected += sum(float(jax.nn.log_sigmoid(z[name]) + jax.nn.log_sigmoid(-z[name]))
                    for name in z.names)
    assert count > 1000
    np.testing.assert_allclose(density, expected, rtol=1e-11)


def test_potentials_at_many_points_are_minus_the_log_density_at_each(default_problem):
    config, problem = default_problem
    guesses = problem.initial_guesses(3, 4)
    points = bayes.sampler_coordinates(problem, config, guesses)
    energy = bayes.potentials(problem, config, points, batch=2)
    assert energy.shape == (3,)
    for index in range(3):
        theta = jax.tree.map(lambda x, i=index: x[i], guesses)
        np.testing.assert_allclose(energy[index], -float(bayes.log_density(problem, config,
                                                                           theta)),
                                   rtol=1e-10)


def load_twin_script():
    spec = importlib.util.spec_from_file_location("posterior_twin",
                                                  REPO / "calibration" / "posterior_twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TWIN_SMOKE = {"chains": 2, "warmup": 30, "samples": 20, "max_tree_depth": 6}
"""Sampler settings of the twin smoke test, shared with the resumption test (whose compiled
sampler it then reuses: same configuration and record length)."""


def test_resume_after_the_warmup_draws_what_the_uninterrupted_run_draws(fluxsites_dir,
                                                                        tmp_path):
    config = load_twin_script().twin_config(**TWIN_SMOKE, seed=5)
    driver = read_site_driver(short_driver(fluxsites_dir / "US-Var.nc", tmp_path / "US-Var.nc"))
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, config.calibration).training_problem()
    free = free_parameter_names(config.calibration)
    starts = {name: np.asarray([-0.3, 0.3]) for name in free}

    def run(path, **kwargs):
        return bayes.run_nuts(problem, config, starts, state_path=path, fingerprint="test",
                              progress=False, **kwargs)

    whole = run(tmp_path / "whole.npz")
    assert run(tmp_path / "parts.npz", stop_after_warmup=True) is None
    resumed = run(tmp_path / "parts.npz")
    assert not whole.resumed and resumed.resumed
    assert whole.samples["canopy_efficiency"].shape == (2, 20)
    for name in free:
        np.testing.assert_array_equal(resumed.samples[name], whole.samples[name])
    for name, values in whole.fields.items():
        np.testing.assert_array_equal(resumed.fields[name], values)
    thinned = dataclasses.replace(config, nuts=dataclasses.replace(config.nuts, thin=3))
    kept = bayes.run_nuts(problem, thinned, starts, state_path=tmp_path / "parts.npz",
                          fingerprint="test", progress=False)
    np.testing.assert_array_equal(kept.samples["canopy_efficiency"],
                                  whole.samples["canopy_efficiency"][:, 2::3])
    other = dataclasses.replace(config, nuts=dataclasses.replace(config.nuts, seed=6))
    with pytest.raises(bayes.CheckpointMismatchError):
        bayes.run_nuts(problem, other, starts, state_path=tmp_path / "parts.npz",
                       fingerprint="test", progress=False)


def test_calibrated_coverage_spread_convolves_the_sites_and_is_nominal_on_average():
    twin = load_twin_script()
    draws = {name: np.random.default_rng(index).normal(size=(4, 500))
             for index, name in enumerate("abc")}
    distribution = twin.calibrated_hit_distribution(draws, ["a", "b", "c"], seed=1)
    for level, expected in (("50", 0.5), ("90", 0.9)):
        probabilities = np.asarray(distribution[level])
        assert probabilities.shape == (4,) and probabilities.sum() == pytest.approx(1.0)
        # independent parameters: binomial(3, level)
        assert np.dot(np.arange(4), probabilities) / 3 == pytest.approx(expected, abs=0.02)
    one = {"calibrated_hits": {"50": [0.5, 0.5], "90": [0.1, 0.9]},
           "hits": {"a": {"50": False, "90": True}}}
    two = {"calibrated_hits": {"50": [0.25, 0.5, 0.25], "90": [0.0, 0.2, 0.8]},
           "hits": {"b": {"50": False, "90": False}, "c": {"50": True, "90": True}}}
    spread = twin.calibrated_spread([one, two])
    # hits of 3 pairs at 90 %: [0.1, 0.9] * [0, 0.2, 0.8] = [0, 0.02, 0.26, 0.72]
    assert spread["90"]["mean"] == pytest.approx((0.02 + 2 * 0.26 + 3 * 0.72) / 3)
    assert spread["90"]["p_at_most_observed"] == pytest.approx(0.02 + 0.26)
    assert spread["50"]["p_at_most_observed"] == pytest.approx(0.125 + 0.375)


def test_twin_smoke_run_writes_truth_identified_parameters_and_coverage(fluxsites_dir,
                                                                        tmp_path, capsys):
    twin = load_twin_script()
    out = tmp_path / "twin"
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TWIN_SMOKE.items()]
    status = twin.main(["--sites", "1", "--seed", "3", "--out", str(out), "--sites-dir",
                        str(fluxsites_dir), "--days", "730", "--no-progress", *options])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.splitlines()[-1].startswith(f"wrote {out}: ")
    (site,) = [path for path in out.iterdir() if path.name.startswith("twin00-")]
    truth = json.loads((site / "truth.json").read_text())
    assert sorted(truth) == sorted(twin.PARAMETERS)
    config = twin.twin_config(**TWIN_SMOKE)
    for name, value in truth.items():
        prior = config.prior_of(name)
        assert prior.lower <= value <= prior.upper, name
    identified = json.loads((site / "identified.json").read_text())
    assert set(identified["parameters"]) <= set(truth)
    assert set(identified["contraction"]) == set(truth)
    posterior = xr.load_dataset(site / "posterior.nc", group="posterior")
    assert sorted(posterior.data_vars) == sorted(twin.PARAMETERS)
    assert posterior["canopy_efficiency"].shape == (2, 20)
    idata = _arviz().from_netcdf(site / "posterior.nc")
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.groups())
    diagnostics = json.loads((site / "diagnostics.json").read_text())
    r_hat = _arviz().rhat(idata.posterior, method="rank")
    np.testing.assert_allclose(diagnostics["parameters"]["canopy_efficiency"]["r_hat"],
                               float(r_hat["canopy_efficiency"]), rtol=1e-12)
    coverage = json.loads((out / "coverage.json").read_text())
    summary = coverage["summary"]
    assert summary["parameters"]["pairs"] == len(identified["parameters"])
    for periods in summary["predictive"].values():
        for values in periods.values():
            assert 0.0 <= values["coverage_50"] <= values["coverage_90"] <= 1.0
    assert "| twin00-" in (out / "coverage.md").read_text()
    (record,) = coverage["sites"]
    assert 0.0 <= record["density_rank"] <= 1.0
    assert summary["density_rank"]["mean"] == record["density_rank"]
    # the rank counts the draws of higher density than the given values: none for the draw
    # of highest density, all the others for the draw of lowest density
    draws = {name: posterior[name].values for name in twin.PARAMETERS}
    driver = out / "drivers" / f"{site.name}.nc"
    _, _, problem = site_posterior_problem(driver, config)
    problem = problem.training_problem()
    bijections = bayes.site_bijections(problem, config)
    energy = bayes.potentials(problem, config, {
        name: np.asarray(bijections[name].inv(jnp.asarray(np.ravel(values))))
        for name, values in draws.items()})
    for index, expected in ((np.argmin(energy), 0.0), (np.argmax(energy), 39 / 40)):
        planted = {name: float(np.ravel(values)[index]) for name, values in draws.items()}
        assert twin.density_rank(driver, config, draws, planted) == pytest.approx(expected)
    check_run_directory(site, chains=2, draws=20, steps=730, error_scales=False)


def short_driver(source, path, n_steps: int = 730):
    """The first ``n_steps`` days of a driver (no sites.csv beside it: the calibration period
    is the first half of the years)."""
    with xr.open_dataset(source, decode_times=False) as dataset:
        dataset.isel(time=slice(0, n_steps)).load().to_netcdf(path)
    return path


SMOKE_CONFIG = {
    "free_parameters": ["canopy_efficiency", "autotrophic_respiration_fraction",
                        "leaf_carbon_mass_per_area", "som_respiration_rate"],
    "streams": ["gpp", "reco", "lai"],
    "priors": {"canopy_efficiency": {"distribution": "normal", "loc": 20.0, "scale": 8.0}},
    "structural_error": True,
    "nuts": {"chains": 2, "warmup": 40, "samples": 30, "max_tree_depth": 5,
             "init_iterations": 30, "init_starts": 3}}
"""A small posterior: every feature of the command on a short record and short chains."""


@pytest.mark.slow
def test_posterior_run_through_the_command_line_resumes_after_the_warmup(fluxsites_dir,
                                                                        tmp_path, capsys):
    driver = short_driver(fluxsites_dir / "US-Var.nc", tmp_path / "US-Var.nc")
    config = tmp_path / "posterior.json"
    config.write_text(json.dumps(SMOKE_CONFIG))
    out = tmp_path / "run"
    # a run interrupted after its warmup, then finished by the command
    settings = bayes.posterior_config_from_dict(SMOKE_CONFIG)
    assert posterior_site(driver, out, settings, progress=False, stop_after_warmup=True) == {}
    assert not (out / "diagnostics.json").exists()
    status = main(["posterior", "site", "--driver", str(driver), "--out", str(out),
                   "--config", str(config), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith(f"wrote {out}: US-Var ")
    check_run_directory(out, chains=2, draws=30, steps=730)
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert diagnostics["sampler"]["resumed_after_warmup"]
    # a finished run is not replaced without --overwrite
    status = main(["posterior", "site", "--driver", str(driver), "--out", str(out),
                   "--no-progress"])
    assert status == 2
    assert "finished run" in capsys.readouterr().err


def check_run_directory(out, chains: int, draws: int, steps: int,
                        error_scales: bool = True) -> dict:
    """Check the files of a finished posterior run; returns its diagnostics."""
    for name in ("config.json", "posterior.nc", "predictive.nc", "diagnostics.json",
                 "diagnostics.md", "figures/trace.png", "figures/rank.png", "figures/pair.png",
                 "figures/predictive.png"):
        assert (out / name).is_file(), name
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert isinstance(diagnostics["converged"], bool)
    assert diagnostics["converged"] == (not diagnostics["reasons"])
    assert diagnostics["sampler"]["chains"] == chains
    assert ("converged: yes" if diagnostics["converged"] else "converged: no") in \
        (out / "diagnostics.md").read_text()
    for name, values in diagnostics["parameters"].items():
        for key in ("r_hat", "ess_bulk", "ess_tail", "mean", "sd"):
            assert isinstance(values[key], float), (name, key)
    for values in diagnostics["coverage"].values():
        for period in ("calibration", "test"):
            if values[period]["observed_steps"]:
                assert 0.0 <= values[period]["coverage_50"] <= values[period]["coverage_90"] \
                    <= 1.0
    posterior = xr.load_dataset(out / "posterior.nc", group="posterior")
    assert posterior["canopy_efficiency"].shape == (chains, draws)
    assert posterior["canopy_efficiency"].attrs["units"] == SPECS["canopy_efficiency"].units
    assert ("error_scale_gpp" in posterior) == error_scales
    assert not any(name.startswith("obs_") for name in posterior.data_vars)
    stats = xr.load_dataset(out / "posterior.nc", group="sample_stats")
    assert stats["diverging"].shape == (chains, draws)
    assert int(stats["diverging"].sum()) == diagnostics["divergences"]
    observed = xr.load_dataset(out / "posterior.nc", group="observed_data")
    assert observed["gpp"].sizes["time"] == steps
    bands = xr.load_dataset(out / "predictive.nc")
    assert bands["gpp"].dims == ("quantile", "time") and bands.sizes["time"] == steps
    assert np.all(np.diff(bands["gpp"].values, axis=0) >= 0)
    return diagnostics


BAD_PRIORS = {
    "unknown parameter": ({"no_such_rate": {"distribution": "uniform"}},
                          "priors.no_such_rate"),
    "not free": ({"initial_water": {"distribution": "uniform"}}, "priors.initial_water"),
    "unknown distribution": ({"canopy_efficiency": {"distribution": "cauchy", "loc": 1.0}},
                             "priors.canopy_efficiency.distribution"),
    "bounds outside": ({"canopy_efficiency": {"distribution": "uniform", "lower": 1.0}},
                       "priors.canopy_efficiency.lower"),
    "scale not positive": ({"canopy_efficiency": {"distribution": "normal", "loc": 20.0,
                                                  "scale": 0.0}},
                           "priors.canopy_efficiency.scale"),
    "missing number": ({"leaf_lifespan": {"distribution": "lognormal", "median": 2.0}},
                       "priors.leaf_lifespan"),
    "sampled network": ("sample", "network"),
}


@pytest.mark.parametrize("case", sorted(BAD_PRIORS))
def test_bad_prior_is_one_line_with_exit_status_2_and_nothing_written(case, fluxsites_dir,
                                                                      tmp_path, capsys):
    value, key = BAD_PRIORS[case]
    config = tmp_path / "posterior.json"
    config.write_text(json.dumps({"network": value} if key == "network" else
                                 {"priors": value}))
    out = tmp_path / "run"
    status = main(["posterior", "site", "--driver", str(fluxsites_dir / "US-Var.nc"),
                   "--out", str(out), "--config", str(config), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("differland: error:"), captured.err
    assert key in lines[0]
    assert not out.exists()


def test_refused_settings_name_their_key(tmp_path, capsys, fluxsites_dir):
    with pytest.raises(CalibrationConfigError, match="nuts.chains"):
        bayes.posterior_config_from_dict({"nuts": {"chains": 0}})
    with pytest.raises(CalibrationConfigError, match="unknown key"):
        bayes.posterior_config_from_dict({"prior": {}})
    with pytest.raises(CalibrationConfigError, match="objective"):
        bayes.posterior_config_from_dict({"objective": "nnse"})
    status = main(["posterior", "site", "--driver", str(fluxsites_dir / "US-Var.nc"),
                   "--out", str(tmp_path / "run"), "--samples", "0"])
    assert status == 2
    assert "--samples" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_correlated_pairs_are_measured_within_chains():
    """Two chains resting in different places, with independent draws within each, show no
    correlation; a ridge within the chains does."""
    rng = np.random.default_rng(0)
    offset = np.array([[0.0], [10.0]])  # (chains, 1)
    samples = {"a": offset + rng.normal(size=(2, 500)),
               "b": offset + rng.normal(size=(2, 500))}
    samples["c"] = samples["a"] + 0.1 * rng.normal(size=(2, 500))
    pairs = {(x, y): r for x, y, r in correlated_pairs(samples, ["a", "b", "c"], count=3)}
    assert abs(pairs[("a", "b")]) < 0.1
    assert pairs[("a", "c")] > 0.99


def test_divergences_gathered_at_one_end_of_a_marginal_are_named():
    generator = np.random.default_rng(0)
    samples = {"a": generator.normal(size=(4, 250)), "b": generator.normal(size=(4, 250))}
    diverging = np.zeros((4, 250), bool)
    low_a = np.argsort(samples["a"].ravel())[:40]
    diverging.ravel()[low_a[::4]] = True  # 10 draws among the lowest 40 of a
    positions = bayes.divergence_positions(samples, diverging)
    assert positions["a"] < 0.05
    assert abs(positions["b"] - 0.5) < 0.3
    assert bayes.divergence_gathering(positions, 10) == ["low a"]
    assert bayes.divergence_gathering(positions, 4) == []
    assert bayes.divergence_positions(samples, np.zeros((4, 250), bool)) == {}
    # the mid-rank of one value among [0, 1, 2, 3]: 2 of 4 below it
    assert bayes.divergence_positions({"c": np.array([[0.0, 1.0, 2.5, 2.0, 3.0]])},
                                      np.array([[False, False, True, False, False]])) == \
        {"c": 0.75}
