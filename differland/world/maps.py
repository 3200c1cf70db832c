"""Real static maps for the twin world: land cover, land fraction, climate group and elevation.

The maps ship with differland as ``differland/data/world_maps.nc`` (global, 0.5 degree cells),
made by ``data_recipes/world_maps.py`` from MODIS MCD12C1 2019 land cover, the Köppen-Geiger
main climate groups of Beck et al. (2018) and the elevation map of pvlib; sources, licences and
citations are in ``differland/data/WORLD_MAPS_LICENSE.md``. :func:`load_world_maps` reads them,
coarsened to a multiple of 0.5 degree and cropped to a region if asked.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from importlib import resources

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

MAPS_FILE = "world_maps.nc"
"""File name of the shipped maps in ``differland/data``."""
BASE_RESOLUTION = 0.5
"""Cell width of the shipped maps [degree]."""
EARTH_RADIUS = 6371007.181
"""Radius of the sphere with the area of the WGS 84 ellipsoid (authalic radius) [m]."""

IGBP_CLASSES: dict[int, str] = {
    1: "ENF", 2: "EBF", 3: "DNF", 4: "DBF", 5: "MF", 6: "CSH", 7: "OSH", 8: "WSA", 9: "SAV",
    10: "GRA", 11: "WET", 12: "CRO", 13: "URB", 14: "CVM", 15: "SNO", 16: "BSV",
}
"""IGBP land-cover code of ``igbp`` -> abbreviation (0: no land)."""
KOPPEN_CLASSES: dict[int, str] = {1: "A", 2: "B", 3: "C", 4: "D", 5: "E"}
"""Köppen-Geiger code of ``koppen`` -> main group letter (A tropical, B arid, C temperate,
D cold, E polar; 0: none). The source map holds the main groups only, so the code is the group."""

_RESOLUTION_TOLERANCE = 1e-9


class WorldMapsError(ValueError):
    """A bad argument of :func:`load_world_maps` or :func:`koppen_group`; the message is one line
    naming the option and the problem."""


# --- the shipped file -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _shipped_maps() -> xr.Dataset:
    """The shipped maps, decoded (``elevation`` float32 with NaN where missing), in memory."""
    resource = resources.files("differland") / "data" / MAPS_FILE
    if not resource.is_file():
        raise FileNotFoundError(f"differland/data/{MAPS_FILE}: the static maps are not "
                                "installed (make them with data_recipes/world_maps.py)")
    with resources.as_file(resource) as path, xr.open_dataset(path, engine="netcdf4") as maps:
        return maps.load()


# --- arguments ------------------------------------------------------------------------------------


def _block_factor(resolution: float) -> int:
    """0.5 degree cells along one side of a cell of ``resolution`` degrees.

    Raises:
        WorldMapsError: ``resolution`` is not a positive multiple of 0.5 that divides 180.
    """
    problem = (f"--resolution: {resolution!r} is not a positive multiple of {BASE_RESOLUTION} "
               "degree that divides 180 (e.g. 0.5, 1, 2, 2.5, 5)")
    if isinstance(resolution, bool) or not isinstance(resolution, int | float | np.number):
        raise WorldMapsError(problem)
    value = float(resolution)
    if not math.isfinite(value) or value <= 0:
        raise WorldMapsError(problem)
    factor = round(value / BASE_RESOLUTION)
    if factor < 1 or abs(value / BASE_RESOLUTION - factor) > _RESOLUTION_TOLERANCE:
        raise WorldMapsError(problem)
    if round(180.0 / BASE_RESOLUTION) % factor:
        raise WorldMapsError(problem)
    return factor


def _check_region(region: Sequence[float]) -> tuple[float, float, float, float]:
    """The region as four floats ``(lon0, lon1, lat0, lat1)``.

    Raises:
        WorldMapsError: not four finite numbers, bounds not increasing, or outside the globe.
    """
    try:
        values = tuple(float(value) for value in region)
    except (TypeError, ValueError):
        raise WorldMapsError(f"--region: expected four numbers (lon0, lon1, lat0, lat1), got "
                             f"{region!r}") from None
    if len(values) != 4 or not all(math.isfinite(value) for value in values):
        raise WorldMapsError(f"--region: expected four finite numbers (lon0, lon1, lat0, lat1), "
                             f"got {region!r}")
    lon0, lon1, lat0, lat1 = values
    if not lon0 < lon1:
        raise WorldMapsError(f"--region: lon0 {lon0:g} is not less than lon1 {lon1:g}")
    if not lat0 < lat1:
        raise WorldMapsError(f"--region: lat0 {lat0:g} is not less than lat1 {lat1:g}")
    if lon0 < -180.0 or lon1 > 180.0:
        raise WorldMapsError(f"--region: longitudes {lon0:g}..{lon1:g} leave -180..180")
    if lat0 < -90.0 or lat1 > 90.0:
        raise WorldMapsError(f"--region: latitudes {lat0:g}..{lat1:g} leave -90..90")
    return values


# --- coarsening -----------------------------------------------------------------------------------


def _band_areas(lat_edges: np.ndarray, width: float) -> np.ndarray:
    """Area of one cell of each latitude band on the authalic sphere [m2] (float64)."""
    sines = np.sin(np.deg2rad(lat_edges))
    return EARTH_RADIUS**2 * math.radians(width) * (sines[1:] - sines[:-1])


def _block_sum(values: np.ndarray, factor: int) -> np.ndarray:
    """Sum over blocks of ``factor`` x ``factor`` cells of a ``(lat, lon)`` array."""
    n_lat, n_lon = values.shape[0] // factor, values.shape[1] // factor
    return values.reshape(n_lat, factor, n_lon, factor).sum(axis=(1, 3))


def _weighted_majority(codes: np.ndarray, weights: np.ndarray, classes: Sequence[int],
                       factor: int) -> np.ndarray:
    """Per block, the class with the largest summed weight (ties: lower code; 0: no weight)."""
    totals = np.stack([_block_sum(np.where(codes == code, weights, 0.0), factor)
                       for code in classes])
    winner = np.asarray(classes, np.uint8)[np.argmax(totals, axis=0)]
    return np.where(totals.sum(axis=0) > 0, winner, np.uint8(0)).astype(np.uint8)


def _coarsen(maps: xr.Dataset, factor: int, resolution: float) -> xr.Dataset:
    """Block-reduce the 0.5 degree maps by ``factor`` (see :func:`load_world_maps`)."""
    lat_edges = -90.0 + BASE_RESOLUTION * np.arange(maps.sizes["lat"] + 1)
    area = np.broadcast_to(_band_areas(lat_edges, BASE_RESOLUTION)[:, None],
                           (maps.sizes["lat"], maps.sizes["lon"]))
    fraction = maps["land_fraction"].to_numpy().astype(np.float64)
    land = fraction * area
    elevation = maps["elevation"].to_numpy().astype(np.float64)
    has_elevation = np.isfinite(elevation)
    elevation = np.where(has_elevation, elevation, 0.0)

    igbp = _weighted_majority(maps["igbp"].to_numpy(), land, list(IGBP_CLASSES), factor)
    koppen = _weighted_majority(maps["koppen"].to_numpy(), land, list(KOPPEN_CLASSES), factor)
    land_fraction = _block_sum(land, factor) / _block_sum(area, factor)
    land_weight = _block_sum(land * has_elevation, factor)
    area_weight = _block_sum(area * has_elevation, factor)
    by_land = _block_sum(land * elevation, factor) / np.where(land_weight > 0, land_weight, 1.0)
    by_area = _block_sum(area * elevation, factor) / np.where(area_weight > 0, area_weight, 1.0)
    mean_elevation = np.where(land_weight > 0, by_land,
                              np.where(area_weight > 0, by_area, np.nan))

    lat = -90.0 + resolution * (np.arange(maps.sizes["lat"] // factor) + 0.5)
    lon = -180.0 + resolution * (np.arange(maps.sizes["lon"] // factor) + 0.5)
    dims = ("lat", "lon")
    return xr.Dataset(
        {"igbp": (dims, igbp, maps["igbp"].attrs),
         "koppen": (dims, koppen, maps["koppen"].attrs),
         "elevation": (dims, mean_elevation.astype(np.float32), maps["elevation"].attrs),
         "land_fraction": (dims, land_fraction.astype(np.float32),
                           maps["land_fraction"].attrs)},
        coords={"lat": ("lat", lat, maps["lat"].attrs), "lon": ("lon", lon, maps["lon"].attrs)},
        attrs=maps.attrs)


def _with_cell_area(maps: xr.Dataset, resolution: float) -> xr.Dataset:
    """Add ``cell_area`` [m2] of the cells (centres ``lat``, width ``resolution``)."""
    lat = maps["lat"].to_numpy()
    edges = np.concatenate([lat - resolution / 2, lat[-1:] + resolution / 2])
    bands = _band_areas(edges, resolution)
    area = np.broadcast_to(bands[:, None], (lat.size, maps.sizes["lon"])).astype(np.float32)
    maps["cell_area"] = (("lat", "lon"), area, {
        "long_name": "cell area on the authalic sphere (R = 6371007.181 m)",
        "standard_name": "cell_area", "units": "m2"})
    return maps


# --- public ---------------------------------------------------------------------------------------


def load_world_maps(resolution: float = 0.5,
                    region: tuple[float, float, float, float] | None = None) -> xr.Dataset:
    """Static maps on a regular grid of ``resolution`` degrees, optionally cropped to a region.

    Coarser cells gather ``k x k`` cells of the shipped 0.5 degree maps (``k = resolution /
    0.5``); each 0.5 degree cell weighs by its land area, ``land_fraction * area``:

    - ``igbp``, ``koppen``: the class with the largest summed land area (ties: lower code);
      0 where the cell has no land (``koppen`` also where its land has no group).
    - ``elevation``: land-area-weighted mean of the cells with elevation; where no land cell
      has one, the area-weighted mean of the cells with elevation; NaN where none has.
    - ``land_fraction``: area-weighted mean.

    At 0.5 degree these rules return the shipped values.

    Args:
        resolution: cell width [degree], a positive multiple of 0.5 that divides 180.
        region: ``(lon0, lon1, lat0, lat1)`` [degree]: keep the cells whose centres lie inside
            (bounds included); ``lon0 < lon1`` within -180..180, ``lat0 < lat1`` within -90..90.
            ``None``: the globe.

    Returns:
        Dataset with coordinates ``lat``, ``lon`` (cell centres, increasing) and the ``(lat,
        lon)`` variables ``igbp`` (uint8, see :data:`IGBP_CLASSES`), ``koppen`` (uint8, see
        :data:`KOPPEN_CLASSES`), ``elevation`` (float32, m), ``land_fraction`` (float32, 1) and
        ``cell_area`` (float32, m2: ``R^2 dlambda (sin phi1 - sin phi0)`` with R = 6371007.181
        m); the attributes are those of the shipped file (provenance, sources, licences) and
        ``grid_resolution_degrees``.

    Raises:
        WorldMapsError: a bad resolution or region, or a region with no cell centre inside.
        FileNotFoundError: the maps are not installed.
    """
    factor = _block_factor(resolution)
    bounds = None if region is None else _check_region(region)
    step = BASE_RESOLUTION * factor
    maps = _shipped_maps()
    maps = maps.copy(deep=True) if factor == 1 else _coarsen(maps, factor, step)
    if bounds is not None:
        lon0, lon1, lat0, lat1 = bounds
        lat, lon = maps["lat"].to_numpy(), maps["lon"].to_numpy()
        keep_lat = (lat >= lat0) & (lat <= lat1)
        keep_lon = (lon >= lon0) & (lon <= lon1)
        if not keep_lat.any() or not keep_lon.any():
            raise WorldMapsError(f"--region: no cell centre of the {step:g} degree grid lies "
                                 f"inside lon {lon0:g}..{lon1:g}, lat {lat0:g}..{lat1:g}")
        maps = maps.isel(lat=np.flatnonzero(keep_lat), lon=np.flatnonzero(keep_lon))
    maps = _with_cell_area(maps, step)
    maps.attrs["grid_resolution_degrees"] = step
    return maps


def koppen_group(codes: ArrayLike) -> np.ndarray:
    """Main Köppen-Geiger group of ``koppen`` codes: 1 A tropical, 2 B arid, 3 C temperate,
    4 D cold, 5 E polar, 0 none.

    The shipped map holds the main groups only, so each code is its own group; this function
    checks the codes and returns them as uint8.

    Raises:
        WorldMapsError: a code that is not a whole number in 0..5.
    """
    values = np.asarray(codes)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise WorldMapsError(f"codes: expected Köppen-Geiger codes 0-5, got dtype {values.dtype}")
    as_float = values.astype(np.float64)
    bad = ~np.isin(as_float, np.arange(len(KOPPEN_CLASSES) + 1))
    if bad.any():
        raise WorldMapsError(f"codes: {as_float[bad].flat[0]:g} is not a Köppen-Geiger code "
                             f"(0-{len(KOPPEN_CLASSES)})")
    return as_float.astype(np.uint8)
