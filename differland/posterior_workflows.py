"""The site posterior workflow: read a driver, sample the posterior with NUTS, write a run.

``posterior_site`` leaves, under ``out``:

* ``config.json``: the posterior configuration, driver, precision and provenance;
* ``posterior.nc``: ArviZ InferenceData (NetCDF): ``posterior`` with one variable per free
  parameter, named as in the registry, in its physical units (and ``error_scale_<stream>``
  with structural errors); ``sample_stats`` of NUTS; ``observed_data`` (NaN in gaps);
* ``predictive.nc``: per stream and step over the whole record, the 5/25/50/75/95 %
  quantiles of the posterior predictive (``<stream>``, with observation noise) and of the
  model prediction (``<stream>_model``, without), the observations and the period of each
  step;
* ``diagnostics.json`` (written last: a run directory without it is unfinished) and
  ``diagnostics.md``: R-hat, ESS, divergences, tree depth, parameters piled at a bound,
  chains in separate modes, wall time, ESS per second, predictive coverage, ``converged``;
* ``figures/``: ``trace.png``, ``rank.png``, ``pair.png``, ``predictive.png``;
* ``nuts/``: the initialising fit and the post-warmup state: a rerun of an interrupted run
  samples from that state, drawing what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from differland import __version__
from differland.calibrate.bayes import (
    ERROR_SCALE_PREFIX,
    OBSERVATION_PREFIX,
    PREDICTION_PREFIX,
    PosteriorConfig,
    bound_shares,
    divergence_gathering,
    divergence_positions,
    initial_fit,
    laplace_inverse_mass,
    latent_sites,
    likelihood_streams,
    max_depth_share,
    nuts_settings,
    posterior_config_from_dict,
    predictive_draws,
    run_nuts,
    separated_chains,
    tree_depth,
)
from differland.calibrate.gradient import CheckpointMismatchError
from differland.calibrate.site import (
    CalibrationConfigError,
    free_parameter_names,
    make_site_problem,
)
from differland.io import (
    cf_time_coordinate,
    read_json,
    read_site_driver,
    remove_stale_temporaries,
    write_atomically,
    write_dataset,
    write_json,
)
from differland.observations import OPERATORS
from differland.params import SPECS
from differland.plots import new_figure
from differland.workflows import (
    notice,
    observed_streams,
    package_digest,
    prepare_run_directory,
)

COMPLETION_RECORD = "diagnostics.json"
"""The file a posterior run writes last: a run directory without it is unfinished."""
RUN_FILES = ("config.json", "posterior.nc", "predictive.nc", "diagnostics.md",
             COMPLETION_RECORD)
"""Files of a posterior run directory that differland writes."""
RUN_FIGURES = ("trace.png", "rank.png", "pair.png", "predictive.png")
"""Figures under ``figures/`` that differland writes."""
STATE_FOLDER = "nuts"
INITIAL_FILE = "initial.npz"
WARMUP_FILE = "warmup_state.npz"

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Quantiles of the predictive bands."""
MAX_PREDICTIVE_DRAWS = 1000
"""Posterior draws (evenly spaced over the chains' draws) that the predictive bands use."""

R_HAT_LIMIT = 1.01
"""Largest rank-normalised split R-hat of a converged run."""
ESS_PER_CHAIN = 100
"""Smallest bulk and tail ESS of a converged run, per chain (400 for 4 chains)."""
MODE_DISTANCE = 3.0
"""Distance [pooled within-chain sd] from which a chain's mean counts as another mode."""
BFMI_LIMIT = 0.3
"""E-BFMI below which a chain is reported."""
BOUND_EDGE = 0.01
"""Width of a bound's edge, as a share of the box on the parameter's scale."""
BOUND_SHARE = 0.1
"""Share of draws in a bound's edge from which a parameter counts as piled at it."""
FIGURE_PARAMETERS = 8
"""Parameters in the trace and rank figures (those of largest R-hat)."""


class PosteriorNotConvergedError(RuntimeError):
    """The run finished and was written, but its diagnostics say it has not converged."""


def prepare_posterior_directory(out: str | Path, inputs: list, overwrite: bool) -> str:
    """What a posterior run may do with ``out`` (``"new"``, ``"resume"`` or ``"replace"``):
    the rules of :func:`differland.workflows.prepare_run_directory` for the files of a
    posterior run.

    Raises:
        OutputError: one line naming ``out`` and why it cannot be used.
    """
    return prepare_run_directory(out, inputs, overwrite, RUN_FILES, RUN_FIGURES, STATE_FOLDER,
                                 "posterior", COMPLETION_RECORD)


def clear_posterior_directory(out: Path) -> None:
    """Remove what an earlier posterior run wrote in ``out`` (the completion record first)."""
    for name in (COMPLETION_RECORD, *RUN_FILES):
        (out / name).unlink(missing_ok=True)
    for name in RUN_FIGURES:
        (out / "figures" / name).unlink(missing_ok=True)
    for name in (INITIAL_FILE, WARMUP_FILE):
        (out / STATE_FOLDER / name).unlink(missing_ok=True)


NUTS_OPTIONS = {"chains": "--chains", "warmup": "--warmup", "samples": "--samples",
                "thin": "--thin", "seed": "--seed", "dense_mass": "--dense-mass"}
"""Sampler settings the command line sets, and their options."""


def load_posterior_config(path: str | Path | None, **overrides) -> PosteriorConfig:
    """A :class:`PosteriorConfig` from an optional JSON file plus sampler overrides.

    Args:
        path: JSON posterior configuration, or ``None`` for the defaults.
        overrides: keys of :data:`NUTS_OPTIONS`; ``None`` values are not overrides.

    Raises:
        DriverError: the file cannot be read as JSON.
        CalibrationConfigError: a key, value or prior of the file, or an override, is refused
            (one line naming it).
    """
    values = {} if path is None else read_json(path)
    try:
        config = posterior_config_from_dict(values)
    except CalibrationConfigError as error:
        if path is None:
            raise
        raise CalibrationConfigError(f"{path}: {error}") from None
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        nuts_settings({key: value}, config.nuts, prefix=f"{NUTS_OPTIONS[key]}: ")
    return dataclasses.replace(config, nuts=nuts_settings(given, config.nuts, prefix=""))


# --- the run ----------------------------------------------------------------------------------


def site_posterior_problem(driver_path: str | Path, config: PosteriorConfig,
                           streams_required: bool = False):
    """The driver, the configuration limited to the streams it observes, and the site
    problem that :func:`posterior_site` samples (its whole record; the sampler sees its
    ``training_problem()``).

    Raises:
        DriverError, CalibrationConfigError: an unreadable driver, or a stream asked for by
            name that it lacks (with ``streams_required``).
    """
    driver = read_site_driver(driver_path)
    calibration = observed_streams(config.calibration, driver.observations, str(driver_path),
                                   streams_required, driver.calibration_end)
    config = dataclasses.replace(config, calibration=calibration)
    problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                                driver.calibration_end, calibration, source=str(driver_path))
    return driver, config, problem


def posterior_site(driver_path: str | Path, out: str | Path,
                   config: PosteriorConfig | None = None, *, chains: int | None = None,
                   warmup: int | None = None, samples: int | None = None,
                   thin: int | None = None, seed: int | None = None,
                   dense_mass: bool | None = None, strict: bool = False, progress: bool = True,
                   overwrite: bool = False, inputs: tuple = (), streams_required: bool = False,
                   stop_after_warmup: bool = False) -> dict:
    """Sample the posterior of one site's calibration and write its run directory.

    Args:
        driver_path: CARDAMOM-style site driver (calibration period from a ``sites.csv``
            beside it, else the first ceil(years/2) calendar years).
        out: run directory (an unfinished run there is resumed; see
            :func:`prepare_posterior_directory`).
        config: posterior configuration (default :class:`PosteriorConfig()`).
        chains: overrides ``config.nuts.chains``.
        warmup: overrides ``config.nuts.warmup``.
        samples: overrides ``config.nuts.samples``.
        thin: overrides ``config.nuts.thin``.
        seed: overrides ``config.nuts.seed``.
        dense_mass: overrides ``config.nuts.dense_mass``.
        strict: raise :class:`PosteriorNotConvergedError` after writing everything when the
            diagnostics say the run has not converged.
        progress: show progress bars.
        overwrite: replace a finished run in ``out`` (only the files differland wrote).
        inputs: further input files (a configuration file), which ``out`` must not replace.
        streams_required: every stream of the configuration must be observed (else streams
            the driver lacks are left out with a notice).
        stop_after_warmup: stop once the warmup state is saved, as if killed (tests of
            resumption); returns an empty dictionary.

    Returns:
        The diagnostics (as ``diagnostics.json``).

    Raises:
        OutputError, DriverError, CalibrationConfigError, CheckpointMismatchError: before
            anything is written.
    """
    config = config or PosteriorConfig()
    given = {key: value for key, value in {"chains": chains, "warmup": warmup,
                                           "samples": samples, "thin": thin, "seed": seed,
                                           "dense_mass": dense_mass}.items()
             if value is not None}
    config = dataclasses.replace(config, nuts=nuts_settings(given, config.nuts, prefix=""))
    out = Path(out)
    mode = prepare_posterior_directory(out, [driver_path, *inputs], overwrite)
    driver, config, problem = site_posterior_problem(driver_path, config, streams_required)
    precision = "float64" if jax.config.jax_enable_x64 else "float32"
    fingerprint = json.dumps({"config": config.to_dict(), "site": driver.site_id,
                              "steps": driver.n_steps, "precision": precision,
                              "differland_version": __version__, "source": package_digest()},
                             sort_keys=True)
    record = {"driver": str(driver_path), "driver_resolved": str(Path(driver_path).resolve()),
              "site": driver.site_id, "differland_version": __version__,
              "differland_source_sha256": package_digest(), "jax_version": jax.__version__,
              "precision": precision, "devices": jax.local_device_count(),
              "posterior": config.to_dict(), "fingerprint": fingerprint}
    training = problem.training_problem()
    begin_run(out, mode, record, clear_posterior_directory, STATE_FOLDER,
              "posterior run of another configuration, driver")

    started = time.perf_counter()
    initial, init_seconds = _initial_values(training, config, out / STATE_FOLDER / INITIAL_FILE,
                                            fingerprint, progress)
    result = run_nuts(training, config, initial["chain_starts"], network=initial["network"],
                      inverse_mass=initial["inverse_mass"],
                      state_path=out / STATE_FOLDER / WARMUP_FILE, fingerprint=fingerprint,
                      stop_after_warmup=stop_after_warmup, progress=progress)
    if result is None:
        return {}
    wall_seconds = time.perf_counter() - started
    draws = posterior_predictive(problem, config, result.samples, initial["network"])
    bands = predictive_bands(draws, problem)
    coverage = band_coverage(bands, problem)
    idata = inference_data(result, driver, problem, config)
    diagnostics = posterior_diagnostics(idata, result, training, config)
    diagnostics.update({
        "site": driver.site_id,
        "periods": {"calibration": [str(driver.dates[0]),
                                    str(driver.dates[driver.calibration_end - 1])],
                    "test": [str(driver.dates[driver.calibration_end]), str(driver.dates[-1])]
                    if driver.calibration_end < driver.n_steps else None},
        "sampler": {"chains": config.nuts.chains, "warmup": config.nuts.warmup,
                    "samples": config.nuts.samples, "thin": config.nuts.thin,
                    "draws_per_chain": config.nuts.draws, "seed": config.nuts.seed,
                    "dense_mass": config.nuts.dense_mass,
                    "target_accept": config.nuts.target_accept,
                    "max_tree_depth": config.nuts.max_tree_depth,
                    "chain_method": result.chain_method, "devices": jax.local_device_count(),
                    "precision": precision, "resumed_after_warmup": result.resumed},
        "initial_fit": {"potential": [float(v) for v in initial["potential"]],
                        "seconds": init_seconds},
        "coverage": coverage,
    })
    timing = {"initial_fit_seconds": init_seconds, "warmup_seconds": result.warmup_seconds,
              "sampling_seconds": result.sampling_seconds, "wall_seconds": wall_seconds}
    sampler_seconds = result.warmup_seconds + result.sampling_seconds
    timing["min_ess_bulk_per_second"] = (diagnostics["min_ess_bulk"] / sampler_seconds
                                         if sampler_seconds > 0 else math.nan)
    diagnostics["timing"] = timing
    _write_outputs(out, driver, problem, idata, bands, result, diagnostics)
    if strict and not diagnostics["converged"]:
        raise PosteriorNotConvergedError(
            f"{out}: the posterior has not converged: {'; '.join(diagnostics['reasons'])}")
    return diagnostics


def begin_run(out: Path, mode: str, record: dict, clear, state_folder: str,
              other: str) -> None:
    """Start writing a posterior run directory in ``mode`` (of
    :func:`~differland.workflows.prepare_run_directory`): a run to resume must have been
    started with ``record["fingerprint"]`` (else :class:`CheckpointMismatchError`, the
    message naming it ``other``), a run to replace is cleared with ``clear(out)``, files left
    by interrupted writes are removed, and a new run's ``config.json`` is ``record``."""
    if mode == "resume":
        try:
            previous = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if previous.get("fingerprint") != record["fingerprint"]:
            raise CheckpointMismatchError(
                f"{out}: holds an unfinished {other}, precision or differland version; use a "
                "new output directory or pass --overwrite")
    if mode == "replace":
        clear(out)
    for folder in (out, out / "figures", out / state_folder):
        for leftover in remove_stale_temporaries(folder):
            notice(f"removed {leftover}, left by an interrupted write")
    if mode != "resume":
        write_json(out / "config.json", record)


def _initial_values(problem, config: PosteriorConfig, path: Path, fingerprint: str,
                    progress: bool) -> tuple[dict, float]:
    """The chains' starts, the initial inverse mass matrix and the fixed hybrid weights: read
    from ``path`` when an earlier call of this run saved them, else fitted and saved."""
    names = latent_sites(problem, config.structural_error)
    template = problem.initial_guesses(1, config.nuts.seed)["network"]
    if path.is_file():
        with np.load(path, allow_pickle=False) as content:
            if str(content["fingerprint"]) != fingerprint:
                raise CheckpointMismatchError(f"{path}: made by another run; pass --overwrite")
            starts = {name: np.asarray(content[f"start_{name}"]) for name in names}
            network = None
            if template is not None:
                leaves, treedef = jax.tree.flatten(jax.tree.map(lambda x: x[0], template))
                network = jax.tree.unflatten(treedef, [jnp.asarray(content[f"network_{i:04d}"])
                                                       for i in range(len(leaves))])
            return {"chain_starts": starts, "network": network,
                    "inverse_mass": np.asarray(content["inverse_mass"]),
                    "potential": np.asarray(content["potential"])}, float(content["seconds"])
    started = time.perf_counter()
    fit = initial_fit(problem, config, progress=progress)
    best = {name: jnp.asarray(values[fit.best]) for name, values in fit.values.items()}
    inverse_mass = laplace_inverse_mass(problem, config, best, fit.network)
    seconds = time.perf_counter() - started
    arrays = {f"start_{name}": np.asarray(fit.chain_starts[name]) for name in names}
    if fit.network is not None:
        arrays.update({f"network_{i:04d}": np.asarray(leaf)
                       for i, leaf in enumerate(jax.tree.leaves(fit.network))})
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(target: Path) -> None:
        with open(target, "wb") as file:
            np.savez(file, fingerprint=np.asarray(fingerprint), inverse_mass=inverse_mass,
                     potential=fit.potential, seconds=np.asarray(seconds), **arrays)

    write_atomically(path, write)
    return {"chain_starts": fit.chain_starts, "network": fit.network,
            "inverse_mass": inverse_mass, "potential": fit.potential}, seconds


def posterior_predictive(problem, config: PosteriorConfig, samples: dict, network) -> dict:
    """Posterior predictive draws over the whole record from at most
    :data:`MAX_PREDICTIVE_DRAWS` posterior draws, evenly spaced."""
    flat = {name: np.reshape(values, (-1,)) for name, values in samples.items()}
    total = next(iter(flat.values())).size
    keep = np.unique(np.linspace(0, total - 1, min(total, MAX_PREDICTIVE_DRAWS)).astype(int))
    key = jax.random.fold_in(jax.random.PRNGKey(config.nuts.seed), 2)
    return predictive_draws(problem, config, key, {k: v[keep] for k, v in flat.items()},
                            network=network, model_predictions=True)


def predictive_bands(draws: dict, problem) -> dict[str, dict[str, np.ndarray]]:
    """Per scored stream, ``{"predictive": (quantile, T), "model": (quantile, T)}``: the
    :data:`QUANTILES` of the draws with observation noise and of the model's prediction."""
    bands = {}
    for name in likelihood_streams(problem):
        bands[name] = {
            "predictive": np.quantile(draws[f"{OBSERVATION_PREFIX}{name}"], QUANTILES, axis=0),
            "model": np.quantile(draws[f"{PREDICTION_PREFIX}{name}"], QUANTILES, axis=0)}
    return bands


def band_coverage(bands: dict, problem) -> dict[str, dict[str, dict[str, float | int]]]:
    """Share of the observed steps inside the central 50 % and 90 % predictive bands, per
    stream and period (``calibration``, ``test``), with the number of observed steps."""
    periods = {"calibration": problem.periods.calibration > 0,
               "test": problem.periods.test > 0}
    index = {q: i for i, q in enumerate(QUANTILES)}
    out = {}
    for name, band in bands.items():
        stream = problem.streams[name]
        observed = np.asarray(stream.mask) > 0
        values = np.asarray(stream.values)
        quantile = band["predictive"]
        out[name] = {}
        for period, steps in periods.items():
            chosen = observed & steps
            count = int(np.count_nonzero(chosen))
            inside = {}
            for label, (low, high) in {"50": (0.25, 0.75), "90": (0.05, 0.95)}.items():
                within = ((values >= quantile[index[low]]) & (values <= quantile[index[high]]))
                inside[label] = float(np.mean(within[chosen])) if count else math.nan
            out[name][period] = {"observed_steps": count, "coverage_50": inside["50"],
                                 "coverage_90": inside["90"]}
    return out


INFERENCE_GROUPS = ("posterior", "sample_stats", "observed_data")
"""Groups of ``posterior.nc``, in the layout of ArviZ InferenceData."""


def run_attrs(driver) -> dict:
    """Attributes of every group of ``posterior.nc``."""
    return {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inference_library": "numpyro", "inference_library_version": numpyro_version(),
            "source": f"differland {__version__}", "site": driver.site_id}


def posterior_dataset(samples: dict, problem, config: PosteriorConfig, attrs: dict
                      ) -> xr.Dataset:
    """The ``posterior`` group: one variable per latent site over ``(chain, draw)`` in
    physical units (``samples``: ``{site: (chains, draws)}``)."""
    chains, draws = next(iter(samples.values())).shape
    coords = {"chain": ("chain", np.arange(chains)), "draw": ("draw", np.arange(draws))}
    variables = {}
    for name in latent_sites(problem, config.structural_error):
        if name in SPECS:
            meta = {"units": SPECS[name].units, "long_name": SPECS[name].description}
        else:
            meta = {"units": "1", "long_name": "scale of the uncertainty of the "
                    f"{name.removeprefix(ERROR_SCALE_PREFIX)} observations"}
        variables[name] = xr.Variable(("chain", "draw"), samples[name], meta)
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def observed_dataset(driver, problem, attrs: dict) -> xr.Dataset:
    """The ``observed_data`` group: the scored streams over the whole record (NaN in gaps)
    and the period flag."""
    time_values, time_attrs = cf_time_coordinate(driver.dates)
    observed = {}
    for name in likelihood_streams(problem):
        stream = problem.streams[name]
        values = np.where(np.asarray(stream.mask) > 0, np.asarray(stream.values), np.nan)
        observed[name] = xr.Variable("time", values, {"units": OPERATORS[name].units})
    observed["calibration_period"] = xr.Variable(
        "time", np.asarray(problem.periods.calibration, np.int8),
        {"long_name": "1 in the calibration period, 0 in the test period"})
    return xr.Dataset(observed, coords={"time": ("time", time_values, time_attrs)},
                      attrs=attrs)


def inference_data(result, driver, problem, config: PosteriorConfig):
    """The run as ArviZ InferenceData (``posterior.nc``): ``posterior``
    (:func:`posterior_dataset`); ``sample_stats`` of NUTS under ArviZ's names (``lp`` is
    minus the potential energy, [nats]); and ``observed_data`` (:func:`observed_dataset`)."""
    attrs = run_attrs(driver)
    posterior = posterior_dataset(result.samples, problem, config, attrs)
    coords = {"chain": posterior["chain"], "draw": posterior["draw"]}
    fields = result.fields
    stats = {
        "lp": (-np.asarray(fields["potential_energy"]), "nats",
               "log posterior density (unnormalised)"),
        "energy": (np.asarray(fields["energy"]), "nats", "Hamiltonian energy"),
        "diverging": (np.asarray(fields["diverging"], bool), None, "divergent transition"),
        "n_steps": (np.asarray(fields["num_steps"]), "1", "leapfrog steps"),
        "tree_depth": (tree_depth(fields["num_steps"]), "1", "tree depth"),
        "acceptance_rate": (np.asarray(fields["accept_prob"]), "1",
                            "mean acceptance probability of the tree"),
        "step_size": (np.asarray(fields["step_size"]), "1", "adapted step size"),
    }
    sample_stats = xr.Dataset(
        {name: xr.Variable(("chain", "draw"), values,
                           {"long_name": text, **({"units": units} if units else {})})
         for name, (values, units, text) in stats.items()}, coords=coords, attrs=attrs)
    return _arviz().InferenceData(posterior=posterior, sample_stats=sample_stats,
                                  observed_data=observed_dataset(driver, problem, attrs))


def _arviz():
    """ArviZ, imported without its notice of a coming refactor (a FutureWarning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


def numpyro_version() -> str:
    """The version of NumPyro."""
    import numpyro

    return numpyro.__version__


def write_inference_data(path: Path, idata) -> None:
    """Write InferenceData as one NetCDF-4 file (a group each), atomically."""
    write_atomically(path, lambda target: idata.to_netcdf(str(target)))


# --- diagnostics ------------------------------------------------------------------------------


def _nan_first(value: float) -> float:
    """Order in which a NaN comes before every number (a NaN ESS is the worst)."""
    return -math.inf if math.isnan(value) else value


def posterior_diagnostics(idata, result, problem, config: PosteriorConfig) -> dict:
    """The convergence diagnostics of a run (unrounded).

    ``converged`` holds when every sampled quantity has rank-normalised split R-hat below
    :data:`R_HAT_LIMIT`, bulk and tail ESS of at least :data:`ESS_PER_CHAIN` per chain, no
    divergent transition, and no chain whose mean lies :data:`MODE_DISTANCE` pooled
    within-chain standard deviations from the others'; ``reasons`` lists what failed.
    Transitions at the maximum tree depth, parameters piled at a bound and a low E-BFMI are
    reported as ``warnings``. R-hat, ESS and E-BFMI are ArviZ's (Vehtari et al. 2021,
    Bayesian Analysis 16, 667-718; Betancourt 2016, arXiv:1604.00695).
    """
    az = _arviz()
    r_hat = az.rhat(idata.posterior, method="rank") if config.nuts.chains > 1 else None
    bulk = az.ess(idata.posterior, method="bulk")
    tail = az.ess(idata.posterior, method="tail")
    names = list(result.samples)
    chains = config.nuts.chains
    per_parameter = {name: {} for name in names}
    bounds = bound_shares(result.samples, problem, BOUND_EDGE)
    for name in names:
        values = np.asarray(result.samples[name], np.float64)
        if r_hat is not None:
            per_parameter[name]["r_hat"] = float(r_hat[name])
        per_parameter[name].update({
            "mean": float(values.mean()), "sd": float(values.std(ddof=1)),
            "q05": float(np.quantile(values, 0.05)), "q50": float(np.quantile(values, 0.5)),
            "q95": float(np.quantile(values, 0.95)),
            "ess_bulk": float(bulk[name]), "ess_tail": float(tail[name])})
        if name in bounds:
            per_parameter[name]["share_at_lower_bound"] = bounds[name]["lower"]
            per_parameter[name]["share_at_upper_bound"] = bounds[name]["upper"]
    fields = result.fields
    divergences = int(np.sum(fields["diverging"]))
    depth_share = max_depth_share(fields["num_steps"], config.nuts.max_tree_depth)
    modes = separated_chains(result.samples, MODE_DISTANCE)
    piled = sorted(name for name, share in bounds.items()
                   if max(share.values()) > BOUND_SHARE)
    bfmi = [float(v) for v in np.atleast_1d(az.bfmi(idata))]
    threshold = ESS_PER_CHAIN * chains
    max_r_hat = max((p.get("r_hat", math.nan) for p in per_parameter.values()),
                    default=math.nan)
    min_bulk = min((p["ess_bulk"] for p in per_parameter.values()), key=_nan_first)
    min_tail = min((p["ess_tail"] for p in per_parameter.values()), key=_nan_first)
    reasons = []
    if chains < 2:
        reasons.append("R-hat needs at least 2 chains")
    elif not max_r_hat < R_HAT_LIMIT:
        worst = max(per_parameter, key=lambda n: per_parameter[n].get("r_hat", -math.inf))
        reasons.append(f"max R-hat {max_r_hat!r} ({worst}) is not below {R_HAT_LIMIT}")
    if not min_bulk >= threshold:
        reasons.append(f"min bulk ESS {min_bulk!r} is below {threshold}")
    if not min_tail >= threshold:
        reasons.append(f"min tail ESS {min_tail!r} is below {threshold}")
    positions = divergence_positions(result.samples, fields["diverging"])
    gathered = divergence_gathering(positions, divergences)
    if divergences:
        reasons.append(f"{divergences} divergent transitions" + (
            f", gathered at {', '.join(gathered)}" if gathered else ""))
    if modes:
        reasons.append(f"chains in separate modes for {', '.join(sorted(modes))}")
    warnings_ = []
    if depth_share > 0:
        warnings_.append(f"{depth_share!r} of the transitions reached the maximum tree depth "
                         f"{config.nuts.max_tree_depth}")
    low_bfmi = [chain for chain, value in enumerate(bfmi) if value < BFMI_LIMIT]
    if low_bfmi:
        warnings_.append(f"E-BFMI below {BFMI_LIMIT} in chain(s) "
                         f"{', '.join(str(c) for c in low_bfmi)}")
    if piled:
        warnings_.append(f"piled at a bound (over {BOUND_SHARE} of the draws within "
                         f"{BOUND_EDGE} of it): {', '.join(piled)}")
    return {
        "converged": not reasons,
        "reasons": reasons,
        "warnings": warnings_,
        "criteria": {"r_hat_below": R_HAT_LIMIT, "ess_bulk_at_least": threshold,
                     "ess_tail_at_least": threshold, "divergences": 0,
                     "mode_distance_below": MODE_DISTANCE},
        "max_r_hat": max_r_hat,
        "min_ess_bulk": min_bulk,
        "min_ess_tail": min_tail,
        "divergences": divergences,
        "divergent_draw_positions": positions,
        "divergences_gathered_at": gathered,
        "max_tree_depth_share": depth_share,
        "mean_tree_depth_steps": float(np.mean(fields["num_steps"])),
        "mean_accept_prob": float(np.mean(fields["accept_prob"])),
        "step_size": [float(v) for v in np.asarray(fields["step_size"])[:, 0]],
        "bfmi": bfmi,
        "piled_at_bound": piled,
        "separated_chains": modes,
        "parameters": per_parameter,
    }


def diagnostics_markdown(diagnostics: dict) -> str:
    """``diagnostics.md``: the summary and a table per parameter (numbers unrounded)."""
    lines = [f"# Posterior of {diagnostics['site']}", "",
             f"converged: {'yes' if diagnostics['converged'] else 'no'}"]
    lines += [f"- {reason}" for reason in diagnostics["reasons"]]
    if diagnostics["warnings"]:
        lines += ["", "warnings:"] + [f"- {text}" for text in diagnostics["warnings"]]
    timing, sampler = diagnostics["timing"], diagnostics["sampler"]
    lines += ["", "| quantity | value |", "|---|---|"]
    summary = {
        "chains x draws": f"{sampler['chains']} x {sampler['draws_per_chain']} "
                          f"(warmup {sampler['warmup']}, thin {sampler['thin']})",
        "chain method / precision": f"{sampler['chain_method']} / {sampler['precision']}",
        "max R-hat": diagnostics["max_r_hat"],
        "min bulk ESS": diagnostics["min_ess_bulk"],
        "min tail ESS": diagnostics["min_ess_tail"],
        "divergences": diagnostics["divergences"],
        "share at max tree depth": diagnostics["max_tree_depth_share"],
        "mean leapfrog steps": diagnostics["mean_tree_depth_steps"],
        "E-BFMI per chain": ", ".join(repr(v) for v in diagnostics["bfmi"]),
        "initial fit [s]": timing["initial_fit_seconds"],
        "warmup [s]": timing["warmup_seconds"],
        "sampling [s]": timing["sampling_seconds"],
        "wall time [s]": timing["wall_seconds"],
        "min bulk ESS per second": timing["min_ess_bulk_per_second"],
    }
    lines += [f"| {key} | {value!r} |" if isinstance(value, float) else f"| {key} | {value} |"
              for key, value in summary.items()]
    lines += ["", "## Predictive coverage (share of observed steps inside the band)", "",
              "| stream | period | observed steps | 50 % band | 90 % band |",
              "|---|---|---|---|---|"]
    for name, periods in diagnostics["coverage"].items():
        for period, values in periods.items():
            lines.append(f"| {name} | {period} | {values['observed_steps']} | "
                         f"{values['coverage_50']!r} | {values['coverage_90']!r} |")
    lines += ["", "## Parameters", "",
              "| parameter | mean | sd | 5 % | 50 % | 95 % | R-hat | bulk ESS | tail ESS | "
              "at lower | at upper |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, values in diagnostics["parameters"].items():
        cells = [values.get(key, "") for key in ("mean", "sd", "q05", "q50", "q95", "r_hat",
                                                  "ess_bulk", "ess_tail",
                                                  "share_at_lower_bound",
                                                  "share_at_upper_bound")]
        lines.append(f"| {name} | " + " | ".join(repr(c) if isinstance(c, float) else str(c)
                                                 for c in cells) + " |")
    if diagnostics["separated_chains"]:
        lines += ["", "## Chains in separate modes", ""]
        lines += [f"- {name}: " + ", ".join(f"chain {item['chain']} at {item['distance']!r} sd"
                                            for item in items)
                  for name, items in diagnostics["separated_chains"].items()]
    return "\n".join(lines) + "\n"


# --- outputs ----------------------------------------------------------------------------------


def predictive_dataset(bands: dict, driver, problem, attrs: dict) -> xr.Dataset:
    """``predictive.nc``: the bands of every scored stream over the record, with the
    observations (NaN in gaps) and the period flag."""
    time_values, time_attrs = cf_time_coordinate(driver.dates)
    variables = {}
    for name, band in bands.items():
        units = OPERATORS[name].units
        stream = problem.streams[name]
        variables[name] = xr.Variable(
            ("quantile", "time"), band["predictive"],
            {"units": units, "long_name": f"posterior predictive quantiles of {name} "
                                          "(with observation noise)"})
        variables[f"{name}_model"] = xr.Variable(
            ("quantile", "time"), band["model"],
            {"units": units, "long_name": f"posterior quantiles of the modelled {name}"})
        variables[f"{name}_observed"] = xr.Variable(
            "time", np.where(np.asarray(stream.mask) > 0, np.asarray(stream.values), np.nan),
            {"units": units, "long_name": f"observed {name}"})
    variables["calibration_period"] = xr.Variable(
        "time", np.asarray(problem.periods.calibration, np.int8),
        {"long_name": "1 in the calibration period, 0 in the test period"})
    dataset = xr.Dataset(variables, coords={
        "time": ("time", time_values, time_attrs),
        "quantile": ("quantile", np.asarray(QUANTILES), {"units": "1"})})
    dataset.attrs.update({"Conventions": "CF-1.8", **attrs})
    return dataset


def _write_outputs(out: Path, driver, problem, idata, bands: dict, result,
                   diagnostics: dict) -> None:
    attrs = {"title": f"differland posterior of {driver.site_id}",
             "source": f"differland {__version__}", "driver": str(driver.path),
             "calibration_period_end": str(driver.dates[driver.calibration_end - 1])}
    write_inference_data(out / "posterior.nc", idata)
    write_dataset(out / "predictive.nc", predictive_dataset(bands, driver, problem, attrs))
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    ranked = sorted(diagnostics["parameters"],
                    key=lambda n: -diagnostics["parameters"][n].get("r_hat", 0.0))
    shown = ranked[:FIGURE_PARAMETERS]
    trace_figure(figures / "trace.png", result.samples, shown, driver.site_id)
    rank_figure(figures / "rank.png", result.samples, shown, driver.site_id)
    pair_figure(figures / "pair.png", result.samples,
                free_parameter_names(problem.config), driver.site_id)
    predictive_figure(figures / "predictive.png", driver.dates, bands, problem,
                      driver.site_id)
    write_atomically(out / "diagnostics.md",
                     lambda target: target.write_text(diagnostics_markdown(diagnostics),
                                                      encoding="utf-8"))
    write_json(out / COMPLETION_RECORD, diagnostics)


def _save(fig, path: Path) -> None:
    write_atomically(path, lambda target: fig.savefig(target, dpi=100, format="png"))


def trace_figure(path: Path, samples: dict, names: list[str], title: str) -> Path:
    """Draws of each chain against iteration, one panel per parameter."""
    fig, axes = new_figure(len(names), 1, figsize=(9, 1.6 * len(names)), squeeze=False,
                             sharex=True)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for chain, values in enumerate(samples[name]):
            ax.plot(values, lw=0.6, alpha=0.8, label=f"chain {chain}")
        ax.set_ylabel(name, fontsize=7)
    axes[0, 0].set_title(f"{title}: traces (largest R-hat first)")
    axes[-1, 0].set_xlabel("draw")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    return path


def rank_figure(path: Path, samples: dict, names: list[str], title: str,
                bins: int = 20) -> Path:
    """Histograms of each chain's ranks among all draws (flat when the chains mix)."""
    fig, axes = new_figure(len(names), 1, figsize=(9, 1.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = np.asarray(samples[name])
        ranks = np.argsort(np.argsort(values.ravel(), kind="stable")).reshape(values.shape)
        edges = np.linspace(0, values.size, bins + 1)
        for chain, chain_ranks in enumerate(ranks):
            counts, _ = np.histogram(chain_ranks, edges)
            ax.step(edges[:-1], counts, where="post", lw=0.8, label=f"chain {chain}")
        ax.axhline(values.shape[1] / bins, color="0.5", lw=0.6, ls="--")
        ax.set_ylabel(name, fontsize=7)
    axes[0, 0].set_title(f"{title}: rank histograms per chain")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    return path


def correlated_pairs(samples: dict, names: list[str], count: int = 4
                     ) -> list[tuple[str, str, float]]:
    """The ``count`` pairs of parameters of largest absolute posterior correlation, within
    chains: each chain's draws ``(chains, draws)`` are centred on that chain's mean before they
    are pooled, so that chains resting in different places do not make every pair look
    correlated."""
    matrix = np.stack([np.ravel(np.asarray(samples[name])
                                - np.mean(samples[name], axis=-1, keepdims=True))
                       for name in names])
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(matrix)
    pairs = [(names[i], names[j], float(correlation[i, j]))
             for i in range(len(names)) for j in range(i + 1, len(names))
             if np.isfinite(correlation[i, j])]
    return sorted(pairs, key=lambda pair: -abs(pair[2]))[:count]


def pair_figure(path: Path, samples: dict, names: list[str], title: str) -> Path:
    """Scatter plots of the most strongly correlated parameter pairs, coloured by chain."""
    pairs = correlated_pairs(samples, list(names)) or [(names[0], names[0], 1.0)]
    fig, axes = new_figure(1, len(pairs), figsize=(3.2 * len(pairs), 3.2), squeeze=False)
    for ax, (first, second, correlation) in zip(axes[0], pairs, strict=True):
        for values_x, values_y in zip(samples[first], samples[second], strict=True):
            ax.plot(values_x, values_y, ".", ms=1.5, alpha=0.5)
        ax.set_xlabel(f"{first} [{SPECS[first].units}]", fontsize=7)
        ax.set_ylabel(f"{second} [{SPECS[second].units}]", fontsize=7)
        ax.set_title(f"r = {correlation:.2f}", fontsize=8)
    fig.suptitle(f"{title}: most correlated parameters", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def predictive_figure(path: Path, dates, bands: dict, problem, title: str) -> Path:
    """Posterior predictive 50 % and 90 % bands and median with the observations, per
    stream, the start of the test period marked."""
    names = list(bands)
    fig, axes = new_figure(len(names), 1, figsize=(11, 2.2 * len(names)), sharex=True,
                             squeeze=False)
    test = np.flatnonzero(problem.periods.test > 0)
    for ax, name in zip(axes[:, 0], names, strict=True):
        quantile = bands[name]["predictive"]
        ax.fill_between(dates, quantile[0], quantile[4], color="tab:blue", alpha=0.2,
                        lw=0, label="90 %")
        ax.fill_between(dates, quantile[1], quantile[3], color="tab:blue", alpha=0.4,
                        lw=0, label="50 %")
        ax.plot(dates, bands[name]["model"][2], color="tab:blue", lw=0.7, label="median")
        stream = problem.streams[name]
        observed = np.where(np.asarray(stream.mask) > 0, np.asarray(stream.values), np.nan)
        ax.plot(dates, observed, ".", ms=1.2, color="0.3", label="observed")
        if test.size:
            ax.axvline(dates[test[0]], color="tab:red", lw=1.0, ls="--")
        ax.set_ylabel(f"{name.upper()}\n[{OPERATORS[name].units}]")
    axes[0, 0].set_title(f"{title}: posterior predictive (calibration | test)")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4, markerscale=4)
    fig.tight_layout()
    _save(fig, path)
    return path


def summary_line(out: Path, diagnostics: dict) -> str:
    """The one line the command prints when a run is written."""
    state = "converged" if diagnostics["converged"] else "not converged"
    coverage = ", ".join(
        f"{name} {values['test']['coverage_50']:.2f}/{values['test']['coverage_90']:.2f}"
        for name, values in diagnostics["coverage"].items()
        if values["test"]["observed_steps"])
    text = (f"wrote {out}: {diagnostics['site']} {state}; max R-hat "
            f"{diagnostics['max_r_hat']:.4f}, min bulk ESS {diagnostics['min_ess_bulk']:.0f}, "
            f"{diagnostics['divergences']} divergences")
    return text + (f"; test coverage of the 50/90 % bands {coverage}" if coverage else "")


def print_notice(message: str) -> None:
    """One line on stderr."""
    print(f"differland: {message}", file=sys.stderr)
