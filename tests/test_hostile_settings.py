"""Hostile settings: one validation names the field and its range; the page cannot submit a bad
value; the CLI answers `error:` and status 2, never a traceback."""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeprnn import controls as ctl
from deeprnn.cli import main
from deeprnn.config import CHOICES, PRESETS, RANGES, ConfigError, RunConfig, describe_range, preset

NUMBERS = st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()
ANYTHING = NUMBERS | st.text(max_size=5) | st.none()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(set(RANGES) | set(CHOICES))), ANYTHING)
def test_any_value_of_any_field_is_accepted_or_named_with_its_range(name, value):
    try:
        config = RunConfig(**{name: value})
    except ConfigError as err:
        message = str(err)
        assert err.field == name and message.startswith(name + " must be ")
        if name in CHOICES:
            assert all(choice in message for choice in CHOICES[name])
        else:
            assert describe_range(name) in message or "whole number" in message or "finite number" in message
    else:
        assert getattr(config, name) == value


DROPOUT_VALUES = st.integers(0, round((ctl.DROPOUT_RANGE[1] - ctl.DROPOUT_RANGE[0]) / ctl.DROPOUT_RANGE[2])).map(
    lambda i: ctl.DROPOUT_RANGE[0] + i * ctl.DROPOUT_RANGE[2])
WIDGET_VALUES = st.fixed_dictionaries({
    "preset": st.sampled_from(list(ctl.PRESET_LABELS)),
    "tokens": st.sampled_from(list(ctl.TOKEN_LABELS)),
    "preprocess": st.sampled_from(list(ctl.CLEANING_LABELS)),
    "cell": st.sampled_from(list(ctl.CELL_LABELS)),
    "layers": st.integers(*ctl.LAYER_RANGE),
    "hidden": st.sampled_from(ctl.HIDDEN_CHOICES),
    "dropout": DROPOUT_VALUES,
    "weight_drop": DROPOUT_VALUES,
    "embedding": st.sampled_from(ctl.EMBEDDING_CHOICES),
    "optimizer": st.sampled_from(CHOICES["optimizer"]),
    "lr": st.sampled_from(ctl.LR_CHOICES),
    "clip": st.sampled_from(ctl.CLIP_CHOICES),
    "batch": st.sampled_from(ctl.BATCH_CHOICES),
    "steps": st.sampled_from(ctl.STEPS_CHOICES),
    "epochs": st.integers(*ctl.EPOCH_RANGE),
    "device": st.sampled_from(list(ctl.devices_found())),
    "corpus_source": st.sampled_from(list(ctl.CORPUS_LABELS)),
})


@settings(max_examples=300, deadline=None)
@given(WIDGET_VALUES)
def test_every_value_the_page_can_submit_is_a_valid_config(values):
    config = ctl.config_from_values(values, text="some text")
    assert dataclasses.asdict(config)["layers"] == values["layers"] and config.preprocess == values["preprocess"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_chosen_on_the_page_trains_that_preset_not_a_neighbour(name):
    # each preset value must be one the widgets offer, or the page snaps it to the nearest choice
    values = {**ctl.initial_values(), **ctl.preset_values(name)}
    assert ctl.config_from_values(values) == preset(name)


def test_the_page_widgets_offer_exactly_the_checked_ranges(app):
    layers = app.slider(key="layers")
    assert (layers.min, layers.max) == ctl.LAYER_RANGE
    for key in ("dropout", "weight_drop"):
        slider = app.slider(key=key)
        assert (slider.min, slider.max, slider.step) == pytest.approx(ctl.DROPOUT_RANGE)
    assert tuple(app.select_slider(key="hidden").options) == tuple(map(str, ctl.HIDDEN_CHOICES))
    epochs = app.number_input(key="epochs")
    assert (epochs.min, epochs.max) == ctl.EPOCH_RANGE


@pytest.mark.parametrize("argv, message", [
    (["--layers", "9"], "layers must be >= 1 and <= 8"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--dropout", "1"], "dropout must be >= 0.0 and < 1.0"),
    (["--batch", "0"], "batch must be >= 1"),
    (["--precision", "fp8"], "invalid choice"),
])
def test_cli_names_the_field_and_its_range(argv, message, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


CONFIG_FLAGS = {
    "--layers": st.integers(-3, 12), "--hidden": st.integers(-4, 40), "--dropout": st.floats(-1, 2),
    "--lr": st.floats(-1, 200) | st.sampled_from([float("nan"), float("inf")]), "--batch": st.integers(-2, 40),
    "--steps": st.integers(-2, 40), "--embedding": st.integers(-2, 20), "--clip": st.floats(-1, 10),
    "--val-fraction": st.floats(-0.5, 1.0), "--cell": st.sampled_from(["rnn", "gru", "lstm", "tcn", ""]),
    "--tokens": st.sampled_from(["char", "word", "byte"]), "--max-tokens": st.integers(-5, 3000),
    "--optimizer": st.sampled_from(["sgd", "adam", "lion"]), "--seed": st.integers(-5, 2**32),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(CONFIG_FLAGS)), st.none(), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: CONFIG_FLAGS[k] for k in keys})))
def test_random_cli_configs_train_or_fail_cleanly(capsys, flags):
    argv = ["train", "--epochs", "1", "--device", "cpu", "--max-tokens", "1500", "--hidden", "8"]
    for flag, value in flags.items():
        argv += [flag, str(value)]
    status = main(argv)
    out, err = capsys.readouterr()
    assert status in (0, 2, 3), status
    assert "Traceback" not in err
    if status == 2:
        assert err.strip().splitlines()[-1].startswith("error: ")
    if status == 0:
        assert out.startswith("perplexity ")
