"""A synthetic example site driver the package generates itself (no data files shipped).

The dataset has the layout of the CARDAMOM flux-site drivers read by
:func:`differland.io.site.read_site_driver`: an int64 ``time`` coordinate of days since
2001-01-01 (one step per day, whole calendar years) and the forcing variables T2M_MIN, T2M_MAX,
SSRD, CO2, DOY, VPD, TOTAL_PREC, PA and the scalar LAT. The climate is smooth and seasonal and
the precipitation pattern is pseudo-random but fixed, so the driver is identical on every call.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from differland.io.netcdf import write_dataset
from differland.io.site import MODEL_EPOCH

MEAN_TEMPERATURE = 10.0
"""Annual mean air temperature [degC]."""
TEMPERATURE_AMPLITUDE = 10.0
"""Seasonal amplitude of the daily mean temperature [degC]."""
DIURNAL_RANGE = 10.0
"""Daily maximum minus minimum temperature [degC]."""
WARMEST_DAY = 200.0
"""Day of year of the seasonal maximum in the northern hemisphere [d]."""
MEAN_PRECIPITATION = 2.0
"""Expected precipitation [mm d-1]."""
WET_DAY_PROBABILITY = 0.35
"""Probability that a day has precipitation [1]."""

_VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "T2M_MIN": {"info": "Daily minimum air temperature", "units": "deg C"},
    "T2M_MAX": {"info": "Daily maximum air temperature", "units": "deg C"},
    "SSRD": {"info": "Global radiation", "units": "MJ/m2/d"},
    "CO2": {"info": "Atmospheric CO2", "units": "ppm"},
    "DOY": {"info": "Day of year", "units": "Days"},
    "VPD": {"info": "Vapour pressure deficit", "units": "hPa"},
    "TOTAL_PREC": {"info": "Total precipitation", "units": "mm/day"},
    "PA": {"info": "Atmospheric pressure", "units": "kPa"},
    "LAT": {"info": "Latitude", "units": "degrees_north"},
}


def seasonal_cycle(doy: np.ndarray, latitude: float) -> np.ndarray:
    """Seasonal shape in [-1, 1]: +1 at midsummer of the site's hemisphere.

    Args:
        doy: day of year [d].
        latitude: site latitude [degrees_north]; the cycle is inverted south of the equator.

    Returns:
        ``cos(2 pi (doy - 200) / 365.25)``, sign-flipped for southern latitudes.
    """
    hemisphere = 1.0 if latitude >= 0.0 else -1.0
    return hemisphere * np.cos(2.0 * np.pi * (np.asarray(doy, np.float64) - WARMEST_DAY) / 365.25)


def saturation_vapour_pressure(temperature: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water (Tetens) [hPa] at ``temperature`` [degC]."""
    temperature = np.asarray(temperature, np.float64)
    return 6.1078 * np.exp(17.27 * temperature / (temperature + 237.3))


def vapour_pressure_deficit(t_min: np.ndarray, t_max: np.ndarray) -> np.ndarray:
    """Daytime vapour pressure deficit [hPa], taking the minimum temperature as dew point.

    Args:
        t_min: daily minimum temperature [degC].
        t_max: daily maximum temperature [degC].

    Returns:
        ``e_s(t_max) - e_s(t_min)`` [hPa], non-negative where ``t_max >= t_min``.
    """
    return saturation_vapour_pressure(t_max) - saturation_vapour_pressure(t_min)


def daily_precipitation(n_days: int) -> np.ndarray:
    """Deterministic pseudo-random daily precipitation [mm d-1] with mean about 2 mm d-1.

    Wet days occur with probability 0.35 and have exponentially distributed amounts. The draws
    come from ``np.random.default_rng(0)`` one row per day, so a longer record extends a shorter
    one.

    Args:
        n_days: number of days.

    Returns:
        Precipitation [mm d-1], shape (n_days,).
    """
    draws = np.random.default_rng(0).random((n_days, 2))
    wet = draws[:, 0] < WET_DAY_PROBABILITY
    amount = -(MEAN_PRECIPITATION / WET_DAY_PROBABILITY) * np.log1p(-draws[:, 1])
    return np.where(wet, amount, 0.0)


def example_site_dataset(n_years: int = 3, latitude: float = 45.0,
                         start_year: int = 2001) -> xr.Dataset:
    """A synthetic daily site driver in the CARDAMOM layout.

    Climate: daily mean temperature 10 +- 10 degC (warmest around day 200 in the northern
    hemisphere), diurnal range 10 degC, SSRD 5..25 MJ m-2 d-1 in phase with temperature, CO2
    380 ppm rising by 2 ppm yr-1 with a 3 ppm seasonal drawdown, VPD from the temperatures,
    precipitation about 2 mm d-1 (see :func:`daily_precipitation`), PA 101.3 kPa.

    Args:
        n_years: number of whole calendar years, >= 1.
        latitude: site latitude [degrees_north].
        start_year: first calendar year (1..9998).

    Returns:
        The dataset (int64 ``time`` coordinate of days since 2001-01-01, daily).

    Raises:
        ValueError: an argument is out of range.
    """
    if int(n_years) != n_years or n_years < 1:
        raise ValueError(f"example_site_dataset: n_years must be a positive integer, not "
                         f"{n_years!r}")
    if not -90.0 <= latitude <= 90.0:
        raise ValueError(f"example_site_dataset: latitude {latitude!r} is outside [-90, 90]")
    if not 1 <= start_year <= 9999 - n_years:
        raise ValueError(f"example_site_dataset: start_year {start_year!r} is out of range")

    first = np.datetime64(f"{start_year:04d}-01-01", "D")
    dates = np.arange(first, np.datetime64(f"{start_year + n_years:04d}-01-01", "D"))
    time = (dates - MODEL_EPOCH).astype(np.int64)
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1.0
    elapsed_years = (dates - first).astype(np.float64) / 365.25
    season = seasonal_cycle(doy, latitude)

    t_mean = MEAN_TEMPERATURE + TEMPERATURE_AMPLITUDE * season
    t_min = t_mean - DIURNAL_RANGE / 2.0
    t_max = t_mean + DIURNAL_RANGE / 2.0
    series = {
        "T2M_MIN": t_min,
        "T2M_MAX": t_max,
        "SSRD": 15.0 + 10.0 * season,
        "CO2": 380.0 + 2.0 * elapsed_years - 3.0 * season,
        "DOY": doy,
        "VPD": vapour_pressure_deficit(t_min, t_max),
        "TOTAL_PREC": daily_precipitation(dates.size),
        "PA": np.full(dates.size, 101.3),
    }
    data_vars = {name: ("time", values, _VARIABLE_ATTRS[name]) for name, values in series.items()}
    data_vars["LAT"] = ((), np.float64(latitude), _VARIABLE_ATTRS["LAT"])
    return xr.Dataset(
        data_vars,
        coords={"time": ("time", time, {"units": "days since 2001-01-01",
                                        "calendar": "standard", "long_name": "time"})},
        attrs={
            "title": "differland synthetic example site driver",
            "source": (f"differland.io.example.example_site_dataset(n_years={n_years}, "
                       f"latitude={latitude}, start_year={start_year})"),
        },
    )


def write_example_site_driver(path: str | PathLike, **kwargs) -> Path:
    """Write :func:`example_site_dataset` to a NetCDF file (atomically).

    Args:
        path: destination file; its stem becomes the site id when read back.
        **kwargs: arguments of :func:`example_site_dataset`.

    Returns:
        The path written.
    """
    write_dataset(path, example_site_dataset(**kwargs))
    return Path(path)
