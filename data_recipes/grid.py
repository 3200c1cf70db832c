"""Build a monthly grid driver from gridded NetCDF and GeoTIFF files.

    python data_recipes/grid.py --forcing t2m_min.nc t2m_max.nc ssrd.tif ... \\
        [--predictors clay.tif pft.nc ...] [--targets lai.nc ...] --grid 0.5 \\
        --out grid.zarr|grid.nc [--land-mask land.tif] [--start 2001-01 --end 2005-12] \\
        [--rename SRC=DST ...] [--mapping names.json] [--units NAME=UNITS ...] \\
        [--categorical NAME ...] [--bbox WEST SOUTH EAST NORTH] [--overwrite]

Every input (CF NetCDF with a latitude/longitude grid or a projected grid with a grid mapping;
GeoTIFF in any CRS) is opened lazily with dask, renamed to differland's canonical names,
converted to canonical units, aggregated to monthly steps (daily and other sub-monthly data
become monthly means; monthly data are kept), reprojected to EPSG:4326 when it is not already
on a latitude/longitude grid, regridded to one regular grid (conservative for continuous fields,
most common class or nearest neighbour for categorical maps), aligned in time, land-masked and
written chunk by chunk to Zarr or NetCDF (by the output suffix). ``docs/drivers.md`` describes
the output and every rule used here.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import dask
import dask.array
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, calculate_default_transform, reproject
from recipe_common import (
    GRID_CRS,
    RecipeParser,
    add_overwrite_option,
    cell_area,
    cell_edges,
    check_output,
    key_value,
    linear_conversion,
    parse_units,
    provenance_attrs,
    recipe_error,
    regular_centres,
    replace_atomically,
    run_main,
    snap_to_grid,
)

from differland.forcing import FORCING_VARIABLES
from differland.io import OBSERVATION_VARIABLES

RECIPE = "grid"
LIBRARIES = ("dask", "zarr", "xarray-regrid", "flox", "cf-xarray", "pint", "rioxarray",
             "rasterio", "pyproj")
"""Distributions whose versions the provenance record lists."""

GRID_FORCING: tuple[str, ...] = ("t_min", "t_max", "ssrd", "co2", "vpd", "precipitation",
                                 "burned_area")
"""Canonical names of the forcing variables of a grid driver (units: FORCING_VARIABLES)."""
TARGET_UNITS: dict[str, str] = {
    **{key: spec.units for key, spec in OBSERVATION_VARIABLES.items()},
    "nbe": OBSERVATION_VARIABLES["nee"].units,
}
"""Canonical units of targets with a differland observation name."""
WATER_FLUX_NAMES = frozenset({"precipitation", "et"})
"""Variables whose water mass fluxes (kg m-2 s-1) convert to depths (mm d-1)."""
SUMMED_IN_TIME = frozenset({"burned_area"})
"""Variables summed (not averaged) over the steps of a month: fractions burned per step."""
RESERVED_NAMES = frozenset({"time", "time_bnds", "lat", "lon", "mask", "land_fraction",
                            "cell_area", "spatial_ref", "band", "x", "y"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff", ".gtiff"})
LATITUDE_NAMES = ("lat", "latitude")
LONGITUDE_NAMES = ("lon", "longitude")
PROJECTED_DIMS = ("y", "x")
OUTPUT_TIME_CHUNK = 12
"""Time steps per output chunk (one year of months)."""
DEFAULT_SPACE_CHUNK = 256
"""Latitude and longitude cells per output chunk, by default."""
DEFAULT_MIN_LAND_FRACTION = 0.5
"""Cells with a smaller land fraction (from ``--land-mask``) are masked [1]."""
MONTH_MIN_DAYS, MONTH_MAX_DAYS = 27.5, 31.5
"""Range of steps recognised as monthly [d]."""
ZARR_FORMAT = 2
"""Zarr format of grid stores: version 2 with consolidated metadata, readable by every Zarr
implementation (consolidated metadata is not part of the version 3 specification)."""
TIME_ENCODING = {"units": "days since 2001-01-01 00:00:00", "calendar": "standard",
                 "dtype": "int64"}
_TOLERANCE = 1e-6
"""Relative tolerance of spacing comparisons [1]."""
_WARP_LOCK = threading.Lock()
"""Serialises rasterio warps across dask threads: rasterio silences a warning of its in-memory
datasets with ``warnings.catch_warnings``, which is not thread-safe, so concurrent warps leak
spurious NotGeoreferencedWarning."""


@dataclass(frozen=True)
class SourceVariable:
    """One input variable on its way to the grid driver.

    Attributes:
        name: canonical name in the driver.
        data: lazy values, dims a subset of (time, lat, lon) or (time, y, x).
        role: ``"forcing"``, ``"predictor"``, ``"target"`` or ``"land_mask"``.
        path: input file.
        source_name: variable name in the input (a GeoTIFF's file stem).
        crs: CRS of a (y, x) grid; ``None`` for latitude/longitude data.
        categorical: regridded by class (most common / nearest), never averaged.
        history: what was done to the values, step by step.
    """

    name: str
    data: xr.DataArray
    role: str
    path: Path
    source_name: str
    crs: CRS | None = None
    categorical: bool = False
    history: tuple[str, ...] = ()

    def with_data(self, data: xr.DataArray, step: str | None = None) -> SourceVariable:
        """A copy with new values and, optionally, one more history step."""
        history = self.history if step is None else (*self.history, step)
        return replace(self, data=data, history=history)


@dataclass(frozen=True)
class GridOptions:
    """Options that shape the grid driver (recorded in its provenance).

    Attributes:
        resolution: grid spacing [degree].
        bbox: (west, south, east, north) [degree] or ``None`` (intersection of the inputs).
        start: first month (``YYYY-MM``) or ``None``.
        end: last month (``YYYY-MM``) or ``None``.
        rename: source name -> canonical name.
        units: name (source or canonical) -> units declared for inputs without them.
        categorical: names (source or canonical) regridded as classes.
        min_land_fraction: cells with a smaller land fraction are masked [1].
        chunk: latitude/longitude cells per output chunk.
    """

    resolution: float
    bbox: tuple[float, float, float, float] | None = None
    start: str | None = None
    end: str | None = None
    rename: tuple[tuple[str, str], ...] = ()
    units: tuple[tuple[str, str], ...] = ()
    categorical: tuple[str, ...] = ()
    min_land_fraction: float = DEFAULT_MIN_LAND_FRACTION
    chunk: int = DEFAULT_SPACE_CHUNK


# --- opening inputs ---------------------------------------------------------------------------


def open_inputs(path: Path, role: str, options: GridOptions) -> list[SourceVariable]:
    """Open one input file lazily as renamed source variables.

    Raises:
        RecipeError: unreadable file, missing CRS, unsupported grid, or a bad time axis.
    """
    if not path.exists():
        raise recipe_error(path, "file does not exist")
    variables = open_geotiff(path, role) if path.suffix.lower() in TIFF_SUFFIXES \
        else open_netcdf(path, role)
    rename = dict(options.rename)
    categorical = set(options.categorical)
    out = []
    for variable in variables:
        name = rename.get(variable.source_name, variable.source_name)
        is_categorical = (name in categorical or variable.source_name in categorical
                          or "flag_values" in variable.data.attrs
                          or "flag_meanings" in variable.data.attrs)
        out.append(replace(variable, name=name, categorical=is_categorical))
    return out


def open_geotiff(path: Path, role: str) -> list[SourceVariable]:
    """A GeoTIFF as one variable named after the file: static, or monthly from band dates.

    A single band is a static map unless its description is a date; several bands are time
    steps, and their descriptions must be dates (``YYYY-MM`` or ``YYYY-MM-DD``).
    """
    try:
        data = rioxarray.open_rasterio(path, chunks={"band": 1, "y": 1024, "x": 1024},
                                       mask_and_scale=True)
    except (RasterioError, OSError, ValueError) as error:
        raise recipe_error(path, f"cannot read as GeoTIFF ({type(error).__name__})") from error
    if data.rio.crs is None:
        raise recipe_error(path, "missing CRS: the GeoTIFF has no coordinate reference "
                                 "system (assign one, e.g. with gdal_edit.py -a_srs)")
    crs = CRS.from_user_input(data.rio.crs.to_wkt())
    descriptions = data.attrs.pop("long_name", None)
    if isinstance(descriptions, str):
        descriptions = (descriptions,)
    dates = _band_dates(descriptions, data.sizes["band"], path)
    if dates is None:
        if data.sizes["band"] > 1:
            raise recipe_error(path, f"{data.sizes['band']} bands without dates: give each "
                                     "band a date description (YYYY-MM) or use one band per file")
        data = data.isel(band=0, drop=True)
    else:
        data = data.rename(band="time").assign_coords(time=dates)
    data = data.drop_vars("spatial_ref", errors="ignore")
    data.attrs = {key: value for key, value in data.attrs.items()
                  if key not in {"scale_factor", "add_offset", "_FillValue", "AREA_OR_POINT"}}
    return [_as_geographic_or_projected(data, crs, path, path.stem, role)]


def _band_dates(descriptions, n_bands: int, path: Path) -> pd.DatetimeIndex | None:
    if not descriptions or len(descriptions) != n_bands:
        return None
    try:
        return pd.DatetimeIndex([pd.Timestamp(str(text)) for text in descriptions])
    except ValueError:
        if n_bands == 1:
            return None
        raise recipe_error(path, "band descriptions are not dates") from None


def open_netcdf(path: Path, role: str) -> list[SourceVariable]:
    """Every gridded data variable of a CF NetCDF file, opened lazily with dask."""
    try:
        dataset = xr.open_dataset(path, chunks="auto")
    except (OSError, ValueError, RuntimeError) as error:
        raise recipe_error(path, f"cannot read as NetCDF ({type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]})") from error
    dataset = _standard_time(dataset, path)
    skipped = _auxiliary_names(dataset)
    out = []
    for name, data in dataset.data_vars.items():
        if name in skipped or not np.issubdtype(data.dtype, np.number):
            continue
        if data.encoding.get("_Unsigned") is not None or np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.float64)
        crs = _grid_mapping_crs(dataset, data, path)
        out.append(_as_geographic_or_projected(data, crs, path, str(name), role))
    if not out:
        raise recipe_error(path, "no gridded numeric data variable")
    return out


def _auxiliary_names(dataset: xr.Dataset) -> set[str]:
    names = set()
    for variable in dataset.variables.values():
        for key in ("bounds", "grid_mapping"):
            if key in variable.attrs:
                names.add(str(variable.attrs[key]).split(":")[0])
    return names | {"crs", "spatial_ref"}


def _grid_mapping_crs(dataset: xr.Dataset, data: xr.DataArray, path: Path) -> CRS | None:
    name = data.attrs.get("grid_mapping", data.encoding.get("grid_mapping"))
    if name is None or name not in dataset.variables:
        return None
    attrs = dataset[name].attrs
    try:
        if "crs_wkt" in attrs or "spatial_ref" in attrs:
            return CRS.from_wkt(attrs.get("crs_wkt", attrs.get("spatial_ref")))
        return CRS.from_cf(attrs)
    except CRSError as error:
        raise recipe_error(path, f"grid mapping {name} is not a valid CRS", str(data.name)
                           ) from error


def _standard_time(dataset: xr.Dataset, path: Path) -> xr.Dataset:
    for name in dataset.dims:
        coordinate = dataset.coords.get(name)
        if coordinate is None or coordinate.ndim != 1:
            continue
        if coordinate.dtype == object and coordinate.size and hasattr(coordinate.values[0],
                                                                      "calendar"):
            raise recipe_error(path, "only the standard calendar is supported (convert the "
                                     "time axis, e.g. with xarray convert_calendar)", str(name))
        if np.issubdtype(coordinate.dtype, np.datetime64):
            return dataset.rename({name: "time"}) if name != "time" else dataset
    return dataset


def _find(data: xr.DataArray, names: Sequence[str], standard_name: str, units: str
          ) -> str | None:
    """The 1-D dimension coordinate recognised by its name, standard name or units."""
    for name, coordinate in data.coords.items():
        if coordinate.ndim == 1 and coordinate.dims[0] == name and (
                str(name).lower() in names or coordinate.attrs.get("units") == units
                or coordinate.attrs.get("standard_name") == standard_name):
            return str(name)
    return None


def _as_geographic_or_projected(data: xr.DataArray, crs: CRS | None, path: Path,
                                name: str, role: str) -> SourceVariable:
    """Name the spatial dims (lat, lon) or (y, x) and check the CRS agrees with them."""
    latitude = _find(data, LATITUDE_NAMES, "latitude", "degrees_north")
    longitude = _find(data, LONGITUDE_NAMES, "longitude", "degrees_east")
    spatial = [dim for dim in data.dims if dim != "time"]
    if latitude and longitude:
        if crs is not None and not crs.is_geographic:
            raise recipe_error(path, f"CRS mismatch: latitude/longitude coordinates but a "
                                     f"projected CRS ({crs.name})", name)
        if crs is not None and crs.to_epsg() not in (4326, None):
            data = data.rename({latitude: "y", longitude: "x"})
            return SourceVariable(name, data, role, path, name, crs=crs)
        data = data.rename({latitude: "lat", longitude: "lon"})
        return SourceVariable(name, data, role, path, name)
    if set(PROJECTED_DIMS) <= set(spatial):
        if crs is None:
            raise recipe_error(path, "missing CRS: (y, x) grid without a grid_mapping "
                                     "(or GeoTIFF CRS)", name)
        if crs.is_geographic and crs.to_epsg() == 4326:
            return SourceVariable(name, data.rename(y="lat", x="lon"), role, path, name)
        return SourceVariable(name, data, role, path, name, crs=crs)
    if spatial:
        raise recipe_error(path, f"dimensions {tuple(data.dims)} are not a latitude/longitude "
                                 "or (y, x) grid (curvilinear grids are not supported)", name)
    if "time" not in data.dims:
        raise recipe_error(path, "neither spatial nor time dimensions", name)
    return SourceVariable(name, data, role, path, name)


# --- names and units --------------------------------------------------------------------------


def canonical_units(name: str) -> str | None:
    """The canonical units of a differland variable name, if it has one."""
    if name in GRID_FORCING:
        return FORCING_VARIABLES[name].units
    return TARGET_UNITS.get(name)


def check_role(variable: SourceVariable) -> None:
    """Check that the variable's name and time dimension suit its role.

    Raises:
        RecipeError: a forcing variable that is not a canonical forcing name or not
            time-dependent, a time-dependent predictor, or a reserved name.
    """
    name, data = variable.name, variable.data
    if name in RESERVED_NAMES:
        raise recipe_error(variable.path, f"{name!r} is reserved in the grid driver; rename it "
                                          f"with --rename {variable.source_name}=NEW",
                           variable.source_name)
    if variable.role == "forcing":
        if name not in GRID_FORCING:
            names = ", ".join(GRID_FORCING)
            raise recipe_error(variable.path, f"not a canonical forcing name ({names}); map "
                                              f"it with --rename {variable.source_name}=NAME",
                               variable.source_name)
        if "time" not in data.dims:
            raise recipe_error(variable.path, "forcing without a time axis", name)
    if variable.role == "predictor" and "time" in data.dims and data.sizes["time"] > 1:
        raise recipe_error(variable.path, "a static predictor varies in time (pass it with "
                                          "--targets or --forcing)", name)


def to_canonical_units(variable: SourceVariable, declared: Mapping[str, str]
                       ) -> SourceVariable:
    """Convert the values to the canonical units of the name (if any) and set ``units``.

    Raises:
        RecipeError: no units (and none declared with ``--units``), unknown units, or units
            not convertible to the canonical ones.
    """
    data = variable.data
    units = declared.get(variable.name, declared.get(variable.source_name,
                                                     data.attrs.get("units")))
    target = canonical_units(variable.name)
    if units is None or str(units).strip() == "":
        if variable.categorical or variable.role == "land_mask":
            return variable
        raise recipe_error(variable.path, "no units attribute; declare them with --units "
                                          f"{variable.source_name}=UNITS", variable.source_name)
    units = str(units)
    if target is None:
        parse_units(units, variable.path, variable.source_name)
        return variable.with_data(data.assign_attrs(units=units))
    scale, offset = linear_conversion(units, target, variable.path, variable.source_name,
                                      water_equivalent=variable.name in WATER_FLUX_NAMES)
    if (scale, offset) != (1.0, 0.0):
        data = data.astype(np.float64) * scale + offset
    step = f"converted from {units} to {target}"
    return variable.with_data(data.assign_attrs({**variable.data.attrs, "units": target}), step)


# --- time -------------------------------------------------------------------------------------


def month_starts(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The first day of the month of each timestamp."""
    return pd.DatetimeIndex(times.to_period("M").to_timestamp())


def to_monthly(variable: SourceVariable) -> SourceVariable:
    """Monthly steps: monthly input is kept, sub-monthly input is averaged (or summed).

    Forcing must be gap-free: monthly forcing may not skip a month; sub-monthly forcing must
    have a regular step, and months with fewer samples than ``floor(days in month / step)``
    (the partial months at the record ends) are dropped. Targets may have gaps: every month
    with at least one sample is kept. Predictors lose a time axis of length 1.

    Raises:
        RecipeError: time not strictly increasing, a forcing gap, or an unsupported step.
    """
    data = variable.data
    if "time" not in data.dims:
        return variable
    if variable.role == "predictor":
        return variable.with_data(data.isel(time=0, drop=True))
    times = pd.DatetimeIndex(data["time"].values)
    if times.size == 1:
        return variable.with_data(data.assign_coords(time=month_starts(times)))
    steps = time_steps(times, variable)
    step = float(np.median(steps))
    if MONTH_MIN_DAYS < step < MONTH_MAX_DAYS:
        return monthly_kept(variable, times)
    if step >= MONTH_MIN_DAYS:
        raise recipe_error(variable.path, f"time step of {step:g} days is neither sub-monthly "
                                          "nor monthly", variable.source_name)
    return monthly_aggregate(variable, times, steps, step)


def time_steps(times: pd.DatetimeIndex, variable: SourceVariable) -> np.ndarray:
    """Steps between consecutive times [d].

    Raises:
        RecipeError: the times are not strictly increasing.
    """
    steps = np.diff(times.values).astype("timedelta64[s]").astype(np.float64) / 86400.0
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise recipe_error(variable.path, f"time is not strictly increasing ("
                                          f"{_stamp(times[i])} then {_stamp(times[i + 1])})",
                           variable.source_name)
    return steps


def monthly_kept(variable: SourceVariable, times: pd.DatetimeIndex) -> SourceVariable:
    """Monthly input, stamped at month starts (forcing: no month may be missing)."""
    months = times.year * 12 + times.month
    gaps = np.diff(months) != 1
    if variable.role == "forcing" and np.any(gaps):
        i = int(np.argmax(gaps))
        raise recipe_error(variable.path, f"time gap: missing month(s) between "
                                          f"{times[i]:%Y-%m} and {times[i + 1]:%Y-%m}",
                           variable.source_name)
    if np.any(np.diff(months) == 0):
        raise recipe_error(variable.path, "two steps in one month with a monthly step",
                           variable.source_name)
    return variable.with_data(variable.data.assign_coords(time=month_starts(times)),
                              "monthly input")


def monthly_aggregate(variable: SourceVariable, times: pd.DatetimeIndex, steps: np.ndarray,
                      step: float) -> SourceVariable:
    """Monthly means (sums for :data:`SUMMED_IN_TIME`) of sub-monthly input."""
    strict = variable.role == "forcing"
    irregular = np.abs(steps - step) > _TOLERANCE * step
    if strict and np.any(irregular):
        i = int(np.argmax(irregular))
        raise recipe_error(variable.path, f"time gap or irregular step: {steps[i]:g} days "
                                          f"between {_stamp(times[i])} and "
                                          f"{_stamp(times[i + 1])} (expected {step:g})",
                           variable.source_name)
    how = "sum" if variable.name in SUMMED_IN_TIME else "mean"
    resampled = variable.data.resample(time="MS")
    monthly = resampled.sum(min_count=1) if how == "sum" else resampled.mean()
    counts = pd.Series(1, index=times).resample("MS").sum()
    needed = np.floor(counts.index.days_in_month.to_numpy() / step + _TOLERANCE) if strict \
        else np.ones(counts.size)
    kept = counts.index[counts.to_numpy() >= needed]
    if kept.size == 0:
        raise recipe_error(variable.path, "no complete month in the record",
                           variable.source_name)
    rule = " (complete months only)" if strict else ""
    return variable.with_data(monthly.sel(time=kept).assign_attrs(variable.data.attrs),
                              f"monthly {how} of {step:g}-day steps{rule}")


def _stamp(time: pd.Timestamp) -> str:
    """A timestamp as a date, or as date and time when it is not midnight."""
    return f"{time:%Y-%m-%d}" if time == time.normalize() else f"{time:%Y-%m-%d %H:%M}"


def month(text: str | None, option: str) -> pd.Timestamp | None:
    """Parse a ``YYYY-MM`` option as the first day of that month."""
    if text is None:
        return None
    try:
        return pd.Timestamp(pd.Period(text, freq="M").start_time)
    except ValueError as error:
        raise recipe_error(option, f"{text!r} is not a month (YYYY-MM)") from error


def common_months(variables: Iterable[SourceVariable], start: pd.Timestamp | None,
                  end: pd.Timestamp | None) -> pd.DatetimeIndex:
    """Months covered by every forcing variable, within ``[start, end]``.

    Raises:
        RecipeError: the forcing records (and the window) do not overlap.
    """
    first, last = start, end
    for variable in variables:
        times = pd.DatetimeIndex(variable.data["time"].values)
        first = times[0] if first is None else max(first, times[0])
        last = times[-1] if last is None else min(last, times[-1])
    if first is None or last is None or first > last:
        raise recipe_error("--forcing", "empty intersection: the forcing records (and "
                                        "--start/--end) have no month in common")
    return pd.date_range(first, last, freq="MS")


# --- space ------------------------------------------------------------------------------------


def warp_to_geographic(variable: SourceVariable) -> SourceVariable:
    """Reproject a (y, x) variable to EPSG:4326 at about its own resolution, lazily.

    Each 2-D slice (one time step) is warped on its own, one slice at a time across threads:
    bilinear for continuous fields, nearest neighbour for categorical maps.
    """
    data, crs = variable.data, variable.crs
    if crs is None:
        return variable
    data = data.rio.set_spatial_dims(x_dim="x", y_dim="y").rio.write_crs(crs.to_wkt())
    source_transform = data.rio.transform()
    destination, width, height = calculate_default_transform(
        crs.to_wkt(), GRID_CRS, data.rio.width, data.rio.height, *data.rio.bounds())
    resampling = Resampling.nearest if variable.categorical else Resampling.bilinear
    leading = [dim for dim in data.dims if dim not in PROJECTED_DIMS]
    data = data.transpose(*leading, "y", "x").chunk({"y": -1, "x": -1, **dict.fromkeys(
        leading, 1)})

    def warp_block(block: np.ndarray) -> np.ndarray:
        out = np.full(block.shape[:-2] + (height, width), np.nan)
        for index in np.ndindex(block.shape[:-2]):
            with _WARP_LOCK:
                reproject(source=np.asarray(block[index], np.float64), destination=out[index],
                          src_transform=source_transform, src_crs=crs.to_wkt(),
                          dst_transform=destination, dst_crs=GRID_CRS, src_nodata=np.nan,
                          dst_nodata=np.nan, resampling=resampling)
        return out

    chunks = (*data.data.chunks[:-2], (height,), (width,))
    warped = data.data.map_blocks(warp_block, chunks=chunks, dtype=np.float64,
                                  meta=np.empty((0,) * data.ndim, np.float64))
    lon = destination.c + destination.a * (np.arange(width) + 0.5)
    lat = destination.f + destination.e * (np.arange(height) + 0.5)
    coords = {dim: data.coords[dim] for dim in leading if dim in data.coords}
    result = xr.DataArray(warped, dims=(*leading, "lat", "lon"),
                          coords={**coords, "lat": lat, "lon": lon}, attrs=data.attrs)
    step = f"reprojected from {crs.name} to {GRID_CRS} ({resampling.name})"
    return replace(variable.with_data(result, step), crs=None)


def normalise_lat_lon(data: xr.DataArray) -> xr.DataArray:
    """Longitudes in [-180, 180) and both coordinates increasing."""
    if "lon" not in data.dims:
        return data
    lon = data["lon"].values
    wrapped = (lon + 180.0) % 360.0 - 180.0
    if not np.array_equal(wrapped, lon):
        data = data.assign_coords(lon=wrapped)
    for dim in ("lat", "lon"):
        if not data.indexes[dim].is_monotonic_increasing:
            data = data.sortby(dim)
    return data


def extent(data: xr.DataArray) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of the cells of a lat/lon variable [degree]."""
    if "lat" not in data.dims:
        return None
    lat_edges = cell_edges(data["lat"].values)
    lon_edges = cell_edges(data["lon"].values)
    return (float(lon_edges[0]), max(float(lat_edges[0]), -90.0), float(lon_edges[-1]),
            min(float(lat_edges[-1]), 90.0))


def snapped(box: tuple[float, float, float, float], resolution: float, grow: bool
            ) -> tuple[float, float, float, float]:
    """A (west, south, east, north) box grown to, or shrunk to, whole grid cells."""
    west, south, east, north = box
    return (snap_to_grid(west, resolution, down=grow), snap_to_grid(south, resolution, down=grow),
            snap_to_grid(east, resolution, down=not grow),
            snap_to_grid(north, resolution, down=not grow))


def grid_domain(extents: Sequence[tuple[float, float, float, float]], resolution: float,
                bbox: tuple[float, float, float, float] | None
                ) -> tuple[float, float, float, float]:
    """The (west, south, east, north) edges of the output grid.

    Without ``bbox``: the intersection of the ``extents``, shrunk to whole cells. With it: the
    box grown to whole cells, which must overlap every extent.

    Raises:
        RecipeError: an empty intersection.
    """
    if bbox is not None:
        domain = snapped(bbox, resolution, grow=True)
        for box in extents:
            if box[0] >= domain[2] or box[2] <= domain[0] or box[1] >= domain[3] \
                    or box[3] <= domain[1]:
                raise recipe_error("--bbox", f"empty intersection: {bbox} does not overlap "
                                             f"the input extent {box}")
        return domain
    overlap = (max(box[0] for box in extents), max(box[1] for box in extents),
               min(box[2] for box in extents), min(box[3] for box in extents))
    domain = snapped(overlap, resolution, grow=False)
    if min(domain[2] - domain[0], domain[3] - domain[1]) < resolution * (1 - _TOLERANCE):
        raise recipe_error("inputs", f"empty intersection: the inputs share no whole "
                                     f"{resolution:g}-degree cell (overlap W, S, E, N = "
                                     f"{', '.join(f'{value:g}' for value in overlap)})")
    return domain


def target_grid(domain: tuple[float, float, float, float], resolution: float) -> xr.Dataset:
    """An empty dataset with the lat/lon coordinates of the output grid."""
    west, south, east, north = domain
    lat = regular_centres(south, north, resolution)
    lon = regular_centres(west, east, resolution)
    return xr.Dataset(coords={
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude",
                             "long_name": "latitude of the cell centre", "axis": "Y"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude",
                             "long_name": "longitude of the cell centre", "axis": "X"}),
    })


def source_resolution(data: xr.DataArray) -> float:
    """The largest latitude or longitude spacing of a variable [degree]."""
    return max(float(np.max(np.abs(np.diff(data[dim].values)))) if data.sizes[dim] > 1
               else 360.0 for dim in ("lat", "lon"))


def class_values(data: xr.DataArray) -> np.ndarray:
    """The classes of a categorical map: its ``flag_values``, else its distinct values."""
    if "flag_values" in data.attrs:
        return np.atleast_1d(np.asarray(data.attrs["flag_values"], dtype=np.float64))
    values = dask.array.unique(dask.array.asarray(data.data)).compute()
    return np.asarray(values[np.isfinite(values)], dtype=np.float64)


def regrid(variable: SourceVariable, grid: xr.Dataset) -> SourceVariable:
    """Regrid a lat/lon variable to ``grid``.

    Continuous fields: conservative (area-weighted mean over the valid part of each cell).
    Categorical maps: the most common class when the source is finer than the grid, else the
    nearest source cell.
    """
    data = variable.data
    if "lat" not in data.dims:
        return variable
    resolution = float(grid["lat"].values[1] - grid["lat"].values[0]) \
        if grid.sizes["lat"] > 1 else float(grid["lon"].values[1] - grid["lon"].values[0])
    if not variable.categorical:
        result = data.astype(np.float64).regrid.conservative(grid, latitude_coord="lat")
        return variable.with_data(result.assign_attrs(data.attrs), "regridded conservatively")
    spacing = source_resolution(data)
    if spacing < resolution:
        classes = class_values(data)
        if not np.array_equal(classes, np.round(classes)):
            raise recipe_error(variable.path, "a categorical map must hold integer class "
                                              "codes", variable.source_name)
        no_class = int(classes.min()) - 1 if classes.size else -1
        codes = data.fillna(no_class).astype(np.int64).rename(variable.name)
        result = codes.regrid.most_common(grid, values=classes.astype(np.int64))
        coverage = data.notnull().astype(np.float64).regrid.conservative(
            grid, latitude_coord="lat", skipna=False)
        result = result.where(coverage > 0)
        step = "regridded by most common class"
    else:
        result = data.reindex(lat=grid["lat"], lon=grid["lon"], method="nearest",
                              tolerance=spacing / 2 * (1 + _TOLERANCE))
        step = "regridded by nearest neighbour"
    return variable.with_data(result.astype(np.float64).assign_attrs(data.attrs), step)


# --- assembling the driver --------------------------------------------------------------------


def land_fraction(variable: SourceVariable, grid: xr.Dataset) -> xr.DataArray:
    """Land fraction of each grid cell [1] from a 0/1 or fractional land-mask raster.

    Raises:
        RecipeError: values outside [0, 1].
    """
    data = variable.data
    if "time" in data.dims:
        data = data.isel(time=0, drop=True)
    low, high = dask.compute(data.min(), data.max())
    if not (float(low) >= 0.0 and float(high) <= 1.0):
        raise recipe_error(variable.path, f"land mask values span [{float(low):g}, "
                                          f"{float(high):g}]; expected 0/1 or fractions",
                           variable.source_name)
    fraction = regrid(replace(variable, data=data, categorical=False), grid).data
    return fraction.fillna(0.0).assign_attrs(
        units="1", long_name="land fraction of the cell", source=str(variable.path))


def variable_attrs(variable: SourceVariable) -> dict[str, str]:
    """Output attributes: units, role, provenance of the values."""
    attrs = {key: value for key, value in variable.data.attrs.items()
             if key in {"units", "long_name", "standard_name", "flag_values", "flag_meanings"}}
    if variable.name in GRID_FORCING:
        attrs.setdefault("long_name", FORCING_VARIABLES[variable.name].description)
    return {**attrs, "role": variable.role, "source_file": str(variable.path.resolve()),
            "source_variable": variable.source_name, "processing": "; ".join(variable.history)}


def output_chunks(dims: Sequence[str], chunk: int) -> dict[str, int]:
    """Output chunk sizes by dimension."""
    return {dim: OUTPUT_TIME_CHUNK if dim == "time" else chunk for dim in dims}


def assemble(variables: Sequence[SourceVariable], grid: xr.Dataset, months: pd.DatetimeIndex,
             land: xr.DataArray | None, options: GridOptions, attrs: Mapping[str, str]
             ) -> xr.Dataset:
    """The grid driver: aligned, land-masked, chunked variables plus grid metadata.

    Forcing variables are cut to the common months; targets are reindexed to them (NaN
    outside their record). ``mask`` is 1 on land cells where every gridded forcing variable
    is complete.

    Raises:
        RecipeError: a target does not overlap the forcing months.
    """
    lat_edges = cell_edges(grid["lat"].values)
    lon_edges = cell_edges(grid["lon"].values)
    area = xr.DataArray(cell_area(lat_edges, lon_edges), dims=("lat", "lon"),
                        attrs={"units": "m2", "long_name": "cell area (authalic sphere)"})
    is_land = xr.DataArray(True) if land is None else land >= options.min_land_fraction
    data_vars: dict[str, xr.DataArray] = {"cell_area": area}
    if land is not None:
        data_vars["land_fraction"] = land.astype(np.float32)
    complete = xr.DataArray(True)
    for variable in variables:
        data = variable.data
        if "time" in data.dims:
            if variable.role == "target":
                overlap = np.intersect1d(data["time"].values, months.values)
                if overlap.size == 0:
                    raise recipe_error(variable.path, "empty intersection: no month of this "
                                                      "target lies in the forcing period",
                                       variable.name)
                data = data.reindex(time=months)
            else:
                data = data.sel(time=months)
        if "lat" in data.dims:
            data = data.where(is_land)
            if variable.role == "forcing":
                complete = complete & data.notnull().all("time")
        dims = [dim for dim in ("time", "lat", "lon") if dim in data.dims]
        data = data.transpose(*dims).astype(np.float32)
        data = data.chunk(output_chunks(dims, options.chunk))
        variable_meta = variable_attrs(variable)
        if variable.categorical and "flag_values" not in variable_meta:  # marks it as classes
            variable_meta["flag_values"] = class_values(data).astype(np.int64)
        data_vars[variable.name] = data.assign_attrs(variable_meta)
    mask = (is_land & complete).astype(np.int8)
    mask = mask.broadcast_like(area).assign_attrs(
        units="1", long_name="1 where the cell is simulated: land with complete forcing")
    data_vars["mask"] = mask
    bounds = np.stack([months.values, (months + pd.offsets.MonthBegin(1)).values], axis=1)
    dataset = xr.Dataset(data_vars, coords={**grid.coords, "time": ("time", months.values),
                                            "time_bnds": (("time", "nv"), bounds)})
    dataset["time"].attrs = {"standard_name": "time", "axis": "T", "bounds": "time_bnds",
                             "long_name": "start of the month"}
    for name in ("cell_area", "land_fraction", "mask"):
        if name in dataset:
            dataset[name] = dataset[name].chunk(output_chunks(["lat", "lon"], options.chunk))
    dataset.attrs = {"title": "differland grid driver", "Conventions": "CF-1.8",
                     "crs": GRID_CRS, "grid_resolution_degree": options.resolution, **attrs}
    return dataset


def encoding(dataset: xr.Dataset, netcdf: bool) -> dict[str, dict]:
    """Per-variable storage encoding: chunk sizes, compression, the time units."""
    out: dict[str, dict] = {}
    for name, variable in dataset.variables.items():
        if name in ("time", "time_bnds"):
            out[str(name)] = dict(TIME_ENCODING)
            continue
        if variable.chunks is None:
            continue
        chunks = tuple(max(sizes) for sizes in variable.chunks)
        if netcdf:
            out[str(name)] = {"zlib": True, "complevel": 4, "chunksizes": chunks}
        else:
            out[str(name)] = {"chunks": chunks}
    return out


def write_grid(dataset: xr.Dataset, path: Path) -> None:
    """Write Zarr (``.zarr``) or NetCDF (any other suffix), atomically, then check forcing ranges.

    Raises:
        RecipeError: a forcing variable lies outside its plausible range (wrong units?).
    """
    netcdf = path.suffix.lower() != ".zarr"

    def write(target: Path) -> None:
        if netcdf:
            dataset.to_netcdf(target, engine="netcdf4", encoding=encoding(dataset, True))
            opened = xr.open_dataset(target, chunks={})
        else:
            dataset.to_zarr(target, mode="w", encoding=encoding(dataset, False),
                            consolidated=True, zarr_format=ZARR_FORMAT)
            opened = xr.open_zarr(target, consolidated=True)
        with opened:
            check_forcing_ranges(opened, path)

    replace_atomically(path, write, RECIPE)


def check_forcing_ranges(dataset: xr.Dataset, path: Path) -> None:
    """Every forcing variable lies in its plausible range (computed from the written output).

    Raises:
        RecipeError: naming the variable, its range and the plausible one.
    """
    names = [name for name in GRID_FORCING if name in dataset]
    ranges = dask.compute(*[(dataset[name].min(), dataset[name].max()) for name in names])
    for name, (low, high) in zip(names, ranges, strict=True):
        spec = FORCING_VARIABLES[name]
        low, high = float(low), float(high)
        if math.isnan(low):
            raise recipe_error(path, "no valid value in the grid (all masked?)", name)
        if low < spec.lower or high > spec.upper:
            raise recipe_error(path, f"values span [{low:.4g}, {high:.4g}] {spec.units}, "
                                     f"outside the plausible range [{spec.lower:g}, "
                                     f"{spec.upper:g}] (wrong units attribute?)", name)


def prepare(paths: Sequence[Path], role: str, options: GridOptions) -> list[SourceVariable]:
    """Open, check, convert and aggregate in time the variables of ``paths``."""
    declared = dict(options.units)
    out = []
    for path in paths:
        for variable in open_inputs(path, role, options):
            check_role(variable)
            variable = to_canonical_units(variable, declared)
            variable = to_monthly(variable)
            variable = warp_to_geographic(variable)
            out.append(variable.with_data(normalise_lat_lon(variable.data)))
    return out


def build_grid_driver(forcing: Sequence[Path], predictors: Sequence[Path],
                      targets: Sequence[Path], out: Path, options: GridOptions,
                      land_mask: Path | None = None, mapping: Path | None = None) -> xr.Dataset:
    """Build and write the grid driver.

    The caller checks beforehand that ``out`` may be written (:func:`recipe_common.check_output`).

    Args:
        forcing: files of forcing variables (canonical names after renaming).
        predictors: files of static predictor maps.
        targets: files of observation targets.
        out: output ``.zarr`` folder or NetCDF file.
        options: grid options.
        land_mask: optional 0/1 or fractional land raster.
        mapping: the JSON name mapping the options came from (for provenance).

    Returns:
        The (lazy) dataset written.

    Raises:
        RecipeError: malformed input.
    """
    variables = (prepare(forcing, "forcing", options) + prepare(predictors, "predictor", options)
                 + prepare(targets, "target", options))
    names = [variable.name for variable in variables]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise recipe_error("inputs", f"variable(s) {', '.join(duplicates)} given more than "
                                     "once (rename one with --rename)")
    mask_variable = None
    if land_mask is not None:
        masks = prepare([land_mask], "land_mask", options)
        mask_variable = masks[0]
    spatial = [variable for variable in variables if "lat" in variable.data.dims
               and variable.role in ("forcing", "predictor")]
    if not spatial:
        raise recipe_error("inputs", "no gridded forcing or predictor to define the grid")
    domain = grid_domain([extent(variable.data) for variable in spatial], options.resolution,
                         options.bbox)
    grid = target_grid(domain, options.resolution)
    months = common_months([v for v in variables if v.role == "forcing"],
                           month(options.start, "--start"), month(options.end, "--end"))
    regridded = [regrid(variable, grid) for variable in variables]
    land = None if mask_variable is None else land_fraction(mask_variable, grid)
    inputs = {"forcing": forcing, "predictors": predictors, "targets": targets,
              "land_mask": land_mask, "mapping": mapping}
    option_record = {**options.__dict__, "rename": dict(options.rename),
                     "units": dict(options.units), "domain": domain}
    attrs = provenance_attrs(RECIPE, inputs, option_record, LIBRARIES)
    dataset = assemble(regridded, grid, months, land, options, attrs)
    write_grid(dataset, out)
    return dataset


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = RecipeParser(
        prog="grid.py",
        description="Regrid NetCDF/GeoTIFF forcing, predictors and targets to one regular "
                    "latitude/longitude grid with monthly steps and write a differland grid "
                    "driver (Zarr or NetCDF by the --out suffix).")
    parser.add_argument("--forcing", type=Path, nargs="+", required=True, metavar="FILE",
                        help=f"forcing files; variables named (after --rename) "
                             f"{', '.join(GRID_FORCING)}")
    parser.add_argument("--predictors", type=Path, nargs="+", default=[], metavar="FILE",
                        help="static predictor maps")
    parser.add_argument("--targets", type=Path, nargs="+", default=[], metavar="FILE",
                        help="observation targets (gaps allowed)")
    parser.add_argument("--grid", type=float, required=True, metavar="DEGREES",
                        help="grid resolution [degree], e.g. 0.5")
    parser.add_argument("--out", type=Path, required=True,
                        help="output: NAME.zarr (Zarr store) or NAME.nc (NetCDF-4)")
    add_overwrite_option(parser)
    parser.add_argument("--land-mask", type=Path, metavar="FILE",
                        help="0/1 or fractional land raster (NetCDF or GeoTIFF)")
    parser.add_argument("--min-land-fraction", type=float, default=DEFAULT_MIN_LAND_FRACTION,
                        help="cells with less land are masked (default "
                             f"{DEFAULT_MIN_LAND_FRACTION})")
    parser.add_argument("--start", metavar="YYYY-MM", help="first month")
    parser.add_argument("--end", metavar="YYYY-MM", help="last month")
    parser.add_argument("--bbox", type=float, nargs=4, metavar=("WEST", "SOUTH", "EAST", "NORTH"),
                        help="domain [degree] (default: intersection of forcing and predictors)")
    parser.add_argument("--rename", type=key_value, action="append", default=[],
                        metavar="SRC=DST", help="rename a source variable (GeoTIFF: file stem)")
    parser.add_argument("--mapping", type=Path, metavar="JSON",
                        help='JSON object of renames, {"SRC": "DST", ...}')
    parser.add_argument("--units", type=key_value, action="append", default=[],
                        metavar="NAME=UNITS",
                        help="declare (or override) the units of a source variable")
    parser.add_argument("--categorical", action="append", default=[], metavar="NAME",
                        help="regrid NAME by class (also: variables with flag_values)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_SPACE_CHUNK,
                        help=f"lat/lon cells per output chunk (default {DEFAULT_SPACE_CHUNK})")
    return parser


def read_mapping(path: Path | None) -> dict[str, str]:
    """The renames of a ``--mapping`` JSON file.

    Raises:
        RecipeError: unreadable file or not an object of strings.
    """
    if path is None:
        return {}
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise recipe_error(path, f"cannot read as JSON ({error})") from error
    if not isinstance(mapping, dict) or not all(isinstance(key, str) and isinstance(value, str)
                                                for key, value in mapping.items()):
        raise recipe_error(path, 'expected a JSON object {"SRC": "DST", ...} of strings')
    return mapping


def options_from_arguments(arguments: argparse.Namespace) -> GridOptions:
    """Validated options from parsed arguments.

    Raises:
        RecipeError: a non-positive resolution or chunk, or a bad land fraction or bbox.
    """
    if not 0.0 < arguments.grid <= 90.0:
        raise recipe_error("--grid", f"resolution {arguments.grid:g} is not in (0, 90] degrees")
    if arguments.chunk < 1:
        raise recipe_error("--chunk", "must be >= 1")
    if not 0.0 <= arguments.min_land_fraction <= 1.0:
        raise recipe_error("--min-land-fraction", "must be in [0, 1]")
    if arguments.bbox is not None:
        west, south, east, north = arguments.bbox
        if not (west < east and south < north and -90 <= south and north <= 90):
            raise recipe_error("--bbox", f"{arguments.bbox} is not WEST SOUTH EAST NORTH")
    rename = {**read_mapping(arguments.mapping), **dict(arguments.rename)}
    return GridOptions(arguments.grid, tuple(arguments.bbox) if arguments.bbox else None,
                       arguments.start, arguments.end, tuple(rename.items()),
                       tuple(arguments.units), tuple(arguments.categorical),
                       arguments.min_land_fraction, arguments.chunk)


def run(arguments: argparse.Namespace) -> None:
    """Run the recipe on parsed arguments; the output is checked before any input is read."""
    options = options_from_arguments(arguments)
    inputs = {"forcing": arguments.forcing, "predictors": arguments.predictors,
              "targets": arguments.targets, "land_mask": arguments.land_mask,
              "mapping": arguments.mapping}
    check_output(arguments.out, RECIPE, inputs, arguments.overwrite)
    build_grid_driver(arguments.forcing, arguments.predictors, arguments.targets,
                      arguments.out, options, arguments.land_mask, arguments.mapping)
    print(f"grid.py: wrote {arguments.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for malformed input)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
