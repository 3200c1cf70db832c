"""Predictors of the spatialization network: what is known about a place.

From a site's row of ``sites.csv`` (latitude, elevation, mean annual precipitation and
temperature, IGBP land-cover class) and from its forcing over the calibration period (means
and seasonal amplitudes of air temperature, precipitation, VPD and shortwave radiation, and
an aridity index), plus extra numeric columns of ``sites.csv`` named in the configuration
(soil texture, forest age, canopy height, ...). Numeric predictors are standardised with the
training sites' mean and standard deviation (:class:`Standardizer`); the plant functional
type enters as a one-hot vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# IGBP land-cover class -> plant functional type (the network's categorical input).
IGBP_PFT = {
    "ENF": "needleleaf_forest", "DNF": "needleleaf_forest",
    "EBF": "evergreen_broadleaf_forest", "DBF": "deciduous_broadleaf_forest",
    "MF": "mixed_forest", "CSH": "shrubland", "OSH": "shrubland", "WSA": "savanna",
    "SAV": "savanna", "GRA": "grassland", "CRO": "cropland", "CVM": "cropland",
    "WET": "wetland",
}
PFT_CLASSES = tuple(dict.fromkeys(IGBP_PFT.values()))

SITE_COLUMNS = {"latitude": "lat", "elevation": "ELEV", "mean_annual_precipitation": "MAP",
                "mean_annual_temperature": "MAT"}
"""Numeric predictors from ``sites.csv``: predictor name -> column [degrees_north, m,
mm yr-1, degC]."""

GRID_PREDICTORS = ("latitude", "elevation")
"""Numeric predictors of a grid cell besides its climate: cell-centre latitude
[degrees_north] and mean elevation [m] (a static ``elevation`` map of the grid)."""

CLIMATE_PREDICTORS = (
    "temperature_mean", "temperature_amplitude", "precipitation_mean",
    "precipitation_amplitude", "vpd_mean", "vpd_amplitude", "radiation_mean",
    "radiation_amplitude", "aridity_index")
"""Predictors from the forcing over the calibration period: means of daily mean air
temperature [degC], precipitation [mm d-1], VPD [hPa] and SSRD [MJ m-2 d-1], their seasonal
amplitudes (largest minus smallest calendar-month mean), and the aridity index
precipitation / (SSRD / 2.45 MJ kg-1), rain over the evaporation the radiation could
sustain [1]."""

LATENT_HEAT = 2.45  # MJ kg-1: SSRD [MJ m-2 d-1] / LATENT_HEAT = evaporation equivalent [mm d-1]
CLIP = 10.0  # standardised predictors are clipped to +-CLIP standard deviations


class PredictorError(ValueError):
    """A site's predictor that is missing, not a number, or an unknown class."""


def grid_predictor_table(forcing: Mapping[str, np.ndarray], month: np.ndarray,
                         static: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...],
                                                                    np.ndarray]:
    """``(names, table (P, n))``: the numeric predictors of grid cells, in column order:
    latitude, elevation (if ``static`` has it), :data:`CLIMATE_PREDICTORS` of the whole
    record, then the other ``static`` maps.

    Args:
        forcing: ``(P, T)`` series ``t_min``, ``t_max``, ``precipitation``, ``vpd``,
            ``ssrd`` and ``latitude`` (forcing field names and units).
        month: calendar month (0..11) of each step ``(T,)``.
        static: ``{name: (P,)}`` static maps at the cells.
    """
    climate = climate_table(0.5 * (np.asarray(forcing["t_min"]) + np.asarray(forcing["t_max"])),
                            forcing["precipitation"], forcing["vpd"], forcing["ssrd"], month)
    columns = {"latitude": np.asarray(forcing["latitude"])[:, 0], **static, **climate}
    names = (*[n for n in GRID_PREDICTORS if n in columns], *CLIMATE_PREDICTORS,
             *[n for n in static if n not in GRID_PREDICTORS])
    return names, np.stack([np.asarray(columns[n], np.float64) for n in names], axis=1)


def predictor_names(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Names of the numeric predictors, in the order of the design matrix's columns (the
    plant functional types follow them)."""
    return (*SITE_COLUMNS, *CLIMATE_PREDICTORS, *extra)


def _number(row: Mapping[str, str], column: str, site: str, source: str) -> float:
    if column not in row:
        raise PredictorError(f"{source}: column {column} is missing (site {site})")
    text = str(row[column]).strip()
    try:
        value = float(text)
    except ValueError:
        raise PredictorError(f"{source}: site {site}: {column} is not a number "
                             f"({text!r})") from None
    if not math.isfinite(value):
        raise PredictorError(f"{source}: site {site}: {column} is {text or 'empty'}")
    return value


def plant_functional_type(row: Mapping[str, str], site: str, source: str) -> str:
    """The plant functional type of a site's IGBP class."""
    if "IGBP" not in row:
        raise PredictorError(f"{source}: column IGBP is missing (site {site})")
    igbp = str(row["IGBP"]).strip().upper()
    if igbp not in IGBP_PFT:
        raise PredictorError(f"{source}: site {site}: unknown IGBP class {row['IGBP']!r} "
                             f"(known: {', '.join(IGBP_PFT)})")
    return IGBP_PFT[igbp]


def climate_table(temperature: np.ndarray, precipitation: np.ndarray, vpd: np.ndarray,
                  radiation: np.ndarray, month: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`CLIMATE_PREDICTORS` of many places at once: series ``(P, T)`` of mean air
    temperature [degC], precipitation [mm d-1], VPD [hPa] and SSRD [MJ m-2 d-1], and the
    calendar month (0..11) of each step ``(T,)``; returns ``{name: (P,)}``."""
    month = np.asarray(month)
    present = [m for m in range(12) if np.any(month == m)]
    series = {"temperature": temperature, "precipitation": precipitation, "vpd": vpd,
              "radiation": radiation}
    out = {}
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        monthly = np.stack([values[:, month == m].mean(axis=1) for m in present], axis=1)
        out[f"{name}_mean"] = values.mean(axis=1)
        out[f"{name}_amplitude"] = monthly.max(axis=1) - monthly.min(axis=1)
    out["aridity_index"] = out["precipitation_mean"] / np.maximum(
        out["radiation_mean"] / LATENT_HEAT, 1e-6)
    return out


def climate_predictors(forcing, dates, calibration_end: int) -> dict[str, float]:
    """:data:`CLIMATE_PREDICTORS` of a site from its forcing over the first
    ``calibration_end`` steps (fields of shape ``(T,)``; ``dates`` daily datetime64)."""
    keep = slice(0, calibration_end)
    months = np.asarray(dates, dtype="datetime64[M]").astype(int)[keep] % 12
    row = lambda x: np.asarray(x)[None, keep]  # noqa: E731
    table = climate_table(row(0.5 * (np.asarray(forcing.t_min) + np.asarray(forcing.t_max))),
                          row(forcing.precipitation), row(forcing.vpd), row(forcing.ssrd),
                          months)
    return {name: float(values[0]) for name, values in table.items()}


def site_predictors(row: Mapping[str, str], climate: Mapping[str, float],
                    extra: Sequence[str] = (), source: str = "sites.csv") -> dict:
    """Every predictor of one site: ``{name: value}`` for :func:`predictor_names` and
    ``"pft"``.

    Raises:
        PredictorError: a missing column, an empty or non-numeric value, an unknown IGBP
            class, or a non-finite climate statistic, naming the site and the column.
    """
    site = str(row.get("SITE_ID", "?"))
    values = {name: _number(row, column, site, source) for name, column in SITE_COLUMNS.items()}
    for name in CLIMATE_PREDICTORS:
        value = float(climate[name])
        if not math.isfinite(value):
            raise PredictorError(f"{source}: site {site}: the forcing gives a non-finite "
                                 f"{name}")
        values[name] = value
    values |= {name: _number(row, name, site, source) for name in extra}
    values["pft"] = plant_functional_type(row, site, source)
    return values


def _table(sites: Sequence[Mapping], names: Sequence[str]) -> np.ndarray:
    return np.array([[site[name] for name in names] for site in sites],
                    dtype=np.float64).reshape(len(sites), len(names))


@dataclass(frozen=True)
class Standardizer:
    """Maps predictors to the network's inputs: numeric ones standardised with the training
    sites' statistics (and clipped to +-:data:`CLIP`), then the one-hot plant functional
    type.

    Attributes:
        names: numeric predictor names, in column order.
        mean, std: their training-site mean and standard deviation (1 where it is 0).
    """

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, sites: Sequence[Mapping], names: Sequence[str]) -> Standardizer:
        """Statistics of ``names`` over the training ``sites`` (from :func:`site_predictors`)."""
        return cls.fit_table(_table(sites, names), names)

    @classmethod
    def fit_table(cls, table: np.ndarray, names: Sequence[str]) -> Standardizer:
        """Statistics of the columns ``names`` of ``table`` ``(n_places, len(names))``."""
        table = np.asarray(table, dtype=np.float64)
        std = table.std(axis=0)
        return cls(tuple(names), tuple(table.mean(axis=0).tolist()),
                   tuple(np.where(std > 0.0, std, 1.0).tolist()))

    @property
    def n_inputs(self) -> int:
        return len(self.names) + len(PFT_CLASSES)

    def inputs(self, sites: Sequence[Mapping]) -> np.ndarray:
        """The ``(n_sites, n_inputs)`` network inputs of ``sites``."""
        return self.inputs_table(_table(sites, self.names), [site["pft"] for site in sites])

    def inputs_table(self, table: np.ndarray, pft: Sequence[str]) -> np.ndarray:
        """The ``(n_places, n_inputs)`` network inputs of a predictor ``table`` (columns
        :attr:`names`) and the places' plant functional types."""
        table = np.asarray(table, dtype=np.float64).reshape(len(pft), len(self.names))
        scaled = np.clip((table - np.asarray(self.mean)) / np.asarray(self.std), -CLIP, CLIP)
        pft = np.asarray(pft)
        onehot = (pft[:, None] == np.asarray(PFT_CLASSES)[None, :]).astype(np.float64)
        return np.concatenate([scaled, onehot], axis=1)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std),
                "plant_functional_types": list(PFT_CLASSES)}

    @classmethod
    def from_dict(cls, values: Mapping) -> Standardizer:
        if list(values.get("plant_functional_types", [])) != list(PFT_CLASSES):
            raise PredictorError("predictor statistics: the plant functional types differ "
                                 "from this version's")
        return cls(tuple(values["names"]), tuple(map(float, values["mean"])),
                   tuple(map(float, values["std"])))
