"""The demo's recovery over several twin worlds: the spread over world seeds.

    python calibration/twin_worlds.py --seeds 0,1,2,3,4 --out runs/worlds

For every world seed S, ``OUT/seed-S`` is a run of ``differland demo`` on the world of that
seed (the demo's settings: Europe at 2°, 8 years, an ensemble of three networks; the seed
draws the planted functions, the weather anomalies and the observation noise). An unfinished
world resumes where it stopped; a finished one (``prediction/recovery.json`` written) is read
again, not recomputed. ``OUT/spread.md`` then gives,
per parameter, how often it was identified and the minimum, median and maximum of its R² on
the test cells; per flux, the same of the test-cell NSE; and the regional budgets within two
ensemble standard deviations. ``--smoke`` runs the demo's tiny world instead (a check that it
runs).

With ``--posterior [--config GRID.json]``, ``OUT/seed-S`` holds the world (``world.zarr``) and
a variational network over it (``differland posterior spatial --grid``, in ``posterior/``)
instead of the demo's ensemble, and the table adds, per parameter, the share of test cells
whose 90 % credible interval holds the planted value, and the regional budgets whose 90 %
interval holds the true one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one line on stderr, with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0: {text!r}")
    return seeds


def _range(values: list[float]) -> str:
    return (f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
            if values else "–")


def spread_table(reports: dict[int, dict]) -> str:
    """Markdown: the recovery of every world (``{seed: recovery.json}``) summarised."""
    seeds = sorted(reports)
    first = reports[seeds[0]]
    lines = [f"Recovery over {len(seeds)} twin worlds (seeds {', '.join(map(str, seeds))}); "
             "min / median / max over the worlds.", "",
             "| parameter | identified in | R² test cells |", "|---|---|---|"]
    intervals = all("coverage_90_test_cells" in row for s in seeds
                    for row in reports[s]["parameters"].values())
    if intervals:
        lines[-2:] = ["| parameter | identified in | R² test cells | 90 % interval holds the "
                      "truth (share of test cells) |", "|---|---|---|---|"]
    for name in first["parameters"]:
        rows = [reports[s]["parameters"][name] for s in seeds]
        identified = sum(bool(row["identified"]) for row in rows)
        line = (f"| {name} | {identified} of {len(seeds)} | "
                f"{_range([row['r2_test_cells'] for row in rows])} |")
        if intervals:
            line += f" {_range([row['coverage_90_test_cells'] for row in rows])} |"
        lines.append(line)
    lines += ["", "| flux | NSE test cells |", "|---|---|"]
    for name in first["fluxes"]:
        values = [reports[s]["fluxes"][name]["nse_test_cells"] for s in seeds]
        lines.append(f"| {name} | {_range(values)} |")
    budgets = [f"{reports[s]['budgets_within_two_sd']} of {reports[s]['budgets']}"
               for s in seeds if reports[s].get("budgets")]
    if budgets:
        lines += ["", "Regional NBE budgets within two ensemble sd of the truth, per world: "
                  + ", ".join(budgets) + "."]
    within = [f"{reports[s]['budgets_within_90']} of {reports[s]['budgets']}"
              for s in seeds if "budgets_within_90" in reports[s]]
    if within:
        lines += ["", "Regional NBE budgets whose 90 % interval holds the truth, per world: "
                  + ", ".join(within) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=_seeds, required=True, help="world seeds, e.g. 0,1,2,3,4")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--smoke", action="store_true", help="the demo's tiny world")
    parser.add_argument("--posterior", action="store_true",
                        help="a variational network over each world instead of the demo")
    parser.add_argument("--config", type=Path,
                        help="with --posterior: grid configuration JSON (keys of GridConfig)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    if args.config is not None and not args.posterior:
        parser.error("--config: only with --posterior")

    from differland.calibrate.site import CalibrationConfigError
    from differland.grid_workflows import demo, posterior_world
    from differland.io import write_atomically
    from differland.io.errors import DriverError, OutputError

    reports = {}
    for seed in args.seeds:
        folder = args.out / f"seed-{seed}"
        finished = folder / "prediction" / "recovery.json"
        if finished.is_file() and not args.posterior:
            reports[seed] = json.loads(finished.read_text(encoding="utf-8"))
            continue
        try:
            if args.posterior:
                reports[seed] = posterior_world(folder, args.config, smoke=args.smoke,
                                                progress=args.progress, world_seed=seed)
            else:
                reports[seed] = demo(folder, smoke=args.smoke, progress=args.progress,
                                     world_seed=seed)
        except (OutputError, DriverError, CalibrationConfigError) as error:
            print(f"twin_worlds.py: {error}", file=sys.stderr)
            return 2
    table = spread_table(reports)
    write_atomically(args.out / "spread.md",
                     lambda target: target.write_text(table, encoding="utf-8"))
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
