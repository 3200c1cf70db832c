"""Parameter maps of the twin world: known smooth functions of the predictors.

Each planted parameter is, in the registry's unconstrained space (the space the network
predicts in), its base value plus a smooth function of the standardised numeric predictors
(a weighted sum of ``tanh`` of a few of them) plus an effect of the plant functional type;
the weights are drawn from the world's seed and recorded in the world, so each map is a
known function that a network of the same predictors can represent. Parameters not planted
take the world's base value everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from differland.params import ParameterSet, constrain, unconstrain
from differland.spatial.predictors import PFT_CLASSES

MODEL_OPTIONS = {"model": "global", "water_stress": "beta", "evapotranspiration": "uwue",
                 "phenology": "calendar"}
"""Process options of the twin world's model (the monthly global model with the reference's
linear water stress)."""

HALF_YEAR = 182.625  # d: the phenology dates of the southern hemisphere are shifted by it

BASE_VALUES: dict[str, float] = {
    "litter_to_som_rate": 1e-3, "autotrophic_respiration_fraction": 0.45,
    "foliar_allocation_fraction": 0.15, "root_allocation_fraction": 0.3,
    "leaf_lifespan": 1.5, "wood_turnover_rate": 1e-4, "root_turnover_rate": 2e-3,
    "litter_respiration_rate": 2e-3, "som_respiration_rate": 3e-5,
    "temperature_sensitivity": 0.06, "canopy_efficiency": 20.0,
    "labile_release_day": 365.25 + 120.0, "labile_allocation_fraction": 0.1,
    "labile_release_period": 40.0, "leaf_fall_day": 365.25 + 290.0, "leaf_fall_period": 60.0,
    "leaf_carbon_mass_per_area": 60.0, "underlying_water_use_efficiency": 4.0,
    "runoff_focal_point": 300.0, "field_capacity": 300.0, "wilting_point_fraction": 0.1,
    "foliar_combustion_fraction": 0.5, "ligneous_combustion_fraction": 0.1,
    "som_combustion_fraction": 0.05, "fire_resilience": 0.3, "labile_lifespan": 1.5,
    "rh_moisture_sensitivity": 0.3, "radiation_et_coefficient": 0.05,
    "sif_alpha": 10.0, "sif_beta_plus_three": 3.0, "vod_foliar_coefficient": 1e-3,
    "vod_wood_coefficient": 1e-5, "initial_labile_carbon": 50.0,
    "initial_foliar_carbon": 80.0, "initial_root_carbon": 150.0,
    "initial_wood_carbon": 4000.0, "initial_litter_carbon": 300.0,
    "initial_som_carbon": 8000.0, "initial_water": 200.0,
}
"""The world's base value of every parameter of its model [registry units]: an ecosystem of
the middle latitudes (the registry's box centres are no ecosystem)."""

PLANTED: tuple[str, ...] = (
    "canopy_efficiency", "autotrophic_respiration_fraction", "foliar_allocation_fraction",
    "leaf_carbon_mass_per_area", "leaf_lifespan", "wood_turnover_rate",
    "litter_respiration_rate", "som_respiration_rate", "temperature_sensitivity",
    "labile_release_day", "leaf_fall_day", "underlying_water_use_efficiency",
    "field_capacity", "initial_wood_carbon", "initial_som_carbon",
)
"""Parameters that vary over the world (by default): growth, allocation, leaves,
turnover, respiration, phenology dates, water use, the root-zone store and the slow pools."""

SPATIAL_SD = 0.45
"""Standard deviation of the smooth predictor term of a planted map [unconstrained units]."""
PFT_SD = 0.35
"""Standard deviation of the plant-functional-type effects [unconstrained units]."""
PREDICTORS_PER_PARAMETER = 3

FLAMMABILITY = {
    "needleleaf_forest": 0.004, "evergreen_broadleaf_forest": 0.001,
    "deciduous_broadleaf_forest": 0.002, "mixed_forest": 0.002, "shrubland": 0.01,
    "savanna": 0.03, "grassland": 0.015, "cropland": 0.003, "wetland": 0.001,
}
"""Largest monthly burned fraction of each plant functional type [1]."""


def base_values(latitude: np.ndarray) -> dict[str, np.ndarray]:
    """Base value of each parameter at cells of ``latitude`` ``(P,)``: :data:`BASE_VALUES`,
    with the phenology dates of the southern hemisphere half a year later (a smooth step
    across the equator)."""
    latitude = np.asarray(latitude, float)
    south = 1.0 / (1.0 + np.exp(latitude / 4.0))
    out = {name: np.full(latitude.shape, value) for name, value in BASE_VALUES.items()}
    for name in ("labile_release_day", "leaf_fall_day"):
        out[name] = out[name] + HALF_YEAR * south
    return out


def draw_coefficients(names: Sequence[str], predictors: Sequence[str], seed: int) -> dict:
    """The weights of each planted map: ``{parameter: {"predictors": {name: weight},
    "pft": {pft: effect}}}``, drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    coefficients = {}
    for name in names:
        chosen = rng.choice(len(predictors), size=min(PREDICTORS_PER_PARAMETER,
                                                      len(predictors)), replace=False)
        weights = rng.normal(size=chosen.size)
        weights *= SPATIAL_SD / np.sqrt(np.sum(weights**2))
        effects = rng.normal(scale=PFT_SD, size=len(PFT_CLASSES))
        coefficients[name] = {
            "predictors": {predictors[j]: float(w) for j, w in zip(chosen, weights,
                                                                   strict=True)},
            "pft": {pft: float(e) for pft, e in zip(PFT_CLASSES, effects, strict=True)}}
    return coefficients


def planted_unconstrained(coefficients: dict, standardised: dict[str, np.ndarray],
                          pft: np.ndarray, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Unconstrained value of each planted parameter at each cell: its base value's, plus
    ``sum_j w_j tanh(x_j)`` over its predictors (standardised), plus its PFT effect."""
    base_z = unconstrain(ParameterSet({name: jnp.asarray(base[name])
                                       for name in coefficients}))
    out = {}
    pft = np.asarray(pft)
    for name, terms in coefficients.items():
        z = np.asarray(base_z[name], dtype=np.float64)
        for predictor, weight in terms["predictors"].items():
            z = z + weight * np.tanh(standardised[predictor])
        z = z + np.array([terms["pft"][p] for p in pft])
        out[name] = z
    return out


def physical(unconstrained: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Physical values of unconstrained ones (the registry's transforms)."""
    values = constrain(ParameterSet({k: jnp.asarray(v) for k, v in unconstrained.items()}))
    return {name: np.asarray(values[name], dtype=np.float64) for name in unconstrained}
