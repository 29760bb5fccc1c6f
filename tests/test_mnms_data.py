"""Tests of the M&Ms reader: information CSV, image checks, splits and split.json."""

from __future__ import annotations

import copy
import gzip
import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mnms_groupdistil.datasets.mnms import cohort, splits
from mnms_groupdistil.datasets.mnms import release as mnms
from mnms_groupdistil.datasets.mnms.cohort import check_subjects, find_subject_image, load_mnms_cohort
from mnms_groupdistil.datasets.mnms.info_csv import read_info_csv
from mnms_groupdistil.datasets.mnms.release import MnMsDataError, find_info_csv
from mnms_groupdistil.datasets.mnms.splits import prepare_split, select_split, validation_count
from mnms_groupdistil.datasets.mnms.synthetic import MNMS_PRESETS, write_mnms_cohort, write_mnms_cohort_from_counts
from mnms_groupdistil.errors import InputError

REAL_HEADER = ",External code,Pathology,VendorName,Vendor,Centre,ED,ES,Age,Sex,Height,Weight"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _nifti(path: Path, shape, dtype=np.int16, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)
    nib.save(nib.Nifti1Image(data, np.diag([1.4, 1.4, 9.0, 1.0]) if affine is None else affine), str(path))
    return path


# ------------------------------------------------------------------------------------- CSV


def test_read_info_csv_with_index_column(tmp_path):
    csv_path = _write(
        tmp_path / mnms.INFO_CSV_NAME,
        REAL_HEADER + "\n"
        "0,A0S9V9,NOR,Siemens,A,1,0,9,16,M,,\n"
        "1,A1D0Q7,HCM,Philips,B,2,29,11,54,F,163.0,71.5\n"
        "2,C2L5P7,Other,Canon,D,5,24,10,33,M,180,\n",
    )
    rows = read_info_csv(csv_path)
    assert rows == [
        {
            "subject": "A0S9V9",
            "pathology": "NOR",
            "vendor_name": "Siemens",
            "vendor": "A",
            "centre": 1,
            "ed": 0,
            "es": 9,
            "age": 16,
            "sex": "M",
            "height": None,
            "weight": None,
        },
        {
            "subject": "A1D0Q7",
            "pathology": "HCM",
            "vendor_name": "Philips",
            "vendor": "B",
            "centre": 2,
            "ed": 29,
            "es": 11,
            "age": 54,
            "sex": "F",
            "height": 163.0,
            "weight": 71.5,
        },
        {
            "subject": "C2L5P7",
            "pathology": "Other",
            "vendor_name": "Canon",
            "vendor": "D",
            "centre": 5,
            "ed": 24,
            "es": 10,
            "age": 33,
            "sex": "M",
            "height": 180,
            "weight": None,
        },
    ]


def test_read_info_csv_tolerates_header_case_whitespace_and_no_index(tmp_path):
    csv_path = _write(
        tmp_path / "info.csv",
        " External Code , pathology ,Vendor Name,VENDOR,Centre, ED ,Es\nB3C4D5,hcm,GE,C,4,0,8\n",
    )
    (row,) = read_info_csv(csv_path)
    assert (row["subject"], row["pathology"], row["vendor"], row["vendor_name"], row["ed"], row["es"]) == (
        "B3C4D5",
        "HCM",
        "C",
        "GE",
        0,
        8,
    )
    assert row["age"] is None and row["sex"] is None and row["height"] is None


def test_old_csv_without_pathology_names_column_and_file(tmp_path):
    old = _write(
        tmp_path / "201014_M&Ms_Dataset_Information_-_opendataset.csv",
        "External code,VendorName,Vendor,Centre,ED,ES\nA0S9V9,Siemens,A,1,0,9\n",
    )
    with pytest.raises(MnMsDataError) as info:
        read_info_csv(old)
    message = str(info.value)
    assert "'Pathology'" in message
    assert old.name in message
    assert mnms.INFO_CSV_NAME in message
    # same error through the cohort loader when the old CSV is the one found
    with pytest.raises(MnMsDataError, match="Pathology"):
        load_mnms_cohort(tmp_path)


def test_bad_rows_are_all_reported_together(tmp_path):
    csv_path = _write(
        tmp_path / "bad.csv",
        REAL_HEADER + "\n"
        "0,A0S9V9,NOR,Siemens,A,1,0,9,16,M,,\n"
        "1,E1E1E1,NOR,Toshiba,E,7,0,9,16,M,,\n"
        "2,P1P1P1,XYZ,Siemens,A,1,0,9,16,M,,\n"
        "3,D1D1D1,HCM,Canon,D,5,abc,9,16,M,,\n"
        "4,A0S9V9,HCM,Canon,D,5,0,9,16,M,,\n",
    )
    with pytest.raises(MnMsDataError) as info:
        read_info_csv(csv_path)
    problems = info.value.problems
    assert len(problems) == 4
    text = str(info.value)
    for code, what in [("E1E1E1", "vendor"), ("P1P1P1", "pathology"), ("D1D1D1", "ED"), ("A0S9V9", "duplicate")]:
        assert any(code in p and what in p and "bad.csv" in p for p in problems), (code, what, text)


def test_find_info_csv_exact_parent_and_fallback(tmp_path):
    data = tmp_path / "OpenDataset"
    data.mkdir()
    with pytest.raises(MnMsDataError, match="no M&Ms information CSV"):
        find_info_csv(data)
    older = _write(tmp_path / "201014_M&Ms_Dataset_Information_-_opendataset.csv", "x\n")
    assert find_info_csv(data) == older.resolve()  # parent, pattern match
    newer = _write(data / "210304_m&ms_dataset_information_v2.csv", "x\n")
    assert find_info_csv(data) == newer.resolve()  # dataset_dir first, newest date
    exact = _write(tmp_path / mnms.INFO_CSV_NAME, "x\n")
    assert find_info_csv(data) == exact.resolve()  # exact name wins, even in the parent
    assert find_info_csv(exact) == exact.resolve()


# ---------------------------------------------------------------------------- cohort, checks


def test_load_mnms_cohort_filters_and_finds_images(tmp_path):
    _write(
        tmp_path / mnms.INFO_CSV_NAME,
        REAL_HEADER + "\n"
        "0,AAAAAA,HCM,Siemens,A,6,0,3,40,M,,\n"
        "1,BBBBBB,NOR,Philips,B,2,0,3,40,M,,\n"
        "2,CCCCCC,NOR,GE,C,4,4,1,40,M,,\n"
        "3,DDDDDD,HCM,Canon,D,5,0,3,40,M,,\n"
        "4,EEEEEE,DCM,Siemens,A,1,0,3,40,M,,\n"
        "5,FFFFFF,NOR,Canon,D,5,0,3,40,M,,\n",
    )
    paths = {
        "AAAAAA": _nifti(tmp_path / "Training/Labeled/AAAAAA/AAAAAA_sa.nii.gz", (8, 8, 2, 5)),
        "CCCCCC": _nifti(tmp_path / "Training/Unlabeled/CCCCCC/CCCCCC_sa.nii.gz", (8, 8, 2, 5)),
        "DDDDDD": _nifti(tmp_path / "Testing/DDDDDD/DDDDDD_sa.nii.gz", (8, 8, 2, 5)),
    }
    _nifti(tmp_path / "Validation/BBBBBB/BBBBBB_sa.nii.gz", (8, 8, 2, 5))
    records = load_mnms_cohort(tmp_path)
    assert [r["subject"] for r in records] == ["AAAAAA", "CCCCCC", "DDDDDD", "FFFFFF"]
    by_code = {r["subject"]: r for r in records}
    assert by_code["AAAAAA"] == {
        "subject": "AAAAAA",
        "image": str(paths["AAAAAA"].resolve()),
        "label": 1,
        "pathology": "HCM",
        "group": 0,
        "vendor": "A",
        "centre": 6,
        "ed": 0,
        "es": 3,
    }
    assert (by_code["CCCCCC"]["label"], by_code["CCCCCC"]["group"], by_code["CCCCCC"]["ed"]) == (0, 1, 4)
    assert (by_code["DDDDDD"]["label"], by_code["DDDDDD"]["group"]) == (1, 2)
    assert by_code["FFFFFF"]["image"] is None
    assert find_subject_image(tmp_path, "BBBBBB") == (tmp_path / "Validation/BBBBBB/BBBBBB_sa.nii.gz").resolve()
    assert find_subject_image(tmp_path, "ZZZZZZ") is None


def test_check_subjects_reports_every_problem_in_one_error(tmp_path):
    good = _nifti(tmp_path / "GOOD01_sa.nii.gz", (10, 12, 3, 6))
    missing = tmp_path / "MISS02_sa.nii.gz"
    garbage = _write(tmp_path / "GARB03_sa.nii.gz", "this is not gzip")
    truncated = _nifti(tmp_path / "TRUN04_sa.nii.gz", (40, 40, 6, 12))
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) * 2 // 3])
    flat = _nifti(tmp_path / "FLAT05_sa.nii.gz", (10, 12, 3))
    ed_bad = _nifti(tmp_path / "EDBD06_sa.nii.gz", (10, 12, 3, 6))
    # bit flips in the middle of a compressed stream
    corrupt = _nifti(tmp_path / "CORR08_sa.nii.gz", (40, 40, 6, 12), dtype=np.float32)
    raw = bytearray(corrupt.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    records = [
        {"subject": "GOOD01", "image": str(good), "ed": 0, "es": 3},
        {"subject": "NONE00", "image": None, "ed": 0, "es": 3},
        {"subject": "MISS02", "image": str(missing), "ed": 0, "es": 3},
        {"subject": "GARB03", "image": str(garbage), "ed": 0, "es": 3},
        {"subject": "TRUN04", "image": str(truncated), "ed": 0, "es": 3},
        {"subject": "FLAT05", "image": str(flat), "ed": 0, "es": 3},
        {"subject": "EDBD06", "image": str(ed_bad), "ed": 6, "es": 3},
        {"subject": "CORR08", "image": str(corrupt), "ed": 0, "es": 3},
    ]
    with pytest.raises(MnMsDataError) as info:
        check_subjects(records)
    problems = info.value.problems
    message = str(info.value)
    assert "Traceback" not in message
    expectations = {
        "NONE00": ("NONE00_sa.nii.gz", "not found"),
        "MISS02": ("MISS02_sa.nii.gz", "does not exist"),
        "GARB03": ("GARB03_sa.nii.gz", "NIfTI header"),
        "TRUN04": ("TRUN04_sa.nii.gz", "truncated"),
        "FLAT05": ("FLAT05_sa.nii.gz", "4D"),
        "EDBD06": ("EDBD06_sa.nii.gz", "ED frame 6 outside"),
        "CORR08": ("CORR08_sa.nii.gz", "corrupt"),
    }
    for code, (file_name, what) in expectations.items():
        hits = [p for p in problems if code in p]
        assert len(hits) == 1, (code, problems)
        assert file_name in hits[0] and what in hits[0], hits[0]
    assert not any("GOOD01" in p for p in problems)
    assert len(problems) == len(expectations)
    assert all(p in message for p in problems)


def test_check_subjects_accepts_what_scanners_write(tmp_path):
    skew = np.eye(4)
    rot = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    rot += np.array([[2e-3, -1e-3, 3e-3], [0.0, 1.5e-3, -2e-3], [1e-3, 0.0, -1e-3]])  # not quite orthonormal
    skew[:3, :3] = rot @ np.diag([1.5625, 1.5625, 10.0])
    skew[:3, 3] = [-120.5, 80.25, 33.0]
    cases = [
        ("FLOAT1", (33, 47, 5, 7), np.float32, None, 0, 4),
        ("LATEED", (31, 29, 3, 9), np.int16, None, 8, 3),
        ("SKEWED", (41, 37, 4, 6), np.int16, skew, 0, 2),
        ("ANISO1", (19, 23, 1, 1), np.uint16, np.diag([1.17, 1.17, 8.4, 1.0]), 0, 0),
    ]
    records = []
    for code, shape, dtype, affine, ed, es in cases:
        path = _nifti(tmp_path / code / f"{code}_sa.nii.gz", shape, dtype, affine)
        records.append({"subject": code, "image": str(path), "ed": ed, "es": es, "label": 0})
    before = copy.deepcopy(records)
    checked = check_subjects(records)
    assert records == before
    assert [(r["subject"], r["num_slices"], r["num_frames"]) for r in checked] == [
        ("FLOAT1", 5, 7),
        ("LATEED", 3, 9),
        ("SKEWED", 4, 6),
        ("ANISO1", 1, 1),
    ]
    assert checked[1]["ed"] == 8 and checked[1]["es"] == 3 and checked[0]["label"] == 0


# ------------------------------------------------------------------------------------ splits


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory):
    """The "paper" preset's subject counts (enough to fill split1 and split2) in small volumes: the split
    tests read the CSV and the image headers, not the pixels."""
    return write_mnms_cohort_from_counts(
        tmp_path_factory.mktemp("paper"),
        counts=MNMS_PRESETS["paper"]["counts"],
        size_range=(24, 28),
        slice_range=(2, 3),
        frame_range=(3, 4),
        seed=3,
    )


@pytest.fixture(scope="module")
def paper_records(paper_dir):
    return load_mnms_cohort(paper_dir)


def _cells(records):
    return Counter((r["vendor"], r["pathology"]) for r in records)


PAPER_TABLE = {
    "split1": (
        {("A", "HCM"): 25, ("C", "HCM"): 2, ("D", "HCM"): 10, ("A", "NOR"): 21, ("C", "NOR"): 2, ("D", "NOR"): 14},
        {("C", "HCM"): 3, ("C", "NOR"): 3},
    ),
    "split2": (
        {("A", "HCM"): 25, ("C", "HCM"): 5, ("D", "HCM"): 2, ("A", "NOR"): 21, ("C", "NOR"): 11, ("D", "NOR"): 2},
        {("D", "HCM"): 8, ("D", "NOR"): 8},
    ),
}


@pytest.mark.parametrize("split", ["split1", "split2"])
def test_paper_splits_match_the_table(paper_records, split):
    before = copy.deepcopy(paper_records)
    parts = select_split(paper_records, split=split, split_seed=0)
    assert paper_records == before  # pure
    train_table, test_table = PAPER_TABLE[split]
    assert dict(_cells(parts["train"])) == train_table
    assert dict(_cells(parts["test"])) == test_table
    assert parts["val"] == []
    train_codes = {r["subject"] for r in parts["train"]}
    test_codes = {r["subject"] for r in parts["test"]}
    assert len(train_codes) == len(parts["train"]) and len(test_codes) == len(parts["test"])
    assert not train_codes & test_codes
    for record in parts["train"] + parts["test"]:
        assert record["label"] == ("NOR", "HCM").index(record["pathology"])
        assert record["group"] == ("A", "C", "D").index(record["vendor"])
    again = select_split(paper_records, split=split, split_seed=0)
    assert again == parts
    other = select_split(paper_records, split=split, split_seed=1)
    assert {r["subject"] for r in other["train"]} != train_codes or {r["subject"] for r in other["test"]} != test_codes


def test_validation_count_rounds_half_up_and_keeps_both_sides():
    # round(n * f) with halves up, at least 1 and at most n - 1; none for f = 0 or a single patient
    cases = {(25, 0.2): 5, (21, 0.2): 4, (14, 0.2): 3, (10, 0.25): 3, (2, 0.2): 1, (2, 0.9): 1, (7, 0.5): 4}
    cases.update({(1, 0.5): 0, (9, 0.0): 0, (0, 0.3): 0})
    for (n, fraction), expected in cases.items():
        assert validation_count(n, fraction) == expected, (n, fraction)


def test_validation_comes_out_of_the_training_patients(paper_records):
    plain = select_split(paper_records, split="split1", split_seed=4)
    parts = select_split(paper_records, split="split1", split_seed=4, val_fraction=0.2)
    # split1 training cells HCM A25 C2 D10, NOR A21 C2 D14; validation_count(n, 0.2) by hand:
    # 25 -> 5, 2 -> round(0.4) = 0 -> at least 1, 10 -> 2, 21 -> round(4.2) = 4, 14 -> round(2.8) = 3
    expected_val = {
        ("A", "HCM"): 5,
        ("C", "HCM"): 1,
        ("D", "HCM"): 2,
        ("A", "NOR"): 4,
        ("C", "NOR"): 1,
        ("D", "NOR"): 3,
    }
    assert dict(_cells(parts["val"])) == expected_val
    train_table, test_table = PAPER_TABLE["split1"]
    assert dict(_cells(parts["train"])) == {cell: n - expected_val[cell] for cell, n in train_table.items()}
    codes = {part: {r["subject"] for r in parts[part]} for part in ("train", "val", "test")}
    assert not codes["train"] & codes["val"] and not codes["train"] & codes["test"] and not codes["val"] & codes["test"]
    # the test patients do not depend on val_fraction; train + val = the training patients without validation
    assert parts["test"] == plain["test"]
    assert codes["train"] | codes["val"] == {r["subject"] for r in plain["train"]}
    assert select_split(paper_records, split="split1", split_seed=4, val_fraction=0.2) == parts
    other = select_split(paper_records, split="split1", split_seed=5, val_fraction=0.2)
    assert {r["subject"] for r in other["val"]} != codes["val"]


def test_bad_split_seed_or_val_fraction_is_refused(paper_records):
    for bad in (1.0, -0.1, 2, "0.2", None):
        with pytest.raises(InputError, match=f"val_fraction={bad!r} must be a number in \\[0, 1\\)"):
            select_split(paper_records, split="split1", val_fraction=bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="split_seed=.* must be a non-negative integer"):
            select_split(paper_records, split="split1", split_seed=bad)


def test_unfillable_split_says_what_is_missing(paper_records):
    c_hcm = [r for r in paper_records if (r["vendor"], r["pathology"]) == ("C", "HCM")]
    a_nor = [r for r in paper_records if (r["vendor"], r["pathology"]) == ("A", "NOR")]
    drop = {r["subject"] for r in c_hcm[4:]} | {r["subject"] for r in a_nor[20:]}
    cohort = [r for r in paper_records if r["subject"] not in drop]
    with pytest.raises(MnMsDataError) as info:
        select_split(cohort, split="split1", split_seed=0)
    problems = info.value.problems
    assert "split1 needs 3 HCM test subjects from vendor C beyond the 2 for training; the cohort has 4" in problems
    assert "split1 needs 21 NOR training subjects from vendor A; the cohort has 20" in problems
    assert len(problems) == 2
    with pytest.raises(MnMsDataError, match="unknown split 'split9'"):
        select_split(cohort, split="split9")


def _demo_records(per_cell):
    records = []
    for (vendor, pathology), n in per_cell.items():
        for i in range(n):
            records.append(
                {
                    "subject": f"{vendor}{pathology}{i:02d}",
                    "vendor": vendor,
                    "pathology": pathology,
                    "label": ("NOR", "HCM").index(pathology),
                    "group": "ACD".index(vendor),
                }
            )
    return records


def test_demo_split_proportions_and_small_cells():
    per_cell = {("A", "HCM"): 10, ("A", "NOR"): 9, ("C", "HCM"): 2, ("C", "NOR"): 4, ("D", "HCM"): 5, ("D", "NOR"): 3}
    parts = select_split(_demo_records(per_cell), split="demo", split_seed=7)
    # test = max(1, round(n / 3)): 10->3, 9->3, 2->1, 4->1, 5->2, 3->1
    expected_test = {
        ("A", "HCM"): 3,
        ("A", "NOR"): 3,
        ("C", "HCM"): 1,
        ("C", "NOR"): 1,
        ("D", "HCM"): 2,
        ("D", "NOR"): 1,
    }
    assert dict(_cells(parts["test"])) == expected_test
    assert dict(_cells(parts["train"])) == {k: per_cell[k] - expected_test[k] for k in per_cell}
    per_cell[("C", "HCM")] = 1
    with pytest.raises(MnMsDataError, match="HCM subjects from vendor C .*the cohort has 1"):
        select_split(_demo_records(per_cell), split="demo", split_seed=7)


def test_prepare_split_writes_split_json(paper_dir, tmp_path):
    out = tmp_path / "run" / "split"
    parts = prepare_split(
        str(paper_dir), split="split2", split_seed=5, output_dir=str(out), val_fraction=0.1, record={"seed": 11}
    )
    payload = json.loads((out / "split.json").read_text())
    assert (payload["split"], payload["split_seed"], payload["seed"], payload["val_fraction"]) == ("split2", 5, 11, 0.1)
    assert Path(payload["csv_path"]).name == mnms.INFO_CSV_NAME
    for part in ("train", "val", "test"):
        assert payload["subjects"][part] == [r["subject"] for r in parts[part]]
        assert payload[part] == parts[part]
        for record in parts[part]:
            assert Path(record["image"]).is_file()
            shape = nib.load(record["image"]).shape
            assert (record["num_slices"], record["num_frames"]) == (shape[2], shape[3])
    # split2 training cells HCM A25 C5 D2, NOR A21 C11 D2; validation_count(n, 0.1):
    # 25 -> round(2.5) = 3, 5 -> round(0.5) = 1, 2 -> 1 (at least one), 21 -> 2, 11 -> 1, 2 -> 1: 9 of 66
    assert len(payload["subjects"]["train"]) == 57 and len(payload["subjects"]["val"]) == 9
    assert len(payload["subjects"]["test"]) == 16
    selected = select_split(load_mnms_cohort(paper_dir), "split2", 5, 0.1)
    for part in ("train", "val", "test"):
        assert [r["subject"] for r in selected[part]] == payload["subjects"][part]


def test_prepare_split_reports_broken_selected_image(tmp_path):
    data = write_mnms_cohort(tmp_path / "tiny", preset="tiny", seed=0)
    records = load_mnms_cohort(data)
    victim = records[0]
    path = Path(victim["image"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MnMsDataError) as info:
        prepare_split(data, split="demo", split_seed=0)
    assert len(info.value.problems) == 1
    assert victim["subject"] in info.value.problems[0] and path.name in info.value.problems[0]
    with gzip.open(path) as handle, pytest.raises(EOFError):
        handle.read()


def test_dataset_dir_may_be_open_dataset_or_its_parent(tmp_path):
    root = Path(write_mnms_cohort(tmp_path / "MnM" / "OpenDataset", preset="tiny", seed=0))
    assert root == tmp_path / "MnM" / "OpenDataset" and (root / "Training").is_dir()
    assert mnms.resolve_dataset_dir(tmp_path / "MnM") == root
    assert mnms.resolve_dataset_dir(root) == root
    direct = prepare_split(root, "demo", output_dir=tmp_path / "a")
    parent = prepare_split(tmp_path / "MnM", "demo", output_dir=tmp_path / "b")
    assert parent == direct
    assert json.loads((tmp_path / "b" / "split.json").read_text())["dataset_dir"] == str(root.resolve())
    assert load_mnms_cohort(tmp_path / "MnM") == load_mnms_cohort(root)


def test_dataset_dir_is_resolved_once_per_call(tmp_path, monkeypatch):
    """Not once per CSV row: the entry points resolve the folder and pass the result down."""
    write_mnms_cohort(tmp_path / "MnM" / "OpenDataset", preset="tiny", seed=0)
    calls = []
    resolve = mnms.resolve_dataset_dir
    for module in (mnms, cohort, splits):  # every module that binds the name
        monkeypatch.setattr(module, "resolve_dataset_dir", lambda folder: calls.append(folder) or resolve(folder))
    records = load_mnms_cohort(tmp_path / "MnM")
    assert len(records) > 1 and all(r["image"] for r in records)
    assert calls == [tmp_path / "MnM"]
    calls.clear()
    prepare_split(tmp_path / "MnM", "demo", output_dir=tmp_path / "out")
    assert calls == [tmp_path / "MnM"] and (tmp_path / "out" / "split.json").is_file()


def test_images_not_found_say_where_they_were_looked_for(tmp_path):
    root = Path(write_mnms_cohort(tmp_path / "MnM", preset="tiny", seed=0))
    elsewhere = tmp_path / "only_csv"
    elsewhere.mkdir()
    (elsewhere / mnms.INFO_CSV_NAME).write_bytes((root / mnms.INFO_CSV_NAME).read_bytes())
    with pytest.raises(MnMsDataError) as info:
        prepare_split(elsewhere, "demo")
    problems = info.value.problems
    code = problems[0].split(":")[0].split()[1]
    assert problems[0] == (
        f"subject {code}: image {code}_sa.nii.gz not found (looked in "
        f"{elsewhere}/{{Training/Labeled,Training/Unlabeled,Validation,Testing}}/{code}/)"
    )
    assert problems[-1].startswith(f"no image of any of these subjects is below {elsewhere}: dataset_dir must be")
    assert info.value.header.endswith(f"the images of {len(problems) - 1} M&Ms subject(s):")
    with pytest.raises(MnMsDataError, match="does not exist: point it at the M&Ms OpenDataset folder"):
        prepare_split(tmp_path / "nowhere", "demo")
