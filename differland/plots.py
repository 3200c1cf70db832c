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


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **options):
    """A figure and its axes (``Figure.subplots``), made without pyplot: no backend is
    switched and no figure is kept anywhere, so a caller's own plotting (in Jupyter, say) is
    left as it was."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **options)


def time_series_figure(path: Path, dates, observed: Mapping[str, np.ndarray],
                       simulated: Mapping[str, np.ndarray], split_date, title: str) -> Path:
    """Observed vs simulated series per variable, with the calibration/test split marked."""
    names = list(simulated)
    fig, axes = new_figure(len(names), 1, figsize=(11, 2.2 * len(names)), sharex=True,
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
    return path


def scatter_figure(path: Path, observed: Mapping[str, np.ndarray],
                   simulated: Mapping[str, np.ndarray], test_mask: np.ndarray,
                   scores: Mapping[str, Mapping[str, float]], title: str) -> Path:
    """Simulated against observed, test period, one panel per variable, with NSE."""
    names = [n for n in simulated if n in observed]
    fig, axes = new_figure(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
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
    return path


def _coastline(ax, lon, lat, land_fraction) -> None:
    """Coastlines drawn offline: the half-land contour of the grid's land fraction."""
    if land_fraction is not None and np.size(lon) > 1 and np.size(lat) > 1:
        ax.contour(lon, lat, np.nan_to_num(land_fraction), levels=[0.5], colors="0.2",
                   linewidths=0.6)


def parameter_map_figure(path: Path, lon, lat, predicted: np.ndarray, truth, land_fraction,
                         name: str, units: str) -> Path:
    """A parameter map (and, where known, the truth beside it), with coastlines."""
    panels = [("predicted", predicted)] + ([("truth", truth)] if truth is not None else [])
    values = np.concatenate([np.ravel(v) for _, v in panels])
    low, high = np.nanpercentile(values, [2, 98]) if np.isfinite(values).any() else (0, 1)
    fig, axes = new_figure(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (label, data) in zip(axes[0], panels, strict=True):
        image = ax.pcolormesh(lon, lat, data, vmin=low, vmax=high, shading="nearest",
                              cmap="viridis")
        _coastline(ax, lon, lat, land_fraction)
        ax.set_title(f"{name} ({label})", fontsize=9)
        ax.set_xlabel("longitude [deg]")
        ax.set_ylabel("latitude [deg]")
        ax.set_aspect("equal", adjustable="box")
        fig.colorbar(image, ax=ax, shrink=0.8, label=units)
    fig.tight_layout()
    _save(fig, path)
    return path


def regional_series_figure(path: Path, dates, regions, modelled: np.ndarray,
                           observed: np.ndarray) -> Path:
    """Regional mean NBE [gC m-2 d-1], modelled against observed, one panel per region
    (``modelled``, ``observed``: ``(R, T)``)."""
    fig, axes = new_figure(len(regions), 1, figsize=(10, 1.9 * len(regions)), sharex=True,
                             squeeze=False)
    for ax, region, model, obs in zip(axes[:, 0], regions, modelled, observed, strict=True):
        ax.plot(dates, obs, ".", ms=3, color="0.4", label="observed")
        ax.plot(dates, model, lw=1.0, color="tab:blue", label="modelled")
        ax.axhline(0.0, color="0.7", lw=0.5)
        ax.set_ylabel(f"{region}\nNBE [gC m-2 d-1]", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def tower_figure(path: Path, dates, streams, modelled: Mapping[str, np.ndarray],
                 observed: Mapping[str, np.ndarray]) -> Path:
    """Modelled against eddy-covariance fluxes at tower cells (rows: cells; columns:
    streams; arrays ``(cells, T)``)."""
    n_cells = next(iter(modelled.values())).shape[0]
    fig, axes = new_figure(n_cells, len(streams), figsize=(4.2 * len(streams),
                                                             1.9 * n_cells), sharex=True,
                             squeeze=False)
    for j, name in enumerate(streams):
        for i in range(n_cells):
            ax = axes[i, j]
            ax.plot(dates, observed[name][i], ".", ms=3, color="0.4")
            ax.plot(dates, modelled[name][i], lw=1.0, color="tab:blue")
            if i == 0:
                ax.set_title(f"{name.upper()} [{_units(name)}]", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path
