"""The Waterbirds reader: release layout, groups and splits, every bad-input case, the caching datasets,
and the generated Waterbirds-layout datasets (drawn birds, real digits)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnms_groupdistil.datasets import generate
from mnms_groupdistil.datasets.errors import DataError
from mnms_groupdistil.datasets.mnms.release import MnMsDataError
from mnms_groupdistil.datasets.waterbirds import synthetic
from mnms_groupdistil.datasets.waterbirds.inference import find_images
from mnms_groupdistil.datasets.waterbirds.loading import cached_dataset
from mnms_groupdistil.datasets.waterbirds.reader import (
    GROUPS,
    METADATA_COLUMNS,
    RELEASE_FOLDER,
    RELEASE_TRAIN_COUNTS,
    WaterbirdsDataError,
    find_metadata,
    group_counts,
    prepare_waterbirds,
)

HEADER_LINE = "img_id,img_filename,y,split,place,place_filename"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A generated tiny release: ``<parent>/waterbird_complete95_forest2water2``; returns the parent."""
    parent = tmp_path_factory.mktemp("wb")
    synthetic.write_waterbirds(parent, preset="tiny", seed=0)
    return parent


@pytest.fixture()
def copy(tiny, tmp_path) -> Path:
    """A writable copy of the tiny release folder."""
    target = tmp_path / RELEASE_FOLDER
    shutil.copytree(tiny / RELEASE_FOLDER, target)
    return target


def read_rows(release: Path) -> list[dict[str, str]]:
    with open(release / "metadata.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(release: Path, rows: list[dict[str, str]], columns=METADATA_COLUMNS) -> None:
    with open(release / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def problems_of(dataset_dir: Path) -> list[str]:
    with pytest.raises(WaterbirdsDataError) as info:
        prepare_waterbirds(dataset_dir)
    return info.value.problems


# ------------------------------------------------------------------------------ the release


def test_parent_or_release_folder_and_official_splits(tiny, tmp_path):
    release = tiny / RELEASE_FOLDER
    assert find_metadata(tiny) == find_metadata(release) == (release / "metadata.csv").resolve()
    rows = read_rows(release)
    parts = prepare_waterbirds(tiny, output_dir=tmp_path / "out")
    # hand derivation from the CSV: group = 2 * y + place, split 0/1/2 = train/val/test
    for split, name in ((0, "train"), (1, "val"), (2, "test")):
        expected = sorted(
            (r["img_filename"], 2 * int(r["y"]) + int(r["place"])) for r in rows if int(r["split"]) == split
        )
        assert sorted((r["subject"], r["group"]) for r in parts[name]) == expected
    for record in parts["train"]:
        assert Path(record["image"]).is_file() and record["label"] == record["group"] // 2
    assert group_counts(parts["train"]) == [14, 2, 2, 4]
    written = json.loads((tmp_path / "out" / "split.json").read_text())
    assert written["groups"] == list(GROUPS) == ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    assert written["group_counts"]["train"] == dict(zip(GROUPS, [14, 2, 2, 4]))
    names = [set(written["images"][p]) for p in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_errors_share_one_base_class():
    assert issubclass(WaterbirdsDataError, DataError) and issubclass(MnMsDataError, DataError)
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------ bad input


def test_missing_metadata(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WaterbirdsDataError) as info:
        prepare_waterbirds(tmp_path / "empty")
    message = str(info.value)
    assert "metadata.csv" in message and str(tmp_path / "empty") in message and RELEASE_FOLDER in message


def test_missing_columns(copy):
    rows = read_rows(copy)
    write_rows(copy, rows, columns=("img_id", "img_filename", "y", "place_filename"))
    problems = problems_of(copy)
    assert len(problems) == 2
    assert "required column 'split' is missing" in problems[0] and "required column 'place'" in problems[1]
    assert str(copy / "metadata.csv") in problems[0]


def test_empty_metadata(copy):
    (copy / "metadata.csv").write_text("")
    assert "empty" in problems_of(copy)[0]


def test_bad_values_are_all_reported_with_their_line(copy):
    rows = read_rows(copy)
    rows[0]["y"] = "2"
    rows[1]["place"] = "water"
    rows[2]["split"] = "3"
    rows[3]["img_filename"] = rows[4]["img_filename"]  # duplicate file name
    write_rows(copy, rows)
    problems = problems_of(copy)
    text = "\n".join(problems)
    assert f"line 2 (img_id {rows[0]['img_id']}, {rows[0]['img_filename']}): y must be 0 (landbird) or 1" in text
    assert "got '2'" in text
    assert f"line 3 (img_id {rows[1]['img_id']}" in text and "place must be 0 (land) or 1 (water), got 'water'" in text
    assert f"line 4 (img_id {rows[2]['img_id']}" in text
    assert "split must be 0 (train), 1 (val) or 2 (test), got '3'" in text
    assert "line 6" in text and "duplicate img_filename (first on line 5)" in text
    assert len(problems) == 4


def test_missing_and_undecodable_images(copy):
    rows = read_rows(copy)
    (copy / rows[0]["img_filename"]).unlink()
    truncated = copy / rows[1]["img_filename"]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (copy / rows[2]["img_filename"]).write_text("not an image")
    problems = problems_of(copy)
    assert len(problems) == 3
    assert f"line 2 (img_id {rows[0]['img_id']})" in problems[0] and rows[0]["img_filename"] in problems[0]
    assert "does not exist" in problems[0]
    assert f"line 3 (img_id {rows[1]['img_id']})" in problems[1] and "cannot be decoded" in problems[1]
    assert f"line 4 (img_id {rows[2]['img_id']})" in problems[2] and "cannot be decoded" in problems[2]


def test_group_without_training_image(copy):
    rows = [r for r in read_rows(copy) if not (r["split"] == "0" and r["y"] == "1" and r["place"] == "0")]
    write_rows(copy, rows)
    problems = problems_of(copy)
    assert len(problems) == 1 and "group waterbird_land (y=1, place=0) has no training image" in problems[0]


def test_all_kinds_of_problem_in_one_error(copy):
    rows = read_rows(copy)
    rows[0]["y"] = "-1"
    (copy / rows[1]["img_filename"]).unlink()
    rows = [r for r in rows if not (r["split"] == "0" and r["y"] == "0" and r["place"] == "1")]
    write_rows(copy, rows)
    text = "\n".join(problems_of(copy))
    assert "y must be" in text and "does not exist" in text and "landbird_water (y=0, place=1) has no training" in text


# ------------------------------------------------------------------------------ caching


def _solid(path: Path, colour, size=(20, 12)):
    Image.new("RGB", size, colour).save(path)


def test_cached_dataset_in_memory_and_on_disk_give_the_same_items(tmp_path):
    from monai.data import CacheDataset, PersistentDataset
    from monai.transforms import Compose, EnsureTyped, LoadImaged, RandFlipd

    for i in range(3):
        _solid(tmp_path / f"{i}.png", (10 * i, 20, 30))
    data = [{"image": str(tmp_path / f"{i}.png"), "group": i} for i in range(3)]
    transform = Compose(
        [LoadImaged("image", image_only=True), EnsureTyped("image", track_meta=False), RandFlipd("image", prob=0.0)]
    )
    memory = cached_dataset(data, transform)
    disk = cached_dataset(data, transform, cache_dir=tmp_path / "cache")
    assert isinstance(memory, CacheDataset) and isinstance(disk, PersistentDataset)
    for a, b in zip(memory, disk):
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) and a["group"] == b["group"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="cache_rate"):
        cached_dataset(data, transform, cache_rate=1.5)


def test_find_images(tmp_path):
    (tmp_path / "a").mkdir()
    _solid(tmp_path / "a" / "x.jpg", (1, 2, 3))
    _solid(tmp_path / "y.png", (1, 2, 3))
    (tmp_path / "notes.txt").write_text("ignored")
    records = find_images(tmp_path)
    assert [r["subject"] for r in records] == ["a/x.jpg", "y.png"]
    (tmp_path / "z.jpg").write_text("broken")
    with pytest.raises(ValueError, match="z.jpg: cannot be decoded"):
        find_images(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        find_images(tmp_path / "nowhere")


# ------------------------------------------------------------------------- generated datasets


def test_generated_waterbirds_has_the_release_layout_and_imbalance(tmp_path):
    release = synthetic.write_waterbirds(tmp_path, preset="demo", seed=1)
    assert release == tmp_path / RELEASE_FOLDER
    assert (release / "metadata.csv").read_text().splitlines()[0] == HEADER_LINE
    rows = read_rows(release)
    assert [int(r["img_id"]) for r in rows] == list(range(1, len(rows) + 1))
    counts = Counter((int(r["split"]), 2 * int(r["y"]) + int(r["place"])) for r in rows)
    train = [counts[(0, g)] for g in range(4)]
    assert train == [round(c * 0.3) for c in RELEASE_TRAIN_COUNTS] == [1049, 55, 17, 317]
    # the background agrees with the label in ~95% of training images of each class, as in the release
    assert train[0] / (train[0] + train[1]) == pytest.approx(3498 / 3682, abs=0.01)
    assert train[3] / (train[2] + train[3]) == pytest.approx(1057 / 1113, abs=0.02)
    assert [counts[(1, g)] for g in range(4)] == [20] * 4 and [counts[(2, g)] for g in range(4)] == [40] * 4
    sizes = set()
    for row in rows:
        folder, name = row["img_filename"].split("/")
        assert folder.split(".")[0].isdigit() and name.endswith(".jpg")
        assert row["place_filename"].startswith("/")
        with Image.open(release / row["img_filename"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.add(image.size)
    assert len(sizes) > 50, "image sizes do not vary"
    waterbird_folders = {r["img_filename"].split("/")[0] for r in rows if r["y"] == "1"}
    landbird_folders = {r["img_filename"].split("/")[0] for r in rows if r["y"] == "0"}
    assert "001.Black_footed_Albatross" in waterbird_folders and not waterbird_folders & landbird_folders


def test_generated_background_is_the_spurious_feature(tmp_path):
    """Mean blue minus green separates water from land; it is independent of the label in test."""
    release = synthetic.write_waterbirds(tmp_path, preset="demo", seed=2)
    rows = read_rows(release)

    def blueness(row) -> float:
        with Image.open(release / row["img_filename"]) as image:
            pixels = np.asarray(image, dtype=np.float64)
        return float(pixels[..., 2].mean() - pixels[..., 1].mean())

    test = [r for r in rows if r["split"] == "2"]
    by_place = {p: [blueness(r) for r in test if r["place"] == p] for p in ("0", "1")}
    assert max(by_place["0"]) < min(by_place["1"])
    assert Counter((r["y"], r["place"]) for r in test) == Counter({(y, p): 40 for y in "01" for p in "01"})


@pytest.mark.parametrize("label", [0, 1])
def test_bird_scale_grows_the_bird_by_its_square(label):
    """The drawn area grows with the square of ``scale`` (same draws); a bird too big for its canvas is centred."""

    def drawn_pixels(scale: float, side: int = 400) -> int:
        canvas = Image.new("RGB", (side, side), (0, 0, 255))
        synthetic._draw_bird(canvas, label, np.random.default_rng(3), scale)
        return int((np.asarray(canvas) != (0, 0, 255)).any(axis=-1).sum())

    assert drawn_pixels(1.5) / drawn_pixels(1.0) == pytest.approx(1.5**2, rel=0.1)
    small = Image.new("RGB", (24, 30), (0, 0, 255))
    synthetic._draw_bird(small, label, np.random.default_rng(0), 3.0)  # larger than the image: no error
    assert (np.asarray(small) != (0, 0, 255)).any(axis=-1).mean() > 0.25  # drawn, and much of the canvas


def test_generated_digits_are_the_real_scikit_learn_digits(tmp_path):
    from sklearn.datasets import load_digits

    release = synthetic.write_digits_waterbirds(tmp_path, seed=0, val_per_group=5, test_per_group=10)
    rows = read_rows(release)
    assert (release / "metadata.csv").read_text().splitlines()[0] == HEADER_LINE
    digits = load_digits()
    for row in rows:
        digit = int(row["img_filename"].split("/")[0].split(".")[0])
        assert int(row["y"]) == int(digit >= 5)
    counts = Counter((int(r["split"]), 2 * int(r["y"]) + int(r["place"])) for r in rows)
    assert [counts[(1, g)] for g in range(4)] == [5] * 4 and [counts[(2, g)] for g in range(4)] == [10] * 4
    train = [counts[(0, g)] for g in range(4)]
    # all remaining digits of class 0 (0-4) go to training with the release's 95% agreement
    class0 = int((digits.target < 5).sum()) - 2 * (5 + 10)
    assert train[0] + train[1] in (class0, class0 - 1, class0 + 1)
    assert train[1] / (train[0] + train[1]) == pytest.approx(184 / 3682, abs=0.005)
    assert train[2] / (train[2] + train[3]) == pytest.approx(56 / 1113, abs=0.01)
    assert train[0] / train[3] == pytest.approx(3498 / 1057, rel=0.02)
    assert len(rows) <= len(digits.target)
    parts = prepare_waterbirds(tmp_path)
    assert group_counts(parts["train"]) == train


def test_plain_centred_digits_backgrounds_are_the_place_colour_only(tmp_path):
    kwargs = {"seed": 1, "val_per_group": 2, "test_per_group": 2, "background": "plain", "centre": True}
    release = synthetic.write_digits_waterbirds(tmp_path, **kwargs)
    spreads = []
    for row in read_rows(release):
        image = np.asarray(Image.open(release / row["img_filename"]), dtype=np.float32)
        # centred at 90% of the side: the outermost ring of pixels is background only
        ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
        colour = ring.mean(axis=0)
        # land (70, 105, 45) and water (45, 95, 170), each channel shifted by at most 15: blue - green is
        # -60 +- 30 on land and 75 +- 30 on water
        assert (colour[2] - colour[1] > 0) == (row["place"] == "1"), (row, colour)
        spreads.append(ring.std(axis=0).max())
    # no trunks or waves: the ring varies by the pixel noise (std 8) and JPEG's colour bleeding only
    # (measured: median 7.9 over these images; the drawn scenes give 23)
    assert np.median(spreads) < 12
    with pytest.raises(ValueError, match="background must be one of scene, plain, got 'grass'"):
        synthetic.write_digits_waterbirds(tmp_path / "x", background="grass")


def test_cli_writes_both_datasets_and_keeps_mnms(tmp_path):
    assert generate.main(["waterbirds", str(tmp_path / "w"), "--preset", "tiny"]) == 0
    assert (tmp_path / "w" / RELEASE_FOLDER / "metadata.csv").is_file()
    digits = ["digits", str(tmp_path / "d"), "--val_per_group", "3", "--test_per_group", "3", "--background", "plain"]
    assert generate.main(digits) == 0
    assert (tmp_path / "d" / RELEASE_FOLDER / "metadata.csv").is_file()
    with pytest.raises(SystemExit):
        generate.main(["waterbirds", str(tmp_path / "x"), "--preset", "huge"])
    assert "mnms" in generate.build_parser().format_help()
