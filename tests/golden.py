"""Read the golden reference files into differland objects (test helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from differland.forcing import Forcing, make_forcing
from differland.params import SPECS, ParameterSet, names_for, parameters_from_mapping

FORCING_NAMES = {
    "t_min": "forcing_t_min", "t_max": "forcing_t_max", "ssrd": "forcing_ssrd",
    "co2": "forcing_co2", "doy": "forcing_doy", "burned_area": "forcing_burned_area",
    "vpd": "forcing_vpd", "precipitation": "forcing_precipitation",
    "latitude": "forcing_latitude", "delta_t": "forcing_delta_t",
    "mean_temperature": "forcing_t_mean_reference",
    "mean_precipitation": "forcing_precipitation_mean_reference",
}
STATE_NAMES = {
    "site": {"soil_water": "plant_available_water", "deep_water": "plant_unavailable_water"},
    "global": {"soil_water": "soil_water"},
}


def variant_of(path: Path) -> str:
    return "site" if path.name.startswith("dalec990") else "global"


def load(path: Path) -> tuple[xr.Dataset, ParameterSet, Forcing]:
    """Dataset, physical parameters (broadcast over pixels for the global files), forcing."""
    dataset = xr.load_dataset(path)
    variant = variant_of(path)
    clock = "forcing_time" if variant == "site" else "forcing_days"
    forcing = make_forcing(time=dataset[clock].values.astype(np.float64),
                           **{k: dataset[v].values for k, v in FORCING_NAMES.items()})
    values = {n: float(dataset[n]) for n in dataset.data_vars
              if dataset[n].ndim == 0 and n in SPECS}
    inert = [n for n in values if n not in names_for(variant)]
    params = parameters_from_mapping(values, variant, ignore_unknown=inert, source=str(path))
    if "pixel" in dataset.dims:
        n = dataset.sizes["pixel"]
        params = ParameterSet({k: np.full((n,), v) for k, v in params.items()})
    return dataset, params, forcing


def reference_state_name(field: str, variant: str) -> str:
    return STATE_NAMES[variant].get(field, field)


def relative_error(actual, expected) -> float:
    """Max |a - e| / max(|e|, 1e-6 max|e|): relative, with an absolute floor near zero."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    floor = 1e-6 * max(float(np.abs(expected).max()), 1e-300)
    return float((np.abs(actual - expected) / np.maximum(np.abs(expected), floor)).max())
