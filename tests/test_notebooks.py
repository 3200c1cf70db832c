"""The notebooks (jupytext percent-format scripts) run top to bottom in their smoke mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))


def test_notebooks_are_found():
    assert [path.name for path in NOTEBOOKS] == ["01_quickstart.py", "02_sensitivity.py",
                                                 "03_uncertainty.py", "04_spatial.py"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_smoke_mode(notebook: Path, tmp_path: Path, fluxsites_dir: Path):
    """A fresh interpreter, warnings as errors, the working directory a temporary folder
    (the notebooks write only there)."""
    environment = {**os.environ, "DIFFERLAND_SMOKE": "1", "MPLBACKEND": "Agg",
                   "DIFFERLAND_SHARED": str(fluxsites_dir.parents[1]), "PYTHONWARNINGS": "error"}
    result = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{notebook.name} failed:\n{result.stdout}\n{result.stderr}"
    assert "run time:" in result.stdout
    assert list(tmp_path.rglob("*.png")), f"{notebook.name} wrote no figure"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_a_jupytext_notebook(notebook: Path):
    """Each file opens as a notebook of markdown and code cells."""
    jupytext = pytest.importorskip("jupytext")
    cells = jupytext.read(notebook).cells
    kinds = {cell.cell_type for cell in cells}
    assert kinds == {"markdown", "code"}
    assert cells[0].cell_type == "markdown"
