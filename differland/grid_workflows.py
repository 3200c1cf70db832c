"""Gridded workflows: build a twin world, train the spatialization network over a grid's
cells, predict parameter maps, flux maps and regional budgets, and the demo.

A grid model directory (``spatial train --grid``) holds ``config.json`` (the
:class:`~differland.spatial.grid.GridConfig`, the grid, the predictors), ``predictors.json``,
``split.json`` (the role of each cell: training, validation, test), ``weights/seed_<N>/``,
``history.json``, ``figures/loss.png``, ``checkpoints/`` and, written last,
``training.json``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io as text_io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from differland import __version__, plots
from differland.calibrate.site import CalibrationConfigError
from differland.forcing import Forcing
from differland.io import (
    DriverError,
    check_writable_location,
    output_error,
    read_grid_driver,
    read_json,
    write_atomically,
    write_dataset,
    write_json,
)
from differland.io.grid import month_clock
from differland.params import SPECS, ParameterSet, unconstrain
from differland.spatial import network as spatial_network
from differland.spatial.grid import (
    ROLES,
    GridConfig,
    GridProblem,
    holdout_roles,
    new_network,
    pixel_mesh,
    predict_in_batches,
    predictions,
    train_grid,
    variational_normals,
)
from differland.spatial.predictors import IGBP_PFT, Standardizer, grid_predictor_table
from differland.spatial.training import physical_parameters, r_squared
from differland.spatial_workflows import (
    _loss_figure,
    _prepare_model_directory,
    load_weights,
    save_weights,
)
from differland.workflows import notice, package_digest
from differland.world.build import WorldSpec, build_world
from differland.world.maps import IGBP_CLASSES

GRID_MODEL_KIND = "differland grid model"
MODEL_RECORD = "training.json"
MODEL_FILES = ("config.json", "predictors.json", "split.json", "history.json", MODEL_RECORD)
LOAD_BATCH = 4096
"""Cells read from a grid driver at a time."""
IN_MEMORY_GIB = 4.0
"""Default largest size [GiB] of the per-cell training arrays held in memory; a larger
grid's are memory-mapped from disk and read a minibatch at a time."""
FLUXES = ("gpp", "reco", "nee", "nbe", "et", "lai", "sif", "biomass")
"""Fluxes and states a prediction maps."""
SECONDS_PER_YEAR = 365.25 * 86400.0
DAYS_PER_YEAR = 365.25
IDENTIFIED_RATIO = 0.3
"""A parameter is reported as identified where the observations' Cramér–Rao standard
deviation at a typical cell is below this share of the spread of its map (unconstrained
space): then the map can be recovered with R^2 of about 1 - 0.3^2."""
IDENTIFIABILITY_CELLS = 96


# --- the twin world -------------------------------------------------------------------------


def _check_new_output(out: Path, what: str) -> None:
    out = Path(out)
    if out.exists():
        raise output_error(out, f"--out exists; {what} is never written over an existing "
                                "path (choose another --out or remove it)")
    check_writable_location(out)


def write_grid_store(dataset: xr.Dataset, out: Path) -> None:
    """Write a grid dataset as a Zarr store atomically: into a hidden sibling folder, then
    renamed to ``out``."""
    out = Path(out)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        encoding = {}
        for name, variable in dataset.data_vars.items():
            chunks = tuple(min(size, 12 if dim == "time" else 256)
                           for dim, size in zip(variable.dims, variable.shape, strict=True))
            if chunks:
                encoding[name] = {"chunks": chunks}
        encoding["time"] = {"units": "days since 2001-01-01", "calendar": "standard",
                            "dtype": "int64"}
        encoding["time_bnds"] = {"units": "days since 2001-01-01", "calendar": "standard",
                                 "dtype": "int64", "chunks": None}
        encoding["time_bnds"].pop("chunks")
        dataset.to_zarr(temporary / "store.zarr", mode="w", zarr_format=2, consolidated=True,
                        encoding=encoding)
        os.replace(temporary / "store.zarr", out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def make_world(out: Path, spec: WorldSpec, progress: bool = True) -> xr.Dataset:
    """Build the twin world of ``spec`` and write it to ``out`` (a new ``.zarr`` path)."""
    _check_new_output(out, "a world")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="cell", desc="world", leave=False)

    def report(stage, n, total):
        if bar is not None:
            bar.total = total
            bar.update(n)

    dataset = build_world(spec, report)
    if bar is not None:
        bar.close()
    write_grid_store(dataset, out)
    return dataset


# --- from a grid driver to a training problem -----------------------------------------------


def _pft_of(driver, cells: np.ndarray) -> np.ndarray:
    if "igbp" not in driver.categorical:
        return np.full(cells.size, "", dtype=object)
    codes = driver.static("igbp", cells)
    return np.array([IGBP_PFT.get(IGBP_CLASSES.get(int(c), ""), "") if np.isfinite(c) else ""
                     for c in codes], dtype=object)


def grid_predictors(driver, forcing: dict[str, np.ndarray], extra: tuple[str, ...],
                    cells: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """``(names, table (P, n), pft (P,))`` of ``cells`` (:func:`grid_predictor_table` of
    their ``forcing`` fields ``(P, T)``, the grid's ``elevation`` map if it has one, and the
    ``extra`` static maps)."""
    missing = [name for name in extra if name not in driver.predictors]
    if missing:
        raise DriverError(f"{driver.path}: variable {missing[0]}: the configuration's "
                          "extra_predictors names a map the grid does not have")
    static = {name: driver.static(name, cells)
              for name in (("elevation",) if "elevation" in driver.predictors else ()) + extra}
    names, table = grid_predictor_table(
        forcing, driver.dates.astype("datetime64[M]").astype(int) % 12, static)
    bad = ~np.isfinite(table)
    if bad.any():
        cell, column = np.argwhere(bad)[0]
        raise DriverError(f"{driver.path}: variable {names[column]}: no value at the simulated "
                          f"cell lat={driver.lat[driver.rows[cells[cell]]]:g}, "
                          f"lon={driver.lon[driver.cols[cells[cell]]]:g}")
    return names, table, _pft_of(driver, cells)


DEFAULT_SIGMA_FRACTION = 0.2
"""Without an uncertainty variable, a stream's sigma is this share of the standard deviation
of each cell's (or region's) observed values over time."""


def stream_arrays(observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, mask, sigma)`` of a grid observation ``(rows, T)`` for the loss: values 0
    and mask 0 at gaps and where the uncertainty is not positive; sigma from the driver, or
    :data:`DEFAULT_SIGMA_FRACTION` x the row's standard deviation (1 where it has none)."""
    ok = observation.mask
    if observation.sigma is not None:
        ok = ok & (observation.sigma > 0)
        sigma = np.where(ok, observation.sigma, 1.0)
    else:
        count = np.maximum(ok.sum(axis=-1, keepdims=True), 1)
        observed = np.where(ok, observation.values, 0.0)
        mean = observed.sum(axis=-1, keepdims=True) / count
        std = np.sqrt((np.where(ok, observed - mean, 0.0) ** 2).sum(axis=-1, keepdims=True)
                      / count)
        spread = np.where(std > 0, DEFAULT_SIGMA_FRACTION * std, 1.0)
        sigma = np.broadcast_to(spread, ok.shape)
    return np.where(ok, observation.values, 0.0), ok, sigma


def training_bytes(driver, config: GridConfig) -> int:
    """Bytes of the per-cell training arrays of ``driver`` under ``config`` (float32
    forcing, and values, mask and sigma of each cell stream)."""
    streams = [s for s in config.streams if s in driver.observations]
    return driver.n_pixels * driver.n_steps * 4 * (len(dataclasses.fields(Forcing))
                                                   + 3 * len(streams))


def _cell_array(folder: Path | None, name: str, shape: tuple[int, ...]):
    if folder is None:
        return np.empty(shape, np.float32)
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32,
                                     shape=shape)


@contextlib.contextmanager
def cell_storage(driver, config: GridConfig, out: Path, memory_gib: float):
    """Where :func:`load_problem` keeps the per-cell arrays of ``driver``: ``None``
    (memory) when they need at most ``memory_gib`` GiB, else a hidden temporary folder
    beside ``out``, removed on exit.

    Raises:
        DriverError: the disk beside ``out`` has not the room.
    """
    needed = training_bytes(driver, config)
    if needed <= memory_gib * 2**30:
        yield None
        return
    out = Path(out)
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise DriverError(f"{driver.path}: the training arrays need {needed / 2**30:.1f} GiB "
                          f"on disk beside {out} (more than --memory {memory_gib:g} GiB) and "
                          f"{free / 2**30:.1f} GiB are free there")
    for stale in out.parent.glob(f".{out.name}.cells-*"):  # left by a killed run
        if stale.is_dir() and not stale.is_symlink() and all(
                path.suffix == ".npy" and path.is_file() for path in stale.iterdir()):
            shutil.rmtree(stale)
            notice(f"removed {stale}, left by an interrupted run")
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.cells-", dir=out.parent) as folder:
        yield Path(folder)


def load_problem(driver, config: GridConfig, standardizer: Standardizer | None = None,
                 roles: np.ndarray | None = None, on_disk: Path | None = None):
    """``(problem, standardizer, predictor names)`` of a grid driver: every cell's forcing,
    observations and network inputs (float32), the roles of the cells, and the regional
    observations, read in one pass over the grid, :data:`LOAD_BATCH` cells at a time.

    Args:
        standardizer: default one fitted on the training cells.
        roles: the cells' :data:`ROLES` (default drawn by :func:`holdout_roles`).
        on_disk: an existing empty folder: the per-cell series are written there as
            ``.npy`` files and memory-mapped read-only, so that a minibatch reads only its
            cells and a grid larger than memory trains (default: held in memory).
    """
    streams = tuple(s for s in config.streams if s in driver.observations)
    regional = tuple(s for s in config.regional if s in driver.regional and driver.regions)
    if not streams and not regional:
        raise DriverError(f"{driver.path}: none of the configuration's streams "
                          f"({', '.join(config.streams + config.regional)}) is observed")
    n, n_steps = driver.n_pixels, driver.n_steps
    folder = None if on_disk is None else Path(on_disk)
    shape = (len(streams), n, n_steps)
    values, mask, sigma = (_cell_array(folder, name, shape)
                           for name in ("values", "mask", "sigma"))
    forcing, tables, pfts = {}, [], []
    names: tuple[str, ...] = ()
    for start in range(0, n, LOAD_BATCH):  # one pass over the grid
        cells = np.arange(start, min(start + LOAD_BATCH, n))
        batch = driver.forcing(cells)
        fields = {f.name: np.asarray(getattr(batch, f.name), np.float32)
                  for f in dataclasses.fields(batch)}
        for name, field in fields.items():
            if name not in forcing:
                forcing[name] = _cell_array(folder, f"forcing_{name}", (n, *field.shape[1:]))
            forcing[name][cells] = field
        for k, stream in enumerate(streams):
            values[k, cells], mask[k, cells], sigma[k, cells] = stream_arrays(
                driver.observation(stream, cells))
        names, table, pft = grid_predictors(driver, fields, config.extra_predictors, cells)
        tables.append(table)
        pfts.append(pft)
    if folder is not None:  # written once, then read-only
        for array in (values, mask, sigma, *forcing.values()):
            array.flush()
        values, mask, sigma = (np.load(folder / f"{name}.npy", mmap_mode="r")
                               for name in ("values", "mask", "sigma"))
        forcing = {name: np.load(folder / f"forcing_{name}.npy", mmap_mode="r")
                   for name in forcing}
    table, pft = np.concatenate(tables), np.concatenate(pfts)
    if roles is None:
        roles = holdout_roles(driver.rows, driver.cols, config, seed=config.seeds[0])
    if standardizer is None:
        train = roles == ROLES["train"]
        standardizer = Standardizer.fit_table(table[train], names)
    inputs = standardizer.inputs_table(table, pft).astype(np.float32)
    n_regions = len(driver.regions)
    fractions = driver.region_weights(np.arange(n)) if n_regions else np.zeros((0, n))
    region_values = np.zeros((len(regional), n_regions, n_steps), np.float32)
    region_mask, region_sigma = np.zeros_like(region_values), np.ones_like(region_values)
    for k, name in enumerate(regional):
        observation = driver.regional_observation(name)  # (T, R)
        transposed = dataclasses.replace(
            observation, values=observation.values.T, mask=observation.mask.T,
            sigma=None if observation.sigma is None else observation.sigma.T,
            sigma_mask=None if observation.sigma_mask is None else observation.sigma_mask.T)
        region_values[k], region_mask[k], region_sigma[k] = stream_arrays(transposed)
    problem = GridProblem(forcing, inputs, values, mask, sigma, streams,
                          np.asarray(fractions, np.float64), region_values, region_mask,
                          region_sigma, regional, np.asarray(roles, np.int8))
    return problem, standardizer, names


def grid_config_for(driver, values: dict | None = None) -> GridConfig:
    """A :class:`GridConfig` from JSON ``values``, with the grid's declared
    ``free_parameters`` and ``parameter_values`` (a twin world's) where the values do not
    give them."""
    values = dict(values or {})
    for key in ("free_parameters", "parameter_values"):
        if key not in values and key in driver.attrs:
            try:
                values[key] = json.loads(driver.attrs[key])
            except (TypeError, ValueError):
                raise DriverError(f"{driver.path}: attribute {key} is not JSON") from None
    if "model_options" in driver.attrs and not {"model", "water_stress", "evapotranspiration",
                                                "phenology"} & set(values):
        try:
            values.update(json.loads(driver.attrs["model_options"]))
        except (TypeError, ValueError):
            raise DriverError(f"{driver.path}: attribute model_options is not JSON") from None
    return GridConfig.from_dict(values)


def read_grid_config(path: Path | None, seed: int | None = None,
                     iterations: int | None = None) -> dict:
    """The JSON object of a grid configuration file (keys of :class:`GridConfig`), with
    ``--seed`` (one network of that seed) and ``--iterations`` overrides; checked against
    :class:`GridConfig` (the grid's own declarations are added when it is read)."""
    values = {}
    if path is not None:
        values = read_json(path)
        if not isinstance(values, dict):
            raise CalibrationConfigError(f"{path}: the configuration must be a JSON object")
    if seed is not None:
        values["seeds"] = [seed]
    if iterations is not None:
        values["max_iterations"] = iterations
    try:
        GridConfig.from_dict(values)
    except CalibrationConfigError as error:
        raise CalibrationConfigError(f"{path}: {error}" if path else str(error)) from None
    return values


# --- training -------------------------------------------------------------------------------


def grid_train(grid: Path, out: Path, config_values: dict | None = None,
               devices: int | None = None, progress: bool = True, overwrite: bool = False,
               stop_after: int | None = None, memory_gib: float = IN_MEMORY_GIB) -> dict:
    """Train the network(s) over the cells of ``grid`` and write the model directory
    ``out``; returns the training record (empty when ``stop_after`` stopped it). Training
    arrays over ``memory_gib`` GiB are memory-mapped from a temporary folder beside
    ``out`` (:func:`cell_storage`)."""
    out = Path(out)
    mode = _prepare_model_directory(out, [grid], overwrite, kind=GRID_MODEL_KIND)
    driver = read_grid_driver(grid)
    try:
        config = grid_config_for(driver, config_values)
    except CalibrationConfigError as error:
        raise CalibrationConfigError(str(error)) from None
    mesh = pixel_mesh(devices)
    with cell_storage(driver, config, out, memory_gib) as on_disk:
        problem, standardizer, names = load_problem(driver, config, on_disk=on_disk)
        return _train_problem(grid, out, driver, config, mesh, problem, standardizer, names,
                              mode, progress, stop_after)


def _train_problem(grid, out, driver, config, mesh, problem, standardizer, names, mode,
                   progress, stop_after) -> dict:
    """:func:`grid_train` once the cells are loaded."""
    record = {"kind": GRID_MODEL_KIND, "differland_version": __version__,
              "differland_source_sha256": package_digest(),
              "precision": "float64" if jax.config.jax_enable_x64 else "float32",
              "grid": str(Path(grid).resolve()), "cells": driver.n_pixels,
              "parameter_names": list(config.parameter_names),
              "predictors": list(names) + ["plant_functional_type"],
              "streams": list(problem.streams), "regional": list(problem.regional),
              "grid_config": config.to_dict()}
    record = json.loads(json.dumps(record))
    if mode == "resume":
        previous = read_json(out / "config.json")
        if {k: previous.get(k) for k in record} != record:
            raise output_error(out, "--out holds an unfinished training of another "
                                    "configuration or grid; pass --overwrite to start again")
    if mode == "replace":
        for name in MODEL_FILES[::-1]:
            (out / name).unlink(missing_ok=True)
        for folder in ("weights", "checkpoints"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", record)
    write_json(out / "predictors.json", standardizer.to_dict())
    write_json(out / "split.json", {"rows": driver.rows.tolist(), "cols": driver.cols.tolist(),
                                    "roles": problem.roles.tolist(),
                                    "role_codes": dict(ROLES)})
    started = time.perf_counter()
    histories, seeds, compiled = {}, {}, {}
    for seed in config.seeds:
        fingerprint = json.dumps({**record, "seed": seed}, sort_keys=True)
        network, hybrid = new_network(standardizer.n_inputs, config, seed)
        result = train_grid(problem, config, network, hybrid, seed, mesh,
                            checkpoint_dir=out / "checkpoints" / f"seed_{seed}",
                            progress=progress, description=f"seed {seed}",
                            fingerprint_text=fingerprint, stop_after=stop_after,
                            compiled=compiled)
        if not result.finished:
            return {}
        save_weights(out / "weights" / f"seed_{seed}", result)
        histories[str(seed)] = result.history
        seeds[str(seed)] = {"iterations": result.history["iterations"],
                            "stopped_early": result.stopped_early,
                            "best_validation_loss": result.history["best_validation_loss"],
                            "resumed_from_iteration": result.resumed_from}
    write_json(out / "history.json", histories)
    _loss_figure(out / "figures" / "loss.png", histories)
    training = {"cells": driver.n_pixels, "devices": int(mesh.devices.size),
                "wall_seconds": time.perf_counter() - started, "seeds": seeds}
    write_json(out / MODEL_RECORD, training)
    return training


@dataclasses.dataclass
class GridModel:
    """A trained grid model directory, loaded."""

    path: Path
    config: GridConfig
    standardizer: Standardizer
    record: dict
    members: list  # (graphdef, state, hybrid) per seed


def load_grid_model(path: Path) -> GridModel:
    """A model directory written by :func:`grid_train`.

    Raises:
        DriverError: not a finished grid model, or its files cannot be read.
    """
    path = Path(path)
    if not (path / MODEL_RECORD).is_file():
        raise DriverError(f"{path}: not a trained grid model (no {MODEL_RECORD}; train one with "
                          "differland spatial train --grid, or finish it by rerunning it)")
    record = read_json(path / "config.json")
    if not isinstance(record, dict) or record.get("kind") != GRID_MODEL_KIND:
        raise DriverError(f"{path / 'config.json'}: not a differland grid model")
    try:
        config = GridConfig.from_dict(record["grid_config"])
        standardizer = Standardizer.from_dict(read_json(path / "predictors.json"))
        members = [load_weights(path / "weights" / f"seed_{seed}", config,
                                standardizer.n_inputs, seed) for seed in config.seeds]
    except (CalibrationConfigError, KeyError, TypeError, OSError, ValueError) as error:
        raise DriverError(f"{path}: cannot be read: {error}") from None
    return GridModel(path, config, standardizer, record, members)


# --- prediction -----------------------------------------------------------------------------


def member_parameters(model: GridModel, inputs: np.ndarray) -> list[tuple[ParameterSet,
                                                                           object]]:
    """``(parameters, hybrid weights)`` of every member at cells of standardised predictors
    ``inputs`` ``(cells, n_inputs)``: the parameters ``{name: (cells,)}`` in physical units.
    A point model gives one member per seed; a variational model ``posterior_draws`` per
    seed, each drawing every cell independently from its variational posterior (seeded by
    the member's seed and the draw)."""
    config = model.config
    fixed = config.fixed_parameters()
    names = config.parameter_names
    out = []
    for seed, (graphdef, state, hybrid) in zip(config.seeds, model.members, strict=True):
        outputs = np.asarray(spatial_network.apply(graphdef, state,
                                                   jnp.asarray(inputs, jnp.float32)))
        if not config.variational:
            out.append((physical_parameters(jnp.asarray(outputs), names, config, fixed),
                        hybrid))
            continue
        loc, scale, factor = (np.asarray(x) for x in variational_normals(
            jnp.asarray(outputs), len(names), config))
        for draw in range(config.posterior_draws):
            rng = np.random.default_rng([seed, draw])
            noise = rng.standard_normal(loc.shape)
            mixed = np.einsum("bpr,br->bp", factor,
                              rng.standard_normal((loc.shape[0], factor.shape[-1])))
            z = jnp.asarray(loc + scale * noise + mixed, jnp.float32)
            out.append((physical_parameters(z, names, config, fixed), hybrid))
    return out


def identifiability(problem: GridProblem, params: ParameterSet, config: GridConfig, hybrid,
                    cells: np.ndarray) -> dict[str, float]:
    """Median over ``cells`` of each predicted parameter's Cramér–Rao standard deviation in
    the unconstrained space, from the cell streams' Gaussian likelihood at ``params`` (the
    Fisher information J^T J of the residuals scaled by their uncertainties; the other
    predicted parameters free)."""
    names = config.parameter_names
    scales = dict(config.parameter_scales)
    streams = problem.streams
    z0 = unconstrain(ParameterSet({n: jnp.asarray(params[n][cells]) for n in names}),
                     scales=scales)
    fixed = ParameterSet({k: jnp.asarray(v[cells]) for k, v in params.items()})
    forcing = Forcing(**{k: jnp.asarray(v[cells]) for k, v in problem.forcing.items()})
    mask = jnp.asarray(problem.mask[:, cells])
    sigma = jnp.asarray(problem.sigma[:, cells])

    def residuals(z_vector, fixed_cell, forcing_cell, mask_cell, sigma_cell):
        p = physical_parameters(z_vector, names, config, fixed_cell)
        single = jax.tree.map(lambda x: x[None], (p, forcing_cell))
        ewt = mask_cell[streams.index("ewt")][None] if "ewt" in streams else None
        out = predictions(*single, config.model_config, hybrid, streams, ewt)
        return jnp.concatenate([(out[s][0] / sigma_cell[k]) * mask_cell[k]
                                for k, s in enumerate(streams)])

    z_matrix = jnp.stack([z0[n] for n in names], axis=1)
    jacobian = jax.jit(jax.vmap(jax.jacfwd(residuals)))(
        z_matrix, fixed, forcing, jnp.moveaxis(mask, 1, 0), jnp.moveaxis(sigma, 1, 0))
    fisher = np.einsum("pti,ptj->pij", np.asarray(jacobian, np.float64),
                       np.asarray(jacobian, np.float64))
    sd = []
    for f in fisher:
        covariance = np.linalg.pinv(f + 1e-6 * np.eye(len(names)))
        sd.append(np.sqrt(np.clip(np.diag(covariance), 0.0, None)))
    return dict(zip(names, np.median(np.array(sd), axis=0).tolist(), strict=True))


def annual_totals(rates: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(totals, years)``: monthly regional rates ``(R, T)`` [gC d-1] summed over each
    complete calendar year [PgC yr-1] ``(R, years)`` (NaN for an incomplete year, or one
    with a NaN month)."""
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    monthly = rates * month_clock(dates)[1][None, :]  # gC per month
    out = [monthly[:, years == year].sum(axis=1) / 1e15 if np.sum(years == year) == 12
           else np.full(rates.shape[0], np.nan) for year in np.unique(years)]
    return np.stack(out, axis=1), np.unique(years)


def annual_budgets(nbe: np.ndarray, weights: np.ndarray, dates: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Regional net biome exchange per calendar year: ``nbe`` ``(P, T)`` [gC m-2 d-1],
    ``weights`` ``(R, P)`` region fraction x cell area [m2]; returns :func:`annual_totals`
    ``(R, years)`` [PgC yr-1] and the years."""
    return annual_totals(weights @ nbe, dates)


CYCLIC_DAYS = ("labile_release_day", "leaf_fall_day")
"""Phenology dates that act through the day of the year only: dates a year apart give the
same model, so their recovery is scored on the day of the year."""


def ensemble_mean(name: str, members: np.ndarray) -> np.ndarray:
    """Mean over the leading (member) axis of a parameter's predictions; for
    :data:`CYCLIC_DAYS` the circular mean of the day of the year, placed in the parameter's
    second year (members a year apart, or either side of New Year, are not averaged to a
    date between them)."""
    if name not in CYCLIC_DAYS:
        return members.mean(axis=0)
    angle = 2.0 * np.pi * np.asarray(members, np.float64) / DAYS_PER_YEAR
    mean = np.arctan2(np.sin(angle).mean(axis=0), np.cos(angle).mean(axis=0))
    return (DAYS_PER_YEAR * (1.0 + (mean / (2.0 * np.pi)) % 1.0)).astype(members.dtype)


def ensemble_spread(name: str, members: np.ndarray) -> np.ndarray:
    """Standard deviation over the leading (member) axis; for :data:`CYCLIC_DAYS` the
    circular standard deviation in days."""
    if name not in CYCLIC_DAYS:
        return members.std(axis=0)
    angle = 2.0 * np.pi * np.asarray(members, np.float64) / DAYS_PER_YEAR
    length = np.hypot(np.sin(angle).mean(axis=0), np.cos(angle).mean(axis=0))
    return (DAYS_PER_YEAR / (2.0 * np.pi) * np.sqrt(-2.0 * np.log(np.clip(length, 1e-12, 1.0)))
            ).astype(members.dtype)


def ensemble_interval(name: str, members: np.ndarray, level: float = 0.9
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed ``level`` interval over the leading (member) axis; for
    :data:`CYCLIC_DAYS` the interval of the days' offsets from their circular mean
    (:func:`ensemble_mean`), placed around it."""
    tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    if name not in CYCLIC_DAYS:
        lower, upper = np.quantile(members, tails, axis=0)
        return lower, upper
    centre = ensemble_mean(name, members)
    lower, upper = np.quantile(_day_offset(members - centre), tails, axis=0)
    return centre + lower, centre + upper


def _day_offset(days: np.ndarray) -> np.ndarray:
    """Differences of dates [d] taken on the circle of the year, in [-182.6, 182.6)."""
    return (np.asarray(days) + DAYS_PER_YEAR / 2.0) % DAYS_PER_YEAR - DAYS_PER_YEAR / 2.0


def interval_contains(name: str, lower: np.ndarray, upper: np.ndarray, centre: np.ndarray,
                      truth: np.ndarray) -> np.ndarray:
    """Whether ``truth`` lies in [lower, upper] (for :data:`CYCLIC_DAYS`, once placed on
    the year's circle nearest to ``centre``)."""
    truth = np.asarray(truth, np.float64)
    if name in CYCLIC_DAYS:
        truth = centre + _day_offset(truth - centre)
    return (lower <= truth) & (truth <= upper)


def _day_r_squared(predicted: np.ndarray, planted: np.ndarray) -> float:
    """:func:`r_squared` of dates with errors taken on the circle of the year."""
    planted = np.asarray(planted, float)
    error = (np.asarray(predicted, float) - planted + DAYS_PER_YEAR / 2.0) % DAYS_PER_YEAR \
        - DAYS_PER_YEAR / 2.0
    total = np.sum((planted - planted.mean()) ** 2)
    return float(1.0 - np.sum(error**2) / total) if total > 0 else math.nan


def _nse(predicted: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth) & np.isfinite(predicted)
    spread = np.sum((truth[ok] - truth[ok].mean()) ** 2)
    return float(1.0 - np.sum((predicted[ok] - truth[ok]) ** 2) / spread) if spread > 0 \
        else math.nan


def grid_predict(model_dir: Path, grid: Path, out: Path, progress: bool = True,
                 memory_gib: float = IN_MEMORY_GIB) -> dict:
    """Parameter maps, flux maps, regional budgets, the identifiability report and, on a
    twin world, the recovery of the truth; written to ``out`` (see ``docs/spatial.md``).
    Cell arrays over ``memory_gib`` GiB are memory-mapped as in :func:`grid_train`."""
    out = Path(out)
    model = load_grid_model(model_dir)
    for source in (grid, model_dir):
        if Path(source).resolve() == out.resolve() or out.resolve() in Path(
                source).resolve().parents:
            raise output_error(out, f"--out would overwrite the input {source}")
    if out.exists() and any(out.iterdir()) and not (out / "recovery.json").exists() \
            and not (out / "parameters.nc").exists():
        raise output_error(out, "--out exists and is not a differland prediction; choose "
                                "another directory")
    check_writable_location(out / "parameters.nc")
    driver = read_grid_driver(grid)
    split = read_json(Path(model_dir) / "split.json")
    same_grid = (split["rows"] == driver.rows.tolist() and split["cols"] == driver.cols.tolist())
    roles = np.asarray(split["roles"], np.int8) if same_grid else np.full(
        driver.n_pixels, ROLES["test"], np.int8)
    config = dataclasses.replace(model.config, validation_fraction=0.0, test_fraction=0.0)
    with cell_storage(driver, config, out, memory_gib) as on_disk:
        problem, _, _ = load_problem(driver, config, model.standardizer, roles, on_disk)
        return _predict_problem(model, model_dir, grid, out, driver, config, problem)


def _predict_problem(model, model_dir, grid, out, driver, config, problem) -> dict:
    """:func:`grid_predict` once the cells are loaded."""
    out.mkdir(parents=True, exist_ok=True)
    members = member_parameters(model, problem.inputs)
    names = config.parameter_names
    every = tuple(model.config.model_config.parameter_names())
    stacked = {n: np.stack([np.asarray(m[n]) for m, _ in members]) for n in every}
    mean_params = {n: ensemble_mean(n, stacked[n]) for n in every}
    intervals = {n: ensemble_interval(n, stacked[n]) for n in names} if len(members) > 1 \
        else {}
    what = "posterior" if config.variational else "ensemble"
    # parameter maps
    variables = {}
    for name in every:
        attrs = {"units": SPECS[name].units, "long_name": name.replace("_", " "),
                 "predicted": int(name in names)}
        variables[name] = driver.to_map(mean_params[name], name, attrs)
        if name in intervals:
            variables[f"{name}_spread"] = driver.to_map(
                ensemble_spread(name, stacked[name]), f"{name}_spread",
                {"units": SPECS[name].units, "long_name": f"{what} spread of {name}"})
            for bound, values in zip(("q05", "q95"), intervals[name], strict=True):
                variables[f"{name}_{bound}"] = driver.to_map(
                    values, f"{name}_{bound}",
                    {"units": SPECS[name].units,
                     "long_name": f"{int(bound[1:])} % quantile of the {what} of {name}"})
    write_dataset(out / "parameters.nc", xr.Dataset(variables, attrs={
        "title": "differland parameter maps", "model": str(model_dir), "grid": str(grid),
        "members": len(members), "members_are": what}))
    # fluxes: the members' mean, and each member's regional budgets
    flux_names = tuple(dict.fromkeys((*FLUXES, *problem.streams)))
    weights = driver.region_weights(np.arange(driver.n_pixels)) if driver.regions else None
    total, member_budgets = None, []
    for member, hybrid in members:
        member_fluxes = predict_in_batches(member, problem.forcing, config.model_config,
                                           hybrid, flux_names)
        total = member_fluxes if total is None else {
            n: total[n] + member_fluxes[n] for n in flux_names}
        if weights is not None:
            member_budgets.append(annual_budgets(member_fluxes["nbe"], weights,
                                                 driver.dates)[0])
    fluxes = {n: total[n] / len(members) for n in flux_names}
    flux_units = {"gpp": "gC m-2 d-1", "reco": "gC m-2 d-1", "nee": "gC m-2 d-1",
                  "nbe": "gC m-2 d-1", "et": "mm d-1", "lai": "m2 m-2", "sif": "1",
                  "biomass": "gC m-2", "ewt": "mm"}
    flux_maps = {n: driver.to_map(fluxes[n], n, {"units": flux_units.get(n, "1")})
                 for n in FLUXES}
    write_dataset(out / "fluxes.nc", xr.Dataset(flux_maps, attrs={
        "title": f"differland flux maps ({what} mean)", "Conventions": "CF-1.8"}))
    _write_geotiffs(out / "maps", flux_maps)
    # identifiability at the predicted parameters
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(problem.n_pixels, size=min(IDENTIFIABILITY_CELLS,
                                                           problem.n_pixels), replace=False))
    crb = identifiability(problem, ParameterSet({k: jnp.asarray(v) for k, v in
                                                 mean_params.items()}),
                          config, model.members[0][2], sample)
    z_mean = unconstrain(ParameterSet({n: jnp.asarray(mean_params[n]) for n in names}),
                         scales=dict(config.parameter_scales))
    spread = {n: float(np.std(np.asarray(z_mean[n]))) for n in names}
    identified = [n for n in names if spread[n] > 0 and crb[n] < IDENTIFIED_RATIO * spread[n]]
    write_json(out / "identified.json", {
        "identified": identified,
        "not_identified": [n for n in names if n not in identified],
        "rule": f"Cramér–Rao sd (median over {sample.size} cells, unconstrained space) < "
                f"{IDENTIFIED_RATIO} x the spread of the predicted map",
        "cramer_rao_sd": crb, "map_spread": spread})
    # regional budgets
    report = {"identified": identified}
    rows = []
    if driver.regions:
        budgets, years = annual_budgets(fluxes["nbe"], weights, driver.dates)
        spread_b = np.std(member_budgets, axis=0) if len(members) > 1 else np.zeros_like(
            budgets)
        means = np.stack([np.nanmean(b, axis=1) for b in member_budgets])  # (members, R)
        bounds_b = np.quantile(member_budgets, [0.05, 0.95], axis=0)
        bounds_mean = np.quantile(means, [0.05, 0.95], axis=0)
        truth_b = None
        if "nbe" in driver.truth:
            truth_b = annual_budgets(driver.true("nbe", np.arange(driver.n_pixels)), weights,
                                     driver.dates)[0]
        observed_b = None
        if "nbe" in driver.regional:
            observation = driver.regional_observation("nbe")
            observed_b = _observed_budgets(observation, weights, driver.dates)
        for r, region in enumerate(driver.regions):
            for y, year in enumerate(years):
                if not np.isfinite(budgets[r, y]):
                    continue
                row = {"region": region, "year": int(year),
                       "nbe_pgc_per_year": float(budgets[r, y]),
                       "ensemble_sd": float(spread_b[r, y])}
                if len(members) > 1:
                    row |= {"q05": float(bounds_b[0, r, y]), "q95": float(bounds_b[1, r, y])}
                if observed_b is not None:
                    row["observed"] = float(observed_b[r, y])
                if truth_b is not None:
                    row["truth"] = float(truth_b[r, y])
                rows.append(row)
            mean_row = {"region": region, "year": "mean",
                        "nbe_pgc_per_year": float(np.nanmean(budgets[r])),
                        "ensemble_sd": float(np.std(means[:, r]))}
            if len(members) > 1:
                mean_row |= {"q05": float(bounds_mean[0, r]), "q95": float(bounds_mean[1, r])}
            if observed_b is not None:
                mean_row["observed"] = float(np.nanmean(observed_b[r]))
            if truth_b is not None:
                mean_row["truth"] = float(np.nanmean(truth_b[r]))
            rows.append(mean_row)
        _write_csv(out / "budgets.csv", rows)
    # recovery of a twin world's truth
    if driver.truth:
        report |= _recovery(driver, problem, names, mean_params, fluxes, rows, identified,
                            intervals)
    write_json(out / "recovery.json" if driver.truth else out / "summary.json", report)
    _figures(out / "figures", driver, problem, fluxes, mean_params, identified, rows)
    return report


def _observed_budgets(observation, weights, dates):
    """Annual budgets [PgC yr-1] of the observed regional means (complete years only)."""
    values = np.where(observation.mask, observation.values, np.nan).T  # (R, T)
    return annual_totals(values * weights.sum(axis=1, keepdims=True), dates)[0]


def _recovery(driver, problem, names, params, fluxes, budget_rows, identified,
              intervals) -> dict:
    roles = problem.roles
    test = roles == ROLES["test"]
    if not test.any():
        test = np.ones(problem.n_pixels, bool)
    cells = np.arange(driver.n_pixels)
    parameters = {}
    for name in names:
        if name not in driver.truth:
            continue
        truth = driver.true(name, cells)
        score = _day_r_squared if name in CYCLIC_DAYS else r_squared
        parameters[name] = {"r2_test_cells": score(params[name][test], truth[test]),
                            "r2_all_cells": score(params[name], truth),
                            "identified": name in identified}
        if name in intervals:
            inside = interval_contains(name, *intervals[name], params[name], truth)
            parameters[name]["coverage_90_test_cells"] = float(np.mean(inside[test]))
    flux_skill = {}
    for name in ("gpp", "reco", "nee", "nbe", "et", "lai", "sif", "biomass"):
        if name in driver.truth and name in fluxes:
            truth = driver.true(name, cells)
            flux_skill[name] = {"nse_test_cells": _nse(fluxes[name][test], truth[test]),
                                "nse_all_cells": _nse(fluxes[name], truth)}
    budgets = [row for row in budget_rows if row["year"] == "mean" and "truth" in row]
    within = [abs(row["nbe_pgc_per_year"] - row["truth"]) <= max(2.0 * row["ensemble_sd"],
                                                                 1e-12)
              for row in budgets]
    report = {"test_cells": int(test.sum()), "parameters": parameters, "fluxes": flux_skill,
              "budgets_within_two_sd": int(sum(within)), "budgets": len(budgets)}
    if budgets and "q05" in budgets[0]:
        report["budgets_within_90"] = int(sum(row["q05"] <= row["truth"] <= row["q95"]
                                              for row in budgets))
    return report


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda p: p.write_text(buffer.getvalue(), encoding="utf-8"))


def _write_geotiffs(folder: Path, maps: dict[str, xr.DataArray]) -> None:
    """Record-mean maps as GeoTIFF (EPSG:4326) through rioxarray."""
    import rioxarray  # noqa: F401  (registers .rio)

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in maps.items():
        mean = data.mean("time").astype(np.float32) if "time" in data.dims else data
        mean = mean.rename(lat="y", lon="x").sortby("y", ascending=False)
        mean = mean.rio.write_crs("EPSG:4326").rio.write_nodata(np.nan)
        path = folder / f"{name}_mean.tif"
        temporary = folder / f".{name}_mean.tmp.tif"
        mean.rio.to_raster(temporary)
        temporary.replace(path)


def _figures(folder: Path, driver, problem, fluxes, params, identified, budget_rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    land = driver.dataset["land_fraction"].values if "land_fraction" in driver.dataset else \
        None
    cells = np.arange(driver.n_pixels)
    for name in identified[:6]:
        truth = driver.true(name, cells) if name in driver.truth else None
        plots.parameter_map_figure(folder / f"parameter_{name}.png", driver.lon, driver.lat,
                                   driver.to_map(params[name]).values,
                                   None if truth is None else driver.to_map(truth).values,
                                   land, name, SPECS[name].units)
    if driver.regions and "nbe" in driver.regional:
        weights = driver.region_weights(cells)
        modelled = (weights @ fluxes["nbe"]) / weights.sum(axis=1, keepdims=True)
        observation = driver.regional_observation("nbe")
        observed = np.where(observation.mask, observation.values, np.nan).T
        plots.regional_series_figure(folder / "regional_nbe.png", driver.dates,
                                     list(driver.regions), modelled, observed)
    towers = [k for k in range(len(problem.streams)) if problem.streams[k] in ("gpp", "reco",
                                                                              "et")]
    if towers:
        observed_cells = np.flatnonzero(problem.mask[towers[0]].any(axis=1))[:4]
        if observed_cells.size:
            plots.tower_figure(folder / "towers.png", driver.dates,
                               [problem.streams[k] for k in towers],
                               {problem.streams[k]: fluxes[problem.streams[k]][observed_cells]
                                for k in towers},
                               {problem.streams[k]: np.where(
                                   problem.mask[k][observed_cells] > 0,
                                   problem.values[k][observed_cells], np.nan)
                                for k in towers})


# --- the variational posterior over a grid -----------------------------------------------


POSTERIOR_RECORD = "posterior.json"
"""The file a grid posterior run writes last."""

POSTERIOR_DEFAULTS = {"seeds": [0, 1, 2]}
"""Settings of a grid posterior where its configuration is silent: a mixture of three
networks, which carries some of the uncertainty of the weights and of the optimisation."""


def grid_posterior(grid: Path, out: Path, config_values: dict | None = None,
                   devices: int | None = None, progress: bool = True,
                   overwrite: bool = False, memory_gib: float = IN_MEMORY_GIB,
                   stop_after: int | None = None) -> dict:
    """A Bayesian spatialization network over the cells of ``grid``: the network trained
    with ``variational`` (see :mod:`differland.spatial.grid`; :data:`POSTERIOR_DEFAULTS`
    where ``config_values`` are silent) into ``out/model`` (resumed
    when unfinished; a finished one of the same configuration is reused), and its
    predictions over the grid in ``out/prediction``: parameter maps (posterior mean, sd,
    5 % and 95 % quantiles), flux maps (posterior mean), regional budgets with their
    posterior sd and 90 % interval, and on a twin world the share of cells whose interval
    holds the planted value. Returns the record written to ``out/posterior.json``; empty
    when ``stop_after`` stopped the training.

    Raises:
        OutputError, DriverError, CalibrationConfigError: before anything is computed.
    """
    out = Path(out)
    if Path(grid).resolve() == out.resolve() or out.resolve() in Path(grid).resolve().parents:
        raise output_error(out, f"--out would overwrite the input {grid}")
    if out.exists() and any(out.iterdir()) and not ((out / "model").exists()
                                                   or (out / POSTERIOR_RECORD).exists()):
        raise output_error(out, "--out exists and is not a differland grid posterior; choose "
                                "another directory")
    values = {**POSTERIOR_DEFAULTS, **(config_values or {}), "variational": True}
    model_dir = out / "model"
    driver = read_grid_driver(grid)
    try:
        wanted = grid_config_for(driver, values).to_dict()
    except CalibrationConfigError as error:
        raise CalibrationConfigError(str(error)) from None
    started = time.perf_counter()
    reuse = (model_dir / MODEL_RECORD).is_file() and not overwrite
    if reuse:
        made = read_json(model_dir / "config.json")
        if made.get("grid_config") != json.loads(json.dumps(wanted)) or made.get(
                "grid") != str(Path(grid).resolve()):
            raise output_error(out, "--out holds a posterior of another configuration or "
                                    "grid; pass --overwrite to replace it")
    # the record marks a finished posterior: it goes before anything is redone
    (out / POSTERIOR_RECORD).unlink(missing_ok=True)
    if not reuse:
        training = grid_train(grid, model_dir, values, devices=devices, progress=progress,
                              overwrite=overwrite, stop_after=stop_after,
                              memory_gib=memory_gib)
        if not training:
            return {}
    trained = time.perf_counter()
    report = grid_predict(model_dir, grid, out / "prediction", progress=progress,
                          memory_gib=memory_gib)
    record = {"method": "variational spatialization network (per cell a normal with a "
                        f"diagonal and rank-{wanted['variational_rank']} covariance from the "
                        f"outputs of {len(wanted['seeds'])} network(s), mixed equally)",
              "model": "model", "prediction": "prediction",
              "members": len(wanted["seeds"]) * wanted["posterior_draws"],
              "training_seconds": None if reuse else trained - started,
              "prediction_seconds": time.perf_counter() - trained, "report": report}
    write_json(out / POSTERIOR_RECORD, record)
    return record


def posterior_table(report: dict) -> str:
    """The recovery of a twin world by a grid posterior, with the coverage of its 90 %
    intervals, as a Markdown table."""
    lines = ["| parameter | identified | R2 test cells | 90 % interval holds the truth "
             "(test cells) |", "|---|---|---|---|"]
    for name, row in report.get("parameters", {}).items():
        coverage = row.get("coverage_90_test_cells", math.nan)
        lines.append(f"| {name} | {'yes' if row['identified'] else 'no'} | "
                     f"{row['r2_test_cells']:.3f} | {coverage:.2f} |")
    if report.get("budgets"):
        lines += ["", f"regional NBE budgets whose 90 % interval holds the truth: "
                      f"{report.get('budgets_within_90', 0)} of {report['budgets']}"]
    return "\n".join(lines)


# --- the demo -------------------------------------------------------------------------------


DEMO_SPEC = WorldSpec(resolution=2.0, region=(-12.0, 42.0, 34.0, 72.0), years=8, seed=0)
DEMO_CONFIG = {"seeds": [0, 1, 2]}
SMOKE_SPEC = WorldSpec(resolution=4.0, region=(-12.0, 42.0, 34.0, 72.0), years=2, seed=0)
SMOKE_CONFIG = {"max_iterations": 4, "eval_every": 2, "patience": 2, "seeds": [0],
                "hidden": 8}


def demo(out: Path, smoke: bool = False, progress: bool = True, world_seed: int = 0) -> dict:
    """Build a small twin world, train on it, predict, and print how well the planted maps
    and fluxes were recovered; everything is written under ``out``. ``world_seed`` draws
    another world of the same settings (planted functions, weather anomalies, noise)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "world.zarr").exists():
            raise output_error(out, "--out exists and is not a differland demo; choose "
                                    "another directory")
    spec, config = (SMOKE_SPEC, SMOKE_CONFIG) if smoke else (DEMO_SPEC, DEMO_CONFIG)
    started = time.perf_counter()
    world = _demo_world(out, dataclasses.replace(spec, seed=world_seed), progress)
    _say("[2/3] training the spatialization network over the world's cells")
    grid_train(world, out / "model", config, progress=progress,
               overwrite=(out / "model" / MODEL_RECORD).exists())
    _say("[3/3] predicting parameter maps, fluxes and regional budgets")
    report = grid_predict(out / "model", world, out / "prediction", progress=progress)
    report["wall_seconds"] = time.perf_counter() - started
    _say(recovery_table(report))
    _say(f"maps, budgets and figures: {out / 'prediction'}  "
         f"({report['wall_seconds']:.0f} s)")
    return report


def _demo_world(out: Path, spec: WorldSpec, progress: bool) -> Path:
    """``out/world.zarr``, built from ``spec`` unless a world of ``spec`` is there."""
    out.mkdir(parents=True, exist_ok=True)
    world = out / "world.zarr"
    if world.exists():
        made = read_grid_driver(world).attrs.get("world_spec")
        wanted = json.dumps({**dataclasses.asdict(spec), "planted": list(spec.planted)})
        if made != wanted:
            raise output_error(out, "--out holds the world of other settings (e.g. --smoke); "
                                    "choose another --out")
    else:
        _say(f"[1/3] building a twin world ({spec.resolution:g} degree cells, "
             f"{spec.years} years) from the shipped land cover, climate zones and elevation")
        make_world(world, spec, progress)
    return world


def posterior_world(out: Path, config: Path | None = None, smoke: bool = False,
                    progress: bool = True, world_seed: int = 0) -> dict:
    """The demo's twin world of ``world_seed`` (``smoke``: its tiny one) in
    ``out/world.zarr`` and a variational network over it (:func:`grid_posterior` with the
    grid configuration file ``config``) in ``out/posterior``; a finished posterior there is
    read, not recomputed. Returns the prediction's recovery report."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "world.zarr").exists():
        raise output_error(out, "--out exists and is not a differland twin world; choose "
                                "another directory")
    values = read_grid_config(config)
    if smoke:
        values = {**SMOKE_CONFIG, **values}
    finished = out / "posterior" / POSTERIOR_RECORD
    spec = dataclasses.replace(SMOKE_SPEC if smoke else DEMO_SPEC, seed=world_seed)
    world = _demo_world(out, spec, progress)
    if finished.is_file():
        return read_json(finished)["report"]
    _say("[2/3] training a variational network over the world's cells; [3/3] predicting")
    return grid_posterior(world, out / "posterior", values, progress=progress)["report"]


def recovery_table(report: dict) -> str:
    """The recovery of a twin world as a Markdown table."""
    lines = ["| parameter | identified | R2 test cells | R2 all cells |", "|---|---|---|---|"]
    for name, row in report.get("parameters", {}).items():
        lines.append(f"| {name} | {'yes' if row['identified'] else 'no'} | "
                     f"{row['r2_test_cells']:.3f} | {row['r2_all_cells']:.3f} |")
    lines += ["", "| flux | NSE test cells | NSE all cells |", "|---|---|---|"]
    for name, row in report.get("fluxes", {}).items():
        lines.append(f"| {name} | {row['nse_test_cells']:.3f} | {row['nse_all_cells']:.3f} |")
    if report.get("budgets"):
        lines += ["", f"regional NBE budgets within two ensemble sd of the truth: "
                      f"{report['budgets_within_two_sd']} of {report['budgets']}"]
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
