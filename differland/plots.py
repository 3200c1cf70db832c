"""Figures of calibration runs (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from differland.io import write_atomically
from differland.observations import OPERATORS


def _units(name: str) -> str:
    operator = OPERATORS.get(name)
    return operator.units if operator is not None else "?"


def _save(fig, path: Path) -> None:
    """Save a figure as PNG atomically (never a partial file at ``path``)."""
    write_atomically(path, lambda target: fig.savefig(target, dpi=110, format="png"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def time_series_figure(path: Path, dates, observed: Mapping[str, np.ndarray],
                       simulated: Mapping[str, np.ndarray], split_date, title: str) -> Path:
    """Observed vs simulated series per variable, with the calibration/test split marked."""
    plt = _pyplot()
    names = list(simulated)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.2 * len(names)), sharex=True,
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        if name in observed:
            ax.plot(dates, observed[name], ".", ms=1.5, color="0.45", label="observed")
        ax.plot(dates, simulated[name], lw=0.8, color="tab:blue", label="simulated")
        ax.axvline(split_date, color="tab:red", lw=1.0, ls="--")
        ax.set_ylabel(f"{name.upper()}\n[{_units(name)}]")
    axes[0, 0].set_title(f"{title} (calibration | test)")
    axes[0, 0].legend(loc="upper right", fontsize=8, markerscale=4)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def scatter_figure(path: Path, observed: Mapping[str, np.ndarray],
                   simulated: Mapping[str, np.ndarray], test_mask: np.ndarray,
                   scores: Mapping[str, Mapping[str, float]], title: str) -> Path:
    """Simulated against observed, test period, one panel per variable, with NSE."""
    plt = _pyplot()
    names = [n for n in simulated if n in observed]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        obs, sim = np.asarray(observed[name]), np.asarray(simulated[name])
        keep = test_mask & np.isfinite(obs)
        ax.plot(obs[keep], sim[keep], ".", ms=2, alpha=0.5)
        if keep.any():
            low = min(obs[keep].min(), sim[keep].min())
            high = max(obs[keep].max(), sim[keep].max())
            pad = 0.03 * (high - low or 1.0)
            low, high = low - pad, high + pad
            ax.plot([low, high], [low, high], "k-", lw=0.8)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
        ax.set_aspect("equal", adjustable="box")
        nse = scores.get(name, {}).get("nse", float("nan"))
        ax.set_title(f"{name.upper()}  test NSE {nse:.2f}", fontsize=9)
        ax.set_xlabel(f"observed [{_units(name)}]")
        ax.set_ylabel(f"simulated [{_units(name)}]")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
