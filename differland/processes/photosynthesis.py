"""Gross primary production from the Aggregated Canopy Model (ACM).

Williams, M. et al. (1997) Predicting gross primary productivity in terrestrial ecosystems.
Ecological Applications 7(3), 882-894. Constants in :mod:`differland.constants`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland import constants as c


def solar_declination(doy: jax.Array) -> jax.Array:
    """Solar declination [rad] for day of year ``doy`` [d], ACM's 365-day cosine form."""
    angle = (360.0 * (doy + c.ACM_DECLINATION_DAY_OFFSET) / c.ACM_YEAR_LENGTH) * jnp.pi / 180.0
    return -c.SOLAR_DECLINATION_AMPLITUDE_DEG * jnp.cos(angle) * jnp.pi / 180.0


def day_length(latitude: jax.Array, doy: jax.Array) -> jax.Array:
    """Day length [h]: 24 arccos(-tan(lat) tan(dec)) / pi; 24 h / 0 h in polar day / night.

    Args:
        latitude: latitude [degrees_north].
        doy: day of year [d].
    """
    mult = jnp.tan(latitude * jnp.pi / 180.0) * jnp.tan(solar_declination(doy))
    inside = (mult < 1.0) & (mult > -1.0)
    safe = jnp.where(inside, mult, 0.0)
    hours = 24.0 * jnp.arccos(-safe) / jnp.pi
    return jnp.where(mult >= 1.0, 24.0, jnp.where(mult <= -1.0, 0.0, hours))


def acm_gpp(lai: jax.Array, t_min: jax.Array, t_max: jax.Array, ssrd: jax.Array,
            co2: jax.Array, doy: jax.Array, latitude: jax.Array,
            canopy_efficiency: jax.Array) -> jax.Array:
    """Daily GPP [gC m-2 d-1] of the ACM, without water stress.

    Args:
        lai: leaf area index [m2 m-2].
        t_min, t_max: daily minimum / maximum air temperature [degC].
        ssrd: shortwave radiation [MJ m-2 d-1] (used directly, as in DALEC).
        co2: atmospheric CO2 [ppm] (used directly as the ambient concentration).
        doy: day of year [d].
        latitude: latitude [degrees_north].
        canopy_efficiency: ACM ce [gC m-2 d-1].
    """
    conductance = (abs(c.ACM_LEAF_WATER_POTENTIAL_GRADIENT) ** c.ACM_EB1T
                   / (c.ACM_B2 * c.ACM_HYDRAULIC_RESISTANCE + 0.5 * (t_max - t_min)))
    p = lai * c.ACM_FOLIAR_NITROGEN * canopy_efficiency * jnp.exp(c.ACM_A2 * t_max) / conductance
    q = c.ACM_THETA - c.ACM_K
    # ci: root of the quadratic; its discriminant equals (ca - q - p)^2 + 4 p k > 0.
    b = co2 + q - p
    internal_co2 = 0.5 * (b + jnp.sqrt(b**2 - 4.0 * (co2 * q - p * c.ACM_THETA)))
    quantum_yield = c.ACM_C1 * lai**2 / (c.ACM_C2 + lai**2)
    diffusion = conductance * (co2 - internal_co2)
    light = quantum_yield * ssrd
    denominator = light + diffusion
    positive = denominator > 0.0
    limited = jnp.where(positive, light * diffusion / jnp.where(positive, denominator, 1.0), 0.0)
    hours = day_length(latitude, doy)
    return limited * (c.ACM_DAYLENGTH_COEFFICIENT * hours + c.ACM_DAYLENGTH_CONSTANT)
