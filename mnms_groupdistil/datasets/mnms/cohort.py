"""The subjects of the M&Ms task: the information CSV's rows of the task's vendors and classes, their image
files, and the checks of those images (every problem of every subject in one error)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .info_csv import read_info_csv
from .nifti import cine_volume_problems
from .release import (
    CLASSES,
    GROUPS,
    PATHOLOGIES,
    SUBFOLDERS,
    VENDORS,
    MnMsDataError,
    PathLike,
    info_csv_near,
    resolve_dataset_dir,
)

__all__ = ["check_subjects", "cohort_records", "find_subject_image", "load_mnms_cohort"]


def find_subject_image(root: Path, code: str) -> Path | None:
    """Find the short-axis cine image of a subject.

    Args:
        root: The release folder holding :data:`SUBFOLDERS`, as :func:`resolve_dataset_dir` returns it.
        code: Subject code (``External code``).

    Returns:
        Absolute path of ``<subfolder>/<code>/<code>_sa.nii.gz`` (or ``.nii``) in the first of
        :data:`SUBFOLDERS` that has it, or None if none has.
    """
    for sub in SUBFOLDERS:
        for suffix in ("_sa.nii.gz", "_sa.nii"):
            candidate = root / sub / code / f"{code}{suffix}"
            if candidate.is_file():
                return candidate.resolve()
    return None


def load_mnms_cohort(
    dataset_dir: PathLike,
    groups: Sequence[str] = GROUPS,
    classes: Sequence[str] = CLASSES,
    csv_path: PathLike | None = None,
) -> list[dict[str, Any]]:
    """Read the information CSV and list the subjects of the task, without opening images.

    Args:
        dataset_dir: Root of the M&Ms release (or its parent, see :func:`resolve_dataset_dir`).
        groups: Vendor codes to keep; ``group`` is the index of the vendor in this sequence.
        classes: Pathology codes to keep; ``label`` is the index of the pathology in it.
        csv_path: Information CSV; found with :func:`find_info_csv` when None.

    Returns:
        Records sorted by subject code, each ``{"subject", "image" (absolute path str or None
        when not found), "label", "pathology", "group", "vendor", "centre", "ed", "es"}``.

    Raises:
        MnMsDataError: If ``dataset_dir`` does not exist, the CSV cannot be found or read, or
            ``groups``/``classes`` hold unknown codes.
    """
    root = resolve_dataset_dir(dataset_dir)
    csv_file = Path(csv_path).expanduser() if csv_path else info_csv_near(root)
    return cohort_records(root, csv_file, groups, classes)


def cohort_records(root: Path, csv_file: Path, groups: Sequence[str], classes: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`load_mnms_cohort` in the release folder ``root`` (resolved) with the CSV ``csv_file``."""
    groups = tuple(groups)
    classes = tuple(classes)
    bad = [
        f"unknown vendor code '{g}' in groups (expected one of {', '.join(VENDORS)})"
        for g in groups
        if g not in VENDORS
    ]
    bad += [
        f"unknown pathology code '{c}' in classes (expected one of {', '.join(PATHOLOGIES)})"
        for c in classes
        if c not in PATHOLOGIES
    ]
    if bad:
        raise MnMsDataError(bad)
    rows = read_info_csv(csv_file)
    records = []
    for row in sorted(rows, key=lambda r: r["subject"]):
        if row["vendor"] not in groups or row["pathology"] not in classes:
            continue
        image = find_subject_image(root, row["subject"])
        records.append(
            {
                "subject": row["subject"],
                "image": str(image) if image is not None else None,
                "label": classes.index(row["pathology"]),
                "pathology": row["pathology"],
                "group": groups.index(row["vendor"]),
                "vendor": row["vendor"],
                "centre": row["centre"],
                "ed": row["ed"],
                "es": row["es"],
            }
        )
    return records


def _check_one(record: Mapping[str, Any], root: Path | None) -> tuple[list[str], int | None, int | None]:
    code = record.get("subject", "?")
    image = record.get("image")
    if not image:
        where = f"{root}/{{{','.join(SUBFOLDERS)}}}/{code}/" if root else f"any of {', '.join(SUBFOLDERS)}"
        return [f"subject {code}: image {code}_sa.nii.gz not found (looked in {where})"], None, None
    path = Path(image)
    prefix = f"subject {code}: {path}"
    shape, file_problems = cine_volume_problems(path)
    if shape is None:
        return [f"{prefix}: {p}" for p in file_problems], None, None
    problems: list[str] = []
    num_slices, num_frames = shape[2], shape[3]
    for key in ("ed", "es"):
        frame = record.get(key)
        if not isinstance(frame, (int, np.integer)) or not 0 <= int(frame) < num_frames:
            problems.append(
                f"{prefix}: {key.upper()} frame {frame} outside the image's frames [0, {num_frames}) (shape {shape})"
            )
    problems += [f"{prefix}: {p}" for p in file_problems]
    return problems, num_slices, num_frames


def check_subjects(records: Sequence[Mapping[str, Any]], root: Path | None = None) -> list[dict[str, Any]]:
    """Check the image of every record and add its slice and frame counts.

    Only the NIfTI header is parsed with nibabel; the voxel data are streamed once (not kept)
    to catch truncated or corrupt ``.gz`` files. Odd sizes, anisotropic spacing, int16 or float
    data, ED after ES and slightly non-orthonormal direction cosines are all accepted.

    Args:
        records: Records as returned by :func:`load_mnms_cohort` (``subject``, ``image``,
            ``ed``, ``es`` are used).
        root: The release folder the images were looked for in (as :func:`resolve_dataset_dir`
            returns it), named in the message of a missing one.

    Returns:
        New dicts, the records plus ``"num_slices"`` and ``"num_frames"``, in the same order.

    Raises:
        MnMsDataError: One error listing every problem of every subject (missing file,
            unreadable header, not 4D, no slice/frame, ED/ES outside [0, num_frames), truncated
            or corrupt data).
    """
    problems: list[str] = []
    checked: list[dict[str, Any]] = []
    for record in records:
        record_problems, num_slices, num_frames = _check_one(record, root)
        problems.extend(record_problems)
        checked.append({**record, "num_slices": num_slices, "num_frames": num_frames})
    if records and root is not None and not any(r.get("image") for r in records):
        problems.append(
            f"no image of any of these subjects is below {root}: dataset_dir must be the M&Ms OpenDataset folder "
            "(holding Training/, Validation/, Testing/) or the folder that contains it"
        )
    if problems:
        subjects = {p.split(":", 1)[0] for p in problems if p.startswith("subject ")}
        raise MnMsDataError(
            problems, header=f"{len(problems)} problem(s) with the images of {len(subjects)} M&Ms subject(s):"
        )
    return checked
