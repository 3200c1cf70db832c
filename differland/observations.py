"""Observation operators: simulated trajectories -> predicted observables.

An operator is a pure function of the model trajectory (and, where needed, the parameters and
forcing) that returns the predicted observable on the model's time axis, with declared units
and time aggregation. Aggregation to coarser times (monthly, annual) and to regions (a mean over
pixels) are separate, composable functions. Every operator works on a leading pixel axis too.

Sign convention: NEE and NBE are positive when carbon goes to the atmosphere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from differland.forcing import Forcing
from differland.model import Trajectory
from differland.params import ParameterSet

PredictFunction = Callable[[Trajectory, ParameterSet, Forcing], jax.Array]


@dataclass(frozen=True)
class ObservationOperator:
    """One observable the model can predict.

    Attributes:
        name: the stream name (``gpp``, ``nee``, ...).
        units: units of the prediction.
        aggregation: native time aggregation of the prediction (``"step"``: one value per
            model step, the step mean of a flux or the end-of-step value of a pool).
        description: what is predicted and how.
        predict: ``(trajectory, params, forcing) -> values`` with the model's time axis last.
    """

    name: str
    units: str
    aggregation: str
    description: str
    predict: PredictFunction


def _out(name: str) -> PredictFunction:
    return lambda trajectory, params, forcing: getattr(trajectory.outputs, name)


def ecosystem_respiration(trajectory: Trajectory, params=None, forcing=None) -> jax.Array:
    """RECO = Ra + Rh_litter + Rh_som [gC m-2 d-1] (fire excluded)."""
    o = trajectory.outputs
    return o.autotrophic_respiration + o.rh_litter + o.rh_som


def net_biome_exchange(trajectory: Trajectory, params=None, forcing=None) -> jax.Array:
    """NBE = NEE + fire emission [gC m-2 d-1]; equals NEE where the model has no fire."""
    o = trajectory.outputs
    return o.nbe if o.nbe is not None else o.nee


def linear_sif(trajectory: Trajectory, params: ParameterSet, forcing=None) -> jax.Array:
    """SIF = (GPP - beta_sif) / alpha_sif, the reference's linear GPP proxy [SIF units]."""
    return (trajectory.outputs.gpp - (params.sif_beta_plus_three - 3.0)) / params.sif_alpha


def apar_sif(trajectory: Trajectory, forcing: Forcing, sif_yield: jax.Array,
             extinction: float = 0.5, par_fraction: float = 0.48) -> jax.Array:
    """SIF = yield x APAR, APAR = PAR (1 - exp(-k LAI)), PAR = 0.48 SSRD [yield x MJ m-2 d-1].

    Args:
        trajectory: model run.
        forcing: the forcing of the run (for SSRD).
        sif_yield: effective fluorescence yield [SIF units per MJ m-2 d-1 of APAR].
        extinction: canopy light-extinction coefficient k [1].
        par_fraction: PAR fraction of shortwave radiation [1].
    """
    fapar = 1.0 - jnp.exp(-extinction * trajectory.outputs.lai)
    return sif_yield * par_fraction * forcing.ssrd * fapar


def live_biomass(trajectory: Trajectory, params=None, forcing=None) -> jax.Array:
    """Live biomass = labile + foliar + root + wood carbon at the end of each step [gC m-2]."""
    s = trajectory.states
    return s.labile_carbon + s.foliar_carbon + s.root_carbon + s.wood_carbon


def total_water(trajectory: Trajectory, params=None, forcing=None) -> jax.Array:
    """Total water storage at the end of each step [mm]."""
    return trajectory.states.total_water()


def water_storage_anomaly(storage: jax.Array, mask: jax.Array) -> jax.Array:
    """GRACE-style anomaly [mm]: storage minus its mean over the observed steps (``mask``)."""
    weights = mask.astype(storage.dtype)
    mean = jnp.sum(storage * weights, axis=-1, keepdims=True) / jnp.maximum(
        jnp.sum(weights, axis=-1, keepdims=True), 1.0)
    return storage - mean


OPERATORS: dict[str, ObservationOperator] = {
    op.name: op for op in [
        ObservationOperator("lai", "m2 m-2", "step",
                            "leaf area index from start-of-step foliar carbon / LCMA",
                            _out("lai")),
        ObservationOperator("gpp", "gC m-2 d-1", "step", "gross primary production",
                            _out("gpp")),
        ObservationOperator("reco", "gC m-2 d-1", "step",
                            "ecosystem respiration Ra + Rh (eddy-covariance RECO)",
                            ecosystem_respiration),
        ObservationOperator("nee", "gC m-2 d-1", "step",
                            "net ecosystem exchange, positive = source to the atmosphere",
                            _out("nee")),
        ObservationOperator("nbe", "gC m-2 d-1", "step",
                            "net biome exchange NEE + fire, positive = source",
                            net_biome_exchange),
        ObservationOperator("et", "mm d-1", "step", "evapotranspiration", _out("et")),
        ObservationOperator("sif", "SIF units", "step", "linear GPP proxy (global model)",
                            linear_sif),
        ObservationOperator("biomass", "gC m-2", "step",
                            "live biomass (labile + foliar + root + wood)", live_biomass),
        ObservationOperator("water_storage", "mm", "step",
                            "total water storage (use water_storage_anomaly against GRACE)",
                            total_water),
        ObservationOperator("vod", "1", "step", "vegetation optical depth (global model)",
                            _out("vod")),
        ObservationOperator("fire", "gC m-2 d-1", "step", "fire carbon emission (global)",
                            _out("fire_combustion_total")),
    ]
}


def predict(name: str, trajectory: Trajectory, params: ParameterSet,
            forcing: Forcing) -> jax.Array:
    """Predicted observable ``name`` on the model time axis."""
    try:
        operator = OPERATORS[name]
    except KeyError:
        raise KeyError(f"no observation operator {name!r}; known: {', '.join(OPERATORS)}") from None
    return operator.predict(trajectory, params, forcing)


# --- aggregation ----------------------------------------------------------------------------


def temporal_mean(values: jax.Array, groups: jax.Array, n_groups: int,
                  mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean of ``values`` over time groups (e.g. calendar months or years).

    Args:
        values: ``(..., T)``.
        groups: ``(T,)`` integer group of each step (0 .. n_groups - 1), e.g. from
            :func:`group_index`.
        n_groups: number of groups (static).
        mask: optional ``(..., T)`` steps to include.

    Returns:
        ``(means, counts)``, each ``(..., n_groups)``; a group with no step has mean 0 and
        count 0.
    """
    weights = jnp.ones_like(values) if mask is None else mask.astype(values.dtype)

    def one(v, w):
        total = jax.ops.segment_sum(v * w, groups, num_segments=n_groups)
        count = jax.ops.segment_sum(w, groups, num_segments=n_groups)
        return total / jnp.maximum(count, 1.0), count

    flat_v = values.reshape((-1, values.shape[-1]))
    flat_w = jnp.broadcast_to(weights, values.shape).reshape(flat_v.shape)
    means, counts = jax.vmap(one)(flat_v, flat_w)
    shape = values.shape[:-1] + (n_groups,)
    return means.reshape(shape), counts.reshape(shape)


def spatial_mean(values: jax.Array, weights: jax.Array, mask: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """Weighted mean over the leading pixel axis (e.g. a region or an inversion box).

    Args:
        values: ``(P, T)``.
        weights: ``(P,)`` pixel weights (area x region membership; 0 excludes a pixel).
        mask: optional ``(P, T)`` valid values.

    Returns:
        ``(means, total_weight)``, each ``(T,)``.
    """
    w = weights[:, None] * (1.0 if mask is None else mask.astype(values.dtype))
    w = jnp.broadcast_to(w, values.shape)
    total = jnp.sum(w, axis=0)
    return jnp.sum(values * w, axis=0) / jnp.maximum(total, 1e-30), total


def calendar_groups(dates, frequency: str) -> tuple[jax.Array, int]:
    """Group index of each date for ``frequency`` ``"month"`` or ``"year"`` (numpy, static).

    Returns:
        ``(groups, n_groups)``: ``groups[t]`` counts months/years from the first date's.
    """
    import numpy as np

    days = np.asarray(dates, dtype="datetime64[D]")
    months = days.astype("datetime64[M]").astype(np.int64)
    if frequency == "month":
        index = months - months[0]
    elif frequency == "year":
        years = days.astype("datetime64[Y]").astype(np.int64)
        index = years - years[0]
    else:
        raise ValueError(f"unknown aggregation frequency {frequency!r}; use 'month' or 'year'")
    return jnp.asarray(index, jnp.int32), int(index.max()) + 1
