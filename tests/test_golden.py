"""Reference-compatible mode reproduces every pool and flux of the golden files (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import xarray as xr
from golden import load, reference_state_name, relative_error, variant_of

from differland import GlobalModel, LinearBeta, ModelConfig, NoWaterStress, SiteModel
from differland._pytree import as_dict
from differland.cli import main
from differland.model import simulate, simulate_pixels

TOLERANCE = 1e-8
GOLDEN_FILES = ["dalec990_AU-How_mid", "dalec990_AU-How_rand1", "dalec990_DE-Hai_mid",
                "dalec990_DE-Hai_rand1", "dalec990_US-Var_mid", "dalec990_US-Var_rand1",
                "dalec993_synthetic_mid", "dalec993_synthetic_rand1"]
CONFIGS = {
    "site": ModelConfig(model=SiteModel(), water_stress=NoWaterStress(), reference_mode=True),
    "global": ModelConfig(model=GlobalModel(), water_stress=LinearBeta(), reference_mode=True),
}


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_reference_mode_reproduces_golden(golden_dir, name):
    path = golden_dir / f"{name}.nc"
    dataset, params, forcing = load(path)
    variant = variant_of(path)
    run = simulate if variant == "site" else simulate_pixels
    trajectory = jax.device_get(run(params, forcing, CONFIGS[variant]))
    errors = {}
    for field, values in as_dict(trajectory.states).items():
        reference = dataset[reference_state_name(field, variant)].values[..., 1:]
        errors[field] = relative_error(values, reference)
    outputs = as_dict(trajectory.outputs)
    for field, values in outputs.items():
        errors[field] = relative_error(values, dataset[field].values)
    expected = {k for k in dataset.data_vars if dataset[k].dims[-1:] == ("step",)
                and not k.startswith(("forcing_", "diag_", "clamp_flag_"))}
    derived = {"heterotrophic_respiration", "ecosystem_respiration", "date"}
    assert expected - derived <= set(outputs), "every reference flux is produced"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.3g}"


@pytest.mark.parametrize("site", ["US-Var", "DE-Hai"])
def test_cli_reproduces_golden(tmp_path, golden_dir, fluxsites_dir, site):
    golden = golden_dir / f"dalec990_{site}_rand1.nc"
    out = tmp_path / "sim.nc"
    status = main(["simulate", "--model", "site", "--water-stress", "none", "--reference-mode",
                   "--float64", "--params", str(golden), "--driver",
                   str(fluxsites_dir / f"{site}.nc"), "--out", str(out)])
    assert status == 0
    ours, reference = xr.load_dataset(out), xr.load_dataset(golden)
    assert ours.sizes["time"] == reference.sizes["step"]
    np.testing.assert_array_equal(ours["time"].values.astype("datetime64[D]"),
                                  reference["date"].values.astype("datetime64[D]"))
    for name in ["labile_carbon", "foliar_carbon", "wood_carbon", "som_carbon",
                 "plant_available_water", "plant_unavailable_water"]:
        assert relative_error(ours[name].values, reference[name].values[1:]) <= TOLERANCE, name
    for name in ["gpp", "et", "nee", "lai", "rh_litter", "paw_runoff", "ecosystem_respiration"]:
        assert relative_error(ours[name].values, reference[name].values) <= TOLERANCE, name
