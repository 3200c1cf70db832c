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
from importlib import metadata, resources
from os import PathLike
from pathlib import Path

import numpy as np

from differland.io import NETCDF_SIGNATURES, OutputError, check_writable_location

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


class RecipeParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one line on stderr, with exit status 2.

    The message reads ``"<prog>: error: <problem> (see --help)"``; subcommand parsers made with
    ``add_subparsers`` are of this class too.
    """

    def error(self, message: str):
        """Print the one-line usage error and exit with :data:`EXIT_ERROR`."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite``: allow replacing an existing output that this recipe wrote."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output written by this recipe (anything "
                             "else at that path is refused)")


def note(prog: str, message: str, kind: str = "note") -> None:
    """Print ``"<prog>: <kind>: <message>"`` as one line on stderr (``kind``: note, warning)."""
    print(f"{prog}: {kind}: {' '.join(message.split())}", file=sys.stderr)


def run_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], None],
             argv: Sequence[str] | None, handled: tuple[type[Exception], ...] = ()) -> int:
    """Parse ``argv``, run the recipe and turn input problems into a one-line error.

    Args:
        parser: the recipe's argument parser.
        run: the recipe body, given the parsed arguments.
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).
        handled: further exception types (besides :class:`RecipeError` and ``OSError``) that
            signal bad input.

    Returns:
        0 on success; the argparse status for ``--help`` (0) or a usage error (2); 2 when the
        input is malformed or a file cannot be read or written, after printing
        ``"<prog>: error: <message>"`` to stderr.
    """
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    try:
        run(arguments)
    except (RecipeError, OSError, *handled) as error:
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

TEMPORARY_SUFFIX = ".tmp"
"""Suffix of the temporary outputs written beside a target (``.<name>.<8 characters>.tmp``)."""
MARKER_PREFIX = "# made by the differland data recipe "
"""Start of the first line of a text output that carries no provenance attributes of its own."""
_TEMPORARY_RANDOM = r"[a-z0-9_]{8}"
"""The random part of :mod:`tempfile` names."""


def text_marker(recipe: str) -> str:
    """First line of a text output of ``recipe`` (how :func:`written_by` recognises it)."""
    return f"{MARKER_PREFIX}{recipe}.py"


def _attributes_of(path: Path) -> Mapping[str, object] | None:
    """Global attributes of a Zarr store, NetCDF file or JSON record; ``None`` if unreadable."""
    try:
        if path.is_dir():
            if (path / ".zattrs").is_file():
                return json.loads((path / ".zattrs").read_text(encoding="utf-8"))
            if (path / "zarr.json").is_file():
                record = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
                return record.get("attributes") if isinstance(record, dict) else None
            return None
        if path.suffix.lower() == ".json":
            record = json.loads(path.read_text(encoding="utf-8"))
            return record if isinstance(record, dict) else None
        with path.open("rb") as stream:
            if not stream.read(8).startswith(NETCDF_SIGNATURES):
                return None
        import netCDF4

        with netCDF4.Dataset(path, "r") as dataset:
            return {name: dataset.getncattr(name) for name in dataset.ncattrs()}
    except (OSError, ValueError, UnicodeDecodeError, RuntimeError):
        return None


def written_by(path: str | PathLike, recipe: str, evidence: str | PathLike | None = None
               ) -> bool:
    """Whether ``path`` is recognisably an output of ``recipe``.

    Recognised: a Zarr store, NetCDF file or JSON record whose global attributes hold
    ``recipe == <recipe>`` and a ``recipe_inputs`` record (see :func:`provenance_attrs`); a text
    file whose first line is :func:`text_marker`; or, when ``evidence`` is given (an output
    that cannot carry attributes, such as a plain CSV table), that evidence file recognised as
    above. A symbolic link is never recognised.
    """
    path = Path(path)
    if path.is_symlink() or not path.exists():
        return False
    if evidence is not None:
        return written_by(evidence, recipe)
    attrs = _attributes_of(path)
    if attrs is not None:
        return attrs.get("recipe") == recipe and "recipe_inputs" in attrs
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as stream:
            first = stream.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return first == text_marker(recipe)


def _input_paths(inputs: Mapping[str, str | PathLike | Iterable[str | PathLike] | None]
                 ) -> list[tuple[str, Path]]:
    pairs = []
    for role, value in inputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | PathLike) else list(value)
        pairs.extend((role, Path(path)) for path in paths if path is not None)
    return pairs


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_not_input(path: Path, inputs: Mapping[str, object], option: str = "--out") -> None:
    """Refuse an output that is, contains, or lies inside one of the inputs.

    Args:
        path: the output.
        inputs: role -> path, several paths or ``None`` (as for :func:`provenance_attrs`).
        option: the option that named the output (for the message).

    Raises:
        RecipeError: the output resolves to an input (same path or same file), an input lies
            inside the output folder, or the output lies inside an input folder.
    """
    target = path.resolve()
    for role, source in _input_paths(inputs):
        resolved = source.resolve()
        if target == resolved or _same_file(path, source):
            raise recipe_error(path, f"{option} is the {role} input {source}; choose another "
                                     "output path")
        if resolved.is_relative_to(target):
            raise recipe_error(path, f"{option} contains the {role} input {source}; choose "
                                     "another output path")
        if resolved.is_dir() and target.is_relative_to(resolved):
            raise recipe_error(path, f"{option} lies inside the {role} input {source}; choose "
                                     "another output path")


def check_writable(path: Path, option: str = "--out") -> None:
    """Check that ``path`` can be created: its nearest existing ancestor is a writable folder
    (:func:`differland.io.check_writable_location`).

    Raises:
        RecipeError: an ancestor is not a folder, or the process may not write in it.
    """
    try:
        check_writable_location(path.absolute())
    except OutputError as error:
        problem = str(error).split(": ", 1)[-1]
        raise recipe_error(path, f"{option} {problem}") from None


def check_output(path: str | PathLike, recipe: str, inputs: Mapping[str, object],
                 overwrite: bool, option: str = "--out",
                 evidence: str | PathLike | None = None) -> None:
    """Check, before any work, that the recipe may write ``path``.

    Args:
        path: the output file or folder.
        recipe: recipe name (see :func:`written_by`).
        inputs: role -> path(s) of every input (see :func:`check_not_input`).
        overwrite: whether ``--overwrite`` was given.
        option: the option that named the output (for messages).
        evidence: for outputs without attributes of their own, the file that identifies them
            (see :func:`written_by`).

    Raises:
        RecipeError: the output is an input (or nests with one); it exists and ``overwrite`` is
            false; it exists but was not written by this recipe (refused even with
            ``overwrite``); it is a symbolic link; or its location is not writable.
    """
    path = Path(path)
    check_not_input(path, inputs, option)
    if path.is_symlink():
        raise recipe_error(path, f"{option} is a symbolic link; give the path it points to")
    if path.exists():
        if not overwrite:
            raise recipe_error(path, f"{option} exists; pass --overwrite to replace it")
        if not written_by(path, recipe, evidence):
            what = "folder" if path.is_dir() else "file"
            raise recipe_error(path, f"{option} is a {what} that {recipe}.py did not write (no "
                                     f"{recipe} provenance); refusing to replace it, even with "
                                     "--overwrite")
    check_writable(path, option)


def remove_stale_temporaries(path: str | PathLike) -> list[Path]:
    """Remove the leftovers of interrupted writes of ``path``: ``.<name>.<8 chars>.tmp`` beside it.

    Only entries whose whole name has the pattern of :func:`replace_atomically` (and of
    :func:`differland.io.write_dataset`) are removed; two runs writing the same output at the
    same time are not supported.

    Returns:
        The entries removed.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{_TEMPORARY_RANDOM}"
                         rf"{re.escape(TEMPORARY_SUFFIX)}$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not pattern.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed


def replace_atomically(path: str | PathLike, write: Callable[[Path], None],
                       recipe: str | None = None) -> None:
    """Write a file or a folder (a Zarr store) under a temporary name, then move it to ``path``.

    Readers never see a partial output: if ``write`` fails the temporary output is removed and
    an existing ``path`` is untouched. Leftovers of earlier interrupted writes (see
    :func:`remove_stale_temporaries`) are removed first. The caller checks beforehand that an
    existing ``path`` may be replaced (:func:`check_output`); an existing folder is replaced as
    a whole only when ``recipe`` wrote it.

    Args:
        path: destination (its parent folder is created if needed).
        write: callable that writes the complete output at the path it is given (which does
            not exist yet).
        recipe: the recipe writing ``path``, required to replace an existing folder.

    Raises:
        RecipeError: ``path`` is an existing folder not written by ``recipe``.
    """
    path = Path(path)
    replaces_folder = path.is_dir() and not path.is_symlink()
    if replaces_folder and (recipe is None or not written_by(path, recipe)):
        raise recipe_error(path, "an existing folder not written by this recipe; refusing "
                                 "to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX,
                                    dir=path.parent))
    temporary = staging / path.name
    try:
        write(temporary)
        if replaces_folder:
            retired = staging / "previous"
            os.replace(path, retired)
            try:
                os.replace(temporary, path)
            except BaseException:
                os.replace(retired, path)
                raise
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- background CO2 -------------------------------------------------------------------------------

CO2_RECORD_NAME = "co2_global_annual.csv"
"""File name of the annual global-mean CO2 record shipped in ``differland/data``."""
CO2_RECORD_COLUMNS = ("year", "co2_ppm")
"""Columns of the CO2 record: calendar year, annual-mean CO2 mole fraction [ppm]."""


def co2_record_path() -> Path:
    """Path of the background CO2 record installed with differland.

    Raises:
        RecipeError: the file is not installed as a plain file.
    """
    resource = resources.files("differland").joinpath("data", CO2_RECORD_NAME)
    path = Path(os.fspath(resource)) if isinstance(resource, PathLike) else None
    if path is None or not path.is_file():
        raise recipe_error(f"differland/data/{CO2_RECORD_NAME}", "the background CO2 record "
                                                                 "is not installed")
    return path


def read_co2_record(path: str | PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The annual global-mean CO2 record.

    Args:
        path: a CSV with ``#`` comment lines and columns :data:`CO2_RECORD_COLUMNS`; default
            the record shipped with differland (:func:`co2_record_path`).

    Returns:
        ``(years as int64, annual-mean CO2 [ppm] as float64)``, years consecutive.

    Raises:
        RecipeError: unreadable file, missing column, or years not consecutive.
    """
    import pandas as pd

    path = co2_record_path() if path is None else Path(path)
    try:
        table = pd.read_csv(path, comment="#")
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    for column in CO2_RECORD_COLUMNS:
        if column not in table.columns:
            raise recipe_error(path, "missing column", column)
    years = pd.to_numeric(table["year"], errors="coerce").to_numpy(np.float64)
    values = pd.to_numeric(table["co2_ppm"], errors="coerce").to_numpy(np.float64)
    if years.size < 2 or not np.all(np.isfinite(years)) or not np.all(np.diff(years) == 1):
        raise recipe_error(path, "years are not consecutive", "year")
    if not np.all(np.isfinite(values)):
        raise recipe_error(path, "missing value(s)", "co2_ppm")
    return years.astype(np.int64), values


def background_co2(dates: np.ndarray, path: str | PathLike | None = None) -> np.ndarray:
    """Daily background CO2 [ppm] from the annual global-mean record.

    Each annual mean is placed at the middle of its year and the daily values are linear in
    time between consecutive middles (and continue the first and last segments to the start of
    the first year and the end of the last year).

    Args:
        dates: days, anything ``numpy.datetime64`` reads.
        path: the record (default: the one shipped with differland, see :func:`read_co2_record`).

    Returns:
        CO2 [ppm] for each day, float64.

    Raises:
        RecipeError: a day lies outside the years of the record.
    """
    years, values = read_co2_record(path)
    days = np.asarray(dates, dtype="datetime64[D]")
    starts = np.array([f"{year:04d}-01-01" for year in (*years, years[-1] + 1)],
                      dtype="datetime64[D]")
    if days.size and (days.min() < starts[0] or days.max() >= starts[-1]):
        source = path if path is not None else f"differland/data/{CO2_RECORD_NAME}"
        raise recipe_error(source, f"the record covers {years[0]}-{years[-1]}, the dates "
                                   f"{days.min()} to {days.max()} do not lie inside it")
    day_numbers = starts.astype(np.int64)
    middles = (day_numbers[:-1] + day_numbers[1:]) / 2.0
    target = days.astype(np.int64).astype(np.float64)
    daily = np.interp(target, middles, values)
    before, after = target < middles[0], target > middles[-1]
    first_slope = (values[1] - values[0]) / (middles[1] - middles[0])
    last_slope = (values[-1] - values[-2]) / (middles[-1] - middles[-2])
    daily = np.where(before, values[0] + first_slope * (target - middles[0]), daily)
    return np.where(after, values[-1] + last_slope * (target - middles[-1]), daily)


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
