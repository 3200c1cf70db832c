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


def transfer_reference(pool, rate, delta_t) -> jax.Array:
    """Flux [pool d-1] removing the fraction 1 - (1 - rate)^dt per step, as the reference does.

    Literal reference form: for rate > 1 it over-drains the pool (the clamps catch it).
    """
    return pool * (1.0 - (1.0 - rate) ** delta_t) / delta_t


def transfer(pool, rate, delta_t) -> jax.Array:
    """Flux [pool d-1] removing the fraction 1 - (1 - rate)^dt per step, rate capped at 1.

    The same function as :func:`transfer_reference` for 0 <= rate < 1, written as
    -expm1(dt log1p(-rate)) so that it is accurate for small rates and never exceeds the pool.
    """
    capped = jnp.minimum(rate, 1.0 - 1e-7)
    return pool * -jnp.expm1(delta_t * jnp.log1p(-capped)) / delta_t
