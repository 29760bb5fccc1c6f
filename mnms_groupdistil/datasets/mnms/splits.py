"""The splits of the M&Ms task: which subjects train, validate and test, and the ``split.json`` a run writes.

:func:`prepare_split` is the entry point the bundle configs call.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .cohort import check_subjects, cohort_records
from .release import CLASSES, GROUPS, PATHOLOGIES, VENDORS, MnMsDataError, PathLike, info_csv_near, resolve_dataset_dir

__all__ = ["SPLITS", "prepare_split", "select_split", "validation_count", "write_split_file"]

logger = logging.getLogger(__name__)

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


def _cell_order(cells: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(pathology, vendor)`` cells in the order of the draw: pathology as in :data:`PATHOLOGIES`, then vendor."""
    rank = {p: i for i, p in enumerate(PATHOLOGIES)}
    return sorted(set(cells), key=lambda c: (rank.get(c[0], len(rank)), c[0], c[1]))


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
    cell_sizes = {cell: len(members) for cell, members in by_cell.items()}
    if "counts" in spec:
        wanted, problems = _counted_cells(split, spec["counts"], cell_sizes)
    else:
        wanted, problems = _proportional_cells(split, spec, cell_sizes)
    if problems:
        raise MnMsDataError(problems, header=f"the cohort cannot fill split '{split}':")
    return _drawn_parts(by_cell, wanted, split_seed, val_fraction)


def _counted_cells(
    split: str, counts: Mapping[str, Mapping[str, Mapping[str, int]]], cell_sizes: Mapping[tuple[str, str], int]
) -> tuple[dict[tuple[str, str], tuple[int, int]], list[str]]:
    """``(pathology, vendor) -> (n_train, n_test)`` of a split given by counts, and one line per cell it cannot fill.

    Args:
        split: the split's name (for the messages).
        counts: part (``train``/``test``) -> pathology -> vendor -> subjects, as in :data:`SPLITS`.
        cell_sizes: ``(pathology, vendor)`` -> subjects of the cohort.
    """
    wanted: dict[tuple[str, str], tuple[int, int]] = {}
    for part_index, part in enumerate(("train", "test")):
        for pathology, per_vendor in counts.get(part, {}).items():
            for vendor, n in per_vendor.items():
                n_train, n_test = wanted.get((pathology, vendor), (0, 0))
                wanted[(pathology, vendor)] = (n_train + n, n_test) if part_index == 0 else (n_train, n_test + n)
    problems = []
    for (pathology, vendor), (n_train, n_test) in sorted(wanted.items()):
        have = cell_sizes.get((pathology, vendor), 0)
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
    return wanted, problems


def _proportional_cells(
    split: str, spec: Mapping[str, Any], cell_sizes: Mapping[tuple[str, str], int]
) -> tuple[dict[tuple[str, str], tuple[int, int]], list[str]]:
    """:func:`_counted_cells` for a split given by ``test_fraction``, ``min_test`` and ``min_cell`` (``demo``)."""
    wanted: dict[tuple[str, str], tuple[int, int]] = {}
    problems = []
    for pathology in spec["classes"]:
        for vendor in spec["groups"]:
            have = cell_sizes.get((pathology, vendor), 0)
            if have < spec["min_cell"]:
                problems.append(
                    f"{split} needs at least {spec['min_cell']} {pathology} subjects from vendor {vendor} "
                    f"({VENDORS.get(vendor, '?')}) (one for training, one for testing); the cohort has {have}"
                )
                continue
            n_test = max(int(spec["min_test"]), int(round(have * float(spec["test_fraction"]))))
            n_test = min(n_test, have - 1)
            wanted[(pathology, vendor)] = (have - n_test, n_test)
    return wanted, problems


def _drawn_parts(
    by_cell: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
    wanted: Mapping[tuple[str, str], tuple[int, int]],
    split_seed: int,
    val_fraction: float,
) -> dict[str, list[dict[str, Any]]]:
    """The parts of :func:`select_split`: every cell's subjects shuffled, the first to train, the next to test."""
    rng = np.random.default_rng(split_seed)
    val_rng = np.random.default_rng([split_seed, 1])
    parts: dict[str, list[dict[str, Any]]] = {part: [] for part in _PARTS}
    for cell in _cell_order(by_cell):
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
    csv_file = Path(csv_path).expanduser().resolve() if csv_path else info_csv_near(root)
    records = cohort_records(root, csv_file, GROUPS, CLASSES)
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
        split_file = {"split": split, "split_seed": int(split_seed), **dict(record or {})}
        split_file.update(val_fraction=float(val_fraction), dataset_dir=str(root.resolve()), csv_path=str(csv_file))
        write_split_file(output_dir, split_file, result)
    return result


def write_split_file(output_dir: PathLike, settings: Mapping[str, Any], parts: Mapping[str, Sequence[Mapping]]) -> Path:
    """Write ``<output_dir>/split.json``: ``settings``, the task's classes and groups, and every part's subjects.

    Args:
        output_dir: the run's folder (created if needed).
        settings: what chose the split (``split``, ``split_seed``, ``val_fraction``, ``dataset_dir``, ...).
        parts: ``{"train": [...], "val": [...], "test": [...]}`` records, each written in full and by subject.

    Returns:
        the file written.
    """
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **dict(settings),
        "classes": list(CLASSES),
        "groups": list(GROUPS),
        "subjects": {part: [r["subject"] for r in parts[part]] for part in _PARTS},
        **{part: list(parts[part]) for part in _PARTS},
    }
    target = out / "split.json"
    target.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("wrote %s", target)
    return target
