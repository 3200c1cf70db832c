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
from differland.calibrate.site import SiteCalibrationConfig

# Plain help (no boxes): every option and its default stay readable in 80 columns.
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=_CONTEXT,
    help="Differentiable DALEC land-surface model: simulate and calibrate carbon and water.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"differland {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False,
) -> None:
    """Differentiable DALEC land-surface model: simulate and calibrate carbon and water."""

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

    import jax.numpy as jnp

    from differland.processes.neural import layer_sizes

    terms = config.network_sizes
    if not terms:
        if path is not None:
            raise CliError(f"--network {path}: the model options use no neural term (add "
                           "e.g. --water-stress neural, or drop --network)")
        return None, config
    if path is None:
        raise CliError(f"neural {', '.join(terms)} term(s) need --network (network.json of a "
                       "calibration)")
    from differland.io import read_json

    content = read_json(path)
    try:
        network = {term: [{"weight": jnp.asarray(layer["weight"], float),
                           "bias": jnp.asarray(layer["bias"], float)} for layer in layers]
                   for term, layers in content.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CliError(f"{path}: not a network file: {' '.join(str(error).split())}") from None
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
    """Driver, parameter and network files, model options and precision of a finished
    calibration run."""
    from differland.io import DriverError, read_json
    from differland.workflows import COMPLETION_RECORD

    record_path = run / "config.json"
    try:
        record = read_json(record_path)
        calibration = record["calibration"]
        options = {name: calibration[name] if name in calibration
                   else _RUN_OPTION_DEFAULTS[name] for name in RUN_MODEL_OPTIONS}
    except DriverError as error:
        if not record_path.exists():
            raise CliError(f"{record_path}: not found; --run takes the directory of a "
                           "calibration run") from None
        raise CliError(str(error)) from None
    except (KeyError, TypeError) as error:
        raise CliError(f"{record_path}: not a calibration record: {error!r}") from None
    params = run / "params.json"
    for required in (params, run / COMPLETION_RECORD):
        if not required.is_file():
            raise CliError(f"{required}: not found; the calibration run is unfinished (rerun "
                           "differland calibrate site with the same --out to resume it)")
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
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out written by differland.")] = False,
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
    from differland.io import check_output_file, remove_stale_temporaries, written_by_differland

    check_output_file(out, [driver, params, network], overwrite, written_by_differland)
    for leftover in remove_stale_temporaries(out.parent, out.name):
        print(f"differland: notice: removed {leftover}, left by an interrupted write",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        if driver is None:
            from differland.io import write_example_site_driver

            driver = write_example_site_driver(Path(scratch) / "example.nc")
        message = _run_simulation(driver, out, params, options, reference_mode, float64,
                                  network)
    typer.echo(message)


calibrate_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=_CONTEXT,
                            help="Calibrate the model against observations.")
app.add_typer(calibrate_app, name="calibrate")


_GRADIENT_OPTIONS = {"seed": "--seed", "n_starts": "--starts", "max_iterations": "--iterations"}


def load_calibration_config(path: Path | None, **overrides):
    """A :class:`SiteCalibrationConfig` from an optional JSON file plus command-line overrides.

    Raises:
        CliError: the file cannot be read as a JSON object.
        CalibrationConfigError: a key or value of the file, or an override, is unknown or of the
            wrong type or range (named in the one-line message).
    """
    import dataclasses

    from differland.calibrate.site import (
        CalibrationConfigError,
        SiteCalibrationConfig,
        gradient_settings,
    )
    from differland.io import read_json

    values: dict = {}
    if path is not None:
        values = read_json(path)
        if not isinstance(values, dict):
            raise CliError(f"{path}: the calibration config must be a JSON object")
    try:
        config = SiteCalibrationConfig.from_dict(values)
    except CalibrationConfigError as error:
        if path is None:
            raise
        raise CalibrationConfigError(f"{path}: {error}") from None
    gradient = {k: v for k, v in overrides.items() if k in _GRADIENT_OPTIONS and v is not None}
    for key, value in gradient.items():
        try:
            gradient_settings({key: value}, config.gradient, prefix="")
        except CalibrationConfigError as error:
            raise CliError(f"{_GRADIENT_OPTIONS[key]}: {error}") from None
    top = {k: v for k, v in overrides.items() if k not in _GRADIENT_OPTIONS and v is not None}
    for key, value in top.items():
        try:
            dataclasses.replace(config, **{key: value})
        except CalibrationConfigError as error:
            option = "--" + key.replace("_", "-")
            raise CliError(f"{option}: {str(error).removeprefix('config: ')}") from None
    return dataclasses.replace(config, gradient=gradient_settings(gradient, config.gradient),
                               **top)


def _stream_names(text: str | None) -> tuple[str, ...] | None:
    """The comma-separated ``--streams`` value as names (``None`` when not given)."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise CliError("--streams: give stream names separated by commas, e.g. gpp,reco,et")
    return names


_DEFAULT = SiteCalibrationConfig()
"""The default site calibration, whose values the help of ``calibrate site`` shows."""


@calibrate_app.command("site")
def calibrate_site_command(
    driver: Annotated[Path, typer.Option(help="Site driver NetCDF (CARDAMOM layout).")],
    out: Annotated[Path, typer.Option(
        help="Run directory (an unfinished run there is resumed).")],
    config: Annotated[Path | None, typer.Option(
        help="JSON calibration config (keys of SiteCalibrationConfig).")] = None,
    seed: Annotated[int | None, typer.Option(
        help=f"Seed of the random starts (default: the config's, {_DEFAULT.gradient.seed}).")
    ] = None,
    starts: Annotated[int | None, typer.Option(
        help=f"Number of random starts (default: the config's, "
             f"{_DEFAULT.gradient.n_starts}).")] = None,
    iterations: Annotated[int | None, typer.Option(
        help=f"Maximum Adam iterations (default: the config's, "
             f"{_DEFAULT.gradient.max_iterations}).")] = None,
    water_stress: Annotated[str | None, typer.Option(
        help=f"Water stress: none, beta, neural or neural_monotone (default: the config's, "
             f"{_DEFAULT.water_stress}).")] = None,
    evapotranspiration: Annotated[str | None, typer.Option(
        help=f"Evapotranspiration: uwue, neural, neural_evaporation or neural_no_soil_water "
             f"(default: the config's, {_DEFAULT.evapotranspiration}).")] = None,
    phenology: Annotated[str | None, typer.Option(
        help=f"Phenology: calendar, calendar_water, climate, calendar_climate, "
             f"calendar_growth, calendar_senescence or calendar_climate_beta (default: the "
             f"config's, {_DEFAULT.phenology}).")] = None,
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
    streams: Annotated[str | None, typer.Option(
        help="Observed streams in the loss, comma-separated (e.g. gpp,reco,et,lai); each must "
             "be in the driver. Default: the config's; those the driver lacks are left out "
             "with a notice.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a finished run in --out (only the files differland "
                            "wrote).")] = False,
) -> None:
    """Calibrate at one site, evaluate on the held-out period and write a run directory.

    An unfinished run in --out is resumed from its checkpoints.
    """
    from differland import enable_float64
    from differland.workflows import calibrate_site

    chosen = _stream_names(streams)
    settings = load_calibration_config(config, streams=chosen, seed=seed, n_starts=starts,
                                       max_iterations=iterations, water_stress=water_stress,
                                       evapotranspiration=evapotranspiration,
                                       phenology=phenology, gpp_weather=gpp_weather,
                                       canopy_saturation=canopy_saturation,
                                       groundwater_supply=groundwater_supply,
                                       deep_water_uptake=deep_water_uptake)
    if float64:
        enable_float64()
    metrics = calibrate_site(driver, out, settings, progress=progress, overwrite=overwrite,
                             streams_required=chosen is not None, inputs=(config,))
    if metrics["periods"]["test"] is None:
        typer.echo(f"wrote {out}: {metrics['site']} (no test period)")
        return
    tests = ", ".join(f"{name} {values['test']['nse']:.2f}"
                      for name, values in metrics["skill"].items())
    typer.echo(f"wrote {out}: {metrics['site']} test NSE {tests}")


MAX_EXAMPLE_YEARS = 200
"""Longest example driver [years]."""


@app.command("example-driver")
def example_driver(
    out: Annotated[Path, typer.Option(help="Output NetCDF path.")],
    years: Annotated[int, typer.Option(help="Number of years.")] = 3,
    latitude: Annotated[float, typer.Option(help="Latitude [degrees_north].")] = 45.0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out written by differland.")] = False,
) -> None:
    """Write the embedded synthetic example site driver."""
    import math

    from differland.io import check_output_file, write_example_site_driver, written_by_differland

    if not 1 <= years <= MAX_EXAMPLE_YEARS:
        raise CliError(f"--years must be in [1, {MAX_EXAMPLE_YEARS}], not {years}")
    if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
        raise CliError(f"--latitude must be in [-90, 90] degrees_north, not {latitude}")
    check_output_file(out, [], overwrite, written_by_differland)
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


def _usage_error_types() -> tuple[type, ...]:
    """The usage-error base classes of the command-line parser (typer's, and click's if
    typer still uses the separate package)."""
    found = [cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"]
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # typer without click
        pass
    return tuple(dict.fromkeys(found))


def _help_text(argv: list[str]) -> str:
    """The help of the (sub)command that ``argv`` names."""
    command = typer.main.get_command(app)
    context = command.make_context("differland", [], resilient_parsing=True)
    for word in _command_path(argv):
        command = command.commands[word]
        context = command.make_context(word, [], parent=context, resilient_parsing=True)
    return command.get_help(context)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (errors: one line on stderr, status 2)."""
    from differland.calibrate.gradient import CheckpointMismatchError, NonFiniteLossError
    from differland.calibrate.site import CalibrationConfigError
    from differland.forcing import ForcingError
    from differland.io import DriverError, OutputError
    from differland.params import ParameterError

    argv = list(sys.argv[1:] if argv is None else argv)
    usage_errors = _usage_error_types()
    try:
        app(args=argv, prog_name="differland", standalone_mode=False)
    except (CliError, DriverError, ForcingError, ParameterError, OutputError,
            CalibrationConfigError, CheckpointMismatchError, NonFiniteLossError) as error:
        print(f"differland: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    except typer.Exit as done:
        return done.exit_code
    except usage_errors as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # a command given no arguments
            typer.echo(_help_text(argv))
            return 0
        message = " ".join(error.format_message().split())
        command = " ".join(["differland", *_command_path(argv)])
        print(f"differland: error: {message} (see '{command} --help')", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, typer.Abort):
        print("differland: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if type(error).__name__ in ("Abort", "Exit") and hasattr(error, "exit_code"):
            return int(getattr(error, "exit_code", 1) or 0)
        raise
    return 0


def _command_path(argv: list[str]) -> list[str]:
    """The (sub)command names at the start of ``argv``, as the app defines them."""
    command, path = typer.main.get_command(app), []
    for word in argv:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
        path.append(word)
    return path


def entry_point() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
