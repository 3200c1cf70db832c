"""Side-by-side training speed: differland's grid objective and the published global DifferLand.

Usage::

    python benchmarks/published_side_by_side.py --published PATH/TO/DifferLand_Global
        [--pixels 1000] [--months 276] [--repeats 5] [--devices 1] [--without-flag] [--site]

``PATH/TO/DifferLand_Global`` is a checkout of https://github.com/JianingFang/DifferLand_Global
(the published code is not a package: it is imported from that folder, never copied here).

Both codes are timed in this one process, so they run under the same ``XLA_FLAGS``: importing
differland appends XLA:CPU's ``xla_cpu_small_while_loop_byte_threshold`` option (see
``differland/model.py``) before JAX starts its CPU backend, and the published code then runs
under it too. ``--without-flag`` additionally times the published code in a child process with
the ``XLA_FLAGS`` this script was started with (differland never imported there), labelled as
such.

Workload, the same for both: ``--pixels`` grid cells x ``--months`` monthly steps of the
synthetic DALEC993 forcing of ``benchmarks/model_throughput.py`` (the same numbers feed both
codes), float32, one batch, CPU.

* differland: the compiled ``value_and_grad`` of the grid objective (network + monthly global
  model + full likelihood: LAI, SIF, biomass and water-storage streams and regional NBE means),
  built and timed by ``measure`` of ``benchmarks/grid_training.py`` on one host device.
* published: ``jax.value_and_grad`` of ``loss_fn_with_edc`` (the training loss of
  ``experiments/calibration.py``) with respect to the four MLP weight sets, wired exactly as in
  that script: its ``forward`` function is read from ``experiments/calibration.py`` itself,
  ``batch_forward = jit(vmap(jit(forward)))`` and ``jit(value_and_grad(jit(loss)))``; the
  network widths are the script's defaults (3 x 32 neurons) for the 21 predictors of its
  ``PFT+CLIM+SOIL+AGE`` set; the 24 target/mask columns are random but finite (VOD unused, as in
  the script).

Each function is called once to compile, then ``--repeats`` times; the median wall time, the
pixel-steps per second and the ratio are printed. ``--site`` also times a one-site forward run
(published ``forward`` of one cell, jitted; differland ``simulate`` of one cell with the default
global parameters), both over ``--months`` steps.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = "https://github.com/JianingFang/DifferLand_Global"
N_PREDICTORS = 21  # LAT_SIGMOID + PFT (10) + CLIM (3) + AGE (2) + SOIL (5)
NEURONS = 32  # calibration.py default
HIDDEN_LAYERS = 3  # calibration.py default
N_LABEL_COLUMNS = 24  # 12 targets and their masks, the order of calibration.py's output_list
VOD_COLUMNS = (14, 15)  # VOD_TARGET = "none" in calibration.py: no data, zero mask
FLUXNET_COLUMNS = (16, 17, 18, 19, 20, 21)  # flux-tower targets: few cells carry them
LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
BACKEND_OPTIONS = "--xla_backend_extra_options="
MET_FIELDS = ("time", "t_min", "t_max", "ssrd", "co2", "doy", "burned_area", "vpd",
              "precipitation", "latitude", "delta_t", "mean_temperature", "mean_precipitation")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--published", type=Path, required=True,
                        help="checkout of the published DifferLand_Global repository")
    parser.add_argument("--pixels", type=int, default=1000)
    parser.add_argument("--months", type=int, default=276)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1,
                        help="host CPU devices over which differland shards the cells "
                             "(the published code runs on one)")
    parser.add_argument("--without-flag", action="store_true",
                        help="also time the published code in a child process without "
                             "differland's XLA option")
    parser.add_argument("--site", action="store_true",
                        help="also time a one-site forward run of each code")
    parser.add_argument("--published-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.months % 12:
        parser.error("--months must be whole years (the published loss averages per year)")
    return args


def published_checkout_ok(root: Path) -> bool:
    return all((root / part).is_file() for part in (
        "DifferLand/model/DALEC993.py", "DifferLand/optimization/loss_functions.py",
        "DifferLand/optimization/forward.py", "DifferLand/util/init_mlp_params.py",
        "experiments/calibration.py"))


def timed(function, arguments, repeats: int) -> dict:
    """Compile-and-first-call time, then ``repeats`` timed calls (as grid_training.measure)."""
    import jax

    started = time.perf_counter()
    first = jax.block_until_ready(function(*arguments))
    compile_seconds = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(function(*arguments))
        times.append(time.perf_counter() - started)
    return {"compile_s": compile_seconds, "seconds": statistics.median(times),
            "min_s": min(times), "first": first}


def synthetic_arrays(pixels: int, months: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(HERE))
    from model_throughput import synthetic_global_forcing

    forcing = synthetic_global_forcing(pixels, months)
    return {name: np.asarray(getattr(forcing, name), np.float32) for name in MET_FIELDS}


class Published:
    """The published training loss and forward run, wired as in its calibration script."""

    def __init__(self, root: Path, pixels: int, months: int, arrays: dict | None = None):
        import jax
        import jax.numpy as jnp
        import numpy as np

        sys.path.insert(0, str(root))
        from DifferLand.model.DALEC993 import DALEC993
        from DifferLand.optimization.forward import (
            embed_prediction_forward,
            parameter_prediction_forward,
        )
        from DifferLand.optimization.loss_functions import loss_fn_with_edc
        from DifferLand.util.init_mlp_params import init_mlp_params

        # The per-cell forward function is taken from the calibration script's own source (the
        # script itself reads its data at import, so it cannot be imported).
        script = (root / "experiments" / "calibration.py").read_text(encoding="utf-8")
        nodes = [node for node in ast.parse(script).body
                 if isinstance(node, ast.FunctionDef) and node.name == "forward"]
        if len(nodes) != 1:
            raise RuntimeError("experiments/calibration.py: no single top-level forward()")
        namespace = {"jax": jax, "jnp": jnp, "partial": partial,
                     "embed_prediction_forward": embed_prediction_forward,
                     "parameter_prediction_forward": parameter_prediction_forward}
        exec(compile(ast.Module(body=nodes, type_ignores=[]), "calibration.py", "exec"),
             namespace)

        self.model = DALEC993(water_stress_type="default")
        self.forward = partial(namespace["forward"], model=self.model)
        batch_forward = jax.jit(jax.vmap(jax.jit(self.forward), in_axes=[None, 0, 0]))
        loss_fn = partial(loss_fn_with_edc, batch_forward=batch_forward, pfn=self.model.pfn,
                          batch_size=pixels)
        self.loss_grad_fn = jax.jit(jax.value_and_grad(jax.jit(loss_fn)))

        model = self.model
        self.params = (
            init_mlp_params([N_PREDICTORS - 1] + [NEURONS] * HIDDEN_LAYERS, n=1),
            init_mlp_params([NEURONS, len(model.param_parmin)], n=2),
            init_mlp_params([NEURONS, len(model.pool_parmin)], n=3),
            init_mlp_params([NEURONS + 1, len(model.pheno_parmin)], n=4),
        )
        if arrays is None:
            arrays = synthetic_arrays(pixels, months)
        met = np.stack([arrays[name] for name in MET_FIELDS], axis=-1)
        rng = np.random.default_rng(0)
        predictors = rng.normal(size=(pixels, N_PREDICTORS)).astype(np.float32)
        labels = rng.random((pixels, months, N_LABEL_COLUMNS)).astype(np.float32)
        masks = (rng.random((pixels, months, N_LABEL_COLUMNS // 2)) < 0.8).astype(np.float32)
        labels[:, :, 1::2] = masks
        labels[:, :, VOD_COLUMNS[0]] = -9999.0
        labels[:, :, VOD_COLUMNS[1]] = 0.0
        tower = (np.arange(pixels) % 50 == 0).astype(np.float32)[:, None]
        for column in FLUXNET_COLUMNS[1::2]:
            labels[:, :, column] *= tower
        self.predictors = jnp.asarray(predictors)
        self.met = jnp.asarray(met)
        self.labels = jnp.asarray(labels)

    def value_and_grad(self, repeats: int) -> dict:
        result = timed(self.loss_grad_fn,
                       (self.params, self.predictors, self.met, self.labels), repeats)
        loss, _ = result.pop("first")
        result["loss"] = float(loss)
        return result

    def site_forward(self, repeats: int) -> dict:
        import jax
        import jax.numpy as jnp

        nbe = self.model.pfn.nbe

        def total_nbe(params, predictors, met):
            return jnp.sum(self.forward(params, predictors, met)[1][:, 0, nbe])

        result = timed(jax.jit(total_nbe), (self.params, self.predictors[0], self.met[0]),
                       repeats)
        result["value"] = float(result.pop("first"))
        return result


def differland_site_forward(pixels: int, months: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from differland import GlobalModel, LinearBeta, ModelConfig, default_parameters, simulate

    sys.path.insert(0, str(HERE))
    from model_throughput import synthetic_global_forcing

    forcing = jax.tree.map(lambda x: jnp.asarray(x[0], jnp.float32),
                           synthetic_global_forcing(pixels, months))
    config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta())
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), default_parameters("global"))

    def total_nbe(p, f):
        return jnp.sum(simulate(p, f, config).outputs.nbe)

    result = timed(jax.jit(total_nbe), (params, forcing), repeats)
    result["value"] = float(result.pop("first"))
    return result


def flags_without_loop_option(flags: str) -> str:
    """``flags`` with differland's XLA:CPU loop option taken out of the backend options."""
    words = []
    for word in flags.split():
        if word.startswith(BACKEND_OPTIONS):
            kept = [option for option in word[len(BACKEND_OPTIONS):].split(",")
                    if option and not option.startswith(LOOP_OPTION)]
            if not kept:
                continue
            word = BACKEND_OPTIONS + ",".join(kept)
        words.append(word)
    return " ".join(words)


def run_published_child(args: argparse.Namespace, flags: str) -> dict:
    import numpy as np

    env = os.environ.copy()
    env["XLA_FLAGS"] = flags
    with tempfile.TemporaryDirectory() as folder:
        forcing_file = Path(folder) / "forcing.npz"
        np.savez(forcing_file, **synthetic_arrays(args.pixels, args.months))
        command = [sys.executable, __file__, "--published", str(args.published), "--pixels",
                   str(args.pixels), "--months", str(args.months), "--repeats",
                   str(args.repeats), "--published-only", str(forcing_file)]
        output = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(output.stdout.strip().splitlines()[-1])


def row(label: str, result: dict, pixel_steps: int) -> str:
    return (f"  {label:44s} {result['compile_s']:9.1f} {result['seconds']:10.4f} "
            f"{result['min_s']:9.4f} {pixel_steps / result['seconds']:14.4g}")


def main(argv=None) -> None:
    args = parse_args(argv)
    root = args.published.expanduser().resolve()
    if not published_checkout_ok(root):
        print(f"published DifferLand_Global code not found at {root}: clone {SOURCE} "
              "and pass its folder as --published")
        sys.exit(2)
    args.published = root
    started_flags = os.environ.get("XLA_FLAGS", "")

    if args.published_only:
        # child process: the forcing comes from a file, so differland is never imported here
        import jax
        import numpy as np

        jax.config.update("jax_num_cpu_devices", 1)
        with np.load(args.published_only) as stored:
            arrays = {name: stored[name] for name in MET_FIELDS}
        published = Published(root, args.pixels, args.months, arrays)
        result = published.value_and_grad(args.repeats)
        result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        print(json.dumps(result))
        return

    import differland  # noqa: F401  (sets the XLA:CPU loop option before JAX starts)

    flags = os.environ.get("XLA_FLAGS", "")
    sys.path.insert(0, str(HERE))
    from grid_training import measure

    pixel_steps = args.pixels * args.months
    print(f"value_and_grad of each training loss: {args.pixels} pixels x {args.months} "
          f"months, float32, CPU, {args.repeats} timed repeats after one compiling call")
    print(f"XLA_FLAGS (both codes, this process): {flags!r}")
    ours = measure(args.pixels, args.months, args.devices, args.repeats)
    published = Published(root, args.pixels, args.months)
    theirs = published.value_and_grad(args.repeats)

    header = (f"  {'':44s} {'compile[s]':>9s} {'median[s]':>10s} {'min[s]':>9s} "
              f"{'pixel-steps/s':>14s}")
    print(header)
    label = "differland grid objective (net + likelihood)" if args.devices == 1 else \
        f"differland grid objective, {args.devices} host devices"
    print(row(label, ours, pixel_steps))
    print(row("published loss_fn_with_edc (MLPs + EDC)", theirs, pixel_steps))
    print(f"  published loss value {theirs['loss']:.6g} (finite: "
          f"{theirs['loss'] == theirs['loss']})")
    print(f"  ratio published / differland (median): {theirs['seconds'] / ours['seconds']:.2f}x")

    if args.without_flag:
        child_flags = flags_without_loop_option(started_flags)
        alone = run_published_child(args, child_flags)
        print(row("published, child process, no loop option", alone, pixel_steps))
        print(f"    (child XLA_FLAGS: {alone['xla_flags']!r}; ratio to differland above: "
              f"{alone['seconds'] / ours['seconds']:.2f}x)")

    if args.site:
        print(f"one-site forward run, {args.months} months (sum of NBE), same process:")
        mine = differland_site_forward(args.pixels, args.months, max(args.repeats, 20))
        site = published.site_forward(max(args.repeats, 20))
        print(header.replace("pixel-steps/s", "steps/s"))
        print(row("differland simulate (model only)", mine, args.months))
        print(row("published forward (MLPs + model)", site, args.months))
        print(f"  ratio published / differland (median): {site['seconds'] / mine['seconds']:.2f}x")
    print(f"cores on this machine: {os.cpu_count()}")


if __name__ == "__main__":
    main()
