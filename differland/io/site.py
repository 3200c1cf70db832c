"""Reader of CARDAMOM-style flux-site drivers: daily forcing plus observations in one NetCDF.

Layout (section 5.1 "Site drivers" of the DALEC reference notes): a ``time`` coordinate of days
since 2001-01-01, one step per day; forcing series T2M_MIN, T2M_MAX [degC], SSRD [MJ m-2 d-1],
CO2 [ppm], DOY, VPD [hPa], TOTAL_PREC [mm d-1], optional BURNED_AREA [1], the scalar LAT; and
observation series GPP, RECO, NBE, ET, LAI, EWT with optional ``<VAR>unc`` 1-sigma uncertainties.
Gaps are NaN (or -9999).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from differland.forcing import FORCING_VARIABLES, Forcing, ForcingError, make_forcing
from differland.io._files import check_input_file, load_netcdf
from differland.io.errors import DriverError, driver_error
from differland.io.units import UnitsError, convert, likely_unit_mistake

MODEL_EPOCH = np.datetime64("2001-01-01", "D")
"""Origin of the site model clock (``Forcing.time`` is days since this date)."""

MISSING_VALUE = -9999.0
"""CARDAMOM fill value, treated as missing like NaN."""

SITES_TABLE = "sites.csv"
"""Name of the optional per-folder table of calibration/test periods."""

TIME = "time"
LATITUDE_VARIABLE = "LAT"
BURNED_AREA_VARIABLE = "BURNED_AREA"
FORCING_SERIES: dict[str, str] = {
    "t_min": "T2M_MIN",
    "t_max": "T2M_MAX",
    "ssrd": "SSRD",
    "co2": "CO2",
    "doy": "DOY",
    "vpd": "VPD",
    "precipitation": "TOTAL_PREC",
}
"""Forcing field -> driver variable, for the forcing time series."""

REQUIRED_VARIABLES: tuple[str, ...] = (*FORCING_SERIES.values(), LATITUDE_VARIABLE)

_DRIVER_NAMES = {**FORCING_SERIES, "time": TIME, "latitude": LATITUDE_VARIABLE,
                 "burned_area": BURNED_AREA_VARIABLE}
_STANDARD_CALENDARS = frozenset({"standard", "gregorian", "proleptic_gregorian"})
_TIME_SINCE = re.compile(r"^\s*(?P<unit>days?|d|hours?|hrs?|h|minutes?|mins?|seconds?|secs?|s)"
                         r"\s+since\s+(?P<origin>\S.*?)\s*$", re.IGNORECASE)
_DAYS_PER = {"d": 1.0, "h": 1.0 / 24.0, "m": 1.0 / 1440.0, "s": 1.0 / 86400.0}
_FORCING_VARIABLE = re.compile(r"\bvariable (\w+)")


@dataclass(frozen=True)
class ObservationSpec:
    """Where one observed quantity lives in a site driver.

    Attributes:
        variable: driver variable of the values.
        units: units of the values and of their uncertainty.
        uncertainty: driver variable of the 1-sigma uncertainty, or ``None``.
    """

    variable: str
    units: str
    uncertainty: str | None


OBSERVATION_VARIABLES: dict[str, ObservationSpec] = {
    "gpp": ObservationSpec("GPP", "gC m-2 d-1", "GPPunc"),
    "reco": ObservationSpec("RECO", "gC m-2 d-1", "RECOunc"),
    "nee": ObservationSpec("NBE", "gC m-2 d-1", "NBEunc"),
    "et": ObservationSpec("ET", "mm d-1", "ETunc"),
    "lai": ObservationSpec("LAI", "m2 m-2", "LAIunc"),
    "ewt": ObservationSpec("EWT", "mm", None),
}
"""Observation key -> driver variables. ``nee`` is positive for carbon to the atmosphere."""


@dataclass(frozen=True, eq=False)
class Observation:
    """One observed time series with its gap mask and optional uncertainty.

    Attributes:
        values: observed values [units], shape (T,), float64; 0.0 at gaps so that every value is
            finite (use ``mask``).
        mask: True where the value was observed, shape (T,).
        uncertainty: 1-sigma uncertainty [units], shape (T,), float64, 0.0 where missing or not
            positive; ``None`` when the driver has no uncertainty variable.
        uncertainty_mask: True where the uncertainty is finite and > 0; ``None`` with
            ``uncertainty``.
        units: units of ``values`` and ``uncertainty``.
    """

    values: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray | None
    uncertainty_mask: np.ndarray | None
    units: str

    @property
    def n_observed(self) -> int:
        """Number of observed time steps."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True, eq=False)
class SiteDriver:
    """Everything the site model and its calibration need from one driver file.

    Attributes:
        site_id: site identifier (the file stem, e.g. ``"US-Var"``).
        path: the driver file.
        dates: calendar dates of the steps, ``datetime64[D]``, shape (T,).
        time: model clock [d], days since 2001-01-01, float64, shape (T,).
        forcing: forcing of the model (numpy float64 arrays, shape (T,)).
        observations: observed series by key (``gpp``, ``reco``, ``nee``, ``et``, ``lai``,
            ``ewt``); keys whose variable the driver lacks are absent.
        latitude: site latitude [degrees_north].
        calibration_end: index of the first step of the test period; steps before it form the
            calibration period.
        attrs: global attributes of the file.
    """

    site_id: str
    path: Path
    dates: np.ndarray
    time: np.ndarray
    forcing: Forcing
    observations: dict[str, Observation]
    latitude: float
    calibration_end: int
    attrs: dict

    @property
    def n_steps(self) -> int:
        """Number of daily time steps T."""
        return int(self.dates.size)


# --- pure helpers ---------------------------------------------------------------------------------


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def is_missing(values: np.ndarray) -> np.ndarray:
    """True where a value is a gap: NaN, +-inf or the CARDAMOM fill value -9999."""
    values = np.asarray(values, dtype=np.float64)
    return ~np.isfinite(values) | (values == MISSING_VALUE)


def make_observation(values: np.ndarray, uncertainty: np.ndarray | None = None,
                     units: str = "") -> Observation:
    """Build an :class:`Observation` from raw driver values (gaps as NaN or -9999).

    Args:
        values: raw observed values [units], shape (T,).
        uncertainty: raw 1-sigma uncertainty [units], shape (T,), or ``None``.
        units: units of values and uncertainty.

    Returns:
        The observation with finite float64 values (0.0 at gaps) and masks.
    """
    raw = np.asarray(values, dtype=np.float64)
    mask = ~is_missing(raw)
    observed = np.where(mask, raw, 0.0)
    sigma = sigma_mask = None
    if uncertainty is not None:
        raw_sigma = np.asarray(uncertainty, dtype=np.float64)
        sigma_mask = _read_only(np.isfinite(raw_sigma) & (raw_sigma > 0.0))
        sigma = _read_only(np.where(sigma_mask, raw_sigma, 0.0))
    return Observation(_read_only(observed), _read_only(mask), sigma, sigma_mask, units)


def calibration_split_index(dates) -> int:
    """Index of the first test-period step by the rule of the published DifferLand code.

    ``n_years = round(T / 365.25)``, ``train_years = ceil(n_years / 2)``; the calibration period
    is every date before 1 January of (first year + train_years). For records shorter than half
    a year, where the published rule gives an empty calibration period, one calendar year is used.

    Args:
        dates: sorted dates of the steps (anything convertible to ``datetime64[D]``), (T,).

    Returns:
        Number of calibration steps (= index of the first test step), in ``1..T``.

    Raises:
        ValueError: ``dates`` is empty.
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    if days.size == 0:
        raise ValueError("calibration_split_index: no dates")
    n_years = round(days.size / 365.25)
    train_years = max(math.ceil(n_years / 2), 1)
    first_year = days[0].astype("datetime64[Y]")
    test_start = (first_year + np.timedelta64(train_years, "Y")).astype("datetime64[D]")
    return int(np.searchsorted(days, test_start, side="left"))


def reference_climate(t_min: np.ndarray, t_max: np.ndarray, precipitation: np.ndarray,
                      calibration_end: int) -> tuple[float, float]:
    """Reference climate of the decomposition modifier, as in the published site model.

    Args:
        t_min: daily minimum temperature [degC], (T,).
        t_max: daily maximum temperature [degC], (T,).
        precipitation: precipitation [mm d-1], (T,).
        calibration_end: number of calibration steps at the start of the record.

    Returns:
        ``(mean_temperature [degC], mean_precipitation [mm d-1])``: means of (t_min + t_max) / 2
        and of precipitation over the calibration period.
    """
    period = slice(0, calibration_end)
    # Non-finite forcing is reported by validate_forcing; only keep numpy quiet meanwhile.
    with np.errstate(invalid="ignore", over="ignore"):
        mean_temperature = float(np.mean((t_min[period] + t_max[period]) / 2))
        mean_precipitation = float(np.mean(precipitation[period]))
    return mean_temperature, mean_precipitation


def dates_from_model_time(time: np.ndarray) -> np.ndarray:
    """Calendar dates of model-clock values (days since 2001-01-01; fractions are dropped)."""
    whole_days = np.floor(np.asarray(time, dtype=np.float64)).astype(np.int64)
    return MODEL_EPOCH + whole_days.astype("timedelta64[D]")


# --- validation of the file content -------------------------------------------------------------


def _check_required(dataset: xr.Dataset, path: Path) -> None:
    missing = [name for name in REQUIRED_VARIABLES if name not in dataset.variables]
    if missing:
        raise driver_error(path, "required forcing variable(s) missing", ", ".join(missing))


def _numeric(variable: xr.DataArray, name: str, path: Path) -> np.ndarray:
    if not (np.issubdtype(variable.dtype, np.number) or variable.dtype == np.bool_):
        raise driver_error(path, f"not numeric (dtype {variable.dtype})", name)
    return np.asarray(variable.values, dtype=np.float64)


def _series(dataset: xr.Dataset, name: str, path: Path, units: str | None = None,
            units_of: str | None = None) -> np.ndarray:
    """A time series of the driver, in ``units`` when given.

    Declared units (the variable's ``units`` attribute, else that of ``units_of``) are
    converted to ``units``; without any, values that cannot be in ``units`` are refused.
    """
    variable = dataset[name]
    if variable.dims != (TIME,):
        raise driver_error(path, f"wrong shape: dimensions {variable.dims}, shape "
                                 f"{variable.shape}; expected 1-D along time", name)
    values = _numeric(variable, name, path)
    if units is None:
        return values
    declared = variable.attrs.get("units")
    if declared is None and units_of is not None:
        declared = dataset[units_of].attrs.get("units")
    if declared is None or not str(declared).strip():
        mistake = likely_unit_mistake(name, values) if units_of is None else None
        if mistake:
            raise driver_error(path, f"no units attribute, and {mistake} (declare its units)",
                               name)
        return values
    missing = (values == MISSING_VALUE) | ~np.isfinite(values)
    try:
        converted = convert(np.where(missing, np.nan, values), str(declared), units)
    except UnitsError as error:
        raise driver_error(path, str(error), name) from None
    return np.where(missing, values, converted)


def _scalar(dataset: xr.Dataset, name: str, path: Path) -> float:
    variable = dataset[name]
    if variable.size != 1:
        raise driver_error(path, f"wrong shape: dimensions {variable.dims}, shape "
                                 f"{variable.shape}; expected a scalar", name)
    return float(_numeric(variable, name, path).reshape(()))


def _origin_offset(units: str, path: Path) -> tuple[float, float]:
    """``(days from 2001-01-01 to the origin, days per unit)`` of ``<unit> since <origin>``
    units (days, hours, minutes or seconds)."""
    match = _TIME_SINCE.match(units)
    if match is None:
        raise driver_error(path, f"units {units!r} are not '<days|hours|minutes|seconds> since "
                                 "<date>'", TIME)
    try:
        origin = pd.Timestamp(match["origin"])
    except (ValueError, TypeError) as err:
        raise driver_error(path, f"cannot parse the origin of units {units!r}", TIME) from err
    if pd.isna(origin):
        raise driver_error(path, f"cannot parse the origin of units {units!r}", TIME)
    if origin.tzinfo is not None:
        origin = origin.tz_convert(None)
    scale = _DAYS_PER[match["unit"][0].lower()]
    return (origin - pd.Timestamp(MODEL_EPOCH)) / pd.Timedelta(days=1), scale


def _model_time(dataset: xr.Dataset, path: Path) -> np.ndarray:
    """The time coordinate as days since 2001-01-01 (no units attribute: already so; CF units
    ``<days|hours|minutes|seconds> since <date>`` are converted)."""
    if TIME not in dataset.coords:
        raise driver_error(path, "no time coordinate", TIME)
    coordinate = dataset.coords[TIME]
    if coordinate.dims != (TIME,):
        raise driver_error(path, f"wrong shape: the time coordinate has dimensions "
                                 f"{coordinate.dims}", TIME)
    calendar = str(coordinate.attrs.get("calendar", "standard"))
    if calendar.lower() not in _STANDARD_CALENDARS:
        raise driver_error(path, f"calendar {calendar!r} is not supported (standard only)", TIME)
    values = _numeric(coordinate, TIME, path)
    units = coordinate.attrs.get("units")
    offset, scale = (0.0, 1.0) if units is None else _origin_offset(str(units), path)
    return values * scale + offset


def _check_time_axis(time: np.ndarray, path: Path) -> None:
    if time.size < 2:
        raise driver_error(path, f"only {time.size} time step(s); at least 2 are needed", TIME)
    if not np.all(np.isfinite(time)):
        raise driver_error(path, "NaN/inf in the time coordinate", TIME)
    steps = np.diff(time)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise driver_error(path, f"not strictly increasing ({time[i]:g} then {time[i + 1]:g} "
                                 f"at indices {i}, {i + 1})", TIME)
    if np.any(steps != 1.0):
        i = int(np.argmax(steps != 1.0))
        raise driver_error(path, f"not daily: a step of {steps[i]:g} days between indices {i} "
                                 f"and {i + 1} (every step must be exactly 1 day)", TIME)


SITES_ID_COLUMN = "SITE_ID"
"""Column of ``sites.csv`` that names the site (the driver's file stem)."""


def read_sites_rows(table: str | PathLike) -> list[dict[str, str]]:
    """Rows of a ``sites.csv`` (UTF-8, a ``SITE_ID`` column, one row per site).

    Raises:
        DriverError: the file cannot be read as UTF-8 CSV, has no ``SITE_ID`` column (a
            differently spelled id column is named), or lists a site twice.
    """
    table = Path(table)
    try:
        with table.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except UnicodeDecodeError as err:
        raise driver_error(table, f"not UTF-8 text (byte {err.start}: {err.reason})") from None
    except (OSError, csv.Error) as err:
        raise driver_error(table, f"cannot read the table: {err}") from None
    if SITES_ID_COLUMN not in columns:
        near = [c for c in columns if c.strip().lower().replace("-", "_") in
                ("site_id", "siteid", "site", "id")]
        hint = f" (found {near[0]!r}; rename it {SITES_ID_COLUMN})" if near else ""
        raise driver_error(table, f"no {SITES_ID_COLUMN} column{hint}", SITES_ID_COLUMN)
    seen: set[str] = set()
    for row in rows:
        site = (row.get(SITES_ID_COLUMN) or "").strip()
        if site in seen:
            raise driver_error(table, f"site {site!r} is listed twice", SITES_ID_COLUMN)
        seen.add(site)
    return rows


def _table_split_index(path: Path, dates: np.ndarray, table: Path | None = None) -> int | None:
    """Calibration end from ``table`` (default: a ``sites.csv`` next to the driver), if it
    lists the site."""
    table = path.parent / SITES_TABLE if table is None else Path(table)
    if not table.is_file():
        return None
    rows = [row for row in read_sites_rows(table)
            if (row.get(SITES_ID_COLUMN) or "").strip() == path.stem]
    if not rows:
        return None
    value = rows[0].get("test_start")
    if "test_start" not in rows[0]:
        raise driver_error(table, f"no test_start column (needed for site {path.stem})",
                           "test_start")
    if value is None or not str(value).strip():
        raise driver_error(table, f"no date for site {path.stem}", "test_start")
    try:
        test_start = np.datetime64(str(value).strip(), "D")
    except ValueError as err:
        raise driver_error(table, f"invalid date {value!r} for site {path.stem}",
                           "test_start") from err
    if np.isnat(test_start):
        raise driver_error(table, f"no date for site {path.stem}", "test_start")
    if test_start > dates[-1]:
        raise driver_error(table, f"{test_start} for site {path.stem} is after the record's "
                                  f"last day {dates[-1]}: the test period would be empty",
                           "test_start")
    return int(np.searchsorted(dates, test_start, side="left"))


def _check_day_of_year(doy: np.ndarray, dates: np.ndarray, path: Path) -> None:
    """Refuse a DOY series that disagrees with the time axis by more than a day."""
    expected = (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1
    off = np.abs(doy - expected) > 1.0
    if off.any():
        i = int(np.argmax(off))
        raise driver_error(path, f"disagrees with the time axis: {doy[i]:g} at index {i}, "
                                 f"where the date {dates[i]} is day {expected[i]}",
                           FORCING_SERIES["doy"])


def _driver_error_from(error: ForcingError, path: Path) -> DriverError:
    """Re-state a forcing validation error with the file path and the driver variable name."""
    message = str(error).removeprefix("forcing: ")
    match = _FORCING_VARIABLE.search(message)
    variable = _DRIVER_NAMES.get(match[1]) if match else None
    return driver_error(path, message, variable)


def _observations(dataset: xr.Dataset, path: Path) -> dict[str, Observation]:
    observations = {}
    for key, spec in OBSERVATION_VARIABLES.items():
        if spec.variable not in dataset.variables:
            continue
        values = _series(dataset, spec.variable, path, spec.units)
        uncertainty = None
        if spec.uncertainty is not None and spec.uncertainty in dataset.variables:
            uncertainty = _series(dataset, spec.uncertainty, path, spec.units,
                                  units_of=spec.variable)
        observations[key] = make_observation(values, uncertainty, spec.units)
    return observations


# --- reader ---------------------------------------------------------------------------------------


def read_site_driver(path: str | PathLike, sites_table: str | PathLike | None = None
                     ) -> SiteDriver:
    """Read and validate a CARDAMOM-style daily site driver.

    The calibration period runs from the record start to ``test_start`` (exclusive) of the
    site's row in ``sites_table`` (default: a ``sites.csv`` next to the driver), or else
    follows
    :func:`calibration_split_index`. The reference climate of the forcing (``mean_temperature``,
    ``mean_precipitation``) is averaged over the calibration period.

    Args:
        path: the driver NetCDF file; its stem is the site id.
        sites_table: the ``sites.csv`` that gives the site's ``test_start``.

    Returns:
        The driver, with forcing validated by :func:`differland.forcing.validate_forcing`.

    Raises:
        DriverError: ``"<path>: <variable>: <problem>"`` for a missing, empty or non-NetCDF
            file, a missing forcing variable, a missing, non-daily or non-increasing time axis,
            a wrongly shaped variable, fewer than 2 steps, or non-finite or implausible forcing.
    """
    path = check_input_file(path)
    dataset = load_netcdf(path)
    _check_required(dataset, path)
    time = _model_time(dataset, path)
    _check_time_axis(time, path)
    dates = dates_from_model_time(time)
    series = {field: _series(dataset, name, path,
                             None if field == "doy" else FORCING_VARIABLES[field].units)
              for field, name in FORCING_SERIES.items()}
    _check_day_of_year(series["doy"], dates, path)
    latitude = _scalar(dataset, LATITUDE_VARIABLE, path)
    burned_area = (_series(dataset, BURNED_AREA_VARIABLE, path)
                   if BURNED_AREA_VARIABLE in dataset.variables else np.zeros_like(time))

    calibration_end = _table_split_index(path, dates, sites_table)
    if calibration_end is None:
        calibration_end = calibration_split_index(dates)
    if calibration_end < 1:
        raise driver_error(path, f"the calibration period is empty (the {SITES_TABLE} "
                                 f"test_start is on or before the record's first day "
                                 f"{dates[0]})")
    mean_temperature, mean_precipitation = reference_climate(
        series["t_min"], series["t_max"], series["precipitation"], calibration_end)
    try:
        forcing = make_forcing(time=time, **series, burned_area=burned_area, latitude=latitude,
                               delta_t=1.0, mean_temperature=mean_temperature,
                               mean_precipitation=mean_precipitation)
    except ForcingError as err:
        raise _driver_error_from(err, path) from err

    return SiteDriver(
        site_id=path.stem,
        path=path,
        dates=_read_only(dates),
        time=_read_only(time),
        forcing=forcing,
        observations=_observations(dataset, path),
        latitude=latitude,
        calibration_end=calibration_end,
        attrs=dict(dataset.attrs),
    )
