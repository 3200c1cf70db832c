"""The model variants: the water stores, and what else a variant adds to a step (fire, SIF,
VOD). Reference: ``reference-dalec.md`` (DALEC990 and DALEC993)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from differland._pytree import field_names
from differland.options.base import Option
from differland.params import SPECS, Variant
from differland.processes import fire, water
from differland.state import State, StepOutputs


@dataclass(frozen=True)
class ModelVariant(Option):
    """A model variant (abstract): its water stores and their update."""

    slot: ClassVar[str] = "model"
    name: ClassVar[Variant]
    initial_water: ClassVar[str]  # the registry parameter of the initial soil water

    def water_bounds(self) -> tuple[float, float]:
        """The prior bounds of the initial soil water [mm] (the reference's water clamps)."""
        spec = SPECS[self.initial_water]
        return spec.lower, spec.upper

    def update(self, params, state, drivers, carbon, et, inflow, uptake, reference_mode,
               common) -> tuple[State, StepOutputs]:
        """The end-of-step state and the step's outputs.

        Args:
            params, state, drivers: as in the step.
            carbon: the end-of-step carbon pools (before fire).
            et: evapotranspiration before the water balance limits it [mm d-1].
            inflow: water entering the plant-available bucket [mm d-1].
            uptake: plant-unavailable -> plant-available water [mm d-1] (site model).
            reference_mode: the published update with its clamps.
            common: the outputs every variant returns.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class SiteModel(ModelVariant):
    """Daily flux-site model (DALEC990): two water buckets (PAW, PUW), no fire."""

    name: ClassVar[Variant] = "site"
    initial_water: ClassVar[str] = "initial_plant_available_water"

    @property
    def state_fields(self) -> tuple[str, ...]:
        return ("deep_water",)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("paw_runoff", "puw_runoff", "paw_to_puw")

    def initial_state(self, params) -> dict:
        return {"soil_water": params.initial_plant_available_water,
                "deep_water": params.initial_plant_unavailable_water}

    def update(self, params, state, drivers, carbon, et, inflow, uptake, reference_mode,
               common):
        p = params
        args = (state.soil_water, state.deep_water, inflow, et, p.paw_runoff_focal_point,
                p.puw_runoff_focal_point, p.paw_to_puw_fraction, drivers.delta_t)
        if reference_mode:
            result = water.two_bucket_update_reference(*args, *self.water_bounds())
        else:
            result = water.two_bucket_update(*args, uptake=uptake)
        paw, puw, et, paw_runoff, paw_to_puw, puw_runoff, penalty = result
        next_state = State(carbon.labile, carbon.foliar, carbon.root, carbon.wood,
                           carbon.litter, carbon.som, soil_water=paw, deep_water=puw)
        outputs = StepOutputs(**common, et=et, water_violation_penalty=penalty,
                              paw_runoff=paw_runoff, puw_runoff=puw_runoff,
                              paw_to_puw=paw_to_puw)
        return next_state, outputs


FIRE_OUTPUTS = tuple(f"fire_combustion_{pool}" for pool in
                     ("labile", "foliar", "root", "wood", "litter", "som")) + (
    "fire_transfer_labile_to_litter", "fire_transfer_foliar_to_litter",
    "fire_transfer_root_to_litter", "fire_transfer_wood_to_som", "fire_transfer_litter_to_som",
    "fire_combustion_total")


@dataclass(frozen=True)
class GlobalModel(ModelVariant):
    """Monthly global model (DALEC993): one water bucket, fire, SIF and VOD."""

    name: ClassVar[Variant] = "global"
    initial_water: ClassVar[str] = "initial_water"

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("runoff", *FIRE_OUTPUTS, "nbe", "sif", "vod")

    def initial_state(self, params) -> dict:
        return {"soil_water": params.initial_water}

    def update(self, params, state, drivers, carbon, et, inflow, uptake, reference_mode,
               common):
        p, dt = params, drivers.delta_t
        if reference_mode:
            soil_water, et, runoff, penalty = water.bucket_update_reference(
                state.soil_water, inflow, et, p.runoff_focal_point, dt, *self.water_bounds())
        else:
            soil_water, et, runoff, penalty = water.bucket_update(
                state.soil_water, inflow, et, p.runoff_focal_point, dt)
        b = fire.fire_fluxes(carbon.labile, carbon.foliar, carbon.root, carbon.wood,
                             carbon.litter, carbon.som, drivers.burned_area, p, dt)
        next_state = State(
            labile_carbon=carbon.labile - (b.combustion_labile + b.transfer_labile_to_litter) * dt,
            foliar_carbon=carbon.foliar - (b.combustion_foliar + b.transfer_foliar_to_litter) * dt,
            root_carbon=carbon.root - (b.combustion_root + b.transfer_root_to_litter) * dt,
            wood_carbon=carbon.wood - (b.combustion_wood + b.transfer_wood_to_som) * dt,
            litter_carbon=carbon.litter + (b.transfer_labile_to_litter
                                           + b.transfer_foliar_to_litter
                                           + b.transfer_root_to_litter - b.combustion_litter
                                           - b.transfer_litter_to_som) * dt,
            som_carbon=carbon.som + (b.transfer_wood_to_som + b.transfer_litter_to_som
                                     - b.combustion_som) * dt,
            soil_water=soil_water)
        total = b.combustion_total
        sif = (common["gpp"] - (p.sif_beta_plus_three - 3.0)) / p.sif_alpha
        vod = (p.vod_foliar_coefficient * next_state.foliar_carbon
               + p.vod_wood_coefficient * next_state.wood_carbon)
        fire_outputs = {f"fire_{name}": getattr(b, name) for name in field_names(b)}
        outputs = StepOutputs(**common, et=et, water_violation_penalty=penalty, runoff=runoff,
                              **fire_outputs, fire_combustion_total=total,
                              nbe=common["nee"] + total, sif=sif, vod=vod)
        return next_state, outputs

