"""Build a twin world: real static maps, synthetic monthly climate, planted parameter maps,
the model's fluxes, and observations of them with realistic noise and gaps, written as a grid
driver with the truth beside it.

Observations (1-sigma uncertainties in ``<name>_unc``):

* ``lai`` every month, sigma = 0.2 + 0.1 LAI, missing where the month is frozen (snow) and
  at random (20 %);
* ``sif`` every month, sigma = 0.05 + 0.1 |SIF| (SIF units of the model's linear proxy),
  10 % missing;
* ``biomass`` (live biomass) each July, sigma = 15 %;
* ``ewt``, a GRACE-like anomaly of the water storage from its mean over the observed
  months, sigma = 15 mm, 10 % missing;
* ``gpp``, ``reco``, ``et`` at a few tower cells (eddy covariance), sigma = 0.4 + 0.15 x
  value (ET: 0.3 + 0.15 x value), 25 % missing;
* ``nbe_region``: net biome exchange averaged over real regions (the SREX regions of
  ``regionmask``, area-weighted by ``region_mask x cell_area``), sigma = 0.03 gC m-2 d-1 +
  5 % of the monthly value.

The burned area drives fire (forcing). The truth: ``true_<parameter>`` maps for every
parameter of the world's model (registry names) and ``true_<flux>`` series.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from differland import __version__
from differland.config import ModelConfig
from differland.forcing import Forcing, validate_forcing
from differland.io.grid import month_clock, record_means
from differland.params import SPECS
from differland.spatial.grid import predict_in_batches
from differland.spatial.predictors import (
    IGBP_PFT,
    Standardizer,
    grid_predictor_table,
)
from differland.world import climate, planted
from differland.world.maps import IGBP_CLASSES, koppen_group, load_world_maps

TRUE_FLUXES = ("gpp", "reco", "nee", "nbe", "et", "lai", "sif", "biomass", "fire")
"""Fluxes and states whose planted series the world stores as ``true_<name>``."""
MIN_LAND_FRACTION = 0.5
MIN_REGION_CELLS = 4
"""A region with fewer simulated cells of the world is left out."""
TOWER_SHARE = 1.0 / 150.0
"""Share of the simulated cells with an eddy-covariance tower (at least 3 towers)."""


class WorldError(ValueError):
    """A twin-world option that cannot make a world (one line, naming the option)."""


@dataclass(frozen=True)
class WorldSpec:
    """What defines a twin world (recorded in its attributes).

    Attributes:
        resolution: grid spacing [degree], a multiple of 0.5 that divides 180.
        region: (lon0, lon1, lat0, lat1) [degree] or ``None`` for the globe.
        years: years of months, from January of ``first_year``.
        seed: seed of the climate anomalies, the planted maps and the observation noise.
        first_year: first calendar year.
        planted: parameters that vary (the others keep the base value everywhere).
    """

    resolution: float = 2.0
    region: tuple[float, float, float, float] | None = None
    years: int = 10
    seed: int = 0
    first_year: int = 2001
    planted: tuple[str, ...] = planted.PLANTED

    def __post_init__(self):
        if not (isinstance(self.years, int) and 1 <= self.years <= 200):
            raise WorldError(f"--years: {self.years!r} is not a whole number of years in "
                             "1..200")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise WorldError(f"--seed: {self.seed!r} is not an integer in 0..2**32-1")
        config = model_config()
        unknown = sorted(set(self.planted) - set(config.parameter_names()))
        if unknown:
            raise WorldError(f"planted: {', '.join(unknown)} not read by the world's model")


def model_config() -> ModelConfig:
    """The model of every twin world."""
    return ModelConfig(**planted.MODEL_OPTIONS)


def _pixel_pft(igbp: np.ndarray) -> np.ndarray:
    names = [IGBP_PFT.get(IGBP_CLASSES.get(int(code), ""), "") for code in igbp]
    return np.asarray(names, dtype=object)


def forcing_arrays(cells: dict, dates: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every forcing field ``(P, T)`` of the simulated cells (``cells``: lat, lon, elevation,
    group, pft)."""
    weather = climate.monthly_climate(cells["lat"], cells["lon"], cells["elevation"],
                                      cells["group"], dates, seed)
    temperature = 0.5 * (weather["t_min"] + weather["t_max"])
    flammability = np.array([planted.FLAMMABILITY[p] for p in cells["pft"]])
    shape = temperature.shape
    time, delta_t, doy = month_clock(dates)
    mean_temperature, mean_precipitation = record_means(
        weather["t_min"], weather["t_max"], weather["precipitation"], delta_t)
    return {
        "time": np.broadcast_to(time, shape), "t_min": weather["t_min"],
        "t_max": weather["t_max"], "ssrd": weather["ssrd"],
        "co2": np.broadcast_to(weather["co2"], shape), "doy": np.broadcast_to(doy, shape),
        "burned_area": climate.burned_area(weather["vpd"], temperature, flammability),
        "vpd": weather["vpd"], "precipitation": weather["precipitation"],
        "latitude": np.broadcast_to(cells["lat"][:, None], shape),
        "delta_t": np.broadcast_to(delta_t, shape),
        "mean_temperature": np.broadcast_to(mean_temperature[:, None], shape),
        "mean_precipitation": np.broadcast_to(mean_precipitation[:, None], shape),
    }


def simulate_truth(params: dict[str, np.ndarray], forcing: dict[str, np.ndarray],
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The planted series ``(P, T)`` of :data:`TRUE_FLUXES` and the water storage, after
    checking that the world's forcing is plausible."""
    validate_forcing(Forcing(**forcing), "twin world")
    return predict_in_batches(params, forcing, model_config(), None,
                              (*TRUE_FLUXES, "water_storage"), progress)


def _observe(rng, truth, sigma, missing):
    values = truth + rng.normal(size=truth.shape) * sigma
    return np.where(missing, np.nan, values), np.where(missing, np.nan, sigma)


def observations(truth: dict[str, np.ndarray], forcing: dict[str, np.ndarray],
                 towers: np.ndarray, dates: np.ndarray, rng: np.random.Generator
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Noisy, gappy observations ``{name: (values, sigma)}`` ``(P, T)`` (see the module)."""
    shape = truth["lai"].shape
    frozen = forcing["t_max"] < 0.0
    out = {}
    lai = truth["lai"]
    out["lai"] = _observe(rng, lai, 0.2 + 0.1 * np.abs(lai),
                          frozen | (rng.random(shape) < 0.2))
    sif = truth["sif"]
    out["sif"] = _observe(rng, sif, 0.05 + 0.1 * np.abs(sif), rng.random(shape) < 0.1)
    july = dates.astype("datetime64[M]").astype(int) % 12 == 6
    biomass = truth["biomass"]
    out["biomass"] = _observe(rng, biomass, 0.15 * np.abs(biomass) + 1.0,
                              np.broadcast_to(~july, shape))
    storage = truth["water_storage"]
    missing = rng.random(shape) < 0.1
    baseline = np.sum(np.where(missing, 0.0, storage), axis=1, keepdims=True) / np.maximum(
        np.sum(~missing, axis=1, keepdims=True), 1)
    out["ewt"] = _observe(rng, storage - baseline, np.full(shape, 15.0), missing)
    not_tower = ~np.isin(np.arange(shape[0]), towers)[:, None]
    for name, floor in (("gpp", 0.4), ("reco", 0.4), ("et", 0.3)):
        value = truth[name]
        out[name] = _observe(rng, value, floor + 0.15 * np.abs(value),
                             not_tower | (rng.random(shape) < 0.25))
    return out


def region_masks(lat: np.ndarray, lon: np.ndarray, simulated: np.ndarray
                 ) -> tuple[list[str], np.ndarray]:
    """Names and fractional masks ``(R, lat, lon)`` of the SREX regions (``regionmask``)
    with at least :data:`MIN_REGION_CELLS` simulated cells."""
    import regionmask

    regions = regionmask.defined_regions.srex
    if lat.size < 2 or lon.size < 2:
        return [], np.zeros((0, lat.size, lon.size))
    fractions = regions.mask_3D_frac_approx(lon, lat)
    names, masks = [], []
    for k in range(fractions.sizes["region"]):
        mask = np.nan_to_num(fractions.isel(region=k).values)
        if np.count_nonzero((mask > 0) & simulated) >= MIN_REGION_CELLS:
            names.append(str(fractions.abbrevs.values[k]))
            masks.append(mask * simulated)
    return names, np.array(masks).reshape(len(masks), lat.size, lon.size)


def build_world(spec: WorldSpec, progress: Callable[[str, int, int], None] | None = None
                ) -> xr.Dataset:
    """The twin world as a grid-driver dataset (see the module and ``docs/spatial.md``).

    Raises:
        WorldError: an option that selects no simulated cell.
    """
    maps = load_world_maps(spec.resolution, spec.region)
    lat, lon = maps.lat.values, maps.lon.values
    igbp = maps.igbp.values.astype(int)
    pft_map = _pixel_pft(igbp.ravel()).reshape(igbp.shape)
    simulated = (maps.land_fraction.values >= MIN_LAND_FRACTION) & (pft_map != "")
    rows, cols = np.nonzero(simulated)
    if rows.size == 0:
        raise WorldError("--region: no vegetated land cell in the region at this resolution")
    cells = {"lat": lat[rows], "lon": lon[cols],
             "elevation": maps.elevation.values[rows, cols].astype(float),
             "group": koppen_group(maps.koppen.values[rows, cols]),
             "pft": pft_map[rows, cols]}
    dates = climate.month_starts(spec.first_year, spec.years)
    forcing = forcing_arrays(cells, dates, spec.seed)
    names, table = grid_predictor_table(forcing, dates.astype("datetime64[M]").astype(int) % 12,
                                        {"elevation": cells["elevation"]})
    scaler = Standardizer.fit_table(table, names)
    standardised = {name: (table[:, j] - scaler.mean[j]) / scaler.std[j]
                    for j, name in enumerate(names)}
    coefficients = planted.draw_coefficients(spec.planted, names, spec.seed)
    base = planted.base_values(cells["lat"])
    params = {**base, **planted.physical(planted.planted_unconstrained(
        coefficients, standardised, cells["pft"], base))}
    params = {name: params[name] for name in model_config().parameter_names()}
    n_cells = rows.size
    if progress is not None:
        progress("simulating", 0, n_cells)
    truth = simulate_truth(params, forcing, None if progress is None else
                           lambda n: progress("simulating", n, n_cells))
    rng = np.random.default_rng([spec.seed, 11])
    candidates = np.flatnonzero(np.isin(cells["pft"], ["needleleaf_forest",
                                "deciduous_broadleaf_forest", "mixed_forest",
                                "evergreen_broadleaf_forest", "grassland", "savanna"]))
    if candidates.size == 0:
        candidates = np.arange(n_cells)
    n_towers = min(candidates.size, max(3, int(round(n_cells * TOWER_SHARE))))
    towers = np.sort(rng.choice(candidates, size=n_towers, replace=False))
    observed = observations(truth, forcing, towers, dates, rng)
    region_names, region_mask = region_masks(lat, lon, simulated)
    cell_area = maps.cell_area.values.astype(float)

    def grid(values):  # (P,) or (P, T) -> (lat, lon) or (time, lat, lon), NaN off the cells
        values = np.asarray(values, dtype=np.float32)
        if values.ndim == 1:
            out = np.full(igbp.shape, np.nan, np.float32)
            out[rows, cols] = values
            return ("lat", "lon"), out
        out = np.full((values.shape[1], *igbp.shape), np.nan, np.float32)
        out[:, rows, cols] = values.T
        return ("time", "lat", "lon"), out

    data = {}
    units = {"t_min": "degC", "t_max": "degC", "ssrd": "MJ m-2 d-1", "vpd": "hPa",
             "precipitation": "mm d-1", "burned_area": "1"}
    for name, unit in units.items():
        data[name] = xr.Variable(*grid(forcing[name]), attrs={"units": unit, "role": "forcing"})
    data["co2"] = xr.Variable(("time",), forcing["co2"][0].astype(np.float32),
                              attrs={"units": "ppm", "role": "forcing"})
    obs_units = {"lai": "m2 m-2", "sif": "1", "biomass": "gC m-2", "ewt": "mm",
                 "gpp": "gC m-2 d-1", "reco": "gC m-2 d-1", "et": "mm d-1"}
    for name, (values, sigma) in observed.items():
        data[name] = xr.Variable(*grid(values), attrs={"units": obs_units[name],
                                                       "role": "target"})
        data[f"{name}_unc"] = xr.Variable(*grid(sigma), attrs={"units": obs_units[name],
                                                                "role": "target"})
    if region_names:
        weights = region_mask[:, rows, cols] * cell_area[rows, cols][None, :]
        regional = (weights @ truth["nbe"]) / weights.sum(axis=1, keepdims=True)  # (R, T)
        sigma = 0.03 + 0.05 * np.abs(regional)
        noisy = regional + rng.normal(size=regional.shape) * sigma
        data["region_mask"] = xr.Variable(("region", "lat", "lon"),
                                          region_mask.astype(np.float32),
                                          attrs={"units": "1", "source": "regionmask SREX"})
        data["nbe_region"] = xr.Variable(("time", "region"), noisy.T.astype(np.float32),
                                         attrs={"units": "gC m-2 d-1", "role": "target"})
        data["nbe_region_unc"] = xr.Variable(("time", "region"), sigma.T.astype(np.float32),
                                             attrs={"units": "gC m-2 d-1", "role": "target"})
        data["true_nbe_region"] = xr.Variable(("time", "region"),
                                              regional.T.astype(np.float32),
                                              attrs={"units": "gC m-2 d-1", "role": "truth"})
    data["elevation"] = xr.Variable(("lat", "lon"), maps.elevation.values.astype(np.float32),
                                    attrs={"units": "m", "role": "predictor"})
    for name in ("igbp", "koppen"):
        attrs = {key: value for key, value in maps[name].attrs.items()
                 if key in ("flag_values", "flag_meanings", "long_name")}
        data[name] = xr.Variable(("lat", "lon"), maps[name].values.astype(np.int16),
                                 attrs={**attrs, "role": "predictor"})
    data["land_fraction"] = xr.Variable(("lat", "lon"),
                                        maps.land_fraction.values.astype(np.float32),
                                        attrs={"units": "1"})
    data["cell_area"] = xr.Variable(("lat", "lon"), cell_area.astype(np.float32),
                                    attrs={"units": "m2"})
    data["mask"] = xr.Variable(("lat", "lon"), simulated.astype(np.int8), attrs={"units": "1"})
    towers_map = np.zeros(igbp.shape, np.int8)
    towers_map[rows[towers], cols[towers]] = 1
    data["tower"] = xr.Variable(("lat", "lon"), towers_map,
                                attrs={"units": "1", "long_name": "eddy-covariance tower cell"})
    for name, values in params.items():
        data[f"true_{name}"] = xr.Variable(*grid(values), attrs={
            "units": SPECS[name].units, "role": "truth",
            "planted": int(name in coefficients)})
    for name in TRUE_FLUXES:
        data[f"true_{name}"] = xr.Variable(*grid(truth[name]),
                                           attrs={"units": obs_units.get(name, "gC m-2 d-1"),
                                                  "role": "truth"})
    ends = (dates.astype("datetime64[M]") + 1).astype("datetime64[D]")
    coords = {"time": dates.astype("datetime64[ns]"), "lat": lat, "lon": lon}
    if region_names:
        coords["region"] = np.array(region_names, dtype=object)
    dataset = xr.Dataset(data, coords=coords)
    dataset["time_bnds"] = xr.Variable(("time", "nv"), np.stack(
        [dates, ends], axis=1).astype("datetime64[ns]"))
    dataset["time"].attrs["bounds"] = "time_bnds"
    dataset.lat.attrs = {"units": "degrees_north", "standard_name": "latitude"}
    dataset.lon.attrs = {"units": "degrees_east", "standard_name": "longitude"}
    fixed = {name: float(planted.BASE_VALUES[name]) for name in params
             if name not in coefficients}
    dataset.attrs = {
        "title": "differland twin world", "Conventions": "CF-1.8",
        "differland_version": __version__,
        "world_spec": json.dumps({**asdict(spec), "planted": list(spec.planted)}),
        "model_options": json.dumps(planted.MODEL_OPTIONS),
        "free_parameters": json.dumps(list(coefficients)),
        "parameter_values": json.dumps(fixed),
        "planted_functions": json.dumps({
            "form": "z = unconstrain(base) + sum_j w_j tanh(x_j) + pft_effect; "
                    "x_j = (predictor_j - mean_j) / std_j over the world's cells",
            "predictor_mean": dict(zip(names, scaler.mean, strict=True)),
            "predictor_std": dict(zip(names, scaler.std, strict=True)),
            "coefficients": coefficients}),
        "static_maps": maps.attrs.get("title", "differland world maps"),
    }
    return dataset
