"""Water-stress and evapotranspiration options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import jax.numpy as jnp

from differland.options.base import Evapotranspiration, NetworkOption, WaterStress
from differland.processes import water
from differland.processes.neural import network_term


@dataclass(frozen=True)
class NoWaterStress(WaterStress):
    """beta = 1: GPP is not limited by soil water (the reference's "baseline")."""

    name: ClassVar[str] = "none"
    limits: ClassVar[bool] = False

    def beta(self, params, water_, network):
        return jnp.ones_like(water_)


@dataclass(frozen=True)
class LinearBeta(WaterStress):
    """beta rises linearly from the wilting point to field capacity (the reference's default).

    beta = clip((W - WP) / (FC - WP), 0, 1), WP = FC x wilting_point_fraction, W the
    start-of-step plant-available water [mm].
    """

    name: ClassVar[str] = "beta"
    reads: ClassVar[tuple[str, ...]] = ("field_capacity", "wilting_point_fraction")

    def beta(self, params, water_, network):
        return water.linear_beta(water_, params.field_capacity, params.wilting_point_fraction)


@dataclass(frozen=True)
class NeuralBeta(NetworkOption, WaterStress):
    """beta from a neural network of plant-available water (the reference's neural form).

    beta = sigmoid(MLP(W / water_scale)), W the start-of-step plant-available water [mm]
    (the reference's layers [1, 10, 1]). Its weights are ``network["water_stress"]``.

    Attributes:
        hidden: width of each hidden layer.
        layers: number of leaky-ReLU hidden layers.
        water_scale: soil water that maps to an input of 1 [mm].
        monotone: use the softplus of every weight, so that beta never falls as the soil
            water rises (the plain network may learn any shape).
    """

    name: ClassVar[str] = "neural"
    term: ClassVar[str] = "water_stress"
    n_inputs: ClassVar[int] = 1

    hidden: int = 10
    layers: int = 1
    water_scale: float = 1500.0  # mm
    monotone: bool = False

    def beta(self, params, water_, network):
        return water.neural_beta(water_, network_term(network, self.term), self)

    def prepared(self, network):
        if not self.monotone:
            return self, network
        layers = water.monotone_layers(network_term(network, self.term))
        return dataclasses.replace(self, monotone=False), {**network, self.term: layers}


@dataclass(frozen=True)
class UnderlyingWUE(Evapotranspiration):
    """ET = GPP sqrt(VPD) / uWUE + r SSRD (Boese et al. 2017; the reference's form)."""

    name: ClassVar[str] = "uwue"
    reads: ClassVar[tuple[str, ...]] = ("underlying_water_use_efficiency",
                                        "radiation_et_coefficient")

    def forcing_terms(self, params, forcing, network):
        f, p = forcing, params
        return {"per_gpp": water.evapotranspiration(1.0, f.vpd, f.ssrd,
                                                    p.underlying_water_use_efficiency, 0.0),
                "radiation": f.ssrd * p.radiation_et_coefficient}

    def et(self, terms, params, lai, water_, gpp, network):
        return gpp * terms["per_gpp"] + terms["radiation"]


@dataclass(frozen=True)
class NeuralET(NetworkOption, Evapotranspiration):
    """ET from a neural network of the weather, LAI, soil water and GPP [mm d-1].

    ``transpiration="network"``: ET = softplus(MLP(inputs)), the network also sees the GPP
    of the step (the reference's ``gpp_acm_et_nn`` inputs, plus precipitation).
    ``transpiration="uwue"``: ET = GPP sqrt(VPD) / uWUE + softplus(MLP(inputs without GPP)):
    transpiration keeps the Boese et al. (2017) link to GPP and the network takes the place
    of the radiation term.

    The inputs are the daily mean air temperature, SSRD, VPD, CO2 and ln(1 + P / scale) of
    the step and the start-of-step LAI and plant-available water (and the GPP of the step),
    each divided by the fixed scale below, so one network definition applies to any driver.
    The water balance may still scale ET down when the soil would empty. Its weights are
    ``network["evapotranspiration"]``.

    Attributes:
        transpiration: ``"network"`` or ``"uwue"`` (above).
        soil_water_input: give the network the plant-available water.
        hidden, layers: width and number of the leaky-ReLU hidden layers.
        *_scale: the value of each input that maps to 1.
    """

    name: ClassVar[str] = "neural"
    term: ClassVar[str] = "evapotranspiration"
    reads: ClassVar[tuple[str, ...]] = ("underlying_water_use_efficiency",)
    n_forcing_inputs: ClassVar[int] = 5  # temperature, SSRD, VPD, CO2, precipitation

    transpiration: Literal["network", "uwue"] = "network"
    soil_water_input: bool = True
    hidden: int = 10
    layers: int = 2
    temperature_scale: float = 20.0  # degC
    radiation_scale: float = 20.0  # MJ m-2 d-1
    vpd_scale: float = 20.0  # hPa
    co2_scale: float = 400.0  # ppm
    precipitation_scale: float = 10.0  # mm d-1
    lai_scale: float = 8.0  # m2 m-2
    water_scale: float = 1500.0  # mm
    gpp_scale: float = 8.0  # gC m-2 d-1

    def __post_init__(self):
        if self.transpiration not in ("network", "uwue"):
            raise ValueError(f"transpiration must be 'network' or 'uwue', "
                             f"not {self.transpiration!r}")

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.reads if self.transpiration == "uwue" else ()

    @property
    def n_inputs(self) -> int:  # type: ignore[override]
        """Forcing inputs, then LAI, plant-available water (unless left out) and GPP (with
        a network transpiration)."""
        return (self.n_forcing_inputs + 1 + int(self.soil_water_input)
                + int(self.transpiration == "network"))

    def forcing_terms(self, params, forcing, network):
        f = forcing
        terms = {"network_part": water.neural_et_forcing_part(
            f.t_min, f.t_max, f.ssrd, f.vpd, f.co2, f.precipitation,
            network_term(network, self.term), self)}
        if self.transpiration == "uwue":
            terms["per_gpp"] = water.evapotranspiration(
                1.0, f.vpd, f.ssrd, params.underlying_water_use_efficiency, 0.0)
        return terms

    def et(self, terms, params, lai, water_, gpp, network):
        et = water.neural_evapotranspiration(terms["network_part"], lai, water_, gpp,
                                             network_term(network, self.term), self)
        if self.transpiration == "uwue":
            et = et + gpp * terms["per_gpp"]
        return et
