"""A teacher or evaluation checkpoint that is missing, not a torch file, of another architecture or carrying
a pickle payload ends a ``python -m monai.bundle run`` on its own message (naming the setting and the file),
with exit status 1, before anything is written to the run folder; the payload never runs."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import TINY_MNMS, refused

from mnms_groupdistil.networks import build_network
from mnms_groupdistil.run_lock import LOCK_NAME


class _Payload:
    """Pickled, it runs ``touch <marker>`` when loaded without weights_only."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _teacher_file(tmp_path, kind: str):
    path = tmp_path / f"{kind}.pt"
    if kind == "not_torch":
        path.write_text("not a torch file")
    elif kind == "student":
        torch.save(build_network("densenet121", num_classes=2, in_channels=1).state_dict(), path)
    elif kind == "pickle":
        torch.save({"network": _Payload(str(tmp_path / "ran"))}, path)
    return path


BAD_TEACHERS = {
    "missing": "does not exist: train the teacher first with configs/train_teacher.json or pass --teacher_ckpt",
    "not_torch": "could not be read as a torch weights file with weights_only=True",
    "student": "(plain state dict) does not match the network (ResNet): 122 missing keys",
    "pickle": "is refused: it holds Python objects other than tensors, and loading them could run code",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BAD_TEACHERS))
def test_a_bad_teacher_checkpoint_ends_on_its_message(bundle, cohort, tmp_path, kind):
    teacher = _teacher_file(tmp_path, kind)
    proc = bundle.cli(
        "training", ["train.json"], dataset_dir=cohort, output_dir=tmp_path / "o", teacher_ckpt=teacher, **TINY_MNMS
    )
    (line,) = refused(proc, 1)
    assert line.startswith(f"teacher checkpoint teacher_ckpt '{teacher}' ") and BAD_TEACHERS[kind] in line, line
    assert not (tmp_path / "ran").exists()  # the payload did not run
    assert not (tmp_path / "o" / "run_config.json").exists() and not (tmp_path / "o" / LOCK_NAME).exists()


@pytest.mark.slow
def test_evaluation_refuses_a_checkpoint_with_a_pickle_payload(bundle, cohort, tmp_path):
    model = _teacher_file(tmp_path, "pickle")
    proc = bundle.cli(
        "evaluating",
        ["train.json", "evaluate.json"],
        dataset_dir=cohort,
        output_dir=tmp_path,
        ckpt_path=model,
        **TINY_MNMS,
    )
    (line,) = refused(proc, 1)
    subject = f"network checkpoint ckpt_path '{model}'"
    assert line.startswith(f"{subject} is refused: it holds Python objects other than tensors"), line
    assert not (tmp_path / "ran").exists()
