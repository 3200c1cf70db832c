"""Grid drivers: lazy reading by pixel batches, units, regions, maps, and one-line errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from differland.io import DriverError, GridDriver, read_grid_driver

dask_array = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"
N_MONTHS = 24
LAT = np.array([44.5, 45.5, 46.5, 47.5])
LON = np.array([10.5, 11.5, 12.5, 13.5, 14.5])
MASKED = ((0, 0), (2, 3))
"""(row, col) of the cells that are not simulated."""
TIME_ENCODING = {"units": "days since 2001-01-01 00:00:00", "calendar": "standard",
                 "dtype": "int64"}
CHUNKS = {"time": 12, "lat": 2, "lon": 3}


def simulated_cells() -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the simulated cells, row-major."""
    mask = np.ones((LAT.size, LON.size), dtype=bool)
    for row, col in MASKED:
        mask[row, col] = False
    return np.nonzero(mask)


def grid_dataset() -> xr.Dataset:
    """A 24-month driver on a 4 x 5 grid with every optional variable (values in float64)."""
    t = np.arange(N_MONTHS)[:, None, None]
    i = np.arange(LAT.size)[None, :, None]
    j = np.arange(LON.size)[None, None, :]
    season = np.sin(2 * np.pi * (t + 0.5) / 12)
    shape = (N_MONTHS, LAT.size, LON.size)
    t_min = np.broadcast_to(2.0 + 10.0 * season - i + 0.5 * j, shape)
    series = {
        "t_min": (t_min + 273.15, "K"),
        "t_max": (t_min + 8.0 + 0.1 * j, "degC"),
        "ssrd": (np.broadcast_to(15.0 + 8.0 * season + 0.2 * j, shape), "MJ m-2 d-1"),
        "vpd": (np.broadcast_to(6.0 + 3.0 * season + 0.1 * i, shape), "hPa"),
        "precipitation": (np.broadcast_to(2.0 + 0.1 * i + 0.05 * t, shape), "mm d-1"),
        "burned_area": (np.broadcast_to(0.001 * (1 + j) + 0.0 * t, shape), "1"),
    }
    mask = np.ones((LAT.size, LON.size), dtype=np.int8)
    for row, col in MASKED:
        mask[row, col] = 0
    land = mask.astype(bool)
    data = {name: (("time", "lat", "lon"), np.where(land, values, np.nan),
                   {"units": units, "role": "forcing"})
            for name, (values, units) in series.items()}
    data["co2"] = ("time", 370.0 + 0.2 * np.arange(N_MONTHS), {"units": "ppm",
                                                                "role": "forcing"})
    lai = np.where(land, np.broadcast_to(2.0 + season + 0.1 * j, shape), np.nan)
    lai[3, 1, 1] = lai[7, :, 2] = np.nan  # gaps
    data["lai"] = (("time", "lat", "lon"), lai, {"units": "m2 m-2", "role": "target"})
    data["lai_unc"] = (("time", "lat", "lon"), 0.1 * np.ones(shape), {"units": "m2 m-2"})
    data["et"] = (("time", "lat", "lon"), np.where(land, 2e-5 + 0.0 * t, np.nan),
                  {"units": "kg m-2 s-1", "role": "target"})
    area = 1e10 * np.cos(np.deg2rad(LAT))[:, None] * np.ones(LON.size)
    data["cell_area"] = (("lat", "lon"), area, {"units": "m2"})
    data["mask"] = (("lat", "lon"), mask, {"units": "1"})
    north = np.broadcast_to((LAT > 46.0)[:, None], land.shape).astype(np.float64)
    south = 1.0 - north
    south[1, :] = 0.5
    data["region_mask"] = (("region", "lat", "lon"), np.stack([north, south]), {"units": "1"})
    nbe = np.stack([np.linspace(-1.0, 1.0, N_MONTHS), np.linspace(0.5, -0.5, N_MONTHS)], 1)
    nbe[4, 1] = np.nan
    data["nbe_region"] = (("time", "region"), nbe, {"units": "gC m-2 d-1", "role": "target"})
    data["nbe_region_unc"] = (("time", "region"), np.full(nbe.shape, 0.2),
                              {"units": "gC m-2 d-1"})
    data["clay"] = (("lat", "lon"), 20.0 + np.add.outer(LAT, LON), {"units": "%",
                                                                    "role": "predictor"})
    igbp = (np.add.outer(np.arange(LAT.size), np.arange(LON.size)) % 3 + 1).astype(np.float64)
    data["igbp"] = (("lat", "lon"), igbp, {"role": "predictor", "flag_values": [1, 2, 3],
                                           "flag_meanings": "ENF EBF DNF"})
    data["true_lai"] = (("time", "lat", "lon"), np.nan_to_num(lai, nan=1.0), {"role": "truth"})
    data["true_vcmax"] = (("lat", "lon"), 40.0 + igbp, {"role": "truth", "units": "umol m-2 s-1"})
    months = pd.date_range("2001-01-01", periods=N_MONTHS, freq="MS")
    bounds = np.stack([months.values, (months + pd.offsets.MonthBegin(1)).values], axis=1)
    dataset = xr.Dataset(data, coords={
        "time": ("time", months.values, {"bounds": "time_bnds", "standard_name": "time"}),
        "time_bnds": (("time", "nv"), bounds),
        "lat": ("lat", LAT, {"units": "degrees_north"}),
        "lon": ("lon", LON, {"units": "degrees_east"}),
        "region": ("region", np.array(["north", "south"]))},
        attrs={"title": "differland grid driver", "crs": "EPSG:4326"})
    return dataset


def write_driver(dataset: xr.Dataset, path: Path) -> Path:
    """Write as data_recipes/grid.py does: float32 data, chunked, int64 days since 2001."""
    dataset = dataset.copy()
    for name, variable in dataset.data_vars.items():
        if variable.dtype == np.float64 and name != "cell_area":
            dataset[name] = variable.astype(np.float32)
    dataset = dataset.chunk({dim: size for dim, size in CHUNKS.items() if dim in dataset.dims})
    netcdf = path.suffix != ".zarr"
    encoding = {}
    for name, variable in dataset.variables.items():
        if name in ("time", "time_bnds") and np.issubdtype(variable.dtype, np.datetime64):
            encoding[name] = dict(TIME_ENCODING)
        elif variable.chunks is not None:
            chunks = tuple(max(sizes) for sizes in variable.chunks)
            encoding[name] = ({"zlib": True, "complevel": 4, "chunksizes": chunks} if netcdf
                              else {"chunks": chunks})
    if netcdf:
        dataset.to_netcdf(path, engine="netcdf4", encoding=encoding)
    else:
        dataset.to_zarr(path, mode="w", encoding=encoding, consolidated=True, zarr_format=2)
    return path


@pytest.fixture(scope="module")
def source() -> xr.Dataset:
    return grid_dataset()


@pytest.fixture(scope="module", params=["grid.zarr", "grid.nc"])
def driver(request, tmp_path_factory, source: xr.Dataset) -> GridDriver:
    path = write_driver(source, tmp_path_factory.mktemp("grid") / request.param)
    with read_grid_driver(path) as opened:
        yield opened


def stored(values: np.ndarray) -> np.ndarray:
    """Values as read back from a float32 store."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def test_metadata_clock_and_pixels(driver: GridDriver, source: xr.Dataset):
    rows, cols = simulated_cells()
    assert driver.n_pixels == 18 and driver.n_steps == N_MONTHS
    np.testing.assert_array_equal(driver.rows, rows)
    np.testing.assert_array_equal(driver.cols, cols)
    np.testing.assert_array_equal(driver.lat, LAT)
    np.testing.assert_array_equal(driver.dates[:3], np.array(
        ["2001-01-01", "2001-02-01", "2001-03-01"], dtype="datetime64[D]"))
    assert driver.dates.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(driver.delta_t[:3], [31.0, 28.0, 31.0])
    np.testing.assert_array_equal(driver.time[:3], [15.5, 45.0, 74.5])
    np.testing.assert_array_equal(driver.doy[[0, 1, 11, 12]], [16.5, 46.0, 350.5, 16.5])
    assert driver.time[12] == 365.0 + 15.5
    assert driver.observations == ("lai", "et")
    assert driver.regional == ("nbe",)
    assert driver.regions == ("north", "south")
    assert driver.predictors == ("clay",)
    assert driver.categorical == ("igbp",)
    assert driver.truth == ("lai", "vcmax")
    assert driver.attrs["title"] == "differland grid driver"
    np.testing.assert_allclose(driver.cell_area, source.cell_area.values[rows, cols])
    np.testing.assert_array_equal(driver.dataset.time.values,
                                  source.time.values.astype("datetime64[ns]"))


def test_the_dataset_stays_lazy(driver: GridDriver):
    for name, variable in driver.dataset.data_vars.items():
        assert isinstance(variable.data, dask_array.Array), name


def test_forcing_of_selected_pixels(driver: GridDriver, source: xr.Dataset):
    rows, cols = simulated_cells()
    pixels = np.array([5, 0, 17, 9])
    forcing = driver.forcing(pixels)
    shape = (pixels.size, N_MONTHS)
    at = (slice(None), rows[pixels], cols[pixels])

    def expected(name: str) -> np.ndarray:
        return stored(source[name].values[at]).T

    # t_min is stored in kelvin: converted after reading
    np.testing.assert_allclose(forcing.t_min, stored(source.t_min.values[at]).T - 273.15,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(forcing.t_min, source.t_min.values[at].T - 273.15, atol=3e-5)
    for name in ("t_max", "ssrd", "vpd", "precipitation", "burned_area"):
        np.testing.assert_array_equal(getattr(forcing, name), expected(name), err_msg=name)
    np.testing.assert_array_equal(forcing.co2, np.broadcast_to(stored(source.co2.values),
                                                               shape))
    np.testing.assert_array_equal(forcing.latitude, np.broadcast_to(LAT[rows[pixels], None],
                                                                    shape))
    np.testing.assert_array_equal(forcing.time, np.broadcast_to(driver.time, shape))
    np.testing.assert_array_equal(forcing.doy, np.broadcast_to(driver.doy, shape))
    np.testing.assert_array_equal(forcing.delta_t, np.broadcast_to(driver.delta_t, shape))
    days = driver.delta_t / driver.delta_t.sum()
    mean_temperature = (forcing.t_min + forcing.t_max) / 2 @ days
    np.testing.assert_allclose(forcing.mean_temperature[:, 0], mean_temperature, rtol=1e-12)
    np.testing.assert_allclose(forcing.mean_precipitation[:, 3],
                               forcing.precipitation @ days, rtol=1e-12)
    for name in ("t_min", "ssrd", "mean_temperature"):
        assert getattr(forcing, name).shape == shape and getattr(forcing, name).dtype == \
            np.float64
    driver.check_forcing(batch_size=7)


def test_observations_regions_statics_and_truth(driver: GridDriver, source: xr.Dataset):
    rows, cols = simulated_cells()
    pixels = np.array([5, 1, 16])  # cells (1, 1), (0, 2), (3, 3)
    at = (slice(None), rows[pixels], cols[pixels])
    lai = driver.observation("lai", pixels)
    raw = stored(source.lai.values[at]).T
    np.testing.assert_array_equal(lai.mask, np.isfinite(raw))
    assert not lai.mask[0, 3] and not lai.mask[1, 7]  # the gaps
    np.testing.assert_array_equal(lai.values, np.nan_to_num(raw, nan=0.0))
    np.testing.assert_array_equal(lai.sigma, np.full(raw.shape, stored(0.1)))
    assert lai.sigma_mask.all() and lai.units == "m2 m-2" and lai.n_observed == raw.size - 2
    et = driver.observation("et", pixels)  # kg m-2 s-1 -> mm d-1
    np.testing.assert_allclose(et.values, stored(2e-5) * 86400.0, rtol=1e-12)
    assert et.units == "mm d-1" and et.sigma is None and et.mask.all()

    nbe = driver.regional_observation("nbe")
    expected = stored(source.nbe_region.values)
    assert nbe.values.shape == (N_MONTHS, 2) and nbe.units == "gC m-2 d-1"
    np.testing.assert_array_equal(nbe.mask, np.isfinite(expected))
    np.testing.assert_array_equal(nbe.values, np.nan_to_num(expected, nan=0.0))
    np.testing.assert_array_equal(nbe.sigma, np.full((N_MONTHS, 2), stored(0.2)))

    weights = driver.region_weights(pixels)
    region_mask = source.region_mask.values[:, rows[pixels], cols[pixels]]
    np.testing.assert_allclose(weights, region_mask * source.cell_area.values[
        rows[pixels], cols[pixels]], rtol=1e-7)
    assert weights.shape == (2, 3) and weights[1, 0] == pytest.approx(
        0.5 * source.cell_area.values[1, 1], rel=1e-7)

    np.testing.assert_array_equal(driver.static("clay", pixels),
                                  stored(source.clay.values[rows[pixels], cols[pixels]]))
    np.testing.assert_array_equal(driver.static("igbp"), source.igbp.values)
    assert driver.static("mask").shape == (LAT.size, LON.size)
    np.testing.assert_array_equal(driver.true("vcmax", pixels),
                                  stored(source.true_vcmax.values[rows[pixels], cols[pixels]]))
    np.testing.assert_array_equal(driver.true("lai", pixels),
                                  stored(source.true_lai.values[at]).T)
    with pytest.raises(KeyError, match="gpp"):
        driver.observation("gpp", pixels)
    with pytest.raises(IndexError):
        driver.forcing([0, 18])


def test_to_map_inverts_the_pixel_selection(driver: GridDriver, source: xr.Dataset):
    rows, cols = simulated_cells()
    pixels = np.arange(driver.n_pixels)
    values = np.arange(driver.n_pixels, dtype=np.float64) + 0.5
    mapped = driver.to_map(values, name="index", attrs={"units": "1"})
    assert mapped.dims == ("lat", "lon") and mapped.name == "index"
    np.testing.assert_array_equal(mapped.values[rows, cols], values)
    for row, col in MASKED:
        assert np.isnan(mapped.values[row, col])
    np.testing.assert_array_equal(mapped.lat.values, LAT)
    series = driver.to_map(driver.forcing(pixels).t_max, name="t_max")
    assert series.dims == ("time", "lat", "lon")
    np.testing.assert_array_equal(series.values, stored(source.t_max.values))
    np.testing.assert_array_equal(series.time.values, source.time.values)
    # pixel values -> map -> the same pixels again
    np.testing.assert_array_equal(mapped.values[driver.rows, driver.cols], values)
    with pytest.raises(ValueError, match="shape"):
        driver.to_map(values[:-1])


def test_a_grid_driver_written_by_the_recipe_is_read(tmp_path: Path):
    pytest.importorskip("xarray_regrid")
    pytest.importorskip("rioxarray")
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    name = "differland_recipe_grid"
    grid = sys.modules.get(name)
    if grid is None:
        spec = importlib.util.spec_from_file_location(name, RECIPES / "grid.py")
        grid = importlib.util.module_from_spec(spec)
        sys.modules[name] = grid
        spec.loader.exec_module(grid)
    lat = np.arange(45.25, 47.0, 0.5)
    lon = np.arange(10.25, 12.0, 0.5)
    months = pd.date_range("2001-01-01", periods=14, freq="MS") + pd.Timedelta(days=14)
    shape = (months.size, lat.size, lon.size)
    rng = np.random.default_rng(3)
    inputs = {"t_min": (275.0 + rng.random(shape), "K"),
              "t_max": (12.0 + rng.random(shape), "degC"),
              "ssrd": (150.0 + 10.0 * rng.random(shape), "W m-2"),
              "vpd": (5.0 + rng.random(shape), "hPa"),
              "precipitation": (3e-5 * rng.random(shape), "kg m-2 s-1"),
              "burned_area": (np.full(shape, 0.002), "1"),
              "co2": (np.full(shape, 380.0), "ppm")}
    forcing = tmp_path / "forcing.nc"
    xr.Dataset({key: (("time", "lat", "lon"), values, {"units": units})
                for key, (values, units) in inputs.items()},
               coords={"time": months, "lat": ("lat", lat, {"units": "degrees_north"}),
                       "lon": ("lon", lon, {"units": "degrees_east"})}).to_netcdf(forcing)
    out = tmp_path / "grid.zarr"
    assert grid.main(["--forcing", str(forcing), "--grid", "1.0", "--out", str(out)]) == 0
    with read_grid_driver(out) as driver, xr.open_zarr(out) as written:
        assert driver.n_pixels == 4 and driver.n_steps == 14
        np.testing.assert_array_equal(driver.delta_t[:2], [31.0, 28.0])
        forcing_read = driver.forcing(np.arange(4))
        np.testing.assert_array_equal(
            forcing_read.ssrd, written.ssrd.values.reshape(14, 4).T.astype(np.float64))
        np.testing.assert_allclose(forcing_read.t_min.mean(), 275.5 - 273.15, atol=0.1)
        driver.check_forcing()


# --- bad inputs ---------------------------------------------------------------------------------


def _drop(*names):
    return lambda ds: ds.drop_vars(list(names))


def _set(name, **attrs):
    def modify(ds):
        ds[name].attrs.update(attrs)
        return ds
    return modify


def _unset(name, attr):
    def modify(ds):
        del ds[name].attrs[attr]
        return ds
    return modify


def _times(days, calendar="standard"):
    def modify(ds):
        ds = ds.drop_vars("time_bnds")
        return ds.assign_coords(time=("time", np.asarray(days, dtype=np.int64), {
            "units": "days since 2001-01-01", "calendar": calendar}))
    return modify


def _replace(name, function):
    def modify(ds):
        ds[name] = function(ds[name])
        return ds
    return modify


def _mask_cell(value):
    def modify(ds):
        ds["mask"] = ds["mask"].copy(data=ds["mask"].values.astype(np.float32))
        ds["mask"][1, 1] = value
        return ds
    return modify


def _month_starts(n: int) -> np.ndarray:
    """Days since 2001-01-01 of the first ``n`` month starts."""
    return (pd.date_range("2001-01-01", periods=n, freq="MS") - pd.Timestamp("2001-01-01")
            ).days.to_numpy()


_MONTH_STARTS = _month_starts(N_MONTHS)

BAD_INPUTS = {
    "missing forcing": (_drop("vpd", "burned_area"), "vpd, burned_area",
                        "required variable(s) missing"),
    "missing mask": (_drop("mask"), "mask", "missing"),
    "missing cell area": (_drop("cell_area"), "cell_area", "missing"),
    "forcing without lat/lon": (_replace("ssrd", lambda v: v.isel(lat=0, lon=0, drop=True)),
                                "ssrd", "wrong dimensions"),
    "transposed forcing": (_replace("t_max", lambda v: v.transpose("lat", "time", "lon")),
                           "t_max", "expected (time, lat, lon)"),
    "missing units": (_unset("precipitation", "units"), "precipitation", "no units"),
    "unknown units": (_set("ssrd", units="bananas d-1"), "ssrd", "not known"),
    "unconvertible units": (_set("vpd", units="kg"), "vpd", "cannot be converted"),
    "unconvertible target units": (_set("lai", units="kg"), "lai", "cannot be converted"),
    "daily time": (_times(np.arange(N_MONTHS)), "time", "not consecutive months"),
    "missing month": (_times(np.delete(_month_starts(N_MONTHS + 1), 5)), "time",
                      "not consecutive months"),
    "decreasing time": (_times(_MONTH_STARTS[::-1]), "time", "not strictly increasing"),
    "noleap calendar": (_times(_MONTH_STARTS, calendar="noleap"), "time", "calendar"),
    "bad time bounds": (_replace("time_bnds", lambda v: v.copy(data=np.roll(v.values, 1, 0))),
                        "time_bnds", "does not contain"),
    "decreasing lat": (lambda ds: ds.isel(lat=slice(None, None, -1)), "lat",
                       "not strictly increasing"),
    "irregular lon": (lambda ds: ds.assign_coords(lon=[10.5, 11.5, 12.5, 13.5, 15.0]), "lon",
                      "not regular"),
    "no simulated cell": (_replace("mask", lambda v: v * 0), "mask", "no simulated cell"),
    "mask not 0/1": (_mask_cell(0.5), "mask", "other than 0 or 1"),
    "mask with NaN": (_mask_cell(np.nan), "mask", "other than 0 or 1"),
    "region mask above 1": (_replace("region_mask", lambda v: v * 2), "region_mask", "[0, 1]"),
    "no region names": (_drop("region"), "region_mask", "no region coordinate"),
    "uncertainty dims": (_replace("lai_unc", lambda v: v.isel(time=0, drop=True)), "lai_unc",
                         "differ from those of lai"),
    "regional target dims": (_replace("nbe_region", lambda v: v.transpose()), "nbe_region",
                             "wrong dimensions"),
    "predictor dims": (_replace("clay", lambda v: v.transpose()), "clay", "wrong dimensions"),
}


def assert_one_line(error: DriverError, path: Path, variable: str | None, problem: str):
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    if variable is not None:
        assert message.startswith(f"{path}: {variable}: "), message
    assert problem in message, message


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error(case: str, source: xr.Dataset, tmp_path: Path):
    modify, variable, problem = BAD_INPUTS[case]
    suffix = ".zarr" if case in ("missing mask", "irregular lon", "uncertainty dims") else ".nc"
    path = write_driver(modify(source.copy(deep=True)), tmp_path / f"grid{suffix}")
    with pytest.raises(DriverError) as caught:
        read_grid_driver(path)
    assert_one_line(caught.value, path, variable, problem)


def test_missing_or_foreign_files_are_refused(tmp_path: Path):
    missing = tmp_path / "absent.zarr"
    with pytest.raises(DriverError) as caught:
        read_grid_driver(missing)
    assert_one_line(caught.value, missing, None, "does not exist")
    text = tmp_path / "grid.nc"
    text.write_text("time,t_min\n")
    with pytest.raises(DriverError) as caught:
        read_grid_driver(text)
    assert_one_line(caught.value, text, None, "neither a NetCDF file")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DriverError) as caught:
        read_grid_driver(folder)
    assert_one_line(caught.value, folder, None, "not a readable Zarr store")


def test_forcing_gaps_in_simulated_cells_are_found_when_read(source: xr.Dataset,
                                                             tmp_path: Path):
    dataset = source.copy(deep=True)
    dataset["t_min"][6, 1, 2] = np.nan  # pixel 6 (row 1, col 2), July 2001
    dataset["vpd"][:, 3, 4] = 150.0  # implausible, in the last pixel
    path = write_driver(dataset, tmp_path / "grid.zarr")
    driver = read_grid_driver(path)  # metadata only: nothing is wrong yet
    driver.forcing(np.arange(6))
    with pytest.raises(DriverError) as caught:
        driver.forcing(np.array([0, 6]))
    assert_one_line(caught.value, path, "t_min", "NaN/inf")
    assert "lat 45.5, lon 12.5" in str(caught.value) and "2001-07" in str(caught.value)
    with pytest.raises(DriverError) as caught:
        driver.forcing(np.array([17]))
    assert_one_line(caught.value, path, "vpd", "lat 47.5, lon 14.5")
    with pytest.raises(DriverError) as caught:
        driver.check_forcing(batch_size=4)
    assert_one_line(caught.value, path, "t_min", "lat 45.5, lon 12.5")
    driver.close()
