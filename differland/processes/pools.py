"""Pool updates: the mass-conserving default and the reference's clamped update.

Both take the start-of-step pools, the allocation (inflows) and the *potential* outflow rates
[per day] computed from start-of-step pools, and return end-of-step pools with the fluxes
actually applied, such that every pool changes by exactly (inflow - outflow) x dt.

* :func:`limit_outflows` (default): a pool's outflows are scaled down together when they would
  remove more than the pool holds plus its inflows of the step. Pools stay >= 0, budgets close
  to rounding, and the result is a smooth function of parameters wherever no limit is active
  (and piecewise-smooth with non-zero gradients where one is).
* :func:`clamp_reference`: the published DifferLand update, bugs included (pools hard-clamped to
  the prior bounds of the initial pools; leaf litter set to 1 gC m-2 d-1 at the foliar floor).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from differland._pytree import pytree_dataclass


@pytree_dataclass
class CarbonFluxes:
    """Carbon transfers between pools and to the atmosphere [gC m-2 d-1]."""

    labile_to_foliar: jax.Array
    foliar_to_litter: jax.Array
    root_to_litter: jax.Array
    wood_to_som: jax.Array
    rh_litter: jax.Array
    rh_som: jax.Array
    litter_to_som: jax.Array


@pytree_dataclass
class CarbonPools:
    """The six carbon pools [gC m-2]."""

    labile: jax.Array
    foliar: jax.Array
    root: jax.Array
    wood: jax.Array
    litter: jax.Array
    som: jax.Array


def outflow_scale(pool, inflow, outflow, delta_t) -> jax.Array:
    """Factor in [0, 1] that keeps ``pool + (inflow - scale*outflow) dt`` non-negative.

    available / outflow when the outflow exceeds what is available (pool / dt + inflow),
    exactly 1 otherwise (0 when both are 0). Its derivative is that of available / outflow
    where the limit is active and 0 elsewhere (see :func:`_limit_factor`).
    """
    return _limit_factor(jnp.maximum(pool / delta_t + inflow, 0.0), outflow)


@jax.custom_jvp
def _limit_factor(available, outflow):
    """available / max(outflow, available), 0 where both are 0.

    Written as one division whose result is the factor, so that compiled code computes it
    once rather than re-deriving the limiter's condition in every flux that uses it. Its
    derivative is given explicitly (:func:`_limit_factor_jvp`): differentiated as written,
    available / available (the limit inactive) would have the derivative 1 / a - a / a^2,
    rounding noise growing as 1 / a that turns into inf - inf once a^2 underflows (a pool
    below ~1e-19 gC m-2 in float32).
    """
    largest = jnp.maximum(outflow, available)
    return available / jnp.where(largest > 0.0, largest, 1.0)


@_limit_factor.defjvp
def _limit_factor_jvp(primals, tangents):
    """0 where the limit is inactive (the factor is 1 there); where it is active,
    (d available - factor x d outflow) / outflow, the derivative of available / outflow in a
    form that stays finite for any normal outflow (a plain division's derivative with
    respect to its denominator, numerator x denominator^-2, overflows below ~1e-19)."""
    available, outflow = primals
    d_available, d_outflow = tangents
    factor = _limit_factor(available, outflow)
    limited = outflow > available
    rate = (d_available - factor * d_outflow) / jnp.where(limited, outflow, 1.0)
    return factor, jnp.where(limited, rate, 0.0)


def limit_outflows(pools: CarbonPools, production, potential: CarbonFluxes,
                   delta_t) -> tuple[CarbonPools, CarbonFluxes]:
    """Mass-conserving carbon update with outflow limiting (the default).

    Args:
        pools: start-of-step pools [gC m-2].
        production: :class:`~differland.processes.allocation.Allocation` [gC m-2 d-1].
        potential: outflows computed from start-of-step pools [gC m-2 d-1].
        delta_t: step length [d].
    """
    def update(pool, inflow, *outflows):
        scale = outflow_scale(pool, inflow, sum(outflows), delta_t)
        actual = tuple(o * scale for o in outflows)
        return pool + (inflow - sum(actual)) * delta_t, actual

    labile, (release,) = update(pools.labile, production.labile, potential.labile_to_foliar)
    foliar, (leaf_litter,) = update(pools.foliar, production.foliar + release,
                                    potential.foliar_to_litter)
    root, (root_litter,) = update(pools.root, production.root, potential.root_to_litter)
    wood, (wood_litter,) = update(pools.wood, production.wood, potential.wood_to_som)
    litter, (rh_litter, litter_to_som) = update(
        pools.litter, leaf_litter + root_litter, potential.rh_litter, potential.litter_to_som)
    som, (rh_som,) = update(pools.som, litter_to_som + wood_litter, potential.rh_som)
    return (CarbonPools(labile, foliar, root, wood, litter, som),
            CarbonFluxes(release, leaf_litter, root_litter, wood_litter, rh_litter, rh_som,
                         litter_to_som))


def _clamp(pool_next, pool, lower, upper, inflow, outflow, delta_t, *, lower_bug=None):
    """Reference clamp of one pool with one balancing outflow (min clamp, then max clamp)."""
    above = pool_next >= lower
    pool_next = jnp.where(above, pool_next, lower)
    balanced = inflow - (pool_next - pool) / delta_t
    outflow = jnp.where(above, outflow, balanced if lower_bug is None else lower_bug)
    below = pool_next <= upper
    pool_next = jnp.where(below, pool_next, upper)
    outflow = jnp.where(below, outflow, inflow - (pool_next - pool) / delta_t)
    return pool_next, outflow


def clamp_reference(pools: CarbonPools, production, potential: CarbonFluxes, delta_t,
                    lower: CarbonPools, upper: CarbonPools) -> tuple[CarbonPools, CarbonFluxes]:
    """The published DifferLand carbon update, reproduced exactly (see reference-dalec.md).

    Each pool is updated, then clamped to ``[lower, upper]`` (the initial-pool prior bounds)
    with its outflow recomputed to balance, in the order labile, foliar, root, wood, litter,
    SOM. Quirk kept: at the foliar floor, leaf litter is set to the constant ``lower.foliar``
    [gC m-2 d-1] instead of the balancing value (this creates carbon).
    """
    dt = delta_t
    labile, release = _clamp(
        pools.labile + (production.labile - potential.labile_to_foliar) * dt, pools.labile,
        lower.labile, upper.labile, production.labile, potential.labile_to_foliar, dt)
    foliar_in = production.foliar + release
    foliar, leaf_litter = _clamp(
        pools.foliar + (foliar_in - potential.foliar_to_litter) * dt, pools.foliar,
        lower.foliar, upper.foliar, foliar_in, potential.foliar_to_litter, dt,
        lower_bug=jnp.asarray(lower.foliar, jnp.result_type(pools.foliar)))
    root, root_litter = _clamp(
        pools.root + (production.root - potential.root_to_litter) * dt, pools.root,
        lower.root, upper.root, production.root, potential.root_to_litter, dt)
    wood, wood_litter = _clamp(
        pools.wood + (production.wood - potential.wood_to_som) * dt, pools.wood,
        lower.wood, upper.wood, production.wood, potential.wood_to_som, dt)

    # Litter: two outflows; the min clamp rebalances litter->SOM, and a negative litter->SOM
    # is then zeroed with Rh absorbing the difference; the max clamp rebalances litter->SOM.
    litter_in = leaf_litter + root_litter
    rh_litter, litter_to_som = potential.rh_litter, potential.litter_to_som
    litter = pools.litter + (litter_in - rh_litter - litter_to_som) * dt
    above = litter >= lower.litter
    litter = jnp.where(above, litter, lower.litter)
    litter_to_som = jnp.where(
        above, litter_to_som, litter_in - rh_litter - (litter - pools.litter) / dt)
    nonnegative = litter_to_som >= 0
    litter_to_som = jnp.where(nonnegative, litter_to_som, 0.0)
    rh_litter = jnp.where(nonnegative, rh_litter, litter_in - (litter - pools.litter) / dt)
    below = litter <= upper.litter
    litter = jnp.where(below, litter, upper.litter)
    litter_to_som = jnp.where(
        below, litter_to_som, litter_in - rh_litter - (litter - pools.litter) / dt)

    som_in = litter_to_som + wood_litter
    som, rh_som = _clamp(pools.som + (som_in - potential.rh_som) * dt, pools.som,
                         lower.som, upper.som, som_in, potential.rh_som, dt)
    return (CarbonPools(labile, foliar, root, wood, litter, som),
            CarbonFluxes(release, leaf_litter, root_litter, wood_litter, rh_litter, rh_som,
                         litter_to_som))
