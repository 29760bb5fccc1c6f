"""Property-based tests of the two metadata readers: randomly corrupted files either read correctly or
raise the dataset's data error naming every bad row (or the missing column); never another exception.

Each example starts from a sound table, corrupts some rows (one corruption each: bad, negative or
non-numeric values, empty or duplicated ids, duplicated rows), then the layout (reordered, dropped or
renamed columns, blank rows, another delimiter, BOM, CRLF, another encoding, a non-ASCII folder), writes
the file and reads it. The expected outcome is derived from the corruptions alone: the records of the
sound table when only harmless changes were made, else the error with exactly the corrupted lines.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import MNMS_RELEASE_HEADER
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from mnms_groupdistil.datasets.mnms.info_csv import read_info_csv
from mnms_groupdistil.datasets.mnms.release import PATHOLOGIES, VENDORS, MnMsDataError
from mnms_groupdistil.datasets.waterbirds.reader import SPLITS, WaterbirdsDataError, read_metadata

EXAMPLES = 300  # per reader; the docs quote the number of cases these tests run
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FOLDERS = ["plain", "données", "日本語 データ", "ümlaut ß"]
BLANK = "blank"


def _layout(draw: Any, columns: list[str], required: set[str], aliases_free: str) -> dict[str, Any]:
    """The file-level corruptions: column order, dropped/renamed columns, delimiter, BOM, line ends, folder."""
    order = draw(st.permutations(columns))
    removed = draw(st.sets(st.sampled_from(columns), max_size=2))
    renamed = {c: f"{aliases_free}{i}" for i, c in enumerate(sorted(removed)) if draw(st.booleans())}
    return {
        "order": [c for c in order if c not in removed or c in renamed],
        "renamed": renamed,
        "missing": sorted(removed & required),
        "dropped": removed,
        "bom": draw(st.booleans()),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "folder": draw(st.sampled_from(FOLDERS)),
    }


def _write(
    tmp_path: Path, name: str, layout: dict[str, Any], rows: list[dict[str, str] | str], delimiter: str, encoding: str
) -> tuple[Path, list[int]]:
    """Write ``rows`` (dicts, or BLANK for an empty row) in ``layout``; returns the path and each dict row's line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=layout["newline"])
    writer.writerow([layout["renamed"].get(c, c) for c in layout["order"]])
    lines = []
    for line, row in enumerate(rows, start=2):
        if row == BLANK:
            writer.writerow([""] * len(layout["order"]) if line % 2 else [])
        else:
            writer.writerow([row[c] for c in layout["order"]])
            lines.append(line)
    folder = tmp_path / layout["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        data = buffer.getvalue().encode(encoding)
    except UnicodeEncodeError:  # a value this encoding cannot hold: not a file anyone could have written
        reject()
    path.write_bytes((b"\xef\xbb\xbf" if layout["bom"] and encoding == "utf-8" else b"") + data)
    return path, lines


def _with_blanks(draw: Any, rows: list[Any]) -> list[Any]:
    for _ in range(draw(st.integers(0, 3))):
        rows.insert(draw(st.integers(0, len(rows))), BLANK)
    return rows


def _named_lines(message: str) -> set[int]:
    return {int(n) for n in re.findall(r", line (\d+) \(", message)}


# ----------------------------------------------------------------------------------- M&Ms CSV

MNMS_REQUIRED = {"External code", "Pathology", "Vendor", "ED", "ES"}
HEIGHTS = {"": None, "170": 170, "165.5": 165.5}
BAD_FRAME = ["", "x", "1.5", "-1", "nan", "inf", "1e400", "3 frames", "\u22122"]
MNMS_HARMFUL = ["ed", "es", "vendor", "pathology", "empty_code", "duplicate_code", "duplicate_row"]


@st.composite
def mnms_case(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    codes = draw(
        st.lists(
            st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=6, max_size=6), min_size=n, max_size=n, unique=True
        )
    )
    rows, expected = [], []
    for index, code in enumerate(codes):
        vendor = draw(st.sampled_from(sorted(VENDORS)))
        pathology = draw(st.sampled_from(PATHOLOGIES))
        ed, es = draw(st.integers(0, 29)), draw(st.integers(0, 29))
        height = draw(st.sampled_from(sorted(HEIGHTS)))
        vendor_name = draw(st.sampled_from(["", VENDORS[vendor], f"{VENDORS[vendor]} Médical ©"]))
        row = {
            "": str(index), "External code": code, "Pathology": pathology, "VendorName": vendor_name,
            "Vendor": vendor, "Centre": str(index + 1), "ED": str(ed), "ES": str(es), "Age": str(40 + index),
            "Sex": draw(st.sampled_from(["M", "F"])), "Height": height, "Weight": "72.5",
        }  # fmt: skip
        record = {
            "subject": code, "pathology": pathology, "vendor_name": vendor_name or VENDORS[vendor], "vendor": vendor,
            "centre": index + 1, "ed": ed, "es": es, "age": 40 + index, "sex": row["Sex"],
            "height": HEIGHTS[height], "weight": 72.5,
        }  # fmt: skip
        if draw(st.booleans()):  # harmless: codes of another case, spaces around values
            row["Pathology"], row["Vendor"], row["ED"] = pathology.lower(), f" {vendor.lower()} ", f"{ed}.0"
        rows.append(row)
        expected.append(record)
    bad = [draw(st.sampled_from([None, None, None, *MNMS_HARMFUL])) for _ in rows]
    for index, kind in enumerate(bad):
        row = rows[index]
        if kind in ("ed", "es"):
            row[kind.upper()] = draw(st.sampled_from(BAD_FRAME))
        elif kind == "vendor":
            row["Vendor"] = draw(st.sampled_from(["E", "", "Siemens", "a1"]))
        elif kind == "pathology":
            row["Pathology"] = draw(st.sampled_from(["XYZ", "", "HCM?", "NORMAL"]))
        elif kind == "empty_code":
            row["External code"] = " "
        elif kind == "duplicate_code" and index > 0:
            row["External code"] = rows[draw(st.integers(0, index - 1))]["External code"]
        elif kind == "duplicate_row":
            rows.append(dict(row))
            bad.append("copy")  # the copy is the bad line; the original stays sound
            bad[index] = None
        elif kind != "copy":
            bad[index] = None
    layout = _layout(draw, MNMS_RELEASE_HEADER, MNMS_REQUIRED, "zz_")
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "cp1252", "utf-16"]))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    blanks = _with_blanks(draw, list(range(len(rows))))
    return {"rows": rows, "bad": bad, "expected": expected, "layout": layout, "encoding": encoding,
            "delimiter": delimiter, "with_blanks": blanks}  # fmt: skip


def _mnms_optional(record: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    """``record`` as read from a file without the optional columns ``dropped``."""
    record = dict(record)
    names = {
        "VendorName": "vendor_name",
        "Centre": "centre",
        "Age": "age",
        "Sex": "sex",
        "Height": "height",
        "Weight": "weight",
    }
    for column in dropped:
        if column in names:
            record[names[column]] = VENDORS[record["vendor"]] if column == "VendorName" else None
    return record


@FUZZ
@given(case=mnms_case())
def test_mnms_information_csv_reads_or_names_each_bad_row(tmp_path_factory, case):
    tmp_path = tmp_path_factory.mktemp("mnms")
    layout = case["layout"]
    order = [case["rows"][i] if i != BLANK else BLANK for i in case["with_blanks"]]
    path, lines = _write(tmp_path, "info.csv", layout, order, case["delimiter"], case["encoding"])
    bad_lines = {line for line, i in zip(lines, [i for i in case["with_blanks"] if i != BLANK]) if case["bad"][i]}
    if case["encoding"] == "utf-16" or layout["missing"]:
        with pytest.raises(MnMsDataError) as info:
            read_info_csv(path)
        assert "required column" in str(info.value) and str(path) in str(info.value)
        for column in layout["missing"]:
            assert f"'{column}' is missing" in str(info.value)
        return
    if bad_lines:
        with pytest.raises(MnMsDataError) as info:
            read_info_csv(path)
        assert _named_lines(str(info.value)) == bad_lines, str(info.value)
        return
    sound = [case["expected"][i] for i in case["with_blanks"] if i != BLANK and i < len(case["expected"])]
    assert read_info_csv(path) == [_mnms_optional(r, layout["dropped"]) for r in sound]


# ------------------------------------------------------------------------------ Waterbirds metadata

WB_COLUMNS = ["img_id", "img_filename", "y", "split", "place", "place_filename"]
WB_REQUIRED = {"img_filename", "y", "split", "place"}
BAD_FLAG = ["", "2", "-1", "x", "0.5", "nan", "inf", "1e309", "\u00b3", "1 "]
WB_HARMFUL = ["y", "place", "split", "empty_name", "duplicate_name", "duplicate_row"]


@st.composite
def waterbirds_case(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    species = draw(st.sampled_from(["001.Black_footed_Albatross", "014.Indigo_Bunting", "095.Oiseau_à_ailes"]))
    rows, expected = [], []
    for index in range(n):
        y, place, split = draw(st.integers(0, 1)), draw(st.integers(0, 1)), draw(st.sampled_from(sorted(SPLITS)))
        name = f"{species}/img_{index:04d}.jpg"
        rows.append({
            "img_id": str(index + 1), "img_filename": name, "y": str(y), "split": str(split), "place": str(place),
            "place_filename": "/b/bamboo_forest/00000001.jpg",
        })  # fmt: skip
        expected.append({"img_id": index + 1, "img_filename": name, "label": y, "place": place,
                         "group": 2 * y + place, "split": SPLITS[split]})  # fmt: skip
    bad = [draw(st.sampled_from([None, None, None, *WB_HARMFUL])) for _ in rows]
    for index, kind in enumerate(bad):
        row = rows[index]
        if kind in ("y", "place", "split"):
            row[kind] = draw(
                st.sampled_from([v for v in BAD_FLAG if v != "2"] + ["3"] if kind == "split" else BAD_FLAG)
            )
            if row[kind] == "1 ":  # surrounding spaces are harmless
                bad[index] = None
                expected[index]["label" if kind == "y" else kind] = 1 if kind != "split" else SPLITS[1]
                expected[index]["group"] = 2 * expected[index]["label"] + expected[index]["place"]
        elif kind == "empty_name":
            row["img_filename"] = ""
        elif kind == "duplicate_name" and index > 0:
            row["img_filename"] = rows[draw(st.integers(0, index - 1))]["img_filename"]
        elif kind == "duplicate_row":
            rows.append(dict(row))
            bad.append("copy")
            bad[index] = None
        elif kind != "copy":
            bad[index] = None
    layout = _layout(draw, WB_COLUMNS, WB_REQUIRED, "col_")
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
    return {"rows": rows, "bad": bad, "expected": expected, "layout": layout, "encoding": encoding,
            "with_blanks": _with_blanks(draw, list(range(len(rows))))}  # fmt: skip


@FUZZ
@given(case=waterbirds_case())
def test_waterbirds_metadata_reads_or_names_each_bad_row(tmp_path_factory, case):
    tmp_path = tmp_path_factory.mktemp("waterbirds")
    layout = case["layout"]
    order = [case["rows"][i] if i != BLANK else BLANK for i in case["with_blanks"]]
    path, lines = _write(tmp_path, "metadata.csv", layout, order, ",", case["encoding"])
    indices = [i for i in case["with_blanks"] if i != BLANK]
    non_ascii = not all(row[c].isascii() for row in case["rows"] for c in layout["order"])  # of the written columns
    undecodable = case["encoding"] == "utf-16" or (case["encoding"] == "latin-1" and non_ascii)
    if undecodable or layout["missing"]:
        with pytest.raises(WaterbirdsDataError) as info:
            read_metadata(path)
        message = str(info.value)
        assert str(path.resolve()) in message
        assert (
            "cannot read" in message if undecodable else all(f"'{c}' is missing" in message for c in layout["missing"])
        )
        return
    records, problems = read_metadata(path)
    bad_lines = {line for line, i in zip(lines, indices) if case["bad"][i]}
    assert {n for p in problems for n in _named_lines(p)} == bad_lines, problems
    assert len(problems) == len(bad_lines)
    sound = [(line, case["expected"][i]) for line, i in zip(lines, indices) if not case["bad"][i]]
    img_id = "img_id" not in layout["dropped"]
    assert records == [
        {
            **r,
            "img_id": r["img_id"] if img_id else None,
            "image": str(path.resolve().parent / r["img_filename"]),
            "line": line,
        }
        for line, r in sound
    ]
