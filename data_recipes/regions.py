"""Match flux towers to grid cells, and turn region polygons into fractional grid masks.

    python data_recipes/regions.py sites --sites sites.csv --land-cover igbp.tif \\
        (--grid grid.zarr | --resolution 0.5) --out matched.csv [--min-fraction 0.25] \\
        [--overwrite]
    python data_recipes/regions.py masks --regions regions.gpkg [--layer L] [--name-field F] \\
        (--grid grid.zarr | --resolution 0.5 [--bbox W S E N]) --out masks.nc [--overwrite]

``sites`` keeps a tower when the IGBP class of the tower covers more than ``--min-fraction`` of
the area of its grid cell in a finer land-cover raster (MODIS IGBP codes 1-16), as in the
published DifferLand global model. ``masks`` writes, for each polygon, the fraction of each grid
cell's area that lies inside it: multiplied by ``cell_area`` it is the pixel weight of
:func:`differland.observations.spatial_mean`. ``docs/drivers.md`` describes both outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray
import shapely
import xarray as xr
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioError
from recipe_common import (
    GRID_CRS,
    RecipeParser,
    add_overwrite_option,
    cell_area,
    cell_edges,
    check_output,
    provenance_attrs,
    recipe_error,
    regular_centres,
    replace_atomically,
    run_main,
    snap_to_grid,
)
from rioxarray.exceptions import NoDataInBounds, OneDimensionalRaster

from differland.io import write_dataset

RECIPE = "regions"
LIBRARIES = ("geopandas", "shapely", "pyproj", "pyogrio", "rioxarray", "rasterio", "zarr")
"""Distributions whose versions the provenance record lists."""

IGBP_CODES: dict[str, int] = {
    "ENF": 1, "EBF": 2, "DNF": 3, "DBF": 4, "MF": 5, "CSH": 6, "OSH": 7, "WSA": 8, "SAV": 9,
    "GRA": 10, "WET": 11, "CRO": 12, "URB": 13, "CVM": 14, "SNO": 15, "BSV": 16,
}
"""IGBP class abbreviation (FLUXNET site tables) -> code of the MODIS MCD12 IGBP layer."""
DEFAULT_MIN_FRACTION = 0.25
"""A tower is kept when its class covers more than this fraction of its cell [1]."""
SITE_COLUMNS = ("SITE_ID", "LAT", "LON", "IGBP")
JSON_ATTRIBUTES = frozenset({"recipe_inputs", "recipe_options", "library_versions"})
"""Provenance attributes holding JSON text (nested as objects in a JSON record)."""
NAME_FIELDS = ("name", "region", "region_name", "id")
"""Attribute columns tried, case-insensitively, for region names."""
SEGMENT_FRACTION = 0.25
"""Polygon edges are split into pieces of at most this fraction of a cell before projecting."""


@dataclass(frozen=True)
class Grid:
    """A latitude/longitude grid of cells.

    Attributes:
        lat: cell-centre latitudes [degrees_north], in the order of the grid file.
        lon: cell-centre longitudes [degrees_east], in the order of the grid file.
        source: where the grid came from (a file or ``"--resolution"``).
    """

    lat: np.ndarray
    lon: np.ndarray
    source: str

    @property
    def lat_edges(self) -> np.ndarray:
        """Cell edges along latitude, in the order of ``lat``."""
        return np.clip(cell_edges(self.lat), -90.0, 90.0)

    @property
    def lon_edges(self) -> np.ndarray:
        """Cell edges along longitude, in the order of ``lon``."""
        return cell_edges(self.lon)


# --- grids ------------------------------------------------------------------------------------


def regular_grid(resolution: float, bbox: Sequence[float] | None = None) -> Grid:
    """A grid of ``resolution``-degree cells with edges on multiples of the resolution.

    Args:
        resolution: cell size [degree].
        bbox: (west, south, east, north) [degree], grown to whole cells; default global.
    """
    west, south, east, north = bbox if bbox is not None else (-180.0, -90.0, 180.0, 90.0)
    lat = regular_centres(max(snap_to_grid(south, resolution, down=True), -90.0),
                          min(snap_to_grid(north, resolution, down=False), 90.0), resolution)
    lon = regular_centres(snap_to_grid(west, resolution, down=True),
                          snap_to_grid(east, resolution, down=False), resolution)
    return Grid(lat, lon, "--resolution")


def read_grid(path: Path) -> Grid:
    """The lat/lon grid of a grid driver (Zarr folder or NetCDF file).

    Raises:
        RecipeError: unreadable, no 1-D lat/lon coordinates, or a CRS other than EPSG:4326.
    """
    if not path.exists():
        raise recipe_error(path, "file does not exist")
    try:
        dataset = (xr.open_zarr(path, consolidated=None) if path.is_dir()
                   else xr.open_dataset(path, chunks={}))
    except (OSError, ValueError, KeyError) as error:
        raise recipe_error(path, f"cannot read as a grid driver ({type(error).__name__})"
                           ) from error
    with dataset:
        names = {str(name).lower(): str(name) for name in dataset.coords}
        lat = next((names[n] for n in ("lat", "latitude") if n in names), None)
        lon = next((names[n] for n in ("lon", "longitude") if n in names), None)
        if lat is None or lon is None or dataset[lat].ndim != 1 or dataset[lon].ndim != 1:
            raise recipe_error(path, "no 1-D lat/lon coordinates (a regular latitude/longitude "
                                     "grid driver is expected)")
        declared = dataset.attrs.get("crs")
        if declared is not None and not _is_wgs84(str(declared)):
            raise recipe_error(path, f"CRS mismatch: the grid declares {declared}, expected "
                                     f"{GRID_CRS} (latitude/longitude)")
        return Grid(np.asarray(dataset[lat].values, np.float64),
                    np.asarray(dataset[lon].values, np.float64), str(path))


def _is_wgs84(text: str) -> bool:
    try:
        return CRS.from_user_input(text).equals(CRS.from_user_input(GRID_CRS),
                                                ignore_axis_order=True)
    except CRSError:
        return False


def grid_from_arguments(arguments: argparse.Namespace) -> Grid:
    """The grid of ``--grid FILE`` or ``--resolution DEG [--bbox ...]``."""
    if arguments.grid is not None:
        return read_grid(arguments.grid)
    if not 0.0 < arguments.resolution <= 90.0:
        raise recipe_error("--resolution", f"{arguments.resolution:g} is not in (0, 90]")
    bbox = getattr(arguments, "bbox", None)
    if bbox is not None and not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise recipe_error("--bbox", f"{bbox} is not WEST SOUTH EAST NORTH")
    return regular_grid(arguments.resolution, bbox)


def cell_index(value: float, edges: np.ndarray) -> int | None:
    """Index of the cell (edges in either order) containing ``value``, or ``None``."""
    ascending = edges[-1] > edges[0]
    ordered = edges if ascending else edges[::-1]
    position = int(np.searchsorted(ordered, value, side="right")) - 1
    if value == ordered[-1]:
        position = ordered.size - 2
    if not 0 <= position < ordered.size - 1:
        return None
    return position if ascending else ordered.size - 2 - position


def wrap_longitude(lon: float, west: float) -> float:
    """``lon`` shifted by a multiple of 360 into ``[west, west + 360)``."""
    return west + (lon - west) % 360.0


# --- sites ------------------------------------------------------------------------------------


def read_sites(path: Path) -> pd.DataFrame:
    """The tower table: SITE_ID, LAT, LON, IGBP (case-insensitive column names).

    Raises:
        RecipeError: unreadable file, missing column, bad coordinates or an unknown class.
    """
    if not path.is_file():
        raise recipe_error(path, "file does not exist")
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    columns = {str(name).strip().upper(): name for name in table.columns}
    for column in SITE_COLUMNS:
        if column not in columns:
            raise recipe_error(path, "missing column", column)
    sites = pd.DataFrame({column: table[columns[column]].str.strip() for column in SITE_COLUMNS})
    for column, limit in (("LAT", 90.0), ("LON", 360.0)):
        values = pd.to_numeric(sites[column], errors="coerce")
        bad = values.isna() | (values.abs() > limit)
        if bad.any():
            raise recipe_error(path, f"invalid coordinate {sites[column][bad].iloc[0]!r} "
                                     f"(site {sites.SITE_ID[bad].iloc[0]})", column)
        sites[column] = values
    sites["igbp_code"] = [igbp_code(text, path) for text in sites.IGBP]
    return sites


def igbp_code(text: str, source: Path) -> int:
    """The MODIS IGBP code of a class abbreviation (``DBF``) or of a numeric code (``4``)."""
    if text.upper() in IGBP_CODES:
        return IGBP_CODES[text.upper()]
    if text.isdigit():
        return int(text)
    raise recipe_error(source, f"unknown IGBP class {text!r} (expected one of "
                               f"{', '.join(IGBP_CODES)} or a numeric code)", "IGBP")


def open_land_cover(path: Path) -> xr.DataArray:
    """A land-cover raster (GeoTIFF or NetCDF readable by rasterio), lazily, nodata as NaN.

    Raises:
        RecipeError: unreadable, several bands, or no CRS.
    """
    if not path.exists():
        raise recipe_error(path, "file does not exist")
    try:
        raster = rioxarray.open_rasterio(path, chunks={"band": 1, "y": 2048, "x": 2048},
                                         masked=True)
    except (RasterioError, OSError, ValueError) as error:
        raise recipe_error(path, f"cannot read as a raster ({type(error).__name__})") from error
    if isinstance(raster, list | xr.Dataset) or raster.sizes.get("band", 1) != 1:
        raise recipe_error(path, "expected a single-band land-cover raster")
    if raster.rio.crs is None:
        raise recipe_error(path, "missing CRS: the land-cover raster has no coordinate "
                                 "reference system")
    return raster.isel(band=0, drop=True)


def class_fraction(raster: xr.DataArray, code: int, bounds: tuple[float, float, float, float]
                   ) -> float:
    """Area fraction of the valid pixels of a cell that belong to class ``code``.

    Pixels count when their centre lies in the cell; in a geographic raster each pixel weighs
    by the cosine of its latitude (its relative area), in a projected raster equally.

    Args:
        raster: single-band land cover with a CRS (nodata as NaN).
        code: class code.
        bounds: cell (west, south, east, north) [degree].

    Returns:
        The fraction in [0, 1], or NaN when the cell holds no valid pixel.
    """
    west, south, east, north = bounds
    crs = CRS.from_user_input(raster.rio.crs.to_wkt())
    try:
        window = raster.rio.clip_box(west, south, east, north, crs=GRID_CRS,
                                     allow_one_dimensional_raster=True)
    except (NoDataInBounds, OneDimensionalRaster):
        return float("nan")
    x, y = np.meshgrid(window["x"].values, window["y"].values)
    if crs.is_geographic:
        lon, lat = x, y
    else:
        transformer = Transformer.from_crs(crs, GRID_CRS, always_xy=True)
        lon, lat = transformer.transform(x, y)
    values = np.asarray(window.values, dtype=np.float64)
    inside = (lon >= west) & (lon < east) & (lat >= south) & (lat < north) & np.isfinite(values)
    weights = np.where(inside, np.cos(np.deg2rad(lat)) if crs.is_geographic else 1.0, 0.0)
    total = weights.sum()
    return float((weights * (values == code)).sum() / total) if total > 0 else float("nan")


def match_sites(sites: pd.DataFrame, grid: Grid, raster: xr.DataArray, min_fraction: float
                ) -> tuple[pd.DataFrame, list[str]]:
    """Grid cell and class fraction of each tower; keep towers above ``min_fraction``.

    Returns:
        ``(kept rows with lat_index, lon_index, cell_lat, cell_lon, class_fraction, notes on
        the dropped towers)``.

    Raises:
        RecipeError: no tower lies on the grid, or no tower cell overlaps the raster.
    """
    lat_edges, lon_edges = grid.lat_edges, grid.lon_edges
    west = float(min(lon_edges[0], lon_edges[-1]))
    rows, notes, on_grid, covered = [], [], 0, 0
    for site in sites.itertuples(index=False):
        i = cell_index(site.LAT, lat_edges)
        j = cell_index(wrap_longitude(site.LON, west), lon_edges)
        if i is None or j is None:
            notes.append(f"{site.SITE_ID}: outside the grid")
            continue
        on_grid += 1
        lon_pair = sorted(lon_edges[j:j + 2])
        offset = site.LON - wrap_longitude(site.LON, west)
        bounds = (lon_pair[0] + offset, float(min(lat_edges[i:i + 2])),
                  lon_pair[1] + offset, float(max(lat_edges[i:i + 2])))
        fraction = class_fraction(raster, site.igbp_code, bounds)
        if np.isnan(fraction):
            notes.append(f"{site.SITE_ID}: no land-cover pixel in its cell")
            continue
        covered += 1
        if not fraction > min_fraction:
            notes.append(f"{site.SITE_ID}: {site.IGBP} covers {fraction:.3f} of its cell "
                         f"(<= {min_fraction:g})")
            continue
        rows.append({"SITE_ID": site.SITE_ID, "LAT": site.LAT, "LON": site.LON,
                     "IGBP": site.IGBP, "igbp_code": site.igbp_code, "lat_index": i,
                     "lon_index": j, "cell_lat": float(grid.lat[i]),
                     "cell_lon": float(grid.lon[j]), "class_fraction": round(fraction, 6)})
    if on_grid == 0:
        raise recipe_error(grid.source, "empty intersection: no tower lies on the grid")
    if covered == 0:
        raise recipe_error("--land-cover", "empty intersection: the land-cover raster covers "
                                           "none of the towers' cells")
    columns = ["SITE_ID", "LAT", "LON", "IGBP", "igbp_code", "lat_index", "lon_index",
               "cell_lat", "cell_lon", "class_fraction"]
    return pd.DataFrame(rows, columns=columns), notes


def provenance_path(out: Path) -> Path:
    """The JSON provenance record written beside a CSV output (``matched.provenance.json``)."""
    return out.with_name(f"{out.stem}.provenance.json")


def write_sites_csv(path: Path, table: pd.DataFrame, provenance: dict[str, str]) -> None:
    """Write the matched towers as CSV and their provenance as JSON beside it, atomically.

    The provenance is kept out of the CSV so that the table stays a plain site table (usable,
    for instance, as ``--site-info`` of the FLUXNET recipe).
    """
    record = {key: json.loads(value) if key in JSON_ATTRIBUTES else value
              for key, value in provenance.items()}
    replace_atomically(provenance_path(path), lambda target: target.write_text(
        json.dumps(record, indent=2) + "\n", encoding="utf-8"), RECIPE)
    replace_atomically(path, lambda target: table.to_csv(target, index=False), RECIPE)


def run_sites(arguments: argparse.Namespace) -> None:
    """The ``sites`` subcommand; both outputs (CSV and JSON record) are checked first."""
    if not 0.0 <= arguments.min_fraction < 1.0:
        raise recipe_error("--min-fraction", "must be in [0, 1)")
    inputs = {"sites": arguments.sites, "land_cover": arguments.land_cover,
              "grid": arguments.grid}
    record = provenance_path(arguments.out)
    check_output(arguments.out, RECIPE, inputs, arguments.overwrite, evidence=record)
    check_output(record, RECIPE, inputs, arguments.overwrite,
                 option="the provenance record of --out")
    sites = read_sites(arguments.sites)
    grid = grid_from_arguments(arguments)
    raster = open_land_cover(arguments.land_cover)
    table, notes = match_sites(sites, grid, raster, arguments.min_fraction)
    for note in notes:
        print(f"regions.py sites: dropped {note}", file=sys.stderr)
    provenance = provenance_attrs(
        RECIPE, {"sites": arguments.sites, "land_cover": arguments.land_cover,
                 "grid": arguments.grid},
        {"subcommand": "sites", "min_fraction": arguments.min_fraction,
         "resolution": arguments.resolution}, LIBRARIES)
    write_sites_csv(arguments.out, table, provenance)
    print(f"regions.py sites: wrote {len(table)} of {len(sites)} tower(s) to {arguments.out}")


# --- region masks -----------------------------------------------------------------------------


def read_regions(path: Path, layer: str | None, name_field: str | None) -> gpd.GeoDataFrame:
    """Region polygons in EPSG:4326 with a unique ``region`` name column.

    Raises:
        RecipeError: unreadable file, no CRS, no polygons, or missing or repeated names.
    """
    if not path.exists():
        raise recipe_error(path, "file does not exist")
    try:
        regions = gpd.read_file(path, layer=layer)
    except (OSError, ValueError, RuntimeError) as error:
        raise recipe_error(path, f"cannot read as a vector file ({type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]})") from error
    if regions.empty:
        raise recipe_error(path, "no features")
    if regions.crs is None:
        raise recipe_error(path, "missing CRS: the vector file has no coordinate reference "
                                 "system (set one, e.g. with ogr2ogr -a_srs)")
    kinds = set(regions.geom_type.dropna())
    if not kinds or not kinds <= {"Polygon", "MultiPolygon"}:
        raise recipe_error(path, f"expected polygons, found {', '.join(sorted(kinds)) or 'none'}")
    regions = regions.to_crs(GRID_CRS)
    names = _region_names(regions, name_field, path)
    out = gpd.GeoDataFrame({"region": names}, geometry=shapely.make_valid(
        regions.geometry.values), crs=GRID_CRS)
    return out


def _region_names(regions: gpd.GeoDataFrame, name_field: str | None, path: Path) -> list[str]:
    columns = {str(column).lower(): column for column in regions.columns if column != "geometry"}
    if name_field is not None:
        if name_field not in regions.columns:
            raise recipe_error(path, "missing attribute column (--name-field)", name_field)
        field = name_field
    else:
        field = next((columns[name] for name in NAME_FIELDS if name in columns), None)
    names = ([f"region_{index}" for index in range(len(regions))] if field is None
             else [str(value) for value in regions[field]])
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise recipe_error(path, f"repeated region name(s) {', '.join(repeated)}; choose a "
                                 "unique column with --name-field", field)
    return names


def to_equal_area(geometry, max_segment: float):
    """A lon/lat geometry in (longitude, sin(latitude)) coordinates: areas there are
    proportional to areas on the sphere (Lambert cylindrical equal-area).

    Args:
        geometry: shapely geometry in degrees.
        max_segment: longest edge kept before the transform [degree] (edges are densified so
            that straight lon/lat edges stay close to straight).
    """
    dense = shapely.segmentize(geometry, max_segment)
    return shapely.transform(dense, lambda xy: np.column_stack(
        [xy[:, 0], np.sin(np.deg2rad(np.clip(xy[:, 1], -90.0, 90.0)))]))


def region_fractions(geometry, grid: Grid) -> np.ndarray:
    """Fraction of the area of each grid cell inside ``geometry`` [1], shape (lat, lon)."""
    lat_edges, lon_edges = grid.lat_edges, grid.lon_edges
    south = np.sin(np.deg2rad(np.minimum(lat_edges[:-1], lat_edges[1:])))
    north = np.sin(np.deg2rad(np.maximum(lat_edges[:-1], lat_edges[1:])))
    lon_low = np.minimum(lon_edges[:-1], lon_edges[1:])
    lon_high = np.maximum(lon_edges[:-1], lon_edges[1:])
    # cells are shifted by whole turns to the longitude frame of the polygons, [-180, 180)
    shift = ((grid.lon + 180.0) % 360.0 - 180.0) - grid.lon
    west, east = lon_low + shift, lon_high + shift
    resolution = float(np.min(np.abs(np.diff(lat_edges)))) if lat_edges.size > 1 else 1.0
    shape = to_equal_area(geometry, resolution * SEGMENT_FRACTION)
    shapely.prepare(shape)
    min_x, min_y, max_x, max_y = shape.bounds
    rows = np.flatnonzero((north > min_y) & (south < max_y))
    columns = np.flatnonzero((east > min_x) & (west < max_x))
    fractions = np.zeros((grid.lat.size, grid.lon.size))
    if rows.size == 0 or columns.size == 0:
        return fractions
    row, column = np.meshgrid(rows, columns, indexing="ij")
    boxes = shapely.box(west[column], south[row], east[column], north[row])
    hit = shapely.intersects(shape, boxes)
    areas = shapely.area(shapely.intersection(boxes[hit], shape)) / shapely.area(boxes[hit])
    fractions[row[hit], column[hit]] = np.clip(areas, 0.0, 1.0)
    return fractions


def masks_dataset(regions: gpd.GeoDataFrame, grid: Grid, drop_empty: bool
                  ) -> tuple[xr.Dataset, list[str]]:
    """Per-region fractional masks on the grid.

    Returns:
        ``(dataset with region_mask (region, lat, lon), cell_area, region_area; names of the
        dropped regions)``.

    Raises:
        RecipeError: a region misses the grid (unless ``drop_empty``), or all do.
    """
    masks, names, dropped = [], [], []
    for name, geometry in zip(regions.region, regions.geometry, strict=True):
        fractions = region_fractions(geometry, grid)
        if not fractions.any():
            if not drop_empty:
                raise recipe_error(grid.source, f"empty intersection: region {name!r} does not "
                                                "overlap the grid (pass --drop-empty to skip "
                                                "it)")
            dropped.append(name)
            continue
        masks.append(fractions)
        names.append(name)
    if not masks:
        raise recipe_error(grid.source, "empty intersection: no region overlaps the grid")
    area = cell_area(grid.lat_edges, grid.lon_edges)
    stack = np.stack(masks)
    dataset = xr.Dataset(
        {
            "region_mask": (("region", "lat", "lon"), stack.astype(np.float32), {
                "units": "1", "long_name": "fraction of the cell area inside the region",
                "comment": "pixel weights for differland.observations.spatial_mean: "
                           "region_mask * cell_area"}),
            "cell_area": (("lat", "lon"), area, {
                "units": "m2", "long_name": "cell area (authalic sphere)"}),
            "region_area": (("region",), (stack * area).sum(axis=(1, 2)), {
                "units": "m2", "long_name": "area of the region on the grid"}),
        },
        coords={
            "region": ("region", np.array(names, dtype=object), {"long_name": "region name"}),
            "lat": ("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    return dataset, dropped


def run_masks(arguments: argparse.Namespace) -> None:
    """The ``masks`` subcommand; the output is checked before any input is read."""
    check_output(arguments.out, RECIPE, {"regions": arguments.regions, "grid": arguments.grid},
                 arguments.overwrite)
    regions = read_regions(arguments.regions, arguments.layer, arguments.name_field)
    grid = grid_from_arguments(arguments)
    dataset, dropped = masks_dataset(regions, grid, arguments.drop_empty)
    for name in dropped:
        print(f"regions.py masks: dropped region {name!r} (outside the grid)", file=sys.stderr)
    overlap = float(dataset.region_mask.sum("region").max())
    if overlap > 1.0 + 1e-6:
        print(f"regions.py masks: regions overlap (masks sum to {overlap:.3f} in a cell)",
              file=sys.stderr)
    dataset.attrs = {
        "title": "differland region masks", "Conventions": "CF-1.8", "crs": GRID_CRS,
        **provenance_attrs(RECIPE, {"regions": arguments.regions, "grid": arguments.grid},
                           {"subcommand": "masks", "layer": arguments.layer,
                            "name_field": arguments.name_field,
                            "resolution": arguments.resolution, "bbox": arguments.bbox,
                            "drop_empty": arguments.drop_empty}, LIBRARIES),
    }
    replace_atomically(arguments.out, lambda target: write_dataset(target, dataset), RECIPE)
    print(f"regions.py masks: wrote {dataset.sizes['region']} region mask(s) to "
          f"{arguments.out}")


# --- command line -----------------------------------------------------------------------------


def _grid_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--grid", type=Path, metavar="DRIVER",
                       help="grid driver (Zarr folder or NetCDF) whose lat/lon cells to use")
    group.add_argument("--resolution", type=float, metavar="DEGREES",
                       help="a regular grid of this cell size, edges on multiples of it")


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface (two subcommands)."""
    parser = RecipeParser(
        prog="regions.py",
        description="Match flux towers to grid cells (sites) or rasterise region polygons to "
                    "fractional masks on a grid (masks).")
    commands = parser.add_subparsers(dest="command", required=True)
    sites = commands.add_parser(
        "sites", help="match towers to grid cells, keeping well-represented ones",
        description="Keep a tower when its IGBP class covers more than --min-fraction of its "
                    "grid cell in a finer IGBP land-cover raster; write the kept towers with "
                    "their cell indices and class fraction as CSV.")
    sites.add_argument("--sites", type=Path, required=True,
                       help="CSV with SITE_ID, LAT, LON, IGBP")
    sites.add_argument("--land-cover", type=Path, required=True,
                       help="IGBP land-cover raster (MODIS codes 1-16), any CRS")
    _grid_options(sites)
    sites.add_argument("--min-fraction", type=float, default=DEFAULT_MIN_FRACTION,
                       help=f"keep towers whose class covers more than this fraction of the "
                            f"cell (default {DEFAULT_MIN_FRACTION})")
    sites.add_argument("--out", type=Path, required=True,
                       help="output CSV (its provenance goes to <stem>.provenance.json)")
    add_overwrite_option(sites)
    sites.set_defaults(run=run_sites)
    masks = commands.add_parser(
        "masks", help="fractional per-region masks on a grid",
        description="For each polygon, the fraction of each grid cell's area inside it "
                    "(NetCDF: region_mask(region, lat, lon), cell_area, region_area).")
    masks.add_argument("--regions", type=Path, required=True,
                       help="polygons in any vector format geopandas reads (GeoPackage, "
                            "shapefile, GeoJSON, ...), with a CRS")
    masks.add_argument("--layer", help="layer of a multi-layer file")
    masks.add_argument("--name-field", help="attribute column holding region names (default: "
                                            "name/region/id, else region_<n>)")
    _grid_options(masks)
    masks.add_argument("--bbox", type=float, nargs=4, metavar=("WEST", "SOUTH", "EAST", "NORTH"),
                       help="domain of a --resolution grid (default: global)")
    masks.add_argument("--drop-empty", action="store_true",
                       help="skip regions outside the grid instead of failing")
    masks.add_argument("--out", type=Path, required=True, help="output NetCDF")
    add_overwrite_option(masks)
    masks.set_defaults(run=run_masks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for malformed input)."""
    return run_main(build_parser(), lambda arguments: arguments.run(arguments), argv)


if __name__ == "__main__":
    raise SystemExit(main())
