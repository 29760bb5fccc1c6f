"""Tests of the generated M&Ms-like cohort: layout, CSV format, image content, presets."""

from __future__ import annotations

import csv
import re
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mnms_groupdistil.datasets import generate
from mnms_groupdistil.datasets.mnms import synthetic
from mnms_groupdistil.datasets.mnms.cohort import load_mnms_cohort
from mnms_groupdistil.datasets.mnms.info_csv import read_info_csv
from mnms_groupdistil.datasets.mnms.release import INFO_CSV_NAME, SUBFOLDERS
from mnms_groupdistil.datasets.mnms.splits import prepare_split
from mnms_groupdistil.datasets.mnms.synthetic import MNMS_PRESETS, synthesize_cine, write_mnms_cohort

REAL_HEADER_LINE = ",External code,Pathology,VendorName,Vendor,Centre,ED,ES,Age,Sex,Height,Weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "OpenDataset"
    start = time.perf_counter()
    root = write_mnms_cohort(out, preset="tiny", seed=0)
    return root, time.perf_counter() - start


def _images(root: Path):
    return sorted(root.glob("*/*/*_sa.nii.gz")) + sorted(root.glob("*/*/*/*_sa.nii.gz"))


def test_tiny_is_fast_and_in_the_real_layout(tiny):
    root, seconds = tiny
    assert seconds < 2.0
    rows = read_info_csv(root / INFO_CSV_NAME)
    spec = MNMS_PRESETS["tiny"]
    assert Counter((r["vendor"], r["pathology"]) for r in rows) == Counter(spec["counts"])
    folders_used = set()
    gt_count = 0
    for row in rows:
        code = row["subject"]
        assert re.fullmatch(r"[A-Z][0-9][A-Z][0-9][A-Z][0-9]", code)
        hits = [sub for sub in SUBFOLDERS if (root / sub / code / f"{code}_sa.nii.gz").is_file()]
        assert len(hits) == 1, code
        folders_used.add(hits[0])
        gt = root / hits[0] / code / f"{code}_sa_gt.nii.gz"
        gt_count += gt.is_file()
        if hits[0] == "Training/Unlabeled":
            assert not gt.is_file()
    assert folders_used == set(SUBFOLDERS)
    assert 0 < gt_count < len(rows)
    assert len(_images(root)) == len(rows)


def test_csv_has_the_real_header_and_values(tiny):
    root, _ = tiny
    text = (root / INFO_CSV_NAME).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == REAL_HEADER_LINE
    table = list(csv.reader(lines[1:]))
    assert [row[0] for row in table] == [str(i) for i in range(len(table))]
    centres = {"A": {"1", "6"}, "B": {"2", "3"}, "C": {"4"}, "D": {"5"}}
    names = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
    for row in table:
        assert len(row) == 12
        assert row[3] == names[row[4]] and row[5] in centres[row[4]]
        assert row[9] in {"M", "F"} and row[8].isdigit()
    assert any(row[10] == "" and row[11] == "" for row in table)
    assert any(row[10] != "" for row in table)


def test_images_look_like_scanner_output(tiny):
    root, _ = tiny
    spec = MNMS_PRESETS["tiny"]
    rows = {r["subject"]: r for r in read_info_csv(root / INFO_CSV_NAME)}
    dtypes, skewed, late_ed = Counter(), 0, 0
    for path in _images(root):
        row = rows[path.parent.name]
        img = nib.load(str(path))
        nx, ny, nz, nt = img.shape
        assert spec["size_range"][0] <= min(nx, ny) and max(nx, ny) <= spec["size_range"][1]
        assert spec["slice_range"][0] <= nz <= spec["slice_range"][1]
        assert spec["frame_range"][0] <= nt <= spec["frame_range"][1]
        assert 0 <= row["ed"] < nt and 0 <= row["es"] < nt and row["ed"] != row["es"]
        late_ed += row["ed"] > row["es"]
        dtypes[str(img.get_data_dtype())] += 1
        zooms = img.header.get_zooms()
        assert 1.2 <= zooms[0] <= 1.62 and 1.2 <= zooms[1] <= 1.62 and 7.9 <= zooms[2] <= 10.1
        cosines = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
        off = np.abs(cosines.T @ cosines - np.eye(3)).max()
        assert off < 0.05
        skewed += off > 1e-4
        assert not np.allclose(np.abs(cosines), np.eye(3), atol=0.05)  # oblique
    assert dtypes["int16"] > dtypes["float32"] >= 1
    assert skewed >= 1 and late_ed >= 1


def test_tiny_round_trips_through_prepare_split_demo(tiny, tmp_path):
    root, _ = tiny
    parts = prepare_split(root, split="demo", split_seed=0, output_dir=tmp_path)
    # 2 subjects per A/C/D x NOR/HCM cell -> 1 train + 1 test each; vendor B and DCM/ARV dropped
    for part in ("train", "test"):
        assert Counter((r["vendor"], r["pathology"]) for r in parts[part]) == Counter(
            {(v, p): 1 for v in "ACD" for p in ("NOR", "HCM")}
        )
        for record in parts[part]:
            assert record["num_frames"] >= 3 and record["num_slices"] >= 2
    assert (tmp_path / "split.json").is_file()
    assert len(load_mnms_cohort(root)) == 12


def test_wall_thickness_cavity_and_apex():
    rng = np.random.default_rng(11)
    walls = {"NOR": [], "HCM": []}
    for hypertrophic, name in ((False, "NOR"), (True, "HCM")):
        for _ in range(6):
            shape, ed, es = (64, 70, 5, 9), 8, 3  # ED after ES
            image, labels = synthesize_cine(shape, ed, es, hypertrophic, "A", rng)
            assert image.shape == shape and image.dtype == np.int16 and labels.dtype == np.uint8
            assert set(np.unique(labels)) == {0, 1, 2, 3}
            assert not labels[..., [t for t in range(9) if t not in (ed, es)]].any()
            lv_ed, lv_es = (labels[:, :, 0, ed] == 1).sum(), (labels[:, :, 0, es] == 1).sum()
            assert lv_ed > 1.3 * lv_es  # contraction
            assert (labels[:, :, 0, ed] == 1).sum() > (labels[:, :, -1, ed] == 1).sum()  # smaller toward apex
            frame_walls = []
            for t in (ed, es):
                lv = (labels[:, :, 1, t] == 1).sum()
                heart = lv + (labels[:, :, 1, t] == 2).sum()
                frame_walls.append(np.sqrt(heart / np.pi) - np.sqrt(lv / np.pi))
                # bright blood pool, dark myocardium
                assert (
                    image[..., 1, t][labels[:, :, 1, t] == 1].mean()
                    > 2.5 * image[..., 1, t][labels[:, :, 1, t] == 2].mean()
                )
            assert frame_walls[1] > frame_walls[0]  # the wall thickens in systole
            walls[name].append(frame_walls)
    hcm, nor = np.array(walls["HCM"]), np.array(walls["NOR"])
    # every HCM wall is clearly thicker than every NOR wall, at ED and at ES
    assert (hcm.min(axis=0) > 1.5 * nor.max(axis=0)).all(), (hcm, nor)


def test_vendor_intensity_shift():
    means = {}
    for vendor in "ACD":
        image, _ = synthesize_cine((40, 40, 3, 5), 0, 2, False, vendor, np.random.default_rng(0), np.float32)
        means[vendor] = float(image.mean())
    assert means["C"] < means["A"] < means["D"]


def test_seed_determinism_and_cli(tmp_path):
    counts = {("A", "NOR"): 1, ("C", "HCM"): 1, ("B", "DCM"): 1}
    kwargs = dict(size_range=(16, 20), slice_range=(1, 2), frame_range=(3, 4))
    a = synthetic.write_mnms_cohort_from_counts(tmp_path / "a", counts, seed=4, **kwargs)
    b = synthetic.write_mnms_cohort_from_counts(tmp_path / "b", counts, seed=4, **kwargs)
    c = synthetic.write_mnms_cohort_from_counts(tmp_path / "c", counts, seed=5, **kwargs)
    text = lambda root: (root / INFO_CSV_NAME).read_text()  # noqa: E731
    assert text(a) == text(b) != text(c)
    for path_a in _images(a):
        path_b = b / path_a.relative_to(a)
        assert np.array_equal(np.asarray(nib.load(str(path_a)).dataobj), np.asarray(nib.load(str(path_b)).dataobj))
    with pytest.raises(ValueError, match="unknown preset"):
        write_mnms_cohort(tmp_path / "x", preset="huge")
    assert generate.main(["mnms", str(tmp_path / "cli"), "--preset", "tiny", "--seed", "2"]) == 0
    assert (tmp_path / "cli" / INFO_CSV_NAME).read_text().splitlines()[0] == REAL_HEADER_LINE
