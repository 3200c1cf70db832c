"""Units of driver variables: declared units are converted to the model's, undeclared ones checked.

The model's internal units are those of DESIGN.md (degC, MJ m-2 d-1, ppm, hPa, mm d-1, gC m-2 d-1,
m2 m-2, mm). A driver variable's ``units`` attribute is parsed with the CF unit registry of
cf-xarray (pint); spellings found in real drivers that the registry misreads (``deg C``, ``hPA``)
are mapped first. Water fluxes given as mass (``kg m-2 s-1``) become depths with the density of
liquid water; carbon fluxes given as moles of CO2 (``umol m-2 s-1``) become grams of carbon;
amounts per daily step (``m``, ``J m-2``) become rates.
A variable without ``units`` is taken to be in the model's units, but magnitudes that such a
variable cannot have are refused with the likely cause.
"""

from __future__ import annotations

import functools
import re

import numpy as np

WATER_DENSITY = 1000.0
"""Density of liquid water [kg m-3]: 1 kg m-2 of water is 1 mm deep."""

CARBON_MOLAR_MASS = 12.011
"""Molar mass of carbon [g mol-1] (IUPAC standard atomic weight): a mole of CO2 holds 12.011 gC."""

_ALIASES: dict[str, str] = {
    "deg c": "degC", "deg_c": "degC", "degc": "degC", "degrees c": "degC",
    "degrees_c": "degC", "degree_c": "degC", "degrees celsius": "degC", "celsius": "degC",
    "c": "degC", "°c": "degC",
    "hpa": "hPa", "kpa": "kPa", "pa": "Pa",
    "ppmv": "ppm", "ppm": "ppm", "umol/mol": "umol mol-1", "µmol mol-1": "umol mol-1",
    "fraction": "1", "unitless": "1", "dimensionless": "1", "-": "1", "m2/m2": "m2 m-2",
    "mm/day": "mm d-1", "mm/d": "mm d-1", "mm day-1": "mm d-1",
    "mj/m2/d": "MJ m-2 d-1", "mj/m2/day": "MJ m-2 d-1", "mj m-2 day-1": "MJ m-2 d-1",
}
"""Lower-cased spellings found in drivers -> strings the CF registry reads as meant."""

_CARBON_MASS = re.compile(r"(?<![A-Za-z])([kmuµ]?g|Pg|Tg|Gg|Mg)C(?![A-Za-z])")


_SEASON = 180
"""Valid values needed before small magnitudes are taken as a sign of other units [d]."""


class UnitsError(ValueError):
    """Units that cannot be read or converted to the model's units; a one-line reason."""


@functools.cache
def _registry():
    from cf_xarray.units import units

    return units


def normalised(declared: str) -> str:
    """The declared units as the CF registry should read them (aliases mapped, ``gC`` -> ``g``)."""
    text = " ".join(str(declared).split())
    text = _ALIASES.get(text.lower(), text)
    return _CARBON_MASS.sub(r"\1", text)


def _same(declared: str, canonical: str) -> bool:
    return normalised(declared) == normalised(canonical)


def convert(values: np.ndarray, declared: str, canonical: str,
            step_days: float = 1.0) -> np.ndarray:
    """Convert ``values`` from ``declared`` units to ``canonical`` units.

    Besides conversions within one dimension, three bridges are taken when the dimensions
    differ: water mass to depth (the density of liquid water), moles of CO2 to grams of carbon
    (the molar mass of carbon), and an amount per step to a rate (``m`` of precipitation or
    ``J m-2`` of radiation per step of ``step_days``, as in daily reanalysis files).

    Args:
        values: data in ``declared`` units (NaN gaps pass through).
        declared: the variable's ``units`` attribute.
        canonical: the model's units for the variable.
        step_days: length of the driver's time step [d], for amounts per step.

    Returns:
        The values in ``canonical`` units, float64.

    Raises:
        UnitsError: the declared units cannot be read, or have another dimension than the
            canonical units (after the water-density and carbon-molar-mass bridges).
    """
    values = np.asarray(values, dtype=np.float64)
    if _same(declared, canonical):
        return values
    import pint

    registry = _registry()
    try:
        source = registry.Quantity(values, normalised(declared))
        target = registry.Unit(normalised(canonical))
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, AssertionError):
        raise UnitsError(f"units {declared!r} are not known (expected {canonical!r} or "
                         "units convertible to it)") from None
    candidates = [source]
    if source.dimensionality != target.dimensionality:
        density = registry.Quantity(WATER_DENSITY, "kg m-3")
        molar = registry.Quantity(CARBON_MOLAR_MASS, "g mol-1")
        step = registry.Quantity(step_days, "day")  # an amount per step of the driver
        candidates = [source / density, source * molar, source / step,
                      source / density / step, source * molar / step]
    for candidate in candidates:
        if candidate.dimensionality == target.dimensionality:
            return np.asarray(candidate.to(target).magnitude, dtype=np.float64)
    raise UnitsError(f"units {declared!r} cannot be converted to {canonical!r}")


def likely_unit_mistake(variable: str, values: np.ndarray) -> str | None:
    """A likely cause when undeclared values cannot be in the model's units, else ``None``.

    Args:
        variable: driver variable name (``T2M_MIN``, ``VPD``, ``TOTAL_PREC``, ``SSRD``, ``CO2``,
            ``ET``, ``LAI``...).
        values: the values (gaps as NaN or -9999 allowed).

    Returns:
        One short sentence naming the units the values look like, or ``None``.
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data) & (data != -9999.0)]
    if data.size == 0:
        return None
    top, mean = float(np.max(data)), float(np.mean(data))
    # small values mislead only over a record long enough to have seen a dry or wet spell
    season = data.size >= _SEASON
    if variable in ("T2M_MIN", "T2M_MAX") and mean > 150.0:
        return "values look like kelvin; the model needs degC"
    if variable == "SSRD" and top > 50.0:
        return ("values look like W m-2; the model needs MJ m-2 d-1" if top < 600.0
                else "values look like J m-2 d-1; the model needs MJ m-2 d-1")
    if variable == "VPD":
        if season and 0.0 < top < 8.0:
            return "values never exceed 8 and look like kPa; the model needs hPa"
        if top > 120.0:
            return "values look like Pa; the model needs hPa"
    if variable == "TOTAL_PREC" and season and 0.0 < top < 1.0:
        return ("values look like kg m-2 s-1; the model needs mm d-1" if top < 0.01
                else "values never exceed 1 and look like m d-1; the model needs mm d-1")
    if variable == "CO2" and 0.0 < top < 1.0:
        return "values look like mol mol-1; the model needs ppm"
    if variable == "ET":
        if season and 0.0 < top < 0.01:
            return "values look like kg m-2 s-1; the model needs mm d-1"
        if top > 50.0:
            return "values look like latent heat in W m-2; the model needs mm d-1"
    if variable in ("GPP", "RECO") and top > 100.0:
        return "values exceed 100 gC m-2 d-1; check the units"
    if variable == "LAI" and top > 15.0:
        return "values exceed 15 m2 m-2; check the units or a scale factor"
    return None
