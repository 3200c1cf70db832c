"""Masked, uncertainty-weighted misfits, NNSE, and ecological/dynamical constraints (EDCs).

Observations enter as :class:`Stream` pytrees whose values are finite everywhere; gaps are
``mask == 0`` and contribute neither to the loss nor to its gradient (no NaN ever reaches
arithmetic). Every loss returns its total and a per-term breakdown.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland._pytree import pytree_dataclass
from differland.params import ParameterSet
from differland.state import CARBON_POOLS, State


@pytree_dataclass
class Stream:
    """One observed stream on the model time axis.

    Attributes:
        values: observations, finite everywhere (anything at masked steps) [stream units].
        mask: 1 where observed, 0 in gaps (the loss uses exactly these steps).
        sigma: 1-sigma uncertainty per step [stream units], > 0 where mask is 1.
        weight: multiplier of this stream's term [1].
    """

    values: jax.Array
    mask: jax.Array
    sigma: jax.Array
    weight: jax.Array

    def restricted(self, steps: jax.Array) -> Stream:
        """The same stream with the mask limited to ``steps`` (0/1 per step)."""
        return self.replace(mask=self.mask * steps)


def gaussian_misfit(prediction: jax.Array, stream: Stream, normalise: bool = True) -> jax.Array:
    """Negative Gaussian log-likelihood (up to a constant) of ``prediction`` given ``stream``.

    0.5 x sum_t mask_t ((prediction_t - obs_t) / sigma_t)^2, divided by the number of observed
    steps when ``normalise`` (so streams of different lengths compare), times the weight.
    """
    mask = stream.mask.astype(prediction.dtype)
    safe_sigma = jnp.where(mask > 0, stream.sigma, 1.0)
    residual = jnp.where(mask > 0, (prediction - stream.values) / safe_sigma, 0.0)
    total = 0.5 * jnp.sum(residual**2)
    if normalise:
        total = total / jnp.maximum(jnp.sum(mask), 1.0)
    return stream.weight * total


def nse(prediction: jax.Array, stream: Stream) -> jax.Array:
    """Nash-Sutcliffe efficiency over the masked steps (1 is perfect) [1]."""
    mask = stream.mask.astype(prediction.dtype)
    observed = mask > 0
    count = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(jnp.where(observed, stream.values, 0.0)) / count
    error = jnp.sum(jnp.where(observed, prediction - stream.values, 0.0) ** 2)
    spread = jnp.sum(jnp.where(observed, stream.values - mean, 0.0) ** 2)
    return 1.0 - error / jnp.maximum(spread, 1e-12)


def nnse_loss(prediction: jax.Array, stream: Stream) -> jax.Array:
    """-NNSE = -1 / (2 - NSE) x weight: the reference site objective per stream (best -1)."""
    return -stream.weight / (2.0 - nse(prediction, stream))


# --- ecological and dynamical constraints ------------------------------------------------------


def _exceeds(larger, smaller, sharpness):
    """Penalty for violating ``larger > smaller``: softplus(-K ln(larger / smaller)).

    About 0 once ``larger`` exceeds ``smaller`` by a few multiples of 1/K in log units, and
    growing like K ln(smaller / larger) when the inequality is violated.
    """
    return jax.nn.softplus(-sharpness * (jnp.log(larger) - jnp.log(smaller)))


def parameter_edcs(params: ParameterSet, sharpness: float = 10.0) -> dict[str, jax.Array]:
    """Parameter inequalities of DALEC (Bloom & Williams 2015), as smooth penalties.

    EDC1 litter respiration faster than SOM respiration; EDC2 litter->SOM faster than SOM
    respiration; EDC3 leaf turnover faster than wood turnover; EDC4 root turnover faster than
    SOM respiration; EDC5 root and foliar+labile allocation within a factor of 5. Each is a
    softplus of the log ratio with sharpness ``sharpness`` [per unit ln]; the reference used
    the raw differences with hand-set factors instead, which leaves EDC4 active (~0.55) at
    most parameter values.
    """
    p = params
    autotrophic = p.autotrophic_respiration_fraction
    foliar = (1.0 - autotrophic) * p.foliar_allocation_fraction
    labile = (1.0 - autotrophic - foliar) * p.labile_allocation_fraction
    root = (1.0 - autotrophic - foliar - labile) * p.root_allocation_fraction
    k = sharpness
    return {
        "edc_litter_vs_som": _exceeds(p.litter_respiration_rate, p.som_respiration_rate, k),
        "edc_decomposition_vs_som": _exceeds(p.litter_to_som_rate, p.som_respiration_rate, k),
        "edc_leaf_vs_wood": _exceeds(1.0 / (p.leaf_lifespan * 365.25), p.wood_turnover_rate, k),
        "edc_root_vs_som": _exceeds(p.root_turnover_rate, p.som_respiration_rate, k),
        "edc_allocation_balance": (_exceeds(5.0 * root, foliar + labile, k)
                                   + _exceeds(5.0 * (foliar + labile), root, k)),
    }


def edc_ramp(iteration, ramp_iterations: int) -> jax.Array:
    """Weight in [0, 1] that phases the EDC penalties in linearly over ``ramp_iterations``
    (the reference ramps its EDC sharpness over the first 10 000 iterations)."""
    if ramp_iterations <= 0:
        return jnp.asarray(1.0)
    return jnp.minimum(jnp.asarray(iteration, jnp.result_type(float)) / ramp_iterations, 1.0)


POOL_INFLOWS = {
    "labile_carbon": ("npp_to_labile",),
    "foliar_carbon": ("npp_to_foliar", "labile_to_foliar"),
    "root_carbon": ("npp_to_root",),
    "wood_carbon": ("npp_to_wood",),
    "litter_carbon": ("foliar_to_litter", "root_to_litter", "fire_transfer_labile_to_litter",
                      "fire_transfer_foliar_to_litter", "fire_transfer_root_to_litter"),
    "som_carbon": ("litter_to_som", "wood_to_som", "fire_transfer_wood_to_som",
                   "fire_transfer_litter_to_som"),
}
POOL_OUTFLOWS = {
    "labile_carbon": ("labile_to_foliar", "fire_combustion_labile",
                      "fire_transfer_labile_to_litter"),
    "foliar_carbon": ("foliar_to_litter", "fire_combustion_foliar",
                      "fire_transfer_foliar_to_litter"),
    "root_carbon": ("root_to_litter", "fire_combustion_root", "fire_transfer_root_to_litter"),
    "wood_carbon": ("wood_to_som", "fire_combustion_wood", "fire_transfer_wood_to_som"),
    "litter_carbon": ("rh_litter", "litter_to_som", "fire_combustion_litter",
                      "fire_transfer_litter_to_som"),
    "som_carbon": ("rh_som", "fire_combustion_som"),
}


STEADY_STATE_FORMS = ("quadratic", "tolerance")


def year_end_mean(series: jax.Array, year_end: jax.Array) -> jax.Array:
    """Mean of ``series`` (time last) over the steps where ``year_end`` is 1."""
    weights = year_end / jnp.maximum(jnp.sum(year_end), 1.0)
    return jnp.sum(series * weights, axis=-1)


def pool_balance_ratios(outputs, states: State, initial: State, year_end: jax.Array
                        ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Per carbon pool, ``(Rm, Rs)``: Rm = sum of inflows / sum of outflows over the run, and
    Rs = Rm x (mean of the pool at year ends) / initial pool (Bloom & Williams 2015).

    Args:
        outputs: :class:`~differland.state.StepOutputs` over the run (time last).
        states: end-of-step states over the run.
        initial: the initial state.
        year_end: ``(T,)`` 1 at the last step of each year, else 0.
    """
    ratios = {}
    for pool in CARBON_POOLS:
        inflow = sum(jnp.sum(getattr(outputs, n), axis=-1) for n in POOL_INFLOWS[pool]
                     if getattr(outputs, n, None) is not None)
        outflow = sum(jnp.sum(getattr(outputs, n), axis=-1) for n in POOL_OUTFLOWS[pool]
                      if getattr(outputs, n, None) is not None)
        in_out = inflow / jnp.maximum(outflow, 1e-3)
        trend = year_end_mean(getattr(states, pool), year_end) / getattr(initial, pool)
        ratios[pool] = (in_out, in_out * trend)
    return ratios


def steady_state_edcs(outputs, states: State, initial: State, year_end: jax.Array,
                      form: str = "quadratic", sharpness: float = 90.0
                      ) -> dict[str, jax.Array]:
    """Pool-balance constraints: no pool drifts far from steady state over the run.

    With (Rm, Rs) from :func:`pool_balance_ratios`, per carbon pool:

    * ``"quadratic"`` (DifferLand global form): (ln Rs / ln 2)^2, a pull towards Rs = 1 that
      costs < 1 while the pool stays within a factor 2;
    * ``"tolerance"`` (DifferLand site / CARDAMOM form): softplus(K (|ln Rs| - ln 2)) +
      softplus(K (|Rs - Rm| - 0.1)) with K = ``sharpness``: about 0 inside the tolerance
      (in/out ratio x trend within a factor 2, and the mean year-end pool within ~10 % of
      the initial pool), growing like K x the excess outside it. Inside the band its pull on
      the fit is weak (gradient K sigmoid(-K x margin), about 0.4 at a margin of 0.06).

    Args:
        outputs: as in :func:`pool_balance_ratios`.
        states: as in :func:`pool_balance_ratios`.
        initial: as in :func:`pool_balance_ratios`.
        year_end: as in :func:`pool_balance_ratios`.
        form: one of :data:`STEADY_STATE_FORMS`.
        sharpness: K of the tolerance form [per unit of ratio].
    """
    if form not in STEADY_STATE_FORMS:
        raise ValueError(f"steady-state EDC form must be one of {STEADY_STATE_FORMS}, "
                         f"got {form!r}")
    penalties = {}
    for pool, (in_out, ratio) in pool_balance_ratios(outputs, states, initial,
                                                     year_end).items():
        log_ratio = jnp.log(ratio + 1e-3)
        if form == "quadratic":
            penalty = (log_ratio / jnp.log(2.0)) ** 2
        else:
            penalty = (jax.nn.softplus(sharpness * (jnp.abs(log_ratio) - jnp.log(2.0)))
                       + jax.nn.softplus(sharpness * (jnp.abs(ratio - in_out) - 0.1)))
        penalties[f"edc_steady_{pool}"] = penalty
    return penalties


WATER_POOLS = ("soil_water", "deep_water")


def water_steady_state_edcs(states: State, initial: State, year_end: jax.Array,
                            offset: float = 1.0) -> dict[str, jax.Array]:
    """Drift constraints on the water stores: (ln R / ln 2)^2 per store, R = (mean of the store
    at year ends + ``offset``) / (initial store + ``offset``).

    The water counterpart of the quadratic :func:`steady_state_edcs`, without the in/out
    ratio (the stores turn over within a season, so their drift is the trend alone). It
    holds the initial water near the run's mean and keeps a store from filling year after
    year when the calibration shuts its drainage, which would take the water stress and ET
    terms beyond the soil water they were fitted on. Stores the model does not have
    (``None``) are left out.

    Args:
        states: end-of-step states over the run (time last).
        initial: the initial state.
        year_end: ``(T,)`` 1 at the last step of each year, else 0.
        offset: [mm] added to both sides, so that a store starting near empty costs a
            bounded amount.
    """
    penalties = {}
    for pool in WATER_POOLS:
        water = getattr(states, pool)
        if water is None:
            continue
        mean = year_end_mean(water, year_end)
        ratio = (mean + offset) / (getattr(initial, pool) + offset)
        penalties[f"edc_steady_{pool}"] = (jnp.log(ratio) / jnp.log(2.0)) ** 2
    return penalties


def water_drift_edc(states: State, year_end: jax.Array, annual_precipitation,
                    tolerance: float = 1.0 / 3.0) -> jax.Array:
    """Drift constraint on the total water store, in years of precipitation.

    D = (mean of the total store (PAW, plus PUW where the model has it) at the year ends of
    the later half of the run - the same over the earlier half) / ``annual_precipitation``;
    the cost is (max(|D| - ``tolerance``, 0) / ``tolerance``)^2. The first year end is left
    out: it carries the adjustment of the initial water, which this constraint leaves free
    (unlike :func:`water_steady_state_edcs`). Wet and dry spells move the store between the
    halves by a fraction of a year's precipitation; a calibration that closes the drainage
    loop (PAW drains to PUW and rises back) can fill it by more than half a year's
    precipitation, beyond the soil water the water-stress and ET terms were fitted on. Zero
    with fewer than three year ends.

    Args:
        states: end-of-step states over the run (time last).
        year_end: ``(T,)`` 1 at the last step of each year, else 0.
        annual_precipitation: mean precipitation of the run [mm yr-1].
        tolerance: drift the constraint leaves free [years of precipitation].
    """
    water = sum(getattr(states, pool) for pool in WATER_POOLS
                if getattr(states, pool) is not None)
    count = jnp.cumsum(year_end)
    later = count - 1.0  # the first year end is number 0
    n = jnp.sum(year_end) - 1.0
    half = jnp.floor(n / 2.0)
    early = year_end * (later >= 1.0) * (later <= half)
    late = year_end * (later > n - half)
    drift = (year_end_mean(water, late) - year_end_mean(water, early)) / annual_precipitation
    excess = jnp.maximum(jnp.abs(drift) - tolerance, 0.0) / tolerance
    return jnp.where(half >= 1.0, excess ** 2, 0.0)
