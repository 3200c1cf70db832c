"""The flux-site calibration problem: one free parameter vector per site, full-batch.

Builds masked observation streams for the calibration (train + validation) and test periods,
the loss (per-stream misfit + EDC penalties + water-violation penalty) as a function of the
unconstrained parameters, and random starts. The forward run always covers the full record;
the loss only sees the calibration period.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from differland.calibrate.gradient import (
    GradientSettings,
    SettingsError,
    check_integer,
    check_number,
)
from differland.config import ModelConfig
from differland.forcing import Forcing
from differland.likelihood import (
    STEADY_STATE_FORMS,
    Stream,
    gaussian_misfit,
    nnse_loss,
    parameter_edcs,
    steady_state_edcs,
    water_drift_edc,
    water_steady_state_edcs,
)
from differland.model import initial_state, simulate
from differland.observations import OPERATORS, predict
from differland.options import SLOTS
from differland.params import (
    ParameterError,
    ParameterSet,
    check_scales,
    constrain,
    names_for,
    parameters_from_mapping,
)
from differland.processes.neural import init_network
from differland.state import CARBON_POOLS

OBJECTIVES = ("gaussian", "nnse")
UNCERTAINTY_POLICIES = ("std", "driver")
TRAINING_WINDOWS = ("calibration", "record")

MIN_OBSERVATIONS = 10
"""Fewest observations of a stream in the calibration period for it to enter the loss."""


class CalibrationConfigError(ValueError):
    """A calibration configuration that cannot be run."""


@dataclass(frozen=True)
class SiteCalibrationConfig:
    """Everything that defines a site calibration (saved as ``config.json``).

    Attributes:
        model, water_stress, evapotranspiration, phenology: the process option of each
            slot, as its registry text (``name`` or ``name:field=value,...``; see
            ``docs/model.md``). Default: the site model, the neural water stress and ET
            and the calendar phenology.
        photosynthesis, soil_water, decomposition, leaf_loss: the modifiers of each slot,
            a list of registry texts. Default: the calibrated canopy saturation, the rise of
            deep water (``soil_water`` ``None``: it with the site model, none with the global
            model, which has no deep store), decomposition slowed in dry soil, no leaf-loss
            modifier.
        streams: observed streams in the loss (names of observation operators; default GPP,
            RECO, ET and LAI: NEE is evaluated, not fitted).
        weights: per-stream weight (streams not listed weigh 1; default GPP, RECO and LAI
            1.5).
        objective: ``"gaussian"`` (masked Gaussian misfit, normalised by the number of
            observations) or ``"nnse"`` (the reference's -NNSE per stream).
        uncertainty: ``"std"``: sigma = the standard deviation of the stream over the
            calibration period (the misfit is then 0.5 x (1 - NSE) plus a constant);
            ``"driver"``: the driver's ``*unc`` where valid, that default elsewhere.
        validation_days: the last days of the calibration period held out for early stopping.
        edc_weight: weight of the parameter EDC penalties.
        steady_state_weight: weight of the pool steady-state EDC penalties.
        steady_state_pool_weights: per-pool multiplier of ``steady_state_weight`` (pools not
            listed: 1), e.g. to hold the fast pools that set LAI closer to balance than the
            slow pools that may carry a sink.
        steady_state_form: ``"quadratic"`` or ``"tolerance"`` (see
            :func:`differland.likelihood.steady_state_edcs`).
        water_steady_state_weight: weight of the water stores' drift constraints
            (:func:`differland.likelihood.water_steady_state_edcs`); 0 leaves them out.
        water_drift_weight: weight of the constraint on the drift of the total water store
            between the earlier and later halves of the run, beyond a third of a year's
            precipitation (:func:`differland.likelihood.water_drift_edc`; default 0.1); 0
            leaves it out.
        violation_weight: weight of the mean water-violation penalty.
        free_parameters: names to calibrate (default: every parameter the model
            configuration uses); the others stay at ``parameter_values`` or their defaults.
        parameter_values: fixed physical values overriding registry defaults.
        parameter_scales: per-parameter scale of the logistic map from the optimiser's
            unconstrained values (and the random starts) to the prior box, overriding the
            registry's ``"log"`` / ``"linear"`` (e.g. ``{"leaf_lifespan": "log_excess"}``:
            log-scaled in L - 1, so that starts reach fully deciduous canopies).
        gradient: optimiser settings.
        refine_iterations: Adam iterations that continue the selected start on the whole
            calibration period (training and validation days together), after early
            stopping and selection have used the validation slice (default 200); 0 turns
            this off.
        refine_learning_rate: peak learning rate of those iterations (short warm-up, then
            cosine decay as in the main run).
        training_window: what the model runs over while it is calibrated. ``"record"``
            (default, as the reference): the whole record in every loss evaluation; the
            loss uses only calibration days, but the steady-state EDCs sum over the whole
            run, test years included. ``"calibration"``: the calibration period only, so
            that nothing after it, forcing included, enters the optimisation, and each loss
            evaluation costs what the calibration years cost.
        prior_weight: with a prior (``calibrate site --finetune``: a spatialization
            network's prediction for the site), the weight of the penalty
            ``mean((z - z_prior)^2)`` on the unconstrained free parameters z, which pulls the
            calibration toward the prediction.
    """

    model: str = "site"
    water_stress: str = "neural"
    evapotranspiration: str = "neural"
    phenology: str = "calendar"
    photosynthesis: tuple[str, ...] = ("canopy_saturation",)
    soil_water: tuple[str, ...] | None = None
    decomposition: tuple[str, ...] = ("water_limited_decomposition",)
    leaf_loss: tuple[str, ...] = ()
    streams: tuple[str, ...] = ("gpp", "reco", "et", "lai")
    weights: tuple[tuple[str, float], ...] = (("gpp", 1.5), ("reco", 1.5), ("lai", 1.5))
    objective: str = "gaussian"
    uncertainty: str = "std"
    validation_days: int = 365
    edc_weight: float = 1.0
    steady_state_weight: float = 0.02
    steady_state_pool_weights: tuple[tuple[str, float], ...] = ()
    steady_state_form: str = "quadratic"
    water_steady_state_weight: float = 0.0
    water_drift_weight: float = 0.1
    violation_weight: float = 1.0
    free_parameters: tuple[str, ...] | None = None
    parameter_values: tuple[tuple[str, float], ...] = ()
    parameter_scales: tuple[tuple[str, str], ...] = ()
    gradient: GradientSettings = field(default_factory=GradientSettings)
    refine_iterations: int = 200
    refine_learning_rate: float = 0.01
    training_window: str = "record"
    prior_weight: float = 1.0

    def __post_init__(self):
        _check_config_types(self)
        if self.soil_water is None:
            object.__setattr__(self, "soil_water",
                               ("deep_water_uptake",) if self.model == "site" else ())
        try:
            options = ModelConfig(**{slot: getattr(self, slot) for slot in SLOTS})
        except ValueError as error:  # OptionError, or options that cannot run together
            raise CalibrationConfigError(f"config: {' '.join(str(error).split())}") from None
        for slot, text in options.option_texts().items():  # the registry's canonical texts
            object.__setattr__(self, slot, tuple(text) if isinstance(text, list) else text)
        if self.steady_state_form not in STEADY_STATE_FORMS:
            raise CalibrationConfigError(
                f"config: unknown steady_state_form {self.steady_state_form!r}")
        for key in ("water_steady_state_weight", "water_drift_weight"):
            weight = getattr(self, key)
            if isinstance(weight, bool) or not (isinstance(weight, (int, float))
                                                and weight >= 0.0):
                raise CalibrationConfigError(
                    f"config: {key} must be a number >= 0, not {weight!r}")
        if self.objective not in OBJECTIVES:
            raise CalibrationConfigError(f"config: unknown objective {self.objective!r}")
        if self.uncertainty not in UNCERTAINTY_POLICIES:
            raise CalibrationConfigError(f"config: unknown uncertainty {self.uncertainty!r}")
        unknown = [s for s in self.streams if s not in OPERATORS]
        if unknown or not self.streams:
            raise CalibrationConfigError(
                f"config: streams: {'unknown ' + ', '.join(unknown) if unknown else 'none'} "
                f"(known: {', '.join(OPERATORS)})")
        weights = dict(self.weights)
        if all(weights.get(name, 1.0) == 0.0 for name in self.streams):
            raise CalibrationConfigError(
                f"config: weights: every fitted stream ({', '.join(self.streams)}) has weight 0, "
                "so nothing would be fitted")
        unknown = sorted(set(weights) - set(OPERATORS))
        if unknown:
            raise CalibrationConfigError(f"config: weights name unknown stream(s) "
                                         f"{', '.join(unknown)} (known: {', '.join(OPERATORS)})")
        if self.training_window not in TRAINING_WINDOWS:
            raise CalibrationConfigError(
                f"config: unknown training_window {self.training_window!r} "
                f"(known: {', '.join(TRAINING_WINDOWS)})")
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "weights", tuple(dict(self.weights).items()))
        pool_weights = dict(self.steady_state_pool_weights)
        bad = sorted(set(pool_weights) - set(CARBON_POOLS))
        if bad:
            raise CalibrationConfigError(
                f"config: steady_state_pool_weights names unknown pools {bad} "
                f"(known: {', '.join(CARBON_POOLS)})")
        object.__setattr__(self, "steady_state_pool_weights",
                           tuple((k, float(v)) for k, v in pool_weights.items()))
        object.__setattr__(self, "parameter_values",
                           tuple((k, float(v)) for k, v in dict(self.parameter_values).items()))
        object.__setattr__(self, "parameter_scales", tuple(
            (k, str(v)) for k, v in dict(self.parameter_scales).items()))
        try:
            check_scales(dict(self.parameter_scales), source="config parameter_scales")
        except ParameterError as error:
            raise CalibrationConfigError(str(error)) from None
        known = set(names_for(self.model))
        if self.free_parameters is not None:
            object.__setattr__(self, "free_parameters", tuple(self.free_parameters))
            bad = sorted(set(self.free_parameters) - known)
            if bad or not self.free_parameters:
                raise CalibrationConfigError(
                    f"config: free_parameters names unknown for the {self.model} model: {bad}")
        for key in ("parameter_values", "parameter_scales"):
            bad = sorted(set(dict(getattr(self, key))) - known)
            if bad:
                raise CalibrationConfigError(
                    f"config: {key} names unknown for the {self.model} model: {bad}")
        try:  # the values within their bounds
            parameters_from_mapping(dict(self.parameter_values), self.model,
                                    source="config: parameter_values")
        except ValueError as error:
            raise CalibrationConfigError(" ".join(str(error).split())) from None

    @property
    def refine_settings(self) -> GradientSettings:
        """Optimiser settings of the refinement: one start, no early stopping."""
        iterations = max(self.refine_iterations, 1)
        chunk = min(self.gradient.chunk, iterations)
        return GradientSettings(n_starts=1, max_iterations=iterations,
                                learning_rate=self.refine_learning_rate,
                                warmup=min(20, iterations // 2), chunk=chunk,
                                patience=-(-iterations // chunk) + 1,
                                seed=self.gradient.seed)

    @functools.cached_property
    def model_config(self) -> ModelConfig:
        """The model configuration of the calibrated runs."""
        return ModelConfig(**{slot: getattr(self, slot) for slot in SLOTS})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["weights"] = dict(self.weights)
        out["steady_state_pool_weights"] = dict(self.steady_state_pool_weights)
        out["streams"] = list(self.streams)
        out["parameter_values"] = dict(self.parameter_values)
        out["parameter_scales"] = dict(self.parameter_scales)
        for slot in SLOTS:
            if not isinstance(out[slot], str):
                out[slot] = list(out[slot])
        if self.free_parameters is not None:
            out["free_parameters"] = list(self.free_parameters)
        return out

    @classmethod
    def from_dict(cls, values: Mapping) -> SiteCalibrationConfig:
        """The configuration from a JSON object (as :meth:`to_dict` writes it).

        Raises:
            CalibrationConfigError: an unknown key, or a value of the wrong type or range,
                naming the key.
        """
        if not isinstance(values, Mapping):
            raise CalibrationConfigError("config: must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - set(_LEGACY_FLAGS))
        if unknown:
            raise CalibrationConfigError(f"config: unknown key(s) {', '.join(unknown)} "
                                         f"(known: {', '.join(sorted(known))})")
        values = _translate_legacy(dict(values))
        if "gradient" in values:
            values["gradient"] = gradient_settings(values["gradient"])
        for key in ("weights", "steady_state_pool_weights", "parameter_values",
                    "parameter_scales"):
            if key in values:
                if not isinstance(values[key], Mapping):
                    raise CalibrationConfigError(f"config: {key} must be an object")
                values[key] = tuple(dict(values[key]).items())
        for key in ("streams", "free_parameters", *_MODIFIER_SLOTS):
            if key in values and values[key] is not None:
                if isinstance(values[key], str) or not isinstance(values[key], list | tuple):
                    raise CalibrationConfigError(f"config: {key} must be a list of names, not "
                                                 f"{values[key]!r}")
                values[key] = tuple(values[key])
        return cls(**values)


def settings_with(cls, values: Mapping, base=None, prefix: str = "config: "):
    """A frozen settings dataclass ``cls`` from a mapping of overrides on ``base`` (default:
    ``cls()``), checked by the dataclass itself.

    Raises:
        CalibrationConfigError: not a mapping, an unknown key, or a value of the wrong type or
            range, naming it as ``<prefix><key>``.
    """
    if not isinstance(values, Mapping):
        raise CalibrationConfigError(f"{prefix.rstrip('.')} must be an object, not {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(values) - known)
    if bad:
        raise CalibrationConfigError(f"{prefix.rstrip('.')}: unknown key(s) {', '.join(bad)} "
                                     f"(known: {', '.join(sorted(known))})")
    try:
        return dataclasses.replace(base or cls(), **values)
    except SettingsError as error:
        raise CalibrationConfigError(f"{prefix}{error}") from None


def gradient_settings(values: Mapping, base: GradientSettings | None = None,
                      prefix: str = "config: gradient.") -> GradientSettings:
    """:class:`GradientSettings` from a mapping of overrides on ``base`` (default: defaults)
    (see :func:`settings_with`)."""
    return settings_with(GradientSettings, values, base, prefix)


_MODIFIER_SLOTS = tuple(name for name, slot in SLOTS.items() if slot.multiple)
_STRING_KEYS = (*(name for name, slot in SLOTS.items() if not slot.multiple), "objective",
                "uncertainty", "steady_state_form", "training_window")

# Calibration records of earlier versions: on/off keys of the modifiers, and names of option
# combinations, with their registry texts (None: an option that no longer exists).
_LEGACY_FLAGS = {"gpp_weather": "photosynthesis", "canopy_saturation": "photosynthesis",
                 "groundwater_supply": "soil_water", "deep_water_uptake": "soil_water",
                 "water_limited_decomposition": "decomposition",
                 "drought_leaf_loss": "leaf_loss"}
_LEGACY_NAMES = {
    "water_stress": {"neural_monotone": "neural:monotone=true"},
    "evapotranspiration": {"neural_evaporation": "neural:transpiration=uwue",
                           "neural_no_soil_water": "neural:soil_water_input=false"},
    "phenology": {"climate": None, "calendar_climate": "climate",
                  "calendar_growth": None, "calendar_senescence": "climate:index_rates=fall",
                  "calendar_climate_beta": None,
                  "calendar_water": "calendar:water_limited_release=true"},
}


def _translate_legacy(values: dict) -> dict:
    """A calibration record of an earlier version (on/off modifier keys) in today's keys."""
    flags = {key: values.pop(key) for key in _LEGACY_FLAGS if key in values}
    if not flags:
        return values
    for key, flag in flags.items():
        if not isinstance(flag, bool | None):
            raise CalibrationConfigError(f"config: {key} must be true or false, not {flag!r}")
    if flags.get("deep_water_uptake") is None:
        flags["deep_water_uptake"] = values.get("model", "site") == "site"
    for slot in _MODIFIER_SLOTS:
        values.setdefault(slot, [key for key, on in flags.items()
                                 if on and _LEGACY_FLAGS[key] == slot])
    for slot, renamed in _LEGACY_NAMES.items():
        name = values.get(slot)
        if isinstance(name, str) and name in renamed:
            if renamed[name] is None:
                raise CalibrationConfigError(
                    f"config: {slot} {name!r} was removed (see docs/model.md, \"Removed "
                    "options\"); choose another")
            values[slot] = renamed[name]
    return values
_WEIGHT_KEYS = ("edc_weight", "steady_state_weight", "water_steady_state_weight",
                "water_drift_weight", "violation_weight", "prior_weight")


def _check_config_types(config: SiteCalibrationConfig) -> None:
    """Refuse values of the wrong type or range before anything else looks at them."""
    def check(check_function, key, *args, **kwargs):
        try:
            check_function(key, *args, **kwargs)
        except SettingsError as error:
            raise CalibrationConfigError(f"config: {error}") from None

    for key in _STRING_KEYS:
        value = getattr(config, key)
        if not isinstance(value, str):
            raise CalibrationConfigError(f"config: {key} must be a name (a string), not "
                                         f"{value!r}")
    for key in _MODIFIER_SLOTS:
        texts = getattr(config, key)
        if texts is not None and (not isinstance(texts, list | tuple)
                                  or not all(isinstance(text, str) for text in texts)):
            shown = list(texts) if isinstance(texts, tuple) else texts
            raise CalibrationConfigError(f"config: {key} must be a list of option names, not "
                                         f"{shown!r}")
    for key in _WEIGHT_KEYS:
        check(check_number, key, getattr(config, key), 0.0)
    check(check_integer, "validation_days", config.validation_days, 0)
    check(check_integer, "refine_iterations", config.refine_iterations, 0)
    check(check_number, "refine_learning_rate", config.refine_learning_rate, 0.0,
          positive=True)
    if not isinstance(config.gradient, GradientSettings):
        raise CalibrationConfigError("config: gradient must be an object of optimiser settings")
    for key in ("streams", "free_parameters"):
        names = getattr(config, key)
        if names is None and key == "free_parameters":
            continue
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            shown = list(names) if isinstance(names, tuple) else names
            raise CalibrationConfigError(f"config: {key} must be a list of names, not "
                                         f"{shown!r}")
        if key == "free_parameters" and not names:
            raise CalibrationConfigError("config: free_parameters is empty; name at least one "
                                         "parameter (or leave the key out: all of them)")
        duplicates = sorted({n for n in names if list(names).count(n) > 1})
        if duplicates:
            raise CalibrationConfigError(f"config: {key} names {', '.join(duplicates)} twice")
    for key in ("weights", "steady_state_pool_weights"):
        for name, value in dict(getattr(config, key)).items():
            check(check_number, f"{key}.{name}", value, 0.0)
    for name, value in dict(config.parameter_values).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise CalibrationConfigError(f"config: parameter_values.{name} must be a finite "
                                         f"number, not {value!r}")
    for name, value in dict(config.parameter_scales).items():
        if not isinstance(value, str):
            raise CalibrationConfigError(f"config: parameter_scales.{name} must be a name, "
                                         f"not {value!r}")


@dataclass(frozen=True)
class Periods:
    """0/1 step masks of the periods (float arrays of length T)."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    year_end: np.ndarray


def make_periods(dates, calibration_end: int, validation_days: int) -> Periods:
    """Train / validation / calibration / test masks and the year-end flags."""
    days = np.asarray(dates, dtype="datetime64[D]")
    n = days.size
    if not 0 < calibration_end <= n:
        raise CalibrationConfigError(f"calibration period of {calibration_end} steps is empty")
    index = np.arange(n)
    calibration = index < calibration_end
    validation_start = max(calibration_end - validation_days, calibration_end // 2)
    validation = calibration & (index >= validation_start) if validation_days else \
        np.zeros(n, bool)
    years = days.astype("datetime64[Y]")
    year_end = np.append(years[1:] != years[:-1], True)
    as_float = lambda m: m.astype(np.float64)  # noqa: E731
    return Periods(as_float(calibration & ~validation), as_float(validation),
                   as_float(calibration), as_float(~calibration), as_float(year_end))


def build_streams(observations: Mapping, config: SiteCalibrationConfig, periods: Periods,
                  source: str = "driver") -> dict[str, Stream]:
    """Masked streams for ``config.streams`` from observation records.

    ``observations[name]`` needs ``values``, ``mask`` and optionally ``uncertainty`` /
    ``uncertainty_mask`` (as :class:`differland.io.Observation`).
    """
    weights = dict(config.weights)
    streams = {}
    for name in config.streams:
        if name not in observations:
            raise CalibrationConfigError(
                f"{source}: observation variable for stream {name!r} is missing")
        record = observations[name]
        values = np.where(record.mask, record.values, 0.0)
        mask = np.asarray(record.mask, np.float64)
        in_calibration = mask * periods.calibration > 0
        if in_calibration.sum() < MIN_OBSERVATIONS:
            raise CalibrationConfigError(
                f"{source}: stream {name!r} has {int(in_calibration.sum())} observations in the "
                f"calibration period (need at least {MIN_OBSERVATIONS})")
        spread = float(np.std(values[in_calibration]))
        default_sigma = spread if spread > 0 else 1.0
        sigma = np.full(values.shape, default_sigma)
        if config.uncertainty == "driver" and getattr(record, "uncertainty", None) is not None:
            valid = np.asarray(record.uncertainty_mask, bool)
            sigma = np.where(valid, record.uncertainty, default_sigma)
        streams[name] = Stream(values=jnp.asarray(values), mask=jnp.asarray(mask),
                               sigma=jnp.asarray(sigma),
                               weight=jnp.asarray(weights.get(name, 1.0)))
    return streams


def free_parameter_names(config: SiteCalibrationConfig) -> tuple[str, ...]:
    """Parameters the calibration adjusts: ``config.free_parameters``, else every parameter
    the model configuration reads (:meth:`~differland.config.ModelConfig.parameter_names`)."""
    if config.free_parameters is not None:
        return config.free_parameters
    return config.model_config.parameter_names()


@dataclass(frozen=True)
class SiteProblem:
    """The loss of a site calibration as functions of the unconstrained pytree.

    ``theta = {"params": ParameterSet of unconstrained values, "network": {term: MLP} or
    None}``.
    """

    config: SiteCalibrationConfig
    forcing: Forcing
    streams: dict[str, Stream]
    periods: Periods
    fixed: ParameterSet
    valid: jax.Array | None = None  # 0 at padding steps after the record (see ``padded``)
    prior: ParameterSet | None = None  # unconstrained values the calibration is pulled to

    def physical(self, theta) -> ParameterSet:
        """Physical parameter values (free ones from ``theta``, the others fixed)."""
        free = constrain(theta["params"], scales=dict(self.config.parameter_scales))
        return ParameterSet({name: free[name] if name in free else self.fixed[name]
                             for name in self.fixed.names})

    def run(self, theta):
        params = self.physical(theta)
        return params, simulate(params, self.forcing, self.config.model_config,
                                network=theta.get("network"))

    def predictions(self, theta) -> dict[str, jax.Array]:
        params, trajectory = self.run(theta)
        return {name: predict(name, trajectory, params, self.forcing)
                for name in self.config.streams}

    def loss_terms(self, theta, steps: jax.Array, ramp=1.0) -> dict[str, jax.Array]:
        """Per-term breakdown of the loss on the steps where ``steps`` is 1 (constraint terms
        scaled by ``ramp``; with a :attr:`prior`, its penalty ``prior``)."""
        return self._terms(*self.run(theta), steps, ramp) | self._prior_term(theta)

    def _prior_term(self, theta) -> dict[str, jax.Array]:
        if self.prior is None:
            return {}
        free = theta["params"]
        return {"prior": self.config.prior_weight * sum(
            (free[name] - self.prior[name]) ** 2 for name in self.prior.names) / len(
                self.prior.names)}

    def evaluate(self, theta):
        """``(physical parameters, trajectory, calibration-period loss terms)`` in one pass."""
        params, trajectory = self.run(theta)
        return params, trajectory, self._terms(params, trajectory, self.calibration_steps,
                                               1.0) | self._prior_term(theta)

    def _terms(self, params, trajectory, steps, ramp) -> dict[str, jax.Array]:
        terms = {}
        for name, stream in self.streams.items():
            prediction = predict(name, trajectory, params, self.forcing)
            restricted = stream.restricted(steps)
            if self.config.objective == "nnse":
                terms[name] = nnse_loss(prediction, restricted)
            else:
                terms[name] = gaussian_misfit(prediction, restricted)
        edcs = parameter_edcs(params)
        terms["edc_parameters"] = ramp * self.config.edc_weight * sum(edcs.values())
        initial = initial_state(params, self.config.model_config)
        year_end = jnp.asarray(self.periods.year_end)
        outputs = trajectory.outputs
        if self.valid is not None:  # padding steps add nothing to the pool balances
            outputs = jax.tree.map(lambda x: x * self.valid, outputs)
        steady = steady_state_edcs(outputs, trajectory.states, initial, year_end,
                                   form=self.config.steady_state_form)
        pool_weights = dict(self.config.steady_state_pool_weights)
        terms["edc_steady_state"] = ramp * self.config.steady_state_weight * sum(
            pool_weights.get(pool, 1.0) * steady[f"edc_steady_{pool}"] for pool in CARBON_POOLS)
        if self.config.water_steady_state_weight > 0.0:
            water_steady = water_steady_state_edcs(trajectory.states, initial, year_end)
            terms["edc_water_steady_state"] = (
                ramp * self.config.water_steady_state_weight * sum(water_steady.values()))
        if self.config.water_drift_weight > 0.0:
            if self.valid is None:
                mean_precipitation = jnp.mean(self.forcing.precipitation)
            else:
                mean_precipitation = (jnp.sum(self.forcing.precipitation * self.valid)
                                      / jnp.sum(self.valid))
            annual_precipitation = 365.25 * jnp.maximum(mean_precipitation, 1e-3)
            terms["edc_water_drift"] = ramp * self.config.water_drift_weight * water_drift_edc(
                trajectory.states, year_end, annual_precipitation)
        penalty = trajectory.outputs.water_violation_penalty
        terms["water_violation"] = self.config.violation_weight * jnp.sum(penalty * steps) / (
            jnp.maximum(jnp.sum(steps), 1.0))
        return terms

    def loss(self, theta, steps, ramp=1.0) -> jax.Array:
        return sum(self.loss_terms(theta, steps, ramp).values())

    def train_loss(self, theta, ramp=1.0):
        return self.loss(theta, jnp.asarray(self.periods.train), ramp)

    @property
    def validation_steps(self) -> jax.Array:
        """Steps of the early-stopping loss (the training steps if there is no validation)."""
        steps = self.periods.validation if self.periods.validation.any() else \
            self.periods.train
        return jnp.asarray(steps)

    @property
    def calibration_steps(self) -> jax.Array:
        return jnp.asarray(self.periods.calibration)

    def fit_arguments(self):
        """``(train_loss, evaluation_loss, validation_steps, selection_steps)`` for
        :func:`differland.calibrate.gradient.fit`."""
        return self.train_loss, self.loss, self.validation_steps, self.calibration_steps

    def refine_arguments(self):
        """The :meth:`fit_arguments` of the refinement: training, early-stopping and
        selection losses all on the whole calibration period."""
        steps = self.calibration_steps

        def calibration_loss(theta, ramp=1.0):
            return self.loss(theta, steps, ramp)

        return calibration_loss, self.loss, steps, steps

    def window(self, n_steps: int) -> SiteProblem:
        """The same problem on the first ``n_steps`` steps of the record.

        The model is causal, so the trajectory over those steps is the full run's; only what
        sums over the run (the steady-state EDCs) changes, and each loss evaluation costs
        ``n_steps / T`` of the full run's.
        """
        def head(x):
            return x[..., :n_steps]

        periods = Periods(*(head(getattr(self.periods, f.name))
                            for f in dataclasses.fields(Periods)))
        # as make_periods: the last step closes a (perhaps partial) year
        periods = dataclasses.replace(periods, year_end=np.append(periods.year_end[:-1], 1.0))
        streams = {name: stream.replace(values=head(stream.values), mask=head(stream.mask),
                                        sigma=head(stream.sigma))
                   for name, stream in self.streams.items()}
        valid = None if self.valid is None else head(self.valid)
        return SiteProblem(self.config, jax.tree.map(head, self.forcing), streams, periods,
                           self.fixed, valid, self.prior)

    def padded(self, n_steps: int) -> SiteProblem:
        """The same problem extended to ``n_steps`` steps (so that sites of different record
        lengths batch together): the forcing repeats its last step, no stream is observed,
        no period or year end falls in the padding, and :attr:`valid` marks the real steps.
        The loss is the unpadded problem's."""
        n = int(self.forcing.delta_t.shape[-1])
        extra = n_steps - n
        if extra < 0:
            raise ValueError(f"cannot pad {n} steps to {n_steps}")

        def pad(x, mode="edge", value=0.0):
            x = np.asarray(x)
            widths = [(0, 0)] * (x.ndim - 1) + [(0, extra)]
            if mode == "edge":
                return jnp.asarray(np.pad(x, widths, mode="edge"))
            return jnp.asarray(np.pad(x, widths, constant_values=value))

        forcing = jax.tree.map(lambda x: pad(x) if np.ndim(x) else x, self.forcing)
        periods = Periods(*(np.asarray(pad(getattr(self.periods, f.name), "constant"))
                            for f in dataclasses.fields(Periods)))
        streams = {name: stream.replace(values=pad(stream.values, "constant"),
                                        mask=pad(stream.mask, "constant"),
                                        sigma=pad(stream.sigma, "constant", 1.0))
                   for name, stream in self.streams.items()}
        valid = pad(np.ones(n) if self.valid is None else self.valid, "constant")
        return SiteProblem(self.config, forcing, streams, periods, self.fixed, valid,
                           self.prior)

    def training_problem(self) -> SiteProblem:
        """The problem the optimiser sees (``config.training_window``)."""
        if self.config.training_window == "record":
            return self
        return self.window(int(np.sum(self.periods.calibration)))

    def initial_guesses(self, n_starts: int, seed: int, network=None):
        """Random starts: each free parameter uniform in [0.05, 0.95] of its transform; with
        a :attr:`prior`, the prior itself and starts scattered around it (standard deviation
        0.25 in the unconstrained values), all with the hybrid weights ``network``."""
        if self.prior is not None:
            key = jax.random.PRNGKey(seed)
            noise = 0.25 * jax.random.normal(key, (n_starts, len(self.prior.names)))
            noise = noise.at[0].set(0.0)
            values = {name: self.prior[name] + noise[:, j]
                      for j, name in enumerate(self.prior.names)}
            batched = None if network is None else jax.tree.map(
                lambda x: jnp.broadcast_to(x, (n_starts, *jnp.shape(x))), network)
            return {"params": ParameterSet(values), "network": batched}
        key = jax.random.PRNGKey(seed)
        names = free_parameter_names(self.config)
        key, sub = jax.random.split(key)
        u = jax.random.uniform(sub, (n_starts, len(names)), minval=0.05, maxval=0.95)
        values = {name: jnp.log(u[:, j]) - jnp.log1p(-u[:, j]) for j, name in enumerate(names)}
        model_config = self.config.model_config
        network = None
        if model_config.network_sizes:
            keys = jax.random.split(key, n_starts)
            network = jax.vmap(lambda k: init_network(k, model_config))(keys)
        return {"params": ParameterSet(values), "network": network}


def make_site_problem(forcing: Forcing, observations: Mapping, dates, calibration_end: int,
                      config: SiteCalibrationConfig, source: str = "driver") -> SiteProblem:
    """Assemble a :class:`SiteProblem` from forcing, observation records and the split."""
    periods = make_periods(dates, calibration_end, config.validation_days)
    streams = build_streams(observations, config, periods, source)
    try:
        fixed = parameters_from_mapping(dict(config.parameter_values), config.model,
                                        source="config parameter_values")
    except ValueError as error:
        raise CalibrationConfigError(str(error)) from None
    forcing = jax.tree.map(jnp.asarray, forcing)
    return SiteProblem(config, forcing, streams, periods, fixed)
