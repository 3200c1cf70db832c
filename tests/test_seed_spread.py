"""calibration/seed_spread.py: the spread over seeds of multi-site medians."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("seed_spread",
                                              REPO / "calibration" / "seed_spread.py")
seed_spread = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(seed_spread)


def _sites_run(folder: Path, seed: int, medians: tuple[float, ...]) -> Path:
    """A folder as calibration/sites.py leaves it: summary.csv with a median row."""
    folder.mkdir()
    header = "site,gpp,reco,nee,et,lai,status\n"
    site = "US-Var,0.1,0.2,0.3,0.4,0.5,ok\n"
    median = "median," + ",".join(str(v) for v in medians) + ",1 of 1 sites\n"
    (folder / "summary.csv").write_text(header + site + median)
    (folder / "summary.json").write_text(json.dumps({"seed": seed}))
    return folder


def _cv_run(folder: Path, seed: int, gpp: float) -> Path:
    """A folder as `differland spatial cv` leaves it (calibration and test columns)."""
    folder.mkdir()
    columns = [f"{v}_{p}" for v in seed_spread.VARIABLES for p in ("calibration", "test")]
    values = {c: "0.9" if c.endswith("calibration") else "0.5" for c in columns}
    values["gpp_test"] = str(gpp)
    values["lai_test"] = ""
    (folder / "summary.csv").write_text("site," + ",".join(columns) + "\nmedian,"
                                        + ",".join(values[c] for c in columns) + "\n")
    model = folder / "folds" / "0" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"spatial": {"seeds": [seed]}}))
    return folder


def test_table_of_site_runs(tmp_path: Path, capsys):
    runs = [_sites_run(tmp_path / "a", 0, (0.83, 0.70, 0.54, 0.75, 0.87)),
            _sites_run(tmp_path / "b", 1, (0.82, 0.71, 0.48, 0.76, 0.86))]
    out = tmp_path / "spread.md"
    assert seed_spread.main([*map(str, runs), "--out", str(out)]) == 0
    table = out.read_text()
    assert table == capsys.readouterr().out
    assert "| a | 0 | 0.830 | 0.700 | 0.540 | 0.750 | 0.870 |" in table
    assert "| **min–max over 2 runs** | | 0.820–0.830 | 0.700–0.710 | 0.480–0.540 |" in table
    assert "| **mean** | | 0.825 | 0.705 | 0.510 | 0.755 | 0.865 |" in table


def test_table_of_cross_validations_takes_test_columns(tmp_path: Path):
    runs = [_cv_run(tmp_path / "s3", 3, 0.4), _cv_run(tmp_path / "s4", 4, 0.6)]
    table = seed_spread.spread_table(runs)
    assert "| s3 | 3 | 0.400 | 0.500 | 0.500 | 0.500 | – |" in table
    assert "0.400–0.600" in table and table.rstrip().endswith("| – |")


def test_mistakes_are_one_line_before_writing(tmp_path: Path, capsys):
    out = tmp_path / "spread.md"
    assert seed_spread.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "summary.csv: not found" in message
    assert not out.exists()
    out.write_text("mine")
    with pytest.raises(SystemExit) as stop:
        seed_spread.main([str(tmp_path), "--out", str(out)])
    assert stop.value.code == 2 and out.read_text() == "mine"
    assert "exists; pass --overwrite" in capsys.readouterr().err


TWIN_SPEC = importlib.util.spec_from_file_location("twin_worlds",
                                                   REPO / "calibration" / "twin_worlds.py")
twin_worlds = importlib.util.module_from_spec(TWIN_SPEC)
TWIN_SPEC.loader.exec_module(twin_worlds)


def _recovery(r2: float, identified: bool, nse: float, within: int) -> dict:
    """A recovery report as `differland demo` returns it (recovery.json)."""
    return {"parameters": {"leaf_fall_day": {"r2_test_cells": r2, "r2_all_cells": r2,
                                             "identified": identified}},
            "fluxes": {"gpp": {"nse_test_cells": nse, "nse_all_cells": nse}},
            "budgets_within_two_sd": within, "budgets": 5}


def test_twin_worlds_table_spreads_over_world_seeds():
    table = twin_worlds.spread_table({0: _recovery(0.9, True, 0.98, 1),
                                      3: _recovery(0.5, False, 0.90, 3),
                                      1: _recovery(0.7, True, 0.95, 2)})
    assert "seeds 0, 1, 3" in table
    assert "| leaf_fall_day | 2 of 3 | 0.50 / 0.70 / 0.90 |" in table
    assert "| gpp | 0.90 / 0.95 / 0.98 |" in table
    assert "per world: 1 of 5, 2 of 5, 3 of 5." in table


def test_twin_worlds_table_of_posteriors_adds_interval_coverage():
    reports = {}
    for seed, coverage in ((0, 0.8), (1, 0.9)):
        report = _recovery(0.9, True, 0.98, 1)
        report["parameters"]["leaf_fall_day"]["coverage_90_test_cells"] = coverage
        report["budgets_within_90"] = 4 + seed
        reports[seed] = report
    table = twin_worlds.spread_table(reports)
    assert "| leaf_fall_day | 2 of 2 | 0.90 / 0.90 / 0.90 | 0.80 / 0.85 / 0.90 |" in table
    assert "90 % interval holds the truth, per world: 4 of 5, 5 of 5." in table


def test_twin_worlds_config_needs_posterior(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        twin_worlds.main(["--seeds", "0", "--out", str(tmp_path / "w"), "--config", "x.json"])
    assert stop.value.code == 2 and "--posterior" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("seeds", ["0,x", "1,1", "-1"])
def test_twin_worlds_bad_seeds_are_one_line(seeds, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        twin_worlds.main(["--seeds", seeds, "--out", str(tmp_path / "worlds")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "worlds").exists()
