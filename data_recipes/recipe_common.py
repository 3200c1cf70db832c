"""Plumbing shared by the data recipes: errors, units, provenance, atomic output.

The recipes (``fluxnet.py``, ``grid.py``, ``regions.py``) are scripts; this module sits next to
them and is imported by its plain name, which works both when a recipe runs as
``python data_recipes/<recipe>.py`` and when the tests put ``data_recipes`` on ``sys.path``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from os import PathLike
from pathlib import Path

import numpy as np

EXIT_ERROR = 2
"""Exit status of a recipe given malformed input (the same as an argparse usage error)."""

CORE_DISTRIBUTIONS: tuple[str, ...] = ("numpy", "pandas", "xarray", "netCDF4")
"""Libraries whose versions every provenance record lists."""

UNIT_ALIASES: dict[str, str] = {
    "deg c": "degC",
    "deg_c": "degC",
    "degc": "degC",
    "degrees c": "degC",
    "degrees_c": "degC",
    "degree_c": "degC",
    "degrees celsius": "degC",
    "celsius": "degC",
    "c": "degC",
    "ppmv": "ppm",
    "fraction": "1",
    "unitless": "1",
    "dimensionless": "1",
    "-": "1",
}
"""Unit spellings found in the wild that the CF unit registry misreads or does not know."""
WATER_DENSITY = 1000.0
"""Density of liquid water [kg m-3], for water mass per area <-> depth of water."""

_CARBON_MASS = re.compile(r"(?<![A-Za-z])([kmuμ]?g|Pg|Tg|Gg|Mg)C(?![A-Za-z])")
_HASH_BLOCK = 1 << 20


class RecipeError(ValueError):
    """Input a recipe cannot use; the message is one line naming the file and the problem."""


def recipe_error(source: str | PathLike, problem: str, variable: str | None = None
                 ) -> RecipeError:
    """Build a :class:`RecipeError` with the message ``"<source>: [<variable>: ]<problem>"``.

    Args:
        source: the offending file or option.
        problem: what is wrong, in a few words.
        variable: the column or variable concerned, if any.

    Returns:
        The exception (the caller raises it).
    """
    parts = [str(source)] + ([variable] if variable else []) + [problem]
    return RecipeError(" ".join(": ".join(parts).split()))


# --- command line ---------------------------------------------------------------------------------


def run_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], None],
             argv: Sequence[str] | None, handled: tuple[type[Exception], ...] = ()) -> int:
    """Parse ``argv``, run the recipe and turn input problems into a one-line error.

    Args:
        parser: the recipe's argument parser.
        run: the recipe body, given the parsed arguments.
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).
        handled: further exception types (besides :class:`RecipeError`) that signal bad input.

    Returns:
        0 on success; the argparse status for ``--help`` (0) or a usage error (2); 2 when the
        input is malformed, after printing ``"<prog>: error: <message>"`` to stderr.
    """
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    try:
        run(arguments)
    except (RecipeError, *handled) as error:
        message = " ".join(str(error).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def key_value(text: str) -> tuple[str, str]:
    """Parse a ``KEY=VALUE`` command-line item (for ``type=`` of argparse).

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty side.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


# --- units ----------------------------------------------------------------------------------------


def _registry():
    """The pint registry of cf_xarray, which reads CF unit strings such as ``g m-2 d-1``.

    cf_xarray redefines a few pint units on import, which pint logs at WARNING level; the
    redefinitions are intended, so that logger is quietened for the import.
    """
    logger = logging.getLogger("pint.util")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import cf_xarray.units
    finally:
        logger.setLevel(level)
    return cf_xarray.units.units


def normalise_units(units: str) -> str:
    """Spell ``units`` so that the CF unit registry reads it as intended.

    Aliases of :data:`UNIT_ALIASES` are replaced, and the carbon-mass suffix of ``gC``-style
    units is dropped (``gC m-2 d-1`` is read as ``g m-2 d-1``: the mass is carbon mass either
    way).
    """
    text = " ".join(str(units).split())
    text = UNIT_ALIASES.get(text.lower(), text)
    return _CARBON_MASS.sub(r"\1", text)


def parse_units(units: str, source: str | PathLike, variable: str):
    """The pint unit of a units string.

    Args:
        units: a CF units string.
        source: file the string came from (for the error message).
        variable: variable the string belongs to (for the error message).

    Returns:
        The ``pint.Unit``.

    Raises:
        RecipeError: the string is not a unit the registry knows.
    """
    import pint

    registry = _registry()
    try:
        return registry.Unit(normalise_units(units))
    except (pint.errors.PintError, ValueError, AttributeError, TypeError) as error:
        raise recipe_error(source, f"unknown units {units!r} ({type(error).__name__})",
                           variable) from error


def linear_conversion(source_units: str, target_units: str, source: str | PathLike,
                      variable: str, water_equivalent: bool = False) -> tuple[float, float]:
    """Scale and offset that convert values from ``source_units`` to ``target_units``.

    Args:
        source_units: units of the input values.
        target_units: canonical units.
        source: file of the values (for messages).
        variable: variable name (for messages).
        water_equivalent: also accept a water mass per area (e.g. ``kg m-2 s-1``) for a depth
            of water (e.g. ``mm d-1``), through the density of liquid water
            (:data:`WATER_DENSITY`: 1 kg m-2 = 1 mm).

    Returns:
        ``(scale, offset)`` with ``target = scale * source + offset`` (offset non-zero only for
        temperatures on shifted scales such as K -> degC).

    Raises:
        RecipeError: a string is not a known unit, or the dimensions differ.
    """
    import pint

    registry = _registry()
    from_unit = parse_units(source_units, source, variable)
    to_unit = parse_units(target_units, source, variable)
    quantity = registry.Quantity(np.array([0.0, 1.0]), from_unit)
    try:
        values = quantity.to(to_unit).magnitude
    except pint.errors.DimensionalityError as error:
        density = registry.Quantity(WATER_DENSITY, "kg m-3")
        try:
            if not water_equivalent:
                raise
            values = (quantity / density).to(to_unit).magnitude
        except pint.errors.DimensionalityError:
            raise recipe_error(source, f"units {source_units!r} cannot be converted to "
                                       f"{target_units!r}", variable) from error
    return float(values[1] - values[0]), float(values[0])


def dimensionality(units: str, source: str | PathLike, variable: str) -> str:
    """The pint dimensionality of a units string, e.g. ``"[length] / [time]"``."""
    return str(parse_units(units, source, variable).dimensionality)


# --- provenance -----------------------------------------------------------------------------------


def file_sha256(path: str | PathLike) -> str:
    """SHA-256 of a file, or of the sorted relative paths and contents of a folder's files."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as stream:
            for block in iter(lambda s=stream: s.read(_HASH_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def input_records(inputs: Mapping[str, str | PathLike | Iterable[str | PathLike] | None]
                  ) -> list[dict[str, str]]:
    """One ``{role, path, sha256}`` record per input file.

    Args:
        inputs: role (e.g. ``"fluxnet_csv"``) -> a path, several paths, or ``None`` (skipped).
    """
    records = []
    for role, value in inputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | PathLike) else list(value)
        for path in paths:
            resolved = Path(path).resolve()
            records.append({"role": role, "path": str(resolved),
                            "sha256": file_sha256(resolved)})
    return records


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, of :data:`CORE_DISTRIBUTIONS` and of the ``extra`` distributions."""
    versions = {"python": sys.version.split()[0]}
    for name in (*CORE_DISTRIBUTIONS, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _json_value(value: object) -> object:
    if isinstance(value, PathLike):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def provenance_attrs(recipe: str, inputs: Mapping[str, object], options: Mapping[str, object],
                     libraries: Iterable[str] = ()) -> dict[str, str]:
    """Global attributes recording how an output was made.

    Args:
        recipe: recipe name (e.g. ``"fluxnet"``).
        inputs: role -> path(s) of every input file (hashed with SHA-256).
        options: the recipe options that shaped the output.
        libraries: distributions used beyond :data:`CORE_DISTRIBUTIONS`.

    Returns:
        String attributes: ``history``, ``source``, ``recipe``, ``recipe_inputs`` (JSON list of
        ``{role, path, sha256}``), ``recipe_options`` (JSON), ``differland_version``,
        ``library_versions`` (JSON) and ``date_created`` (ISO 8601, UTC).
    """
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    version = metadata.version("differland")
    return {
        "history": f"{created} created by the differland data recipe {recipe}.py",
        "source": f"differland {version} data recipe {recipe}.py",
        "recipe": recipe,
        "recipe_inputs": json.dumps(input_records(inputs)),
        "recipe_options": json.dumps(_json_value(dict(options)), sort_keys=True),
        "differland_version": version,
        "library_versions": json.dumps(library_versions(libraries), sort_keys=True),
        "date_created": created,
    }


# --- output ---------------------------------------------------------------------------------------


def replace_atomically(path: str | PathLike, write: Callable[[Path], None]) -> None:
    """Write a file or a folder (a Zarr store) under a temporary name, then move it to ``path``.

    Readers never see a partial output: if ``write`` fails the temporary output is removed and
    an existing ``path`` is untouched. An existing folder at ``path`` is replaced as a whole.

    Args:
        path: destination (its parent folder is created if needed).
        write: callable that writes the complete output at the path it is given (which does
            not exist yet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    temporary = staging / path.name
    try:
        write(temporary)
        if path.is_dir():
            retired = staging / "previous"
            os.replace(path, retired)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- regular latitude-longitude grids -------------------------------------------------------------

EARTH_RADIUS = 6371007.181
"""Radius of the sphere with the area of the WGS 84 ellipsoid (authalic radius) [m]."""
SNAP_TOLERANCE = 1e-6
"""Distance to a grid line, in cells, within which a coordinate counts as on it."""
GRID_CRS = "EPSG:4326"
"""Coordinate reference system of every grid the recipes write (WGS 84 latitude/longitude)."""


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of the cells of a 1-D coordinate of cell centres (midpoints; ends mirrored).

    Args:
        centres: monotonic cell centres, at least one; a single cell gets a width of 1 unit.

    Returns:
        ``centres.size + 1`` edges, in the same order as ``centres``.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2.0
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def cell_area(lat_edges: np.ndarray, lon_edges: np.ndarray) -> np.ndarray:
    """Area of the cells of a latitude-longitude grid on the authalic sphere [m2].

    Args:
        lat_edges: ``n_lat + 1`` latitude edges [degrees_north], either order.
        lon_edges: ``n_lon + 1`` longitude edges [degrees_east], either order.

    Returns:
        ``(n_lat, n_lon)`` areas: ``R^2 |d lambda| |d sin(phi)|``.
    """
    band = np.abs(np.diff(np.sin(np.deg2rad(np.asarray(lat_edges, np.float64)))))
    width = np.abs(np.diff(np.deg2rad(np.asarray(lon_edges, np.float64))))
    return EARTH_RADIUS**2 * np.outer(band, width)


def regular_centres(start: float, stop: float, resolution: float) -> np.ndarray:
    """Centres of the cells of width ``resolution`` tiling ``[start, stop]`` (edges on the grid)."""
    count = int(round((stop - start) / resolution))
    return start + resolution * (np.arange(count) + 0.5)


def snap_to_grid(value: float, resolution: float, down: bool) -> float:
    """Round a coordinate down or up to a multiple of ``resolution`` [degree].

    A value within 1e-6 cells of a multiple counts as on it (floating-point coordinates).
    """
    cells = value / resolution
    rounded = math.floor(cells + SNAP_TOLERANCE) if down else math.ceil(cells - SNAP_TOLERANCE)
    return rounded * resolution
