"""Variational posterior runs over many sites: ``differland posterior sites`` and
``differland posterior spatial``.

Both read the sites of a ``sites.csv`` (drivers ``<SITE_ID>.nc`` beside it, calibration
periods ending at each site's ``test_start``), fit over every site's calibration period, and
leave under ``out``:

* ``config.json`` (the configuration and the sites), ``svi.json`` (written last: settings,
  timing, ELBO and diagnostics per site), ``summary.csv`` (posterior mean, standard deviation
  and quantiles of every parameter at every site, physical units), ``coverage.csv`` (share of
  observed steps inside the 50 % and 90 % posterior predictive bands, per site, stream and
  period), ``figures/elbo.png``;
* per site, ``<SITE_ID>/posterior.nc`` (ArviZ InferenceData: ``posterior`` with one chain,
  ``sample_stats`` with the log densities of the draws, ``observed_data``),
  ``<SITE_ID>/predictive.nc`` and ``<SITE_ID>/figures/predictive.png``, as a NUTS run writes
  them;
* ``checkpoints/`` (the state a rerun resumes from).

``posterior spatial`` also writes ``predictors.json`` and ``network/seed_<seed>.npz`` (the
amortising network's guide parameters), and for the sites of ``--predict-csv`` (places the
network did not see) the same per-site files under ``predicted/<SITE_ID>/``.

Diagnostics of a variational fit: the ELBO's change over the last tenth of the steps, and the
Pareto k of importance weights posterior / guide at the draws (PSIS, Yao et al. 2018): below
0.7 the guide is close enough to the posterior for its draws to be trusted after
importance-weighting; above it the intervals of that site should not be trusted.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from differland import __version__
from differland.calibrate.bayes import (
    PosteriorConfig,
    bound_shares,
    latent_sites,
    posterior_config_from_dict,
    save_warmup_state,
    to_physical,
)
from differland.calibrate.gradient import CheckpointMismatchError
from differland.calibrate.site import CalibrationConfigError, make_site_problem
from differland.calibrate.variational import (
    SviSettings,
    check_supported,
    fit_network,
    fit_sites,
    log_densities,
    network_draws,
    network_svi,
    site_starts,
    svi_settings,
)
from differland.io import (
    output_error,
    read_json,
    write_atomically,
    write_dataset,
    write_json,
)
from differland.plots import new_figure
from differland.posterior_workflows import (
    BOUND_EDGE,
    BOUND_SHARE,
    QUANTILES,
    _arviz,
    _save,
    band_coverage,
    begin_run,
    observed_dataset,
    posterior_dataset,
    posterior_predictive,
    predictive_bands,
    predictive_dataset,
    predictive_figure,
    run_attrs,
    write_inference_data,
)
from differland.spatial.predictors import Standardizer, predictor_names
from differland.spatial.training import uniform_problems
from differland.spatial_workflows import read_sites
from differland.workflows import (
    observed_streams,
    package_digest,
    prepare_run_directory,
)

COMPLETION_RECORD = "svi.json"
"""The file a variational run writes last: a run directory without it is unfinished."""
RUN_FILES = ("config.json", "summary.csv", "coverage.csv", "predictors.json",
             COMPLETION_RECORD)
RUN_FIGURES = ("elbo.png",)
STATE_FOLDER = "checkpoints"
KIND = "variational_posterior"
SITE_FILES = ("posterior.nc", "predictive.nc", "figures/predictive.png")

PARETO_K_LIMIT = 0.7
"""Pareto k above which a site's variational posterior is flagged as unreliable."""

VARIATIONAL_KEYS = ("svi", "extra_predictors")
"""Keys of a variational configuration file besides those of a posterior configuration."""

SVI_OPTIONS = {"guide": "--guide", "steps": "--steps", "draws": "--draws", "seed": "--seed"}
"""SVI settings the command line sets, and their options."""


@dataclasses.dataclass(frozen=True)
class VariationalConfig:
    """A variational posterior run: the site posterior (priors, likelihood, options; its
    ``nuts.init_*`` settings drive the initialising fits) and the SVI settings."""

    posterior: PosteriorConfig = dataclasses.field(default_factory=PosteriorConfig)
    svi: SviSettings = dataclasses.field(default_factory=SviSettings)
    extra_predictors: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**self.posterior.to_dict(), "svi": self.svi.to_dict(),
                "extra_predictors": list(self.extra_predictors)}


def load_variational_config(path: str | Path | None, **overrides) -> VariationalConfig:
    """A :class:`VariationalConfig` from an optional JSON file (posterior keys plus
    :data:`VARIATIONAL_KEYS`) and :data:`SVI_OPTIONS` overrides (``None``: not given).

    Raises:
        DriverError: the file cannot be read as JSON.
        CalibrationConfigError: a key or value is refused (one line naming it).
    """
    values = {} if path is None else read_json(path)
    where = f"{path}: " if path is not None else ""
    if not isinstance(values, dict):
        raise CalibrationConfigError(f"{where}config: must be a JSON object")
    values = dict(values)
    svi_values = values.pop("svi", {})
    extra = values.pop("extra_predictors", [])
    try:
        posterior = posterior_config_from_dict(values)
        if not isinstance(svi_values, dict):
            raise CalibrationConfigError("config: svi must be an object")
        svi = svi_settings(svi_values)
        if not isinstance(extra, list) or not all(isinstance(x, str) and x for x in extra):
            raise CalibrationConfigError("config: extra_predictors must be a list of column "
                                         "names")
    except CalibrationConfigError as error:
        raise CalibrationConfigError(f"{where}{error}") from None
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        svi_settings({key: value}, svi, prefix=f"{SVI_OPTIONS[key]}: ")
    return VariationalConfig(posterior, svi_settings(given, svi, prefix=""), tuple(extra))


# --- sites -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Place:
    """A site of a run: its driver, full-record problem and calibration-window problem."""

    site: object
    problem: object
    training: object


def _places(sites: list, posterior: PosteriorConfig) -> tuple[list[_Place], PosteriorConfig]:
    """Each site's problems under one configuration whose streams are those any site
    observes; the training problems padded to one record length."""
    calibration = posterior.calibration
    per_site = [observed_streams(calibration, s.driver.observations, str(s.driver_path), False,
                                 s.driver.calibration_end) for s in sites]
    union = tuple(name for name in calibration.streams
                  if any(name in c.streams for c in per_site))
    calibration = dataclasses.replace(calibration, streams=union)
    posterior = dataclasses.replace(posterior, calibration=calibration)
    problems = [make_site_problem(s.driver.forcing, s.driver.observations, s.driver.dates,
                                  s.driver.calibration_end, c, source=str(s.driver_path))
                for s, c in zip(sites, per_site, strict=True)]
    full = uniform_problems(problems, calibration)
    full = [p.window(s.driver.n_steps) for p, s in zip(full, sites, strict=True)]
    training = uniform_problems([p.training_problem() for p in problems], calibration)
    return [_Place(s, f, t) for s, f, t in zip(sites, full, training, strict=True)], posterior


def _prepare(out: Path, inputs: list, overwrite: bool) -> str:
    return prepare_run_directory(out, inputs, overwrite, RUN_FILES, RUN_FIGURES, STATE_FOLDER,
                                 KIND, COMPLETION_RECORD)


def _clear(out: Path) -> None:
    """Remove what an earlier variational run wrote in ``out`` (the completion record
    first)."""
    try:
        previous = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    for name in (COMPLETION_RECORD, *RUN_FILES):
        (out / name).unlink(missing_ok=True)
    for name in RUN_FIGURES:
        (out / "figures" / name).unlink(missing_ok=True)
    for folder in [out / s for s in previous.get("sites", [])] + \
            [out / "predicted" / s for s in previous.get("predicted", [])]:
        for name in SITE_FILES:
            (folder / name).unlink(missing_ok=True)
    for folder in (out / STATE_FOLDER, out / "network"):
        if folder.is_dir():
            shutil.rmtree(folder)


def _check_site_files(out: Path, mode: str, folders: list[Path]) -> None:
    """A new run must not replace files it did not write in the sites' folders."""
    if mode != "new":
        return
    for folder in folders:
        for name in SITE_FILES:
            if (folder / name).exists():
                raise output_error(out, f"--out holds {folder / name}, which differland did "
                                        "not write; choose another run directory")


def _record(kind: str, config: VariationalConfig, sites: list, sites_csv: Path,
            predicted: list | None = None) -> dict:
    precision = "float64" if jax.config.jax_enable_x64 else "float32"
    base = {"config": config.to_dict(), "sites": [s.site_id for s in sites],
            "steps": [s.driver.n_steps for s in sites], "precision": precision,
            "differland_version": __version__, "source": package_digest(), "method": kind}
    if predicted is not None:
        base["predicted"] = [s.site_id for s in predicted]
    return {KIND: kind, "sites_csv": str(sites_csv), "sites": [s.site_id for s in sites],
            "predicted": [s.site_id for s in predicted or []],
            "differland_version": __version__, "differland_source_sha256": package_digest(),
            "jax_version": jax.__version__, "precision": precision,
            "devices": jax.local_device_count(), "variational": config.to_dict(),
            "fingerprint": json.dumps(base, sort_keys=True)}


def _starts(places: list[_Place], posterior: PosteriorConfig, path: Path, fingerprint: str,
            progress: bool, laplace: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Each site's start (best point of the initialising fit) and, with ``laplace``, the
    Laplace covariance there, saved to ``path`` and read back by a rerun."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as content:
            if str(content["fingerprint"]) != fingerprint:
                raise CheckpointMismatchError(f"{path}: made by another run; pass --overwrite")
            covariances = np.asarray(content["covariances"])
            return np.asarray(content["starts"]), covariances if covariances.size else None
    starts, covariances = site_starts([p.training for p in places], posterior, progress,
                                      laplace)

    def write(target: Path) -> None:
        with open(target, "wb") as file:
            np.savez(file, fingerprint=np.asarray(fingerprint), starts=starts,
                     covariances=np.zeros(0) if covariances is None else covariances)

    write_atomically(path, write)
    return starts, covariances


# --- per-site outputs --------------------------------------------------------------------------


def _elbo_summary(loss: np.ndarray) -> dict:
    """The ELBO over the last tenth of the steps and its change from the tenth before
    [nats], with the standard error of that change."""
    window = max(1, len(loss) // 10)
    last, before = loss[-window:], loss[-2 * window:-window]
    change = float(np.mean(before) - np.mean(last)) if len(before) else float("nan")
    error = float(np.sqrt(np.var(last) / len(last) + (np.var(before) / len(before)
                                                       if len(before) else 0.0)))
    return {"elbo": float(-np.mean(last)), "elbo_change_last_tenth": change,
            "elbo_change_standard_error": error,
            "elbo_stable": bool(abs(change) <= max(1.0, 3.0 * error))}


def pareto_k(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """Pareto k of the importance weights p / q of draws from q (ArviZ's PSIS): inf when a
    weight is not finite, 0 when the weights are equal (q is p up to a constant)."""
    log_weights = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    if not np.all(np.isfinite(log_weights)):
        return float("inf")
    if np.ptp(log_weights) <= 1e-9 * max(1.0, float(np.max(np.abs(log_weights)))):
        return 0.0
    _, k = _arviz().psislw(log_weights)
    return float(np.asarray(k))


def _site_outputs(folder: Path, place: _Place, posterior: PosteriorConfig, draws: np.ndarray,
                  log_q: np.ndarray, method: str) -> dict:
    """Write one site's InferenceData, predictive bands and figure; returns its record."""
    sites_names = latent_sites(place.training, posterior.structural_error)
    samples = to_physical(place.training, posterior,
                          {name: draws[None, :, j] for j, name in enumerate(sites_names)})
    log_p = log_densities(place.training, posterior, draws)
    k = pareto_k(log_p, log_q)
    driver = place.site.driver
    attrs = {**run_attrs(driver), "inference_method": method}
    coords = {"chain": ("chain", [0]), "draw": ("draw", np.arange(draws.shape[0]))}
    stats = xr.Dataset({
        "lp": xr.Variable(("chain", "draw"), log_p[None],
                          {"units": "nats", "long_name": "log posterior density "
                           "(unnormalised)"}),
        "log_q": xr.Variable(("chain", "draw"), np.asarray(log_q)[None],
                             {"units": "nats", "long_name": "log density of the variational "
                              "posterior"})}, coords=coords, attrs=attrs)
    idata = _arviz().InferenceData(
        posterior=posterior_dataset(samples, place.problem, posterior, attrs),
        sample_stats=stats, observed_data=observed_dataset(driver, place.problem, attrs))
    predictive = posterior_predictive(place.problem, posterior, samples, None)
    bands = predictive_bands(predictive, place.problem)
    coverage = band_coverage(bands, place.problem)
    write_inference_data(folder / "posterior.nc", idata)
    write_dataset(folder / "predictive.nc", predictive_dataset(bands, driver, place.problem, {
        "title": f"differland variational posterior of {driver.site_id}",
        "source": f"differland {__version__}", "driver": str(driver.path)}))
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    predictive_figure(folder / "figures" / "predictive.png", driver.dates, bands,
                      place.problem, f"{driver.site_id} ({method})")
    piled = bound_shares(samples, place.training, BOUND_EDGE)
    return {"pareto_k": k, "reliable": bool(k <= PARETO_K_LIMIT), "coverage": coverage,
            "at_bound": {name: shares for name, shares in piled.items()
                         if max(shares.values()) > BOUND_SHARE},
            "samples": samples}


def _summary_rows(site: str, samples: dict, role: str) -> list[dict]:
    rows = []
    for name, values in samples.items():
        values = np.asarray(values, np.float64).ravel()
        quantiles = np.quantile(values, QUANTILES)
        rows.append({"site": site, "role": role, "parameter": name,
                     "mean": float(values.mean()), "sd": float(values.std(ddof=1)),
                     **{f"q{round(100 * q):02d}": float(v)
                        for q, v in zip(QUANTILES, quantiles, strict=True)}})
    return rows


def _coverage_rows(site: str, coverage: dict, role: str) -> list[dict]:
    return [{"site": site, "role": role, "stream": stream, "period": period, **values}
            for stream, periods in coverage.items() for period, values in periods.items()]


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_atomically(path, lambda target: target.write_text(buffer.getvalue(),
                                                            encoding="utf-8"))


def _elbo_figure(path: Path, losses: dict[str, np.ndarray], title: str) -> None:
    fig, ax = new_figure(figsize=(8, 4))
    for label, loss in losses.items():
        window = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(len(smooth)) + window, smooth - np.min(smooth) + 1.0, lw=0.8,
                label=label)
    ax.set_yscale("log")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("negative ELBO - its minimum + 1 [nats]")
    ax.set_title(title)
    if len(losses) <= 12:
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    _save(fig, path)


def _median_coverage(records: dict, period: str, level: str) -> float:
    values = [v[period][f"coverage_{level}"] for r in records.values()
              for v in r["coverage"].values() if v[period]["observed_steps"]]
    return float(np.median(values)) if values else float("nan")


def _finish(out: Path, places: list[_Place], posterior: PosteriorConfig, draws: np.ndarray,
            log_q: np.ndarray, method: str, role: str, folder_of) -> tuple[dict, list, list]:
    records, summary, coverage = {}, [], []
    for i, place in enumerate(places):
        site = place.site.site_id
        record = _site_outputs(folder_of(site), place, posterior, draws[i], log_q[i], method)
        summary += _summary_rows(site, record.pop("samples"), role)
        coverage += _coverage_rows(site, record["coverage"], role)
        records[site] = record
    return records, summary, coverage


# --- the runs ----------------------------------------------------------------------------------


def posterior_sites(sites_dir: str | Path, out: str | Path,
                    config: VariationalConfig | None = None, *, sites_csv=None,
                    progress: bool = True, overwrite: bool = False, inputs: tuple = (),
                    stop_after: int | None = None) -> dict:
    """Per-site variational posteriors of every site of ``sites_csv`` (default
    ``sites_dir/sites.csv``), fitted together, and their run directory ``out``.

    ``stop_after`` stops after that many blocks of SVI steps, as if killed (tests of
    resumption); returns an empty dictionary then. Returns the record written to
    ``svi.json``.

    Raises:
        OutputError, DriverError, PredictorError, CalibrationConfigError,
        CheckpointMismatchError: before anything is computed.
    """
    config = config or VariationalConfig()
    out = Path(out)
    sites_csv = Path(sites_csv) if sites_csv else Path(sites_dir) / "sites.csv"
    mode = _prepare(out, [sites_csv, *inputs], overwrite)
    sites = read_sites(sites_csv, Path(sites_dir), config.extra_predictors)
    places, posterior = _places(sites, config.posterior)
    check_supported(posterior)
    _check_site_files(out, mode, [out / s.site_id for s in sites])
    record = _record("sites", config, sites, sites_csv)
    begin_run(out, mode, record, _clear, STATE_FOLDER,
              "variational run of another configuration, sites")
    started = time.perf_counter()
    starts, covariances = _starts(places, posterior, out / STATE_FOLDER / "starts.npz",
                                  record["fingerprint"], progress,
                                  config.svi.init == "laplace")
    init_seconds = time.perf_counter() - started
    result = fit_sites([p.training for p in places], posterior, config.svi, starts, covariances,
                       checkpoint_dir=out / STATE_FOLDER / "svi",
                       fingerprint=record["fingerprint"], progress=progress,
                       stop_after=stop_after)
    if not result.finished:
        return {}
    fit_seconds = time.perf_counter() - started
    method = f"SVI ({config.svi.guide} guide)"
    records, summary, coverage = _finish(out, places, posterior, result.draws, result.log_q,
                                         method, "fitted", lambda s: out / s)
    for i, place in enumerate(places):
        records[place.site.site_id].update(_elbo_summary(result.loss[:, i]))
    _elbo_figure(out / "figures" / "elbo.png",
                 {p.site.site_id: result.loss[:, i] for i, p in enumerate(places)},
                 f"{method}: {len(places)} sites")
    return _write_record(out, config, records, summary, coverage, {
        "initial_fit_seconds": init_seconds, "svi_seconds": result.seconds,
        "fit_seconds": fit_seconds, "wall_seconds": time.perf_counter() - started},
        result.resumed_from, method)


def posterior_spatial(sites_dir: str | Path, out: str | Path,
                      config: VariationalConfig | None = None, *, sites_csv=None,
                      predict_csv=None, progress: bool = True, overwrite: bool = False,
                      inputs: tuple = (), stop_after: int | None = None) -> dict:
    """A Bayesian spatialization network (amortised variational posterior; see
    :mod:`differland.calibrate.variational`) trained on the sites of ``sites_csv``, the
    posteriors it gives them, and those it predicts for the sites of ``predict_csv`` (their
    drivers in ``sites_dir`` too; their observations are used only to score the predictive
    bands). Writes the run directory ``out``; returns the record of ``svi.json``.
    """
    config = config or VariationalConfig()
    out = Path(out)
    sites_csv = Path(sites_csv) if sites_csv else Path(sites_dir) / "sites.csv"
    mode = _prepare(out, [sites_csv, predict_csv, *inputs], overwrite)
    sites = read_sites(sites_csv, Path(sites_dir), config.extra_predictors)
    if len(sites) < 2:
        raise CalibrationConfigError(f"{sites_csv}: a network needs at least two training "
                                     "sites")
    predicted = [] if predict_csv is None else read_sites(Path(predict_csv), Path(sites_dir),
                                                          config.extra_predictors)
    places, posterior = _places(sites + predicted, config.posterior)
    check_supported(posterior)
    training_places, predicted_places = places[:len(sites)], places[len(sites):]
    _check_site_files(out, mode, [out / s.site_id for s in sites]
                      + [out / "predicted" / s.site_id for s in predicted])
    names = predictor_names(config.extra_predictors)
    standardizer = Standardizer.fit([s.predictors for s in sites], names)
    record = _record("spatial", config, sites, sites_csv, predicted)
    record["predictors"] = list(names) + ["plant_functional_type"]
    begin_run(out, mode, record, _clear, STATE_FOLDER,
              "variational run of another configuration, sites")
    write_json(out / "predictors.json", standardizer.to_dict())
    started = time.perf_counter()
    inputs_matrix = standardizer.inputs([s.predictors for s in sites])
    results = fit_network([p.training for p in training_places], inputs_matrix, posterior,
                          config.svi, checkpoint_dir=out / STATE_FOLDER,
                          fingerprint=record["fingerprint"], progress=progress,
                          stop_after=stop_after)
    if not all(r.finished for r in results) or len(results) < len(config.svi.seeds):
        return {}
    fit_seconds = time.perf_counter() - started
    for seed, result in zip(config.svi.seeds, results, strict=True):
        save_warmup_state(out / "network" / f"seed_{seed}.npz", result.params,
                          record["fingerprint"])
    method = "SVI (amortised spatialization network)"
    draws, log_q = _mixture([r.draws for r in results], [r.log_q for r in results],
                            config.svi.draws)
    records, summary, coverage = _finish(out, training_places, posterior, draws, log_q,
                                         method, "fitted", lambda s: out / s)
    if predicted_places:
        new_inputs = standardizer.inputs([p.site.predictors for p in predicted_places])
        parts, part_q = [], []
        for seed, result in zip(config.svi.seeds, results, strict=True):
            guide = network_svi(posterior, result.names, config.svi, new_inputs.shape[1],
                                seed).guide
            key = jax.random.fold_in(jax.random.PRNGKey(config.svi.seed), 1000 + seed)
            d, q = network_draws(guide, result.params, new_inputs, config.svi.draws, key)
            parts.append(d)
            part_q.append(q)
        new_draws, new_q = _mixture(parts, part_q, config.svi.draws)
        more, more_summary, more_coverage = _finish(
            out, predicted_places, posterior, new_draws, new_q, method, "predicted",
            lambda s: out / "predicted" / s)
        for record_ in more.values():
            record_["role"] = "predicted"
        records.update(more)
        summary += more_summary
        coverage += more_coverage
    elbo = {f"seed {seed}": r.loss[:, 0] for seed, r in zip(config.svi.seeds, results,
                                                            strict=True)}
    _elbo_figure(out / "figures" / "elbo.png", elbo, f"{method}: {len(sites)} sites")
    extra = {"members": {str(seed): _elbo_summary(r.loss[:, 0])
                         for seed, r in zip(config.svi.seeds, results, strict=True)}}
    return _write_record(out, config, records, summary, coverage, {
        "svi_seconds": sum(r.seconds for r in results), "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - started}, results[0].resumed_from, method,
        extra)


def _mixture(parts: list[np.ndarray], log_qs: list[np.ndarray], count: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """The draws of an equal-weight mixture of members (``(places, draws, P)`` each):
    ``count`` draws taken in turn from each member; the log density is that of the member
    that drew it (the mixture's density is not computed)."""
    members = len(parts)
    draws = np.concatenate([p[:, :-(-count // members)] for p in parts], axis=1)[:, :count]
    log_q = np.concatenate([q[:, :-(-count // members)] for q in log_qs], axis=1)[:, :count]
    return draws, log_q


def _write_record(out: Path, config: VariationalConfig, records: dict, summary: list,
                  coverage: list, timing: dict, resumed_from, method: str,
                  extra: dict | None = None) -> dict:
    _write_csv(out / "summary.csv", summary)
    _write_csv(out / "coverage.csv", coverage)
    fitted = {k: v for k, v in records.items() if v.get("role", "fitted") == "fitted"}
    unreliable = sorted(site for site, r in records.items() if not r["reliable"])
    record = {
        "method": method, "svi": config.svi.to_dict(), "timing": timing,
        "resumed_from_step": resumed_from, "sites": records,
        "unreliable_sites": unreliable, "pareto_k_limit": PARETO_K_LIMIT,
        "median_coverage": {f"{period}_{level}": _median_coverage(fitted, period, level)
                            for period in ("calibration", "test") for level in ("50", "90")},
        **(extra or {}),
    }
    predicted = {k: v for k, v in records.items() if v.get("role") == "predicted"}
    if predicted:
        record["median_coverage_predicted"] = {
            f"{period}_{level}": _median_coverage(predicted, period, level)
            for period in ("calibration", "test") for level in ("50", "90")}
    write_json(out / COMPLETION_RECORD, record)
    return record


def summary_line(out: Path, record: dict) -> str:
    """The one line the command prints when a run is written."""
    coverage = record["median_coverage"]
    flagged = record["unreliable_sites"]
    return (f"wrote {out}: {len(record['sites'])} sites in "
            f"{record['timing']['wall_seconds']:.0f} s; median test coverage of the 50/90 % "
            f"bands {coverage['test_50']:.2f}/{coverage['test_90']:.2f}; "
            + (f"Pareto k > {PARETO_K_LIMIT} at {', '.join(flagged)}" if flagged
               else "every site's Pareto k within the limit"))

