"""The M&Ms information CSV read into one checked record per subject (every problem of the file in one error)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from ..errors import duplicate_problem, missing_column_problems
from .release import INFO_CSV_NAME, PATHOLOGIES, VENDORS, MnMsDataError, PathLike

__all__ = ["read_info_csv"]

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


def _normalise_header(cell: str) -> str:
    return re.sub(r"[\s_\-]+", " ", cell.replace("\ufeff", "").strip().lower())


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
    rows = _csv_rows(path)
    columns = _columns(path, rows[0])
    pathologies = {p.upper(): p for p in PATHOLOGIES}
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        cells = {key: row[idx].strip() if idx < len(row) else "" for key, idx in columns.items()}
        code = cells["subject"]
        where = f"{path}, line {line_no} (subject {code or '?'})"
        row_problems = _row_problems(cells, where, pathologies)
        if not code:
            row_problems.insert(0, f"{where}: empty 'External code'")
        elif duplicate := duplicate_problem(first_line, code, line_no, where, f"subject code {code}"):
            row_problems.insert(0, duplicate)
        if row_problems:
            problems.extend(row_problems)
            continue
        records.append(_record(cells, pathologies))
    if problems:
        raise MnMsDataError.counted(problems, f"the M&Ms information CSV {path}")
    return records


def _csv_rows(path: Path) -> list[list[str]]:
    """The cells of every line of the CSV at ``path`` (UTF-8, or Latin-1; ``,``, ``;`` or tab separated).

    Raises:
        MnMsDataError: the file cannot be read or has no header line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise MnMsDataError(f"{path}: cannot read the M&Ms information CSV ({err})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise MnMsDataError(f"{path}: the M&Ms information CSV is empty (no header line)")
    return list(csv.reader(lines, delimiter=_sniff_delimiter(lines[0])))


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    """Record key -> column index of the first header cell naming it.

    Raises:
        MnMsDataError: naming every required column that is missing (the diagnosis CSV for ``Pathology``).
    """
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
    return columns


def _row_problems(cells: dict[str, str], where: str, pathologies: dict[str, str]) -> list[str]:
    """What is wrong with a row's vendor, pathology, ED and ES (``cells``: record key -> cell text)."""
    problems = []
    if cells["vendor"].upper() not in VENDORS:
        problems.append(f"{where}: unknown vendor code '{cells['vendor']}' (expected one of {', '.join(VENDORS)})")
    if cells["pathology"].upper() not in pathologies:
        problems.append(
            f"{where}: unknown pathology code '{cells['pathology']}' (expected one of {', '.join(PATHOLOGIES)})"
        )
    for key in ("ed", "es"):
        value = _parse_int(cells[key])
        if value is None or value < 0:
            problems.append(
                f"{where}: {_COLUMN_NAMES[key]} must be a non-negative integer frame index, got '{cells[key]}'"
            )
    return problems


def _record(cells: dict[str, str], pathologies: dict[str, str]) -> dict[str, Any]:
    """The record of a row without problems (``cells``: record key -> cell text; absent optional columns empty)."""
    vendor = cells["vendor"].upper()
    age = _parse_number(cells.get("age", ""))
    if isinstance(age, float) and age == int(age):
        age = int(age)
    return {
        "subject": cells["subject"],
        "pathology": pathologies[cells["pathology"].upper()],
        "vendor_name": cells.get("vendor_name") or VENDORS[vendor],
        "vendor": vendor,
        "centre": _parse_int(cells.get("centre", "")),
        "ed": _parse_int(cells["ed"]),
        "es": _parse_int(cells["es"]),
        "age": age,
        "sex": cells.get("sex") or None,
        "height": _parse_number(cells.get("height", "")),
        "weight": _parse_number(cells.get("weight", "")),
    }
