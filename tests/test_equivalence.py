"""scan = Python loop, jit = no-jit, vmap = loop, checkpointed = plain (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import load
from helpers import site_forcing, take

from differland import (
    GlobalModel,
    LinearBeta,
    ModelConfig,
    NeuralBeta,
    SiteModel,
    default_parameters,
    initial_state,
    simulate,
    simulate_pixels,
    step,
)
from differland.model import Trajectory

SITE = ModelConfig(model=SiteModel(), water_stress=LinearBeta())


def assert_trees_close(a, b, rtol=1e-12, atol=1e-12):
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("reference_mode", [False, True])
def test_scan_equals_python_loop(fluxsites_dir, reference_mode):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=12, start=100)
    config = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         reference_mode=reference_mode)
    params = default_parameters("site")
    trajectory = simulate(params, forcing, config)
    state = initial_state(params, config)
    for t in range(12):
        state, outputs = step(params, state, take(forcing, t), config)
        assert_trees_close(state, take(trajectory.states, t))
        assert_trees_close(outputs, take(trajectory.outputs, t))
    assert_trees_close(state, trajectory.final_state)


def test_scan_equals_python_loop_with_the_monotone_water_stress(fluxsites_dir):
    """The time loop transforms the monotone network's weights once, before the loop; the
    single step transforms them itself: both give the same beta and trajectory."""
    from differland.processes.neural import init_network

    forcing = site_forcing(fluxsites_dir, "US-SRG", n_steps=12, start=200)
    config = ModelConfig(model=SiteModel(), water_stress=NeuralBeta(monotone=True))
    network = init_network(jax.random.PRNGKey(3), config)
    params = default_parameters("site").replace(initial_plant_available_water=40.0)
    trajectory = simulate(params, forcing, config, network=network)
    state = initial_state(params, config)
    for t in range(12):
        state, outputs = step(params, state, take(forcing, t), config, network)
        assert_trees_close(outputs, take(trajectory.outputs, t), rtol=1e-6, atol=1e-9)
    assert_trees_close(state, trajectory.final_state, rtol=1e-6, atol=1e-9)


def test_jit_equals_no_jit(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "DE-Hai", n_steps=20, start=120)
    params = default_parameters("site")
    jitted = simulate(params, forcing, SITE)
    with jax.disable_jit():
        plain = simulate(params, forcing, SITE)
    assert_trees_close(jitted, plain)


def test_vmap_equals_loop(golden_dir):
    _, params, forcing = load(golden_dir / "dalec993_synthetic_rand1.nc")
    config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta())
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: x * rng.uniform(0.9, 1.1, x.shape), params)
    batched = simulate_pixels(params, forcing, config)
    for pixel in range(forcing.t_min.shape[0]):
        single = simulate(take(params, pixel), take(forcing, pixel), config)
        assert_trees_close(single, take(batched, pixel))


def test_output_selection_keeps_values(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=40)
    params = default_parameters("site")
    full = simulate(params, forcing, SITE)
    lean = simulate(params, forcing, ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                                                 outputs=("nee", "gpp"), keep_states=False))
    assert lean.states is None and lean.outputs.et is None
    np.testing.assert_allclose(lean.outputs.nee, full.outputs.nee, rtol=1e-12, atol=1e-14)
    assert_trees_close(lean.final_state, full.final_state)
    with pytest.raises(ValueError, match="unknown output"):
        simulate(params, forcing, ModelConfig(outputs=("not_a_flux",)))


@pytest.mark.parametrize("every", [7, 50])
def test_checkpointed_equals_plain(fluxsites_dir, every):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=50, start=30)
    params = default_parameters("site")
    checkpointed = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                               checkpoint_every=every)

    def loss(p, config):
        trajectory: Trajectory = simulate(p, forcing, config)
        return jnp.sum(trajectory.outputs.nee) + jnp.sum(trajectory.states.soil_water)

    assert_trees_close(simulate(params, forcing, checkpointed), simulate(params, forcing, SITE))
    assert_trees_close(jax.grad(loss)(params, checkpointed), jax.grad(loss)(params, SITE),
                       rtol=1e-10)


def test_unrolled_time_loop_equals_plain(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=50, start=30)
    params = default_parameters("site")
    plain = ModelConfig(model=SiteModel(), water_stress=LinearBeta(), scan_unroll=1)
    unrolled = ModelConfig(model=SiteModel(), water_stress=LinearBeta(), scan_unroll=4)

    def loss(p, config):
        return jnp.sum(simulate(p, forcing, config).outputs.nee)

    assert_trees_close(simulate(params, forcing, unrolled), simulate(params, forcing, plain))
    assert_trees_close(jax.grad(loss)(params, unrolled), jax.grad(loss)(params, plain),
                       rtol=1e-10)
    assert plain.unroll_for_backend("gpu") == 1
    assert ModelConfig().unroll_for_backend("cpu") == 1
    assert ModelConfig().unroll_for_backend("gpu") > 1
    with pytest.raises(ValueError, match="scan_unroll"):
        ModelConfig(scan_unroll=0)
