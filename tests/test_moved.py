"""The command names of earlier versions still run their command and say where it went."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys

import pytest
from helpers import REPO, run_command

from mnms_groupdistil.moved import MOVED


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_each_old_name_is_a_module_that_runs_its_new_command(old):
    source = importlib.util.find_spec(f"{old}.__main__").origin
    text = open(source, encoding="utf-8").read()
    assert f'run_moved("{old}")' in text  # the module runs its own entry, not another's
    assert importlib.util.find_spec(MOVED[old]) is not None


def test_old_name_warns_with_the_new_command_and_runs_it():
    old = run_command([sys.executable, "-m", "mnms_groupdistil.report", "--help"], REPO, _env())
    new = run_command([sys.executable, "-m", "mnms_groupdistil.tools.report", "--help"], REPO, _env())
    assert old.returncode == new.returncode == 0, old.stderr
    assert "python -m mnms_groupdistil.report has moved: run python -m mnms_groupdistil.tools.report" in old.stderr
    assert "moved" not in new.stderr
    assert old.stdout.split("\n", 1)[1] == new.stdout.split("\n", 1)[1]  # the same options (the prog name aside)


def test_old_generator_name_still_writes_the_cohort(tmp_path):
    proc = run_command(
        [sys.executable, "-m", "mnms_groupdistil.data.synthetic", "mnms", str(tmp_path / "MnM"), "--preset", "tiny"],
        REPO,
        _env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "run python -m mnms_groupdistil.datasets.generate" in proc.stderr
    (info,) = (tmp_path / "MnM").glob("*.csv")
    with open(info, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) > 12 and rows[0][1] == "External code"
