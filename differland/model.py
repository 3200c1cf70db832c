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
from typing import Any

import jax
import jax.numpy as jnp

from differland._pytree import field_names, pytree_dataclass
from differland.config import ModelConfig
from differland.forcing import Forcing
from differland.params import SPECS, ParameterSet
from differland.processes import decomposition, photosynthesis, pools
from differland.processes.allocation import allocate
from differland.state import State, StepOutputs

# XLA:CPU compiles a while loop whose per-iteration footprint is below this many bytes into a
# single kernel. A DALEC step of up to ~1000 pixels fits; larger batches keep XLA's default
# per-operation kernels, which may run on several threads (docs/performance.md).
SINGLE_KERNEL_LOOP_BYTES = 1 << 25
_LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"


def _request_single_kernel_loops(environ=os.environ) -> None:
    """Raise XLA:CPU's small-while-loop threshold to :data:`SINGLE_KERNEL_LOOP_BYTES`.

    XLA's CPU runtime runs each operation of a loop body as a separate kernel with a fixed
    dispatch cost; a DALEC step has tens of them, which is most of its cost. Loops below the
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
    """The state at the start of a run, from the ``initial_*`` parameters (and each option's
    initial values)."""
    carbon = {f"{pool}_carbon": params[name] for pool, name in _INITIAL.items()}
    carried = {}
    for option in config.options():
        carried |= option.initial_state(params)
    return State(**carbon, **carried)


def _reference_bounds(dtype) -> tuple[pools.CarbonPools, pools.CarbonPools]:
    lower = {k: jnp.asarray(SPECS[v].lower, dtype) for k, v in _INITIAL.items()}
    upper = {k: jnp.asarray(SPECS[v].upper, dtype) for k, v in _INITIAL.items()}
    return pools.CarbonPools(**lower), pools.CarbonPools(**upper)


@pytree_dataclass
class StepDrivers:
    """Everything a step needs that does not depend on the state (parameters x forcing).

    :func:`simulate` computes these for all steps at once, vectorised over time, before the
    sequential scan; :func:`step` computes them for a single step. Loss coefficients are per
    day [d-1]: a pool X loses X x coefficient per day.

    Attributes:
        canopy: the ACM's canopy terms (after the photosynthesis modifiers).
        evapotranspiration, phenology: the forcing terms of those options.
        photosynthesis: the forcing terms of each photosynthesis modifier, in order.
    """

    canopy: photosynthesis.CanopyTerms
    evapotranspiration: Any
    phenology: Any
    photosynthesis: tuple
    rh_environmental_modifier: jax.Array
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
    canopy = photosynthesis.canopy_terms(f.t_min, f.t_max, f.ssrd, f.co2, f.doy, f.latitude,
                                         p.canopy_efficiency)
    for option in config.photosynthesis:
        canopy = option.canopy(p, canopy)
    return StepDrivers(
        canopy=canopy,
        evapotranspiration=config.evapotranspiration.forcing_terms(p, f, network),
        phenology=config.phenology.forcing_terms(p, f, loss),
        photosynthesis=tuple(option.forcing_terms(p, f, network)
                             for option in config.photosynthesis),
        rh_environmental_modifier=modifier,
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
    beta = config.water_stress.beta(p, state.soil_water, network)
    gpp = beta * photosynthesis.gpp_from_canopy_terms(lai, d.canopy)
    added = {}  # the options' outputs
    for option, terms in zip(config.photosynthesis, d.photosynthesis, strict=True):
        factor, outputs = option.factor(terms, p, state, lai)
        gpp = _times(gpp, factor)
        added |= outputs
    et = config.evapotranspiration.et(d.evapotranspiration, p, lai, state.soil_water, gpp,
                                      network)
    decomposer_water = 1.0
    for option in config.decomposition:
        decomposer_water = _times(decomposer_water, option.factor(p, state, beta))
    leaf = config.phenology.rates(d.phenology, p, state, beta, dt, _loss_rate(config))
    leaf_loss = leaf.leaf_loss
    for option in config.leaf_loss:
        leaf_loss = leaf_loss + option.loss(p, state, beta, dt)
    inflow, uptake = d.precipitation, 0.0
    for option in config.soil_water:
        exchange = option.exchange(p, state, dt)
        inflow = _plus(inflow, exchange.inflow)
        if exchange.uptake is not None:
            uptake = _plus(uptake, exchange.uptake)
        added |= exchange.outputs
    production = allocate(gpp, p.autotrophic_respiration_fraction, p.foliar_allocation_fraction,
                          p.labile_allocation_fraction, p.root_allocation_fraction)
    start = pools.CarbonPools(state.labile_carbon, state.foliar_carbon, state.root_carbon,
                              state.wood_carbon, state.litter_carbon, state.som_carbon)
    potential = pools.CarbonFluxes(
        labile_to_foliar=start.labile * leaf.release_loss,
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
        leaf_fall_factor=leaf.leaf_fall, labile_release_factor=leaf.labile_release,
        labile_to_foliar=flux.labile_to_foliar, foliar_to_litter=flux.foliar_to_litter,
        wood_to_som=flux.wood_to_som, root_to_litter=flux.root_to_litter,
        rh_litter=flux.rh_litter, rh_som=flux.rh_som, litter_to_som=flux.litter_to_som,
        nee=nee, beta=beta * jnp.ones_like(gpp), **added)
    next_state, outputs = config.model.update(p, state, d, carbon, et, inflow, uptake,
                                              config.reference_mode, common)
    if leaf.state:
        next_state = next_state.replace(**leaf.state)
    return next_state, _select(outputs, config.outputs)


def _plus(value, term):
    """``value + term``, leaving out a missing term and a start of exactly 0 (a Python
    float)."""
    if term is None:
        return value
    if isinstance(value, float) and value == 0.0:
        return term
    return value + term


def _times(value, factor):
    """``value x factor``, leaving out a factor of exactly 1 (a Python float)."""
    if isinstance(factor, float) and factor == 1.0:
        return value
    if isinstance(value, float) and value == 1.0:
        return factor
    return value * factor


def _select(outputs: StepOutputs, keep: tuple[str, ...] | None) -> StepOutputs:
    if keep is None:
        return outputs
    unknown = [name for name in keep if name not in field_names(StepOutputs)]
    if unknown:
        raise ValueError(f"unknown output name(s): {', '.join(unknown)}")
    dropped = {name: None for name in field_names(StepOutputs) if name not in keep}
    return outputs.replace(**dropped)


def _scan(params, state, drivers, config, network):
    config, network = config.prepared(network)

    # Rematerialised in reverse mode: the backward pass recomputes each step from its start
    # state and drivers instead of storing every intermediate of every step (less memory
    # traffic; docs/performance.md).
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
