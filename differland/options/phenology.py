"""Phenology options: the calendar pulses and the growing-season index
(equations in :mod:`differland.processes.phenology`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import jax.numpy as jnp

from differland.options.base import LeafRates, Phenology
from differland.processes import phenology

_PULSE_PARAMETERS = ("labile_release_day", "labile_release_period", "leaf_fall_day",
                     "leaf_fall_period", "labile_lifespan")


def _pulses(params, forcing) -> dict:
    """The calendar pulses' fractions per day [d-1]."""
    p, f = params, forcing
    return {"leaf_fall": phenology.leaf_fall_factor(f.time, p.leaf_lifespan,
                                                    p.leaf_fall_period, p.leaf_fall_day),
            "labile_release": phenology.labile_release_factor(
                f.time, p.labile_lifespan, p.labile_release_period, p.labile_release_day)}


@dataclass(frozen=True)
class CalendarPhenology(Phenology):
    """Leaf onset and fall as annual pulses on calibrated dates (the reference's form).

    The pulses of CARDAMOM DALEC (:mod:`differland.processes.phenology`).

    Attributes:
        water_limited_release: the labile release waits for soil water. Each step releases
            the release owed (this step's pulse plus what earlier dry steps held back) x the
            soil-water factor 1 / (1 + (W_half / W)^k) of the start-of-step plant-available
            water W, W_half = ``growing_season_water``; the rest stays owed (the state
            ``deferred_release``), fading over ``release_memory_days``
            (:func:`~differland.processes.phenology.water_limited_release`).
        steepness: the exponent k of the water factor.
        release_memory_days: e-folding time of the held-back release [d].
    """

    name: ClassVar[str] = "calendar"
    reads: ClassVar[tuple[str, ...]] = _PULSE_PARAMETERS + ("growing_season_water",)

    water_limited_release: bool = False
    steepness: float = 4.0
    release_memory_days: float = 60.0  # d

    @property
    def parameters(self) -> tuple[str, ...]:
        return _PULSE_PARAMETERS + (
            ("growing_season_water",) if self.water_limited_release else ())

    @property
    def state_fields(self) -> tuple[str, ...]:
        return ("deferred_release",) if self.water_limited_release else ()

    def initial_state(self, params) -> dict:
        if not self.water_limited_release:
            return {}
        return {"deferred_release": jnp.zeros_like(params.initial_foliar_carbon)}

    def forcing_terms(self, params, forcing, loss):
        pulses = _pulses(params, forcing)
        return {**pulses, "release_loss": loss(pulses["labile_release"], forcing.delta_t),
                "leaf_loss": loss(pulses["leaf_fall"], forcing.delta_t)}

    def rates(self, terms, params, state, beta, delta_t, loss):
        labile_release, release_loss, carried = (terms["labile_release"],
                                                 terms["release_loss"], {})
        if self.water_limited_release:
            water_factor = phenology.growing_season_water_factor(
                state.soil_water, params.growing_season_water, self)
            release_loss, carried["deferred_release"] = phenology.water_limited_release(
                release_loss, state.deferred_release, water_factor, delta_t,
                self.release_memory_days)
            labile_release = release_loss
        return LeafRates(labile_release, terms["leaf_fall"], release_loss, terms["leaf_loss"],
                         carried)


@dataclass(frozen=True)
class ClimatePhenology(Phenology):
    """The calendar pulses plus leaf growth and fall driven by a growing-season index.

    The growing-season index (GSI) of the weather and soil water (Jolly et al. 2005; soil
    water as in Forkel et al. 2014) lets each year's weather advance, delay or amplify
    onset and fall.

    The index is the product of four smooth factors in [0, 1]: daily minimum temperature,
    day length, VPD and the start-of-step plant-available water, each one half at a
    calibrated threshold. Its running mean m (an exponential memory of ``memory_days``, the
    state ``growing_season_index``, starting at ``initial_index``) sets the rates added to
    the pulses: labile carbon moves to the leaves at ``leaf_growth_rate x m`` and leaves
    fall at ``leaf_senescence_rate x (1 - m)`` per day.

    Attributes:
        temperature_width: temperature over which the temperature factor rises from 0.27
            to 0.73 [degC].
        daylength_width: the same for day length [h].
        steepness: exponent k of the VPD and water factors, 1 / (1 + (x / x_half)^(+-k)).
        memory_days: e-folding time of the running mean [d].
        initial_index: the running mean at the start of a run [1].
        index_rates: which rates the index sets: ``"both"`` or ``"fall"`` (leaf fall only;
            the labile release is the calendar's and ``leaf_growth_rate`` is not read).
    """

    name: ClassVar[str] = "climate"
    reads: ClassVar[tuple[str, ...]] = (
        "growing_season_temperature", "growing_season_daylength", "growing_season_vpd",
        "growing_season_water", "leaf_growth_rate", "leaf_senescence_rate") + _PULSE_PARAMETERS

    temperature_width: float = 4.0  # degC
    daylength_width: float = 1.0  # h
    steepness: float = 4.0
    memory_days: float = 21.0  # d
    initial_index: float = 0.5
    index_rates: Literal["both", "fall"] = "both"

    def __post_init__(self):
        if self.index_rates not in ("both", "fall"):
            raise ValueError(f"index_rates must be 'both' or 'fall', not {self.index_rates!r}")

    @property
    def parameters(self) -> tuple[str, ...]:
        growth = ("leaf_growth_rate",) if self.index_rates == "both" else ()
        return ("growing_season_temperature", "growing_season_daylength",
                "growing_season_vpd", "growing_season_water", *growth,
                "leaf_senescence_rate", *_PULSE_PARAMETERS)

    @property
    def state_fields(self) -> tuple[str, ...]:
        return ("growing_season_index",)

    def initial_state(self, params) -> dict:
        return {"growing_season_index": jnp.full_like(params.initial_foliar_carbon,
                                                      self.initial_index)}

    def forcing_terms(self, params, forcing, loss):
        p, f = params, forcing
        return {"weather": phenology.growing_season_weather_index(
            f.t_min, f.vpd, f.latitude, f.doy, p.growing_season_temperature,
            p.growing_season_daylength, p.growing_season_vpd, self), **_pulses(p, f)}

    def rates(self, terms, params, state, beta, delta_t, loss):
        p = params
        water_factor = phenology.growing_season_water_factor(
            state.soil_water, p.growing_season_water, self)
        memory = phenology.growing_season_memory(state.growing_season_index,
                                                 terms["weather"] * water_factor, delta_t,
                                                 self.memory_days)
        labile_release, leaf_fall = phenology.index_driven_rates(
            memory, p.leaf_growth_rate if self.index_rates == "both" else 0.0,
            p.leaf_senescence_rate)
        labile_release = labile_release + terms["labile_release"]
        leaf_fall = leaf_fall + terms["leaf_fall"]
        return LeafRates(labile_release, leaf_fall, loss(labile_release, delta_t),
                         loss(leaf_fall, delta_t), {"growing_season_index": memory})
