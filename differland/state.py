"""Prognostic state and per-step diagnostic outputs, as frozen pytrees.

Field names are those of the output NetCDF (and of the golden reference files).
"""

from __future__ import annotations

import jax

from differland._pytree import pytree_dataclass


@pytree_dataclass
class State:
    """Pools at one instant.

    Attributes:
        labile_carbon: labile (non-structural) carbon [gC m-2].
        foliar_carbon: foliar carbon [gC m-2].
        root_carbon: fine-root carbon [gC m-2].
        wood_carbon: wood carbon [gC m-2].
        litter_carbon: litter carbon [gC m-2].
        som_carbon: soil organic matter carbon [gC m-2].
        soil_water: plant-available soil water [mm] (site: PAW bucket; global: single bucket).
        deep_water: plant-unavailable water [mm] (site model only, ``None`` in global).
        growing_season_index: running mean of the growing-season index [1] (climate
            phenology only, else ``None``).
        deferred_release: labile release the calendar pulse asked for but dry soil held
            back, as a fraction of the labile pool [1] (calendar phenology with a
            water-limited release only, else ``None``).
    """

    labile_carbon: jax.Array
    foliar_carbon: jax.Array
    root_carbon: jax.Array
    wood_carbon: jax.Array
    litter_carbon: jax.Array
    som_carbon: jax.Array
    soil_water: jax.Array
    deep_water: jax.Array | None = None
    growing_season_index: jax.Array | None = None
    deferred_release: jax.Array | None = None

    def total_carbon(self) -> jax.Array:
        """Sum of the six carbon pools [gC m-2]."""
        return (self.labile_carbon + self.foliar_carbon + self.root_carbon + self.wood_carbon
                + self.litter_carbon + self.som_carbon)

    def total_water(self) -> jax.Array:
        """Sum of the water pools [mm]."""
        return self.soil_water if self.deep_water is None else self.soil_water + self.deep_water


CARBON_POOLS = ("labile_carbon", "foliar_carbon", "root_carbon", "wood_carbon",
                "litter_carbon", "som_carbon")


@pytree_dataclass
class StepOutputs:
    """Fluxes and diagnostics of one step (rates per day; fields absent in a variant are None).

    Every flux is the positive magnitude in the direction its name gives, except ``nee`` and
    ``nbe`` (positive = net CO2 source to the atmosphere).

    Attributes:
        lai: leaf area index from start-of-step foliar carbon [m2 m-2].
        gpp: gross primary production [gC m-2 d-1].
        et: evapotranspiration [mm d-1].
        rh_environmental_modifier: temperature x moisture multiplier of decomposition [1]
            (including the dry-soil factor of ``water_limited_decomposition``).
        autotrophic_respiration: Ra [gC m-2 d-1].
        npp_to_foliar, npp_to_labile, npp_to_root, npp_to_wood: allocation [gC m-2 d-1].
        leaf_fall_factor: leaf-fall fraction per day [d-1].
        labile_release_factor: labile-release fraction per day [d-1].
        labile_to_foliar: labile release to foliage [gC m-2 d-1].
        foliar_to_litter: leaf litterfall [gC m-2 d-1].
        wood_to_som: wood turnover, to SOM [gC m-2 d-1].
        root_to_litter: root turnover, to litter [gC m-2 d-1].
        rh_litter: heterotrophic respiration of litter [gC m-2 d-1].
        rh_som: heterotrophic respiration of SOM [gC m-2 d-1].
        litter_to_som: litter decomposition to SOM [gC m-2 d-1].
        nee: net ecosystem exchange = -GPP + Ra + Rh [gC m-2 d-1], positive = source.
        beta: water-stress factor on GPP [1].
        gpp_weather_factor: the hybrid weather factor on GPP [1] (option ``gpp_weather``).
        water_violation_penalty: 0.01 x water shortfall that the soil floor forced [mm d-1].
        groundwater_supply: water the bucket receives besides precipitation [mm d-1] (option
            ``groundwater_supply``).
        paw_runoff: drainage leaving the system from PAW [mm d-1] (site).
        puw_runoff: drainage leaving the system from PUW [mm d-1] (site).
        paw_to_puw: PAW -> PUW transfer [mm d-1] (site).
        deep_water_uptake: PUW -> PAW rise [mm d-1] (site, option ``deep_water_uptake``).
        runoff: drainage leaving the single bucket [mm d-1] (global).
        fire_combustion_*: carbon emitted by fire from each pool [gC m-2 d-1] (global).
        fire_transfer_*: fire-killed carbon moved to dead pools [gC m-2 d-1] (global).
        fire_combustion_total: total fire emission [gC m-2 d-1] (global).
        nbe: net biome exchange = NEE + fire emission [gC m-2 d-1] (global).
        sif: solar-induced fluorescence from the linear GPP relation [SIF units] (global).
        vod: vegetation optical depth from end-of-step pools [1] (global).
    """

    lai: jax.Array
    gpp: jax.Array
    et: jax.Array
    rh_environmental_modifier: jax.Array
    autotrophic_respiration: jax.Array
    npp_to_foliar: jax.Array
    npp_to_labile: jax.Array
    npp_to_root: jax.Array
    npp_to_wood: jax.Array
    leaf_fall_factor: jax.Array
    labile_release_factor: jax.Array
    labile_to_foliar: jax.Array
    foliar_to_litter: jax.Array
    wood_to_som: jax.Array
    root_to_litter: jax.Array
    rh_litter: jax.Array
    rh_som: jax.Array
    litter_to_som: jax.Array
    nee: jax.Array
    beta: jax.Array
    water_violation_penalty: jax.Array
    gpp_weather_factor: jax.Array | None = None
    groundwater_supply: jax.Array | None = None
    paw_runoff: jax.Array | None = None
    puw_runoff: jax.Array | None = None
    paw_to_puw: jax.Array | None = None
    deep_water_uptake: jax.Array | None = None
    runoff: jax.Array | None = None
    fire_combustion_labile: jax.Array | None = None
    fire_combustion_foliar: jax.Array | None = None
    fire_combustion_root: jax.Array | None = None
    fire_combustion_wood: jax.Array | None = None
    fire_combustion_litter: jax.Array | None = None
    fire_combustion_som: jax.Array | None = None
    fire_transfer_labile_to_litter: jax.Array | None = None
    fire_transfer_foliar_to_litter: jax.Array | None = None
    fire_transfer_root_to_litter: jax.Array | None = None
    fire_transfer_wood_to_som: jax.Array | None = None
    fire_transfer_litter_to_som: jax.Array | None = None
    fire_combustion_total: jax.Array | None = None
    nbe: jax.Array | None = None
    sif: jax.Array | None = None
    vod: jax.Array | None = None


# Units of every output and state field, one declaration each (used by the NetCDF writer).
FLUX = "gC m-2 d-1"
UNITS: dict[str, str] = {
    "labile_carbon": "gC m-2", "foliar_carbon": "gC m-2", "root_carbon": "gC m-2",
    "wood_carbon": "gC m-2", "litter_carbon": "gC m-2", "som_carbon": "gC m-2",
    "soil_water": "mm", "deep_water": "mm", "growing_season_index": "1",
    "deferred_release": "1",
    "lai": "m2 m-2", "gpp": FLUX, "et": "mm d-1", "rh_environmental_modifier": "1",
    "autotrophic_respiration": FLUX, "npp_to_foliar": FLUX, "npp_to_labile": FLUX,
    "npp_to_root": FLUX, "npp_to_wood": FLUX, "leaf_fall_factor": "d-1",
    "labile_release_factor": "d-1", "labile_to_foliar": FLUX, "foliar_to_litter": FLUX,
    "wood_to_som": FLUX, "root_to_litter": FLUX, "rh_litter": FLUX, "rh_som": FLUX,
    "litter_to_som": FLUX, "nee": FLUX, "beta": "1", "water_violation_penalty": "mm d-1",
    "gpp_weather_factor": "1", "groundwater_supply": "mm d-1",
    "paw_runoff": "mm d-1", "puw_runoff": "mm d-1", "paw_to_puw": "mm d-1", "runoff": "mm d-1",
    "deep_water_uptake": "mm d-1",
    "fire_combustion_labile": FLUX, "fire_combustion_foliar": FLUX,
    "fire_combustion_root": FLUX, "fire_combustion_wood": FLUX,
    "fire_combustion_litter": FLUX, "fire_combustion_som": FLUX,
    "fire_transfer_labile_to_litter": FLUX, "fire_transfer_foliar_to_litter": FLUX,
    "fire_transfer_root_to_litter": FLUX, "fire_transfer_wood_to_som": FLUX,
    "fire_transfer_litter_to_som": FLUX, "fire_combustion_total": FLUX, "nbe": FLUX,
    "sif": "SIF units", "vod": "1",
}
