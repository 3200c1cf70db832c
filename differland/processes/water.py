"""Soil water: drainage, evapotranspiration and water-stress factors.

ET follows the underlying-water-use-efficiency form of Boese, S. et al. (2017) Biogeosciences 14,
3015-3026, plus a radiation term. Drainage is the DALEC bucket with a focal point Q.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland.constants import VIOLATION_FACTOR
from differland.processes.decomposition import loss_rate
from differland.processes.neural import dense, mlp, mlp_from_first_layer
from differland.processes.pools import outflow_scale


def drainage(water, focal_point, delta_t) -> jax.Array:
    """Drainage [mm d-1] of a bucket holding ``water`` [mm]: W^2/Q below Q/2, W - Q/4 above.

    Continuous at W = Q/2 and never drains more than the bucket holds in one step.
    """
    quadratic = water**2 / focal_point
    linear = water - focal_point / 4.0
    return jnp.where(water <= focal_point / 2.0, quadratic, linear) / delta_t


def evapotranspiration(gpp, vpd, ssrd, underlying_water_use_efficiency,
                       radiation_et_coefficient) -> jax.Array:
    """ET [mm d-1] = GPP sqrt(VPD) / uWUE + r SSRD."""
    return gpp * jnp.sqrt(vpd) / underlying_water_use_efficiency + ssrd * radiation_et_coefficient


def linear_beta(water, field_capacity, wilting_point_fraction) -> jax.Array:
    """beta = clip((W - WP) / (FC - WP), 0, 1) with WP = FC x wilting_point_fraction [1]."""
    wilting_point = field_capacity * wilting_point_fraction
    return jnp.clip((water - wilting_point) / (field_capacity - wilting_point), 0.0, 1.0)


def monotone_layers(layers: list[dict]) -> list[dict]:
    """The layers with the softplus of every weight: with increasing activations the network
    is then non-decreasing in each input."""
    return [{"weight": jax.nn.softplus(layer["weight"]), "bias": layer["bias"]}
            for layer in layers]


def neural_beta(water, layers: list[dict], option) -> jax.Array:
    """beta = sigmoid(MLP(W / water_scale)) with leaky-ReLU hidden layers [1]; with
    ``option.monotone`` the weights enter through :func:`monotone_layers` (beta
    non-decreasing in W)."""
    if option.monotone:
        layers = monotone_layers(layers)
    return jax.nn.sigmoid(mlp(jnp.reshape(water / option.water_scale, (1,)), layers)[0])


def neural_et_forcing_part(t_min, t_max, ssrd, vpd, co2, precipitation, layers: list[dict],
                           option) -> jax.Array:
    """The forcing inputs' share of the first layer of the neural ET network
    (:class:`~differland.options.NeuralET`).

    Elementwise in time (inputs may carry a time axis); returns ``(..., hidden)``. The
    forcing inputs are the daily mean temperature, SSRD, VPD, CO2 and ln(1 + P / scale).
    """
    inputs = jnp.stack([0.5 * (t_min + t_max) / option.temperature_scale,
                        ssrd / option.radiation_scale, vpd / option.vpd_scale,
                        co2 / option.co2_scale,
                        jnp.log1p(precipitation / option.precipitation_scale)], axis=-1)
    first = layers[0]
    return inputs @ first["weight"][:option.n_forcing_inputs] + first["bias"]


def neural_evapotranspiration(forcing_part, lai, water, gpp, layers: list[dict],
                              option) -> jax.Array:
    """The network's ET [mm d-1] for one step, softplus(MLP(inputs)), from the forcing part
    of the first layer (:func:`neural_et_forcing_part`); GPP is an input only when the
    network also stands for transpiration, the soil water only with
    ``option.soil_water_input``."""
    state_inputs = [lai / option.lai_scale]
    if option.soil_water_input:
        state_inputs.append(water / option.water_scale)
    if option.transpiration == "network":
        state_inputs.append(gpp / option.gpp_scale)
    weight = layers[0]["weight"][option.n_forcing_inputs:]
    pre_activation = forcing_part + dense(jnp.stack(state_inputs), weight)
    return jax.nn.softplus(mlp_from_first_layer(pre_activation, layers)[0])


# --- bucket updates -------------------------------------------------------------------------
# Each returns the end-of-step water and the fluxes actually applied [mm d-1], together with
# the ET that the water balance allowed and the violation penalty (0.01 x forced shortfall).


def deep_water_uptake(paw, puw, rate, paw_focal_point, delta_t) -> jax.Array:
    """PUW -> PAW flux [mm d-1]: capillary rise while the root zone is below its focal point.

    ``PUW x k``, k the per-day coefficient that removes ``1 - (1 - r)^dt`` of PUW in a step,
    ``r = rate x max(0, 1 - PAW / Q)``; never more than PUW holds.
    """
    dryness = jnp.maximum(1.0 - paw / paw_focal_point, 0.0)
    return puw * loss_rate(rate * dryness, delta_t)


def two_bucket_update(paw, puw, precipitation, et, paw_focal_point, puw_focal_point,
                      transfer_fraction, delta_t, uptake=0.0):
    """Mass-conserving PAW/PUW update (default site model).

    PAW drains D(PAW); a fraction ``transfer_fraction`` of D feeds PUW, the rest runs off.
    When ET + D would empty PAW, both are scaled down together; the penalty is 0.01 x the
    shortfall [mm d-1]. ``uptake`` [mm d-1, at most PUW / dt] moves from PUW to PAW
    (:func:`deep_water_uptake`). Returns ``(paw, puw, et, paw_runoff, paw_to_puw,
    puw_runoff, penalty)``.
    """
    paw_inflow = precipitation + uptake
    paw_drainage = drainage(paw, paw_focal_point, delta_t)
    demand = et + paw_drainage
    scale = outflow_scale(paw, paw_inflow, demand, delta_t)
    et_actual = et * scale
    paw_runoff = paw_drainage * scale * (1.0 - transfer_fraction)
    paw_to_puw = paw_drainage * scale * transfer_fraction
    penalty = VIOLATION_FACTOR * demand * (1.0 - scale)
    paw_next = paw + (paw_inflow - et_actual - paw_runoff - paw_to_puw) * delta_t
    puw_potential = drainage(puw, puw_focal_point, delta_t)
    puw_left = puw - uptake * delta_t
    puw_runoff = puw_potential * outflow_scale(puw_left, paw_to_puw, puw_potential, delta_t)
    puw_next = puw_left + (paw_to_puw - puw_runoff) * delta_t
    return paw_next, puw_next, et_actual, paw_runoff, paw_to_puw, puw_runoff, penalty


def two_bucket_update_reference(paw, puw, precipitation, et, paw_focal_point, puw_focal_point,
                                transfer_fraction, delta_t, lower, upper):
    """The published DALEC990 PAW/PUW update, quirks included.

    Clamps to ``[lower, upper]`` mm; the recomputed drainage after a PAW clamp has the
    reference's operator-precedence slip (``P - ET - dW/dt * (1 - x)``); at the floor with
    negative drainage ET is overwritten (GPP is not); the PUW max clamp uses the min selector.
    """
    x = transfer_fraction
    dt = delta_t
    small = paw**2 / paw_focal_point / dt * (1.0 - x)
    small_to_puw = small * x / (1.0 - x)
    large = (paw - paw_focal_point / 4.0) / dt
    focal = paw <= paw_focal_point / 2.0
    q_paw = jnp.where(focal, small, large * (1.0 - x))
    paw_to_puw = jnp.where(focal, small_to_puw, large * x)
    q_puw = drainage(puw, puw_focal_point, dt)

    paw_next = paw + (-q_paw - paw_to_puw + precipitation - et) * dt
    above = paw_next >= lower
    paw_next = jnp.where(above, paw_next, lower)
    q_paw = jnp.where(above, q_paw, precipitation - et - (paw_next - paw) / dt * (1.0 - x))
    paw_to_puw = jnp.where(above, paw_to_puw, precipitation - et - (paw_next - paw) / dt * x)
    drains = q_paw >= 0.0
    penalty = jnp.maximum(-q_paw * VIOLATION_FACTOR, 0.0)
    et = jnp.where(drains, et, precipitation - (paw_next - paw) / dt)
    q_paw = jnp.where(drains, q_paw, 0.0)
    paw_to_puw = jnp.where(drains, paw_to_puw, 0.0)
    below = paw_next <= upper
    paw_next = jnp.where(below, paw_next, upper)
    q_paw = jnp.where(below, q_paw, precipitation - et - (paw_next - paw) / dt * (1.0 - x))
    paw_to_puw = jnp.where(below, paw_to_puw, precipitation - et - (paw_next - paw) / dt * x)

    puw_next = puw + (paw_to_puw - q_puw) * dt
    puw_above = puw_next >= lower
    puw_next = jnp.where(puw_above, puw_next, lower)
    q_puw = jnp.where(puw_above, q_puw, paw_to_puw - (puw_next - puw) / dt)
    puw_next = jnp.where(puw_next <= upper, puw_next, upper)
    q_puw = jnp.where(puw_above, q_puw, paw_to_puw - (puw_next - puw) / dt)
    return paw_next, puw_next, et, q_paw, paw_to_puw, q_puw, penalty


def bucket_update(water, precipitation, et, focal_point, delta_t):
    """Mass-conserving single-bucket update (default global model).

    Returns ``(water, et, runoff, penalty)``; ET and runoff are scaled down together when they
    would empty the bucket, and runoff is never negative.
    """
    runoff = drainage(water, focal_point, delta_t)
    demand = et + runoff
    scale = outflow_scale(water, precipitation, demand, delta_t)
    et_actual, runoff_actual = et * scale, runoff * scale
    water_next = water + (precipitation - et_actual - runoff_actual) * delta_t
    return water_next, et_actual, runoff_actual, VIOLATION_FACTOR * demand * (1.0 - scale)


def bucket_update_reference(water, precipitation, et, focal_point, delta_t, lower, upper):
    """The published DALEC993 bucket update: at the floor ET is overwritten but the negative
    runoff is kept in the output (water is then not conserved)."""
    dt = delta_t
    runoff = drainage(water, focal_point, dt)
    water_next = water - runoff * dt + precipitation * dt - et * dt
    above = water_next >= lower
    water_next = jnp.where(above, water_next, lower)
    runoff = jnp.where(above, runoff, precipitation - et - (water_next - water) / dt)
    drains = runoff >= 0.0
    penalty = jnp.maximum(-runoff * VIOLATION_FACTOR, 0.0)
    et = jnp.where(drains, et, precipitation - (water_next - water) / dt)
    below = water_next <= upper
    water_next = jnp.where(below, water_next, upper)
    runoff = jnp.where(below, runoff, precipitation - et - (water_next - water) / dt)
    return water_next, et, runoff, penalty
