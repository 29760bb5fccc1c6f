"""Inference on cine MRI volumes without labels: find the volumes, write per-patient predictions.

The bundle's ``inference.json`` classifies every slice at every (``frame_stride``-th) frame of each
4D volume and combines a volume's frames by majority vote, as the evaluation does per patient.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from mnms_groupdistil.data.mnms import cine_volume_problems
from mnms_groupdistil.errors import InputError
from mnms_groupdistil.metrics import majority_vote

__all__ = ["PatientPredictionWriter", "find_cine_volumes"]


def find_cine_volumes(path: str | Path, pattern: str = "*_sa.nii.gz") -> list[dict[str, Any]]:
    """Records of the 4D cine volumes at ``path``: one NIfTI file, or every ``pattern`` file below a folder.

    The subject is the file name up to ``_sa`` (``A0S9V9_sa.nii.gz`` -> ``A0S9V9``); the slice and
    frame counts come from the header. Each file gets the checks of the training data
    (:func:`mnms_groupdistil.data.mnms.cine_volume_problems`).

    Returns:
        ``[{"subject", "image", "num_slices", "num_frames"}, ...]`` sorted by path.

    Raises:
        InputError: (a ``ValueError``) no volume found, or a file that is unreadable, not 4D or truncated (all such files
            listed).
    """
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.rglob(pattern))
    else:
        raise InputError(f"{path} does not exist: pass a 4D NIfTI file or a folder of '{pattern}' files.")
    if not files:
        raise InputError(f"no '{pattern}' file found below {path}.")
    records, problems = [], []
    for file in files:
        subject = re.sub(r"(_sa)?\.nii(\.gz)?$", "", file.name)
        shape, file_problems = cine_volume_problems(file)
        if file_problems:
            problems += [f"{file} (subject {subject}): {p}" for p in file_problems]
            continue
        records.append(
            {"subject": subject, "image": str(file.resolve()), "num_slices": shape[2], "num_frames": shape[3]}
        )
    if problems:
        raise InputError(problems, header="cannot run inference on:")
    return records


class PatientPredictionWriter:
    """Collect an evaluator's frame predictions and write one prediction per patient to CSV.

    Columns: ``subject, prediction, frames``, then ``votes_<class>`` and ``mean_probability_<class>``
    for every class. The prediction is the majority vote over the patient's frames (ties go to the
    larger summed probability). A ``frame_predictions.csv`` beside it holds every frame's
    probabilities, slice and frame index.

    Args:
        filepath: the per-patient CSV to write (parent folders are created).
        class_names: one name per output channel.
        output_transform: engine output -> per-frame logits.
        batch_transform: engine batch -> ``(subject, slice, frame)``.
        name: logger name.
    """

    def __init__(
        self,
        filepath: str | Path,
        class_names: Sequence[str],
        output_transform: Callable = from_engine(["pred"]),
        batch_transform: Callable = from_engine(["subject", "slice", "frame"]),
        name: str | None = None,
    ) -> None:
        self.filepath = Path(filepath)
        self.class_names = [str(c) for c in class_names]
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.logger = logging.getLogger(name or __name__)
        self._rows: list[tuple[str, int, int, torch.Tensor]] = []

    def attach(self, engine: Engine) -> None:
        for event, handler in (
            (Events.EPOCH_STARTED, self.epoch_started),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
            (Events.EPOCH_COMPLETED, self.epoch_completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def epoch_started(self, engine: Engine) -> None:
        self._rows = []

    def iteration_completed(self, engine: Engine) -> None:
        logits = self.output_transform(engine.state.output)
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = torch.stack([torch.as_tensor(x) for x in logits]) if isinstance(logits, list) else logits
        probabilities = torch.softmax(torch.as_tensor(logits).detach().float().cpu().reshape(len(logits), -1), dim=1)
        subjects, slices, frames = self.batch_transform(engine.state.batch)
        for subject, z, t, p in zip(subjects, slices, frames, probabilities):
            self._rows.append((str(subject), int(z), int(t), p))

    def epoch_completed(self, engine: Engine) -> None:
        by_subject: dict[str, list[torch.Tensor]] = {}
        for subject, _, _, p in self._rows:
            by_subject.setdefault(subject, []).append(p)
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        header = ["subject", "prediction", "frames"]
        header += [f"votes_{c}" for c in self.class_names] + [f"mean_probability_{c}" for c in self.class_names]
        lines = []
        with open(self.filepath, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for subject, rows in by_subject.items():
                probabilities = torch.stack(rows)
                votes = torch.bincount(probabilities.argmax(dim=1), minlength=len(self.class_names)).tolist()
                mean = probabilities.mean(dim=0).tolist()
                prediction = self.class_names[majority_vote(probabilities)]
                writer.writerow([subject, prediction, len(rows), *votes, *(f"{m:.4f}" for m in mean)])
                lines.append(f"{subject}: {prediction} ({len(rows)} frames, votes {votes})")
        with open(self.filepath.with_name("frame_predictions.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["subject", "slice", "frame", *(f"probability_{c}" for c in self.class_names)])
            for subject, z, t, p in self._rows:
                writer.writerow([subject, z, t, *(f"{v:.4f}" for v in p.tolist())])
        self.logger.info("wrote %s\n%s", self.filepath, "\n".join(lines))
