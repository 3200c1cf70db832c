"""The option registry: texts read and written, errors that name what is known, and the
command line and documentation generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from differland import ClimatePhenology, ModelConfig, NeuralET
from differland.cli import main
from differland.options import (
    SLOTS,
    OptionError,
    markdown_table,
    options,
    parse,
    registered,
    spec,
    summary,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "model.md"


@pytest.mark.parametrize("slot, text, expected", [
    ("phenology", "climate", ClimatePhenology()),
    ("phenology", " climate : index_rates = fall ", ClimatePhenology(index_rates="fall")),
    ("phenology", "climate:memory_days=30,initial_index=0.25",
     ClimatePhenology(memory_days=30.0, initial_index=0.25)),
    ("evapotranspiration", "neural:soil_water_input=false,hidden=4",
     NeuralET(soil_water_input=False, hidden=4)),
])
def test_texts_name_options_and_read_back(slot, text, expected):
    option = parse(slot, text)
    assert option == expected
    assert parse(slot, spec(option)) == option


@pytest.mark.parametrize("slot, text, message", [
    ("phenology", "gsi", "unknown phenology option 'gsi'; known: calendar, climate"),
    ("phenology", "climate:pulses=true", "'pulses=true' is not field=value of one of"),
    ("phenology", "climate:memory_days", "'memory_days' is not field=value"),
    ("phenology", "calendar:water_limited_release=1", "give true or false"),
    ("evapotranspiration", "neural:hidden=2.5", "hidden: not an int"),
    ("phenology", "climate:index_rates=growth", "index_rates must be 'both' or 'fall'"),
    ("weather", "climate", "unknown option slot 'weather'"),
    ("water_stress", 3, "give an option name"),
])
def test_bad_texts_are_one_clear_error(slot, text, message):
    with pytest.raises(OptionError, match=message):
        parse(slot, text)


def test_model_config_takes_texts_and_keeps_modifiers_as_sets():
    config = ModelConfig(water_stress="beta", leaf_loss="drought_leaf_loss",
                         photosynthesis=["gpp_weather", "canopy_saturation"])
    same = ModelConfig(water_stress="beta", leaf_loss=("drought_leaf_loss",),
                       photosynthesis=("canopy_saturation", "gpp_weather"))
    assert config == same and hash(config) == hash(same)
    assert ModelConfig(**config.option_texts()) == config
    with pytest.raises(OptionError, match="given twice"):
        ModelConfig(leaf_loss=("drought_leaf_loss", "drought_leaf_loss"))
    with pytest.raises(OptionError, match="unknown leaf_loss option 'gpp_weather'"):
        ModelConfig(leaf_loss=("gpp_weather",))
    with pytest.raises(OptionError, match="is not a phenology option"):
        ModelConfig(phenology=NeuralET())


def test_every_option_is_documented_and_has_a_flag(capsys):
    table = markdown_table()
    assert table in DOCS.read_text(), "regenerate the options table of docs/model.md"
    assert main(["options"]) == 0
    assert capsys.readouterr().out.strip() == table
    for command in (["simulate", "--help"], ["calibrate", "site", "--help"]):
        assert main(command) == 0
        help_text = " ".join(capsys.readouterr().out.split())
        for slot in SLOTS.values():
            for name, cls in options(slot.name).items():
                flag = f"--{name.replace('_', '-')}" if slot.multiple else \
                    f"--{slot.name.replace('_', '-')}"
                assert flag in help_text
                assert " ".join(summary(cls).rstrip(".").split()) in help_text, name
    for cls in registered():
        assert summary(cls) and cls.__doc__.split("\n")[0].strip() == summary(cls)
