"""Spatialization network: training time on the shared flux sites and prediction latency.

Trains one network (the default :class:`~differland.spatial.SpatialConfig`, or
``--iterations``) on every site of ``--sites-dir`` (full calibration periods), then loads
the saved model and times the prediction and simulation of one site, as ``differland
spatial predict`` does. Prints wall times, iterations per second and site-iterations per
second.

    python benchmarks/spatial_training.py --sites-dir ../shared/data/fluxsites
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites-dir", type=Path,
                        default=REPO_ROOT / ".." / "shared" / "data" / "fluxsites")
    parser.add_argument("--iterations", type=int, default=None,
                        help="Adam iterations (default: the configuration's)")
    args = parser.parse_args()

    import jax

    from differland.spatial_workflows import (
        load_config,
        load_model,
        predict_site,
        read_sites,
        spatial_train,
    )

    config = load_config(None, iterations=args.iterations)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "model"
        started = time.perf_counter()
        record = spatial_train(args.sites_dir, model_dir, config, progress=False)
        train_seconds = time.perf_counter() - started
        iterations = sum(seed["iterations"] for seed in record["seeds"].values())
        sites = record["sites"]
        print(f"backend {jax.default_backend()}, {sites} sites, {iterations} iterations "
              f"(early stopping: {[s['stopped_early'] for s in record['seeds'].values()]})")
        print(f"training, compilation included: {train_seconds:.1f} s "
              f"({iterations / train_seconds:.1f} iterations/s, "
              f"{iterations * sites / train_seconds:.0f} site-iterations/s)")

        started = time.perf_counter()
        model = load_model(model_dir)
        load_seconds = time.perf_counter() - started
        site = read_sites(args.sites_dir / "sites.csv", args.sites_dir,
                          config.extra_predictors)[0]
        timings = []
        for attempt in range(3):
            started = time.perf_counter()
            predict_site(model, site, Path(scratch) / f"predicted_{attempt}" / site.site_id)
            timings.append(time.perf_counter() - started)
        print(f"load the model: {load_seconds:.2f} s; predict, simulate and write one site "
              f"({site.site_id}): first {timings[0]:.2f} s (compilation), then "
              f"{min(timings[1:]):.2f} s")


if __name__ == "__main__":
    main()
