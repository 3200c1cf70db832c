"""The DALEC step and the time loop.

``step(params, state, forcing_t, config)`` advances one time step and returns the next state and
a :class:`~differland.state.StepOutputs`; ``simulate`` scans it over time with ``lax.scan``;
``simulate_pixels`` vmaps ``simulate`` over a leading pixel axis. Variants and options are taken
from the static :class:`~differland.config.ModelConfig`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from differland._pytree import field_names, pytree_dataclass
from differland.config import GlobalModel, ModelConfig, SiteModel
from differland.forcing import Forcing
from differland.params import SPECS, ParameterSet
from differland.processes import decomposition, fire, phenology, photosynthesis, pools, water
from differland.processes.allocation import allocate
from differland.state import State, StepOutputs

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
    if isinstance(config.model, SiteModel):
        return State(**carbon, soil_water=params.initial_plant_available_water,
                     deep_water=params.initial_plant_unavailable_water)
    return State(**carbon, soil_water=params.initial_water)


def _reference_bounds(dtype) -> tuple[pools.CarbonPools, pools.CarbonPools]:
    lower = {k: jnp.asarray(SPECS[v].lower, dtype) for k, v in _INITIAL.items()}
    upper = {k: jnp.asarray(SPECS[v].upper, dtype) for k, v in _INITIAL.items()}
    return pools.CarbonPools(**lower), pools.CarbonPools(**upper)


def _water_bounds(config: ModelConfig) -> tuple[float, float]:
    name = ("initial_plant_available_water" if isinstance(config.model, SiteModel)
            else "initial_water")
    return SPECS[name].lower, SPECS[name].upper


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
        network: weights of the neural water-stress term (``NeuralBeta`` only).

    Returns:
        ``(next_state, outputs)``.
    """
    p, f, dt = params, forcing, forcing.delta_t
    lai = state.foliar_carbon / p.leaf_carbon_mass_per_area
    beta = water.water_stress_factor(config.water_stress, state.soil_water, p, network)
    gpp = beta * photosynthesis.acm_gpp(lai, f.t_min, f.t_max, f.ssrd, f.co2, f.doy,
                                        f.latitude, p.canopy_efficiency)
    et = water.evapotranspiration(gpp, f.vpd, f.ssrd, p.underlying_water_use_efficiency,
                                  p.radiation_et_coefficient)
    modifier = decomposition.environmental_modifier(
        f.t_min, f.t_max, f.precipitation, f.mean_temperature, f.mean_precipitation,
        p.temperature_sensitivity, p.rh_moisture_sensitivity)
    production = allocate(gpp, p.autotrophic_respiration_fraction, p.foliar_allocation_fraction,
                          p.labile_allocation_fraction, p.root_allocation_fraction)
    leaf_fall = phenology.leaf_fall_factor(f.time, p.leaf_lifespan, p.leaf_fall_period,
                                           p.leaf_fall_day)
    labile_release = phenology.labile_release_factor(
        f.time, p.labile_lifespan, p.labile_release_period, p.labile_release_day)

    transfer = (decomposition.transfer_reference if config.reference_mode
                else decomposition.transfer)
    start = pools.CarbonPools(state.labile_carbon, state.foliar_carbon, state.root_carbon,
                              state.wood_carbon, state.litter_carbon, state.som_carbon)
    potential = pools.CarbonFluxes(
        labile_to_foliar=transfer(start.labile, labile_release, dt),
        foliar_to_litter=transfer(start.foliar, leaf_fall, dt),
        root_to_litter=transfer(start.root, p.root_turnover_rate, dt),
        wood_to_som=transfer(start.wood, p.wood_turnover_rate, dt),
        rh_litter=transfer(start.litter, modifier * p.litter_respiration_rate, dt),
        rh_som=transfer(start.som, modifier * p.som_respiration_rate, dt),
        litter_to_som=transfer(start.litter, modifier * p.litter_to_som_rate, dt),
    )
    if config.reference_mode:
        lower, upper = _reference_bounds(jnp.result_type(gpp))
        carbon, flux = pools.clamp_reference(start, production, potential, dt, lower, upper)
    else:
        carbon, flux = pools.limit_outflows(start, production, potential, dt)

    nee = -gpp + production.autotrophic_respiration + flux.rh_litter + flux.rh_som
    common = dict(
        lai=lai, gpp=gpp, rh_environmental_modifier=modifier,
        autotrophic_respiration=production.autotrophic_respiration,
        npp_to_foliar=production.foliar, npp_to_labile=production.labile,
        npp_to_root=production.root, npp_to_wood=production.wood,
        leaf_fall_factor=leaf_fall, labile_release_factor=labile_release,
        labile_to_foliar=flux.labile_to_foliar, foliar_to_litter=flux.foliar_to_litter,
        wood_to_som=flux.wood_to_som, root_to_litter=flux.root_to_litter,
        rh_litter=flux.rh_litter, rh_som=flux.rh_som, litter_to_som=flux.litter_to_som,
        nee=nee, beta=beta)

    if isinstance(config.model, SiteModel):
        next_state, outputs = _site_water(p, state, f, carbon, et, config, common)
    elif isinstance(config.model, GlobalModel):
        next_state, outputs = _global_water_and_fire(p, state, f, carbon, et, config, common)
    else:
        raise TypeError(f"unknown model variant {config.model!r}")
    return next_state, _select(outputs, config.outputs)


def _site_water(p, state, f, carbon, et, config, common):
    args = (state.soil_water, state.deep_water, f.precipitation, et, p.paw_runoff_focal_point,
            p.puw_runoff_focal_point, p.paw_to_puw_fraction, f.delta_t)
    if config.reference_mode:
        result = water.two_bucket_update_reference(*args, *_water_bounds(config))
    else:
        result = water.two_bucket_update(*args)
    paw, puw, et, paw_runoff, paw_to_puw, puw_runoff, penalty = result
    next_state = State(carbon.labile, carbon.foliar, carbon.root, carbon.wood, carbon.litter,
                       carbon.som, soil_water=paw, deep_water=puw)
    outputs = StepOutputs(**common, et=et, water_violation_penalty=penalty,
                          paw_runoff=paw_runoff, puw_runoff=puw_runoff, paw_to_puw=paw_to_puw)
    return next_state, outputs


def _global_water_and_fire(p, state, f, carbon, et, config, common):
    if config.reference_mode:
        soil_water, et, runoff, penalty = water.bucket_update_reference(
            state.soil_water, f.precipitation, et, p.runoff_focal_point, f.delta_t,
            *_water_bounds(config))
    else:
        soil_water, et, runoff, penalty = water.bucket_update(
            state.soil_water, f.precipitation, et, p.runoff_focal_point, f.delta_t)
    burn = fire.fire_fluxes(carbon.labile, carbon.foliar, carbon.root, carbon.wood,
                            carbon.litter, carbon.som, f.burned_area, p, f.delta_t)
    dt = f.delta_t
    next_state = State(
        labile_carbon=carbon.labile - (burn.combustion_labile + burn.transfer_labile_to_litter) * dt,
        foliar_carbon=carbon.foliar - (burn.combustion_foliar + burn.transfer_foliar_to_litter) * dt,
        root_carbon=carbon.root - (burn.combustion_root + burn.transfer_root_to_litter) * dt,
        wood_carbon=carbon.wood - (burn.combustion_wood + burn.transfer_wood_to_som) * dt,
        litter_carbon=carbon.litter + (burn.transfer_labile_to_litter
                                       + burn.transfer_foliar_to_litter
                                       + burn.transfer_root_to_litter - burn.combustion_litter
                                       - burn.transfer_litter_to_som) * dt,
        som_carbon=carbon.som + (burn.transfer_wood_to_som + burn.transfer_litter_to_som
                                 - burn.combustion_som) * dt,
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


def _scan(params, state, forcing, config, network):
    def body(carry, forcing_t):
        next_state, outputs = step(params, carry, forcing_t, config, network)
        return next_state, (next_state if config.keep_states else None, outputs)

    return jax.lax.scan(body, state, forcing)


@partial(jax.jit, static_argnames=("config",))
def simulate(params: ParameterSet, forcing: Forcing, config: ModelConfig,
             initial: State | None = None, network=None) -> Trajectory:
    """Run the model over the whole forcing record (one pixel).

    Args:
        params: physical parameter values, scalars.
        forcing: time-major forcing, every field of shape ``(T,)``.
        config: static model configuration.
        initial: start state (default: from the ``initial_*`` parameters).
        network: weights of the neural water-stress term (``NeuralBeta`` only).

    Returns:
        :class:`Trajectory` with end-of-step states and per-step outputs.
    """
    state = initial_state(params, config) if initial is None else initial
    every = config.checkpoint_every
    n_steps = forcing.t_min.shape[0]
    if every is None or every >= n_steps:
        final, (states, outputs) = _scan(params, state, forcing, config, network)
        return Trajectory(states, final, outputs)

    n_segments, remainder = divmod(n_steps, every)
    head = jax.tree.map(
        lambda x: x[: n_segments * every].reshape((n_segments, every) + x.shape[1:]), forcing)

    @jax.checkpoint
    def segment(carry, forcing_segment):
        final, stacked = _scan(params, carry, forcing_segment, config, network)
        return final, stacked

    final, (states, outputs) = jax.lax.scan(segment, state, head)
    flatten = partial(jax.tree.map, lambda x: x.reshape((-1,) + x.shape[2:]))
    states, outputs = flatten(states), flatten(outputs)
    if remainder:
        tail = jax.tree.map(lambda x: x[n_segments * every:], forcing)
        final, (tail_states, tail_outputs) = _scan(params, final, tail, config, network)
        join = partial(jax.tree.map, lambda a, b: jnp.concatenate([a, b]))
        states, outputs = join(states, tail_states), join(outputs, tail_outputs)
    return Trajectory(states, final, outputs)


@partial(jax.jit, static_argnames=("config",))
def simulate_pixels(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                    initial: State | None = None, network=None) -> Trajectory:
    """:func:`simulate` vmapped over a leading pixel axis of params, forcing (and initial).

    Args:
        params: leaves of shape ``(P,)``.
        forcing: fields of shape ``(P, T)``.
        config: static model configuration (shared by all pixels).
        initial: optional start state with leaves ``(P,)``.
        network: neural water-stress weights shared by all pixels.

    Returns:
        :class:`Trajectory` with a leading pixel axis on every leaf.
    """
    run = partial(simulate, config=config, network=network)
    if initial is None:
        return jax.vmap(lambda p, f: run(p, f))(params, forcing)
    return jax.vmap(lambda p, f, s: run(p, f, initial=s))(params, forcing, initial)
