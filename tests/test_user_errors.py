"""What a user sees when a run cannot go on, through the real ``python -m monai.bundle run`` command line:
the error's own message as the last lines and exit status 1 (mistyped overrides, settings that disagree with
the trained run, a busy output folder; checkpoints: ``test_checkpoint_errors.py``); a bug of ours still shows
its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import CPU, REPO, REPORTED, TINY_MNMS, last_lines, refused

from mnms_groupdistil.run_lock import LOCK_NAME
from mnms_groupdistil.run_settings import write_run_settings


@pytest.mark.slow
def test_the_issue_s_mistyped_overrides_are_refused_before_anything_runs(bundle, tmp_path):
    out = tmp_path / "o"
    overrides = {"max_epoch": 1, "teacher_ckp": "t.pt", "lerning_rate": 0.1, "val_fracton": 0.2}
    proc = bundle.cli("training", ["train.json"], dataset_dir=tmp_path, output_dir=out, **overrides, **CPU)
    lines = refused(proc, 6)
    assert lines[0].startswith("4 unknown setting(s) in the command line's overrides")
    assert lines[1] == "`max_epoch` is not a setting of this bundle; did you mean `max_epochs`?"
    assert lines[2].startswith("`teacher_ckp` is not a setting of this bundle; did you mean `teacher_ckpt`")
    assert lines[3].startswith("`lerning_rate` is not a setting of this bundle; did you mean `learning_rate`")
    assert lines[4].startswith("`val_fracton` is not a setting of this bundle; did you mean `val_fraction`")
    assert "extra config file" in lines[5]
    assert not out.exists()


@pytest.mark.slow
def test_inference_settings_other_than_the_run_s_end_on_the_list(bundle, tmp_path):
    run = tmp_path / "run"
    write_run_settings(run, {"network_name": "densenet121", "image_size": 224})
    proc = bundle.cli("inference", ["inference.json"], run_dir=run, dataset_dir=tmp_path, image_size=64, **CPU)
    lines = refused(proc, 3)
    assert lines[0].startswith("settings disagree with the run that trained the model") and str(run) in lines[0]
    assert lines[1] == "  image_size: the run trained with 224, now 64"


@pytest.mark.slow
def test_a_second_run_into_a_busy_output_dir_is_refused(bundle, cohort, tmp_path, lock_holder):
    out = tmp_path / "run"
    proc = bundle.cli("training", ["train.json", "train_teacher.json"], dataset_dir=cohort, output_dir=out, **TINY_MNMS)
    (line,) = refused(proc, 1)
    assert line.startswith(f"output_dir {out} is in use by another run: pid {lock_holder.pid} on host "), line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written; the holder's lock kept


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_a_reported_error_inside_a_wrapper_is_shown_alone_and_a_bug_with_its_traceback():
    setup = "from mnms_groupdistil.errors import InputError, report_errors; report_errors()\n"
    wrapped = _python(
        setup + "try:\n    raise InputError(['line one', 'line two'], header='2 problems:')\n"
        "except InputError as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    assert wrapped.returncode == 1 and "Traceback" not in wrapped.stderr, wrapped.stderr
    assert last_lines(wrapped.stderr, 4) == [REPORTED, "2 problems:", "line one", "line two"]
    bug = _python(setup + "raise KeyError('ours')\n")
    assert bug.returncode == 1 and "Traceback" in bug.stderr and last_lines(bug.stderr, 1) == ["KeyError: 'ours'"]
