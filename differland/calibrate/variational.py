"""Variational posteriors (SVI): many sites at once, and a Bayesian spatialization network.

Both approximate the site posterior of :mod:`differland.calibrate.bayes` (the same priors,
likelihood, structural-error scales and constraint potentials) in the sampler's unconstrained
coordinates: one vector z per site, its entries the latent sites of
:func:`~differland.calibrate.bayes.latent_sites` in that order. The NumPyro model of a site
draws z from an improper flat density and adds the site's log posterior density as a factor,
so the evidence lower bound (ELBO) that :class:`numpyro.infer.Trace_ELBO` estimates is that of
the site posterior.

Two families of approximations:

* **Per site** (:func:`fit_sites`): each site has its own guide (``"normal"``:
  :class:`~numpyro.infer.autoguide.AutoNormal`, independent normals; ``"lowrank"``:
  :class:`~numpyro.infer.autoguide.AutoLowRankMultivariateNormal`; ``"multivariate"``:
  :class:`~numpyro.infer.autoguide.AutoMultivariateNormal`, a full covariance). Every site's
  guide starts at the best point of a short multi-start gradient fit of that site; all sites
  take their SVI steps together (one vectorised, compiled step).
* **Amortised over places** (:func:`fit_network`): the spatialization network maps a place's
  predictors x to independent normals q(z | x) = Normal(mu(x), s(x)) over the site's
  coordinates: a variational posterior over the network's outputs. The weights are point
  estimates: the credible intervals the network gives a new place are the widths of the
  posteriors it learned at similar training sites, without the uncertainty of the weights
  themselves (an ensemble of seeds adds some of it).

Configurations with hybrid neural terms are not supported here (their weights would need a
fit per site).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro import handlers
from numpyro.contrib.module import nnx_module
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from numpyro.infer.initialization import init_to_value
from numpyro.infer.svi import SVIState
from tqdm.auto import tqdm

from differland.calibrate.bayes import (
    NutsSettings,
    PosteriorConfig,
    _potential,
    initial_fit,
    laplace_inverse_mass,
    latent_sites,
    problem_data,
)
from differland.calibrate.gradient import (
    MAX_SEED,
    SettingsError,
    check_integer,
    check_number,
    checkpoint_manager,
    restore_checkpoint,
    save_checkpoint,
)
from differland.calibrate.site import CalibrationConfigError, SiteProblem, settings_with
from differland.spatial import network as spatial_network
from differland.spatial.network import SpatialNetwork

GUIDES = ("normal", "lowrank", "multivariate")
"""Per-site guide families of :func:`fit_sites`."""

INITS = ("laplace", "scale")
"""How the per-site guides start (see :class:`SviSettings`)."""

LATENT = "z"
"""Name of the sample site of a site's coordinates in the NumPyro models of this module."""

BLOCK = 100
"""SVI steps per compiled call (the progress bar and checkpoints advance by blocks)."""


@dataclass(frozen=True)
class SviSettings:
    """Settings of a variational fit.

    Attributes:
        guide: per-site guide family (:data:`GUIDES`).
        rank: rank of the ``"lowrank"`` guide's covariance factor (0: round(sqrt(P)) for P
            coordinates).
        steps: SVI (Adam) steps.
        learning_rate: peak learning rate (linear warm-up over 5 % of the steps, then cosine
            decay to 5 %) [unconstrained units].
        particles: Monte Carlo draws of the ELBO per step.
        draws: posterior draws kept per site (or per place and network).
        init: ``"scale"``: each site's guide starts at its start as independent normals of
            standard deviation ``init_scale``; ``"laplace"``: as the Laplace approximation
            there (the inverse Hessian of the potential: standard deviations, and for the
            ``lowrank`` and ``multivariate`` guides the correlations), which suits posteriors
            whose every direction the data constrain: a flat direction starts as wide as
            the prior. The amortised network always starts from ``init_scale``.
        init_scale: initial standard deviation of the guides [unconstrained units].
        seed: seed of the starts, the ELBO's draws and the posterior draws.
        checkpoint_every: steps between checkpoints (a multiple of the compiled block).
        hidden, depth: the amortising network's hidden width and layers.
        seeds: networks of the amortised fit; several form an equal-weight mixture.
    """

    guide: str = "lowrank"
    rank: int = 0
    steps: int = 3000
    learning_rate: float = 0.01
    particles: int = 1
    draws: int = 1000
    init: str = "scale"
    init_scale: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    hidden: int = 32
    depth: int = 2
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        if self.guide not in GUIDES:
            raise SettingsError(f"guide must be one of {', '.join(GUIDES)}, not {self.guide!r}")
        if self.init not in INITS:
            raise SettingsError(f"init must be one of {', '.join(INITS)}, not {self.init!r}")
        check_integer("rank", self.rank, 0)
        for key in ("steps", "particles", "draws", "checkpoint_every", "hidden", "depth"):
            check_integer(key, getattr(self, key), 1)
        check_integer("seed", self.seed, 0, MAX_SEED)
        check_number("learning_rate", self.learning_rate, 0.0, positive=True)
        check_number("init_scale", self.init_scale, 0.0, positive=True)
        if self.checkpoint_every % BLOCK:
            raise SettingsError(f"checkpoint_every must be a multiple of {BLOCK}, not "
                                f"{self.checkpoint_every}")
        seeds = tuple(self.seeds) if isinstance(self.seeds, list | tuple) else self.seeds
        if not isinstance(seeds, tuple) or not seeds:
            raise SettingsError(f"seeds must be a non-empty list of seeds, not {self.seeds!r}")
        for value in seeds:
            check_integer("seeds", value, 0, MAX_SEED)
        if len(set(seeds)) != len(seeds):
            raise SettingsError(f"seeds must differ, not {list(seeds)}")
        object.__setattr__(self, "seeds", seeds)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "seeds": list(self.seeds)}


def svi_settings(values, base: SviSettings | None = None,
                 prefix: str = "config: svi.") -> SviSettings:
    """:class:`SviSettings` from a mapping of overrides on ``base`` (default: defaults)
    (see :func:`~differland.calibrate.site.settings_with`)."""
    return settings_with(SviSettings, values, base, prefix)


def check_supported(config: PosteriorConfig) -> None:
    """Refuse configurations the variational fits do not support (hybrid neural terms)."""
    sizes = config.calibration.model_config.network_sizes
    if sizes:
        raise CalibrationConfigError(
            f"config: the neural {', '.join(sizes)} term(s) are not supported by the "
            "variational posteriors; choose process options without neural terms")


# --- the models --------------------------------------------------------------------------------


def site_log_density(config: PosteriorConfig, names: Sequence[str], z: jax.Array,
                     data: Mapping) -> jax.Array:
    """Log posterior density (unnormalised) [nats] of one site's coordinates ``z`` (P,)."""
    values = {name: z[j] for j, name in enumerate(names)}
    with handlers.block():  # the site model's own sample sites stay inside the density
        return -_potential(config, data, values, None)


def coordinates_model(config: PosteriorConfig, names: tuple[str, ...], data: Mapping) -> None:
    """One site: z ~ flat on R^P, with the site's log posterior density as a factor."""
    z = numpyro.sample(LATENT, dist.ImproperUniform(constraints.real_vector, (),
                                                    (len(names),)))
    numpyro.factor("log_density", site_log_density(config, names, z, data))


def places_model(config: PosteriorConfig, names: tuple[str, ...], data: Mapping,
                 inputs: jax.Array) -> None:
    """Every place of ``data`` (leading axis) with its own coordinates, as
    :func:`coordinates_model` (``inputs`` are the guide's)."""
    with numpyro.plate("place", inputs.shape[0]):
        z = numpyro.sample(LATENT, dist.ImproperUniform(constraints.real_vector, (),
                                                        (len(names),)))
    density = jax.vmap(lambda zi, di: site_log_density(config, names, zi, di))(z, data)
    numpyro.factor("log_density", jnp.sum(density))


def scale_of(raw: jax.Array, init_scale: float) -> jax.Array:
    """Standard deviation of the amortised guide from the network's raw output: equal to
    ``init_scale`` at 0, positive and smooth [unconstrained units]."""
    return init_scale * jax.nn.softplus(raw) / jnp.log(2.0) + 1e-5


def network_guide(module: SpatialNetwork, init_scale: float, count: int, data,
                  inputs: jax.Array) -> None:
    """q(z_i | x_i) = Normal(mu(x_i), s(x_i)) for every place i, from the network's outputs
    (the first P are mu, the next P the raw scales of :func:`scale_of`)."""
    network = nnx_module("spatial", module)
    outputs = network(inputs)
    with numpyro.plate("place", inputs.shape[0]):
        numpyro.sample(LATENT, dist.Normal(outputs[:, :count],
                                           scale_of(outputs[:, count:], init_scale))
                       .to_event(1))


# --- optimisation ------------------------------------------------------------------------------


def _optimiser(settings: SviSettings) -> optax.GradientTransformation:
    warmup = max(1, settings.steps // 20)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, settings.learning_rate, warmup, max(settings.steps, warmup + 1),
        0.05 * settings.learning_rate)
    return optax.adam(schedule)


def _guide(settings: SviSettings, model: Callable, start: np.ndarray):
    init = init_to_value(values={LATENT: jnp.asarray(start)})
    if settings.guide == "normal":
        return AutoNormal(model, init_loc_fn=init, init_scale=settings.init_scale)
    if settings.guide == "lowrank":
        return AutoLowRankMultivariateNormal(model, init_loc_fn=init,
                                             init_scale=settings.init_scale,
                                             rank=settings.rank or None)
    return AutoMultivariateNormal(model, init_loc_fn=init, init_scale=settings.init_scale)


def _location_name(params: Mapping) -> str:
    """The guide parameter that holds the location of z (AutoNormal names it per site)."""
    for name in (f"{LATENT}_auto_loc", "auto_loc"):
        if name in params:
            return name
    raise KeyError(f"no location among the guide's parameters {sorted(params)}")


@dataclass
class SviResult:
    """Outcome of :func:`fit_sites` or :func:`fit_network`.

    Attributes:
        names: the coordinates' latent sites, in order.
        draws: ``(places, draws, P)`` posterior draws of the sampler's coordinates (for a
            network ensemble, the members' draws in turn).
        loss: ``(steps, places)`` (per site) or ``(steps, members)`` (network) negative ELBO
            estimates [nats].
        params: the fitted guide parameters (leading axis: sites, or members).
        seconds: wall time of the SVI steps, compilation included [s].
        resumed_from: the step a checkpoint resumed from (``None``: not resumed).
        finished: every step was taken.
        log_q: ``(places, draws)`` the guide's log density at each draw [nats].
    """

    names: tuple[str, ...]
    draws: np.ndarray
    loss: np.ndarray
    params: dict
    seconds: float
    resumed_from: int | None = None
    finished: bool = True
    log_q: np.ndarray | None = None


def stack_data(problems: Sequence[SiteProblem]) -> dict:
    """:func:`~differland.calibrate.bayes.problem_data` of each problem (same record length),
    stacked along a leading place axis."""
    lengths = {int(p.forcing.delta_t.shape[-1]) for p in problems}
    if len(lengths) != 1:
        raise ValueError(f"problems of different record lengths {sorted(lengths)}: pad them")
    datas = [problem_data(p) for p in problems]
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *datas)


def site_starts(problems: Sequence[SiteProblem], config: PosteriorConfig,
                progress: bool = True, laplace: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each site's best point of the initialising multi-start fit
    (:func:`~differland.calibrate.bayes.initial_fit` with ``config.nuts``'s ``init_*``
    settings), ``(sites, P)`` in the coordinates' order, and with ``laplace`` the covariance
    of the Laplace approximation there, ``(sites, P, P)`` (:func:`~differland.calibrate.
    bayes.laplace_inverse_mass`, dense; else ``None``)."""
    dense = dataclasses.replace(config, nuts=dataclasses.replace(config.nuts, dense_mass=True))
    starts, covariances = [], []
    for problem in tqdm(problems, desc="initial fits", disable=not progress, leave=False):
        fit = initial_fit(problem, config)
        names = latent_sites(problem, config.structural_error)
        best = {name: jnp.asarray(fit.values[name][fit.best]) for name in names}
        starts.append([float(best[name]) for name in names])
        if laplace:
            inverse = laplace_inverse_mass(problem, dense, best)
            order = [sorted(names).index(name) for name in names]  # sorted -> coordinates'
            covariances.append(inverse[np.ix_(order, order)])
    dtype = jnp.result_type(float)
    return np.asarray(starts, dtype), np.asarray(covariances, dtype) if laplace else None


def initial_guide_params(guide: str, raw: Mapping, start: np.ndarray,
                         covariance: np.ndarray | None, rank: int) -> dict:
    """Unconstrained parameters of a site's ``guide`` at the start: location ``start`` and,
    with ``covariance``, that covariance (``normal``: its variances; ``lowrank``: its
    variances, half on the diagonal and the rest in the covariance factor's ``rank``
    leading directions;
    ``multivariate``: all of it); else ``raw``'s scales."""
    params = {**raw, _location_name(raw): np.asarray(start)}
    if covariance is None:
        return params
    covariance = np.asarray(covariance, np.float64)
    sd = np.sqrt(np.diag(covariance))
    if guide == "multivariate":
        tril = np.linalg.cholesky(covariance + 1e-10 * np.eye(len(sd)))
        params["auto_scale_tril"] = np.asarray(biject_to(
            AutoMultivariateNormal.scale_tril_constraint).inv(jnp.asarray(tril)))
        return params
    if guide == "normal":
        params[f"{LATENT}_auto_scale"] = np.asarray(biject_to(AutoNormal.scale_constraint)
                                                    .inv(jnp.asarray(sd)))
        return params
    # cov = W W^T + diag(s^2) (NumPyro's factor is W / s): half of each variance on the
    # diagonal, the rest of the covariance from its ``rank`` leading directions
    diagonal = np.sqrt(0.5) * sd
    params["auto_scale"] = np.asarray(biject_to(AutoNormal.scale_constraint).inv(
        jnp.asarray(diagonal)))
    values, vectors = np.linalg.eigh(covariance - np.diag(diagonal**2))
    chosen = np.argsort(values)[::-1][:rank]
    factor = vectors[:, chosen] * np.sqrt(np.maximum(values[chosen], 0.0))
    params["auto_cov_factor"] = factor / diagonal[:, None]
    return params


def _run_blocks(advance: Callable, carry: dict, settings: SviSettings, checkpoint_dir,
                fingerprint: str, progress: bool, description: str,
                stop_after: int | None) -> tuple[dict, int | None, bool]:
    """Take SVI steps a block at a time until ``settings.steps``, saving ``carry`` every
    ``checkpoint_every`` steps and resuming from the newest checkpoint; returns the carry,
    the step resumed from and whether every step was taken."""
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = None
    if manager is not None and manager.latest_step() is not None:
        carry = restore_checkpoint(manager, carry, fingerprint)
        resumed_from = int(carry["done"])
    # fresh and restored states alike, without weak types: one compiled step serves both
    carry = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), carry)
    blocks = 0
    with tqdm(total=settings.steps, initial=int(carry["done"]), desc=description,
              disable=not progress, leave=False) as bar:
        while int(carry["done"]) < settings.steps:
            if stop_after is not None and blocks >= stop_after:
                return carry, resumed_from, False
            done = int(carry["done"])
            states, losses = advance(carry["states"])
            n = min(BLOCK, settings.steps - done)
            loss = carry["loss"].at[done:done + n].set(losses[:n])
            carry = {"states": states, "loss": loss, "done": jnp.asarray(done + n, jnp.int32)}
            blocks += 1
            bar.update(n)
            bar.set_postfix(loss=f"{float(jnp.mean(losses[:n])):.6g}")
            if manager is not None and ((done + n) % settings.checkpoint_every == 0
                                        or done + n >= settings.steps):
                save_checkpoint(manager, done + n, carry, fingerprint)
    if manager is not None:
        manager.wait_until_finished()
    return carry, resumed_from, True


def fit_sites(problems: Sequence[SiteProblem], config: PosteriorConfig,
              settings: SviSettings, starts: np.ndarray | None = None,
              covariances: np.ndarray | None = None,
              checkpoint_dir=None, fingerprint: str = "", progress: bool = True,
              stop_after: int | None = None) -> SviResult:
    """Per-site variational posteriors of ``problems`` (same record length; see
    :meth:`SiteProblem.padded`), all sites stepped together.

    Each site's guide (``settings.guide``) starts at ``starts`` ``(sites, P)`` with the
    Laplace ``covariances`` ``(sites, P, P)`` (both by default from :func:`site_starts`;
    with ``settings.init="scale"`` or no covariances, independent normals of standard
    deviation ``settings.init_scale``; see :func:`initial_guide_params`), and takes
    ``settings.steps`` Adam steps on its ELBO (``settings.particles`` draws a step); a step
    whose loss or new parameters are not finite is skipped (NumPyro's ``stable_update``).
    With ``checkpoint_dir`` the state is saved every ``checkpoint_every`` steps and a rerun
    resumes exactly. ``stop_after`` stops after that many blocks, as if killed.

    Raises:
        CalibrationConfigError: a configuration with hybrid neural terms.
    """
    check_supported(config)
    names = latent_sites(problems[0], config.structural_error)
    data = stack_data(problems)
    if starts is None:
        starts, covariances = site_starts(problems, config, progress,
                                          laplace=settings.init == "laplace")
    if settings.init == "scale":
        covariances = None
    started = time.perf_counter()
    compiled = _site_functions(_model_key(config), names, _step_key(settings),
                               jax.tree.map(lambda x: x[0], data))
    svi, raw = compiled["svi"], compiled["raw"]
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(settings.seed), 3),
                            len(problems))
    rank = int(np.shape(raw.get("auto_cov_factor", np.zeros((0, 0))))[-1])
    dtype = jnp.result_type(float)
    initial = [initial_guide_params(settings.guide, raw, starts[i],
                                    None if covariances is None else covariances[i], rank)
               for i in range(len(problems))]
    initial = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs), dtype), *initial)

    def init_one(key, params):
        return SVIState(svi.optim.init(params), None, key)

    carry = {"states": jax.vmap(init_one)(keys, initial),
             "loss": jnp.full((settings.steps, len(problems)), jnp.nan),
             "done": jnp.asarray(0, jnp.int32)}
    advance = compiled["advance"]
    carry, resumed_from, finished = _run_blocks(
        lambda states: advance(states, data), carry, settings, checkpoint_dir, fingerprint,
        progress, "SVI", stop_after)
    params = jax.vmap(svi.get_params)(carry["states"])
    seconds = time.perf_counter() - started
    if not finished:
        return SviResult(names, np.zeros((len(problems), 0, len(names))),
                         np.asarray(carry["loss"]), jax.device_get(params), seconds,
                         resumed_from, False)
    draw_keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(settings.seed), 4),
                                 len(problems))
    draws, log_q = compiled["draw"](draw_keys, params, data, settings.draws)
    return SviResult(names, np.asarray(draws), np.asarray(carry["loss"]),
                     jax.device_get(params), seconds, resumed_from, True, np.asarray(log_q))


def _model_key(config: PosteriorConfig) -> PosteriorConfig:
    """``config`` without the sampler settings (what the log density depends on)."""
    return dataclasses.replace(config, nuts=NutsSettings())


def _step_key(settings: SviSettings) -> SviSettings:
    """``settings`` with only what the compiled step depends on."""
    return SviSettings(guide=settings.guide, rank=settings.rank, steps=settings.steps,
                       learning_rate=settings.learning_rate, particles=settings.particles,
                       init_scale=settings.init_scale)


_SITE_FUNCTIONS: dict = {}


def _site_functions(config: PosteriorConfig, names: tuple[str, ...], settings: SviSettings,
                    data_one: Mapping) -> dict:
    """NumPyro SVI of one site's coordinates, its guide's unconstrained parameters at
    initialisation, ``advance(states, data) -> (states, losses (BLOCK, sites))``
    (:data:`BLOCK` jitted steps of every site; a step whose loss or parameters are not
    finite leaves that site as it was) and ``draw(keys, params, data, count)``. The guide's
    structure is set once, from ``data_one`` (only its shapes matter); the guide's parameters
    then differ per site and the compiled step is vectorised over sites. Cached per
    configuration, coordinates and step settings."""
    key = (config, names, settings)
    if key in _SITE_FUNCTIONS:
        return _SITE_FUNCTIONS[key]
    model = functools.partial(coordinates_model, config, names)
    guide = _guide(settings, model, np.zeros(len(names)))
    svi = SVI(model, guide, _optimiser(settings), Trace_ELBO(num_particles=settings.particles))
    state = svi.init(jax.random.PRNGKey(0), data_one)

    step = jax.jit(jax.vmap(svi.stable_update))

    def advance(states, data):
        losses = []
        for _ in range(BLOCK):
            states, loss = step(states, data)
            losses.append(loss)
        return states, jnp.stack(losses)

    @functools.partial(jax.jit, static_argnums=3)
    def draw(keys, params, data, count):
        return jax.vmap(lambda k, p, d: _guide_draws(guide, k, p, count, d))(keys, params,
                                                                             data)

    if len(_SITE_FUNCTIONS) >= 4:
        _SITE_FUNCTIONS.pop(next(iter(_SITE_FUNCTIONS)))
    _SITE_FUNCTIONS[key] = {"svi": svi, "raw": svi.optim.get_params(state.optim_state),
                            "advance": advance, "draw": draw}
    return _SITE_FUNCTIONS[key]


def _guide_draws(guide, key, params, count: int, *args) -> tuple[jax.Array, jax.Array]:
    """``(count, P)`` draws of z from ``guide`` with parameters ``params``, and ``(count,)``
    the guide's log density at each [nats]."""
    def one(k):
        traced = handlers.trace(handlers.seed(handlers.substitute(guide, data=params), k)
                                ).get_trace(*args)
        log_q = sum(jnp.sum(site["fn"].log_prob(site["value"])) for site in traced.values()
                    if site["type"] == "sample")
        return traced[LATENT]["value"], log_q

    return jax.vmap(one)(jax.random.split(key, count))


def fit_network(problems: Sequence[SiteProblem], inputs: np.ndarray, config: PosteriorConfig,
                settings: SviSettings, checkpoint_dir=None, fingerprint: str = "",
                progress: bool = True, stop_after: int | None = None) -> list[SviResult]:
    """Amortised variational posterior of the places ``problems`` (same record length) with
    standardised predictors ``inputs`` ``(places, n_inputs)``: one network per seed of
    ``settings.seeds``, each trained on the summed ELBO of every place
    (:func:`network_guide`), ``settings.steps`` Adam steps from outputs of zero (every place
    at the centre of its prior box, standard deviation ``init_scale``). Checkpoints and
    ``stop_after`` as :func:`fit_sites` (per member, in ``checkpoint_dir/seed_<seed>``).

    Returns:
        One :class:`SviResult` per member, ``draws`` ``(places, draws, P)`` at the training
        places, ``params`` the guide's parameters (see :func:`network_draws`).
    """
    check_supported(config)
    names = latent_sites(problems[0], config.structural_error)
    data = stack_data(problems)
    inputs = jnp.asarray(inputs, jnp.result_type(float))
    results = []
    for seed in settings.seeds:
        started = time.perf_counter()
        svi = network_svi(config, names, settings, inputs.shape[1], seed)
        state = svi.init(jax.random.fold_in(jax.random.PRNGKey(settings.seed), seed), data,
                         inputs)
        carry = {"states": state, "loss": jnp.full((settings.steps, 1), jnp.nan),
                 "done": jnp.asarray(0, jnp.int32)}
        advance = _advance_network(svi)
        folder = None if checkpoint_dir is None else f"{checkpoint_dir}/seed_{seed}"
        carry, resumed_from, finished = _run_blocks(
            lambda states, advance=advance: advance(states, data, inputs), carry, settings,
            folder, f"{fingerprint} seed {seed}", progress, f"SVI seed {seed}", stop_after)
        params = jax.device_get(svi.get_params(carry["states"]))
        seconds = time.perf_counter() - started
        if not finished:
            results.append(SviResult(names, np.zeros((len(problems), 0, len(names))),
                                     np.asarray(carry["loss"]), params, seconds, resumed_from,
                                     False))
            return results
        key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 5 + seed)
        draws, log_q = network_draws(svi.guide, params, inputs, settings.draws, key)
        results.append(SviResult(names, draws, np.asarray(carry["loss"]), params, seconds,
                                 resumed_from, True, log_q))
    return results


def network_svi(config: PosteriorConfig, names: tuple[str, ...], settings: SviSettings,
                n_inputs: int, seed: int) -> SVI:
    """NumPyro SVI of the amortised posterior with a new network of ``seed`` (the head's
    weights start at zero)."""
    module = spatial_network.new(n_inputs, 2 * len(names), settings.hidden, settings.depth,
                                 seed)
    model = functools.partial(places_model, config, names)
    guide = functools.partial(network_guide, module, settings.init_scale, len(names))
    return SVI(model, guide, _optimiser(settings), Trace_ELBO(num_particles=settings.particles))


def _advance_network(svi: SVI) -> Callable:
    """``(state, data, inputs) -> (state, losses (BLOCK, 1))``: :data:`BLOCK` jitted
    steps."""
    step = jax.jit(svi.stable_update)

    def advance(state, data, inputs):
        losses = []
        for _ in range(BLOCK):
            state, loss = step(state, data, inputs)
            losses.append(loss[None])
        return state, jnp.stack(losses)

    return advance


def network_normals(guide: Callable, params: Mapping, inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(loc, scale)``, each ``(places, P)``: the amortised normals of places ``inputs``
    [unconstrained units]."""
    traced = handlers.trace(handlers.seed(handlers.substitute(guide, data=params), 0)
                            ).get_trace(None, jnp.asarray(inputs))
    normal = traced[LATENT]["fn"].base_dist
    return np.asarray(normal.loc), np.asarray(normal.scale)


def network_draws(guide: Callable, params: Mapping, inputs, count: int, key
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(places, count, P)`` draws of the amortised posterior at places ``inputs`` and
    ``(places, count)`` its log density at each [nats]."""
    loc, scale = network_normals(guide, params, inputs)
    noise = np.asarray(jax.random.normal(key, (count, *loc.shape), loc.dtype))
    draws = np.swapaxes(loc + scale * noise, 0, 1)
    log_q = np.sum(-0.5 * noise**2 - np.log(scale) - 0.5 * np.log(2.0 * np.pi), axis=-1)
    return draws, np.swapaxes(log_q, 0, 1)


@functools.lru_cache(maxsize=4)
def _log_density_function(config: PosteriorConfig, names: tuple[str, ...]) -> Callable:
    return jax.jit(jax.vmap(lambda z, data: site_log_density(config, names, z, data),
                            in_axes=(0, None)))


def log_densities(problem: SiteProblem, config: PosteriorConfig, draws: np.ndarray,
                  batch: int = 250) -> np.ndarray:
    """``(draws,)`` log posterior density (unnormalised) of ``problem`` at ``draws``
    ``(draws, P)`` of its coordinates [nats], ``batch`` at a time (one compiled shape)."""
    names = latent_sites(problem, config.structural_error)
    function = _log_density_function(_model_key(config), names)
    data = problem_data(problem)
    out = []
    for begin in range(0, len(draws), batch):
        chosen = np.minimum(np.arange(begin, begin + batch), len(draws) - 1)
        values = np.asarray(function(jnp.asarray(draws[chosen]), data))
        out.append(values[:min(batch, len(draws) - begin)])
    return np.concatenate(out)
