# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: simulate a flux site and compare with its observations
#
# differland is a differentiable DALEC land-surface model written in JAX: daily carbon pools
# (labile, foliage, roots, wood, litter, soil organic matter) and soil water, driven by the
# weather, with every output differentiable with respect to every parameter.
#
# In this notebook we
#
# 1. read the driver of a real eddy-covariance site, DE-Hai (Hainich, a deciduous broadleaf
#    forest in central Germany, 2001–2009): its daily weather and its observations;
# 2. simulate it with the default parameters;
# 3. simulate it again with the parameters of a site calibration (in the full mode only; see
#    below);
# 4. plot simulated GPP, NEE, ET and LAI against the observations;
# 5. score the simulations with the Nash–Sutcliffe efficiency (NSE) and the root-mean-square
#    error (RMSE).
#
# **Modes.** With the environment variable `DIFFERLAND_SMOKE=1` (a quick check, as the tests
# run it) the notebook uses the default parameters only. Without it, it also calibrates the
# model at the site (a few minutes on 2 CPU cores; the run directory `runs/DE-Hai` in the
# working directory is reused the next time). Files are written under the working directory
# only.
#
# It is kept as a plain-text jupytext notebook: run it as a script
# (`python notebooks/01_quickstart.py`) or open it in Jupyter with jupytext.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import differland
from differland import ModelConfig, default_parameters, simulate
from differland.calibrate.site import SiteCalibrationConfig
from differland.forcing import FORCING_VARIABLES
from differland.io import read_parameter_values, read_site_driver
from differland.metrics import skill
from differland.observations import OPERATORS, predict
from differland.params import SPECS, parameters_from_mapping
from differland.workflows import COMPLETION_RECORD, calibrate_site

STARTED = time.perf_counter()
SMOKE = os.environ.get("DIFFERLAND_SMOKE") == "1"
SHARED = Path(os.environ.get("DIFFERLAND_SHARED",
                             Path(differland.__file__).resolve().parents[2] / "shared"))
SITE = "DE-Hai"
DRIVER = SHARED / "data" / "fluxsites" / f"{SITE}.nc"
RUN = Path.cwd() / "runs" / SITE  # where a calibration of the site is written
FIGURES = Path.cwd() / "quickstart_figures"
FIGURES.mkdir(exist_ok=True)
STREAMS = ("gpp", "nee", "et", "lai")
print(f"{'smoke' if SMOKE else 'full'} mode; driver {DRIVER}")

# %% [markdown]
# ## 1. The site driver
#
# A driver is one NetCDF file per site (the CARDAMOM layout of the published DifferLand
# code). `read_site_driver` checks it, converts declared units to the model's and returns a
# `SiteDriver`:
#
# * `forcing`: the daily weather the model runs on (a `Forcing`: temperature in degC,
#   radiation in MJ m-2 d-1, CO2 in ppm, VPD in hPa, precipitation in mm d-1, ...);
# * `observations`: what the tower and satellites saw (GPP, RECO and NEE in gC m-2 d-1,
#   ET in mm d-1, LAI in m2 m-2), each with a mask of the observed days;
# * `calibration_end`: the first day of the held-out test period (from `sites.csv`: the
#   first 5 years calibrate, the last 4 test).

# %%
driver = read_site_driver(DRIVER)
forcing = driver.forcing
split = driver.calibration_end
print(f"{driver.site_id}: {driver.n_steps} days, {driver.dates[0]} to {driver.dates[-1]}, "
      f"latitude {driver.latitude:.2f}; test period from {driver.dates[split]}")
print("\nforcing (record means):")
for name in ("t_min", "t_max", "ssrd", "co2", "vpd", "precipitation"):
    spec = FORCING_VARIABLES[name]
    print(f"  {name:14s} {np.mean(getattr(forcing, name)):8.2f} {spec.units:11s} "
          f"{spec.description}")
print("\nobservations (days observed):")
for name, observation in driver.observations.items():
    print(f"  {name:5s} {observation.n_observed:5d} days [{observation.units}]")

# %% [markdown]
# ## 2. The model and its default parameters
#
# A `ModelConfig` fixes the model's processes; `ModelConfig()` is the daily site model with
# the published DALEC processes: ACM photosynthesis, no soil-water stress on it, calendar
# phenology (leaf onset and fall as annual pulses on calibrated dates) and ET from the
# underlying water-use efficiency. `config.parameter_names()` lists exactly the parameters
# it reads. Every parameter is declared once in the registry `differland.params.SPECS`, with
# its units, prior bounds and meaning; `default_parameters` takes the centre of each box.

# %%
config = ModelConfig()
defaults = default_parameters(config.variant)
names = config.parameter_names()
print(f"{len(names)} parameters; a few of them:")
for name in ("canopy_efficiency", "autotrophic_respiration_fraction",
             "leaf_carbon_mass_per_area", "leaf_fall_day", "initial_foliar_carbon"):
    spec = SPECS[name]
    print(f"  {name:34s} {float(defaults[name]):9.4g} {spec.units:11s} "
          f"[{spec.lower:g}, {spec.upper:g}]  {spec.description[:60]}")

# %% [markdown]
# ## 3. Simulate with the default parameters
#
# `simulate(params, forcing, config)` runs the model over the whole record (a jitted
# `lax.scan`: the first call compiles, later calls take milliseconds). It returns a
# `Trajectory`: the end-of-step pools (`states`) and the daily fluxes (`outputs`).
# `predict(name, ...)` turns it into what an instrument sees, in the observation's units:
# GPP and NEE in gC m-2 d-1 (NEE positive when the site releases carbon), ET in mm d-1, LAI
# in m2 m-2.


# %%
def simulated_streams(params):
    """Daily GPP, NEE, ET and LAI of a simulation with ``params`` (numpy arrays)."""
    trajectory = simulate(params, forcing, config)
    return {name: np.asarray(predict(name, trajectory, params, forcing)) for name in STREAMS}


began = time.perf_counter()
runs = {"default": simulated_streams(defaults)}
print(f"simulated {driver.n_steps} days in {time.perf_counter() - began:.1f} s "
      "(compilation included)")
for name, values in runs["default"].items():
    print(f"  {name:4s} mean {values.mean():7.2f} {OPERATORS[name].units}")

# %% [markdown]
# ## 4. Parameters of a site calibration
#
# The defaults know nothing about Hainich. `differland.workflows.calibrate_site` fits the
# parameters to the site's GPP, RECO, ET and LAI over the calibration years by gradient
# descent from several random starts, and writes a run directory: `params.json` holds the
# calibrated physical values. Here we calibrate the same model configuration we simulate
# (`SiteCalibrationConfig.from_dict(config.option_texts())`), with the default optimiser
# settings (32 random starts; about 4 minutes on 2 busy CPU cores); the default calibration
# of the command line (`differland calibrate site`, `docs/calibration.md`) adds neural
# water-stress and ET terms and other process options. The calibration runs in the full
# mode only; a finished run in `runs/DE-Hai` is reused (an interrupted one resumes).

# %%
if not (RUN / COMPLETION_RECORD).exists() and not SMOKE:
    settings = SiteCalibrationConfig.from_dict(config.option_texts())
    began = time.perf_counter()
    calibrate_site(DRIVER, RUN, settings, progress=False)
    print(f"calibrated in {time.perf_counter() - began:.0f} s")
if (RUN / COMPLETION_RECORD).exists():
    values = read_parameter_values(RUN / "params.json")
    calibrated = parameters_from_mapping(values, config.variant, source=str(RUN))
    runs["calibrated"] = simulated_streams(calibrated)
    moved = sorted(names, key=lambda n: -abs(np.log(float(calibrated[n]) / float(defaults[n]))))
    print("parameters that moved most, by |ln(calibrated / default)|:")
    for name in moved[:6]:
        print(f"  {name:34s} {float(defaults[name]):9.4g} -> {float(calibrated[name]):9.4g} "
              f"{SPECS[name].units}")
else:
    print("smoke mode: no calibration; the default parameters only")

# %% [markdown]
# ## 5. Simulated against observed
#
# Grey dots are the observations (gaps left out), lines the simulations; the dashed line
# marks the start of the test period, which the calibration never saw.

# %%
fig, axes = plt.subplots(len(STREAMS), 1, figsize=(11, 2.3 * len(STREAMS)), sharex=True)
for ax, name in zip(axes, STREAMS, strict=True):
    observation = driver.observations[name]
    shown = np.where(observation.mask, observation.values, np.nan)
    ax.plot(driver.dates, shown, ".", ms=1.5, color="0.5", label="observed")
    for (label, streams), colour in zip(runs.items(), ("tab:orange", "tab:blue"), strict=False):
        ax.plot(driver.dates, streams[name], lw=0.8, color=colour, label=label)
    ax.axvline(driver.dates[split], color="tab:red", lw=1.0, ls="--")
    ax.set_ylabel(f"{name.upper()}\n[{OPERATORS[name].units}]")
axes[0].legend(loc="upper right", fontsize=8, markerscale=4)
axes[0].set_title(f"{driver.site_id}: calibration period | test period")
fig.tight_layout()
fig.savefig(FIGURES / f"{SITE}_time_series.png", dpi=110)

# %% [markdown]
# ## 6. Skill
#
# `differland.metrics.skill` compares simulated and observed values on the observed days:
# NSE = 1 − Σ(sim − obs)² / Σ(obs − mean obs)² is 1 for a perfect simulation and 0 for one
# no better than the observed mean; RMSE is in the variable's units. Scores over the test
# period (2006–2009):

# %%
test = np.arange(driver.n_steps) >= split
print(f"{'variable':8s} {'parameters':11s} {'NSE':>7s} {'RMSE':>7s}  units        days")
for name in STREAMS:
    observation = driver.observations[name]
    for label, streams in runs.items():
        score = skill(streams[name], observation.values, observation.mask & test)
        print(f"{name.upper():8s} {label:11s} {score['nse']:7.3f} {score['rmse']:7.3f}  "
              f"{OPERATORS[name].units:12s} {score['n']:4d}")

# %% [markdown]
# ## Next steps
#
# * `notebooks/02_sensitivity.py`: which parameters move annual GPP, NEE and ET, locally
#   (automatic differentiation) and over the whole prior box (Sobol indices).
# * `differland calibrate site --driver ... --out ...`: the default calibration (hybrid
#   neural terms), with metrics and figures; `differland options` lists the process options.
# * `jax.grad` of any scalar of `simulate(...)` gives its derivatives with respect to every
#   parameter (see the README).

# %%
print(f"run time: {time.perf_counter() - STARTED:.0f} s ({'smoke' if SMOKE else 'full'} mode)")
