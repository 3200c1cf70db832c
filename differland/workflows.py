"""End-to-end workflows that read files, run the library and write a run directory.

``calibrate_site`` leaves, under ``out``: ``config.json``, ``params.json`` (loadable by
``differland simulate --params``), ``network.json`` (the weights of the neural terms,
``{term: layers}``, for ``differland simulate --network``), ``metrics.json`` (skill per
variable and period, optimiser diagnostics), ``simulation.nc`` (CF NetCDF over the full
record), ``figures/*.png`` and ``checkpoints/`` (orbax; a rerun with the same configuration
resumes from them).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from differland import __version__
from differland._pytree import as_dict
from differland.calibrate.gradient import NonFiniteLossError, check_checkpoint, fit
from differland.calibrate.site import (
    MIN_OBSERVATIONS,
    CalibrationConfigError,
    SiteCalibrationConfig,
    make_site_problem,
)
from differland.io import (
    check_writable_location,
    output_error,
    read_site_driver,
    remove_stale_temporaries,
    simulation_dataset,
    write_dataset,
    write_json,
    write_parameter_json,
)
from differland.metrics import skill
from differland.observations import predict
from differland.plots import scatter_figure, time_series_figure

EVALUATED = ("gpp", "reco", "nee", "et", "lai")

COMPLETION_RECORD = "metrics.json"
"""The file a calibration run writes last: a run directory without it is unfinished."""
RUN_FILES = ("config.json", "params.json", "network.json", "simulation.nc", COMPLETION_RECORD)
"""Files of a run directory that differland writes (and, with ``overwrite``, replaces)."""
RUN_FIGURES = ("time_series.png", "scatter_test.png")
"""Figures under ``figures/`` that differland writes."""
CHECKPOINTS = "checkpoints"


def notice(message: str) -> None:
    """Tell the user something that is not an error, on one line of stderr."""
    print(f"differland: notice: {' '.join(message.split())}", file=sys.stderr)


def _is_run_record(path: Path, kind: str = "calibration") -> bool:
    """Whether ``path`` is the ``config.json`` differland wrote for a run of ``kind``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "differland_version" in record and kind in record


def prepare_run_directory(out: str | Path, inputs: list, overwrite: bool,
                          run_files: tuple[str, ...] = RUN_FILES,
                          figures: tuple[str, ...] = RUN_FIGURES,
                          state_folder: str = CHECKPOINTS, kind: str = "calibration",
                          completion: str = COMPLETION_RECORD) -> str:
    """Decide, before anything is computed, what a calibration may do with ``out``.

    A missing or empty folder is a new run; a folder of an unfinished differland run (its
    ``config.json``, no :data:`COMPLETION_RECORD`) is resumed from its checkpoints; a finished
    run is replaced only with ``overwrite``, and then only the files differland wrote. A
    folder with other content is used only with ``overwrite`` and only when none of the run's
    file names is taken.

    Args:
        out: the run directory.
        inputs: input paths of the run (``None`` entries skipped): none may be inside ``out``
            where the run writes.
        overwrite: whether the user asked to replace a finished run.
        run_files: the files a run of this kind writes in ``out``.
        figures: the files it writes under ``figures/``.
        state_folder: the folder of its resumable state.
        kind: the key that marks a ``config.json`` of a run of this kind.
        completion: the file such a run writes last (a run without it is unfinished).

    Returns:
        ``"new"``, ``"resume"`` or ``"replace"``.

    Raises:
        OutputError: one line naming ``out`` and why it cannot be used.
    """
    out = Path(out)
    owned = [out / name for name in run_files] + [out / "figures" / name for name in figures]
    for source in inputs:
        if source is None:
            continue
        source = Path(source).resolve()
        if source == out.resolve() or source in {path.resolve() for path in owned} or (
                out.resolve() / state_folder) in source.parents:
            raise output_error(out, f"--out would overwrite the input {source}")
    if out.exists() and not out.is_dir():
        raise output_error(out, "--out is an existing file; a run directory is a folder")
    check_writable_location(out / run_files[0])
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if not _is_run_record(out / "config.json", kind):
        taken = [name for name in (*run_files, state_folder) if (out / name).exists()]
        if taken:
            raise output_error(out, f"--out holds {', '.join(taken)} that differland did not "
                                    "write; choose another run directory")
        if not overwrite:
            raise output_error(out, "--out exists and is not a differland run; pass "
                                    "--overwrite to add the run to it (its files are kept)")
        return "new"
    if (out / completion).exists() and not overwrite:
        raise output_error(out, "--out holds a finished run; pass --overwrite to replace it")
    return "replace" if overwrite else "resume"


def clear_run_directory(out: Path) -> None:
    """Remove what an earlier run wrote in ``out`` (the completion record first)."""
    import shutil

    for name in (COMPLETION_RECORD, *RUN_FILES):
        (out / name).unlink(missing_ok=True)
    for name in RUN_FIGURES:
        (out / "figures" / name).unlink(missing_ok=True)
    if (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)


def observed_streams(config: SiteCalibrationConfig, observations, source: str,
                     required: bool, calibration_end: int | None = None):
    """``config`` with its streams limited to those the driver observes.

    A stream counts as observed when the driver has its variable with at least
    :data:`~differland.calibrate.site.MIN_OBSERVATIONS` values in the calibration period
    (the first ``calibration_end`` steps; the whole record when ``None``).

    Args:
        config: the calibration configuration.
        observations: the driver's observation records by stream name.
        source: the driver, for messages.
        required: whether every stream of ``config`` was asked for by name (then a missing one
            is an error); otherwise missing streams are left out with a notice.
        calibration_end: number of calibration steps.

    Raises:
        CalibrationConfigError: a required stream is missing, or none is observed.
    """
    def count(name: str) -> int:
        if name not in observations:
            return 0
        return int(np.count_nonzero(np.asarray(observations[name].mask)[:calibration_end]))

    counts = {name: count(name) for name in config.streams}
    absent = {name: n for name, n in counts.items() if n < MIN_OBSERVATIONS}
    if not absent:
        return config
    kept = tuple(name for name in config.streams if name not in absent)
    described = ", ".join(f"{name} ({'no variable' if name not in observations else n})"
                          for name, n in absent.items())
    if required or not kept:
        raise CalibrationConfigError(
            f"{source}: too few observations in the calibration period for stream(s) "
            f"{described}; at least {MIN_OBSERVATIONS} are needed (the driver has "
            f"{', '.join(sorted(observations)) or 'none'}); choose others with --streams")
    notice(f"{source}: too few observations in the calibration period for {described}; "
           f"fitting {', '.join(kept)} only")
    return dataclasses.replace(config, streams=kept)


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
    try:
        refined = fit(*problem.refine_arguments(), jax.tree.map(lambda x: x[None], result.best),
                      config.refine_settings, progress=progress, description=f"{label} refine")
    except NonFiniteLossError:  # the selected values stand
        return result.best, {"iterations": 0, "calibration_loss_before": before,
                             "calibration_loss_after": None, "accepted": False,
                             "nonfinite_steps_skipped": None}
    after = float(refined.selection_loss[0])
    accepted = bool(np.isfinite(after) and after < before)
    record = {"iterations": refined.iterations, "calibration_loss_before": before,
              "calibration_loss_after": after, "accepted": accepted,
              "nonfinite_steps_skipped": int(refined.nonfinite_steps[0])}
    return (refined.best if accepted else result.best), record


def calibrate_site(driver_path: str | Path, out: str | Path,
                   config: SiteCalibrationConfig | None = None, progress: bool = True,
                   stop_after_chunks: int | None = None, overwrite: bool = False,
                   streams_required: bool = False, inputs: tuple = (),
                   prior: dict | None = None) -> dict:
    """Calibrate one site and write its run directory; returns the metrics dictionary.

    Args:
        driver_path: CARDAMOM-style site driver (split from a ``sites.csv`` beside it, or the
            first ceil(years/2) calendar years).
        out: run directory (created; an unfinished run there is resumed from its checkpoints
            if they match the config; see :func:`prepare_run_directory`).
        config: calibration configuration (default: :class:`SiteCalibrationConfig()`).
        progress: show a progress bar.
        stop_after_chunks: stop the optimiser early, as if killed (tests of resumption);
            the function then returns an empty dictionary and writes no results.
        overwrite: replace a finished run in ``out`` (only the files differland wrote).
        streams_required: every stream of ``config`` must be observed (else streams the
            driver lacks are left out with a notice).
        inputs: further input files (a configuration file), which ``out`` must not replace.
        prior: a spatialization network's prediction for the site, ``{"params": unconstrained
            ParameterSet of the free parameters, "network": hybrid weights or None, "model":
            model directory}``: the starts begin there and the loss pulls toward it
            (``config.prior_weight``).

    Raises:
        OutputError, DriverError, CalibrationConfigError: before anything is written.
    """
    config = config or SiteCalibrationConfig()
    out = Path(out)
    mode = prepare_run_directory(out, [driver_path, *inputs], overwrite)
    driver = read_site_driver(driver_path)
    config = observed_streams(config, driver.observations, str(driver_path), streams_required,
                              driver.calibration_end)
    started = time.perf_counter()
    config_record = {"driver": str(driver_path),
                     "driver_resolved": str(Path(driver_path).resolve()), "site": driver.site_id,
                     "differland_version": __version__,
                     "differland_source_sha256": package_digest(),
                     "jax_version": jax.__version__,
                     "precision": "float64" if jax.config.jax_enable_x64 else "float32",
                     "calibration": config.to_dict()}
    if prior is not None:
        config_record["finetune_model"] = str(prior["model"])
    # a checkpoint resumes only the same problem: configuration, data, precision, version and
    # code (an edited model is a new problem); a refused one leaves the run directory as it was
    fingerprint = json.dumps({"config": config.to_dict(), "site": driver.site_id,
                              "steps": driver.n_steps, "precision": config_record["precision"],
                              "differland_version": __version__,
                              "source": config_record["differland_source_sha256"],
                              **({} if prior is None else {"prior": jax.tree.map(
                                  lambda x: np.asarray(x).round(6).tolist(),
                                  {"params": prior["params"].to_dict(),
                                   "network": prior["network"]})})},
                             sort_keys=True)
    if mode == "resume":
        check_checkpoint(out / CHECKPOINTS, config.gradient, fingerprint)
    # built before anything is written: a driver that lacks a stream leaves no run directory
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, config, source=str(driver_path))
    if mode == "replace":
        clear_run_directory(out)
    for folder in (out, out / "figures"):
        for leftover in remove_stale_temporaries(folder):
            notice(f"removed {leftover}, left by an interrupted write")
    write_json(out / "config.json", config_record)

    if prior is not None:
        problem = dataclasses.replace(problem, prior=prior["params"])
    initial = problem.initial_guesses(config.gradient.n_starts, config.gradient.seed,
                                      network=None if prior is None else prior["network"])
    training = problem.training_problem()
    result = fit(*training.fit_arguments(), initial, config.gradient,
                 checkpoint_dir=out / CHECKPOINTS, progress=progress,
                 description=driver.site_id, fingerprint_extra=fingerprint,
                 stop_after_chunks=stop_after_chunks)
    if not result.finished:
        return {}
    best, refinement = refine_selected(training, config, result, progress, driver.site_id)

    params, trajectory, terms = jax.device_get(jax.jit(problem.evaluate)(best))
    if training is not problem:  # the loss terms the optimiser saw
        terms = jax.device_get(jax.jit(training.loss_terms)(best, training.calibration_steps))
    finetune = None if prior is None else {"model": str(prior["model"]),
                                           "prior_weight": config.prior_weight}
    optimisation = {
        "best_start": result.best_index,
        "selection_loss": result.selection_loss.tolist(),
        "validation_loss": result.validation_loss.tolist(),
        "iterations": result.iterations,
        "nonfinite_steps_skipped": result.nonfinite_steps.tolist(),
        "stopped_early": result.stopped_early,
        "resumed_from_iteration": result.resumed_from,
        "refinement": refinement,
        "wall_seconds": time.perf_counter() - started,
    }
    return write_run_results(out, driver, driver_path, config, problem, params, trajectory,
                             best.get("network"),
                             {"loss_terms_calibration": {k: float(v) for k, v in terms.items()},
                              "optimisation": optimisation,
                              **({"finetune": finetune} if finetune else {})})


def write_run_results(out: Path, driver, driver_path, config: SiteCalibrationConfig, problem,
                      params, trajectory, network, record: dict, title: str = "calibrated"
                      ) -> dict:
    """Write the results of a run directory from a simulation over the whole record:
    ``params.json``, ``network.json`` (with neural terms), ``simulation.nc``, the figures and,
    last, ``metrics.json`` (skill per variable and period plus ``record``); returns the
    metrics."""
    predictions = {name: np.asarray(predict(name, trajectory, params, problem.forcing))
                   for name in EVALUATED}
    calibration = problem.periods.calibration > 0
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for name in EVALUATED:
        observations = driver.observations.get(name)
        if observations is None:
            continue
        observed = np.where(observations.mask, observations.values, np.nan)
        scores[name] = {
            "calibration": skill(predictions[name], observed, calibration),
            "test": skill(predictions[name], observed, ~calibration),
        }
    metrics = {
        "site": driver.site_id,
        "periods": {
            "calibration": [str(driver.dates[0]), str(driver.dates[driver.calibration_end - 1])],
            "test": [str(driver.dates[driver.calibration_end]), str(driver.dates[-1])]
            if driver.calibration_end < driver.n_steps else None,
        },
        "skill": scores,
        **record,
    }
    write_parameter_json(out / "params.json", jax.tree.map(float, params))
    if network is not None:
        write_json(out / "network.json", jax.tree.map(lambda x: np.asarray(x).tolist(),
                                                      network))
    states = {k: np.asarray(v) for k, v in as_dict(trajectory.states).items()}
    outputs = {k: np.asarray(v) for k, v in as_dict(trajectory.outputs).items()}
    dataset = simulation_dataset(
        driver.dates, states, outputs, {k: float(v) for k, v in params.items()}, config.model,
        {"title": f"differland {title} {config.model} simulation of {driver.site_id}",
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
