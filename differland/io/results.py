"""Simulation results as a CF NetCDF dataset.

Variable names are those of the golden reference files: carbon pools ``*_carbon``, water
``plant_available_water``/``plant_unavailable_water`` (site) or ``soil_water`` (global), and the
per-step fluxes of :class:`~differland.state.StepOutputs`. Pools are end-of-step values on the
``time`` axis; the initial pools and every parameter are stored as scalars (so that the file
can be passed back as ``--params``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from differland.io.netcdf import cf_time_coordinate
from differland.params import SPECS
from differland.state import UNITS

WATER_NAMES = {
    "site": {"soil_water": "plant_available_water", "deep_water": "plant_unavailable_water"},
    "global": {"soil_water": "soil_water"},
}


def state_variable_name(field: str, variant: str) -> str:
    """NetCDF name of a :class:`~differland.state.State` field for a model variant."""
    return WATER_NAMES[variant].get(field, field)


def simulation_dataset(dates, states: Mapping[str, np.ndarray],
                       outputs: Mapping[str, np.ndarray], parameters: Mapping[str, float],
                       variant: str, attrs: Mapping[str, str] | None = None) -> xr.Dataset:
    """Build the CF dataset of one simulated pixel.

    Args:
        dates: date of every step, ``(T,)``.
        states: end-of-step pools ``{State field: (T,)}``.
        outputs: per-step fluxes ``{StepOutputs field: (T,)}``.
        parameters: physical parameter values (including the initial pools).
        variant: ``"site"`` or ``"global"``.
        attrs: global attributes (configuration, provenance).
    """
    time_values, time_attrs = cf_time_coordinate(dates)
    data_vars: dict[str, xr.Variable] = {}
    for field, values in states.items():
        name = state_variable_name(field, variant)
        data_vars[name] = xr.Variable(
            "time", np.asarray(values, np.float64),
            {"units": UNITS[field], "long_name": f"{name.replace('_', ' ')} at end of step",
             "cell_methods": "time: point"})
    for field, values in outputs.items():
        data_vars[field] = xr.Variable(
            "time", np.asarray(values, np.float64),
            {"units": UNITS[field], "long_name": field.replace("_", " "),
             "cell_methods": "time: mean"})
    if {"autotrophic_respiration", "rh_litter", "rh_som"} <= set(outputs):
        rh = np.asarray(outputs["rh_litter"], np.float64) + np.asarray(outputs["rh_som"])
        data_vars["heterotrophic_respiration"] = xr.Variable(
            "time", rh, {"units": UNITS["rh_som"], "long_name": "heterotrophic respiration",
                         "cell_methods": "time: mean"})
        data_vars["ecosystem_respiration"] = xr.Variable(
            "time", rh + np.asarray(outputs["autotrophic_respiration"], np.float64),
            {"units": UNITS["rh_som"], "long_name": "ecosystem respiration (Ra + Rh)",
             "cell_methods": "time: mean"})
    for name, value in parameters.items():
        spec = SPECS[name]
        data_vars[name] = xr.Variable(
            (), np.float64(value),
            {"units": spec.units, "long_name": spec.description,
             "reference_name": spec.reference_name})
    dataset = xr.Dataset(data_vars, coords={"time": ("time", time_values, time_attrs)})
    dataset.attrs.update({"Conventions": "CF-1.8", **dict(attrs or {})})
    return dataset
