"""Site posterior at DE-Hai: wall time, convergence and predictive coverage of one NUTS run.

    python benchmarks/posterior_site.py --out /tmp/posterior-DE-Hai [--chains 4] [--warmup 500]
        [--samples 500] [--structural-error] [--float64]

Runs ``differland posterior site`` on the DE-Hai driver of the shared flux sites (calibration
period from its ``sites.csv``) and prints the wall time, the largest rank-normalised split
R-hat, the smallest bulk ESS, the bulk ESS per second of wall time, the divergent transitions
and the share of test-period observations inside the 50 % and 90 % posterior predictive bands
of each stream. Timings depend on the load of the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(os.environ.get("DIFFERLAND_SHARED", REPO.parent / "shared")) / "data" / \
    "fluxsites" / "DE-Hai.nc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run directory (replaced)")
    parser.add_argument("--driver", type=Path, default=DRIVER)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--structural-error", action="store_true",
                        help="sample a scale of each stream's uncertainty")
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    arguments = parser.parse_args(argv)

    import dataclasses

    from differland import enable_float64
    from differland.calibrate.bayes import PosteriorConfig
    from differland.posterior_workflows import posterior_site

    if arguments.float64:
        enable_float64()
    config = dataclasses.replace(PosteriorConfig(),
                                 structural_error=arguments.structural_error)
    started = time.perf_counter()
    diagnostics = posterior_site(arguments.driver, arguments.out, config,
                                 chains=arguments.chains, warmup=arguments.warmup,
                                 samples=arguments.samples, progress=arguments.progress,
                                 overwrite=True)
    wall = time.perf_counter() - started
    timing = diagnostics["timing"]
    sampler = diagnostics["sampler"]
    print(f"site {diagnostics['site']}, {sampler['chains']} chains ({sampler['chain_method']}, "
          f"{sampler['precision']}), warmup {sampler['warmup']}, samples "
          f"{sampler['samples']}, {len(diagnostics['parameters'])} sampled quantities")
    print(f"wall time [s]: {wall:.1f} (initial fit {timing['initial_fit_seconds']:.1f}, "
          f"warmup {timing['warmup_seconds']:.1f}, sampling "
          f"{timing['sampling_seconds']:.1f}, outputs "
          f"{wall - timing['wall_seconds']:.1f})")
    print(f"max R-hat: {diagnostics['max_r_hat']!r}")
    print(f"min bulk ESS: {diagnostics['min_ess_bulk']!r}")
    print(f"min tail ESS: {diagnostics['min_ess_tail']!r}")
    print(f"min bulk ESS per second of wall time: {diagnostics['min_ess_bulk'] / wall!r}")
    print(f"divergences: {diagnostics['divergences']}")
    print(f"converged: {diagnostics['converged']} {'; '.join(diagnostics['reasons'])}")
    for warning in diagnostics["warnings"]:
        print(f"warning: {warning}")
    for stream, periods in diagnostics["coverage"].items():
        test = periods["test"]
        print(f"test coverage {stream}: 50 % band {test['coverage_50']!r}, 90 % band "
              f"{test['coverage_90']!r} ({test['observed_steps']} observed days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
