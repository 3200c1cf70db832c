"""Training the spatialization network on many sites at once.

Every site is a :class:`~differland.calibrate.site.SiteProblem` (its calibration period,
streams and loss, as in a site calibration); the network maps the sites' predictors to their
unconstrained parameters, and the loss is the mean of the sites' losses, the sites batched
together (``vmap``, records padded to one length). The hybrid terms' weights (neural water
stress, ET) are shared by all sites and trained with the network.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from differland.calibrate.gradient import (
    SettingsError,
    check_integer,
    check_number,
    checkpoint_manager,
    restore_checkpoint,
    save_checkpoint,
)
from differland.calibrate.site import (
    CalibrationConfigError,
    Periods,
    SiteCalibrationConfig,
    SiteProblem,
    free_parameter_names,
)
from differland.likelihood import Stream
from differland.params import ParameterSet, constrain
from differland.processes.neural import init_network
from differland.spatial import network as spatial_network


def as_tuple(config, key: str) -> None:
    """Store the list ``config.<key>`` of a frozen configuration as a tuple.

    Raises:
        CalibrationConfigError: the value is not a list.
    """
    value = getattr(config, key)
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise CalibrationConfigError(f"config: {key} must be a list, not {value!r}")
    object.__setattr__(config, key, tuple(value))


def check_network_settings(config) -> None:
    """Check the settings every network configuration has (``hidden``, ``depth``,
    ``warmup``, ``max_iterations``, ``eval_every``, ``patience``, ``learning_rate``,
    ``weight_decay``, ``seeds``); ``seeds`` is stored as a tuple.

    Raises:
        CalibrationConfigError: naming the key.
    """
    try:
        for key, low in (("hidden", 1), ("depth", 1), ("warmup", 0), ("max_iterations", 1),
                         ("eval_every", 1), ("patience", 1)):
            check_integer(key, getattr(config, key), low)
        check_number("learning_rate", config.learning_rate, 0.0, positive=True)
        check_number("weight_decay", config.weight_decay, 0.0)
    except SettingsError as error:
        raise CalibrationConfigError(f"config: {error}") from None
    as_tuple(config, "seeds")
    if not config.seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                   and 0 <= s < 2**31 for s in config.seeds):
        raise CalibrationConfigError(f"config: seeds must be a non-empty list of integers "
                                     f">= 0, not {list(config.seeds)!r}")
    if len(set(config.seeds)) < len(config.seeds):
        raise CalibrationConfigError("config: seeds names a seed twice")


@dataclass(frozen=True)
class SpatialConfig:
    """Everything that defines a spatialization network and its training (``config.json`` of
    a model directory).

    Attributes:
        calibration: the model options, streams and loss of each site, as in a site
            calibration (only the keys that define the problem are used: not the gradient
            settings or the refinement).
        extra_predictors: numeric columns of ``sites.csv`` used as further predictors (soil
            texture, forest age, ...).
        hidden: width of the network's hidden layers.
        depth: number of hidden layers.
        learning_rate: peak learning rate (linear warm-up, then cosine decay to 5 %).
        warmup: warm-up iterations.
        max_iterations: most Adam iterations.
        eval_every: iterations between evaluations of the validation loss (and checkpoints).
        patience: evaluations without a lower validation loss before training stops.
        weight_decay: decoupled weight decay of AdamW, on the network's weight matrices
            (not its biases, which carry what the sites share, nor the hybrid terms): it
            shrinks each site's prediction toward what the sites share.
        seeds: one network per seed; several form an ensemble.
    """

    calibration: SiteCalibrationConfig = field(default_factory=SiteCalibrationConfig)
    extra_predictors: tuple[str, ...] = ()
    hidden: int = 32
    depth: int = 2
    learning_rate: float = 3e-3
    warmup: int = 50
    max_iterations: int = 1500
    eval_every: int = 25
    patience: int = 12
    weight_decay: float = 1.0
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        check_network_settings(self)
        if not isinstance(self.calibration, SiteCalibrationConfig):
            raise CalibrationConfigError("config: calibration must be an object of site "
                                         "calibration keys")
        as_tuple(self, "extra_predictors")
        if not all(isinstance(name, str) and name for name in self.extra_predictors):
            raise CalibrationConfigError("config: extra_predictors must name columns")

    @property
    def model_config(self):
        """The model configuration of the calibration."""
        return self.calibration.model_config

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The parameters the network predicts (those the model configuration reads, or the
        calibration's ``free_parameters``)."""
        return free_parameter_names(self.calibration)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["calibration"] = self.calibration.to_dict()
        out["extra_predictors"] = list(self.extra_predictors)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, values: Mapping) -> SpatialConfig:
        """The configuration from a JSON object (as :meth:`to_dict` writes it).

        Raises:
            CalibrationConfigError: an unknown key or a bad value, naming the key.
        """
        if not isinstance(values, Mapping):
            raise CalibrationConfigError("config: must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CalibrationConfigError(f"config: unknown key(s) {', '.join(unknown)} "
                                         f"(known: {', '.join(sorted(known))})")
        values = dict(values)
        if "calibration" in values:
            values["calibration"] = SiteCalibrationConfig.from_dict(values["calibration"])
        return cls(**values)


def uniform_problems(problems: Sequence[SiteProblem], config: SiteCalibrationConfig
                     ) -> list[SiteProblem]:
    """The problems under one configuration ``config``, padded to the longest record
    (:meth:`SiteProblem.padded`); a stream of ``config`` that a site does not observe becomes
    a stream without observations (it adds nothing to that site's loss)."""
    n_steps = max(int(p.forcing.delta_t.shape[-1]) for p in problems)
    weights = dict(config.weights)
    filled = []
    for problem in problems:
        n = int(problem.forcing.delta_t.shape[-1])
        streams = {name: problem.streams.get(name) or Stream(
            values=jnp.zeros(n), mask=jnp.zeros(n), sigma=jnp.ones(n),
            weight=jnp.asarray(weights.get(name, 1.0))) for name in config.streams}
        filled.append(dataclasses.replace(problem, streams=streams, config=config))
    return [p.padded(n_steps) for p in filled]


@dataclass(frozen=True)
class SiteBatch:
    """The sites of a training, padded to one record length and stacked (leading site
    axis)."""

    forcing: object
    streams: dict
    periods: dict
    valid: jax.Array
    fixed: ParameterSet
    config: SiteCalibrationConfig

    @classmethod
    def stack(cls, problems: Sequence[SiteProblem], config: SiteCalibrationConfig
              ) -> SiteBatch:
        """The problems of ``config`` padded and stacked; a stream of ``config`` that a site
        does not observe enters its loss as a stream without observations (nothing)."""
        padded = uniform_problems(problems, config)
        stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
        periods = [{f.name: getattr(p.periods, f.name) for f in dataclasses.fields(Periods)}
                   for p in padded]
        return cls(jax.tree.map(stack, *[p.forcing for p in padded]),
                   jax.tree.map(stack, *[p.streams for p in padded]),
                   jax.tree.map(stack, *periods), stack(*[p.valid for p in padded]),
                   problems[0].fixed, config)

    def site_losses(self, unconstrained: jax.Array, hybrid, names: Sequence[str],
                    period: str) -> jax.Array:
        """Each site's loss on its ``period`` steps (``"train"``, ``"validation"`` or
        ``"calibration"``) for unconstrained parameters ``(n_sites, len(names))``."""
        def one(z, forcing, streams, periods, valid):
            problem = SiteProblem(self.config, forcing, streams, Periods(**periods),
                                  self.fixed, valid)
            theta = {"params": ParameterSet(dict(zip(names, z, strict=True))),
                     "network": hybrid}
            return problem.loss(theta, periods[period])

        return jax.vmap(one)(unconstrained, self.forcing, self.streams, self.periods,
                             self.valid)


def physical_parameters(unconstrained: jax.Array, names: Sequence[str],
                        config: SiteCalibrationConfig, fixed: ParameterSet) -> ParameterSet:
    """Physical values of every parameter: ``names`` from the network's outputs ``(..., n)``
    through the registry's bounded transforms, the others fixed."""
    free = constrain(ParameterSet({name: unconstrained[..., j] for j, name in enumerate(names)}),
                     scales=dict(config.parameter_scales))
    shape = jnp.shape(unconstrained)[:-1]
    return ParameterSet({name: free[name] if name in free
                         else jnp.broadcast_to(fixed[name], shape) for name in fixed.names})


@dataclass
class Trained:
    """A trained network: ``graphdef`` and ``state`` (weights), the shared hybrid weights,
    and the training history."""

    graphdef: object
    state: object
    hybrid: dict | None
    history: dict
    finished: bool
    stopped_early: bool
    resumed_from: int | None

    def unconstrained(self, inputs) -> jax.Array:
        return spatial_network.apply(self.graphdef, self.state, inputs)


def make_optimiser(trainable, config) -> optax.GradientTransformation:
    """AdamW with a linear warm-up and a cosine decay to 5 % of ``config.learning_rate``;
    decoupled weight decay on the network's weight matrices only (the biases carry what the
    places share, and the hybrid terms are not shrunk). ``trainable``: ``{"net", "hybrid"}``."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup, max(config.max_iterations, config.warmup + 1),
        0.05 * config.learning_rate)
    kernels = jax.tree_util.tree_map_with_path(
        lambda path, _: path[0].key == "net" and "kernel" in jax.tree_util.keystr(path),
        trainable)
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=kernels)


def guarded_update(optimiser):
    """``update(trainable, opt_state, value, grads) -> (trainable, opt_state, value,
    finite)``: one optimiser step with the gradient ``grads`` of a loss of value ``value``,
    skipped (state unchanged) when the value or a gradient is not finite."""
    def update(trainable, opt_state, value, grads):
        updates, new_opt_state = optimiser.update(grads, opt_state, trainable)
        finite = jnp.isfinite(value)
        for leaf in jax.tree.leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        return (jax.tree.map(keep, optax.apply_updates(trainable, updates), trainable),
                jax.tree.map(keep, new_opt_state, opt_state), value, finite)

    return update


def guarded_step(loss, optimiser):
    """``step(trainable, opt_state, *args) -> (trainable, opt_state, loss, finite)``: one
    :func:`guarded_update` on the gradient of ``loss(trainable, *args)``."""
    update = guarded_update(optimiser)

    def step(trainable, opt_state, *args):
        value, grads = jax.value_and_grad(loss)(trainable, *args)
        return update(trainable, opt_state, value, grads)

    return step


def train(batch: SiteBatch, inputs: np.ndarray, config: SpatialConfig, seed: int,
          checkpoint_dir=None, progress: bool = True, description: str = "",
          fingerprint_text: str = "", stop_after: int | None = None) -> Trained:
    """Train one network (seed ``seed``) on the batched sites.

    Early stopping on the mean loss of each site's validation slice (the last days of its
    calibration period); the weights of the lowest validation loss are kept. With
    ``checkpoint_dir`` the state is saved at every evaluation and a rerun resumes exactly.
    ``stop_after`` stops after that many evaluations, as if killed (tests of resumption).
    """
    names = config.parameter_names
    model_config = config.calibration.model_config
    inputs = jnp.asarray(inputs, dtype=jnp.result_type(float))
    graphdef, state = spatial_network.build(inputs.shape[1], len(names), config.hidden,
                                            config.depth, seed)
    hybrid = init_network(jax.random.PRNGKey(seed), model_config) \
        if model_config.network_sizes else None
    trainable = {"net": state, "hybrid": hybrid}
    optimiser = make_optimiser(trainable, config)
    opt_state = optimiser.init(trainable)

    def mean_loss(trainable, period):
        z = spatial_network.apply(graphdef, trainable["net"], inputs)
        return jnp.mean(batch.site_losses(z, trainable["hybrid"], names, period))

    step = jax.jit(guarded_step(lambda trainable: mean_loss(trainable, "train"), optimiser))

    validation = jax.jit(lambda trainable: mean_loss(trainable, "validation"))
    n_evaluations = -(-config.max_iterations // config.eval_every)
    record = {"iteration": jnp.zeros(n_evaluations, jnp.int32),
              "train": jnp.full(n_evaluations, jnp.nan), "validation":
              jnp.full(n_evaluations, jnp.nan)}
    carry = {"trainable": trainable, "opt_state": opt_state, "best": trainable,
             "best_loss": jnp.asarray(jnp.inf), "done": jnp.asarray(0, jnp.int32),
             "since_best": jnp.asarray(0, jnp.int32), "skipped": jnp.asarray(0, jnp.int32),
             "record": record}
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = None
    if manager is not None and manager.latest_step() is not None:
        carry = restore_checkpoint(manager, carry, fingerprint_text)
        resumed_from = int(carry["record"]["iteration"][int(carry["done"]) - 1]) \
            if int(carry["done"]) else 0
    bar = _progress_bar(n_evaluations, int(carry["done"]), progress, description)
    evaluations = 0
    stopped_early = False
    while int(carry["done"]) < n_evaluations:
        if int(carry["since_best"]) >= config.patience:
            stopped_early = True
            break
        if stop_after is not None and evaluations >= stop_after:
            break
        trainable, opt_state = carry["trainable"], carry["opt_state"]
        skipped, losses = 0, []
        done = int(carry["done"])
        n_steps = min(config.eval_every, config.max_iterations - done * config.eval_every)
        for _ in range(n_steps):
            trainable, opt_state, loss, finite = step(trainable, opt_state)
            skipped += int(not bool(finite))
            losses.append(loss)
        valid_loss = validation(trainable)
        improved = bool(jnp.isfinite(valid_loss)) and float(valid_loss) < float(
            carry["best_loss"]) * (1.0 - 1e-4)
        record = carry["record"]
        record = {"iteration": record["iteration"].at[done].set(
                      done * config.eval_every + n_steps),
                  "train": record["train"].at[done].set(jnp.mean(jnp.stack(losses))),
                  "validation": record["validation"].at[done].set(valid_loss)}
        carry = {"trainable": trainable, "opt_state": opt_state,
                 "best": trainable if improved else carry["best"],
                 "best_loss": valid_loss if improved else carry["best_loss"],
                 "done": jnp.asarray(done + 1, jnp.int32),
                 "since_best": jnp.asarray(0 if improved else int(carry["since_best"]) + 1,
                                           jnp.int32),
                 "skipped": carry["skipped"] + skipped, "record": record}
        evaluations += 1
        if manager is not None:
            save_checkpoint(manager, done + 1, carry, fingerprint_text)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{float(record['train'][done]):.4g}",
                            validation=f"{float(valid_loss):.4g}")
    if bar is not None:
        bar.close()
    if int(carry["since_best"]) >= config.patience:
        stopped_early = True
    if manager is not None:
        manager.wait_until_finished()
    done = int(carry["done"])
    history = {key: np.asarray(value[:done]).tolist() for key, value in carry["record"].items()}
    history["best_validation_loss"] = float(carry["best_loss"])
    history["nonfinite_steps_skipped"] = int(carry["skipped"])
    history["iterations"] = history["iteration"][-1] if history["iteration"] else 0
    return Trained(graphdef, carry["best"]["net"], carry["best"]["hybrid"], history,
                   stopped_early or done >= n_evaluations, stopped_early, resumed_from)


def _progress_bar(total: int, start: int, progress: bool, description: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=description or "spatial", unit="eval",
                leave=False)


def r_squared(predicted: np.ndarray, planted: np.ndarray) -> float:
    """Coefficient of determination of ``predicted`` against ``planted`` values."""
    predicted, planted = np.asarray(predicted, float), np.asarray(planted, float)
    residual = np.sum((predicted - planted) ** 2)
    total = np.sum((planted - planted.mean()) ** 2)
    return float(1.0 - residual / total) if total > 0 else math.nan


__all__ = ["SiteBatch", "SpatialConfig", "Trained", "physical_parameters", "r_squared",
           "train"]
