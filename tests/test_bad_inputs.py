"""Bad inputs to the differland command: each is refused with exit status 2, one line on stderr
naming the file, variable or option concerned, no traceback, and no file created, changed or
removed.

Every refused case runs with the model and the optimiser replaced by a function that fails the
test: the input must be refused before anything is computed. A few cases run in a real process
to show that it prints no traceback either. The positive cases at the end check behaviour next
to the refusals: help and version, declared units that are converted, the fallback from a
damaged checkpoint, and the removal of temporaries left by an interrupted write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import differland.model
import differland.workflows
from differland import __version__
from differland.calibrate.gradient import CheckpointMismatchError, GradientSettings, fit
from differland.calibrate.site import SiteCalibrationConfig
from differland.cli import main
from differland.io import read_site_driver, remove_stale_temporaries

ERROR_PREFIX = "differland: error: "


# --- the checks shared by every refused case -----------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root`` (folders: None)."""
    state: dict[str, tuple[int, int] | None] = {}
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            state[name + "/"] = None
        else:
            info = path.lstat()
            state[name] = (info.st_size, info.st_mtime_ns)
    return state


def assert_one_line_error(status, out: str, err: str, expected) -> str:
    """Exit status 2, nothing on stdout, one line on stderr holding every ``expected`` text."""
    assert "Traceback" not in out + err, err
    assert status == 2, f"exit status {status}; stderr: {err!r}"
    assert out == "", out
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    line = err.rstrip("\n")
    assert line.startswith(ERROR_PREFIX) and line[len(ERROR_PREFIX):].strip(), line
    for text in expected:
        assert str(text) in line, f"{str(text)!r} not in {line!r}"
    return line


def refused(capsys, root: Path, args: list, expected) -> str:
    """Run ``differland args`` in this process; check the refusal and that ``root`` is as it
    was."""
    before = snapshot(root)
    capsys.readouterr()
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    line = assert_one_line_error(status, captured.out, captured.err, expected)
    assert snapshot(root) == before, "the refused command created, changed or removed files"
    return line


def _computation_started(*args, **kwargs):
    raise AssertionError("the command started computing instead of refusing its input")


@pytest.fixture
def no_computation(monkeypatch):
    """Fail the test if a command simulates or calibrates before refusing its input."""
    monkeypatch.setattr(differland.model, "simulate", _computation_started)
    monkeypatch.setattr(differland.workflows, "fit", _computation_started)


# --- inputs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def us_var(fluxsites_dir) -> xr.Dataset:
    return xr.load_dataset(fluxsites_dir / "US-Var.nc", decode_times=False)


@pytest.fixture(scope="module")
def example_driver(tmp_path_factory) -> Path:
    """The embedded example driver, one year long (outside the tests' own folders)."""
    path = tmp_path_factory.mktemp("example") / "example.nc"
    assert main(["example-driver", "--out", str(path), "--years", "1"]) == 0
    return path


@dataclasses.dataclass
class Inputs:
    """Writes the inputs of one case into the test's folder."""

    root: Path
    fluxsites: Path
    us_var: xr.Dataset
    example: Path

    @property
    def shared_driver(self) -> Path:
        return self.fluxsites / "US-Var.nc"

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        return path

    def driver(self, change: Callable[[xr.Dataset], xr.Dataset] | None = None,
               name: str = "US-Var.nc") -> Path:
        """A copy of the US-Var driver, changed by ``change``."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if change is None:
            shutil.copyfile(self.shared_driver, path)
        else:
            change(self.us_var.copy(deep=True)).to_netcdf(path)
        return path

    def example_copy(self, name: str = "example.nc") -> Path:
        path = self.root / name
        shutil.copyfile(self.example, path)
        return path

    def run_record(self, name: str, finished: bool, driver: Path | None = None) -> Path:
        """A calibration run directory as differland leaves it (files not computed)."""
        run = self.folder(name)
        record = {"differland_version": __version__, "driver": str(driver or self.example),
                  "calibration": SiteCalibrationConfig().to_dict()}
        (run / "config.json").write_text(json.dumps(record))
        (run / "params.json").write_text("{}")
        if finished:
            (run / "metrics.json").write_text("{}")
        return run


@pytest.fixture
def inputs(tmp_path, fluxsites_dir, us_var, example_driver, monkeypatch) -> Inputs:
    monkeypatch.chdir(tmp_path)
    return Inputs(tmp_path, fluxsites_dir, us_var, example_driver)


def replace(dataset: xr.Dataset, name: str, values, attrs: dict | None = None) -> xr.Dataset:
    """``dataset`` with the values (and, if given, the attributes) of ``name`` replaced."""
    keep = dict(dataset[name].attrs) if attrs is None else attrs
    dataset[name] = (dataset[name].dims, np.asarray(values), keep)
    return dataset


def with_value(name: str, index: int, value: float):
    def change(dataset: xr.Dataset) -> xr.Dataset:
        values = dataset[name].values.copy()
        values[index] = value
        return replace(dataset, name, values)

    return change


def scaled(name: str, factor: float = 1.0, offset: float = 0.0, attrs: dict | None = None):
    """Values of ``name`` times ``factor`` plus ``offset``; no units unless ``attrs`` has them."""
    def change(dataset: xr.Dataset) -> xr.Dataset:
        return replace(dataset, name, dataset[name].values * factor + offset, attrs or {})

    return change


def with_time(values=None, attrs: dict | None = None):
    def change(dataset: xr.Dataset) -> xr.Dataset:
        time = dataset["time"].values if values is None else values(dataset["time"].values)
        return dataset.assign_coords(time=("time", time, attrs or {}))

    return change


def two_dimensional(name: str):
    def change(dataset: xr.Dataset) -> xr.Dataset:
        values = dataset[name].values
        return dataset.assign({name: (("time", "copy"), np.stack([values, values], axis=1))})

    return change


# --- usage errors ---------------------------------------------------------------------------------

CALIBRATE = ["calibrate", "site", "--driver", "{driver}", "--out", "run"]

USAGE_ERRORS = {
    "unknown-option": (["simulate", "--bogus"], ["No such option: --bogus"]),
    "simulate-without-out": (["simulate", "--driver", "{driver}"], ["Missing option '--out'"]),
    "calibrate-without-driver": (["calibrate", "site", "--out", "run"],
                                 ["Missing option '--driver'"]),
    "starts-not-integer": ([*CALIBRATE, "--starts", "four"], ["'--starts'"]),
    "iterations-not-integer": ([*CALIBRATE, "--iterations", "1.5"], ["'--iterations'"]),
    "seed-not-integer": ([*CALIBRATE, "--seed", "abc"], ["'--seed'"]),
    "unknown-command": (["frobnicate"], ["No such command 'frobnicate'"]),
    "unknown-calibrate-command": (["calibrate", "region"], ["No such command 'region'"]),
    "iterations-negative": ([*CALIBRATE, "--iterations", "-5"],
                            ["--iterations", "max_iterations", "-5"]),
    "starts-zero": ([*CALIBRATE, "--starts", "0"], ["--starts", "n_starts"]),
    "seed-too-large": ([*CALIBRATE, "--seed", str(2**70)], ["--seed", str(2**70)]),
    "seed-negative": ([*CALIBRATE, "--seed=-1"], ["--seed", "-1"]),
    "streams-empty": ([*CALIBRATE, "--streams", ""], ["--streams", "stream names"]),
    "streams-only-commas": ([*CALIBRATE, "--streams", ", ,"], ["--streams", "stream names"]),
    "streams-unknown": ([*CALIBRATE, "--streams", "gpp,foo"], ["--streams", "unknown foo"]),
    "streams-duplicate": ([*CALIBRATE, "--streams", "gpp,gpp"], ["--streams", "gpp twice"]),
    "calibrate-unknown-water-stress": ([*CALIBRATE, "--water-stress", "sometimes"],
                                       ["--water-stress", "'sometimes'"]),
    "calibrate-unknown-phenology": ([*CALIBRATE, "--phenology", "gsi"],
                                    ["--phenology", "'gsi'"]),
    "calibrate-unknown-evapotranspiration": ([*CALIBRATE, "--evapotranspiration", "penman"],
                                             ["--evapotranspiration", "'penman'"]),
    "example-driver-zero-years": (["example-driver", "--out", "x.nc", "--years", "0"],
                                  ["--years"]),
    "example-driver-100000-years": (["example-driver", "--out", "x.nc", "--years", "100000"],
                                    ["--years", "100000"]),
    "parameters-unknown-model": (["parameters", "--model", "regional"], ["'regional'"]),
    "parameters-model-without-value": (["parameters", "--model"], ["'--model'"]),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_error(case, inputs, capsys, no_computation):
    args, expected = USAGE_ERRORS[case]
    args = [str(inputs.shared_driver) if arg == "{driver}" else arg for arg in args]
    refused(capsys, inputs.root, args, expected)
    assert not (inputs.root / "run").exists()


# --- differland simulate: output path, options, run directories -------------------------------


def _out_is_driver(inputs: Inputs):
    driver = inputs.example_copy()
    return ["--driver", driver, "--out", driver], [driver, "is an input"]


def _out_links_to_driver(inputs: Inputs):
    driver = inputs.example_copy()
    link = inputs.root / "out.nc"
    link.symlink_to(driver)
    return ["--driver", driver, "--out", link], [link, "is an input"]


def _out_is_params(inputs: Inputs):
    params = inputs.write("params.json", "{}")
    return (["--driver", inputs.example, "--params", params, "--out", params],
            [params, "is an input"])


def _out_exists(inputs: Inputs):
    out = inputs.write("out.nc", "kept")
    return ["--driver", inputs.example, "--out", out], [out, "--overwrite"]


def _out_not_ours(inputs: Inputs):
    out = inputs.write("out.nc", "kept")
    return (["--driver", inputs.example, "--out", out, "--overwrite"],
            [out, "not written by differland"])


def _out_not_ours_netcdf(inputs: Inputs):
    out = inputs.root / "out.nc"
    xr.Dataset({"x": ("time", np.zeros(3))}, attrs={"source": "a flux tower"}).to_netcdf(out)
    return (["--driver", inputs.example, "--out", out, "--overwrite"],
            [out, "not written by differland"])


def _out_folder(inputs: Inputs):
    out = inputs.folder("out.nc")
    return ["--driver", inputs.example, "--out", out], [out, "existing folder"]


def _out_under_file(inputs: Inputs):
    parent = inputs.write("notes.txt", "a file, not a folder")
    return (["--driver", inputs.example, "--out", parent / "out.nc"],
            [parent, "is not a folder"])


def _option(flag: str, value: str, expected: str):
    def case(inputs: Inputs):
        return (["--driver", inputs.example, "--out", "out.nc", flag, value],
                [f"unknown {expected} '{value}'"])

    return case


def _needs_network(*flags: str, term: str):
    def case(inputs: Inputs):
        return (["--driver", inputs.example, "--out", "out.nc", *flags],
                [f"neural {term}", "--network"])

    return case


def _global_deep_water(inputs: Inputs):
    return (["--driver", inputs.example, "--out", "out.nc", "--model", "global",
             "--deep-water-uptake"], ["deep_water_uptake", "site model"])


def _network_file(content: str | None, *expected: str):
    def case(inputs: Inputs):
        network = inputs.root / "network.json"
        if content is not None:
            inputs.write("network.json", content)
        return (["--driver", inputs.example, "--out", "out.nc", "--water-stress", "neural",
                 "--network", network], [network, *expected])

    return case


def _driver_file(make: Callable[[Inputs], Path], expected: str):
    def case(inputs: Inputs):
        driver = make(inputs)
        return ["--driver", driver, "--out", "out.nc"], [driver, expected]

    return case


def _truncated(inputs: Inputs) -> Path:
    return inputs.write("US-Var.nc", inputs.shared_driver.read_bytes()[:5000])


def _option_parameter_off(inputs: Inputs):
    params = inputs.write("params.json", json.dumps({"canopy_lai_half_saturation": 2.0}))
    return (["--driver", inputs.example, "--params", params, "--out", "out.nc"],
            [params, "canopy_lai_half_saturation", "--canopy-saturation"])


def _run_without_record(inputs: Inputs):
    run = inputs.folder("run")
    return ["--run", run, "--out", "out.nc"], [run / "config.json", "not found"]


def _run_missing(inputs: Inputs):
    run = inputs.root / "no-such-run"
    return ["--run", run, "--out", "out.nc"], [run / "config.json", "not found"]


def _run_unfinished(inputs: Inputs):
    run = inputs.run_record("run", finished=False)
    return ["--run", run, "--out", "out.nc"], [run / "metrics.json", "unfinished"]


def _run_with(*flags: str):
    def case(inputs: Inputs):
        run = inputs.run_record("run", finished=True)
        params = inputs.write("params.json", "{}")
        args = [params if flag == "{params}" else flag for flag in flags]
        named = [flag for flag in flags if flag.startswith("--")]
        return ["--run", run, "--out", "out.nc", *args], ["drop", *named]

    return case


def _run_record_text(text: str, problem: str = "not a calibration record"):
    def case(inputs: Inputs):
        run = inputs.folder("run")
        inputs.write("run/config.json", text)
        return ["--run", run, "--out", "out.nc"], [run / "config.json", problem]

    return case


def _run_driver_gone(inputs: Inputs):
    run = inputs.run_record("run", finished=True, driver=inputs.root / "gone.nc")
    return ["--run", run, "--out", "out.nc"], [run / "config.json", "gone.nc", "--driver"]


SIMULATE_ERRORS = {
    "out-is-the-driver": _out_is_driver,
    "out-links-to-the-driver": _out_links_to_driver,
    "out-is-the-params": _out_is_params,
    "out-exists": _out_exists,
    "out-not-written-by-differland": _out_not_ours,
    "out-netcdf-not-written-by-differland": _out_not_ours_netcdf,
    "out-is-a-folder": _out_folder,
    "out-under-a-file": _out_under_file,
    "unknown-model": _option("--model", "regional", "model option"),
    "unknown-water-stress": _option("--water-stress", "sometimes", "water_stress option"),
    "unknown-evapotranspiration": _option("--evapotranspiration", "penman",
                                          "evapotranspiration option"),
    "unknown-phenology": _option("--phenology", "gsi", "phenology option"),
    "removed-phenology": _option("--phenology", "calendar_climate", "phenology option"),
    "unknown-option-field": lambda inputs: (
        ["--driver", inputs.example, "--out", "out.nc", "--phenology", "climate:pulses=true"],
        ["phenology option climate", "'pulses=true'", "index_rates"]),
    "bad-option-field-value": lambda inputs: (
        ["--driver", inputs.example, "--out", "out.nc", "--phenology",
         "calendar:water_limited_release=yes"], ["water_limited_release", "true or false"]),
    "option-field-wrong-choice": lambda inputs: (
        ["--driver", inputs.example, "--out", "out.nc", "--phenology",
         "climate:index_rates=growth"], ["index_rates must be 'both' or 'fall'"]),
    "neural-water-stress-without-network": _needs_network("--water-stress", "neural",
                                                          term="water_stress"),
    "neural-et-without-network": _needs_network("--evapotranspiration", "neural",
                                                term="evapotranspiration"),
    "gpp-weather-without-network": _needs_network("--gpp-weather", term="gpp_weather"),
    "global-model-deep-water-uptake": _global_deep_water,
    "network-invalid-json": _network_file("weights", "invalid JSON"),
    "network-missing": _network_file(None, "does not exist"),
    "network-without-the-term": _network_file('{"et": []}', "no weights", "water_stress"),
    "network-bad-layer-shapes": _network_file(
        '{"water_stress": [{"weight": [[1, 2]], "bias": [1]}]}', "bad layer shapes"),
    "network-not-an-object": _network_file("[1, 2]", "not a network file"),
    "network-without-a-neural-term": lambda inputs: (
        ["--driver", inputs.example, "--out", "out.nc", "--network",
         inputs.write("network.json", "{}")], ["--network", "no neural term"]),
    "driver-missing": _driver_file(lambda inputs: inputs.root / "missing.nc", "does not exist"),
    "driver-empty": _driver_file(lambda inputs: inputs.write("empty.nc", b""), "empty file"),
    "driver-not-netcdf": _driver_file(lambda inputs: inputs.write("text.nc", "time,VPD\n0,1\n"),
                                      "not a NetCDF file"),
    "driver-is-a-folder": _driver_file(lambda inputs: inputs.folder("drivers"),
                                       "not a regular file"),
    "driver-truncated": _driver_file(_truncated, "not a readable NetCDF file"),
    "option-parameter-without-its-option": _option_parameter_off,
    "run-without-config": _run_without_record,
    "run-missing": _run_missing,
    "run-unfinished": _run_unfinished,
    "run-with-water-stress": _run_with("--water-stress", "beta"),
    "run-with-params-and-flag": _run_with("--params", "{params}", "--canopy-saturation"),
    "run-record-invalid-json": _run_record_text("{oops", "invalid JSON"),
    "run-record-a-list": _run_record_text("[1, 2]"),
    "run-record-without-calibration": _run_record_text('{"differland_version": "0.1.0"}'),
    "run-driver-gone": _run_driver_gone,
}


@pytest.mark.parametrize("case", list(SIMULATE_ERRORS))
def test_bad_simulate_input(case, inputs, capsys, no_computation):
    args, expected = SIMULATE_ERRORS[case](inputs)
    refused(capsys, inputs.root, ["simulate", *args], expected)


# --- differland simulate --params -----------------------------------------------------------------

BAD_PARAMETER_FILES = {
    "unknown-name": ('{"leaf_life_span": 2.0}', "unknown parameter name(s)", "leaf_life_span"),
    "not-a-number": ('{"canopy_efficiency": "a"}', "canopy_efficiency", "not a finite number"),
    "nan": ('{"canopy_efficiency": NaN}', "NaN", "not a finite number"),
    "infinite": ('{"canopy_efficiency": 1e999}', "canopy_efficiency", "not a finite number"),
    "boolean": ('{"canopy_efficiency": true}', "canopy_efficiency", "not a finite number"),
    "null": ('{"canopy_efficiency": null}', "canopy_efficiency", "not a finite number"),
    "outside-bounds": ('{"canopy_efficiency": 500.0}', "canopy_efficiency", "outside its bounds"),
    "below-bounds": ('{"leaf_lifespan": 0.0}', "leaf_lifespan", "outside its bounds"),
    "not-an-object": ("[1, 2]", "expected a JSON object", "list"),
    "invalid-json": ('{"canopy_efficiency": ', "invalid JSON", ""),
    "duplicate-name": ('{"canopy_efficiency": 20, "canopy_efficiency": 21}', "duplicate key(s)",
                       "canopy_efficiency"),
    "empty": ("", "empty file", ""),
    "non-utf8": (b'{"canopy_efficiency": "\xff"}', "not UTF-8", ""),
}


@pytest.mark.parametrize("case", list(BAD_PARAMETER_FILES))
def test_bad_parameter_file(case, inputs, capsys, no_computation):
    content, *expected = BAD_PARAMETER_FILES[case]
    params = inputs.write("params.json", content)
    refused(capsys, inputs.root,
            ["simulate", "--driver", inputs.example, "--params", params, "--out", "out.nc"],
            [params, *expected])


@pytest.mark.parametrize("case", ["missing", "folder", "netcdf-without-parameters"])
def test_unusable_parameter_file(case, inputs, capsys, no_computation):
    if case == "missing":
        params, expected = inputs.root / "params.json", "does not exist"
    elif case == "folder":
        params, expected = inputs.folder("params.json"), "not a regular file"
    else:
        params, expected = inputs.example_copy("params.nc"), "no parameter found"
    refused(capsys, inputs.root,
            ["simulate", "--driver", inputs.example, "--params", params, "--out", "out.nc"],
            [params, expected])


# --- differland calibrate site --config -----------------------------------------------------------

BAD_CONFIGS = {
    # the file itself
    "invalid-json": ('{"seed": ', "invalid JSON"),
    "empty-file": ("", "empty file"),
    "a-list": ("[1, 2]", "must be a JSON object"),
    "a-string": ('"site"', "must be a JSON object"),
    "null": ("null", "must be a JSON object"),
    "non-utf8": (b'{"model": "\xffsite"}', "not UTF-8"),
    # keys
    "unknown-key": ('{"n_starts": 4}', "unknown key(s) n_starts"),
    "unknown-gradient-key": ('{"gradient": {"starts": 4}}', "gradient: unknown key(s) starts"),
    "gradient-a-list": ('{"gradient": [4, 100]}', "gradient must be an object"),
    "gradient-null": ('{"gradient": null}', "gradient must be an object"),
    # integers
    "n_starts-a-string": ('{"gradient": {"n_starts": "4"}}', "gradient.n_starts"),
    "n_starts-a-boolean": ('{"gradient": {"n_starts": true}}', "gradient.n_starts"),
    "max_iterations-fractional": ('{"gradient": {"max_iterations": 2.5}}',
                                  "gradient.max_iterations"),
    "max_iterations-negative": ('{"gradient": {"max_iterations": -5}}',
                                "gradient.max_iterations"),
    "chunk-zero": ('{"gradient": {"chunk": 0}}', "gradient.chunk"),
    "patience-zero": ('{"gradient": {"patience": 0}}', "gradient.patience"),
    "seed-too-large": (f'{{"gradient": {{"seed": {2**70}}}}}', "gradient.seed"),
    "seed-fractional": ('{"gradient": {"seed": 1.0}}', "gradient.seed"),
    "validation_days-fractional": ('{"validation_days": 2.5}', "validation_days"),
    "validation_days-a-boolean": ('{"validation_days": true}', "validation_days"),
    "validation_days-negative": ('{"validation_days": -1}', "validation_days"),
    "validation_days-a-string": ('{"validation_days": "365"}', "validation_days"),
    "validation_days-null": ('{"validation_days": null}', "validation_days"),
    "validation_days-infinite": ('{"validation_days": 1e400}', "validation_days"),
    "refine_iterations-negative": ('{"refine_iterations": -1}', "refine_iterations"),
    # numbers
    "edc_weight-nan": ('{"edc_weight": NaN}', "edc_weight"),
    "edc_weight-infinite": ('{"edc_weight": Infinity}', "edc_weight"),
    "edc_weight-negative": ('{"edc_weight": -1}', "edc_weight"),
    "edc_weight-a-string": ('{"edc_weight": "1"}', "edc_weight"),
    "water_drift_weight-negative": ('{"water_drift_weight": -0.1}', "water_drift_weight"),
    "violation_weight-boolean": ('{"violation_weight": false}', "violation_weight"),
    "refine_learning_rate-zero": ('{"refine_learning_rate": 0}', "refine_learning_rate"),
    "every-weight-zero": ('{"weights": {"gpp": 0, "reco": 0, "et": 0, "lai": 0}}',
                          "nothing would be fitted"),
    "learning_rate-zero": ('{"gradient": {"learning_rate": 0}}', "gradient.learning_rate"),
    "min_improvement-nan": ('{"gradient": {"min_improvement": NaN}}',
                            "gradient.min_improvement"),
    "final_learning_rate_fraction-above-one": (
        '{"gradient": {"final_learning_rate_fraction": 2}}',
        "gradient.final_learning_rate_fraction"),
    # weights
    "weight-negative": ('{"weights": {"gpp": -1}}', "weights.gpp"),
    "weight-a-string": ('{"weights": {"gpp": "a"}}', "weights.gpp"),
    "weight-nan": ('{"weights": {"gpp": NaN}}', "weights.gpp"),
    "weight-a-list": ('{"weights": {"gpp": [1]}}', "weights.gpp"),
    "weights-unknown-stream": ('{"weights": {"foo": 1}}', "weights name unknown stream(s) foo"),
    "weights-a-list": ('{"weights": [1.5]}', "weights must be an object"),
    "pool-weight-unknown-pool": ('{"steady_state_pool_weights": {"leaves": 1}}',
                                 "steady_state_pool_weights"),
    "pool-weight-negative": ('{"steady_state_pool_weights": {"labile_carbon": -1}}',
                             "steady_state_pool_weights.labile_carbon"),
    # streams
    "stream-unknown": ('{"streams": ["gpp", "foo"]}', "streams: unknown foo"),
    "streams-a-string": ('{"streams": "gpp"}', "streams must be a list of names"),
    "stream-duplicate": ('{"streams": ["gpp", "reco", "gpp"]}', "streams names gpp twice"),
    "streams-empty": ('{"streams": []}', "streams: none"),
    "stream-a-number": ('{"streams": ["gpp", 1]}', "streams must be a list of names"),
    # names of model options
    "model-unknown": ('{"model": "regional"}', "unknown model option 'regional'"),
    "model-a-number": ('{"model": 3}', "model must be a name"),
    "water_stress-unknown": ('{"water_stress": "sometimes"}', "unknown water_stress"),
    "evapotranspiration-unknown": ('{"evapotranspiration": "penman"}',
                                   "unknown evapotranspiration"),
    "phenology-unknown": ('{"phenology": "gsi"}', "unknown phenology"),
    "objective-unknown": ('{"objective": "rmse"}', "unknown objective"),
    "uncertainty-unknown": ('{"uncertainty": "none"}', "unknown uncertainty"),
    "steady_state_form-unknown": ('{"steady_state_form": "cubic"}', "unknown steady_state_form"),
    "training_window-unknown": ('{"training_window": "spinup"}', "unknown training_window"),
    "training_window-a-list": ('{"training_window": ["record"]}', "training_window"),
    "gpp_weather-a-string": ('{"gpp_weather": "yes"}', "gpp_weather"),
    "photosynthesis-a-string": ('{"photosynthesis": "gpp_weather"}', "photosynthesis"),
    "photosynthesis-unknown": ('{"photosynthesis": ["gpp_wether"]}',
                               "unknown photosynthesis option 'gpp_wether'"),
    "photosynthesis-twice": ('{"photosynthesis": ["gpp_weather", "gpp_weather"]}',
                             "given twice"),
    "leaf_loss-in-the-wrong-slot": ('{"leaf_loss": ["gpp_weather"]}',
                                    "unknown leaf_loss option 'gpp_weather'"),
    "phenology-removed": ('{"phenology": "calendar_climate_beta", "gpp_weather": false}',
                          "was removed"),
    "deep_water_uptake-global-model": ('{"model": "global", "deep_water_uptake": true}',
                                       "deep_water_uptake"),
    # parameters
    "parameter_values-unknown-name": ('{"parameter_values": {"leaf_life_span": 2}}',
                                      "parameter_values"),
    "parameter_values-a-string": ('{"parameter_values": {"canopy_efficiency": "20"}}',
                                  "parameter_values.canopy_efficiency"),
    "parameter_values-a-boolean": ('{"parameter_values": {"canopy_efficiency": true}}',
                                   "parameter_values.canopy_efficiency"),
    "parameter_values-infinite": ('{"parameter_values": {"canopy_efficiency": 1e400}}',
                                  "parameter_values.canopy_efficiency"),
    "parameter_values-a-list": ('{"parameter_values": [20]}', "parameter_values"),
    "free_parameters-unknown-name": ('{"free_parameters": ["leaf_life_span"]}',
                                     "free_parameters"),
    "free_parameters-empty": ('{"free_parameters": []}', "free_parameters"),
    "free_parameters-a-string": ('{"free_parameters": "canopy_efficiency"}', "free_parameters"),
    "free_parameters-duplicate": ('{"free_parameters": ["leaf_lifespan", "leaf_lifespan"]}',
                                  "free_parameters names leaf_lifespan twice"),
    "parameter_scales-unknown-scale": ('{"parameter_scales": {"canopy_efficiency": "cubic"}}',
                                       "parameter_scales"),
    "parameter_scales-unknown-name": ('{"parameter_scales": {"leaf_life_span": "log"}}',
                                      "parameter_scales"),
    "parameter_scales-a-number": ('{"parameter_scales": {"canopy_efficiency": 3}}',
                                  "parameter_scales.canopy_efficiency"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_calibration_config(case, inputs, capsys, no_computation):
    content, key = BAD_CONFIGS[case]
    config = inputs.write("config.json", content)
    run = inputs.root / "run"
    refused(capsys, inputs.root,
            ["calibrate", "site", "--driver", inputs.shared_driver, "--out", run,
             "--config", config],
            [config, key])
    assert not run.exists()


@pytest.mark.parametrize("case", ["missing", "folder"])
def test_unreadable_calibration_config(case, inputs, capsys, no_computation):
    config = inputs.root / "config.json"
    if case == "folder":
        config.mkdir()
    refused(capsys, inputs.root,
            ["calibrate", "site", "--driver", inputs.shared_driver, "--out", "run",
             "--config", config],
            [config, "file does not exist" if case == "missing" else "not a regular file"])
    assert not (inputs.root / "run").exists()


# --- differland calibrate site: run directory and observed streams ------------------------------


def _calibrate_out_file(inputs: Inputs):
    out = inputs.write("run", "a file")
    return ["--driver", inputs.shared_driver, "--out", out], [out, "existing file"]


def _calibrate_finished_run(inputs: Inputs):
    out = inputs.run_record("run", finished=True)
    return ["--driver", inputs.shared_driver, "--out", out], [out, "finished run", "--overwrite"]


def _calibrate_foreign_folder(inputs: Inputs):
    out = inputs.folder("run")
    inputs.write("run/notes.txt", "mine")
    return (["--driver", inputs.shared_driver, "--out", out],
            [out, "not a differland run", "--overwrite"])


def _calibrate_foreign_file(name: str):
    def case(inputs: Inputs):
        out = inputs.folder("run")
        inputs.write(f"run/{name}", "{}")
        return (["--driver", inputs.shared_driver, "--out", out, "--overwrite"],
                [out, name, "did not write"])

    return case


def _calibrate_foreign_checkpoints(inputs: Inputs):
    out = inputs.folder("run")
    inputs.folder("run/checkpoints")
    return (["--driver", inputs.shared_driver, "--out", out, "--overwrite"],
            [out, "checkpoints", "did not write"])


def _calibrate_config_is_netcdf(inputs: Inputs):
    return (["--driver", inputs.shared_driver, "--out", "run", "--config", inputs.shared_driver],
            [inputs.shared_driver, "not UTF-8"])


def _calibrate_over_config(inputs: Inputs):
    out = inputs.folder("run")
    config = inputs.write("run/config.json", "{}")
    return (["--driver", inputs.shared_driver, "--out", out, "--config", config],
            [out, "would overwrite the input", config])


def _calibrate_out_under_file(inputs: Inputs):
    parent = inputs.write("notes.txt", "a file")
    return (["--driver", inputs.shared_driver, "--out", parent / "run"],
            [parent, "is not a folder"])


def _calibrate_missing_driver(inputs: Inputs):
    driver = inputs.root / "missing.nc"
    return ["--driver", driver, "--out", "run"], [driver, "does not exist"]


def _calibrate_without_reco(inputs: Inputs):
    driver = inputs.driver(lambda dataset: dataset.drop_vars(["RECO", "RECOunc"]))
    return (["--driver", driver, "--out", "run", "--streams", "reco"],
            [driver, "too few observations", "reco (no variable)", "--streams"])


def _calibrate_without_observations(inputs: Inputs):
    return (["--driver", inputs.example, "--out", "run"],
            [inputs.example, "too few observations", "the driver has none"])


def _calibrate_empty_stream(inputs: Inputs):
    def no_gpp(dataset: xr.Dataset) -> xr.Dataset:
        return replace(dataset, "GPP", np.full(dataset["GPP"].shape, np.nan))

    driver = inputs.driver(no_gpp)
    return (["--driver", driver, "--out", "run", "--streams", "gpp"],
            [driver, "gpp (0)", "too few observations"])


def _calibrate_bad_sites_table(inputs: Inputs):
    driver = inputs.driver()
    table = inputs.write("sites.csv", "SITE_ID,test_start\nUS-Var,someday\n")
    return ["--driver", driver, "--out", "run"], [table, "test_start", "someday"]


CALIBRATE_ERRORS = {
    "out-is-a-file": _calibrate_out_file,
    "out-holds-a-finished-run": _calibrate_finished_run,
    "out-holds-other-files": _calibrate_foreign_folder,
    "out-holds-a-foreign-params-json": _calibrate_foreign_file("params.json"),
    "out-holds-a-foreign-config-json": _calibrate_foreign_file("config.json"),
    "out-holds-a-foreign-metrics-json": _calibrate_foreign_file("metrics.json"),
    "out-holds-a-foreign-checkpoints-folder": _calibrate_foreign_checkpoints,
    "out-would-overwrite-the-config": _calibrate_over_config,
    "config-is-a-netcdf-file": _calibrate_config_is_netcdf,
    "out-under-a-file": _calibrate_out_under_file,
    "driver-missing": _calibrate_missing_driver,
    "stream-not-in-the-driver": _calibrate_without_reco,
    "driver-without-observations": _calibrate_without_observations,
    "stream-never-observed": _calibrate_empty_stream,
    "bad-sites-table": _calibrate_bad_sites_table,
}


@pytest.mark.parametrize("case", list(CALIBRATE_ERRORS))
def test_bad_calibration_run(case, inputs, capsys, no_computation):
    args, expected = CALIBRATE_ERRORS[case](inputs)
    existed = (inputs.root / "run").exists()
    refused(capsys, inputs.root, ["calibrate", "site", *args], expected)
    assert (inputs.root / "run").exists() == existed


# --- site drivers ---------------------------------------------------------------------------------

FORCING = ("T2M_MIN", "T2M_MAX", "SSRD", "CO2", "DOY", "VPD", "TOTAL_PREC", "LAT")

BAD_DRIVERS = {
    **{f"missing-{name}": (lambda dataset, name=name: dataset.drop_vars(name),
                           (name, "required forcing variable(s) missing")) for name in FORCING},
    "missing-VPD-and-CO2": (lambda dataset: dataset.drop_vars(["VPD", "CO2"]),
                            ("CO2, VPD", "missing")),
    **{f"nan-in-{name}": (with_value(name, 10, np.nan), (name, "NaN/inf", "index 10"))
       for name in ("T2M_MIN", "T2M_MAX", "SSRD", "VPD", "TOTAL_PREC", "DOY")},
    "inf-in-CO2": (with_value("CO2", 3, np.inf), ("CO2", "NaN/inf")),
    "fill-value-in-CO2": (with_value("CO2", 5, -9999.0), ("CO2", "plausible range")),
    "VPD-negative": (scaled("VPD", offset=-100.0, attrs={"units": "hPa"}),
                     ("VPD", "plausible range")),
    "temperatures-swapped": (lambda dataset: dataset.assign(T2M_MIN=dataset["T2M_MAX"],
                                                            T2M_MAX=dataset["T2M_MIN"]),
                             ("T2M_MAX", "below t_min", "first at time index 0")),
    "VPD-in-furlongs": (scaled("VPD", attrs={"units": "furlongs"}), ("VPD", "'furlongs'")),
    "VPD-in-a-flux-unit": (scaled("VPD", attrs={"units": "mm d-1"}),
                           ("VPD", "cannot be converted")),
    "VPD-in-kPa-undeclared": (scaled("VPD", 0.1), ("VPD", "look like kPa")),
    "VPD-in-kPa-blank-units": (scaled("VPD", 0.1, attrs={"units": " "}),
                               ("VPD", "no units attribute")),
    "VPD-in-Pa-undeclared": (scaled("VPD", 100.0), ("VPD", "look like Pa")),
    "precipitation-in-m-undeclared": (scaled("TOTAL_PREC", 1e-3), ("TOTAL_PREC", "m d-1")),
    "precipitation-in-kg-per-s-undeclared": (scaled("TOTAL_PREC", 1 / 86400),
                                             ("TOTAL_PREC", "kg m-2 s-1")),
    "T2M_MIN-in-kelvin-undeclared": (scaled("T2M_MIN", offset=273.15), ("T2M_MIN", "kelvin")),
    "T2M_MAX-in-kelvin-undeclared": (scaled("T2M_MAX", offset=273.15), ("T2M_MAX", "kelvin")),
    "SSRD-in-W-undeclared": (scaled("SSRD", 1e6 / 86400), ("SSRD", "W m-2")),
    "CO2-as-mole-fraction-undeclared": (scaled("CO2", 1e-6), ("CO2", "mol mol-1")),
    "GPP-in-furlongs": (scaled("GPP", attrs={"units": "furlongs"}), ("GPP", "'furlongs'")),
    "LAI-scaled-by-100": (scaled("LAI", 100.0), ("LAI", "exceed 15")),
    "DOY-shifted-5-days": (lambda dataset: replace(dataset, "DOY",
                                                   (dataset["DOY"].values + 4) % 365 + 1),
                           ("DOY", "disagrees with the time axis")),
    "time-not-daily": (with_time(lambda time: time * 2), ("time", "not daily")),
    "time-decreasing": (with_time(lambda time: time[::-1].copy()),
                        ("time", "not strictly increasing")),
    "time-repeats-a-day": (with_time(lambda time: np.where(np.arange(time.size) == 7, time[6],
                                                           time)),
                           ("time", "not strictly increasing")),
    "time-nan": (with_time(lambda time: np.where(np.arange(time.size) == 7, np.nan, time)),
                 ("time", "NaN/inf")),
    "time-noleap-calendar": (with_time(attrs={"units": "days since 2001-01-01",
                                              "calendar": "noleap"}),
                             ("time", "calendar 'noleap'")),
    "time-360-day-calendar": (with_time(attrs={"calendar": "360_day"}),
                              ("time", "calendar '360_day'")),
    "time-days-declared-as-hours": (with_time(attrs={"units": "hours since 2001-01-01"}),
                                    ("time", "not daily")),
    "time-in-weeks": (with_time(attrs={"units": "weeks since 2001-01-01"}),
                      ("time", "'weeks since 2001-01-01'")),
    "time-origin-unreadable": (with_time(attrs={"units": "days since the start"}),
                               ("time", "cannot parse the origin")),
    "no-time-coordinate": (lambda dataset: dataset.drop_vars("time"),
                           ("time", "no time coordinate")),
    "single-time-step": (lambda dataset: dataset.isel(time=slice(0, 1)),
                         ("time", "at least 2")),
    "VPD-two-dimensional": (two_dimensional("VPD"), ("VPD", "wrong shape")),
    "GPP-two-dimensional": (two_dimensional("GPP"), ("GPP", "wrong shape")),
    "VPD-text": (lambda dataset: dataset.assign(VPD=("time", np.full(dataset.time.size, "a"))),
                 ("VPD", "not numeric")),
    "LAT-out-of-range": (lambda dataset: replace(dataset, "LAT", 123.0),
                         ("LAT", "plausible range")),
    "LAT-a-vector": (lambda dataset: dataset.assign(LAT=("nopars", np.zeros(50))),
                     ("LAT", "expected a scalar")),
    "LAT-text": (lambda dataset: dataset.assign(LAT=((), "north")), ("LAT", "not numeric")),
    "BURNED_AREA-above-one": (lambda dataset: dataset.assign(
        BURNED_AREA=("time", np.full(dataset.time.size, 5.0))),
                              ("BURNED_AREA", "plausible range")),
}


@pytest.mark.parametrize("case", list(BAD_DRIVERS))
def test_bad_site_driver(case, inputs, capsys, no_computation):
    change, expected = BAD_DRIVERS[case]
    driver = inputs.driver(change)
    refused(capsys, inputs.root, ["simulate", "--driver", driver, "--out", "out.nc"],
            [driver, *expected])


# --- sites.csv beside a driver --------------------------------------------------------------------

TABLE = "SITE_ID,test_start\n"

BAD_SITES_TABLES = {
    "id-column-lowercase": ("site_id,test_start\nUS-Var,2007-01-01\n",
                            ("SITE_ID", "'site_id'")),
    "id-column-ID": ("ID,test_start\nUS-Var,2007-01-01\n", ("SITE_ID", "'ID'")),
    "no-id-column": ("cluster,test_start\ncDD,2007-01-01\n", ("no SITE_ID column",)),
    "empty-table": ("", ("no SITE_ID column",)),
    "site-listed-twice": (TABLE + "US-Var,2007-01-01\nUS-Var,2008-01-01\n",
                          ("'US-Var'", "listed twice")),
    "other-site-listed-twice": (TABLE + "AU-Stp,2015-01-01\nAU-Stp,2015-01-01\n"
                                "US-Var,2007-01-01\n", ("'AU-Stp'", "listed twice")),
    "non-utf8": (b"SITE_ID,test_start\nUS-Var,2007-01-01\nFR-Pu\xe9,2006-01-01\n",
                 ("not UTF-8",)),
    "test_start-not-a-date": (TABLE + "US-Var,next year\n", ("test_start", "'next year'")),
    "test_start-impossible-date": (TABLE + "US-Var,2007-13-45\n",
                                   ("test_start", "'2007-13-45'")),
    "test_start-blank": (TABLE + "US-Var,\n", ("test_start", "no date")),
    "no-test_start-column": ("SITE_ID,cluster\nUS-Var,cDD\n", ("no test_start column",)),
    "test_start-after-the-record": (TABLE + "US-Var,2015-01-01\n",
                                    ("test_start", "the test period would be empty")),
    "row-shorter-than-the-header": ("SITE_ID,cluster,test_start\nUS-Var\n",
                                    ("test_start", "no date for site US-Var")),
}


@pytest.mark.parametrize("case", list(BAD_SITES_TABLES))
def test_bad_sites_table(case, inputs, capsys, no_computation):
    content, expected = BAD_SITES_TABLES[case]
    driver = inputs.driver()
    table = inputs.write("sites.csv", content)
    refused(capsys, inputs.root, ["simulate", "--driver", driver, "--out", "out.nc"],
            [table, *expected])


@pytest.mark.parametrize("test_start", ["1999-01-01", "2002-01-01"])
def test_sites_table_test_start_before_the_record(test_start, inputs, capsys, no_computation):
    driver = inputs.driver()
    inputs.write("sites.csv", TABLE + f"US-Var,{test_start}\n")
    refused(capsys, inputs.root, ["simulate", "--driver", driver, "--out", "out.nc"],
            [driver, "the calibration period is empty", "sites.csv",
             "on or before the record's first day 2002-01-01"])


# --- in a real process ----------------------------------------------------------------------------


def _process_config(inputs: Inputs):
    config = inputs.write("config.json", '{"edc_weight": NaN}')
    return (["calibrate", "site", "--driver", inputs.shared_driver, "--out", "run", "--config",
             config], [config, "edc_weight"])


def _process_truncated_driver(inputs: Inputs):
    driver = _truncated(inputs)
    return ["simulate", "--driver", driver, "--out", "out.nc"], [driver, "not a readable NetCDF"]


def _process_unknown_option(inputs: Inputs):
    return ["simulate", "--out", "out.nc", "--bogus"], ["No such option: --bogus"]


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "differland"
    if not script.is_file():
        pytest.skip("the differland console script is not installed beside this Python")
    return [str(script)]


PROCESS_CASES = {
    "module-unknown-option": ("module", _process_unknown_option),
    "module-bad-config": ("module", _process_config),
    "script-truncated-driver": ("script", _process_truncated_driver),
}


@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_refused_in_a_real_process(case, inputs):
    how, make = PROCESS_CASES[case]
    command = [sys.executable, "-m", "differland.cli"] if how == "module" else _console_script()
    args, expected = make(inputs)
    before = snapshot(inputs.root)
    done = subprocess.run([*command, *map(str, args)], cwd=inputs.root, capture_output=True,
                          text=True, timeout=120, check=False)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, expected)
    assert snapshot(inputs.root) == before


# --- edge cases: pathological JSON, duplicate keys, the example driver's output ---------------


def _deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _edge_config(content: str):
    def case(inputs: Inputs):
        config = inputs.write("config.json", content)
        return (["calibrate", "site", "--driver", inputs.shared_driver, "--out", "run",
                 "--config", config], [config])

    return case


def _edge_config_out_of_bounds(inputs: Inputs):
    config = inputs.write("config.json", '{"parameter_values": {"canopy_efficiency": 500}}')
    return (["calibrate", "site", "--driver", inputs.shared_driver, "--out", "run", "--config",
             config], [config, "canopy_efficiency"])


def _edge_deep_params(inputs: Inputs):
    params = inputs.write("params.json", _deep_json())
    return ["simulate", "--driver", inputs.example, "--params", params, "--out", "out.nc"], [params]


def _edge_deep_network(inputs: Inputs):
    network = inputs.write("network.json", _deep_json())
    return (["simulate", "--driver", inputs.example, "--water-stress", "neural", "--network",
             network, "--out", "out.nc"], [network])


def _edge_example_over_file(inputs: Inputs):
    out = inputs.write("notes.nc", "not written by differland")
    return ["example-driver", "--out", out, "--years", "1"], [out]


def _edge_example_folder(inputs: Inputs):
    out = inputs.folder("drivers")
    return ["example-driver", "--out", out, "--years", "1"], [out]


def _edge_example_under_file(inputs: Inputs):
    parent = inputs.write("notes.txt", "a file")
    return ["example-driver", "--out", parent / "x.nc", "--years", "1"], [parent]


def _edge_example_latitude(value: str):
    def case(inputs: Inputs):
        return (["example-driver", "--out", "x.nc", "--years", "1", "--latitude", value],
                ["--latitude"])

    return case


EDGE_CASES = {
    "config-streams-null": _edge_config('{"streams": null}'),
    "config-deeply-nested": _edge_config(_deep_json()),
    "config-5000-digit-integer": _edge_config('{"validation_days": ' + "1" * 5000 + "}"),
    "config-duplicate-key": _edge_config('{"edc_weight": 1, "edc_weight": 2}'),
    "config-parameter-value-out-of-bounds": _edge_config_out_of_bounds,
    "params-deeply-nested": _edge_deep_params,
    "network-deeply-nested": _edge_deep_network,
    "example-driver-over-a-foreign-file": _edge_example_over_file,
    "example-driver-out-is-a-folder": _edge_example_folder,
    "example-driver-out-under-a-file": _edge_example_under_file,
    "example-driver-latitude-100": _edge_example_latitude("100"),
    "example-driver-latitude-nan": _edge_example_latitude("nan"),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case(case, inputs, capsys, no_computation, monkeypatch):
    make = EDGE_CASES[case]
    args, expected = make(inputs)
    if case.startswith("config-"):
        # a configuration is checked before the calibration workflow starts
        monkeypatch.setattr(differland.workflows, "calibrate_site", _computation_started)
    refused(capsys, inputs.root, args, expected)


# --- positive behaviour beside the refusals ------------------------------------------------------


@pytest.mark.parametrize("args, start", [
    ([], "Usage: differland"),
    (["calibrate"], "Usage: differland calibrate"),
])
def test_no_arguments_prints_help(args, start, capsys):
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(start) and captured.err == ""


def test_version(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"differland {__version__}\n" == "differland 0.1.0\n"
    assert captured.err == ""


DECLARED_UNITS = {
    "VPD-in-kPa": ("VPD", "vpd", 0.1, 0.0, "kPa"),
    "SSRD-in-W": ("SSRD", "ssrd", 1e6 / 86400, 0.0, "W m-2"),
    "T2M_MIN-in-kelvin": ("T2M_MIN", "t_min", 1.0, 273.15, "K"),
    "precipitation-in-kg-per-s": ("TOTAL_PREC", "precipitation", 1 / 86400, 0.0, "kg m-2 s-1"),
    "precipitation-in-m-per-day": ("TOTAL_PREC", "precipitation", 1e-3, 0.0, "m"),
    "SSRD-in-J-per-day": ("SSRD", "ssrd", 1e6, 0.0, "J m-2"),
    "VPD-in-Pa": ("VPD", "vpd", 100.0, 0.0, "Pa"),
    "CO2-in-mol-per-mol": ("CO2", "co2", 1e-6, 0.0, "mol mol-1"),
    "temperature-spelled-deg-C": ("T2M_MAX", "t_max", 1.0, 0.0, "degrees Celsius"),
}


@pytest.mark.parametrize("case", list(DECLARED_UNITS))
def test_declared_units_are_converted(case, inputs):
    name, field, factor, offset, units = DECLARED_UNITS[case]
    original = inputs.driver(name="original/US-Var.nc")
    changed = inputs.driver(scaled(name, factor, offset, {"units": units}),
                            name="changed/US-Var.nc")
    expected = np.asarray(getattr(read_site_driver(original).forcing, field))
    actual = np.asarray(getattr(read_site_driver(changed).forcing, field))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


CHECKPOINTED = GradientSettings(n_starts=2, max_iterations=60, chunk=10, checkpoint_every=1,
                                patience=100, warmup=0, learning_rate=0.1, seed=0)


def _quadratic(theta, ramp=1.0):
    return jnp.sum((theta["x"] - 3.0) ** 2)


def _quadratic_on(theta, steps):
    return _quadratic(theta)


def _quadratic_fit(**kwargs):
    initial = {"x": jnp.asarray([[0.0, 1.0], [-1.0, 2.0]])}
    return fit(_quadratic, _quadratic_on, None, None, initial, CHECKPOINTED, progress=False,
               **kwargs)


def _damage(step_folder: Path) -> None:
    """Overwrite every file of a checkpoint step with garbage."""
    files = [path for path in step_folder.rglob("*") if path.is_file()]
    assert files
    for path in files:
        path.write_bytes(b"\xffgarbage\x00" * 3)


def _steps(checkpoints: Path) -> list[int]:
    return sorted(int(path.name) for path in checkpoints.iterdir() if path.name.isdigit())


@pytest.fixture(scope="module")
def killed_fit(tmp_path_factory) -> Path:
    """Checkpoints of a fit stopped, as if killed, after 3 of its 6 chunks."""
    checkpoints = tmp_path_factory.mktemp("killed") / "checkpoints"
    killed = _quadratic_fit(checkpoint_dir=checkpoints, stop_after_chunks=3)
    assert not killed.finished
    return checkpoints


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys,
                                                                   killed_fit):
    uninterrupted = _quadratic_fit()
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(killed_fit, checkpoints)
    steps = _steps(checkpoints)
    assert len(steps) >= 2
    latest, previous = steps[-1], steps[-2]
    _damage(checkpoints / str(latest))
    capsys.readouterr()
    resumed = _quadratic_fit(checkpoint_dir=checkpoints)
    err = capsys.readouterr().err
    assert f"differland: notice: checkpoint {latest} in {checkpoints}" in err, err
    assert f"resuming from checkpoint {previous} instead of the damaged {latest}" in err, err
    assert "Traceback" not in err and "absl" not in err, err
    assert len(err.strip().splitlines()) == 2, err
    assert resumed.finished and resumed.resumed_from == previous * CHECKPOINTED.chunk
    for a, b in zip(jax.tree.leaves(uninterrupted.best), jax.tree.leaves(resumed.best),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(uninterrupted.history, resumed.history)
    np.testing.assert_array_equal(uninterrupted.selection_loss, resumed.selection_loss)


def test_every_checkpoint_damaged_is_refused(tmp_path, killed_fit):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(killed_fit, checkpoints)
    steps = _steps(checkpoints)
    for step in steps:
        _damage(checkpoints / str(step))
    with pytest.raises(CheckpointMismatchError, match="no checkpoint .* can be read") as error:
        _quadratic_fit(checkpoint_dir=checkpoints)
    assert "\n" not in str(error.value) and "--overwrite" in str(error.value)
    assert _steps(checkpoints) == steps


def test_stale_temporaries_are_removed(tmp_path):
    """Only files named as tempfile.mkstemp names an atomic write's temporary
    (``.<name>.<8 random characters>.tmp``) are removed: not folders, links, other names."""
    stale = [tmp_path / ".out.nc.k2j4h1_a.tmp", tmp_path / ".out.nc.0123abcd.tmp"]
    other_output = tmp_path / ".params.json.x9z8y7w6.tmp"
    kept = [tmp_path / "out.nc", tmp_path / ".out.nc.tmp", tmp_path / "out.nc.abcdefgh.tmp",
            tmp_path / ".out.nc.abcdefgh.tmp.bak", tmp_path / ".out.nc.notes.tmp",
            tmp_path / ".out.nc.ABCDEFGH.tmp", tmp_path / "sub" / ".out.nc.deep1234.tmp"]
    for path in [*stale, other_output, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    folder = tmp_path / ".out.nc.folder12.tmp"
    folder.mkdir()
    link = tmp_path / ".out.nc.link1234.tmp"
    link.symlink_to(tmp_path / "out.nc")
    assert sorted(remove_stale_temporaries(tmp_path, "out.nc")) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert other_output.exists() and folder.is_dir() and link.is_symlink()
    assert all(path.exists() for path in kept)
    assert remove_stale_temporaries(tmp_path) == [other_output]
    assert all(path.exists() for path in kept)
    assert folder.is_dir() and link.is_symlink()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_simulate_removes_a_stale_temporary_with_a_notice(tmp_path, capsys, example_driver):
    out = tmp_path / "out.nc"
    stale = tmp_path / ".out.nc.q8w7e6r5.tmp"
    stale.write_bytes(b"half a file")
    status = main(["simulate", "--driver", str(example_driver), "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == f"differland: notice: removed {stale}, left by an interrupted write\n"
    assert out.is_file() and not stale.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.nc"]
    assert os.path.getsize(out) > 0
