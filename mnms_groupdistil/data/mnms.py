"""Reader for the M&Ms (Multi-Centre, Multi-Vendor & Multi-Disease) cardiac cine MRI OpenDataset.

The real release is laid out as::

    <dataset_dir>/
        211230_M&Ms_Dataset_information_diagnosis_opendataset.csv
        Training/Labeled/<CODE>/<CODE>_sa.nii.gz      (+ <CODE>_sa_gt.nii.gz)
        Training/Unlabeled/<CODE>/<CODE>_sa.nii.gz
        Validation/<CODE>/<CODE>_sa.nii.gz            (+ <CODE>_sa_gt.nii.gz)
        Testing/<CODE>/<CODE>_sa.nii.gz               (+ <CODE>_sa_gt.nii.gz)

Each ``_sa.nii.gz`` is a 4D (x, y, z, t) short-axis cine stack. The information CSV has a
leading unnamed index column followed by
``External code,Pathology,VendorName,Vendor,Centre,ED,ES,Age,Sex,Height,Weight``; ED and ES
are 0-based frame indices (ED may come after ES).

The GroupDistil task is HCM vs NOR classification with vendors A (Siemens), C (GE) and
D (Canon) as groups; vendor B (Philips) is dropped. The fixed splits of the paper are in
:data:`SPLITS`; :func:`prepare_split` is the entry point the bundle configs call.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InputError
from .errors import DataError, duplicate_problem, missing_column_problems
from .nifti import cine_volume_problems

__all__ = [
    "VENDORS",
    "CENTRES",
    "PATHOLOGIES",
    "CLASSES",
    "GROUPS",
    "SPLITS",
    "SUBFOLDERS",
    "INFO_CSV_NAME",
    "MnMsDataError",
    "find_info_csv",
    "resolve_dataset_dir",
    "read_info_csv",
    "find_subject_image",
    "load_mnms_cohort",
    "check_subjects",
    "cine_volume_problems",
    "select_split",
    "validation_count",
    "prepare_split",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "Path"]

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

#: Splits of the task. ``counts`` gives, per part and class, the number of patients per vendor;
#: ``test_fraction`` describes a proportional split of every (vendor, class) cell instead.
SPLITS: dict[str, dict[str, Any]] = {
    "split1": {
        "counts": {
            "train": {"HCM": {"A": 25, "C": 2, "D": 10}, "NOR": {"A": 21, "C": 2, "D": 14}},
            "test": {"HCM": {"C": 3}, "NOR": {"C": 3}},
        },
    },
    "split2": {
        "counts": {
            "train": {"HCM": {"A": 25, "C": 5, "D": 2}, "NOR": {"A": 21, "C": 11, "D": 2}},
            "test": {"HCM": {"D": 8}, "NOR": {"D": 8}},
        },
    },
    "demo": {
        # every (vendor, class) cell with n subjects: max(min_test, round(n * test_fraction))
        # go to test, the rest to train; cells need at least min_cell subjects.
        "test_fraction": 1.0 / 3.0,
        "min_test": 1,
        "min_cell": 2,
        "groups": GROUPS,
        "classes": CLASSES,
    },
}

_PARTS = ("train", "val", "test")

# normalised header -> record key
_COLUMN_ALIASES: dict[str, str] = {
    "external code": "subject",
    "externalcode": "subject",
    "external id": "subject",
    "code": "subject",
    "subject": "subject",
    "subject code": "subject",
    "pathology": "pathology",
    "diagnosis": "pathology",
    "vendorname": "vendor_name",
    "vendor name": "vendor_name",
    "vendor": "vendor",
    "centre": "centre",
    "center": "centre",
    "ed": "ed",
    "es": "es",
    "age": "age",
    "sex": "sex",
    "gender": "sex",
    "height": "height",
    "weight": "weight",
}
# record key -> column name in the real CSV (for messages)
_COLUMN_NAMES: dict[str, str] = {
    "subject": "External code",
    "pathology": "Pathology",
    "vendor_name": "VendorName",
    "vendor": "Vendor",
    "centre": "Centre",
    "ed": "ED",
    "es": "ES",
    "age": "Age",
    "sex": "Sex",
    "height": "Height",
    "weight": "Weight",
}
_REQUIRED = ("subject", "pathology", "vendor", "ed", "es")
_INFO_KEYS = ("subject", "pathology", "vendor_name", "vendor", "centre", "ed", "es", "age", "sex", "height", "weight")


class MnMsDataError(DataError):
    """Problems found in an M&Ms dataset, its information CSV or a requested split.

    Attributes:
        problems: One human-readable line per problem; each names the subject (where there is
            one), the file and what is wrong.
    """


# --------------------------------------------------------------------------------------- CSV


def _normalise_header(cell: str) -> str:
    return re.sub(r"[\s_\-]+", " ", cell.replace("\ufeff", "").strip().lower())


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
    return _info_csv_near(resolve_dataset_dir(path))


def _info_csv_near(root: Path) -> Path:
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


def _parse_number(text: str) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    """An integer cell (``"3"`` or ``"3.0"``); None when empty or not a whole number."""
    value = _parse_number(text)
    if value is None or value != int(value):
        return None
    return int(value)


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def read_info_csv(csv_path: PathLike) -> list[dict[str, Any]]:
    """Read an M&Ms information CSV into one normalised dict per subject.

    Accepts the 211230 diagnosis CSV (leading unnamed index column) and older variants
    (with or without index column), with tolerance for header case and whitespace
    (``External Code``, `` ED ``...). The task needs the ``Pathology`` column, which only the
    211230 diagnosis CSV has.

    Args:
        csv_path: Path of the CSV.

    Returns:
        One dict per row with keys ``subject, pathology, vendor_name, vendor, centre, ed, es,
        age, sex, height, weight``. ``ed``/``es`` are ints; ``centre`` and ``age`` are ints
        (or None), ``height``/``weight`` numbers (or None), ``sex`` a string (or None);
        missing optional values are None. ``pathology`` is the canonical code from
        :data:`PATHOLOGIES`; ``vendor`` the code from :data:`VENDORS`.

    Raises:
        MnMsDataError: Listing every problem at once: missing required column(s), unknown
            vendor or pathology codes, non-integer or negative ED/ES, empty or duplicate codes.
    """
    path = Path(csv_path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise MnMsDataError(f"{path}: cannot read the M&Ms information CSV ({err})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise MnMsDataError(f"{path}: the M&Ms information CSV is empty (no header line)")
    rows = list(csv.reader(lines, delimiter=_sniff_delimiter(lines[0])))
    header = rows[0]
    columns: dict[str, int] = {}
    for idx, cell in enumerate(header):
        key = _COLUMN_ALIASES.get(_normalise_header(cell))
        if key is not None and key not in columns:
            columns[key] = idx
    missing = [k for k in _REQUIRED if k not in columns]
    if missing:
        problems = missing_column_problems(path, [_COLUMN_NAMES[key] for key in missing], header)
        if "pathology" in missing:
            problems[missing.index("pathology")] += (
                f"; the HCM vs NOR task needs the diagnosis CSV '{INFO_CSV_NAME}' of the M&Ms "
                "OpenDataset release (older information CSVs have no Pathology column)"
            )
        raise MnMsDataError(problems, header=f"unusable M&Ms information CSV {path}:")

    def cell(row: list[str], key: str) -> str:
        idx = columns.get(key)
        if idx is None or idx >= len(row):
            return ""
        return row[idx].strip()

    canonical_pathology = {p.upper(): p for p in PATHOLOGIES}
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        code = cell(row, "subject")
        where = f"{path}, line {line_no} (subject {code or '?'})"
        row_problems: list[str] = []
        if not code:
            row_problems.append(f"{where}: empty 'External code'")
        elif duplicate := duplicate_problem(first_line, code, line_no, where, f"subject code {code}"):
            row_problems.append(duplicate)
        vendor = cell(row, "vendor").upper()
        if vendor not in VENDORS:
            row_problems.append(
                f"{where}: unknown vendor code '{cell(row, 'vendor')}' (expected one of {', '.join(VENDORS)})"
            )
        pathology_text = cell(row, "pathology")
        pathology = canonical_pathology.get(pathology_text.upper())
        if pathology is None:
            row_problems.append(
                f"{where}: unknown pathology code '{pathology_text}' (expected one of {', '.join(PATHOLOGIES)})"
            )
        frames: dict[str, int | None] = {}
        for key in ("ed", "es"):
            raw = cell(row, key)
            value = _parse_int(raw)
            if value is None or value < 0:
                row_problems.append(
                    f"{where}: {_COLUMN_NAMES[key]} must be a non-negative integer frame index, got '{raw}'"
                )
            frames[key] = value
        if row_problems:
            problems.extend(row_problems)
            continue
        vendor_name = cell(row, "vendor_name") or VENDORS[vendor]
        sex = cell(row, "sex") or None
        age = _parse_number(cell(row, "age"))
        if isinstance(age, float) and age == int(age):
            age = int(age)
        records.append(
            {
                "subject": code,
                "pathology": pathology,
                "vendor_name": vendor_name,
                "vendor": vendor,
                "centre": _parse_int(cell(row, "centre")),
                "ed": frames["ed"],
                "es": frames["es"],
                "age": age,
                "sex": sex,
                "height": _parse_number(cell(row, "height")),
                "weight": _parse_number(cell(row, "weight")),
            }
        )
    if problems:
        raise MnMsDataError.counted(problems, f"the M&Ms information CSV {path}")
    return records


# ------------------------------------------------------------------------------------ images


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
    csv_file = Path(csv_path).expanduser() if csv_path else _info_csv_near(root)
    return _cohort_records(root, csv_file, groups, classes)


def _cohort_records(root: Path, csv_file: Path, groups: Sequence[str], classes: Sequence[str]) -> list[dict[str, Any]]:
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


# ------------------------------------------------------------------------------------ splits


def _cell_order(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    cells = {(r["pathology"], r["vendor"]) for r in records}
    rank = {p: i for i, p in enumerate(PATHOLOGIES)}
    return sorted(cells, key=lambda c: (rank.get(c[0], len(rank)), c[0], c[1]))


def _check_split_seed(split_seed: Any) -> int:
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise InputError(f"split_seed={split_seed!r} must be a non-negative integer (the seed of the split).")
    return int(split_seed)


def _check_val_fraction(val_fraction: Any) -> float:
    number = not isinstance(val_fraction, bool) and isinstance(val_fraction, (int, float, np.floating, np.integer))
    if not number or not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(
            f"val_fraction={val_fraction!r} must be a number in [0, 1): the share of training patients kept "
            "for validation (0: no validation set)."
        )
    return float(val_fraction)


def validation_count(n: int, val_fraction: float) -> int:
    """How many of a (class, vendor) cell's ``n`` training patients go to validation.

    ``round(n * val_fraction)`` (halves rounded up), but at least one and at most ``n - 1``, so
    that every cell with two or more patients is seen by both training and validation; none
    when ``val_fraction`` is 0 or the cell has a single patient.
    """
    if val_fraction <= 0.0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(n * val_fraction + 0.5)))


def select_split(
    records: Sequence[Mapping[str, Any]], split: str = "split1", split_seed: int = 0, val_fraction: float = 0.0
) -> dict[str, list[dict[str, Any]]]:
    """Choose the train, validation and test subjects of a split (pure function; inputs are not modified).

    Within every (class, vendor) cell the subject codes are sorted and then shuffled with one
    ``numpy.random.default_rng(split_seed)`` (cells taken in a fixed order: pathology as in
    :data:`PATHOLOGIES`, then vendor code); train takes the first subjects of the cell, test the
    next ones, so the two parts are disjoint. A validation set is then carved out of the training
    subjects of every cell (:func:`validation_count` of them, drawn with a second generator seeded
    by ``split_seed``), so the test subjects do not depend on ``val_fraction`` and the validation
    and training subjects together are the training subjects of ``val_fraction=0``.

    Args:
        records: Cohort records (``subject``, ``pathology``, ``vendor`` are used), e.g. from
            :func:`load_mnms_cohort`.
        split: A key of :data:`SPLITS` (``"split1"``, ``"split2"`` or ``"demo"``).
        split_seed: Seed that fixes which subjects go where (non-negative integer); independent of
            the seed of the training.
        val_fraction: Share of every cell's training subjects kept for validation, in [0, 1).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, copies of the chosen records sorted by
        (vendor, label, subject); ``val`` is empty when ``val_fraction`` is 0.

    Raises:
        MnMsDataError: For an unknown split, or, listing every cell at once, when the cohort
            has too few subjects to fill the split.
        InputError: ``split_seed`` is not a non-negative integer, or ``val_fraction`` is not a
            number in [0, 1) (an ``InputError`` is a ``ValueError``).
    """
    split_seed = _check_split_seed(split_seed)
    val_fraction = _check_val_fraction(val_fraction)
    if split not in SPLITS:
        raise MnMsDataError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    spec = SPLITS[split]
    codes = [r["subject"] for r in records]
    dupes = sorted(c for c, n in Counter(codes).items() if n > 1)
    if dupes:
        raise MnMsDataError([f"subject {c}: appears more than once in the cohort records" for c in dupes])

    by_cell: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        by_cell.setdefault((record["pathology"], record["vendor"]), []).append(record)

    # wanted[(pathology, vendor)] = (n_train, n_test)
    wanted: dict[tuple[str, str], tuple[int, int]] = {}
    problems: list[str] = []
    if "counts" in spec:
        for part_index, part in enumerate(("train", "test")):
            for pathology, per_vendor in spec["counts"].get(part, {}).items():
                for vendor, n in per_vendor.items():
                    n_train, n_test = wanted.get((pathology, vendor), (0, 0))
                    wanted[(pathology, vendor)] = (n_train + n, n_test) if part_index == 0 else (n_train, n_test + n)
        for (pathology, vendor), (n_train, n_test) in sorted(wanted.items()):
            have = len(by_cell.get((pathology, vendor), []))
            if have >= n_train + n_test:
                continue
            where = f"vendor {vendor}"
            if n_test and n_train:
                problems.append(
                    f"{split} needs {n_test} {pathology} test subjects from {where} beyond the {n_train} "
                    f"for training; the cohort has {have}"
                )
            elif n_test:
                problems.append(f"{split} needs {n_test} {pathology} test subjects from {where}; the cohort has {have}")
            else:
                problems.append(
                    f"{split} needs {n_train} {pathology} training subjects from {where}; the cohort has {have}"
                )
    else:
        fraction = float(spec["test_fraction"])
        for pathology in spec["classes"]:
            for vendor in spec["groups"]:
                have = len(by_cell.get((pathology, vendor), []))
                if have < spec["min_cell"]:
                    problems.append(
                        f"{split} needs at least {spec['min_cell']} {pathology} subjects from vendor {vendor} "
                        f"({VENDORS.get(vendor, '?')}) (one for training, one for testing); the cohort has {have}"
                    )
                    continue
                n_test = max(int(spec["min_test"]), int(round(have * fraction)))
                n_test = min(n_test, have - 1)
                wanted[(pathology, vendor)] = (have - n_test, n_test)
    if problems:
        raise MnMsDataError(problems, header=f"the cohort cannot fill split '{split}':")

    rng = np.random.default_rng(split_seed)
    val_rng = np.random.default_rng([split_seed, 1])
    parts: dict[str, list[dict[str, Any]]] = {part: [] for part in _PARTS}
    for cell in _cell_order(records):
        members = sorted(by_cell[cell], key=lambda r: r["subject"])
        order = rng.permutation(len(members))  # drawn for every cell so choices do not shift
        if cell not in wanted:
            continue
        n_train, n_test = wanted[cell]
        shuffled = [members[i] for i in order]
        train = shuffled[:n_train]
        n_val = validation_count(len(train), val_fraction)
        val_ids = {train[i]["subject"] for i in val_rng.permutation(len(train))[:n_val]}
        parts["train"].extend(dict(r) for r in train if r["subject"] not in val_ids)
        parts["val"].extend(dict(r) for r in train if r["subject"] in val_ids)
        parts["test"].extend(dict(r) for r in shuffled[n_train : n_train + n_test])
    for part in _PARTS:
        parts[part].sort(key=lambda r: (str(r["vendor"]), r.get("label", 0), r["subject"]))
    return parts


def _count_summary(records: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter((r["vendor"], r["pathology"]) for r in records)
    return ", ".join(f"{v}/{p}={n}" for (v, p), n in sorted(counts.items()))


def prepare_split(
    dataset_dir: PathLike,
    split: str = "split1",
    split_seed: int = 0,
    output_dir: PathLike | None = None,
    csv_path: PathLike | None = None,
    val_fraction: float = 0.0,
    record: Mapping[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Build and check the train/validation/test subject lists of a split; the bundles' entry point.

    Reads the information CSV, lists the task's subjects (vendors A/C/D, HCM vs NOR), selects
    the split (:func:`select_split`), checks the images of the selected subjects, and optionally
    writes ``<output_dir>/split.json``.

    Args:
        dataset_dir: Root of the M&Ms release (or of a generated cohort in the same layout).
        split: A key of :data:`SPLITS`.
        split_seed: Seed of the subject selection (not the seed of the training).
        output_dir: Where to write ``split.json`` (created if needed); nothing is written when
            None or empty.
        csv_path: Information CSV; found with :func:`find_info_csv` when None.
        val_fraction: Share of the training subjects kept for validation (see :func:`select_split`).
        record: More fields for ``split.json`` (the bundles record the training ``seed``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``; records as from
        :func:`load_mnms_cohort` plus ``num_slices`` and ``num_frames``.

    Raises:
        MnMsDataError: If the CSV is missing or bad, the cohort cannot fill the split, or any
            selected image is missing or broken (all problems listed in one error).
        InputError: A bad ``split_seed`` or ``val_fraction``.
    """
    root = resolve_dataset_dir(dataset_dir)
    csv_file = Path(csv_path).expanduser().resolve() if csv_path else _info_csv_near(root)
    records = _cohort_records(root, csv_file, GROUPS, CLASSES)
    logger.info("M&Ms cohort from %s: %d subjects (%s)", csv_file, len(records), _count_summary(records))
    parts = select_split(records, split=split, split_seed=split_seed, val_fraction=val_fraction)
    checked = iter(check_subjects([r for part in _PARTS for r in parts[part]], root))
    result = {part: [next(checked) for _ in parts[part]] for part in _PARTS}
    for part in _PARTS:
        logger.info(
            "split %s (split_seed %d) %s: %d subjects (%s)",
            split,
            int(split_seed),
            part,
            len(result[part]),
            _count_summary(result[part]),
        )
    if output_dir:
        out = Path(output_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "split": split,
            "split_seed": int(split_seed),
            **dict(record or {}),
            "val_fraction": float(val_fraction),
            "dataset_dir": str(root.resolve()),
            "csv_path": str(csv_file),
            "classes": list(CLASSES),
            "groups": list(GROUPS),
            "subjects": {part: [r["subject"] for r in result[part]] for part in _PARTS},
            **{part: result[part] for part in _PARTS},
        }
        target = out / "split.json"
        target.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        logger.info("wrote %s", target)
    return result
