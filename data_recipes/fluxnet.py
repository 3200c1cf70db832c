"""Build a daily site driver from a FLUXNET2015 / ONEFlux FULLSET daily (DD) CSV.

    python data_recipes/fluxnet.py FLX_US-Ha1_FLUXNET2015_FULLSET_DD_1991-2012_1-4.csv \\
        --site-info sites.csv --out US-Ha1.nc [--partitioning NT|DT] [--lai LAI.csv|LAI.nc] \\
        [--qc-threshold 0.7] [--fill-forcing-gaps DAYS]

The output is the CARDAMOM-style site driver that :func:`differland.io.read_site_driver` reads:
an int64 ``time`` coordinate of days since 2001-01-01, the forcing T2M_MIN, T2M_MAX, SSRD, CO2,
DOY, VPD, TOTAL_PREC, PA, the scalars LAT and LON, and the observations GPP, RECO, NBE, ET (and
LAI when ``--lai`` is given) with their ``*unc`` uncertainties; gaps are NaN. Name the output
``<SITE_ID>.nc``: the reader takes the site id from the file name. ``docs/drivers.md`` describes
every variable and every rule used here.
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
    linear_conversion,
    provenance_attrs,
    recipe_error,
    replace_atomically,
    run_main,
)

from differland.forcing import FORCING_VARIABLES
from differland.io import OBSERVATION_VARIABLES, DriverError, read_site_driver, write_dataset
from differland.io.site import FORCING_SERIES, LATITUDE_VARIABLE, MODEL_EPOCH, TIME

RECIPE = "fluxnet"
LIBRARIES = ("cf-xarray", "pint")
"""Distributions whose versions the provenance record lists (unit handling)."""
MISSING_VALUE = -9999.0
"""FLUXNET fill value of missing data."""

SECONDS_PER_DAY = 86400.0
"""[s d-1]"""
LATENT_HEAT_OF_VAPORISATION = 2.45e6
"""Latent heat of vaporisation of water near 20 degC [J kg-1] (Allen et al. 1998, FAO-56)."""
LATENT_HEAT_TO_ET = SECONDS_PER_DAY / LATENT_HEAT_OF_VAPORISATION
"""Latent heat flux [W m-2] -> evapotranspiration [mm d-1] (1 kg m-2 of water = 1 mm)."""
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

TIMESTAMP = "TIMESTAMP"
DATE_FORMAT = "%Y%m%d"
FORCING_COLUMNS: dict[str, str] = {
    "TA_F": "degC",
    "SW_IN_F": "W m-2",
    "VPD_F": "hPa",
    "P_F": "mm d-1",
    "CO2_F_MDS": "umol mol-1",
}
"""Required gap-filled forcing columns of a DD file and their units (FLUXNET2015 format)."""
OPTIONAL_FORCING_COLUMNS: dict[str, str] = {"PA_F": PA_UNITS}
"""Forcing columns used when present."""
DRIVER_FORCING_COLUMNS: dict[str, str] = {"SSRD": "SW_IN_F", "CO2": "CO2_F_MDS", "VPD": "VPD_F",
                                          "TOTAL_PREC": "P_F"}
"""Driver forcing variable -> the column it is converted from."""
_FORCING_FIELD = {name: field for field, name in FORCING_SERIES.items()}
DAY_NIGHT_COLUMNS = ("TA_F_DAY", "TA_F_NIGHT")
MIN_MAX_COLUMNS = ("TMIN", "TMAX")
NEE_COLUMN = "NEE_VUT_REF"
LE_COLUMN = "LE_F_MDS"
SITE_INFO_COLUMNS = ("SITE_ID", "LAT", "LON")
_SITE_IN_NAME = re.compile(r"^(?:[A-Z]{2,4}_)?(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_FLUXNET")


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
    """

    partitioning: str = "NT"
    qc_threshold: float = DEFAULT_QC_THRESHOLD
    fill_forcing_gaps: int = 0
    diurnal_range: float = DEFAULT_DIURNAL_RANGE
    lai_max_gap: int = DEFAULT_LAI_MAX_GAP


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


# --- reading ----------------------------------------------------------------------------------


def read_fluxnet_table(path: Path) -> pd.DataFrame:
    """Read a FLUXNET DD CSV: -9999 becomes NaN, rows are indexed by date.

    Args:
        path: the CSV file.

    Returns:
        Float columns indexed by a daily ``DatetimeIndex`` named ``date``.

    Raises:
        RecipeError: unreadable file, no TIMESTAMP column, bad dates, or a time axis that is
            not strictly increasing by exactly one day.
    """
    try:
        table = pd.read_csv(path, dtype={TIMESTAMP: str}, na_values=["-9999", "-9999.0"],
                            low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise recipe_error(path, f"cannot read as CSV ({type(error).__name__}: {error})"
                           ) from error
    if TIMESTAMP not in table.columns:
        raise recipe_error(path, "missing column (a daily FLUXNET file has TIMESTAMP "
                                 "YYYYMMDD)", TIMESTAMP)
    dates = pd.to_datetime(table.pop(TIMESTAMP).str.strip(), format=DATE_FORMAT,
                           errors="coerce")
    if dates.isna().any():
        row = int(np.argmax(dates.isna().to_numpy()))
        raise recipe_error(path, f"row {row + 2} is not a YYYYMMDD date (is this a daily DD "
                                 "file?)", TIMESTAMP)
    check_daily_axis(dates.to_numpy(), path, TIMESTAMP)
    table.index = pd.DatetimeIndex(dates, name="date")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    return numeric.astype(np.float64)


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


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    """Raise a one-line error naming the first of ``columns`` that ``table`` lacks."""
    for column in columns:
        if column not in table.columns:
            raise recipe_error(source, "missing column", column)


def site_from_file_name(path: Path) -> str | None:
    """Site id in an official file name (``FLX_US-Ha1_FLUXNET2015_FULLSET_DD_...``), if any."""
    match = _SITE_IN_NAME.match(path.name)
    return match["site"] if match else None


def read_site_info(path: Path, site_id: str) -> SiteInfo:
    """The row of ``site_id`` in a CSV with columns SITE_ID, LAT, LON and optional IGBP.

    Column names are matched case-insensitively.

    Raises:
        RecipeError: unreadable file, missing column, site not listed or a bad coordinate.
    """
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            names = {name.strip().upper(): name for name in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    for column in SITE_INFO_COLUMNS:
        if column not in names:
            raise recipe_error(path, "missing column", column)
    matches = [row for row in rows if row[names["SITE_ID"]].strip() == site_id]
    if not matches:
        raise recipe_error(path, f"site {site_id} is not listed", "SITE_ID")
    row = matches[0]
    latitude = _coordinate(row[names["LAT"]], -90.0, 90.0, path, "LAT")
    longitude = _coordinate(row[names["LON"]], -180.0, 360.0, path, "LON")
    igbp = row[names["IGBP"]].strip() if "IGBP" in names else ""
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


def temperature_range(table: pd.DataFrame, mean: np.ndarray, diurnal_range: float
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """Daily minimum and maximum air temperature [degC].

    Rule: TMIN/TMAX when the file has them; else, each day, ``TA_F -+ (pi/4) (TA_F_DAY -
    TA_F_NIGHT)`` (a sinusoidal daily cycle with equal day and night, whose half-period means
    are ``TA_F +- 2A/pi``; a negative day-night difference counts as 0); else, and on days where
    TA_F_DAY or TA_F_NIGHT is missing, ``TA_F -+ diurnal_range / 2``.

    Args:
        table: the DD table.
        mean: gap-free daily mean air temperature (TA_F) [degC].
        diurnal_range: fallback daily maximum minus minimum [degC].

    Returns:
        ``(t_min, t_max, description of the rule applied)``.
    """
    if all(column in table.columns for column in MIN_MAX_COLUMNS):
        t_min, t_max = (table[column].to_numpy() for column in MIN_MAX_COLUMNS)
        if not (np.isnan(t_min).any() or np.isnan(t_max).any()):
            return t_min, t_max, "TMIN and TMAX columns"
    half_range = np.full(mean.shape, diurnal_range / 2.0)
    rule = f"TA_F -+ {diurnal_range / 2.0:g} degC (fixed diurnal range)"
    if all(column in table.columns for column in DAY_NIGHT_COLUMNS):
        day, night = (table[column].to_numpy() for column in DAY_NIGHT_COLUMNS)
        known = np.isfinite(day) & np.isfinite(night)
        from_day_night = SINE_DAY_NIGHT_FACTOR * np.maximum(day - night, 0.0)
        half_range = np.where(known, from_day_night, half_range)
        rule = (f"TA_F -+ (pi/4)(TA_F_DAY - TA_F_NIGHT); fixed diurnal range "
                f"{diurnal_range:g} degC on {int((~known).sum())} day(s) without day/night "
                "means")
    return mean - half_range, mean + half_range, rule


def forcing_variables(table: pd.DataFrame, options: RecipeOptions, source: Path
                      ) -> dict[str, tuple[np.ndarray, str]]:
    """Driver forcing series from the gap-filled columns, in model units.

    Returns:
        Driver variable -> ``(values, how it was derived)``.

    Raises:
        RecipeError: a required column is missing or a gap remains after filling.
    """
    require_columns(table, list(FORCING_COLUMNS), source)
    units = {**FORCING_COLUMNS, **OPTIONAL_FORCING_COLUMNS}
    values, filled = {}, {}
    for column in (column for column in units if column in table.columns):
        values[column], count = gap_free(table, column, options.fill_forcing_gaps, source)
        filled[column] = f"; {count} day(s) linearly interpolated" if count else ""
    mean = converted(values["TA_F"], units["TA_F"], "t_min", source, "TA_F")
    t_min, t_max, rule = temperature_range(table, mean, options.diurnal_range)
    out = {"T2M_MIN": (t_min, rule + filled["TA_F"]), "T2M_MAX": (t_max, rule + filled["TA_F"])}
    for name, column in DRIVER_FORCING_COLUMNS.items():
        field = _FORCING_FIELD[name]
        out[name] = (converted(values[column], units[column], field, source, column),
                     f"{column} [{units[column]}] in {FORCING_VARIABLES[field].units}"
                     f"{filled[column]}")
    out["DOY"] = (table.index.day_of_year.to_numpy().astype(np.float64),
                  "day of year of TIMESTAMP")
    if "PA_F" in values:
        out["PA"] = (values["PA_F"], f"PA_F [{PA_UNITS}]{filled['PA_F']}")
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


def observation_variables(table: pd.DataFrame, options: RecipeOptions, source: Path
                          ) -> dict[str, tuple[np.ndarray, str]]:
    """GPP, RECO, NBE, ET and their uncertainties, QC-masked, in model units.

    Returns:
        Driver variable -> ``(values, how it was derived)``; uncertainty variables only where
        their columns exist.

    Raises:
        RecipeError: a required column is missing.
    """
    method = options.partitioning
    gpp, reco = f"GPP_{method}_VUT_REF", f"RECO_{method}_VUT_REF"
    nee_qc, le_qc = f"{NEE_COLUMN}_QC", f"{LE_COLUMN}_QC"
    require_columns(table, [NEE_COLUMN, nee_qc, gpp, reco, LE_COLUMN, le_qc], source)
    threshold = options.qc_threshold
    qc = {name: table[f"{name}_QC"].to_numpy() if f"{name}_QC" in table.columns
          else table[nee_qc].to_numpy() for name in (gpp, reco)}
    out = {
        "NBE": (qc_masked(table[NEE_COLUMN].to_numpy(), table[nee_qc].to_numpy(), threshold),
                f"{NEE_COLUMN} where {nee_qc} >= {threshold:g}"),
        "GPP": (qc_masked(table[gpp].to_numpy(), qc[gpp], threshold),
                f"{gpp} where its QC >= {threshold:g}"),
        "RECO": (qc_masked(table[reco].to_numpy(), qc[reco], threshold),
                 f"{reco} where its QC >= {threshold:g}"),
        "ET": (qc_masked(table[LE_COLUMN].to_numpy() * LATENT_HEAT_TO_ET,
                         table[le_qc].to_numpy(), threshold),
               f"{LE_COLUMN} x 86400 / 2.45e6 where {le_qc} >= {threshold:g}"),
    }
    uncertainties = {
        "NBEunc": (_column(table, f"{NEE_COLUMN}_JOINTUNC"), f"{NEE_COLUMN}_JOINTUNC"),
        "GPPunc": (percentile_spread(table, gpp.removesuffix("_REF")),
                   f"({gpp[:-4]}_84 - {gpp[:-4]}_16) / 2"),
        "RECOunc": (percentile_spread(table, reco.removesuffix("_REF")),
                    f"({reco[:-4]}_84 - {reco[:-4]}_16) / 2"),
        "ETunc": (_scaled(_column(table, "LE_RANDUNC"), LATENT_HEAT_TO_ET),
                  "LE_RANDUNC x 86400 / 2.45e6"),
    }
    for name, (sigma, rule) in uncertainties.items():
        if sigma is not None:
            values = out[name.removesuffix("unc")][0]
            out[name] = (np.where(np.isfinite(values), sigma, np.nan), rule)
    return out


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
               options: RecipeOptions) -> dict[str, int]:
    """Number of days per observation that the QC threshold turned into gaps."""
    raw = {"NBE": NEE_COLUMN, "GPP": f"GPP_{options.partitioning}_VUT_REF",
           "RECO": f"RECO_{options.partitioning}_VUT_REF", "ET": LE_COLUMN}
    return {name: int((table[column].notna() & np.isnan(observations[name][0])).sum())
            for name, column in raw.items()}


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

    replace_atomically(path, write)


def build_site_driver(csv_path: Path, site: SiteInfo, out: Path, options: RecipeOptions,
                      lai_path: Path | None = None, site_info_path: Path | None = None
                      ) -> xr.Dataset:
    """Convert a FLUXNET DD CSV (and optional LAI) to a site driver file.

    Args:
        csv_path: the FLUXNET2015 / ONEFlux FULLSET DD CSV.
        site: tower identity and location.
        out: output NetCDF path.
        options: recipe options.
        lai_path: optional LAI CSV or NetCDF.
        site_info_path: the site table the location came from (for provenance).

    Returns:
        The dataset written.

    Raises:
        RecipeError: malformed input (see the individual readers).
    """
    table = read_fluxnet_table(csv_path)
    series = forcing_variables(table, options, csv_path)
    observations = observation_variables(table, options, csv_path)
    series.update(observations)
    if lai_path is not None:
        series.update(lai_variables(lai_path, table.index.to_numpy(), options.lai_max_gap))
    provenance = provenance_attrs(
        RECIPE, {"fluxnet_csv": csv_path, "site_info": site_info_path, "lai": lai_path},
        {**asdict(options), **asdict(site)}, LIBRARIES)
    attrs = {**provenance, "qc_masked_days": json.dumps(qc_summary(observations, table, options)),
             "nbe_sign": "positive = carbon to the atmosphere (FLUXNET NEE convention)"}
    dataset = site_dataset(table.index, series, site, attrs)
    write_validated(out, dataset)
    return dataset


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = argparse.ArgumentParser(
        prog="fluxnet.py",
        description="Convert a FLUXNET2015/ONEFlux FULLSET daily (DD) CSV into a differland "
                    "site driver (CARDAMOM layout, read by differland.io.read_site_driver).")
    parser.add_argument("csv", type=Path, help="FULLSET DD CSV (TIMESTAMP YYYYMMDD, -9999 gaps)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output NetCDF; name it <SITE_ID>.nc (the reader's site id)")
    parser.add_argument("--site-info", type=Path,
                        help="CSV with SITE_ID, LAT, LON (optional IGBP) listing the site")
    parser.add_argument("--lat", type=float, help="site latitude [degrees_north]")
    parser.add_argument("--lon", type=float, help="site longitude [degrees_east]")
    parser.add_argument("--site-id", help="site id (default: from the official file name)")
    parser.add_argument("--partitioning", choices=("NT", "DT"), default="NT",
                        help="GPP/RECO partitioning method (default: NT)")
    parser.add_argument("--qc-threshold", type=float, default=DEFAULT_QC_THRESHOLD,
                        help="daily QC fraction below which an observation becomes a gap "
                             f"(default {DEFAULT_QC_THRESHOLD})")
    parser.add_argument("--fill-forcing-gaps", type=int, default=0, metavar="DAYS",
                        help="linearly interpolate forcing gaps of at most DAYS days inside "
                             "the record (default 0: any gap is an error)")
    parser.add_argument("--diurnal-range", type=float, default=DEFAULT_DIURNAL_RANGE,
                        help="daily max - min temperature [degC] used where TA_F_DAY/NIGHT "
                             f"are missing (default {DEFAULT_DIURNAL_RANGE:g})")
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
    """Run the recipe on parsed arguments."""
    for path in (arguments.csv, arguments.lai):
        if path is not None and not path.is_file():
            raise recipe_error(path, "file does not exist")
    if not 0.0 <= arguments.qc_threshold <= 1.0:
        raise recipe_error("--qc-threshold", f"{arguments.qc_threshold} is outside [0, 1]")
    if arguments.fill_forcing_gaps < 0 or arguments.lai_max_gap < 0:
        raise recipe_error("options", "--fill-forcing-gaps and --lai-max-gap must be >= 0")
    options = RecipeOptions(arguments.partitioning, arguments.qc_threshold,
                            arguments.fill_forcing_gaps, arguments.diurnal_range,
                            arguments.lai_max_gap)
    build_site_driver(arguments.csv, site_from_arguments(arguments), arguments.out, options,
                      arguments.lai, arguments.site_info)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for malformed input)."""
    return run_main(build_parser(), run, argv, handled=(DriverError,))


if __name__ == "__main__":
    raise SystemExit(main())
