"""Fire: combustion and mortality transfers from burned area (CARDAMOM DALEC fire module).

Each pool loses BA x cf to the atmosphere and BA x (1 - cf)(1 - resilience) to dead pools;
labile, foliar and root carbon go to litter, wood and litter to SOM; SOM only combusts.
"""

from __future__ import annotations

import jax

from differland._pytree import pytree_dataclass


@pytree_dataclass
class FireFluxes:
    """Fire fluxes [gC m-2 d-1]."""

    combustion_labile: jax.Array
    combustion_foliar: jax.Array
    combustion_root: jax.Array
    combustion_wood: jax.Array
    combustion_litter: jax.Array
    combustion_som: jax.Array
    transfer_labile_to_litter: jax.Array
    transfer_foliar_to_litter: jax.Array
    transfer_root_to_litter: jax.Array
    transfer_wood_to_som: jax.Array
    transfer_litter_to_som: jax.Array

    @property
    def combustion_total(self) -> jax.Array:
        return (self.combustion_labile + self.combustion_foliar + self.combustion_root
                + self.combustion_wood + self.combustion_litter + self.combustion_som)


def fire_fluxes(labile, foliar, root, wood, litter, som, burned_area, params,
                delta_t) -> FireFluxes:
    """Fire fluxes from the pools they act on [gC m-2] and the burned fraction of the step."""
    rate = burned_area / delta_t
    ligneous = params.ligneous_combustion_fraction
    foliar_cf = params.foliar_combustion_fraction
    litter_cf = (ligneous + foliar_cf) * 0.5
    mortality = 1.0 - params.fire_resilience
    return FireFluxes(
        combustion_labile=labile * rate * ligneous,
        combustion_foliar=foliar * rate * foliar_cf,
        combustion_root=root * rate * ligneous,
        combustion_wood=wood * rate * ligneous,
        combustion_litter=litter * rate * litter_cf,
        combustion_som=som * rate * params.som_combustion_fraction,
        transfer_labile_to_litter=labile * rate * (1.0 - ligneous) * mortality,
        transfer_foliar_to_litter=foliar * rate * (1.0 - foliar_cf) * mortality,
        transfer_root_to_litter=root * rate * (1.0 - ligneous) * mortality,
        transfer_wood_to_som=wood * rate * (1.0 - ligneous) * mortality,
        transfer_litter_to_som=litter * rate * (1.0 - litter_cf) * mortality,
    )
