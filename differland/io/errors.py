"""The one exception type of the I/O layer and the one-line message format it carries."""

from __future__ import annotations

from os import PathLike


class DriverError(ValueError):
    """An input file (site driver, parameter file) that cannot be used.

    The message is a single line, ``"<path>: <variable>: <problem>"``, or ``"<path>: <problem>"``
    when no single variable is involved.
    """


def one_line(text: str) -> str:
    """Collapse ``text`` onto one line (newlines and runs of blanks become single spaces).

    Args:
        text: any message, e.g. the text of an exception raised by a NetCDF library.

    Returns:
        The stripped, single-line text.
    """
    return " ".join(str(text).split())


def driver_error(path: str | PathLike, problem: str, variable: str | None = None) -> DriverError:
    """Build a :class:`DriverError` with the standard one-line message.

    Args:
        path: the offending file.
        problem: what is wrong, in a few words.
        variable: the variable concerned, if any.

    Returns:
        The exception (the caller raises it).
    """
    parts = [str(path)] + ([variable] if variable else []) + [problem]
    return DriverError(one_line(": ".join(parts)))


class OutputError(ValueError):
    """An output path that would destroy or mix with data, or cannot be written.

    The message is a single line, ``"<path>: <problem>"``.
    """


def output_error(path: str | PathLike, problem: str) -> OutputError:
    """Build an :class:`OutputError` with the standard one-line message."""
    return OutputError(one_line(f"{path}: {problem}"))
