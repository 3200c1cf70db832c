"""A global grid at scale: build, train in minibatches and predict, with peak memory.

Usage::

    python benchmarks/grid_scale.py [--work DIR] [--resolution 0.5] [--years 20]
                                    [--iterations 200] [--seed 3]

Builds the twin world of every land cell at ``--resolution`` degrees over ``--years`` years
of months (``differland world``), trains the network for ``--iterations`` minibatches twice —
the per-cell arrays held in memory, then memory-mapped from disk (``--memory 0``) — and
predicts the maps, each step a fresh process. Prints for each step its wall time (reading
the grid included) and peak resident memory (which counts the memory-mapped pages the process
touched), and for the trainings the cells per minibatch and the pixel-steps per second of the
training loop (minibatch reads, forward, gradient, update and the validation passes; cells
of the steps, padding included, times months, over the training's wall time).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

STEP = """
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
from differland import cli
status = cli.main(sys.argv[1:])
print(json.dumps({"status": status, "wall_seconds": time.perf_counter() - started,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def step(arguments: list[str]) -> dict:
    """Run one differland command in a fresh process; its status, wall time and peak RSS."""
    result = subprocess.run([sys.executable, "-c", STEP, *arguments], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    if record["status"] != 0:
        sys.exit(f"{' '.join(arguments)} exited with {record['status']}:\n"
                 f"{result.stderr[-3000:]}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/grid_scale"))
    parser.add_argument("--resolution", type=float, default=0.5)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.resolution:g}deg_{args.years}y_seed{args.seed}"
    world = args.work / f"world_{tag}.zarr"
    rows = []
    if not world.exists():
        record = step(["world", "--out", str(world), "--resolution", str(args.resolution),
                       "--years", str(args.years), "--seed", str(args.seed), "--no-progress"])
        rows.append(("world", record, ""))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    models = {}
    for label, memory in (("train, in memory", "64"), ("train, from disk", "0")):
        model = args.work / f"model_{tag}_{stamp}_{memory}"
        record = step(["spatial", "train", "--grid", str(world), "--out", str(model),
                       "--iterations", str(args.iterations), "--memory", memory,
                       "--no-progress"])
        history = json.loads((model / "history.json").read_text())
        seed = next(iter(history.values()))
        training = json.loads((model / "training.json").read_text())
        rate = seed["cells_trained"] * _months(world) / training["wall_seconds"]
        rows.append((label, record, f"{training['cells']} cells, {seed['batch_pixels']} per "
                                    f"minibatch, {rate / 1e6:.2f} M pixel-steps/s of training"))
        models[memory] = model
    record = step(["spatial", "predict", "--model", str(models["64"]), "--grid", str(world),
                   "--out", str(args.work / f"prediction_{tag}_{stamp}")])
    rows.append(("predict", record, ""))
    print(f"grid {tag}: {args.iterations} training iterations")
    print("| step | wall [s] | peak memory [GiB] | |")
    print("|---|---|---|---|")
    for label, record, note in rows:
        print(f"| {label} | {record['wall_seconds']:.0f} | {record['peak_gib']:.1f} | {note} |")
    print(f"machine peak over all steps: "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.1f} GiB")


def _months(world: Path) -> int:
    from differland.io import read_grid_driver

    return read_grid_driver(world).n_steps


if __name__ == "__main__":
    main()
