"""ModelConfig answers what a run reads and returns: parameter_names(), state_names(),
output_names().

For a configuration, every registry parameter of its variant is perturbed in turn (all
perturbed runs vmapped together): a parameter outside ``parameter_names()`` must leave every
state and output bit unchanged over a year of forcing, and each one inside must change some.
The same runs carry exactly the state fields and return exactly the outputs declared.
"""

from __future__ import annotations

import dataclasses
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import load
from helpers import site_forcing, take

from differland import (
    GlobalModel,
    LinearBeta,
    ModelConfig,
    SiteModel,
    State,
    StepOutputs,
    simulate,
)
from differland._pytree import field_names
from differland.calibrate.site import SiteCalibrationConfig
from differland.options import SLOTS, field_types, options, spec
from differland.params import SPECS, ParameterSet, default_parameters, names_for
from differland.processes.neural import init_network

SITE = ModelConfig(model=SiteModel())
DEFAULT_CALIBRATION = SiteCalibrationConfig().model_config


def perturbed(value: float, name: str) -> float:
    """A value a tenth of the way from ``value`` to the farther bound of its prior box."""
    spec = SPECS[name]
    target = spec.upper if spec.upper - value >= value - spec.lower else spec.lower
    return value + 0.1 * (target - value)


def check_parameter_names(config: ModelConfig, forcing) -> None:
    variant = config.variant
    names = names_for(variant)
    base = default_parameters(variant)
    rows = [{name: float(base[name]) for name in names}]
    for name in names:
        row = dict(rows[0])
        row[name] = perturbed(row[name], name)
        rows.append(row)
    batch = ParameterSet({name: jnp.asarray([row[name] for row in rows]) for name in names})
    network = init_network(jax.random.PRNGKey(0), config)
    run = jax.jit(jax.vmap(lambda p: simulate(p, forcing, config, network=network)))
    trajectory = run(batch)
    returned = tuple(name for name in field_names(StepOutputs)
                     if getattr(trajectory.outputs, name) is not None)
    carried = tuple(name for name in field_names(State)
                    if getattr(trajectory.final_state, name) is not None)
    assert returned == config.output_names()
    assert carried == config.state_names()
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(trajectory)]
    used = set(config.parameter_names())
    for i, name in enumerate(names, start=1):
        changed = any(not np.array_equal(leaf[i], leaf[0], equal_nan=True) for leaf in leaves)
        if name in used:
            assert changed, f"{name} is in parameter_names() but changes no output"
        else:
            assert not changed, f"{name} is outside parameter_names() but changes an output"


def forms(cls) -> list:
    """An option class's default and each form a choice field gives it (each boolean field
    flipped, each other choice of a ``Literal`` field)."""
    default = cls()
    out = [default]
    hints = typing.get_type_hints(cls)
    for name, kind in field_types(cls).items():
        value = getattr(default, name)
        if kind is bool:
            out.append(dataclasses.replace(default, **{name: not value}))
        elif typing.get_origin(hints[name]) is typing.Literal:
            out += [dataclasses.replace(default, **{name: choice})
                    for choice in typing.get_args(hints[name]) if choice != value]
    return out


def with_option(base: ModelConfig, slot, option) -> ModelConfig | None:
    """``base`` with ``option`` in ``slot`` (a modifier toggled); ``None`` if they cannot run
    together."""
    if slot.multiple:
        present = [o for o in getattr(base, slot.name) if o.name == option.name]
        value = tuple(o for o in getattr(base, slot.name) if o.name != option.name) + (
            () if present else (option,))
    else:
        value = option
    try:
        return dataclasses.replace(base, **{slot.name: value})
    except ValueError:
        return None


def each_option(base: ModelConfig) -> dict[str, ModelConfig]:
    """``base`` with every form of every registered option of the site model swapped in."""
    configs = {}
    for slot in SLOTS.values():
        if slot.name == "model":
            continue
        for cls in options(slot.name).values():
            for option in forms(cls):
                config = with_option(base, slot, option)
                if config is not None and config != base:
                    configs[f"{slot.name}={spec(option)}"] = config
    return configs


def one_option_configs() -> dict[str, ModelConfig]:
    """Every process option of the registry alone on the plain site model."""
    return each_option(SITE)


def default_with_each_option() -> dict[str, ModelConfig]:
    """The default site calibration's model with each option of the registry swapped in (a
    modifier turned on or off)."""
    return each_option(DEFAULT_CALIBRATION)


@pytest.fixture(scope="module")
def year_of_us_var(fluxsites_dir):
    return site_forcing(fluxsites_dir, "US-Var", n_steps=365, start=100)


@pytest.mark.parametrize("config", [DEFAULT_CALIBRATION,
                                    ModelConfig(model=SiteModel(), water_stress=LinearBeta())],
                         ids=["default-calibration", "linear-beta"])
def test_parameter_names_are_exactly_what_the_site_model_reads(config, year_of_us_var):
    check_parameter_names(config, year_of_us_var)


def test_parameter_names_are_exactly_what_the_global_model_reads(golden_dir):
    _, _, forcing = load(golden_dir / "dalec993_synthetic_mid.nc")
    forcing = take(forcing, 2)  # a burning tropical pixel, five years monthly
    check_parameter_names(ModelConfig(model=GlobalModel(), water_stress=LinearBeta()), forcing)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(one_option_configs()))
def test_names_of_each_option_alone(name, year_of_us_var):
    check_parameter_names(one_option_configs()[name], year_of_us_var)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(default_with_each_option()))
def test_names_of_each_option_in_the_default_calibration(name, year_of_us_var):
    check_parameter_names(default_with_each_option()[name], year_of_us_var)


def test_calibration_frees_exactly_the_parameters_the_model_reads():
    from differland.calibrate.site import free_parameter_names

    config = SiteCalibrationConfig()
    assert free_parameter_names(config) == config.model_config.parameter_names()
    assert "field_capacity" not in free_parameter_names(config)  # neural beta
    # without water stress, the options that scale with 1 - beta have no effect
    plain = SiteCalibrationConfig(water_stress="none", leaf_loss=("drought_leaf_loss",))
    assert "drought_leaf_loss_rate" not in free_parameter_names(plain)
    assert "decomposition_water_sensitivity" not in free_parameter_names(plain)


def test_output_names_follow_the_kept_outputs():
    config = ModelConfig(model=SiteModel(), outputs=("nee", "gpp", "sif"))
    assert config.output_names() == ("gpp", "nee")
