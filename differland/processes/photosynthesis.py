"""Gross primary production from the Aggregated Canopy Model (ACM).

Williams, M. et al. (1997) Predicting gross primary productivity in terrestrial ecosystems.
Ecological Applications 7(3), 882-894. Constants in :mod:`differland.constants`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland import constants as c
from differland._pytree import pytree_dataclass
from differland.processes.neural import mlp_sequence


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
    # tan(lat) tan(dec) and arccos(-m) = 2 atan(sqrt((1 + m) / (1 - m))), |m| < 1: the same
    # function with the operations that XLA:CPU evaluates fastest (docs/performance.md; day
    # length is one of the most expensive terms of the forcing).
    lat = latitude * jnp.pi / 180.0
    dec = solar_declination(doy)
    mult = (jnp.sin(lat) * jnp.sin(dec)) / (jnp.cos(lat) * jnp.cos(dec))
    inside = (mult < 1.0) & (mult > -1.0)
    safe = jnp.where(inside, mult, 0.0)
    hours = (48.0 / jnp.pi) * jnp.arctan(jnp.sqrt((1.0 + safe) / (1.0 - safe)))
    return jnp.where(mult >= 1.0, 24.0, jnp.where(mult <= -1.0, 0.0, hours))


@pytree_dataclass
class CanopyTerms:
    """The state-independent part of the ACM for one step (see :func:`canopy_terms`).

    Attributes:
        conductance: canopy conductance gc [ACM units].
        p_per_lai: the N-use term p per unit LAI [ppm per m2 m-2].
        co2: ambient CO2 [ppm].
        ssrd: shortwave radiation [MJ m-2 d-1].
        daylength_factor: d1 x day length + d2 [1].
        lai_half_saturation: c2 of the canopy quantum yield c1 LAI^2 / (c2 + LAI^2)
            [m4 m-4], one value per step, or ``None`` for the ACM's fixed 2.1001.
    """

    conductance: jax.Array
    p_per_lai: jax.Array
    co2: jax.Array
    ssrd: jax.Array
    daylength_factor: jax.Array
    lai_half_saturation: jax.Array | None = None


def canopy_terms(t_min, t_max, ssrd, co2, doy, latitude, canopy_efficiency,
                 lai_half_saturation=None) -> CanopyTerms:
    """ACM terms that depend on forcing and parameters only, not on LAI.

    Args:
        t_min, t_max: daily minimum / maximum air temperature [degC].
        ssrd: shortwave radiation [MJ m-2 d-1] (used directly, as in DALEC).
        co2: atmospheric CO2 [ppm] (used directly as the ambient concentration).
        doy: day of year [d].
        latitude: latitude [degrees_north].
        canopy_efficiency: ACM ce [gC m-2 d-1].
        lai_half_saturation: c2 of the canopy quantum yield [m4 m-4] (``None``: the ACM's
            value). A smaller c2 makes a sparse canopy more efficient: with the ACM's 2.1001
            a canopy of LAI 0.5 uses 11 % of the maximum quantum yield, with 0.5 33 %.
    """
    conductance = (abs(c.ACM_LEAF_WATER_POTENTIAL_GRADIENT) ** c.ACM_EB1T
                   / (c.ACM_B2 * c.ACM_HYDRAULIC_RESISTANCE + 0.5 * (t_max - t_min)))
    p_per_lai = (c.ACM_FOLIAR_NITROGEN * canopy_efficiency * jnp.exp(c.ACM_A2 * t_max)
                 / conductance)
    daylength_factor = (c.ACM_DAYLENGTH_COEFFICIENT * day_length(latitude, doy)
                        + c.ACM_DAYLENGTH_CONSTANT)
    if lai_half_saturation is not None:  # one value per step, as every other term
        lai_half_saturation = jnp.broadcast_to(
            jnp.asarray(lai_half_saturation, dtype=jnp.result_type(ssrd)), jnp.shape(ssrd))
    return CanopyTerms(conductance, p_per_lai, co2, ssrd, daylength_factor,
                       lai_half_saturation)


def gpp_from_canopy_terms(lai, terms: CanopyTerms) -> jax.Array:
    """ACM GPP [gC m-2 d-1] for leaf area index ``lai`` [m2 m-2] given the canopy terms.

    The ACM's co-limitation (Williams et al. 1997; reference-dalec.md) times the day-length
    factor: e0 I pd / (e0 I + pd), with the light term e0 I = c1 LAI^2 / (c2 + LAI^2) SSRD
    and the diffusion term pd = gc (Ca - ci), ci the larger root of
    ci^2 - (Ca + q - p) ci + Ca q - p theta = 0, p = LAI x ``p_per_lai``, q = theta - k.

    Evaluated in a form that is the same function in exact arithmetic and stays accurate
    and differentiable as LAI -> 0 (a canopy that has shed its leaves), for Ca > theta
    (4.2 ppm; forcing CO2 is at least 150 ppm):

    * Ca - ci is the smaller root of the same quadratic written in Ca - ci,
      x^2 - (Ca - q + p) x + p (Ca - theta) = 0, taken as
      2 p (Ca - theta) / (Ca - q + p + sqrt(discriminant)). Ca minus the root ci cancels
      catastrophically for small p (to exactly 0 in float32 below p ~ 1e-5 ppm).
    * Both terms vanish with LAI (pd linearly, e0 I quadratically), so the co-limitation is
      LAI x l g / (l + g) with l and g the light and diffusion terms per unit LAI: g stays
      positive, and the division's denominator with it. Divided by e0 I + pd itself, which
      underflows with LAI, the derivative with respect to the denominator, numerator x
      denominator^-2, is 0 x inf (NaN) once the sum is below ~1e-19 in float32.
    """
    saturation = c.ACM_C2 if terms.lai_half_saturation is None else terms.lai_half_saturation
    p = lai * terms.p_per_lai
    q = c.ACM_THETA - c.ACM_K
    excess = terms.co2 - c.ACM_THETA  # Ca - theta [ppm]
    b = terms.co2 - q + p
    # the discriminant of both forms of the quadratic: (Ca - q - p)^2 + 4 p k > 0
    root = jnp.sqrt(b**2 - 4.0 * p * excess)
    # per unit LAI: gc (Ca - ci) / LAI and c1 LAI / (c2 + LAI^2) SSRD
    diffusion = terms.conductance * terms.p_per_lai * 2.0 * excess / (b + root)
    light = c.ACM_C1 * lai / (saturation + lai**2) * terms.ssrd
    denominator = light + diffusion
    # 0 where the sum is not positive (Ca <= theta only)
    limited = lai * light * diffusion / jnp.where(denominator > 0.0, denominator, jnp.inf)
    return limited * terms.daylength_factor


def acm_gpp(lai, t_min, t_max, ssrd, co2, doy, latitude, canopy_efficiency,
            lai_half_saturation=None) -> jax.Array:
    """Daily GPP [gC m-2 d-1] of the ACM, without water stress (arguments as in
    :func:`canopy_terms`, plus ``lai`` [m2 m-2])."""
    terms = canopy_terms(t_min, t_max, ssrd, co2, doy, latitude, canopy_efficiency,
                         lai_half_saturation)
    return gpp_from_canopy_terms(lai, terms)


def neural_weather_factor(t_min, t_max, vpd, layers: list[dict], option) -> jax.Array:
    """The :class:`~differland.options.NeuralWeatherFactor` multiplier of GPP, in (0, 1) [1].

    sigmoid(MLP(T / temperature_scale, VPD / vpd_scale)) with T the daily mean air
    temperature [degC] and VPD [hPa]. Elementwise in time: the inputs may carry a time axis.
    """
    inputs = jnp.stack([0.5 * (t_min + t_max) / option.temperature_scale,
                        vpd / option.vpd_scale], axis=-1)
    return jax.nn.sigmoid(mlp_sequence(inputs, layers)[..., 0])
