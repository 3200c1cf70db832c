"""Spatialization workflows: train a network on the sites of a folder, predict and simulate
sites (trained on or not), and leave-sites-out cross-validation.

A model directory (``spatial train --out MODEL``) holds ``config.json`` (the
:class:`~differland.spatial.SpatialConfig`, the training sites, the predicted parameters
and the predictors), ``predictors.json`` (the predictors' training statistics),
``weights/seed_<N>/`` (orbax), ``history.json``, ``figures/loss.png``, ``checkpoints/``
(resumed by a rerun) and, written last, ``training.json`` (the record of a finished
training). A prediction (``spatial predict``) writes one run directory per site, in the
format of ``calibrate site`` (``differland simulate --run`` works on it), and
``summary.csv`` / ``summary.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io as text_io
import json
import math
import shutil
import time
from pathlib import Path

import jax
import numpy as np

from differland import __version__
from differland.calibrate.site import (
    CalibrationConfigError,
    make_site_problem,
)
from differland.io import (
    DriverError,
    check_writable_location,
    output_error,
    read_json,
    read_site_driver,
    read_sites_rows,
    write_json,
)
from differland.model import simulate
from differland.plots import new_figure
from differland.spatial import (
    PredictorError,
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
from differland.workflows import (
    COMPLETION_RECORD,
    EVALUATED,
    notice,
    observed_streams,
    package_digest,
    prepare_run_directory,
    write_run_results,
)

MODEL_RECORD = "training.json"
"""The file a training writes last: a model directory without it is unfinished."""
MODEL_FILES = ("config.json", "predictors.json", "history.json", MODEL_RECORD)
MODEL_FOLDERS = ("weights", "checkpoints")
MODEL_KIND = "differland spatial model"


@dataclasses.dataclass
class Site:
    """A site of a training or prediction: its driver and predictors."""

    site_id: str
    driver_path: Path
    driver: object
    predictors: dict
    sites_table: Path


def load_config(path: Path | None, seed: int | None = None,
                iterations: int | None = None) -> SpatialConfig:
    """A :class:`SpatialConfig` from an optional JSON file, with ``--seed`` (one network of
    that seed) and ``--iterations`` overrides."""
    values = {}
    if path is not None:
        values = read_json(path)
        if not isinstance(values, dict):
            raise CalibrationConfigError(f"{path}: the configuration must be a JSON object")
    try:
        config = SpatialConfig.from_dict(values)
        if seed is not None:
            config = dataclasses.replace(config, seeds=(seed,))
        if iterations is not None:
            config = dataclasses.replace(config, max_iterations=iterations)
    except CalibrationConfigError as error:
        raise CalibrationConfigError(f"{path}: {error}" if path else str(error)) from None
    return config


def read_sites(sites_csv: Path, sites_dir: Path, extra: tuple[str, ...]) -> list[Site]:
    """Every site of ``sites_csv``, its driver ``sites_dir/<SITE_ID>.nc`` and its predictors
    (forcing statistics over the calibration period, which ends at the site's
    ``test_start`` in ``sites_csv``).

    Raises:
        DriverError, PredictorError: one line naming the file, the site and the column.
    """
    rows = read_sites_rows(sites_csv)
    if not rows:
        raise DriverError(f"{sites_csv}: lists no site")
    sites = []
    for row in rows:
        site_id = row["SITE_ID"].strip()
        path = Path(sites_dir) / f"{site_id}.nc"
        if not path.is_file():
            raise DriverError(f"{sites_csv}: site {site_id}: no driver {path}")
        driver = read_site_driver(path, sites_table=sites_csv)
        climate = climate_predictors(driver.forcing, driver.dates, driver.calibration_end)
        predictors = site_predictors(row, climate, extra, source=str(sites_csv))
        sites.append(Site(site_id, path, driver, predictors, Path(sites_csv)))
    return sites


def _prepare_model_directory(out: Path, inputs: list, overwrite: bool,
                             kind: str = MODEL_KIND) -> str:
    """``"new"``, ``"resume"`` or ``"replace"`` for a model directory (as
    :func:`~differland.workflows.prepare_run_directory` for runs)."""
    out = Path(out)
    for source in inputs:
        if source is not None and (Path(source).resolve() == out.resolve()
                                   or out.resolve() in Path(source).resolve().parents):
            raise output_error(out, f"--out would overwrite the input {source}")
    if out.exists() and not out.is_dir():
        raise output_error(out, "--out is an existing file; a model directory is a folder")
    check_writable_location(out / MODEL_FILES[0])
    if not out.exists() or not any(out.iterdir()):
        return "new"
    try:
        ours = json.loads((out / "config.json").read_text(encoding="utf-8")).get(
            "kind") == kind
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise output_error(out, f"--out exists and is not a {kind}; choose another "
                                "directory")
    if (out / MODEL_RECORD).exists() and not overwrite:
        raise output_error(out, "--out holds a trained model; pass --overwrite to replace it")
    return "replace" if overwrite else "resume"


def _clear_model_directory(out: Path) -> None:
    for name in MODEL_FILES[::-1]:
        (out / name).unlink(missing_ok=True)
    (out / "figures" / "loss.png").unlink(missing_ok=True)
    for name in MODEL_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def _problems(sites: list[Site], config: SpatialConfig):
    problems = []
    for site in sites:
        observed = observed_streams(config.calibration, site.driver.observations,
                                    str(site.driver_path), False, site.driver.calibration_end)
        problem = make_site_problem(site.driver.forcing, site.driver.observations,
                                    site.driver.dates, site.driver.calibration_end, observed,
                                    source=str(site.driver_path))
        problems.append(problem.window(site.driver.calibration_end))
    return problems


def spatial_train(sites_dir: Path, out: Path, config: SpatialConfig,
                  sites_csv: Path | None = None, progress: bool = True,
                  overwrite: bool = False, inputs: tuple = (),
                  stop_after: int | None = None) -> dict:
    """Train the network(s) of ``config`` on every site of ``sites_csv`` (default
    ``sites_dir/sites.csv``) and write the model directory ``out``; returns the training
    record (empty if ``stop_after`` stopped it, as if killed)."""
    out = Path(out)
    sites_csv = Path(sites_csv) if sites_csv else Path(sites_dir) / "sites.csv"
    mode = _prepare_model_directory(out, [sites_csv, *inputs], overwrite)
    sites = read_sites(sites_csv, sites_dir, config.extra_predictors)
    if len(sites) < 2:
        raise CalibrationConfigError(f"{sites_csv}: a network needs at least two training "
                                     "sites")
    names = predictor_names(config.extra_predictors)
    standardizer = Standardizer.fit([s.predictors for s in sites], names)
    inputs_matrix = standardizer.inputs([s.predictors for s in sites])
    batch = SiteBatch.stack(_problems(sites, config), config.calibration)
    record = {"kind": MODEL_KIND, "differland_version": __version__,
              "differland_source_sha256": package_digest(),
              "precision": "float64" if jax.config.jax_enable_x64 else "float32",
              "sites_csv": str(sites_csv), "sites": [s.site_id for s in sites],
              "parameter_names": list(config.parameter_names),
              "predictors": list(names) + ["plant_functional_type"],
              "spatial": config.to_dict()}
    record = json.loads(json.dumps(record))  # as it reads back
    if mode == "resume":
        try:
            previous = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if {k: previous.get(k) for k in record} != record:
            raise output_error(out, "--out holds an unfinished training of another "
                                    "configuration or other sites; pass --overwrite to "
                                    "start again")
    if mode == "replace":
        _clear_model_directory(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", record)
    write_json(out / "predictors.json", standardizer.to_dict())
    started = time.perf_counter()
    histories, trained = {}, []
    for seed in config.seeds:
        fingerprint = json.dumps({**record, "seed": seed}, sort_keys=True)
        result = train(batch, inputs_matrix, config, seed,
                       checkpoint_dir=out / "checkpoints" / f"seed_{seed}", progress=progress,
                       description=f"seed {seed}", fingerprint_text=fingerprint,
                       stop_after=stop_after)
        if not result.finished:
            return {}
        save_weights(out / "weights" / f"seed_{seed}", result)
        histories[str(seed)] = result.history
        trained.append(result)
    write_json(out / "history.json", histories)
    _loss_figure(out / "figures" / "loss.png", histories)
    unconstrained = [t.unconstrained(inputs_matrix) for t in trained]
    site_losses = {s.site_id: {} for s in sites}
    losses_of = jax.jit(lambda z, hybrid, period: batch.site_losses(
        z, hybrid, config.parameter_names, period), static_argnames="period")  # compiled once
    for seed, z, result in zip(config.seeds, unconstrained, trained, strict=True):
        for period in ("train", "validation"):
            losses = jax.device_get(losses_of(z, result.hybrid, period=period))
            for site, loss in zip(sites, losses, strict=True):
                site_losses[site.site_id][f"seed_{seed}_{period}"] = float(loss)
    training = {"sites": len(sites), "wall_seconds": time.perf_counter() - started,
                "seeds": {str(seed): {"iterations": t.history["iterations"],
                                      "stopped_early": t.stopped_early,
                                      "best_validation_loss": t.history["best_validation_loss"],
                                      "resumed_from_iteration": t.resumed_from}
                          for seed, t in zip(config.seeds, trained, strict=True)},
                "site_losses": site_losses}
    write_json(out / MODEL_RECORD, training)
    return training


def save_weights(path: Path, trained) -> None:
    """Save a trained network's weights and the hybrid terms' with orbax."""
    import orbax.checkpoint as ocp

    if path.exists():
        shutil.rmtree(path)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path.resolve(), {"net": spatial_network.to_pure(trained.state),
                                       "hybrid": trained.hybrid})
    checkpointer.wait_until_finished()


def load_weights(path: Path, config, n_inputs: int, seed: int):
    """``(graphdef, state, hybrid)`` saved by :func:`save_weights` for a network of
    ``config`` (a :class:`SpatialConfig` or a grid configuration) with ``n_inputs``
    inputs."""
    import orbax.checkpoint as ocp

    from differland.processes.neural import init_network

    outputs = getattr(config, "n_outputs", len(config.parameter_names))
    graphdef, state = spatial_network.build(n_inputs, outputs, config.hidden, config.depth,
                                            seed)
    model_config = config.model_config
    hybrid = init_network(jax.random.PRNGKey(seed), model_config) \
        if model_config.network_sizes else None
    template = {"net": spatial_network.to_pure(state), "hybrid": hybrid}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = ocp.StandardCheckpointer().restore(Path(path).resolve(), abstract)
    return (graphdef, spatial_network.from_pure(graphdef, state, restored["net"]),
            restored["hybrid"])


def _loss_figure(path: Path, histories: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = new_figure(figsize=(6, 4))
    for seed, history in histories.items():
        axis.plot(history["iteration"], history["train"], label=f"seed {seed} training")
        axis.plot(history["iteration"], history["validation"], "--",
                  label=f"seed {seed} validation")
    axis.set_xlabel("iteration")
    axis.set_ylabel("mean site loss")
    axis.set_yscale("symlog")
    axis.legend(fontsize=7)
    figure.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=120)
    temporary.replace(path)


@dataclasses.dataclass
class SpatialModel:
    """A trained model directory, loaded: its configuration, predictor statistics and one
    ``(graphdef, state, hybrid)`` per seed."""

    path: Path
    config: SpatialConfig
    standardizer: Standardizer
    members: list  # (graphdef, state, hybrid) per seed

    def unconstrained(self, inputs) -> list:
        return [spatial_network.apply(g, s, inputs) for g, s, _ in self.members]


def load_model(path: Path) -> SpatialModel:
    """A model directory written by :func:`spatial_train`.

    Raises:
        DriverError: not a finished model directory, or its files cannot be read.
    """
    path = Path(path)
    if not (path / MODEL_RECORD).is_file():
        raise DriverError(f"{path}: not a trained spatial model (no {MODEL_RECORD}; train one "
                          "with differland spatial train, or finish it by rerunning it)")
    record = read_json(path / "config.json")
    if not isinstance(record, dict) or record.get("kind") != MODEL_KIND:
        raise DriverError(f"{path / 'config.json'}: not a differland spatial model")
    try:
        config = SpatialConfig.from_dict(record["spatial"])
        standardizer = Standardizer.from_dict(read_json(path / "predictors.json"))
    except (CalibrationConfigError, PredictorError, KeyError, TypeError) as error:
        raise DriverError(f"{path}: cannot be read: {error}") from None
    try:
        members = [load_weights(path / "weights" / f"seed_{seed}", config,
                                standardizer.n_inputs, seed) for seed in config.seeds]
    except (OSError, ValueError, KeyError) as error:
        raise DriverError(f"{path / 'weights'}: cannot be read: {error}") from None
    return SpatialModel(path, config, standardizer, members)


def spatial_predict(model_dir: Path, sites_csv: Path, sites_dir: Path, out: Path,
                    overwrite: bool = False, model: SpatialModel | None = None) -> list[dict]:
    """Predict the parameters of every site of ``sites_csv``, simulate its whole record and
    write ``out/<SITE>/`` (a run directory) and ``out/summary.csv`` / ``summary.md``; returns
    the sites' metrics."""
    model = model or load_model(model_dir)
    sites_csv, out = Path(sites_csv), Path(out)
    for name in ("summary.csv", "summary.md"):
        path = out / name
        if path.exists() and not overwrite:
            raise output_error(path, "exists; pass --overwrite to replace it")
    sites = read_sites(sites_csv, sites_dir, model.config.extra_predictors)
    modes = {s.site_id: prepare_run_directory(out / s.site_id, [s.driver_path, sites_csv],
                                              overwrite) for s in sites}
    results = []
    for site in sites:
        results.append(predict_site(model, site, out / site.site_id, modes[site.site_id]))
    write_summary(out, results)
    return results


def predict_site(model: SpatialModel, site: Site, out: Path, mode: str = "new") -> dict:
    """Predict, simulate and write one site's run directory (see :func:`spatial_predict`)."""
    from differland.workflows import clear_run_directory

    config = model.config
    calibration = observed_streams(config.calibration, site.driver.observations,
                                   str(site.driver_path), False, site.driver.calibration_end)
    problem = make_site_problem(site.driver.forcing, site.driver.observations,
                                site.driver.dates, site.driver.calibration_end, calibration,
                                source=str(site.driver_path))
    inputs = model.standardizer.inputs([site.predictors])
    model_config = calibration.model_config
    members = []
    for z, (_, _, hybrid) in zip(model.unconstrained(inputs), model.members, strict=True):
        params = physical_parameters(z[0], config.parameter_names, calibration, problem.fixed)
        trajectory = simulate(params, problem.forcing, model_config, network=hybrid)
        members.append((params, trajectory, hybrid))
    params, trajectory, hybrid = jax.device_get(members[0])
    if mode == "replace":
        clear_run_directory(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {
        "driver": str(site.driver_path), "driver_resolved": str(site.driver_path.resolve()),
        "site": site.site_id, "differland_version": __version__,
        "differland_source_sha256": package_digest(), "jax_version": jax.__version__,
        "precision": "float64" if jax.config.jax_enable_x64 else "float32",
        "calibration": calibration.to_dict(), "sites_table": str(site.sites_table.resolve()),
        "spatial_model": str(model.path), "seed": config.seeds[0]})
    record = {"spatial": {"model": str(model.path), "seeds": list(config.seeds),
                          "predictors": {k: v for k, v in site.predictors.items()}}}
    if len(members) > 1:
        record["spatial"]["ensemble"] = _ensemble(out, site, members, problem)
    return write_run_results(out, site.driver, site.driver_path, calibration, problem, params,
                             trajectory, hybrid, record, title="spatially predicted")


def _ensemble(out: Path, site: Site, members, problem) -> dict:
    """Write ``ensemble.nc`` (mean and spread of the members' parameters and fluxes) and
    return the ensemble mean's skill."""
    from differland.io import ensemble_dataset, write_dataset
    from differland.metrics import skill
    from differland.observations import predict

    fluxes = {name: np.stack([np.asarray(predict(name, t, p, problem.forcing))
                              for p, t, _ in members]) for name in EVALUATED}
    parameters = {name: np.array([float(p[name]) for p, _, _ in members])
                  for name in members[0][0].names}
    write_dataset(out / "ensemble.nc", ensemble_dataset(
        site.driver.dates, fluxes, parameters,
        {"title": f"differland spatial ensemble of {site.site_id}",
         "source": f"differland {__version__}", "members": len(members)}))
    calibration = problem.periods.calibration > 0
    scores = {}
    for name in EVALUATED:
        observations = site.driver.observations.get(name)
        if observations is None:
            continue
        observed = np.where(observations.mask, observations.values, np.nan)
        scores[name] = {"calibration": skill(fluxes[name].mean(axis=0), observed, calibration),
                        "test": skill(fluxes[name].mean(axis=0), observed, ~calibration)}
    return {"members": len(members), "mean_skill": scores}


def site_prior(model_dir: Path, driver_path: Path, config) -> dict:
    """The network's prediction for the site of ``driver_path`` as the prior of a site
    calibration (``calibrate site --finetune``): ``{"params": unconstrained free parameters
    (the ensemble members' mean), "network": the first member's hybrid weights, "model":
    model_dir}``. The site's predictors come from the ``sites.csv`` beside the driver.

    Raises:
        DriverError, PredictorError: the site's row or predictors cannot be read.
        CalibrationConfigError: ``config`` calibrates other parameters or model options than
            the network predicts.
    """
    from differland.params import ParameterSet

    model = load_model(model_dir)
    trained = model.config.calibration
    if (config.model_config.option_texts() != trained.model_config.option_texts()
            or tuple(model.config.parameter_names) != tuple(
                config.free_parameters or config.model_config.parameter_names())):
        raise CalibrationConfigError(
            f"--finetune {model_dir}: the network predicts the parameters of other model "
            f"options ({_options_text(trained)}); calibrate with those")
    driver_path = Path(driver_path)
    table = driver_path.parent / "sites.csv"
    if not table.is_file():
        raise DriverError(f"{table}: not found; --finetune needs the site's row (lat, ELEV, "
                          "MAP, MAT, IGBP) in a sites.csv beside the driver")
    rows = [row for row in read_sites_rows(table)
            if row["SITE_ID"].strip() == driver_path.stem]
    if not rows:
        raise DriverError(f"{table}: no row for site {driver_path.stem} (needed by --finetune)")
    driver = read_site_driver(driver_path)
    climate = climate_predictors(driver.forcing, driver.dates, driver.calibration_end)
    predictors = site_predictors(rows[0], climate, model.config.extra_predictors, str(table))
    inputs = model.standardizer.inputs([predictors])
    z = np.mean([np.asarray(u)[0] for u in model.unconstrained(inputs)], axis=0)
    names = model.config.parameter_names
    return {"params": ParameterSet({n: jax.numpy.asarray(z[j]) for j, n in enumerate(names)}),
            "network": model.members[0][2], "model": Path(model_dir)}


def _options_text(config) -> str:
    texts = config.model_config.option_texts()
    return ", ".join(f"{slot} {' '.join(v) if isinstance(v, list) else v}"
                     for slot, v in texts.items() if v)


def summary_rows(results: list[dict], reference: dict | None = None) -> list[dict]:
    """One row per site: NSE per variable and period (and the reference runs' test NSE)."""
    rows = []
    for metrics in results:
        row = {"site": metrics["site"]}
        for name in EVALUATED:
            for period in ("calibration", "test"):
                value = metrics["skill"].get(name, {}).get(period, {}).get("nse")
                row[f"{name}_{period}"] = value
            if reference is not None:
                other = reference.get(metrics["site"])
                value = None if other is None else other["skill"].get(name, {}).get(
                    "test", {}).get("nse")
                row[f"{name}_test_site_calibration"] = value
        row.update({k: metrics[k] for k in ("fold",) if k in metrics})
        rows.append(row)
    return rows


def _median(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def write_summary(out: Path, results: list[dict], reference: dict | None = None) -> None:
    """``summary.csv`` and ``summary.md``: per-site NSE per variable and period, medians."""
    rows = summary_rows(results, reference)
    columns = list(rows[0]) if rows else ["site"]
    median = {"site": "median", **{c: _median([r.get(c) for r in rows]) for c in columns
                                   if c not in ("site", "fold")}}
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in [*rows, median]:
        writer.writerow({k: "" if row.get(k) is None else (
            f"{row[k]:.4f}" if isinstance(row.get(k), float) else row.get(k)) for k in columns})
    _write_text(out / "summary.csv", buffer.getvalue())
    shown = [c for c in columns if c != "site"]
    lines = ["| site | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for row in [*rows, median]:
        cells = ["" if row.get(c) is None else (f"{row[c]:.3f}" if isinstance(row[c], float)
                                                 else str(row[c])) for c in shown]
        name = "**median**" if row["site"] == "median" else row["site"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    _write_text(out / "summary.md", "Test-period and calibration-period NSE per site.\n\n"
                + "\n".join(lines) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def spatial_cv(sites_dir: Path, folds: int, out: Path, config: SpatialConfig,
               sites_csv: Path | None = None, site_runs: Path | None = None,
               progress: bool = True, overwrite: bool = False, inputs: tuple = ()
               ) -> list[dict]:
    """Leave-sites-out cross-validation: the sites are split into ``folds`` groups; each
    group's sites are predicted by a network trained on the others (``out/folds/<k>/``), and
    ``out/<SITE>/`` is the run directory of that prediction. ``out/summary.*`` holds each
    site's skill, next to its own site calibration in ``site_runs/<SITE>/`` if given."""
    sites_csv = Path(sites_csv) if sites_csv else Path(sites_dir) / "sites.csv"
    rows = read_sites_rows(sites_csv)
    names = [row["SITE_ID"].strip() for row in rows]
    if not 2 <= folds <= len(names):
        raise CalibrationConfigError(f"--folds must be between 2 and the number of sites "
                                     f"({len(names)}), not {folds}")
    out = Path(out)
    for name in ("summary.csv", "summary.md"):
        if (out / name).exists() and not overwrite:
            raise output_error(out / name, "exists; pass --overwrite to replace it")
    order = np.random.default_rng(config.seeds[0]).permutation(len(names))
    fold_of = {names[i]: int(k % folds) for k, i in enumerate(order)}
    results = []
    for fold in range(folds):
        held = [row for row in rows if fold_of[row["SITE_ID"].strip()] == fold]
        kept = [row for row in rows if fold_of[row["SITE_ID"].strip()] != fold]
        fold_dir = out / "folds" / str(fold)
        fold_dir.mkdir(parents=True, exist_ok=True)
        train_csv, test_csv = fold_dir / "train_sites.csv", fold_dir / "test_sites.csv"
        _write_rows(train_csv, kept)
        _write_rows(test_csv, held)
        model_dir = fold_dir / "model"
        if not (model_dir / MODEL_RECORD).exists() or overwrite:
            spatial_train(sites_dir, model_dir, config, sites_csv=train_csv, progress=progress,
                          overwrite=overwrite, inputs=inputs)
        else:  # a finished fold is reused only for the same configuration and sites
            record = read_json(model_dir / "config.json")
            if (record.get("spatial") != json.loads(json.dumps(config.to_dict()))
                    or record.get("sites") != [row["SITE_ID"].strip() for row in kept]):
                raise output_error(model_dir, "holds a fold trained with another "
                                              "configuration or other sites; pass "
                                              "--overwrite to train it again")
        model = load_model(model_dir)
        for site in read_sites(test_csv, sites_dir, config.extra_predictors):
            run = out / site.site_id
            if (not overwrite and (run / COMPLETION_RECORD).exists()
                    and _predicted_by(run, model_dir)):  # finished before an interruption
                metrics = read_json(run / COMPLETION_RECORD)
            else:
                mode = prepare_run_directory(run, [site.driver_path], overwrite)
                metrics = predict_site(model, site, run, mode)
            results.append({**metrics, "fold": fold})
    reference = None
    if site_runs is not None:
        reference = {}
        for name in names:
            path = Path(site_runs) / name / COMPLETION_RECORD
            if path.is_file():
                reference[name] = read_json(path)
            else:
                notice(f"{path}: not found; {name} has no site calibration to compare with")
    results.sort(key=lambda m: m["site"])
    write_summary(out, results, reference)
    return results


def _predicted_by(run: Path, model_dir: Path) -> bool:
    """Whether the run directory ``run`` is a prediction of the model in ``model_dir``."""
    try:
        record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("spatial_model") == str(model_dir)


def _write_rows(path: Path, rows: list[dict]) -> None:
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


__all__ = ["MODEL_RECORD", "Site", "SpatialModel", "load_config", "load_model", "load_weights",
           "predict_site", "read_sites", "save_weights", "site_prior", "spatial_cv",
           "spatial_predict",
           "spatial_train", "write_summary"]
