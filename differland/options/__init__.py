"""The process options and their registry.

Every option is registered under its slot and name (:func:`register`); the registry is
what the command line, ``config.json`` and the documentation are generated from. An option
is written as its name, with fields as ``name:field=value,field=value`` (e.g.
``climate:pulses=true``), the same on the command line, in a calibration config and in
Python (``ModelConfig(phenology="climate:pulses=true")``).

A new option is one class: subclass the base class of its slot
(:mod:`differland.options.base`), declare what it reads and adds, implement its terms and
``register`` it; its parameters, if new, go to :func:`differland.params.register_parameter`.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import get_args, get_origin

from differland._pytree import field_names
from differland.options.base import (
    DecompositionModifier,
    Evapotranspiration,
    LeafLossModifier,
    LeafRates,
    NetworkOption,
    Option,
    Phenology,
    PhotosynthesisModifier,
    SoilWaterExchange,
    WaterExchange,
    WaterStress,
)
from differland.options.modifiers import (
    CanopySaturation,
    DeepWaterUptake,
    DroughtLeafLoss,
    GroundwaterSupply,
    NeuralWeatherFactor,
    WaterLimitedDecomposition,
)
from differland.options.phenology import CalendarPhenology, ClimatePhenology
from differland.options.variants import GlobalModel, ModelVariant, SiteModel
from differland.options.water import (
    LinearBeta,
    NeuralBeta,
    NeuralET,
    NoWaterStress,
    UnderlyingWUE,
)
from differland.params import SPECS
from differland.state import State, StepOutputs


class OptionError(ValueError):
    """An unknown option name, or a field or value an option does not have."""


@dataclass(frozen=True)
class Slot:
    """A field of :class:`~differland.config.ModelConfig` that process options fill.

    Attributes:
        name: the field's name.
        base: the class its options derive from.
        multiple: it holds a tuple of options (modifiers), each turned on by its own flag.
        title: what it is, for help texts and documentation.
    """

    name: str
    base: type
    multiple: bool
    title: str


SLOTS: dict[str, Slot] = {slot.name: slot for slot in (
    Slot("model", ModelVariant, False, "model variant"),
    Slot("water_stress", WaterStress, False, "water stress of photosynthesis"),
    Slot("evapotranspiration", Evapotranspiration, False, "evapotranspiration"),
    Slot("phenology", Phenology, False, "phenology"),
    Slot("photosynthesis", PhotosynthesisModifier, True, "photosynthesis modifiers"),
    Slot("soil_water", SoilWaterExchange, True, "soil-water exchanges"),
    Slot("decomposition", DecompositionModifier, True, "decomposition modifiers"),
    Slot("leaf_loss", LeafLossModifier, True, "leaf-loss modifiers"),
)}

_REGISTRY: dict[str, dict[str, type[Option]]] = {name: {} for name in SLOTS}


def register(cls: type[Option]) -> type[Option]:
    """Add an option class to the registry (usable as a class decorator).

    Raises:
        OptionError: the class has no known slot or no name, its name is taken (modifier
            names are unique across slots: each is a flag), it reads a parameter the
            parameter registry lacks, or it declares a state field or output that
            :class:`~differland.state.State` or :class:`~differland.state.StepOutputs`
            does not have.
    """
    slot = SLOTS.get(getattr(cls, "slot", ""))
    if slot is None or not issubclass(cls, slot.base):
        raise OptionError(f"{cls.__name__}: derive it from one of the slot base classes "
                          f"({', '.join(s.base.__name__ for s in SLOTS.values())})")
    if not cls.name or not cls.name.isidentifier():
        raise OptionError(f"{cls.__name__}: give it a name (a Python identifier)")
    taken = [s for s in SLOTS.values() if cls.name in _REGISTRY[s.name]
             and (s.name == slot.name or (s.multiple and slot.multiple))]
    if taken:
        raise OptionError(f"{cls.__name__}: the {taken[0].title} already have an option "
                          f"{cls.name!r}")
    unknown = [name for name in cls.reads if name not in SPECS]
    if unknown:
        raise OptionError(f"{cls.__name__} reads parameter(s) the registry lacks: "
                          f"{', '.join(unknown)} (see differland.params.register_parameter)")
    try:
        option = cls()
    except TypeError as error:
        raise OptionError(f"{cls.__name__}: every field needs a default ({error})") from None
    bad = [n for n in option.state_fields if n not in field_names(State)] + [
        n for n in option.outputs if n not in field_names(StepOutputs)]
    if bad:
        raise OptionError(f"{cls.__name__} declares state or outputs the model does not "
                          f"have: {', '.join(bad)}")
    _REGISTRY[slot.name][cls.name] = cls
    return cls


def unregister(cls: type[Option]) -> None:
    """Remove an option class from the registry."""
    registered = _REGISTRY.get(cls.slot, {})
    if registered.get(cls.name) is cls:
        del registered[cls.name]


def options(slot: str) -> dict[str, type[Option]]:
    """The registered options of ``slot``: ``{name: class}``, in registration order."""
    return dict(_REGISTRY[slot])


def registered() -> list[type[Option]]:
    """Every registered option class, slot by slot."""
    return [cls for slot in SLOTS for cls in _REGISTRY[slot].values()]


def option_parameters() -> frozenset[str]:
    """The parameters that only some options read (a run reads the others whatever its
    options)."""
    return frozenset(name for cls in registered() for name in cls.reads)


def summary(cls: type[Option]) -> str:
    """The summary line of the option's docstring."""
    return (inspect.getdoc(cls) or cls.__name__).split("\n")[0].strip()


def field_types(cls: type[Option]) -> dict[str, type]:
    """``{field: bool | int | float | str}`` of an option class's fields."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if get_origin(kind) is typing.Literal:
            kind = type(get_args(kind)[0])
        out[f.name] = kind
    return out


def _value(text: str, kind: type, where: str):
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise OptionError(f"{where}: give true or false, not {text!r}")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise OptionError(f"{where}: not a{'n' if kind is int else ''} "
                          f"{kind.__name__}: {text!r}") from None


def parse(slot: str, text) -> Option:
    """The option that ``text`` (``name`` or ``name:field=value,...``) names in ``slot``;
    an option instance is returned as it is.

    Raises:
        OptionError: unknown slot, name or field, or a value of the wrong type.
    """
    if slot not in SLOTS:
        raise OptionError(f"unknown option slot {slot!r}; known: {', '.join(SLOTS)}")
    if isinstance(text, Option):
        return text
    if not isinstance(text, str):
        raise OptionError(f"{slot}: give an option name, not {text!r}")
    name, _, rest = text.partition(":")
    name = name.strip()
    known = _REGISTRY[slot]
    if name not in known:
        raise OptionError(f"unknown {slot} option {name!r}; known: {', '.join(known)}")
    cls, kinds, values = known[name], field_types(known[name]), {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or key not in kinds:
            fields = ", ".join(kinds) or "none"
            raise OptionError(f"{slot} option {name}: {item!r} is not field=value of one of "
                              f"its fields ({fields})")
        values[key] = _value(value.strip(), kinds[key], f"{slot} option {name}: {key}")
    try:
        return cls(**values)
    except ValueError as error:
        raise OptionError(f"{slot} option {name}: {error}") from None


def spec(option: Option) -> str:
    """The text that :func:`parse` reads back as ``option``: its name and every field that
    differs from the default."""
    default = type(option)()
    changed = [f"{f.name}={_text(getattr(option, f.name))}" for f in dataclasses.fields(option)
               if getattr(option, f.name) != getattr(default, f.name)]
    return option.name + (":" + ",".join(changed) if changed else "")


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def markdown_table() -> str:
    """The registered options as a Markdown table: slot, name, summary, fields with their
    defaults, and the parameters, networks, state and outputs each may add."""
    rows = ["| slot | option | what it does | fields (default) | reads | adds |",
            "|---|---|---|---|---|---|"]
    for cls in registered():
        option = cls()
        fields = ", ".join(f"`{f.name}` ({_text(getattr(option, f.name))})"
                           for f in dataclasses.fields(cls)) or "-"
        adds = [f"{kind} {', '.join(f'`{n}`' for n in names)}" for kind, names in (
            ("network", list(option.networks)), ("state", option.state_fields),
            ("outputs", option.outputs)) if names]
        flag = f"`--{cls.name.replace('_', '-')}`" if SLOTS[cls.slot].multiple else \
            f"`--{cls.slot.replace('_', '-')} {cls.name}`"
        rows.append(f"| {cls.slot} | {flag} | {summary(cls)} | {fields} | "
                    f"{', '.join(f'`{n}`' for n in cls.reads) or '-'} | "
                    f"{'; '.join(adds) or '-'} |")
    return "\n".join(rows)


for _cls in (SiteModel, GlobalModel, NoWaterStress, LinearBeta, NeuralBeta, UnderlyingWUE,
             NeuralET, CalendarPhenology, ClimatePhenology, CanopySaturation,
             NeuralWeatherFactor, GroundwaterSupply, DeepWaterUptake, WaterLimitedDecomposition,
             DroughtLeafLoss):
    register(_cls)

__all__ = [
    "SLOTS", "CalendarPhenology", "CanopySaturation", "ClimatePhenology", "DecompositionModifier",
    "DeepWaterUptake", "DroughtLeafLoss", "Evapotranspiration", "GlobalModel",
    "GroundwaterSupply", "LeafLossModifier", "LeafRates", "LinearBeta", "ModelVariant",
    "NetworkOption", "NeuralBeta", "NeuralET", "NeuralWeatherFactor", "NoWaterStress", "Option",
    "OptionError", "Phenology", "PhotosynthesisModifier", "SiteModel", "Slot",
    "SoilWaterExchange", "UnderlyingWUE", "WaterExchange", "WaterLimitedDecomposition",
    "WaterStress", "field_types", "markdown_table", "option_parameters", "options", "parse",
    "register", "registered", "spec", "summary", "unregister",
]
