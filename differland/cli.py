"""The ``differland`` command.

``differland simulate`` runs the model on a site driver (or on the embedded example driver) and
writes the simulation as CF NetCDF. Every error is reported as one line on stderr with a
non-zero exit status, and nothing is written.
"""

from __future__ import annotations

import inspect
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


def _parameter_set(path: Path | None, variant: str):
    from differland.io import read_parameter_values
    from differland.params import SPECS, default_parameters, parameters_from_mapping

    if path is None:
        return default_parameters(variant)
    values = read_parameter_values(path)
    # A NetCDF (golden file or earlier output) may carry entries the variant does not use.
    inert = () if path.suffix.lower() == ".json" else [
        spec.name for spec in SPECS.values() if variant not in spec.variants]
    return parameters_from_mapping(values, variant, source=str(path), ignore_unknown=inert)


def _check_option_parameters(params, config, variant: str, path: Path) -> None:
    """Refuse a parameter file that sets a modifier's parameter the run would ignore.

    A calibration with, e.g., the calibrated canopy saturation writes its value to
    ``params.json``; simulating that file without the modifier would silently use the model
    without it. (The parameters of the water stress, ET and phenology forms are not checked:
    a parameter file of the published model holds values for every form.)
    """
    import numpy as np

    from differland.options import SLOTS, registered
    from differland.params import default_parameters

    defaults, read = default_parameters(variant), set(config.parameter_names())
    single = {name for cls in registered() if not SLOTS[cls.slot].multiple
              for name in cls.reads}
    modifiers = {name for cls in registered() if SLOTS[cls.slot].multiple
                 for name in cls.reads} - single
    for name in sorted(modifiers - read):
        if name not in params:
            continue
        value, default = float(params[name]), float(defaults[name])
        if not np.isclose(value, default, rtol=1e-6, atol=0.0):
            readers = [_option_flag(SLOTS[cls.slot], cls.name) for cls in registered()
                       if name in cls.reads]
            if any(name in option.reads for option in config.options()):
                raise CliError(f"{path}: {name} is {value:.6g}, not its default "
                               f"{default:.6g}, but it has no effect with the other options "
                               f"of the run (e.g. a modifier of beta without water stress)")
            raise CliError(f"{path}: {name} is {value:.6g}, not its default {default:.6g}, "
                           f"but no option of the run reads it (read by "
                           f"{' or '.join(readers)})")


def _option_flag(slot, name: str) -> str:
    """The command-line option that turns on option ``name`` of ``slot``."""
    if slot.multiple:
        return "--" + name.replace("_", "-")
    return f"--{slot.name.replace('_', '-')} {name}"


def _network(path: Path | None, config):
    """Weights of the neural terms of ``config`` from a ``network.json`` of a calibration run.

    Returns the weights and ``config`` with the layer widths of the file.
    """
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
    sizes_of = {}
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
        sizes_of[term] = sizes
    return {term: network[term] for term in terms}, config.with_network_sizes(sizes_of)


def _run_simulation(driver_path: Path, out: Path, params_path: Path | None, config,
                    float64: bool, network_path: Path | None = None,
                    sites_table: Path | None = None) -> str:
    """Simulate the model configuration ``config`` and write the result (``sites_table``: the
    ``sites.csv`` that sets the driver's calibration period, if not the one beside it)."""
    import jax
    import numpy as np

    from differland import enable_float64
    from differland._pytree import as_dict
    from differland.io import read_site_driver, simulation_dataset, write_dataset
    from differland.model import simulate

    if float64:
        enable_float64()
    variant = config.variant
    network, config = _network(network_path, config)
    driver = read_site_driver(driver_path, sites_table=sites_table)
    params = _parameter_set(params_path, variant)
    if params_path is not None:
        _check_option_parameters(params, config, variant, params_path)
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
    options = {slot: text if isinstance(text, str) else " ".join(text)
               for slot, text in config.option_texts().items()}
    attrs = {
        "title": f"differland {variant} simulation of {driver.site_id}",
        "source": f"differland {__version__}",
        "driver": str(driver_path),
        "parameters": str(params_path) if params_path else "registry defaults",
        **options,
        "reference_mode": int(config.reference_mode),
        "precision": "float64" if float64 else "float32",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%S')} differland simulate",
    }
    dataset = simulation_dataset(driver.dates, states, outputs,
                                 {k: float(v) for k, v in params.items()}, variant, attrs)
    write_dataset(out, dataset)
    return (f"wrote {out}: {driver.site_id}, {driver.n_steps} steps, {variant} model, "
            f"{elapsed:.2f} s")


def _calibration_run(run: Path) -> dict:
    """Driver, parameter and network files, model configuration and precision of a finished
    calibration run."""
    from differland.calibrate.site import CalibrationConfigError, SiteCalibrationConfig
    from differland.io import DriverError, read_json
    from differland.workflows import COMPLETION_RECORD

    record_path = run / "config.json"
    try:
        record = read_json(record_path)
        calibration = SiteCalibrationConfig.from_dict(record["calibration"])
    except DriverError as error:
        if not record_path.exists():
            raise CliError(f"{record_path}: not found; --run takes the directory of a "
                           "calibration run") from None
        raise CliError(str(error)) from None
    except CalibrationConfigError as error:
        raise CliError(f"{record_path}: {str(error).removeprefix('config: ')}") from None
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
            "float64": record.get("precision") == "float64",
            "config": calibration.model_config,
            "sites_table": Path(record["sites_table"]) if record.get("sites_table") else None}


def _option_parameters(defaults: dict) -> list[inspect.Parameter]:
    """Command-line options for the process options, generated from the option registry:
    ``--SLOT NAME[:FIELD=VALUE,...]`` for each single slot, ``--NAME/--no-NAME`` for each
    modifier. ``defaults`` gives the text each help shows as the default."""
    from differland.options import SLOTS, options, summary

    generated = []
    for slot in SLOTS.values():
        for name, cls in (options(slot.name).items() if slot.multiple else [(slot.name, None)]):
            if slot.multiple:
                flag = name.replace("_", "-")
                on = "on" if name in defaults[slot.name] else "off"
                info = typer.Option(f"--{flag}/--no-{flag}",
                                    help=f"{summary(cls).rstrip('.')} ({slot.title}; "
                                         f"default: {on}).")
                annotation = Annotated[bool | None, info]
            else:
                choices = "; ".join(f"{key}: {summary(option).rstrip('.')}"
                                    for key, option in options(slot.name).items())
                info = typer.Option(f"--{slot.name.replace('_', '-')}", metavar="NAME",
                                    help=f"{slot.title.capitalize()} (default: "
                                         f"{defaults[slot.name]}). {choices}. Fields as "
                                         f"NAME:FIELD=VALUE,... (differland options).")
                annotation = Annotated[str | None, info]
            generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                               default=None, annotation=annotation))
    return generated


def _given_options(values: dict) -> dict:
    """The process options given on the command line: ``{slot: text}`` for single slots and
    ``{slot: {name: on}}`` for modifiers."""
    from differland.options import SLOTS, OptionError, options, parse

    given = {}
    for slot in SLOTS.values():
        if slot.multiple:
            flags = {name: values[name] for name in options(slot.name)
                     if values.get(name) is not None}
            if flags:
                given[slot.name] = flags
        elif values.get(slot.name) is not None:
            try:
                parse(slot.name, values[slot.name])
            except OptionError as error:
                raise CliError(f"--{slot.name.replace('_', '-')}: {error}") from None
            given[slot.name] = values[slot.name]
    return given


def _with_modifiers(texts, flags: dict) -> tuple[str, ...]:
    """Modifier texts with those ``flags`` turns on added and those it turns off removed."""
    kept = [text for text in texts if flags.get(text.partition(":")[0]) is not False]
    names = {text.partition(":")[0] for text in kept}
    return tuple(kept) + tuple(name for name, on in flags.items() if on and name not in names)


def _option_defaults(config) -> dict:
    """``{slot: text or list of names}`` of a configuration, for the help texts."""
    texts = config.option_texts()
    return {slot: [t.partition(":")[0] for t in text] if isinstance(text, list) else text
            for slot, text in texts.items()}


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
    network: Annotated[Path | None, typer.Option(
        help="network.json of a calibration run, for the neural terms.")] = None,
    reference_mode: Annotated[bool, typer.Option(
        "--reference-mode", help="Reproduce the published DifferLand code, quirks included.")
    ] = False,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out written by differland.")] = False,
    **model_options,
) -> None:
    """Run the model over a driver and write every pool and flux as CF NetCDF."""
    from differland.config import ModelConfig

    given = _given_options(model_options)
    if run is not None:
        fixed = {"reference_mode": reference_mode or None, "params": params, "network": network}
        clash = [name for name, value in fixed.items() if value is not None] + [
            name for slot, value in given.items()
            for name in (value if isinstance(value, dict) else [slot])]
        if clash:
            flags = ", ".join("--" + name.replace("_", "-") for name in clash)
            raise CliError(f"--run takes the model options, parameters and network of "
                           f"{run}; drop {flags}")
        recorded = _calibration_run(run)
        config, params, network = recorded["config"], recorded["params"], recorded["network"]
        sites_table = recorded["sites_table"] if driver is None else None
        float64 = float64 or recorded["float64"]
        if driver is None:
            driver = recorded["driver"]
            if driver is None or not driver.is_file():
                raise CliError(f"{run / 'config.json'}: its driver {driver} is not found from "
                               "here; pass --driver")
    else:
        sites_table = None
        chosen = {slot: _with_modifiers((), value) if isinstance(value, dict) else value
                  for slot, value in given.items()}
        try:
            config = ModelConfig(**chosen, reference_mode=reference_mode)
        except ValueError as error:
            raise CliError(f"model options: {' '.join(str(error).split())}") from None
    from differland.io import check_output_file, remove_stale_temporaries, written_by_differland

    check_output_file(out, [driver, params, network], overwrite, written_by_differland)
    for leftover in remove_stale_temporaries(out.parent, out.name):
        print(f"differland: notice: removed {leftover}, left by an interrupted write",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        if driver is None:
            from differland.io import write_example_site_driver

            driver = write_example_site_driver(Path(scratch) / "example.nc")
        message = _run_simulation(driver, out, params, config, float64, network, sites_table)
    typer.echo(message)


calibrate_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=_CONTEXT,
                            help="Calibrate the model against observations.")
app.add_typer(calibrate_app, name="calibrate")


_GRADIENT_OPTIONS = {"seed": "--seed", "n_starts": "--starts", "max_iterations": "--iterations"}


def load_calibration_config(path: Path | None, options: dict | None = None, **overrides):
    """A :class:`SiteCalibrationConfig` from an optional JSON file plus command-line overrides.

    Args:
        path: JSON calibration config, or ``None`` for the defaults.
        options: process options from the command line (:func:`_given_options`).
        overrides: other keys of the configuration, and the gradient settings ``seed``,
            ``n_starts`` and ``max_iterations``; ``None`` values are not overrides.

    Raises:
        CliError: the file cannot be read as a JSON object, or an override is refused.
        CalibrationConfigError: a key or value of the file is unknown or of the wrong type
            or range (named in the one-line message).
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
    chosen = {slot: _with_modifiers(getattr(config, slot), value) if isinstance(value, dict)
              else value for slot, value in (options or {}).items()}
    try:
        return dataclasses.replace(config, gradient=gradient_settings(gradient, config.gradient),
                                   **top, **chosen)
    except CalibrationConfigError as error:
        raise CliError(f"model options: {str(error).removeprefix('config: ')}") from None


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
    streams: Annotated[str | None, typer.Option(
        help="Observed streams in the loss, comma-separated (e.g. gpp,reco,et,lai); each must "
             "be in the driver. Default: the config's; those the driver lacks are left out "
             "with a notice.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a finished run in --out (only the files differland "
                            "wrote).")] = False,
    finetune: Annotated[Path | None, typer.Option(
        help="Model directory of differland spatial train: start from its prediction for "
             "the site and pull toward it (prior_weight of the config). Needs the site's row "
             "in the sites.csv beside the driver; the model options are the network's.")
    ] = None,
    **model_options,
) -> None:
    """Calibrate at one site, evaluate on the held-out period and write a run directory.

    An unfinished run in --out is resumed from its checkpoints. The process options default
    to the config's (without --config: the default calibration's).
    """
    from differland import enable_float64
    from differland.workflows import calibrate_site

    chosen = _stream_names(streams)
    settings = load_calibration_config(config, _given_options(model_options), streams=chosen,
                                       seed=seed, n_starts=starts, max_iterations=iterations)
    if float64:
        enable_float64()
    prior = None
    if finetune is not None:
        from differland.spatial_workflows import site_prior

        prior = site_prior(finetune, driver, settings)
    metrics = calibrate_site(driver, out, settings, progress=progress, overwrite=overwrite,
                             streams_required=chosen is not None, inputs=(config,),
                             prior=prior)
    if metrics["periods"]["test"] is None:
        typer.echo(f"wrote {out}: {metrics['site']} (no test period)")
        return
    tests = ", ".join(f"{name} {values['test']['nse']:.2f}"
                      for name, values in metrics["skill"].items())
    typer.echo(f"wrote {out}: {metrics['site']} test NSE {tests}")


posterior_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                            context_settings=_CONTEXT,
                            help="Bayesian calibration: NUTS at a site; variational "
                                 "posteriors of many sites or of a spatialization network.")
app.add_typer(posterior_app, name="posterior")


@posterior_app.command("site")
def posterior_site_command(
    driver: Annotated[Path, typer.Option(help="Site driver NetCDF (CARDAMOM layout).")],
    out: Annotated[Path, typer.Option(
        help="Run directory (an unfinished run there resumes from its warmup state).")],
    config: Annotated[Path | None, typer.Option(
        help="JSON posterior config: keys of SiteCalibrationConfig plus priors, "
             "structural_error, constraint_scale, network and nuts (docs/calibration.md).")
    ] = None,
    chains: Annotated[int | None, typer.Option(
        help="Markov chains (default: the config's, 4).")] = None,
    warmup: Annotated[int | None, typer.Option(
        help="Warmup iterations per chain (default: the config's, 500).")] = None,
    samples: Annotated[int | None, typer.Option(
        help="Post-warmup iterations per chain (default: the config's, 500).")] = None,
    thin: Annotated[int | None, typer.Option(
        help="Keep every K-th post-warmup iteration (default: the config's, 1).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the starts and the sampler (default: the config's, 0).")] = None,
    dense_mass: Annotated[bool | None, typer.Option(
        "--dense-mass/--diagonal-mass",
        help="Adapt a dense or a diagonal mass matrix (default: the config's, dense).")
    ] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit with status 1 when the diagnostics say the run has not "
                         "converged (after writing everything).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    float64: Annotated[bool, typer.Option("--float64", help="Compute in float64.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a finished run in --out (only the files differland "
                            "wrote).")] = False,
) -> None:
    """Sample the posterior of a site calibration with NUTS and write its diagnostics,
    predictive bands and figures."""
    from differland import enable_float64
    from differland.posterior_workflows import (
        load_posterior_config,
        posterior_site,
        summary_line,
    )

    settings = load_posterior_config(config, chains=chains, warmup=warmup, samples=samples,
                                     thin=thin, seed=seed, dense_mass=dense_mass)
    if float64:
        enable_float64()
    diagnostics = posterior_site(driver, out, settings, progress=progress, overwrite=overwrite,
                                 inputs=(config,))
    typer.echo(summary_line(out, diagnostics))
    if strict and not diagnostics["converged"]:
        print(f"differland: not converged: {'; '.join(diagnostics['reasons'])}",
              file=sys.stderr)
        raise typer.Exit(1)


_SVI_HELP = {
    "config": "JSON config: posterior keys (as for 'posterior site'), plus svi (guide, rank, "
              "steps, learning_rate, particles, draws, init, init_scale, seed, checkpoint_every, "
              "hidden, depth, seeds) and extra_predictors (docs/calibration.md).",
    "steps": "SVI steps (default: the config's, 3000).",
    "draws": "Posterior draws kept per site (default: the config's, 1000).",
    "seed": "Seed of the starts, the ELBO's draws and the posterior draws (default: the "
            "config's, 0).",
}


def _variational_run(run, sites_dir: Path, out: Path, config: Path | None, float64: bool,
                     overrides: dict, **keywords) -> None:
    from differland import enable_float64
    from differland.variational_workflows import load_variational_config, summary_line

    settings = load_variational_config(config, **overrides)
    if float64:
        enable_float64()
    record = run(sites_dir, out, settings, inputs=(config,), **keywords)
    typer.echo(summary_line(out, record))


_SitesDir = Annotated[Path, typer.Option(
    help="Folder of site drivers (<SITE_ID>.nc) and their sites.csv.")]
_RunOut = Annotated[Path, typer.Option(help="Run directory (an unfinished run there is "
                                            "resumed).")]
_SviConfig = Annotated[Path | None, typer.Option(help=_SVI_HELP["config"])]
_Steps = Annotated[int | None, typer.Option(help=_SVI_HELP["steps"])]
_Draws = Annotated[int | None, typer.Option(help=_SVI_HELP["draws"])]
_SviSeed = Annotated[int | None, typer.Option(help=_SVI_HELP["seed"])]
_Progress = Annotated[bool, typer.Option(help="Show progress bars.")]
_Float64 = Annotated[bool, typer.Option("--float64", help="Compute in float64.")]
_Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a finished run in --out (only the files differland wrote).")]


@posterior_app.command("sites")
def posterior_sites_command(
    sites_dir: _SitesDir,
    out: _RunOut,
    config: _SviConfig = None,
    sites_csv: Annotated[Path | None, typer.Option(
        help="Sites to fit (default: SITES_DIR/sites.csv).")] = None,
    guide: Annotated[str | None, typer.Option(
        help="Guide of each site: normal (independent normals), lowrank or multivariate "
             "(default: the config's, lowrank).")] = None,
    steps: _Steps = None,
    draws: _Draws = None,
    seed: _SviSeed = None,
    progress: _Progress = True,
    float64: _Float64 = False,
    overwrite: _Overwrite = False,
) -> None:
    """Variational posteriors (SVI) of every site at once: parameters and predictive bands
    per site, with Pareto k diagnostics."""
    from differland.variational_workflows import posterior_sites

    _variational_run(posterior_sites, sites_dir, out, config, float64,
                     {"guide": guide, "steps": steps, "draws": draws, "seed": seed},
                     sites_csv=sites_csv, progress=progress, overwrite=overwrite)


@posterior_app.command("spatial")
def posterior_spatial_command(
    out: _RunOut,
    sites_dir: Annotated[Path | None, typer.Option(
        help="Folder of site drivers (<SITE_ID>.nc) and their sites.csv.")] = None,
    grid: Annotated[Path | None, typer.Option(
        help="Grid driver (Zarr or NetCDF): a variational network over its cells, with "
             "parameter maps with credible intervals and regional budgets with posterior "
             "spread under OUT/prediction.")] = None,
    config: Annotated[Path | None, typer.Option(
        help=f"Sites: {_SVI_HELP['config']} Grid: keys of GridConfig (docs/spatial.md); "
             "variational is set.")] = None,
    sites_csv: Annotated[Path | None, typer.Option(
        help="Training sites (default: SITES_DIR/sites.csv).")] = None,
    predict_csv: Annotated[Path | None, typer.Option(
        help="Sites the network does not see (drivers in --sites-dir): their predicted "
             "posteriors and how well the predictive bands cover their observations.")
    ] = None,
    steps: Annotated[int | None, typer.Option(
        help="SVI steps (sites: default the config's, 3000; grid: the most minibatch steps, "
             "default the config's max_iterations).")] = None,
    draws: Annotated[int | None, typer.Option(
        help="Posterior draws kept per site (default: the config's, 1000); grid: per cell "
             "and network (default: the config's posterior_draws, 10).")] = None,
    seed: Annotated[int | None, typer.Option(
        help=f"{_SVI_HELP['seed']} Grid: one network of this seed.")] = None,
    devices: Annotated[int | None, typer.Option(
        help="Grid: devices the minibatches are split over (default: all; on CPU, this "
             "many host devices).")] = None,
    memory: Annotated[float, typer.Option(
        help="Grid: GiB of per-cell arrays held in memory (as for spatial train).")] = 4.0,
    progress: _Progress = True,
    float64: _Float64 = False,
    overwrite: _Overwrite = False,
) -> None:
    """A Bayesian spatialization network: a variational posterior of every site's (or grid
    cell's) parameters given its predictors, trained on the observations (SVI)."""
    _one_source(sites_dir, grid)
    if grid is not None:
        if sites_csv is not None or predict_csv is not None:
            raise CliError("--grid: --sites-csv and --predict-csv are for sites")
        if float64:
            raise CliError("--float64: a grid is computed in float32")
        _use_devices(devices)
        from differland.grid_workflows import grid_posterior, posterior_table, read_grid_config

        values = read_grid_config(config, seed, steps)
        if draws is not None:
            if draws < 1:
                raise CliError(f"--draws: must be at least 1, not {draws}")
            values["posterior_draws"] = draws
        _check_memory(memory)
        record = grid_posterior(grid, out, values, devices=devices, progress=progress,
                                overwrite=overwrite, memory_gib=memory)
        if record.get("report", {}).get("parameters"):
            typer.echo(posterior_table(record["report"]))
        typer.echo(f"wrote {out}: model/, prediction/ (parameters.nc with posterior sd and "
                   f"5-95 % quantiles, fluxes.nc, budgets.csv), {record['members']} "
                   "posterior members")
        return
    from differland.variational_workflows import posterior_spatial

    _variational_run(posterior_spatial, sites_dir, out, config, float64,
                     {"steps": steps, "draws": draws, "seed": seed},
                     sites_csv=sites_csv, predict_csv=predict_csv, progress=progress,
                     overwrite=overwrite)


def _refresh_option_parameters() -> None:
    """Give ``simulate`` and ``calibrate site`` a command-line option for every process
    option now registered (the parser is built from the signatures on every call)."""
    from differland.config import ModelConfig

    for command, defaults in ((simulate, _option_defaults(ModelConfig())),
                              (calibrate_site_command, _option_defaults(_DEFAULT.model_config))):
        base = getattr(command, "_base_signature", None)
        if base is None:
            base = inspect.signature(command, eval_str=True)
            base = base.replace(parameters=[p for p in base.parameters.values()
                                            if p.kind != inspect.Parameter.VAR_KEYWORD])
            command._base_signature = base
        generated = _option_parameters(defaults)
        taken = sorted({p.name for p in generated} & set(base.parameters))
        if taken:
            raise CliError(f"the process option(s) {', '.join(taken)} take the name of an "
                           "option of the command; register them under another name")
        command.__signature__ = base.replace(
            parameters=[*base.parameters.values(), *generated])


spatial_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=_CONTEXT,
                          help="Spatialization: one network maps what is known about a place "
                               "to its parameters.")
app.add_typer(spatial_app, name="spatial")


def _one_source(sites_dir: Path | None, grid: Path | None) -> None:
    if (sites_dir is None) == (grid is None):
        raise CliError("--sites-dir / --grid: give exactly one (sites or a grid driver)")


def _use_devices(devices: int | None) -> None:
    """Ask for ``devices`` CPU devices when the machine has fewer accelerators; must run
    before the first JAX computation."""
    if devices is None:
        return
    if devices < 1:
        raise CliError(f"--devices: {devices} is not a positive number of devices")
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # backends already started (e.g. in a test process)
        pass


def _check_memory(memory: float) -> None:
    if not (memory >= 0 and memory < float("inf")):
        raise CliError(f"--memory: {memory:g} is not a size in GiB (0 or more)")


@spatial_app.command("train")
def spatial_train_command(
    out: Annotated[Path, typer.Option(
        help="Model directory (an unfinished training there is resumed).")],
    sites_dir: Annotated[Path | None, typer.Option(
        help="Folder of site drivers (<SITE_ID>.nc) and their sites.csv.")] = None,
    grid: Annotated[Path | None, typer.Option(
        help="Grid driver (Zarr or NetCDF): train over its cells in minibatches.")] = None,
    config: Annotated[Path | None, typer.Option(
        help="JSON configuration (sites: keys of SpatialConfig, \"calibration\" holding the "
             "site calibration keys; grid: keys of GridConfig).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Train one network with this seed (default: the config's seeds).")] = None,
    iterations: Annotated[int | None, typer.Option(
        help="Maximum Adam iterations (default: the config's).")] = None,
    sites_csv: Annotated[Path | None, typer.Option(
        help="Sites to train on (default: SITES_DIR/sites.csv).")] = None,
    devices: Annotated[int | None, typer.Option(
        help="Grid: devices the minibatches are split over (default: all; on CPU, this "
             "many host devices).")] = None,
    memory: Annotated[float, typer.Option(
        help="Grid: GiB of per-cell arrays held in memory; a larger grid's are memory-mapped "
             "from a temporary folder beside --out and read a minibatch at a time.")] = 4.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a trained model in --out.")] = False,
) -> None:
    """Train the spatialization network on every site's calibration period, or over the
    cells of a grid."""
    _one_source(sites_dir, grid)
    if grid is not None:
        _use_devices(devices)
        from differland.grid_workflows import grid_train, read_grid_config

        values = read_grid_config(config, seed, iterations)
        _check_memory(memory)
        record = grid_train(grid, out, values, devices=devices, progress=progress,
                            overwrite=overwrite, memory_gib=memory)
        seeds = ", ".join(f"seed {k}: {v['iterations']} iterations, validation loss "
                          f"{v['best_validation_loss']:.4g}" for k, v in record["seeds"].items())
        typer.echo(f"wrote {out}: {record['cells']} cells on {record['devices']} device(s); "
                   f"{seeds}")
        return
    from differland.spatial_workflows import load_config, spatial_train

    settings = load_config(config, seed, iterations)
    record = spatial_train(sites_dir, out, settings, sites_csv=sites_csv, progress=progress,
                           overwrite=overwrite, inputs=(config,))
    seeds = ", ".join(f"seed {k}: {v['iterations']} iterations, validation loss "
                      f"{v['best_validation_loss']:.4g}" for k, v in record["seeds"].items())
    typer.echo(f"wrote {out}: {record['sites']} sites; {seeds}")


@spatial_app.command("predict")
def spatial_predict_command(
    model: Annotated[Path, typer.Option(help="Model directory of differland spatial train.")],
    out: Annotated[Path, typer.Option(
        help="Output folder: one run directory per site, or the maps of a grid.")],
    sites_csv: Annotated[Path | None, typer.Option(
        help="Sites to predict (sites.csv columns: SITE_ID, lat, ELEV, MAP, MAT, IGBP, "
             "test_start, and the model's extra predictors).")] = None,
    sites_dir: Annotated[Path | None, typer.Option(help="Folder of the sites' drivers.")] = None,
    grid: Annotated[Path | None, typer.Option(
        help="Grid driver: parameter and flux maps, regional budgets, figures.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace earlier predictions in --out.")] = False,
    memory: Annotated[float, typer.Option(
        help="Grid: GiB of per-cell arrays held in memory; a larger grid's are memory-mapped "
             "from a temporary folder beside --out and read a minibatch at a time.")] = 4.0,
) -> None:
    """Predict the parameters of every site (or grid cell), simulate and score it."""
    if grid is not None:
        if sites_csv is not None or sites_dir is not None:
            raise CliError("--grid: give either a grid or --sites-csv and --sites-dir")
        from differland.grid_workflows import grid_predict

        _check_memory(memory)
        report = grid_predict(model, grid, out, memory_gib=memory)
        typer.echo(f"wrote {out}: parameters.nc, fluxes.nc, maps/, budgets.csv, "
                   f"identified.json ({len(report['identified'])} identified parameters)")
        return
    if sites_csv is None or sites_dir is None:
        raise CliError("--sites-csv and --sites-dir: both are needed (or --grid)")
    from differland.spatial_workflows import spatial_predict

    results = spatial_predict(model, sites_csv, sites_dir, out, overwrite=overwrite)
    typer.echo(f"wrote {out}: {len(results)} sites; {out / 'summary.md'}")


@spatial_app.command("cv")
def spatial_cv_command(
    sites_dir: Annotated[Path, typer.Option(
        help="Folder of site drivers (<SITE_ID>.nc) and their sites.csv.")],
    folds: Annotated[int, typer.Option(help="Number of groups of held-out sites.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    config: Annotated[Path | None, typer.Option(help="JSON configuration.")] = None,
    seed: Annotated[int | None, typer.Option(help="Train one network with this seed.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Maximum Adam iterations.")] = None,
    site_runs: Annotated[Path | None, typer.Option(
        help="Folder of the sites' own calibration runs (<SITE>/metrics.json), shown next "
             "to the held-out skill.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace earlier results in --out.")] = False,
) -> None:
    """Leave-sites-out cross-validation of the spatialization network."""
    from differland.spatial_workflows import load_config, spatial_cv

    settings = load_config(config, seed, iterations)
    results = spatial_cv(sites_dir, folds, out, settings, site_runs=site_runs,
                         progress=progress, overwrite=overwrite, inputs=(config,))
    typer.echo(f"wrote {out}: {len(results)} held-out sites in {folds} folds; "
               f"{out / 'summary.md'}")


MAX_EXAMPLE_YEARS = 200
"""Longest example driver [years]."""


def _region(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise CliError(f"--region: {text!r} is not LON0,LON1,LAT0,LAT1 (four numbers)")
    return values


@app.command("world")
def world_command(
    out: Annotated[Path, typer.Option(help="New Zarr store of the world (WORLD.zarr).")],
    resolution: Annotated[float, typer.Option(
        help="Cell size [degree], a multiple of 0.5 that divides 180.")] = 2.0,
    region: Annotated[str | None, typer.Option(
        help="LON0,LON1,LAT0,LAT1 [degree] (default: the globe).")] = None,
    years: Annotated[int, typer.Option(help="Years of monthly steps from 2001.")] = 10,
    seed: Annotated[int, typer.Option(
        help="Seed of the climate anomalies, planted maps and observation noise.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build a twin world on real land cover, climate zones and elevation: synthetic
    climate, planted parameter maps, and noisy observations of the model's fluxes, with the
    truth beside them."""
    from differland.grid_workflows import make_world
    from differland.world.build import WorldSpec

    spec = WorldSpec(resolution=resolution, region=_region(region), years=years, seed=seed)
    dataset = make_world(out, spec, progress)
    typer.echo(f"wrote {out}: {int(dataset['mask'].sum())} cells, {dataset.sizes['time']} "
               f"months, {dataset.sizes.get('region', 0)} regions")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    smoke: Annotated[bool, typer.Option(
        "--smoke", help="A tiny world and a few iterations (a check that it runs).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build a small twin world, train the network over it, predict maps and budgets, and
    print how well the planted parameters and fluxes were recovered."""
    from differland.grid_workflows import demo

    demo(out, smoke=smoke, progress=progress)


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


@app.command("options")
def options_command() -> None:
    """Print the process options, their fields and what they read as a Markdown table."""
    from differland.options import markdown_table

    typer.echo(markdown_table())


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
    from differland.options import OptionError
    from differland.params import ParameterError

    argv = list(sys.argv[1:] if argv is None else argv)
    usage_errors = _usage_error_types()
    user_errors = (CliError, DriverError, ForcingError, ParameterError, OutputError,
                   OptionError, CalibrationConfigError, CheckpointMismatchError,
                   NonFiniteLossError)
    if argv[:1] in (["spatial"], ["world"], ["demo"]) or any(a.startswith("--finetune")
                                                             for a in argv):
        # Flax is imported only by the commands that use it
        from differland.calibrate.gradient import SettingsError
        from differland.spatial.predictors import PredictorError
        from differland.world.build import WorldError
        from differland.world.maps import WorldMapsError

        user_errors += (PredictorError, SettingsError, WorldError, WorldMapsError)
    try:
        _refresh_option_parameters()
        app(args=argv, prog_name="differland", standalone_mode=False)
    except user_errors as error:
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
