"""The parameter registry: every calibratable parameter and initial pool, declared once.

Each :class:`ParameterSpec` holds a parameter's name, meaning, units, prior bounds, transform
scale, default value, the model variants that use it, and where the published DifferLand code
keeps it (vector and 0-based index). Everything else is derived from the registry: named
parameter pytrees (:class:`ParameterSet`), default values, the bounded <-> unconstrained maps,
reference-order vectors for compatibility, and the Markdown table in the docs.

Names follow the meaning of each quantity (they are also the variable names of the golden
reference files and of ``params.json``). The DifferLand name is kept as ``reference_name``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from differland.constants import ACM_C2

Variant = Literal["site", "global"]
VARIANTS: tuple[Variant, ...] = ("site", "global")
Kind = Literal["parameter", "initial_pool"]
Scale = Literal["log", "linear", "log_excess"]
TransformMethod = Literal["logistic", "reference"]


class ParameterError(ValueError):
    """An unknown parameter name, a value outside its bounds, or a malformed parameter file."""


@dataclass(frozen=True)
class ParameterSpec:
    """One calibratable quantity.

    Attributes:
        name: differland name (also the NetCDF / JSON key).
        reference_name: the published DifferLand name.
        units: units of the physical value.
        lower, upper: prior bounds of the physical value (both > 0 for log-scaled entries).
        description: meaning and the formula it enters.
        variants: the model variants whose step uses the quantity.
        reference_slots: ``{variant: (vector, index)}``, the 0-based position in the published
            code's parameter vectors (``dalec_parameters``, ``pheno_parameters``,
            ``initial_pools``). Inert entries (unused by that variant's step) appear here but
            not in ``variants``.
        kind: ``"parameter"`` or ``"initial_pool"`` (initial state, and in the reference the
            state clamp range).
        scale: ``"log"``, ``"linear"`` or ``"log_excess"`` (log-scaled in value - 1, e.g. for
            a lifespan L whose pulse integral 0.5 ln(L / (L - 1)) spans orders of magnitude
            as L -> 1; needs lower > 1): the scale of the smooth logistic map. The reference
            arctan map is always log-scaled.
        default: default physical value; ``None`` means the centre of the prior box
            (geometric mean when upper/lower > 10, arithmetic mean otherwise).
    """

    name: str
    reference_name: str
    units: str
    lower: float
    upper: float
    description: str
    variants: frozenset[str]
    reference_slots: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    kind: Kind = "parameter"
    scale: Scale | None = None
    default: float | None = None

    @property
    def transform_scale(self) -> Scale:
        """Scale of the logistic map (explicit, or log for ranges wider than a decade)."""
        if self.scale is not None:
            return self.scale
        return "log" if self.upper / self.lower > 10.0 else "linear"

    @property
    def default_value(self) -> float:
        """Default physical value (see ``default``)."""
        if self.default is not None:
            return self.default
        if self.upper / self.lower > 10.0:
            return math.sqrt(self.lower * self.upper)
        return 0.5 * (self.lower + self.upper)


_BOTH = frozenset({"site", "global"})
_SITE = frozenset({"site"})
_GLOBAL = frozenset({"global"})
_NONE: frozenset[str] = frozenset()
_DP, _PH, _POOL = "dalec_parameters", "pheno_parameters", "initial_pools"


def _slots(site: int | None = None, global_: int | None = None,
           global_vector: str = _DP, site_vector: str = _DP) -> dict[str, tuple[str, int]]:
    out = {}
    if site is not None:
        out["site"] = (site_vector, site)
    if global_ is not None:
        out["global"] = (global_vector, global_)
    return out


REGISTRY: tuple[ParameterSpec, ...] = (
    ParameterSpec("litter_to_som_rate", "decomposition_rate", "d-1", 1e-5, 1e-2,
                  "Litter -> SOM decomposition rate at reference climate (x rh modifier).",
                  _BOTH, _slots(0, 0)),
    ParameterSpec("autotrophic_respiration_fraction", "f_gpp", "1", 0.2, 0.8,
                  "Fraction of GPP respired autotrophically: Ra = f * GPP.", _BOTH, _slots(1, 1)),
    ParameterSpec("foliar_allocation_fraction", "f_fol", "1", 0.01, 0.5,
                  "Fraction of NPP allocated to foliage.", _BOTH, _slots(2, 2)),
    ParameterSpec("root_allocation_fraction", "f_root", "1", 0.01, 1.0,
                  "Fraction of NPP left after foliage and labile allocated to roots "
                  "(the rest goes to wood).", _BOTH, _slots(3, 3)),
    ParameterSpec("leaf_lifespan", "leaf_lifespan", "yr", 1.001, 8.0,
                  "Leaf lifespan L; leaf-fall pulse integral 0.5 ln(L / (L - 1)) (climate "
                  "phenology: background leaf fall 1 / L).",
                  _BOTH, _slots(4, 4)),
    ParameterSpec("wood_turnover_rate", "tor_wood", "d-1", 2.5e-5, 1e-3,
                  "Wood turnover rate (wood -> SOM, bypassing litter).", _BOTH, _slots(5, 5)),
    ParameterSpec("root_turnover_rate", "tor_root", "d-1", 1e-4, 1e-2,
                  "Root turnover rate (roots -> litter).", _BOTH, _slots(6, 6)),
    ParameterSpec("litter_respiration_rate", "tor_litter", "d-1", 1e-4, 1e-2,
                  "Litter heterotrophic respiration rate at reference climate (x rh modifier).",
                  _BOTH, _slots(7, 7)),
    ParameterSpec("som_respiration_rate", "tor_som", "d-1", 1e-7, 1e-3,
                  "SOM heterotrophic respiration rate at reference climate (x rh modifier).",
                  _BOTH, _slots(8, 8)),
    ParameterSpec("temperature_sensitivity", "Q10", "degC-1", 0.018, 0.08,
                  "Exponential temperature coefficient of decomposition, "
                  "exp(k (T - T_ref)); the conventional Q10 is exp(10 k).",
                  _BOTH, _slots(9, 9)),
    ParameterSpec("canopy_efficiency", "canopy_efficiency", "gC m-2 d-1", 5.0, 50.0,
                  "ACM canopy efficiency ce (N-use efficiency; Williams et al. 1997 a1).",
                  _BOTH, _slots(10, 10)),
    ParameterSpec("canopy_lai_half_saturation", "(none)", "m4 m-4", 0.05, 10.0,
                  "LAI half-saturation c2 of the ACM canopy quantum yield c1 LAI^2 / (c2 + "
                  "LAI^2) (option canopy_saturation; else the ACM's 2.1001).", _BOTH, {},
                  default=ACM_C2),
    ParameterSpec("labile_release_day", "Bday", "d", 365.25, 1461.0,
                  "Phase of the labile-release (leaf-onset) pulse on the model clock "
                  "(365.25-d period).", _BOTH, _slots(11, 0, global_vector=_PH)),
    ParameterSpec("labile_allocation_fraction", "flab", "1", 0.01, 0.5,
                  "Fraction of NPP left after foliage allocated to the labile pool.",
                  _BOTH, _slots(12, 11)),
    ParameterSpec("labile_release_period", "clab_release_period", "d", 30.4375, 100.0,
                  "Width of the labile-release pulse.", _BOTH, _slots(13, 12)),
    ParameterSpec("leaf_fall_day", "Fday", "d", 365.25, 1461.0,
                  "Phase of the leaf-fall pulse on the model clock (365.25-d period).",
                  _BOTH, _slots(14, 1, global_vector=_PH)),
    ParameterSpec("leaf_fall_period", "leaf_fall_period", "d", 30.4375, 150.0,
                  "Width of the leaf-fall pulse.", _BOTH, _slots(15, 13)),
    ParameterSpec("drought_leaf_loss_rate", "(none)", "d-1", 1e-4, 0.1,
                  "Extra leaf loss under water stress (option drought_leaf_loss): the foliar "
                  "loss rate gains rate x (1 - beta).", _BOTH, {}),
    ParameterSpec("groundwater_supply_rate", "(none)", "mm d-1", 1e-3, 5.0,
                  "Water the soil-water bucket receives every day besides precipitation "
                  "(option groundwater_supply): capillary rise or lateral inflow from a water "
                  "table, or deep roots' access to water below the bucket.", _BOTH, {}),
    ParameterSpec("deep_water_uptake_rate", "(none)", "d-1", 1e-5, 0.1,
                  "Rate at which plant-unavailable water rises back into PAW while PAW is "
                  "below its drainage focal point (option deep_water_uptake): PUW x rate x "
                  "(1 - PAW / PAW_Qmax).", _SITE, {}),
    ParameterSpec("growing_season_temperature", "(none)", "K", 263.15, 288.15,
                  "Daily minimum temperature (in kelvin: -10 to 15 degC) at which the "
                  "temperature factor of the growing-season index is one half (option climate "
                  "phenology).", _BOTH, {}),
    ParameterSpec("growing_season_daylength", "(none)", "h", 6.0, 14.0,
                  "Day length at which the day-length factor of the growing-season index is "
                  "one half (option climate phenology).", _BOTH, {}),
    ParameterSpec("growing_season_vpd", "(none)", "hPa", 5.0, 80.0,
                  "VPD at which the VPD factor of the growing-season index is one half "
                  "(option climate phenology).", _BOTH, {}),
    ParameterSpec("growing_season_water", "(none)", "mm", 1.0, 1e4,
                  "Plant-available water at which the water factor of the growing-season "
                  "index (option climate phenology) or of the labile release (option "
                  "calendar:water_limited_release=true) is one half.", _BOTH, {}),
    ParameterSpec("leaf_growth_rate", "(none)", "d-1", 1e-3, 0.3,
                  "Labile -> foliage transfer rate at a growing-season index of one (option "
                  "climate phenology).", _BOTH, {}),
    ParameterSpec("leaf_senescence_rate", "(none)", "d-1", 1e-3, 0.3,
                  "Extra leaf-fall rate at a growing-season index of zero (option climate "
                  "phenology): x (1 - GSI), on top of the calendar's leaf fall.", _BOTH, {}),
    ParameterSpec("leaf_carbon_mass_per_area", "LCMA", "gC m-2", 5.0, 200.0,
                  "Leaf carbon mass per leaf area: LAI = C_foliar / LCMA.",
                  _BOTH, _slots(16, 14)),
    ParameterSpec("underlying_water_use_efficiency", "uWUE", "gC kgH2O-1 hPa0.5", 0.5, 30.0,
                  "Underlying WUE of the transpiration term: ET = GPP sqrt(VPD) / uWUE + r SSRD "
                  "(Boese et al. 2017).", _BOTH, _slots(17, 24)),
    ParameterSpec("intrinsic_water_use_efficiency_unused", "IWUE", "gC kgH2O-1 hPa", 10.0, 50.0,
                  "Predicted but never used by the published global model (inert).",
                  _NONE, _slots(None, 15)),
    ParameterSpec("paw_runoff_focal_point", "PAW_Qmax", "mm", 1.0, 1e5,
                  "Drainage focal point Q of plant-available water: D = W^2/Q below Q/2, "
                  "W - Q/4 above.", _SITE, _slots(18, None)),
    ParameterSpec("runoff_focal_point", "runoff_focal_point", "mm", 1.0, 1e5,
                  "Drainage focal point Q of the single soil-water bucket (global model).",
                  _GLOBAL, _slots(None, 16)),
    ParameterSpec("field_capacity", "field_capacity", "mm", 1.0, 1e4,
                  "Field capacity FC of the linear water-stress factor.", _BOTH, _slots(19, 17)),
    ParameterSpec("wilting_point_fraction", "wilting_point_frac", "1", 0.01, 0.5,
                  "Wilting point as a fraction of field capacity.", _BOTH, _slots(20, 26)),
    ParameterSpec("foliar_combustion_fraction", "foliar_cf", "1", 0.01, 1.0,
                  "Combustion completeness of burned foliage.", _GLOBAL, _slots(21, 18)),
    ParameterSpec("ligneous_combustion_fraction", "ligneous_cf", "1", 0.01, 1.0,
                  "Combustion completeness of burned labile, root and wood carbon.",
                  _GLOBAL, _slots(22, 19)),
    ParameterSpec("som_combustion_fraction", "dom_cf", "1", 0.01, 1.0,
                  "Combustion completeness of burned soil organic matter.", _GLOBAL,
                  _slots(23, 20)),
    ParameterSpec("fire_resilience", "resilience", "1", 0.01, 1.0,
                  "Fraction of burned, non-combusted carbon that survives in place.",
                  _GLOBAL, _slots(24, 21)),
    ParameterSpec("labile_lifespan", "lab_lifespan", "yr", 1.001, 8.0,
                  "Labile lifespan; labile-release pulse integral 0.5 ln(L / (L - 1)).",
                  _BOTH, _slots(25, 22)),
    ParameterSpec("rh_moisture_sensitivity", "moisture_factor", "1", 0.01, 1.0,
                  "Precipitation sensitivity of decomposition: x (1 + m (P / P_ref - 1)).",
                  _BOTH, _slots(26, 23)),
    ParameterSpec("decomposition_water_sensitivity", "(none)", "1", 0.01, 1.0,
                  "Dry-soil slowdown of decomposition (option water_limited_decomposition): "
                  "rates x (1 - s (1 - beta)).", _BOTH, {}),
    ParameterSpec("paw_to_puw_fraction", "h2o_xfer", "1", 0.01, 1.0,
                  "Fraction of plant-available-water drainage routed to plant-unavailable water.",
                  _SITE, _slots(27, None)),
    ParameterSpec("puw_runoff_focal_point", "PUW_Qmax", "mm", 1.0, 1e5,
                  "Drainage focal point of plant-unavailable water.", _SITE, _slots(28, None)),
    ParameterSpec("radiation_et_coefficient", "boese_r", "mm MJ-1 m2", 0.01, 0.3,
                  "Radiation term of ET: + r SSRD (Boese et al. 2017).", _BOTH, _slots(29, 25)),
    ParameterSpec("sif_alpha", "sif_alpha", "gC m-2 d-1 per SIF unit", 3.0, 35.0,
                  "Slope of the linear GPP-SIF relation: SIF = (GPP - beta_sif) / alpha.",
                  _GLOBAL, _slots(None, 27)),
    ParameterSpec("sif_beta_plus_three", "sif_beta_plus_three", "gC m-2 d-1", 1.0, 9.0,
                  "Offset of the GPP-SIF relation plus 3: beta_sif = value - 3.",
                  _GLOBAL, _slots(None, 28)),
    ParameterSpec("vod_foliar_coefficient", "p_fol", "(gC m-2)-1", 1e-4, 1e-2,
                  "VOD per unit foliar carbon: VOD = p_fol C_foliar + p_wood C_wood.",
                  _GLOBAL, _slots(None, 29)),
    ParameterSpec("vod_wood_coefficient", "p_wood", "(gC m-2)-1", 1e-6, 8e-5,
                  "VOD per unit wood carbon.", _GLOBAL, _slots(None, 30)),
    # --- initial pools ------------------------------------------------------------------------
    ParameterSpec("initial_labile_carbon", "Clab", "gC m-2", 1.0, 2000.0,
                  "Initial labile carbon.", _BOTH, _slots(0, 0, _POOL, _POOL), "initial_pool"),
    ParameterSpec("initial_foliar_carbon", "Cfol", "gC m-2", 1.0, 2000.0,
                  "Initial foliar carbon.", _BOTH, _slots(1, 1, _POOL, _POOL), "initial_pool"),
    ParameterSpec("initial_root_carbon", "Croot", "gC m-2", 1.0, 2000.0,
                  "Initial fine-root carbon.", _BOTH, _slots(2, 2, _POOL, _POOL), "initial_pool"),
    ParameterSpec("initial_wood_carbon", "Cwood", "gC m-2", 1.0, 1e5,
                  "Initial wood carbon.", _BOTH, _slots(3, 3, _POOL, _POOL), "initial_pool"),
    ParameterSpec("initial_litter_carbon", "Clitter", "gC m-2", 1.0, 2000.0,
                  "Initial litter carbon.", _BOTH, _slots(4, 4, _POOL, _POOL), "initial_pool"),
    ParameterSpec("initial_som_carbon", "Csom", "gC m-2", 1.0, 2e5,
                  "Initial soil organic matter carbon.", _BOTH, _slots(5, 5, _POOL, _POOL),
                  "initial_pool"),
    ParameterSpec("initial_plant_available_water", "initial_PAW", "mm", 1.0, 1e4,
                  "Initial plant-available water (site model).", _SITE,
                  _slots(6, None, site_vector=_POOL), "initial_pool"),
    ParameterSpec("initial_plant_unavailable_water", "initial_PUW", "mm", 1.0, 1e4,
                  "Initial plant-unavailable water (site model).", _SITE,
                  _slots(7, None, site_vector=_POOL), "initial_pool"),
    ParameterSpec("initial_water", "initial_water", "mm", 1.0, 1e4,
                  "Initial soil water of the single bucket (global model).", _GLOBAL,
                  _slots(None, 6, global_vector=_POOL), "initial_pool"),
)

SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in REGISTRY}
"""Every registered parameter by name, in registry order: the built-in :data:`REGISTRY`,
then those of :func:`register_parameter`."""
assert len(SPECS) == len(REGISTRY), "parameter names must be unique"


def register_parameter(spec: ParameterSpec) -> ParameterSpec:
    """Add a parameter (e.g. one that a new process option reads) after the built-in ones.

    Registering the same specification again is allowed; another one under a taken name is
    not.

    Raises:
        ParameterError: the name is taken, or the bounds or variants are not valid.
    """
    if spec.name in SPECS:
        if SPECS[spec.name] == spec:
            return spec
        raise ParameterError(f"parameter {spec.name!r} is already registered")
    if not spec.name.isidentifier():
        raise ParameterError(f"parameter name {spec.name!r} is not a Python identifier")
    if not (math.isfinite(spec.lower) and math.isfinite(spec.upper) and spec.lower < spec.upper):
        raise ParameterError(f"parameter {spec.name}: bounds [{spec.lower}, {spec.upper}] are "
                             "not finite and increasing")
    if not spec.variants or not set(spec.variants) <= set(VARIANTS):
        raise ParameterError(f"parameter {spec.name}: variants must name some of {VARIANTS}")
    if not spec.lower <= spec.default_value <= spec.upper:
        raise ParameterError(f"parameter {spec.name}: default outside its bounds")
    SPECS[spec.name] = spec
    return spec


def unregister_parameter(name: str) -> None:
    """Remove a parameter added by :func:`register_parameter` (the built-in ones stay)."""
    if name in SPECS and SPECS[name] not in REGISTRY:
        del SPECS[name]


def names_for(variant: Variant) -> tuple[str, ...]:
    """Names of the parameters and initial pools used by a model variant, registry order."""
    if variant not in VARIANTS:
        raise ParameterError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")
    return tuple(spec.name for spec in SPECS.values() if variant in spec.variants)


# --- named parameter pytree ----------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class ParameterSet:
    """Named physical parameter values: a pytree with one leaf per name.

    Access values as attributes (``p.leaf_lifespan``) or items (``p["leaf_lifespan"]``).
    Leaves may be scalars or arrays with leading batch axes (pixels, ensemble members).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, jax.Array | float]):
        object.__setattr__(self, "_values", dict(values))

    # pytree protocol: names are static aux data, values are the children
    def tree_flatten(self):
        names = tuple(self._values)
        return tuple(self._values[n] for n in names), names

    @classmethod
    def tree_unflatten(cls, names, children):
        return cls(dict(zip(names, children, strict=True)))

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"ParameterSet has no parameter {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("ParameterSet is immutable; use .replace(...)")

    def __getitem__(self, name: str):
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={np.asarray(v)!r}" for k, v in self._values.items())
        return f"ParameterSet({inner})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._values)

    def items(self):
        return self._values.items()

    def to_dict(self) -> dict[str, jax.Array | float]:
        return dict(self._values)

    def replace(self, **changes) -> ParameterSet:
        """A copy with some values replaced (names must already exist)."""
        unknown = [k for k in changes if k not in self._values]
        if unknown:
            raise ParameterError(f"unknown parameter name(s): {', '.join(unknown)}")
        return ParameterSet({**self._values, **changes})


def default_parameters(variant: Variant, dtype=None) -> ParameterSet:
    """Default physical values of every parameter and initial pool of ``variant``."""
    dtype = dtype or jnp.result_type(float)
    return ParameterSet({n: jnp.asarray(SPECS[n].default_value, dtype) for n in names_for(variant)})


def parameters_from_mapping(values: Mapping[str, float], variant: Variant, *,
                            source: str = "parameters", check_bounds: bool = True,
                            ignore_unknown: Iterable[str] = (), dtype=None) -> ParameterSet:
    """Named physical values -> :class:`ParameterSet`; missing names take their default.

    Args:
        values: ``{name: physical value}``.
        variant: model variant whose parameter set is built.
        source: where the values came from (file name), used in error messages.
        check_bounds: raise if a value lies outside its prior bounds.
        ignore_unknown: names that may appear in ``values`` without being used by ``variant``
            (e.g. inert parameters of the other variant).
        dtype: float dtype of the leaves (default: JAX's default float).

    Raises:
        ParameterError: unknown name, non-finite or out-of-bounds value.
    """
    wanted = names_for(variant)
    allowed = set(wanted) | set(ignore_unknown)
    unknown = sorted(k for k in values if k not in allowed)
    if unknown:
        raise ParameterError(
            f"{source}: unknown parameter name(s) for the {variant} model: {', '.join(unknown)}")
    out = {}
    for name in wanted:
        spec = SPECS[name]
        value = values.get(name, spec.default_value)
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{source}: parameter {name} is not finite ({value!r})")
        if check_bounds and (np.any(array < spec.lower) or np.any(array > spec.upper)):
            raise ParameterError(
                f"{source}: parameter {name} = {value!r} {spec.units} is outside its bounds "
                f"[{spec.lower:g}, {spec.upper:g}]")
        out[name] = jnp.asarray(array, dtype or jnp.result_type(float))
    return ParameterSet(out)


# --- bounded <-> unconstrained maps -------------------------------------------------------------


def _bounds(name: str, like) -> tuple[jax.Array, jax.Array]:
    spec = SPECS[name]
    dtype = jnp.result_type(like)
    return jnp.asarray(spec.lower, dtype), jnp.asarray(spec.upper, dtype)


def constrain(unconstrained: ParameterSet, method: TransformMethod = "logistic",
              scales: Mapping[str, Scale] | None = None) -> ParameterSet:
    """Map unconstrained reals to physical values inside the prior bounds.

    ``"logistic"``: u = sigmoid(x), then scaled by the spec's ``transform_scale`` or by
    ``scales[name]`` where given (see :func:`check_scales`) (smooth, with gradients that never
    vanish abruptly). ``"reference"``: the DifferLand map u = arctan(x)/pi + 1/2,
    p = lower (upper/lower)^u, always log-scaled.
    """
    scales = scales or {}
    out = {}
    for name, x in unconstrained.items():
        lower, upper = _bounds(name, x)
        if method == "reference":
            u = jnp.arctan(x) / jnp.pi + 0.5
            out[name] = lower * (upper / lower) ** u
        elif method == "logistic":
            scale = scales.get(name, SPECS[name].transform_scale)
            value = _from_unit(scale, jax.nn.sigmoid(x), lower, upper)
            out[name] = jnp.clip(value, lower, upper)  # rounding at u -> 0 or 1
        else:
            raise ParameterError(f"unknown transform method {method!r}")
    return ParameterSet(out)


SCALES: tuple[Scale, ...] = get_args(Scale)


def check_scales(scales: Mapping[str, str], source: str = "scales") -> None:
    """Raise :class:`ParameterError` unless every entry names a known parameter and a scale
    its bounds allow (``"log"``: lower > 0; ``"log_excess"``: lower > 1)."""
    for name, scale in scales.items():
        if name not in SPECS:
            raise ParameterError(f"{source}: unknown parameter name {name!r}")
        if scale not in SCALES:
            raise ParameterError(f"{source}: {name} has unknown scale {scale!r} "
                                 f"(known: {', '.join(SCALES)})")
        floor = {"log": 0.0, "log_excess": 1.0}.get(scale)
        if floor is not None and not SPECS[name].lower > floor:
            raise ParameterError(f"{source}: {name} cannot be {scale}-scaled (lower bound "
                                 f"{SPECS[name].lower:g} is not > {floor:g})")


def _from_unit(scale: Scale, u, lower, upper):
    """Physical value at position ``u`` in [0, 1] of the prior box on ``scale``."""
    if scale == "log":
        return lower * jnp.exp(u * jnp.log(upper / lower))
    if scale == "log_excess":
        return 1.0 + (lower - 1.0) * jnp.exp(u * jnp.log((upper - 1.0) / (lower - 1.0)))
    return lower + (upper - lower) * u


def _to_unit(scale: Scale, value, lower, upper):
    """Inverse of :func:`_from_unit`."""
    if scale == "log":
        return jnp.log(value / lower) / jnp.log(upper / lower)
    if scale == "log_excess":
        return jnp.log((value - 1.0) / (lower - 1.0)) / jnp.log((upper - 1.0) / (lower - 1.0))
    return (value - lower) / (upper - lower)


def unconstrain(params: ParameterSet, method: TransformMethod = "logistic",
                scales: Mapping[str, Scale] | None = None) -> ParameterSet:
    """Inverse of :func:`constrain` (values must lie strictly inside their bounds)."""
    scales = scales or {}
    out = {}
    for name, p in params.items():
        lower, upper = _bounds(name, p)
        scale = "log" if method == "reference" else scales.get(name, SPECS[name].transform_scale)
        u = _to_unit(scale, p, lower, upper)
        if method == "reference":
            out[name] = jnp.tan((u - 0.5) * jnp.pi)
        elif method == "logistic":
            out[name] = jnp.log(u) - jnp.log1p(-u)
        else:
            raise ParameterError(f"unknown transform method {method!r}")
    return ParameterSet(out)


# --- compatibility with the reference's positional vectors --------------------------------------


def reference_vector_names(variant: Variant) -> dict[str, tuple[str, ...]]:
    """``{vector: names in reference order}`` for ``variant`` (inert entries included)."""
    slots: dict[str, dict[int, str]] = {}
    for spec in SPECS.values():
        if variant in spec.reference_slots:
            vector, index = spec.reference_slots[variant]
            slots.setdefault(vector, {})[index] = spec.name
    return {vector: tuple(by_index[i] for i in sorted(by_index))
            for vector, by_index in slots.items()}


def parameters_from_reference_vectors(vectors: Mapping[str, Iterable[float]], variant: Variant,
                                      dtype=None) -> ParameterSet:
    """Build the named set of ``variant`` from the reference's positional vectors."""
    layout = reference_vector_names(variant)
    values: dict[str, float] = {}
    for vector, names in layout.items():
        if vector not in vectors:
            raise ParameterError(f"missing reference vector {vector!r}")
        numbers = list(vectors[vector])
        if len(numbers) != len(names):
            raise ParameterError(
                f"reference vector {vector!r} has {len(numbers)} values, expected {len(names)}")
        values.update(zip(names, numbers, strict=True))
    inert = [n for n in values if n not in names_for(variant)]
    return parameters_from_mapping(values, variant, ignore_unknown=inert, check_bounds=False,
                                   source="reference vectors", dtype=dtype)


# --- documentation -------------------------------------------------------------------------------


def markdown_table(variant: Variant | None = None) -> str:
    """The registry as a Markdown table (all entries, or those used by ``variant``)."""
    header = ("| name | DifferLand name | units | lower | upper | default | scale | used by | "
              "meaning |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for spec in SPECS.values():
        if variant is not None and variant not in spec.variants:
            continue
        used = ", ".join(v for v in VARIANTS if v in spec.variants) or "(inert)"
        rows.append(
            f"| `{spec.name}` | {spec.reference_name} | {spec.units} | {spec.lower:g} | "
            f"{spec.upper:g} | {spec.default_value:.4g} | {spec.transform_scale} | {used} | "
            f"{spec.description} |")
    return "\n".join([header, *rows])
