"""Static model configuration: typed, hashable choices fixed at trace time.

Variants and process options are frozen dataclasses chosen by type, never strings compared
inside jitted code. A :class:`ModelConfig` is a valid ``static_argnames`` value for ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from differland._pytree import field_names
from differland.params import Variant
from differland.state import CARBON_POOLS, State, StepOutputs

# Time steps per time-loop iteration on a GPU (or other accelerator) when ModelConfig.scan_unroll
# is None: on an H100, 8 makes the US-Var site run 4x (100 vmapped parameter sets, gradient) to
# 12x (one forward run) faster than 1, at 4-11x the compile time; 32 compiles for over a minute.
# On CPU, where the loop compiles into one kernel, unrolling is slower (24 vmapped starts over 5
# years, value_and_grad: 6.4 / 8.1 / 21 ms with 1 / 2 / 4).
ACCELERATOR_SCAN_UNROLL = 8


@dataclass(frozen=True)
class SiteModel:
    """Daily flux-site model (DALEC990): two water buckets (PAW, PUW), no fire."""

    name: Variant = field(default="site", init=False)
    state_fields: tuple[str, ...] = field(default=("deep_water",), init=False, repr=False)
    outputs: tuple[str, ...] = field(default=("paw_runoff", "puw_runoff", "paw_to_puw"),
                                     init=False, repr=False)


_FIRE_OUTPUTS = tuple(f"fire_combustion_{pool}" for pool in
                      ("labile", "foliar", "root", "wood", "litter", "som")) + (
    "fire_transfer_labile_to_litter", "fire_transfer_foliar_to_litter",
    "fire_transfer_root_to_litter", "fire_transfer_wood_to_som", "fire_transfer_litter_to_som",
    "fire_combustion_total")


@dataclass(frozen=True)
class GlobalModel:
    """Monthly global model (DALEC993): one water bucket, fire, SIF and VOD."""

    name: Variant = field(default="global", init=False)
    state_fields: tuple[str, ...] = field(default=(), init=False, repr=False)
    outputs: tuple[str, ...] = field(default=("runoff", *_FIRE_OUTPUTS, "nbe", "sif", "vod"),
                                     init=False, repr=False)


@dataclass(frozen=True)
class NoWaterStress:
    """beta = 1: GPP is not limited by soil water (the reference's "baseline"/"nothing")."""

    parameters: tuple[str, ...] = field(default=(), init=False, repr=False)


@dataclass(frozen=True)
class LinearBeta:
    """beta = clip((W - WP) / (FC - WP), 0, 1), WP = FC x wilting_point_fraction.

    W is the start-of-step plant-available water. This is the reference's "default".
    """

    parameters: tuple[str, ...] = field(default=("field_capacity", "wilting_point_fraction"),
                                        init=False, repr=False)


@dataclass(frozen=True)
class NeuralBeta:
    """beta = sigmoid(MLP(W / water_scale)): a small neural network of soil water.

    Its weights are ``network["water_stress"]`` of ``simulate`` (see
    :func:`differland.processes.neural.init_network`).

    Attributes:
        hidden: width of each hidden layer (the reference's [1, 10, 1]; see
            :class:`NeuralET` on width and cost).
        layers: number of hidden layers (leaky-ReLU).
        water_scale: soil water that maps to an input of 1 [mm].
        monotone: use the softplus of every weight, so that beta never falls as the soil
            water rises (leaky-ReLU is increasing, so positive weights make the network
            non-decreasing in W). The plain network may learn any shape, and where the soil
            never limits it can use W as a proxy for the season (beta falling in the wet
            months) and carry that into drier years.
    """

    hidden: int = 10
    layers: int = 1
    water_scale: float = 1500.0
    monotone: bool = False

    @property
    def parameters(self) -> tuple[str, ...]:
        """Registry parameters it reads (none: the network's weights stand for them)."""
        return ()

    @property
    def sizes(self) -> tuple[int, ...]:
        return (1,) + (self.hidden,) * self.layers + (1,)


WaterStress = NoWaterStress | LinearBeta | NeuralBeta


@dataclass(frozen=True)
class UnderlyingWUE:
    """ET = GPP sqrt(VPD) / uWUE + r SSRD (Boese et al. 2017): the reference's form."""

    parameters: tuple[str, ...] = field(
        default=("underlying_water_use_efficiency", "radiation_et_coefficient"), init=False,
        repr=False)


@dataclass(frozen=True)
class NeuralET:
    """A hybrid evapotranspiration term with a neural network [mm d-1].

    ``transpiration="network"``: ET = softplus(MLP(inputs)), the network sees the GPP of the
    step. ``transpiration="uwue"``: ET = GPP sqrt(VPD) / uWUE + softplus(MLP(inputs without
    GPP)): transpiration keeps the Boese et al. (2017) link to GPP and the network takes the
    place of the radiation term (soil evaporation, interception, what uWUE misses).

    The inputs are the daily mean air temperature, SSRD, VPD, CO2 and ln(1 + P / scale) of the
    step (forcing) and the start-of-step LAI and plant-available water (and the GPP of the
    step), each divided by the scale below; the network has ``layers`` leaky-ReLU hidden
    layers of width ``hidden``. The network's output is positive; the water balance may still
    scale ET down when the soil would empty. The inputs are those of the reference's
    ``gpp_acm_et_nn`` variant plus precipitation (interception and soil evaporation follow
    rain days), with fixed physical scales instead of per-site standardisation, so one network
    definition applies to any driver. Its weights are ``network["evapotranspiration"]``.

    ``soil_water_input=False`` leaves the plant-available water out: the network then sees the
    soil's water only through GPP, whose water stress beta it carries, and through the bucket.
    Nothing makes a network's ET rise with the water it is given, and where the soil never
    limits in the calibration years that input stands for whatever it correlates with there.

    The hidden layers have 10 units, as the reference's. The networks run at every step of
    the time loop, for every start or pixel; narrower ones were measured and not adopted
    (``docs/calibration.md``, "Cost").
    """

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

    n_forcing_inputs = 5  # temperature, SSRD, VPD, CO2, precipitation

    def __post_init__(self):
        if self.transpiration not in ("network", "uwue"):
            raise ValueError(f"NeuralET transpiration must be 'network' or 'uwue', "
                             f"got {self.transpiration!r}")

    @property
    def parameters(self) -> tuple[str, ...]:
        """Registry parameters it reads: uWUE when transpiration keeps the uWUE form."""
        return ("underlying_water_use_efficiency",) if self.transpiration == "uwue" else ()

    @property
    def n_inputs(self) -> int:
        """Forcing inputs, then LAI, plant-available water (unless left out) and GPP (with a
        network transpiration)."""
        return (self.n_forcing_inputs + 1 + int(self.soil_water_input)
                + int(self.transpiration == "network"))

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs,) + (self.hidden,) * self.layers + (1,)


Evapotranspiration = UnderlyingWUE | NeuralET


@dataclass(frozen=True)
class NeuralWeatherFactor:
    """A hybrid weather limitation of photosynthesis: GPP x sigmoid(MLP(T, VPD)).

    The ACM light-use model responds to temperature through fixed coefficients and not at all
    to the dryness of the air, which closes stomata; this factor in (0, 1) learns both from
    the calibration data. Its inputs are the daily mean air temperature and the VPD of the
    step, each divided by its scale below; the network has ``layers`` leaky-ReLU hidden
    layers of width ``hidden``. It depends on the forcing only, so it is computed for every
    step at once before the time loop and adds almost nothing to the cost of a run (the
    soil-water stress stays the separate factor beta, which also slows decomposition). Its
    weights are ``network["gpp_weather"]``.
    """

    hidden: int = 10
    layers: int = 1
    temperature_scale: float = 20.0  # degC
    vpd_scale: float = 20.0  # hPa

    n_inputs = 2  # temperature, VPD

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs,) + (self.hidden,) * self.layers + (1,)


@dataclass(frozen=True)
class CalendarPhenology:
    """Leaf onset and leaf fall as annual pulses on fixed dates (CARDAMOM DALEC; the
    reference's form): see :mod:`differland.processes.phenology`.

    Attributes:
        water_limited_release: the labile release waits for soil water. Each step releases
            the release owed (this step's calendar pulse plus what earlier dry steps held
            back) x the soil-water factor 1 / (1 + (W_half / W)^k) of the start-of-step
            plant-available water W, W_half = ``growing_season_water``; the rest stays owed
            (a state variable, ``deferred_release``), fading over ``release_memory_days``.
            Onset keeps its calibrated date where the soil is wet then, and follows the
            first rains where it is not (see
            :func:`~differland.processes.phenology.water_limited_release`). Where W stays
            far above W_half this is the reference's form.
        steepness: the exponent k of the water factor.
        release_memory_days: e-folding time of the held-back release [d].
    """

    water_limited_release: bool = False
    steepness: float = 4.0
    release_memory_days: float = 60.0

    @property
    def state_fields(self) -> tuple[str, ...]:
        """State it carries: the held-back release with a water-limited release."""
        return ("deferred_release",) if self.water_limited_release else ()

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters this phenology uses besides ``leaf_lifespan``."""
        return ("labile_release_day", "labile_release_period", "leaf_fall_day",
                "leaf_fall_period", "labile_lifespan") + (
                    ("growing_season_water",) if self.water_limited_release else ())


@dataclass(frozen=True)
class ClimatePhenology:
    """Leaf onset and fall driven by a growing-season index (GSI) of the weather and soil water.

    The index (Jolly et al. 2005, with soil water as in Forkel et al. 2014) is the product of
    four smooth factors in [0, 1]: daily minimum temperature, day length, VPD and the
    start-of-step plant-available water, each one half at a calibrated threshold. Labile
    carbon moves to the leaves at ``leaf_growth_rate x GSI`` and leaves fall at
    ``1 / leaf_lifespan + leaf_senescence_rate x (1 - GSI)`` (per day), so onset and
    senescence follow each year's weather instead of fixed dates. The index that sets the
    rates is its running mean (an exponential memory of ``memory_days``, a state variable
    starting at ``initial_index``), so a cold night or a dry day does not shed leaves.

    Attributes:
        temperature_width: temperature over which the temperature factor rises from
            0.27 to 0.73 (a logistic of width ``temperature_width / 2``) [degC].
        daylength_width: the same for day length [h].
        steepness: exponent k of the VPD and water factors, 1 / (1 + (x / x_half)^(+-k)).
        memory_days: e-folding time of the running mean [d] (Jolly et al. average the index
            over 21 days).
        initial_index: the running mean at the start of a run [1].
        pulses: keep the calendar pulses and add the index-driven rates to them, the pulses
            taking the place of the even 1 / lifespan background (onset and fall then have
            a typical date that each year's weather can advance, delay or amplify).
        index_rates: which rates the index sets: ``"both"`` (leaf growth and leaf fall),
            ``"growth"`` (only the labile release; leaves fall on the calendar pulses, or the
            1 / lifespan background, and ``leaf_senescence_rate`` is not used) or ``"fall"``
            (only leaf fall; with the pulses the labile release is the calendar's and
            ``leaf_growth_rate`` is not used).
        water_factor: the index's water factor: ``"soil_water"`` (1 / (1 + (W_half /
            PAW)^k), W_half = ``growing_season_water``) or ``"beta"`` (the water-stress
            factor of photosynthesis, 1 without water stress, so that leaves respond to the
            water status the GPP observations constrain; ``growing_season_water`` is then not
            used).
    """

    temperature_width: float = 4.0
    daylength_width: float = 1.0
    steepness: float = 4.0
    memory_days: float = 21.0
    initial_index: float = 0.5
    pulses: bool = False
    index_rates: str = "both"
    water_factor: str = "soil_water"

    def __post_init__(self):
        if self.water_factor not in ("soil_water", "beta"):
            raise ValueError(f"water_factor must be 'soil_water' or 'beta', "
                             f"not {self.water_factor!r}")
        if self.index_rates not in ("both", "growth", "fall"):
            raise ValueError(f"index_rates must be 'both', 'growth' or 'fall', "
                             f"not {self.index_rates!r}")
        if self.index_rates != "both" and not self.pulses:
            raise ValueError("index_rates other than 'both' needs the calendar pulses "
                             "(pulses=True)")

    state_fields: tuple[str, ...] = field(default=("growing_season_index",), init=False,
                                          repr=False)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters this phenology uses besides ``leaf_lifespan``."""
        return ("growing_season_temperature", "growing_season_daylength",
                "growing_season_vpd") + (
                    ("growing_season_water",) if self.water_factor == "soil_water" else ()) + (
                    ("leaf_growth_rate",) if self.index_rates != "fall" else ()) + (
                    ("leaf_senescence_rate",) if self.index_rates != "growth" else ()) + (
                    CalendarPhenology().parameters if self.pulses else ())


Phenology = CalendarPhenology | ClimatePhenology

_OPTIONAL_OUTPUTS = frozenset(f.name for f in dataclasses.fields(StepOutputs)
                              if f.default is None)
"""Outputs that only some configurations return (the others are returned by every run)."""

# Boolean process options of ModelConfig that add an output of their own.
OPTION_OUTPUTS = {"groundwater_supply": "groundwater_supply",
                  "deep_water_uptake": "deep_water_uptake"}

# Boolean process options of ModelConfig and the parameter each one adds to the model (a
# model without the option ignores that parameter).
OPTION_PARAMETERS = {"drought_leaf_loss": "drought_leaf_loss_rate",
                     "groundwater_supply": "groundwater_supply_rate",
                     "deep_water_uptake": "deep_water_uptake_rate",
                     "water_limited_decomposition": "decomposition_water_sensitivity",
                     "canopy_saturation": "canopy_lai_half_saturation"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything static about a run.

    Attributes:
        model: :class:`SiteModel` or :class:`GlobalModel`.
        water_stress: :class:`NoWaterStress`, :class:`LinearBeta` or :class:`NeuralBeta`.
        evapotranspiration: :class:`UnderlyingWUE` (default) or :class:`NeuralET`.
        gpp_weather: ``None`` (default) or :class:`NeuralWeatherFactor`, a hybrid factor of
            air temperature and VPD that multiplies GPP.
        phenology: :class:`CalendarPhenology` (default) or :class:`ClimatePhenology`.
        drought_leaf_loss: leaves also fall under water stress: the foliar loss rate gains
            ``drought_leaf_loss_rate x (1 - beta)`` (drought deciduousness; the calendar
            phenology alone drops leaves on the same dates every year).
        groundwater_supply: the soil-water bucket (PAW at the site) receives
            ``groundwater_supply_rate`` [mm d-1] at every step besides precipitation:
            capillary rise or lateral inflow from a water table, or deep roots reaching water
            below the bucket. Without it the vegetation can use only the rain of the run, so
            that a dry year's ET and GPP fall with its rain even where the tower sees no
            drought (a shallow water table, deep-rooted trees). The supply drains away with
            the bucket's own drainage when the soil is wet; reported as the output
            ``groundwater_supply``.
        deep_water_uptake: (site model) plant-unavailable water (PUW) rises back into the
            plant-available bucket (PAW): capillary rise from the deeper soil, or roots
            reaching it, while the root zone is drier than its drainage focal point Q,
            ``PUW x deep_water_uptake_rate x max(0, 1 - PAW / Q)`` [mm d-1]. Without it
            PUW is a sink, and what drains below the roots in a wet year is lost to the
            plants of the next dry one. The water only moves between the buckets, so the
            store is finite (no external source) and it stops rising once PAW reaches Q,
            so the exchange cannot hold PAW above what the drainage allows. Reported as
            the output ``deep_water_uptake``.
        water_limited_decomposition: decomposition (litter and SOM respiration, litter ->
            SOM) slows in dry soil: its rates are multiplied by ``1 - s x (1 - beta)`` with
            ``s = decomposition_water_sensitivity`` (the precipitation term of the reference
            modifier sees only the rain of the same day).
        canopy_saturation: the LAI half-saturation c2 of the ACM's canopy quantum yield,
            c1 LAI^2 / (c2 + LAI^2), is the parameter ``canopy_lai_half_saturation`` instead
            of the ACM's fixed 2.1001: how efficient a sparse canopy is varies with the
            canopy's structure, which the ACM's constant (fitted to one canopy model) fixes.
        reference_mode: reproduce the published DifferLand code exactly, including its hard
            clamps of pools to the prior bounds of the initial pools and its mass-balance bugs.
            The default (False) keeps every pool non-negative by limiting outflows to what the
            pool holds, which conserves carbon and water exactly and keeps gradients alive.
        checkpoint_every: if set, the time loop is split into segments of this many steps
            and each segment is rematerialised (``jax.checkpoint``) in reverse mode, so
            memory grows with T / checkpoint_every instead of T.
        outputs: names of :class:`~differland.state.StepOutputs` fields to keep for every step
            (``None`` keeps all). Dropping outputs saves memory and time in long runs.
        keep_states: keep the end-of-step state of every step (else only the final state).
        scan_unroll: time steps per iteration of the compiled time loop (``lax.scan``'s
            ``unroll``); ``None`` (default) takes 1 on CPU and 8 on a GPU or other accelerator
            (:meth:`unroll_for_backend`). Results are the same; larger values trade compile time
            for less loop overhead per step, which a GPU needs (3-12x faster runs there, see
            ``benchmarks/model_throughput.py``).
    """

    model: SiteModel | GlobalModel = field(default_factory=SiteModel)
    water_stress: WaterStress = field(default_factory=NoWaterStress)
    evapotranspiration: Evapotranspiration = field(default_factory=UnderlyingWUE)
    phenology: Phenology = field(default_factory=CalendarPhenology)
    gpp_weather: NeuralWeatherFactor | None = None
    drought_leaf_loss: bool = False
    groundwater_supply: bool = False
    deep_water_uptake: bool = False
    water_limited_decomposition: bool = False
    canopy_saturation: bool = False
    reference_mode: bool = False
    checkpoint_every: int | None = None
    outputs: tuple[str, ...] | None = None
    keep_states: bool = True
    scan_unroll: int | None = None

    def __post_init__(self):
        if not isinstance(self.model, SiteModel | GlobalModel):
            raise TypeError(f"model must be SiteModel() or GlobalModel(), got {self.model!r}")
        if not isinstance(self.water_stress, NoWaterStress | LinearBeta | NeuralBeta):
            raise TypeError(f"unknown water_stress option {self.water_stress!r}")
        if not isinstance(self.evapotranspiration, UnderlyingWUE | NeuralET):
            raise TypeError(f"unknown evapotranspiration option {self.evapotranspiration!r}")
        if not isinstance(self.phenology, CalendarPhenology | ClimatePhenology):
            raise TypeError(f"unknown phenology option {self.phenology!r}")
        if self.gpp_weather is not None and not isinstance(self.gpp_weather,
                                                           NeuralWeatherFactor):
            raise TypeError(f"gpp_weather must be None or NeuralWeatherFactor(), "
                            f"got {self.gpp_weather!r}")
        if self.deep_water_uptake and not isinstance(self.model, SiteModel):
            raise ValueError("deep_water_uptake needs the site model: the global model has "
                             "one soil-water bucket and no plant-unavailable store")
        if self.deep_water_uptake and self.reference_mode:
            raise ValueError("deep_water_uptake is not part of the published model; it "
                             "cannot be combined with reference_mode")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive number of steps")
        if self.scan_unroll is not None and (
                isinstance(self.scan_unroll, bool) or not isinstance(self.scan_unroll, int)
                or self.scan_unroll < 1):
            raise ValueError(f"scan_unroll must be None or a positive integer, "
                             f"got {self.scan_unroll!r}")
        if self.outputs is not None:
            object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def variant(self) -> Variant:
        return self.model.name

    def unroll_for_backend(self, backend: str) -> int:
        """Time steps per time-loop iteration on ``backend`` (``jax.default_backend()``)."""
        if self.scan_unroll is not None:
            return self.scan_unroll
        return 1 if backend == "cpu" else ACCELERATOR_SCAN_UNROLL

    def parameter_names(self) -> tuple[str, ...]:
        """Exactly the registry parameters a run with this configuration reads, in registry
        order: the variant's parameters less those of the process options it does not use,
        or uses with no effect (the drought leaf loss and the dry-soil decomposition without
        water stress). A parameter outside this set changes no output."""
        from differland.params import names_for

        # the drought leaf loss and the dry-soil decomposition scale with 1 - beta
        stressed = not isinstance(self.water_stress, NoWaterStress)
        flags = {flag for flag in OPTION_PARAMETERS if getattr(self, flag)}
        if not stressed:
            flags -= {"drought_leaf_loss", "water_limited_decomposition"}
        used = {"leaf_lifespan", *self.water_stress.parameters,
                *self.evapotranspiration.parameters, *self.phenology.parameters,
                *(OPTION_PARAMETERS[flag] for flag in flags)}
        return tuple(name for name in names_for(self.variant)
                     if name not in OPTION_OWNED_PARAMETERS or name in used)

    def state_names(self) -> tuple[str, ...]:
        """The :class:`~differland.state.State` fields a run with this configuration carries
        (the others are ``None``), in field order."""
        carried = {*CARBON_POOLS, "soil_water", *self.model.state_fields,
                   *self.phenology.state_fields}
        return tuple(name for name in field_names(State) if name in carried)

    def output_names(self) -> tuple[str, ...]:
        """The :class:`~differland.state.StepOutputs` fields a run with this configuration
        returns (the others are ``None``), in field order; units in
        :data:`differland.state.UNITS`."""
        added = {*self.model.outputs,
                 *(OPTION_OUTPUTS[flag] for flag in OPTION_OUTPUTS if getattr(self, flag))}
        if self.gpp_weather is not None:
            added.add("gpp_weather_factor")
        names = [name for name in field_names(StepOutputs)
                 if name not in _OPTIONAL_OUTPUTS or name in added]
        return tuple(name for name in names if self.outputs is None or name in self.outputs)

    @property
    def network_sizes(self) -> dict[str, tuple[int, ...]]:
        """Layer sizes of each neural term, keyed as in the ``network`` mapping."""
        sizes = {}
        if isinstance(self.water_stress, NeuralBeta):
            sizes["water_stress"] = self.water_stress.sizes
        if isinstance(self.evapotranspiration, NeuralET):
            sizes["evapotranspiration"] = self.evapotranspiration.sizes
        if self.gpp_weather is not None:
            sizes["gpp_weather"] = self.gpp_weather.sizes
        return sizes


WaterStressName = Literal["none", "beta", "neural", "neural_monotone"]
WATER_STRESS_OPTIONS: dict[str, WaterStress] = {
    "none": NoWaterStress(),
    "beta": LinearBeta(),
    "neural": NeuralBeta(),
    "neural_monotone": NeuralBeta(monotone=True),
}
EVAPOTRANSPIRATION_OPTIONS: dict[str, Evapotranspiration] = {
    "uwue": UnderlyingWUE(),
    "neural": NeuralET(),
    "neural_evaporation": NeuralET(transpiration="uwue"),
    "neural_no_soil_water": NeuralET(soil_water_input=False),
}
PHENOLOGY_OPTIONS: dict[str, Phenology] = {
    "calendar": CalendarPhenology(),
    "climate": ClimatePhenology(),
    "calendar_climate": ClimatePhenology(pulses=True),
    "calendar_growth": ClimatePhenology(pulses=True, index_rates="growth"),
    "calendar_senescence": ClimatePhenology(pulses=True, index_rates="fall"),
    "calendar_climate_beta": ClimatePhenology(pulses=True, water_factor="beta"),
    "calendar_water": CalendarPhenology(water_limited_release=True),
}
MODEL_OPTIONS: dict[str, SiteModel | GlobalModel] = {"site": SiteModel(), "global": GlobalModel()}


OPTION_OWNED_PARAMETERS: frozenset[str] = frozenset(
    name for option in (*WATER_STRESS_OPTIONS.values(), *EVAPOTRANSPIRATION_OPTIONS.values(),
                        *PHENOLOGY_OPTIONS.values())
    for name in option.parameters) | frozenset(OPTION_PARAMETERS.values())
"""Parameters that only some process options read (the others are read by every run)."""

