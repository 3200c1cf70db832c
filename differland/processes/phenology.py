"""Leaf-fall and labile-release pulses of CARDAMOM DALEC.

Bloom, A. A. & Williams, M. (2015) Constraining ecosystem carbon dynamics in a data-limited
world. Biogeosciences 12, 1299-1315. Each pulse is a Gaussian in sin((t - phase)/sf) with a
365.25-day period, normalised so that its annual integral removes the fraction implied by the
lifespan L: 0.5 ln(L / (L - 1)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland import constants as c


def pulse_offset(lifespan: jax.Array, width: jax.Array) -> jax.Array:
    """Offset of the pulse peak [d]: width x polynomial in ln(L - 1) (CARDAMOM ``offset``)."""
    log_term = jnp.log(lifespan - 1.0)
    value = jnp.zeros_like(log_term)
    for coefficient in c.PHENOLOGY_OFFSET_POLYNOMIAL:
        value = value * log_term + coefficient
    return value * width


def pulse_factor(time: jax.Array, lifespan: jax.Array, period: jax.Array,
                 phase_day: jax.Array) -> jax.Array:
    """Fraction of a pool released per day [d-1] by a periodic phenology pulse.

    Args:
        time: model clock [d].
        lifespan: pool lifespan [yr] (> 1).
        period: pulse width [d].
        phase_day: pulse phase on the model clock [d].
    """
    integral = 0.5 * (jnp.log(lifespan) - jnp.log(lifespan - 1.0))
    width = period * jnp.sqrt(2.0) / 2.0
    offset = pulse_offset(lifespan, width)
    scale = c.PHENOLOGY_YEAR_LENGTH / jnp.pi
    argument = jnp.sin((time - phase_day + offset) / scale) * scale / width
    return (2.0 / c.SQRT_PI) * (integral / width) * jnp.exp(-(argument**2))


def leaf_fall_factor(time, leaf_lifespan, leaf_fall_period, leaf_fall_day) -> jax.Array:
    """Leaf-fall fraction per day [d-1]."""
    return pulse_factor(time, leaf_lifespan, leaf_fall_period, leaf_fall_day)


def labile_release_factor(time, labile_lifespan, labile_release_period,
                          labile_release_day) -> jax.Array:
    """Labile-release fraction per day [d-1]."""
    return pulse_factor(time, labile_lifespan, labile_release_period, labile_release_day)
