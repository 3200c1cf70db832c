"""Variational posteriors: the density SVI fits is the NUTS posterior's, the guides' log
densities, Pareto k, exact resumption, the amortising network, and the ``differland
posterior sites|spatial`` commands."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from differland.calibrate import bayes, variational
from differland.calibrate.site import make_site_problem
from differland.cli import main
from differland.io import read_site_driver, read_sites_rows
from differland.spatial.training import uniform_problems
from differland.variational_workflows import pareto_k

QUICK = {"nuts": {"init_starts": 2, "init_iterations": 20}}
"""Initialising fits that take seconds."""


@pytest.fixture(scope="module")
def two_sites(fluxsites_dir):
    """The default posterior's problems on the first 365 days of two sites, padded alike."""
    config = bayes.posterior_config_from_dict(QUICK)
    problems = []
    for name in ("US-Var", "AU-How"):
        driver = read_site_driver(fluxsites_dir / f"{name}.nc")
        problems.append(make_site_problem(driver.forcing, driver.observations, driver.dates,
                                          driver.calibration_end, config.calibration
                                          ).window(365))
    problems = uniform_problems(problems, config.calibration)
    return config, problems


def test_the_fitted_density_is_the_site_posterior(two_sites):
    config, problems = two_sites
    problem = problems[1]
    names = bayes.latent_sites(problem, config.structural_error)
    z = jnp.linspace(-1.5, 1.5, len(names))
    expected = -bayes.potential_function(problem, config)(
        {name: z[j] for j, name in enumerate(names)})
    got = variational.site_log_density(config, names, z, bayes.problem_data(problem))
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-10)
    batch = variational.log_densities(problem, config, np.stack([np.asarray(z)] * 3), batch=2)
    np.testing.assert_allclose(batch, float(expected), rtol=1e-6)


def test_pareto_k_tells_a_good_guide_from_a_narrow_one():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=2000)
    log_q = -0.5 * draws**2
    assert pareto_k(log_q + 3.0, log_q) == 0.0  # the guide is the posterior
    assert pareto_k(-0.5 * (draws / 1.1) ** 2, log_q) < 0.5  # a little wider
    assert pareto_k(-0.5 * (draws / 4.0) ** 2, log_q) > 0.7  # 4 times wider
    assert pareto_k(np.full(2000, np.nan), log_q) == float("inf")


def test_site_fits_lower_the_loss_resume_exactly_and_know_their_density(two_sites, tmp_path):
    config, problems = two_sites
    settings = variational.SviSettings(guide="normal", steps=200, checkpoint_every=100,
                                       draws=40, learning_rate=0.02, init="scale")
    starts, covariances = variational.site_starts(problems, config, progress=False)
    assert covariances.shape == (2, starts.shape[1], starts.shape[1])
    whole = variational.fit_sites(problems, config, settings, starts, covariances,
                                  progress=False)
    assert whole.finished and whole.draws.shape == (2, 40, starts.shape[1])
    assert np.all(np.isfinite(whole.draws)) and np.all(np.isfinite(whole.log_q))
    assert np.all(np.median(whole.loss[-50:], axis=0) < np.median(whole.loss[:50], axis=0))
    # the guide's log density at its draws is that of its normals (it feeds Pareto k)
    for site in range(2):
        loc = whole.params["z_auto_loc"][site]
        scale = whole.params["z_auto_scale"][site]
        draws = whole.draws[site]
        expected = np.sum(-0.5 * ((draws - loc) / scale) ** 2 - np.log(scale)
                          - 0.5 * np.log(2 * np.pi), axis=1)
        np.testing.assert_allclose(whole.log_q[site], expected, rtol=1e-8)
    # killed after the first block, then resumed: the same draws as uninterrupted
    folder = tmp_path / "svi"
    cut = variational.fit_sites(problems, config, settings, starts, covariances,
                                checkpoint_dir=folder, fingerprint="run", progress=False,
                                stop_after=1)
    assert not cut.finished
    resumed = variational.fit_sites(problems, config, settings, starts, covariances,
                                    checkpoint_dir=folder, fingerprint="run", progress=False)
    assert resumed.resumed_from == 100
    np.testing.assert_array_equal(resumed.draws, whole.draws)
    np.testing.assert_array_equal(resumed.loss, whole.loss)


@pytest.mark.parametrize("guide, rank", [("normal", 0), ("lowrank", 6), ("lowrank", 2),
                                         ("multivariate", 0)])
def test_guides_start_at_the_laplace_covariance(guide, rank):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    covariance = a @ a.T / 6 + 0.1 * np.eye(6)
    raw = {"normal": {"z_auto_loc": np.zeros(6), "z_auto_scale": np.zeros(6)},
           "lowrank": {"auto_loc": np.zeros(6), "auto_scale": np.zeros(6),
                       "auto_cov_factor": np.zeros((6, rank))},
           "multivariate": {"auto_loc": np.zeros(6), "auto_scale_tril": np.eye(6)}}[guide]
    params = variational.initial_guide_params(guide, raw, np.arange(6.0), covariance, rank)
    constrain = lambda c, x: np.asarray(biject_to(c)(jnp.asarray(x)))  # noqa: E731
    if guide == "normal":
        np.testing.assert_allclose(params["z_auto_loc"], np.arange(6.0))
        scale = constrain(AutoNormal.scale_constraint, params["z_auto_scale"])
        np.testing.assert_allclose(scale**2, np.diag(covariance), rtol=1e-6)
        return
    np.testing.assert_allclose(params["auto_loc"], np.arange(6.0))
    if guide == "multivariate":
        tril = constrain(AutoMultivariateNormal.scale_tril_constraint,
                         params["auto_scale_tril"])
        np.testing.assert_allclose(tril @ tril.T, covariance, atol=1e-6)
        return
    scale = constrain(AutoNormal.scale_constraint, params["auto_scale"])
    factor = params["auto_cov_factor"] * scale[:, None]
    approximation = factor @ factor.T + np.diag(scale**2)
    np.testing.assert_allclose(np.diag(approximation), np.diag(covariance),
                               rtol=0.3 if rank == 6 else 0.5)
    error = np.abs(approximation - covariance).max() / np.abs(covariance).max()
    assert error < (0.1 if rank == 6 else 0.15)


@pytest.mark.slow
def test_the_network_learns_per_place_posteriors(two_sites):
    config, problems = two_sites
    settings = variational.SviSettings(steps=200, draws=25, hidden=8, depth=1,
                                       learning_rate=0.01)
    inputs = np.asarray([[0.5, -1.0, 0.0], [-0.5, 1.0, 1.0]])
    (result,) = variational.fit_network(problems, inputs, config, settings, progress=False)
    count = len(result.names)
    assert result.draws.shape == (2, 25, count) and np.all(np.isfinite(result.log_q))
    assert np.mean(result.loss[-40:]) < np.mean(result.loss[:40])
    guide = variational.network_svi(config, result.names, settings, 3, 0).guide
    loc, scale = variational.network_normals(guide, result.params, np.zeros((4, 3)))
    assert loc.shape == scale.shape == (4, count) and np.all(scale > 0)
    # the two places get different posteriors
    fitted_loc, _ = variational.network_normals(guide, result.params, inputs)
    assert np.max(np.abs(fitted_loc[0] - fitted_loc[1])) > 1e-3


def test_hybrid_configurations_are_refused():
    config = bayes.posterior_config_from_dict({"water_stress": "neural"})
    with pytest.raises(bayes.CalibrationConfigError, match="neural"):
        variational.check_supported(config)


# --- the commands ------------------------------------------------------------------------------


def _folder(tmp_path, fluxsites_dir, sites):
    folder = tmp_path / "sites"
    folder.mkdir(exist_ok=True)
    rows = [row for row in read_sites_rows(fluxsites_dir / "sites.csv")
            if row["SITE_ID"] in sites]
    for row in rows:
        (folder / f"{row['SITE_ID']}.nc").symlink_to(fluxsites_dir / f"{row['SITE_ID']}.nc")
    _write_csv(folder / "sites.csv", rows)
    return folder, rows


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _one_line_error(capsys, *args) -> str:
    capsys.readouterr()
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("config, option, expected", [
    ({"svi": {"guide": "flow"}}, (), "guide must be one of normal, lowrank, multivariate"),
    ({"svi": {"stepz": 3}}, (), "stepz"),
    ({"svi": {"checkpoint_every": 150}}, (), "multiple of 100"),
    ({}, ("--steps", "0"), "--steps"),
    ({}, ("--guide", "full"), "--guide"),
    ({"priors": {"not_a_parameter": {}}}, (), "priors.not_a_parameter"),
])
def test_bad_settings_are_one_line(config, option, expected, tmp_path, fluxsites_dir, capsys):
    folder, _ = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "run"
    err = _one_line_error(capsys, "posterior", "sites", "--sites-dir", folder, "--out", out,
                          "--config", path, "--no-progress", *option)
    assert expected in err
    assert not out.exists()


def test_files_in_the_sites_folders_are_not_replaced(tmp_path, fluxsites_dir, capsys):
    folder, _ = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How"))
    out = tmp_path / "run"
    (out / "US-Var").mkdir(parents=True)
    mine = out / "US-Var" / "posterior.nc"
    mine.write_text("mine")
    err = _one_line_error(capsys, "posterior", "sites", "--sites-dir", folder, "--out", out,
                          "--overwrite", "--no-progress")
    assert "posterior.nc" in err and "did not write" in err
    assert mine.read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["US-Var"]


def test_spatial_posterior_command(tmp_path, fluxsites_dir, capsys):
    folder, rows = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How", "US-SRG"))
    train = tmp_path / "train.csv"
    _write_csv(train, [row for row in rows if row["SITE_ID"] != "US-SRG"])
    held_out = tmp_path / "held_out.csv"
    _write_csv(held_out, [row for row in rows if row["SITE_ID"] == "US-SRG"])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**QUICK, "svi": {"hidden": 8, "depth": 1,
                                                   "checkpoint_every": 100}}))
    out = tmp_path / "run"
    args = ["posterior", "spatial", "--sites-dir", str(folder), "--sites-csv", str(train),
            "--predict-csv", str(held_out), "--out", str(out), "--config", str(config),
            "--steps", "100", "--draws", "30", "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "svi.json").read_text())
    assert set(record["sites"]) == {"US-Var", "AU-How", "US-SRG"}
    assert record["sites"]["US-SRG"]["role"] == "predicted"
    for name in ("config.json", "summary.csv", "coverage.csv", "predictors.json",
                 "figures/elbo.png", "network/seed_0.npz", "US-Var/posterior.nc",
                 "AU-How/predictive.nc", "predicted/US-SRG/posterior.nc",
                 "predicted/US-SRG/figures/predictive.png"):
        assert (out / name).exists(), name
    with xr.open_dataset(out / "US-Var" / "posterior.nc", group="posterior") as posterior:
        assert posterior["canopy_efficiency"].shape == (1, 30)
        assert posterior["canopy_efficiency"].attrs["units"]
    with open(out / "summary.csv", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    assert {row["role"] for row in summary} == {"fitted", "predicted"}
    assert all(float(row["q05"]) <= float(row["q50"]) <= float(row["q95"]) for row in summary)
    err = _one_line_error(capsys, *args)
    assert "finished run" in err


@pytest.mark.slow
def test_sites_posterior_command_resumes(tmp_path, fluxsites_dir, capsys):
    folder, _ = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**QUICK, "svi": {"checkpoint_every": 100}}))
    out = tmp_path / "run"
    from differland.variational_workflows import load_variational_config, posterior_sites

    settings = load_variational_config(config, steps=200, draws=30)
    assert posterior_sites(folder, out, settings, progress=False, stop_after=1) == {}
    assert not (out / "svi.json").exists()
    assert main(["posterior", "sites", "--sites-dir", str(folder), "--out", str(out),
                 "--config", str(config), "--steps", "200", "--draws", "30",
                 "--no-progress"]) == 0
    record = json.loads((out / "svi.json").read_text())
    assert record["resumed_from_step"] == 100
    assert set(record["sites"]) == {"US-Var", "AU-How"}
    for site in ("US-Var", "AU-How"):
        assert np.isfinite(record["sites"][site]["pareto_k"])


def test_settings_round_trip():
    settings = variational.SviSettings(guide="normal", seeds=[2, 5])
    assert settings.seeds == (2, 5)
    again = variational.svi_settings(settings.to_dict())
    assert again == settings
    assert dataclasses.asdict(again)["guide"] == "normal"
    assert jax.tree.leaves(settings.to_dict())
