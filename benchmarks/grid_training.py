"""Training throughput over grid cells: the network, the model and the full likelihood.

Usage::

    python benchmarks/grid_training.py [--cells 1000] [--months 276] [--devices 1 2 4]
                                       [--repeats 5]

For each device count (a fresh process with that many host CPU devices), times the compiled
``value_and_grad`` of the grid objective (:class:`differland.spatial.grid.Objective`: the
spatialization network, the monthly global model, LAI, SIF, biomass and water-storage
streams of every cell and regional NBE means of 10 regions) on one minibatch of ``--cells``
cells x ``--months`` months of the benchmark's synthetic forcing
(``benchmarks/model_throughput.py``), the cell axis sharded over the devices. Prints the
median wall time, pixel-steps per second and the scaling against one device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(cells: int, months: int, devices: int, repeats: int) -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    import numpy as np

    sys.path.insert(0, str(HERE))
    from model_throughput import synthetic_global_forcing

    from differland.spatial.grid import (
        GridConfig,
        GridProblem,
        batch_specs,
        full_objective,
        new_network,
        pixel_mesh,
        place,
        replicate,
    )

    forcing = synthetic_global_forcing(cells, months)
    arrays = {name: np.asarray(getattr(forcing, name), np.float32)
              for name in forcing.__dataclass_fields__}
    rng = np.random.default_rng(0)
    streams = ("lai", "sif", "biomass", "ewt")
    shape = (len(streams), cells, months)
    n_inputs = 12
    regions = np.zeros((10, cells))
    regions[np.arange(cells) % 10, np.arange(cells)] = 1e9
    config = GridConfig(streams=streams, batch_pixels=cells)
    problem = GridProblem(arrays, rng.normal(size=(cells, n_inputs)).astype(np.float32),
                          rng.random(shape).astype(np.float32),
                          (rng.random(shape) < 0.8).astype(np.float32),
                          np.ones(shape, np.float32), streams, regions,
                          rng.normal(size=(1, 10, months)).astype(np.float32),
                          np.ones((1, 10, months), np.float32),
                          np.ones((1, 10, months), np.float32), ("nbe",),
                          np.zeros(cells, np.int8))
    mesh = pixel_mesh(devices)
    (graphdef, state), hybrid = new_network(n_inputs + 9, config, 0)
    # the one-hot plant functional types follow the numeric inputs
    problem = dataclasses.replace(problem, inputs=np.concatenate(
        [problem.inputs, np.eye(9, dtype=np.float32)[np.arange(cells) % 9]], axis=1))
    objective, batch = full_objective(problem, config, graphdef)
    trainable = replicate({"net": state, "hybrid": hybrid}, mesh)
    placed = place(batch, batch_specs(batch), mesh)
    step = jax.jit(jax.value_and_grad(objective.loss))
    started = time.perf_counter()
    jax.block_until_ready(step(trainable, placed))
    compile_seconds = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(step(trainable, placed))
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"devices": devices, "compile_s": compile_seconds, "seconds": seconds,
            "min_s": min(times), "pixel_steps_per_s": cells * months / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--months", type=int, default=276)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.cells, args.months, args.one, args.repeats)))
        return
    print(f"grid objective value_and_grad: {args.cells} cells x {args.months} months, "
          "network + model + likelihood (float32, CPU host devices)")
    results = []
    for devices in args.devices:
        output = subprocess.run(
            [sys.executable, __file__, "--cells", str(args.cells), "--months",
             str(args.months), "--repeats", str(args.repeats), "--one", str(devices)],
            capture_output=True, text=True, check=True, env=os.environ.copy())
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    base = results[0]["seconds"]
    print(f"{'devices':>8} {'compile [s]':>12} {'median [s]':>11} {'pixel-steps/s':>14} "
          f"{'speed-up':>9}")
    for r in results:
        print(f"{r['devices']:>8} {r['compile_s']:>12.1f} {r['seconds']:>11.3f} "
              f"{r['pixel_steps_per_s']:>14.3g} {base / r['seconds']:>9.2f}")
    print(f"cores on this machine: {os.cpu_count()}")


if __name__ == "__main__":
    main()
