"""Skill scores of simulated against observed series (numpy; masked values are skipped).

NSE: Nash & Sutcliffe (1970); KGE: Gupta et al. (2009), 1 - sqrt((r-1)^2 + (a-1)^2 + (b-1)^2)
with a = std_sim/std_obs and b = mean_sim/mean_obs.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("nse", "kge", "r", "rmse", "bias", "n")


def _valid(simulated, observed, mask=None):
    simulated = np.asarray(simulated, np.float64)
    observed = np.asarray(observed, np.float64)
    keep = np.isfinite(simulated) & np.isfinite(observed)
    if mask is not None:
        keep &= np.asarray(mask, bool)
    return simulated[keep], observed[keep]


def skill(simulated, observed, mask=None) -> dict[str, float]:
    """NSE, KGE, Pearson r, RMSE, bias (mean sim - mean obs) and the count of compared values.

    Scores that are undefined (fewer than 2 values, constant series) are NaN.
    """
    sim, obs = _valid(simulated, observed, mask)
    n = int(sim.size)
    nan = float("nan")
    if n < 2:
        return {"nse": nan, "kge": nan, "r": nan, "rmse": nan, "bias": nan, "n": n}
    error = sim - obs
    spread = float(np.sum((obs - obs.mean()) ** 2))
    nse = 1.0 - float(np.sum(error**2)) / spread if spread > 0 else nan
    std_sim, std_obs = float(sim.std()), float(obs.std())
    r = float(np.corrcoef(sim, obs)[0, 1]) if std_sim > 0 and std_obs > 0 else nan
    if std_obs > 0 and obs.mean() != 0 and math.isfinite(r):
        alpha, beta = std_sim / std_obs, float(sim.mean() / obs.mean())
        kge = 1.0 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
    else:
        kge = nan
    return {"nse": nse, "kge": kge, "r": r, "rmse": float(np.sqrt(np.mean(error**2))),
            "bias": float(error.mean()), "n": n}
