"""Sensitivity of a site's annual carbon and water fluxes to the model's parameters.

Both views study one function of the parameters, y(p): the mean over a record's calendar years
of the annual total of an observable (GPP, NEE and ET by default):

* **local**: the derivatives dy/dp at one parameter set, by forward-mode automatic
  differentiation (``jax.jacfwd``, one tangent per parameter), normalised to elasticities
  (Saltelli et al. 2008, *Global Sensitivity Analysis: The Primer*, sect. 1.2);
* **global**: variance-based first-order (S1) and total (ST) Sobol indices over the registry's
  prior box, from a scrambled Sobol sequence (Saltelli et al. 2010, Comput. Phys. Commun. 181,
  259-270, estimators of S1 and of ST after Jansen 1999) as SALib implements them (Herman &
  Usher 2017, JOSS 2(9), 97; Iwanaga et al. 2022, Socio-Environ. Syst. Model. 4, 18155).

The box is uniform in each parameter's *transform coordinate* x: ln p for a log-scaled
parameter, ln(p - 1) for a log_excess-scaled one and p for a linear one (the registry's
``transform_scale``, or an override in ``scales``): the coordinates in which the logistic map
of :func:`differland.params.constrain` places a parameter linearly between its bounds.

JAX and numpy only; SALib is imported by the functions that call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from differland._pytree import pytree_dataclass
from differland.config import ModelConfig
from differland.forcing import Forcing
from differland.model import simulate
from differland.observations import OPERATORS, calendar_groups, predict
from differland.params import SPECS, ParameterSet, Scale

OUTPUTS: tuple[str, ...] = ("gpp", "nee", "et")
"""Observables studied by default (observation operators of rates per day)."""

PHASE_PARAMETERS: frozenset[str] = frozenset({"labile_release_day", "leaf_fall_day"})
"""Parameters that are dates on the model clock, the phase of a 365.25-d cycle. Their origin is
arbitrary (a date and the same date a year later act alike), so ln p, and with it an
elasticity, has no meaning for them."""

ELASTICITY = "elasticity"
SCALED = "scaled"
MEASURES = (ELASTICITY, SCALED)
"""The two normalisations of a local derivative (see :func:`measure`)."""


# --- the studied function ------------------------------------------------------------------------


@pytree_dataclass
class CalendarYears:
    """The calendar years a record's steps fall in.

    Attributes:
        index: calendar year of each step, 0 for the record's first year, int32 ``(T,)``.
        days: length of each calendar year [d] (365 or 366), ``(n_years,)``.
    """

    index: jax.Array
    days: jax.Array


def calendar_years(dates) -> CalendarYears:
    """The calendar years of a record's ``dates`` (anything convertible to ``datetime64[D]``).

    Raises:
        ValueError: a calendar year between the first and the last holds no step.
    """
    index, n_years = calendar_groups(dates, "year")
    starts = np.datetime64(np.asarray(dates, dtype="datetime64[D]")[0], "Y") + np.arange(
        n_years + 1)
    present = np.bincount(np.asarray(index), minlength=n_years) > 0
    if not present.all():
        missing = [str(year) for year in starts[:-1][~present]]
        raise ValueError(f"the record has no step in calendar year(s) {', '.join(missing)}")
    days = np.diff(starts.astype("datetime64[D]")).astype(np.float64)
    return CalendarYears(index=index, days=jnp.asarray(days, jnp.result_type(float)))


def first_years(forcing: Forcing, dates, n_years: int | None = None
                ) -> tuple[Forcing, CalendarYears]:
    """The forcing of a record's first ``n_years`` calendar years (``None``: the whole record)
    and their :func:`calendar_years`; ``forcing`` and ``dates`` share the time axis ``(T,)``."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    if n_years is not None:
        if n_years < 1:
            raise ValueError(f"n_years must be a positive number of years, got {n_years}")
        year = dates.astype("datetime64[Y]").astype(np.int64)
        dates = dates[year < year[0] + n_years]
    steps = len(dates)
    window = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[:steps]), forcing)
    return window, calendar_years(dates)


def annual_units(name: str) -> str:
    """Units of the annual total of observable ``name``: its per-day rate's units per year."""
    units = OPERATORS[name].units
    if not units.endswith(" d-1"):
        raise ValueError(f"{name} [{units}] is not a rate per day; it has no annual total")
    return units.removesuffix(" d-1") + " yr-1"


@partial(jax.jit, static_argnames=("config", "outputs"))
def annual_means(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                 years: CalendarYears, outputs: tuple[str, ...] = OUTPUTS
                 ) -> dict[str, jax.Array]:
    """Mean over the record's calendar years of the annual total of each observable.

    A year's total is the step-length-weighted mean rate over the record's steps in that year
    times the year's length, so a year the record covers in part counts as if its missing days
    had the mean rate of the days it has; for whole years it is the plain sum. Jitted
    (``config`` and ``outputs`` static), differentiable in ``params`` and vmappable over a
    leading batch axis of them.

    Args:
        params: physical parameter values, scalars.
        forcing: the record's forcing, fields ``(T,)``.
        config: model configuration (only the end state is kept, whatever ``keep_states``).
        years: calendar years of the record's steps (:func:`calendar_years`).
        outputs: observation operators of rates per day (``differland.observations``).

    Returns:
        ``{name: mean annual total}`` [:func:`annual_units`], scalars; NEE is positive for
        carbon to the atmosphere.
    """
    trajectory = simulate(params, forcing, dataclasses.replace(config, keep_states=False))
    n_years = years.days.shape[0]
    step_days = jax.ops.segment_sum(forcing.delta_t, years.index, num_segments=n_years)
    means = {}
    for name in outputs:
        rate = predict(name, trajectory, params, forcing)
        amount = jax.ops.segment_sum(rate * forcing.delta_t, years.index, num_segments=n_years)
        means[name] = jnp.mean(amount / step_days * years.days)
    return means


# --- local sensitivities -------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("config", "names", "outputs"))
def parameter_jacobian(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                       years: CalendarYears, names: tuple[str, ...],
                       outputs: tuple[str, ...] = OUTPUTS) -> dict[str, dict[str, jax.Array]]:
    """Derivatives of :func:`annual_means` with respect to the parameters ``names``.

    Forward mode (``jax.jacfwd``): one tangent per parameter, the others held at ``params``.

    Returns:
        ``{output: {name: dy/dp}}`` [annual units of the output per units of the parameter].
    """
    def of(selected):
        return annual_means(params.replace(**selected), forcing, config, years, outputs)

    return jax.jacfwd(of)({name: params[name] for name in names})


def measure(name: str) -> str:
    """How the local derivative of parameter ``name`` is normalised.

    ``"elasticity"``, (dy/dp) p / |y|: the relative change of y per relative change of p,
    for a parameter with a natural zero (every registry parameter with a positive lower bound).
    ``"scaled"``, (dy/dp) (upper - lower) / |y|: the relative change of y, linearly
    extrapolated over the prior range of p, for a date (:data:`PHASE_PARAMETERS`) or a
    parameter whose range reaches zero or below, where ln p has no meaning.
    """
    if name in PHASE_PARAMETERS or SPECS[name].lower <= 0.0:
        return SCALED
    return ELASTICITY


@dataclass(frozen=True)
class LocalSensitivities:
    """Local sensitivities of the annual means at one parameter set.

    Attributes:
        values: ``{output: y}``, the annual means there [annual units].
        derivatives: ``{output: {name: dy/dp}}`` [annual units per parameter units].
        normalised: ``{output: {name: s}}`` [1], ``s`` as :func:`measure` says; its sign is
            that of dy/dp whatever the sign of y (for y > 0, the elasticity is d ln y / d ln p).
        measures: ``{name: "elasticity" or "scaled"}``.
    """

    values: dict[str, float]
    derivatives: dict[str, dict[str, float]]
    normalised: dict[str, dict[str, float]]
    measures: dict[str, str]


def normalise(derivatives: Mapping[str, Mapping[str, float]], values: Mapping[str, float],
              params: ParameterSet) -> dict[str, dict[str, float]]:
    """Normalised sensitivities ``{output: {name: s}}`` [1] (see :func:`measure`).

    Raises:
        ValueError: an annual mean is exactly zero, so no relative change exists.
    """
    out = {}
    for output, by_name in derivatives.items():
        size = abs(float(values[output]))
        if size == 0.0:
            raise ValueError(f"the annual mean of {output} is 0: relative sensitivities of it "
                             "are undefined")
        scaled = {}
        for name, derivative in by_name.items():
            spec = SPECS[name]
            scale = (float(params[name]) if measure(name) == ELASTICITY
                     else spec.upper - spec.lower)
            scaled[name] = float(derivative) * scale / size
        out[output] = scaled
    return out


def elasticities(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                 years: CalendarYears, names: Sequence[str] | None = None,
                 outputs: Sequence[str] = OUTPUTS) -> LocalSensitivities:
    """Local sensitivities of the annual means to ``names`` at ``params``.

    Args:
        params: physical parameter values, scalars.
        forcing: as :func:`annual_means`.
        config: as :func:`annual_means`.
        years: as :func:`annual_means`.
        names: parameters to differentiate (default: ``config.parameter_names()``, every
            parameter the configuration reads).
        outputs: observables (rates per day).
    """
    names = tuple(config.parameter_names() if names is None else names)
    outputs = tuple(outputs)
    values = jax.device_get(annual_means(params, forcing, config, years, outputs))
    jacobian = jax.device_get(parameter_jacobian(params, forcing, config, years, names, outputs))
    values = {k: float(v) for k, v in values.items()}
    derivatives = {k: {n: float(d) for n, d in by_name.items()} for k, by_name in jacobian.items()}
    return LocalSensitivities(values=values, derivatives=derivatives,
                              normalised=normalise(derivatives, values, params),
                              measures={name: measure(name) for name in names})


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(name, score)`` pairs by decreasing magnitude of the score (ties by name)."""
    return sorted(scores.items(), key=lambda item: (-abs(item[1]), item[0]))


# --- the prior box in transform coordinates -----------------------------------------------------


def _scale(name: str, scales: Mapping[str, Scale] | None) -> Scale:
    return (scales or {}).get(name, SPECS[name].transform_scale)


def _coordinate(scale: Scale, value):
    if scale == "log":
        return jnp.log(value)
    if scale == "log_excess":
        return jnp.log(value - 1.0)
    return value


def _value(scale: Scale, coordinate):
    if scale == "log":
        return jnp.exp(coordinate)
    if scale == "log_excess":
        return 1.0 + jnp.exp(coordinate)
    return coordinate


def coordinate_bounds(name: str, scales: Mapping[str, Scale] | None = None
                      ) -> tuple[float, float]:
    """Bounds of parameter ``name``'s prior box in its transform coordinate."""
    spec, scale = SPECS[name], _scale(name, scales)
    return (float(_coordinate(scale, np.float64(spec.lower))),
            float(_coordinate(scale, np.float64(spec.upper))))


def to_coordinates(params: ParameterSet, names: Sequence[str],
                   scales: Mapping[str, Scale] | None = None) -> jax.Array:
    """Transform coordinates of ``names`` in ``params``, stacked on a last axis ``(..., D)``."""
    return jnp.stack([_coordinate(_scale(n, scales), params[n]) for n in names], axis=-1)


def from_coordinates(coordinates: jax.Array, names: Sequence[str],
                     scales: Mapping[str, Scale] | None = None) -> dict[str, jax.Array]:
    """Physical values ``{name: (...)}`` of transform coordinates ``(..., D)`` (inverse of
    :func:`to_coordinates`)."""
    return {n: _value(_scale(n, scales), coordinates[..., i]) for i, n in enumerate(names)}


def coordinate_derivatives(local: LocalSensitivities, params: ParameterSet,
                           scales: Mapping[str, Scale] | None = None
                           ) -> dict[str, dict[str, float]]:
    """Local derivatives with respect to the transform coordinates, times the box's width.

    ``g = dy/dp dp/dx (b - a)`` [annual units]: the change of y, linearly extrapolated, over
    the whole prior range [a, b] of x (dp/dx = p for log, p - 1 for log_excess, 1 for linear).
    """
    out = {}
    for output, by_name in local.derivatives.items():
        widths = {}
        for name, derivative in by_name.items():
            scale = _scale(name, scales)
            at = _coordinate(scale, jnp.asarray(params[name], jnp.result_type(float)))
            slope = float(jax.grad(partial(_value, scale))(at))
            lower, upper = coordinate_bounds(name, scales)
            widths[name] = derivative * slope * (upper - lower)
        out[output] = widths
    return out


def linear_sobol_indices(local: LocalSensitivities, params: ParameterSet,
                         scales: Mapping[str, Scale] | None = None
                         ) -> dict[str, dict[str, float]]:
    """The Sobol indices y would have if it were linear in the transform coordinates, with the
    local gradient everywhere in the box: S1 = ST = g_i^2 / sum_j g_j^2 (``g`` from
    :func:`coordinate_derivatives`; a uniform x_i of width w has variance w^2 / 12) [1].

    Where these match the estimated indices, the box width alone explains the global ranking;
    where they do not, nonlinearity or interactions do.
    """
    out = {}
    for output, widths in coordinate_derivatives(local, params, scales).items():
        total = sum(g * g for g in widths.values())
        out[output] = {n: (g * g / total if total > 0 else 0.0) for n, g in widths.items()}
    return out


# --- global sensitivities (Sobol indices) ------------------------------------------------------


def sobol_problem(names: Sequence[str], scales: Mapping[str, Scale] | None = None) -> dict:
    """The SALib problem of the prior box of ``names``: uniform in each transform coordinate.

    Returns:
        ``{"num_vars": D, "names": [...], "bounds": [[a, b], ...]}``, bounds in the transform
        coordinates (see the module docstring).
    """
    names = list(names)
    return {"num_vars": len(names), "names": names,
            "bounds": [list(coordinate_bounds(n, scales)) for n in names]}


def coordinate_function(params: ParameterSet, forcing: Forcing, config: ModelConfig,
                        years: CalendarYears, names: Sequence[str],
                        outputs: Sequence[str] = OUTPUTS,
                        scales: Mapping[str, Scale] | None = None
                        ) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """The annual means as a jitted function of a batch of transform coordinates.

    The returned function maps ``(B, D)`` coordinates of ``names`` (the columns of a
    :func:`sobol_problem` sample) to ``{output: (B,)}`` annual means [annual units]: the jitted
    :func:`annual_means` vmapped over the batch; the parameters not in ``names`` stay at
    ``params``.
    """
    names, outputs = tuple(names), tuple(outputs)
    dtype = jnp.result_type(float)

    def one(coordinates):
        changed = params.replace(**from_coordinates(coordinates, names, scales))
        return annual_means(changed, forcing, config, years, outputs)

    batched = jax.jit(jax.vmap(one))
    return lambda coordinates: batched(jnp.asarray(coordinates, dtype))


def sobol_sample(problem: Mapping, n_base: int, seed: int = 0) -> np.ndarray:
    """Saltelli's sample of ``problem`` from a scrambled Sobol sequence (SALib), for first-order
    and total indices: ``(n_base (D + 2), D)`` points in the transform coordinates.

    Raises:
        ValueError: ``n_base`` is not a power of 2 (the sequence's balance needs one).
    """
    from SALib.sample import sobol

    if n_base < 2 or n_base & (n_base - 1):
        raise ValueError(f"n_base must be a power of 2 (>= 2), got {n_base}")
    return sobol.sample(dict(problem), n_base, calc_second_order=False, scramble=True,
                        seed=seed)


def evaluate_in_batches(function: Callable[[np.ndarray], Mapping[str, jax.Array]],
                        sample: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``function`` over the rows of ``sample``, ``batch_size`` rows per call.

    The last batch is padded (with its last row) to ``batch_size`` so that every call has
    one shape and a jitted function compiles once; memory is that of one batch.

    Returns:
        ``{output: (n,)}`` float64 arrays, one value per row.
    """
    sample = np.asarray(sample)
    pieces: dict[str, list[np.ndarray]] = {}
    for start in range(0, sample.shape[0], batch_size):
        rows = sample[start:start + batch_size]
        padded = np.concatenate([rows, np.repeat(rows[-1:], batch_size - len(rows), axis=0)])
        for name, values in jax.device_get(function(padded)).items():
            pieces.setdefault(name, []).append(np.asarray(values, np.float64)[:len(rows)])
    return {name: np.concatenate(parts) for name, parts in pieces.items()}


@dataclass(frozen=True)
class SobolIndices:
    """Variance-based sensitivity indices of one output over a box.

    Attributes:
        names: the box's parameters, in the problem's order.
        first_order: S1 per parameter [1], the share of the output's variance that the
            parameter explains alone.
        first_order_confidence: half-width of S1's bootstrap confidence interval [1].
        total_order: ST per parameter [1], the share explained by the parameter with all its
            interactions (ST - S1 is its share through interactions).
        total_order_confidence: half-width of ST's bootstrap confidence interval [1].
        confidence_level: level of those intervals (e.g. 0.95).
        n_evaluations: model evaluations behind the estimates.
        mean, variance: of the output over the sample [output units, output units^2].
    """

    names: tuple[str, ...]
    first_order: np.ndarray
    first_order_confidence: np.ndarray
    total_order: np.ndarray
    total_order_confidence: np.ndarray
    confidence_level: float
    n_evaluations: int
    mean: float
    variance: float

    def ranked(self) -> list[tuple[str, float, float, float, float]]:
        """``(name, ST, ST half-width, S1, S1 half-width)`` by decreasing ST."""
        order = sorted(range(len(self.names)), key=lambda i: (-self.total_order[i],
                                                              self.names[i]))
        return [(self.names[i], float(self.total_order[i]),
                 float(self.total_order_confidence[i]), float(self.first_order[i]),
                 float(self.first_order_confidence[i])) for i in order]


def sobol_analysis(problem: Mapping, outputs: Mapping[str, np.ndarray], *,
                   confidence_level: float = 0.95, n_resamples: int = 100, seed: int = 0
                   ) -> dict[str, SobolIndices]:
    """First-order and total Sobol indices of each output, from model values over a
    :func:`sobol_sample` of ``problem`` (SALib's estimators, bootstrap confidence intervals).

    Raises:
        ValueError: an output has non-finite values or does not vary over the sample.
    """
    from SALib.analyze import sobol

    found = {}
    for output, values in outputs.items():
        values = np.asarray(values, np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{output}: {np.count_nonzero(~np.isfinite(values))} of "
                             f"{values.size} model values are not finite")
        if np.var(values) == 0.0:
            raise ValueError(f"{output}: the output does not vary over the sample")
        result = sobol.analyze(dict(problem), values, calc_second_order=False,
                               num_resamples=n_resamples, conf_level=confidence_level,
                               seed=seed)
        found[output] = SobolIndices(
            names=tuple(problem["names"]),
            first_order=np.asarray(result["S1"]),
            first_order_confidence=np.asarray(result["S1_conf"]),
            total_order=np.asarray(result["ST"]),
            total_order_confidence=np.asarray(result["ST_conf"]),
            confidence_level=confidence_level, n_evaluations=values.size,
            mean=float(np.mean(values)), variance=float(np.var(values)))
    return found


def sobol_indices(function: Callable[[np.ndarray], Mapping[str, jax.Array]], problem: Mapping,
                  n_base: int, *, batch_size: int = 512, seed: int = 0,
                  confidence_level: float = 0.95, n_resamples: int = 100
                  ) -> dict[str, SobolIndices]:
    """Sobol indices of every output of ``function`` over the box of ``problem``.

    Samples the box (:func:`sobol_sample`, ``n_base (D + 2)`` points), evaluates ``function``
    on batches of ``batch_size`` points (:func:`evaluate_in_batches`) and estimates S1 and ST
    with their confidence intervals (:func:`sobol_analysis`).

    Args:
        function: ``(B, D)`` transform coordinates -> ``{output: (B,)}``, e.g. from
            :func:`coordinate_function`.
        problem: the box (:func:`sobol_problem`).
        n_base: base sample size, a power of 2; the estimators' error falls as
            1 / sqrt(n_base).
        batch_size: points per call of ``function``.
        seed: seed of the scrambling and of the bootstrap.
        confidence_level: level of the confidence intervals.
        n_resamples: bootstrap resamples.
    """
    sample = sobol_sample(problem, n_base, seed)
    values = evaluate_in_batches(function, sample, batch_size)
    return sobol_analysis(problem, values, confidence_level=confidence_level,
                          n_resamples=n_resamples, seed=seed)


def interaction_share(indices: SobolIndices) -> float:
    """1 - sum of S1 [1]: the share of the output's variance that no parameter explains alone
    (interactions; 0 for an additive function)."""
    return 1.0 - float(np.sum(indices.first_order))

