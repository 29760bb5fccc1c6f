"""Reader for the Waterbirds release (``waterbird_complete95_forest2water2``) as it is published.

The release is laid out as::

    waterbird_complete95_forest2water2/
        metadata.csv
        001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
        ...                                 (one folder of JPEGs per CUB species)

``metadata.csv`` has the header ``img_id,img_filename,y,split,place,place_filename``:
``img_filename`` is relative to the release folder, ``y`` is 1 for a waterbird and 0 for a
landbird, ``place`` is 1 for a water background and 0 for a land one, and ``split`` is 0, 1, 2
for the official train, val and test parts. The group of an image is ``2 * y + place``
(:data:`GROUPS`). The official training part is imbalanced (3498 / 184 / 56 / 1057 images,
:data:`RELEASE_TRAIN_COUNTS`); in val and test the background is balanced within each class.

:func:`prepare_waterbirds` is the entry point the bundle configs call: it finds the metadata
(``dataset_dir`` may be the release folder or its parent), checks every row and every image,
and reports all problems at once in one :class:`WaterbirdsDataError`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Union

from ..errors import DataError, duplicate_problem, missing_column_problems

__all__ = [
    "RELEASE_FOLDER",
    "METADATA_NAME",
    "METADATA_COLUMNS",
    "CLASSES",
    "PLACES",
    "GROUPS",
    "SPLITS",
    "RELEASE_TRAIN_COUNTS",
    "WaterbirdsDataError",
    "find_metadata",
    "read_metadata",
    "image_problem",
    "group_counts",
    "prepare_waterbirds",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Name of the release folder (the tarball extracts to it).
RELEASE_FOLDER = "waterbird_complete95_forest2water2"

#: Name of the metadata file inside the release folder.
METADATA_NAME = "metadata.csv"

#: Header of the released ``metadata.csv``.
METADATA_COLUMNS: tuple[str, ...] = ("img_id", "img_filename", "y", "split", "place", "place_filename")

# the columns the task needs; img_id and place_filename are kept when present
_REQUIRED_COLUMNS = ("img_filename", "y", "split", "place")

#: Class names; the label ``y`` indexes them.
CLASSES: tuple[str, ...] = ("landbird", "waterbird")

#: Background names; the ``place`` column indexes them.
PLACES: tuple[str, ...] = ("land", "water")

#: Group names; the group of an image is ``2 * y + place``.
GROUPS: tuple[str, ...] = tuple(f"{c}_{p}" for c in CLASSES for p in PLACES)

#: Values of the ``split`` column -> part names.
SPLITS: dict[int, str] = {0: "train", 1: "val", 2: "test"}

#: Training images per group in the released dataset (landbird/land, landbird/water,
#: waterbird/land, waterbird/water).
RELEASE_TRAIN_COUNTS: tuple[int, ...] = (3498, 184, 56, 1057)


class WaterbirdsDataError(DataError):
    """Problems found in a Waterbirds dataset: its metadata, its images or its training groups.

    Attributes:
        problems: One human-readable line per problem; each names the file and the metadata row
            (where there is one) and what is wrong.
    """


# ------------------------------------------------------------------------------- metadata


def find_metadata(dataset_dir: PathLike) -> Path:
    """Find ``metadata.csv`` of a Waterbirds release.

    Args:
        dataset_dir: The release folder (``waterbird_complete95_forest2water2``), the folder
            that holds it, or the ``metadata.csv`` file itself.

    Returns:
        Absolute path of ``metadata.csv``; the image paths in it are relative to its folder.

    Raises:
        WaterbirdsDataError: If no ``metadata.csv`` is in any of those places.
    """
    root = Path(dataset_dir).expanduser()
    if root.is_file():
        return root.resolve()
    candidates = [root / METADATA_NAME, root / RELEASE_FOLDER / METADATA_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    where = "it does not exist" if not root.exists() else f"looked for {' and '.join(str(c) for c in candidates)}"
    raise WaterbirdsDataError(
        f"no Waterbirds {METADATA_NAME} found for dataset_dir {root}: {where}; pass the "
        f"'{RELEASE_FOLDER}' folder of the release (or the folder that holds it) as dataset_dir"
    )


def _parse_flag(text: str, allowed: Sequence[int]) -> int | None:
    """An integer cell (``"1"`` or ``"1.0"``) within ``allowed``; None otherwise."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value) or int(value) not in allowed:
        return None
    return int(value)


def _metadata_rows(path: Path) -> tuple[list[list[str]], dict[str, int]]:
    """The cells of every line of ``metadata.csv`` at ``path``, and column name -> index of its header.

    Raises:
        WaterbirdsDataError: the file cannot be read, is empty, or lacks a needed column.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise WaterbirdsDataError(f"{path}: cannot read the Waterbirds metadata ({err})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise WaterbirdsDataError(
            f"{path}: the Waterbirds metadata is empty (expected the header {','.join(METADATA_COLUMNS)})"
        )
    header = [cell.strip() for cell in rows[0]]
    columns = {name: header.index(name) for name in METADATA_COLUMNS if name in header}
    missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise WaterbirdsDataError(
            missing_column_problems(path, missing, header),
            header=f"unusable Waterbirds metadata {path} (the release's header is {','.join(METADATA_COLUMNS)}):",
        )
    return rows, columns


def read_metadata(csv_path: PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Read the rows of ``metadata.csv`` and list what is wrong with them.

    Args:
        csv_path: Path of ``metadata.csv``.

    Returns:
        ``(records, problems)``: one record per sound row, ``{"img_id", "img_filename", "image"
        (absolute path), "label", "place", "group", "split", "line"}`` (``img_id`` is None when
        the column is absent); and one text per problem of a row (empty file name, duplicate file
        name, ``y`` or ``place`` outside {0, 1}, ``split`` outside {0, 1, 2}), naming the file,
        the line and the image.

    Raises:
        WaterbirdsDataError: If the file cannot be read, is empty, or lacks a needed column (then
            nothing else can be checked).
    """
    path = Path(csv_path).expanduser().resolve()
    rows, columns = _metadata_rows(path)

    def cell(row: list[str], name: str) -> str:
        index = columns.get(name)
        return row[index].strip() if index is not None and index < len(row) else ""

    records: list[dict[str, Any]] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        filename = cell(row, "img_filename")
        img_id = cell(row, "img_id")
        where = f"{path}, line {line} (img_id {img_id or '?'}, {filename or 'no file name'})"
        row_problems = []
        if not filename:
            row_problems.append(f"{where}: empty 'img_filename'")
        elif duplicate := duplicate_problem(first_line, filename, line, where, "img_filename"):
            row_problems.append(duplicate)
        label = _parse_flag(cell(row, "y"), (0, 1))
        if label is None:
            row_problems.append(f"{where}: y must be 0 (landbird) or 1 (waterbird), got '{cell(row, 'y')}'")
        place = _parse_flag(cell(row, "place"), (0, 1))
        if place is None:
            row_problems.append(f"{where}: place must be 0 (land) or 1 (water), got '{cell(row, 'place')}'")
        split = _parse_flag(cell(row, "split"), tuple(SPLITS))
        if split is None:
            row_problems.append(f"{where}: split must be 0 (train), 1 (val) or 2 (test), got '{cell(row, 'split')}'")
        if row_problems:
            problems += row_problems
            continue
        records.append(
            {
                "img_id": int(img_id) if img_id.isdecimal() else (img_id or None),
                "img_filename": filename,
                "image": str(path.parent / filename),
                "label": label,
                "place": place,
                "group": 2 * label + place,
                "split": SPLITS[split],
                "line": line,
            }
        )
    if not records and not problems:
        problems.append(f"{path}: the Waterbirds metadata has a header but no rows")
    return records, problems


# --------------------------------------------------------------------------------- images


def image_problem(path: PathLike) -> str | None:
    """What is wrong with an image file, or None when PIL decodes it completely.

    JPEGs are decoded at reduced scale (PIL's draft mode), which still reads every byte of the
    compressed data, so truncated or corrupt files are caught at a fraction of a full decode.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        return "image file does not exist"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (32, 32))
            image.load()
            if min(image.size) < 1:
                return f"empty image (size {image.size})"
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, ValueError...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"cannot be decoded as an image ({type(err).__name__}: {first})"
    return None


def group_counts(records: Sequence[Mapping[str, Any]], num_groups: int = len(GROUPS)) -> list[int]:
    """Number of records of each group (the ``"group"`` entry), a list of length ``num_groups``."""
    counts = Counter(int(r["group"]) for r in records)
    return [counts.get(g, 0) for g in range(num_groups)]


def _count_summary(records: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{name}={n}" for name, n in zip(GROUPS, group_counts(records)))


def prepare_waterbirds(
    dataset_dir: PathLike,
    output_dir: PathLike | None = None,
    check_images: bool = True,
    num_threads: int = 4,
) -> dict[str, list[dict[str, Any]]]:
    """Read and check a Waterbirds release and return its official train/val/test parts.

    Everything is checked before anything is returned, and every problem found is reported in
    one error: a missing ``metadata.csv`` or column, rows with an empty or duplicate file name,
    ``y`` or ``place`` outside {0, 1}, ``split`` outside {0, 1, 2}, missing or undecodable images
    (see :func:`image_problem`), and groups without any training image.

    Args:
        dataset_dir: The release folder or its parent (see :func:`find_metadata`).
        output_dir: Where to write ``split.json`` (the image file names of each part and the
            group counts); nothing is written when None or empty.
        check_images: Decode every image once to find missing and broken files (on by default).
        num_threads: Threads that decode images for the check.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``; records as from
        :func:`read_metadata` plus ``"subject"`` (the image file name, which the group metrics
        use as the sample's identifier).

    Raises:
        WaterbirdsDataError: Listing every problem found.
    """
    try:
        csv_path = find_metadata(dataset_dir)
        records, problems = read_metadata(csv_path)
        if check_images:
            with ThreadPoolExecutor(max_workers=max(1, int(num_threads))) as pool:
                found = list(pool.map(image_problem, [r["image"] for r in records]))
            problems += [
                f"{csv_path}, line {r['line']} (img_id {r['img_id']}): {r['image']}: {p}"
                for r, p in zip(records, found)
                if p is not None
            ]
        parts = {
            name: [{**r, "subject": r["img_filename"]} for r in records if r["split"] == name]
            for name in SPLITS.values()
        }
        train_counts = group_counts(parts["train"])
        problems += [
            f"{csv_path}: group {name} (y={g // 2}, place={g % 2}) has no training image (split 0); "
            "the group-robust objectives need every group in training"
            for g, (name, n) in enumerate(zip(GROUPS, train_counts))
            if n == 0
        ]
        if problems:
            raise WaterbirdsDataError.counted(problems, f"the Waterbirds dataset {csv_path.parent}")
    except WaterbirdsDataError as error:
        # the bundle runner wraps this error in its own traceback: state the problems plainly first
        logger.error("the Waterbirds data in %s cannot be used:\n%s", dataset_dir, error)
        raise
    for name, part in parts.items():
        logger.info("Waterbirds %s: %d images (%s)", name, len(part), _count_summary(part))
    if output_dir:
        out = Path(output_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "dataset_dir": str(csv_path.parent),
            "metadata": str(csv_path),
            "classes": list(CLASSES),
            "groups": list(GROUPS),
            "group_counts": {name: dict(zip(GROUPS, group_counts(part))) for name, part in parts.items()},
            "images": {name: [r["img_filename"] for r in part] for name, part in parts.items()},
        }
        target = out / "split.json"
        target.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", target)
    return parts
