"""The settings table: one entry per setting gives the flag, its help, the presets' values and `config.json`."""

import argparse
import dataclasses
import json

import pytest

from keras_hourglass.config import (
    PRESETS,
    SETTINGS,
    SETTINGS_BY_NAME,
    Config,
    add_arguments,
    config_from_json,
    resolve_config,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve_config(parser.parse_args(list(argv)))


def test_every_setting_is_a_flag_with_help_and_a_config_field():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    for setting in SETTINGS:
        assert setting.flag in flags and setting.help.strip(), setting.name
    assert {f.name for f in dataclasses.fields(Config)} == {"preset", *SETTINGS_BY_NAME}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_name_only_known_settings_and_resolve(preset):
    assert set(PRESETS[preset]) <= set(SETTINGS_BY_NAME)
    extra = [] if PRESETS[preset].get("dataset") == "synthetic" else ["--train-annotations", "t.h5",
                                                                       "--valid-annotations", "v.h5"]
    config = parse("--preset", preset, *extra)
    for name, value in PRESETS[preset].items():
        assert getattr(config, name) == value, name


def test_flags_override_the_preset_and_round_trip_through_json():
    config = parse("--preset", "synthetic-small", "--sigma", "1.5", "--stem-filters", "8,16,32", "--no-augment",
                   "--lr-decay-epochs", "5,9", "--output", "runs/x")
    assert (config.sigma, config.stem_filters, config.augment, config.lr_decay_epochs) == (1.5, (8, 16, 32), False,
                                                                                           (5, 9))
    assert config.learning_rate == PRESETS["synthetic-small"]["learning_rate"]
    text = json.dumps(config.to_json())
    assert config_from_json(json.loads(text)) == config


def test_drops_follow_epochs_when_only_epochs_is_given():
    assert parse("--preset", "synthetic-small", "--epochs", "36").lr_decay_epochs == (28,)
    assert parse("--preset", "synthetic-small", "--epochs", "36", "--lr-decay-epochs", "30").lr_decay_epochs == (30,)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be positive"),
    (["--sigma", "-1"], "--sigma must be positive"),
    (["--lr-decay-epochs", "9,3"], "--lr-decay-epochs must be increasing"),
    (["--normalizer-joints", "a"], "--normalizer-joints must be two comma-separated values"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_values_name_their_flag(argv, message):
    with pytest.raises(ValueError, match=message):
        parse(*argv)


def test_unknown_keys_in_config_json_are_refused():
    with pytest.raises(ValueError, match="unknown setting"):
        config_from_json({"preset": "synthetic-small", "stacks_count": 3})
