"""The variational spatialization network over a grid: its objective is the negative
evidence lower bound, minibatches estimate it without bias, and ``differland posterior
spatial --grid`` writes maps with credible intervals and budgets with posterior spread."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro.distributions.transforms import biject_to

from differland.calibrate.bayes import PosteriorConfig, prior_distribution
from differland.calibrate.variational import scale_of
from differland.cli import main
from differland.grid_workflows import (
    ensemble_interval,
    ensemble_mean,
    grid_config_for,
    interval_contains,
    load_problem,
    make_world,
)
from differland.io import read_grid_driver
from differland.spatial import network as spatial_network
from differland.spatial.grid import (
    ROLES,
    cell_noise,
    epoch_batches,
    full_objective,
    new_network,
    predictions,
)
from differland.spatial.training import physical_parameters
from differland.world.build import WorldSpec

SMALL = WorldSpec(resolution=4.0, region=(-12.0, 42.0, 34.0, 72.0), years=2, seed=5)
SETTINGS = {"hidden": 8, "max_iterations": 4, "eval_every": 2, "batch_pixels": 16,
            "variational": True, "posterior_draws": 3, "init_scale": 0.3}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world") / "world.zarr"
    make_world(path, SMALL, progress=False)
    return path


@pytest.fixture(scope="module")
def loaded(world):
    driver = read_grid_driver(world)
    config = grid_config_for(driver, SETTINGS)
    problem, standardizer, _ = load_problem(driver, config)
    (graphdef, state), hybrid = new_network(standardizer.n_inputs, config, 0)
    # a network whose outputs differ between cells, locations and scales alike
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    state = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                      for x, k in zip(leaves, keys, strict=True)])
    return driver, config, problem, {"net": state, "hybrid": hybrid}, graphdef


def _log_prior_in_z(name: str, z: np.ndarray) -> np.ndarray:
    """log density at z of the sampler's uniform prior of ``name`` (NumPyro)."""
    prior = prior_distribution(PosteriorConfig().calibration, name)
    transform = biject_to(prior.support)
    value = transform(jnp.asarray(z, jnp.float64 if jax.config.jax_enable_x64 else
                                  jnp.float32))
    return np.asarray(prior.log_prob(value) + transform.log_abs_det_jacobian(z, value))


def test_the_variational_objective_is_the_negative_elbo_over_the_training_cells(loaded):
    """N x the objective on one batch of every cell equals the negative ELBO computed
    here from its parts: the Gaussian log likelihood of every observed step of the
    training cells and regions, NumPyro's log prior of the sampler's coordinates, and the
    normals' entropy (up to its constant)."""
    driver, config, problem, trainable, graphdef = loaded
    objective, batch = full_objective(problem, config, graphdef)
    batch = dataclasses.replace(batch, draw=np.int32(3), member=np.int32(0))
    value = float(objective.loss(trainable, batch)) * objective.n_train

    names = config.parameter_names
    n, rank = len(names), config.variational_rank
    outputs = np.asarray(spatial_network.apply(graphdef, trainable["net"], batch.inputs),
                         np.float64)
    assert outputs.shape[1] == (2 + rank) * n and rank > 0
    loc = outputs[:, :n]
    scale = np.asarray(scale_of(jnp.asarray(outputs[:, n:2 * n]), config.init_scale))
    factor = config.init_scale * outputs[:, 2 * n:].reshape(-1, n, rank)
    noise = np.asarray(cell_noise(0, 3, batch.cells, n + rank))
    z = (loc + scale * noise[:, :n] + np.einsum("bpr,br->bp", factor, noise[:, n:])
         ).astype(np.float32)
    params = physical_parameters(jnp.asarray(z), names, config, config.fixed_parameters())
    ewt = batch.mask[problem.streams.index("ewt")]
    predicted = predictions(params, batch.forcing, config.model_config, None,
                            tuple(dict.fromkeys((*problem.streams, "nbe"))), ewt)
    train = problem.roles == ROLES["train"]
    expected = 0.0
    for k, name in enumerate(problem.streams):
        observed = (problem.mask[k] > 0) & train[:, None]
        residual = (np.asarray(predicted[name]) - problem.values[k]) / problem.sigma[k]
        expected += 0.5 * np.sum(residual[observed] ** 2)
    # a cell counts in the mean of its region (region_groups), fitted regions only
    regions = np.arange(problem.n_regions)[:, None]
    weights = np.where(problem.groups[None, :] == regions, problem.region_fractions, 0.0)
    mean = weights @ np.asarray(predicted["nbe"]) / weights.sum(axis=1, keepdims=True)
    observed = (problem.region_mask[0] > 0) & problem.fitted[:, None]
    expected += 0.5 * np.sum(((mean - problem.region_values[0]) / problem.region_sigma[0]
                              )[observed] ** 2)
    for j, name in enumerate(names):
        expected -= np.sum(_log_prior_in_z(name, z[train, j]))
    q = dist.LowRankMultivariateNormal(jnp.asarray(loc[train]), jnp.asarray(factor[train]),
                                       jnp.asarray(scale[train] ** 2))
    expected -= np.sum(np.asarray(q.entropy())) - train.sum() * n / 2 * (1 + np.log(2 * np.pi))
    assert train.sum() < problem.n_pixels and observed.any()
    np.testing.assert_allclose(value, expected, rtol=2e-4)


def test_minibatches_estimate_the_variational_objective_without_bias(loaded):
    """With the same draw, the gradients of an epoch's minibatches average to the full
    gradient: a cell's draw does not depend on the batch it is in."""
    driver, config, problem, trainable, graphdef = loaded
    objective, full = full_objective(problem, config, graphdef)
    full = dataclasses.replace(full, draw=np.int32(11))
    grad = jax.jit(jax.grad(objective.loss))
    expected = grad(trainable, full)
    size = int(problem.group_sizes[problem.fitted].max())
    batches = epoch_batches(problem, config, size, 0, 0)
    regions = max(len(set(problem.groups[b][problem.groups[b] >= 0])) for b in batches)
    parts = [grad(trainable, problem.batch(b, size, "train", float(len(batches)), regions,
                                           True, draw=11)) for b in batches]
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *parts)
    for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3,
                                   atol=1e-5 * float(np.max(np.abs(b)) + 1e-12))


def test_intervals_of_cyclic_days_are_taken_on_the_circle_of_the_year():
    members = np.array([[360.0], [364.0], [3.0], [8.0], [12.0]])
    lower, upper = ensemble_interval("leaf_fall_day", members, 0.9)
    assert upper - lower < 20.0  # not the 350 days between the raw extremes
    centre = ensemble_mean("leaf_fall_day", members)  # placed in the second year
    assert lower[0] < centre[0] < upper[0]
    for truth, inside in ((2.0, True), (367.0, True), (180.0, False), (350.0, False)):
        assert interval_contains("leaf_fall_day", lower, upper, centre,
                                 np.array([truth]))[0] == inside
    lower, upper = ensemble_interval("leaf_lifespan", members, 0.9)
    assert lower[0] < 10.0 < 300.0 < upper[0]


def test_posterior_spatial_grid_writes_maps_with_intervals_and_budgets(world, tmp_path,
                                                                       capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**{k: v for k, v in SETTINGS.items() if k != "variational"},
                                  "seeds": [0, 1]}))
    out = tmp_path / "run"
    command = ["posterior", "spatial", "--grid", str(world), "--out", str(out), "--config",
               str(config), "--no-progress"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "90 % interval holds the truth" in printed and "6 posterior members" in printed
    made = json.loads((out / "model" / "config.json").read_text())
    assert made["grid_config"]["variational"] is True
    maps = xr.open_dataset(out / "prediction" / "parameters.nc")
    for name in ("wood_turnover_rate", "initial_wood_carbon"):
        mean, low, high = (maps[f"{name}{suffix}"].values for suffix in ("", "_q05", "_q95"))
        land = np.isfinite(mean)
        assert np.all(low[land] <= high[land]) and np.any(low[land] < high[land])
        assert np.mean((low[land] <= mean[land]) & (mean[land] <= high[land])) > 0.9
    maps.close()
    rows = (out / "prediction" / "budgets.csv").read_text().splitlines()
    assert rows[0].split(",")[-2:] == ["q05", "q95"] or {"q05", "q95"} <= set(
        rows[0].split(","))
    record = json.loads((out / "posterior.json").read_text())
    coverage = [row["coverage_90_test_cells"]
                for row in record["report"]["parameters"].values()]
    assert all(0.0 <= c <= 1.0 for c in coverage)
    assert "budgets_within_90" in record["report"]
    # a rerun predicts again from the trained model; another configuration is refused
    assert main(command) == 0 and json.loads((out / "posterior.json").read_text())[
        "training_seconds"] is None
    capsys.readouterr()
    assert main([*command, "--draws", "2"]) == 2
    error = capsys.readouterr().err
    assert "another configuration" in error and error.count("\n") == 1


def test_posterior_spatial_grid_refuses_bad_settings_in_one_line(world, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"init_scale": 0}))
    out = tmp_path / "run"
    assert main(["posterior", "spatial", "--grid", str(world), "--out", str(out),
                 "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "init_scale" in error and error.count("\n") == 1 and not out.exists()
    assert main(["posterior", "spatial", "--grid", str(world), "--sites-dir", str(tmp_path),
                 "--out", str(out)]) == 2
    assert "give exactly one" in capsys.readouterr().err and not out.exists()
    assert main(["posterior", "spatial", "--grid", str(world), "--out", str(out),
                 "--float64"]) == 2
    assert "float32" in capsys.readouterr().err and not out.exists()
