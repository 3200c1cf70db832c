"""Modifier options: each changes one process of the step, and several may be combined.

Photosynthesis modifiers (``ModelConfig.photosynthesis``), soil-water exchanges
(``soil_water``), decomposition modifiers (``decomposition``) and leaf-loss modifiers
(``leaf_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp

from differland.options.base import (
    DecompositionModifier,
    LeafLossModifier,
    NetworkOption,
    PhotosynthesisModifier,
    SoilWaterExchange,
    WaterExchange,
)
from differland.processes import decomposition, photosynthesis, water
from differland.processes.neural import network_term


@dataclass(frozen=True)
class CanopySaturation(PhotosynthesisModifier):
    """The ACM's canopy LAI half-saturation c2 is calibrated instead of fixed.

    c2 of the canopy quantum yield, c1 LAI^2 / (c2 + LAI^2), is the parameter
    ``canopy_lai_half_saturation`` instead of the ACM's fixed 2.1001: how efficient a sparse
    canopy is depends on the canopy's structure."""

    name: ClassVar[str] = "canopy_saturation"
    reads: ClassVar[tuple[str, ...]] = ("canopy_lai_half_saturation",)

    def canopy(self, params, canopy):
        c2 = jnp.asarray(params.canopy_lai_half_saturation, dtype=jnp.result_type(canopy.ssrd))
        return canopy.replace(lai_half_saturation=jnp.broadcast_to(c2, jnp.shape(canopy.ssrd)))


@dataclass(frozen=True)
class NeuralWeatherFactor(NetworkOption, PhotosynthesisModifier):
    """GPP x a neural-network factor of air temperature and VPD, in (0, 1).

    GPP x sigmoid(MLP(T, VPD)): a hybrid weather limitation of photosynthesis.
    The ACM responds to temperature through fixed coefficients and not at all to the
    dryness of the air; this factor learns both from the calibration data. Its inputs are
    the daily mean air temperature and the VPD of the step, each divided by its scale; it
    depends on the forcing only, so it is computed for every step before the time loop.
    Reported as the output ``gpp_weather_factor``; its weights are
    ``network["gpp_weather"]``.

    Attributes:
        hidden, layers: width and number of the leaky-ReLU hidden layers.
        temperature_scale: [degC]; vpd_scale: [hPa].
    """

    name: ClassVar[str] = "gpp_weather"
    term: ClassVar[str] = "gpp_weather"
    n_inputs: ClassVar[int] = 2  # temperature, VPD

    hidden: int = 10
    layers: int = 1
    temperature_scale: float = 20.0  # degC
    vpd_scale: float = 20.0  # hPa

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("gpp_weather_factor",)

    def forcing_terms(self, params, forcing, network):
        f = forcing
        return photosynthesis.neural_weather_factor(f.t_min, f.t_max, f.vpd,
                                                    network_term(network, self.term), self)

    def factor(self, terms, params, state, lai):
        return terms, {"gpp_weather_factor": terms}


@dataclass(frozen=True)
class GroundwaterSupply(SoilWaterExchange):
    """The plant-available bucket receives a calibrated daily supply besides precipitation.

    ``groundwater_supply_rate`` [mm d-1] at every step: capillary rise or lateral inflow
    from a water table, or deep roots reaching water below the bucket. The supply drains
    away with the bucket's own drainage when the soil is wet. Reported as the output
    ``groundwater_supply``."""

    name: ClassVar[str] = "groundwater_supply"
    reads: ClassVar[tuple[str, ...]] = ("groundwater_supply_rate",)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("groundwater_supply",)

    def exchange(self, params, state, delta_t):
        supply = params.groundwater_supply_rate * jnp.ones_like(state.soil_water)
        return WaterExchange(inflow=supply, outputs={"groundwater_supply": supply})


@dataclass(frozen=True)
class DeepWaterUptake(SoilWaterExchange):
    """Plant-unavailable water rises back into the dry root zone (site model).

    Plant-unavailable water (PUW) moves to the plant-available bucket (PAW) while the root
    zone is drier than its drainage focal point Q: ``PUW x deep_water_uptake_rate x max(0, 1
    - PAW / Q)`` [mm d-1]. The water only moves between the buckets, and the rise stops once
    PAW reaches Q. Reported as the output ``deep_water_uptake``."""

    name: ClassVar[str] = "deep_water_uptake"
    reads: ClassVar[tuple[str, ...]] = ("deep_water_uptake_rate",)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("deep_water_uptake",)

    def check(self, config) -> None:
        if "deep_water" not in config.model.state_fields:
            raise ValueError("deep_water_uptake needs the site model: the global model has "
                             "one soil-water bucket and no plant-unavailable store")
        if config.reference_mode:
            raise ValueError("deep_water_uptake is not part of the published model; it "
                             "cannot be combined with reference_mode")

    def exchange(self, params, state, delta_t):
        uptake = water.deep_water_uptake(state.soil_water, state.deep_water,
                                         params.deep_water_uptake_rate,
                                         params.paw_runoff_focal_point, delta_t)
        return WaterExchange(uptake=uptake, outputs={"deep_water_uptake": uptake})


@dataclass(frozen=True)
class WaterLimitedDecomposition(DecompositionModifier):
    """Decomposition slows in dry soil, with the water stress of photosynthesis.

    Its rates are multiplied by ``1 - s x (1 - beta)``,
    ``s = decomposition_water_sensitivity``, beta the water stress of photosynthesis (the
    precipitation term of the reference's modifier sees only the rain of the same day).
    Without water stress it has no effect."""

    name: ClassVar[str] = "water_limited_decomposition"
    reads: ClassVar[tuple[str, ...]] = ("decomposition_water_sensitivity",)

    def parameters_in(self, config) -> tuple[str, ...]:
        return self.parameters if config.water_stress.limits else ()

    def factor(self, params, state, beta):
        return 1.0 - params.decomposition_water_sensitivity * (1.0 - beta)


@dataclass(frozen=True)
class DroughtLeafLoss(LeafLossModifier):
    """Leaves also fall under water stress (drought deciduousness).

    The foliar loss rate gains
    ``drought_leaf_loss_rate x (1 - beta)`` [d-1]. Without water
    stress it has no effect."""

    name: ClassVar[str] = "drought_leaf_loss"
    reads: ClassVar[tuple[str, ...]] = ("drought_leaf_loss_rate",)

    def parameters_in(self, config) -> tuple[str, ...]:
        return self.parameters if config.water_stress.limits else ()

    def loss(self, params, state, beta, delta_t):
        return decomposition.loss_rate(params.drought_leaf_loss_rate * (1.0 - beta), delta_t)
