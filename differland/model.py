"""The DALEC step and the time loop.

``step(params, state, forcing_t, config)`` advances one time step and returns the next state and
a :class:`~differland.state.StepOutputs`; ``simulate`` scans it over time with ``lax.scan``;
``simulate_pixels`` vmaps ``simulate`` over a leading pixel axis. Variants and options are taken
from the static :class:`~differland.config.ModelConfig`.

Performance: the state-independent terms of every step are computed for all steps at once
(:func:`step_drivers`, in a cheaper exact form when every step is one day) before the sequential
scan; the scan body is rematerialised in reverse mode (``jax.checkpoint``), so the backward pass
stores only the state and the drivers of each step; and on import this module asks XLA:CPU to
compile each time loop into one kernel (:func:`_request_single_kernel_loops`), which removes a
per-operation dispatch cost that otherwise dominates a step.
"""

from __future__ import annotations

import os
from functools import partial

import jax
import jax.numpy as jnp

from differland._pytree import field_names, pytree_dataclass
from differland.config import (
    CalendarPhenology,
    ClimatePhenology,
    GlobalModel,
    ModelConfig,
    NeuralET,
    SiteModel,
)
from differland.forcing import Forcing
from differland.params import SPECS, ParameterSet
from differland.processes import decomposition, fire, phenology, photosynthesis, pools, water
from differland.processes.allocation import allocate
from differland.processes.neural import network_term
from differland.state import State, StepOutputs

# XLA:CPU compiles a while loop whose per-iteration footprint is below this many bytes into a
# single kernel. A DALEC step of up to ~1000 pixels fits; larger batches keep XLA's default
# per-operation kernels, which may run on several threads (measured: equal at ~3000 pixels).
SINGLE_KERNEL_LOOP_BYTES = 1 << 25
_LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"


def _request_single_kernel_loops(environ=os.environ) -> None:
    """Raise XLA:CPU's small-while-loop threshold to :data:`SINGLE_KERNEL_LOOP_BYTES`.

    XLA's CPU runtime runs each operation of a loop body as a separate kernel at ~50 ns per
    dispatch; a DALEC step has tens of them, which is most of its cost. Loops below the
    threshold (default 1 kB) are compiled into one kernel instead. The option is appended to
    ``--xla_backend_extra_options`` in ``XLA_FLAGS``, so it applies only if JAX has not yet
    initialised its CPU backend (import differland before running JAX computations), and it
    applies to every XLA:CPU loop of the process. A value set by the user is left alone; set
    ``xla_cpu_small_while_loop_byte_threshold=1024`` there to restore XLA's default.
    """
    flags = environ.get("XLA_FLAGS", "")
    if _LOOP_OPTION in flags:
        return
    option = f"{_LOOP_OPTION}={SINGLE_KERNEL_LOOP_BYTES}"
    words = flags.split()
    for i, word in enumerate(words):
        if word.startswith("--xla_backend_extra_options="):
            words[i] = f"{word},{option}" if not word.endswith("=") else word + option
            break
    else:
        words.append(f"--xla_backend_extra_options={option}")
    environ["XLA_FLAGS"] = " ".join(words)


_request_single_kernel_loops()

_INITIAL = {
    "labile": "initial_labile_carbon",
    "foliar": "initial_foliar_carbon",
    "root": "initial_root_carbon",
    "wood": "initial_wood_carbon",
    "litter": "initial_litter_carbon",
    "som": "initial_som_carbon",
}


@pytree_dataclass
class Trajectory:
    """Result of :func:`simulate`.

    Attributes:
        states: end-of-step :class:`State` for every step (leading time axis), or ``None``
            when ``config.keep_states`` is False.
        final_state: the state after the last step.
        outputs: :class:`StepOutputs` for every step (leading time axis).
    """

    states: State | None
    final_state: State
    outputs: StepOutputs


def initial_state(params: ParameterSet, config: ModelConfig) -> State:
    """The state at the start of a run, from the ``initial_*`` parameters."""
    carbon = {f"{pool}_carbon": params[name] for pool, name in _INITIAL.items()}
    phenology_state = {}
    if isinstance(config.phenology, ClimatePhenology):
        phenology_state["growing_season_index"] = jnp.full_like(
            params.initial_foliar_carbon, config.phenology.initial_index)
    if _water_limited_release(config):
        phenology_state["deferred_release"] = jnp.zeros_like(params.initial_foliar_carbon)
    if isinstance(config.model, SiteModel):
        return State(**carbon, soil_water=params.initial_plant_available_water,
                     deep_water=params.initial_plant_unavailable_water, **phenology_state)
    return State(**carbon, soil_water=params.initial_water, **phenology_state)


def _reference_bounds(dtype) -> tuple[pools.CarbonPools, pools.CarbonPools]:
    lower = {k: jnp.asarray(SPECS[v].lower, dtype) for k, v in _INITIAL.items()}
    upper = {k: jnp.asarray(SPECS[v].upper, dtype) for k, v in _INITIAL.items()}
    return pools.CarbonPools(**lower), pools.CarbonPools(**upper)


def _water_bounds(config: ModelConfig) -> tuple[float, float]:
    name = ("initial_plant_available_water" if isinstance(config.model, SiteModel)
            else "initial_water")
    return SPECS[name].lower, SPECS[name].upper


@pytree_dataclass
class StepDrivers:
    """Everything a step needs that does not depend on the state (parameters x forcing).

    :func:`simulate` computes these for all steps at once, vectorised over time, before the
    sequential scan; :func:`step` computes them for a single step. Loss coefficients are per
    day [d-1]: a pool X loses X x coefficient per day.
    """

    canopy: photosynthesis.CanopyTerms
    et_per_gpp: jax.Array | None  # sqrt(VPD) / uWUE [mm gC-1] (uWUE ET)
    et_radiation: jax.Array | None  # r x SSRD [mm d-1] (uWUE ET)
    et_forcing_part: jax.Array | None  # forcing share of the neural ET's first layer
    rh_environmental_modifier: jax.Array
    # the calendar pulses' fractions per day (calendar phenology, or climate with pulses)
    leaf_fall_factor: jax.Array | None
    labile_release_factor: jax.Array | None
    # their loss coefficients (calendar phenology only)
    labile_release_loss: jax.Array | None
    leaf_fall_loss: jax.Array | None
    growing_season_weather: jax.Array | None  # climate phenology: weather part of the GSI
    gpp_weather_factor: jax.Array | None  # NeuralWeatherFactor: GPP multiplier [1]
    root_turnover_loss: jax.Array
    wood_turnover_loss: jax.Array
    rh_litter_loss: jax.Array
    rh_som_loss: jax.Array
    litter_to_som_loss: jax.Array
    precipitation: jax.Array
    burned_area: jax.Array
    delta_t: jax.Array


def _loss_rate(config: ModelConfig, unit_step: bool = False):
    """The per-day loss coefficient of a rate, ``f(rate, delta_t)``, for the update mode."""
    if config.reference_mode:
        return decomposition.loss_rate_reference
    return partial(decomposition.loss_rate, unit_step=unit_step)


def _water_limited_release(config: ModelConfig) -> bool:
    return isinstance(config.phenology, CalendarPhenology) and \
        config.phenology.water_limited_release


def step_drivers(params: ParameterSet, forcing: Forcing, config: ModelConfig, network=None,
                 *, unit_step: bool = False) -> StepDrivers:
    """State-independent terms of the step; elementwise, so ``forcing`` may carry a time axis.

    ``network`` (the neural terms' weights) is needed by :class:`NeuralET`, whose forcing
    inputs' share of the first layer is computed here, and by the
    :class:`~differland.config.NeuralWeatherFactor` of GPP, which is computed here whole.
    ``unit_step=True`` declares that every ``delta_t`` is exactly 1 day; the loss
    coefficients then take the form the general formula reduces to (default mode only; see
    :func:`~differland.processes.decomposition.loss_rate`).
    """
    p, f, dt = params, forcing, forcing.delta_t
    loss = _loss_rate(config, unit_step)
    modifier = decomposition.environmental_modifier(
        f.t_min, f.t_max, f.precipitation, f.mean_temperature, f.mean_precipitation,
        p.temperature_sensitivity, p.rh_moisture_sensitivity)
    leaf_fall = labile_release = growing_season_weather = None
    climate = isinstance(config.phenology, ClimatePhenology)
    if climate:
        growing_season_weather = phenology.growing_season_weather_index(
            f.t_min, f.vpd, f.latitude, f.doy, p.growing_season_temperature,
            p.growing_season_daylength, p.growing_season_vpd, config.phenology)
    if not climate or config.phenology.pulses:
        leaf_fall = phenology.leaf_fall_factor(f.time, p.leaf_lifespan, p.leaf_fall_period,
                                               p.leaf_fall_day)
        labile_release = phenology.labile_release_factor(
            f.time, p.labile_lifespan, p.labile_release_period, p.labile_release_day)
    option = config.evapotranspiration
    neural = isinstance(option, NeuralET)
    et_per_gpp = et_radiation = et_forcing_part = None
    if not neural or option.transpiration == "uwue":
        et_per_gpp = water.evapotranspiration(1.0, f.vpd, f.ssrd,
                                              p.underlying_water_use_efficiency, 0.0)
    if neural:
        et_forcing_part = water.neural_et_forcing_part(
            f.t_min, f.t_max, f.ssrd, f.vpd, f.co2, f.precipitation,
            network_term(network, "evapotranspiration"), option)
    else:
        et_radiation = f.ssrd * p.radiation_et_coefficient
    gpp_weather_factor = None
    if config.gpp_weather is not None:
        gpp_weather_factor = photosynthesis.neural_weather_factor(
            f.t_min, f.t_max, f.vpd, network_term(network, "gpp_weather"), config.gpp_weather)
    return StepDrivers(
        canopy=photosynthesis.canopy_terms(f.t_min, f.t_max, f.ssrd, f.co2, f.doy, f.latitude,
                                           p.canopy_efficiency,
                                           p.canopy_lai_half_saturation
                                           if config.canopy_saturation else None),
        et_per_gpp=et_per_gpp,
        et_radiation=et_radiation,
        et_forcing_part=et_forcing_part,
        rh_environmental_modifier=modifier,
        leaf_fall_factor=leaf_fall,
        labile_release_factor=labile_release,
        # with the index the loss coefficients come from the summed rates, in the step
        labile_release_loss=None if climate else loss(labile_release, dt),
        leaf_fall_loss=None if climate else loss(leaf_fall, dt),
        growing_season_weather=growing_season_weather,
        gpp_weather_factor=gpp_weather_factor,
        root_turnover_loss=loss(p.root_turnover_rate, dt),
        wood_turnover_loss=loss(p.wood_turnover_rate, dt),
        rh_litter_loss=loss(modifier * p.litter_respiration_rate, dt),
        rh_som_loss=loss(modifier * p.som_respiration_rate, dt),
        litter_to_som_loss=loss(modifier * p.litter_to_som_rate, dt),
        precipitation=f.precipitation,
        burned_area=f.burned_area,
        delta_t=dt,
    )


def step(params: ParameterSet, state: State, forcing: Forcing, config: ModelConfig,
         network=None) -> tuple[State, StepOutputs]:
    """Advance the model by one time step.

    All fluxes are computed from the start-of-step ``state``; pools then change by
    flux x ``forcing.delta_t``.

    Args:
        params: physical parameter values (see :mod:`differland.params`).
        state: start-of-step pools.
        forcing: forcing of this step (every field a scalar).
        config: static model configuration.
        network: weights of the neural terms, ``{term: layers}`` (see
            :func:`~differland.processes.neural.init_network`); ``None`` if there are none.

    Returns:
        ``(next_state, outputs)``.
    """
    return step_dynamics(params, state, step_drivers(params, forcing, config, network), config,
                         network)


def step_dynamics(params: ParameterSet, state: State, drivers: StepDrivers,
                  config: ModelConfig, network=None) -> tuple[State, StepOutputs]:
    """The state-dependent part of :func:`step` (arguments as there)."""
    p, d, dt = params, drivers, drivers.delta_t
    lai = state.foliar_carbon / p.leaf_carbon_mass_per_area
    beta = water.water_stress_factor(config.water_stress, state.soil_water, p, network)
    gpp = beta * photosynthesis.gpp_from_canopy_terms(lai, d.canopy)
    if d.gpp_weather_factor is not None:
        gpp = gpp * d.gpp_weather_factor
    option = config.evapotranspiration
    if isinstance(option, NeuralET):
        et = water.neural_evapotranspiration(d.et_forcing_part, lai, state.soil_water, gpp,
                                             network_term(network, "evapotranspiration"),
                                             option)
        if option.transpiration == "uwue":
            et = et + gpp * d.et_per_gpp
    else:
        et = gpp * d.et_per_gpp + d.et_radiation
    decomposer_water = 1.0
    if config.water_limited_decomposition:
        decomposer_water = 1.0 - p.decomposition_water_sensitivity * (1.0 - beta)
    memory = deferred = None
    if isinstance(config.phenology, ClimatePhenology):
        if config.phenology.water_factor == "beta":
            water_factor = beta
        else:
            water_factor = phenology.growing_season_water_factor(
                state.soil_water, p.growing_season_water, config.phenology)
        index = d.growing_season_weather * water_factor
        memory = phenology.growing_season_memory(state.growing_season_index, index, dt,
                                                 config.phenology.memory_days)
        rates = config.phenology.index_rates
        labile_release, leaf_fall = phenology.index_driven_rates(
            memory, p.leaf_growth_rate if rates != "fall" else 0.0,
            p.leaf_senescence_rate if rates != "growth" else 0.0)
        if config.phenology.pulses:
            labile_release = labile_release + d.labile_release_factor
            leaf_fall = leaf_fall + d.leaf_fall_factor
        else:
            leaf_fall = leaf_fall + phenology.background_leaf_fall(p.leaf_lifespan)
        loss = _loss_rate(config)
        release_loss, leaf_loss = loss(labile_release, dt), loss(leaf_fall, dt)
    else:
        labile_release, leaf_fall = d.labile_release_factor, d.leaf_fall_factor
        release_loss, leaf_loss = d.labile_release_loss, d.leaf_fall_loss
        if _water_limited_release(config):
            release_loss, deferred = phenology.water_limited_release(
                release_loss, state.deferred_release,
                phenology.growing_season_water_factor(state.soil_water,
                                                      p.growing_season_water, config.phenology),
                dt, config.phenology.release_memory_days)
            labile_release = release_loss
    if config.drought_leaf_loss:
        leaf_loss = leaf_loss + decomposition.loss_rate(p.drought_leaf_loss_rate * (1.0 - beta),
                                                        dt)
    production = allocate(gpp, p.autotrophic_respiration_fraction, p.foliar_allocation_fraction,
                          p.labile_allocation_fraction, p.root_allocation_fraction)
    start = pools.CarbonPools(state.labile_carbon, state.foliar_carbon, state.root_carbon,
                              state.wood_carbon, state.litter_carbon, state.som_carbon)
    potential = pools.CarbonFluxes(
        labile_to_foliar=start.labile * release_loss,
        foliar_to_litter=start.foliar * leaf_loss,
        root_to_litter=start.root * d.root_turnover_loss,
        wood_to_som=start.wood * d.wood_turnover_loss,
        rh_litter=start.litter * d.rh_litter_loss * decomposer_water,
        rh_som=start.som * d.rh_som_loss * decomposer_water,
        litter_to_som=start.litter * d.litter_to_som_loss * decomposer_water,
    )
    if config.reference_mode:
        lower, upper = _reference_bounds(jnp.result_type(gpp))
        carbon, flux = pools.clamp_reference(start, production, potential, dt, lower, upper)
    else:
        carbon, flux = pools.limit_outflows(start, production, potential, dt)

    nee = -gpp + production.autotrophic_respiration + flux.rh_litter + flux.rh_som
    common = dict(
        lai=lai, gpp=gpp,
        rh_environmental_modifier=d.rh_environmental_modifier * decomposer_water,
        autotrophic_respiration=production.autotrophic_respiration,
        npp_to_foliar=production.foliar, npp_to_labile=production.labile,
        npp_to_root=production.root, npp_to_wood=production.wood,
        leaf_fall_factor=leaf_fall, labile_release_factor=labile_release,
        labile_to_foliar=flux.labile_to_foliar, foliar_to_litter=flux.foliar_to_litter,
        wood_to_som=flux.wood_to_som, root_to_litter=flux.root_to_litter,
        rh_litter=flux.rh_litter, rh_som=flux.rh_som, litter_to_som=flux.litter_to_som,
        nee=nee, beta=beta * jnp.ones_like(gpp), gpp_weather_factor=d.gpp_weather_factor,
        groundwater_supply=(p.groundwater_supply_rate * jnp.ones_like(gpp)
                            if config.groundwater_supply else None))

    if isinstance(config.model, SiteModel):
        next_state, outputs = _site_water(p, state, d, carbon, et, config, common)
    elif isinstance(config.model, GlobalModel):
        next_state, outputs = _global_water_and_fire(p, state, d, carbon, et, config, common)
    else:
        raise TypeError(f"unknown model variant {config.model!r}")
    if memory is not None:
        next_state = next_state.replace(growing_season_index=memory)
    if deferred is not None:
        next_state = next_state.replace(deferred_release=deferred)
    return next_state, _select(outputs, config.outputs)


def _water_input(f, common):
    """Water entering the bucket [mm d-1]: precipitation plus the groundwater supply."""
    supply = common["groundwater_supply"]
    return f.precipitation if supply is None else f.precipitation + supply


def _site_water(p, state, f, carbon, et, config, common):
    args = (state.soil_water, state.deep_water, _water_input(f, common), et,
            p.paw_runoff_focal_point, p.puw_runoff_focal_point, p.paw_to_puw_fraction, f.delta_t)
    uptake = None
    if config.deep_water_uptake:
        uptake = water.deep_water_uptake(state.soil_water, state.deep_water,
                                         p.deep_water_uptake_rate, p.paw_runoff_focal_point,
                                         f.delta_t)
    if config.reference_mode:
        result = water.two_bucket_update_reference(*args, *_water_bounds(config))
    else:
        result = water.two_bucket_update(*args, uptake=0.0 if uptake is None else uptake)
    paw, puw, et, paw_runoff, paw_to_puw, puw_runoff, penalty = result
    next_state = State(carbon.labile, carbon.foliar, carbon.root, carbon.wood, carbon.litter,
                       carbon.som, soil_water=paw, deep_water=puw)
    outputs = StepOutputs(**common, et=et, water_violation_penalty=penalty,
                          paw_runoff=paw_runoff, puw_runoff=puw_runoff, paw_to_puw=paw_to_puw,
                          deep_water_uptake=uptake)
    return next_state, outputs


def _global_water_and_fire(p, state, f, carbon, et, config, common):
    if config.reference_mode:
        soil_water, et, runoff, penalty = water.bucket_update_reference(
            state.soil_water, _water_input(f, common), et, p.runoff_focal_point, f.delta_t,
            *_water_bounds(config))
    else:
        soil_water, et, runoff, penalty = water.bucket_update(
            state.soil_water, _water_input(f, common), et, p.runoff_focal_point, f.delta_t)
    burn = fire.fire_fluxes(carbon.labile, carbon.foliar, carbon.root, carbon.wood,
                            carbon.litter, carbon.som, f.burned_area, p, f.delta_t)
    dt, b = f.delta_t, burn
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
    total = burn.combustion_total
    sif = (common["gpp"] - (p.sif_beta_plus_three - 3.0)) / p.sif_alpha
    vod = (p.vod_foliar_coefficient * next_state.foliar_carbon
           + p.vod_wood_coefficient * next_state.wood_carbon)
    fire_outputs = {f"fire_{name}": getattr(burn, name) for name in field_names(burn)}
    outputs = StepOutputs(**common, et=et, water_violation_penalty=penalty, runoff=runoff,
                          **fire_outputs, fire_combustion_total=total,
                          nbe=common["nee"] + total, sif=sif, vod=vod)
    return next_state, outputs


def _select(outputs: StepOutputs, keep: tuple[str, ...] | None) -> StepOutputs:
    if keep is None:
        return outputs
    unknown = [name for name in keep if name not in field_names(StepOutputs)]
    if unknown:
        raise ValueError(f"unknown output name(s): {', '.join(unknown)}")
    dropped = {name: None for name in field_names(StepOutputs) if name not in keep}
    return outputs.replace(**dropped)


def _scan(params, state, drivers, config, network):
    config, network = water.resolve_monotone_beta(config, network)

    # Rematerialised in reverse mode: the backward pass recomputes each step from its start
    # state and drivers instead of storing every intermediate of every step (far less memory
    # traffic; 2-3x faster gradients for batches of pixels).
    @jax.checkpoint
    def advance(carry, drivers_t):
        return step_dynamics(params, carry, drivers_t, config, network)

    def body(carry, drivers_t):
        next_state, outputs = advance(carry, drivers_t)
        return next_state, (next_state if config.keep_states else None, outputs)

    unroll = config.unroll_for_backend(jax.default_backend())
    return jax.lax.scan(body, state, drivers, unroll=unroll)


def _record_drivers(params, forcing, config, network, *, pixels=False) -> StepDrivers:
    """:func:`step_drivers` for a whole record (``pixels``: with a leading pixel axis).

    When every step of the record is one day, the cheaper unit-step form is used: a run-time
    branch (``lax.cond``) between the two compiled forms. With a batched ``delta_t`` under a
    user's ``vmap`` both forms are evaluated and selected, which is slower but the same.
    """
    def form(unit_step):
        drivers = partial(step_drivers, config=config, network=network, unit_step=unit_step)
        return jax.vmap(drivers) if pixels else drivers

    if config.reference_mode:
        return form(False)(params, forcing)
    return jax.lax.cond(jnp.all(forcing.delta_t == 1.0), form(True), form(False),
                        params, forcing)


def _run(params, drivers, config, initial=None, network=None) -> Trajectory:
    """The time loop of :func:`simulate`, from the drivers of every step."""
    state = initial_state(params, config) if initial is None else initial
    every = config.checkpoint_every
    n_steps = drivers.delta_t.shape[0]
    if every is None or every >= n_steps:
        final, (states, outputs) = _scan(params, state, drivers, config, network)
        return Trajectory(states, final, outputs)

    n_segments, remainder = divmod(n_steps, every)
    head = jax.tree.map(
        lambda x: x[: n_segments * every].reshape((n_segments, every) + x.shape[1:]), drivers)

    @jax.checkpoint
    def segment(carry, drivers_segment):
        final, stacked = _scan(params, carry, drivers_segment, config, network)
        return final, stacked

    final, (states, outputs) = jax.lax.scan(segment, state, head)
    flatten = partial(jax.tree.map, lambda x: x.reshape((-1,) + x.shape[2:]))
    states, outputs = flatten(states), flatten(outputs)
    if remainder:
        tail = jax.tree.map(lambda x: x[n_segments * every:], drivers)
        final, (tail_states, tail_outputs) = _scan(params, final, tail, config, network)
        join = partial(jax.tree.map, lambda a, b: jnp.concatenate([a, b]))
        states, outputs = join(states, tail_states), join(outputs, tail_outputs)
    return Trajectory(states, final, outputs)


@partial(jax.jit, static_argnames=("config",))
def simulate(params: ParameterSet, forcing: Forcing, config: ModelConfig,
             initial: State | None = None, network=None) -> Trajectory:
    """Run the model over the whole forcing record (one pixel).

    Args:
        params: physical parameter values, scalars.
        forcing: time-major forcing, every field of shape ``(T,)``.
        config: static model configuration.
        initial: start state (default: from the ``initial_*`` parameters).
        network: weights of the neural terms, ``{term: layers}`` (see
            :func:`~differland.processes.neural.init_network`); ``None`` if there are none.

    Returns:
        :class:`Trajectory` with end-of-step states and per-step outputs.
    """
    drivers = _record_drivers(params, forcing, config, network)
    return _run(params, drivers, config, initial, network)


@partial(jax.jit, static_argnames=("config",))
def simulate_pixels(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                    initial: State | None = None, network=None) -> Trajectory:
    """:func:`simulate` vmapped over a leading pixel axis of params, forcing (and initial).

    Args:
        params: leaves of shape ``(P,)``.
        forcing: fields of shape ``(P, T)``.
        config: static model configuration (shared by all pixels).
        initial: optional start state with leaves ``(P,)``.
        network: weights of the neural terms, shared by all pixels.

    Returns:
        :class:`Trajectory` with a leading pixel axis on every leaf.
    """
    # The drivers of all pixels first, so that the unit-step check covers the whole batch.
    drivers = _record_drivers(params, forcing, config, network, pixels=True)
    run = partial(_run, config=config, network=network)
    if initial is None:
        return jax.vmap(lambda p, d: run(p, d))(params, drivers)
    return jax.vmap(lambda p, d, s: run(p, d, initial=s))(params, drivers, initial)
