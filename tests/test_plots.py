"""The package's figures leave the caller's matplotlib as it was (backend, open figures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from differland.plots import time_series_figure


def test_figures_keep_the_callers_backend_and_open_no_figure(tmp_path: Path):
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend (in Jupyter: the inline one)
    try:
        open_figures = plt.get_fignums()
        dates = np.arange("2001-01-01", "2001-03-01", dtype="datetime64[D]")
        path = time_series_figure(tmp_path / "series.png", dates,
                                  {"gpp": np.ones(dates.size)}, {"gpp": np.full(dates.size, 1.1)},
                                  dates[30], "a site")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures
    finally:
        matplotlib.use(previous)
