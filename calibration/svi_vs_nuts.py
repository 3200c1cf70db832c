"""Variational posteriors against NUTS at a few real sites.

    python calibration/svi_vs_nuts.py --sites US-Ha1,DE-Hai --out runs/svi_vs_nuts

Runs ``differland posterior site`` (NUTS) at each site and ``differland posterior sites``
(SVI, all the sites together) with the same posterior configuration, then compares, for every
free parameter, the two posteriors in the sampler's unconstrained coordinates (the logit of the
position in the prior box, where both approximations live):

* ``mean_shift``: (SVI mean - NUTS mean) / NUTS sd;
* ``sd_ratio``: SVI sd / NUTS sd;
* ``overlap_90``: length of the intersection of the two central 90 % intervals over the length
  of NUTS's.

Outputs under ``OUT``: ``nuts/<site>/`` and ``svi/`` (the two run directories),
``comparison.csv`` (one row per site and parameter) and ``comparison.md`` (medians per site,
with each run's diagnostics: NUTS R-hat, ESS and divergences; SVI Pareto k). Finished runs
are reused by a rerun.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from differland.calibrate import bayes
from differland.calibrate.site import CalibrationConfigError
from differland.io import read_sites_rows, write_atomically
from differland.posterior_workflows import load_posterior_config, posterior_site
from differland.variational_workflows import load_variational_config, posterior_sites

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SITES_DIR = Path(os.environ.get("DIFFERLAND_SHARED", REPO.parent / "shared")) / \
    "data" / "fluxsites"


def _coordinates(path: Path, config: bayes.PosteriorConfig, names: list[str]) -> dict:
    """Each parameter's draws (all chains) in the sampler's unconstrained coordinates."""
    with xr.open_dataset(path, group="posterior") as posterior:
        out = {}
        for name in names:
            box = bayes.prior_box(config.calibration, name, config.prior_of(name))
            values = np.asarray(posterior[name].values, np.float64).ravel()
            out[name] = np.asarray(bayes.biject_to(box).inv(values), np.float64)
    return out


def compare(nuts: dict, svi: dict) -> list[dict]:
    """Per parameter: mean shift, sd ratio and 90 % interval overlap (see the module)."""
    rows = []
    for name, reference in nuts.items():
        other = svi[name]
        sd = float(np.std(reference, ddof=1))
        low, high = np.quantile(reference, [0.05, 0.95])
        other_low, other_high = np.quantile(other, [0.05, 0.95])
        overlap = max(0.0, min(high, other_high) - max(low, other_low))
        rows.append({"parameter": name,
                     "nuts_mean": float(np.mean(reference)), "nuts_sd": sd,
                     "svi_mean": float(np.mean(other)), "svi_sd": float(np.std(other, ddof=1)),
                     "mean_shift": float((np.mean(other) - np.mean(reference)) / sd)
                     if sd > 0 else math.nan,
                     "sd_ratio": float(np.std(other, ddof=1) / sd) if sd > 0 else math.nan,
                     "overlap_90": float(overlap / (high - low)) if high > low else math.nan})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", required=True, help="comma-separated SITE_IDs")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sites-dir", type=Path, default=DEFAULT_SITES_DIR)
    parser.add_argument("--config", type=Path, help="posterior config (JSON) of both runs; "
                        "its svi key is SVI's")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    try:
        rows = [row for row in read_sites_rows(args.sites_dir / "sites.csv")
                if row["SITE_ID"] in sites]
        missing = sorted(set(sites) - {row["SITE_ID"] for row in rows})
        if missing:
            raise CalibrationConfigError(f"--sites: {', '.join(missing)} not in "
                                         f"{args.sites_dir / 'sites.csv'}")
        variational = load_variational_config(args.config, seed=args.seed)
        nuts_config = load_posterior_config(args.config, chains=args.chains,
                                            warmup=args.warmup, samples=args.samples,
                                            seed=args.seed)
    except (CalibrationConfigError, OSError, ValueError) as error:
        print(f"svi_vs_nuts: error: {error}", file=sys.stderr)
        return 2
    nuts_config = dataclasses.replace(nuts_config, nuts=dataclasses.replace(
        nuts_config.nuts, max_tree_depth=args.max_tree_depth))
    variational = dataclasses.replace(variational, posterior=dataclasses.replace(
        variational.posterior, nuts=nuts_config.nuts))
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "sites.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    svi_dir = args.out / "svi"
    if not (svi_dir / "svi.json").exists():
        posterior_sites(args.sites_dir, svi_dir, variational, sites_csv=table)
    svi_record = json.loads((svi_dir / "svi.json").read_text())
    comparison, summary = [], []
    for site in sites:
        run = args.out / "nuts" / site
        if not (run / "diagnostics.json").exists():
            posterior_site(args.sites_dir / f"{site}.nc", run, nuts_config)
        diagnostics = json.loads((run / "diagnostics.json").read_text())
        with xr.open_dataset(run / "posterior.nc", group="posterior") as posterior:
            names = [n for n in posterior.data_vars if n in bayes.SPECS]
        nuts = _coordinates(run / "posterior.nc", nuts_config, names)
        svi = _coordinates(svi_dir / site / "posterior.nc", nuts_config, names)
        site_rows = [{"site": site, **row} for row in compare(nuts, svi)]
        comparison += site_rows
        shifts = np.abs([r["mean_shift"] for r in site_rows])
        summary.append({
            "site": site,
            "median_abs_mean_shift": float(np.nanmedian(shifts)),
            "max_abs_mean_shift": float(np.nanmax(shifts)),
            "median_sd_ratio": float(np.nanmedian([r["sd_ratio"] for r in site_rows])),
            "median_overlap_90": float(np.nanmedian([r["overlap_90"] for r in site_rows])),
            "nuts_max_r_hat": diagnostics.get("max_r_hat"),
            "nuts_min_ess_bulk": diagnostics.get("min_ess_bulk"),
            "nuts_divergences": diagnostics.get("divergences"),
            "nuts_seconds": diagnostics["timing"]["wall_seconds"],
            "svi_pareto_k": svi_record["sites"][site]["pareto_k"],
        })
    buffer = [",".join(comparison[0])] + [",".join(str(v) for v in row.values())
                                          for row in comparison]
    write_atomically(args.out / "comparison.csv",
                     lambda target: target.write_text("\n".join(buffer) + "\n"))
    lines = ["| " + " | ".join(summary[0]) + " |", "|" + "---|" * len(summary[0])]
    lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                for v in row.values()) + " |" for row in summary]
    text = (f"SVI ({svi_record['method']}, {svi_record['timing']['wall_seconds']:.0f} s for "
            f"{len(sites)} sites) against NUTS ({args.chains} chains, {args.warmup} warmup, "
            f"{args.samples} samples, tree depth <= {args.max_tree_depth}).\n\n"
            + "\n".join(lines) + "\n")
    write_atomically(args.out / "comparison.md", lambda target: target.write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
