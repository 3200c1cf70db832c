"""Phenology: when labile carbon becomes leaves and when leaves fall.

Two forms. The calendar pulses of CARDAMOM DALEC (the reference's; Bloom, A. A. & Williams,
M. (2015) Constraining ecosystem carbon dynamics in a data-limited world. Biogeosciences 12,
1299-1315): each pulse is a Gaussian in sin((t - phase)/sf) with a 365.25-day period,
normalised so that its annual integral removes the fraction implied by the lifespan L:
0.5 ln(L / (L - 1)). And a growing-season index (GSI) of the weather and soil water (Jolly,
W. M., Nemani, R. & Running, S. W. (2005) A generalized, bioclimatic index to predict foliar
phenology in response to climate. Global Change Biology 11, 619-632; with a soil-water factor
as in Forkel, M. et al. (2014) Biogeosciences 11, 7025-7050), whose running mean sets both
rates every step (:class:`~differland.options.ClimatePhenology`). The calendar's labile
release may also wait for soil water (:func:`water_limited_release`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland import constants as c
from differland.processes.photosynthesis import day_length


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


def growing_season_weather_index(t_min, vpd, latitude, doy, temperature_threshold,
                                 daylength_threshold, vpd_threshold, option) -> jax.Array:
    """Weather part of the growing-season index [1]: temperature x day length x VPD factors.

    Args:
        t_min: daily minimum temperature [degC].
        vpd: vapour pressure deficit [hPa].
        latitude: [degrees_north]; doy: day of year [d].
        temperature_threshold, daylength_threshold, vpd_threshold: where each factor is
            one half [K, h, hPa] (the temperature in kelvin, as its parameter).
        option: :class:`~differland.options.ClimatePhenology` (factor shapes).
    """
    temperature = jax.nn.sigmoid((t_min + c.ZERO_CELSIUS - temperature_threshold)
                                 * (2.0 / option.temperature_width))
    daylength = jax.nn.sigmoid((day_length(latitude, doy) - daylength_threshold)
                               * (2.0 / option.daylength_width))
    dryness = _power_ramp(vpd, vpd_threshold, -option.steepness)
    return temperature * daylength * dryness


def growing_season_water_factor(water, water_threshold, option) -> jax.Array:
    """Soil-water factor of the growing-season index, 1 / (1 + (W_half / W)^k) [1]."""
    return _power_ramp(water, water_threshold, option.steepness)


def _power_ramp(x, half, exponent) -> jax.Array:
    """1 / (1 + (half / x)^exponent) for x >= 0 (x floored at 1e-6 so that 0 stays finite)."""
    return jax.nn.sigmoid(exponent * (jnp.log(jnp.maximum(x, 1e-6)) - jnp.log(half)))


def index_driven_rates(index, leaf_growth_rate, leaf_senescence_rate):
    """``(labile_release, leaf_fall)`` fractions per day [d-1] set by the growing-season index.

    Labile carbon moves to the leaves at ``growth x GSI`` and leaves fall at ``senescence x
    (1 - GSI)``, on top of a background leaf fall (1 / lifespan, or the calendar pulses).
    """
    return leaf_growth_rate * index, leaf_senescence_rate * (1.0 - index)


def growing_season_memory(previous, index, delta_t, memory_days) -> jax.Array:
    """Running mean of the growing-season index after a step of ``delta_t`` days [1].

    Exponential memory: the mean moves towards the step's index by 1 - exp(-dt / tau), the
    exact response of d m / dt = (index - m) / tau to an index held over the step.
    """
    return previous + (index - previous) * -jnp.expm1(-delta_t / memory_days)


def water_limited_release(calendar_loss, deferred, water_factor, delta_t, memory_days):
    """Labile release of the calendar pulse, held back while the soil is dry.

    The pulse asks for ``calendar_loss x delta_t`` of the labile pool this step; with what
    earlier dry steps held back (``deferred``, a fraction of the pool) that is the release
    owed. The step releases the owed fraction x the soil-water factor; the rest stays owed,
    fading with an e-folding time of ``memory_days`` (a season whose rain never comes does
    not release it a year later). With a wet soil (factor 1) nothing is deferred and the
    release is the calendar's.

    Args:
        calendar_loss: the calendar pulse's loss coefficient [d-1].
        deferred: release owed from earlier steps [1].
        water_factor: soil-water factor in [0, 1] [1].
        delta_t: step length [d]; memory_days: [d].

    Returns:
        ``(loss coefficient [d-1], deferred release after the step [1])``.
    """
    owed = deferred + calendar_loss * delta_t
    released = jnp.minimum(owed * water_factor, 1.0 - 1e-7)
    return released / delta_t, (owed - released) * jnp.exp(-delta_t / memory_days)
