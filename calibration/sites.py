"""Calibrate the site model at every flux site in a folder and write one summary table.

    python calibration/sites.py --sites-dir ../shared/data/fluxsites --out runs/

Each site gets a run directory ``OUT/SITE`` (see ``differland calibrate site``); the summary
``OUT/summary.csv`` and ``OUT/summary.md`` list the test-period NSE per variable and site, and
the median over sites. Sites run in parallel worker processes; a rerun resumes from the
checkpoints of unfinished sites and reuses finished ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

VARIABLES = ("gpp", "reco", "nee", "et", "lai")
SMOKE = {"n_starts": 2, "max_iterations": 20, "chunk": 10}
SMOKE_REFINE_ITERATIONS = 10


def _calibrate(driver: str, out: str, config_path: str | None, overrides: dict,
               float64: bool, refine_iterations: int | None = None) -> dict:
    from differland import enable_float64
    from differland.cli import load_calibration_config
    from differland.workflows import calibrate_site

    if float64:
        enable_float64()
    config = load_calibration_config(Path(config_path) if config_path else None)
    import dataclasses

    config = dataclasses.replace(config, gradient=dataclasses.replace(config.gradient,
                                                                      **overrides))
    if refine_iterations is not None:
        config = dataclasses.replace(config, refine_iterations=refine_iterations)
    return calibrate_site(driver, out, config, progress=False)


def summary_rows(results: dict[str, dict]) -> list[dict]:
    """One row per site (test NSE per variable) plus the median row."""
    rows = []
    for site in sorted(results):
        skill = results[site].get("skill", {})
        rows.append({"site": site, **{v: skill.get(v, {}).get("test", {}).get("nse", math.nan)
                                      for v in VARIABLES}})
    median = {"site": "median"}
    for variable in VARIABLES:
        values = [row[variable] for row in rows if math.isfinite(row[variable])]
        median[variable] = statistics.median(values) if values else math.nan
    return [*rows, median]


def write_summary(out: Path, rows: list[dict], seconds: float) -> None:
    with open(out / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["site", *VARIABLES])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| site | " + " | ".join(v.upper() for v in VARIABLES) + " |",
             "|---|" + "---|" * len(VARIABLES)]
    for row in rows:
        cells = " | ".join(f"{row[v]:.2f}" for v in VARIABLES)
        name = f"**{row['site']}**" if row["site"] == "median" else row["site"]
        lines.append(f"| {name} | {cells} |")
    lines.append("")
    lines.append(f"Test-period NSE; wall time {seconds / 60:.1f} min.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites-dir", type=Path, required=True,
                        help="folder of site drivers (*.nc), optionally with sites.csv")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--sites", nargs="*", help="only these site ids")
    parser.add_argument("--config", type=Path, help="JSON calibration config")
    parser.add_argument("--workers", type=int, default=2, help="parallel site processes")
    parser.add_argument("--seed", type=int, help="seed of the random starts")
    parser.add_argument("--starts", type=int, help="random starts per site")
    parser.add_argument("--iterations", type=int, help="maximum iterations per site")
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    parser.add_argument("--smoke", action="store_true",
                        help="one site, a few iterations (a quick end-to-end check)")
    args = parser.parse_args(argv)

    drivers = sorted(args.sites_dir.glob("*.nc"))
    if args.sites:
        wanted = set(args.sites)
        drivers = [d for d in drivers if d.stem in wanted]
        missing = wanted - {d.stem for d in drivers}
        if missing:
            print(f"sites.py: error: no driver for {', '.join(sorted(missing))} in "
                  f"{args.sites_dir}", file=sys.stderr)
            return 2
    if not drivers:
        print(f"sites.py: error: no *.nc drivers in {args.sites_dir}", file=sys.stderr)
        return 2
    overrides = dict(SMOKE) if args.smoke else {}
    if args.smoke:
        drivers = drivers[:1]
    for key, value in (("seed", args.seed), ("n_starts", args.starts),
                       ("max_iterations", args.iterations)):
        if value is not None:
            overrides[key] = value
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results: dict[str, dict] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=context) as pool:
        futures = {pool.submit(_calibrate, str(d), str(args.out / d.stem),
                               str(args.config) if args.config else None, overrides,
                               args.float64, SMOKE_REFINE_ITERATIONS if args.smoke else None):
                   d.stem for d in drivers}
        for future in as_completed(futures):
            site = futures[future]
            try:
                results[site] = future.result()
            except Exception as error:  # report every site, fail at the end
                print(f"sites.py: {site}: {type(error).__name__}: {error}", file=sys.stderr)
                results[site] = {}
                continue
            tests = " ".join(f"{v}={results[site]['skill'][v]['test']['nse']:.2f}"
                             for v in VARIABLES if v in results[site]["skill"])
            print(f"{site}: {tests} ({time.perf_counter() - started:.0f} s)", flush=True)
    rows = summary_rows(results)
    seconds = time.perf_counter() - started
    write_summary(args.out, rows, seconds)
    (args.out / "summary.json").write_text(json.dumps(
        {"rows": rows, "wall_seconds": seconds, "overrides": overrides}, indent=2))
    print((args.out / "summary.md").read_text())
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
