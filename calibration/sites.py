"""Calibrate the site model at every flux site in a folder and write one summary table.

    python calibration/sites.py --sites-dir ../shared/data/fluxsites --out runs/

Each site gets a run directory ``OUT/SITE`` (see ``differland calibrate site``); the summary
``OUT/summary.csv``, ``OUT/summary.md`` and ``OUT/summary.json`` list the test-period NSE per
variable and site, each site's status (``ok`` or why it failed), and the median over the sites
that ran. Sites run in parallel worker processes; a site that fails is reported and the others
go on, and the script then exits with status 1. A rerun resumes unfinished sites from their
checkpoints and reuses the results of finished ones (``--overwrite`` calibrates them again;
a finished run of another configuration is refused). A configuration that cannot be run is
refused before any site starts (exit status 2). SIGTERM or Ctrl-C stops the workers with the
script (exit status 143 or 130); rerunning the command then resumes from the checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

VARIABLES = ("gpp", "reco", "nee", "et", "lai")
SMOKE = {"n_starts": 2, "max_iterations": 20, "chunk": 10}
SMOKE_REFINE_ITERATIONS = 10


class Terminated(Exception):
    """SIGTERM reached the parent process."""


def _raise_terminated(signum, frame):
    raise Terminated


def site_config(config_path: str | None, overrides: dict, refine_iterations: int | None):
    """The calibration configuration every site runs: the JSON file, then the overrides."""
    import dataclasses

    from differland.cli import load_calibration_config

    config = load_calibration_config(Path(config_path) if config_path else None)
    config = dataclasses.replace(config, gradient=dataclasses.replace(config.gradient,
                                                                      **overrides))
    if refine_iterations is not None:
        config = dataclasses.replace(config, refine_iterations=refine_iterations)
    return config


def _calibrate(driver: str, out: str, config_path: str | None, overrides: dict,
               float64: bool, refine_iterations: int | None = None,
               overwrite: bool = False) -> dict:
    from differland import enable_float64
    from differland.workflows import calibrate_site

    if float64:
        enable_float64()
    config = site_config(config_path, overrides, refine_iterations)
    inputs = (Path(config_path),) if config_path else ()
    return calibrate_site(driver, out, config, progress=False, overwrite=overwrite,
                          inputs=inputs)


def finished_metrics(run: Path, calibration: dict) -> dict | None:
    """The metrics of a finished run directory (its completion record), else ``None``.

    Raises:
        ValueError: the run finished with another calibration configuration.
    """
    from differland.workflows import COMPLETION_RECORD

    try:
        metrics = json.loads((run / COMPLETION_RECORD).read_text(encoding="utf-8"))
        record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from differland.calibrate.site import CalibrationConfigError, SiteCalibrationConfig

    try:  # read through the option registry, so that a record of an earlier version compares
        same = (SiteCalibrationConfig.from_dict(record.get("calibration"))
                == SiteCalibrationConfig.from_dict(calibration))
    except CalibrationConfigError:
        same = False
    if not same:
        raise ValueError(f"{run}: finished with another configuration; pass --overwrite to "
                         "calibrate it again, or choose another --out")
    return metrics


def summary_rows(results: dict[str, dict], errors: dict[str, str] | None = None) -> list[dict]:
    """One row per site (test NSE per variable and status) plus the median row, the median
    taken over the sites with a finite value."""
    errors = errors or {}
    rows = []
    for site in sorted(results):
        skill = results[site].get("skill", {})
        rows.append({"site": site, **{v: skill.get(v, {}).get("test", {}).get("nse", math.nan)
                                      for v in VARIABLES},
                     "status": f"failed: {errors[site]}" if site in errors else "ok"})
    median = {"site": "median"}
    for variable in VARIABLES:
        values = [row[variable] for row in rows if math.isfinite(row[variable])]
        median[variable] = statistics.median(values) if values else math.nan
    n_ok = sum(row["status"] == "ok" for row in rows)
    median["status"] = f"{n_ok} of {len(rows)} sites"
    return [*rows, median]


def write_summary(out: Path, rows: list[dict], seconds: float, overrides: dict, seed: int,
                  config_path: str | None = None) -> None:
    """``summary.csv``, ``summary.md`` and ``summary.json`` (missing values as empty cells,
    dashes and nulls), with the seed, the configuration file and the wall time of the run."""
    from differland.io import write_atomically, write_json

    def write_csv(target: Path) -> None:
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["site", *VARIABLES, "status"])
            writer.writeheader()
            writer.writerows({k: "" if isinstance(v, float) and not math.isfinite(v) else v
                              for k, v in row.items()} for row in rows)

    write_atomically(out / "summary.csv", write_csv)
    lines = ["| site | " + " | ".join(v.upper() for v in VARIABLES) + " |",
             "|---|" + "---|" * len(VARIABLES)]
    for row in rows:
        # the median gets a third decimal, so that a value just below a two-decimal
        # target is not shown rounded up to it
        digits = 3 if row["site"] == "median" else 2
        cells = " | ".join(f"{row[v]:.{digits}f}" if math.isfinite(row[v]) else "–"
                           for v in VARIABLES)
        name = f"**{row['site']}**" if row["site"] == "median" else row["site"]
        lines.append(f"| {name} | {cells} |")
    lines.append("")
    sites, median = rows[:-1], rows[-1]
    lines.append(f"Test-period NSE; median over {median['status']}; seed {seed}; "
                 f"configuration {config_path or 'default'}; wall time {seconds / 60:.1f} min.")
    failed = [row for row in sites if row["status"] != "ok"]
    if failed:
        lines.append("")
        lines.extend(f"- {row['site']} {row['status']}" for row in failed)
    text = "\n".join(lines) + "\n"
    write_atomically(out / "summary.md", lambda target: target.write_text(text, encoding="utf-8"))
    json_rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in row.items()} for row in rows]
    write_json(out / "summary.json", {"rows": json_rows, "wall_seconds": seconds, "seed": seed,
                                      "config": config_path, "overrides": overrides})


class OneLineParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one line on stderr, with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="sites.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites-dir", type=Path, required=True,
                        help="folder of site drivers (*.nc), optionally with sites.csv")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--sites", nargs="*", help="only these site ids")
    parser.add_argument("--config", type=Path, help="JSON calibration config")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel site processes (default 2)")
    parser.add_argument("--seed", type=int, help="seed of the random starts")
    parser.add_argument("--starts", type=int, help="random starts per site")
    parser.add_argument("--iterations", type=int, help="maximum iterations per site")
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    parser.add_argument("--smoke", action="store_true",
                        help="one site, a few iterations (a quick end-to-end check)")
    parser.add_argument("--overwrite", action="store_true",
                        help="calibrate finished sites again, replacing their runs (otherwise "
                             "their results are reused)")
    args = parser.parse_args(argv)

    if args.workers < 1:
        parser.error(f"argument --workers: must be at least 1, not {args.workers}")
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
    refine_iterations = SMOKE_REFINE_ITERATIONS if args.smoke else None
    config_path = str(args.config) if args.config else None
    from differland.cli import CliError
    from differland.io import check_writable_location, read_sites_rows

    try:  # every site runs the same configuration: refuse a bad one before any starts
        config = site_config(config_path, overrides, refine_iterations)
        seed = config.gradient.seed
        if (args.sites_dir / "sites.csv").is_file():
            read_sites_rows(args.sites_dir / "sites.csv")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"{args.out}: --out is a file; give a folder")
        check_writable_location(args.out / "summary.csv")
        finished = {} if args.overwrite else {
            d.stem: finished_metrics(args.out / d.stem, json.loads(json.dumps(config.to_dict())))
            for d in drivers}
    except (CliError, ValueError) as error:  # ValueError: the differland errors included
        print(f"sites.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=context)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    for driver in list(drivers):  # finished sites keep their results
        if finished.get(driver.stem) is not None:
            results[driver.stem] = finished[driver.stem]
            drivers.remove(driver)
            print(f"{driver.stem}: finished earlier, results reused (--overwrite to "
                  "calibrate it again)", flush=True)
    try:
        futures = {pool.submit(_calibrate, str(d), str(args.out / d.stem), config_path,
                               overrides, args.float64, refine_iterations,
                               args.overwrite): d.stem
                   for d in drivers}
        for future in as_completed(futures):
            site = futures[future]
            try:
                results[site] = future.result()
            except Exception as error:  # report every site, fail at the end
                errors[site] = f"{type(error).__name__}: {error}"
                print(f"sites.py: {site}: {errors[site]}", file=sys.stderr)
                results[site] = {}
                continue
            tests = " ".join(f"{v}={results[site]['skill'][v]['test']['nse']:.2f}"
                             for v in VARIABLES if v in results[site]["skill"])
            print(f"{site}: {tests} ({time.perf_counter() - started:.0f} s)", flush=True)
    except (Terminated, KeyboardInterrupt) as stop:
        # Stop the workers too: a pool left to shut down normally would finish every
        # running site first. Their checkpoints stay, so a rerun resumes.
        for child in multiprocessing.active_children():
            child.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"sites.py: stopped ({'SIGTERM' if isinstance(stop, Terminated) else 'interrupt'}"
              f"); rerun the same command to resume from the checkpoints in {args.out}",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    pool.shutdown()
    rows = summary_rows(results, errors)
    write_summary(args.out, rows, time.perf_counter() - started, overrides, seed, config_path)
    print((args.out / "summary.md").read_text())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
