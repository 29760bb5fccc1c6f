"""Frame-level view of patient-level (cached) cine volumes.

The 4D volumes are loaded once per patient, e.g.::

    volumes = monai.data.CacheDataset(records, transform=LoadCineVolumed("image"), copy_cache=False)

and the models see 2D frames. A *frame entry* says which volume (patient) to take a frame from and, for
evaluation, which slice/frame:

* :func:`random_frames`: ``frames_per_patient`` entries per patient without slice/frame; the slice and frame
  are drawn later by :class:`mnms_groupdistil.datasets.mnms.transforms.RandCineFramed` (training).
* :func:`fixed_random_frames`: ``frames_per_patient`` (slice, frame) pairs per patient drawn once with a fixed
  seed (evaluation as in the paper: the same frames every epoch and every run).
* :func:`ed_es_frames`: every slice at ED and at ES of every patient (evaluation option).
* :func:`all_frames`: every slice at every (``frame_stride``-th) frame (evaluation option, inference).
* :func:`evaluation_frames`: one of the three by name (:data:`EVALUATION_FRAMES`), as the bundles choose them.

Evaluation entries carry the slice and frame, selected by
:class:`mnms_groupdistil.datasets.mnms.transforms.SelectCineFramed`.

:class:`CineFrameDataset` joins both: item ``i`` is a shallow copy of the patient's volume dictionary updated
with frame entry ``i`` (except its ``"volume"`` index), passed through the frame transform.
"""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import apply_transform

from ...errors import InputError, SettingError

__all__ = [
    "EVALUATION_FRAMES",
    "CineFrameDataset",
    "all_frames",
    "ed_es_frames",
    "evaluation_frames",
    "fixed_random_frames",
    "random_frames",
]

#: Names of the evaluation frame choices, for :func:`evaluation_frames`.
EVALUATION_FRAMES: tuple[str, ...] = ("random", "ed_es", "all")


def _int_field(rec: Mapping, key: str, i: int, minimum: int = 0) -> int:
    """Read an integer field of record ``i``; raise ValueError/TypeError naming it when missing or invalid."""
    if not isinstance(rec, Mapping):
        raise TypeError(f"record {i} must be a mapping, got {type(rec).__name__}.")
    if key not in rec:
        raise ValueError(f"record {i} (subject {rec.get('subject')!r}) has no {key!r} field.")
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"record {i} (subject {rec.get('subject')!r}) field {key!r}={value!r} is not an integer.")
    if int(value) < minimum:
        raise ValueError(f"record {i} (subject {rec.get('subject')!r}) field {key!r}={value!r} must be >= {minimum}.")
    return int(value)


def _base_entry(rec: Mapping, i: int, require_group: bool = True) -> dict[str, Any]:
    if not isinstance(rec, Mapping):
        raise TypeError(f"record {i} must be a mapping, got {type(rec).__name__}.")
    for key in ("group", "subject") if require_group else ("subject",):
        if key not in rec:
            raise ValueError(f"record {i} (subject {rec.get('subject')!r}) has no {key!r} field.")
    entry = {"volume": i, "subject": rec["subject"]}
    if "group" in rec:
        entry["group"] = rec["group"]
    return entry


def random_frames(records: Sequence[Mapping], frames_per_patient: int = 20) -> list[dict[str, Any]]:
    """Frame entries for training: ``frames_per_patient`` entries per patient, slice/frame drawn later.

    Args:
        records: patient records (index ``i`` here is the index of the volume in the patient-level dataset).
        frames_per_patient: number of entries per patient (>= 1).

    Returns:
        ``[{"volume": i, "group": rec["group"], "subject": rec["subject"]}, ...]``, patient by patient, each
        repeated ``frames_per_patient`` times.

    Raises:
        TypeError: ``frames_per_patient`` is not an integer, or a record is not a mapping.
        ValueError: ``frames_per_patient`` < 1, or a record lacks "group"/"subject".
    """
    frames_per_patient = _check_count(frames_per_patient, "frames_per_patient")
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        base = _base_entry(rec, i)
        out.extend(dict(base) for _ in range(frames_per_patient))
    return out


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an integer.")
    if value < 1:
        raise SettingError(f"{name}={value} must be >= 1.")
    return int(value)


def fixed_random_frames(
    records: Sequence[Mapping], frames_per_patient: int = 20, seed: int = 0
) -> list[dict[str, Any]]:
    """Frame entries for evaluation: ``frames_per_patient`` (slice, frame) pairs per patient, drawn once.

    A patient's pairs are drawn by ``numpy.random.default_rng([seed, crc32(subject)])``: they depend only on
    ``seed``, the subject code and the volume's size, so every epoch and every run with the same seed evaluate
    the same frames, whatever the other patients. The ``Z * T`` pairs of a volume are drawn without replacement
    (with replacement only when a volume has fewer than ``frames_per_patient`` pairs), and listed sorted.

    Args:
        records: patient records with ``subject``, ``group``, ``num_slices`` and ``num_frames``.
        frames_per_patient: pairs per patient (>= 1).
        seed: seed of the draw (non-negative integer); the bundles pass the split seed.

    Returns:
        ``[{"volume": i, "group", "subject", "slice": z, "frame": t}, ...]``, ``frames_per_patient`` per patient,
        ordered by patient, then frame, then slice.

    Raises:
        TypeError, ValueError: a record lacks a field or has an invalid value; bad ``frames_per_patient`` or
            ``seed``.
    """
    frames_per_patient = _check_count(frames_per_patient, "frames_per_patient")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SettingError(f"seed={seed!r} must be a non-negative integer.")
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        base = _base_entry(rec, i)
        num_slices = _int_field(rec, "num_slices", i, minimum=1)
        num_frames = _int_field(rec, "num_frames", i, minimum=1)
        rng = np.random.default_rng([int(seed), zlib.crc32(str(rec["subject"]).encode("utf-8"))])
        pairs = num_slices * num_frames
        drawn = rng.choice(pairs, size=frames_per_patient, replace=pairs < frames_per_patient)
        for k in sorted(int(k) for k in drawn):
            out.append({**base, "slice": k % num_slices, "frame": k // num_slices})
    return out


def ed_es_frames(records: Sequence[Mapping]) -> list[dict[str, Any]]:
    """Frame entries for evaluation: every slice at ED and at ES of every patient.

    Uses ``rec["num_slices"]``, ``rec["ed"]`` and ``rec["es"]`` (and checks ED/ES < ``rec["num_frames"]`` when that
    field is present). When ED == ES the phase is listed once.

    Args:
        records: patient records (index ``i`` is the index of the volume in the patient-level dataset).

    Returns:
        ``[{"volume": i, "group", "subject", "slice": z, "frame": t}, ...]`` ordered by patient, then phase
        (ED first, then ES), then slice ``z = 0 .. num_slices - 1``.

    Raises:
        TypeError, ValueError: a record lacks a field or has an invalid value.
    """
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        base = _base_entry(rec, i)
        num_slices = _int_field(rec, "num_slices", i, minimum=1)
        ed = _int_field(rec, "ed", i)
        es = _int_field(rec, "es", i)
        if "num_frames" in rec:
            num_frames = _int_field(rec, "num_frames", i, minimum=1)
            for name, t in (("ed", ed), ("es", es)):
                if t >= num_frames:
                    raise ValueError(
                        f"record {i} (subject {rec['subject']!r}) {name}={t} is out of range for "
                        f"num_frames={num_frames}."
                    )
        phases = (ed,) if ed == es else (ed, es)
        for t in phases:
            for z in range(num_slices):
                out.append({**base, "slice": z, "frame": t})
    return out


def all_frames(records: Sequence[Mapping], frame_stride: int = 1) -> list[dict[str, Any]]:
    """Frame entries for inference: every slice at every ``frame_stride``-th frame of every volume.

    Needs ``rec["subject"]``, ``rec["num_slices"]`` and ``rec["num_frames"]``; no label or group.

    Returns:
        ``[{"volume": i, "subject", "slice": z, "frame": t}, ...]`` ordered by volume, frame, slice.

    Raises:
        TypeError, ValueError: a record lacks a field, or ``frame_stride`` < 1.
    """
    if isinstance(frame_stride, bool) or not isinstance(frame_stride, numbers.Integral) or frame_stride < 1:
        raise SettingError(f"frame_stride={frame_stride!r} must be an integer >= 1.")
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        base = _base_entry(rec, i, require_group=False)
        num_slices = _int_field(rec, "num_slices", i, minimum=1)
        num_frames = _int_field(rec, "num_frames", i, minimum=1)
        out.extend(
            {**base, "slice": z, "frame": t} for t in range(0, num_frames, frame_stride) for z in range(num_slices)
        )
    return out


def evaluation_frames(
    records: Sequence[Mapping], frames: str = "random", frames_per_patient: int = 20, seed: int = 0
) -> list[dict[str, Any]]:
    """Frame entries to evaluate ``records`` on, chosen by name.

    Args:
        records: patient records (see the functions below for the fields each choice needs).
        frames: ``"random"`` (:func:`fixed_random_frames`, the paper's protocol), ``"ed_es"``
            (:func:`ed_es_frames`) or ``"all"`` (:func:`all_frames`).
        frames_per_patient: pairs per patient for ``"random"``.
        seed: seed of the ``"random"`` draw.

    Raises:
        InputError: ``frames`` is not one of :data:`EVALUATION_FRAMES` (an ``InputError`` is a ``ValueError``);
            see the chosen function for the rest.
    """
    if frames == "random":
        return fixed_random_frames(records, frames_per_patient, seed)
    if frames == "ed_es":
        return ed_es_frames(records)
    if frames == "all":
        return all_frames(records)
    raise InputError(
        f"frames={frames!r} (the bundles' test_frames setting) must be one of {', '.join(EVALUATION_FRAMES)}."
    )


class CineFrameDataset(torch.utils.data.Dataset):
    """Frame-level dataset over patient-level volume dictionaries.

    Item ``i`` is ``transform(dict(volumes[frames[i]["volume"]]) | {k: v for k, v in frames[i] if k != "volume"})``
    computed with :func:`monai.transforms.apply_transform`. The volume dictionary is shallow-copied, so the cached
    dictionary is never modified; the 4D array itself is shared (not copied), hence the transform must not modify
    it in place (the frame transforms in :mod:`mnms_groupdistil.datasets.mnms.transforms` copy the frame out first).

    Args:
        volumes: patient-level volume dictionaries, e.g. a ``monai.data.CacheDataset`` of
            :class:`~mnms_groupdistil.datasets.mnms.volumes.LoadCineVolumed` (use ``copy_cache=False``), or a list
            of dicts.
        frames: frame entries with at least ``"volume"`` (see :func:`random_frames`, :func:`ed_es_frames`).
        transform: frame transform (e.g. ``Compose([RandCineFramed(...), RescaleIntensityd(...),
            ...])``), or None to return the merged dictionary.

    Raises:
        TypeError: ``transform`` is not callable, or a frame entry is not a mapping / its volume index not an int.
        ValueError: a frame entry lacks ``"volume"`` or its index is out of range.
    """

    def __init__(
        self, volumes: Sequence[Mapping], frames: Sequence[Mapping], transform: Callable | None = None
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"CineFrameDataset transform must be callable or None, got {transform!r}.")
        n = len(volumes)
        for j, f in enumerate(frames):
            if not isinstance(f, Mapping):
                raise TypeError(f"CineFrameDataset frame entry {j} must be a mapping, got {type(f).__name__}.")
            if "volume" not in f:
                raise ValueError(f"CineFrameDataset frame entry {j} has no 'volume' index: {dict(f)!r}.")
            v = f["volume"]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"CineFrameDataset frame entry {j} volume={v!r} is not an integer index.")
            if not 0 <= v < n:
                raise ValueError(f"CineFrameDataset frame entry {j} volume={v} is out of range for {n} volumes.")
        self.volumes = volumes
        self.frames = list(frames)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def groups(self) -> list:
        """Group id of each item (from the frame entries).

        Raises:
            ValueError: a frame entry has no ``"group"``.
        """
        missing = [j for j, f in enumerate(self.frames) if "group" not in f]
        if missing:
            raise ValueError(
                f"CineFrameDataset frame entries {missing[:5]}{'...' if len(missing) > 5 else ''} have no 'group'."
            )
        return [f["group"] for f in self.frames]

    def __getitem__(self, index: int) -> Any:
        entry = self.frames[index]
        item = dict(self.volumes[int(entry["volume"])])
        item.update({k: v for k, v in entry.items() if k != "volume"})
        if self.transform is None:
            return item
        return apply_transform(self.transform, item)
