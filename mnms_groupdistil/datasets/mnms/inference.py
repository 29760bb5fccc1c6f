"""Inference on cine MRI without labels: find the 4D volumes (NIfTI or DICOM), write per-patient predictions to CSV.

The bundle's ``inference.json`` classifies every slice at every (``frame_stride``-th) frame of each
4D volume and combines a volume's frames by majority vote, as the evaluation does per patient.

This module and the modules it imports (relatively) are copied verbatim into an exported bundle's
``scripts/`` folder (:mod:`mnms_groupdistil.tools.export`), where they run without this package: they import
only numpy, torch, monai, ignite and nibabel (SimpleITK for DICOM series; highdicom for the DICOM SR that
:mod:`mnms_groupdistil.datasets.mnms.dicom_sr` writes of them).
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.config import KeysCollection
from monai.handlers import from_engine
from monai.transforms import MapTransform

from ...errors import InputError
from ...metrics import majority_vote
from ..predictions import PredictionWriter
from .dicom import LoadDicomCine, dicom_series_info, is_dicom_file
from .nifti import cine_volume_problems
from .volumes import LoadCineVolume

__all__ = ["LoadCineInputd", "PatientPredictionWriter", "find_cine_volumes"]


def _dicom_folders(root: Path) -> list[Path]:
    """Folders at or below ``root`` that directly hold at least one DICOM file."""
    folders = []
    for folder, _, names in os.walk(root):
        if any(is_dicom_file(os.path.join(folder, n)) for n in sorted(names)):
            folders.append(Path(folder))
    return sorted(folders)


def find_cine_volumes(path: str | Path, pattern: str = "*_sa.nii.gz") -> list[dict[str, Any]]:
    """Records of the cine volumes at ``path``: a NIfTI file, a DICOM series folder, or a folder of either.

    A folder is searched for ``pattern`` NIfTI files (the subject is the file name up to ``_sa``:
    ``A0S9V9_sa.nii.gz`` -> ``A0S9V9``) and for DICOM series (every folder directly holding DICOM files is one
    cine series, see :func:`.dicom.dicom_series_info`; the subject is the folder name). Each NIfTI file gets the
    checks of the training data (:func:`.nifti.cine_volume_problems`), each DICOM series the checks of its headers.
    The vendor comes from a DICOM series' Manufacturer tag and is empty for NIfTI files, whose headers do not carry
    it.

    Returns:
        ``[{"subject", "image", "num_slices", "num_frames", "vendor", "manufacturer"}, ...]``: NIfTI files sorted
        by path, then DICOM folders sorted by path.

    Raises:
        InputError: (a ``ValueError``) nothing found, or a file or series that is unreadable, not 4D, truncated
            or incomplete (all such inputs listed).
    """
    path = Path(path).expanduser()
    if path.is_file():
        files, folders = [path], []
    elif path.is_dir():
        files, folders = sorted(path.rglob(pattern)), _dicom_folders(path)
    else:
        raise InputError(
            f"{path} does not exist: pass a 4D NIfTI file, a DICOM series folder or a folder holding either."
        )
    if not files and not folders:
        raise InputError(f"no '{pattern}' file and no DICOM file found below {path}.")
    records, problems = [], []
    for file in files:
        subject = re.sub(r"(_sa)?\.nii(\.gz)?$", "", file.name)
        shape, file_problems = cine_volume_problems(file)
        if file_problems:
            problems += [f"{file} (subject {subject}): {p}" for p in file_problems]
            continue
        records.append(
            {
                "subject": subject,
                "image": str(file.resolve()),
                "num_slices": shape[2],
                "num_frames": shape[3],
                "vendor": "",
                "manufacturer": "",
            }
        )
    for folder in folders:
        try:
            info = dicom_series_info(folder)
        except ValueError as e:
            problems.append(str(e))
            continue
        records.append(
            {
                "subject": folder.name,
                "image": str(folder.resolve()),
                "num_slices": info["num_slices"],
                "num_frames": info["num_frames"],
                "vendor": info["vendor"],
                "manufacturer": info["manufacturer"],
            }
        )
    if problems:
        raise InputError(problems, header="cannot run inference on:")
    return records


class LoadCineInputd(MapTransform):
    """Load a cine input as ``(X, Y, Z, T)``: a NIfTI file as the training does, a DICOM series folder alike.

    A file goes through :class:`.volumes.LoadCineVolume` (nibabel, stored voxel order), a folder through
    :class:`.dicom.LoadDicomCine` (slices by position, phases by trigger time).
    The voxel spacing goes under ``spacing_key``.

    Args:
        keys: keys of the paths to load.
        spacing_key: key to write the spacing (mm) under; None to not write it.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self, keys: KeysCollection = "image", spacing_key: Hashable | None = "spacing", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
        self.volume_loader = LoadCineVolume()
        self.series_loader = LoadDicomCine()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key of ``data``.

        Raises:
            ValueError: an unreadable input, prefixed with the subject when ``data`` has one.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                if Path(d[key]).is_dir():
                    d[key], info = self.series_loader.load(d[key])
                    spacing = info["spacing"]
                else:
                    d[key], spacing = self.volume_loader.load(d[key])
            except ValueError as e:
                raise ValueError(f"subject {d.get('subject')!r}: {e}") from e
            if self.spacing_key is not None:
                d[self.spacing_key] = tuple(spacing)
        return d


class PatientPredictionWriter(PredictionWriter):
    """Collect an evaluator's frame predictions and write one prediction per patient to CSV.

    Columns: ``subject``, ``prediction``, ``frames``, the ``info_keys`` (by default the vendor code and
    the DICOM manufacturer; empty for NIfTI input), then ``votes_<class>`` and ``mean_probability_<class>``
    for every class. The prediction is the majority vote over the patient's frames (ties go to the
    larger summed probability). A ``frame_predictions.csv`` beside it holds every frame's
    probabilities, slice and frame index. The time from the start to the end of the evaluator's run
    (preprocessing and network, the volumes already read) is logged as volumes and frames per second.
    ``on_predictions``, when given, then gets one summary per patient (e.g.
    :class:`mnms_groupdistil.datasets.mnms.dicom_sr.SeriesReportWriter`, which writes a DICOM SR per DICOM series).

    Args:
        filepath: the per-patient CSV to write (parent folders are created).
        class_names: one name per output channel.
        output_transform: engine output -> per-frame logits (probabilities with ``softmax=False``).
        batch_transform: engine batch -> ``(subject, slice, frame)``.
        info_keys: batch keys holding per-patient text written beside each prediction (absent keys are
            written empty).
        softmax: see :class:`PredictionWriter`.
        on_predictions: called after the CSVs are written with ``[{"subject", "prediction", "probability" (the
            predicted class's mean probability over the frames), "frames", "votes" and "mean_probability" (per
            class), and the info keys}, ...]``, one per patient; None for the CSVs only.
        name: logger name.
    """

    def __init__(
        self,
        filepath: str | Path,
        class_names: Sequence[str],
        output_transform: Callable = from_engine(["pred"]),
        batch_transform: Callable = from_engine(["subject", "slice", "frame"]),
        info_keys: Sequence[str] = ("vendor", "manufacturer"),
        softmax: bool = True,
        on_predictions: Callable[[list[dict[str, Any]]], Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.info_keys = [str(k) for k in info_keys]
        self.on_predictions = on_predictions
        super().__init__(filepath, class_names, output_transform, batch_transform, softmax=softmax, name=name)

    def reset(self) -> None:
        self._rows: list[tuple[str, int, int, torch.Tensor]] = []
        self._info: dict[str, list[str]] = {}
        self._started = time.perf_counter()

    def collect(self, engine: Engine, probabilities: torch.Tensor) -> None:
        subjects, slices, frames = self.batch_transform(engine.state.batch)
        batch = engine.state.batch  # a collated dict, or a list of dicts once decollated
        for i, (subject, z, t, p) in enumerate(zip(subjects, slices, frames, probabilities)):
            self._rows.append((str(subject), int(z), int(t), p))
            if str(subject) not in self._info:
                if isinstance(batch, Mapping):
                    self._info[str(subject)] = [str(batch[k][i]) if k in batch else "" for k in self.info_keys]
                else:
                    self._info[str(subject)] = [str(batch[i].get(k, "")) for k in self.info_keys]

    def epoch_completed(self, engine: Engine) -> None:
        by_subject: dict[str, list[torch.Tensor]] = {}
        for subject, _, _, p in self._rows:
            by_subject.setdefault(subject, []).append(p)
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        seconds = time.perf_counter() - self._started
        header = ["subject", "prediction", "frames", *self.info_keys]
        header += [f"votes_{c}" for c in self.class_names] + [f"mean_probability_{c}" for c in self.class_names]
        lines, summaries = [], []
        with open(self.filepath, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for subject, rows in by_subject.items():
                probabilities = torch.stack(rows)
                votes = torch.bincount(probabilities.argmax(dim=1), minlength=len(self.class_names)).tolist()
                mean = probabilities.mean(dim=0).tolist()
                prediction = self.class_names[majority_vote(probabilities)]
                info = self._info[subject]
                writer.writerow([subject, prediction, len(rows), *info, *votes, *(f"{m:.4f}" for m in mean)])
                lines.append(f"{subject}: {prediction} ({len(rows)} frames, votes {votes})")
                summaries.append(
                    {
                        "subject": subject,
                        "prediction": prediction,
                        "probability": mean[self.class_names.index(prediction)],
                        "frames": len(rows),
                        "votes": dict(zip(self.class_names, votes)),
                        "mean_probability": dict(zip(self.class_names, mean)),
                        **dict(zip(self.info_keys, info)),
                    }
                )
        with open(self.filepath.with_name("frame_predictions.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["subject", "slice", "frame", *(f"probability_{c}" for c in self.class_names)])
            for subject, z, t, p in self._rows:
                writer.writerow([subject, z, t, *(f"{v:.4f}" for v in p.tolist())])
        self.logger.info("wrote %s\n%s", self.filepath, "\n".join(lines))
        self.logger.info(
            "classified %d volumes (%d frames) in %.2f s: %.2f volumes/s, %.1f frames/s (reading the volumes "
            "before the run not counted)",
            len(by_subject),
            len(self._rows),
            seconds,
            len(by_subject) / max(seconds, 1e-9),
            len(self._rows) / max(seconds, 1e-9),
        )
        if self.on_predictions is not None:
            self.on_predictions(summaries)
