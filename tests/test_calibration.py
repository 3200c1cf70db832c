"""Gradient calibration: twin experiment, exact resumption, seeds, bad configs, smoke runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import site_forcing

from differland import ModelConfig, SiteModel, default_parameters, simulate
from differland.calibrate.gradient import (
    CheckpointMismatchError,
    GradientSettings,
    batch_indices,
    fit,
    group_size,
)
from differland.calibrate.site import (
    CalibrationConfigError,
    SiteCalibrationConfig,
    make_periods,
    make_site_problem,
)
from differland.cli import _calibration_run, main
from differland.io import read_site_driver
from differland.observations import OPERATORS
from differland.workflows import refine_selected

REPO = Path(__file__).resolve().parents[1]
TWIN_FREE = ("canopy_efficiency", "autotrophic_respiration_fraction",
             "underlying_water_use_efficiency", "litter_respiration_rate")
# litter respiration is seen only through RECO, mixed with Ra and SOM respiration
TWIN_TOLERANCE = {"litter_respiration_rate": 0.10}


class Record:
    """A minimal observation record (values, mask, no uncertainty)."""

    def __init__(self, values, mask):
        self.values, self.mask = np.asarray(values), np.asarray(mask, bool)
        self.uncertainty = self.uncertainty_mask = None


def twin_problem(fluxsites_dir, settings: GradientSettings, noise: float = 0.03):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=730, start=0)
    dates = np.arange("2002-01-01", "2004-01-01", dtype="datetime64[D]")
    truth = default_parameters("site").replace(
        canopy_efficiency=22.0, autotrophic_respiration_fraction=0.45,
        underlying_water_use_efficiency=5.0, litter_respiration_rate=2e-3,
        initial_plant_available_water=300.0)
    trajectory = simulate(truth, forcing, ModelConfig(model=SiteModel()))
    rng = np.random.default_rng(42)
    observations = {}
    for name in ("gpp", "reco", "et", "lai"):
        clean = np.asarray(OPERATORS[name].predict(trajectory, truth, forcing))
        mask = rng.uniform(size=clean.size) > 0.2  # 20 % gaps
        observations[name] = Record(clean + noise * clean.std() * rng.normal(size=clean.size),
                                    mask)
    config = SiteCalibrationConfig(
        water_stress="none", evapotranspiration="uwue", streams=("gpp", "reco", "et", "lai"),
        validation_days=120, soil_water=(),  # the truth's model
        edc_weight=0.0, steady_state_weight=0.0,  # identifiability alone
        water_steady_state_weight=0.0, water_drift_weight=0.0,
        free_parameters=TWIN_FREE,
        parameter_values={k: float(v) for k, v in truth.items() if k not in TWIN_FREE},
        gradient=settings)
    return truth, make_site_problem(forcing, observations, dates, 600, config)


def test_twin_experiment_recovers_planted_parameters(fluxsites_dir):
    settings = GradientSettings(n_starts=4, max_iterations=400, learning_rate=0.08, chunk=50,
                                patience=4, seed=1)
    truth, problem = twin_problem(fluxsites_dir, settings)
    initial = problem.initial_guesses(settings.n_starts, settings.seed)
    result = fit(*problem.fit_arguments(), initial, settings, progress=False)
    recovered = problem.physical(result.best)
    for name in TWIN_FREE:
        tolerance = TWIN_TOLERANCE.get(name, 0.05)
        assert float(recovered[name]) == pytest.approx(float(truth[name]), rel=tolerance), name
    # the noise-free fluxes are recovered too, in and out of the calibration period
    config = ModelConfig(model=SiteModel())
    true_run = simulate(truth, problem.forcing, config)
    fitted_run = simulate(recovered, problem.forcing, config)
    for name in ("gpp", "reco", "nee", "et", "lai"):
        expected = np.asarray(OPERATORS[name].predict(true_run, truth, problem.forcing))
        actual = np.asarray(OPERATORS[name].predict(fitted_run, recovered, problem.forcing))
        nse = 1 - np.sum((actual - expected) ** 2) / np.sum((expected - expected.mean()) ** 2)
        assert nse > 0.99, name
    assert result.nonfinite_steps.sum() == 0
    assert result.history.shape[1] == settings.n_starts


def test_resume_after_kill_gives_the_same_result(fluxsites_dir, tmp_path):
    settings = GradientSettings(n_starts=2, max_iterations=60, chunk=10, checkpoint_every=2,
                                patience=100, seed=3)
    _, problem = twin_problem(fluxsites_dir, settings)
    initial = problem.initial_guesses(settings.n_starts, settings.seed)
    args = (*problem.fit_arguments(), initial, settings)
    uninterrupted = fit(*args, progress=False)
    killed = fit(*args, checkpoint_dir=tmp_path / "ckpt", progress=False, stop_after_chunks=3)
    assert not killed.finished
    resumed = fit(*args, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert resumed.finished and resumed.resumed_from == 20  # last checkpoint: chunk 2
    for a, b in zip(jax.tree.leaves(uninterrupted.best), jax.tree.leaves(resumed.best),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(uninterrupted.history, resumed.history)
    # same seed, same result; another seed, another start
    other = problem.initial_guesses(settings.n_starts, settings.seed + 1)
    same = problem.initial_guesses(settings.n_starts, settings.seed)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), initial, same))
    assert not np.allclose(other["params"]["canopy_efficiency"],
                           initial["params"]["canopy_efficiency"])
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        fit(*problem.fit_arguments(), initial,
            GradientSettings(n_starts=2, max_iterations=80, chunk=10, seed=3),
            checkpoint_dir=tmp_path / "ckpt", progress=False)


def test_frozen_starts_leave_the_computation():
    # start 0 sits at its minimum and freezes after `patience` chunks; starts 1-2 keep improving
    settings = GradientSettings(n_starts=3, max_iterations=200, chunk=10, patience=2,
                                learning_rate=0.01, warmup=0)

    def loss(theta, ramp=1.0):
        return jnp.sum((theta["x"] - 5.0) ** 2)

    def evaluation(theta, steps):
        return loss(theta)

    initial = {"x": jnp.asarray([[5.0, 5.0], [0.0, 1.0], [-2.0, 3.0]])}
    result = fit(loss, evaluation, None, None, initial, settings, progress=False)
    frozen_after = 1 + settings.patience  # no improvement from the first chunk on
    assert np.all(np.isfinite(result.history[:frozen_after, 0]))
    assert np.all(np.isnan(result.history[frozen_after:, 0]))
    assert np.all(np.isfinite(result.history[:, 1:]))
    np.testing.assert_array_equal(np.asarray(result.starts["x"][0]), [5.0, 5.0])
    # a running start follows the same path whatever the batch around it
    alone = fit(loss, evaluation, None, None, {"x": initial["x"][1:2]},
                dataclasses.replace(settings, n_starts=1), progress=False)
    np.testing.assert_allclose(np.asarray(result.starts["x"][1]),
                               np.asarray(alone.starts["x"][0]), rtol=1e-6)
    np.testing.assert_allclose(result.history[:, 1], alone.history[:, 0], rtol=1e-6)


def test_refinement_fits_the_whole_calibration_period(fluxsites_dir):
    settings = GradientSettings(n_starts=2, max_iterations=60, chunk=20, patience=2, seed=0)
    _, problem = twin_problem(fluxsites_dir, settings)
    result = fit(*problem.fit_arguments(), problem.initial_guesses(2, 0), settings,
                 progress=False)
    # the training loss left the validation slice out; the refinement's loss has it
    train_loss, calibration_loss, *_ = problem.refine_arguments()
    theta = result.best
    assert float(train_loss(theta)) == pytest.approx(
        float(problem.loss(theta, problem.calibration_steps)))
    assert float(train_loss(theta)) != pytest.approx(float(problem.train_loss(theta)))
    config = dataclasses.replace(problem.config, refine_iterations=40)
    values, record = refine_selected(problem, config, result, False, "twin")
    assert record["iterations"] == 40 and record["accepted"]
    assert record["calibration_loss_after"] < record["calibration_loss_before"]
    assert record["calibration_loss_before"] == pytest.approx(
        float(result.selection_loss[result.best_index]))
    assert float(calibration_loss(values, problem.calibration_steps)) == pytest.approx(
        record["calibration_loss_after"], rel=1e-6)
    again, _ = refine_selected(problem, config, result, False, "twin")  # deterministic
    for a, b in zip(jax.tree.leaves(values), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    off = dataclasses.replace(problem.config, refine_iterations=0)
    unchanged, none = refine_selected(problem, off, result, False, "twin")
    assert none is None and unchanged is result.best


def test_starts_run_in_groups():
    assert group_size(32, "cpu") == 8 and group_size(5, "cpu") == 5
    assert group_size(32, "gpu") == 32
    np.testing.assert_array_equal(batch_indices(np.array([3, 7, 9]), 8), [3, 7, 9] + [3] * 5)
    np.testing.assert_array_equal(batch_indices(np.arange(17), 8), np.r_[0:17, [0] * 7])
    np.testing.assert_array_equal(batch_indices(np.arange(16), 8), np.arange(16))
    np.testing.assert_array_equal(batch_indices(np.array([2, 4]), 5), [2, 4, 2, 2, 2])


def test_nonfinite_steps_are_skipped_and_counted():
    settings = GradientSettings(n_starts=2, max_iterations=20, chunk=10, patience=10)

    def loss(theta, ramp=1.0):  # non-finite for start 0 whenever x > 0
        x = theta["x"]
        return jnp.where(x > 0, jnp.nan, (x + 1.0) ** 2)

    initial = {"x": jnp.asarray([0.5, -3.0])}
    result = fit(loss, loss, 1.0, 1.0, initial, settings, progress=False)
    assert int(result.nonfinite_steps[0]) == 20 and int(result.nonfinite_steps[1]) == 0
    assert float(result.starts["x"][0]) == 0.5  # never moved by a NaN step
    assert result.best_index == 1


def test_periods_split_train_validation_test():
    """Validation is the last validation_days of the calibration period, at most its second
    half; the test period is everything after; year ends flag each calendar year's last day."""
    dates = np.arange("2001-01-01", "2004-01-01", dtype="datetime64[D]")  # 3 years, 1095 days
    periods = make_periods(dates, 730, 365)
    assert periods.validation.sum() == 365 and periods.validation[365:730].all()
    assert periods.train.sum() == 365 and periods.train[:365].all()
    assert periods.test.sum() == 365 and periods.test[730:].all()
    np.testing.assert_array_equal(periods.train + periods.validation, periods.calibration)
    assert periods.year_end.sum() == 3 and periods.year_end[[364, 729, 1094]].all()
    short = make_periods(dates, 365, 365)  # one calibration year: validate on its second half
    assert short.validation.sum() == 365 - 182 and short.validation[182:365].all()
    assert short.train.sum() == 182
    none = make_periods(dates, 730, 0)
    assert none.validation.sum() == 0 and none.train.sum() == 730
    with pytest.raises(CalibrationConfigError, match="empty"):
        make_periods(dates, 0, 365)


@pytest.mark.parametrize("values, pattern", [
    ({"water_stress": "sometimes"}, "water_stress"),
    ({"streams": ["gpp", "sif_proxy"]}, "streams"),
    ({"objective": "mae"}, "objective"),
    ({"free_parameters": ["leaf_life_span"]}, "free_parameters"),
    ({"gradient": {"learning_rate": -1}}, "learning_rate"),
    ({"gradient": {"lr": 0.1}}, "gradient: unknown key"),
    ({"bogus": 1}, "unknown key"),
    ({"steady_state_form": "cubic"}, "steady_state_form"),
    ({"water_steady_state_weight": -0.1}, "water_steady_state_weight must be a number >= 0"),
    ({"water_steady_state_weight": "0.02"}, "water_steady_state_weight must be a number"),
    ({"water_steady_state_weight": True}, "water_steady_state_weight must be a number"),
    ({"water_drift_weight": -1}, "water_drift_weight must be a number >= 0"),
    ({"water_drift_weight": None}, "water_drift_weight must be a number"),
    ({"steady_state_pool_weights": {"leaves": 2.0}}, "steady_state_pool_weights"),
    ({"steady_state_pool_weights": [1.0]}, "steady_state_pool_weights must be an object"),
    ({"parameter_scales": {"leaf_lifespan": "sqrt"}}, "leaf_lifespan has unknown scale"),
    ({"parameter_scales": {"leaf_life_span": "log"}}, "parameter_scales.*unknown parameter"),
    ({"parameter_scales": {"sif_alpha": "log"}}, "parameter_scales names unknown for the site"),
    ({"parameter_scales": {"autotrophic_respiration_fraction": "log_excess"}},
     "cannot be log_excess-scaled"),
    ({"parameter_scales": ["log"]}, "parameter_scales must be an object"),
    ({"refine_iterations": -1}, "refine_iterations must be an integer >= 0"),
    ({"refine_iterations": 2.5}, "refine_iterations must be an integer >= 0"),
    ({"refine_learning_rate": 0.0}, "refine_learning_rate must be a number > 0"),
    ({"training_window": "test"}, "unknown training_window 'test'"),
    ({"gpp_weather": "yes"}, "gpp_weather must be true or false"),
    ({"drought_leaf_loss": 1}, "drought_leaf_loss must be true or false"),
    ({"canopy_saturation": "on"}, "canopy_saturation must be true or false"),
    ({"groundwater_supply": "no"}, "groundwater_supply must be true or false"),
    ({"deep_water_uptake": "yes"}, "deep_water_uptake must be true or false"),
    ({"deep_water_uptake": True, "model": "global"}, "deep_water_uptake needs the site model"),
    ({"soil_water": ["deep_water_uptake"], "model": "global"},
     "deep_water_uptake needs the site model"),
    ({"photosynthesis": "canopy_saturation"}, "photosynthesis must be a list of names"),
    ({"photosynthesis": ["canopy"]}, "unknown photosynthesis option 'canopy'"),
    ({"leaf_loss": [3]}, "leaf_loss must be a list of option names"),
    ({"phenology": "climate:memory_days=soon"}, "memory_days: not a float"),
    ({"phenology": "climate", "water_limited_decomposition": True}, "'climate' was removed"),
    ({"phenology": "calendar_growth", "gpp_weather": False}, "'calendar_growth' was removed"),
])
def test_bad_configuration_is_a_clear_error(values, pattern):
    with pytest.raises(CalibrationConfigError, match=pattern):
        SiteCalibrationConfig.from_dict(values)


def test_missing_observation_variable_is_a_clear_error(fluxsites_dir, tmp_path, capsys):
    import xarray as xr

    dataset = xr.load_dataset(fluxsites_dir / "US-Var.nc", decode_times=False)
    driver = tmp_path / "no-reco.nc"
    dataset.drop_vars(["RECO", "RECOunc"]).to_netcdf(driver)
    status = main(["calibrate", "site", "--driver", str(driver), "--out",
                   str(tmp_path / "run"), "--iterations", "10", "--no-progress",
                   "--streams", "gpp,reco"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "reco" in err and "too few observations" in err
    assert not (tmp_path / "run").exists(), "a refused calibration writes nothing"


def test_calibrate_site_command_smoke(fluxsites_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gradient": {"chunk": 5, "n_starts": 2},
                                  "refine_iterations": 10}))
    command = ["calibrate", "site", "--driver", str(fluxsites_dir / "US-Var.nc"), "--out",
               str(out), "--config", str(config), "--iterations", "10", "--no-progress"]
    status = main(command)
    assert status == 0, capsys.readouterr().err
    for name in ("config.json", "metrics.json", "params.json", "simulation.nc",
                 "figures/time_series.png", "figures/scatter_test.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["skill"]) == {"gpp", "reco", "nee", "et", "lai"}
    assert metrics["periods"]["test"][0] == "2007-01-01"
    assert set(metrics["skill"]["gpp"]) == {"calibration", "test"}
    refinement = metrics["optimisation"]["refinement"]
    assert refinement["iterations"] == 10
    assert refinement["accepted"] == (
        refinement["calibration_loss_after"] < refinement["calibration_loss_before"])
    # the run directory reproduces the calibrated simulation through the CLI, with the model
    # options, params.json and network.json it records
    status = main(["simulate", "--run", str(out), "--out", str(tmp_path / "again.nc")])
    assert status == 0, capsys.readouterr().err
    import xarray as xr

    again = xr.load_dataset(tmp_path / "again.nc")
    calibrated = xr.load_dataset(out / "simulation.nc")
    np.testing.assert_allclose(again["nee"], calibrated["nee"], rtol=1e-9, atol=1e-9)
    assert again.attrs["decomposition"] == "water_limited_decomposition"
    assert again.attrs["photosynthesis"] == "canopy_saturation"
    assert again.attrs["soil_water"] == "deep_water_uptake" and again.attrs["leaf_loss"] == ""
    capsys.readouterr()
    # params.json holds the calibrated canopy saturation: simulating it by hand without the
    # option would silently run another model
    assert main(["simulate", "--driver", str(fluxsites_dir / "US-Var.nc"), "--params",
                 str(out / "params.json"), "--network", str(out / "network.json"),
                 "--water-stress", "neural", "--evapotranspiration", "neural",
                 "--water-limited-decomposition", "--deep-water-uptake",
                 "--out", str(tmp_path / "off.nc")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "canopy_lai_half_saturation" in err
    assert "--canopy-saturation" in err and "params.json" in err
    assert not (tmp_path / "off.nc").exists()
    assert main(["simulate", "--run", str(out), "--water-stress", "beta", "--out",
                 str(tmp_path / "clash.nc")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--water-stress" in err
    assert main(["simulate", "--run", str(tmp_path), "--out", str(tmp_path / "none.nc")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "clash.nc").exists() and not (tmp_path / "none.nc").exists()
    # a run recorded with a relative driver path reruns from another directory through the
    # absolute path it also records; with neither found, --driver is asked for
    original = (out / "config.json").read_text()
    record = json.loads(original)
    assert Path(record["driver_resolved"]).is_absolute()
    record["driver"] = "elsewhere/US-Var.nc"
    (out / "config.json").write_text(json.dumps(record))
    assert _calibration_run(out)["driver"] == Path(record["driver_resolved"])
    del record["driver_resolved"]
    (out / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["simulate", "--run", str(out), "--out", str(tmp_path / "moved.nc")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--driver" in err and "elsewhere" in err
    # a record of an earlier version, with on/off keys for the modifiers and without the
    # weather factor of GPP or the calibrated canopy saturation, simulates without them
    legacy = {key: value for key, value in record["calibration"].items() if key not in (
        "photosynthesis", "soil_water", "decomposition", "leaf_loss")}
    legacy |= {"water_limited_decomposition": True, "drought_leaf_loss": False,
               "groundwater_supply": False, "deep_water_uptake": True,
               "phenology": "calendar_water"}
    record["calibration"] = legacy
    (out / "config.json").write_text(json.dumps(record))
    recorded = _calibration_run(out)["config"]
    assert recorded.photosynthesis == () and recorded.leaf_loss == ()
    assert [o.name for o in recorded.soil_water] == ["deep_water_uptake"]
    assert recorded.phenology.water_limited_release
    (out / "config.json").write_text(original)
    # a finished run is not replaced without --overwrite
    capsys.readouterr()
    assert main(command) == 2
    assert "finished run" in capsys.readouterr().err
    # another version of the package does not resume this run's checkpoints
    import differland.workflows

    (out / "metrics.json").unlink()  # an unfinished run, as if killed before the end
    capsys.readouterr()
    record = (out / "config.json").read_text()
    monkeypatch.setattr(differland.workflows, "__version__", "0.0.0+other")
    assert main(command) != 0
    assert "checkpoint" in capsys.readouterr().err
    assert (out / "config.json").read_text() == record, "a refused run leaves the directory"
    # nor does the same version with edited code
    monkeypatch.undo()
    monkeypatch.setattr(differland.workflows, "package_digest", lambda: "0" * 64)
    assert main(command) != 0
    assert "checkpoint" in capsys.readouterr().err
    assert (out / "config.json").read_text() == record


def test_source_digest_follows_the_code(tmp_path):
    from differland.workflows import package_digest, source_digest

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not code")
    first = source_digest(tmp_path)
    assert source_digest(tmp_path) == first and len(first) == 64
    (tmp_path / "notes.txt").write_text("still not code")
    assert source_digest(tmp_path) == first
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(tmp_path) != first
    assert package_digest() == package_digest() != first


def test_sites_script_smoke(fluxsites_dir, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "calibration" / "sites.py"), "--sites-dir",
         str(fluxsites_dir), "--out", str(tmp_path), "--smoke", "--workers", "1"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0] == "site,gpp,reco,nee,et,lai,status"
    assert summary[1].endswith(",ok") and summary[-1].startswith("median,")
    assert summary[-1].endswith(",1 of 1 sites")
    median_line = next(line for line in (tmp_path / "summary.md").read_text().splitlines()
                       if line.startswith("| **median**"))
    gpp_median = float(summary[-1].split(",")[1])
    assert f"| {gpp_median:.3f} |" in median_line  # not rounded to the two decimals of a site
    assert "; seed 0; configuration default; wall time " in (tmp_path / "summary.md").read_text()
    recorded = json.loads((tmp_path / "summary.json").read_text())
    assert recorded["seed"] == 0 and recorded["config"] is None
    assert recorded["overrides"] == {"n_starts": 2, "max_iterations": 20, "chunk": 10}


def test_sites_script_reuses_a_finished_run_of_the_same_configuration(tmp_path):
    """A finished run is reused when its record names the same configuration, also when an
    earlier version wrote the process options as on/off keys; another one is refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sites", REPO / "calibration" / "sites.py")
    sites = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sites)
    config = SiteCalibrationConfig().to_dict()
    legacy = {key: value for key, value in config.items() if key not in (
        "photosynthesis", "soil_water", "decomposition", "leaf_loss")}
    legacy |= {"gpp_weather": False, "canopy_saturation": True, "drought_leaf_loss": False,
               "groundwater_supply": False, "deep_water_uptake": True,
               "water_limited_decomposition": True}
    run = tmp_path / "US-Var"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"site": "US-Var"}))
    for record in (config, legacy):
        (run / "config.json").write_text(json.dumps({"calibration": record}))
        assert sites.finished_metrics(run, config) == {"site": "US-Var"}
    (run / "config.json").write_text(json.dumps({"calibration": {**legacy,
                                                                 "gpp_weather": True}}))
    with pytest.raises(ValueError, match="another configuration"):
        sites.finished_metrics(run, config)


def _process_state(pid: int) -> list[str] | None:
    """State letter and parent of a process from Linux /proc (None once it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, IndexError):
        return None


def _live_children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and (state := _process_state(int(entry.name))) and state[0] != "Z"
            and state[1] == str(pid)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sites_script_stops_its_workers_on_sigterm(fluxsites_dir, tmp_path):
    """SIGTERM to the script stops the site workers too (exit status 143), instead of leaving
    them computing, and writes no summary."""
    import signal
    import time

    command = [sys.executable, str(REPO / "calibration" / "sites.py"), "--sites-dir",
               str(fluxsites_dir), "--out", str(tmp_path), "--sites", "US-Var", "--workers",
               "1", "--starts", "2", "--iterations", "3000"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 300
            while not (tmp_path / "US-Var" / "config.json").exists():  # a worker computes
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
            workers = _live_children(process.pid)
            assert workers
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 143
            assert "rerun the same command to resume" in process.stderr.read()
            time.sleep(1)
            assert [pid for pid in workers if (state := _process_state(pid)) and
                    state[0] != "Z"] == []
            assert not (tmp_path / "summary.csv").exists()
        finally:
            process.kill()


def test_sites_script_reports_failed_sites_and_refuses_bad_config(fluxsites_dir, tmp_path):
    """A site that fails is listed with its error and the exit status is 1; a configuration
    that cannot be run is refused before anything is written."""
    import xarray as xr

    sites = tmp_path / "sites"
    sites.mkdir()
    dataset = xr.load_dataset(fluxsites_dir / "US-Var.nc", decode_times=False)
    dataset["T2M_MAX"][10] = np.nan
    dataset.to_netcdf(sites / "XX-Gap.nc")
    script = [sys.executable, str(REPO / "calibration" / "sites.py"), "--sites-dir", str(sites)]
    completed = subprocess.run([*script, "--out", str(tmp_path / "out"), "--workers", "1"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1, completed.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert summary[1].startswith("XX-Gap,,,,,,failed: DriverError:") and "T2M_MAX" in summary[1]
    assert summary[-1] == "median,,,,,,0 of 1 sites"
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    assert rows[0]["gpp"] is None and rows[0]["status"].startswith("failed")
    assert "XX-Gap failed" in (tmp_path / "out" / "summary.md").read_text()

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gradient": {"n_start": 3}}))
    completed = subprocess.run([*script, "--out", str(tmp_path / "refused"), "--config",
                                str(config)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith(
        f"sites.py: error: {config}: config: gradient: unknown key(s) n_start (known: ")
    assert not (tmp_path / "refused").exists()


def test_steady_state_term_weights_each_pool(fluxsites_dir):
    """The steady-state term is steady_state_weight x sum of pool multiplier x pool penalty,
    in the chosen form."""
    import dataclasses

    from differland.likelihood import steady_state_edcs
    from differland.model import initial_state
    from differland.state import CARBON_POOLS

    _, base = twin_problem(fluxsites_dir, GradientSettings())
    theta = jax.tree.map(lambda x: x[0], base.initial_guesses(1, seed=3))
    multipliers = {"labile_carbon": 10.0, "foliar_carbon": 0.0}
    for form in ("quadratic", "tolerance"):
        config = dataclasses.replace(base.config, steady_state_weight=0.5,
                                     steady_state_form=form,
                                     steady_state_pool_weights=multipliers)
        problem = dataclasses.replace(base, config=config)
        params, trajectory = problem.run(theta)
        penalties = steady_state_edcs(trajectory.outputs, trajectory.states,
                                      initial_state(params, config.model_config),
                                      jnp.asarray(problem.periods.year_end), form=form)
        expected = 0.5 * sum(multipliers.get(pool, 1.0) * penalties[f"edc_steady_{pool}"]
                             for pool in CARBON_POOLS)
        term = problem.loss_terms(theta, problem.calibration_steps)["edc_steady_state"]
        np.testing.assert_allclose(float(term), float(expected), rtol=1e-6)
        assert float(penalties["edc_steady_foliar_carbon"]) >= 0.0


def test_water_steady_state_term_holds_a_filling_store(fluxsites_dir):
    """With the drainage shut (a huge focal point, all of it to PUW) PAW fills year after
    year from a near-empty start; the water term is then large, its gradient pulls the
    initial water up, and it is absent with weight 0."""
    from differland.likelihood import water_steady_state_edcs
    from differland.model import initial_state

    _, base = twin_problem(fluxsites_dir, GradientSettings())
    shut = {"paw_runoff_focal_point": 1e5, "paw_to_puw_fraction": 0.999,
            "initial_plant_available_water": 5.0}
    config = dataclasses.replace(
        base.config, water_steady_state_weight=0.5,
        parameter_values={**dict(base.config.parameter_values), **shut})
    problem = dataclasses.replace(base, config=config, fixed=base.fixed.replace(**shut))
    theta = jax.tree.map(lambda x: x[0], problem.initial_guesses(1, seed=3))
    params = problem.physical(theta)
    assert float(params.paw_runoff_focal_point) == pytest.approx(1e5, rel=1e-6)
    trajectory = simulate(params, problem.forcing, config.model_config)
    penalties = water_steady_state_edcs(trajectory.states,
                                        initial_state(params, config.model_config),
                                        jnp.asarray(problem.periods.year_end))
    assert float(penalties["edc_steady_soil_water"]) > 4.0, "PAW more than 4x its start"
    terms = problem.loss_terms(theta, problem.calibration_steps)
    expected = 0.5 * sum(penalties.values())
    np.testing.assert_allclose(float(terms["edc_water_steady_state"]), float(expected),
                               rtol=1e-6)
    assert "edc_water_steady_state" not in base.loss_terms(theta, base.calibration_steps)

    def water_term(initial_water):
        state = initial_state(params.replace(initial_plant_available_water=initial_water),
                              config.model_config)
        run = simulate(params.replace(initial_plant_available_water=initial_water),
                       problem.forcing, config.model_config)
        return water_steady_state_edcs(run.states, state,
                                       jnp.asarray(problem.periods.year_end)
                                       )["edc_steady_soil_water"]

    assert float(jax.grad(water_term)(jnp.asarray(5.0))) < 0.0


def test_water_drift_term_holds_a_filling_store(fluxsites_dir):
    """With the drainage loop closed (PAW drains to PUW and rises back, PUW hardly runs off)
    the total water fills by more than the tolerated third of a year's precipitation between
    the halves of the run: the drift term is then weight x the EDC, and absent with weight 0.
    A run with open drainage costs nothing."""
    from differland.likelihood import water_drift_edc

    _, twin = twin_problem(fluxsites_dir, GradientSettings())
    n_steps = 5 * 365 + 1  # five year ends: the halves compare two years each
    forcing = site_forcing(fluxsites_dir, "RU-Fyo", n_steps=n_steps, start=0)
    dates = np.arange("2003-01-01", "2008-01-01", dtype="datetime64[D]")
    observations = {name: Record(np.ones(n_steps), np.ones(n_steps, bool))
                    for name in twin.config.streams}
    closed = {"paw_runoff_focal_point": 1e5, "paw_to_puw_fraction": 0.9999,
              "puw_runoff_focal_point": 1e5, "deep_water_uptake_rate": 0.08,
              "initial_plant_available_water": 5.0, "initial_plant_unavailable_water": 1.0,
              "underlying_water_use_efficiency": 30.0, "radiation_et_coefficient": 0.01}
    config = dataclasses.replace(
        twin.config, water_drift_weight=0.1, soil_water=("deep_water_uptake",),
        free_parameters=("litter_respiration_rate",),
        parameter_values={**dict(twin.config.parameter_values), **closed})
    problem = make_site_problem(forcing, observations, dates, 3 * 365, config)
    base = make_site_problem(forcing, observations, dates, 3 * 365,
                             dataclasses.replace(config, water_drift_weight=0.0))
    theta = jax.tree.map(lambda x: x[0], problem.initial_guesses(1, seed=3))
    params = problem.physical(theta)
    annual = 365.25 * float(np.mean(np.asarray(problem.forcing.precipitation)))
    year_end = jnp.asarray(problem.periods.year_end)
    edc = water_drift_edc(simulate(params, problem.forcing, config.model_config).states,
                          year_end, annual)
    assert float(edc) > 1.0, "the closed loop should fill the store"
    terms = problem.loss_terms(theta, problem.calibration_steps)
    np.testing.assert_allclose(float(terms["edc_water_drift"]), 0.1 * float(edc), rtol=1e-6)
    assert "edc_water_drift" not in base.loss_terms(theta, base.calibration_steps)
    open_params = params.replace(paw_runoff_focal_point=200.0, paw_to_puw_fraction=0.01)
    open_run = simulate(open_params, problem.forcing, config.model_config)
    assert float(water_drift_edc(open_run.states, year_end, annual)) == 0.0


def test_training_window_ends_with_the_calibration_period(fluxsites_dir):
    """The optimiser's problem runs the model over the calibration period only: the same
    trajectory there as the whole run (the model is causal), the same stream terms, and
    steady-state EDCs over the calibration years; ``"record"`` keeps the whole record."""
    from differland.likelihood import steady_state_edcs
    from differland.model import initial_state

    _, base = twin_problem(fluxsites_dir, GradientSettings())
    full = dataclasses.replace(base, config=dataclasses.replace(
        base.config, steady_state_weight=0.5, training_window="calibration"))
    window = full.training_problem()
    assert window.forcing.n_steps == 600 and window.periods.calibration.all()
    np.testing.assert_array_equal(window.periods.train, full.periods.train[:600])
    np.testing.assert_array_equal(np.flatnonzero(window.periods.year_end), [364, 599])
    theta = jax.tree.map(lambda x: x[0], full.initial_guesses(1, seed=3))
    params, whole = full.run(theta)
    _, head = window.run(theta)
    for series, reference in ((head.outputs.gpp, whole.outputs.gpp),
                              (head.outputs.et, whole.outputs.et),
                              (head.outputs.lai, whole.outputs.lai),
                              (head.states.foliar_carbon, whole.states.foliar_carbon)):
        np.testing.assert_allclose(series, reference[:600], rtol=1e-5, atol=1e-6)
    on_full = full.loss_terms(theta, jnp.asarray(full.periods.train))
    on_window = window.loss_terms(theta, jnp.asarray(window.periods.train))
    for name in full.streams:
        np.testing.assert_allclose(float(on_window[name]), float(on_full[name]), rtol=1e-5)
    expected = 0.5 * sum(steady_state_edcs(head.outputs, head.states,
                                           initial_state(params, full.config.model_config),
                                           jnp.asarray(window.periods.year_end)).values())
    np.testing.assert_allclose(float(on_window["edc_steady_state"]), float(expected),
                               rtol=1e-5)
    assert abs(float(on_window["edc_steady_state"]) - float(on_full["edc_steady_state"])) > 1e-6
    record = dataclasses.replace(full, config=dataclasses.replace(full.config,
                                                                  training_window="record"))
    assert record.training_problem() is record


def test_parameter_scales_set_the_map_from_the_optimiser(fluxsites_dir):
    """``parameter_scales`` changes where the unconstrained values (and the starts, uniform in
    [0.05, 0.95] of the map) land in the prior box, and the config round-trips."""
    driver = read_site_driver(fluxsites_dir / "US-Var.nc")
    u = jnp.asarray([0.05, 0.5, 0.95])
    x = jnp.log(u) - jnp.log1p(-u)
    lifespans = {}
    for scales in ({}, {"leaf_lifespan": "log_excess"}):
        config = SiteCalibrationConfig.from_dict({"parameter_scales": scales})
        assert SiteCalibrationConfig.from_dict(config.to_dict()) == config
        problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                    driver.calibration_end, config)
        theta = problem.initial_guesses(3, 0)
        theta["params"] = theta["params"].replace(leaf_lifespan=x)
        lifespans[bool(scales)] = np.asarray(jax.vmap(problem.physical)(theta).leaf_lifespan)
    np.testing.assert_allclose(lifespans[False], 1.001 + 6.999 * np.asarray(u), rtol=1e-5)
    np.testing.assert_allclose(lifespans[True], 1 + 0.001 * 7000 ** np.asarray(u), rtol=1e-5)


def test_free_parameters_follow_the_process_options():
    from differland.calibrate.site import free_parameter_names

    default = set(free_parameter_names(SiteCalibrationConfig(
        evapotranspiration="uwue", decomposition=(), soil_water=())))
    assert {"underlying_water_use_efficiency", "radiation_et_coefficient"} <= default
    assert not default & {"field_capacity", "drought_leaf_loss_rate",
                          "decomposition_water_sensitivity", "groundwater_supply_rate",
                          "deep_water_uptake_rate"}
    neural = set(free_parameter_names(SiteCalibrationConfig(
        evapotranspiration="neural", decomposition=(), soil_water=())))
    assert default - neural == {"underlying_water_use_efficiency", "radiation_et_coefficient"}
    options = SiteCalibrationConfig(water_stress="beta", leaf_loss=("drought_leaf_loss",),
                                    decomposition=("water_limited_decomposition",),
                                    soil_water=("groundwater_supply", "deep_water_uptake"),
                                    evapotranspiration="neural:transpiration=uwue")
    assert set(free_parameter_names(options)) - default == {
        "field_capacity", "wilting_point_fraction", "drought_leaf_loss_rate",
        "decomposition_water_sensitivity", "groundwater_supply_rate", "deep_water_uptake_rate"}
    assert [o.name for o in options.model_config.soil_water] == [
        "deep_water_uptake", "groundwater_supply"]
    assert default - set(free_parameter_names(options)) == {"radiation_et_coefficient"}
    # the default site calibration slows decomposition in dry soil and lets deep water rise;
    # the global model, which has no deep store, is calibrated without the rise
    assert {"decomposition_water_sensitivity", "deep_water_uptake_rate"} <= set(
        free_parameter_names(SiteCalibrationConfig()))
    assert SiteCalibrationConfig().soil_water == ("deep_water_uptake",)
    assert SiteCalibrationConfig(model="global").soil_water == ()
    assert SiteCalibrationConfig.from_dict(
        SiteCalibrationConfig().to_dict()) == SiteCalibrationConfig()
    # written and read back through the option registry, fields included
    chosen = SiteCalibrationConfig(phenology="climate:index_rates=fall,memory_days=30",
                                   photosynthesis=["gpp_weather:hidden=4", "canopy_saturation"])
    assert chosen.phenology == "climate:memory_days=30.0,index_rates=fall"
    assert chosen.photosynthesis == ("canopy_saturation", "gpp_weather:hidden=4")
    again = SiteCalibrationConfig.from_dict(json.loads(json.dumps(chosen.to_dict())))
    assert again == chosen and again.model_config == chosen.model_config
    assert again.model_config.phenology.memory_days == 30.0


def test_free_parameters_follow_the_phenology():
    from differland.calibrate.site import free_parameter_names

    calendar = set(free_parameter_names(SiteCalibrationConfig()))
    climate = set(free_parameter_names(SiteCalibrationConfig(phenology="climate")))
    assert calendar < climate  # the index adds to the calendar pulses
    assert climate - calendar == {"growing_season_temperature", "growing_season_daylength",
                                  "growing_season_vpd", "growing_season_water",
                                  "leaf_growth_rate", "leaf_senescence_rate"}
    fall = set(free_parameter_names(SiteCalibrationConfig(
        phenology="climate:index_rates=fall")))
    assert fall == climate - {"leaf_growth_rate"}
    water = set(free_parameter_names(SiteCalibrationConfig(
        phenology="calendar:water_limited_release=true")))
    assert water == calendar | {"growing_season_water"}
    with pytest.raises(CalibrationConfigError, match="phenology"):
        SiteCalibrationConfig(phenology="gsi")


def test_streams_a_driver_lacks_are_left_out_with_a_notice(capsys):
    """Default streams the driver does not observe (no variable, or too few values in the
    calibration period) leave the loss with a one-line notice; asked for by name they are an
    error, and so is a driver that observes none of them."""
    import dataclasses
    from types import SimpleNamespace

    from differland.calibrate.site import MIN_OBSERVATIONS
    from differland.workflows import observed_streams

    def record(n_observed: int, n: int = 100):
        return SimpleNamespace(mask=np.arange(n) < n_observed)

    config = SiteCalibrationConfig()
    observations = {"gpp": record(50), "reco": record(MIN_OBSERVATIONS - 1, 100),
                    "lai": record(40)}
    kept = observed_streams(config, observations, "site.nc", required=False,
                            calibration_end=60)
    assert kept.streams == ("gpp", "lai")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("differland: notice: site.nc:")
    assert "reco (9)" in err and "et (no variable)" in err
    # observations after the calibration period do not count
    late = {"gpp": SimpleNamespace(mask=np.arange(100) >= 90)}
    with pytest.raises(CalibrationConfigError, match="gpp"):
        observed_streams(dataclasses.replace(config, streams=("gpp",)), late, "site.nc",
                         required=False, calibration_end=60)
    with pytest.raises(CalibrationConfigError, match="reco"):
        observed_streams(config, observations, "site.nc", required=True, calibration_end=60)


@pytest.mark.parametrize(("args", "expected"), [
    (["--workers", "abc"], "--workers: invalid int value"),
    (["--sites-dir", "x", "--out", "y", "--workers", "0"], "--workers: must be at least 1"),
    ([], "required: --sites-dir, --out"),
])
def test_sites_script_usage_errors_are_one_line(args, expected, tmp_path):
    completed = subprocess.run([sys.executable, str(REPO / "calibration" / "sites.py"), *args],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and expected in completed.stderr
    assert list(tmp_path.iterdir()) == []
