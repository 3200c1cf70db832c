"""Training the spatialization network over the cells of a grid, in pixel minibatches.

The objective over the training cells ``i`` and the regions ``R`` with regional observations
(regional NBE) is

    L = (1 / N) sum_i l_i + (1 / N_R) sum_R l_R,

``l_i`` the sum over the cell's observed streams of ``w_s x 0.5 x mean_t ((pred - obs) /
sigma)^2`` and ``l_R`` the same for the area-weighted mean of the region's cells.

With ``variational`` the network gives each cell a variational posterior instead of a point:
a normal q(z_i | x_i) = Normal(mu(x_i), diag(s(x_i)^2) + W(x_i) W(x_i)^T) over the cell's
unconstrained coordinates (the network's outputs are mu, the raw scales of
:func:`~differland.calibrate.variational.scale_of` and, for ``variational_rank`` r > 0, the
r columns of W in units of ``init_scale``). Each step draws z_i = mu + s eps_i + W eta_i
(reparameterised) and the objective is the negative evidence lower bound over the training
cells divided by N,

    L = (1 / N) [sum_i (l_i - log p(z_i) - H_i) + sum_R l_R],

with sums over the observed steps instead of means in ``l_i`` and ``l_R`` (a Gaussian log
likelihood) and p(z) the density in z of priors uniform on each parameter's bounded space
(``log p(z) = sum_j log sigmoid'(z_j)``) and H_i the entropy of q_i up to its constant,
``sum_j log s_ij + 0.5 log det(I + W^T diag(s)^-2 W)``. Stream ``weights`` other than 1
temper their likelihood. The network's weights stay point estimates (with their weight
decay); an ensemble of seeds is an equal-weight mixture.

A step
holds whole regions (their cells kept together, so that a region's mean is predicted from
all its cells) and its loss is the part of ``L`` on its cells and regions times the number
of steps of an epoch: the step gradients of an epoch average to the full gradient. A step
is one minibatch, or, for a region larger than a minibatch, that region's cells read in
minibatch-sized pieces whose gradients add up to the step's (:class:`PieceGradient`), so
that memory is bounded by the minibatch size at any resolution. Cells held out (validation
and test) enter regional means (they are part of the region) but not the cell terms.

The pixel axis of a minibatch is sharded over the devices of a one-axis mesh
(``jax.sharding``); with several processes joined by ``jax.distributed`` the mesh spans the
devices of all of them and every process runs the same program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from differland._pytree import pytree_dataclass
from differland.calibrate.gradient import (
    SettingsError,
    check_integer,
    check_number,
    checkpoint_manager,
    restore_checkpoint,
    save_checkpoint,
)
from differland.calibrate.site import CalibrationConfigError
from differland.calibrate.variational import scale_of
from differland.config import ModelConfig
from differland.forcing import Forcing
from differland.model import simulate
from differland.observations import predict, water_storage_anomaly
from differland.params import SPECS, ParameterSet, check_scales, default_parameters
from differland.processes.neural import init_network
from differland.spatial import network as spatial_network
from differland.spatial.training import (
    as_tuple,
    check_network_settings,
    guarded_step,
    guarded_update,
    make_optimiser,
    physical_parameters,
)

PIXEL_STREAMS = ("lai", "sif", "biomass", "ewt", "gpp", "reco", "et", "nee", "nbe", "fire")
"""Streams a cell can be fitted to (``ewt``: the anomaly of the model's water storage over
the observed months)."""
REGIONAL_STREAMS = ("nbe", "nee", "gpp", "et")
"""Streams a region's mean can be fitted to."""
ROLES = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class GridConfig:
    """Everything that defines a grid training (``config.json`` of a model directory).

    Attributes:
        model, water_stress, evapotranspiration, phenology, photosynthesis, soil_water,
            decomposition, leaf_loss: process options (registry texts; default the monthly
            global model with the linear water stress).
        streams: cell streams fitted where the grid has them (see :data:`PIXEL_STREAMS`).
        regional: regional means fitted where the grid has them (``<name>_region``).
        weights: per-stream weights (regional ones as ``"<name>_region"``); others 1.
        free_parameters: the parameters the network predicts (default: the grid's
            ``free_parameters`` attribute, else every parameter the model reads).
        parameter_values: fixed physical values of the other parameters (default: the grid's
            ``parameter_values`` attribute, else the registry defaults).
        parameter_scales: per-parameter scale of the bounded transforms.
        extra_predictors: numeric static maps of the grid used as further predictors.
        hidden, depth: the network's hidden width and number of hidden layers.
        learning_rate, warmup, max_iterations: Adam(W) schedule (warm-up, cosine decay).
        eval_every, patience: minibatches between validation losses; evaluations without
            improvement before stopping.
        weight_decay: decoupled weight decay of the weight matrices.
        batch_pixels: cells per minibatch (raised to a multiple of the number of devices;
            a fitted region with more cells is read in pieces of this size).
        validation_fraction, test_fraction: shares of the cells held out for early stopping
            and for reporting, drawn as blocks of ``holdout_block`` x ``holdout_block``
            cells.
        seeds: one network per seed (an ensemble).
        variational: the network gives each cell a variational posterior of its parameters
            (see the module's description) instead of a point.
        init_scale: standard deviation of a variational posterior while the network's head
            is zero, as at the start [unconstrained units].
        variational_rank: columns of each cell's covariance factor W (0: independent
            normals); they let the posterior follow ridges between parameters.
        posterior_draws: draws per cell and member that a prediction of a variational model
            takes (its maps' credible intervals and its budgets' spread come from them).
        perturbed_observations: with several seeds, each member fits the observations
            perturbed by its own draw of their stated noise (Gaussian, the streams' sigma;
            fixed for the member, the same for every epoch): a randomised-maximum-likelihood
            ensemble, whose spread carries the observation noise into the parameter maps and
            budgets as well as the optimisation's variability. One seed fits the
            observations as they are, and so does a variational model (whose likelihood
            holds the noise).
    """

    model: str = "global"
    water_stress: str = "beta"
    evapotranspiration: str = "uwue"
    phenology: str = "calendar"
    photosynthesis: tuple[str, ...] = ()
    soil_water: tuple[str, ...] = ()
    decomposition: tuple[str, ...] = ()
    leaf_loss: tuple[str, ...] = ()
    streams: tuple[str, ...] = ("lai", "sif", "biomass", "ewt", "gpp", "reco", "et")
    regional: tuple[str, ...] = ("nbe",)
    weights: tuple[tuple[str, float], ...] = ()
    free_parameters: tuple[str, ...] | None = None
    parameter_values: tuple[tuple[str, float], ...] = ()
    parameter_scales: tuple[tuple[str, str], ...] = ()
    extra_predictors: tuple[str, ...] = ()
    hidden: int = 64
    depth: int = 2
    learning_rate: float = 5e-3
    warmup: int = 50
    max_iterations: int = 4000
    eval_every: int = 100
    patience: int = 8
    weight_decay: float = 1e-4
    batch_pixels: int = 256
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    holdout_block: int = 2
    seeds: tuple[int, ...] = (0,)
    variational: bool = False
    init_scale: float = 0.1
    variational_rank: int = 8
    posterior_draws: int = 10
    perturbed_observations: bool = True

    def __post_init__(self):
        for key in ("photosynthesis", "soil_water", "decomposition", "leaf_loss", "streams",
                    "regional", "extra_predictors"):
            as_tuple(self, key)
        check_network_settings(self)
        for key in ("weights", "parameter_values", "parameter_scales"):
            value = getattr(self, key)
            if isinstance(value, Mapping):
                value = tuple(value.items())
            object.__setattr__(self, key, tuple(tuple(pair) for pair in value))
        if self.free_parameters is not None:
            object.__setattr__(self, "free_parameters", tuple(self.free_parameters))
        try:
            for key in ("batch_pixels", "holdout_block", "posterior_draws"):
                check_integer(key, getattr(self, key), 1)
            check_number("init_scale", self.init_scale, 0.0, positive=True)
            check_integer("variational_rank", self.variational_rank, 0)
            for key in ("variational", "perturbed_observations"):
                if not isinstance(getattr(self, key), bool):
                    raise SettingsError(f"{key} must be true or false, not "
                                        f"{getattr(self, key)!r}")
            check_number("validation_fraction", self.validation_fraction, 0.0, 0.5)
            check_number("test_fraction", self.test_fraction, 0.0, 0.5)
        except SettingsError as error:
            raise CalibrationConfigError(f"config: {error}") from None
        unknown = sorted(set(self.streams) - set(PIXEL_STREAMS))
        if unknown:
            raise CalibrationConfigError(f"config: streams: unknown {', '.join(unknown)} "
                                         f"(known: {', '.join(PIXEL_STREAMS)})")
        unknown = sorted(set(self.regional) - set(REGIONAL_STREAMS))
        if unknown:
            raise CalibrationConfigError(f"config: regional: unknown {', '.join(unknown)} "
                                         f"(known: {', '.join(REGIONAL_STREAMS)})")
        try:
            config = self.model_config
        except (ValueError, TypeError) as error:
            raise CalibrationConfigError(f"config: {error}") from None
        known = set(config.parameter_names())
        for key, names in (("free_parameters", self.free_parameters or ()),
                           ("parameter_values", dict(self.parameter_values)),
                           ("parameter_scales", dict(self.parameter_scales))):
            unknown = sorted(set(names) - known)
            if unknown:
                raise CalibrationConfigError(f"config: {key}: {', '.join(unknown)} not read by "
                                             "this model configuration")
        for name, value in self.parameter_values:
            spec = SPECS[name]
            if not (isinstance(value, int | float) and spec.lower <= value <= spec.upper):
                raise CalibrationConfigError(
                    f"config: parameter_values: {name} = {value!r} is outside "
                    f"[{spec.lower:g}, {spec.upper:g}] {spec.units}")
        try:
            check_scales(dict(self.parameter_scales), "config: parameter_scales")
        except ValueError as error:
            raise CalibrationConfigError(str(error)) from None

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(model=self.model, water_stress=self.water_stress,
                           evapotranspiration=self.evapotranspiration,
                           phenology=self.phenology, photosynthesis=self.photosynthesis,
                           soil_water=self.soil_water, decomposition=self.decomposition,
                           leaf_loss=self.leaf_loss)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The parameters the network predicts."""
        names = self.model_config.parameter_names()
        if self.free_parameters is None:
            return tuple(names)
        return tuple(name for name in names if name in set(self.free_parameters))

    @property
    def n_outputs(self) -> int:
        """Outputs of the network: one per predicted parameter; for a variational model,
        per parameter its location, raw scale and ``variational_rank`` factor entries."""
        per = 2 + self.variational_rank if self.variational else 1
        return per * len(self.parameter_names)

    def fixed_parameters(self) -> ParameterSet:
        """Physical values of every parameter the model reads (the predicted ones too, as
        placeholders): ``parameter_values`` over the registry defaults."""
        defaults = default_parameters(self.model_config.variant)
        values = dict(self.parameter_values)
        return ParameterSet({name: jnp.asarray(values.get(name, defaults[name]), jnp.float32)
                             for name in self.model_config.parameter_names()})

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("weights", "parameter_values", "parameter_scales"):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping) -> GridConfig:
        """The configuration from a JSON object.

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
        return cls(**values)


# --- minibatches ----------------------------------------------------------------------------


@pytree_dataclass
class PixelBatch:
    """One minibatch of cells (``B`` cells, ``S`` streams, ``R`` regions, ``T`` months).

    Attributes:
        forcing: fields ``(B, T)``.
        inputs: the network inputs ``(B, n_inputs)``.
        values, mask, sigma: cell observations ``(S, B, T)``; ``mask`` is 0 at gaps, on
            padding cells and on cells whose role is not the one the loss is taken on.
        region_weights: ``(R, B)`` weights of the cells in each region's mean (0 for cells
            of other regions and padding).
        region_values, region_mask, region_sigma: regional observations ``(Q, R, T)``.
        scale: the factor of this minibatch's share of the objective (scalar).
        cells: ``(B,)`` the grid index of each cell (padding repeats a cell).
        regions: ``(R,)`` the index of each region slot (-1: empty).
        member: the seed of the ensemble member whose perturbed observations the loss
            takes (scalar; read only by an objective with ``perturbed``).
        on_role: ``(B,)`` 1 for the cells whose terms the loss takes, 0 for the others and
            padding.
        draw: the index of the variational draw of the step (scalar; read only by a
            variational objective: the draw of a cell is a function of the member, the
            draw and the cell, so that the pieces of a step see the same draw).
    """

    forcing: Forcing
    inputs: jax.Array
    values: jax.Array
    mask: jax.Array
    sigma: jax.Array
    region_weights: jax.Array
    region_values: jax.Array
    region_mask: jax.Array
    region_sigma: jax.Array
    scale: jax.Array
    cells: jax.Array
    regions: jax.Array
    member: jax.Array
    on_role: jax.Array
    draw: jax.Array


def holdout_roles(rows: np.ndarray, cols: np.ndarray, config: GridConfig, seed: int = 0
                  ) -> np.ndarray:
    """Role of each cell (:data:`ROLES`): blocks of ``holdout_block`` cells drawn at random
    (seeded) until the validation and test shares are reached."""
    block = config.holdout_block
    keys = (rows // block) * 1_000_003 + cols // block
    unique, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng([seed, 3]).permutation(unique.size)
    sizes = np.bincount(inverse, minlength=unique.size)
    roles = np.zeros(unique.size, np.int8)
    n = rows.size
    filled = 0
    targets = [(ROLES["validation"], config.validation_fraction * n),
               (ROLES["test"], (config.validation_fraction + config.test_fraction) * n)]
    position = 0
    for role, target in targets:
        while position < order.size and filled + sizes[order[position]] / 2 <= target:
            roles[order[position]] = role
            filled += sizes[order[position]]
            position += 1
    return roles[inverse]


def region_groups(region_fractions: np.ndarray) -> np.ndarray:
    """Each cell's region: the one holding the largest fraction of it (``-1``: none);
    ``region_fractions`` ``(R, P)``."""
    if region_fractions.shape[0] == 0:
        return np.full(region_fractions.shape[1], -1)
    best = np.argmax(region_fractions, axis=0)
    return np.where(region_fractions.max(axis=0) > 0.0, best, -1)


def plan_batches(groups: np.ndarray, eligible: np.ndarray, batch_pixels: int, epoch_seed,
                 whole: np.ndarray | None = None) -> list[np.ndarray]:
    """The steps of one epoch: index arrays of cells, each at most ``batch_pixels`` except
    the regions that must stay whole.

    Regions (``groups >= 0``) are kept together and packed first-fit in a seeded random
    order; cells without a region fill the gaps in chunks. A region larger than a batch is
    split over several, except where ``whole`` ``(R,)`` marks it: then it is a step of its
    own, larger than a batch, whose cells the training reads in pieces (its regional mean
    needs all of them). ``eligible`` marks the cells that belong in an epoch (for training:
    those in a region or with a training role).
    """
    rng = np.random.default_rng(epoch_seed)
    units = [np.flatnonzero((groups == g) & eligible) for g in np.unique(groups[groups >= 0])]
    units = [u for u in units if u.size]
    loose = rng.permutation(np.flatnonzero((groups < 0) & eligible))
    chunk = max(1, batch_pixels // 8)
    units += [loose[k:k + chunk] for k in range(0, loose.size, chunk)]
    units = [units[k] for k in rng.permutation(len(units))]
    bins: list[list[np.ndarray]] = []
    space: list[int] = []
    for unit in units:
        if unit.size > batch_pixels and whole is not None and whole[groups[unit[0]]]:
            bins.append([unit])
            space.append(0)
            continue
        for start in range(0, unit.size, batch_pixels):  # a region larger than a batch splits
            piece = unit[start:start + batch_pixels]
            for k, free in enumerate(space):
                if piece.size <= free:
                    bins[k].append(piece)
                    space[k] -= piece.size
                    break
            else:
                bins.append([piece])
                space.append(batch_pixels - piece.size)
    return [np.concatenate(b) for b in bins]


@dataclass(frozen=True)
class GridProblem:
    """Everything the loss of a grid needs in memory: per-cell arrays with a leading cell
    axis (numpy), built by the workflow from a grid driver.

    Attributes:
        forcing: dict of ``(P, T)`` forcing fields (:class:`Forcing` field names).
        inputs: network inputs ``(P, n_inputs)``.
        values, mask, sigma: ``(S, P, T)`` cell observations of :attr:`streams` (sigma > 0
            where mask is 1).
        streams: the names of the cell streams.
        region_fractions: ``(R, P)`` region mask x cell area (0 outside).
        region_values, region_mask, region_sigma: ``(Q, R, T)`` regional observations of
            :attr:`regional`.
        regional: the names of the regional streams.
        roles: ``(P,)`` :data:`ROLES` of each cell.
    """

    forcing: dict
    inputs: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    sigma: np.ndarray
    streams: tuple[str, ...]
    region_fractions: np.ndarray
    region_values: np.ndarray
    region_mask: np.ndarray
    region_sigma: np.ndarray
    regional: tuple[str, ...]
    roles: np.ndarray

    @property
    def n_pixels(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.region_fractions.shape[0])

    @cached_property
    def groups(self) -> np.ndarray:
        """Each cell's region (:func:`region_groups`)."""
        return region_groups(self.region_fractions)

    @cached_property
    def group_sizes(self) -> np.ndarray:
        """Cells per region ``(R,)``."""
        return np.bincount(self.groups[self.groups >= 0], minlength=self.n_regions)

    @cached_property
    def fitted(self) -> np.ndarray:
        """Regions with at least one regional observation ``(R,)``."""
        if not self.regional:
            return np.zeros(self.n_regions, bool)
        return self.region_mask.reshape(-1, self.n_regions, self.region_mask.shape[-1]
                                        ).any(axis=(0, 2))

    def batch(self, cells: np.ndarray, size: int, role: str, scale: float,
              n_regions: int, with_regions: bool, regions: Sequence[int] | None = None,
              member: int = 0, draw: int = 0) -> PixelBatch:
        """The minibatch of ``cells`` padded to ``size`` cells and ``n_regions`` regions;
        cell terms only on cells of ``role``; regional terms (``with_regions``) for
        ``regions`` (default: the fitted regions whose cells are all in ``cells``); the
        observations perturbed as ensemble member ``member`` sees them; variational draw
        ``draw``."""
        cells = np.asarray(cells)
        pad = size - cells.size
        index = np.concatenate([cells, np.full(pad, cells[0] if cells.size else 0)])
        real = np.concatenate([np.ones(cells.size), np.zeros(pad)])
        on_role = (self.roles[index] == ROLES[role]) & (real > 0)
        forcing = Forcing(**{k: np.asarray(v[index], np.float32)
                             for k, v in self.forcing.items()})
        mask = self.mask[:, index] * on_role[None, :, None]
        weights = np.zeros((n_regions, size), np.float32)
        values = np.zeros((len(self.regional), n_regions, self.region_values.shape[-1]),
                          np.float32)
        region_mask = np.zeros_like(values)
        sigma = np.ones_like(values)
        slots = np.full(n_regions, -1, np.int32)
        if with_regions and self.regional and self.n_regions:
            groups = self.groups
            if regions is None:
                present, counts = np.unique(groups[cells], return_counts=True)
                regions = [r for r, n in zip(present, counts, strict=True)
                           if r >= 0 and n == self.group_sizes[r] and self.fitted[r]]
            for k, r in enumerate(regions[:n_regions]):
                slots[k] = r
                weights[k] = np.where((groups[index] == r) & (real > 0),
                                      self.region_fractions[r, index], 0.0)
                values[:, k] = self.region_values[:, r]
                region_mask[:, k] = self.region_mask[:, r]
                sigma[:, k] = self.region_sigma[:, r]
        return PixelBatch(forcing, np.asarray(self.inputs[index], np.float32),
                          np.asarray(self.values[:, index], np.float32),
                          np.asarray(mask, np.float32),
                          np.asarray(self.sigma[:, index], np.float32), weights, values,
                          region_mask, sigma, np.asarray(scale, np.float32),
                          index.astype(np.int32), slots, np.asarray(member, np.int32),
                          on_role.astype(np.float32), np.asarray(draw, np.int32))


# --- the loss -------------------------------------------------------------------------------


def _misfit(prediction, values, mask, sigma, total: bool = False):
    """0.5 x mean (``total``: sum) over the observed steps of ((prediction - values) /
    sigma)^2, along the last axis."""
    safe = jnp.where(mask > 0, sigma, 1.0)
    residual = jnp.where(mask > 0, (prediction - values) / safe, 0.0)
    squares = 0.5 * jnp.sum(residual**2, axis=-1)
    return squares if total else squares / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def variational_normals(outputs: jax.Array, n: int, config: GridConfig
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(loc (B, n), scale (B, n), factor (B, n, r))`` of the cells' variational normals
    from a variational network's outputs ``(B, (2 + r) n)`` [unconstrained units]."""
    loc = outputs[:, :n]
    scale = scale_of(outputs[:, n:2 * n], config.init_scale)
    factor = config.init_scale * outputs[:, 2 * n:].reshape(
        outputs.shape[0], n, config.variational_rank)
    return loc, scale, factor


def normal_entropy(scale: jax.Array, factor: jax.Array) -> jax.Array:
    """``(B,)`` entropy of Normal(., diag(scale^2) + factor factor^T) less its constant
    (n/2)(1 + log 2 pi): ``sum log scale + 0.5 log det(I + F^T F)``, F = factor / scale
    (the matrix determinant lemma)."""
    scaled = factor / scale[..., None]
    capacitance = jnp.eye(factor.shape[-1], dtype=factor.dtype) + jnp.einsum(
        "bpr,bps->brs", scaled, scaled)
    return jnp.sum(jnp.log(scale), axis=-1) + 0.5 * jnp.linalg.slogdet(capacitance)[1]


def cell_noise(member, draw, cells, n: int) -> jax.Array:
    """``(B, n)`` standard normal draws of ``cells``, a function of the member's seed, the
    draw's index and the cell only."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(member), 2), draw)
    return jax.vmap(lambda cell: jax.random.normal(jax.random.fold_in(key, cell), (n,)))(
        cells)


def predictions(params: ParameterSet, forcing: Forcing, config: ModelConfig, hybrid,
                names: Sequence[str], ewt_mask=None) -> dict[str, jax.Array]:
    """Predicted cell series ``{name: (B, T)}`` (``ewt``: the storage anomaly over the
    steps of ``ewt_mask``)."""
    def one(p, f, m):
        trajectory = simulate(p, f, config, network=hybrid)
        out = {}
        for name in names:
            if name == "ewt":
                out[name] = water_storage_anomaly(predict("water_storage", trajectory, p, f), m)
            else:
                out[name] = predict(name, trajectory, p, f)
        return out

    if ewt_mask is None:
        ewt_mask = jnp.ones_like(forcing.t_min)
    return jax.vmap(one)(params, forcing, ewt_mask)


predict_cells = jax.jit(predictions, static_argnames=("config", "names"))
"""Jitted :func:`predictions` (``names`` a tuple)."""


CELL_BATCH = 2048
"""Cells simulated at a time outside training."""


def predict_in_batches(params: Mapping, forcing: Mapping, config: ModelConfig, hybrid,
                       names: tuple[str, ...], progress: Callable[[int], None] | None = None
                       ) -> dict[str, np.ndarray]:
    """:func:`predict_cells` over many cells, :data:`CELL_BATCH` at a time, in float32.

    Args:
        params: physical values ``{name: (P,)}`` of every parameter the model reads.
        forcing: ``{field: (P, T)}`` of every :class:`Forcing` field.
        config, hybrid, names: as in :func:`predictions`.
        progress: called with the number of cells done after each batch.

    Returns:
        ``{name: (P, T)}`` float32 arrays.
    """
    n = next(iter(forcing.values())).shape[0]
    pieces = []
    for start in range(0, n, CELL_BATCH):
        keep = slice(start, start + CELL_BATCH)
        batch_forcing = Forcing(**{k: np.asarray(v[keep], np.float32)
                                   for k, v in forcing.items()})
        batch_params = ParameterSet({k: np.asarray(v[keep], np.float32)
                                     for k, v in params.items()})
        out = predict_cells(batch_params, batch_forcing, config, hybrid, tuple(names))
        pieces.append({k: np.asarray(v) for k, v in out.items()})
        if progress is not None:
            progress(min(CELL_BATCH, n - start))
    return {name: np.concatenate([p[name] for p in pieces]) for name in names}


@dataclass(frozen=True)
class Objective:
    """The grid loss for one configuration (static: what the compiled step closes over)."""

    graphdef: object
    names: tuple[str, ...]
    fixed: ParameterSet
    config: GridConfig
    streams: tuple[str, ...]
    regional: tuple[str, ...]
    n_train: int
    n_regions: int
    perturbed: bool = False
    variational: bool = False

    def _perturbed(self, values, sigma, index, member, stream: int, kind: int):
        """``values + sigma x noise`` when :attr:`perturbed`: the noise of each row (cell or
        region ``index``) a function of the ensemble member's seed ``member`` (traced, so
        that the members share one compiled step), the stream and the row only, so that
        every minibatch sees the same perturbed observations."""
        if not self.perturbed:
            return values
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(member), kind), stream)
        noise = jax.vmap(lambda row: jax.random.normal(jax.random.fold_in(key, row),
                                                       values.shape[-1:]))(index)
        return values + sigma * noise.astype(values.dtype)

    def parameters(self, net_state, inputs) -> ParameterSet:
        """Each cell's parameters (a variational model: at the location of its
        posterior)."""
        z = spatial_network.apply(self.graphdef, net_state, inputs)
        return physical_parameters(z[..., :len(self.names)], self.names, self.config,
                                   self.fixed)

    def _drawn(self, net_state, batch: PixelBatch) -> tuple[ParameterSet, jax.Array]:
        """The batch's parameters (a variational model: one draw per cell) and each cell's
        ``(B,)`` variational term (minus the log prior density of the draw, minus the
        entropy of the cell's normal less its constant; 0 for a point model)."""
        outputs = spatial_network.apply(self.graphdef, net_state, batch.inputs)
        if not self.variational:
            return physical_parameters(outputs, self.names, self.config, self.fixed), \
                jnp.zeros(outputs.shape[:1], outputs.dtype)
        loc, scale, factor = variational_normals(outputs, len(self.names), self.config)
        rank = factor.shape[-1]
        noise = cell_noise(batch.member, batch.draw, batch.cells, len(self.names) + rank
                           ).astype(outputs.dtype)
        z = loc + scale * noise[:, :loc.shape[1]] + jnp.einsum(
            "bpr,br->bp", factor, noise[:, loc.shape[1]:])
        log_prior = jnp.sum(jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z), axis=1)
        term = -log_prior - normal_entropy(scale, factor)
        return physical_parameters(z, self.names, self.config, self.fixed), term

    def _predicted(self, trainable, batch: PixelBatch) -> dict[str, jax.Array]:
        """Predicted series of the batch's cells, and under ``"variational"`` each cell's
        variational term (see :meth:`_drawn`)."""
        params, term = self._drawn(trainable["net"], batch)
        needed = tuple(dict.fromkeys((*self.streams, *self.regional)))
        ewt_mask = batch.mask[self.streams.index("ewt")] if "ewt" in self.streams else None
        out = predictions(params, batch.forcing, self.config.model_config,
                          trainable["hybrid"], needed, ewt_mask)
        return {**out, "variational": term}

    def _cell_terms(self, predicted, batch: PixelBatch) -> dict[str, jax.Array]:
        weights = dict(self.config.weights)
        out = {}
        for k, name in enumerate(self.streams):
            observed = self._perturbed(batch.values[k], batch.sigma[k], batch.cells,
                                       batch.member, k, 0)
            per_cell = _misfit(predicted[name], observed, batch.mask[k], batch.sigma[k],
                               self.variational)
            out[name] = weights.get(name, 1.0) * jnp.sum(per_cell) / max(self.n_train, 1)
        if self.variational:
            out["variational"] = jnp.sum(predicted["variational"] * batch.on_role) / max(
                self.n_train, 1)
        return out

    def _region_sums(self, predicted, batch: PixelBatch) -> tuple[jax.Array, jax.Array]:
        w = batch.region_weights
        sums = jnp.stack([w @ predicted[name] for name in self.regional]) if self.regional \
            else jnp.zeros((0, w.shape[0], batch.region_values.shape[-1]))
        return sums, jnp.sum(w, axis=1)

    def region_terms(self, sums, weight, batch: PixelBatch) -> dict[str, jax.Array]:
        """The regional terms (before :attr:`scale`) of regional means with area-weighted
        sums ``sums`` ``(Q, R, T)`` over total weights ``weight`` ``(R,)``."""
        weights = dict(self.config.weights)
        out = {}
        for k, name in enumerate(self.regional):
            mean = sums[k] / jnp.maximum(weight, 1e-30)[:, None]
            observed = self._perturbed(batch.region_values[k], batch.region_sigma[k],
                                       batch.regions, batch.member, k, 1)
            per_region = _misfit(mean, observed, batch.region_mask[k], batch.region_sigma[k],
                                 self.variational)
            divisor = self.n_train if self.variational else self.n_regions
            out[f"{name}_region"] = weights.get(f"{name}_region", 1.0) * jnp.sum(
                per_region) / max(divisor, 1)
        return out

    def terms(self, trainable, batch: PixelBatch) -> dict[str, jax.Array]:
        """The batch's share of each term of the objective (before :attr:`scale`)."""
        predicted = self._predicted(trainable, batch)
        return self._cell_terms(predicted, batch) | self.region_terms(
            *self._region_sums(predicted, batch), batch)

    def loss(self, trainable, batch: PixelBatch) -> jax.Array:
        return batch.scale * sum(self.terms(trainable, batch).values())

    def region_sums(self, trainable, batch: PixelBatch) -> tuple[jax.Array, jax.Array]:
        """``(sums (Q, R, T), weight (R,))``: the batch's part of its regions' area-weighted
        sums of the regional streams, and of their weights."""
        return self._region_sums(self._predicted(trainable, batch), batch)

    def piece_loss(self, trainable, batch: PixelBatch, cotangent) -> tuple[jax.Array,
                                                                          jax.Array]:
        """``(surrogate, cell loss)`` of one piece of a step larger than a batch: the
        gradient of the surrogate is the piece's share of the step's gradient, given the
        ``cotangent`` ``(Q, R, T)`` of the step's regional loss with respect to the regional
        sums (:meth:`region_sums`); both scaled by :attr:`scale`."""
        predicted = self._predicted(trainable, batch)
        cells = batch.scale * sum(self._cell_terms(predicted, batch).values())
        sums, _ = self._region_sums(predicted, batch)
        return cells + jnp.sum(jax.lax.stop_gradient(cotangent) * sums), cells


# --- devices --------------------------------------------------------------------------------


def pixel_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis mesh ``("pixels",)`` over the first ``n_devices`` devices (all processes'
    devices by default)."""
    devices = jax.devices()
    if n_devices is not None:
        if not 1 <= n_devices <= len(devices):
            raise SettingsError(f"--devices: {n_devices} requested, {len(devices)} available "
                                "(on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                                "before the first JAX call gives N)")
        devices = devices[:n_devices]
    return Mesh(np.asarray(devices), ("pixels",))


def batch_specs(batch: PixelBatch) -> PixelBatch:
    """Partition specs of a minibatch: the cell axis split over the mesh."""
    cells = P("pixels")
    return PixelBatch(jax.tree.map(lambda _: cells, batch.forcing), cells,
                      P(None, "pixels"), P(None, "pixels"), P(None, "pixels"),
                      P(None, "pixels"), P(), P(), P(), P(), cells, P(), P(), cells, P())


def place(tree, specs, mesh: Mesh):
    """Global arrays of ``tree`` (the same numpy values in every process) laid out by
    ``specs`` on ``mesh``; works alike with one process or several."""
    def put(x, spec):
        x = np.asarray(x)
        sharding = NamedSharding(mesh, spec)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree, specs)


def replicate(tree, mesh: Mesh):
    """``tree`` replicated on every device of ``mesh``."""
    return place(tree, jax.tree.map(lambda _: P(), tree), mesh)


# --- training -------------------------------------------------------------------------------


@dataclass
class GridTrained:
    """A trained network: weights, the shared hybrid weights and the history."""

    graphdef: object
    state: object
    hybrid: dict | None
    history: dict
    finished: bool
    stopped_early: bool
    resumed_from: int | None


def epoch_batches(problem: GridProblem, config: GridConfig, batch_size: int, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """The training steps of ``epoch``: cells kept together by region, a fitted region
    larger than ``batch_size`` a step of its own (:func:`plan_batches`)."""
    groups = problem.groups
    eligible = (problem.roles == ROLES["train"]) | (groups >= 0)
    return plan_batches(groups, eligible, batch_size, [seed, 5, epoch], problem.fitted)


def batch_size_for(problem: GridProblem, config: GridConfig, n_devices: int) -> int:
    """Cells per minibatch: ``batch_pixels`` rounded up to a multiple of ``n_devices``."""
    return -(-config.batch_pixels // n_devices) * n_devices


class PieceGradient:
    """Value and gradient of a training step whose cells are read in several minibatches
    (a fitted region larger than a batch), exact and with the memory of one minibatch.

    A forward pass over the pieces gives the region's area-weighted sums; the gradient of
    the regional loss with respect to those sums is the cotangent with which each piece's
    gradient (:meth:`Objective.piece_loss`) is then taken; the sum over the pieces is the
    gradient of the step's loss, cell terms and regional term together.
    """

    def __init__(self, objective: Objective):
        def region_loss(sums, weight, batch):
            return batch.scale * sum(objective.region_terms(sums, weight, batch).values())

        self._sums = jax.jit(objective.region_sums)
        self._region = jax.jit(jax.value_and_grad(region_loss))
        self._piece = jax.jit(jax.value_and_grad(objective.piece_loss, has_aux=True))

    def __call__(self, trainable, piece: Callable[[int], PixelBatch], n_pieces: int):
        """``(value, grads)`` of the step whose ``k``-th minibatch is ``piece(k)`` (each
        read twice, so that only one is held at a time)."""
        sums = weight = None
        for k in range(n_pieces):
            part, part_weight = self._sums(trainable, piece(k))
            sums = part if sums is None else sums + part
            weight = part_weight if weight is None else weight + part_weight
        value, cotangent = self._region(sums, weight, piece(0))
        grads = None
        for k in range(n_pieces):
            (_, cells), part = self._piece(trainable, piece(k), cotangent)
            value = value + cells
            grads = part if grads is None else jax.tree.map(jnp.add, grads, part)
        return value, grads


def max_regions(batches: Sequence[np.ndarray], problem: GridProblem) -> int:
    groups = problem.groups
    return max([len(set(groups[b][groups[b] >= 0].tolist())) for b in batches] or [0]) or 1


def train_grid(problem: GridProblem, config: GridConfig, graphdef_and_state, hybrid,
               seed: int, mesh: Mesh, checkpoint_dir=None, progress: bool = True,
               description: str = "", fingerprint_text: str = "",
               stop_after: int | None = None, compiled: dict | None = None) -> GridTrained:
    """Train one network (seed ``seed``) on the cells of ``problem``.

    Minibatches follow a seeded schedule of epochs (:func:`epoch_batches`), so a resumed
    training sees the same minibatches; the validation loss (cell terms on the validation
    cells) is evaluated every ``eval_every`` minibatches, the weights of its lowest value are
    kept, and training stops after ``patience`` evaluations without improvement. With
    ``checkpoint_dir`` the state is saved at every evaluation and a rerun resumes exactly.
    ``compiled``: a dict in which the compiled steps are kept for the next member of the
    same ensemble (same problem, configuration and network shape; only the seed differs).
    """
    graphdef, state = graphdef_and_state
    n_devices = mesh.devices.size
    size = batch_size_for(problem, config, n_devices)
    first = epoch_batches(problem, config, size, seed, 0)
    n_batches = len(first)
    n_regions_batch = max(max_regions(first, problem), 1)
    objective = objective_for(problem, config, graphdef, seed)
    validation_cells = np.flatnonzero(problem.roles == ROLES["validation"])
    if validation_cells.size == 0:
        validation_cells = np.flatnonzero(problem.roles == ROLES["train"])
    validation_role = "validation" if np.any(problem.roles == ROLES["validation"]) else "train"
    validation_objective = dataclasses.replace(objective, regional=(), n_train=int(
        validation_cells.size), perturbed=False)
    validation_plan = [validation_cells[k:k + size]
                       for k in range(0, validation_cells.size, size)]

    trainable = {"net": state, "hybrid": hybrid}
    optimiser = make_optimiser(trainable, config)
    opt_state = optimiser.init(trainable)
    specs = batch_specs(problem.batch(validation_plan[0], size, validation_role, 1.0, 1,
                                      False))
    compiled = {} if compiled is None else compiled
    if not compiled:
        compiled.update(step=jax.jit(guarded_step(objective.loss, optimiser)),
                        update=jax.jit(guarded_update(optimiser)),
                        pieces=PieceGradient(objective),
                        validation=jax.jit(validation_objective.loss))
    step, update = compiled["step"], compiled["update"]
    piece_gradient, validation_loss = compiled["pieces"], compiled["validation"]

    def evaluate(trainable) -> float:
        # each batch is read while the device works on the one before
        losses = [validation_loss(trainable, place(problem.batch(
            cells, size, validation_role, 1.0, 1, False), specs, mesh))
            for cells in validation_plan]
        return float(sum(float(loss) for loss in losses))

    n_evaluations = -(-config.max_iterations // config.eval_every)
    carry = {"trainable": trainable, "opt_state": opt_state, "best": trainable,
             "best_loss": np.asarray(np.inf), "done": np.asarray(0, np.int32),
             "since_best": np.asarray(0, np.int32), "skipped": np.asarray(0, np.int32),
             "record": {"iteration": np.zeros(n_evaluations, np.int32),
                        "train": np.full(n_evaluations, np.nan),
                        "validation": np.full(n_evaluations, np.nan)}}
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = None
    if manager is not None and manager.latest_step() is not None:
        carry = restore_checkpoint(manager, carry, fingerprint_text)
        done = int(carry["done"])
        resumed_from = int(carry["record"]["iteration"][done - 1]) if done else 0
    carry = dict(carry)
    carry["trainable"] = replicate(carry["trainable"], mesh)
    carry["opt_state"] = replicate(carry["opt_state"], mesh)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_evaluations, initial=int(carry["done"]), unit="eval", leave=False,
                   desc=description or "grid")
    plans: dict[int, list[np.ndarray]] = {0: first}

    def training_step(iteration: int) -> tuple[np.ndarray, PixelBatch | None]:
        """The cells of a step and, if they fit one minibatch, the minibatch."""
        epoch, position = divmod(iteration, n_batches)
        if epoch not in plans:
            plans.clear()
            plans[epoch] = epoch_batches(problem, config, size, seed, epoch)
        plan = plans[epoch]
        cells = plan[position % len(plan)]
        if cells.size > size:
            return cells, None
        return cells, place(problem.batch(cells, size, "train", float(n_batches),
                                          n_regions_batch, True, member=seed,
                                          draw=iteration), specs, mesh)

    def piece(cells: np.ndarray, iteration: int, k: int) -> PixelBatch:
        region = [int(problem.groups[cells[0]])]
        return place(problem.batch(cells[k * size:(k + 1) * size], size, "train",
                                   float(n_batches), n_regions_batch, True, region,
                                   member=seed, draw=iteration), specs, mesh)

    stopped_early = False
    evaluations = 0
    trained_cells = 0
    while int(carry["done"]) < n_evaluations:
        if int(carry["since_best"]) >= config.patience:
            stopped_early = True
            break
        if stop_after is not None and evaluations >= stop_after:
            break
        done = int(carry["done"])
        trainable, opt_state = carry["trainable"], carry["opt_state"]
        n_steps = min(config.eval_every, config.max_iterations - done * config.eval_every)
        losses, finites = [], []
        cells, batch = training_step(done * config.eval_every)
        for k in range(n_steps):
            n_pieces = -(-cells.size // size)
            if batch is not None:
                trainable, opt_state, loss, finite = step(trainable, opt_state, batch)
            else:
                value, grads = piece_gradient(
                    trainable, functools.partial(piece, cells, done * config.eval_every + k),
                    n_pieces)
                trainable, opt_state, loss, finite = update(trainable, opt_state, value,
                                                            grads)
            trained_cells += n_pieces * size
            if k + 1 < n_steps:  # read the next cells while the step runs
                cells, batch = training_step(done * config.eval_every + k + 1)
            losses.append(loss)
            finites.append(finite)
        losses = [float(loss) for loss in losses]
        skipped = sum(int(not bool(finite)) for finite in finites)
        valid = evaluate(trainable)
        improved = np.isfinite(valid) and valid < float(carry["best_loss"]) * (1.0 - 1e-4)
        record = {key: np.array(value) for key, value in carry["record"].items()}
        record["iteration"][done] = done * config.eval_every + n_steps
        record["train"][done] = float(np.mean(losses)) / n_batches
        record["validation"][done] = valid
        carry = {"trainable": trainable, "opt_state": opt_state,
                 "best": trainable if improved else carry["best"],
                 "best_loss": np.asarray(valid if improved else carry["best_loss"]),
                 "done": np.asarray(done + 1, np.int32),
                 "since_best": np.asarray(0 if improved else int(carry["since_best"]) + 1,
                                          np.int32),
                 "skipped": np.asarray(int(carry["skipped"]) + skipped, np.int32),
                 "record": record}
        evaluations += 1
        if manager is not None and jax.process_index() == 0:
            save_checkpoint(manager, done + 1, _host(carry), fingerprint_text)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{record['train'][done]:.4g}", validation=f"{valid:.4g}")
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
    history["batch_pixels"] = size
    history["batches_per_epoch"] = n_batches
    history["cells_trained"] = trained_cells  # in this run's steps, padding included
    history["devices"] = int(n_devices)
    best = _host(carry["best"])
    return GridTrained(graphdef, best["net"], best["hybrid"], history,
                       stopped_early or done >= n_evaluations, stopped_early, resumed_from)


def _host(tree):
    """``tree`` as numpy arrays on this host (global arrays must be fully replicated)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(
        x, jax.Array) else np.asarray(x), tree)


def new_network(n_inputs: int, config: GridConfig, seed: int):
    """``((graphdef, state), hybrid)``: a new network and the model's hybrid terms."""
    model_config = config.model_config
    hybrid = init_network(jax.random.PRNGKey(seed), model_config) \
        if model_config.network_sizes else None
    return spatial_network.build(n_inputs, config.n_outputs, config.hidden, config.depth,
                                 seed), hybrid


def objective_for(problem: GridProblem, config: GridConfig, graphdef,
                  seed: int | None = None) -> Objective:
    """The objective of ``problem``: its streams, its training cells and fitted regions;
    for a member (``seed`` given) of an ensemble with ``perturbed_observations``, against
    the perturbed observations of the member each batch names (:attr:`PixelBatch.member`)."""
    perturb = seed is not None and config.perturbed_observations and len(config.seeds) > 1 \
        and not config.variational
    return Objective(graphdef, config.parameter_names, config.fixed_parameters(), config,
                     problem.streams, problem.regional,
                     int(np.sum(problem.roles == ROLES["train"])), int(problem.fitted.sum()),
                     perturb, config.variational)


def full_objective(problem: GridProblem, config: GridConfig, graphdef,
                   cells: np.ndarray | None = None) -> tuple[Objective, PixelBatch]:
    """``(objective, batch)``: the objective over every training cell and fitted region of
    ``cells`` (default all) as one batch (for checks of the minibatch estimator on small
    grids)."""
    cells = np.arange(problem.n_pixels) if cells is None else cells
    objective = objective_for(problem, config, graphdef)
    batch = problem.batch(cells, cells.size, "train", 1.0, max(problem.n_regions, 1), True)
    return objective, batch


__all__ = ["CELL_BATCH", "GridConfig", "GridProblem", "GridTrained", "Objective", "PixelBatch",
           "ROLES", "batch_size_for", "batch_specs", "epoch_batches", "full_objective",
           "holdout_roles", "new_network", "objective_for", "pixel_mesh", "place",
           "plan_batches", "predict_cells", "predict_in_batches", "predictions", "replicate",
           "train_grid"]
