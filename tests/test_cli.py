"""The differland command: the main job runs, and every bad input is one line, exit 2, no file."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
import xarray as xr

from differland.cli import main
from differland.params import names_for

REPO_README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"


def run(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def readme_commands() -> list[list[str]]:
    """The ``differland ...`` parts of the README's main-job command (marked ``# main job``)."""
    text = REPO_README.read_text()
    lines = re.findall(r"^(.*differland .*)# main job$", text, flags=re.MULTILINE)
    commands = []
    for line in lines:
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0] == "differland":
                commands.append(words[1:])
    return commands


def test_readme_main_job_runs_in_smoke_mode(tmp_path, capsys, monkeypatch):
    commands = readme_commands()
    assert commands == [["demo"]], "README's main job is the demo"
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "demo", "--smoke", "--no-progress")
    assert status == 0, err
    assert "| parameter | identified |" in out
    with xr.open_dataset(tmp_path / "runs" / "demo" / "prediction" / "fluxes.nc") as fluxes:
        assert np.isfinite(fluxes["nbe"].values[:, 0]).any()
        assert fluxes["time"].values.dtype.kind == "M"  # a real, decodable time axis
        assert fluxes["gpp"].attrs["units"] == "gC m-2 d-1"


def test_params_json_round_trip(tmp_path, capsys, fluxsites_dir):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"canopy_efficiency": 20.0, "leaf_lifespan": 2.5}))
    out = tmp_path / "sim.nc"
    status, _, err = run(capsys, "simulate", "--driver", fluxsites_dir / "AU-Stp.nc", "--params",
                         params, "--water-stress", "beta", "--out", out)
    assert status == 0, err
    dataset = xr.load_dataset(out)
    assert float(dataset["canopy_efficiency"]) == 20.0
    assert {"plant_available_water", "ecosystem_respiration"} <= set(dataset.data_vars)
    # the output file itself is a valid --params input
    again = tmp_path / "again.nc"
    status, _, err = run(capsys, "simulate", "--driver", fluxsites_dir / "AU-Stp.nc",
                         "--params", out, "--water-stress", "beta", "--out", again)
    assert status == 0, err
    np.testing.assert_allclose(xr.load_dataset(again)["nee"], dataset["nee"])


def test_global_model_runs_on_a_site_driver(tmp_path, capsys, fluxsites_dir):
    out = tmp_path / "global.nc"
    status, _, err = run(capsys, "simulate", "--driver", fluxsites_dir / "DE-Hai.nc",
                         "--model", "global", "--water-stress", "beta", "--out", out)
    assert status == 0, err
    assert {"soil_water", "nbe", "sif", "vod"} <= set(xr.load_dataset(out).data_vars)


def test_climate_phenology_runs_from_the_command_line(tmp_path, capsys, fluxsites_dir):
    out = tmp_path / "climate.nc"
    status, _, err = run(capsys, "simulate", "--driver", fluxsites_dir / "US-SRG.nc",
                         "--phenology", "climate:index_rates=fall", "--out", out)
    assert status == 0, err
    dataset = xr.load_dataset(out)
    assert dataset.attrs["phenology"] == "climate:index_rates=fall"
    index = dataset["growing_season_index"].values
    assert 0.0 < index.min() < index.max() < 1.0


def test_groundwater_supply_from_the_command_line(tmp_path, capsys, fluxsites_dir):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"groundwater_supply_rate": 0.5}))
    driver = fluxsites_dir / "US-SRG.nc"
    status, _, err = run(capsys, "simulate", "--driver", driver, "--params", params,
                         "--out", tmp_path / "off.nc")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "groundwater_supply_rate" in err and "--groundwater-supply" in err
    assert not (tmp_path / "off.nc").exists()
    status, _, err = run(capsys, "simulate", "--driver", driver, "--params", params,
                         "--groundwater-supply", "--out", tmp_path / "on.nc")
    assert status == 0, err
    dataset = xr.load_dataset(tmp_path / "on.nc")
    assert dataset.attrs["soil_water"] == "groundwater_supply"
    np.testing.assert_allclose(dataset["groundwater_supply"], 0.5)
    assert dataset["groundwater_supply"].attrs["units"] == "mm d-1"


def test_deep_water_uptake_from_the_command_line(tmp_path, capsys, fluxsites_dir):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"deep_water_uptake_rate": 0.01,
                                  "initial_plant_unavailable_water": 300.0}))
    driver = fluxsites_dir / "US-SRG.nc"
    status, _, err = run(capsys, "simulate", "--driver", driver, "--params", params,
                         "--out", tmp_path / "off.nc")
    assert status == 2 and "--deep-water-uptake" in err
    status, _, err = run(capsys, "simulate", "--driver", driver, "--params", params,
                         "--deep-water-uptake", "--out", tmp_path / "on.nc")
    assert status == 0, err
    dataset = xr.load_dataset(tmp_path / "on.nc")
    assert dataset.attrs["soil_water"] == "deep_water_uptake"
    assert dataset["deep_water_uptake"].attrs["units"] == "mm d-1"
    assert float(dataset["deep_water_uptake"].max()) > 0.0
    status, _, err = run(capsys, "simulate", "--model", "global", "--deep-water-uptake",
                         "--out", tmp_path / "global.nc")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "site model" in err and not (tmp_path / "global.nc").exists()


def _modified_driver(tmp_path, fluxsites_dir, change):
    dataset = xr.load_dataset(fluxsites_dir / "US-Var.nc", decode_times=False)
    dataset = change(dataset)
    path = tmp_path / "driver.nc"
    dataset.to_netcdf(path)
    return path


def _with_nan(dataset):
    dataset["VPD"].values[10] = np.nan
    return dataset


BAD_DRIVERS = {
    "missing variable": (lambda d: d.drop_vars("SSRD"), "SSRD"),
    "NaN in forcing": (_with_nan, "VPD.*NaN"),
    "non-monotonic time": (lambda d: d.assign_coords(time=d.time.values[::-1].copy()),
                           "increasing"),
    "non-daily time": (lambda d: d.assign_coords(time=d.time.values * 2), "daily"),
    "kelvin temperatures": (lambda d: d.assign(T2M_MAX=d.T2M_MAX + 273.15), "T2M_MAX"),
}


@pytest.mark.parametrize("case", list(BAD_DRIVERS))
def test_bad_driver_is_one_line_and_writes_nothing(tmp_path, capsys, fluxsites_dir, case):
    change, pattern = BAD_DRIVERS[case]
    driver = _modified_driver(tmp_path, fluxsites_dir, change)
    out = tmp_path / "out.nc"
    status, _, err = run(capsys, "simulate", "--driver", driver, "--out", out)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err
    assert str(driver) in err
    assert not out.exists()


@pytest.mark.parametrize("content, pattern", [
    ({"leaf_life_span": 2.0}, "unknown parameter name.*leaf_life_span"),
    ({"canopy_efficiency": 500.0}, "canopy_efficiency.*outside its bounds"),
    ({"sif_alpha": 10.0}, "unknown parameter name.*sif_alpha"),
    ("not json", "JSON"),
])
def test_bad_parameters_are_one_line(tmp_path, capsys, content, pattern):
    params = tmp_path / "params.json"
    params.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out.nc"
    status, _, err = run(capsys, "simulate", "--params", params, "--out", out)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert re.search(pattern, err), err
    assert not out.exists()


@pytest.mark.parametrize("args, pattern", [
    (["--model", "regional"], "unknown model option 'regional'"),
    (["--water-stress", "sometimes"], "unknown water_stress option 'sometimes'; known: none"),
    (["--phenology", "gsi"], "unknown phenology option 'gsi'"),
    (["--driver", "{empty}"], "empty"),
    (["--driver", "{text}"], "not a NetCDF"),
    (["--driver", "{missing}"], "does not exist|not found|no such"),
])
def test_bad_options_and_files(tmp_path, capsys, args, pattern):
    empty, text = tmp_path / "empty.nc", tmp_path / "text.nc"
    empty.write_bytes(b"")
    text.write_text("time,T2M_MIN\n0,1\n")
    names = {"{empty}": empty, "{text}": text, "{missing}": tmp_path / "missing.nc"}
    args = [str(names.get(a, a)) for a in args]
    out = tmp_path / "out.nc"
    status, _, err = run(capsys, "simulate", *args, "--out", out)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err, flags=re.IGNORECASE), err
    assert not out.exists()


def test_parameters_command_prints_the_registry(capsys):
    status, out, _ = run(capsys, "parameters", "--model", "site")
    assert status == 0
    for name in names_for("site"):
        assert f"`{name}`" in out


def test_readme_python_snippets_run(monkeypatch):
    """Every ```python block of the README runs as written, from the repository root (its
    paths are relative to it), with the names the package exports."""
    import differland

    blocks = re.findall(r"```python\n(.*?)```", REPO_README.read_text(), flags=re.DOTALL)
    assert blocks, "README shows Python"
    monkeypatch.chdir(REPO_README.parent)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    for name in differland.__all__:
        assert hasattr(differland, name), name
