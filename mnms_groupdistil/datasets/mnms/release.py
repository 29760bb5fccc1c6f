"""The M&Ms (Multi-Centre, Multi-Vendor & Multi-Disease) cardiac cine MRI OpenDataset as released: its facts
and where its files are.

The real release is laid out as::

    <dataset_dir>/
        211230_M&Ms_Dataset_information_diagnosis_opendataset.csv
        Training/Labeled/<CODE>/<CODE>_sa.nii.gz      (+ <CODE>_sa_gt.nii.gz)
        Training/Unlabeled/<CODE>/<CODE>_sa.nii.gz
        Validation/<CODE>/<CODE>_sa.nii.gz            (+ <CODE>_sa_gt.nii.gz)
        Testing/<CODE>/<CODE>_sa.nii.gz               (+ <CODE>_sa_gt.nii.gz)

Each ``_sa.nii.gz`` is a 4D (x, y, z, t) short-axis cine stack. The information CSV
(:mod:`.info_csv`) has a leading unnamed index column followed by
``External code,Pathology,VendorName,Vendor,Centre,ED,ES,Age,Sex,Height,Weight``; ED and ES
are 0-based frame indices (ED may come after ES).

The GroupDistil task is HCM vs NOR classification with vendors A (Siemens), C (GE) and
D (Canon) as groups; vendor B (Philips) is dropped. The subjects of the task and their image checks are in
:mod:`.cohort`, the fixed splits of the paper and :func:`~.splits.prepare_split`, the entry point the bundle
configs call, in :mod:`.splits`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Union

from ..errors import DataError

__all__ = [
    "VENDORS",
    "CENTRES",
    "PATHOLOGIES",
    "CLASSES",
    "GROUPS",
    "SUBFOLDERS",
    "INFO_CSV_NAME",
    "MnMsDataError",
    "PathLike",
    "find_info_csv",
    "info_csv_near",
    "resolve_dataset_dir",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Vendor code -> vendor name, as in the ``Vendor`` / ``VendorName`` columns.
VENDORS: dict[str, str] = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}

#: Vendor code -> centres that used that vendor.
CENTRES: dict[str, tuple[int, ...]] = {"A": (1, 6), "B": (2, 3), "C": (4,), "D": (5,)}

#: Pathology codes of the ``Pathology`` column.
PATHOLOGIES: tuple[str, ...] = ("NOR", "HCM", "DCM", "HHD", "ARV", "AHS", "IHD", "LVNC", "Other")

#: Classes of the task; the label of a subject is the index of its pathology here.
CLASSES: tuple[str, ...] = ("NOR", "HCM")

#: Groups of the task (vendor codes); the group of a subject is the index of its vendor here.
GROUPS: tuple[str, ...] = ("A", "C", "D")

#: Subfolders of the release that hold subject folders, searched in this order.
SUBFOLDERS: tuple[str, ...] = ("Training/Labeled", "Training/Unlabeled", "Validation", "Testing")

#: Name of the information CSV that carries the diagnosis (``Pathology``) column.
INFO_CSV_NAME = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


class MnMsDataError(DataError):
    """Problems found in an M&Ms dataset, its information CSV or a requested split.

    Attributes:
        problems: One human-readable line per problem; each names the subject (where there is
            one), the file and what is wrong.
    """


def _csv_date(path: Path) -> int:
    """Leading YYMMDD / YYYYMMDD date of an information CSV name (-1 if there is none)."""
    match = re.match(r"(\d{6,8})", path.name)
    if not match:
        return -1
    digits = match.group(1)
    if len(digits) == 6:  # YYMMDD
        digits = "20" + digits
    return int(digits[:8])


def resolve_dataset_dir(dataset_dir: PathLike) -> Path:
    """The folder of the release that holds ``Training``/``Validation``/``Testing``.

    Accepts the ``OpenDataset`` folder itself or the folder it was unpacked into: when
    ``dataset_dir`` has none of those subfolders but ``dataset_dir/OpenDataset`` is a folder, that
    one is used.

    Raises:
        MnMsDataError: when ``dataset_dir`` does not exist.
    """
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise MnMsDataError(
            f"dataset_dir {root} does not exist: point it at the M&Ms OpenDataset folder (holding Training/, "
            "Validation/, Testing/) or the folder that contains it"
        )
    tops = {sub.split("/")[0] for sub in SUBFOLDERS}
    if root.is_dir() and not any((root / top).is_dir() for top in tops) and (root / "OpenDataset").is_dir():
        return root / "OpenDataset"
    return root


def find_info_csv(dataset_dir: PathLike) -> Path:
    """Find the M&Ms information CSV for a dataset directory.

    Looks in ``dataset_dir`` (after :func:`resolve_dataset_dir`) and then its parent for
    :data:`INFO_CSV_NAME`; when it is absent, any ``*M&Ms_Dataset_information*.csv``
    (case-insensitive) is accepted, the newest by its leading date first (a name mentioning
    "diagnosis" wins a tie). ``dataset_dir`` may also be the CSV file itself.

    Args:
        dataset_dir: Root of the M&Ms release (the folder holding ``Training``, ``Validation``...).

    Returns:
        Path of the information CSV.

    Raises:
        MnMsDataError: If no information CSV is found.
    """
    path = Path(dataset_dir).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return path.resolve()
    return info_csv_near(resolve_dataset_dir(path))


def info_csv_near(root: Path) -> Path:
    """:func:`find_info_csv` in the release folder ``root`` (as :func:`resolve_dataset_dir` returns it)."""
    folders = [root]
    if root.resolve().parent != root.resolve():
        folders.append(root.resolve().parent)
    for folder in folders:
        exact = folder / INFO_CSV_NAME
        if exact.is_file():
            return exact.resolve()
    for folder in folders:
        if not folder.is_dir():
            continue
        candidates = [
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() == ".csv" and "m&ms_dataset_information" in p.name.lower()
        ]
        if candidates:
            candidates.sort(key=lambda p: (_csv_date(p), "diagnosis" in p.name.lower(), p.name), reverse=True)
            if len(candidates) > 1:
                logger.info("several M&Ms information CSVs in %s; using %s", folder, candidates[0].name)
            return candidates[0].resolve()
    raise MnMsDataError(
        f"no M&Ms information CSV found: looked for '{INFO_CSV_NAME}' or any "
        f"'*M&Ms_Dataset_information*.csv' in {', '.join(str(f) for f in folders)}; "
        "pass csv_path explicitly or put the CSV of the release beside the data"
    )
