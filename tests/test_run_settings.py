"""The run record (run_config.json): written by training, read and checked by inference and export."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from mnms_groupdistil.run_settings import check_run_settings, read_run_settings, write_run_settings

SETTINGS = {"network_name": "densenet121", "in_channels": 1, "image_size": 64, "intensity_percentiles": (1, 99)}


def test_write_then_read(tmp_path):
    path = write_run_settings(tmp_path / "run", SETTINGS)
    record = json.loads(path.read_text())
    assert path.name == "run_config.json"
    assert record["settings"] == {**SETTINGS, "intensity_percentiles": [1, 99]}
    assert record["command"] == sys.argv
    assert record["versions"]["torch"] and record["versions"]["monai"] and record["versions"]["python"]
    assert read_run_settings(tmp_path / "run") == record["settings"]


def test_a_resumed_run_with_other_settings_is_logged(tmp_path, caplog):
    write_run_settings(tmp_path, SETTINGS)
    with caplog.at_level(logging.WARNING, logger="mnms_groupdistil.run_settings"):
        write_run_settings(tmp_path, {**SETTINGS, "image_size": 224})
    assert "image_size 64 -> 224" in caplog.text
    assert read_run_settings(tmp_path)["image_size"] == 224


def test_missing_and_broken_records(tmp_path, caplog):
    assert read_run_settings(None) == {} and read_run_settings("") == {}
    with caplog.at_level(logging.WARNING, logger="mnms_groupdistil.run_settings"):
        assert read_run_settings(tmp_path) == {}
    assert "run_config.json not found" in caplog.text and "--run_dir" in caplog.text
    (tmp_path / "run_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="run_config.json is unreadable"):
        read_run_settings(tmp_path)
    (tmp_path / "run_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="no 'settings'"):
        read_run_settings(tmp_path)
    with pytest.raises(TypeError, match="settings must be a mapping"):
        write_run_settings(tmp_path, [("image_size", 64)])


def test_check_names_every_disagreement(tmp_path):
    recorded = {"image_size": 64, "intensity_percentiles": [1, 99], "in_channels": 1, "mode": "kd"}
    check_run_settings(recorded, {"image_size": 64, "intensity_percentiles": (1, 99), "network_name": "x"})
    with pytest.raises(ValueError) as error:
        check_run_settings(recorded, {"image_size": 224, "intensity_percentiles": [0.5, 99.5], "in_channels": 1}, "r")
    message = str(error.value)
    assert "image_size: the run trained with 64, now 224" in message
    assert "intensity_percentiles: the run trained with [1, 99], now [0.5, 99.5]" in message
    assert "in_channels" not in message and "r/run_config.json" in message
