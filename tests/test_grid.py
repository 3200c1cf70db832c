"""The twin world, pixel-minibatch training over a grid (one and several devices, one and
two processes), grid prediction, and the demo."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from differland.cli import main
from differland.grid_workflows import (
    DEFAULT_SIGMA_FRACTION,
    annual_budgets,
    ensemble_mean,
    ensemble_spread,
    grid_config_for,
    grid_predict,
    grid_train,
    load_problem,
    make_world,
    stream_arrays,
)
from differland.io import GridObservation, read_grid_driver
from differland.spatial.grid import (
    ROLES,
    GridConfig,
    PieceGradient,
    epoch_batches,
    full_objective,
    holdout_roles,
    new_network,
    objective_for,
    plan_batches,
    predict_in_batches,
)
from differland.world.build import WorldError, WorldSpec
from differland.world.maps import load_world_maps
from differland.world.planted import BASE_VALUES, PLANTED

SCRIPT = Path(__file__).parent / "scripts" / "grid_devices.py"
SMALL = WorldSpec(resolution=4.0, region=(-12.0, 42.0, 34.0, 72.0), years=2, seed=3)
SETTINGS = {"hidden": 8, "max_iterations": 4, "eval_every": 2, "batch_pixels": 16}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world") / "world.zarr"
    make_world(path, SMALL, progress=False)
    return path


@pytest.fixture(scope="module")
def loaded(world):
    driver = read_grid_driver(world)
    config = grid_config_for(driver, SETTINGS)
    problem, standardizer, names = load_problem(driver, config)
    return driver, config, problem, standardizer


def test_world_is_built_on_the_shipped_maps_with_its_truth(world):
    driver = read_grid_driver(world)
    maps = load_world_maps(SMALL.resolution, SMALL.region)
    np.testing.assert_array_equal(driver.lat, maps.lat.values)
    np.testing.assert_array_equal(driver.dataset.igbp.values, maps.igbp.values)
    np.testing.assert_allclose(driver.static("elevation"), maps.elevation.values, rtol=1e-6)
    assert driver.n_pixels > 20 and driver.n_steps == 24
    assert set(driver.observations) >= {"lai", "sif", "biomass", "ewt", "gpp", "reco", "et"}
    assert driver.regional == ("nbe",) and driver.regions
    cells = np.arange(driver.n_pixels)
    for name in PLANTED:  # planted maps vary, the others are the base value everywhere
        assert np.std(driver.true(name, cells)) > 0
    np.testing.assert_allclose(driver.true("leaf_fall_period", cells),
                               BASE_VALUES["leaf_fall_period"], rtol=1e-6)
    truth, observed = driver.true("lai", cells), driver.observation("lai", cells)
    residual = (observed.values - truth)[observed.mask] / observed.sigma[observed.mask]
    assert abs(residual.mean()) < 0.2 and 0.8 < residual.std() < 1.2  # the stated noise
    assert json.loads(driver.attrs["free_parameters"]) == list(PLANTED)


def test_the_truth_is_the_model_run_on_the_forcing_the_reader_gives(world):
    """The world's planted fluxes are reproduced by the model on what the grid reader
    returns (forcing, clock, reference climate) with the true parameters."""
    driver = read_grid_driver(world)
    cells = np.arange(0, driver.n_pixels, 7)
    config = grid_config_for(driver).model_config
    params = {name: driver.true(name, cells) for name in config.parameter_names()}
    forcing = driver.forcing(cells)
    fields = {name: getattr(forcing, name) for name in forcing.__dataclass_fields__}
    simulated = predict_in_batches(params, fields, config, None, ("gpp", "nbe", "lai"))
    for name in ("gpp", "nbe", "lai"):
        truth = driver.true(name, cells)
        np.testing.assert_allclose(simulated[name], truth, rtol=1e-3,
                                   atol=1e-3 * float(np.abs(truth).max()))


def test_streams_without_uncertainty_get_a_share_of_each_rows_spread():
    observation = GridObservation(np.array([[1.0, 2.0, 3.0, 9.0], [5.0, 0.0, 0.0, 0.0]]),
                                  np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool), None, "1")
    values, mask, sigma = stream_arrays(observation)
    np.testing.assert_allclose(sigma[0], DEFAULT_SIGMA_FRACTION * np.std([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(sigma[1], 1.0)  # one value: no spread
    assert values[0, 3] == 0.0 and not mask[0, 3]


def test_world_refuses_an_existing_output_and_bad_options(world, capsys):
    assert main(["world", "--out", str(world), "--resolution", "4"]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(WorldError, match="--years"):
        WorldSpec(years=0)
    status = main(["world", "--out", str(world.parent / "x.zarr"), "--region", "1,2,3"])
    error = capsys.readouterr().err
    assert status == 2 and "--region" in error and error.count("\n") == 1
    assert not (world.parent / "x.zarr").exists()


def test_holdout_roles_are_blocks_with_the_requested_shares():
    rows, cols = np.divmod(np.arange(400), 20)
    config = GridConfig(validation_fraction=0.2, test_fraction=0.1, holdout_block=2)
    roles = holdout_roles(rows, cols, config)
    assert abs(np.mean(roles == ROLES["validation"]) - 0.2) < 0.03
    assert abs(np.mean(roles == ROLES["test"]) - 0.1) < 0.03
    blocks = roles.reshape(10, 2, 10, 2).transpose(0, 2, 1, 3).reshape(100, 4)
    assert np.all(blocks == blocks[:, :1])  # each 2 x 2 block has one role


def test_batches_keep_regions_together_and_cover_each_cell_once():
    groups = np.array([0] * 5 + [1] * 7 + [-1] * 9)
    batches = plan_batches(groups, np.ones(groups.size, bool), 8, [1, 2])
    assert sorted(np.concatenate(batches).tolist()) == list(range(groups.size))
    for region in (0, 1):
        assert sum(np.any(groups[b] == region) for b in batches) == 1
    assert all(b.size <= 8 for b in batches)


def _piece(problem, cells, size, scale, regions, k):
    return problem.batch(cells[k * size:(k + 1) * size], size, "train", scale, regions, True,
                         [int(problem.groups[cells[0]])], member=7)


def test_minibatch_gradients_average_to_the_full_gradient(loaded):
    driver, config, problem, standardizer = loaded
    (graphdef, state), hybrid = new_network(standardizer.n_inputs, config, 0)
    trainable = {"net": state, "hybrid": hybrid}
    objective, full = full_objective(problem, config, graphdef)
    # an ensemble member's perturbed observations: each cell's noise is its own in any batch
    objective = dataclasses.replace(objective, perturbed=True)
    full = dataclasses.replace(full, member=np.int32(7))
    grad = jax.jit(jax.grad(objective.loss))
    expected = grad(trainable, full)
    largest = int(problem.group_sizes[problem.fitted].max())
    pieces = PieceGradient(objective)
    for size in (largest, max(largest // 3, 2)):  # regions whole in a batch, then in pieces
        batches = epoch_batches(problem, config, size, 0, 0)
        assert len(batches) > 2 and problem.fitted.sum() >= 2
        assert (max(b.size for b in batches) > size) == (size < largest)
        regions = max(len(set(problem.groups[b][problem.groups[b] >= 0])) for b in batches)
        scale = float(len(batches))
        parts = []
        for b in batches:
            if b.size <= size:
                parts.append(grad(trainable, problem.batch(b, size, "train", scale, regions,
                                                           True, member=7)))
                continue
            piece = functools.partial(_piece, problem, b, size, scale, regions)
            parts.append(pieces(trainable, piece, -(-b.size // size))[1])
        mean = jax.tree.map(lambda *g: sum(g) / len(g), *parts)
        for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3,
                                       atol=1e-5 * float(np.max(np.abs(b)) + 1e-12))


def test_ensemble_members_fit_their_own_draw_of_the_stated_noise(loaded):
    driver, config, problem, _ = loaded
    two = dataclasses.replace(config, seeds=(0, 1))
    assert not objective_for(problem, config, None, 0).perturbed  # one member
    assert not objective_for(problem, dataclasses.replace(two, perturbed_observations=False),
                             None, 1).perturbed
    cells = np.arange(problem.n_pixels)
    batch = problem.batch(cells, cells.size, "train", 1.0, problem.n_regions, True)
    draws = []
    for seed in (0, 1):
        objective = objective_for(problem, two, None, seed)
        perturbed = objective._perturbed(batch.values[0], batch.sigma[0], batch.cells, seed,
                                         0, 0)
        observed = np.asarray(batch.mask[0]) > 0
        draws.append(((np.asarray(perturbed) - batch.values[0]) / batch.sigma[0])[observed])
    for noise in draws:
        assert abs(noise.mean()) < 0.1 and 0.9 < noise.std() < 1.1
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.1  # independent members


def _script(world, *arguments, env=None) -> dict:
    result = subprocess.run([sys.executable, str(SCRIPT), str(world), *map(str, arguments)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_cpu_devices_give_the_single_device_result(world):
    one, four = _script(world, 1), _script(world, 4)
    assert four["devices"] == 4
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(four["grad_first"], one["grad_first"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(four["weights"], one["weights"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_processes_joined_by_jax_distributed_give_the_one_process_result(world):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    one = _script(world, 2)
    processes = [subprocess.Popen([sys.executable, str(SCRIPT), str(world), "2", str(k), "2",
                                   str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for k in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    for out, _ in outputs:
        result = json.loads(out.strip().splitlines()[-1])
        assert result["devices"] == 2
        np.testing.assert_allclose(result["loss"], one["loss"], rtol=1e-5)
        np.testing.assert_allclose(result["weights"], one["weights"], rtol=1e-4, atol=1e-5)


def test_train_resume_and_predict_on_the_world(world, tmp_path):
    model = tmp_path / "model"
    assert grid_train(world, model, SETTINGS, progress=False, stop_after=1) == {}
    record = grid_train(world, model, SETTINGS, progress=False)
    assert record["seeds"]["0"]["resumed_from_iteration"] == 2
    uninterrupted = grid_train(world, tmp_path / "again", SETTINGS, progress=False)
    resumed = json.loads((model / "history.json").read_text())["0"]
    straight = json.loads((tmp_path / "again" / "history.json").read_text())["0"]
    np.testing.assert_allclose(resumed["validation"], straight["validation"], rtol=1e-6)
    assert uninterrupted["seeds"]["0"]["resumed_from_iteration"] is None
    stale = tmp_path / ".disk.cells-abcdefgh"  # as a killed run leaves it
    stale.mkdir()
    np.save(stale / "values.npy", np.zeros(3))
    grid_train(world, tmp_path / "disk", SETTINGS, progress=False, memory_gib=0.0)
    from_disk = json.loads((tmp_path / "disk" / "history.json").read_text())["0"]
    assert from_disk["validation"] == straight["validation"]  # the same numbers, read from disk
    assert from_disk["train"] == straight["train"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "disk", "model"]
    out = tmp_path / "prediction"
    report = grid_predict(model, world, out, progress=False)
    for name in ("parameters.nc", "fluxes.nc", "identified.json", "budgets.csv",
                 "recovery.json", "maps/gpp_mean.tif", "figures/regional_nbe.png"):
        assert (out / name).exists(), name
    assert set(report["parameters"]) == set(PLANTED)
    import xarray as xr

    with xr.open_dataset(out / "parameters.nc") as maps:
        assert set(PLANTED) <= set(maps.data_vars)
        assert maps.canopy_efficiency.dims == ("lat", "lon")


def test_cells_memory_mapped_from_disk_are_the_cells_in_memory(loaded, world, tmp_path):
    driver, config, problem, _ = loaded
    on_disk, _, _ = load_problem(driver, config, on_disk=tmp_path)
    assert isinstance(on_disk.values, np.memmap) and not on_disk.values.flags.writeable
    for name in ("values", "mask", "sigma", "inputs"):
        np.testing.assert_array_equal(getattr(on_disk, name), getattr(problem, name))
    for name, field in problem.forcing.items():
        assert isinstance(on_disk.forcing[name], np.memmap)
        np.testing.assert_array_equal(on_disk.forcing[name], field)


def test_a_grid_too_large_for_the_free_disk_is_one_line(world, tmp_path, capsys,
                                                         monkeypatch):
    import shutil

    from differland import grid_workflows

    monkeypatch.setattr(grid_workflows.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(1, 1, 0))
    status = main(["spatial", "train", "--grid", str(world), "--out", str(tmp_path / "m"),
                   "--memory", "0", "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and "GiB are free" in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_ensemble_mean_of_phenology_dates_is_taken_on_the_year_circle():
    year = 365.25
    members = np.array([[year + 290.0, year + 360.0, 1000.0],
                        [2 * year + 290.0, year + 370.0, 1000.0]], np.float32)
    mean = ensemble_mean("leaf_fall_day", members)
    np.testing.assert_allclose(mean, [year + 290.0, year + 365.0, 1000.0 - year], atol=1e-3)
    np.testing.assert_allclose(ensemble_spread("leaf_fall_day", members), [0.0, 5.0, 0.0],
                               atol=0.05)
    np.testing.assert_allclose(ensemble_mean("canopy_efficiency", members), members.mean(0))


def test_annual_budgets_add_up_cells_and_days():
    dates = np.arange(np.datetime64("2001-01"), np.datetime64("2003-01")).astype(
        "datetime64[D]")
    nbe = np.ones((2, dates.size))  # 1 gC m-2 d-1
    weights = np.array([[1e12, 1e12]])  # 2e12 m2
    budgets, years = annual_budgets(nbe, weights, dates)
    np.testing.assert_allclose(budgets, [[365 * 2e12 / 1e15, 365 * 2e12 / 1e15]])
    assert years.tolist() == [2001, 2002]


def test_bad_grid_config_is_one_line(world, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"batch_pixels": 0}))
    status = main(["spatial", "train", "--grid", str(world), "--out", str(tmp_path / "m"),
                   "--config", str(config), "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and "batch_pixels" in error and error.count("\n") == 1
    assert main(["spatial", "train", "--out", str(tmp_path / "m")]) == 2
    assert "--grid" in capsys.readouterr().err
