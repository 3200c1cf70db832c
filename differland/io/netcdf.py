"""NetCDF output (atomic, compressed, CF time) and parameter files (JSON or NetCDF)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from differland.io._files import (
    check_input_file,
    has_netcdf_signature,
    load_netcdf,
    read_json,
    write_atomically,
)
from differland.io.errors import driver_error
from differland.params import SPECS, ParameterError, ParameterSet

TIME_ORIGIN = np.datetime64("2001-01-01T00:00:00", "s")
"""Origin of the model clock and of every CF time axis written by differland."""

TIME_ATTRS: dict[str, str] = {
    "units": "days since 2001-01-01 00:00:00",
    "calendar": "standard",
    "standard_name": "time",
    "long_name": "time",
    "axis": "T",
}
COMPRESSION: dict[str, object] = {"zlib": True, "complevel": 4}
"""NetCDF-4 encoding applied to every floating-point variable by :func:`write_dataset`."""

_KEPT_ENCODING = ("_FillValue", "missing_value", "dtype", "scale_factor", "add_offset")
_NETCDF_SUFFIXES = frozenset({".nc", ".nc4", ".netcdf", ".cdf"})


# --- NetCDF output --------------------------------------------------------------------------------


def compression_encoding(dataset: xr.Dataset) -> dict[str, dict[str, object]]:
    """Encoding that zlib-compresses every floating-point variable (coordinates included).

    The on-disk representation already in a variable's encoding (dtype, fill value, packing) is
    kept; chunking and other storage settings inherited from a file the dataset was read from
    are dropped.

    Args:
        dataset: dataset about to be written.

    Returns:
        ``{variable name: encoding}`` for the ``encoding`` argument of ``Dataset.to_netcdf``.
    """
    encoding = {}
    for name, variable in dataset.variables.items():
        if np.issubdtype(variable.dtype, np.floating):
            kept = {key: variable.encoding[key] for key in _KEPT_ENCODING
                    if key in variable.encoding}
            encoding[str(name)] = {**kept, **COMPRESSION}
    return encoding


def write_dataset(path: str | PathLike, dataset: xr.Dataset) -> None:
    """Write a dataset as compressed NetCDF-4, atomically.

    The file is written to a temporary file in the destination folder (created if needed) and
    renamed into place, so ``path`` never holds a partial file; if writing fails, nothing is left
    behind and an existing file at ``path`` is unchanged.

    Args:
        path: destination file.
        dataset: the data; floating-point variables are zlib-compressed (level 4).
    """
    encoding = compression_encoding(dataset)

    def write(target: Path) -> None:
        dataset.to_netcdf(target, mode="w", format="NETCDF4", engine="netcdf4",
                          encoding=encoding)

    write_atomically(path, write)


def cf_time_coordinate(dates) -> tuple[np.ndarray, dict[str, str]]:
    """CF time values and attributes for a sequence of dates.

    Args:
        dates: dates or timestamps (``datetime64`` array of any unit, ISO strings, ``datetime``
            objects or a pandas ``DatetimeIndex``); resolution kept down to one second.

    Returns:
        ``(values, attrs)``: float64 days since 2001-01-01 00:00:00 [d] and the CF attributes
        (``units``, ``calendar: standard``, ``standard_name: time``, ``axis: T``).

    Raises:
        ValueError: a date is missing (NaT).
    """
    stamps = np.asarray(dates, dtype="datetime64[s]")
    if np.isnat(stamps).any():
        raise ValueError("cf_time_coordinate: dates contain NaT")
    values = (stamps - TIME_ORIGIN) / np.timedelta64(1, "D")
    return np.asarray(values, dtype=np.float64), dict(TIME_ATTRS)


# --- parameter files ------------------------------------------------------------------------------


def read_parameter_values(path: str | PathLike) -> dict[str, float]:
    """Read named physical parameter values from a JSON or NetCDF parameter file.

    A NetCDF file (recognised by its signature or a ``.nc``-like suffix) contributes every 0-d
    floating-point variable whose name is a registry entry (:data:`differland.params.SPECS`);
    other variables are ignored. Any other file must be a JSON object mapping names to finite
    numbers. Names are not checked against a model variant here: pass the result to
    :func:`differland.params.parameters_from_mapping`.

    Args:
        path: the parameter file.

    Returns:
        ``{name: value}``; NetCDF entries in registry order, JSON entries in file order.

    Raises:
        DriverError: missing or empty file, invalid JSON, a JSON value that is not a finite
            number, a non-finite NetCDF value, or a NetCDF file without any parameter.
    """
    path = check_input_file(path)
    if path.suffix.lower() in _NETCDF_SUFFIXES or has_netcdf_signature(path):
        return _parameters_from_netcdf(path)
    return _parameters_from_json(path)


def _parameters_from_netcdf(path: Path) -> dict[str, float]:
    dataset = load_netcdf(path)
    values = {}
    for name in SPECS:
        if name not in dataset.data_vars:
            continue
        variable = dataset[name]
        if variable.ndim != 0 or not np.issubdtype(variable.dtype, np.floating):
            continue
        value = float(variable.values)
        if not math.isfinite(value):
            raise driver_error(path, f"value {value!r} is not a finite number", name)
        values[name] = value
    if not values:
        raise driver_error(path, "no parameter found (expected 0-d float variables named like "
                                 "entries of differland.params.SPECS)")
    return values


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not a finite number")


def finite_number(value: object) -> float | None:
    """``value`` as a finite float if it is a JSON number (not a boolean), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _parameters_from_json(path: Path) -> dict[str, float]:
    data = read_json(path, parse_constant=_reject_constant)
    if not isinstance(data, dict):
        raise driver_error(path, "expected a JSON object mapping parameter names to numbers, "
                                 f"got {type(data).__name__}")
    values = {}
    for name, value in data.items():
        number = finite_number(value)
        if number is None:
            raise driver_error(path, f"value {value!r} is not a finite number", name)
        values[name] = number
    return values


def _scalar_value(name: str, value) -> float:
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ParameterError(f"parameter {name} has shape {array.shape}; only scalars can be "
                             "written to a parameter file")
    number = float(array.reshape(()))
    if not math.isfinite(number):
        raise ParameterError(f"parameter {name} = {number!r} is not finite")
    return number


def parameter_json_text(params: ParameterSet, extra: Mapping[str, float] | None = None) -> str:
    """The JSON text of a parameter file: ``{name: value}`` in registry order.

    Args:
        params: scalar physical values.
        extra: further named scalar values (e.g. inert parameters of another variant); registry
            names take their registry position, other names follow in alphabetical order.

    Returns:
        Indented JSON text ending with a newline.

    Raises:
        ParameterError: a value is not a finite scalar, or an extra name repeats a parameter.
    """
    values = {name: _scalar_value(name, value) for name, value in params.items()}
    for name, value in (extra or {}).items():
        if name in values:
            raise ParameterError(f"extra value {name} repeats a parameter of the set")
        values[name] = _scalar_value(name, value)
    position = {name: index for index, name in enumerate(SPECS)}
    order = sorted(values, key=lambda name: (position.get(name, len(position)), name))
    return json.dumps({name: values[name] for name in order}, indent=2, allow_nan=False) + "\n"


def write_parameter_json(path: str | PathLike, params: ParameterSet,
                         extra: Mapping[str, float] | None = None) -> None:
    """Write a parameter set as a JSON parameter file, atomically.

    Args:
        path: destination (parent folder created if needed).
        params: scalar physical values.
        extra: further named scalar values (see :func:`parameter_json_text`).

    Raises:
        ParameterError: a value is not a finite scalar, or an extra name repeats a parameter.
    """
    text = parameter_json_text(params, extra)
    write_atomically(path, lambda target: target.write_text(text, encoding="utf-8"))
