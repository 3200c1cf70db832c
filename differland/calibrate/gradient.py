"""Multi-start gradient calibration with optax: vmapped starts, early stopping, checkpoints.

The optimiser works on any pytree of unconstrained values. ``n_starts`` random starts run as
vmapped, jitted computations; every ``chunk`` iterations the validation loss of each start is
evaluated, its best parameters kept, and starts whose validation loss has not improved for
``patience`` chunks are frozen (early stopping). Frozen starts leave the computation: each chunk
runs on the active starts only, in groups of :func:`group_size` starts (8 on CPU, all on an
accelerator; the last group padded with copies), so that one shape is compiled. The optimiser
works on one flat vector of unconstrained values per start. A step whose loss or gradient is
not finite leaves that start's values and optimiser state unchanged and is counted. The whole
optimiser state is checkpointed with orbax every ``checkpoint_every`` chunks; a run restarted
with the same settings resumes from the last checkpoint and ends with the same result as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from differland.likelihood import edc_ramp

LossFunction = Callable[[object, jax.Array], jax.Array]
EvaluationFunction = Callable[[object, object], jax.Array]


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds a run made with other settings or another problem."""


class NonFiniteLossError(ValueError):
    """Every start of a fit ended with a non-finite loss: there is no result to report."""


MAX_SEED = 2**32 - 1
"""Largest seed of the random starts (seeds are unsigned 32-bit integers)."""


class SettingsError(ValueError):
    """A setting of the wrong type or outside its range; the message names the setting."""


def check_integer(name: str, value, lower: int, upper: int | None = None) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) in ``[lower, upper]``."""
    span = f">= {lower}" if upper is None else f"in [{lower}, {upper}]"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SettingsError(f"{name} must be an integer {span}, not {value!r}")
    if value < lower or (upper is not None and value > upper):
        raise SettingsError(f"{name} must be an integer {span}, not {value!r}")


def check_number(name: str, value, lower: float, upper: float | None = None,
                  positive: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number (not a bool) in ``[lower, upper]``
    (``> lower`` when ``positive``)."""
    span = (f"> {lower:g}" if positive else f">= {lower:g}") + (
        f" and <= {upper:g}" if upper is not None else "")
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise SettingsError(f"{name} must be a number {span}, not {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number {span}, not {value!r}")
    if value < lower or (positive and value == lower) or (upper is not None and value > upper):
        raise SettingsError(f"{name} must be a number {span}, not {value!r}")


@dataclass(frozen=True)
class GradientSettings:
    """Settings of :func:`fit` (all explicit; the same settings and seed give the same result).

    Attributes:
        n_starts: random starts optimised together (vmapped).
        max_iterations: upper limit of Adam iterations per start.
        learning_rate: peak learning rate of the warm-up + cosine schedule.
        warmup: iterations of linear warm-up from 0 to the peak.
        final_learning_rate_fraction: end value of the cosine decay, as a fraction of the peak.
        chunk: iterations per jitted call; validation, early stopping, progress and
            checkpoints happen between chunks (at most ``max_iterations``).
        patience: chunks without validation improvement before a start is frozen.
        min_improvement: relative validation improvement that counts as progress.
        checkpoint_every: chunks between checkpoints (when a checkpoint directory is given).
        seed: seed of the random starts.
        edc_ramp_iterations: the training loss gets ``ramp = min(iteration / this, 1)`` as its
            second argument (0: always 1), to phase in constraint penalties.
    """

    n_starts: int = 32
    max_iterations: int = 3000
    learning_rate: float = 0.05
    warmup: int = 50
    final_learning_rate_fraction: float = 0.02
    chunk: int = 50
    patience: int = 8
    min_improvement: float = 1e-4
    checkpoint_every: int = 4
    seed: int = 0
    edc_ramp_iterations: int = 0

    def __post_init__(self):
        for name in ("n_starts", "max_iterations", "chunk", "patience", "checkpoint_every"):
            check_integer(name, getattr(self, name), 1)
        for name in ("warmup", "edc_ramp_iterations"):
            check_integer(name, getattr(self, name), 0)
        check_integer("seed", self.seed, 0, MAX_SEED)
        check_number("learning_rate", self.learning_rate, 0.0, positive=True)
        check_number("min_improvement", self.min_improvement, 0.0)
        check_number("final_learning_rate_fraction", self.final_learning_rate_fraction, 0.0,
                      1.0)
        # a chunk never runs past max_iterations
        object.__setattr__(self, "chunk", min(self.chunk, self.max_iterations))

    def optimizer(self) -> optax.GradientTransformation:
        warmup = min(self.warmup, self.max_iterations // 2)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, self.learning_rate, warmup, max(self.max_iterations, warmup + 1),
            self.learning_rate * self.final_learning_rate_fraction)
        return optax.adam(schedule)

    def fingerprint(self, extra: str = "") -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True) + extra
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best: unconstrained values of the selected start (lowest ``selection`` loss).
        best_index: which start was selected.
        starts: best-validation unconstrained values of every start (leading start axis).
        selection_loss: ``(n_starts,)`` selection loss at each start's best values.
        validation_loss: ``(n_starts,)`` best validation loss of each start.
        history: ``(n_chunks, n_starts)`` training loss at the end of each chunk (NaN for a
            start that was frozen before the chunk).
        validation_history: ``(n_chunks, n_starts)`` validation loss after each chunk.
        iterations: iterations run by the starts that ran longest (frozen starts stop).
        nonfinite_steps: ``(n_starts,)`` steps skipped because loss or gradient was not finite.
        stopped_early: whether every start stopped before ``max_iterations``.
        resumed_from: the iteration a checkpoint resumed from (0 for a fresh run).
        finished: False when the call stopped before convergence or ``max_iterations``
            (``stop_after_chunks``); run again to resume.
    """

    best: object
    best_index: int
    starts: object
    selection_loss: np.ndarray
    validation_loss: np.ndarray
    history: np.ndarray
    validation_history: np.ndarray
    iterations: int
    nonfinite_steps: np.ndarray
    stopped_early: bool
    resumed_from: int
    finished: bool


def fit(train_loss: LossFunction, evaluation_loss: EvaluationFunction, validation_steps,
        selection_steps, initial: object, settings: GradientSettings,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True, description: str = "calibrating",
        fingerprint_extra: str = "", stop_after_chunks: int | None = None) -> FitResult:
    """Minimise ``train_loss`` from the starts ``initial`` (leading axis = start).

    Args:
        train_loss: ``(unconstrained pytree, ramp) -> scalar`` loss on the training steps,
            ``ramp`` in [0, 1] from ``settings.edc_ramp_iterations``.
        evaluation_loss: ``(unconstrained pytree, steps) -> scalar`` loss on given steps;
            evaluated on ``validation_steps`` for early stopping and on ``selection_steps``
            (the calibration period, never the test period) to pick the best start.
        validation_steps, selection_steps: the ``steps`` arguments (any pytree of arrays).
        initial: pytree of starting values with a leading ``n_starts`` axis.
        settings: optimiser settings.
        checkpoint_dir: where orbax checkpoints go; an existing checkpoint made with the same
            settings is resumed, one made with other settings raises ``ValueError``.
        progress: show a tqdm progress bar with the current best loss.
        description: progress-bar label.
        fingerprint_extra: text that identifies the problem (checked on resume).
        stop_after_chunks: stop (as if killed) after this many chunks of this call; for tests
            of resumption.
    """
    tx = settings.optimizer()
    # The optimiser works on one flat vector per start: Adam, the finiteness check and the
    # bookkeeping then handle a few arrays instead of a few per parameter and network layer
    # (each its own small kernel per iteration, and compile time).
    _, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], initial))
    initial_flat = jax.vmap(lambda tree: ravel_pytree(tree)[0])(initial)
    value_and_grad = jax.vmap(jax.value_and_grad(lambda x, ramp: train_loss(unravel(x), ramp)),
                              in_axes=(0, None))
    evaluate = jax.jit(jax.vmap(lambda x, steps: evaluation_loss(unravel(x), steps),
                                in_axes=(0, None)))

    @jax.jit
    def propose(theta, opt_state, iteration):
        """One Adam step of every start: (new values, new optimiser state, loss)."""
        ramp = edc_ramp(iteration, settings.edc_ramp_iterations)
        loss, grads = value_and_grad(theta, ramp)
        updates, new_opt_state = jax.vmap(tx.update)(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), new_opt_state, loss

    @jax.jit
    def accept(proposal, current, active, nonfinite, loss):
        """Keep the step of active starts whose loss and new values are finite."""
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(proposal[0]), axis=1)
        apply = active & finite

        def keep(new, old):
            return jnp.where(apply.reshape(apply.shape + (1,) * (new.ndim - 1)), new, old)

        theta, opt_state = jax.tree.map(keep, proposal, current)
        return theta, opt_state, nonfinite + (active & ~finite)

    def iterate(carry, iteration):
        # Two jitted parts: checking the gradient step inside the gradient computation
        # makes XLA compile it several times slower.
        theta, opt_state, active, nonfinite = carry
        *proposal, loss = propose(theta, opt_state, iteration)
        theta, opt_state, nonfinite = accept(tuple(proposal), (theta, opt_state), active,
                                             nonfinite, loss)
        return (theta, opt_state, active, nonfinite), loss

    def run_chunk(carry, first_iteration):
        # A Python loop over one jitted iteration: XLA would unroll a short scan of the
        # whole gradient computation and compile it many times over.
        for iteration in range(first_iteration, first_iteration + settings.chunk):
            carry, loss = iterate(carry, iteration)
        return carry, loss

    group = group_size(settings.n_starts)

    # The bookkeeping between chunks is jitted too: done operation by operation it cost as much
    # as the chunk itself (a gather and a scatter per leaf, recompiled whenever the number of
    # running starts changed). Shapes depend only on the number of groups.
    @jax.jit
    def take_batch(state, gather, k):
        """The chunk's carries, one per group of ``group`` rows of the starts ``gather``
        (the first ``k`` of them running)."""
        running = jnp.arange(gather.size) < k

        def group_carry(first):
            def take(leaf):
                return leaf[gather[first:first + group]]

            return (jax.tree.map(take, state["theta"]), jax.tree.map(take, state["opt_state"]),
                    running[first:first + group], take(state["nonfinite"]))

        return [group_carry(first) for first in range(0, gather.size, group)]

    @jax.jit
    def put_batch(state, gather, k, group_carries, group_train):
        """Write the first ``k`` rows of the chunk's results back to their starts (the
        padding rows go to an index past the end, which the scatter drops)."""
        sub_carry = jax.tree.map(lambda *parts: jnp.concatenate(parts), *group_carries)
        sub_train = jnp.concatenate(group_train)
        rows = jnp.where(jnp.arange(gather.size) < k, gather, settings.n_starts)

        def put(leaf, new):
            return leaf.at[rows].set(new, mode="drop")

        theta = jax.tree.map(put, state["theta"], sub_carry[0])
        opt_state = jax.tree.map(put, state["opt_state"], sub_carry[1])
        nonfinite = put(state["nonfinite"], sub_carry[3])
        train = put(jnp.full((settings.n_starts,), jnp.nan, sub_train.dtype), sub_train)
        return theta, opt_state, nonfinite, train

    @jax.jit
    def record_chunk(state, theta, opt_state, nonfinite, train, validation):
        """The state after a chunk: best values, early stopping and histories."""
        best_validation = state["best_validation"]
        better = jnp.isfinite(validation) & (
            validation < best_validation - settings.min_improvement * jnp.abs(best_validation))
        better = better | ~jnp.isfinite(best_validation) & jnp.isfinite(validation)
        stale = jnp.where(better, 0, state["stale"] + 1)

        def choose(new, old):
            return jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)

        index = state["chunk"]
        return {
            "theta": theta,
            "opt_state": opt_state,
            "active": state["active"] & (stale < settings.patience),
            "nonfinite": nonfinite,
            "best_theta": jax.tree.map(choose, theta, state["best_theta"]),
            "best_validation": jnp.where(better, validation, best_validation),
            "stale": stale,
            "history": state["history"].at[index].set(train),
            "validation_history": state["validation_history"].at[index].set(validation),
            "chunk": index + 1,
        }

    n_chunks = -(-settings.max_iterations // settings.chunk)
    opt_state = jax.vmap(tx.init)(initial_flat)
    state = {
        "theta": initial_flat,
        "opt_state": opt_state,
        "active": jnp.ones((settings.n_starts,), bool),
        "nonfinite": jnp.zeros((settings.n_starts,), jnp.int32),
        "best_theta": initial_flat,
        "best_validation": jnp.full((settings.n_starts,), jnp.inf),
        "stale": jnp.zeros((settings.n_starts,), jnp.int32),
        "history": jnp.full((n_chunks, settings.n_starts), jnp.nan),
        "validation_history": jnp.full((n_chunks, settings.n_starts), jnp.nan),
        "chunk": jnp.asarray(0, jnp.int32),
    }
    fingerprint = settings.fingerprint(fingerprint_extra)
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = 0
    if manager is not None and manager.latest_step() is not None:
        state = restore_checkpoint(manager, state, fingerprint)
        resumed_from = int(state["chunk"]) * settings.chunk

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks * settings.chunk, initial=resumed_from, desc=description,
                   unit="it", leave=False)
    chunks_this_call = 0
    while int(state["chunk"]) < n_chunks and bool(jnp.any(state["active"])):
        running = np.flatnonzero(np.asarray(state["active"]))
        gather = jnp.asarray(batch_indices(running, group))
        k = jnp.asarray(running.size, jnp.int32)
        first_iteration = int(state["chunk"]) * settings.chunk
        carries, losses = zip(*(run_chunk(carry, first_iteration)
                                for carry in take_batch(state, gather, k)), strict=True)
        theta, opt_state, nonfinite, train = put_batch(state, gather, k, list(carries),
                                                       list(losses))
        validation = evaluate(theta, validation_steps)
        state = record_chunk(state, theta, opt_state, nonfinite, train, validation)
        completed = int(state["chunk"])
        chunks_this_call += 1
        if bar is not None:
            bar.update(settings.chunk)
            bar.set_postfix(train=f"{float(jnp.nanmin(train)):.4g}",
                            validation=f"{float(jnp.min(state['best_validation'])):.4g}",
                            active=int(jnp.sum(state["active"])))
        finished = completed >= n_chunks or not bool(jnp.any(state["active"]))
        if manager is not None and (completed % settings.checkpoint_every == 0 or finished):
            save_checkpoint(manager, completed, state, fingerprint)
        if stop_after_chunks is not None and chunks_this_call >= stop_after_chunks:
            break
    if bar is not None:
        bar.close()
    if manager is not None:
        manager.wait_until_finished()

    selection = np.asarray(evaluate(state["best_theta"], selection_steps))
    if not np.isfinite(selection).any():
        raise NonFiniteLossError(
            f"the loss of every start is non-finite ({int(np.sum(state['nonfinite']))} steps "
            "skipped); check the weights, parameter values and forcing of the calibration")
    selection = np.where(np.isfinite(selection), selection, np.inf)
    best_index = int(np.argmin(selection))
    done = int(state["chunk"])
    return FitResult(
        best=unravel(state["best_theta"][best_index]),
        best_index=best_index,
        starts=jax.vmap(unravel)(state["best_theta"]),
        selection_loss=selection,
        validation_loss=np.asarray(state["best_validation"]),
        history=np.asarray(state["history"][:done]),
        validation_history=np.asarray(state["validation_history"][:done]),
        iterations=done * settings.chunk,
        nonfinite_steps=np.asarray(state["nonfinite"]),
        stopped_early=done < n_chunks,
        resumed_from=resumed_from,
        finished=done >= n_chunks or not bool(jnp.any(state["active"])),
    )


# Starts per computation on CPU. The time loop compiles into one kernel there, whose cost per
# start does not fall beyond 8 starts (docs/performance.md), so running the active starts in
# groups of 8 loses nothing, compiles one shape, and lets frozen starts leave the computation
# 8 at a time.
CPU_GROUP = 8


def group_size(n_starts: int, backend: str | None = None) -> int:
    """Starts computed together: :data:`CPU_GROUP` on CPU (fewer if there are fewer starts);
    all of them on an accelerator, where a step's time hardly depends on the batch."""
    backend = backend or jax.default_backend()
    return min(n_starts, CPU_GROUP) if backend == "cpu" else n_starts


def batch_indices(running: np.ndarray, group: int) -> np.ndarray:
    """Indices of the starts one chunk computes: the ``running`` ones, padded with copies of
    the first to a multiple of ``group``."""
    size = -(-running.size // group) * group
    return np.concatenate([running, np.full(size - running.size, running[0])])


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_manager(directory: str | Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def _as_leaves(state) -> dict[str, np.ndarray]:
    return {f"{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}


def save_checkpoint(manager, step: int, state, fingerprint: str) -> None:
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_as_leaves(state)),
        meta=ocp.args.JsonSave({"fingerprint": fingerprint, "chunk": step})))


def check_checkpoint(checkpoint_dir: str | Path, settings: GradientSettings,
                     fingerprint_extra: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` if ``checkpoint_dir`` holds a checkpoint that
    :func:`fit` with these arguments would refuse (nothing there is fine)."""
    if Path(checkpoint_dir).is_dir():
        manager = checkpoint_manager(checkpoint_dir)
        if manager.latest_step() is not None:
            _check_fingerprint(manager, settings.fingerprint(fingerprint_extra))


@contextlib.contextmanager
def _quiet_orbax():
    """Silence the absl logger orbax reports through while a damaged step is tried."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_meta(manager, step: int) -> dict:
    import orbax.checkpoint as ocp

    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict):
        raise ValueError("checkpoint metadata is not a JSON object")
    return meta


def _check_fingerprint(manager, fingerprint: str) -> None:
    """Refuse checkpoints of another problem. The newest step whose metadata can be read
    decides (a damaged newer step is left to :func:`restore_checkpoint`'s fallback)."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            with _quiet_orbax():
                meta = _read_meta(manager, step)
        except Exception:  # a damaged step; an older one may be readable
            continue
        if meta.get("fingerprint") != fingerprint:
            raise CheckpointMismatchError(
                f"checkpoint in {manager.directory} was made with other settings or another "
                "problem; use a new output directory or pass --overwrite")
        return


def restore_checkpoint(manager, template, fingerprint: str):
    """The newest checkpoint that restores; a damaged newer one is skipped with a notice.

    Raises:
        CheckpointMismatchError: a checkpoint of another problem, or none that restores.
    """
    import orbax.checkpoint as ocp

    _check_fingerprint(manager, fingerprint)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                            _as_leaves(template))
    treedef = jax.tree.structure(template)
    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            with _quiet_orbax():  # a damaged step is reported once, below, not as a log trace
                if _read_meta(manager, step).get("fingerprint") != fingerprint:
                    raise ValueError("fingerprint differs")
                leaves = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)))["state"]
            state = jax.tree.unflatten(treedef, [jnp.asarray(leaves[k]) for k in sorted(leaves)])
        except Exception as error:  # orbax raises many types for damaged files
            failures.append(step)
            print(f"differland: notice: checkpoint {step} in {manager.directory} cannot be "
                  f"read ({type(error).__name__}); trying an earlier one", file=sys.stderr)
            continue
        if failures:
            print(f"differland: notice: resuming from checkpoint {step} instead of the damaged "
                  f"{', '.join(map(str, failures))}", file=sys.stderr)
        return state
    raise CheckpointMismatchError(
        f"no checkpoint in {manager.directory} can be read (steps "
        f"{', '.join(map(str, failures))} damaged); pass --overwrite to start again")
