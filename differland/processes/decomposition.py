"""Turnover and decomposition: environmental modifier and first-order transfers (DALEC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def environmental_modifier(t_min, t_max, precipitation, mean_temperature, mean_precipitation,
                           temperature_sensitivity, rh_moisture_sensitivity) -> jax.Array:
    """Temperature x moisture multiplier of decomposition rates [1].

    exp(k (T_mean_day - T_ref)) x (1 + m (P / P_ref - 1)), with the same-step precipitation.
    Non-negative because m <= 1.
    """
    temperature = jnp.exp(temperature_sensitivity * (0.5 * (t_max + t_min) - mean_temperature))
    moisture = (precipitation / mean_precipitation - 1.0) * rh_moisture_sensitivity + 1.0
    return temperature * moisture


def loss_rate_reference(rate, delta_t) -> jax.Array:
    """Per-day loss coefficient [d-1] removing 1 - (1 - rate)^dt of a pool per step.

    Literal reference form: for rate > 1 it over-drains the pool (the clamps catch it).
    A pool X then loses X x coefficient [X d-1].
    """
    return (1.0 - (1.0 - rate) ** delta_t) / delta_t


def loss_rate(rate, delta_t, *, unit_step: bool = False) -> jax.Array:
    """Per-day loss coefficient [d-1] removing 1 - (1 - rate)^dt per step, rate capped at 1.

    The same function as :func:`loss_rate_reference` for 0 <= rate < 1, written as
    -expm1(dt log1p(-rate)) / dt so that it is accurate for small rates and never removes
    more than the pool. ``unit_step=True`` declares dt = 1, where the coefficient is the
    (capped) rate itself: exact, and without two transcendental functions per value.
    """
    capped = jnp.minimum(rate, 1.0 - 1e-7)
    if unit_step:
        return jnp.broadcast_to(capped, jnp.broadcast_shapes(jnp.shape(capped),
                                                             jnp.shape(delta_t)))
    return -jnp.expm1(delta_t * jnp.log1p(-capped)) / delta_t
