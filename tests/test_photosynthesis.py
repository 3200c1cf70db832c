"""The ACM canopy quantum-yield saturation: by hand, in the model step, and its gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import site_forcing
from test_conservation import check_site_budgets
from test_gradients import check_against_finite_differences

from differland import LinearBeta, ModelConfig, SiteModel, default_parameters, simulate
from differland import constants as c
from differland.calibrate.site import SiteCalibrationConfig, free_parameter_names
from differland.processes.photosynthesis import acm_gpp, canopy_terms

WEATHER = dict(t_min=4.0, t_max=14.0, ssrd=9.0, co2=385.0, doy=20.0, latitude=38.4,
               canopy_efficiency=30.0)


def _by_hand(lai: float, c2: float) -> float:
    """The ACM's GPP written out from its canopy terms, with c2 as given."""
    terms = jax.device_get(canopy_terms(**WEATHER))
    p = lai * float(terms.p_per_lai)
    q = c.ACM_THETA - c.ACM_K
    ca = WEATHER["co2"]
    ci = 0.5 * (ca + q - p + np.sqrt((ca + q - p) ** 2 - 4 * (ca * q - p * c.ACM_THETA)))
    light = c.ACM_C1 * lai**2 / (c2 + lai**2) * WEATHER["ssrd"]
    diffusion = float(terms.conductance) * (ca - ci)
    return light * diffusion / (light + diffusion) * float(terms.daylength_factor)


def test_saturation_enters_the_quantum_yield_as_written():
    for lai in (0.3, 1.0, 4.0):
        np.testing.assert_allclose(float(acm_gpp(lai, **WEATHER)), _by_hand(lai, c.ACM_C2),
                                   rtol=1e-12)
        for c2 in (0.1, 0.7, 6.0):
            np.testing.assert_allclose(float(acm_gpp(lai, **WEATHER, lai_half_saturation=c2)),
                                       _by_hand(lai, c2), rtol=1e-12)
    # a smaller half-saturation makes a sparse canopy more productive, a dense one barely
    sparse = float(acm_gpp(0.3, **WEATHER, lai_half_saturation=0.3)) / float(
        acm_gpp(0.3, **WEATHER))
    dense = float(acm_gpp(5.0, **WEATHER, lai_half_saturation=0.3)) / float(
        acm_gpp(5.0, **WEATHER))
    assert sparse > 2.0 and 1.0 < dense < 1.1


def test_model_option_uses_the_parameter_and_conserves(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=365)
    params = default_parameters("site").replace(initial_plant_available_water=300.0)
    plain = ModelConfig(model=SiteModel(), water_stress=LinearBeta())
    option = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         photosynthesis=("canopy_saturation",))
    base = simulate(params, forcing, plain).outputs
    # at the ACM's value the option is the same model
    np.testing.assert_array_equal(simulate(params, forcing, option).outputs.gpp, base.gpp)
    # without the option the parameter is not used
    other = params.replace(canopy_lai_half_saturation=0.4)
    np.testing.assert_array_equal(simulate(other, forcing, plain).outputs.gpp, base.gpp)
    changed = check_site_budgets(other, forcing, option).outputs
    first = jax.tree.map(lambda x: x[0], forcing)
    lai = float(params.initial_foliar_carbon / params.leaf_carbon_mass_per_area)
    expected = float(base.beta[0]) * float(acm_gpp(
        lai, first.t_min, first.t_max, first.ssrd, first.co2, first.doy, first.latitude,
        params.canopy_efficiency, lai_half_saturation=0.4))
    np.testing.assert_allclose(float(changed.gpp[0]), expected, rtol=1e-12)
    assert float(changed.gpp[0]) > float(base.gpp[0])


def test_gradient_of_the_saturation_matches_finite_differences(fluxsites_dir):
    forcing = site_forcing(fluxsites_dir, "US-Var", n_steps=60)
    config = ModelConfig(model=SiteModel(), water_stress=LinearBeta(),
                         photosynthesis=("canopy_saturation",))
    params = default_parameters("site").replace(initial_plant_available_water=300.0,
                                                canopy_lai_half_saturation=0.8)

    def loss(p):
        out = simulate(p, forcing, config).outputs
        return jnp.sum(out.nee) + 0.1 * jnp.sum(out.et)

    gradient = jax.grad(loss)(params)
    assert float(gradient.canopy_lai_half_saturation) != 0.0
    check_against_finite_differences(jax.jit(loss), params)


def _has_saturation(config: ModelConfig) -> bool:
    return any(o.name == "canopy_saturation" for o in config.photosynthesis)


def test_calibration_frees_the_saturation_only_with_the_option():
    fixed = SiteCalibrationConfig(photosynthesis=())
    assert "canopy_lai_half_saturation" not in free_parameter_names(fixed)
    assert not _has_saturation(fixed.model_config)
    config = SiteCalibrationConfig()  # the site calibration's default calibrates it
    assert "canopy_lai_half_saturation" in free_parameter_names(config)
    assert _has_saturation(config.model_config)
