"""Hybrid neural terms (water stress, evapotranspiration, the weather factor of GPP):
gradients, budgets, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import site_forcing
from test_conservation import check_site_budgets

from differland import (
    GlobalModel,
    ModelConfig,
    NeuralBeta,
    NeuralET,
    NeuralWeatherFactor,
    SiteModel,
    default_parameters,
    simulate,
    simulate_pixels,
)
from differland.options import OptionError
from differland.processes.neural import init_network, layer_sizes

HYBRID = ModelConfig(model=SiteModel(), water_stress=NeuralBeta(), evapotranspiration=NeuralET())
WEATHER = ModelConfig(model=SiteModel(), water_stress=NeuralBeta(), evapotranspiration=NeuralET(),
                      photosynthesis=(NeuralWeatherFactor(),))


def _params():
    return default_parameters("site").replace(initial_plant_available_water=300.0)


def test_network_layout_follows_the_configuration():
    network = init_network(jax.random.PRNGKey(0), HYBRID)
    assert set(network) == {"water_stress", "evapotranspiration"}
    assert layer_sizes(network["evapotranspiration"]) == (8, 10, 10, 1)
    assert layer_sizes(network["water_stress"]) == (1, 10, 1)
    assert init_network(jax.random.PRNGKey(0), ModelConfig()) is None
    weather = init_network(jax.random.PRNGKey(0), WEATHER)
    assert set(weather) == {"water_stress", "evapotranspiration", "gpp_weather"}
    assert layer_sizes(weather["gpp_weather"]) == (2, 10, 1)
    with pytest.raises(OptionError, match="unknown photosynthesis option 'yes'"):
        ModelConfig(photosynthesis=("yes",))
    with pytest.raises(OptionError, match="not a photosynthesis"):
        ModelConfig(photosynthesis=(NeuralBeta(),))


def test_missing_network_is_a_clear_error(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=10)
    config = ModelConfig(evapotranspiration=NeuralET())
    with pytest.raises(ValueError, match="evapotranspiration"):
        simulate(_params(), forcing, config)


def test_neural_et_conserves_water_and_carbon(fluxsites_dir):
    """ET from the network still passes through the mass-conserving buckets (dry site)."""
    forcing = site_forcing(fluxsites_dir, "US-SRG")
    network = init_network(jax.random.PRNGKey(3), HYBRID)
    # a large output bias asks for more ET than the soil holds on many days
    network["evapotranspiration"][-1]["bias"] = jnp.asarray([4.0])
    trajectory = check_site_budgets(_params(), forcing, HYBRID, network)
    assert trajectory.outputs.et.min() >= 0.0
    assert trajectory.outputs.water_violation_penalty.max() > 0.0  # the limiter was active


def test_gradients_of_network_weights_match_finite_differences(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=90, start=60)
    params = _params()
    network = init_network(jax.random.PRNGKey(1), WEATHER)

    @jax.jit
    def loss(network, params):
        out = simulate(params, forcing, WEATHER, network=network).outputs
        return jnp.sum(out.et) + jnp.sum(out.nee) + jnp.sum(out.lai)

    grad_network, grad_params = jax.grad(loss, argnums=(0, 1))(network, params)
    h = 1e-5
    for index, term in enumerate(sorted(network)):  # a random direction in each term's weights
        keys = jax.random.split(jax.random.PRNGKey(index), len(network[term]))
        direction = {t: jax.tree.map(jnp.zeros_like, network[t]) for t in network}
        direction[term] = [jax.tree.map(lambda x, k=k: jax.random.normal(k, x.shape, x.dtype),
                                        layer) for k, layer in zip(keys, network[term],
                                                                   strict=True)]
        plus = jax.tree.map(lambda w, v: w + h * v, network, direction)
        minus = jax.tree.map(lambda w, v: w - h * v, network, direction)
        finite = (loss(plus, params) - loss(minus, params)) / (2 * h)
        automatic = sum(jnp.vdot(g, v) for g, v in zip(
            jax.tree.leaves(grad_network), jax.tree.leaves(direction), strict=True))
        np.testing.assert_allclose(float(automatic), float(finite), rtol=1e-5)
    # and a parameter that acts through GPP, an input of the ET network
    p = params.canopy_efficiency
    up = loss(network, params.replace(canopy_efficiency=p * (1 + 1e-6)))
    down = loss(network, params.replace(canopy_efficiency=p * (1 - 1e-6)))
    np.testing.assert_allclose(float(grad_params.canopy_efficiency * p),
                               float(up - down) / 2e-6, rtol=1e-5)


def test_weather_factor_multiplies_gpp(fluxsites_dir):
    """The factor is sigmoid(MLP(T / 20, VPD / 20)) of each day's forcing (checked by hand),
    multiplies the GPP of the step and, pushed to 1, leaves the run without it unchanged."""
    forcing = site_forcing(fluxsites_dir, "FR-Pue", n_steps=200, start=150)
    params = _params()
    network = init_network(jax.random.PRNGKey(4), WEATHER)
    out = simulate(params, forcing, WEATHER, network=network).outputs
    layers = [{k: np.asarray(v, float) for k, v in layer.items()}
              for layer in network["gpp_weather"]]
    inputs = np.stack([0.5 * (np.asarray(forcing.t_min) + np.asarray(forcing.t_max)) / 20.0,
                       np.asarray(forcing.vpd) / 20.0], axis=-1)
    hidden = inputs @ layers[0]["weight"] + layers[0]["bias"]
    hidden = np.where(hidden > 0, hidden, 0.01 * hidden)  # leaky ReLU
    expected = 1.0 / (1.0 + np.exp(-(hidden @ layers[1]["weight"] + layers[1]["bias"])[:, 0]))
    np.testing.assert_allclose(out.gpp_weather_factor, expected, rtol=1e-5)
    assert 0.0 < expected.min() and expected.max() < 1.0 and np.ptp(expected) > 0.01
    without = simulate(params, forcing, HYBRID, network=network).outputs
    assert without.gpp_weather_factor is None
    # the first step starts from the same state: its GPP is scaled by that day's factor
    np.testing.assert_allclose(out.gpp[0], expected[0] * without.gpp[0], rtol=1e-5)
    network["gpp_weather"][-1]["bias"] = jnp.asarray([40.0])  # sigmoid(40) = 1 in float32
    network["gpp_weather"][-1]["weight"] *= 0.0
    saturated = simulate(params, forcing, WEATHER, network=network).outputs
    np.testing.assert_array_equal(saturated.gpp, without.gpp)
    np.testing.assert_array_equal(saturated.nee, without.nee)


def test_neural_terms_run_in_the_global_model_over_pixels(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "DE-Hai", n_steps=24)
    forcing = jax.tree.map(lambda x: jnp.stack([x, x]), forcing)
    config = ModelConfig(model=GlobalModel(), evapotranspiration=NeuralET(),
                         photosynthesis=(NeuralWeatherFactor(),))
    params = jax.tree.map(lambda x: jnp.stack([x, x]), default_parameters("global"))
    network = init_network(jax.random.PRNGKey(0), config)
    out = simulate_pixels(params, forcing, config, network=network).outputs
    assert np.all(np.isfinite(out.et)) and out.et.min() >= 0.0
    assert out.gpp_weather_factor.shape == out.gpp.shape == (2, 24)
    np.testing.assert_allclose(out.et[0], out.et[1])
    np.testing.assert_allclose(out.gpp[0], out.gpp[1])


def test_hybrid_et_adds_the_network_to_uwue_transpiration(fluxsites_dir):
    """ET = GPP sqrt(VPD)/uWUE + network: with the network's output pushed to ~0, the uWUE
    transpiration alone remains (the radiation term is replaced by the network)."""
    forcing = site_forcing(fluxsites_dir, "DE-Hai", n_steps=120, start=100)
    params = _params().replace(underlying_water_use_efficiency=20.0,
                               initial_plant_available_water=2000.0)
    hybrid = ModelConfig(evapotranspiration=NeuralET(transpiration="uwue"))
    network = init_network(jax.random.PRNGKey(0), hybrid)
    assert layer_sizes(network["evapotranspiration"]) == (7, 10, 10, 1)
    network["evapotranspiration"][-1]["weight"] *= 0.0
    network["evapotranspiration"][-1]["bias"] = jnp.asarray([-30.0])  # softplus ~ 1e-13
    out = simulate(params, forcing, hybrid, network=network).outputs
    transpiration = out.gpp * jnp.sqrt(forcing.vpd) / params.underlying_water_use_efficiency
    unlimited = out.water_violation_penalty == 0.0  # the bucket did not scale ET down
    assert unlimited.mean() > 0.5
    np.testing.assert_allclose(out.et[unlimited], transpiration[unlimited], rtol=1e-9,
                               atol=1e-9)
    with pytest.raises(ValueError, match="transpiration"):
        NeuralET(transpiration="sometimes")


def test_et_network_without_the_soil_water_input():
    """``soil_water_input=False``: the network has no water input, so its ET is the same for
    any soil water; with the input (the same weights plus a water row) it is not."""
    from differland.calibrate.site import SiteCalibrationConfig
    from differland.processes.water import neural_et_forcing_part, neural_evapotranspiration

    option = NeuralET(soil_water_input=False)
    network = init_network(jax.random.PRNGKey(2), ModelConfig(evapotranspiration=option))
    layers = network["evapotranspiration"]
    assert layer_sizes(layers) == (7, 10, 10, 1)
    first = layers[0]
    row = jnp.ones((1, first["weight"].shape[1]), first["weight"].dtype)
    with_water = [{**first, "weight": jnp.concatenate([first["weight"][:6], row,
                                                       first["weight"][6:]])}, *layers[1:]]

    def et(option, layers, water):
        part = neural_et_forcing_part(12.0, 24.0, 20.0, 9.0, 400.0, 0.0, layers, option)
        return float(neural_evapotranspiration(part, 3.0, water, 8.0, layers, option))

    assert et(option, layers, 20.0) == et(option, layers, 600.0) > 0.0
    assert abs(et(NeuralET(), with_water, 20.0) - et(NeuralET(), with_water, 600.0)) > 1e-3
    assert et(NeuralET(), with_water, 0.0) == pytest.approx(et(option, layers, 600.0), rel=1e-6)
    config = SiteCalibrationConfig(evapotranspiration="neural:soil_water_input=false").model_config
    assert config.evapotranspiration == option


def test_monotone_water_stress_never_falls_as_the_soil_water_rises():
    """``NeuralBeta(monotone=True)``: beta is non-decreasing in W for any weights, including
    weights with which the plain network falls somewhere; the calibration option maps to it."""
    from differland.calibrate.site import SiteCalibrationConfig
    from differland.processes.water import neural_beta

    water = jnp.linspace(0.0, 3000.0, 301)
    plain_falls = 0
    for seed in range(8):
        layers = init_network(jax.random.PRNGKey(seed), ModelConfig(water_stress=NeuralBeta()))
        layers = layers["water_stress"]

        def beta(option, layers=layers):
            return jax.vmap(lambda w: neural_beta(w, layers, option))(water)

        monotone = np.asarray(beta(NeuralBeta(monotone=True)))
        assert np.all(np.diff(monotone) >= 0.0) and np.all((monotone > 0) & (monotone < 1))
        plain_falls += bool(np.any(np.diff(np.asarray(beta(NeuralBeta()))) < -1e-6))
        gradient = jax.grad(neural_beta)(500.0, layers, NeuralBeta(monotone=True))
        assert np.isfinite(gradient) and gradient >= 0.0
    assert plain_falls > 0  # the constraint is what makes the difference
    config = SiteCalibrationConfig(water_stress="neural:monotone=true").model_config
    assert config.water_stress == NeuralBeta(monotone=True)


def test_calibrated_network_round_trips_through_the_cli(fluxsites_dir, tmp_path, capsys):
    """network.json of a calibration with two neural terms reproduces its simulation; a
    network file without a term the options need is a one-line error."""
    import json

    import xarray as xr

    from differland.cli import main

    driver = str(fluxsites_dir / "US-SRG.nc")
    out = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"evapotranspiration": "neural:transpiration=uwue",
                                  "decomposition": ["water_limited_decomposition"],
                                  "photosynthesis": ["gpp_weather", "canopy_saturation"],
                                  "gradient": {"chunk": 5, "n_starts": 2}}))
    status = main(["calibrate", "site", "--driver", driver, "--out", str(out), "--config",
                   str(config), "--iterations", "10", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    network = json.loads((out / "network.json").read_text())
    assert set(network) == {"water_stress", "evapotranspiration", "gpp_weather"}
    options = ["--water-stress", "neural", "--evapotranspiration", "neural:transpiration=uwue",
               "--water-limited-decomposition", "--gpp-weather", "--canopy-saturation",
               "--deep-water-uptake"]
    status = main(["simulate", "--driver", driver, "--params", str(out / "params.json"),
                   *options, "--network", str(out / "network.json"),
                   "--out", str(tmp_path / "again.nc")])
    assert status == 0, capsys.readouterr().err
    again, calibrated = (xr.load_dataset(tmp_path / "again.nc"),
                         xr.load_dataset(out / "simulation.nc"))
    for name in ("et", "gpp", "nee"):
        np.testing.assert_allclose(again[name], calibrated[name], rtol=1e-9, atol=1e-9)

    broken = dict(network, evapotranspiration=[dict(network["evapotranspiration"][0],
                                                    bias=[0.0, 1.0])]
                  + network["evapotranspiration"][1:])
    for content in ({"water_stress": network["water_stress"]}, broken):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        capsys.readouterr()
        status = main(["simulate", "--driver", driver, *options, "--network", str(bad),
                       "--out", str(tmp_path / "never.nc")])
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1 and "evapotranspiration" in err
        assert not (tmp_path / "never.nc").exists()
