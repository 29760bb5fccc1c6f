"""Overrides that name no setting are refused with the closest ids; how the command line's overrides are read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import monai.bundle
import pytest
from helpers import CONFIGS

from mnms_groupdistil.errors import InputError, UnknownSettingError, find_reported_error
from mnms_groupdistil.overrides import (
    check_command_line,
    check_overrides,
    command_line_overrides,
    config_ids,
    parse_overrides,
)
from mnms_groupdistil.tools.benchmark import benchmark_bundle
from mnms_groupdistil.tools.reproduce import main as reproduce_main

MAIN = str(Path(monai.bundle.__file__).parent / "__main__.py")
COMMANDS = [
    ("mnms", "training", ["train.json"]),
    ("mnms", "evaluating", ["train.json", "evaluate.json"]),
    ("mnms", "inference", ["inference.json"]),
    ("waterbirds", "training", ["train.json"]),
    ("waterbirds", "evaluating", ["train.json", "evaluate.json"]),
    ("waterbirds", "inference", ["inference.json"]),
]


def test_overrides_are_python_literals_or_strings():
    parsed = parse_overrides(["max_epochs=1", "device=cpu", "amp=False", "intensity_percentiles=[2, 98]", "x=0.5"])
    assert parsed == {"max_epochs": 1, "device": "cpu", "amp": False, "intensity_percentiles": [2, 98], "x": 0.5}
    with pytest.raises(ValueError, match="ID=VALUE.*'max_epochs'"):
        parse_overrides(["max_epochs"])


def test_config_ids_are_top_level_ids_and_paths():
    config = {"a": 1, "b": {"c": [10, {"d": 2}]}}
    assert config_ids(config) == {"a", "b", "b#c", "b#c#0", "b#c#1", "b#c#1#d"}


def test_the_issue_s_typos_are_refused_with_the_intended_settings():
    typos = ["max_epoch", "teacher_ckp", "lerning_rate", "val_fracton", "train#trainer#max_epoch"]
    with pytest.raises(UnknownSettingError) as info:
        check_overrides([str(CONFIGS / "train.json")], ["max_epochs", "device", *typos, "split"])
    error = info.value
    assert isinstance(error, InputError)
    assert error.problems[:5] == [
        "`max_epoch` is not a setting of this bundle; did you mean `max_epochs`?",
        "`teacher_ckp` is not a setting of this bundle; did you mean `teacher_ckpt`?",
        "`lerning_rate` is not a setting of this bundle; did you mean `learning_rate`?",
        "`val_fracton` is not a setting of this bundle; did you mean `val_fraction`?",
        "`train#trainer#max_epoch` is not a setting of this bundle; did you mean `train#trainer#max_epochs`?",
    ]
    assert "extra config file" in error.problems[-1] and len(error.problems) == 6
    assert error.header.startswith("5 unknown setting(s) in the overrides")


def test_known_ids_come_from_every_merged_file(tmp_path):
    """A deliberate addition lives in an extra config file (the documented escape), then it can be overridden."""
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"my_note": "x", "network_def#dropout": 0.1}))
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json"), str(extra)]
    check_overrides(configs, ["my_note", "network_def#dropout", "train#sampler#shuffle", "+imports"])
    with pytest.raises(UnknownSettingError, match="`my_notes`.*did you mean `my_note`"):
        check_overrides(configs, ["my_notes"])


def test_command_line_overrides_are_read_as_fire_reads_them(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": [str(CONFIGS / "train.json")], "run_id": "training", "seed": 1}))
    argv = [
        MAIN, "run", "training", "--config_file", repr([str(CONFIGS / "train.json")]), "--max-epochs", "2",
        "--device=cpu", "--amp", "--group_adjustment", "-1", "--meta_file", "m.json", "--workflow_type", "train",
    ]  # fmt: skip
    assert command_line_overrides(argv) == (
        [str(CONFIGS / "train.json")],
        ["max_epochs", "device", "amp", "group_adjustment"],
    )
    found = command_line_overrides([MAIN, "run", "--args_file", str(args), "--max_epoch", "1"])
    assert found == ([str(CONFIGS / "train.json")], ["seed", "max_epoch"])
    with pytest.raises(UnknownSettingError, match="`max_epoch`"):
        check_command_line([MAIN, "run", "--args_file", str(args), "--max_epoch", "1"])
    assert command_line_overrides(["pytest", "run", "--max_epoch", "1"]) is None  # not a bundle run: nothing to check
    assert command_line_overrides([MAIN, "verify_metadata", "--x", "1"]) is None


def test_tracking_settings_ids_are_settings_of_a_tracked_command_line(tmp_path):
    """MONAI documents ``--tracking mlflow --tracking_uri ... --experiment_name ...``: with ``--tracking``, the ids its
    settings add are settings; without it they are typos like any other."""
    train = repr([str(CONFIGS / "train.json")])
    tracked = ["--tracking_uri", "sqlite:///x.db", "--experiment_name", "e", "--run_name", "r", "--max_epochs", "1"]
    check_command_line([MAIN, "run", "training", "--config_file", train, "--tracking", "mlflow", *tracked])
    with pytest.raises(UnknownSettingError, match="`tracking_uri`") as info:
        check_command_line([MAIN, "run", "training", "--config_file", train, *tracked])
    assert len(info.value.problems) == 4  # tracking_uri, experiment_name, run_name; and how to add an id
    settings = tmp_path / "tracking.json"  # a user's settings: its own top-level item; its handlers are no ids
    handlers_id = {"trainer": {"id": "train#trainer", "handlers": "train#handlers"}}
    settings.write_text(json.dumps({"handlers_id": handlers_id, "configs": {"server": "http://x", "trainer": {}}}))
    check_command_line([MAIN, "run", "--config_file", train, "--tracking", str(settings), "--server", "http://y"])
    with pytest.raises(UnknownSettingError, match="`trainer`"):
        check_command_line([MAIN, "run", "--config_file", train, "--tracking", str(settings), "--trainer", "1"])
    args = tmp_path / "args.json"  # the grid's runs give --tracking in their --args_file
    args.write_text(json.dumps({"config_file": [str(CONFIGS / "train.json")], "tracking": "mlflow", "run_name": "r"}))
    check_command_line([MAIN, "run", "--args_file", str(args)])


def test_reproduce_refuses_an_unknown_override(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        reproduce_main([str(tmp_path), "--override", "max_epoch=1", "--dry_run", "--output_dir", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "`max_epoch` is not a setting of this bundle; did you mean `max_epochs`?" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_benchmark_refuses_an_unknown_override(tmp_path):
    with pytest.raises(UnknownSettingError, match="`augment_on_devic` .*did you mean `augment_on_device`"):
        benchmark_bundle("mnms", "cpu", 32, 4, settings={"augment_on_devic": True}, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before generating its cohort


@pytest.mark.parametrize("name, run_id, configs", COMMANDS, ids=[f"{c[0]}-{c[1]}" for c in COMMANDS])
def test_every_config_checks_its_command_line_first(
    bundle, waterbirds_bundle, tmp_path, monkeypatch, name, run_id, configs
):
    """Each config's first steps refuse the command line's typo (the exported inference: ``test_export.py``)."""
    runner = bundle if name == "mnms" else waterbirds_bundle
    paths = runner.paths(configs)
    monkeypatch.setattr(sys, "argv", [MAIN, "run", run_id, "--config_file", repr(paths), "--devcie", "cpu"])
    workflow = runner.make(configs, workflow_type=None, run_id=run_id, output_dir=str(tmp_path / "o"), devcie="cpu")
    with pytest.raises(Exception) as info:
        workflow.initialize()
    found = find_reported_error(info.value)
    assert isinstance(found, UnknownSettingError), repr(info.value)
    assert found.problems[0] == "`devcie` is not a setting of this bundle; did you mean `device`?"
    assert not (tmp_path / "o").exists()
