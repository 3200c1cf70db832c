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
    (folder / "config.json").write_text(json.dumps({"seeds": [seed]}))
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
