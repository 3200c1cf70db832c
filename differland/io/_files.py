"""File plumbing shared by the readers and writers: input checks, NetCDF loading, atomic writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import xarray as xr

from differland.io.errors import driver_error, one_line, output_error

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


TEMPORARY_PATTERN = ".{name}.*.tmp"
"""Name pattern of the temporary files of :func:`write_atomically` (``name``: the target's)."""
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(directory: str | PathLike, name: str = "*") -> list[Path]:
    """Remove the temporary files that interrupted :func:`write_atomically` calls left behind.

    Only files matching ``.<name>.<random>.tmp`` directly in ``directory`` are removed.

    Args:
        directory: the folder of the outputs.
        name: the output file whose temporaries to remove (default: every output's).

    Returns:
        The removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in directory.glob(TEMPORARY_PATTERN.format(name=name)):
        # the 8 random characters of tempfile.mkstemp, nothing else
        if not _TEMPORARY_NAME.fullmatch(candidate.name):
            continue
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_writable_location(path: str | PathLike) -> Path:
    """Check, before anything is computed, that ``path`` can be created or replaced.

    Raises:
        OutputError: a component of the parent path is a file, or the nearest existing folder
            is not writable.
    """
    path = Path(path)
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise output_error(path, f"cannot be written: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise output_error(path, f"cannot be written: no write permission in {ancestor}")
    return path


def check_output_file(path: str | PathLike, inputs: list, overwrite: bool,
                      is_own: Callable[[Path], bool], option: str = "--out") -> Path:
    """Check an output file path before anything is computed.

    Args:
        path: the output file.
        inputs: every input path of the command (``None`` entries are skipped).
        overwrite: whether the user asked to replace an existing output.
        is_own: whether an existing file at ``path`` is an output of this tool (only such a
            file is replaced, and only with ``overwrite``).
        option: the option that named ``path``, for messages.

    Returns:
        The path.

    Raises:
        OutputError: ``path`` is an input, an existing folder, an existing file without
            ``overwrite`` or one this tool did not write, or an unwritable location.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise output_error(path, f"{option} is an input of this command; it would be "
                                     "overwritten (choose another output path)")
    if path.is_dir():
        raise output_error(path, f"{option} is an existing folder; give a file path")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise output_error(path, f"{option} exists; pass --overwrite to replace it")
        if not is_own(path):
            raise output_error(path, f"{option} exists and was not written by differland; "
                                     "it is not replaced even with --overwrite")
    return check_writable_location(path)


def written_by_differland(path: Path) -> bool:
    """Whether ``path`` is a NetCDF file whose ``source`` attribute names differland."""
    if not path.is_file() or path.is_symlink() or not has_netcdf_signature(path):
        return False
    try:
        with xr.open_dataset(path, decode_times=False) as dataset:
            return str(dataset.attrs.get("source", "")).startswith("differland")
    except (OSError, ValueError, RuntimeError):
        return False


def reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` of :func:`json.loads` that refuses a key given twice."""
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key(s) {', '.join(duplicates)}")
    return dict(pairs)


def read_json(path: str | PathLike, **options) -> object:
    """Parse a UTF-8 JSON file, refusing duplicate keys.

    Args:
        path: the file.
        **options: further arguments of :func:`json.loads` (e.g. ``parse_constant``).

    Raises:
        DriverError: the file is missing or unreadable, not UTF-8, or not valid JSON (nested
            too deeply, a number too long, a key given twice), in one line.
    """
    import json

    path = check_input_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not an error
    except UnicodeDecodeError as err:
        raise driver_error(path, f"not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise driver_error(path, f"cannot be read ({err.strerror})") from None
    try:
        return json.loads(text, object_pairs_hook=reject_duplicate_keys, **options)
    except RecursionError:
        raise driver_error(path, "invalid JSON (nested too deeply)") from None
    except ValueError as err:
        raise driver_error(path, f"invalid JSON ({one_line(err)[:_MAX_REASON]})") from None
