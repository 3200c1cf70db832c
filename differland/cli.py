"""The ``differland`` command.

``differland simulate`` runs the model on a site driver (or on the embedded example driver) and
writes the simulation as CF NetCDF. Every error is reported as one line on stderr with a
non-zero exit status, and nothing is written.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from differland import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Differentiable DALEC land-surface model: simulate and calibrate carbon and water.",
)

EXIT_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _choice(value: str, options: dict, what: str):
    try:
        return options[value]
    except KeyError:
        raise CliError(f"unknown {what} {value!r}; expected one of {', '.join(options)}") from None


def _parameter_set(path: Path | None, variant: str):
    from differland.io import read_parameter_values
    from differland.params import REGISTRY, default_parameters, parameters_from_mapping

    if path is None:
        return default_parameters(variant)
    values = read_parameter_values(path)
    # A NetCDF (golden file or earlier output) may carry entries the variant does not use.
    inert = () if path.suffix.lower() == ".json" else [
        spec.name for spec in REGISTRY if variant not in spec.variants]
    return parameters_from_mapping(values, variant, source=str(path), ignore_unknown=inert)


def _check_option_parameters(params, config, variant: str, path: Path) -> None:
    """Refuse a parameter file that sets a process option's parameter the run would ignore.

    A calibration with, e.g., the calibrated canopy saturation writes its value to
    ``params.json``; simulating that file without the option would silently use the model
    without it.
    """
    import numpy as np

    from differland.config import OPTION_PARAMETERS
    from differland.params import default_parameters

    defaults = default_parameters(variant)
    for option, name in OPTION_PARAMETERS.items():
        if getattr(config, option) or not hasattr(params, name):
            continue
        value, default = float(getattr(params, name)), float(getattr(defaults, name))
        if not np.isclose(value, default, rtol=1e-6, atol=0.0):
            flag = "--" + option.replace("_", "-")
            raise CliError(f"{path}: {name} is {value:.6g}, not its default {default:.6g}, "
                           f"but the option that uses it is off (add {flag})")


def _network(path: Path | None, config):
    """Weights of the neural terms of ``config`` from a ``network.json`` of a calibration run.

    Returns the weights and ``config`` with the layer widths of the file.
    """
    import dataclasses
    import json

    import jax.numpy as jnp

    from differland.processes.neural import layer_sizes

    terms = config.network_sizes
    if not terms:
        return None, config
    if path is None:
        raise CliError(f"neural {', '.join(terms)} term(s) need --network (network.json of a "
                       "calibration)")
    try:
        content = json.loads(Path(path).read_text())
        network = {term: [{"weight": jnp.asarray(layer["weight"], float),
                           "bias": jnp.asarray(layer["bias"], float)} for layer in layers]
                   for term, layers in content.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CliError(f"{path}: not a network file: {error}") from None
    options = {}
    for term, expected in terms.items():
        if term not in network:
            raise CliError(f"{path}: no weights for the neural {term} term")
        try:
            sizes = layer_sizes(network[term])
        except (IndexError, ValueError) as error:
            raise CliError(f"{path}: {term}: bad layer shapes: {error}") from None
        if sizes[0] != expected[0] or sizes[-1] != expected[-1] or len(set(sizes[1:-1])) > 1:
            raise CliError(f"{path}: the {term} network maps {sizes[0]} inputs to {sizes[-1]} "
                           f"outputs; expected {expected[0]} to {expected[-1]}")
        option = getattr(config, term)
        options[term] = dataclasses.replace(option, hidden=sizes[1], layers=len(sizes) - 2)
    return {term: network[term] for term in terms}, dataclasses.replace(config, **options)


def _run_simulation(driver_path: Path, out: Path, params_path: Path | None, options: dict,
                    reference_mode: bool, float64: bool,
                    network_path: Path | None = None) -> str:
    """Simulate with ``options``, a value for each of :data:`RUN_MODEL_OPTIONS`."""
    import jax
    import numpy as np

    from differland import enable_float64
    from differland._pytree import as_dict
    from differland.config import (
        EVAPOTRANSPIRATION_OPTIONS,
        MODEL_OPTIONS,
        PHENOLOGY_OPTIONS,
        WATER_STRESS_OPTIONS,
        ModelConfig,
        NeuralWeatherFactor,
    )
    from differland.io import read_site_driver, simulation_dataset, write_dataset
    from differland.model import simulate

    model_choice = _choice(options["model"], MODEL_OPTIONS, "model")
    stress = _choice(options["water_stress"], WATER_STRESS_OPTIONS, "water stress")
    et_option = _choice(options["evapotranspiration"], EVAPOTRANSPIRATION_OPTIONS,
                        "evapotranspiration")
    phenology_option = _choice(options["phenology"], PHENOLOGY_OPTIONS, "phenology")
    if float64:
        enable_float64()
    flags = {name: bool(options[name]) for name in _RUN_FLAGS}
    try:
        config = ModelConfig(model=model_choice, water_stress=stress,
                             evapotranspiration=et_option, phenology=phenology_option,
                             gpp_weather=NeuralWeatherFactor() if flags["gpp_weather"] else None,
                             **{name: flags[name] for name in _RUN_FLAGS
                                if name != "gpp_weather"},
                             reference_mode=reference_mode)
    except ValueError as error:
        raise CliError(f"model options: {error}") from None
    network, config = _network(network_path, config)
    driver = read_site_driver(driver_path)
    params = _parameter_set(params_path, model_choice.name)
    if params_path is not None:
        _check_option_parameters(params, config, model_choice.name, params_path)
    started = time.perf_counter()
    trajectory = jax.device_get(simulate(params, driver.forcing, config, network=network))
    elapsed = time.perf_counter() - started
    states = {k: np.asarray(v) for k, v in as_dict(trajectory.states).items()}
    outputs = {k: np.asarray(v) for k, v in as_dict(trajectory.outputs).items()}
    for name, values in {**states, **outputs}.items():
        bad = ~np.isfinite(values)
        if bad.any():
            raise CliError(f"simulation produced non-finite {name} (first at step "
                           f"{int(np.argmax(bad))}); check the parameters and forcing")
    attrs = {
        "title": f"differland {model_choice.name} simulation of {driver.site_id}",
        "source": f"differland {__version__}",
        "driver": str(driver_path),
        "parameters": str(params_path) if params_path else "registry defaults",
        "model": model_choice.name,
        "water_stress": options["water_stress"],
        "evapotranspiration": options["evapotranspiration"],
        "phenology": options["phenology"],
        **{name: int(value) for name, value in flags.items()},
        "reference_mode": int(reference_mode),
        "precision": "float64" if float64 else "float32",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%S')} differland simulate",
    }
    dataset = simulation_dataset(driver.dates, states, outputs,
                                 {k: float(v) for k, v in params.items()}, model_choice.name,
                                 attrs)
    write_dataset(out, dataset)
    return (f"wrote {out}: {driver.site_id}, {driver.n_steps} steps, {model_choice.name} model, "
            f"{elapsed:.2f} s")


# The on/off process options of a simulation (flags of ``simulate``, keys of a calibration
# record), and all its model options.
_RUN_FLAGS = ("drought_leaf_loss", "groundwater_supply", "deep_water_uptake",
              "water_limited_decomposition", "gpp_weather", "canopy_saturation")
RUN_MODEL_OPTIONS = ("model", "water_stress", "evapotranspiration", "phenology") + _RUN_FLAGS
# Options that calibration records of earlier versions lack, with the value they implied.
_RUN_OPTION_DEFAULTS = {"gpp_weather": False, "canopy_saturation": False,
                        "groundwater_supply": False, "deep_water_uptake": False}


def _calibration_run(run: Path) -> dict:
    """Driver, parameter and network files, model options and precision of a calibration run."""
    import json

    record_path = run / "config.json"
    try:
        record = json.loads(record_path.read_text())
        calibration = record["calibration"]
        options = {name: calibration[name] if name in calibration
                   else _RUN_OPTION_DEFAULTS[name] for name in RUN_MODEL_OPTIONS}
    except FileNotFoundError:
        raise CliError(f"{record_path}: not found; --run takes the directory of a calibration "
                       "run") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CliError(f"{record_path}: not a calibration record: {error!r}") from None
    params = run / "params.json"
    if not params.is_file():
        raise CliError(f"{params}: not found; the calibration run is incomplete")
    network = run / "network.json"
    # the driver as given, else its absolute path (a run rerun from another directory)
    candidates = [Path(record[key]) for key in ("driver", "driver_resolved") if key in record]
    found = [path for path in candidates if path.is_file()]
    return {"driver": (found or candidates or [None])[0],
            "params": params, "network": network if network.is_file() else None,
            "float64": record.get("precision") == "float64", **options}


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output NetCDF path.")],
    driver: Annotated[Path | None, typer.Option(
        help="Site driver NetCDF (CARDAMOM layout). Default: the driver of --run, else the "
             "embedded example driver.")] = None,
    run: Annotated[Path | None, typer.Option(
        help="Directory of a calibration run: simulate its calibrated model (its params.json, "
             "network.json, model options and precision) over its driver or --driver.")] = None,
    params: Annotated[Path | None, typer.Option(
        help="Parameters: JSON of named physical values (missing names take defaults) or a "
             "NetCDF with scalar parameter variables (golden file, earlier output).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model variant: site (default) or global.")] = None,
    water_stress: Annotated[str | None, typer.Option(
        help="Water stress: none (default), beta, neural or neural_monotone (with "
             "--network).")] = None,
    evapotranspiration: Annotated[str | None, typer.Option(
        help="Evapotranspiration: uwue (default), neural, neural_evaporation or "
             "neural_no_soil_water (with --network).")] = None,
    network: Annotated[Path | None, typer.Option(
        help="network.json of a calibration run, for the neural terms.")] = None,
    phenology: Annotated[str | None, typer.Option(
        help="Phenology: calendar (default; annual pulses), calendar_water (the labile release "
             "waits for soil water), climate (growing-season index) or "
             "calendar_climate (pulses plus index), calendar_growth / calendar_senescence "
             "(pulses plus the index on leaf growth / leaf fall only), "
             "calendar_climate_beta (pulses plus an index whose water factor is beta).")
    ] = None,
    drought_leaf_loss: Annotated[bool, typer.Option(
        "--drought-leaf-loss", help="Leaves also fall under water stress.")] = False,
    groundwater_supply: Annotated[bool, typer.Option(
        "--groundwater-supply", help="The soil-water bucket receives groundwater_supply_rate "
                                     "every day besides precipitation.")] = False,
    deep_water_uptake: Annotated[bool, typer.Option(
        "--deep-water-uptake", help="Plant-unavailable water rises back into the "
                                    "plant-available bucket while it is dry (site model).")
    ] = False,
    water_limited_decomposition: Annotated[bool, typer.Option(
        "--water-limited-decomposition", help="Decomposition slows in dry soil.")] = False,
    gpp_weather: Annotated[bool, typer.Option(
        "--gpp-weather", help="GPP x a hybrid factor of temperature and VPD (with "
                              "--network).")] = False,
    canopy_saturation: Annotated[bool, typer.Option(
        "--canopy-saturation", help="The ACM's canopy quantum-yield saturation c2 is the "
                                    "parameter canopy_lai_half_saturation.")] = False,
    reference_mode: Annotated[bool, typer.Option(
        "--reference-mode", help="Reproduce the published DifferLand code, quirks included.")
    ] = False,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
) -> None:
    """Run the model over a driver and write every pool and flux as CF NetCDF."""
    given = {"model": model, "water_stress": water_stress,
             "evapotranspiration": evapotranspiration, "phenology": phenology,
             "drought_leaf_loss": drought_leaf_loss or None,
             "groundwater_supply": groundwater_supply or None,
             "deep_water_uptake": deep_water_uptake or None,
             "water_limited_decomposition": water_limited_decomposition or None,
             "gpp_weather": gpp_weather or None,
             "canopy_saturation": canopy_saturation or None,
             "reference_mode": reference_mode or None, "params": params, "network": network}
    if run is not None:
        clash = [name for name, value in given.items() if value is not None]
        if clash:
            flags = ", ".join("--" + name.replace("_", "-") for name in clash)
            raise CliError(f"--run takes the model options, parameters and network of "
                           f"{run}; drop {flags}")
        recorded = _calibration_run(run)
        options = {name: recorded[name] for name in RUN_MODEL_OPTIONS}
        params, network = recorded["params"], recorded["network"]
        float64 = float64 or recorded["float64"]
        if driver is None:
            driver = recorded["driver"]
            if driver is None or not driver.is_file():
                raise CliError(f"{run / 'config.json'}: its driver {driver} is not found from "
                               "here; pass --driver")
    else:
        options = {"model": model or "site", "water_stress": water_stress or "none",
                   "evapotranspiration": evapotranspiration or "uwue",
                   "phenology": phenology or "calendar", "drought_leaf_loss": drought_leaf_loss,
                   "groundwater_supply": groundwater_supply,
                   "deep_water_uptake": deep_water_uptake,
                   "water_limited_decomposition": water_limited_decomposition,
                   "gpp_weather": gpp_weather, "canopy_saturation": canopy_saturation}
    with tempfile.TemporaryDirectory() as scratch:
        if driver is None:
            from differland.io import write_example_site_driver

            driver = write_example_site_driver(Path(scratch) / "example.nc")
        message = _run_simulation(driver, out, params, options, reference_mode, float64,
                                  network)
    typer.echo(message)


calibrate_app = typer.Typer(no_args_is_help=True, help="Calibrate the model against observations.")
app.add_typer(calibrate_app, name="calibrate")


def load_calibration_config(path: Path | None, **overrides):
    """A :class:`SiteCalibrationConfig` from an optional JSON file plus command-line overrides."""
    import dataclasses
    import json

    from differland.calibrate.site import CalibrationConfigError, SiteCalibrationConfig

    values: dict = {}
    if path is not None:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CliError(f"{path}: cannot read the calibration config: {error}") from None
        if not isinstance(values, dict):
            raise CliError(f"{path}: the calibration config must be a JSON object")
    try:
        config = SiteCalibrationConfig.from_dict(values)
    except CalibrationConfigError as error:
        if path is None:
            raise
        raise CalibrationConfigError(f"{path}: {error}") from None
    gradient = {k: v for k, v in overrides.items()
                if k in ("seed", "n_starts", "max_iterations") and v is not None}
    top = {k: v for k, v in overrides.items()
           if k not in ("seed", "n_starts", "max_iterations") and v is not None}
    return dataclasses.replace(config, gradient=dataclasses.replace(config.gradient, **gradient),
                               **top)


@calibrate_app.command("site")
def calibrate_site_command(
    driver: Annotated[Path, typer.Option(help="Site driver NetCDF (CARDAMOM layout).")],
    out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds checkpoints).")],
    config: Annotated[Path | None, typer.Option(
        help="JSON calibration config (keys of SiteCalibrationConfig).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the random starts.")] = None,
    starts: Annotated[int | None, typer.Option(help="Number of random starts.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Maximum Adam iterations.")] = None,
    water_stress: Annotated[str | None, typer.Option(
        help="Water stress: none, beta, neural or neural_monotone.")] = None,
    evapotranspiration: Annotated[str | None, typer.Option(
        help="Evapotranspiration: uwue, neural, neural_evaporation or "
             "neural_no_soil_water.")] = None,
    phenology: Annotated[str | None, typer.Option(
        help="Phenology: calendar, calendar_water, climate, calendar_climate, "
             "calendar_growth, calendar_senescence or calendar_climate_beta.")] = None,
    gpp_weather: Annotated[bool | None, typer.Option(
        "--gpp-weather/--no-gpp-weather",
        help="GPP x a hybrid factor of temperature and VPD (default: the config's, off).")
    ] = None,
    canopy_saturation: Annotated[bool | None, typer.Option(
        "--canopy-saturation/--no-canopy-saturation",
        help="Calibrate the ACM's canopy quantum-yield saturation c2 (default: the config's, "
             "on).")] = None,
    groundwater_supply: Annotated[bool | None, typer.Option(
        "--groundwater-supply/--no-groundwater-supply",
        help="Calibrate a daily groundwater supply to the soil water (default: the "
             "config's, off).")] = None,
    deep_water_uptake: Annotated[bool | None, typer.Option(
        "--deep-water-uptake/--no-deep-water-uptake",
        help="Calibrate the rise of plant-unavailable water into the dry root zone "
             "(default: the config's, on for the site model).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
) -> None:
    """Calibrate at one site, evaluate on the held-out period and write a run directory."""
    from differland import enable_float64
    from differland.workflows import calibrate_site

    settings = load_calibration_config(config, seed=seed, n_starts=starts,
                                       max_iterations=iterations, water_stress=water_stress,
                                       evapotranspiration=evapotranspiration,
                                       phenology=phenology, gpp_weather=gpp_weather,
                                       canopy_saturation=canopy_saturation,
                                       groundwater_supply=groundwater_supply,
                                       deep_water_uptake=deep_water_uptake)
    if float64:
        enable_float64()
    metrics = calibrate_site(driver, out, settings, progress=progress)
    tests = ", ".join(f"{name} {values['test']['nse']:.2f}"
                      for name, values in metrics["skill"].items())
    typer.echo(f"wrote {out}: {metrics['site']} test NSE {tests}")


@app.command("example-driver")
def example_driver(
    out: Annotated[Path, typer.Option(help="Output NetCDF path.")],
    years: Annotated[int, typer.Option(help="Number of years.")] = 3,
    latitude: Annotated[float, typer.Option(help="Latitude [degrees_north].")] = 45.0,
) -> None:
    """Write the embedded synthetic example site driver."""
    from differland.io import write_example_site_driver

    if years < 1:
        raise CliError("--years must be at least 1")
    typer.echo(f"wrote {write_example_site_driver(out, n_years=years, latitude=latitude)}")


@app.command()
def parameters(
    model: Annotated[str, typer.Option(help="Model variant: site, global or all.")] = "all",
) -> None:
    """Print the parameter registry as a Markdown table."""
    from differland.params import VARIANTS, markdown_table

    if model != "all" and model not in VARIANTS:
        raise CliError(f"unknown model {model!r}; expected site, global or all")
    typer.echo(markdown_table(None if model == "all" else model))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (errors: one line on stderr, status 2)."""
    from differland.calibrate.gradient import CheckpointMismatchError
    from differland.calibrate.site import CalibrationConfigError
    from differland.forcing import ForcingError
    from differland.io import DriverError
    from differland.params import ParameterError

    try:
        app(args=argv, standalone_mode=False)
    except (CliError, DriverError, ForcingError, ParameterError,
            CalibrationConfigError, CheckpointMismatchError) as error:
        print(f"differland: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except typer.Exit as done:
        return done.exit_code
    except Exception as error:  # click usage errors and the like
        import click

        if isinstance(error, click.ClickException):
            print(f"differland: error: {error.format_message()}", file=sys.stderr)
            return EXIT_ERROR
        if isinstance(error, click.exceptions.Abort):
            return 1
        raise
    return 0


def entry_point() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
