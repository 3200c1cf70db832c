"""What every process option declares: the base classes of the option slots.

A process option is a frozen dataclass that declares what it reads and adds (registry
parameters, neural networks, state fields, outputs) and implements its terms: those that
depend on the forcing only, computed for every step at once before the time loop, and those
that depend on the state, computed inside the step. Each option fills one *slot* of
:class:`~differland.config.ModelConfig`; a slot holds either one option (``model``,
``water_stress``, ``evapotranspiration``, ``phenology``) or a tuple of modifiers
(``photosynthesis``, ``soil_water``, ``decomposition``, ``leaf_loss``).

Units: fluxes and rates are per day, pools and water as in :data:`differland.state.UNITS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import jax

from differland._pytree import pytree_dataclass


@dataclass(frozen=True)
class Option:
    """A process option (abstract).

    Class attributes:
        slot: the :class:`~differland.config.ModelConfig` field the option fills.
        name: its name in the option registry, on the command line and in ``config.json``.
        reads: every registry parameter the option may read, whatever its fields.
    """

    slot: ClassVar[str] = ""
    name: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()

    @property
    def parameters(self) -> tuple[str, ...]:
        """The registry parameters this option, with these fields, reads."""
        return self.reads

    def parameters_in(self, config) -> tuple[str, ...]:
        """The parameters it reads that change some output of a run with ``config``."""
        return self.parameters

    @property
    def networks(self) -> dict[str, tuple[int, ...]]:
        """Its neural networks: ``{term: layer sizes}``, ``term`` the key of ``network``."""
        return {}

    @property
    def state_fields(self) -> tuple[str, ...]:
        """The :class:`~differland.state.State` fields it carries."""
        return ()

    @property
    def outputs(self) -> tuple[str, ...]:
        """The :class:`~differland.state.StepOutputs` fields it adds."""
        return ()

    def check(self, config) -> None:
        """Raise ``ValueError`` when the option cannot run with the rest of ``config``."""

    def initial_state(self, params) -> dict[str, jax.Array]:
        """Initial values of :attr:`state_fields` from the parameters (scalars or batches)."""
        return {}

    def prepared(self, network) -> tuple[Option, Any]:
        """``(option, network)`` computing the same terms with work on the weights done once
        before the time loop (XLA does not lift it out of the loop)."""
        return self, network

    def with_layers(self, term: str, sizes: tuple[int, ...]) -> Option:
        """The option with the hidden layers of its network ``term`` taken from ``sizes``
        (inputs, hidden..., outputs), e.g. those of a network file."""
        return self


@dataclass(frozen=True)
class NetworkOption(Option):
    """An option with one neural network of ``layers`` leaky-ReLU hidden layers of width
    ``hidden`` (fields of the subclass), named by :attr:`term`."""

    term: ClassVar[str] = ""
    n_inputs: ClassVar[int] = 1

    @property
    def networks(self) -> dict[str, tuple[int, ...]]:
        return {self.term: (self.n_inputs,) + (self.hidden,) * self.layers + (1,)}

    def with_layers(self, term: str, sizes: tuple[int, ...]) -> Option:
        return dataclasses.replace(self, hidden=sizes[1], layers=len(sizes) - 2)


# --- slots holding one option -------------------------------------------------------------


@dataclass(frozen=True)
class WaterStress(Option):
    """The water-stress factor beta of photosynthesis."""

    slot: ClassVar[str] = "water_stress"
    limits: ClassVar[bool] = True  # False: beta is 1 at every step

    def beta(self, params, water, network) -> jax.Array:
        """beta [1] for the start-of-step plant-available water ``water`` [mm]."""
        raise NotImplementedError


@dataclass(frozen=True)
class Evapotranspiration(Option):
    """Evapotranspiration [mm d-1] before the water balance limits it."""

    slot: ClassVar[str] = "evapotranspiration"

    def forcing_terms(self, params, forcing, network) -> Any:
        """Terms of the forcing only, elementwise in time (a pytree)."""
        return None

    def et(self, terms, params, lai, water, gpp, network) -> jax.Array:
        """ET [mm d-1] of a step from its ``terms``, the start-of-step LAI [m2 m-2] and
        plant-available water [mm], and the step's GPP [gC m-2 d-1]."""
        raise NotImplementedError


@pytree_dataclass
class LeafRates:
    """What a phenology gives a step.

    Attributes:
        labile_release, leaf_fall: the outputs ``labile_release_factor`` and
            ``leaf_fall_factor`` [d-1].
        release_loss, leaf_loss: loss coefficients of the labile and foliar pools [d-1].
        state: the end-of-step values of the phenology's state fields.
    """

    labile_release: jax.Array
    leaf_fall: jax.Array
    release_loss: jax.Array
    leaf_loss: jax.Array
    state: dict


@dataclass(frozen=True)
class Phenology(Option):
    """When labile carbon becomes leaves and when leaves fall."""

    slot: ClassVar[str] = "phenology"

    def forcing_terms(self, params, forcing, loss) -> Any:
        """Terms of the forcing only, elementwise in time (a pytree); ``loss(rate, dt)`` is
        the per-day loss coefficient of the run's update mode."""
        return None

    def rates(self, terms, params, state, beta, delta_t, loss) -> LeafRates:
        """The step's rates from its ``terms``, the start-of-step ``state`` and the step's
        water stress ``beta``."""
        raise NotImplementedError


# --- slots holding a tuple of modifiers ---------------------------------------------------


@dataclass(frozen=True)
class PhotosynthesisModifier(Option):
    """Changes the ACM's GPP: its canopy terms, or GPP by a factor."""

    slot: ClassVar[str] = "photosynthesis"

    def canopy(self, params, canopy):
        """The ACM's :class:`~differland.processes.photosynthesis.CanopyTerms`, modified."""
        return canopy

    def forcing_terms(self, params, forcing, network) -> Any:
        """Terms of the forcing only, elementwise in time (a pytree)."""
        return None

    def factor(self, terms, params, state, lai) -> tuple[jax.Array | float, dict]:
        """``(multiplier of GPP [1], outputs)`` of a step."""
        return 1.0, {}


@pytree_dataclass
class WaterExchange:
    """Water a soil-water option moves in a step [mm d-1].

    Attributes:
        inflow: enters the plant-available bucket from outside (besides precipitation).
        uptake: rises from plant-unavailable to plant-available water (site model).
        outputs: the option's outputs.
    """

    inflow: jax.Array | None = None
    uptake: jax.Array | None = None
    outputs: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class SoilWaterExchange(Option):
    """Moves water into the plant-available bucket besides precipitation."""

    slot: ClassVar[str] = "soil_water"

    def exchange(self, params, state, delta_t) -> WaterExchange:
        raise NotImplementedError


@dataclass(frozen=True)
class DecompositionModifier(Option):
    """Multiplies the decomposition rates (litter and SOM respiration, litter -> SOM)."""

    slot: ClassVar[str] = "decomposition"

    def factor(self, params, state, beta) -> jax.Array:
        """The multiplier [1] of a step."""
        raise NotImplementedError


@dataclass(frozen=True)
class LeafLossModifier(Option):
    """Adds to the loss coefficient of the foliar pool."""

    slot: ClassVar[str] = "leaf_loss"

    def loss(self, params, state, beta, delta_t) -> jax.Array:
        """The added loss coefficient [d-1] of a step."""
        raise NotImplementedError

