"""A generated dataset in exactly the layout of the Waterbirds release.

``python -m mnms_groupdistil.datasets.generate waterbirds OUT_DIR [--preset tiny|demo] [--seed 0]`` and
``python -m mnms_groupdistil.datasets.generate digits OUT_DIR [--seed 0]``
(:mod:`mnms_groupdistil.datasets.generate`) write ``OUT_DIR/waterbird_complete95_forest2water2/metadata.csv``
and class folders of JPEGs: drawn birds on drawn backgrounds (:func:`write_waterbirds`), or scikit-learn's real
handwritten digits on drawn backgrounds (:func:`write_digits_waterbirds`).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .reader import METADATA_COLUMNS, METADATA_NAME, RELEASE_FOLDER, RELEASE_TRAIN_COUNTS

__all__ = [
    "WATERBIRDS_PRESETS",
    "scaled_train_counts",
    "write_waterbirds",
    "write_digits_waterbirds",
    "DIGITS_BACKGROUNDS",
]

logger = logging.getLogger(__name__)

#: CUB-200 species folders of the release, per class (0 landbird, 1 waterbird), used for generated birds.
_SPECIES: dict[int, tuple[str, ...]] = {
    0: ("026.Bronzed_Cowbird", "029.American_Crow", "094.White_breasted_Nuthatch", "118.House_Sparrow"),
    1: ("001.Black_footed_Albatross", "045.Northern_Fulmar", "059.California_Gull", "086.Pacific_Loon"),
}

#: Places365 scene folders of the release's backgrounds, per place (0 land, 1 water).
_PLACE_SCENES: dict[int, tuple[str, ...]] = {
    0: ("b/bamboo_forest", "f/forest/broadleaf"),
    1: ("o/ocean", "l/lake/natural"),
}

#: Presets of :func:`write_waterbirds`: training counts are the release's
#: (:data:`~mnms_groupdistil.datasets.waterbirds.reader.RELEASE_TRAIN_COUNTS`) times ``train_scale`` (at least
#: ``min_train``); val and test hold ``val_per_group`` / ``test_per_group`` images of every group;
#: image widths and heights are drawn from ``size_range`` (inclusive); ``bird_scale`` multiplies the
#: birds' size (the demo's birds fill most of the image, as the release's photographs often do: at
#: scale 1 its models learned the background only). The demo's ``train_scale`` 0.3 gives the rarest group
#: (waterbirds on land) 17 training images: with 0.1 its 6 images were not enough for any model.
WATERBIRDS_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "train_scale": 0.004,
        "min_train": 2,
        "val_per_group": 2,
        "test_per_group": 2,
        "size_range": (24, 40),
        "bird_scale": 1.0,
    },
    "demo": {
        "train_scale": 0.3,
        "min_train": 4,
        "val_per_group": 20,
        "test_per_group": 40,
        "size_range": (48, 96),
        "bird_scale": 1.6,
    },
}


def scaled_train_counts(scale: float, minimum: int = 1) -> list[int]:
    """The release's training images per group times ``scale``, rounded, at least ``minimum`` each.

    Raises:
        ValueError: If ``scale`` is not positive or ``minimum`` is negative.
    """
    if not scale > 0 or minimum < 0:
        raise ValueError(f"scale must be > 0 and minimum >= 0, got scale={scale!r}, minimum={minimum!r}")
    return [max(int(minimum), int(round(c * scale))) for c in RELEASE_TRAIN_COUNTS]


#: Colours of the plain digits backgrounds: land (green-brown), water (blue).
_PLAIN_COLOURS = ((70, 105, 45), (45, 95, 170))

#: Backgrounds of :func:`write_digits_waterbirds`.
DIGITS_BACKGROUNDS = ("scene", "plain")


def _background(place: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A land (green-brown, vertical tree trunks) or water (blue, horizontal waves) scene, (H, W, 3) in [0, 255]."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    if place == 0:
        base = np.array([70, 105, 45], dtype=np.float32) + rng.uniform(-15, 15, size=3)
        image = np.broadcast_to(base, (height, width, 3)).copy()
        for _ in range(int(rng.integers(2, 6))):  # trunks
            centre, half = rng.uniform(0, width), rng.uniform(0.02, 0.06) * width + 0.5
            trunk = np.abs(x - centre) < half  # (1, W)
            image[:, trunk[0]] = np.array([75, 50, 30], dtype=np.float32) + rng.uniform(-10, 10, size=3)
        image += (
            25.0
            * np.sin(x / max(width, 1) * rng.uniform(8, 16) + rng.uniform(0, 6))[..., None]
            * np.cos(y / max(height, 1) * rng.uniform(6, 12))[..., None]
        )
    else:
        base = np.array([45, 95, 170], dtype=np.float32) + rng.uniform(-15, 15, size=3)
        image = np.broadcast_to(base, (height, width, 3)).copy()
        waves = np.sin(y / max(height, 1) * rng.uniform(20, 35) + 0.6 * np.sin(x / max(width, 1) * rng.uniform(4, 9)))
        image += 30.0 * (waves > 0.6)[..., None] * np.array([1.0, 1.0, 0.8], dtype=np.float32)
    image += rng.normal(0.0, 8.0, size=image.shape)
    return np.clip(image, 0, 255)


def _plain_background(place: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A land (green-brown) or water (blue) colour with pixel noise and no texture, (size, size, 3) in [0, 255]."""
    base = np.array(_PLAIN_COLOURS[place], dtype=np.float32) + rng.uniform(-15, 15, size=3)
    image = np.broadcast_to(base, (size, size, 3)) + rng.normal(0.0, 8.0, size=(size, size, 3))
    return np.clip(image, 0, 255)


def _position(rng: np.random.Generator, low: float, high: float) -> float:
    """A coordinate drawn uniformly from ``[low, high]``; the middle of the two when the bird is too big for a range."""
    return float(rng.uniform(low, high)) if high > low else (low + high) / 2


def _draw_bird(image: Any, label: int, rng: np.random.Generator, scale: float = 1.0) -> None:
    """Draw a bird on a PIL image: upright round landbird or long, low waterbird with a long neck.

    ``scale`` multiplies the bird's size (1: the landbird is about 0.6 and the waterbird about 0.5
    of the image's shorter side).
    """
    from PIL import ImageDraw

    width, height = image.size
    s = min(width, height) * rng.uniform(0.8, 1.0) * scale
    colour = tuple(int(c) for c in rng.choice([[235, 235, 225], [40, 40, 45], [190, 120, 60], [150, 150, 160]]))
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in colour)
    beak = (230, 170, 40)
    facing = 1 if rng.random() < 0.5 else -1
    draw = ImageDraw.Draw(image)
    if label == 0:  # landbird: upright oval body, round head on top, short beak, legs
        bw, bh = 0.26 * s, 0.36 * s
        cx = _position(rng, bw, width - bw)
        cy = _position(rng, 0.3 * s + bh / 2, height - bh / 2 - 0.08 * s)
        draw.ellipse([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=colour)
        hr, hx, hy = 0.1 * s, cx + facing * 0.06 * s, cy - bh / 2 - 0.05 * s
        draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=colour)
        tip = hx + facing * (hr + 0.07 * s)
        base = hx + facing * hr * 0.8
        draw.polygon([(base, hy - 0.03 * s), (tip, hy), (base, hy + 0.03 * s)], fill=beak)
        for dx in (-0.05, 0.05):
            leg = [(cx + dx * s, cy + bh / 2), (cx + dx * s, cy + bh / 2 + 0.08 * s)]
            draw.line(leg, fill=(60, 40, 20), width=max(1, int(0.02 * s)))
    else:  # waterbird: long low body, long neck, small head, long beak
        bw, bh = 0.55 * s, 0.18 * s
        cx = _position(rng, bw / 2, width - bw / 2)
        cy = _position(rng, 0.4 * s, height - bh / 2)
        draw.ellipse([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=colour)
        nx, ny = cx + facing * 0.2 * s, cy - 0.3 * s
        draw.line([(cx + facing * 0.15 * s, cy), (nx, ny)], fill=colour, width=max(1, int(0.07 * s)))
        hr = 0.065 * s
        draw.ellipse([nx - hr, ny - hr, nx + hr, ny + hr], fill=colour)
        tip = nx + facing * (hr + 0.14 * s)
        base = nx + facing * hr * 0.7
        draw.polygon([(base, ny - 0.02 * s), (tip, ny + 0.01 * s), (base, ny + 0.025 * s)], fill=beak)


def _release_items(train_counts: Sequence[int], val_per_group: int, test_per_group: int) -> list[tuple[int, int, int]]:
    """``(label, place, split)`` of every image: the training counts per group, balanced val and test."""
    items = []
    for split, counts in ((0, train_counts), (1, [val_per_group] * 4), (2, [test_per_group] * 4)):
        for group, n in enumerate(counts):
            items += [(group // 2, group % 2, split)] * int(n)
    return items


def _write_release(
    out_dir: str | Path,
    items: Sequence[Mapping[str, Any]],
    rng: np.random.Generator,
) -> Path:
    """Write ``items`` as a Waterbirds release: ``OUT_DIR/waterbird_complete95_forest2water2/``.

    Each item has ``image`` (PIL image), ``folder`` (class folder), ``stem`` (file name prefix),
    ``label``, ``place`` and ``split``. Rows are ordered by folder as in the release; ``img_id``
    counts from 1 in that order.
    """
    root = Path(out_dir).expanduser() / RELEASE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    per_folder: Counter = Counter()
    ordered = sorted(range(len(items)), key=lambda i: (items[i]["folder"], i))
    for img_id, index in enumerate(ordered, start=1):
        item = items[index]
        per_folder[item["folder"]] += 1
        filename = f"{item['folder']}/{item['stem']}_{per_folder[item['folder']]:04d}_{img_id}.jpg"
        (root / item["folder"]).mkdir(exist_ok=True)
        item["image"].save(root / filename, format="JPEG", quality=90)
        scenes = _PLACE_SCENES[item["place"]]
        scene = scenes[int(rng.integers(len(scenes)))]
        place_filename = f"/{scene}/{int(rng.integers(1, 5000)):08d}.jpg"
        rows.append([img_id, filename, item["label"], item["split"], item["place"], place_filename])
    with open(root / METADATA_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)
    logger.info("wrote %d images and %s to %s", len(rows), METADATA_NAME, root)
    return root


def write_waterbirds(
    out_dir: str | Path,
    preset: str = "demo",
    seed: int = 0,
    train_counts: Sequence[int] | None = None,
) -> Path:
    """Write a Waterbirds-like dataset in the release's layout: drawn birds on drawn scenes.

    The core feature is the bird's shape (landbird: upright round body; waterbird: long low body
    and long neck), in colours shared by both classes. The spurious feature is the background
    (land: green-brown with tree trunks; water: blue with waves): in training it agrees with the
    label as often as in the release (95%, the release's group counts scaled down); in val and
    test every group has the same number of images. JPEG widths and heights vary.

    Args:
        out_dir: Folder to write ``waterbird_complete95_forest2water2/`` into (as the release's
            tarball extracts).
        preset: A key of :data:`WATERBIRDS_PRESETS`.
        seed: Seed of everything that is drawn.
        train_counts: Training images per group, overriding the preset's scaled release counts.

    Returns:
        The release folder (``out_dir/waterbird_complete95_forest2water2``).

    Raises:
        ValueError: For an unknown preset or training counts that are not 4 non-negative ints.
    """
    from PIL import Image

    if preset not in WATERBIRDS_PRESETS:
        raise ValueError(f"unknown preset '{preset}' (expected one of {', '.join(WATERBIRDS_PRESETS)})")
    spec = WATERBIRDS_PRESETS[preset]
    counts = scaled_train_counts(spec["train_scale"], spec["min_train"]) if train_counts is None else list(train_counts)
    if len(counts) != 4 or any(int(c) < 0 for c in counts):
        raise ValueError(f"train_counts must be 4 non-negative counts (one per group), got {train_counts!r}")
    rng = np.random.default_rng(seed)
    low, high = spec["size_range"]
    items = []
    for label, place, split in _release_items(counts, spec["val_per_group"], spec["test_per_group"]):
        width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
        image = Image.fromarray(_background(place, width, height, rng).astype(np.uint8), mode="RGB")
        _draw_bird(image, label, rng, spec["bird_scale"])
        folder = _SPECIES[label][int(rng.integers(len(_SPECIES[label])))]
        stem = folder.split(".", 1)[1].title()
        items.append({"image": image, "folder": folder, "stem": stem, "label": label, "place": place, "split": split})
    return _write_release(out_dir, items, rng)


def write_digits_waterbirds(
    out_dir: str | Path,
    seed: int = 0,
    val_per_group: int = 25,
    test_per_group: int = 50,
    size_range: tuple[int, int] = (28, 36),
    background: str = "scene",
    centre: bool = False,
) -> Path:
    """Write a Waterbirds-layout dataset from scikit-learn's real handwritten digits.

    Every image of ``sklearn.datasets.load_digits`` (1797 real 8x8 scans of handwritten digits) is
    used at most once. The label is ``y = 1`` for digits 5-9 and ``y = 0`` for 0-4 (the core
    feature: the digit's strokes); the "place" is the background, the spurious feature:
    ``background="scene"`` draws land (green-brown with tree trunks) or water (blue with waves)
    scenes whose texture crosses the strokes; ``"plain"`` only the land or water colour with
    pixel noise, which leaves the strokes clean and the core feature easier to learn. The digit
    covers 70-90% of the image's side at a random place, or with ``centre=True`` 90% in the middle
    (aligned strokes: easier again). Val and test hold ``val_per_group`` and
    ``test_per_group`` images of every group; training takes the release's group counts scaled
    to the digits that remain, so the background agrees with the label in 95% of training images
    of each class, with the release's imbalance (e.g. 713 / 38 / 11 / 216 with the defaults).
    Class folders are ``000.Digit_0`` ... ``009.Digit_9``.

    Args:
        out_dir: Folder to write ``waterbird_complete95_forest2water2/`` into.
        seed: Seed of the assignment of digits to parts and of the drawing.
        val_per_group: Validation images per group.
        test_per_group: Test images per group.
        size_range: Inclusive range of the image widths and heights.
        background: ``"scene"`` or ``"plain"`` (:data:`DIGITS_BACKGROUNDS`).
        centre: Draw every digit at 90% of the image's side in its middle instead of a random size and place.

    Returns:
        The release folder.

    Raises:
        ValueError: If val and test leave no digit of a class for training, or for an unknown
            ``background``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if background not in DIGITS_BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(DIGITS_BACKGROUNDS)}, got {background!r}")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    pools = {label: list(rng.permutation(np.flatnonzero((digits.target >= 5) == bool(label)))) for label in (0, 1)}
    held_out = 2 * (val_per_group + test_per_group)
    available = [len(pools[label]) - held_out for label in (0, 1)]
    if min(available) <= 0:
        raise ValueError(
            f"val_per_group={val_per_group} and test_per_group={test_per_group} use every digit of a class "
            f"({min(len(p) for p in pools.values())} images): choose smaller counts"
        )
    release = RELEASE_TRAIN_COUNTS
    scale = min(available[0] / (release[0] + release[1]), available[1] / (release[2] + release[3]))
    train_counts = scaled_train_counts(scale, minimum=1)
    low, high = size_range
    items = []
    for label, place, split in _release_items(train_counts, val_per_group, test_per_group):
        index = int(pools[label].pop())
        digit = int(digits.target[index])
        size = int(rng.integers(low, high + 1))
        if background == "scene":
            scene = _background(place, size, size, rng)
        else:
            scene = _plain_background(place, size, rng)
        side = int(round(size * (0.9 if centre else rng.uniform(0.7, 0.9))))
        stroke = Image.fromarray((digits.images[index] / 16.0 * 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.BILINEAR
        )
        alpha = np.zeros((size, size), dtype=np.float32)
        if centre:
            top = left = (size - side) // 2
        else:
            top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        alpha[top : top + side, left : left + side] = np.asarray(stroke, dtype=np.float32) / 255.0
        ink = rng.uniform(215, 250, size=3)
        pixels = scene * (1 - alpha[..., None]) + ink * alpha[..., None]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
        folder = f"{digit:03d}.Digit_{digit}"
        items.append(
            {"image": image, "folder": folder, "stem": f"Digit_{digit}", "label": label, "place": place, "split": split}
        )
    return _write_release(out_dir, items, rng)
