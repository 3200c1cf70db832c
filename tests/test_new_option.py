"""A process option written outside the library is one class: registered here, it runs in
``simulate``, differentiates, is listed and read exactly by ``parameter_names()``, and gets
its own flag on the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from helpers import site_forcing
from test_parameter_names import check_parameter_names

from differland import ModelConfig, SiteModel, default_parameters, simulate
from differland.cli import main
from differland.options import PhotosynthesisModifier, register, unregister
from differland.params import ParameterSpec, register_parameter, unregister_parameter


@dataclass(frozen=True)
class ScaledGPP(PhotosynthesisModifier):
    """GPP x a calibrated constant (an option written outside the library)."""

    name: ClassVar[str] = "scaled_gpp"
    reads: ClassVar[tuple[str, ...]] = ("gpp_scale",)

    def factor(self, terms, params, state, lai):
        return params.gpp_scale, {}


SCALE = ParameterSpec("gpp_scale", "none", "1", 0.5, 2.0, "Multiplier of GPP.",
                      frozenset({"site", "global"}), default=1.0)


@pytest.fixture
def scaled_gpp():
    register_parameter(SCALE)
    register(ScaledGPP)
    yield ScaledGPP()
    unregister(ScaledGPP)
    unregister_parameter("gpp_scale")


@pytest.fixture(scope="module")
def forcing(fluxsites_dir):
    return site_forcing(fluxsites_dir, "US-Var", n_steps=365, start=100)


def test_the_new_option_runs_and_differentiates(scaled_gpp, forcing):
    config = ModelConfig(model=SiteModel(), photosynthesis=("scaled_gpp",))
    assert config.photosynthesis == (scaled_gpp,)
    assert "gpp_scale" in config.parameter_names()
    assert "gpp_scale" not in ModelConfig().parameter_names()
    params = default_parameters("site")
    base = simulate(params, forcing, config).outputs.gpp
    scaled = simulate(params.replace(gpp_scale=1.5), forcing, config).outputs.gpp
    np.testing.assert_allclose(scaled[0], 1.5 * base[0], rtol=1e-6)  # before any feedback

    def total_gpp(scale):
        return simulate(params.replace(gpp_scale=scale), forcing, config).outputs.gpp.sum()

    gradient = float(jax.grad(total_gpp)(jnp.asarray(1.2)))
    step = 1e-2
    difference = float(total_gpp(1.2 + step) - total_gpp(1.2 - step)) / (2 * step)
    assert np.isfinite(gradient) and gradient > 0.0
    np.testing.assert_allclose(gradient, difference, rtol=2e-2)


def test_parameter_names_of_the_new_option_are_exact(scaled_gpp, forcing):
    check_parameter_names(ModelConfig(model=SiteModel(), photosynthesis=("scaled_gpp",)),
                          forcing)
    check_parameter_names(ModelConfig(model=SiteModel()), forcing)  # gpp_scale inert there


def test_the_new_option_has_a_command_line_flag(scaled_gpp, tmp_path, capsys, fluxsites_dir):
    assert main(["simulate", "--help"]) == 0
    assert "--scaled-gpp / --no-scaled-gpp" in capsys.readouterr().out
    assert main(["calibrate", "site", "--help"]) == 0
    assert "--scaled-gpp" in capsys.readouterr().out
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"gpp_scale": 1.5}))
    driver = fluxsites_dir / "US-Var.nc"
    # the file sets the option's parameter, which the run without the option would ignore
    assert main(["simulate", "--driver", str(driver), "--params", str(params),
                 "--out", str(tmp_path / "off.nc")]) == 2
    assert "--scaled-gpp" in capsys.readouterr().err
    assert main(["simulate", "--driver", str(driver), "--out", str(tmp_path / "base.nc")]) == 0
    assert main(["simulate", "--driver", str(driver), "--params", str(params), "--scaled-gpp",
                 "--out", str(tmp_path / "on.nc")]) == 0
    on, base = xr.load_dataset(tmp_path / "on.nc"), xr.load_dataset(tmp_path / "base.nc")
    assert on.attrs["photosynthesis"] == "scaled_gpp"
    np.testing.assert_allclose(on["gpp"][0], 1.5 * base["gpp"][0], rtol=1e-5)


def test_registration_refuses_what_the_model_cannot_run(scaled_gpp):
    from differland.options import OptionError

    @dataclass(frozen=True)
    class Unknown(PhotosynthesisModifier):
        """Reads a parameter nobody registered."""

        name: ClassVar[str] = "unknown_parameter"
        reads: ClassVar[tuple[str, ...]] = ("no_such_parameter",)

    with pytest.raises(OptionError, match="no_such_parameter"):
        register(Unknown)

    @dataclass(frozen=True)
    class Taken(PhotosynthesisModifier):
        """Takes a registered name."""

        name: ClassVar[str] = "gpp_weather"

    with pytest.raises(OptionError, match="already have an option 'gpp_weather'"):
        register(Taken)


def test_an_option_named_as_a_command_option_is_one_line(capsys):
    @dataclass(frozen=True)
    class Overwrite(PhotosynthesisModifier):
        """Takes the name of a command option."""

        name: ClassVar[str] = "overwrite"

    register(Overwrite)
    try:
        assert main(["simulate", "--out", "x.nc"]) == 2
    finally:
        unregister(Overwrite)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "overwrite" in err
    assert main(["options"]) == 0  # the command line is whole again
