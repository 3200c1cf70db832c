"""Twin experiment of the site posterior: synthetic sites with planted parameters.

    python calibration/posterior_twin.py --sites 8 --seed 1 --out runs/twin [--method svi]

Each synthetic site takes the forcing, the observation gaps and the stated observation
uncertainties of the first ``--days`` days of a real flux site (``--sites-dir``, picked at
random), plants parameter values drawn from the posterior's own prior, simulates GPP, RECO,
NEE, ET and LAI with them and adds Gaussian noise of the stated uncertainty. The site posterior
(``differland posterior site``) then runs on that synthetic driver, with the same prior and
noise model and without the constraint potentials (the planted values are drawn from the
prior alone), so that its credible intervals should contain the truth at their nominal rate.

Outputs, under ``OUT``:

* ``drivers/<site>.nc``: the synthetic drivers;
* ``<site>/``: the posterior run directory (``posterior.nc`` with one variable per parameter,
  named as in the registry, ``diagnostics.json``, ...), plus ``truth.json`` (parameter ->
  planted value) and ``identified.json`` (the parameters the coverage counts);
* ``coverage.json`` and ``coverage.md``: per site and in total, the share of identifiable
  parameters whose central 50 % and 90 % credible intervals contain the planted value; per
  site, the density rank of the planted values among the posterior draws (a check of the
  whole joint posterior, uniform over sites when it is calibrated; see :func:`density_rank`);
  the mean and spread the pooled coverage of a calibrated posterior would show on the same
  sites, with the probability of a coverage at most the observed one
  (:func:`calibrated_spread`); and the share of synthetic observations inside the 50 % and
  90 % posterior predictive bands per stream and period.

A parameter counts as identifiable at a site when the data contracted its prior:
1 - (posterior sd / prior sd)^2 >= ``--contraction`` (default 0.9, i.e. the posterior sd is at
most about a third of the prior sd), both measured as the position in the prior's box on the
parameter's transform scale. The criterion uses the posterior draws only, never the truth.

With ``--method svi`` the variational posteriors of every synthetic site are fitted together
(``differland posterior sites``, guide ``--guide``, ``--steps`` steps) under ``OUT/svi/``
instead, and a site counts as converged when its Pareto k is at most 0.7.

A rerun reuses the finished posterior of a site (same seed, same settings) and rebuilds the
tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from differland.calibrate import bayes
from differland.calibrate.site import CalibrationConfigError, free_parameter_names
from differland.calibrate.variational import GUIDES
from differland.io import read_site_driver, read_sites_rows, write_atomically, write_json
from differland.io.site import OBSERVATION_VARIABLES
from differland.model import simulate
from differland.observations import predict
from differland.params import SPECS, ParameterSet, default_parameters
from differland.posterior_workflows import posterior_site, site_posterior_problem
from differland.variational_workflows import load_variational_config, posterior_sites

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SITES_DIR = Path(os.environ.get("DIFFERLAND_SHARED", REPO.parent / "shared")) / \
    "data" / "fluxsites"

PARAMETERS = ("canopy_efficiency", "autotrophic_respiration_fraction",
              "foliar_allocation_fraction", "leaf_carbon_mass_per_area",
              "litter_respiration_rate", "temperature_sensitivity",
              "underlying_water_use_efficiency", "initial_foliar_carbon")
"""Free parameters of the twin posterior (the others stay at their registry defaults)."""
STREAMS = ("gpp", "reco", "et", "lai")
"""Streams the twin posterior scores."""
SYNTHETIC = ("gpp", "reco", "nee", "et", "lai")
"""Streams written to the synthetic drivers (the other observations are dropped)."""
PRIOR_HALF_WIDTH = 0.2
"""Half width of each parameter's prior around its registry default, as a share of the
registry box on the parameter's transform scale."""
INTERVALS = (0.5, 0.9)
"""Central credible intervals whose coverage is reported."""
RANK_DRAWS = 1000
"""Most posterior draws (evenly thinned) that the density rank of the truth compares."""
REPLICATES = 4000
"""Truths drawn from each site's own posterior to measure the spread that the coverage of a
calibrated posterior would show on the same sites."""


def twin_config(chains: int = 4, warmup: int = 500, samples: int = 500, seed: int = 0,
                max_tree_depth: int = 10, target_accept: float = 0.8
                ) -> bayes.PosteriorConfig:
    """The posterior configuration of every synthetic site.

    Priors: uniform on the parameter's transform scale over the positions
    [u0 - :data:`PRIOR_HALF_WIDTH`, u0 + :data:`PRIOR_HALF_WIDTH`] of its registry box (kept
    inside [0.02, 0.98]), u0 the position of its registry default; the driver's uncertainties
    as sigma; no constraint potentials; no structural-error scale.
    """
    priors = {}
    for name in PARAMETERS:
        spec = SPECS[name]
        box = bayes.ScaledBox(spec.lower, spec.upper, spec.transform_scale)
        to_value = bayes.unit_transform(box)
        centre = float(to_value.inv(jnp.asarray(spec.default_value)))
        low = max(centre - PRIOR_HALF_WIDTH, 0.02)
        high = min(centre + PRIOR_HALF_WIDTH, 0.98)
        lower = float(np.clip(to_value(jnp.asarray(low)), spec.lower, spec.upper))
        upper = float(np.clip(to_value(jnp.asarray(high)), spec.lower, spec.upper))
        priors[name] = {"distribution": "uniform", "lower": lower, "upper": upper}
    return bayes.posterior_config_from_dict({
        "free_parameters": list(PARAMETERS), "streams": list(STREAMS),
        "uncertainty": "driver", "priors": priors, "constraint_scale": 0.0,
        "structural_error": False,
        "nuts": {"chains": chains, "warmup": warmup, "samples": samples, "seed": seed,
                 "max_tree_depth": max_tree_depth, "target_accept": target_accept}})


def planted_values(config: bayes.PosteriorConfig, key) -> dict[str, float]:
    """One draw of the free parameters from the posterior's prior [registry units]."""
    keys = jax.random.split(key, len(PARAMETERS))
    return {name: float(bayes.prior_distribution(config.calibration, name,
                                                 config.prior_of(name)).sample(subkey))
            for name, subkey in zip(PARAMETERS, keys, strict=True)}


def synthetic_driver(source: Path, target: Path, days: int, truth: dict[str, float],
                     config: bayes.PosteriorConfig, key) -> Path:
    """Write the synthetic driver of ``truth`` on the first ``days`` days of ``source``.

    Each synthetic stream keeps the source's observed steps; its uncertainty is the source's
    stated uncertainty where valid and the median of the valid ones elsewhere (the stream's
    standard deviation / 10 without any); the values are the simulated stream plus Gaussian
    noise of that uncertainty.
    """
    with xr.open_dataset(source, decode_times=False) as dataset:
        window = dataset.isel(time=slice(0, days)).load()
    original = {name: spec for name, spec in OBSERVATION_VARIABLES.items()
                if spec.variable in window.variables}
    window = window.drop_vars([name for spec in OBSERVATION_VARIABLES.values()
                               for name in (spec.variable, spec.uncertainty)
                               if name is not None and name in window.variables])
    staging = target.with_name(f".{target.name}.forcing")
    write_atomically(staging, lambda path: window.to_netcdf(path))
    try:
        forcing_only = read_site_driver(staging).forcing
    finally:
        staging.unlink(missing_ok=True)
    reference = read_site_driver(source)
    params = default_parameters(config.calibration.model)
    params = ParameterSet({name: truth.get(name, params[name]) for name in params.names})
    trajectory = simulate(params, forcing_only, config.calibration.model_config)
    keys = jax.random.split(key, len(SYNTHETIC))
    for name, subkey in zip(SYNTHETIC, keys, strict=True):
        if name not in original:
            continue
        spec, observed = original[name], reference.observations[name]
        mask = np.asarray(observed.mask[:days])
        if observed.uncertainty is not None and observed.uncertainty_mask[:days].any():
            valid = np.asarray(observed.uncertainty_mask[:days])
            stated = np.asarray(observed.uncertainty[:days])
            sigma = np.where(valid, stated, np.median(stated[valid]))
        else:
            sigma = np.full(days, max(float(np.std(observed.values[:days][mask])) / 10.0,
                                      1e-3))
        prediction = np.asarray(predict(name, trajectory, params, forcing_only), np.float64)
        noise = np.asarray(jax.random.normal(subkey, (days,)), np.float64)
        values = np.where(mask, prediction + sigma * noise, np.nan)
        window[spec.variable] = xr.Variable("time", values, {"units": spec.units})
        window[spec.uncertainty] = xr.Variable("time", sigma, {"units": spec.units})
    window.attrs["title"] = f"synthetic twin of {source.stem}: planted parameters, stated noise"
    write_atomically(target, lambda path: window.to_netcdf(path))
    return target


def prior_position_sd(config: bayes.PosteriorConfig, name: str) -> float:
    """Standard deviation of the position in the prior's box under the (uniform) prior."""
    if config.prior_of(name).distribution != "uniform":
        raise ValueError(f"{name}: the twin needs uniform priors")
    return 1.0 / math.sqrt(12.0)


def position_in_prior(config: bayes.PosteriorConfig, name: str, values) -> np.ndarray:
    """Position in [0, 1] of ``values`` in the prior's box on the transform scale."""
    box = bayes.prior_box(config.calibration, name, config.prior_of(name))
    return np.asarray(bayes.unit_transform(box).inv(jnp.asarray(values)))


def identified_parameters(config: bayes.PosteriorConfig, draws: dict[str, np.ndarray],
                          contraction: float) -> dict:
    """The parameters whose prior the data contracted by at least ``contraction`` (see the
    module docstring), with every parameter's contraction."""
    values = {}
    for name in free_parameter_names(config.calibration):
        position = position_in_prior(config, name, draws[name])
        ratio = float(np.std(position)) / prior_position_sd(config, name)
        values[name] = 1.0 - ratio**2
    chosen = [name for name, value in values.items() if value >= contraction]
    return {"parameters": chosen,
            "criterion": f"posterior contraction 1 - (posterior sd / prior sd)^2 >= "
                         f"{contraction}, sd of the position in the prior box on the "
                         "parameter's transform scale",
            "contraction": values}


def interval_hits(draws: dict[str, np.ndarray], truth: dict[str, float],
                  names: list[str]) -> dict[str, dict[str, bool]]:
    """Per parameter, whether each central credible interval of :data:`INTERVALS` contains
    the planted value."""
    hits = {}
    for name in names:
        values = np.ravel(draws[name])
        hits[name] = {}
        for level in INTERVALS:
            low, high = np.quantile(values, [0.5 - level / 2.0, 0.5 + level / 2.0])
            hits[name][f"{round(level * 100)}"] = bool(low <= truth[name] <= high)
    return hits


def calibrated_hit_distribution(draws: dict[str, np.ndarray], names: list[str],
                                seed: int = 0) -> dict[str, list[float]]:
    """Distribution of the number of ``names`` whose intervals hold the truth when the truth
    is itself a posterior draw (a calibrated posterior, by construction).

    Returns, per interval of :data:`INTERVALS`, the probabilities of 0, 1, ..., len(names)
    hits over :data:`REPLICATES` truths drawn from the draws. Pairs of one site are
    correlated through the posterior, so this spread is wider than a binomial one.
    """
    generator = np.random.default_rng(seed)
    values = np.stack([np.ravel(draws[name]) for name in names], axis=1) if names else \
        np.zeros((1, 0))
    truths = values[generator.integers(values.shape[0], size=REPLICATES)]
    out = {}
    for level in INTERVALS:
        low, high = np.quantile(values, [0.5 - level / 2.0, 0.5 + level / 2.0], axis=0)
        counts = np.sum((truths >= low) & (truths <= high), axis=1)
        out[f"{round(level * 100)}"] = (np.bincount(counts, minlength=len(names) + 1)
                                        / REPLICATES).tolist()
    return out


def calibrated_spread(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per interval, the mean and sd of the pooled coverage a calibrated posterior would show
    on these sites (sites independent: the per-site distributions convolved), and the
    probability of a pooled coverage at most the observed one."""
    out = {}
    for level in (f"{round(v * 100)}" for v in INTERVALS):
        distribution = np.ones(1)
        observed = 0
        for record in records:
            distribution = np.convolve(distribution, record["calibrated_hits"][level])
            observed += sum(hit[level] for hit in record["hits"].values())
        pairs = distribution.size - 1
        if pairs == 0:
            out[level] = {"mean": math.nan, "sd": math.nan, "p_at_most_observed": math.nan}
            continue
        share = np.arange(distribution.size) / pairs
        mean = float(np.sum(share * distribution))
        out[level] = {"mean": mean,
                      "sd": float(np.sqrt(np.sum((share - mean) ** 2 * distribution))),
                      "p_at_most_observed": float(np.sum(distribution[:observed + 1]))}
    return out


def density_rank(driver: Path, config: bayes.PosteriorConfig, draws: dict[str, np.ndarray],
                 truth: dict[str, float]) -> float:
    """Share of the posterior draws of higher posterior density than the planted values.

    Densities are those the sampler sees (its unconstrained coordinates, every free parameter
    at once), compared over at most :data:`RANK_DRAWS` evenly thinned draws. The planted
    values are a draw from the prior, so under the exact posterior they are exchangeable with
    the posterior draws and the rank is uniform on [0, 1] over sites, whatever the posterior's
    shape; ranks piled near 1 say the draws miss regions of high density that hold the truth.
    """
    _, config, problem = site_posterior_problem(driver, config)
    problem = problem.training_problem()
    bijections = bayes.site_bijections(problem, config)
    names = free_parameter_names(config.calibration)
    total = np.size(draws[names[0]])
    keep = np.unique(np.linspace(0, total - 1, min(total, RANK_DRAWS)).astype(int))
    dtype = jnp.result_type(float)
    points = {name: np.concatenate([
        np.asarray(bijections[name].inv(jnp.asarray(np.ravel(draws[name])[keep], dtype))),
        np.asarray(bijections[name].inv(jnp.asarray([truth[name]], dtype)))])
        for name in names}
    energy = bayes.potentials(problem, config, points)
    return float(np.mean(energy[:-1] < energy[-1]))


def site_record(out: Path, site: str, source: Path, truth: dict, config, contraction: float,
                diagnostics: dict, driver: Path) -> dict:
    """Read a finished site posterior and write its ``truth.json`` and ``identified.json``."""
    posterior = xr.load_dataset(out / "posterior.nc", group="posterior")
    draws = {name: np.asarray(posterior[name].values) for name in PARAMETERS}
    identified = identified_parameters(config, draws, contraction)
    write_json(out / "truth.json", truth)
    write_json(out / "identified.json", identified)
    hits = interval_hits(draws, truth, identified["parameters"])
    return {"site": site, "source": source.stem, "converged": diagnostics["converged"],
            "max_r_hat": diagnostics["max_r_hat"], "min_ess_bulk": diagnostics["min_ess_bulk"],
            "divergences": diagnostics["divergences"],
            "identified": identified["parameters"], "hits": hits,
            "density_rank": density_rank(driver, config, draws, truth),
            "calibrated_hits": calibrated_hit_distribution(draws, identified["parameters"]),
            "predictive": diagnostics["coverage"]}


def coverage_summary(records: list[dict]) -> dict:
    """Pooled coverage of the credible intervals and of the predictive bands."""
    pairs = [hit for record in records for hit in record["hits"].values()]
    parameters = {f"coverage_{level}": (sum(hit[level] for hit in pairs) / len(pairs)
                                        if pairs else math.nan)
                  for level in (f"{round(v * 100)}" for v in INTERVALS)}
    parameters["pairs"] = len(pairs)
    parameters["calibrated"] = calibrated_spread(records)
    ranks = np.asarray([record["density_rank"] for record in records], float)
    density = {"sites": int(ranks.size),
               "mean": float(np.mean(ranks)) if ranks.size else math.nan,
               "uniform_mean_sd": 1.0 / math.sqrt(12.0 * ranks.size) if ranks.size else math.nan,
               "share_above_0.9": float(np.mean(ranks > 0.9)) if ranks.size else math.nan}
    predictive = {}
    for record in records:
        for stream, periods in record["predictive"].items():
            for period, values in periods.items():
                entry = predictive.setdefault(stream, {}).setdefault(
                    period, {"observed_steps": 0, "inside_50": 0.0, "inside_90": 0.0})
                count = values["observed_steps"]
                if count:
                    entry["observed_steps"] += count
                    entry["inside_50"] += values["coverage_50"] * count
                    entry["inside_90"] += values["coverage_90"] * count
    for periods in predictive.values():
        for entry in periods.values():
            count = entry.pop("observed_steps")
            inside_50, inside_90 = entry.pop("inside_50"), entry.pop("inside_90")
            entry.update({"observed_steps": count,
                          "coverage_50": inside_50 / count if count else math.nan,
                          "coverage_90": inside_90 / count if count else math.nan})
    return {"parameters": parameters, "density_rank": density, "predictive": predictive}


def coverage_markdown(records: list[dict], summary: dict, contraction: float) -> str:
    """``coverage.md``: the per-site and pooled tables."""
    lines = ["# Twin coverage of the site posterior", "",
             f"Identifiable: posterior contraction >= {contraction} (position in the prior "
             "box on the transform scale; no use of the truth).", "",
             "Density rank: share of the posterior draws of higher posterior density than the "
             "planted values (uniform on [0, 1] over sites under a calibrated posterior).", "",
             "| site | source | converged | max R-hat | min bulk ESS | divergences | "
             "identifiable | in 50 % | in 90 % | density rank |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        hits = record["hits"].values()
        lines.append(
            f"| {record['site']} | {record['source']} | {record['converged']} | "
            f"{record['max_r_hat']!r} | {record['min_ess_bulk']!r} | {record['divergences']} | "
            f"{len(record['identified'])} | {sum(h['50'] for h in hits)} | "
            f"{sum(h['90'] for h in hits)} | {record['density_rank']!r} |")
    parameters, density = summary["parameters"], summary["density_rank"]
    lines += ["", f"(site, identifiable parameter) pairs: {parameters['pairs']}; "
              f"50 % intervals contain the truth for {parameters['coverage_50']!r}, 90 % "
              f"intervals for {parameters['coverage_90']!r}.", "",
              "A calibrated posterior on these sites (planted values drawn from each site's "
              "own posterior) would give "
              + "; ".join(f"{level} %: {value['mean']!r} +- {value['sd']!r}, at most the "
                          f"observed coverage with probability {value['p_at_most_observed']!r}"
                          for level, value in parameters["calibrated"].items()) + ".", "",
              f"Density rank over {density['sites']} sites: mean {density['mean']!r} (0.5 "
              f"+- {density['uniform_mean_sd']!r} under calibration), share above 0.9 "
              f"{density['share_above_0.9']!r} (0.1 under calibration).", "",
              "## Posterior predictive calibration (share of synthetic observations inside "
              "the bands)", "", "| stream | period | observed steps | 50 % band | 90 % band |",
              "|---|---|---|---|---|"]
    for stream, periods in summary["predictive"].items():
        for period, values in periods.items():
            lines.append(f"| {stream} | {period} | {values['observed_steps']} | "
                         f"{values['coverage_50']!r} | {values['coverage_90']!r} |")
    return "\n".join(lines) + "\n"


def nuts_record(arguments, config, index: int, site: str, source: Path, truth: dict,
                driver: Path) -> dict:
    """The NUTS posterior of one synthetic site (reused when finished with the same
    configuration) and its record."""
    site_config = dataclasses.replace(config, nuts=dataclasses.replace(
        config.nuts, seed=(arguments.seed * 1000 + index) % bayes.MAX_SEED))
    run = arguments.out / site
    finished = run / "diagnostics.json"
    if finished.is_file() and json.loads((run / "config.json").read_text()).get(
            "posterior") == site_config.to_dict():
        diagnostics = json.loads(finished.read_text())
    else:
        diagnostics = posterior_site(driver, run, site_config, progress=arguments.progress,
                                     overwrite=finished.is_file())
    record = site_record(run, site, source, truth, site_config, arguments.contraction,
                         diagnostics, driver)
    _report(site, record)
    return record


def svi_records(arguments, config, twins: list) -> list[dict]:
    """The variational posteriors of every synthetic site, fitted together by
    ``differland posterior sites`` under ``OUT/svi`` (the sites' predictors and calibration
    periods are their sources'), and their records; a site counts as converged when its
    Pareto k is at most the limit."""
    rows = {row["SITE_ID"]: row for row in read_sites_rows(arguments.sites_dir / "sites.csv")}
    table = []
    for _, site, source, _, driver in twins:
        reference = read_site_driver(driver)
        test_start = str(np.datetime_as_string(
            np.datetime64(reference.dates[reference.calibration_end]), unit="D"))
        table.append({**rows[source.stem], "SITE_ID": site, "test_start": test_start})
    sites_csv = arguments.out / "svi_sites.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_atomically(sites_csv, lambda path: path.write_text(buffer.getvalue(),
                                                             encoding="utf-8"))
    settings = load_variational_config(None, guide=arguments.guide, steps=arguments.steps,
                                       seed=arguments.seed)
    settings = dataclasses.replace(settings, posterior=config)
    run = arguments.out / "svi"
    finished = run / "svi.json"
    if finished.is_file() and json.loads((run / "config.json").read_text()).get(
            "variational") == json.loads(json.dumps(settings.to_dict())):
        result = json.loads(finished.read_text())
    else:
        result = posterior_sites(arguments.out / "drivers", run, settings, sites_csv=sites_csv,
                                 progress=arguments.progress, overwrite=finished.is_file())
    records = []
    for _, site, source, truth, driver in twins:
        entry = result["sites"][site]
        diagnostics = {"converged": entry["reliable"], "max_r_hat": math.nan,
                       "min_ess_bulk": math.nan, "divergences": 0,
                       "coverage": entry["coverage"]}
        record = site_record(run / site, site, source, truth, config, arguments.contraction,
                             diagnostics, driver)
        record["pareto_k"] = entry["pareto_k"]
        _report(site, record)
        records.append(record)
    return records


def _report(site: str, record: dict) -> None:
    hits = record["hits"].values()
    print(f"{site}: {'converged' if record['converged'] else 'not converged'}, "
          f"{len(record['identified'])} identifiable, "
          f"{sum(h['50'] for h in hits)} in 50 %, {sum(h['90'] for h in hits)} in 90 %",
          flush=True)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="posterior_twin.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=8, help="synthetic sites (default 8)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sources, planted values, noise and samplers")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--sites-dir", type=Path, default=DEFAULT_SITES_DIR,
                        help="folder of real site drivers whose forcing, gaps and stated "
                             "uncertainties the synthetic sites take")
    parser.add_argument("--days", type=int, default=4 * 365,
                        help="record length; the first half of the years is the calibration "
                             "period (default 1460)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--target-accept", type=float, default=0.8,
                        help="target acceptance of the step-size adaptation (default 0.8)")
    parser.add_argument("--contraction", type=float, default=0.9,
                        help="smallest posterior contraction of an identifiable parameter")
    parser.add_argument("--method", choices=("nuts", "svi"), default="nuts",
                        help="nuts: 'differland posterior site' per synthetic site; svi: "
                             "'differland posterior sites' over all of them at once")
    parser.add_argument("--guide", choices=GUIDES, default="lowrank",
                        help="the SVI guide (with --method svi)")
    parser.add_argument("--steps", type=int, default=3000, help="SVI steps (--method svi)")
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.float64:
        jax.config.update("jax_enable_x64", True)
    sources = sorted(arguments.sites_dir.glob("*.nc"))
    problems = []
    if arguments.sites < 1:
        problems.append("--sites must be at least 1")
    if not sources:
        problems.append(f"--sites-dir {arguments.sites_dir}: no site drivers (*.nc)")
    if arguments.days < 2 * 365:
        problems.append("--days must be at least 730 (a calibration and a test year)")
    if not 0.0 < arguments.contraction < 1.0:
        problems.append("--contraction must lie between 0 and 1")
    try:
        config = twin_config(arguments.chains, arguments.warmup, arguments.samples,
                             arguments.seed, arguments.max_tree_depth,
                             arguments.target_accept)
    except CalibrationConfigError as error:
        problems.append(str(error).removeprefix("config: "))
    if problems:
        print(f"posterior_twin.py: error: {problems[0]}", file=sys.stderr)
        return 2
    out = arguments.out
    generator = np.random.default_rng(arguments.seed)
    key = jax.random.PRNGKey(arguments.seed)
    twins = []
    for index in range(arguments.sites):
        source = sources[int(generator.integers(len(sources)))]
        site = f"twin{index:02d}-{source.stem}"
        site_key = jax.random.fold_in(key, index)
        truth = planted_values(config, jax.random.fold_in(site_key, 0))
        driver = synthetic_driver(source, out / "drivers" / f"{site}.nc", arguments.days,
                                  truth, config, jax.random.fold_in(site_key, 1))
        twins.append((index, site, source, truth, driver))
    if arguments.method == "svi":
        records = svi_records(arguments, config, twins)
    else:
        records = [nuts_record(arguments, config, *twin) for twin in twins]
    summary = coverage_summary(records)
    write_json(out / "coverage.json", {"sites": records, "summary": summary,
                                       "contraction": arguments.contraction,
                                       "seed": arguments.seed})
    text = coverage_markdown(records, summary, arguments.contraction)
    write_atomically(out / "coverage.md", lambda path: path.write_text(text, encoding="utf-8"))
    parameters = summary["parameters"]
    print(f"wrote {out}: {parameters['pairs']} (site, identifiable parameter) pairs; "
          f"coverage of the 50 % intervals {parameters['coverage_50']:.3f}, of the 90 % "
          f"intervals {parameters['coverage_90']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
