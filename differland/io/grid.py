"""Reader of grid drivers: monthly forcing, targets and static maps on a regular lat/lon grid.

A grid driver (``docs/drivers.md``, section "Grid driver") is a Zarr store or a NetCDF file with
a ``time`` axis of consecutive months, ``lat``/``lon`` cell centres, gridded forcing in the
names of :data:`differland.forcing.FORCING_VARIABLES`, a 0/1 ``mask`` of the simulated cells,
``cell_area``, and optional targets, static predictor maps, region masks with regional targets
and, in synthetic drivers, the true fields behind the targets (``true_<name>``).

:func:`read_grid_driver` opens the driver lazily with dask and checks everything that is cheap to
check (metadata, the time axis, the 2-D maps). The gridded series are read per batch of pixels by
:meth:`GridDriver.forcing` and :meth:`GridDriver.observation`; gaps in the forcing of a simulated
cell are therefore found when its batch is read (:meth:`GridDriver.check_forcing` reads them all).
Pixels are the simulated cells (``mask == 1``) in row-major order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from differland.forcing import FORCING_VARIABLES, Forcing, ForcingError, make_forcing
from differland.io._files import check_input_file, has_netcdf_signature
from differland.io.errors import driver_error, one_line
from differland.io.site import _STANDARD_CALENDARS, MODEL_EPOCH, _origin_offset, is_missing
from differland.io.units import UnitsError, convert

TIME, LAT, LON, REGION, PIXEL = "time", "lat", "lon", "region", "pixel"
MASK, CELL_AREA, LAND_FRACTION, REGION_MASK = "mask", "cell_area", "land_fraction", "region_mask"
UNCERTAINTY_SUFFIX = "_unc"
"""``<name>_unc`` is the 1-sigma uncertainty of ``<name>`` (same dims, same units)."""
REGIONAL_SUFFIX = "_region"
"""``<name>_region`` (time, region) is the regional mean of target ``<name>``."""
TRUTH_PREFIX = "true_"
"""``true_<name>`` is the true field behind a synthetic target or parameter."""

GRID_FORCING: tuple[str, ...] = ("t_min", "t_max", "ssrd", "co2", "vpd", "precipitation",
                                 "burned_area")
"""Forcing variables of a grid driver, in the units of ``FORCING_VARIABLES``."""

OBSERVATION_UNITS: dict[str, str | None] = {
    "lai": "m2 m-2",
    "sif": None,
    "gpp": "gC m-2 d-1",
    "reco": "gC m-2 d-1",
    "nee": "gC m-2 d-1",
    "nbe": "gC m-2 d-1",
    "et": "mm d-1",
    "ewt": "mm",
    "biomass": "gC m-2",
    "fire": "gC m-2 d-1",
}
"""Per-pixel target -> canonical units (``None``: any units, kept as they are)."""

PIXEL_OBSERVATIONS: tuple[str, ...] = tuple(OBSERVATION_UNITS)
"""Names of the per-pixel targets read from a grid driver; other targets are ignored."""

MONTH_MIN_DAYS, MONTH_MAX_DAYS = 27.5, 31.5
"""Range of time steps (and of month lengths in ``time_bnds``) accepted as monthly [d]."""

_SPATIAL = (LAT, LON)
_SERIES = (TIME, LAT, LON)
_TIME_TOLERANCE = 1e-6
"""Tolerance of time-bound comparisons [d]."""
_SPACING_TOLERANCE = 1e-5
"""Relative tolerance of the regularity of lat/lon spacing [1]."""
_FORCING_VARIABLE = re.compile(r"\bvariable (\w+)")
_NOT_PREDICTORS = frozenset({*GRID_FORCING, MASK, CELL_AREA, LAND_FRACTION, REGION_MASK})
_INSTALL_HINT = "reading a grid driver needs dask (and zarr for Zarr stores): " \
                "pip install 'differland[recipes]'"


@dataclass(frozen=True, eq=False)
class GridObservation:
    """A target read at some pixels (or a regional target), with its gap mask and uncertainty.

    Attributes:
        values: observed values [units], float64; shape (p, T) for a time series at p pixels,
            (p,) for a static map, (T, R) for a regional target; 0.0 at gaps (use ``mask``).
        mask: True where a value was observed (finite and not -9999), same shape.
        sigma: 1-sigma uncertainty [units], float64, 0.0 where missing or not positive;
            ``None`` when the driver has no ``<name>_unc``.
        units: units of ``values`` and ``sigma``.
        sigma_mask: True where ``sigma`` is finite and > 0; ``None`` with ``sigma``.
    """

    values: np.ndarray
    mask: np.ndarray
    sigma: np.ndarray | None
    units: str
    sigma_mask: np.ndarray | None = None

    @property
    def n_observed(self) -> int:
        """Number of observed values."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True, eq=False, repr=False)
class GridDriver:
    """A grid driver opened lazily, with its validated metadata.

    Attributes:
        path: the Zarr store or NetCDF file.
        dataset: the lazy (dask-backed) dataset; ``time`` (and ``time_bnds``) decoded to dates.
        dates: first day of each month, ``datetime64[D]``, (T,).
        time: model clock at mid-month [d], days since 2001-01-01, float64, (T,).
        delta_t: month lengths [d] (from ``time_bnds``, else from the calendar), (T,).
        doy: day of year at mid-month [d] (1 = 1 January 00:00), (T,).
        lat: cell-centre latitudes [degrees_north], increasing.
        lon: cell-centre longitudes [degrees_east], increasing.
        rows: latitude index of each simulated cell (``mask == 1``), row-major order, (P,).
        cols: longitude index of each simulated cell, (P,).
        cell_area: area of each simulated cell [m2], (P,).
        observations: per-pixel targets present, among :data:`PIXEL_OBSERVATIONS`.
        regional: targets with regional means ``<name>_region`` present.
        regions: region names of ``region_mask`` (empty without it).
        predictors: numeric static predictor maps (``role`` attribute ``"predictor"``).
        categorical: categorical static maps (with a ``flag_values`` attribute).
        truth: names of the true fields ``true_<name>`` (without the prefix).
        attrs: global attributes.
    """

    path: Path
    dataset: xr.Dataset
    dates: np.ndarray
    time: np.ndarray
    delta_t: np.ndarray
    doy: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    cell_area: np.ndarray
    observations: tuple[str, ...]
    regional: tuple[str, ...]
    regions: tuple[str, ...]
    predictors: tuple[str, ...]
    categorical: tuple[str, ...]
    truth: tuple[str, ...]
    attrs: dict
    _units: dict
    _region_fraction: np.ndarray

    def __repr__(self) -> str:
        return (f"GridDriver({str(self.path)!r}, {self.n_pixels} pixels on a {self.lat.size} x "
                f"{self.lon.size} grid, {self.n_steps} months {self.dates[0]} .. "
                f"{self.dates[-1]}, observations={self.observations}, "
                f"regional={self.regional}, regions={self.regions}, "
                f"predictors={self.predictors}, categorical={self.categorical}, "
                f"truth={self.truth})")

    @property
    def n_pixels(self) -> int:
        """Number of simulated cells P."""
        return int(self.rows.size)

    @property
    def n_steps(self) -> int:
        """Number of monthly steps T."""
        return int(self.dates.size)

    # --- reading at pixels ------------------------------------------------------------------

    def forcing(self, pixels) -> Forcing:
        """The validated forcing of some pixels.

        Only the selected cells are read (all variables in one dask computation).
        ``mean_temperature`` and ``mean_precipitation`` are the per-pixel means over the whole
        record of (t_min + t_max) / 2 and of precipitation, each month weighted by its length
        (the mean over the days of the record, as for a daily site driver).

        Args:
            pixels: integer indices into ``0..P-1``, (p,).

        Returns:
            The forcing, every field a float64 array (p, T).

        Raises:
            DriverError: a NaN/inf or implausible forcing value in a selected cell (naming the
                variable, the cell's lat/lon and the month), or t_max below t_min.
        """
        index = self._pixel_index(pixels)
        loaded = self._load(GRID_FORCING, index)
        shape = (index.size, self.n_steps)
        series = {}
        for name in GRID_FORCING:
            values = self._converted(name, loaded[name], FORCING_VARIABLES[name].units)
            if values.ndim == 1:  # a spatially uniform (time,) series
                values = np.broadcast_to(values, shape)
            self._check_forcing_values(name, values, index)
            series[name] = values
        swapped = series["t_max"] < series["t_min"] - 1e-6
        if swapped.any():
            raise self._cell_error("t_max", index, swapped,
                                   f"below t_min at {int(swapped.sum())} value(s)")
        mean_temperature, mean_precipitation = record_means(
            series["t_min"], series["t_max"], series["precipitation"], self.delta_t)
        self._check_forcing_values("mean_temperature", mean_temperature[:, None], index,
                                   "t_min", "the record mean of (t_min + t_max) / 2")
        self._check_forcing_values("mean_precipitation", mean_precipitation[:, None], index,
                                   "precipitation", "the record mean precipitation")
        clock = {name: np.broadcast_to(values, shape) for name, values in
                 (("time", self.time), ("doy", self.doy), ("delta_t", self.delta_t))}
        try:
            return make_forcing(**series, **clock, latitude=self.lat[self.rows[index]],
                                mean_temperature=mean_temperature,
                                mean_precipitation=mean_precipitation)
        except ForcingError as err:
            message = str(err).removeprefix("forcing: ")
            match = _FORCING_VARIABLE.search(message)
            raise driver_error(self.path, message, match[1] if match else None) from err

    def check_forcing(self, batch_size: int = 4096) -> None:
        """Read and validate the forcing of every simulated cell, ``batch_size`` cells at a time.

        Raises:
            DriverError: as :meth:`forcing`, for the first bad cell.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        for start in range(0, self.n_pixels, batch_size):
            self.forcing(np.arange(start, min(start + batch_size, self.n_pixels)))

    def observation(self, name: str, pixels) -> GridObservation:
        """A per-pixel target at some pixels, in its canonical units.

        Args:
            name: one of :attr:`observations`.
            pixels: integer indices into ``0..P-1``, (p,).

        Returns:
            Values and mask (p, T) (or (p,) for a static target); ``sigma`` from
            ``<name>_unc`` when present.
        """
        if name not in self.observations:
            raise KeyError(f"{self.path}: no target {name!r} (present: "
                           f"{', '.join(self.observations) or 'none'})")
        index = self._pixel_index(pixels)
        names = [name] + [n for n in (name + UNCERTAINTY_SUFFIX,) if n in self._units]
        loaded = self._load(names, index)
        step = self.delta_t if TIME in self.dataset[name].dims else 1.0
        return self._observation(name, names, loaded, OBSERVATION_UNITS[name], step)

    def regional_observation(self, name: str) -> GridObservation:
        """The regional target ``<name>_region`` (time, region) in its canonical units.

        Returns:
            Values and mask (T, R), in the order of :attr:`regions`; ``sigma`` from
            ``<name>_region_unc`` when present.
        """
        if name not in self.regional:
            raise KeyError(f"{self.path}: no regional target {name + REGIONAL_SUFFIX!r} "
                           f"(present: {', '.join(self.regional) or 'none'})")
        variable = name + REGIONAL_SUFFIX
        names = [variable] + [n for n in (variable + UNCERTAINTY_SUFFIX,) if n in self._units]
        loaded = {n: np.asarray(self.dataset[n].transpose(TIME, REGION).values,
                                dtype=np.float64) for n in names}
        return self._observation(variable, names, loaded, OBSERVATION_UNITS.get(name),
                                 self.delta_t[:, None])

    def static(self, name: str, pixels=None) -> np.ndarray:
        """A (lat, lon) map as float64: the whole map, or its values at some pixels (p,)."""
        variable = self._map(name, (_SPATIAL,))
        if pixels is None:
            return np.asarray(variable.values, dtype=np.float64)
        return self._load([name], self._pixel_index(pixels))[name]

    def true(self, name: str, pixels) -> np.ndarray:
        """The true field ``true_<name>`` at some pixels: (p,) for a map, (p, T) for a series."""
        if name not in self.truth:
            raise KeyError(f"{self.path}: no true field {TRUTH_PREFIX + name!r} (present: "
                           f"{', '.join(self.truth) or 'none'})")
        variable = TRUTH_PREFIX + name if TRUTH_PREFIX + name in self.dataset else name
        return self._load([variable], self._pixel_index(pixels))[variable]

    def region_weights(self, pixels) -> np.ndarray:
        """Region fraction x cell area [m2] of some pixels, (R, p) float64 ((0, p) without
        regions); the weights of :func:`differland.observations.spatial_mean`."""
        index = self._pixel_index(pixels)
        return self._region_fraction[:, index] * self.cell_area[index]

    def to_map(self, values, name: str | None = None, attrs: dict | None = None
               ) -> xr.DataArray:
        """Per-pixel values on the driver's grid, NaN outside the simulated cells.

        Args:
            values: (P,) or (P, T) values of every pixel (numpy or JAX).
            name: name of the returned array.
            attrs: its attributes.

        Returns:
            A float64 DataArray (lat, lon) or (time, lat, lon) with the driver's coordinates.
        """
        array = np.asarray(values, dtype=np.float64)
        if array.ndim not in (1, 2) or array.shape[0] != self.n_pixels or (
                array.ndim == 2 and array.shape[1] != self.n_steps):
            raise ValueError(f"to_map: values of shape {array.shape}; expected "
                             f"({self.n_pixels},) or ({self.n_pixels}, {self.n_steps})")
        grid = np.full((self.lat.size, self.lon.size, *array.shape[1:]), np.nan)
        grid[self.rows, self.cols] = array
        coords = {LAT: self.dataset[LAT].variable, LON: self.dataset[LON].variable}
        if array.ndim == 1:
            return xr.DataArray(grid, dims=_SPATIAL, coords=coords, name=name, attrs=attrs)
        coords[TIME] = self.dataset[TIME].variable
        return xr.DataArray(np.moveaxis(grid, -1, 0), dims=_SERIES, coords=coords, name=name,
                            attrs=attrs)

    def close(self) -> None:
        """Close the underlying files."""
        self.dataset.close()

    def __enter__(self) -> GridDriver:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------

    def _pixel_index(self, pixels) -> np.ndarray:
        index = np.asarray(pixels)
        if index.ndim == 0:
            index = index[None]
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"pixels must be a 1-D array of integer indices into "
                            f"0..{self.n_pixels - 1} (got dtype {index.dtype}, shape "
                            f"{index.shape})")
        if index.size == 0:
            raise ValueError("no pixel selected")
        if index.min() < 0 or index.max() >= self.n_pixels:
            raise IndexError(f"pixel indices span {index.min()}..{index.max()}, outside "
                             f"0..{self.n_pixels - 1}")
        return index.astype(np.int64)

    def _map(self, name: str, allowed: tuple[tuple[str, ...], ...]) -> xr.DataArray:
        if name not in self.dataset.variables or self.dataset[name].dims not in allowed:
            raise KeyError(f"{self.path}: no {' or '.join(map(str, allowed))} variable {name!r}")
        return self.dataset[name]

    def _load(self, names, index: np.ndarray) -> dict[str, np.ndarray]:
        """Variables at the cells of ``index`` as float64, pixels first: one dask computation."""
        import dask

        rows = xr.DataArray(self.rows[index], dims=PIXEL)
        cols = xr.DataArray(self.cols[index], dims=PIXEL)
        arrays = []
        for name in names:
            variable = self.dataset[name]
            if LAT in variable.dims:
                variable = variable.isel({LAT: rows, LON: cols}).transpose(PIXEL, ...)
            arrays.append(variable.data)
        values = dask.compute(*arrays)
        return {name: np.asarray(value, dtype=np.float64)
                for name, value in zip(names, values, strict=True)}

    def _converted(self, name: str, values: np.ndarray, canonical: str | None, step=1.0,
                   scale_only: bool = False) -> np.ndarray:
        declared = self._units.get(name)
        if canonical is None or declared is None:
            return values
        if np.ndim(step) == 1 and values.ndim == 2 and values.shape[1] == np.size(step):
            step = np.asarray(step)[None, :]
        try:
            converted = convert(values, declared, canonical, step_days=step)
            if scale_only:  # an uncertainty: no offset (K -> degC)
                converted = converted - convert(np.zeros(1), declared, canonical, step_days=step)
        except UnitsError as err:
            raise driver_error(self.path, str(err), name) from None
        return converted

    def _observation(self, name: str, names: list[str], loaded: dict[str, np.ndarray],
                     canonical: str | None, step) -> GridObservation:
        raw = loaded[name]
        mask = ~is_missing(raw)
        values = self._converted(name, np.where(mask, raw, np.nan), canonical, step)
        units = canonical if canonical is not None else self._units.get(name) or ""
        sigma = sigma_mask = None
        if len(names) > 1:
            raw_sigma = np.where(is_missing(loaded[names[1]]), np.nan, loaded[names[1]])
            raw_sigma = self._converted(names[1], raw_sigma, canonical, step, scale_only=True)
            sigma_mask = np.isfinite(raw_sigma) & (raw_sigma > 0.0)
            sigma = np.where(sigma_mask, raw_sigma, 0.0)
        return GridObservation(np.where(mask, values, 0.0), mask, sigma, units, sigma_mask)

    def _cell_error(self, name: str, index: np.ndarray, bad: np.ndarray, problem: str,
                    variable: str | None = None):
        pixel, step = (int(i) for i in np.argwhere(bad)[0])
        row, col = self.rows[index[pixel]], self.cols[index[pixel]]
        where = f"simulated cell lat {self.lat[row]:g}, lon {self.lon[col]:g} (pixel " \
                f"{index[pixel]})"
        when = f", month {self.dates[step].astype('datetime64[M]')}" if bad.shape[1] > 1 else ""
        return driver_error(self.path, f"{problem}; first at the {where}{when}",
                            variable or name)

    def _check_forcing_values(self, name: str, values: np.ndarray, index: np.ndarray,
                              variable: str | None = None, label: str | None = None) -> None:
        """Refuse NaN/inf or implausible values of forcing field ``name`` (``variable``: the
        driver variable to name, ``label``: how to call the values)."""
        spec = FORCING_VARIABLES[name]
        hint = " (wrong units?)" if label is None else ""
        label = label or name
        bad = ~np.isfinite(values)
        if bad.any():
            raise self._cell_error(name, index, bad, f"{int(bad.sum())} NaN/inf forcing "
                                   "value(s) where mask is 1 (forcing must be gap-free in "
                                   "simulated cells)", variable)
        outside = (values < spec.lower) | (values > spec.upper)
        if outside.any():
            value = float(values[tuple(np.argwhere(outside)[0])])
            raise self._cell_error(name, index, outside, f"{label} {value:.4g} {spec.units} is "
                                   f"outside the plausible range [{spec.lower:g}, "
                                   f"{spec.upper:g}] {spec.units}{hint}", variable)


# --- opening and validation ---------------------------------------------------------------------


def read_grid_driver(path: str | PathLike) -> GridDriver:
    """Open a grid driver lazily and validate its metadata and 2-D maps.

    Args:
        path: a Zarr store (a folder, or a ``.zarr`` path) or a NetCDF file.

    Returns:
        The driver; the gridded series stay on disk until read per batch of pixels.

    Raises:
        DriverError: ``"<path>: <variable>: <problem>"`` for a missing or unreadable driver, a
            missing forcing variable, ``mask`` or ``cell_area``, wrong dims, missing or
            unconvertible units, a time axis that is not consecutive months in the standard
            calendar, an irregular or decreasing lat/lon axis, a mask that is not 0/1 or has no
            simulated cell, a region mask outside [0, 1] or without region names, or an
            uncertainty whose dims differ from its target's.
        ModuleNotFoundError: dask (or zarr, for a Zarr store) is not installed.
    """
    path = Path(path)
    dataset = _open(path)
    try:
        return _validated(dataset, path)
    except BaseException:
        dataset.close()
        raise


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(_INSTALL_HINT, name=module)


def _open(path: Path) -> xr.Dataset:
    if not path.exists():
        raise driver_error(path, "file does not exist")
    _require("dask")
    options = {"decode_times": False, "decode_timedelta": False}
    if path.is_dir() or path.suffix.lower() == ".zarr":
        _require("zarr")
        try:
            return xr.open_zarr(path, consolidated=None, **options)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise driver_error(path, f"not a readable Zarr store ({type(err).__name__}: "
                                     f"{one_line(err)[:200]})") from None
    check_input_file(path)
    if not has_netcdf_signature(path):
        raise driver_error(path, "neither a NetCDF file (no NetCDF or HDF5 signature) nor a "
                                 "Zarr store")
    try:
        return xr.open_dataset(path, chunks={}, **options)
    except (OSError, ValueError, RuntimeError) as err:
        raise driver_error(path, f"not a readable NetCDF file ({type(err).__name__}: "
                                 f"{one_line(err)[:200]})") from None


def _has_dims(dataset: xr.Dataset, name: str, allowed: tuple[tuple[str, ...], ...],
              path: Path) -> xr.DataArray:
    """The variable, numeric and with one of the ``allowed`` dims."""
    variable = dataset[name]
    if variable.dims not in allowed:
        expected = " or ".join(f"({', '.join(dims)})" for dims in allowed)
        raise driver_error(path, f"wrong dimensions ({', '.join(map(str, variable.dims))}); "
                                 f"expected {expected}", name)
    if not (np.issubdtype(variable.dtype, np.number) or variable.dtype == np.bool_):
        raise driver_error(path, f"not numeric (dtype {variable.dtype})", name)
    return variable


def _declared_units(dataset: xr.Dataset, name: str, canonical: str | None, path: Path,
                    units_of: str | None = None) -> str | None:
    """The variable's units (else those of ``units_of``), checked to convert to ``canonical``.

    ``canonical`` ``None``: any units, optional.
    """
    declared = dataset[name].attrs.get("units")
    if (declared is None or not str(declared).strip()) and units_of is not None:
        declared = dataset[units_of].attrs.get("units")
    if declared is None or not str(declared).strip():
        if canonical is None:
            return None
        raise driver_error(path, f"no units attribute (expected {canonical!r} or units "
                                 "convertible to it)", name)
    if canonical is not None:
        try:
            convert(np.ones(1), str(declared), canonical, step_days=30.0)
        except UnitsError as err:
            raise driver_error(path, str(err), name) from None
    return str(declared)


def _axis(dataset: xr.Dataset, name: str, path: Path) -> np.ndarray:
    """A lat/lon coordinate: 1-D, finite, strictly increasing, regular."""
    if name not in dataset.variables:
        raise driver_error(path, f"no {name} coordinate", name)
    values = _has_dims(dataset, name, ((name,),), path).values.astype(np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise driver_error(path, "empty or not finite", name)
    limit = 90.0 if name == LAT else 360.0
    if np.abs(values).max() > limit:
        raise driver_error(path, f"values beyond +-{limit:g} degrees", name)
    steps = np.diff(values)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise driver_error(path, f"not strictly increasing ({values[i]:g} then "
                                 f"{values[i + 1]:g} at indices {i}, {i + 1})", name)
    if steps.size and not np.allclose(steps, steps[0], rtol=_SPACING_TOLERANCE, atol=0.0):
        i = int(np.argmax(~np.isclose(steps, steps[0], rtol=_SPACING_TOLERANCE, atol=0.0)))
        raise driver_error(path, f"not regular: spacing {steps[i]:g} at index {i}, "
                                 f"{steps[0]:g} at index 0", name)
    return values


def _days(dataset: xr.Dataset, name: str, path: Path, units_of: str | None = None
          ) -> np.ndarray:
    """A time variable as days since 2001-01-01 (standard calendar; no units: already so)."""
    variable = dataset[name]
    attrs = dict(dataset[units_of].attrs) if units_of is not None else {}
    attrs.update({key: value for key, value in variable.attrs.items()
                  if key in ("units", "calendar")})
    calendar = str(attrs.get("calendar", "standard"))
    if calendar.lower() not in _STANDARD_CALENDARS:
        raise driver_error(path, f"calendar {calendar!r} is not supported (standard only)", name)
    if not np.issubdtype(variable.dtype, np.number):
        raise driver_error(path, f"not numeric (dtype {variable.dtype})", name)
    units = attrs.get("units")
    try:
        offset, scale = (0.0, 1.0) if units is None else _origin_offset(str(units), path)
    except ValueError as err:  # the site reader names the time coordinate: name this one
        raise driver_error(path, str(err).removeprefix(f"{path}: {TIME}: "), name) from None
    days = np.asarray(variable.values, dtype=np.float64) * scale + offset
    if not np.all(np.isfinite(days)):
        raise driver_error(path, "NaN/inf values", name)
    return days


def _month_days(months: np.ndarray) -> np.ndarray:
    """Days since 2001-01-01 of the first day of ``datetime64[M]`` months."""
    return (months.astype("datetime64[D]") - MODEL_EPOCH).astype(np.float64)


def day_of_year(time: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Day of year [d] (1 = 1 January 00:00) of model-clock ``time`` [d since 2001-01-01]
    falling in the ``datetime64[M]`` ``months``."""
    return time - _month_days(months.astype("datetime64[Y]").astype("datetime64[M]")) + 1.0


def month_clock(months: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time, delta_t, doy)`` of monthly steps from the calendar: the model clock at
    mid-month [d since 2001-01-01], the month lengths [d] and the day of year at mid-month."""
    months = np.asarray(months).astype("datetime64[M]")
    start = _month_days(months)
    delta_t = _month_days(months + np.timedelta64(1, "M")) - start
    time = start + delta_t / 2
    return time, delta_t, day_of_year(time, months)


def record_means(t_min: np.ndarray, t_max: np.ndarray, precipitation: np.ndarray,
                 delta_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean_temperature, mean_precipitation)`` of monthly series ``(P, T)``: the means over
    the days of the record of (t_min + t_max) / 2 [degC] and precipitation [mm d-1] (each
    month weighted by its length ``delta_t`` [d]), as for a daily site driver."""
    weights = np.asarray(delta_t, dtype=np.float64) / np.sum(delta_t)
    return (t_min + t_max) / 2 @ weights, precipitation @ weights


def _time_axis(dataset: xr.Dataset, path: Path) -> tuple[np.ndarray, ...]:
    """``(stamps, dates, time, delta_t, doy, bounds)`` of a monthly time axis."""
    if TIME not in dataset.variables:
        raise driver_error(path, "no time coordinate", TIME)
    if dataset[TIME].dims != (TIME,):
        raise driver_error(path, f"wrong dimensions {dataset[TIME].dims}; expected (time)",
                           TIME)
    stamps = _days(dataset, TIME, path)
    if stamps.size == 0:
        raise driver_error(path, "no time step", TIME)
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise driver_error(path, f"not strictly increasing ({stamps[i]:g} then "
                                 f"{stamps[i + 1]:g} days at indices {i}, {i + 1})", TIME)
    months = (MODEL_EPOCH + np.floor(stamps).astype(np.int64).astype("timedelta64[D]")
              ).astype("datetime64[M]")
    off = (steps < MONTH_MIN_DAYS) | (steps > MONTH_MAX_DAYS) | (np.diff(months).astype(
        np.int64) != 1)
    if off.any():
        i = int(np.argmax(off))
        raise driver_error(path, f"not consecutive months: a step of {steps[i]:g} days from "
                                 f"{months[i]} to {months[i + 1]} (indices {i}, {i + 1}); "
                                 f"monthly steps are {MONTH_MIN_DAYS:g}-{MONTH_MAX_DAYS:g} days",
                           TIME)
    bounds_name = str(dataset[TIME].attrs.get("bounds", "time_bnds"))
    bounds = None
    if bounds_name in dataset.variables:
        bounds = _time_bounds(dataset, bounds_name, stamps, path)
        start, delta_t = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
        time = start + delta_t / 2
        doy = day_of_year(time, months)
    else:
        time, delta_t, doy = month_clock(months)
    return stamps, months.astype("datetime64[D]"), time, delta_t, doy, bounds


def _time_bounds(dataset: xr.Dataset, name: str, stamps: np.ndarray, path: Path
                 ) -> np.ndarray:
    variable = dataset[name]
    if variable.ndim != 2 or variable.dims[0] != TIME or variable.shape[1] != 2:
        raise driver_error(path, f"wrong dimensions {variable.dims}, shape {variable.shape}; "
                                 "expected (time, 2)", name)
    bounds = _days(dataset, name, path, units_of=TIME)
    lower, upper = bounds[:, 0], bounds[:, 1]
    length = upper - lower
    months = (MODEL_EPOCH + np.floor(stamps).astype(np.int64).astype("timedelta64[D]")
              ).astype("datetime64[M]")
    problems = (
        ((length < MONTH_MIN_DAYS) | (length > MONTH_MAX_DAYS),
         f"is not a month ({MONTH_MIN_DAYS:g}-{MONTH_MAX_DAYS:g} days)"),
        ((stamps < lower - _TIME_TOLERANCE) | (stamps >= upper - _TIME_TOLERANCE),
         "does not contain its time stamp"),
        (np.append(np.abs(lower[1:] - upper[:-1]) > _TIME_TOLERANCE, False),
         "does not end where the next step starts"),
    )
    for bad, problem in problems:
        if bad.any():
            i = int(np.argmax(bad))
            raise driver_error(path, f"the step {i} ({months[i]}) from {lower[i]:g} to "
                                     f"{upper[i]:g} days {problem}", name)
    return bounds


def _mask(dataset: xr.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(_has_dims(dataset, MASK, (_SPATIAL,), path).values, dtype=np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        first = values[bad][0]
        raise driver_error(path, f"{int(bad.sum())} value(s) other than 0 or 1 (e.g. "
                                 f"{first:g}); 1 marks a simulated cell", MASK)
    rows, cols = np.nonzero(values == 1.0)
    if rows.size == 0:
        raise driver_error(path, "no simulated cell (mask is 0 everywhere)", MASK)
    return rows.astype(np.int64), cols.astype(np.int64)


def _cell_area(dataset: xr.Dataset, rows: np.ndarray, cols: np.ndarray, path: Path
               ) -> np.ndarray:
    _has_dims(dataset, CELL_AREA, (_SPATIAL,), path)
    units = _declared_units(dataset, CELL_AREA, "m2", path)
    area = convert(np.asarray(dataset[CELL_AREA].values, dtype=np.float64)[rows, cols],
                   units, "m2")
    bad = ~(np.isfinite(area) & (area > 0.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise driver_error(path, f"{int(bad.sum())} simulated cell(s) without a positive area "
                                 f"(first at row {rows[i]}, col {cols[i]})", CELL_AREA)
    return area


def _regions(dataset: xr.Dataset, rows: np.ndarray, cols: np.ndarray, path: Path
             ) -> tuple[tuple[str, ...], np.ndarray]:
    """Region names and the region fractions of the simulated cells (R, P)."""
    if REGION_MASK not in dataset.variables:
        return (), np.zeros((0, rows.size))
    _has_dims(dataset, REGION_MASK, ((REGION, LAT, LON),), path)
    if REGION not in dataset.variables or dataset[REGION].dims != (REGION,):
        raise driver_error(path, "no region coordinate (the region names)", REGION_MASK)
    names = tuple(str(name) for name in dataset[REGION].values)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise driver_error(path, f"region name(s) {', '.join(duplicates)} repeated", REGION)
    fraction = np.asarray(dataset[REGION_MASK].values, dtype=np.float64)
    valid = fraction[np.isfinite(fraction)]
    if valid.size and (valid.min() < 0.0 or valid.max() > 1.0):
        raise driver_error(path, f"values span [{valid.min():g}, {valid.max():g}]; a region "
                                 "mask is a cell fraction in [0, 1]", REGION_MASK)
    at_pixels = fraction[:, rows, cols]
    if not np.all(np.isfinite(at_pixels)):
        raise driver_error(path, "NaN/inf in simulated cells", REGION_MASK)
    return names, at_pixels


def _is_truth(name: str, variable: xr.DataArray) -> bool:
    return name.startswith(TRUTH_PREFIX) or variable.attrs.get("role") == "truth"


def _validated(dataset: xr.Dataset, path: Path) -> GridDriver:
    lat, lon = _axis(dataset, LAT, path), _axis(dataset, LON, path)
    required = (*GRID_FORCING, MASK, CELL_AREA)
    missing = [name for name in required if name not in dataset.data_vars]
    if missing:
        raise driver_error(path, "required variable(s) missing", ", ".join(missing))
    stamps, dates, time, delta_t, doy, bounds = _time_axis(dataset, path)
    units: dict[str, str | None] = {}
    for name in GRID_FORCING:
        _has_dims(dataset, name, (_SERIES, (TIME,)) if name == "co2" else (_SERIES,), path)
        units[name] = _declared_units(dataset, name, FORCING_VARIABLES[name].units, path)
    rows, cols = _mask(dataset, path)
    cell_area = _cell_area(dataset, rows, cols, path)
    regions, region_fraction = _regions(dataset, rows, cols, path)

    variables = {str(name): dataset[name] for name in dataset.data_vars}
    truth = tuple(name for name, variable in variables.items() if _is_truth(name, variable))
    for name in truth:
        _has_dims(dataset, name, (_SPATIAL, _SERIES, (TIME, REGION)), path)
    observations = tuple(name for name in PIXEL_OBSERVATIONS if name in variables
                         and name not in truth)
    for name in observations:
        _has_dims(dataset, name, (_SERIES, _SPATIAL), path)
        units[name] = _declared_units(dataset, name, OBSERVATION_UNITS[name], path)
    regional = tuple(name for name in PIXEL_OBSERVATIONS if name + REGIONAL_SUFFIX in variables)
    for name in regional:
        variable = name + REGIONAL_SUFFIX
        if not regions:
            raise driver_error(path, f"a regional target needs {REGION_MASK} (and its "
                                     f"{REGION} names)", variable)
        _has_dims(dataset, variable, ((TIME, REGION),), path)
        units[variable] = _declared_units(dataset, variable, OBSERVATION_UNITS[name], path)
    for name in variables:
        target = name.removesuffix(UNCERTAINTY_SUFFIX)
        if name == target or target not in variables:
            continue
        if dataset[name].dims != dataset[target].dims:
            raise driver_error(path, f"dimensions ({', '.join(map(str, dataset[name].dims))}) "
                                     f"differ from those of {target} "
                                     f"({', '.join(map(str, dataset[target].dims))})", name)
        if target in units:
            canonical = OBSERVATION_UNITS.get(target.removesuffix(REGIONAL_SUFFIX))
            units[name] = _declared_units(dataset, name, canonical, path, units_of=target)

    excluded = {*_NOT_PREDICTORS, *observations, *truth,
                *(name + REGIONAL_SUFFIX for name in regional)}
    candidates = {name: variable for name, variable in variables.items()
                  if name not in excluded and not name.endswith(UNCERTAINTY_SUFFIX)}
    categorical = tuple(name for name, variable in candidates.items()
                        if "flag_values" in variable.attrs)
    predictors = tuple(name for name, variable in candidates.items()
                       if variable.attrs.get("role") == "predictor" and name not in categorical)
    for name in (*categorical, *predictors):
        _has_dims(dataset, name, (_SPATIAL,), path)

    decoded = {TIME: (TIME, _datetimes(stamps),
                      {k: v for k, v in dataset[TIME].attrs.items()
                       if k not in ("units", "calendar")})}
    if bounds is not None:
        name = str(dataset[TIME].attrs.get("bounds", "time_bnds"))
        decoded[name] = (dataset[name].dims, _datetimes(bounds), {})
    coordinates = {name: value for name, value in decoded.items() if name in dataset.coords}
    data = {name: value for name, value in decoded.items() if name not in dataset.coords}
    opened, dataset = dataset, dataset.assign_coords(coordinates).assign(data)
    dataset.set_close(opened.close)  # derived datasets do not close the files themselves

    return GridDriver(
        path=path, dataset=dataset, dates=_read_only(dates), time=_read_only(time),
        delta_t=_read_only(delta_t), doy=_read_only(doy), lat=_read_only(lat),
        lon=_read_only(lon), rows=_read_only(rows), cols=_read_only(cols),
        cell_area=_read_only(cell_area), observations=observations, regional=regional,
        regions=regions, predictors=predictors, categorical=categorical,
        truth=tuple(name.removeprefix(TRUTH_PREFIX) for name in truth), attrs=dict(dataset.attrs),
        _units=units, _region_fraction=_read_only(region_fraction))


def _datetimes(days: np.ndarray) -> np.ndarray:
    """Days since 2001-01-01 as ``datetime64[ns]``."""
    nanoseconds = np.round(np.asarray(days) * 86_400e9).astype(np.int64)
    return MODEL_EPOCH.astype("datetime64[ns]") + nanoseconds.astype("timedelta64[ns]")


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array
