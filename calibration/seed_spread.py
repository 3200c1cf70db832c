"""The spread over seeds of the median test-period skill of several multi-site runs.

    python calibration/seed_spread.py runs/sites-seed0 runs/sites-seed1 ... --out spread.md

Each RUN folder is the output of ``calibration/sites.py`` (site calibrations) or of
``differland spatial cv`` (sites held out of the spatialization network); both write
``RUN/summary.csv`` with a ``median`` row. The table lists each run's medians of the
test-period NSE of GPP, RECO, NEE, ET and LAI, then their minimum–maximum and mean over the
runs. Runs are told apart by the seed in ``summary.json`` (site calibrations) or in the first
fold's ``folds/0/model/config.json`` (cross-validations), else by their folder name. The table
is written to ``--out`` (Markdown; refused if it exists, unless ``--overwrite``) and printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

VARIABLES = ("gpp", "reco", "nee", "et", "lai")


class OneLineParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one line on stderr, with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


class RunError(ValueError):
    """A run folder that cannot be read."""


def _column(row: dict, variable: str) -> str:
    """The column of a variable's test-period NSE: ``gpp`` (sites.py) or ``gpp_test`` (cv)."""
    for name in (variable, f"{variable}_test"):
        if name in row:
            return name
    raise KeyError(variable)


def run_medians(run: Path) -> dict[str, float]:
    """The median row of ``run/summary.csv``: test-period NSE per variable."""
    path = run / "summary.csv"
    if not path.is_file():
        raise RunError(f"{path}: not found (a folder of calibration/sites.py or spatial cv)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {row["site"]: row for row in csv.DictReader(handle)}
    if "median" not in rows:
        raise RunError(f"{path}: no median row")
    median = rows["median"]
    values = {}
    for variable in VARIABLES:
        try:
            text = median[_column(median, variable)]
        except KeyError:
            raise RunError(f"{path}: no column for the test-period NSE of {variable}") from None
        values[variable] = float(text) if text not in ("", None) else math.nan
    return values


def run_seed(run: Path) -> str:
    """The seed a run records, or its folder name."""
    for name, key in (("summary.json", ("seed",)),
                      ("folds/0/model/config.json", ("spatial", "seeds"))):
        path = run / name
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            for part in key:
                record = record.get(part) if isinstance(record, dict) else None
            if isinstance(record, list) and len(record) == 1:
                record = record[0]
            if record is not None:
                return str(record)
    return run.name


def spread_table(runs: list[Path]) -> str:
    """The Markdown table of every run's medians and their spread."""
    medians = [run_medians(run) for run in runs]
    header = "| run | seed | " + " | ".join(v.upper() for v in VARIABLES) + " |"
    lines = [header, "|---|---|" + "---|" * len(VARIABLES)]
    for run, values in zip(runs, medians, strict=True):
        cells = " | ".join(f"{values[v]:.3f}" if math.isfinite(values[v]) else "–"
                           for v in VARIABLES)
        lines.append(f"| {run.name} | {run_seed(run)} | {cells} |")
    spread, mean = [], []
    for variable in VARIABLES:
        finite = [m[variable] for m in medians if math.isfinite(m[variable])]
        spread.append(f"{min(finite):.3f}–{max(finite):.3f}" if finite else "–")
        mean.append(f"{statistics.fmean(finite):.3f}" if finite else "–")
    lines.append(f"| **min–max over {len(runs)} runs** | | " + " | ".join(spread) + " |")
    lines.append("| **mean** | | " + " | ".join(mean) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (summary.csv inside)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown table to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"--out {args.out} exists; pass --overwrite to replace it")
    if any(args.out.resolve() == (run / "summary.csv").resolve() for run in args.runs):
        parser.error(f"--out {args.out} would replace an input")
    try:
        table = spread_table(args.runs)
    except RunError as error:
        print(f"seed_spread.py: {error}", file=sys.stderr)
        return 2
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    temporary.write_text(table, encoding="utf-8")
    temporary.replace(args.out)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
