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
# # Which parameters matter? Local and global sensitivity of annual fluxes
#
# How strongly does each parameter of the default differland model move a flux site's annual
# carbon and water fluxes? We study three numbers per site, each the mean over the record's
# calendar years of an annual total:
#
# * annual **GPP**, gross primary production [gC m-2 yr-1];
# * annual **NEE**, net ecosystem exchange [gC m-2 yr-1], positive when the site releases
#   carbon to the atmosphere (negative: a sink);
# * annual **ET**, evapotranspiration [mm yr-1].
#
# and ask the question twice:
#
# * **(a) locally**: the derivative of each number with respect to each parameter at the
#   default parameters, by automatic differentiation, normalised so that parameters of
#   different units can be ranked;
# * **(b) globally**: the share of each number's variance, over the whole prior box of the
#   parameter registry, that each parameter explains (variance-based Sobol indices);
# * **(c)** we compare the two rankings for GPP at DE-Hai (Hainich, a deciduous broadleaf
#   forest in Germany) and explain where they differ.
#
# The computations live in `differland.sensitivity`; this notebook wires them together.
#
# **Modes.** With the environment variable `DIFFERLAND_SMOKE=1` the notebook runs a quick
# check (DE-Hai only, its first 2 years, a Sobol sample of N = 64): the numbers it prints are
# then rough. Without it (the full mode) it uses each site's whole 9-year record, five sites
# for the local analysis and the Sobol indices, N = 16384 at DE-Hai and N = 2048 at the other
# sites. The full mode took about 7 minutes on 2 CPU cores (the last cell prints the time of
# your run). Figures are written under `sensitivity_figures/` in the working directory.
#
# It is kept as a plain-text jupytext notebook: run it as a script
# (`python notebooks/02_sensitivity.py`) or open it in Jupyter with jupytext.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import differland
from differland import ModelConfig, default_parameters
from differland import sensitivity as sa
from differland.io import read_site_driver
from differland.params import SPECS

STARTED = time.perf_counter()
SMOKE = os.environ.get("DIFFERLAND_SMOKE") == "1"
SHARED = Path(os.environ.get("DIFFERLAND_SHARED",
                             Path(differland.__file__).resolve().parents[2] / "shared"))
SITES_DIR = SHARED / "data" / "fluxsites"
FIGURES = Path.cwd() / "sensitivity_figures"
FIGURES.mkdir(exist_ok=True)

FOCUS = "DE-Hai"
SITES = [FOCUS] if SMOKE else [FOCUS, "US-Var", "FR-Pue", "NL-Loo", "AU-How"]
YEARS = 2 if SMOKE else None  # None: the whole record
N_BASE = {site: 64 if SMOKE else (2**14 if site == FOCUS else 2**11) for site in SITES}
BATCH = 512  # model runs per vmapped call: bounds the memory
print(f"{'smoke' if SMOKE else 'full'} mode: sites {', '.join(SITES)}; "
      f"{'first ' + str(YEARS) + ' years' if YEARS else 'whole records'}")

# %% [markdown]
# ## The model and the quantities
#
# `ModelConfig()` is the default model: the daily site model with the calendar phenology, no
# soil-water stress of photosynthesis and the underlying-water-use-efficiency ET.
# `config.parameter_names()` lists exactly the parameters this configuration reads: the
# process parameters and the initial pools (carbon in gC m-2, water in mm). Every one of them
# is studied. Their defaults are the centres of their prior boxes (the geometric mean for
# boxes wider than a decade).
#
# `sa.first_years` cuts a record to its first calendar years, and `sa.annual_means` runs the
# model and returns the three annual means; it is a jitted, differentiable JAX function of the
# parameters.

# %%
config = ModelConfig()
names = config.parameter_names()
params = default_parameters(config.variant)
records = {}
for site in SITES:
    driver = read_site_driver(SITES_DIR / f"{site}.nc")
    records[site] = sa.first_years(driver.forcing, driver.dates, YEARS)
    forcing, years = records[site]
    values = sa.annual_means(params, forcing, config, years)
    print(f"{site}: {forcing.n_steps} days, {len(years.days)} years; at the defaults " + ", ".join(
        f"{k.upper()} {float(v):.0f} {sa.annual_units(k)}" for k, v in values.items()))
print(f"\n{len(names)} parameters: {', '.join(names)}")

# %% [markdown]
# ## (a) Local sensitivities by automatic differentiation
#
# `sa.elasticities` differentiates the three annual means with respect to all parameters at
# once (`jax.jacfwd`: forward mode, one tangent per parameter, through the whole time loop)
# and normalises each derivative dy/dp so that parameters of different units compare:
#
# * the **elasticity** (dy/dp) p / |y| for every parameter with a natural zero (all registry
#   parameters are positive): the percentage change of y for a 1 % change of p;
# * a **scaled sensitivity** (dy/dp) (upper − lower) / |y| for the two dates, the leaf-onset
#   (`labile_release_day`) and leaf-fall (`leaf_fall_day`) phases on the model clock. A date
#   has no natural zero (a shift of its origin by a year changes nothing), so ln p and an
#   elasticity mean nothing; instead the derivative is scaled by the parameter's prior range:
#   the relative change of y, linearly extrapolated over the whole range.
#
# The sign is that of dy/dp (for NEE, negative means a stronger sink). The ranking is by
# magnitude.

# %%
local = {}
for site in SITES:
    forcing, years = records[site]
    local[site] = sa.elasticities(params, forcing, config, years)


def local_table(result, output, top=12):
    print(f"{output.upper()} = {result.values[output]:.1f} {sa.annual_units(output)}")
    print(f"  {'parameter':34s} {'default':>10s} {'units':>18s} {'measure':>10s} {'s':>8s}")
    for name, score in sa.ranked(result.normalised[output])[:top]:
        print(f"  {name:34s} {float(params[name]):10.4g} {SPECS[name].units:>18s} "
              f"{result.measures[name]:>10s} {score:8.3f}")


for output in sa.OUTPUTS:
    local_table(local[FOCUS], output)
    print()

# %% [markdown]
# The top five local parameters of each quantity at each site:

# %%
for output in sa.OUTPUTS:
    print(output.upper())
    for site in SITES:
        top = sa.ranked(local[site].normalised[output])[:5]
        print(f"  {site:7s} " + "; ".join(f"{n} {s:+.2f}" for n, s in top))


# %%
def bar_chart(scores_by_output, title, path, top=10):
    fig, axes = plt.subplots(1, len(scores_by_output), figsize=(5 * len(scores_by_output), 4))
    for ax, (output, scores) in zip(np.atleast_1d(axes), scores_by_output.items(), strict=True):
        pairs = sa.ranked(scores)[:top][::-1]
        ax.barh([n for n, _ in pairs], [s for _, s in pairs], color="tab:blue")
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_title(output.upper(), fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


bar_chart(local[FOCUS].normalised, f"{FOCUS}: local normalised sensitivities [1]",
          FIGURES / f"local_{FOCUS}.png")

# %% [markdown]
# ## (b) Global sensitivities: Sobol indices over the prior box
#
# Local derivatives describe one point. Over the whole prior box, what share of the variance
# of each annual mean does each parameter explain?
#
# * **S1**, first-order index: the share explained by the parameter alone (the variance of
#   E[y | p_i] over p_i);
# * **ST**, total index: the share that involves the parameter at all, alone or through
#   interactions with others; ST − S1 is its interaction share, and 1 − Σ S1 is the share
#   of the variance that no parameter explains alone.
#
# **The box.** Each parameter is uniform between its registry bounds in its transform
# coordinate: ln p for parameters whose box spans more than a decade (log-scaled in the
# registry, e.g. turnover rates and initial pools), p itself for the others (linear). These
# are the coordinates in which the calibration's logistic map places a parameter between its
# bounds. `sa.sobol_problem` writes the box as a SALib problem.
#
# **The estimate.** SALib draws Saltelli's sample from a scrambled Sobol sequence,
# N (D + 2) points for D parameters (no second-order indices), and estimates S1 and ST with
# bootstrap confidence intervals (95 %, half-widths below). The model runs are one jitted
# function vmapped over batches of `BATCH` parameter sets (`sa.coordinate_function`), so
# memory stays that of one batch.

# %%
problem = sa.sobol_problem(names)
indices, seconds = {}, {}
for site in SITES:
    forcing, years = records[site]
    function = sa.coordinate_function(params, forcing, config, years, names)
    began = time.perf_counter()
    indices[site] = sa.sobol_indices(function, problem, N_BASE[site], batch_size=BATCH, seed=0)
    seconds[site] = time.perf_counter() - began
    runs = indices[site]["gpp"].n_evaluations
    print(f"{site}: N = {N_BASE[site]}, {runs} model runs in {seconds[site]:.1f} s "
          f"({1e3 * seconds[site] / runs:.2f} ms per run)")


# %%
def sobol_table(result, top=10):
    print(f"  {'parameter':34s} {'ST':>6s} {'±':>6s} {'S1':>7s} {'±':>6s} {'ST-S1':>6s}")
    for name, total, total_ci, first, first_ci in result.ranked()[:top]:
        print(f"  {name:34s} {total:6.3f} {total_ci:6.3f} {first:7.3f} {first_ci:6.3f} "
              f"{total - first:6.3f}")
    print(f"  1 - sum S1 = {sa.interaction_share(result):.3f}; mean {result.mean:.0f}, "
          f"standard deviation {np.sqrt(result.variance):.0f} over the box")


for output in sa.OUTPUTS:
    print(f"{FOCUS} {output.upper()} [{sa.annual_units(output)}]")
    sobol_table(indices[FOCUS][output])
    print()
top_ci = max(row[2] for row in indices[FOCUS]["gpp"].ranked()[:5])
print(f"largest 95 % half-width among the five largest GPP ST at {FOCUS}: {top_ci:.3f}")

# %% [markdown]
# The five largest total indices of each quantity at each site (ST ± 95 % half-width):

# %%
for output in sa.OUTPUTS:
    print(output.upper())
    for site in SITES:
        rows = indices[site][output].ranked()[:5]
        print(f"  {site:7s} " + "; ".join(f"{n} {t:.2f}±{c:.2f}" for n, t, c, _, _ in rows))

# %%
bar_chart({k: dict(zip(v.names, v.total_order, strict=True))
           for k, v in indices[FOCUS].items()},
          f"{FOCUS}: total Sobol indices ST [1]", FIGURES / f"sobol_{FOCUS}.png")

# %% [markdown]
# ## (c) Local against global: GPP at DE-Hai
#
# Three rankings of the same parameters:
#
# * **local**: |elasticity| (or |scaled sensitivity| for the dates) at the defaults;
# * **global**: ST over the box;
# * **linearised**: `sa.linear_sobol_indices`, the Sobol indices GPP would have if it were
#   linear in the transform coordinates with the local gradient everywhere in the box,
#   g_i² / Σ g_j² with g_i = dy/dx_i × (width of x_i's box). It uses the local derivative but
#   the global box: where it agrees with ST and the elasticity does not, the box's widths
#   explain the difference; where it disagrees with ST too, nonlinearity or interactions do.

# %%
output = "gpp"
focus_local, focus_global = local[FOCUS], indices[FOCUS][output]
linear = sa.linear_sobol_indices(focus_local, params)[output]
local_order = [n for n, _ in sa.ranked(focus_local.normalised[output])]
global_order = [row[0] for row in focus_global.ranked()]
linear_order = [n for n, _ in sa.ranked(linear)]
top_local, top_global = local_order[:5], global_order[:5]
both = [n for n in top_local if n in top_global]
print(f"top 5 local : {', '.join(top_local)}")
print(f"top 5 global: {', '.join(top_global)}")
print(f"in both     : {', '.join(both) or 'none'}")
print(f"top 5 linearised: {', '.join(linear_order[:5])}\n")

total = dict(zip(focus_global.names, focus_global.total_order, strict=True))
first = dict(zip(focus_global.names, focus_global.first_order, strict=True))
print(f"{'parameter':34s} {'rank loc':>8s} {'rank ST':>8s} {'rank lin':>8s} {'s':>7s} "
      f"{'ST':>6s} {'S1':>6s} {'lin S':>6s}")
for name in dict.fromkeys(top_local + top_global):
    print(f"{name:34s} {local_order.index(name) + 1:8d} {global_order.index(name) + 1:8d} "
          f"{linear_order.index(name) + 1:8d} {focus_local.normalised[output][name]:7.3f} "
          f"{total[name]:6.3f} {first[name]:6.3f} {linear[name]:6.3f}")
print(f"\n1 - sum S1 = {sa.interaction_share(focus_global):.3f} of the variance of annual GPP "
      "comes from interactions")

# %%
fig, ax = plt.subplots(figsize=(6, 5))
x = np.array([abs(focus_local.normalised[output][n]) for n in focus_global.names])
y = focus_global.total_order
ax.errorbar(x, y, yerr=focus_global.total_order_confidence, fmt="o", ms=4, lw=0.8)
for name, xi, yi in zip(focus_global.names, x, y, strict=True):
    if name in top_local or name in top_global:
        ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
ax.set_xlabel("|local normalised sensitivity| at the defaults [1]")
ax.set_ylabel("total Sobol index ST over the box [1]")
ax.set_title(f"{FOCUS}: annual GPP, local against global")
fig.tight_layout()
fig.savefig(FIGURES / f"local_vs_global_{FOCUS}.png", dpi=110)

# %% [markdown]
# ### Where they agree and why they differ (full-mode results at DE-Hai)
#
# The numbers quoted here are those of the full mode; a smoke run prints rougher ones.
#
# **Agreement.** Both rankings put the leaf carbon mass per area first, by a wide margin: it
# turns foliar carbon into leaf area, and leaf area drives both the light the canopy
# intercepts and the foliar respiration, so it moves GPP at the defaults (s = −0.29) and
# explains more than half of GPP's variance over the box (ST = 0.56 ± 0.01, S1 = 0.40).
# Three of the five largest are common to both lists: the leaf carbon mass per area, the
# foliar allocation fraction and the leaf lifespan, all three setting how much leaf area
# the site grows.
#
# **Differences, and why.**
#
# * *The initial foliar and labile pools* rank 2nd and 3rd globally (ST 0.21 and 0.14) but
#   6th and 12th locally. At the defaults the first years forget these pools within a
#   season, so the nine-year mean barely moves (s = 0.09 and 0.02). Their box spans
#   several decades (log-scaled), and at its upper corner a huge initial canopy carries
#   GPP for years; the linearised indices, which use the local gradient over the box's
#   widths, already rank the initial foliar pool 2nd, so the width of the box explains
#   most of this difference, and its large ST − S1 (0.12) the rest (it acts through the
#   leaf area it makes, with the leaf carbon mass per area).
# * *The canopy efficiency and the autotrophic respiration fraction* rank 2nd and 3rd
#   locally but 6th and 7th globally. Their derivatives at the defaults are large, but
#   their boxes are narrow in the coordinate in which they are sampled: linear, 1.6 and 1.2
#   times their default wide (5–50 and 0.2–0.8), against ln(200/5) = 3.7 e-folds for the
#   log-scaled leaf carbon mass per area; so over the box they explain less variance
#   (ST 0.10 and 0.04), as the linearised indices (4th and 5th) already show.
# * About a fifth of GPP's variance (1 − Σ S1 = 0.22) comes from interactions, mostly
#   among the leaf-area parameters, which no local derivative can show.
#
# So the two views agree on what the defaults' GPP is most sensitive to, the leaf area, and
# differ where the box's width or the pools' initial transients weigh: local sensitivities
# answer "what moves GPP near this parameter set", Sobol indices "what matters anywhere in
# the prior box".
#
# **At the other sites** (US-Var, FR-Pue, NL-Loo, AU-How, N = 2048) the five largest GPP
# total indices are the same five parameters in nearly the same order, and the local
# rankings share their first four (leaf carbon mass per area, canopy efficiency,
# autotrophic respiration fraction, foliar allocation fraction). For NEE the soil organic
# pool and its respiration rate dominate globally everywhere (ST ≈ 0.5–0.6, mostly through
# their interaction: respiration is their product) while the autotrophic respiration
# fraction dominates locally; for ET the water-use efficiency and the runoff focal point
# lead in both views.

# %%
print(f"run time: {time.perf_counter() - STARTED:.0f} s ({'smoke' if SMOKE else 'full'} mode)")
