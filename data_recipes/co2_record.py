"""Write the background CO2 record shipped with differland (differland/data/co2_global_annual.csv).

    pip install --no-deps fair==1.6.4
    python data_recipes/co2_record.py [--source rcmip-concentrations-...csv] \\
        [--out differland/data/co2_global_annual.csv] [--overwrite]

The record is the annual global-mean surface CO2 mole fraction [ppm] for 1850-2030: the CMIP6
historical concentrations (Meinshausen et al. 2017) to 2014, then the SSP2-4.5 concentrations
(Meinshausen et al. 2020). Both come from the RCMIP v5.1.0 annual means compiled by Nicholls et
al. (2020), in the file ``fair/SSPs/data/rcmip-concentrations-annual-means-5-1-0-ssp-only.csv``
of the Python package ``fair`` 1.6.4 (row ``MESSAGE-GLOBIOM``, ``ssp245``, ``World``,
``Atmospheric Concentrations|CO2``, ``ppm``). The historical years are checked to be identical
in every SSP row of that file. The output has ``#`` comment lines naming the source, its SHA-256,
the licence and the citations, then the columns ``year,co2_ppm`` (3 decimals).
``differland/data/CO2_LICENSE.md`` carries the attribution and licence terms.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from recipe_common import (
    RecipeParser,
    add_overwrite_option,
    check_output,
    recipe_error,
    replace_atomically,
    run_main,
    text_marker,
)

RECIPE = "co2_record"
PROG = "co2_record.py"
SOURCE_DISTRIBUTION = ("fair", "1.6.4")
"""Python distribution (name, version) whose data file the record is taken from."""
SOURCE_FILE = "fair/SSPs/data/rcmip-concentrations-annual-means-5-1-0-ssp-only.csv"
"""The RCMIP concentration file inside that distribution."""
VARIABLE = "Atmospheric Concentrations|CO2"
SCENARIO = "ssp245"
MODEL = "MESSAGE-GLOBIOM"
REGION = "World"
UNITS = "ppm"
FIRST_YEAR, LAST_HISTORICAL_YEAR, LAST_YEAR = 1850, 2014, 2030
"""Years of the record: historical to LAST_HISTORICAL_YEAR, SSP2-4.5 after."""
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "differland" / "data" / \
    "co2_global_annual.csv"
DECIMALS = 3
"""Decimals of the values written [ppm]."""
CITATIONS = (
    "Meinshausen, M. et al. (2017): Historical greenhouse gas concentrations for climate "
    "modelling (CMIP6), Geosci. Model Dev., 10, 2057-2116, doi:10.5194/gmd-10-2057-2017",
    "Meinshausen, M. et al. (2020): The shared socio-economic pathway (SSP) greenhouse gas "
    "concentrations and their extensions to 2500, Geosci. Model Dev., 13, 3571-3605, "
    "doi:10.5194/gmd-13-3571-2020",
    "Nicholls, Z. R. J. et al. (2020): Reduced Complexity Model Intercomparison Project Phase "
    "1: introduction and evaluation of global-mean temperature response, Geosci. Model Dev., "
    "13, 5175-5190, doi:10.5194/gmd-13-5175-2020",
)


def default_source() -> Path:
    """The RCMIP concentration file of the installed ``fair`` distribution.

    Raises:
        RecipeError: ``fair`` is not installed, or not in version 1.6.4.
    """
    name, version = SOURCE_DISTRIBUTION
    try:
        distribution = metadata.distribution(name)
    except metadata.PackageNotFoundError as error:
        raise recipe_error("--source", f"the {name} package is not installed (pip install "
                                       f"--no-deps {name}=={version}), or give --source"
                           ) from error
    if distribution.version != version:
        raise recipe_error("--source", f"{name} {distribution.version} is installed; the "
                                       f"record is made from {name} {version}")
    return Path(str(distribution.locate_file(SOURCE_FILE)))


def co2_rows(path: Path) -> pd.DataFrame:
    """The global CO2 rows of the RCMIP file, one per scenario, columns = years (float).

    Raises:
        RecipeError: unreadable file or no CO2 row for the scenario.
    """
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise recipe_error(path, f"cannot read as CSV ({error})") from error
    for column in ("Model", "Scenario", "Region", "Variable", "Unit"):
        if column not in table.columns:
            raise recipe_error(path, "missing column", column)
    rows = table[(table["Variable"] == VARIABLE) & (table["Region"] == REGION)
                 & (table["Unit"] == UNITS)]
    if not ((rows["Scenario"] == SCENARIO) & (rows["Model"] == MODEL)).any():
        raise recipe_error(path, f"no {MODEL} {SCENARIO} {REGION} row of {VARIABLE} [{UNITS}]")
    years = [str(year) for year in range(FIRST_YEAR, LAST_YEAR + 1)]
    missing = [year for year in years if year not in rows.columns]
    if missing:
        raise recipe_error(path, f"missing year column(s) {', '.join(missing[:5])}")
    values = rows[years].apply(pd.to_numeric, errors="coerce")
    values.index = rows["Model"] + " " + rows["Scenario"]
    return values


def annual_record(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Years and annual-mean CO2 [ppm]: historical to 2014, SSP2-4.5 after.

    Raises:
        RecipeError: a missing value, or historical years that differ between scenarios.
    """
    rows = co2_rows(path)
    historical = [str(year) for year in range(FIRST_YEAR, LAST_HISTORICAL_YEAR + 1)]
    spread = (rows[historical].max() - rows[historical].min()).max()
    if not spread <= 1e-9:
        raise recipe_error(path, f"the historical years differ between scenarios (by up to "
                                 f"{spread:g} ppm)")
    series = rows.loc[f"{MODEL} {SCENARIO}"]
    values = series.to_numpy(np.float64)
    if not np.all(np.isfinite(values)):
        raise recipe_error(path, f"missing value(s) in the {SCENARIO} row")
    return series.index.astype(int).to_numpy(), values


def record_text(years: np.ndarray, values: np.ndarray, digest: str) -> str:
    """The CSV text: marker line, comment header, then ``year,co2_ppm`` rows."""
    name, version = SOURCE_DISTRIBUTION
    header = [
        text_marker(RECIPE),
        f"# Annual global-mean surface CO2 mole fraction [ppm], {years[0]}-{years[-1]}: CMIP6 "
        f"historical to {LAST_HISTORICAL_YEAR}, SSP2-4.5 from {LAST_HISTORICAL_YEAR + 1}.",
        f"# Source: RCMIP v5.1.0 annual means ({Path(SOURCE_FILE).name}, row {MODEL} "
        f"{SCENARIO} {REGION} '{VARIABLE}' [{UNITS}]) as shipped in the Python package "
        f"{name} {version}; sha256 {digest}.",
        "# Licence: the CMIP6 greenhouse-gas concentrations of the University of Melbourne "
        "are licensed under Creative Commons Attribution-ShareAlike 4.0 (CC BY-SA 4.0); this "
        "derived table is shared under the same terms. See CO2_LICENSE.md beside this file.",
        *(f"# Cite: {citation}" for citation in CITATIONS),
        f"# Values rounded to {DECIMALS} decimals.",
    ]
    rows = [f"{year},{value:.{DECIMALS}f}" for year, value in zip(years, values, strict=True)]
    return "\n".join([*header, "year,co2_ppm", *rows]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line interface."""
    parser = RecipeParser(
        prog=PROG,
        description="Extract annual global-mean CO2 (CMIP6 historical + SSP2-4.5, 1850-2030) "
                    "from the RCMIP file shipped in fair 1.6.4 into differland's background "
                    "CO2 record.")
    parser.add_argument("--source", type=Path,
                        help=f"the RCMIP concentration CSV (default: {SOURCE_FILE} of the "
                             "installed fair 1.6.4)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output CSV (default: differland/data/co2_global_annual.csv)")
    add_overwrite_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> None:
    """Check the output, read the source, write the record and print one summary line."""
    source = arguments.source if arguments.source is not None else default_source()
    if not source.is_file():
        raise recipe_error(source, "file does not exist")
    check_output(arguments.out, RECIPE, {"source": source}, arguments.overwrite)
    years, values = annual_record(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    text = record_text(years, values, digest)
    replace_atomically(arguments.out, lambda target: target.write_text(text, encoding="utf-8"))
    print(f"{PROG}: wrote {years.size} years ({years[0]}-{years[-1]}, {values[0]:.3f} to "
          f"{values[-1]:.3f} ppm) to {arguments.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
