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


_SIGN = "positive upward: carbon released to the atmosphere"
LONG_NAMES: dict[str, str] = {
    "labile_carbon": "labile (non-structural) carbon",
    "foliar_carbon": "foliar carbon",
    "root_carbon": "fine-root carbon",
    "wood_carbon": "wood carbon",
    "litter_carbon": "litter carbon",
    "som_carbon": "soil organic matter carbon",
    "plant_available_water": "plant-available soil water (PAW bucket)",
    "plant_unavailable_water": "plant-unavailable water (PUW bucket)",
    "soil_water": "soil water (single bucket)",
    "growing_season_index": "running mean of the growing-season index",
    "deferred_release": "labile release held back by dry soil, as a fraction of the labile pool",
    "lai": "leaf area index (start-of-step foliar carbon / leaf mass per area)",
    "gpp": "gross primary production",
    "et": "evapotranspiration",
    "rh_environmental_modifier": "temperature x moisture multiplier of decomposition",
    "autotrophic_respiration": "autotrophic respiration",
    "npp_to_foliar": "net primary production allocated to foliage",
    "npp_to_labile": "net primary production allocated to the labile pool",
    "npp_to_root": "net primary production allocated to fine roots",
    "npp_to_wood": "net primary production allocated to wood",
    "leaf_fall_factor": "fraction of foliage falling per day",
    "labile_release_factor": "fraction of the labile pool released per day",
    "labile_to_foliar": "labile release to foliage",
    "foliar_to_litter": "leaf litterfall",
    "wood_to_som": "wood turnover to soil organic matter",
    "root_to_litter": "fine-root turnover to litter",
    "rh_litter": "heterotrophic respiration of litter",
    "rh_som": "heterotrophic respiration of soil organic matter",
    "litter_to_som": "litter decomposition to soil organic matter",
    "nee": f"net ecosystem exchange of CO2, -GPP + Ra + Rh ({_SIGN})",
    "beta": "water-stress factor on GPP",
    "water_violation_penalty": "0.01 x water shortfall forced by the soil-water floor",
    "gpp_weather_factor": "hybrid weather factor on GPP",
    "groundwater_supply": "groundwater supply to the soil-water bucket",
    "paw_runoff": "drainage leaving the system from the PAW bucket",
    "puw_runoff": "drainage leaving the system from the PUW bucket",
    "paw_to_puw": "transfer from the PAW to the PUW bucket",
    "deep_water_uptake": "rise of plant-unavailable water into the PAW bucket",
    "runoff": "drainage leaving the soil-water bucket",
    "fire_combustion_labile": "fire emission from the labile pool",
    "fire_combustion_foliar": "fire emission from foliage",
    "fire_combustion_root": "fire emission from fine roots",
    "fire_combustion_wood": "fire emission from wood",
    "fire_combustion_litter": "fire emission from litter",
    "fire_combustion_som": "fire emission from soil organic matter",
    "fire_transfer_labile_to_litter": "fire-killed labile carbon moved to litter",
    "fire_transfer_foliar_to_litter": "fire-killed foliage moved to litter",
    "fire_transfer_root_to_litter": "fire-killed fine roots moved to litter",
    "fire_transfer_wood_to_som": "fire-killed wood moved to soil organic matter",
    "fire_transfer_litter_to_som": "fire-killed litter moved to soil organic matter",
    "fire_combustion_total": "total fire emission",
    "nbe": f"net biome exchange of CO2, NEE + fire emission ({_SIGN})",
    "sif": "solar-induced fluorescence (linear GPP relation)",
    "vod": "vegetation optical depth",
    "heterotrophic_respiration": "heterotrophic respiration (litter + soil organic matter)",
    "ecosystem_respiration": "ecosystem respiration (autotrophic + heterotrophic)",
}
"""CF ``long_name`` of every output variable (NetCDF names), with the sign convention of the
net exchanges; every other flux is a positive magnitude in the direction its name gives."""


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
    dtypes = [np.asarray(v).dtype for v in (*states.values(), *outputs.values())]
    dtype = np.result_type(*dtypes) if dtypes else np.float64  # the precision computed
    for field, values in states.items():
        name = state_variable_name(field, variant)
        data_vars[name] = xr.Variable(
            "time", np.asarray(values, dtype),
            {"units": UNITS[field], "long_name": f"{LONG_NAMES[name]} at end of step",
             "cell_methods": "time: point"})
    for field, values in outputs.items():
        data_vars[field] = xr.Variable(
            "time", np.asarray(values, dtype),
            {"units": UNITS[field], "long_name": LONG_NAMES[field],
             "cell_methods": "time: mean"})
    if {"autotrophic_respiration", "rh_litter", "rh_som"} <= set(outputs):
        rh = np.asarray(outputs["rh_litter"], dtype) + np.asarray(outputs["rh_som"], dtype)
        data_vars["heterotrophic_respiration"] = xr.Variable(
            "time", rh, {"units": UNITS["rh_som"],
                         "long_name": LONG_NAMES["heterotrophic_respiration"],
                         "cell_methods": "time: mean"})
        data_vars["ecosystem_respiration"] = xr.Variable(
            "time", rh + np.asarray(outputs["autotrophic_respiration"], dtype),
            {"units": UNITS["rh_som"], "long_name": LONG_NAMES["ecosystem_respiration"],
             "cell_methods": "time: mean"})
    for name, value in parameters.items():
        spec = SPECS[name]
        data_vars[name] = xr.Variable(
            (), np.asarray(value, dtype),
            {"units": spec.units, "long_name": spec.description,
             "reference_name": spec.reference_name})
    dataset = xr.Dataset(data_vars, coords={"time": ("time", time_values, time_attrs)})
    dataset.attrs.update({"Conventions": "CF-1.8", **dict(attrs or {})})
    return dataset


def ensemble_dataset(dates, fluxes: Mapping[str, np.ndarray],
                     parameters: Mapping[str, np.ndarray],
                     attrs: Mapping[str, object] | None = None) -> xr.Dataset:
    """The mean and spread (standard deviation) over ensemble members of predicted fluxes
    ``{name: (members, T)}`` (``gpp``, ``reco``, ``nee``, ``et``, ``lai``) and of parameters
    ``{name: (members,)}``, as CF variables ``<name>_mean`` and ``<name>_spread``."""
    time_values, time_attrs = cf_time_coordinate(dates)
    flux_units = {"reco": UNITS["gpp"]}
    data_vars: dict[str, xr.Variable] = {}
    for name, values in fluxes.items():
        values = np.asarray(values)
        units = flux_units.get(name, UNITS.get(name, "1"))
        for statistic, reduce in (("mean", np.mean), ("spread", np.std)):
            data_vars[f"{name}_{statistic}"] = xr.Variable(
                "time", reduce(values, axis=0),
                {"units": units, "long_name": f"ensemble {statistic} of {name}",
                 "cell_methods": f"time: mean realization: {statistic}"})
    for name, values in parameters.items():
        spec = SPECS[name]
        for statistic, reduce in (("mean", np.mean), ("spread", np.std)):
            data_vars[f"{name}_{statistic}"] = xr.Variable(
                (), reduce(np.asarray(values)),
                {"units": spec.units, "long_name": f"ensemble {statistic} of {name}"})
    dataset = xr.Dataset(data_vars, coords={"time": ("time", time_values, time_attrs)})
    dataset.attrs.update({"Conventions": "CF-1.8", **dict(attrs or {})})
    return dataset
