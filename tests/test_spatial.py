"""The spatialization network: predictors, bounds, saving and loading, training with exact
resumption, and the ``differland spatial`` commands in a smoke mode."""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from differland.cli import main
from differland.io import read_site_driver, read_sites_rows
from differland.params import SPECS
from differland.spatial import (
    PFT_CLASSES,
    SiteBatch,
    SpatialConfig,
    Standardizer,
    climate_predictors,
    physical_parameters,
    predictor_names,
    site_predictors,
    train,
)
from differland.spatial import network as spatial_network
from differland.spatial_workflows import load_weights, save_weights

TINY = {"hidden": 8, "depth": 1, "max_iterations": 10, "eval_every": 5, "warmup": 2,
        "calibration": {"water_stress": "beta", "evapotranspiration": "uwue"}}
"""A training that compiles and runs in seconds (no neural terms)."""


def _rows(fluxsites_dir):
    return {row["SITE_ID"]: row for row in read_sites_rows(fluxsites_dir / "sites.csv")}


def _site(fluxsites_dir, site):
    driver = read_site_driver(fluxsites_dir / f"{site}.nc")
    climate = climate_predictors(driver.forcing, driver.dates, driver.calibration_end)
    return driver, site_predictors(_rows(fluxsites_dir)[site], climate)


def test_predictors_of_a_site(fluxsites_dir):
    driver, predictors = _site(fluxsites_dir, "US-Var")
    assert predictors["pft"] == "grassland"
    assert predictors["latitude"] == pytest.approx(38.4133)
    assert predictors["mean_annual_precipitation"] == 559.0
    days = slice(0, driver.calibration_end)
    temperature = 0.5 * (driver.forcing.t_min + driver.forcing.t_max)[days]
    assert predictors["temperature_mean"] == pytest.approx(float(np.mean(temperature)))
    assert predictors["precipitation_mean"] == pytest.approx(
        float(np.mean(driver.forcing.precipitation[days])))
    assert predictors["temperature_amplitude"] > 10.0  # a Mediterranean year
    assert 0.0 < predictors["aridity_index"] < 1.0  # dry: less rain than radiation evaporates


def test_predictor_statistics_round_trip(fluxsites_dir):
    sites = [_site(fluxsites_dir, name)[1] for name in ("US-Var", "DE-Hai", "AU-How")]
    fitted = Standardizer.fit(sites, predictor_names())
    again = Standardizer.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    inputs = again.inputs(sites)
    np.testing.assert_array_equal(inputs, fitted.inputs(sites))
    assert inputs.shape == (3, len(predictor_names()) + len(PFT_CLASSES))
    np.testing.assert_allclose(inputs[:, :len(predictor_names())].mean(axis=0), 0.0,
                               atol=1e-12)


def test_predictions_stay_inside_bounds_for_extreme_predictors(fluxsites_dir):
    sites = [_site(fluxsites_dir, name)[1] for name in ("US-Var", "DE-Hai")]
    standardizer = Standardizer.fit(sites, predictor_names())
    extreme = [{**sites[0], **{name: sign * 1e30 for name in predictor_names()}}
               for sign in (1.0, -1.0)]
    inputs = standardizer.inputs(extreme)
    config = SpatialConfig()
    names = config.parameter_names
    graphdef, state = spatial_network.build(inputs.shape[1], len(names), 16, 2, seed=0)
    # large random weights everywhere, the head included
    state = jax.tree.map(lambda x: 50.0 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                         state)
    z = spatial_network.apply(graphdef, state, inputs)
    assert np.all(np.isfinite(np.asarray(z)))
    from differland.params import default_parameters

    params = physical_parameters(z, names, config.calibration, default_parameters("site"))
    for name in names:
        values = np.asarray(params[name])
        assert np.all(np.isfinite(values)), name
        assert np.all(values >= SPECS[name].lower) and np.all(values <= SPECS[name].upper), name


@pytest.fixture(scope="module")
def two_sites(fluxsites_dir):
    from differland.calibrate.site import make_site_problem

    config = SpatialConfig.from_dict(TINY)
    problems, predictors = [], []
    for name in ("US-Var", "AU-How"):
        driver, site = _site(fluxsites_dir, name)
        predictors.append(site)
        problems.append(make_site_problem(driver.forcing, driver.observations, driver.dates,
                                          driver.calibration_end, config.calibration
                                          ).window(driver.calibration_end))
    standardizer = Standardizer.fit(predictors, predictor_names())
    return config, SiteBatch.stack(problems, config.calibration), standardizer.inputs(predictors)


def test_padding_leaves_each_site_loss_unchanged(fluxsites_dir, two_sites):
    config, batch, _ = two_sites
    from differland.calibrate.site import make_site_problem

    driver, _ = _site(fluxsites_dir, "AU-How")
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, config.calibration
                                ).window(driver.calibration_end)
    names = config.parameter_names
    z = jnp.linspace(-1.0, 1.0, len(names))
    from differland.params import ParameterSet

    alone = problem.loss({"params": ParameterSet(dict(zip(names, z, strict=True))),
                          "network": None}, jnp.asarray(problem.periods.train))
    batched = batch.site_losses(jnp.stack([z, z]), None, names, "train")[1]
    np.testing.assert_allclose(float(batched), float(alone), rtol=2e-6)


def test_training_lowers_the_loss_and_resumes_exactly(two_sites, tmp_path):
    config, batch, inputs = two_sites
    whole = train(batch, inputs, config, seed=3, progress=False)
    assert whole.finished and whole.history["iterations"] == 10
    assert whole.history["validation"][-1] < whole.history["validation"][0]
    killed = train(batch, inputs, config, seed=3, checkpoint_dir=tmp_path, progress=False,
                   fingerprint_text="a", stop_after=1)
    assert not killed.finished
    resumed = train(batch, inputs, config, seed=3, checkpoint_dir=tmp_path, progress=False,
                    fingerprint_text="a")
    assert resumed.resumed_from == 5 and resumed.finished
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # saved and loaded, the network predicts what it predicted in memory
    save_weights(tmp_path / "weights", whole)
    graphdef, state, hybrid = load_weights(tmp_path / "weights", config, inputs.shape[1], 3)
    np.testing.assert_array_equal(np.asarray(spatial_network.apply(graphdef, state, inputs)),
                                  np.asarray(whole.unconstrained(inputs)))
    assert hybrid is None


def _folder(tmp_path, fluxsites_dir, sites, change=None):
    """A sites folder with links to the shared drivers and a sites.csv of ``sites``."""
    folder = tmp_path / "sites"
    folder.mkdir(exist_ok=True)
    rows = [row for row in read_sites_rows(fluxsites_dir / "sites.csv")
            if row["SITE_ID"] in sites]
    if change:
        rows = [change(dict(row)) for row in rows]
    for row in rows:
        link = folder / f"{row['SITE_ID']}.nc"
        if not link.exists():
            link.symlink_to(fluxsites_dir / f"{row['SITE_ID']}.nc")
    _write_csv(folder / "sites.csv", rows)
    return folder


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _one_line_error(capsys, *args) -> str:
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("change, expected", [
    (lambda row: {k: v for k, v in row.items() if k != "ELEV"}, "column ELEV is missing"),
    (lambda row: {**row, "IGBP": "XYZ"}, "unknown IGBP class 'XYZ'"),
    (lambda row: {**row, "MAT": "nan"}, "MAT is nan"),
    (lambda row: {**row, "MAP": ""}, "MAP is not a number"),
    (lambda row: {**row, "MAP": "wet"}, "MAP is not a number ('wet')"),
])
def test_bad_predictors_are_one_line(change, expected, tmp_path, fluxsites_dir, capsys):
    folder = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How"), change)
    err = _one_line_error(capsys, "spatial", "train", "--sites-dir", folder, "--out",
                          tmp_path / "model", "--no-progress")
    assert expected in err and "US-Var" in err and "sites.csv" in err
    assert not (tmp_path / "model").exists()


def test_a_missing_extra_predictor_is_one_line(tmp_path, fluxsites_dir, capsys):
    folder = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "extra_predictors": ["forest_age"]}))
    err = _one_line_error(capsys, "spatial", "train", "--sites-dir", folder, "--out",
                          tmp_path / "model", "--config", config, "--no-progress")
    assert "column forest_age is missing" in err


def test_spatial_commands_smoke(tmp_path, fluxsites_dir, capsys):
    folder = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How", "US-SRG"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    train_csv = tmp_path / "train.csv"
    rows = [row for row in read_sites_rows(folder / "sites.csv") if row["SITE_ID"] != "US-SRG"]
    _write_csv(train_csv, rows)
    model = tmp_path / "model"
    ensemble = tmp_path / "ensemble.json"  # two networks (seeds) form an ensemble
    ensemble.write_text(json.dumps({**TINY, "seeds": [0, 1]}))
    assert main(["spatial", "train", "--sites-dir", str(folder), "--sites-csv", str(train_csv),
                 "--out", str(model), "--config", str(ensemble), "--no-progress"]) == 0
    for name in ("config.json", "predictors.json", "history.json", "training.json",
                 "figures/loss.png", "weights/seed_0", "weights/seed_1"):
        assert (model / name).exists(), name
    record = json.loads((model / "config.json").read_text())
    assert record["sites"] == ["US-Var", "AU-How"]
    assert "canopy_efficiency" in record["parameter_names"]
    assert "aridity_index" in record["predictors"]
    # a trained model is not replaced without --overwrite
    capsys.readouterr()
    err = _one_line_error(capsys, "spatial", "train", "--sites-dir", folder, "--sites-csv",
                          train_csv, "--out", model, "--config", ensemble, "--no-progress")
    assert "trained model" in err
    # US-SRG was never trained on
    out = tmp_path / "predicted"
    assert main(["spatial", "predict", "--model", str(model), "--sites-csv",
                 str(folder / "sites.csv"), "--sites-dir", str(folder), "--out", str(out)]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("site,gpp_calibration,gpp_test")
    assert {line.split(",")[0] for line in summary[1:]} == {"US-Var", "AU-How", "US-SRG",
                                                            "median"}
    for name in ("config.json", "params.json", "simulation.nc", "metrics.json",
                 "figures/time_series.png"):
        assert (out / "US-SRG" / name).exists(), name
    metrics = json.loads((out / "US-SRG" / "metrics.json").read_text())
    assert math.isfinite(metrics["skill"]["gpp"]["test"]["nse"])
    assert metrics["spatial"]["ensemble"]["members"] == 2
    assert math.isfinite(metrics["spatial"]["ensemble"]["mean_skill"]["gpp"]["test"]["nse"])
    spread = xr.load_dataset(out / "US-SRG" / "ensemble.nc")
    assert spread["gpp_mean"].attrs["units"] == "gC m-2 d-1"
    assert float(spread["gpp_spread"].max()) > 0.0
    assert float(spread["canopy_efficiency_spread"]) > 0.0
    # the run directory simulates again through simulate --run
    again = tmp_path / "again.nc"
    assert main(["simulate", "--run", str(out / "US-SRG"), "--out", str(again)]) == 0
    np.testing.assert_array_equal(xr.load_dataset(again)["gpp"],
                                  xr.load_dataset(out / "US-SRG" / "simulation.nc")["gpp"])
    # leave-sites-out cross-validation, each site held out once
    cv = tmp_path / "cv"
    assert main(["spatial", "cv", "--sites-dir", str(folder), "--folds", "3", "--out", str(cv),
                 "--config", str(config), "--no-progress"]) == 0
    with open(cv / "summary.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["site"] for row in rows] == ["AU-How", "US-SRG", "US-Var", "median"]
    assert sorted(row["fold"] for row in rows[:-1]) == ["0", "1", "2"]
    for fold in range(3):
        assert (cv / "folds" / str(fold) / "model" / "training.json").exists()
    held = json.loads((cv / "folds" / "0" / "model" / "config.json").read_text())["sites"]
    assert len(held) == 2
    # an interrupted cross-validation resumes its finished folds only with the same settings
    (cv / "summary.csv").unlink()
    (cv / "summary.md").unlink()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "hidden": 4}))
    capsys.readouterr()
    err = _one_line_error(capsys, "spatial", "cv", "--sites-dir", folder, "--folds", "3",
                          "--out", cv, "--config", other, "--no-progress")
    assert "another configuration" in err


def test_finetune_starts_from_the_prediction(tmp_path, fluxsites_dir, capsys):
    folder = _folder(tmp_path, fluxsites_dir, ("US-Var", "AU-How", "US-SRG"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    model = tmp_path / "model"
    assert main(["spatial", "train", "--sites-dir", str(folder), "--out", str(model),
                 "--config", str(config), "--no-progress"]) == 0
    site_config = tmp_path / "site.json"
    site_config.write_text(json.dumps({**TINY["calibration"], "prior_weight": 2.0,
                                       "gradient": {"n_starts": 2, "max_iterations": 10,
                                                    "chunk": 5},
                                       "refine_iterations": 0}))
    out = tmp_path / "run"
    assert main(["calibrate", "site", "--driver", str(folder / "US-SRG.nc"), "--out", str(out),
                 "--config", str(site_config), "--finetune", str(model),
                 "--no-progress"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finetune"] == {"model": str(model), "prior_weight": 2.0}
    assert metrics["loss_terms_calibration"]["prior"] >= 0.0
    assert json.loads((out / "config.json").read_text())["finetune_model"] == str(model)
    # the network predicts the parameters of its own model options only
    err = _one_line_error(capsys, "calibrate", "site", "--driver", folder / "US-SRG.nc",
                          "--out", tmp_path / "other", "--finetune", model, "--no-progress")
    assert "other model options" in err and not (tmp_path / "other").exists()


TWIN_PLANTED = {"canopy_efficiency": (0.9, -0.6), "autotrophic_respiration_fraction": (-0.7, 0.5),
                "underlying_water_use_efficiency": (0.5, 0.8)}
"""Planted unconstrained value of each parameter: a x (standardised elevation) + b x
(standardised mean annual temperature)."""


@pytest.mark.slow
def test_twin_network_recovers_planted_parameters_on_held_out_sites(fluxsites_dir):
    """Synthetic sites: the 12 shared forcings (two years each), each four times with another
    elevation and mean annual temperature; their planted parameters are smooth functions of
    those predictors and their observations the model's output with them. A network trained
    on 32 sites predicts the 16 held out with R^2 >= 0.9 for every planted parameter."""
    from differland.calibrate.site import SiteCalibrationConfig, make_site_problem
    from differland.model import simulate
    from differland.observations import OPERATORS
    from differland.params import ParameterSet, constrain, default_parameters
    from differland.spatial import r_squared

    class Record:
        def __init__(self, values, mask):
            self.values, self.mask = np.asarray(values), np.asarray(mask, bool)
            self.uncertainty = self.uncertainty_mask = None

    names = tuple(TWIN_PLANTED)
    base = default_parameters("site").replace(initial_plant_available_water=300.0)
    calibration = SiteCalibrationConfig(
        water_stress="none", evapotranspiration="uwue", soil_water=(), decomposition=(),
        photosynthesis=(), streams=("gpp", "reco", "et", "lai"), validation_days=120,
        edc_weight=0.0, steady_state_weight=0.0, water_drift_weight=0.0,
        free_parameters=names,
        parameter_values={k: float(v) for k, v in base.items() if k not in names})
    config = SpatialConfig(calibration=calibration, hidden=16, depth=2, learning_rate=1e-2,
                           max_iterations=2000, eval_every=50, patience=20)
    rng = np.random.default_rng(7)
    rows = _rows(fluxsites_dir)
    sites, problems, planted = [], [], []
    for site in sorted(rows):
        driver = read_site_driver(fluxsites_dir / f"{site}.nc")
        forcing = jax.tree.map(lambda x: x[:730] if np.ndim(x) else x, driver.forcing)
        dates = driver.dates[:730]
        for _ in range(4):
            row = {**rows[site], "ELEV": str(rng.uniform(0, 2000)),
                   "MAT": str(rng.uniform(-2, 26))}
            sites.append(site_predictors(row, climate_predictors(forcing, dates, 600)))
    standardizer = Standardizer.fit(sites, predictor_names())
    columns = [predictor_names().index(n) for n in ("elevation", "mean_annual_temperature")]
    inputs = standardizer.inputs(sites)
    index = 0
    for site in sorted(rows):
        driver = read_site_driver(fluxsites_dir / f"{site}.nc")
        forcing = jax.tree.map(lambda x: x[:730] if np.ndim(x) else x, driver.forcing)
        dates = driver.dates[:730]
        for _ in range(4):
            x = inputs[index, columns]
            z = {n: a * x[0] + b * x[1] for n, (a, b) in TWIN_PLANTED.items()}
            truth = constrain(ParameterSet({n: jnp.asarray(v) for n, v in z.items()}))
            params = base.replace(**{n: truth[n] for n in names})
            planted.append([z[n] for n in names])
            trajectory = simulate(params, forcing, calibration.model_config)
            observations = {}
            for name in calibration.streams:
                clean = np.asarray(OPERATORS[name].predict(trajectory, params, forcing))
                noisy = clean + 0.02 * clean.std() * rng.normal(size=clean.size)
                observations[name] = Record(noisy, rng.uniform(size=clean.size) > 0.2)
            problems.append(make_site_problem(forcing, observations, dates, 600, calibration))
            index += 1
    held = np.arange(len(problems)) % 3 == 0  # 16 of 48
    train_idx = np.flatnonzero(~held)
    batch = SiteBatch.stack([problems[i] for i in train_idx], calibration)
    trained = train(batch, inputs[train_idx], config, seed=0, progress=False)
    predicted = np.asarray(trained.unconstrained(inputs[held]))
    planted = np.asarray(planted)[held]
    for j, name in enumerate(names):
        assert r_squared(predicted[:, j], planted[:, j]) >= 0.9, name
