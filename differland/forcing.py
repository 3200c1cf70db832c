"""Meteorological forcing: a frozen, time-major pytree and its validation.

All fields share the leading time axis (``(T,)`` for one pixel, ``(T, ...)`` never; pixels are a
*leading* batch axis added by ``vmap``: ``(P, T)``). Static per-pixel quantities (latitude,
reference climate) are broadcast along time so that one ``lax.scan`` slices everything.
Internal units (see DESIGN.md): degC, MJ m-2 d-1, ppm, hPa, mm d-1, days.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from differland._pytree import field_names, pytree_dataclass


class ForcingError(ValueError):
    """Forcing that the model cannot run on (missing, non-finite, wrong shape or implausible)."""


@dataclass(frozen=True)
class VariableSpec:
    """Declaration of one forcing variable: units, meaning and physically plausible range."""

    units: str
    description: str
    lower: float
    upper: float


FORCING_VARIABLES: dict[str, VariableSpec] = {
    "time": VariableSpec(
        "d", "model clock: days since the driver's origin (site: 2001-01-01); phenology phase",
        -1e6, 1e6),
    "t_min": VariableSpec("degC", "daily minimum air temperature (monthly mean in global)",
                          -90.0, 60.0),
    "t_max": VariableSpec("degC", "daily maximum air temperature (monthly mean in global)",
                          -90.0, 70.0),
    "ssrd": VariableSpec("MJ m-2 d-1", "incoming shortwave radiation", 0.0, 50.0),
    "co2": VariableSpec("ppm", "atmospheric CO2 mole fraction", 150.0, 2000.0),
    "doy": VariableSpec("d", "day of year (1..366; fractional allowed)", 0.0, 367.0),
    "burned_area": VariableSpec("1", "fraction of the pixel burned during the step", 0.0, 1.0),
    "vpd": VariableSpec("hPa", "vapour pressure deficit", 0.0, 120.0),
    "precipitation": VariableSpec("mm d-1", "precipitation rate", 0.0, 1000.0),
    "latitude": VariableSpec("degrees_north", "latitude of the pixel", -90.0, 90.0),
    "delta_t": VariableSpec("d", "length of the time step", 1e-6, 31.0),
    "mean_temperature": VariableSpec(
        "degC", "reference mean air temperature of the decomposition modifier", -60.0, 50.0),
    "mean_precipitation": VariableSpec(
        "mm d-1", "reference mean precipitation of the decomposition modifier", 1e-6, 100.0),
}


@pytree_dataclass
class Forcing:
    """Time-major forcing of one pixel (all fields share the time axis).

    Attributes:
        time: model clock [d], days since the driver origin; phase of the sin^2 phenology.
        t_min: minimum air temperature [degC].
        t_max: maximum air temperature [degC].
        ssrd: incoming shortwave radiation [MJ m-2 d-1].
        co2: atmospheric CO2 [ppm].
        doy: day of year [d].
        burned_area: fraction of the pixel burned during the step [1].
        vpd: vapour pressure deficit [hPa].
        precipitation: precipitation [mm d-1].
        latitude: latitude [degrees_north], constant along time.
        delta_t: time-step length [d].
        mean_temperature: reference temperature of the decomposition modifier [degC].
        mean_precipitation: reference precipitation of the decomposition modifier [mm d-1].
    """

    time: jax.Array
    t_min: jax.Array
    t_max: jax.Array
    ssrd: jax.Array
    co2: jax.Array
    doy: jax.Array
    burned_area: jax.Array
    vpd: jax.Array
    precipitation: jax.Array
    latitude: jax.Array
    delta_t: jax.Array
    mean_temperature: jax.Array
    mean_precipitation: jax.Array

    @property
    def n_steps(self) -> int:
        """Number of time steps (the last axis)."""
        return int(np.shape(self.t_min)[-1])


assert tuple(FORCING_VARIABLES) == field_names(Forcing), "one declaration per forcing field"


def make_forcing(**fields) -> Forcing:
    """Build a :class:`Forcing` from arrays, broadcasting scalars along time and validating.

    Args:
        **fields: every field of :class:`Forcing`; time series of one common length ``T``
            (or ``(P, T)``), scalars (or ``(P,)``/``(P, 1)``) for constants such as latitude.

    Raises:
        ForcingError: a field is missing or unknown, shapes disagree, or values are non-finite
            or outside the plausible range.
    """
    names = field_names(Forcing)
    missing = [n for n in names if n not in fields]
    unknown = [n for n in fields if n not in names]
    if missing:
        raise ForcingError(f"forcing: missing variable(s) {', '.join(missing)}")
    if unknown:
        raise ForcingError(f"forcing: unknown variable(s) {', '.join(unknown)}")
    arrays = {n: np.asarray(fields[n], dtype=np.float64) for n in names}
    shape = arrays["t_min"].shape
    if len(shape) not in (1, 2) or shape[-1] < 1:
        raise ForcingError(
            f"forcing: t_min has shape {shape}; expected (time,) or (pixel, time)")
    out = {}
    for name, array in arrays.items():
        if array.ndim == len(shape) - 1 and len(shape) > 1:
            array = array[..., None]
        try:
            out[name] = np.broadcast_to(array, shape).copy()
        except ValueError:
            raise ForcingError(
                f"forcing: variable {name} has shape {array.shape}, expected {shape} "
                "or a per-pixel constant") from None
    forcing = Forcing(**out)
    validate_forcing(forcing)
    return forcing


def validate_forcing(forcing: Forcing, source: str = "forcing") -> None:
    """Check that every forcing value is finite and physically plausible.

    Args:
        forcing: forcing to check (numpy or concrete JAX arrays).
        source: name of the file or object the forcing came from, used in messages.

    Raises:
        ForcingError: naming the source, the variable and the problem.
    """
    for name, spec in FORCING_VARIABLES.items():
        values = np.asarray(getattr(forcing, name))
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argwhere(bad)[0][-1])
            raise ForcingError(
                f"{source}: variable {name} has {int(bad.sum())} NaN/inf value(s) "
                f"(first at time index {first}); forcing must be gap-free")
        low, high = float(values.min()), float(values.max())
        if low < spec.lower or high > spec.upper:
            raise ForcingError(
                f"{source}: variable {name} spans [{low:.4g}, {high:.4g}] {spec.units}, outside "
                f"the plausible range [{spec.lower:g}, {spec.upper:g}] {spec.units} "
                "(wrong units?)")
    swapped = np.asarray(forcing.t_max) < np.asarray(forcing.t_min) - 1e-6
    if swapped.any():
        first = int(np.argwhere(swapped)[0][-1])
        raise ForcingError(f"{source}: variable t_max is below t_min at {int(swapped.sum())} "
                           f"time step(s) (first at time index {first}); are they swapped?")
