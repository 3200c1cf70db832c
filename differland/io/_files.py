"""File plumbing shared by the readers and writers: input checks, NetCDF loading, atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import xarray as xr

from differland.io.errors import driver_error, one_line

NETCDF_SIGNATURES: tuple[bytes, ...] = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
"""Leading bytes of NetCDF classic (CDF1/2/5) and NetCDF-4 (HDF5) files."""

_MAX_REASON = 200


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def check_input_file(path: str | PathLike) -> Path:
    """Check that ``path`` names an existing, non-empty regular file.

    Args:
        path: file to read.

    Returns:
        The path as a :class:`~pathlib.Path`.

    Raises:
        DriverError: the path does not exist, is not a regular file, or is empty.
    """
    path = Path(path)
    if not path.exists():
        raise driver_error(path, "file does not exist")
    if not path.is_file():
        raise driver_error(path, "not a regular file")
    if path.stat().st_size == 0:
        raise driver_error(path, "empty file (0 bytes)")
    return path


def has_netcdf_signature(path: Path) -> bool:
    """Whether the file starts with the signature of a NetCDF classic or NetCDF-4 file."""
    with path.open("rb") as stream:
        head = stream.read(8)
    return head.startswith(NETCDF_SIGNATURES)


def load_netcdf(path: Path) -> xr.Dataset:
    """Read a whole NetCDF file into memory (raw values, no time decoding) and close it.

    Args:
        path: an existing, non-empty file.

    Returns:
        The in-memory dataset; the file is closed when this returns.

    Raises:
        DriverError: the file cannot be opened or read as NetCDF.
    """
    try:
        with xr.open_dataset(path, decode_times=False, decode_timedelta=False) as dataset:
            return dataset.load()
    except (OSError, ValueError, RuntimeError) as err:
        if not has_netcdf_signature(path):
            raise driver_error(path, "not a NetCDF file (no NetCDF or HDF5 signature)") from err
        reason = one_line(err)[:_MAX_REASON]
        raise driver_error(path, f"not a readable NetCDF file ({type(err).__name__}: "
                                 f"{reason})") from err


def write_atomically(path: str | PathLike, write: Callable[[Path], None]) -> None:
    """Write a file through a temporary file in the same folder, then rename it into place.

    The parent folder is created if needed. Readers never see a partial file at ``path``: on any
    failure the temporary file is removed and an existing file at ``path`` is left untouched.

    Args:
        path: destination.
        write: callable that writes the complete content to the path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                              dir=path.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        write(temporary)
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: str | PathLike, content: object) -> None:
    """Write ``content`` as indented JSON, atomically (NaN written as null)."""
    import json
    import math

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(content), indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda target: target.write_text(text, encoding="utf-8"))
