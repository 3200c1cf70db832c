"""Monthly climate of the twin world: synthetic, but physical where physics is simple.

Radiation and day length follow solar geometry (FAO-56 extraterrestrial radiation at
mid-month, reduced by a cloudiness that grows with rain); temperature follows latitude,
elevation (lapse rate), season (lagged behind the sun, with a continental amplitude) and the
Köppen–Geiger main group; precipitation and humidity follow the main group's regime; every
year has smooth, spatially coherent anomalies; CO2 is the shipped global record.
All arrays are ``(pixels, months)`` in differland's forcing units.
"""

from __future__ import annotations

import csv
import io as text_io
from importlib import resources

import numpy as np

from differland.io.grid import month_clock

SOLAR_CONSTANT = 0.0820  # MJ m-2 min-1 (FAO-56)
LAPSE_RATE = 6.5e-3  # degC m-1
DAYS_PER_YEAR = 365.25
CO2_FILE = "co2_global_annual.csv"

# Köppen–Geiger main group (1 tropical, 2 arid, 3 temperate, 4 cold, 5 polar; 0 unknown) ->
# regime: mean precipitation [mm d-1], its seasonality [1], relative humidity [1],
# clear-sky transmissivity [1] and continentality of the temperature amplitude [1].
REGIMES = {
    0: (1.8, 0.3, 0.60, 0.70, 1.0),
    1: (5.5, 0.5, 0.78, 0.62, 0.3),
    2: (0.6, 0.6, 0.35, 0.78, 1.3),
    3: (2.6, 0.3, 0.68, 0.70, 0.8),
    4: (1.8, 0.4, 0.70, 0.72, 1.4),
    5: (0.9, 0.3, 0.75, 0.72, 1.0),
}


def month_starts(first_year: int, years: int) -> np.ndarray:
    """First day of each month, ``datetime64[D]``."""
    months = np.arange(np.datetime64(f"{first_year}-01", "M"),
                       np.datetime64(f"{first_year + years}-01", "M"))
    return months.astype("datetime64[D]")


def extraterrestrial_radiation(latitude: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Daily top-of-atmosphere shortwave radiation [MJ m-2 d-1] (FAO-56 eq. 21), latitude
    ``(P, 1)`` [degrees_north], ``doy`` ``(T,)``."""
    phi = np.deg2rad(latitude)
    inverse_distance = 1.0 + 0.033 * np.cos(2.0 * np.pi * doy / 365.0)
    declination = 0.409 * np.sin(2.0 * np.pi * doy / 365.0 - 1.39)
    omega = np.arccos(np.clip(-np.tan(phi) * np.tan(declination), -1.0, 1.0))
    return (24.0 * 60.0 / np.pi * SOLAR_CONSTANT * inverse_distance
            * (omega * np.sin(phi) * np.sin(declination)
               + np.cos(phi) * np.cos(declination) * np.sin(omega)))


def saturation_vapour_pressure(temperature: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water [hPa] at ``temperature`` [degC] (Tetens)."""
    return 6.108 * np.exp(17.27 * temperature / (temperature + 237.3))


def co2_record(years: np.ndarray) -> np.ndarray:
    """Global-mean CO2 [ppm] at fractional ``years``, interpolated in the shipped annual
    record (annual means stamped at mid-year)."""
    text = (resources.files("differland") / "data" / CO2_FILE).read_text(encoding="utf-8")
    rows = [row for row in csv.reader(text_io.StringIO(text))
            if row and not row[0].startswith("#") and row[0] != "year"]
    table = np.array([[float(year) + 0.5, float(value)] for year, value in rows])
    return np.interp(years, table[:, 0], table[:, 1])


def _smooth_field(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, n: int,
                  waves: int = 3) -> np.ndarray:
    """``n`` smooth random fields ``(P, n)`` of unit-order amplitude: sums of a few long
    planar waves on the sphere (wavelengths of thousands of km)."""
    x = np.stack([np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon)),
                  np.cos(np.deg2rad(lat)) * np.sin(np.deg2rad(lon)),
                  np.sin(np.deg2rad(lat))], axis=1)
    fields = np.zeros((lat.size, n))
    for _ in range(waves):
        direction = rng.normal(size=(3, n))
        frequency = rng.uniform(2.0, 6.0, size=n)
        phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
        fields += np.sin(frequency * (x @ direction) + phase)
    return fields * np.sqrt(2.0 / waves)


def monthly_climate(latitude: np.ndarray, longitude: np.ndarray, elevation: np.ndarray,
                    group: np.ndarray, dates: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Monthly forcing of every pixel.

    Args:
        latitude, longitude: cell centres ``(P,)`` [degrees].
        elevation: ``(P,)`` [m].
        group: Köppen–Geiger main group ``(P,)`` (keys of :data:`REGIMES`).
        dates: month starts ``(T,)``.
        seed: seed of the anomalies.

    Returns:
        ``t_min``, ``t_max`` [degC], ``ssrd`` [MJ m-2 d-1], ``vpd`` [hPa], ``precipitation``
        [mm d-1] of shape ``(P, T)`` and ``co2`` [ppm] of shape ``(T,)``.
    """
    rng = np.random.default_rng(seed)
    lat = np.asarray(latitude, float)[:, None]
    elevation = np.maximum(np.asarray(elevation, float), 0.0)[:, None]
    regime = np.array([REGIMES.get(int(g), REGIMES[0]) for g in np.asarray(group)])
    rain, seasonality, humidity, transmissivity, continentality = (regime[:, [k]]
                                                                   for k in range(5))
    doy = month_clock(dates)[2]
    n_months = dates.size
    year_index = np.arange(n_months) // 12
    n_years = int(year_index[-1]) + 1
    # interannual anomalies: smooth in space, independent between years
    temperature_anomaly = 0.8 * _smooth_field(rng, latitude, longitude, n_years)[:, year_index]
    rain_anomaly = 0.25 * _smooth_field(rng, latitude, longitude, n_years)[:, year_index]
    month_noise = rng.normal(size=(lat.size, n_months))

    north = lat >= 0.0
    peak = np.where(north, 200.0, 200.0 - DAYS_PER_YEAR / 2.0)  # warmest day of the year
    season = np.cos(2.0 * np.pi * (doy[None, :] - peak) / DAYS_PER_YEAR)
    mean_temperature = (28.0 - 0.55 * np.maximum(np.abs(lat) - 12.0, 0.0)
                        - LAPSE_RATE * elevation - 1.5 * (group[:, None] == 5))
    amplitude = continentality * (1.0 + 0.18 * np.abs(lat))
    temperature = mean_temperature + amplitude * season + temperature_anomaly \
        + 0.6 * month_noise

    wet_season = np.where(np.abs(lat) < 23.0, season, -0.3 * season)  # tropical rains follow
    precipitation = (rain * (1.0 + 4e-4 * elevation) * np.exp(rain_anomaly)
                     * np.maximum(1.0 + seasonality * wet_season, 0.05)
                     * rng.gamma(4.0, 0.25, size=(lat.size, n_months)))
    wetness = np.clip(precipitation / np.maximum(rain, 0.1), 0.0, 3.0)
    relative_humidity = np.clip(humidity + 0.08 * (wetness - 1.0), 0.15, 0.95)
    diurnal_range = 6.0 + 10.0 * (1.0 - relative_humidity)
    t_min = temperature - diurnal_range / 2.0
    t_max = temperature + diurnal_range / 2.0
    vpd = saturation_vapour_pressure(temperature) * (1.0 - relative_humidity)
    cloud = np.clip(0.15 + 0.12 * wetness, 0.0, 0.6)
    ssrd = extraterrestrial_radiation(lat, doy[None, :]) * transmissivity * (1.0 - cloud)
    years = dates.astype("datetime64[Y]").astype(float) + 1970.0 + (doy - 0.5) / DAYS_PER_YEAR
    return {"t_min": t_min, "t_max": t_max, "ssrd": np.maximum(ssrd, 0.0),
            "vpd": np.maximum(vpd, 0.0), "precipitation": precipitation,
            "co2": co2_record(years)}


def burned_area(vpd: np.ndarray, temperature: np.ndarray, flammability: np.ndarray
                ) -> np.ndarray:
    """Fraction of each pixel burned per month [1]: the plant functional type's
    ``flammability`` ``(P,)`` (largest monthly fraction) times dryness and warmth."""
    dryness = 1.0 / (1.0 + np.exp(-(vpd - 14.0) / 4.0))
    warmth = 1.0 / (1.0 + np.exp(-(temperature - 8.0) / 3.0))
    return np.clip(flammability[:, None] * dryness * warmth, 0.0, 0.5)
