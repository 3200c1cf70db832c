"""Bayesian site calibration: the site problem as a NumPyro model, sampled with NUTS.

The model draws every free parameter of the site configuration from its prior, runs the model
over the problem's record, and scores the observed streams over the calibration period with an
unnormalised Gaussian log likelihood; the constraint terms of the gradient calibration (parameter
EDCs, steady-state EDCs, water drift and violation penalties) enter as potential terms.

Coordinates: each free parameter is a sample site named by its registry name, in physical units.
Its support is the box of its prior on the parameter's transform scale (``log``, ``linear`` or
``log_excess``, as :func:`differland.params.constrain` uses it); NUTS works in the logit of the
position in that box. With the registry bounds (the default, and for normal and lognormal
priors) that is exactly the unconstrained value z of :func:`differland.params.unconstrain`.

Hybrid neural terms are supported only as fixed weights from a gradient fit (the short fit
that initialises the chains fits them together with the parameters); they are not sampled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.distributions import constraints
from numpyro.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    SigmoidTransform,
    Transform,
    biject_to,
)
from numpyro.infer import Predictive
from numpyro.infer.hmc import hmc
from numpyro.infer.util import potential_energy
from tqdm.auto import tqdm

from differland.calibrate.gradient import (
    MAX_SEED,
    CheckpointMismatchError,
    NonFiniteLossError,
    SettingsError,
    check_integer,
    check_number,
)
from differland.calibrate.site import (
    CalibrationConfigError,
    Periods,
    SiteCalibrationConfig,
    SiteProblem,
    free_parameter_names,
    settings_with,
)
from differland.likelihood import Stream
from differland.model import simulate
from differland.observations import predict
from differland.params import SPECS, ParameterSet, constrain

DISTRIBUTIONS = ("uniform", "normal", "lognormal")
"""Prior families of :class:`PriorSpec`."""

_PRIOR_KEYS = {"uniform": ("lower", "upper"), "normal": ("loc", "scale"),
               "lognormal": ("median", "scale")}
_REQUIRED_KEYS = {"uniform": (), "normal": ("loc", "scale"), "lognormal": ("median", "scale")}

ERROR_SCALE_PREFIX = "error_scale_"
"""Sample sites of the structural-error scales are ``error_scale_<stream>``."""
OBSERVATION_PREFIX = "obs_"
"""Sample sites of the observed streams are ``obs_<stream>``."""
PREDICTION_PREFIX = "prediction_"
"""Without observations, the model's predictions are deterministic sites
``prediction_<stream>``."""
INIT_CHAINS = ("distinct", "best")


# --- priors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorSpec:
    """The prior of one parameter, in its physical units (the registry's ``units``).

    Every prior is restricted to the parameter's registry bounds [lower, upper].

    Attributes:
        distribution: ``"uniform"``: uniform over the parameter's bounded space, i.e. the space
            its transform is linear in (log-uniform for log-scaled parameters), between
            ``lower`` and ``upper`` (default: the registry bounds; narrower bounds must lie
            inside them). ``"normal"``: normal with mean ``loc`` and standard deviation
            ``scale`` [units], truncated to the registry bounds. ``"lognormal"``: ln value
            normal with median ``median`` [units] and standard deviation ``scale`` [1, of ln
            value], truncated to the registry bounds (needs a positive lower bound).
        lower, upper: bounds of the uniform prior [units].
        loc: mean of the normal prior before truncation [units], inside the bounds.
        scale: standard deviation of the normal prior [units] or of ln value of the lognormal
            prior [1], > 0.
        median: median of the lognormal prior before truncation [units], inside the bounds.
    """

    distribution: str = "uniform"
    lower: float | None = None
    upper: float | None = None
    loc: float | None = None
    scale: float | None = None
    median: float | None = None

    def to_dict(self) -> dict:
        return {"distribution": self.distribution,
                **{key: getattr(self, key) for key in _PRIOR_KEYS[self.distribution]
                   if getattr(self, key) is not None}}


def _finite_number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationConfigError(f"config: {key} must be a finite number, not {value!r}")
    return float(value)


def parse_prior(name: str, entry, free: tuple[str, ...]) -> PriorSpec:
    """The :class:`PriorSpec` of ``priors.<name>`` of a configuration file.

    Args:
        name: the parameter's registry name.
        entry: ``{"distribution": ..., <numbers of that distribution>}``.
        free: the free parameters of the model configuration.

    Raises:
        CalibrationConfigError: one line naming ``priors.<name>[.<key>]``: an unknown
            parameter, one that is not free in this configuration, an unknown distribution or
            key, a missing or non-finite number, bounds or a centre outside the registry bounds,
            a non-positive scale.
    """
    key = f"priors.{name}"
    if name not in SPECS:
        raise CalibrationConfigError(f"config: {key}: unknown parameter {name!r}")
    if name not in free:
        raise CalibrationConfigError(
            f"config: {key}: {name} is not a free parameter of this model configuration "
            "(see the process options and free_parameters)")
    if not isinstance(entry, Mapping):
        raise CalibrationConfigError(f"config: {key} must be an object with a distribution, "
                                     f"not {entry!r}")
    family = entry.get("distribution", "uniform")
    if family not in DISTRIBUTIONS:
        raise CalibrationConfigError(f"config: {key}.distribution: unknown {family!r} "
                                     f"(known: {', '.join(DISTRIBUTIONS)})")
    unknown = sorted(set(entry) - {"distribution", *_PRIOR_KEYS[family]})
    if unknown:
        raise CalibrationConfigError(
            f"config: {key}: unknown key(s) {', '.join(unknown)} for a {family} prior "
            f"(known: {', '.join(_PRIOR_KEYS[family])})")
    missing = [k for k in _REQUIRED_KEYS[family] if k not in entry]
    if missing:
        raise CalibrationConfigError(f"config: {key}: a {family} prior needs "
                                     f"{' and '.join(missing)}")
    numbers = {k: _finite_number(f"{key}.{k}", entry[k]) for k in _PRIOR_KEYS[family]
               if k in entry}
    spec = SPECS[name]
    bounds = f"[{spec.lower:g}, {spec.upper:g}] {spec.units}"
    if family == "uniform":
        lower, upper = numbers.get("lower", spec.lower), numbers.get("upper", spec.upper)
        for bound, value in (("lower", lower), ("upper", upper)):
            if not spec.lower <= value <= spec.upper:
                raise CalibrationConfigError(f"config: {key}.{bound} = {value:g} is outside "
                                             f"the registry bounds {bounds}")
        if not lower < upper:
            raise CalibrationConfigError(f"config: {key}: lower {lower:g} is not below upper "
                                         f"{upper:g}")
        return PriorSpec("uniform", lower=lower, upper=upper)
    if numbers["scale"] <= 0.0:
        raise CalibrationConfigError(f"config: {key}.scale must be > 0, not "
                                     f"{numbers['scale']:g}")
    centre = "loc" if family == "normal" else "median"
    if not spec.lower <= numbers[centre] <= spec.upper:
        raise CalibrationConfigError(f"config: {key}.{centre} = {numbers[centre]:g} is outside "
                                     f"the registry bounds {bounds}")
    if family == "lognormal" and not spec.lower > 0.0:
        raise CalibrationConfigError(f"config: {key}: a lognormal prior needs a positive lower "
                                     f"bound; {name} has {bounds}")
    return PriorSpec(family, **numbers)


def parse_priors(values, free: tuple[str, ...]) -> tuple[tuple[str, PriorSpec], ...]:
    """``priors`` of a configuration file as ``((name, PriorSpec), ...)``.

    Raises:
        CalibrationConfigError: not an object, or a bad entry (see :func:`parse_prior`).
    """
    if not isinstance(values, Mapping):
        raise CalibrationConfigError(f"config: priors must be an object of parameter names, "
                                     f"not {values!r}")
    return tuple((name, parse_prior(name, entry, free)) for name, entry in values.items())


class ScaledBox(constraints.Constraint):
    """The interval [lower, upper] of a parameter, with its transform scale.

    Its unconstrained coordinate is the logit of the position in the box on ``scale``
    (``"linear"``, ``"log"`` or ``"log_excess"``), the map of
    :func:`differland.params.constrain` applied to these bounds.
    """

    def __init__(self, lower: float, upper: float, scale: str):
        self.lower_bound = lower
        self.upper_bound = upper
        self.scale = scale

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.greater_equal(x, self.lower_bound) & xp.less_equal(x, self.upper_bound)

    def feasible_like(self, prototype):
        middle = unit_transform(self)(jnp.asarray(0.5))
        return jnp.broadcast_to(middle, jnp.shape(prototype))

    def eq(self, other, static: bool = False):
        return (isinstance(other, ScaledBox) and self.scale == other.scale
                and self.lower_bound == other.lower_bound
                and self.upper_bound == other.upper_bound)

    def tree_flatten(self):
        return (self.lower_bound, self.upper_bound), (("lower_bound", "upper_bound"),
                                                      {"scale": self.scale})

    def __repr__(self) -> str:
        return f"ScaledBox({self.lower_bound:g}, {self.upper_bound:g}, {self.scale})"


def unit_transform(box: ScaledBox) -> Transform:
    """Map from the position u in [0, 1] of ``box`` to the physical value."""
    lower, upper = box.lower_bound, box.upper_bound
    if box.scale == "log":
        return ComposeTransform([AffineTransform(math.log(lower), math.log(upper / lower)),
                                 ExpTransform()])
    if box.scale == "log_excess":
        return ComposeTransform([
            AffineTransform(math.log(lower - 1.0), math.log((upper - 1.0) / (lower - 1.0))),
            ExpTransform(), AffineTransform(1.0, 1.0)])
    return AffineTransform(lower, upper - lower)


@biject_to.register(ScaledBox)
def _box_bijection(box: ScaledBox) -> Transform:
    return ComposeTransform([SigmoidTransform(), unit_transform(box)])


class BoundedPrior(dist.Distribution):
    """A prior density ``base`` on a :class:`ScaledBox` (the support NUTS transforms)."""

    pytree_data_fields = ("base", "box")

    def __init__(self, base: dist.Distribution, box: ScaledBox, *, validate_args=None):
        self.base = base
        self.box = box
        super().__init__(batch_shape=(), event_shape=(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return self.box

    def sample(self, key, sample_shape=()):
        return self.base.sample(key, sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value)


def parameter_scale(config: SiteCalibrationConfig, name: str) -> str:
    """The transform scale of ``name`` in ``config`` (its ``parameter_scales``, else the
    registry's)."""
    return dict(config.parameter_scales).get(name, SPECS[name].transform_scale)


def prior_box(config: SiteCalibrationConfig, name: str, prior: PriorSpec) -> ScaledBox:
    """The support of the prior of ``name``: the uniform prior's bounds, else the registry's."""
    spec = SPECS[name]
    lower = spec.lower if prior.lower is None else prior.lower
    upper = spec.upper if prior.upper is None else prior.upper
    return ScaledBox(lower, upper, parameter_scale(config, name))


def prior_distribution(config: SiteCalibrationConfig, name: str,
                       prior: PriorSpec | None = None) -> BoundedPrior:
    """The NumPyro prior of parameter ``name`` (default: uniform on its bounded space)."""
    prior = prior or PriorSpec()
    box = prior_box(config, name, prior)
    if prior.distribution == "normal":
        base = dist.TruncatedNormal(prior.loc, prior.scale, low=box.lower_bound,
                                    high=box.upper_bound)
    elif prior.distribution == "lognormal":
        base = dist.TransformedDistribution(
            dist.TruncatedNormal(math.log(prior.median), prior.scale,
                                 low=math.log(box.lower_bound), high=math.log(box.upper_bound)),
            ExpTransform())
    else:
        base = dist.TransformedDistribution(dist.Uniform(0.0, 1.0), unit_transform(box))
    return BoundedPrior(base, box)


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NutsSettings:
    """Settings of the NUTS run and of the gradient fit that starts it.

    Attributes:
        chains: Markov chains (in parallel over devices when there are as many, else
            vectorized on one device).
        warmup: adaptation iterations per chain (step size and mass matrix).
        samples: post-warmup iterations per chain; every ``thin``-th is kept.
        thin: thinning of the post-warmup iterations.
        seed: seed of the starts, the jitter and the sampler.
        dense_mass: adapt a dense mass matrix (else diagonal).
        target_accept: target mean acceptance probability of the step-size adaptation.
        max_tree_depth: largest NUTS tree depth (at most 2^depth - 1 leapfrog steps).
        init_starts: random starts of the initialising gradient fit.
        init_iterations: Adam iterations of that fit.
        init_learning_rate: its peak learning rate (unconstrained units).
        init_chains: ``"distinct"``: chain c starts at the c-th best start of the fit;
            ``"best"``: every chain starts at the best start, jittered by ``init_jitter``.
        init_jitter: standard deviation of that jitter [unconstrained units].
    """

    chains: int = 4
    warmup: int = 500
    samples: int = 500
    thin: int = 1
    seed: int = 0
    dense_mass: bool = True
    target_accept: float = 0.8
    max_tree_depth: int = 10
    init_starts: int = 8
    init_iterations: int = 1500
    init_learning_rate: float = 0.05
    init_chains: str = "distinct"
    init_jitter: float = 0.1

    def __post_init__(self):
        for key, lower in (("chains", 1), ("warmup", 1), ("samples", 1), ("thin", 1),
                           ("init_starts", 1), ("init_iterations", 1)):
            check_integer(key, getattr(self, key), lower)
        check_integer("seed", self.seed, 0, MAX_SEED)
        check_integer("max_tree_depth", self.max_tree_depth, 1, 15)
        if not isinstance(self.dense_mass, bool):
            raise SettingsError(f"dense_mass must be true or false, not {self.dense_mass!r}")
        check_number("target_accept", self.target_accept, 0.0, 1.0, positive=True)
        if self.target_accept >= 1.0:
            raise SettingsError(f"target_accept must be below 1, not {self.target_accept!r}")
        check_number("init_learning_rate", self.init_learning_rate, 0.0, positive=True)
        check_number("init_jitter", self.init_jitter, 0.0)
        if self.init_chains not in INIT_CHAINS:
            raise SettingsError(f"init_chains must be one of {', '.join(INIT_CHAINS)}, not "
                                f"{self.init_chains!r}")
        if self.samples < self.thin:
            raise SettingsError(f"samples ({self.samples}) must be at least thin ({self.thin})")

    @property
    def draws(self) -> int:
        """Kept draws per chain."""
        return self.samples // self.thin


POSTERIOR_KEYS = ("priors", "structural_error", "constraint_scale", "network", "nuts")
"""Keys of a posterior configuration file besides those of :class:`SiteCalibrationConfig`."""

POSTERIOR_DEFAULTS = {"water_stress": "beta", "evapotranspiration": "uwue",
                      "training_window": "calibration"}
"""Site-calibration keys whose posterior default differs from the gradient calibration's: no
neural term (every process has registry parameters, which get priors), and the model run over
the calibration period only while it is sampled."""

NETWORK_POLICIES = ("fixed",)


@dataclass(frozen=True)
class PosteriorConfig:
    """Everything that defines a site posterior (saved in the run's ``config.json``).

    Attributes:
        calibration: the site problem: model options, streams, uncertainty policy, constraint
            weights, free and fixed parameters (the optimiser settings of the gradient
            calibration are not used).
        priors: per-parameter priors (parameters not listed: uniform on their bounded space).
        structural_error: give each stream a scale kappa_s of its uncertainty, sigma =
            kappa_s x sigma_obs, with prior kappa_s ~ LogNormal(0, 1).
        constraint_scale: multiplier of the constraint terms of the gradient loss (each with
            its weight of ``calibration``) in the log density: the potential is
            -constraint_scale x term [nats].
        network: the hybrid network weights: ``"fixed"`` (fitted with the initialising
            gradient fit and held fixed); sampling them is not supported.
        nuts: sampler settings.
    """

    calibration: SiteCalibrationConfig = field(
        default_factory=lambda: SiteCalibrationConfig(**POSTERIOR_DEFAULTS))
    priors: tuple[tuple[str, PriorSpec], ...] = ()
    structural_error: bool = False
    constraint_scale: float = 1.0
    network: str = "fixed"
    nuts: NutsSettings = field(default_factory=NutsSettings)

    def __post_init__(self):
        if self.calibration.objective != "gaussian":
            raise CalibrationConfigError(
                f"config: objective {self.calibration.objective!r} has no likelihood; the "
                "posterior needs \"gaussian\"")
        if not isinstance(self.structural_error, bool):
            raise CalibrationConfigError(f"config: structural_error must be true or false, "
                                         f"not {self.structural_error!r}")
        try:
            check_number("constraint_scale", self.constraint_scale, 0.0)
        except SettingsError as error:
            raise CalibrationConfigError(f"config: {error}") from None
        if self.network not in NETWORK_POLICIES:
            raise CalibrationConfigError(
                f"config: network {self.network!r}: only \"fixed\" is supported (the hybrid "
                "network weights come from the gradient fit; they are not sampled)")
        free = free_parameter_names(self.calibration)
        bad = sorted(name for name, _ in self.priors if name not in free)
        if bad:
            raise CalibrationConfigError(f"config: priors.{bad[0]}: not a free parameter of "
                                         "this model configuration")

    def prior_of(self, name: str) -> PriorSpec:
        return dict(self.priors).get(name, PriorSpec())

    def to_dict(self) -> dict:
        return {**self.calibration.to_dict(),
                "priors": {name: prior.to_dict() for name, prior in self.priors},
                "structural_error": self.structural_error,
                "constraint_scale": self.constraint_scale, "network": self.network,
                "nuts": dataclasses.asdict(self.nuts)}


def nuts_settings(values, base: NutsSettings | None = None,
                  prefix: str = "config: nuts.") -> NutsSettings:
    """:class:`NutsSettings` from a mapping of overrides on ``base`` (default: defaults)
    (see :func:`~differland.calibrate.site.settings_with`)."""
    return settings_with(NutsSettings, values, base, prefix)


def posterior_config_from_dict(values: Mapping) -> PosteriorConfig:
    """The posterior configuration from a JSON object: keys of :class:`SiteCalibrationConfig`
    (:data:`POSTERIOR_DEFAULTS` where absent) plus :data:`POSTERIOR_KEYS`.

    Raises:
        CalibrationConfigError: an unknown key, or a bad value or prior, named in one line.
    """
    if not isinstance(values, Mapping):
        raise CalibrationConfigError("config: must be a JSON object")
    site_keys = {f.name for f in dataclasses.fields(SiteCalibrationConfig)}
    unknown = sorted(set(values) - site_keys - set(POSTERIOR_KEYS))
    if unknown:
        raise CalibrationConfigError(
            f"config: unknown key(s) {', '.join(unknown)} (known: "
            f"{', '.join(sorted(site_keys | set(POSTERIOR_KEYS)))})")
    calibration = SiteCalibrationConfig.from_dict(
        {**POSTERIOR_DEFAULTS, **{k: v for k, v in values.items() if k in site_keys}})
    free = free_parameter_names(calibration)
    priors = parse_priors(values.get("priors", {}), free)
    nuts = nuts_settings(values.get("nuts", {}))
    return PosteriorConfig(calibration, priors, values.get("structural_error", False),
                           values.get("constraint_scale", 1.0), values.get("network", "fixed"),
                           nuts)


# --- the model ---------------------------------------------------------------------------------


def likelihood_streams(problem: SiteProblem) -> dict[str, Stream]:
    """The streams the likelihood scores: those of weight > 0 in the configuration, masked to
    their observed steps of the calibration period (stream weights do not scale the
    likelihood)."""
    weights = dict(problem.config.weights)
    return {name: stream.restricted(problem.calibration_steps)
            for name, stream in problem.streams.items() if weights.get(name, 1.0) > 0.0}


def observed_values(problem: SiteProblem) -> dict[str, jax.Array]:
    """``obs`` of :func:`site_model` for ``problem``: the observed values of each scored
    stream (anything at unobserved steps)."""
    return {name: stream.values for name, stream in likelihood_streams(problem).items()}


def check_network(problem: SiteProblem, network) -> None:
    """Refuse a hybrid configuration without fixed network weights."""
    if problem.config.model_config.network_sizes and network is None:
        raise CalibrationConfigError(
            f"the neural {', '.join(problem.config.model_config.network_sizes)} term(s) need "
            "fixed network weights from a gradient fit; they are not sampled")


def site_model(problem: SiteProblem, priors: Mapping[str, PriorSpec] | None = None,
               structural_error: bool = False, obs: Mapping[str, jax.Array] | None = None,
               network=None, constraint_scale: float = 1.0) -> None:
    """NumPyro model of a site calibration problem.

    Sample sites: each free parameter (:func:`~differland.calibrate.site.free_parameter_names`)
    by its registry name [its units], from ``priors[name]`` (default uniform on its bounded
    space); with ``structural_error``, ``error_scale_<stream>`` [1] ~ LogNormal(0, 1); and
    ``obs_<stream>`` [stream units] over the problem's whole record, Normal(prediction,
    sigma_t x error scale) with the stream's uncertainty sigma_t at every step, whose log
    probability counts only the observed steps of the calibration period:
    sum_t -0.5 ((prediction_t - obs_t) / sigma_t)^2 - ln sigma_t - 0.5 ln(2 pi). Potential
    terms (``numpyro.factor``): ``-constraint_scale x`` each
    constraint term of :meth:`SiteProblem.loss_terms` (everything but the stream misfits).
    Without ``obs``, the predictions are also deterministic sites ``prediction_<stream>``.

    Args:
        problem: the site problem (its forcing sets the record that is run).
        priors: per-parameter priors.
        structural_error: sample a scale of each stream's uncertainty.
        obs: observed values by stream (:func:`observed_values`); ``None`` draws every stream
            (prior or posterior predictive with :class:`numpyro.infer.Predictive`).
        network: fixed weights of the hybrid terms (required when the configuration has any).
        constraint_scale: multiplier of the potential terms.
    """
    check_network(problem, network)
    priors = priors or {}
    config = problem.config
    values = {name: numpyro.sample(name, prior_distribution(config, name, priors.get(name)))
              for name in free_parameter_names(config)}
    params = ParameterSet({name: values[name] if name in values else problem.fixed[name]
                           for name in problem.fixed.names})
    trajectory = simulate(params, problem.forcing, config.model_config, network=network)
    streams = likelihood_streams(problem)
    terms = problem._terms(params, trajectory, problem.calibration_steps, 1.0)
    for name, term in terms.items():
        if name not in problem.streams:
            numpyro.factor(name, -constraint_scale * term)
    for name, stream in streams.items():
        prediction = predict(name, trajectory, params, problem.forcing)
        # the stream's uncertainty at every step (the noise of predictive draws in gaps and
        # in the test period too); only the observed calibration steps are scored
        sigma = jnp.where(stream.sigma > 0, stream.sigma, 1.0)
        if structural_error:
            sigma = sigma * numpyro.sample(f"{ERROR_SCALE_PREFIX}{name}", dist.LogNormal(0.0, 1.0))
        if obs is None:
            numpyro.deterministic(f"{PREDICTION_PREFIX}{name}", prediction)
        numpyro.sample(f"{OBSERVATION_PREFIX}{name}",
                       dist.Normal(prediction, sigma).mask(stream.mask > 0).to_event(1),
                       obs=None if obs is None else obs[name])


def model_for(problem: SiteProblem, config: PosteriorConfig, network=None) -> Callable:
    """:func:`site_model` bound to ``problem`` and the configuration's priors and options;
    call it with ``obs=...`` or none."""
    def model(obs=None):
        site_model(problem, dict(config.priors), config.structural_error, obs=obs,
                   network=network, constraint_scale=config.constraint_scale)
    return model


def latent_sites(problem: SiteProblem, structural_error: bool) -> tuple[str, ...]:
    """Names of the sampled sites of :func:`site_model` (free parameters, then error scales)."""
    scales = tuple(f"{ERROR_SCALE_PREFIX}{name}" for name in likelihood_streams(problem)) \
        if structural_error else ()
    return (*free_parameter_names(problem.config), *scales)


def site_bijections(problem: SiteProblem, config: PosteriorConfig) -> dict[str, Transform]:
    """Map from the sampler's unconstrained coordinates to the value of each latent site."""
    out = {name: biject_to(prior_box(problem.config, name, config.prior_of(name)))
           for name in free_parameter_names(problem.config)}
    for name in latent_sites(problem, config.structural_error):
        if name.startswith(ERROR_SCALE_PREFIX):
            out[name] = biject_to(constraints.positive)
    return out


def to_physical(problem: SiteProblem, config: PosteriorConfig,
                values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values of the latent sites from the sampler's unconstrained coordinates (any shape)."""
    bijections = site_bijections(problem, config)
    return {name: np.asarray(bijections[name](jnp.asarray(value)))
            for name, value in values.items()}


def sampler_coordinates(problem: SiteProblem, config: PosteriorConfig, theta,
                        error_scales: Mapping[str, float] | None = None) -> dict:
    """The sampler's unconstrained coordinates of ``theta`` (a :class:`SiteProblem` pytree of
    registry unconstrained values) and of the structural-error scales (default 1)."""
    physical = constrain(theta["params"], scales=dict(problem.config.parameter_scales))
    bijections = site_bijections(problem, config)
    out = {}
    for name, bijection in bijections.items():
        if name.startswith(ERROR_SCALE_PREFIX):
            stream = name.removeprefix(ERROR_SCALE_PREFIX)
            scale = 1.0 if error_scales is None else error_scales[stream]
            out[name] = bijection.inv(jnp.asarray(scale, jnp.result_type(float)))
        else:
            out[name] = bijection.inv(physical[name])
    return out


# --- the problem as data ----------------------------------------------------------------------
# The sampler, the initialising fit and the predictive draws are compiled once per
# configuration and record length: the site's arrays enter them as arguments, not as constants,
# so that sites and runs of the same configuration and length share the compiled code.


def problem_data(problem: SiteProblem) -> dict:
    """The arrays of ``problem`` as one pytree: forcing, streams, period masks, fixed parameter
    values and valid steps."""
    periods = {f.name: jnp.asarray(getattr(problem.periods, f.name))
               for f in dataclasses.fields(Periods)}
    return {"forcing": problem.forcing, "streams": problem.streams, "periods": periods,
            "fixed": problem.fixed, "valid": problem.valid}


def problem_from_data(calibration: SiteCalibrationConfig, data: Mapping) -> SiteProblem:
    """The :class:`SiteProblem` of :func:`problem_data`'s arrays (which may be traced)."""
    return SiteProblem(calibration, data["forcing"], data["streams"],
                       Periods(**data["periods"]), data["fixed"], data["valid"])


def _potential(config: PosteriorConfig, data: Mapping, values: Mapping, network) -> jax.Array:
    """Potential energy [nats] at the sampler's coordinates ``values``."""
    problem = problem_from_data(config.calibration, data)
    return potential_energy(model_for(problem, config, network), (),
                            {"obs": observed_values(problem)}, values)


def _model_key(config: PosteriorConfig) -> PosteriorConfig:
    """``config`` without the sampler settings (what the log density depends on)."""
    return dataclasses.replace(config, nuts=NutsSettings())


def potential_function(problem: SiteProblem, config: PosteriorConfig) -> Callable:
    """``(unconstrained coordinates, network) -> potential energy`` [nats]: minus the log
    posterior density (unnormalised) in the sampler's coordinates."""
    data = problem_data(problem)

    def potential(values, network=None):
        return _potential(config, data, values, network)

    return potential


def log_density(problem: SiteProblem, config: PosteriorConfig, theta,
                error_scales: Mapping[str, float] | None = None) -> jax.Array:
    """Log posterior density (unnormalised) at ``theta`` in the sampler's coordinates [nats].

    With the default priors these coordinates are the registry's unconstrained values, and

        log_density = -sum_s (n_s / w_s) L_s - sum_s sum_t ln sigma_st - (N / 2) ln(2 pi)
                      - constraint_scale x (constraint terms) + sum_i ln p(z_i)

    with L_s the Gaussian misfit term of stream s in the gradient loss
    (``gaussian_misfit(normalise=True)``: w_s x 0.5 x mean of the squared standardised
    residuals), n_s its observed calibration steps, N = sum_s n_s and
    ln p(z) = ln sigmoid(z) + ln sigmoid(-z) (a uniform position in the box).

    Args:
        problem: the site problem.
        config: the posterior configuration.
        theta: ``{"params": ParameterSet of the free parameters' unconstrained values,
            "network": fixed hybrid weights or None}``.
        error_scales: the structural-error scale of each stream (with ``structural_error``;
            default 1).
    """
    values = sampler_coordinates(problem, config, theta, error_scales)
    return -potential_function(problem, config)(values, theta.get("network"))


@functools.lru_cache(maxsize=8)
def _value_and_gradient_function(config: PosteriorConfig) -> Callable:
    """Jitted ``(theta, data) -> (potential, gradient)`` over a leading axis of
    ``theta = {"values": sampler coordinates, "network": hybrid weights or None}``."""
    def value_and_gradient(theta, data):
        return jax.value_and_grad(
            lambda t: _potential(config, data, t["values"], t["network"]))(theta)

    return jax.jit(jax.vmap(value_and_gradient, in_axes=(0, None)))


def _batched_value_and_gradient(config: PosteriorConfig, theta, data, batch: int):
    """:func:`_value_and_gradient_function` over any number of points, ``batch`` at a time
    (the last batch padded with copies), so that one shape is compiled."""
    function = _value_and_gradient_function(_model_key(config))
    total = jax.tree.leaves(theta)[0].shape[0]
    values, gradients = [], []
    for begin in range(0, total, batch):
        chosen = jnp.minimum(jnp.arange(begin, begin + batch), total - 1)
        value, gradient = function(jax.tree.map(lambda x, c=chosen: x[c], theta), data)
        count = min(batch, total - begin)
        values.append(np.asarray(value)[:count])
        gradients.append(jax.tree.map(lambda x, n=count: np.asarray(x)[:n], gradient))
    return np.concatenate(values), jax.tree.map(lambda *parts: np.concatenate(parts), *gradients)


def potentials(problem: SiteProblem, config: PosteriorConfig, values: Mapping[str, np.ndarray],
               network=None, batch: int = 64) -> np.ndarray:
    """Potential energy [nats] (minus the unnormalised log posterior density) at many points.

    Args:
        problem: the site problem.
        config: the posterior configuration.
        values: the sampler's unconstrained coordinates of every latent site, ``{site: (n,)}``.
        network: fixed hybrid weights (required when the configuration has hybrid terms).
        batch: points per compiled call.

    Returns:
        ``(n,)`` potentials, compiled once per configuration and record length.
    """
    check_network(problem, network)
    dtype = jnp.result_type(float)
    count = int(np.size(next(iter(values.values()))))
    theta = {"values": {name: jnp.asarray(np.ravel(v), dtype) for name, v in values.items()},
             "network": None if network is None else jax.tree.map(
                 lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), network)}
    value, _ = _batched_value_and_gradient(config, theta, problem_data(problem), batch)
    return value


def _where_start(mask: jax.Array, new, old):
    """Per start (leading axis), ``new`` where ``mask`` else ``old``, over pytrees."""
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(pick, new, old)


@functools.lru_cache(maxsize=8)
def _adam_step(iterations: int, learning_rate: float) -> tuple[optax.GradientTransformation,
                                                               Callable]:
    """Adam of the initialising fit (linear warm-up over 20 steps, cosine decay to 2 % of
    ``learning_rate`` at ``iterations``) and its jitted step over a leading axis of starts,
    which leaves a start whose value or gradient is not finite unchanged."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(20, iterations // 2), iterations, 0.02 * learning_rate)
    optimiser = optax.adam(schedule)

    def step(theta, opt_state, gradient, finite):
        updates, new_state = jax.vmap(optimiser.update)(gradient, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        return _where_start(finite, new_theta, theta), _where_start(finite, new_state,
                                                                    opt_state)

    return optimiser, jax.jit(step)


# --- initialisation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InitialFit:
    """Outcome of :func:`initial_fit`.

    Attributes:
        values: unconstrained coordinates of every start after the fit, ``{site: (starts,)}``.
        potential: ``(starts,)`` potential energy there [nats] (inf where not finite).
        network: hybrid weights of the best start (``None`` without hybrid terms).
        chain_starts: the chains' starting coordinates, ``{site: (chains,)}``.
        best: index of the start of lowest potential.
        nonfinite_steps: ``(starts,)`` Adam steps skipped for a non-finite value or gradient.
    """

    values: dict[str, np.ndarray]
    potential: np.ndarray
    network: object
    chain_starts: dict[str, np.ndarray]
    best: int
    nonfinite_steps: np.ndarray


def _starting_values(problem: SiteProblem, config: PosteriorConfig, n_starts: int, seed: int):
    """Random starts in the sampler's coordinates: each parameter at a position uniform in
    [0.05, 0.95] of its prior box (as :meth:`SiteProblem.initial_guesses`), each error scale
    at 1, and the hybrid weights of those starts."""
    guesses = problem.initial_guesses(n_starts, seed)
    dtype = jnp.result_type(float)
    values = {name: jnp.asarray(guesses["params"][name], dtype)
              for name in free_parameter_names(problem.config)}
    for name in latent_sites(problem, config.structural_error):
        if name.startswith(ERROR_SCALE_PREFIX):
            values[name] = jnp.zeros(n_starts, dtype)
    return values, guesses["network"]


def initial_fit(problem: SiteProblem, config: PosteriorConfig, progress: bool = False
                ) -> InitialFit:
    """Short multi-start Adam fit of the posterior mode, to start the chains.

    ``nuts.init_starts`` random starts (:func:`_starting_values`) each take
    ``nuts.init_iterations`` Adam steps (linear warm-up over 20 steps, cosine decay to 2 % of
    ``nuts.init_learning_rate``) on the potential energy, hybrid weights included, skipping a
    step whose value or gradient is not finite, and keep their values of lowest potential. The
    chains then start at the ``nuts.chains`` best starts (``init_chains="distinct"``; starts
    are reused when there are fewer) or at the best one jittered by ``nuts.init_jitter``
    (``"best"``, and always with hybrid terms, whose weights are those of the best start).

    Raises:
        NonFiniteLossError: the potential is not finite at any start.
    """
    settings = config.nuts
    values, network = _starting_values(problem, config, settings.init_starts, settings.seed)
    data = problem_data(problem)
    function = _value_and_gradient_function(_model_key(config))
    optimiser, step = _adam_step(settings.init_iterations, settings.init_learning_rate)
    theta = {"values": values, "network": network}
    opt_state = jax.vmap(optimiser.init)(theta)
    best = jax.tree.map(np.asarray, theta)
    best_value = np.full(settings.init_starts, np.inf)
    nonfinite = np.zeros(settings.init_starts, int)
    for _ in tqdm(range(settings.init_iterations), desc="initial fit", disable=not progress,
                  leave=False):
        value, gradient = function(theta, data)
        value = np.asarray(value)
        finite = np.isfinite(value) & np.all(np.stack(
            [np.all(np.isfinite(np.reshape(leaf, (leaf.shape[0], -1))), axis=1)
             for leaf in jax.tree.leaves(jax.device_get(gradient))]), axis=0)
        improved = finite & (value < best_value)
        best = jax.tree.map(lambda kept, now, mask=improved: np.where(
            mask.reshape(mask.shape + (1,) * (np.ndim(kept) - 1)), now, kept),
            best, jax.device_get(theta))
        best_value = np.where(improved, value, best_value)
        nonfinite += ~finite
        theta, opt_state = step(theta, opt_state, gradient, jnp.asarray(finite))
    if not np.isfinite(best_value).any():
        raise NonFiniteLossError("the posterior density is not finite at any start of the "
                                 "initial fit")
    order = np.argsort(best_value, kind="stable")
    index = int(order[0])
    fitted = {name: np.asarray(v) for name, v in best["values"].items()}
    has_network = network is not None
    fitted_network = (jax.tree.map(lambda x: np.asarray(x[index]), best["network"])
                      if has_network else None)
    if settings.init_chains == "best" or has_network:
        key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 1)
        noise = settings.init_jitter * np.asarray(
            jax.random.normal(key, (settings.chains, len(fitted))))
        noise[0] = 0.0
        starts = {name: fitted[name][index] + noise[:, j] for j, name in enumerate(fitted)}
    else:
        finite_starts = [int(i) for i in order if np.isfinite(best_value[i])]
        chosen = [finite_starts[c % len(finite_starts)] for c in range(settings.chains)]
        starts = {name: v[chosen] for name, v in fitted.items()}
    return InitialFit(fitted, best_value, fitted_network, starts, index, nonfinite)


def laplace_inverse_mass(problem: SiteProblem, config: PosteriorConfig,
                         values: Mapping[str, jax.Array], network=None,
                         max_sd: float = 3.0) -> np.ndarray:
    """Inverse mass matrix of the Laplace approximation at ``values`` (the sampler's
    coordinates, one point): the inverse Hessian of the potential, sites in sorted order (the
    order of the sampler's flattened coordinates). The Hessian is the central difference of
    the gradient with steps of 1e-3 (float64) or 1e-2 (float32) unconstrained units, which
    also averages over the model's kinks; its eigenvalues are raised to at least
    ``1 / max_sd^2`` (a flat or curved-down direction gets standard deviation ``max_sd``
    [unconstrained units]). With ``nuts.dense_mass`` off, the diagonal of that inverse."""
    names = sorted(values)
    dtype = jnp.result_type(float)
    point = jnp.stack([jnp.asarray(values[name], dtype) for name in names])
    step = 1e-3 if dtype == jnp.float64 else 1e-2
    offsets = step * jnp.eye(len(names), dtype=dtype)
    points = jnp.concatenate([point + offsets, point - offsets])
    count = points.shape[0]
    theta = {"values": {name: points[:, i] for i, name in enumerate(names)},
             "network": None if network is None else jax.tree.map(
                 lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), network)}
    _, result = _batched_value_and_gradient(config, theta, problem_data(problem),
                                            config.nuts.init_starts)
    gradients = np.stack([np.asarray(result["values"][name], np.float64) for name in names],
                         axis=1)
    hessian = (gradients[:len(names)] - gradients[len(names):]) / (2.0 * step)
    hessian = 0.5 * (hessian + hessian.T)
    if not np.all(np.isfinite(hessian)):
        inverse = np.eye(len(names)) * max_sd**2
    else:
        eigenvalues, vectors = np.linalg.eigh(hessian)
        eigenvalues = np.maximum(eigenvalues, 1.0 / max_sd**2)
        inverse = (vectors / eigenvalues) @ vectors.T
    return inverse if config.nuts.dense_mass else np.diag(inverse).copy()


# --- sampling ----------------------------------------------------------------------------------

BLOCK = 50
"""Iterations of the sampler per compiled call (the progress bar advances by blocks)."""
FIELDS = ("diverging", "num_steps", "accept_prob", "potential_energy", "energy", "step_size")
"""Per-draw fields of the sampler kept for the diagnostics."""


@dataclass
class NutsResult:
    """Outcome of :func:`run_nuts`.

    Attributes:
        samples: ``{site: (chains, draws)}`` latent values [physical units; error scales 1].
        fields: ``{field: (chains, draws)}``: ``diverging``, ``num_steps`` (leapfrog steps;
            tree depth = floor(log2(num_steps)) + 1), ``accept_prob``, ``potential_energy``
            [nats], ``energy`` [nats], ``step_size`` [unconstrained units].
        post_warmup_state: the sampler state after the warmup (with its random keys).
        chain_method: ``"parallel"`` (one chain per device) or ``"vectorized"``.
        warmup_seconds: wall time of the warmup, compilation included (0 when resumed) [s].
        sampling_seconds: wall time of the sampling [s].
        resumed: whether the warmup state was read from ``state_path``.
    """

    samples: dict[str, np.ndarray]
    fields: dict[str, np.ndarray]
    post_warmup_state: object
    chain_method: str
    warmup_seconds: float
    sampling_seconds: float
    resumed: bool


def chain_method(chains: int) -> str:
    """How chains run: ``"parallel"`` (one per device) when there are several devices and at
    least as many as chains, else ``"vectorized"`` on one device."""
    devices = jax.local_device_count()
    return "parallel" if chains > 1 and devices >= chains else "vectorized"


def _kernel_key(config: PosteriorConfig) -> PosteriorConfig:
    """``config`` with only the sampler settings that the compiled kernel depends on."""
    nuts = config.nuts
    return dataclasses.replace(config, nuts=NutsSettings(
        warmup=nuts.warmup, dense_mass=nuts.dense_mass, target_accept=nuts.target_accept,
        max_tree_depth=nuts.max_tree_depth))


@functools.lru_cache(maxsize=8)
def _nuts_functions(config: PosteriorConfig, parallel: bool) -> tuple[Callable, Callable]:
    """The compiled NUTS ``init(keys, starts, inverse_mass, data, network)`` and
    ``advance(state, n, data, network) -> (state, record)`` over a leading chain axis, for
    ``config`` (as :func:`_kernel_key` leaves it). ``advance`` takes ``n`` <= :data:`BLOCK`
    transitions and records each one's coordinates and :data:`FIELDS`."""
    settings = config.nuts

    def potential_fn_gen(data, network):
        return lambda values: _potential(config, data, values, network)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init_one(key, start, inverse_mass, data, network):
        return init_kernel(start, settings.warmup, inverse_mass_matrix=inverse_mass,
                           dense_mass=settings.dense_mass,
                           target_accept_prob=settings.target_accept,
                           max_tree_depth=settings.max_tree_depth,
                           model_args=(data, network), rng_key=key)

    def record_of(state):
        return {"z": state.z, "diverging": state.diverging, "num_steps": state.num_steps,
                "accept_prob": state.accept_prob,
                "potential_energy": state.potential_energy, "energy": state.energy,
                "step_size": state.adapt_state.step_size}

    def advance_one(state, n, data, network):
        def body(i, carry):
            state, record = carry
            state = sample_kernel(state, model_args=(data, network))
            record = jax.tree.map(lambda r, v: r.at[i].set(v), record, record_of(state))
            return state, record

        record = jax.tree.map(lambda v: jnp.zeros((BLOCK, *jnp.shape(v)), jnp.result_type(v)),
                              record_of(state))
        return jax.lax.fori_loop(0, n, body, (state, record))

    if parallel:
        return (jax.pmap(init_one, in_axes=(0, 0, None, None, None)),
                jax.pmap(advance_one, in_axes=(0, None, None, None)))
    return (jax.jit(jax.vmap(init_one, in_axes=(0, 0, None, None, None))),
            jax.jit(jax.vmap(advance_one, in_axes=(0, None, None, None))))


def _advance(advance: Callable, state, iterations: int, data, network, progress: bool,
             label: str):
    """Take ``iterations`` transitions of every chain; returns the state and the records,
    ``(chains, iterations, ...)``."""
    records = []
    with tqdm(total=iterations, desc=label, disable=not progress, leave=False) as bar:
        done = 0
        while done < iterations:
            n = min(BLOCK, iterations - done)
            state, record = advance(state, n, data, network)
            records.append(jax.tree.map(lambda x, n=n: np.asarray(x)[:, :n],
                                        jax.device_get(record)))
            done += n
            bar.update(n)
    jax.block_until_ready(state)
    return state, jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *records)


def run_nuts(problem: SiteProblem, config: PosteriorConfig, init_params: Mapping,
             network=None, inverse_mass: np.ndarray | None = None,
             state_path: str | Path | None = None, fingerprint: str = "",
             stop_after_warmup: bool = False, progress: bool = True) -> NutsResult | None:
    """Warm up and sample the posterior of ``problem`` with NUTS.

    Each chain adapts its step size and mass matrix (dense or diagonal) over
    ``nuts.warmup`` iterations (NumPyro's windowed adaptation), then takes ``nuts.samples``
    iterations, of which every ``nuts.thin``-th is kept (the last of each group of
    ``thin``). Chains run in parallel over devices when there are as many, else vectorized.
    The post-warmup state (with each chain's random key) is saved to ``state_path``; a later
    call with the same arguments finds it there and only samples, drawing exactly what the
    uninterrupted call draws.

    Args:
        problem: the problem the likelihood sees.
        config: the posterior configuration (``config.nuts`` for the sampler).
        init_params: the chains' starts in the sampler's coordinates, ``{site: (chains,)}``.
        network: fixed hybrid weights (required when the configuration has any).
        inverse_mass: initial inverse mass matrix of the warmup, sites in sorted order (e.g.
            :func:`laplace_inverse_mass`); default identity.
        state_path: where the post-warmup state is saved and resumed from (``.npz``).
        fingerprint: text identifying the run (checked on resume, with the settings).
        stop_after_warmup: return ``None`` once the warmup state is saved (as if killed).
        progress: show progress bars.

    Raises:
        CheckpointMismatchError: ``state_path`` holds the state of another run.
    """
    settings = config.nuts
    check_network(problem, network)
    method = chain_method(settings.chains)
    init, advance = _nuts_functions(_kernel_key(config), method == "parallel")
    data = problem_data(problem)
    dtype = jnp.result_type(float)
    names = sorted(latent_sites(problem, config.structural_error))
    starts = {name: jnp.asarray(np.reshape(init_params[name], (settings.chains,)), dtype)
              for name in names}
    if inverse_mass is None:
        inverse_mass = np.eye(len(names)) if settings.dense_mass else np.ones(len(names))
    inverse_mass = jnp.asarray(inverse_mass, dtype)
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains)
    tag = state_fingerprint(settings, fingerprint)
    # tracing the initialisation also sets up the kernel that ``advance`` runs
    template = jax.eval_shape(init, keys, starts, inverse_mass, data, network)
    state = None
    if state_path is not None and Path(state_path).is_file():
        state = load_warmup_state(state_path, template, tag)
    warmup_seconds, resumed = 0.0, state is not None
    if state is None:
        started = time.perf_counter()
        state = init(keys, starts, inverse_mass, data, network)
        state, _ = _advance(advance, state, settings.warmup, data, network, progress,
                            "warmup")
        warmup_seconds = time.perf_counter() - started
        if state_path is not None:
            save_warmup_state(state_path, state, tag)
        if stop_after_warmup:
            return None
    started = time.perf_counter()
    post_warmup = state
    _, record = _advance(advance, state, settings.samples, data, network, progress,
                         "sampling")
    sampling_seconds = time.perf_counter() - started
    kept = jax.tree.map(lambda x: x[:, settings.thin - 1::settings.thin], record)
    samples = to_physical(problem, config, kept["z"])
    samples = {name: samples[name] for name in latent_sites(problem, config.structural_error)}
    fields = {name: np.asarray(kept[name]) for name in FIELDS}
    return NutsResult(samples, fields, post_warmup, method, warmup_seconds, sampling_seconds,
                      resumed)


def state_fingerprint(settings: NutsSettings, extra: str = "") -> str:
    """Identity of a warmup state: the sampler's settings (the number of kept draws and
    thinning aside) and ``extra``."""
    record = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("samples",
                                                                                 "thin")}
    return json.dumps(record, sort_keys=True) + extra


def save_warmup_state(path: str | Path, state, fingerprint: str) -> None:
    """Write a sampler state (its leaves, in tree order) and its fingerprint, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree.flatten(jax.device_get(state))
    arrays = {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    meta = json.dumps({"fingerprint": fingerprint, "treedef": str(treedef)})
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with open(temporary, "wb") as file:
            np.savez(file, meta=np.asarray(meta), **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_warmup_state(path: str | Path, template, fingerprint: str):
    """The sampler state saved by :func:`save_warmup_state`, with ``template``'s structure
    (arrays or shape-dtype structures).

    Raises:
        CheckpointMismatchError: the file is of another run or cannot be read.
    """
    leaves, treedef = jax.tree.flatten(template)
    try:
        with np.load(path, allow_pickle=False) as content:
            meta = json.loads(str(content["meta"]))
            arrays = [content[f"leaf_{i:04d}"] for i in range(len(leaves))]
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointMismatchError(f"{path}: the saved warmup state cannot be read "
                                      f"({type(error).__name__}); pass --overwrite to start "
                                      "again") from None
    if meta.get("fingerprint") != fingerprint or meta.get("treedef") != str(treedef):
        raise CheckpointMismatchError(
            f"{path}: the saved warmup state was made with other settings or another problem; "
            "use a new output directory or pass --overwrite")
    for saved, like in zip(arrays, leaves, strict=True):
        if saved.shape != tuple(like.shape) or saved.dtype != np.dtype(like.dtype):
            raise CheckpointMismatchError(f"{path}: the saved warmup state does not match this "
                                          "run (shapes or precision); pass --overwrite")
    return jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays])


# --- predictive draws --------------------------------------------------------------------------

PREDICTIVE_BATCH = 100
"""Posterior draws per compiled call of the posterior predictive."""


@functools.lru_cache(maxsize=8)
def _predictive_function(config: PosteriorConfig, sites: tuple[str, ...],
                         num_samples: int | None) -> Callable:
    """Jitted ``(key, samples, data, network) -> draws of sites`` (``num_samples`` prior
    draws when ``samples`` is ``None``)."""
    def draw(key, samples, data, network):
        model = model_for(problem_from_data(config.calibration, data), config, network)
        if num_samples is None:
            predictive = Predictive(model, posterior_samples=samples, return_sites=list(sites))
        else:
            predictive = Predictive(model, num_samples=num_samples, return_sites=list(sites))
        return predictive(key)

    return jax.jit(draw)


def predictive_draws(problem: SiteProblem, config: PosteriorConfig, key, samples=None,
                     num_samples: int | None = None, network=None,
                     model_predictions: bool = False) -> dict[str, np.ndarray]:
    """Draws of every scored stream over the problem's record [stream units].

    With ``samples`` (``{site: (draws,)}``, e.g. the posterior's chains flattened): the
    posterior predictive, computed :data:`PREDICTIVE_BATCH` draws at a time; without:
    ``num_samples`` draws of the prior predictive, whose parameter values are returned too.
    With ``model_predictions``, also the model's prediction of each stream without the
    observation noise, as ``prediction_<stream>`` (the draws with noise are
    ``obs_<stream>``).
    """
    streams = tuple(likelihood_streams(problem))
    sites = [f"{OBSERVATION_PREFIX}{name}" for name in streams]
    if model_predictions:
        sites += [f"{PREDICTION_PREFIX}{name}" for name in streams]
    data = problem_data(problem)
    model_config = _model_key(config)
    if samples is None:
        sites += list(latent_sites(problem, config.structural_error))
        draw = _predictive_function(model_config, tuple(sites), num_samples)
        return {name: np.asarray(value) for name, value in
                jax.device_get(draw(key, None, data, network)).items()}
    draw = _predictive_function(model_config, tuple(sites), None)
    samples = {name: np.asarray(value) for name, value in samples.items()}
    total = next(iter(samples.values())).shape[0]
    parts = []
    for index, begin in enumerate(range(0, total, PREDICTIVE_BATCH)):
        chosen = np.minimum(np.arange(begin, begin + PREDICTIVE_BATCH), total - 1)
        batch = {name: jnp.asarray(value[chosen]) for name, value in samples.items()}
        result = jax.device_get(draw(jax.random.fold_in(key, index), batch, data, network))
        parts.append({name: np.asarray(value)[:min(PREDICTIVE_BATCH, total - begin)]
                      for name, value in result.items()})
    return {name: np.concatenate([part[name] for part in parts]) for name in sites}


# --- diagnostics -------------------------------------------------------------------------------


def tree_depth(num_steps: np.ndarray) -> np.ndarray:
    """NUTS tree depth of a transition from its number of leapfrog steps."""
    return np.floor(np.log2(np.maximum(num_steps, 1))).astype(int) + 1


def max_depth_share(num_steps: np.ndarray, max_tree_depth: int) -> float:
    """Share of transitions whose tree reached ``max_tree_depth`` (2^depth - 1 steps)."""
    return float(np.mean(np.asarray(num_steps) >= 2 ** max_tree_depth - 1))


def bound_shares(samples: Mapping[str, np.ndarray], problem: SiteProblem,
                 edge: float = 0.01) -> dict[str, dict[str, float]]:
    """Per free parameter, the shares of draws within ``edge`` of the registry box's lower and
    upper edge, measured on the parameter's transform scale (position in [0, 1])."""
    out = {}
    for name in free_parameter_names(problem.config):
        spec = SPECS[name]
        box = ScaledBox(spec.lower, spec.upper, parameter_scale(problem.config, name))
        position = np.asarray(unit_transform(box).inv(jnp.asarray(samples[name])))
        out[name] = {"lower": float(np.mean(position < edge)),
                     "upper": float(np.mean(position > 1.0 - edge))}
    return out


def divergence_positions(samples: Mapping[str, np.ndarray], diverging: np.ndarray
                         ) -> dict[str, float]:
    """Per site, the mean position in [0, 1] of the divergent draws among the other draws
    (mid-rank / their count): about 0.5 when the divergences spread like the draws, near 0 or
    1 when they gather at the low or high end of the site's marginal. Empty without
    divergent or without non-divergent draws.

    Args:
        samples: ``{site: (chains, draws)}``.
        diverging: ``(chains, draws)`` flags of the divergent transitions.
    """
    flags = np.ravel(np.asarray(diverging)).astype(bool)
    if not flags.any() or flags.all():
        return {}
    out = {}
    for name, values in samples.items():
        values = np.ravel(np.asarray(values, np.float64))
        others = np.sort(values[~flags])
        ranks = 0.5 * (np.searchsorted(others, values[flags], side="left")
                       + np.searchsorted(others, values[flags], side="right"))
        out[name] = float(np.mean(ranks) / others.size)
    return out


def divergence_gathering(positions: Mapping[str, float], count: int,
                         sigmas: float = 3.0, least: int = 5) -> list[str]:
    """The sites where ``count`` divergent transitions gather, as ``"low <site>"`` or
    ``"high <site>"``: those whose :func:`divergence_positions` lies more than ``sigmas``
    standard deviations of the mean of ``count`` uniform positions (sqrt(1 / (12 count)))
    from 0.5; none below ``least`` divergences."""
    if count < least:
        return []
    limit = sigmas * math.sqrt(1.0 / (12.0 * count))
    return [f"{'low' if position < 0.5 else 'high'} {name}"
            for name, position in positions.items() if abs(position - 0.5) > limit]


def separated_chains(samples: Mapping[str, np.ndarray], threshold: float = 3.0
                     ) -> dict[str, list[dict]]:
    """Chains whose mean differs from the other chains' mean by more than ``threshold``
    pooled within-chain standard deviations, per site: ``[{"chain": c, "distance": d}]``.

    Args:
        samples: ``{site: (chains, draws)}``.
        threshold: distance [pooled within-chain sd] from which a chain is reported.
    """
    out = {}
    for name, values in samples.items():
        values = np.asarray(values, np.float64)
        if values.shape[0] < 2 or values.shape[1] < 2:
            continue
        means = values.mean(axis=1)
        pooled = math.sqrt(float(np.mean(values.var(axis=1, ddof=1))))
        found = []
        for chain in range(values.shape[0]):
            others = np.delete(means, chain).mean()
            if pooled > 0:
                distance = abs(means[chain] - others) / pooled
            else:
                distance = math.inf if means[chain] != others else 0.0
            if distance > threshold:
                found.append({"chain": chain, "distance": float(distance)})
        if found:
            out[name] = found
    return out
