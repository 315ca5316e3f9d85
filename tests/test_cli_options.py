"""The command line's options: -q anywhere, help with defaults, hints for unknown settings, `multigan settings`."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multigan.cli import build_parser, main, recipe_parser
from multigan.config import AudioConfig, RunConfig, replace_setting, setting_keys, settings_table
from multigan.errors import ConfigError
from multigan.presets import PRESETS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


# -q ---------------------------------------------------------------------
@pytest.mark.parametrize("argv, quiet", [
    (["train", "-q", "mnist-quick"], True),
    (["train", "mnist-quick", "--quiet"], True),
    (["-q", "train", "mnist-quick"], True),  # before the command, it still counts
    (["train", "mnist-quick"], False),
    (["report", "-q", "RUN"], True),
    (["report", "RUN"], False),
])
def test_quiet_before_or_after_the_command(argv, quiet):
    assert build_parser().parse_args(argv).quiet is quiet


def test_every_command_takes_quiet():
    for name, command in _commands(build_parser()).items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"-q", "--quiet"} <= flags, f"multigan {name} -q"


# Help -------------------------------------------------------------------
def _parsers() -> dict[str, argparse.ArgumentParser]:
    parsers = {f"multigan {name}": p for name, p in _commands(build_parser()).items()}
    parsers["multigan"] = build_parser()
    for needs_data in (True, False):
        parsers[f"recipe (needs data: {needs_data})"] = recipe_parser(
            {"mnist-quick": PRESETS["mnist-quick"]}, "a recipe", needs_data=needs_data)
    return parsers


# Options whose help is still to be written; remove an entry when it is.
NOT_YET: set[tuple[str, str]] = set()  # (parser, flag) pairs allowed to lack help; none today


@pytest.mark.parametrize("name, parser", list(_parsers().items()), ids=list(_parsers()))
def test_every_option_has_help_that_names_its_default(name, parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        flag = "/".join(action.option_strings) or action.metavar or action.dest
        if (name, flag) in NOT_YET:
            continue
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), f"{name} {flag} has no help"
        takes_value = action.nargs != 0
        if takes_value and action.default not in (None, argparse.SUPPRESS):
            assert "default" in action.help and str(action.default) in action.help, \
                f"{name} {flag}: the help does not say that the default is {action.default!r}: {action.help!r}"


def test_the_recipe_flags_say_where_their_defaults_come_from():
    help_text = recipe_parser({"mnist-quick": PRESETS["mnist-quick"]}, "a recipe", needs_data=False).format_help()
    assert "default: mnist-quick" in help_text and "runs/NAME" in help_text


# Unknown --set keys -----------------------------------------------------
@pytest.mark.parametrize("key, meant", [("train.batchsize", "train.batch_size"), ("optim.lr", "optim.lr_g"),
                                        ("batch_size", "train.batch_size"), ("data.rot", "data.root")])
def test_an_unknown_key_suggests_close_ones(key, meant):
    with pytest.raises(ConfigError, match=f"unknown setting '{key}' \\(did you mean .*'{meant}'"):
        RunConfig().override(key, "1")


def test_a_key_like_no_other_gets_no_suggestion():
    with pytest.raises(ConfigError) as e:
        RunConfig().override("zzzz", "1")
    assert "did you mean" not in str(e.value)


def test_suggestions_come_from_the_section_being_changed():
    with pytest.raises(ConfigError, match="did you mean 'gl_iter'"):
        replace_setting(AudioConfig(), "gl_itr", "4")


def test_a_settings_file_with_a_typo_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"'train\.stpes'.*did you mean 'steps'"):
        RunConfig.from_dict({"train": {"stpes": 10}})


def test_the_command_line_error_is_one_line_with_the_suggestion(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "multigan", "train", "mnist-quick", "--set", "train.batchsize=8",
                             "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multigan train: error: unknown setting 'train.batchsize'")
    assert "did you mean 'train.batch_size'" in lines[0]


# multigan settings -------------------------------------------------------------
def test_every_setting_has_one_line_of_help():
    rows = settings_table()
    assert len(rows) > 60
    for row in rows:
        assert row.help.strip() and "\n" not in row.help, f"{row.key} has no one-line help"
        assert row.key in setting_keys(RunConfig)
    # Every key that --set takes below the sections is listed, once.
    keys = [row.key for row in rows]
    assert len(set(keys)) == len(keys)
    assert {"train.batch_size", "data.audio.gl_iter", "model.resnet.depth", "loss.weights"} <= set(keys)


def test_settings_rows_hold_the_presets_values():
    rows = {row.key: row for row in settings_table(PRESETS["voice-16k"]())}
    assert rows["data.audio.sample_rate"].value == 16000 and rows["data.audio.sample_rate"].type == "int"
    assert rows["data.audio.fmax"].type == "float | None"
    assert rows["optim.betas"].value == [0.0, 0.99]  # a tuple shown as a list
    defaults = {row.key: row.value for row in settings_table()}
    assert defaults["data.audio.sample_rate"] == 8000  # an unset optional section shows its defaults


def _settings_lines(capsys, *argv) -> dict[str, str]:
    assert main(["settings", *argv]) == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line for line in out.splitlines()}


def test_settings_command_shows_a_presets_values(capsys):
    preset = PRESETS["mnist-quick"]()
    assert preset.model.z_dim != RunConfig().model.z_dim  # so the test tells the two apart
    lines = _settings_lines(capsys, "mnist-quick")
    assert lines["train.batch_size"].split()[:3] == ["train.batch_size", "int", str(preset.train.batch_size)]
    assert lines["model.z_dim"].split()[2] == str(preset.model.z_dim)
    assert "examples per step" in lines["train.batch_size"]
    assert lines["name"].split()[2] == '"mnist-quick"'

    defaults = _settings_lines(capsys)
    assert defaults["model.z_dim"].split()[2] == str(RunConfig().model.z_dim)
    assert set(defaults) == {row.key for row in settings_table()}


def test_settings_command_of_a_settings_file_and_of_a_bad_name(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps({"train": {"batch_size": 12}}))
    assert _settings_lines(capsys, str(tmp_path / "s.json"))["train.batch_size"].split()[2] == "12"
    assert main(["settings", "no-such-recipe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-recipe" in err[0]
