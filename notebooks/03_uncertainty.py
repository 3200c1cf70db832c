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
# # How uncertain is a site calibration? A NUTS posterior and its test period
#
# A gradient calibration (`notebooks/01_quickstart.py`) returns one parameter set. A Bayesian
# calibration returns a distribution of parameter sets, the posterior, and with it bands
# around every simulated flux. How wide are those bands, and can we trust them?
#
# In this notebook we
#
# 1. sample the posterior of the model's parameters at DE-Hai (Hainich, a deciduous
#    broadleaf forest in Germany) with the No-U-Turn sampler (NUTS), through the function
#    behind the command `differland posterior site`, and look at the run directory it writes;
# 2. check whether the chains converged: R-hat, effective sample sizes, divergences;
# 3. draw the posterior predictive bands of GPP and NEE against the observations, in the
#    calibration period and in the held-out test period, and count the share of the test
#    observations inside the 50 % and 90 % bands (their coverage);
# 4. find the strongest posterior correlations between parameters, the ridges along which
#    the data cannot tell parameters apart;
# 5. read what the test period says about the calibration.
#
# **Modes.** With the environment variable `DIFFERLAND_SMOKE=1` (a quick check, as the tests
# run it) the notebook samples a deliberately tiny posterior: the first three calendar years
# of the record, fourteen free parameters of the canopy, the phenology, the respiration and
# the soil water (the others fixed at their registry defaults), 2 chains of 30 warmup and 30
# kept iterations, a maximum tree depth of 5 and an initialising fit of 300 steps from 4
# starts. Such a run is **not converged**: its diagnostics fail, and every number it prints
# is rough; it only shows the workflow. Without it (the full mode) the notebook samples the
# package's default posterior (every parameter free, 4 chains of 500 warmup and 500 kept
# iterations, the whole 2001–2009 record with the 2006–2009 test period of `sites.csv`).
# Plan for hours on a laptop: the run directory `runs/DE-Hai-posterior` in the working
# directory is reused once finished, and an interrupted run resumes after its warmup. Files
# are written under the working directory only (figures under `uncertainty_figures/`).
#
# It is kept as a plain-text jupytext notebook: run it as a script
# (`python notebooks/03_uncertainty.py`) or open it in Jupyter with jupytext.

# %%
import json
import os
import time
from pathlib import Path

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import NullFormatter

import differland
from differland import simulate
from differland.calibrate import bayes
from differland.calibrate.site import make_site_problem
from differland.io import read_site_driver
from differland.observations import OPERATORS, predict
from differland.params import SPECS, ParameterSet
from differland.posterior_workflows import COMPLETION_RECORD, posterior_site

STARTED = time.perf_counter()
SMOKE = os.environ.get("DIFFERLAND_SMOKE") == "1"
SHARED = Path(os.environ.get("DIFFERLAND_SHARED",
                             Path(differland.__file__).resolve().parents[2] / "shared"))
SITE = "DE-Hai"
DRIVER = SHARED / "data" / "fluxsites" / f"{SITE}.nc"
RUNS = Path.cwd() / "runs"
RUN = RUNS / (f"{SITE}-posterior-smoke" if SMOKE else f"{SITE}-posterior")
FIGURES = Path.cwd() / "uncertainty_figures"
FIGURES.mkdir(exist_ok=True)

SMOKE_YEARS = 3  # calendar years of the record sampled in the smoke mode
SMOKE_FREE = (  # canopy, phenology, respiration and soil water; the others at their defaults
    "leaf_carbon_mass_per_area", "initial_foliar_carbon", "initial_labile_carbon",
    "canopy_efficiency", "autotrophic_respiration_fraction", "foliar_allocation_fraction",
    "labile_release_day", "leaf_fall_day", "som_respiration_rate", "initial_som_carbon",
    "underlying_water_use_efficiency", "paw_runoff_focal_point", "paw_to_puw_fraction",
    "deep_water_uptake_rate")
if SMOKE:
    SETTINGS = {"free_parameters": list(SMOKE_FREE),
                "nuts": {"chains": 2, "warmup": 30, "samples": 30, "max_tree_depth": 5,
                         "init_starts": 4, "init_iterations": 300}}
else:
    SETTINGS = {}  # the package defaults: every parameter free, 4 chains, 500 + 500
NEE_DRAWS = 200  # posterior draws pushed through the model for the NEE band (at most)
print(f"{'smoke' if SMOKE else 'full'} mode; driver {DRIVER}; run directory {RUN}")

# %% [markdown]
# ## 1. The posterior run
#
# `differland posterior site --driver DE-Hai.nc --out RUN_DIR` and the Python function
# `differland.posterior_workflows.posterior_site(driver, out, config)` do the same thing
# (`docs/calibration.md`, section "Posterior (NUTS)"):
#
# * **Prior.** Every free parameter is uniform between its registry bounds on its transform
#   scale: log-uniform for the parameters whose box spans more than a decade (turnover
#   rates, initial pools), uniform for the others.
# * **Likelihood.** GPP, RECO, ET and LAI over the calibration period, each Gaussian with a
#   standard deviation sigma per stream: by default (`"uncertainty": "std"`) the standard
#   deviation of the observed stream over the calibration period. That simple noise model
#   includes the seasonal cycle, so it is much larger than the random error of a daily flux
#   measurement. NEE is *not* in the likelihood (it is evaluated, not fitted). The
#   constraints of the gradient calibration (the ecological and dynamical constraints, EDCs,
#   on parameters and pool steady state, and the water-balance terms) enter as extra
#   potential terms.
# * **Sampling.** A short multi-start gradient fit of the posterior mode starts the chains
#   and gives the initial mass matrix; NUTS then adapts its step size and a dense mass
#   matrix during the warmup and keeps the later iterations as draws.
#
# A configuration is a JSON object (here a dictionary) with the keys of the site calibration
# plus `priors`, `structural_error`, `constraint_scale` and `nuts`, read by
# `bayes.posterior_config_from_dict`. The command line takes the same object with
# `--config posterior.json`.
#
# In the smoke mode we cut the driver file to its first years and write that shorter driver
# under `runs/`; without a `sites.csv` beside it, a driver's calibration period is its first
# ceil(years / 2) calendar years, the rest its test period.


# %%
def first_years_driver(source: Path, target: Path, years: int) -> Path:
    """Write the first ``years`` calendar years of the driver ``source`` to ``target``."""
    dates = read_site_driver(source).dates
    end = (dates[0].astype("datetime64[Y]") + np.timedelta64(years, "Y")).astype("datetime64[D]")
    steps = int(np.searchsorted(dates, end))
    target.parent.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(source, decode_times=False) as dataset:
        dataset.isel(time=slice(0, steps)).load().to_netcdf(target)
    return target


if SMOKE:  # the file keeps the site's name: the site id is the file's stem
    driver_path = first_years_driver(DRIVER, RUNS / "smoke-driver" / f"{SITE}.nc", SMOKE_YEARS)
else:
    driver_path = DRIVER

if (RUN / COMPLETION_RECORD).exists():
    print(f"reusing the finished run in {RUN}")
else:
    began = time.perf_counter()
    posterior_site(driver_path, RUN, bayes.posterior_config_from_dict(SETTINGS),
                   progress=not SMOKE)
    print(f"sampled in {time.perf_counter() - began:.0f} s")

# %% [markdown]
# ## 2. The run directory
#
# The run directory holds everything we need; the rest of the notebook only reads it:
#
# * `config.json`: the posterior configuration, the driver and the versions;
# * `posterior.nc`: ArviZ `InferenceData` in one NetCDF file: group `posterior` (one variable
#   per free parameter, named as in the registry, in its units, over chain and draw),
#   `sample_stats` (divergences, tree depth, step size, ...) and `observed_data`;
# * `predictive.nc`: for each fitted stream and day of the record, the 5, 25, 50, 75 and 95 %
#   quantiles of the posterior predictive (`gpp`: what a new measurement could read, model
#   plus observation noise) and of the model alone (`gpp_model`), the observations and the
#   calibration-period flag;
# * `diagnostics.json` (written last: a run without it is unfinished) and `diagnostics.md`;
# * `figures/`: trace, rank, pair and predictive plots;
# * `nuts/`: the initial fit and the state after the warmup, from which an interrupted run
#   resumes.

# %%
for path in sorted(RUN.rglob("*")):
    if path.is_file():
        print(f"  {str(path.relative_to(RUN)):28s} {path.stat().st_size / 1024:8.1f} kB")

record = json.loads((RUN / "config.json").read_text(encoding="utf-8"))
config = bayes.posterior_config_from_dict(record["posterior"])
diagnostics = json.loads((RUN / COMPLETION_RECORD).read_text(encoding="utf-8"))
idata = az.from_netcdf(RUN / "posterior.nc")
bands = xr.load_dataset(RUN / "predictive.nc")
driver = read_site_driver(record["driver"])
free = [name for name in idata.posterior.data_vars if name in SPECS]
chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
periods = diagnostics["periods"]
print(f"\n{driver.site_id}: {len(free)} free parameters, {chains} chains x {draws} draws; "
      f"calibration {periods['calibration'][0]} to {periods['calibration'][1]}, test "
      f"{periods['test'][0]} to {periods['test'][1]}")
print(f"fitted streams: {', '.join(config.calibration.streams)}; "
      f"noise model: {config.calibration.uncertainty!r}")

# %% [markdown]
# ## 3. Did the chains converge?
#
# Before reading anything into a posterior, check the sampler:
#
# * **R-hat** (rank-normalised split R-hat) compares the spread between chains and within
#   them; near 1 the chains agree. The package asks for R-hat below 1.01 for every parameter.
# * **Effective sample size (ESS)**: how many independent draws the autocorrelated chain is
#   worth, for the centre (bulk) and the tails of each distribution. The package asks for at
#   least 100 per chain.
# * **Divergences**: transitions where the numerical integration broke down, a sign of
#   regions the sampler cannot explore (strong curvature); there should be none.
# * Transitions that hit the **maximum tree depth** are a warning that the sampler takes many
#   small steps, often along a narrow ridge (section 5).
#
# `diagnostics.json` records all of them with a verdict, `converged`, and its reasons.
# **A smoke-mode run is not converged**: with a few dozen iterations the chains cannot mix,
# its R-hat and ESS fail the criteria, and every number below is a rough illustration only.

# %%
print(f"converged: {diagnostics['converged']}")
for reason in diagnostics["reasons"]:
    print(f"  - {reason}")
for warning in diagnostics["warnings"]:
    print(f"  warning: {warning}")
stats = idata.sample_stats
print(f"\nmax R-hat {diagnostics['max_r_hat']:.3f}; min bulk ESS {diagnostics['min_ess_bulk']:.0f}"
      f", min tail ESS {diagnostics['min_ess_tail']:.0f} (of {chains * draws} draws); "
      f"divergences {int(stats['diverging'].sum())}; "
      f"share at the maximum tree depth {diagnostics['max_tree_depth_share']:.2f}")
timing = diagnostics["timing"]
print(f"sampler time {timing['warmup_seconds'] + timing['sampling_seconds']:.0f} s (warmup "
      f"with compilation {timing['warmup_seconds']:.0f} s), "
      f"{timing['min_ess_bulk_per_second']:.3g} bulk ESS per second for the worst parameter")

summary = az.summary(idata, var_names=free, kind="diagnostics")
print("\nthe parameters of largest R-hat (ArviZ's summary):")
print(summary.sort_values("r_hat", ascending=False).head(8).to_string(float_format="{:.3f}".format))

# %%
order = summary.sort_values("r_hat").index
fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(order) + 1.5), sharey=True)
axes[0].barh(order, summary.loc[order, "r_hat"] - 1.0, color="tab:blue")
axes[0].axvline(0.01, color="tab:red", lw=1.0, ls="--", label="R-hat = 1.01")
axes[0].set_xscale("log")
axes[0].set_xlabel("R-hat - 1")
axes[0].legend(fontsize=8)
axes[1].barh(order, summary.loc[order, "ess_bulk"], color="tab:blue", label="bulk")
axes[1].plot(summary.loc[order, "ess_tail"], order, "o", ms=3, color="k", label="tail")
axes[1].axvline(100 * chains, color="tab:red", lw=1.0, ls="--", label="100 per chain")
axes[1].set_xlabel("effective sample size")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.tick_params(axis="y", labelsize=7)
fig.suptitle(f"{driver.site_id}: convergence" + (" (smoke run: not converged)" if SMOKE else ""))
fig.tight_layout()
fig.savefig(FIGURES / f"{driver.site_id}_convergence.png", dpi=110)

# %% [markdown]
# ## 4. Posterior predictive bands
#
# **GPP** is fitted, so `predictive.nc` has its bands. **NEE** is not fitted: to see how the
# posterior predicts it we push posterior draws through the model ourselves (`simulate`, then
# the observation operator `predict("nee", ...)`), over the whole record. That gives the
# band of the *model* NEE, which holds the parameter uncertainty only. For a predictive band
# comparable with GPP's we add Gaussian noise with the same rule the likelihood uses for the
# fitted streams: sigma = the standard deviation of the observed NEE over the calibration
# period.

# %%
problem = make_site_problem(driver.forcing, driver.observations, driver.dates,
                            driver.calibration_end, config.calibration)
model_config = config.calibration.model_config


def nee_of(values):
    """Daily NEE [gC m-2 d-1] of one parameter draw (free parameters ``values``)."""
    params = ParameterSet({name: values[name] if name in values else problem.fixed[name]
                           for name in problem.fixed.names})
    return predict("nee", simulate(params, problem.forcing, model_config), params,
                   problem.forcing)


def model_draws(function, samples, count, batch=50):
    """``function`` over at most ``count`` posterior draws, evenly spaced over the chains,
    ``batch`` at a time (one compiled shape)."""
    flat = {name: np.ravel(values) for name, values in samples.items()}
    total = next(iter(flat.values())).size
    keep = np.unique(np.linspace(0, total - 1, min(total, count)).astype(int))
    batch = min(batch, keep.size)
    run = jax.jit(jax.vmap(function))
    parts = []
    for begin in range(0, keep.size, batch):
        chosen = keep[np.minimum(np.arange(begin, begin + batch), keep.size - 1)]
        result = run({name: values[chosen] for name, values in flat.items()})
        parts.append(np.asarray(result)[:min(batch, keep.size - begin)])
    return np.concatenate(parts)


began = time.perf_counter()
samples = {name: idata.posterior[name].values for name in free}
nee_model = model_draws(nee_of, samples, NEE_DRAWS)
nee_record = driver.observations["nee"]
calibration = np.arange(driver.n_steps) < driver.calibration_end
nee_sigma = float(np.std(nee_record.values[nee_record.mask & calibration]))
noise = np.random.default_rng(0).standard_normal(nee_model.shape)
quantiles = bands["quantile"].values
Q = {round(float(q), 2): i for i, q in enumerate(quantiles)}  # row of each quantile
nee_bands = {"model": np.quantile(nee_model, quantiles, axis=0),
             "predictive": np.quantile(nee_model + nee_sigma * noise, quantiles, axis=0)}
print(f"NEE of {nee_model.shape[0]} posterior draws over {nee_model.shape[1]} days in "
      f"{time.perf_counter() - began:.0f} s; noise sigma {nee_sigma:.2f} gC m-2 d-1")

# %%
streams = {
    "gpp": {"predictive": bands["gpp"].values, "model": bands["gpp_model"].values,
            "observed": bands["gpp_observed"].values},
    "nee": {**nee_bands, "observed": np.where(nee_record.mask, nee_record.values, np.nan)},
}
dates = driver.dates
fig, axes = plt.subplots(len(streams), 1, figsize=(11, 2.8 * len(streams)), sharex=True)
for ax, (name, band) in zip(axes, streams.items(), strict=True):
    q, m = band["predictive"], band["model"]
    ax.fill_between(dates, q[Q[0.05]], q[Q[0.95]], color="tab:blue", alpha=0.2, lw=0,
                    label="90 %")
    ax.fill_between(dates, q[Q[0.25]], q[Q[0.75]], color="tab:blue", alpha=0.4, lw=0,
                    label="50 %")
    ax.fill_between(dates, m[Q[0.05]], m[Q[0.95]], color="tab:orange", alpha=0.5, lw=0,
                    label="model 90 % (parameters only)")
    ax.plot(dates, m[Q[0.5]], color="tab:blue", lw=0.7, label="model median")
    ax.plot(dates, band["observed"], ".", ms=1.5, color="0.25", label="observed")
    ax.axvline(dates[driver.calibration_end], color="tab:red", lw=1.0, ls="--")
    fitted = "fitted" if name in config.calibration.streams else "not fitted"
    ax.set_ylabel(f"{name.upper()} ({fitted})\n[{OPERATORS[name].units}]")
axes[0].legend(loc="upper left", fontsize=7, ncol=5, markerscale=4)
axes[0].set_title(f"{driver.site_id}: posterior predictive, calibration | test period")
fig.tight_layout()
fig.savefig(FIGURES / f"{driver.site_id}_predictive.png", dpi=110)

# %% [markdown]
# ### Coverage
#
# If the posterior and its noise model were right, about 50 % of the observations would fall
# inside the central 50 % band and 90 % inside the 90 % band: that share is the band's
# **coverage**. We count it on the observed days, separately in the calibration period
# (which the likelihood saw) and in the test period (which it did not).
# `diagnostics.json` already lists it for the fitted streams; we recompute GPP's from
# `predictive.nc` as a check and add NEE. We also count the coverage of the model band alone
# (without the observation noise): how much of the spread of the data the parameter
# uncertainty explains by itself.


# %%
def coverage(observed, band, steps):
    """Share of the observed days of ``steps`` inside the 50 % and 90 % bands, and their
    number."""
    chosen = np.isfinite(observed) & steps
    inside = {label: float(np.mean((observed[chosen] >= band[low][chosen])
                                   & (observed[chosen] <= band[high][chosen])))
              if chosen.any() else np.nan
              for label, (low, high) in {"50": (Q[0.25], Q[0.75]),
                                         "90": (Q[0.05], Q[0.95])}.items()}
    return inside["50"], inside["90"], int(chosen.sum())


test = ~calibration
table = {}
for name, band in streams.items():
    for period, steps in (("calibration", calibration), ("test", test)):
        table[name, period] = {kind: coverage(band["observed"], band[kind], steps)
                               for kind in ("predictive", "model")}
print(f"{'stream':6s} {'period':12s} {'days':>5s} {'50 %':>6s} {'90 %':>6s}   "
      f"model band only: {'50 %':>6s} {'90 %':>6s}")
for (name, period), values in table.items():
    c50, c90, n = values["predictive"]
    m50, m90, _ = values["model"]
    print(f"{name.upper():6s} {period:12s} {n:5d} {c50:6.2f} {c90:6.2f}   "
          f"{'':16s} {m50:6.2f} {m90:6.2f}")

print("\nfrom diagnostics.json (posterior predictive, every fitted stream):")
for name, values in diagnostics["coverage"].items():
    print("  " + name.upper().ljust(5) + "; ".join(
        f"{period} {v['coverage_50']:.2f} / {v['coverage_90']:.2f} ({v['observed_steps']} days)"
        for period, v in values.items()))
recomputed = table["gpp", "test"]["predictive"][:2]
stored = diagnostics["coverage"]["gpp"]["test"]
print(f"GPP test coverage recomputed from predictive.nc {recomputed[0]:.3f} / "
      f"{recomputed[1]:.3f}, in diagnostics.json {stored['coverage_50']:.3f} / "
      f"{stored['coverage_90']:.3f}")

# %% [markdown]
# ## 5. Parameter correlations: ridges in the posterior
#
# A posterior is rarely a set of independent ranges. When the data constrain a combination
# of parameters (a product, a ratio) more tightly than each one, the posterior lies along a
# **ridge**: the parameters trade off, and their draws are strongly correlated. We compute
# the correlations on the transform scale of each parameter (the logarithm for log-scaled
# ones), where a constant product or ratio is a straight line, and within the chains: each
# chain's draws are centred on the chain's mean first, so that chains stuck in different
# places (an unconverged run) do not fake correlations of ±1. For a converged run, whose
# chains agree, this changes little.
#
# Next to the correlations, the **contraction** 1 − (posterior sd / prior sd)², on the same
# scale, says how much the data narrowed each parameter's prior: near 1, well constrained;
# near 0, the posterior is about as wide as the prior (below 0 it is wider than the prior's
# standard deviation, e.g. when chains sit at opposite ends of the box).


# %%
def transformed(name, values):
    """``values`` of parameter ``name`` on its transform scale."""
    scale = bayes.parameter_scale(config.calibration, name)
    values = np.asarray(values, np.float64)
    if scale == "log":
        return np.log(values)
    if scale == "log_excess":
        return np.log(values - 1.0)
    return values


scaled = {name: transformed(name, samples[name]) for name in free}  # (chain, draw)
centred = np.stack([(x - x.mean(axis=1, keepdims=True)).ravel() for x in scaled.values()])
with np.errstate(invalid="ignore", divide="ignore"):
    correlation = np.corrcoef(centred)
pairs = sorted(((free[i], free[j], correlation[i, j]) for i in range(len(free))
                for j in range(i + 1, len(free)) if np.isfinite(correlation[i, j])),
               key=lambda pair: -abs(pair[2]))
print("strongest posterior correlations (transform scale, within chains):")
for first, second, r in pairs[:6]:
    print(f"  {first:34s} {second:34s} r = {r:+.2f}")

contraction = {}
for name in free:
    prior = config.prior_of(name)
    if prior.distribution == "uniform":  # a uniform prior on the transform scale
        box = bayes.prior_box(config.calibration, name, prior)
        low, high = transformed(name, [box.lower_bound, box.upper_bound])
        contraction[name] = 1.0 - (np.std(scaled[name]) / ((high - low) / np.sqrt(12.0))) ** 2
ranked = sorted(contraction, key=contraction.get, reverse=True)
print("\nmost constrained: " + ", ".join(f"{n} {contraction[n]:.2f}" for n in ranked[:4]))
print("least constrained: " + ", ".join(f"{n} {contraction[n]:.2f}" for n in ranked[-4:]))

# %%
shown = list(dict.fromkeys(name for pair in pairs[:5] for name in pair[:2]))
index = [free.index(name) for name in shown]
fig, axes = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.25, 1]})
image = axes[0].imshow(correlation[np.ix_(index, index)], vmin=-1, vmax=1, cmap="RdBu_r")
axes[0].set_xticks(range(len(shown)), shown, rotation=60, ha="right", fontsize=7)
axes[0].set_yticks(range(len(shown)), shown, fontsize=7)
axes[0].set_title("posterior correlations (transform scale, within chains)", fontsize=9)
fig.colorbar(image, ax=axes[0], shrink=0.8)
first, second, r = pairs[0]
for chain in range(chains):
    axes[1].plot(samples[first][chain], samples[second][chain], ".", ms=3, alpha=0.6,
                 label=f"chain {chain}")
for axis, name in (("x", first), ("y", second)):
    if bayes.parameter_scale(config.calibration, name) == "log":
        getattr(axes[1], f"set_{axis}scale")("log")
        getattr(axes[1], f"{axis}axis").set_minor_formatter(NullFormatter())
axes[1].set_xlabel(f"{first} [{SPECS[first].units}]", fontsize=8)
axes[1].set_ylabel(f"{second} [{SPECS[second].units}]", fontsize=8)
axes[1].set_title(f"the strongest pair: within-chain r = {r:+.2f}", fontsize=9)
axes[1].legend(fontsize=7, markerscale=3)
fig.suptitle(f"{driver.site_id}: parameter correlations")
fig.tight_layout()
fig.savefig(FIGURES / f"{driver.site_id}_correlations.png", dpi=110)

# %% [markdown]
# **What a ridge means.** Two examples from the model's structure:
#
# * *Leaf carbon mass per area and initial foliar carbon.* The model's LAI is foliar carbon
#   divided by the leaf carbon mass per area. A larger initial canopy with heavier leaves
#   gives the same early LAI as a smaller canopy with lighter leaves, so the LAI and GPP of
#   the first months constrain their ratio, not each of them: the ridge is a line of
#   constant ratio, and a positive correlation of their logarithms is its signature. Later
#   in the record the foliar pool has forgotten its initial value, so this ridge is
#   carried by the first months only.
# * *Soil organic matter respiration rate and initial soil carbon.* Heterotrophic
#   respiration from soil organic matter is, to first order, their product, so RECO
#   constrains the product: the ridge is a line of constant product, and its signature a
#   negative correlation of their logarithms.
#
# Along a ridge the data pin down the combination better than either parameter: the spread
# along the ridge is what they leave open. The marginal ranges of the two should then not
# be read one by one (a value near one end of one range goes with a value near one end of
# the other). Ridges also make the sampler's work hard (long trajectories, hits of the
# maximum tree depth). The cell below reports what this run found for these two pairs;
# whether a ridge shows up depends on what else is free and on how much of the record
# informs each pool.

# %%
for first, second in (("leaf_carbon_mass_per_area", "initial_foliar_carbon"),
                      ("som_respiration_rate", "initial_som_carbon")):
    if first in free and second in free:
        r = correlation[free.index(first), free.index(second)]
        rank = next(i for i, pair in enumerate(pairs) if {first, second} == set(pair[:2])) + 1
        print(f"{first} / {second}: r = {r:+.2f} on the transform scale, rank {rank} of "
              f"{len(pairs)} pairs; contraction {contraction.get(first, np.nan):.2f} and "
              f"{contraction.get(second, np.nan):.2f}")
    else:
        print(f"{first} / {second}: not both free in this run")

# %% [markdown]
# ## 6. What the test period says about the calibration
#
# The test years were never seen by the likelihood, so their coverage is an honest check of
# the posterior's bands:
#
# * **coverage close to nominal** (about 50 % and 90 %): the bands are as wide as the
#   errors they should describe;
# * **coverage below nominal**: the bands are too narrow. Either the posterior is
#   over-confident (too little noise in the likelihood, or a parameter uncertainty that
#   ignores correlated errors), or the model is structurally wrong in the test years (a
#   process it lacks, a drift of its slow pools), so that no parameter set fits them. A drop
#   from the calibration to the test period usually points at the second (or at an
#   over-fit of the calibration years): the calibration fitted what the structure cannot
#   carry into new years. `"structural_error": true` in the
#   configuration samples a scale of each stream's noise and lets the data widen the bands;
#   it does not fix the structure;
# * **coverage above nominal**: the bands are too wide; with the default noise model, sigma
#   is the standard deviation of the whole stream, seasonal cycle included, which
#   overstates the random error of a daily eddy-covariance flux (`"uncertainty": "driver"`
#   uses the driver's stated uncertainties instead).
#
# Daily residuals are autocorrelated, so a coverage over a few hundred days is itself
# uncertain: the binomial standard error below ignores that correlation and is a lower bound.
# The cell prints a verdict and a reading for each stream from the numbers of this run, then
# splits the test-period band width into its parameter and noise parts and prints the mean
# test-period bias of the model's median.


# %%
def verdict(share, nominal, days):
    """``share`` against ``nominal`` with a binomial standard error of ``days`` draws."""
    error = np.sqrt(nominal * (1.0 - nominal) / max(days, 1))
    if share < nominal - 2.0 * error:
        return "below nominal"
    if share > nominal + 2.0 * error:
        return "above nominal"
    return "close to nominal"


def reading(test_share, test_days, calibration_share, calibration_days):
    """What the 90 % coverage of the test period says, next to the calibration period's."""
    state = verdict(test_share, 0.9, test_days)
    error = np.sqrt(0.09 / max(test_days, 1) + 0.09 / max(calibration_days, 1))
    dropped = calibration_share - test_share > 2.0 * error
    if state == "below nominal" and dropped:
        return ("the band loses coverage from the calibration to the test period: the "
                "calibration does not carry into new years (structural error or over-fit)")
    if state == "below nominal":
        return ("the band is too narrow in both periods alike: an over-confident noise "
                "model, or a structural error present throughout")
    text = ("the band is wider than the errors it should describe: a loose noise model"
            if state == "above nominal" else
            "the band is about as wide as the test-period errors")
    if dropped:
        text += ("; it covers fewer test than calibration days, a hint that the calibration "
                 "carries less well into new years")
    return text


for name in streams:
    c50, c90, n = table[name, "test"]["predictive"]
    k50, k90, n_calibration = table[name, "calibration"]["predictive"]
    error = np.sqrt(0.9 * 0.1 / max(n, 1))
    print(f"{name.upper()}: the test-period 90 % band holds {c90:.0%} of {n} observed days "
          f"({verdict(c90, 0.9, n)}, binomial standard error {error:.0%}); the 50 % band "
          f"holds {c50:.0%} ({verdict(c50, 0.5, n)}). In the calibration period: {k90:.0%} "
          f"and {k50:.0%}; change from calibration to test {100 * (c90 - k90):+.0f} (90 %) "
          f"and {100 * (c50 - k50):+.0f} (50 %) percentage points.\n  reading: "
          f"{reading(c90, n, k90, n_calibration)}.")

print()
for name, band in streams.items():
    observed = band["observed"]
    chosen = np.isfinite(observed) & test
    q, m = band["predictive"], band["model"]
    width_model = float(np.mean((m[Q[0.95]] - m[Q[0.05]])[test]))
    width_total = float(np.mean((q[Q[0.95]] - q[Q[0.05]])[test]))
    bias = float(np.mean(observed[chosen] - m[Q[0.5]][chosen]))
    print(f"{name.upper()}: mean test-period 90 % band width {width_total:.2f} "
          f"{OPERATORS[name].units}, of which the parameters alone give {width_model:.2f} "
          f"({(width_model / width_total) ** 2:.1%} of the variance, if the two add as "
          f"independent Gaussians); mean of observed - model median {bias:+.2f} "
          f"{OPERATORS[name].units}")
if SMOKE:
    print("\n(smoke run: not converged, a short record and few parameters; these verdicts "
          "only show how to read a run)")

# %% [markdown]
# When the parameter part of the band is small next to the noise part, the coverage mostly
# tests the noise model, not the posterior of the parameters: a good coverage then says
# little about how well the parameters are known, and the coverage of the model band alone
# (section 4) is the more telling number. A systematic bias of the median in the test period,
# large next to the model band, is the mark of a structural error: more draws or a longer
# warmup will not remove it.
#
# ## Next steps
#
# * `differland posterior site --driver ... --out ... --config posterior.json`: the same run
#   from the command line, with priors (`"priors"`), structural error and sampler settings
#   (`docs/calibration.md`, "Posterior (NUTS)").
# * `--strict` makes the command fail (exit status 1) when the run has not converged.
# * `calibration/posterior_twin.py`: a twin experiment on synthetic sites, where the true
#   parameters are known and the coverage of the credible intervals can be checked.
# * `docs/calibration.md`, "Variational posteriors": faster, approximate posteriors for many
#   sites at once.

# %%
print(f"run time: {time.perf_counter() - STARTED:.0f} s ({'smoke' if SMOKE else 'full'} mode)")
