"""Tests of the I/O layer: site drivers, NetCDF writing, parameter files, the example driver."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from differland.forcing import FORCING_VARIABLES
from differland.io import (
    OBSERVATION_VARIABLES,
    DriverError,
    calibration_split_index,
    cf_time_coordinate,
    example_site_dataset,
    read_parameter_values,
    read_site_driver,
    write_dataset,
    write_example_site_driver,
    write_parameter_json,
)
from differland.io.site import REQUIRED_VARIABLES
from differland.params import (
    SPECS,
    ParameterError,
    default_parameters,
    names_for,
    parameters_from_mapping,
)

ALL_SITES = ("US-Var", "AU-Stp", "US-SRG", "FR-Pue", "AU-How", "AU-Dry", "NL-Loo", "DE-Hai",
             "RU-Fyo", "US-Ha1", "BE-Vie", "DE-Tha")
GOLDEN_SITES = ("US-Var", "DE-Hai", "AU-How")


def open_raw(path: Path) -> xr.Dataset:
    """A NetCDF file fully in memory, with raw (undecoded) times."""
    with xr.open_dataset(path, decode_times=False, decode_timedelta=False) as dataset:
        return dataset.load()


@pytest.fixture(scope="module")
def us_var(fluxsites_dir: Path) -> xr.Dataset:
    return open_raw(fluxsites_dir / "US-Var.nc")


@pytest.fixture
def write_variant(tmp_path: Path, us_var: xr.Dataset) -> Callable[..., Path]:
    """Write a modified copy of the US-Var driver into ``tmp_path`` and return its path."""

    def write(modify: Callable[[xr.Dataset], xr.Dataset], name: str = "US-Var.nc") -> Path:
        path = tmp_path / name
        write_dataset(path, modify(us_var.copy(deep=True)))
        return path

    return write


def raises_driver_error(path: Path, pattern: str) -> DriverError:
    """Read ``path`` expecting a one-line DriverError that starts with the path."""
    with pytest.raises(DriverError, match=pattern) as excinfo:
        read_site_driver(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return excinfo.value


def set_values(dataset: xr.Dataset, name: str, index, value: float) -> xr.Dataset:
    values = dataset[name].values.copy()
    values[index] = value
    dataset[name] = (dataset[name].dims, values, dataset[name].attrs)
    return dataset


# --- reading real drivers -------------------------------------------------------------------------


def test_read_real_driver(fluxsites_dir: Path, us_var: xr.Dataset):
    driver = read_site_driver(fluxsites_dir / "US-Var.nc")
    assert driver.site_id == "US-Var"
    assert driver.n_steps == 3287
    assert driver.dates[0] == np.datetime64("2002-01-01")
    assert driver.dates[-1] == np.datetime64("2010-12-31")
    assert driver.dates.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(driver.time, us_var["time"].values.astype(np.float64))
    assert driver.time.dtype == np.float64
    assert driver.calibration_end == 1826
    assert driver.latitude == pytest.approx(38.4133)
    forcing = driver.forcing
    np.testing.assert_array_equal(forcing.time, driver.time)
    np.testing.assert_array_equal(forcing.t_min, us_var["T2M_MIN"].values)
    np.testing.assert_array_equal(forcing.precipitation, us_var["TOTAL_PREC"].values)
    np.testing.assert_array_equal(forcing.burned_area, 0.0)
    np.testing.assert_array_equal(forcing.delta_t, 1.0)
    np.testing.assert_array_equal(forcing.latitude, driver.latitude)
    for name in FORCING_VARIABLES:
        leaf = getattr(forcing, name)
        assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float64, name
        assert leaf.shape == (driver.n_steps,), name
    assert set(driver.observations) == set(OBSERVATION_VARIABLES)
    assert driver.observations["ewt"].uncertainty is None
    assert driver.observations["nee"].units == "gC m-2 d-1"


@pytest.mark.parametrize("site", ["US-Var", "AU-Stp", "RU-Fyo"])
def test_observation_masks(fluxsites_dir: Path, site: str):
    path = fluxsites_dir / f"{site}.nc"
    raw = open_raw(path)
    driver = read_site_driver(path)
    for key, spec in OBSERVATION_VARIABLES.items():
        observation = driver.observations[key]
        values = raw[spec.variable].values.astype(np.float64)
        assert observation.values.dtype == np.float64
        assert observation.values.shape == (driver.n_steps,)
        assert np.all(np.isfinite(observation.values))
        np.testing.assert_array_equal(observation.mask, ~np.isnan(values))
        np.testing.assert_array_equal(observation.values[observation.mask],
                                      values[observation.mask])
        np.testing.assert_array_equal(observation.values[~observation.mask], 0.0)
        if spec.uncertainty is None:
            continue
        sigma = raw[spec.uncertainty].values.astype(np.float64)
        assert np.all(np.isfinite(observation.uncertainty))
        np.testing.assert_array_equal(observation.uncertainty_mask,
                                      np.isfinite(sigma) & (sigma > 0))
        np.testing.assert_array_equal(observation.uncertainty[~observation.uncertainty_mask], 0.0)


def test_fill_value_is_a_gap(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        dataset = set_values(dataset, "GPP", slice(0, 5), -9999.0)
        return set_values(dataset, "GPPunc", slice(0, 3), -9999.0)

    gpp = read_site_driver(write_variant(modify)).observations["gpp"]
    assert not gpp.mask[:5].any()
    assert not gpp.uncertainty_mask[:3].any()
    np.testing.assert_array_equal(gpp.values[:5], 0.0)
    np.testing.assert_array_equal(gpp.uncertainty[:3], 0.0)


def test_missing_observations_are_absent(write_variant):
    path = write_variant(lambda ds: ds.drop_vars(["EWT", "LAI", "LAIunc", "RECOunc"]))
    observations = read_site_driver(path).observations
    assert set(observations) == {"gpp", "reco", "nee", "et"}
    assert observations["reco"].uncertainty is None
    assert observations["reco"].uncertainty_mask is None


def test_reference_climate_matches_golden(fluxsites_dir: Path, golden_dir: Path):
    for site in GOLDEN_SITES:
        forcing = read_site_driver(fluxsites_dir / f"{site}.nc").forcing
        golden = open_raw(golden_dir / f"dalec990_{site}_mid.nc")
        np.testing.assert_allclose(forcing.mean_temperature,
                                   golden["forcing_t_mean_reference"].values, rtol=0, atol=1e-12)
        np.testing.assert_allclose(forcing.mean_precipitation,
                                   golden["forcing_precipitation_mean_reference"].values,
                                   rtol=0, atol=1e-12)
        np.testing.assert_array_equal(forcing.time, golden["forcing_time"].values)


def test_split_rule_matches_sites_table(fluxsites_dir: Path):
    with (fluxsites_dir / "sites.csv").open(newline="") as stream:
        test_start = {row["SITE_ID"]: row["test_start"] for row in csv.DictReader(stream)}
    assert sorted(test_start) == sorted(ALL_SITES)
    for site in ALL_SITES:
        time = open_raw(fluxsites_dir / f"{site}.nc")["time"].values
        dates = np.datetime64("2001-01-01", "D") + time.astype("timedelta64[D]")
        from_table = int(np.searchsorted(dates, np.datetime64(test_start[site], "D")))
        assert calibration_split_index(dates) == from_table, site


def test_split_index_rule():
    def dates(start: str, n: int) -> np.ndarray:
        return np.datetime64(start, "D") + np.arange(n)

    assert calibration_split_index(dates("2002-01-01", 3287)) == 1826
    assert calibration_split_index(dates("2001-01-01", 1095)) == 730
    assert calibration_split_index(dates("2001-07-01", 1461)) == 184 + 365
    assert calibration_split_index(dates("2001-12-31", 2)) == 1


def test_split_from_sites_table(write_variant, tmp_path: Path):
    path = write_variant(lambda ds: ds)
    assert read_site_driver(path).calibration_end == 1826
    table = tmp_path / "sites.csv"
    table.write_text("SITE_ID,test_start\nOTHER,2003-01-01\nUS-Var,2008-01-01\n")
    driver = read_site_driver(path)
    assert driver.dates[driver.calibration_end] == np.datetime64("2008-01-01")
    t_min, t_max = driver.forcing.t_min, driver.forcing.t_max
    expected = np.mean((t_min[:driver.calibration_end] + t_max[:driver.calibration_end]) / 2)
    assert driver.forcing.mean_temperature[0] == expected
    table.write_text("SITE_ID,test_start\nUS-Var,someday\n")
    with pytest.raises(DriverError, match="sites.csv: test_start: invalid date"):
        read_site_driver(path)


def test_time_units_are_shifted_to_model_origin(write_variant, us_var: xr.Dataset):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        shifted = dataset["time"].values + 366
        return dataset.assign_coords(time=("time", shifted, {"units": "days since 2000-01-01"}))

    driver = read_site_driver(write_variant(modify))
    np.testing.assert_array_equal(driver.time, us_var["time"].values)
    assert driver.dates[0] == np.datetime64("2002-01-01")


def test_burned_area_is_read(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        dataset["BURNED_AREA"] = ("time", np.full(dataset.sizes["time"], 0.01))
        return dataset

    np.testing.assert_array_equal(read_site_driver(write_variant(modify)).forcing.burned_area,
                                  0.01)


# --- bad drivers ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    raises_driver_error(tmp_path / "nowhere.nc", "does not exist")


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.nc"
    path.touch()
    raises_driver_error(path, "empty file")


def test_not_netcdf(tmp_path: Path):
    path = tmp_path / "text.nc"
    path.write_text("SITE_ID,lat\nUS-Var,38.4\n")
    raises_driver_error(path, "not a NetCDF file")


def test_truncated_netcdf(tmp_path: Path, fluxsites_dir: Path):
    path = tmp_path / "US-Var.nc"
    path.write_bytes((fluxsites_dir / "US-Var.nc").read_bytes()[:4096])
    raises_driver_error(path, "not a readable NetCDF file")


@pytest.mark.parametrize("name", REQUIRED_VARIABLES)
def test_missing_forcing_variable(write_variant, name: str):
    path = write_variant(lambda ds: ds.drop_vars(name))
    raises_driver_error(path, f": {name}: required forcing variable")


def test_no_time_coordinate(write_variant):
    raises_driver_error(write_variant(lambda ds: ds.drop_vars("time")),
                        "time: no time coordinate")


def test_series_with_wrong_shape(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        values = dataset["T2M_MIN"].values
        dataset["T2M_MIN"] = (("time", "layer"), np.stack([values, values], axis=1))
        return dataset

    raises_driver_error(write_variant(modify), r"T2M_MIN: wrong shape.*expected 1-D along time")


def test_latitude_with_wrong_shape(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        dataset["LAT"] = ("time", np.full(dataset.sizes["time"], 38.4))
        return dataset

    raises_driver_error(write_variant(modify), r"LAT: wrong shape.*expected a scalar")


def test_time_not_increasing(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        time = dataset["time"].values.copy()
        time[[10, 11]] = time[[11, 10]]
        return dataset.assign_coords(time=time)

    raises_driver_error(write_variant(modify), "time: not strictly increasing")


def test_time_not_daily(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        keep = np.ones(dataset.sizes["time"], dtype=bool)
        keep[100] = False
        return dataset.isel(time=keep)

    raises_driver_error(write_variant(modify), "time: not daily: a step of 2 days")


def test_time_units_other_than_days(write_variant):
    """Hours (or minutes, seconds) since an origin are converted to days; day numbers
    declared as hours are then not daily, and other units are refused."""
    def in_hours(dataset: xr.Dataset) -> xr.Dataset:
        hours = dataset["time"].values * 24.0
        return dataset.assign_coords(time=("time", hours,
                                           {"units": "hours since 2001-01-01 00:00:00"}))

    read_site_driver(write_variant(in_hours))

    def mislabelled(dataset: xr.Dataset) -> xr.Dataset:
        dataset["time"].attrs["units"] = "hours since 2001-01-01 00:00:00"
        return dataset

    raises_driver_error(write_variant(mislabelled), "time: not daily")

    def weeks(dataset: xr.Dataset) -> xr.Dataset:
        dataset["time"].attrs["units"] = "weeks since 2001-01-01"
        return dataset

    raises_driver_error(write_variant(weeks), "time: units 'weeks since")


def test_fewer_than_two_steps(write_variant):
    raises_driver_error(write_variant(lambda ds: ds.isel(time=slice(0, 1))),
                        "time: only 1 time step")


@pytest.mark.parametrize(("name", "value"), [("SSRD", np.nan), ("VPD", np.inf)])
def test_non_finite_forcing(write_variant, name: str, value: float):
    path = write_variant(lambda ds: set_values(ds, name, 2000, value))
    raises_driver_error(path, f"{name}: variable {name.lower()} has 1 NaN/inf value")


def test_kelvin_temperatures_are_rejected(write_variant):
    def modify(dataset: xr.Dataset) -> xr.Dataset:
        for name in ("T2M_MIN", "T2M_MAX"):
            dataset[name] = dataset[name] + 273.15
        return dataset

    raises_driver_error(write_variant(modify), r"T2M_MIN: variable t_min spans .* plausible range")


# --- NetCDF writing -------------------------------------------------------------------------------


def test_write_dataset_round_trip_with_cf_time(tmp_path: Path):
    dates = np.array(["1999-12-31", "2001-01-01", "2001-01-02T12:00", "2010-07-15"],
                     dtype="datetime64[s]")
    values, attrs = cf_time_coordinate(dates)
    np.testing.assert_array_equal(values, [-367.0, 0.0, 1.5, 3482.0])
    assert attrs["units"] == "days since 2001-01-01 00:00:00"
    assert (attrs["calendar"], attrs["standard_name"], attrs["axis"]) == ("standard", "time", "T")
    dataset = xr.Dataset({"gpp": ("time", np.arange(4.0), {"units": "gC m-2 d-1"})},
                         coords={"time": ("time", values, attrs)})
    path = tmp_path / "new" / "folder" / "out.nc"
    write_dataset(path, dataset)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.nc"]
    with xr.open_dataset(path) as decoded:
        np.testing.assert_array_equal(decoded["time"].values, dates.astype("datetime64[ns]"))
        np.testing.assert_array_equal(decoded["gpp"].values, np.arange(4.0))
        assert decoded["gpp"].encoding["zlib"] is True
        assert decoded["gpp"].encoding["complevel"] == 4


def test_cf_time_coordinate_rejects_missing_dates():
    with pytest.raises(ValueError, match="NaT"):
        cf_time_coordinate(np.array(["2001-01-01", "NaT"], dtype="datetime64[D]"))


def test_failed_write_leaves_no_file(tmp_path: Path):
    bad = xr.Dataset({"x": ("t", np.arange(3.0))}, attrs={"nested": {"not": "allowed"}})
    path = tmp_path / "out.nc"
    with pytest.raises(TypeError):
        write_dataset(path, bad)
    assert list(tmp_path.iterdir()) == []

    good = xr.Dataset({"x": ("t", np.arange(3.0))})
    write_dataset(path, good)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_dataset(path, bad)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


# --- parameter files ------------------------------------------------------------------------------


def test_read_parameter_json(tmp_path: Path):
    path = tmp_path / "params.json"
    path.write_text('{"leaf_lifespan": 2.5, "canopy_efficiency": 20}')
    values = read_parameter_values(path)
    assert values == {"leaf_lifespan": 2.5, "canopy_efficiency": 20.0}
    assert all(type(value) is float for value in values.values())


@pytest.mark.parametrize(("text", "pattern"), [
    ('{"leaf_lifespan": 2.5', "invalid JSON"),
    ("[1.0, 2.0]", "expected a JSON object"),
    ('{"leaf_lifespan": "2.5"}', "leaf_lifespan: value '2.5' is not a finite number"),
    ('{"leaf_lifespan": true}', "leaf_lifespan: value True is not a finite number"),
    ('{"leaf_lifespan": NaN}', "invalid JSON"),
    ('{"leaf_lifespan": 1e400}', "leaf_lifespan: value inf is not a finite number"),
    ('{"leaf_lifespan": 2, "leaf_lifespan": 3}', "duplicate key"),
    ("", "empty file"),
])
def test_read_parameter_json_rejects_bad_files(tmp_path: Path, text: str, pattern: str):
    path = tmp_path / "params.json"
    path.write_text(text)
    with pytest.raises(DriverError, match=pattern):
        read_parameter_values(path)


def test_read_parameter_netcdf_golden(golden_dir: Path):
    site_path = golden_dir / "dalec990_US-Var_mid.nc"
    values = read_parameter_values(site_path)
    golden = open_raw(site_path)
    assert len(values) == 38
    assert list(values) == [name for name in SPECS if name in values]
    for name, value in values.items():
        assert value == float(golden[name].values)
    inert = [name for name in values if name not in names_for("site")]
    params = parameters_from_mapping(values, "site", ignore_unknown=inert)
    assert float(params.paw_runoff_focal_point) == values["paw_runoff_focal_point"]

    global_values = read_parameter_values(golden_dir / "dalec993_synthetic_mid.nc")
    assert len(global_values) == 40
    assert {"initial_water", "runoff_focal_point",
            "intrinsic_water_use_efficiency_unused"} <= set(global_values)
    assert "forcing_t_min" not in global_values


def test_read_parameter_netcdf_without_parameters(tmp_path: Path):
    path = tmp_path / "nothing.nc"
    write_dataset(path, xr.Dataset({"gpp": ("time", np.arange(3.0)), "unknown": 1.0}))
    with pytest.raises(DriverError, match="no parameter found"):
        read_parameter_values(path)


def test_read_parameter_values_missing_file(tmp_path: Path):
    with pytest.raises(DriverError, match="does not exist"):
        read_parameter_values(tmp_path / "params.json")


def test_write_parameter_json_round_trip(tmp_path: Path):
    params = default_parameters("site")
    path = tmp_path / "out" / "params.json"
    write_parameter_json(path, params, extra={"initial_water": 50.0, "zz_note": 1.0})
    text = path.read_text()
    registry_names = {*names_for("site"), "initial_water"}
    assert list(json.loads(text)) == [name for name in SPECS if name in registry_names] + [
        "zz_note"]
    values = read_parameter_values(path)
    for name in params:
        assert values[name] == float(params[name])
    assert sorted(p.name for p in path.parent.iterdir()) == ["params.json"]
    with pytest.raises(ParameterError, match="repeats"):
        write_parameter_json(path, params, extra={"leaf_lifespan": 2.0})


# --- example driver -------------------------------------------------------------------------------


def test_example_driver_layout():
    dataset = example_site_dataset()
    assert dataset["time"].dtype == np.int64
    assert dataset["time"].attrs["units"] == "days since 2001-01-01"
    assert dataset.sizes["time"] == 1095
    assert int(dataset["time"][0]) == 0
    np.testing.assert_array_equal(np.diff(dataset["time"].values), 1)
    for name in (*REQUIRED_VARIABLES, "PA"):
        assert "units" in dataset[name].attrs, name
    assert dataset["LAT"].ndim == 0
    assert dataset["DOY"].values.min() == 1 and dataset["DOY"].values.max() == 365
    leap = example_site_dataset(n_years=1, start_year=2004)
    assert leap.sizes["time"] == 366 and leap["DOY"].values[-1] == 366
    assert example_site_dataset().identical(dataset)
    assert abs(float(dataset["TOTAL_PREC"].mean()) - 2.0) < 0.5
    south = example_site_dataset(latitude=-30.0)
    assert float(south["T2M_MAX"][0]) > float(dataset["T2M_MAX"][0])


def test_example_driver_read_back(tmp_path: Path):
    path = write_example_site_driver(tmp_path / "EX-Mpl.nc", n_years=4, latitude=-12.5,
                                     start_year=2003)
    driver = read_site_driver(path)
    assert driver.site_id == "EX-Mpl"
    assert driver.n_steps == 1461
    assert driver.dates[0] == np.datetime64("2003-01-01")
    assert driver.time[0] == 730.0
    assert driver.latitude == -12.5
    assert driver.calibration_end == 365 + 366
    assert driver.observations == {}
    t_mean = (driver.forcing.t_min + driver.forcing.t_max)[:731].mean() / 2
    assert driver.forcing.mean_temperature[0] == pytest.approx(t_mean, abs=1e-12)


def test_example_arguments_are_checked():
    with pytest.raises(ValueError, match="n_years"):
        example_site_dataset(n_years=0)
    with pytest.raises(ValueError, match="latitude"):
        example_site_dataset(latitude=95.0)
