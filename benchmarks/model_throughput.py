"""Throughput of the DALEC model: forward runs and value_and_grad, after compilation.

Usage::

    python benchmarks/model_throughput.py [--quick] [--float64]

Cases (float32 unless ``--float64``):

* site model (DALEC990) over the US-Var flux-site driver (3287 daily steps), one parameter set
  and 100 parameter sets vmapped (``simulate_pixels``, forcing broadcast to (100, T));
* global model (DALEC993, linear water stress), 1000 pixels x 276 monthly steps of synthetic
  smooth forcing (the generator of the golden file ``dalec993_synthetic_mid.nc``, extended to
  1000 pixels with latitudes spread over -60..70).

For each case it prints compile times, then the median wall time of several repeats of

* ``forward``: the scalar of the gradient case, the sum of NEE (site) / NBE (global) over all
  steps and pixels (the forward model as a loss sees it; the targets refer to this);
* ``trajectory``: ``simulate`` / ``simulate_pixels`` returning every state and output (for
  information: this adds writing ~40 arrays of pixels x steps);
* ``value_and_grad``: the scalar and its gradient with respect to every physical parameter;

with pixel-steps per second, XLA's cost-analysis FLOPs per pixel-step and the speed-up over the
published DifferLand timings on the same machine (fast end of each published range).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SITE_DRIVER = REPO_ROOT / ".." / "shared" / "data" / "fluxsites" / "US-Var.nc"
N_MEMBERS = 100  # parameter sets of the vmapped site case
N_PIXELS = 1000  # pixels of the global case
N_MONTHS = 276  # monthly steps of the global case
TARGET_SPEEDUP = 10.0

# Published DifferLand timings on this machine [s]: (forward, value_and_grad), the fast end of
# each range (site one set 22-36 ms / 62-119 ms; 100 sets 1.0 / 7.6 ms per member; global
# 175-251 ms / 0.75-0.92 s).
PUBLISHED = {
    "site, 1 parameter set": (22e-3, 62e-3),
    "site, 100 parameter sets (per member)": (1.0e-3, 7.6e-3),
    "global, 1000 pixels": (175e-3, 0.75),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument("--float64", action="store_true", help="run in float64")
    parser.add_argument("--unroll", type=int, default=None,
                        help="time steps per iteration of the time loop (ModelConfig.scan_unroll; "
                             "default: 1 on CPU, 8 on a GPU)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # Imported after parsing so that --help is instant; differland before any JAX computation
    # (on import it sets the XLA:CPU option that compiles each time loop into one kernel).
    import differland

    if args.float64:
        differland.enable_float64()
    bench = Benchmark(repeats_scale=0.25 if args.quick else 1.0, unroll=args.unroll)
    bench.header()
    results = {}
    results.update(bench.site())
    results.update(bench.global_model())
    bench.summary(results)


def _flops(compiled) -> float | None:
    """Total FLOPs of a compiled function from XLA's cost analysis (list or dict form)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # cost analysis is optional on some backends
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def _fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:7.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:7.3f} ms"
    return f"{seconds * 1e6:7.1f} us"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Benchmark:
    def __init__(self, repeats_scale: float, unroll: int | None = None):
        import jax

        self.jax = jax
        self.scale = repeats_scale
        self.unroll = unroll

    def repeats(self, n: int) -> int:
        return max(3, round(n * self.scale))

    def header(self) -> None:
        import jax
        import jax.numpy as jnp

        print("differland model throughput")
        print(f"  jax {jax.__version__}, backend {jax.default_backend()}, "
              f"{os.cpu_count()} CPU cores ({_cpu_name()})")
        print(f"  dtype {jnp.dtype(jnp.result_type(float)).name}, "
              f"scan_unroll {self.unroll or 'auto'}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
        print("  times: median over repeats after a warm-up call; forward = sum of NEE/NBE")
        print()

    # -- measurement -----------------------------------------------------------------------

    def compile(self, fn, *args):
        """Lower and compile ``jax.jit(fn)`` for ``args``; return (compiled, seconds)."""
        start = time.perf_counter()
        compiled = self.jax.jit(fn).lower(*args).compile()
        return compiled, time.perf_counter() - start

    def time(self, compiled, *args, repeats: int) -> tuple[float, object]:
        """Median wall time [s] of ``repeats`` calls (each until ready) and the last result."""
        result = self.jax.block_until_ready(compiled(*args))  # warm-up (allocation, caches)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = self.jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
        return statistics.median(times), result

    def run_case(self, name, loss, trajectory, args, pixel_steps, repeats, per_member=1):
        """Compile and time forward, trajectory and value_and_grad of one case; print a block."""
        import numpy as np

        jax = self.jax
        print(f"== {name}: {pixel_steps:,} pixel-steps per call")
        timings = {}
        for label, fn in (("forward", loss), ("trajectory", trajectory),
                          ("value_and_grad", jax.value_and_grad(loss))):
            compiled, compile_s = self.compile(fn, *args)
            seconds, result = self.time(compiled, *args, repeats=repeats)
            if label == "value_and_grad" and not all(
                    bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(result)):
                print("  warning: non-finite value or gradient")
            flops = _flops(compiled)
            timings[label] = seconds
            rate = pixel_steps / seconds
            flop_text = "FLOPs n/a"
            if flops is not None:
                flop_text = (f"{flops / pixel_steps:7.1f} FLOP/pixel-step "
                             f"({flops / seconds / 1e9:5.2f} GFLOP/s)")
            member = f" ({_fmt_time(seconds / per_member)}/member)" if per_member > 1 else ""
            print(f"  {label:14s} compile {compile_s:5.2f} s | {_fmt_time(seconds)}{member}"
                  f" | {rate:9.3g} pixel-steps/s | {flop_text}")
        if per_member > 1:
            timings = {k: v / per_member for k, v in timings.items()}
        print()
        return timings

    # -- cases -----------------------------------------------------------------------------

    def site(self) -> dict:
        import jax
        import jax.numpy as jnp

        from differland import ModelConfig, SiteModel, default_parameters, simulate, simulate_pixels
        from differland.io import read_site_driver
        from differland.params import ParameterSet, constrain

        dtype = jnp.result_type(float)
        driver = read_site_driver(SITE_DRIVER)
        forcing = jax.tree.map(lambda x: jnp.asarray(x, dtype), driver.forcing)
        n_steps = forcing.t_min.shape[0]
        config = ModelConfig(model=SiteModel(), scan_unroll=self.unroll)
        params = default_parameters("site")

        def loss(p, f):
            return jnp.sum(simulate(p, f, config).outputs.nee)

        def trajectory(p, f):
            return simulate(p, f, config)

        out = {}
        out["site, 1 parameter set"] = self.run_case(
            f"site (US-Var, {n_steps} daily steps), 1 parameter set", loss, trajectory,
            (params, forcing), n_steps, self.repeats(50))

        # 100 parameter sets drawn inside the prior (logistic map of standard normals).
        keys = jax.random.split(jax.random.PRNGKey(0), len(params))
        members = constrain(ParameterSet({
            name: jax.random.normal(key, (N_MEMBERS,), dtype)
            for name, key in zip(params, keys, strict=True)}))
        forcings = jax.tree.map(lambda x: jnp.broadcast_to(x, (N_MEMBERS,) + x.shape), forcing)

        def loss_members(p, f):
            return jnp.sum(simulate_pixels(p, f, config).outputs.nee)

        def trajectory_members(p, f):
            return simulate_pixels(p, f, config)

        out["site, 100 parameter sets (per member)"] = self.run_case(
            f"site (US-Var), {N_MEMBERS} parameter sets vmapped", loss_members,
            trajectory_members, (members, forcings), N_MEMBERS * n_steps, self.repeats(20),
            per_member=N_MEMBERS)
        return out

    def global_model(self) -> dict:
        import jax
        import jax.numpy as jnp

        from differland import (
            GlobalModel,
            LinearBeta,
            ModelConfig,
            default_parameters,
            simulate_pixels,
        )

        dtype = jnp.result_type(float)
        forcing = jax.tree.map(lambda x: jnp.asarray(x, dtype),
                               synthetic_global_forcing(N_PIXELS, N_MONTHS))
        config = ModelConfig(model=GlobalModel(), water_stress=LinearBeta(),
                             scan_unroll=self.unroll)
        params = jax.tree.map(lambda x: jnp.full((N_PIXELS,), x, dtype),
                              default_parameters("global"))

        def loss(p, f):
            return jnp.sum(simulate_pixels(p, f, config).outputs.nbe)

        def trajectory(p, f):
            return simulate_pixels(p, f, config)

        return {"global, 1000 pixels": self.run_case(
            f"global (synthetic), {N_PIXELS} pixels x {N_MONTHS} monthly steps", loss,
            trajectory, (params, forcing), N_PIXELS * N_MONTHS, self.repeats(20))}

    def summary(self, results: dict) -> None:
        print("== speed-up over published DifferLand timings (fast end of each range; "
              f"target >= {TARGET_SPEEDUP:g}x)")
        short = []
        for case, (pub_forward, pub_grad) in PUBLISHED.items():
            ours = results[case]
            for label, pub in (("forward", pub_forward), ("value_and_grad", pub_grad)):
                ratio = pub / ours[label]
                ok = "ok" if ratio >= TARGET_SPEEDUP else "SHORT"
                if ratio < TARGET_SPEEDUP:
                    short.append(f"{case} {label}")
                print(f"  {case:38s} {label:14s} {_fmt_time(pub)} / {_fmt_time(ours[label])}"
                      f" = {ratio:6.1f}x  {ok}")
            ratio = pub_forward / ours["trajectory"]
            print(f"  {case:38s} {'(trajectory)':14s} {_fmt_time(pub_forward)} / "
                  f"{_fmt_time(ours['trajectory'])} = {ratio:6.1f}x  (information)")
        print("  all targets met" if not short else f"  short of target: {', '.join(short)}")


def synthetic_global_forcing(n_pixels: int, n_months: int):
    """Smooth synthetic DALEC993 forcing (golden ``forcing_generator``, more pixels/months).

    Latitudes are spread evenly over -60..70; the per-pixel precipitation and burned-area
    amplitudes of the 8 golden pixels repeat cyclically; everything else follows the formula.
    """
    import numpy as np

    from differland import make_forcing

    golden_precipitation = np.array([1.6, 1.2, 4.5, 6.0, 2.5, 0.9, 2.2, 1.1])
    golden_burned = np.array([0.0, 0.004, 0.02, 0.01, 0.03, 0.002, 0.001, 0.0])
    i = np.arange(n_pixels)[:, None]
    m = np.arange(n_months, dtype=np.float64)[None, :]
    lat = np.linspace(-60.0, 70.0, n_pixels)[:, None]
    p_bar = golden_precipitation[i % 8]
    b_max = golden_burned[i % 8]
    phi = np.pi * (i % 2)
    doy = 30.4375 * ((m % 12) + 0.5)
    days = 366.0 + 30.4375 * (m + 0.5)
    phase = 2.0 * np.pi * (doy - 200.0) / 365.25
    h = np.sin(lat * np.pi / 180.0)
    mat = 27.0 - 0.35 * np.abs(lat)
    t_avg = mat + 14.0 * h * np.cos(phase) + 0.8 * np.sin(2.0 * np.pi * m / 40.0)
    dtr = 9.0 + 3.0 * h * np.cos(phase)
    shape = (n_pixels, n_months)
    full = lambda x: np.broadcast_to(x, shape)  # noqa: E731
    return make_forcing(
        time=full(days), t_min=t_avg - dtr / 2.0, t_max=t_avg + dtr / 2.0,
        ssrd=17.0 + 10.0 * h * np.cos(phase) - 5.0 * np.abs(h),
        co2=full(370.0 + 2.0 * m / 12.0 + 2.5 * np.cos(2.0 * np.pi * ((m % 12) - 4.0) / 12.0)),
        doy=full(doy), burned_area=b_max * ((1.0 - np.cos(phase - phi)) / 2.0) ** 4,
        vpd=2.0 + 8.0 * np.exp(0.05 * (t_avg - 15.0)),
        precipitation=p_bar * (1.0 + 0.7 * np.cos(phase - phi)),
        latitude=full(lat), delta_t=full(30.0), mean_temperature=full(mat),
        mean_precipitation=full(p_bar))


if __name__ == "__main__":
    main()
