"""Build a daily site driver from a FLUXNET daily (DD) CSV: FLUXNET2015, ONEFlux or FluxDataKit.

    python data_recipes/fluxnet.py FLX_US-Ha1_FLUXNET2015_FULLSET_DD_1991-2012_1-4.csv \\
        --site-info sites.csv --out US-Ha1.nc [--partitioning NT|DT] [--lai LAI.csv|LAI.nc] \\
        [--qc-threshold 0.7] [--fill-forcing-gaps DAYS] [--carbon-units auto|gC|umol] \\
        [--overwrite]

The output is the CARDAMOM-style site driver that :func:`differland.io.read_site_driver` reads:
an int64 ``time`` coordinate of days since 2001-01-01, the forcing T2M_MIN, T2M_MAX, SSRD, CO2,
DOY, VPD, TOTAL_PREC, PA, the scalars LAT and LON, and the observations GPP, RECO, NBE, ET (and
LAI when ``--lai`` is given) with their ``*unc`` uncertainties; gaps are NaN. Name the output
``<SITE_ID>.nc``: the reader takes the site id from the file name. ``docs/drivers.md`` describes
every variable and every rule used here.

Accepted layouts, detected per file: the date column ``TIMESTAMP`` (or ``date``) holds
``YYYYMMDD`` integers or ISO ``YYYY-MM-DD`` dates; each quantity is read from the first column
present among its alternates (:data:`FORCING_ALTERNATES`, :data:`OBSERVATION_ALTERNATES`, e.g.
``TA_F`` else ``TA_F_MDS``); gaps are -9999, empty, ``NA`` or ``NaN``. This covers the
FLUXNET2015 and ONEFlux FULLSET DD files and the FluxDataKit ``FLX_<SITE>_FLUXDATAKIT_FULLSET_DD``
files, whose carbon fluxes are daily means in umol CO2 m-2 s-1 (``--carbon-units``). A file
without a CO2 column gets the global-mean background record shipped with differland.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from recipe_common import (
    RecipeParser,
    add_overwrite_option,
    background_co2,
    check_output,
    co2_record_path,
    linear_conversion,
    note,
    provenance_attrs,
    recipe_error,
    replace_atomically,
    run_main,
)

from differland.forcing import FORCING_VARIABLES
from differland.io import OBSERVATION_VARIABLES, DriverError, read_site_driver, write_dataset
from differland.io.site import FORCING_SERIES, LATITUDE_VARIABLE, MODEL_EPOCH, TIME

RECIPE = "fluxnet"
PROG = "fluxnet.py"
LIBRARIES = ("cf-xarray", "pint")
"""Distributions whose versions the provenance record lists (unit handling)."""
MISSING_VALUE = -9999.0
"""FLUXNET fill value of missing data."""
MISSING_TEXT = ("-9999", "-9999.0", "-9999.00", "NA", "NaN", "nan", "")
"""Spellings of a missing value in the CSV files (FLUXNET fill value; R and pandas gaps)."""

SECONDS_PER_DAY = 86400.0
"""[s d-1]"""
LATENT_HEAT_OF_VAPORISATION = 2.45e6
"""Latent heat of vaporisation of water near 20 degC [J kg-1] (Allen et al. 1998, FAO-56)."""
LATENT_HEAT_TO_ET = SECONDS_PER_DAY / LATENT_HEAT_OF_VAPORISATION
"""Latent heat flux [W m-2] -> evapotranspiration [mm d-1] (1 kg m-2 of water = 1 mm)."""
CARBON_MOLAR_MASS = 12.011
"""Molar mass of carbon [g mol-1] (IUPAC conventional atomic weight)."""
UMOL_TO_GC_PER_DAY = CARBON_MOLAR_MASS * 1e-6 * SECONDS_PER_DAY
"""Carbon flux [umol CO2 m-2 s-1] -> [gC m-2 d-1] (one C atom per CO2 molecule)."""
SINE_DAY_NIGHT_FACTOR = math.pi / 4.0
"""Half diurnal range / (daytime mean - night-time mean) of a sinusoidal daily cycle with equal
day and night: the half-period means of ``A sin`` are ``+-2A/pi``."""
DEFAULT_DIURNAL_RANGE = 10.0
"""Daily maximum minus minimum air temperature [degC] assumed where day/night means are absent."""
DEFAULT_QC_THRESHOLD = 0.7
"""Smallest daily QC fraction (measured or good-quality gap-filled) an observation may have [1]."""
DEFAULT_LAI_MAX_GAP = 32
"""Longest interval between LAI samples that is interpolated across [d]."""
PA_UNITS = "kPa"
"""Units of the PA variable (air pressure, unused by the model)."""

DATE_COLUMNS = ("TIMESTAMP", "date")
"""Columns tried for the day of each row (``date`` in any letter case)."""
DATE_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "YYYYMMDD": (re.compile(r"\d{8}"), "%Y%m%d"),
    "YYYY-MM-DD": (re.compile(r"\d{4}-\d{2}-\d{2}"), "%Y-%m-%d"),
}
"""Accepted date spellings -> (whole-value pattern, strptime format); one per file."""
SUB_DAILY_COLUMNS = ("TIMESTAMP_START", "TIMESTAMP_END")
"""Date columns of half-hourly and hourly files (refused: the recipe needs a daily file)."""

FORCING_ALTERNATES: dict[str, tuple[str, ...]] = {
    "TA": ("TA_F", "TA_F_MDS"),
    "SW_IN": ("SW_IN_F", "SW_IN_F_MDS"),
    "VPD": ("VPD_F", "VPD_F_MDS"),
    "P": ("P_F", "P_F_MDS"),
}
"""Required forcing quantity -> accepted columns, in order of preference (the consolidated
``_F`` columns first, then the ``_F_MDS`` gap-filled measurements)."""
OPTIONAL_FORCING_ALTERNATES: dict[str, tuple[str, ...]] = {
    "CO2": ("CO2_F_MDS", "CO2_F", "CO2_MDS"),
    "PA": ("PA_F", "PA_F_MDS"),
}
"""Optional forcing quantity -> accepted columns (no CO2 column: background CO2 record)."""
FORCING_UNITS: dict[str, str] = {"TA": "degC", "SW_IN": "W m-2", "VPD": "hPa", "P": "mm d-1",
                                 "CO2": "umol mol-1", "PA": PA_UNITS}
"""Units of the forcing columns of a daily file (the same in every accepted layout)."""
DRIVER_FORCING: dict[str, str] = {"SSRD": "SW_IN", "CO2": "CO2", "VPD": "VPD",
                                  "TOTAL_PREC": "P"}
"""Driver forcing variable -> the forcing quantity it is converted from."""
_FORCING_FIELD = {name: field for field, name in FORCING_SERIES.items()}
MIN_MAX_ALTERNATES: tuple[tuple[str, str], ...] = (("TMIN_F_MDS", "TMAX_F_MDS"),
                                                   ("TMIN_F", "TMAX_F"), ("TMIN", "TMAX"))
"""Column pairs of daily minimum and maximum air temperature [degC], in order of preference."""
DAY_NIGHT_SUFFIXES = ("_DAY", "_NIGHT")
"""Suffixes of the daytime and night-time means of the air temperature column (``TA_F_DAY``)."""
OBSERVATION_ALTERNATES: dict[str, tuple[str, ...]] = {
    "NEE": ("NEE_VUT_REF",),
    "GPP": ("GPP_{method}_VUT_REF",),
    "RECO": ("RECO_{method}_VUT_REF",),
    "LE": ("LE_F_MDS", "LE_F"),
}
"""Observed quantity -> accepted columns (``{method}``: the --partitioning, NT or DT)."""
LAI_COLUMN = "LAI"
"""Column of leaf area index [m2 m-2] in FluxDataKit daily files (MODIS, smoothed), used when
no --lai file is given."""
QC_SUFFIX = "_QC"
"""Suffix of the daily QC fraction of a column (``NEE_VUT_REF_QC``)."""
CARBON_UNITS: dict[str, str] = {"gC": "gC m-2 d-1", "umol": "umol CO2 m-2 s-1 (daily mean)"}
"""``--carbon-units`` choice -> the units of NEE, GPP and RECO in the file."""
_MEAN_FLUX_NAME = re.compile(r"_(?:FLUXDATAKIT|PLUMBER)_", re.IGNORECASE)
"""File names of daily files whose carbon fluxes are daily means in umol m-2 s-1."""
SITE_INFO_COLUMNS = ("SITE_ID", "LAT", "LON")
BACKGROUND_CO2_RULE = "background global-mean CO2 record"
"""Start of the ``source`` attribute of CO2 taken from the background record."""
_SITE_IN_NAME = re.compile(r"^(?:[A-Z]{2,8}_)?(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_"
                           r"(?:FLUXNET|FLUXDATAKIT|PLUMBER)")


@dataclass(frozen=True)
class RecipeOptions:
    """Options of the FLUXNET recipe (recorded in the output's provenance).

    Attributes:
        partitioning: ``"NT"`` (night-time, Reichstein et al. 2005) or ``"DT"`` (daytime,
            Lasslop et al. 2010) GPP/RECO partitioning.
        qc_threshold: observations whose daily QC fraction is below this become NaN [1].
        fill_forcing_gaps: longest forcing gap filled by linear interpolation [d]; 0: none.
        diurnal_range: diurnal temperature range used without day/night means [degC].
        lai_max_gap: longest interval between LAI samples interpolated across [d].
        carbon_units: units of NEE, GPP and RECO in the file: ``"gC"`` (gC m-2 d-1,
            FLUXNET2015/ONEFlux DD), ``"umol"`` (daily mean umol CO2 m-2 s-1, FluxDataKit DD) or
            ``"auto"`` (``umol`` when the file name says FLUXDATAKIT or PLUMBER, else ``gC``).
    """

    partitioning: str = "NT"
    qc_threshold: float = DEFAULT_QC_THRESHOLD
    fill_forcing_gaps: int = 0
    diurnal_range: float = DEFAULT_DIURNAL_RANGE
    lai_max_gap: int = DEFAULT_LAI_MAX_GAP
    carbon_units: str = "auto"


@dataclass(frozen=True)
class SiteInfo:
    """Identity and location of a tower.

    Attributes:
        site_id: FLUXNET site id (``CC-XXX``).
        latitude: [degrees_north].
        longitude: [degrees_east].
        igbp: IGBP land-cover class, or ``""`` when unknown.
    """

    site_id: str
    latitude: float
    longitude: float
    igbp: str = ""


@dataclass(frozen=True)
class Columns:
    """The columns of one daily file that the driver is made from.

    Attributes:
        date: the date column (``TIMESTAMP`` or ``date``).
        forcing: forcing quantity (TA, SW_IN, VPD, P, and CO2 and PA when present) -> column.
        min_max: daily minimum and maximum air temperature columns, if present.
        day_night: daytime and night-time mean air temperature columns, if present.
        observations: observed quantity (NEE, GPP, RECO, LE) -> column, for those present.
        qc: observed quantity -> its QC column, where present.
        carbon_units: ``"gC"`` or ``"umol"``: units of NEE, GPP and RECO in the file.
    """

    date: str
    forcing: dict[str, str]
    min_max: tuple[str, str] | None
    day_night: tuple[str, str] | None
    observations: dict[str, str]
    qc: dict[str, str]
    carbon_units: str


# --- reading ----------------------------------------------------------------------------------


def date_column(columns: Sequence[str], path: Path, table: pd.DataFrame | None = None
                ) -> str | None:
    """The column holding the day of each row, or ``None`` when there is none.

    A ``TIMESTAMP_START`` column counts when its stamps (``YYYYMMDDHHMM``) all start at
    midnight one day apart (a daily file with start/end stamps).

    Raises:
        RecipeError: a sub-daily file (``TIMESTAMP_START`` at other times of day).
    """
    if DATE_COLUMNS[0] in columns:
        return DATE_COLUMNS[0]
    lower = {str(name).lower(): name for name in columns}
    if DATE_COLUMNS[1] in lower:
        return lower[DATE_COLUMNS[1]]
    if any(name in columns for name in SUB_DAILY_COLUMNS):
        start = SUB_DAILY_COLUMNS[0]
        if table is not None and start in table.columns and _daily_stamps(table[start]):
            return start
        raise recipe_error(path, "a half-hourly or hourly file (TIMESTAMP_START); give the "
                                 "daily (DD) file", start)
    return None


def _daily_stamps(values: pd.Series) -> bool:
    """Whether ``YYYYMMDD[0000]`` stamps all fall at midnight and step by one day."""
    text = values.astype("string").str.strip().dropna()
    if text.size < 2 or not text.str.fullmatch(r"\d{8}(?:0000)?").all():
        return False
    days = pd.to_datetime(text.str[:8], format="%Y%m%d", errors="coerce")
    return bool(days.notna().all() and (np.diff(days.to_numpy()).astype("timedelta64[D]")
                                        == np.timedelta64(1, "D")).all())


def _delimiter(path: Path) -> str:
    """The field separator of a CSV: the one of ``,``, ``;`` and tab its header holds most."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as stream:
            header = stream.readline()
    except (OSError, EOFError):
        return ","
    counts = {separator: header.count(separator) for separator in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def parse_dates(values: pd.Series, path: Path, column: str) -> pd.DatetimeIndex:
    """Days of the rows, in the format of the first row (see :data:`DATE_FORMATS`).

    Raises:
        RecipeError: no rows, or a row whose date is missing or not in the file's format
            (naming the row, counting the header as row 1).
    """
    text = values.astype("string").str.strip()
    # whole numbers written as decimals by a spreadsheet (20020101.0); midnight start stamps
    text = text.str.replace(r"^(\d{8})(?:0000)?(?:\.0*)?$", r"\1", regex=True)
    if text.size == 0:
        raise recipe_error(path, "no rows", column)
    first = text.iloc[0]
    expected = " or ".join(DATE_FORMATS)
    label = next((name for name, (pattern, _) in DATE_FORMATS.items()
                  if not pd.isna(first) and pattern.fullmatch(first)), None)
    if label is None:
        raise recipe_error(path, f"row 2 ({first!r}) is not a {expected} date (is this a "
                                 "daily DD file?)", column)
    pattern, date_format = DATE_FORMATS[label]
    matches = text.str.fullmatch(pattern.pattern).fillna(False).to_numpy(bool)
    dates = pd.to_datetime(text.where(matches), format=date_format, errors="coerce")
    bad = np.asarray(dates.isna())
    if bad.any():
        row = int(np.argmax(bad))
        raise recipe_error(path, f"row {row + 2} ({text.iloc[row]!r}) is not a {label} date "
                                 "like the first row", column)
    return pd.DatetimeIndex(dates, name="date")


def _without_units_row(table: pd.DataFrame, column: str, path: Path,
                       notes: list[tuple[str, str]] | None) -> pd.DataFrame:
    """``table`` without a first row of units or descriptions (a date column that is not a
    date there but is one in the next row), with a note saying so."""
    if len(table) < 2:
        return table
    first, second = (str(value).strip() for value in table[column].iloc[:2])
    def is_date(text: str) -> bool:
        text = re.sub(r"^(\d{8})(?:0000)?(?:\.0*)?$", r"\1", text)
        return any(pattern.fullmatch(text) for pattern, _ in DATE_FORMATS.values())

    if is_date(first) or not is_date(second):
        return table
    if notes is not None:
        notes.append(("note", f"{path}: row 2 ({first!r} under {column}) is not data (a row "
                              "of units?); skipped"))
    return table.iloc[1:].reset_index(drop=True)


def read_fluxnet_table(path: Path, options: RecipeOptions | None = None,
                       notes: list[tuple[str, str]] | None = None
                       ) -> tuple[pd.DataFrame, str]:
    """Read a daily FLUXNET-style CSV: gaps become NaN, rows are indexed by date.

    The separator (comma, semicolon or tab) is taken from the header; column names are
    matched whatever their case; a first row of units under the header is skipped (with a
    note in ``notes``).

    Args:
        path: the CSV file (optionally gzip-compressed).
        options: recipe options; without a date column, the error lists every required column
            the file lacks for these options (see :func:`resolve_columns`).
        notes: list that receives ``("note", text)`` notices.

    Returns:
        ``(float columns indexed by a daily DatetimeIndex named date, name of the date
        column)``; -9999, empty, ``NA``, ``NaN`` and infinite values are NaN.

    Raises:
        RecipeError: unreadable file, no date column, bad dates, or a time axis that is not
            strictly increasing by exactly one day.
    """
    try:
        table = pd.read_csv(path, dtype=str, na_values=list(MISSING_TEXT),
                            keep_default_na=True, encoding="utf-8-sig", low_memory=False,
                            sep=_delimiter(path))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        message = " ".join(str(error).split())[:200]
        raise recipe_error(path, f"cannot read as CSV ({type(error).__name__}: {message})"
                           ) from error
    # column names as the FLUXNET products spell them, whatever the case of the file
    table.columns = [name if name.lower() == DATE_COLUMNS[1] else name.upper()
                     for name in (str(name).strip() for name in table.columns)]
    column = date_column(list(table.columns), path, table)
    if column is None:
        resolve_columns(table, None, options or RecipeOptions(), path)
    table = _without_units_row(table, column, path, notes)
    dates = parse_dates(table.pop(column), path, column)
    table = table.drop(columns=[name for name in SUB_DAILY_COLUMNS if name in table.columns])
    check_daily_axis(dates.to_numpy(), path, column)
    numeric = table.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    values = numeric.to_numpy(copy=True)
    values[~np.isfinite(values) | (values == MISSING_VALUE)] = np.nan
    return pd.DataFrame(values, index=dates, columns=numeric.columns), column


def check_daily_axis(dates: np.ndarray, source: Path, column: str) -> None:
    """Check that dates increase by exactly one day at each row.

    Raises:
        RecipeError: fewer than two rows, a non-increasing step or a gap (naming the dates).
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    if days.size < 2:
        raise recipe_error(source, f"only {days.size} row(s); at least 2 days are needed",
                           column)
    steps = np.diff(days).astype(np.int64)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise recipe_error(source, f"time is not strictly increasing ({days[i]} then "
                                   f"{days[i + 1]})", column)
    if np.any(steps != 1):
        i = int(np.argmax(steps != 1))
        raise recipe_error(source, f"time gap: {steps[i] - 1} missing day(s) between "
                                   f"{days[i]} and {days[i + 1]}", column)


def _first_present(table: pd.DataFrame, alternates: Sequence[str]) -> str | None:
    """The first of ``alternates`` that holds a value, else the first present, else None."""
    present = [name for name in alternates if name in table.columns]
    filled = (name for name in present if table[name].notna().any())
    return next(filled, present[0] if present else None)


def carbon_units_of(path: Path, choice: str) -> str:
    """``"gC"`` or ``"umol"``: the units of the carbon fluxes of ``path`` (see RecipeOptions)."""
    if choice != "auto":
        return choice
    return "umol" if _MEAN_FLUX_NAME.search(path.name) else "gC"


def resolve_columns(table: pd.DataFrame, date: str | None, options: RecipeOptions,
                    source: Path) -> Columns:
    """Choose the column of each quantity among its alternates.

    ``date`` is the date column found by :func:`date_column`; ``None`` (no date column) is
    reported with the other missing columns.

    The first alternate present that holds at least one value is chosen (else the first
    present). Only the date and the forcing are required: an observed quantity without a
    column is left out of the driver, and one without a QC column (``<column>_QC``) is not
    QC-masked (see :func:`observation_notes`).

    Raises:
        RecipeError: one line listing every missing required column, each with its accepted
            alternates in parentheses.
    """
    missing: list[str] = [] if date is not None else [
        f"{DATE_COLUMNS[0]} (or {DATE_COLUMNS[1]}) with YYYYMMDD or YYYY-MM-DD dates"]

    def choose(alternates: Sequence[str]) -> str | None:
        column = _first_present(table, alternates)
        if column is None:
            others = f" (or {', '.join(alternates[1:])})" if len(alternates) > 1 else ""
            missing.append(alternates[0] + others)
        return column

    forcing = {quantity: choose(alternates) for quantity, alternates in FORCING_ALTERNATES.items()}
    for quantity, alternates in OPTIONAL_FORCING_ALTERNATES.items():
        column = _first_present(table, alternates)
        if column is not None:
            forcing[quantity] = column
    method = options.partitioning
    observations = {}
    for quantity, alternates in OBSERVATION_ALTERNATES.items():
        column = _first_present(table, [name.format(method=method) for name in alternates])
        if column is not None:
            observations[quantity] = column
    qc = {quantity: column + QC_SUFFIX for quantity, column in observations.items()
          if column + QC_SUFFIX in table.columns}
    if missing:
        raise recipe_error(source, f"missing {len(missing)} required column(s): "
                                   f"{'; '.join(missing)}")
    min_max = next((pair for pair in MIN_MAX_ALTERNATES
                    if all(name in table.columns for name in pair)), None)
    mean = forcing["TA"]
    pairs = [tuple(name + suffix for suffix in DAY_NIGHT_SUFFIXES)
             for name in (mean, *FORCING_ALTERNATES["TA"])]
    day_night = next((pair for pair in pairs if all(name in table.columns for name in pair)),
                     None)
    return Columns(date, forcing, min_max, day_night, observations, qc,
                   carbon_units_of(source, options.carbon_units))


def site_from_file_name(path: Path) -> str | None:
    """Site id in an official file name (``FLX_US-Ha1_FLUXNET2015_FULLSET_DD_...``,
    ``FLX_CH-Lae_FLUXDATAKIT_FULLSET_DD_...``, ``AMF_US-Ha1_FLUXNET_...``), if any."""
    match = _SITE_IN_NAME.match(path.name)
    return match["site"] if match else None


def read_site_info(path: Path, site_id: str) -> SiteInfo:
    """The row of ``site_id`` in a CSV with columns SITE_ID, LAT, LON and optional IGBP.

    Column names are matched case-insensitively.

    Raises:
        RecipeError: unreadable file, missing column, site not listed or a bad coordinate.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            names = {name.strip().upper(): name for name in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    absent = [column for column in SITE_INFO_COLUMNS if column not in names]
    if absent:
        raise recipe_error(path, f"missing column(s): {', '.join(absent)}")
    matches = [row for row in rows if (row[names["SITE_ID"]] or "").strip() == site_id]
    if not matches:
        raise recipe_error(path, f"site {site_id} is not listed", "SITE_ID")
    row = matches[0]
    latitude = _coordinate(row[names["LAT"]], -90.0, 90.0, path, "LAT")
    longitude = _coordinate(row[names["LON"]], -180.0, 360.0, path, "LON")
    igbp = (row[names["IGBP"]] or "").strip() if "IGBP" in names else ""
    return SiteInfo(site_id, latitude, longitude, igbp)


def _coordinate(text: str, lower: float, upper: float, source: Path, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError) as error:
        raise recipe_error(source, f"{text!r} is not a number", column) from error
    if not lower <= value <= upper:
        raise recipe_error(source, f"{value} is outside [{lower}, {upper}]", column)
    return value


# --- forcing ----------------------------------------------------------------------------------


def gap_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of the runs of NaN in a 1-D array."""
    missing = np.concatenate([[False], np.isnan(values), [False]])
    edges = np.flatnonzero(np.diff(missing.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def fill_short_gaps(values: np.ndarray, max_days: int) -> np.ndarray:
    """Fill interior runs of at most ``max_days`` NaN by linear interpolation in time.

    Runs that touch either end of the record, and longer runs, stay NaN.

    Args:
        values: daily series, NaN at gaps.
        max_days: longest run filled [d].

    Returns:
        A filled copy.
    """
    filled = np.array(values, dtype=np.float64)
    index = np.arange(filled.size)
    for start, stop in gap_runs(filled):
        if stop - start <= max_days and start > 0 and stop < filled.size:
            span = index[start:stop]
            filled[start:stop] = np.interp(span, [start - 1, stop],
                                           [filled[start - 1], filled[stop]])
    return filled


def gap_free(table: pd.DataFrame, column: str, max_fill: int, source: Path
             ) -> tuple[np.ndarray, int]:
    """A forcing column without gaps, after filling runs of at most ``max_fill`` days.

    Returns:
        ``(values, number of days filled)``.

    Raises:
        RecipeError: gaps remain (the message gives their number, the first date, the longest
            run and what to do).
    """
    raw = table[column].to_numpy()
    values = fill_short_gaps(raw, max_fill)
    runs = gap_runs(values)
    if runs:
        longest = max(stop - start for start, stop in runs)
        first = table.index[runs[0][0]].date()
        at_edge = runs[0][0] == 0 or runs[-1][1] == values.size
        remedy = ("the record starts or ends with missing days: cut them from the CSV"
                  if at_edge else f"fill them, or pass --fill-forcing-gaps {longest} to "
                                  f"interpolate runs of up to {longest} days")
        raise recipe_error(source, f"{int(np.isnan(values).sum())} missing day(s) in the "
                                   f"forcing (first {first}, longest run {longest} d); the "
                                   f"model needs gap-free forcing: {remedy}", column)
    return values, int(np.isnan(raw).sum())


def _has_range(low: np.ndarray, high: np.ndarray) -> bool:
    """Whether ``high > low`` on at least one day where both are known."""
    known = np.isfinite(low) & np.isfinite(high)
    return bool(np.any(high[known] > low[known]))


def temperature_range(table: pd.DataFrame, mean: np.ndarray, columns: Columns,
                      diurnal_range: float, warnings: list[str] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """Daily minimum and maximum air temperature [degC].

    Rule, day by day: the minimum/maximum columns (``TMIN_F_MDS``/``TMAX_F_MDS``, ...) where
    both are known; else ``TA -+ (pi/4) (TA_DAY - TA_NIGHT)`` where the daytime and night-time
    means are known (a sinusoidal daily cycle with equal day and night, whose half-period means
    are ``TA +- 2A/pi``; a negative day-night difference counts as 0); else
    ``TA -+ diurnal_range / 2``. A pair of columns that never differ (no diurnal range) is not
    used.

    Args:
        table: the DD table.
        mean: gap-free daily mean air temperature [degC].
        columns: the columns chosen (:func:`resolve_columns`).
        diurnal_range: fallback daily maximum minus minimum [degC].
        warnings: list that receives a warning when a pair of columns has no diurnal range,
            or when the result has none or comes from the mean alone on every day.

    Returns:
        ``(t_min, t_max, description of the rule applied)``.
    """
    warnings = [] if warnings is None else warnings
    name = columns.forcing["TA"]
    half = diurnal_range / 2.0
    t_min, t_max = mean - half, mean + half
    sources = np.full(mean.shape, 2, np.int8)
    rules = {2: f"{name} -+ {half:g} degC (fixed diurnal range)"}
    if columns.day_night is not None:
        day, night = (table[column].to_numpy() for column in columns.day_night)
        if _has_range(night, day):
            known = np.isfinite(day) & np.isfinite(night)
            amplitude = SINE_DAY_NIGHT_FACTOR * np.maximum(day - night, 0.0)
            t_min = np.where(known, mean - amplitude, t_min)
            t_max = np.where(known, mean + amplitude, t_max)
            sources[known] = 1
            rules[1] = f"{name} -+ (pi/4)({columns.day_night[0]} - {columns.day_night[1]})"
        else:
            warnings.append(f"{columns.day_night[0]} is never above {columns.day_night[1]} (no "
                         "diurnal range); not used")
    if columns.min_max is not None:
        low, high = (table[column].to_numpy() for column in columns.min_max)
        if _has_range(low, high):
            known = np.isfinite(low) & np.isfinite(high)
            t_min = np.where(known, low, t_min)
            t_max = np.where(known, high, t_max)
            sources[known] = 0
            rules[0] = f"{columns.min_max[0]} and {columns.min_max[1]}"
        else:
            warnings.append(f"{columns.min_max[0]} equals {columns.min_max[1]} on every day (no "
                         "diurnal range); not used")
    counts = np.bincount(sources, minlength=3)
    rule = "; ".join(f"{rules[index]} on {counts[index]} day(s)" for index in sorted(rules)
                     if counts[index])
    if not np.any(t_max > t_min):
        warnings.append(f"T2M_MIN equals T2M_MAX on every day (no diurnal range): {rule}")
    elif counts[2] == mean.size:
        warnings.append(f"no daily minimum/maximum or day/night air temperature columns with a "
                     f"diurnal range; T2M_MIN and T2M_MAX are {name} -+ {half:g} degC "
                     f"(--diurnal-range {diurnal_range:g}) on every day")
    return t_min, t_max, rule


def forcing_variables(table: pd.DataFrame, columns: Columns, options: RecipeOptions,
                      source: Path, notes: list[tuple[str, str]] | None = None
                      ) -> dict[str, tuple[np.ndarray, str]]:
    """Driver forcing series from the gap-filled columns, in model units.

    Without a CO2 column (or with one holding no value), CO2 is the background record
    (:func:`recipe_common.background_co2`) and ``notes`` receives a ``("note", text)`` saying
    so; the warnings of :func:`temperature_range` arrive as ``("warning", text)``.

    Returns:
        Driver variable -> ``(values, how it was derived)``.

    Raises:
        RecipeError: a gap remains after filling, or the record lies outside the years of the
            background CO2 record when it is needed.
    """
    notes = [] if notes is None else notes
    chosen = dict(columns.forcing)
    co2_column = chosen.get("CO2")
    if co2_column is not None and not np.isfinite(table[co2_column].to_numpy()).any():
        notes.append(("note", f"{source}: {co2_column} holds no value; CO2 is the "
                              "background record"))
        del chosen["CO2"]
    values, filled = {}, {}
    for quantity, column in chosen.items():
        values[quantity], count = gap_free(table, column, options.fill_forcing_gaps, source)
        filled[quantity] = f"; {count} day(s) linearly interpolated" if count else ""
    ta = chosen["TA"]
    mean = converted(values["TA"], FORCING_UNITS["TA"], "t_min", source, ta)
    warnings: list[str] = []
    t_min, t_max, rule = temperature_range(table, mean, columns, options.diurnal_range,
                                           warnings)
    notes.extend(("warning", f"{source}: {text}") for text in warnings)
    out = {"T2M_MIN": (t_min, rule + filled["TA"]), "T2M_MAX": (t_max, rule + filled["TA"])}
    for name, quantity in DRIVER_FORCING.items():
        field = _FORCING_FIELD[name]
        if quantity not in chosen:
            continue
        column, units = chosen[quantity], FORCING_UNITS[quantity]
        out[name] = (converted(values[quantity], units, field, source, column),
                     f"{column} [{units}] in {FORCING_VARIABLES[field].units}"
                     f"{filled[quantity]}")
    if "CO2" not in chosen:
        record = co2_record_path()
        out["CO2"] = (background_co2(table.index.to_numpy()),
                      f"{BACKGROUND_CO2_RULE} differland/data/{record.name} (annual means, "
                      "linear in time between mid-years)")
        if co2_column is None:
            accepted = ", ".join(OPTIONAL_FORCING_ALTERNATES["CO2"])
            notes.append(("note", f"{source}: no CO2 column ({accepted}); CO2 is the "
                                  f"global-mean background record differland/data/"
                                  f"{record.name} (CMIP6 historical + SSP2-4.5)"))
    out["DOY"] = (table.index.day_of_year.to_numpy().astype(np.float64),
                  f"day of year of {columns.date}")
    if "PA" in values:
        out["PA"] = (values["PA"], f"{chosen['PA']} [{PA_UNITS}]{filled['PA']}")
    return out


def converted(values: np.ndarray, units: str, field: str, source: Path, column: str
              ) -> np.ndarray:
    """Values of a FLUXNET column in ``units`` converted to the units of forcing ``field``."""
    scale, offset = linear_conversion(units, FORCING_VARIABLES[field].units, source, column)
    return values * scale + offset


# --- observations -----------------------------------------------------------------------------


def qc_masked(values: np.ndarray, qc: np.ndarray, threshold: float) -> np.ndarray:
    """``values`` with NaN where the QC fraction is below ``threshold`` or missing."""
    with np.errstate(invalid="ignore"):
        good = np.isfinite(qc) & (qc >= threshold)
    return np.where(good, values, np.nan)


def percentile_spread(table: pd.DataFrame, stem: str) -> np.ndarray | None:
    """Half the 16th-84th percentile spread, ``(X_84 - X_16) / 2``, a 1-sigma estimate."""
    low, high = f"{stem}_16", f"{stem}_84"
    if low in table.columns and high in table.columns:
        return (table[high].to_numpy() - table[low].to_numpy()) / 2.0
    return None


def observation_variables(table: pd.DataFrame, columns: Columns, options: RecipeOptions
                          ) -> dict[str, tuple[np.ndarray, str]]:
    """GPP, RECO, NBE, ET and their uncertainties, QC-masked, in model units.

    Carbon fluxes in umol CO2 m-2 s-1 (``columns.carbon_units == "umol"``) are converted with
    :data:`UMOL_TO_GC_PER_DAY`. GPP and RECO use their own QC column where present, else that of
    NEE; with ``qc_threshold`` 0 a missing QC column masks nothing.

    Returns:
        Driver variable -> ``(values, how it was derived)``; uncertainty variables only where
        their columns exist.
    """
    threshold = options.qc_threshold
    names = columns.observations
    scale = UMOL_TO_GC_PER_DAY if columns.carbon_units == "umol" else 1.0
    unit_rule = (f" [{CARBON_UNITS['umol']}] x {UMOL_TO_GC_PER_DAY:.6g}" if scale != 1.0
                 else "")
    ones = np.ones(len(table))

    def qc_of(quantity: str) -> tuple[np.ndarray, str]:
        column = columns.qc.get(quantity, columns.qc.get("NEE"))
        if column is None:
            return ones, "no QC column"
        return table[column].to_numpy(), column

    out = {}
    for name, quantity in (("NBE", "NEE"), ("GPP", "GPP"), ("RECO", "RECO")):
        if quantity not in names:
            continue
        qc, qc_name = qc_of(quantity)
        out[name] = (qc_masked(table[names[quantity]].to_numpy() * scale, qc, threshold),
                     f"{names[quantity]}{unit_rule} where {qc_name} >= {threshold:g}")
    if "LE" in names:
        le_qc, le_qc_name = (table[columns.qc["LE"]].to_numpy(), columns.qc["LE"]) \
            if "LE" in columns.qc else (ones, "no QC column")
        out["ET"] = (qc_masked(table[names["LE"]].to_numpy() * LATENT_HEAT_TO_ET, le_qc,
                               threshold),
                     f"{names['LE']} x 86400 / 2.45e6 where {le_qc_name} >= {threshold:g}")
    uncertainties = {}
    if "NEE" in names:
        nee = names["NEE"]
        uncertainties["NBEunc"] = (_scaled(_column(table, f"{nee}_JOINTUNC"), scale),
                                   f"{nee}_JOINTUNC{unit_rule}")
    for name, quantity in (("GPPunc", "GPP"), ("RECOunc", "RECO")):
        if quantity in names:
            column = names[quantity]
            uncertainties[name] = (
                _scaled(percentile_spread(table, column.removesuffix("_REF")), scale),
                f"({column[:-4]}_84 - {column[:-4]}_16) / 2{unit_rule}")
    if "LE" in names:
        uncertainties["ETunc"] = (_scaled(_column(table, "LE_RANDUNC"), LATENT_HEAT_TO_ET),
                                  "LE_RANDUNC x 86400 / 2.45e6")
    for name, (sigma, rule) in uncertainties.items():
        if sigma is not None:
            values = out[name.removesuffix("unc")][0]
            out[name] = (np.where(np.isfinite(values), sigma, np.nan), rule)
    return out


def observation_notes(columns: Columns, options: RecipeOptions, source: Path) -> list[str]:
    """Notes on the observed quantities a file lacks, or whose QC column it lacks."""
    absent = [quantity for quantity in OBSERVATION_ALTERNATES
              if quantity not in columns.observations]
    notes = []
    if absent:
        accepted = "; ".join(" or ".join(name.format(method=options.partitioning)
                                         for name in OBSERVATION_ALTERNATES[quantity])
                             for quantity in absent)
        notes.append(f"{source}: no column for {', '.join(absent)} ({accepted}); the driver "
                     "does not observe it")
    if options.qc_threshold > 0:
        unmasked = [column for quantity, column in columns.observations.items()
                    if quantity not in columns.qc
                    and not (quantity in ("GPP", "RECO") and "NEE" in columns.qc)]
        if unmasked:
            notes.append(f"{source}: no QC column for {', '.join(unmasked)}; not QC-masked")
    return notes


def _column(table: pd.DataFrame, column: str) -> np.ndarray | None:
    return table[column].to_numpy() if column in table.columns else None


def _scaled(values: np.ndarray | None, factor: float) -> np.ndarray | None:
    return None if values is None else values * factor


# --- LAI --------------------------------------------------------------------------------------


def read_lai_samples(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """LAI samples from a CSV (date, LAI[, LAI_unc]) or a NetCDF (time, LAI[, LAI_unc]).

    Returns:
        ``(dates as datetime64[D], LAI [m2 m-2], 1-sigma uncertainty or None)``, with NaN at
        missing samples.

    Raises:
        RecipeError: unreadable file, missing column or variable, bad dates, units not
            convertible to m2 m-2, or dates that are not strictly increasing.
    """
    if path.suffix.lower() in {".nc", ".nc4", ".netcdf", ".cdf"}:
        dates, lai, sigma = _lai_from_netcdf(path)
    else:
        dates, lai, sigma = _lai_from_csv(path)
    steps = np.diff(dates).astype(np.int64)
    if dates.size == 0 or np.any(steps <= 0):
        i = int(np.argmax(steps <= 0)) if dates.size else 0
        where = f" ({dates[i]} then {dates[i + 1]})" if dates.size > 1 else ""
        raise recipe_error(path, f"LAI dates are empty or not strictly increasing{where}",
                           "time")
    return dates, lai, sigma


def _lai_from_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        table = pd.read_csv(path, na_values=["-9999", "-9999.0"])
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    names = {str(name).strip().lower(): name for name in table.columns}
    for column in ("date", "lai"):
        if column not in names:
            raise recipe_error(path, "missing column", column)
    dates = pd.to_datetime(table[names["date"]], errors="coerce")
    if dates.isna().any():
        raise recipe_error(path, "unparsable date(s)", "date")
    lai = pd.to_numeric(table[names["lai"]], errors="coerce").to_numpy(np.float64)
    unc_name = names.get("lai_unc", names.get("laiunc"))
    sigma = (pd.to_numeric(table[unc_name], errors="coerce").to_numpy(np.float64)
             if unc_name is not None else None)
    return dates.to_numpy().astype("datetime64[D]"), lai, sigma


def _lai_from_netcdf(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        with xr.open_dataset(path) as dataset:
            dataset = dataset.load()
    except (OSError, ValueError, RuntimeError) as error:
        raise recipe_error(path, f"cannot read as NetCDF ({type(error).__name__})") from error
    names = {str(name).lower(): name for name in dataset.data_vars}
    if "lai" not in names:
        raise recipe_error(path, "missing variable", "LAI")
    lai = dataset[names["lai"]]
    if lai.dims != ("time",) or not np.issubdtype(dataset["time"].dtype, np.datetime64):
        raise recipe_error(path, "expected a 1-D variable along a CF time axis", "LAI")
    target = OBSERVATION_VARIABLES["lai"].units
    scale, offset = linear_conversion(lai.attrs.get("units", target), target, path, "LAI")
    values = lai.to_numpy().astype(np.float64) * scale + offset
    unc_name = names.get("lai_unc", names.get("laiunc"))
    sigma = None
    if unc_name is not None:
        sigma = dataset[unc_name].to_numpy().astype(np.float64) * scale
    return dataset["time"].to_numpy().astype("datetime64[D]"), values, sigma


def daily_interpolation(sample_dates: np.ndarray, samples: np.ndarray, dates: np.ndarray,
                        max_gap: int) -> np.ndarray:
    """Interpolate samples linearly to daily dates.

    Days before the first or after the last valid sample, and days inside an interval of more
    than ``max_gap`` days between valid samples, are NaN.

    Args:
        sample_dates: strictly increasing sample dates, ``datetime64[D]``.
        samples: sample values (NaN: missing, skipped).
        dates: daily target dates, ``datetime64[D]``.
        max_gap: longest interval between valid samples interpolated across [d].

    Returns:
        Daily values, NaN where not interpolated.
    """
    valid = np.isfinite(samples)
    x = sample_dates[valid].astype(np.int64)
    y = samples[valid]
    target = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)
    if x.size == 0:
        return np.full(target.shape, np.nan)
    values = np.interp(target, x, y)
    right = np.searchsorted(x, target, side="left").clip(0, x.size - 1)
    left = (right - 1).clip(0, x.size - 1)
    exact = x[right] == target
    interval = np.where(exact, 0, x[right] - x[left])
    inside = (target >= x[0]) & (target <= x[-1]) & (interval <= max_gap)
    return np.where(inside, values, np.nan)


def lai_variables(path: Path, dates: np.ndarray, max_gap: int
                  ) -> dict[str, tuple[np.ndarray, str]]:
    """LAI and LAIunc on the driver's days (see :func:`daily_interpolation`)."""
    sample_dates, lai, sigma = read_lai_samples(path)
    rule = f"linear interpolation of {path.name} (no interpolation across > {max_gap} d)"
    out = {"LAI": (daily_interpolation(sample_dates, lai, dates, max_gap), rule)}
    if sigma is not None:
        out["LAIunc"] = (daily_interpolation(sample_dates, sigma, dates, max_gap), rule)
    if not np.isfinite(out["LAI"][0]).any():
        raise recipe_error(path, "no LAI sample overlaps the FLUXNET record", "LAI")
    return out


# --- driver -----------------------------------------------------------------------------------


VARIABLE_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "T2M_MIN": ("daily minimum air temperature", FORCING_VARIABLES["t_min"].units),
    "T2M_MAX": ("daily maximum air temperature", FORCING_VARIABLES["t_max"].units),
    "SSRD": ("incoming shortwave radiation", FORCING_VARIABLES["ssrd"].units),
    "CO2": ("atmospheric CO2 mole fraction", FORCING_VARIABLES["co2"].units),
    "DOY": ("day of year", FORCING_VARIABLES["doy"].units),
    "VPD": ("vapour pressure deficit", FORCING_VARIABLES["vpd"].units),
    "TOTAL_PREC": ("precipitation", FORCING_VARIABLES["precipitation"].units),
    "PA": ("air pressure (unused by the model)", PA_UNITS),
    "GPP": ("gross primary production", OBSERVATION_VARIABLES["gpp"].units),
    "RECO": ("ecosystem respiration", OBSERVATION_VARIABLES["reco"].units),
    "NBE": ("net ecosystem exchange, positive = carbon to the atmosphere",
            OBSERVATION_VARIABLES["nee"].units),
    "ET": ("evapotranspiration", OBSERVATION_VARIABLES["et"].units),
    "LAI": ("leaf area index", OBSERVATION_VARIABLES["lai"].units),
}
"""Driver variable -> (long name, units); ``<X>unc`` share the units of ``X``."""

assert set(FORCING_SERIES.values()) <= set(VARIABLE_DESCRIPTIONS), "every forcing series named"


def _attrs(name: str, rule: str) -> dict[str, str]:
    base = name.removesuffix("unc")
    long_name, units = VARIABLE_DESCRIPTIONS[base]
    if name != base:
        long_name = f"1-sigma uncertainty of {long_name}"
    return {"long_name": long_name, "units": units, "source": rule}


def site_dataset(dates: pd.DatetimeIndex, series: dict[str, tuple[np.ndarray, str]],
                 site: SiteInfo, attrs: dict[str, str]) -> xr.Dataset:
    """Assemble the CARDAMOM-layout driver.

    Args:
        dates: daily dates of the rows.
        series: driver variable -> (daily values in model units, derivation).
        site: the tower.
        attrs: global (provenance) attributes.

    Returns:
        The driver dataset (int64 time in days since 2001-01-01, float64 series).
    """
    days = (dates.to_numpy().astype("datetime64[D]") - MODEL_EPOCH).astype(np.int64)
    time = xr.Variable((TIME,), days, {"units": "days since 2001-01-01 00:00:00",
                                       "calendar": "standard", "standard_name": "time",
                                       "long_name": "time", "axis": "T"})
    variables = {name: xr.Variable((TIME,), values.astype(np.float64), _attrs(name, rule))
                 for name, (values, rule) in series.items()}
    variables[LATITUDE_VARIABLE] = xr.Variable((), np.float64(site.latitude),
                                               {"long_name": "latitude of the tower",
                                                "units": "degrees_north"})
    variables["LON"] = xr.Variable((), np.float64(site.longitude),
                                   {"long_name": "longitude of the tower",
                                    "units": "degrees_east"})
    global_attrs = {"title": f"differland site driver for {site.site_id}",
                    "Conventions": "CF-1.8", "site_id": site.site_id, "igbp": site.igbp,
                    **attrs}
    return xr.Dataset(variables, coords={TIME: time}, attrs=global_attrs)


def qc_summary(observations: dict[str, tuple[np.ndarray, str]], table: pd.DataFrame,
               columns: Columns) -> dict[str, int]:
    """Number of days per observation that the QC threshold turned into gaps."""
    raw = {"NBE": "NEE", "GPP": "GPP", "RECO": "RECO", "ET": "LE"}
    return {name: int((table[columns.observations[quantity]].notna()
                       & np.isnan(observations[name][0])).sum())
            for name, quantity in raw.items() if quantity in columns.observations}


OBSERVATION_STREAMS = ("GPP", "RECO", "NBE", "ET", "LAI")
"""Observation variables counted in the summary line."""


def summary_line(dataset: xr.Dataset, out: Path) -> str:
    """One line describing a written driver: site, path, dates, days, valid days per stream."""
    days = MODEL_EPOCH + dataset[TIME].to_numpy().astype("timedelta64[D]")
    streams = ", ".join(f"{name} {int(np.isfinite(dataset[name].to_numpy()).sum())}"
                        for name in OBSERVATION_STREAMS if name in dataset)
    return (f"{PROG}: wrote {dataset.attrs['site_id']} to {out}: {days[0]} to {days[-1]}, "
            f"{days.size} days; valid days per observation: {streams}")


def write_validated(path: Path, dataset: xr.Dataset) -> None:
    """Write the driver atomically after checking that :func:`read_site_driver` accepts it.

    Raises:
        RecipeError: the driver fails the reader's validation (e.g. implausible forcing).
    """

    def write(target: Path) -> None:
        write_dataset(target, dataset)
        try:
            read_site_driver(target)
        except DriverError as error:
            message = str(error).removeprefix(f"{target}: ")
            raise recipe_error(path, f"the driver fails validation: {message}") from error

    replace_atomically(path, write, RECIPE)


def build_site_driver(csv_path: Path, site: SiteInfo, out: Path, options: RecipeOptions,
                      lai_path: Path | None = None, site_info_path: Path | None = None,
                      notes: list[tuple[str, str]] | None = None) -> xr.Dataset:
    """Convert a daily FLUXNET-style CSV (and optional LAI) to a site driver file.

    The caller checks beforehand that ``out`` may be written (:func:`recipe_common.check_output`).

    Args:
        csv_path: the FLUXNET2015 / ONEFlux / FluxDataKit daily CSV.
        site: tower identity and location.
        out: output NetCDF path.
        options: recipe options.
        lai_path: optional LAI CSV or NetCDF.
        site_info_path: the site table the location came from (for provenance).
        notes: list that receives ``(kind, text)`` notices (``"note"``) and warnings
            (``"warning"``) for the user, one line each.

    Returns:
        The dataset written.

    Raises:
        RecipeError: malformed input (see the individual readers); every check runs before
            the output is written.
    """
    notes = [] if notes is None else notes
    table, date = read_fluxnet_table(csv_path, options, notes)
    columns = resolve_columns(table, date, options, csv_path)
    carbon = [quantity for quantity in ("NEE", "GPP", "RECO")
              if quantity in columns.observations]
    if options.carbon_units == "auto" and columns.carbon_units == "umol" and carbon:
        notes.append(("note", f"{csv_path}: {', '.join(carbon)} read as daily means in umol "
                              "CO2 m-2 s-1 (FluxDataKit file name); pass --carbon-units gC if "
                              "they are gC m-2 d-1"))
    series = forcing_variables(table, columns, options, csv_path, notes)
    notes.extend(("note", text) for text in observation_notes(columns, options, csv_path))
    observations = observation_variables(table, columns, options)
    series.update(observations)
    if lai_path is not None:
        series.update(lai_variables(lai_path, table.index.to_numpy(), options.lai_max_gap))
    elif LAI_COLUMN in table.columns and table[LAI_COLUMN].notna().any():
        # FluxDataKit carries the MODIS LAI of the tower's pixel
        series["LAI"] = (table[LAI_COLUMN].to_numpy(dtype=np.float64),
                         f"{LAI_COLUMN} column of {csv_path.name}")
        notes.append(("note", f"{csv_path}: LAI taken from its {LAI_COLUMN} column (give --lai "
                              "to use another record)"))
    background = series["CO2"][1].startswith(BACKGROUND_CO2_RULE)
    co2_record = co2_record_path() if background else None
    provenance = provenance_attrs(
        RECIPE, {"fluxnet_csv": csv_path, "site_info": site_info_path, "lai": lai_path,
                 "co2_background": co2_record},
        {**asdict(options), **asdict(site), "columns": asdict(columns)}, LIBRARIES)
    attrs = {**provenance, "qc_masked_days": json.dumps(qc_summary(observations, table,
                                                                   columns)),
             "nbe_sign": "positive = carbon to the atmosphere (FLUXNET NEE convention)"}
    dataset = site_dataset(table.index, series, site, attrs)
    write_validated(out, dataset)
    return dataset


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = RecipeParser(
        prog=PROG,
        description="Convert a daily FLUXNET CSV (FLUXNET2015/ONEFlux FULLSET DD or FluxDataKit "
                    "FULLSET DD) into a differland site driver (CARDAMOM layout, read by "
                    "differland.io.read_site_driver).")
    parser.add_argument("csv", type=Path,
                        help="daily CSV (TIMESTAMP or date as YYYYMMDD or YYYY-MM-DD; gaps "
                             "-9999 or NA)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output NetCDF; name it <SITE_ID>.nc (the reader's site id)")
    add_overwrite_option(parser)
    parser.add_argument("--site-info", type=Path,
                        help="CSV with SITE_ID, LAT, LON (optional IGBP) listing the site")
    parser.add_argument("--lat", type=float, help="site latitude [degrees_north]")
    parser.add_argument("--lon", type=float, help="site longitude [degrees_east]")
    parser.add_argument("--site-id", help="site id (default: from the official file name)")
    parser.add_argument("--partitioning", choices=("NT", "DT"), default="NT",
                        help="GPP/RECO partitioning method (default: NT)")
    parser.add_argument("--qc-threshold", type=float, default=DEFAULT_QC_THRESHOLD,
                        help="daily QC fraction below which an observation becomes a gap "
                             f"(default {DEFAULT_QC_THRESHOLD}; 0: QC columns optional)")
    parser.add_argument("--fill-forcing-gaps", type=int, default=0, metavar="DAYS",
                        help="linearly interpolate forcing gaps of at most DAYS days inside "
                             "the record (default 0: any gap is an error)")
    parser.add_argument("--diurnal-range", type=float, default=DEFAULT_DIURNAL_RANGE,
                        help="daily max - min temperature [degC] used where neither TMIN/TMAX "
                             f"nor day/night means exist (default {DEFAULT_DIURNAL_RANGE:g})")
    parser.add_argument("--carbon-units", choices=("auto", *CARBON_UNITS), default="auto",
                        help="units of NEE, GPP and RECO in the CSV: gC = gC m-2 d-1 "
                             "(FLUXNET2015/ONEFlux DD), umol = daily mean umol CO2 m-2 s-1 "
                             "(FluxDataKit DD); auto: umol when the file name contains "
                             "FLUXDATAKIT or PLUMBER, else gC")
    parser.add_argument("--lai", type=Path,
                        help="LAI to merge: CSV (date, LAI[, LAI_unc]) or NetCDF (time, LAI)")
    parser.add_argument("--lai-max-gap", type=int, default=DEFAULT_LAI_MAX_GAP, metavar="DAYS",
                        help="longest interval between LAI samples interpolated across "
                             f"(default {DEFAULT_LAI_MAX_GAP})")
    return parser


def site_from_arguments(arguments: argparse.Namespace) -> SiteInfo:
    """Tower identity and location from ``--site-info`` or ``--lat/--lon``.

    Raises:
        RecipeError: no usable location, or no site id.
    """
    site_id = arguments.site_id or site_from_file_name(arguments.csv)
    if arguments.site_info is not None:
        if site_id is None:
            raise recipe_error(arguments.csv, "cannot tell the site id from the file name; "
                                              "pass --site-id")
        if not arguments.site_info.is_file():
            raise recipe_error(arguments.site_info, "file does not exist")
        return read_site_info(arguments.site_info, site_id)
    if arguments.lat is None or arguments.lon is None:
        raise recipe_error("options", "give --site-info, or both --lat and --lon")
    latitude = _coordinate(str(arguments.lat), -90.0, 90.0, Path("--lat"), "LAT")
    longitude = _coordinate(str(arguments.lon), -180.0, 360.0, Path("--lon"), "LON")
    return SiteInfo(site_id or arguments.out.stem, latitude, longitude)


def run(arguments: argparse.Namespace) -> None:
    """Run the recipe on parsed arguments: check everything, write, then report.

    Notices and warnings go to stderr and a one-line summary to stdout, after the output is
    written.
    """
    for path in (arguments.csv, arguments.lai, arguments.site_info):
        if path is not None and not path.is_file():
            raise recipe_error(path, "file does not exist" if not path.exists()
                               else "not a regular file")
    if not 0.0 <= arguments.qc_threshold <= 1.0:
        raise recipe_error("--qc-threshold", f"{arguments.qc_threshold} is outside [0, 1]")
    if arguments.fill_forcing_gaps < 0 or arguments.lai_max_gap < 0:
        raise recipe_error("options", "--fill-forcing-gaps and --lai-max-gap must be >= 0")
    if not 0.0 <= arguments.diurnal_range < 60.0:
        raise recipe_error("--diurnal-range", f"{arguments.diurnal_range:g} degC is outside "
                                              "[0, 60)")
    check_output(arguments.out, RECIPE, {"fluxnet_csv": arguments.csv, "lai": arguments.lai,
                                         "site_info": arguments.site_info},
                 arguments.overwrite)
    options = RecipeOptions(arguments.partitioning, arguments.qc_threshold,
                            arguments.fill_forcing_gaps, arguments.diurnal_range,
                            arguments.lai_max_gap, arguments.carbon_units)
    site = site_from_arguments(arguments)
    notes: list[tuple[str, str]] = []
    dataset = build_site_driver(arguments.csv, site, arguments.out, options, arguments.lai,
                                arguments.site_info, notes)
    for kind, text in notes:
        note(PROG, text, kind)
    print(summary_line(dataset, arguments.out))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for malformed input)."""
    return run_main(build_parser(), run, argv, handled=(DriverError,))


if __name__ == "__main__":
    raise SystemExit(main())
