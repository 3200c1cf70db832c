"""Static model configuration: the process options of a run, fixed at trace time.

A :class:`ModelConfig` holds one option per single slot and a tuple of modifiers per
modifier slot (:data:`differland.options.SLOTS`), and answers what a run with it reads and
returns. It is hashable, so it is a valid ``static_argnames`` value for ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from differland._pytree import field_names
from differland.options import (
    SLOTS,
    CalendarPhenology,
    ModelVariant,
    NoWaterStress,
    Option,
    OptionError,
    SiteModel,
    UnderlyingWUE,
    option_parameters,
    parse,
    spec,
)
from differland.state import CARBON_POOLS, State, StepOutputs

# Time steps per time-loop iteration on a GPU or other accelerator when
# ModelConfig.scan_unroll is None (measurements: benchmarks/model_throughput.py).
ACCELERATOR_SCAN_UNROLL = 8

_OPTIONAL_OUTPUTS = frozenset(f.name for f in dataclasses.fields(StepOutputs)
                              if f.default is None)
"""Outputs that only some configurations return (the others are returned by every run)."""

_ALWAYS_READ = ("leaf_lifespan",)
"""Parameters of the option groups that every run reads whatever its options."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything static about a run.

    Each slot takes an option instance or its registry text (``"beta"``,
    ``"climate:index_rates=fall"``; see :mod:`differland.options`); modifier slots take a
    tuple of them (kept sorted by name, so equal sets give equal configurations).

    Attributes:
        model: model variant, :class:`~differland.options.SiteModel` (default) or
            :class:`~differland.options.GlobalModel`.
        water_stress: water stress of photosynthesis (default: none).
        evapotranspiration: ET form (default: uWUE).
        phenology: phenology (default: the calendar pulses).
        photosynthesis: photosynthesis modifiers (e.g. the calibrated canopy saturation).
        soil_water: soil-water exchanges (groundwater supply, rise of deep water).
        decomposition: decomposition modifiers (slower in dry soil).
        leaf_loss: leaf-loss modifiers (drought leaf loss).
        reference_mode: reproduce the published DifferLand code exactly, including its hard
            clamps of pools to the prior bounds of the initial pools and its mass-balance bugs.
            The default (False) keeps every pool non-negative by limiting outflows to what the
            pool holds, which conserves carbon and water exactly and keeps gradients alive.
        checkpoint_every: if set, the time loop is split into segments of this many steps
            and each segment is rematerialised (``jax.checkpoint``) in reverse mode, so
            memory grows with T / checkpoint_every instead of T.
        outputs: names of :class:`~differland.state.StepOutputs` fields to keep for every step
            (``None`` keeps all). Dropping outputs saves memory and time in long runs.
        keep_states: keep the end-of-step state of every step (else only the final state).
        scan_unroll: time steps per iteration of the compiled time loop (``lax.scan``'s
            ``unroll``); ``None`` (default) takes 1 on CPU and
            :data:`ACCELERATOR_SCAN_UNROLL` on a GPU or other accelerator
            (:meth:`unroll_for_backend`). Results are the same; larger values trade compile
            time for less loop overhead per step.
    """

    model: ModelVariant = field(default_factory=SiteModel)
    water_stress: Option = field(default_factory=NoWaterStress)
    evapotranspiration: Option = field(default_factory=UnderlyingWUE)
    phenology: Option = field(default_factory=CalendarPhenology)
    photosynthesis: tuple[Option, ...] = ()
    soil_water: tuple[Option, ...] = ()
    decomposition: tuple[Option, ...] = ()
    leaf_loss: tuple[Option, ...] = ()
    reference_mode: bool = False
    checkpoint_every: int | None = None
    outputs: tuple[str, ...] | None = None
    keep_states: bool = True
    scan_unroll: int | None = None

    def __post_init__(self):
        for slot in SLOTS.values():
            value = getattr(self, slot.name)
            if slot.multiple:
                if isinstance(value, str | Option):
                    value = (value,)
                chosen = tuple(sorted((parse(slot.name, item) for item in value),
                                      key=lambda option: option.name))
                names = [option.name for option in chosen]
                if len(set(names)) < len(names):
                    raise OptionError(f"{slot.name}: an option is given twice ({names})")
            else:
                chosen = parse(slot.name, value)
            for option in chosen if slot.multiple else (chosen,):
                if not isinstance(option, slot.base):
                    raise OptionError(f"{slot.name}: {option!r} is not a {slot.title} option")
            object.__setattr__(self, slot.name, chosen)
        for option in self.options():
            option.check(self)
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive number of steps")
        if self.scan_unroll is not None and (
                isinstance(self.scan_unroll, bool) or not isinstance(self.scan_unroll, int)
                or self.scan_unroll < 1):
            raise ValueError(f"scan_unroll must be None or a positive integer, "
                             f"got {self.scan_unroll!r}")
        if self.outputs is not None:
            object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def variant(self) -> str:
        """The model variant's name (``"site"`` or ``"global"``)."""
        return self.model.name

    def options(self) -> tuple[Option, ...]:
        """Every option of the configuration, slot by slot."""
        out = []
        for slot in SLOTS.values():
            value = getattr(self, slot.name)
            out.extend(value if slot.multiple else (value,))
        return tuple(out)

    def option_texts(self) -> dict[str, str | list[str]]:
        """``{slot: text}`` (modifier slots: a list of texts) that rebuild this configuration's
        options through :func:`differland.options.parse` (``config.json``, NetCDF attributes)."""
        return {slot.name: [spec(o) for o in getattr(self, slot.name)] if slot.multiple
                else spec(getattr(self, slot.name)) for slot in SLOTS.values()}

    def unroll_for_backend(self, backend: str) -> int:
        """Time steps per time-loop iteration on ``backend`` (``jax.default_backend()``)."""
        if self.scan_unroll is not None:
            return self.scan_unroll
        return 1 if backend == "cpu" else ACCELERATOR_SCAN_UNROLL

    def parameter_names(self) -> tuple[str, ...]:
        """Exactly the registry parameters a run with this configuration reads, in registry
        order: the variant's parameters less those of options it does not use, or uses
        with no effect. A parameter outside this set changes no output."""
        from differland.params import names_for

        used = {*_ALWAYS_READ, *(name for option in self.options()
                                 for name in option.parameters_in(self))}
        owned = option_parameters() - set(_ALWAYS_READ)
        return tuple(name for name in names_for(self.variant) if name not in owned
                     or name in used)

    def state_names(self) -> tuple[str, ...]:
        """The :class:`~differland.state.State` fields a run with this configuration carries
        (the others are ``None``), in field order."""
        carried = {*CARBON_POOLS, "soil_water",
                   *(name for option in self.options() for name in option.state_fields)}
        return tuple(name for name in field_names(State) if name in carried)

    def output_names(self) -> tuple[str, ...]:
        """The :class:`~differland.state.StepOutputs` fields a run with this configuration
        returns (the others are ``None``), in field order; units in
        :data:`differland.state.UNITS`."""
        added = {name for option in self.options() for name in option.outputs}
        names = [name for name in field_names(StepOutputs)
                 if name not in _OPTIONAL_OUTPUTS or name in added]
        return tuple(name for name in names if self.outputs is None or name in self.outputs)

    @property
    def network_sizes(self) -> dict[str, tuple[int, ...]]:
        """Layer sizes of each neural network, keyed as in the ``network`` mapping."""
        return {term: sizes for option in self.options()
                for term, sizes in option.networks.items()}

    def with_network_sizes(self, sizes: dict[str, tuple[int, ...]]) -> ModelConfig:
        """The configuration whose networks have the hidden layers of ``sizes`` (e.g. those of
        a network file); the input and output sizes must match."""
        changes = {}
        for slot in SLOTS.values():
            value = getattr(self, slot.name)
            group = value if slot.multiple else (value,)
            resized = tuple(_resized(option, sizes) for option in group)
            if resized != group:
                changes[slot.name] = resized if slot.multiple else resized[0]
        return dataclasses.replace(self, **changes) if changes else self

    def prepared(self, network):
        """``(config, network)`` computing the same run with the work each option does on
        its weights done once, before the time loop."""
        changes = {}
        for slot in SLOTS.values():
            value = getattr(self, slot.name)
            group = []
            for option in value if slot.multiple else (value,):
                option, network = option.prepared(network)
                group.append(option)
            group = tuple(group)
            if group != (value if slot.multiple else (value,)):
                changes[slot.name] = group if slot.multiple else group[0]
        return (dataclasses.replace(self, **changes) if changes else self), network


def _resized(option: Option, sizes: dict[str, tuple[int, ...]]) -> Option:
    for term in option.networks:
        if term in sizes:
            option = option.with_layers(term, tuple(sizes[term]))
    return option
