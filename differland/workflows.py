"""End-to-end workflows that read files, run the library and write a run directory.

``calibrate_site`` leaves, under ``out``: ``config.json``, ``params.json`` (loadable by
``differland simulate --params``), ``network.json`` (the weights of the neural terms,
``{term: layers}``, for ``differland simulate --network``), ``metrics.json`` (skill per
variable and period, optimiser diagnostics), ``simulation.nc`` (CF NetCDF over the full
record), ``figures/*.png`` and ``checkpoints/`` (orbax; a rerun with the same configuration
resumes from them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import jax
import numpy as np

from differland import __version__
from differland._pytree import as_dict
from differland.calibrate.gradient import check_checkpoint, fit
from differland.calibrate.site import SiteCalibrationConfig, make_site_problem
from differland.io import (
    read_site_driver,
    simulation_dataset,
    write_dataset,
    write_json,
    write_parameter_json,
)
from differland.metrics import skill
from differland.observations import predict
from differland.plots import scatter_figure, time_series_figure

EVALUATED = ("gpp", "reco", "nee", "et", "lai")


def source_digest(root: str | Path) -> str:
    """SHA-256 of the ``*.py`` files under ``root`` (relative paths and contents, sorted)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.cache
def package_digest() -> str:
    """:func:`source_digest` of the installed differland package (computed once)."""
    return source_digest(Path(__file__).parent)


def refine_selected(problem, config: SiteCalibrationConfig, result, progress: bool,
                    label: str):
    """Continue the selected start on the whole calibration period.

    Early stopping held the validation slice out of training; once it has chosen the start,
    ``config.refine_iterations`` further Adam iterations fit that start to every
    calibration day. The refined values replace the selected ones only if they lower the
    calibration-period loss. Not checkpointed: the refinement starts from the (resumable)
    selected start and is deterministic, so a resumed run repeats it exactly.

    Returns ``(values, record)``: the values to use and what ``metrics.json`` records
    (``None`` when the refinement is off).
    """
    if not config.refine_iterations:
        return result.best, None
    before = float(result.selection_loss[result.best_index])
    refined = fit(*problem.refine_arguments(), jax.tree.map(lambda x: x[None], result.best),
                  config.refine_settings, progress=progress, description=f"{label} refine")
    after = float(refined.selection_loss[0])
    accepted = bool(np.isfinite(after) and after < before)
    record = {"iterations": refined.iterations, "calibration_loss_before": before,
              "calibration_loss_after": after, "accepted": accepted,
              "nonfinite_steps_skipped": int(refined.nonfinite_steps[0])}
    return (refined.best if accepted else result.best), record


def calibrate_site(driver_path: str | Path, out: str | Path,
                   config: SiteCalibrationConfig | None = None, progress: bool = True,
                   stop_after_chunks: int | None = None) -> dict:
    """Calibrate one site and write its run directory; returns the metrics dictionary.

    Args:
        driver_path: CARDAMOM-style site driver (split from a ``sites.csv`` beside it, or the
            first ceil(years/2) calendar years).
        out: run directory (created; resumed from its checkpoints if they match the config).
        config: calibration configuration (default: :class:`SiteCalibrationConfig()`).
        progress: show a progress bar.
        stop_after_chunks: stop the optimiser early, as if killed (tests of resumption);
            the function then returns an empty dictionary and writes no results.
    """
    config = config or SiteCalibrationConfig()
    out = Path(out)
    driver = read_site_driver(driver_path)
    started = time.perf_counter()
    config_record = {"driver": str(driver_path),
                     "driver_resolved": str(Path(driver_path).resolve()), "site": driver.site_id,
                     "differland_version": __version__,
                     "differland_source_sha256": package_digest(),
                     "jax_version": jax.__version__,
                     "precision": "float64" if jax.config.jax_enable_x64 else "float32",
                     "calibration": config.to_dict()}
    # a checkpoint resumes only the same problem: configuration, data, precision, version and
    # code (an edited model is a new problem); a refused one leaves the run directory as it was
    fingerprint = json.dumps({"config": config.to_dict(), "site": driver.site_id,
                              "steps": driver.n_steps, "precision": config_record["precision"],
                              "differland_version": __version__,
                              "source": config_record["differland_source_sha256"]},
                             sort_keys=True)
    check_checkpoint(out / "checkpoints", config.gradient, fingerprint)
    # built before anything is written: a driver that lacks a stream leaves no run directory
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, config, source=str(driver_path))
    write_json(out / "config.json", config_record)

    initial = problem.initial_guesses(config.gradient.n_starts, config.gradient.seed)
    training = problem.training_problem()
    result = fit(*training.fit_arguments(), initial, config.gradient,
                 checkpoint_dir=out / "checkpoints", progress=progress,
                 description=driver.site_id, fingerprint_extra=fingerprint,
                 stop_after_chunks=stop_after_chunks)
    if not result.finished:
        return {}
    best, refinement = refine_selected(training, config, result, progress, driver.site_id)

    params, trajectory, terms = jax.device_get(jax.jit(problem.evaluate)(best))
    if training is not problem:  # the loss terms the optimiser saw
        terms = jax.device_get(jax.jit(training.loss_terms)(best, training.calibration_steps))
    predictions = {name: np.asarray(predict(name, trajectory, params, problem.forcing))
                   for name in EVALUATED}
    calibration = problem.periods.calibration > 0
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for name in EVALUATED:
        record = driver.observations.get(name)
        if record is None:
            continue
        observed = np.where(record.mask, record.values, np.nan)
        scores[name] = {
            "calibration": skill(predictions[name], observed, calibration),
            "test": skill(predictions[name], observed, ~calibration),
        }
    terms = {k: float(v) for k, v in terms.items()}
    metrics = {
        "site": driver.site_id,
        "periods": {
            "calibration": [str(driver.dates[0]), str(driver.dates[driver.calibration_end - 1])],
            "test": [str(driver.dates[driver.calibration_end]), str(driver.dates[-1])]
            if driver.calibration_end < driver.n_steps else None,
        },
        "skill": scores,
        "loss_terms_calibration": terms,
        "optimisation": {
            "best_start": result.best_index,
            "selection_loss": result.selection_loss.tolist(),
            "validation_loss": result.validation_loss.tolist(),
            "iterations": result.iterations,
            "nonfinite_steps_skipped": result.nonfinite_steps.tolist(),
            "stopped_early": result.stopped_early,
            "resumed_from_iteration": result.resumed_from,
            "refinement": refinement,
            "wall_seconds": time.perf_counter() - started,
        },
    }
    write_parameter_json(out / "params.json", jax.tree.map(float, params))
    if best.get("network") is not None:
        write_json(out / "network.json", jax.tree.map(lambda x: np.asarray(x).tolist(),
                                                      best["network"]))
    states = {k: np.asarray(v) for k, v in as_dict(trajectory.states).items()}
    outputs = {k: np.asarray(v) for k, v in as_dict(trajectory.outputs).items()}
    dataset = simulation_dataset(
        driver.dates, states, outputs, {k: float(v) for k, v in params.items()}, config.model,
        {"title": f"differland calibrated {config.model} simulation of {driver.site_id}",
         "source": f"differland {__version__}", "driver": str(driver_path),
         "calibration_period_end": str(driver.dates[driver.calibration_end - 1])})
    write_dataset(out / "simulation.nc", dataset)
    observed = {name: np.where(driver.observations[name].mask,
                               driver.observations[name].values, np.nan)
                for name in EVALUATED if name in driver.observations}
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    split_date = driver.dates[min(driver.calibration_end, driver.n_steps - 1)]
    time_series_figure(figures / "time_series.png", driver.dates, observed, predictions,
                       split_date, driver.site_id)
    scatter_figure(figures / "scatter_test.png", observed, predictions, ~calibration,
                   {k: v["test"] for k, v in scores.items()}, f"{driver.site_id}, test period")
    write_json(out / "metrics.json", metrics)
    return metrics
