"""Autotrophic respiration and NPP allocation with fixed fractions (DALEC).

Williams, M. et al. (2005) An improved analysis of forest carbon dynamics using data
assimilation. Global Change Biology 11, 89-105.
"""

from __future__ import annotations

import jax

from differland._pytree import pytree_dataclass


@pytree_dataclass
class Allocation:
    """Partition of GPP [gC m-2 d-1]: respiration and production of each live pool."""

    autotrophic_respiration: jax.Array
    foliar: jax.Array
    labile: jax.Array
    root: jax.Array
    wood: jax.Array


def allocate(gpp, autotrophic_respiration_fraction, foliar_allocation_fraction,
             labile_allocation_fraction, root_allocation_fraction) -> Allocation:
    """Fractions applied in sequence: Ra, foliage, labile, roots; wood takes the remainder.

    The five parts sum to GPP exactly (up to rounding), so allocation conserves carbon.
    """
    respiration = autotrophic_respiration_fraction * gpp
    foliar = (gpp - respiration) * foliar_allocation_fraction
    labile = (gpp - respiration - foliar) * labile_allocation_fraction
    root = (gpp - respiration - foliar - labile) * root_allocation_fraction
    wood = gpp - respiration - foliar - labile - root
    return Allocation(respiration, foliar, labile, root, wood)
