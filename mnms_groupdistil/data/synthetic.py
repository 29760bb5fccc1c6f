"""Generated cohorts in exactly the layout and file formats of the real dataset releases.

``python -m mnms_groupdistil.data.synthetic mnms OUT_DIR [--preset tiny|small|demo|paper] [--seed 0]``
writes an M&Ms-like cohort::

    OUT_DIR/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv
    OUT_DIR/{Training/Labeled,Training/Unlabeled,Validation,Testing}/<CODE>/<CODE>_sa.nii.gz
    OUT_DIR/.../<CODE>/<CODE>_sa_gt.nii.gz   (beside the subjects outside Training/Unlabeled)

Images are 4D (x, y, z, t) short-axis cine stacks: a torso-like ellipse, the left-ventricular
blood pool (bright disc) inside a dark myocardial ring and a bright right-ventricular
crescent. The cavity is largest at ED and smallest at ES (myocardial area is conserved, so
the wall thickens in systole) and shrinks toward the apex. HCM subjects have a clearly
thicker wall and a smaller cavity than NOR subjects in every frame. Each vendor has its own
intensity scale, contrast (gamma), bias field and noise level, and the vendors are
imbalanced, so vendor robustness matters. Vendor B and other pathologies are included too
(the reader must filter them out). Most images are int16, a few float32; affines are
oblique with anisotropic spacing and a few have slightly non-orthonormal direction cosines;
some subjects have ED after ES.

``python -m mnms_groupdistil.data.synthetic waterbirds OUT_DIR [--preset tiny|demo] [--seed 0]``
and ``python -m mnms_groupdistil.data.synthetic digits OUT_DIR [--seed 0]`` write a dataset in the
layout of the Waterbirds release (``OUT_DIR/waterbird_complete95_forest2water2/metadata.csv`` and
class folders of JPEGs): drawn birds on drawn backgrounds, or scikit-learn's real handwritten digits
on drawn backgrounds (see :func:`write_waterbirds` and :func:`write_digits_waterbirds`).
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnms_groupdistil.data.mnms import CENTRES, INFO_CSV_NAME, SUBFOLDERS, VENDORS
from mnms_groupdistil.data.waterbirds import METADATA_COLUMNS, METADATA_NAME, RELEASE_FOLDER, RELEASE_TRAIN_COUNTS

__all__ = [
    "MNMS_CSV_HEADER",
    "MNMS_PRESETS",
    "VENDOR_APPEARANCE",
    "write_mnms_cohort",
    "write_mnms_cohort_from_counts",
    "synthesize_cine",
    "WATERBIRDS_PRESETS",
    "scaled_train_counts",
    "write_waterbirds",
    "write_digits_waterbirds",
    "DIGITS_BACKGROUNDS",
    "build_parser",
    "main",
]

logger = logging.getLogger(__name__)

#: Header line of the 211230 M&Ms information CSV (leading unnamed index column).
MNMS_CSV_HEADER: tuple[str, ...] = (
    "",
    "External code",
    "Pathology",
    "VendorName",
    "Vendor",
    "Centre",
    "ED",
    "ES",
    "Age",
    "Sex",
    "Height",
    "Weight",
)

#: Per-vendor appearance: intensity scale, gamma (contrast), relative noise, bias-field strength.
VENDOR_APPEARANCE: dict[str, dict[str, float]] = {
    "A": {"scale": 900.0, "gamma": 1.0, "noise": 0.030, "bias": 0.15},
    "B": {"scale": 1400.0, "gamma": 0.9, "noise": 0.035, "bias": 0.20},
    "C": {"scale": 280.0, "gamma": 0.75, "noise": 0.060, "bias": 0.30},
    "D": {"scale": 2200.0, "gamma": 1.35, "noise": 0.045, "bias": 0.10},
}

# Pathologies other than the task's, used as "extra" subjects the reader has to drop.
_EXTRA_PATHOLOGY_SHAPE = {
    "DCM": "NOR",
    "HHD": "HCM",
    "ARV": "NOR",
    "AHS": "HCM",
    "IHD": "NOR",
    "LVNC": "NOR",
    "Other": "NOR",
}

#: Presets: counts per (vendor, pathology) and size ranges (inclusive) of the generated images.
MNMS_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "counts": {
            ("A", "HCM"): 2,
            ("A", "NOR"): 2,
            ("C", "HCM"): 2,
            ("C", "NOR"): 2,
            ("D", "HCM"): 2,
            ("D", "NOR"): 2,
            ("B", "NOR"): 1,
            ("B", "HCM"): 1,
            ("A", "DCM"): 1,
            ("D", "ARV"): 1,
        },
        "size_range": (24, 40),
        "slice_range": (2, 4),
        "frame_range": (3, 6),
    },
    "demo": {
        "counts": {
            ("A", "HCM"): 10,
            ("A", "NOR"): 10,
            ("C", "HCM"): 5,
            ("C", "NOR"): 5,
            ("D", "HCM"): 8,
            ("D", "NOR"): 8,
            ("B", "HCM"): 3,
            ("B", "NOR"): 3,
            ("A", "DCM"): 2,
            ("C", "HHD"): 1,
            ("D", "ARV"): 1,
            ("B", "Other"): 1,
        },
        "size_range": (64, 96),
        "slice_range": (4, 8),
        "frame_range": (8, 14),
    },
    "small": {
        # 6 patients per A/C/D x HCM/NOR cell, small images: split "demo" keeps 4 per cell for training
        # (room for a validation patient) and 2 for testing; quick enough to train to a clear result in tests.
        "counts": {
            ("A", "HCM"): 6,
            ("A", "NOR"): 6,
            ("C", "HCM"): 6,
            ("C", "NOR"): 6,
            ("D", "HCM"): 6,
            ("D", "NOR"): 6,
        },
        "size_range": (32, 40),
        "slice_range": (2, 3),
        "frame_range": (4, 6),
    },
    "paper": {
        # split1/split2 need HCM A25 C5 D10 and NOR A21 C11 D14; one or two more per cell.
        "counts": {
            ("A", "HCM"): 27,
            ("A", "NOR"): 23,
            ("C", "HCM"): 6,
            ("C", "NOR"): 12,
            ("D", "HCM"): 11,
            ("D", "NOR"): 15,
            ("B", "HCM"): 3,
            ("B", "NOR"): 3,
            ("A", "DCM"): 2,
            ("C", "HHD"): 1,
            ("D", "LVNC"): 1,
            ("A", "Other"): 1,
        },
        "size_range": (48, 64),
        "slice_range": (3, 6),
        "frame_range": (6, 10),
    },
}

_FOLDER_WEIGHTS = (0.4, 0.15, 0.15, 0.3)  # Training/Labeled, Training/Unlabeled, Validation, Testing
_GT_FOLDERS = ("Training/Labeled", "Validation", "Testing")


# ------------------------------------------------------------------------------ image model


def _contraction(num_frames: int, ed: int, es: int) -> np.ndarray:
    """Cavity fraction per frame: 1 at ED, 0 at ES, smooth (cosine) in between, cyclic."""
    t = np.arange(num_frames)
    contract = (es - ed) % num_frames
    relax = num_frames - contract
    u = (t - ed) % num_frames
    f = np.where(
        u <= contract,
        0.5 + 0.5 * np.cos(np.pi * u / max(contract, 1)),
        0.5 - 0.5 * np.cos(np.pi * (u - contract) / max(relax, 1)),
    )
    return f.astype(np.float32)


def _soft_inside(dist: np.ndarray, radius: np.ndarray, softness: float = 0.6) -> np.ndarray:
    """Anti-aliased indicator of ``dist < radius`` (so sub-pixel radius changes are visible)."""
    z = np.clip((radius - dist) / softness, -30.0, 30.0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def synthesize_cine(
    shape: tuple[int, int, int, int],
    ed: int,
    es: int,
    hypertrophic: bool,
    vendor: str,
    rng: np.random.Generator,
    dtype: Any = np.int16,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize one short-axis cine stack and its label map.

    Args:
        shape: (nx, ny, nz, nt).
        ed: End-diastolic frame (largest cavity).
        es: End-systolic frame (smallest cavity); may be before ``ed``.
        hypertrophic: Thick wall and small cavity (HCM-like) instead of a normal heart.
        vendor: Vendor code selecting the appearance in :data:`VENDOR_APPEARANCE`.
        rng: Random generator.
        dtype: ``np.int16`` or ``np.float32``.

    Returns:
        ``(image, labels)``; image of ``shape`` and ``dtype``; labels (uint8, same shape):
        1 LV blood pool, 2 myocardium, 3 RV blood pool, only at the ED and ES frames (as in
        the real ground truth), 0 elsewhere.
    """
    nx, ny, nz, nt = shape
    m = float(min(nx, ny))
    look = VENDOR_APPEARANCE[vendor]

    x = np.arange(nx, dtype=np.float32)[:, None, None, None]
    y = np.arange(ny, dtype=np.float32)[None, :, None, None]
    zf = (np.arange(nz, dtype=np.float32) / max(nz - 1, 1))[None, None, :, None]  # 0 base .. 1 apex
    f = _contraction(nt, ed, es)[None, None, None, :]

    # torso ellipse (static)
    tx, ty = nx * (0.5 + rng.uniform(-0.03, 0.03)), ny * (0.5 + rng.uniform(-0.03, 0.03))
    ta, tb = nx * rng.uniform(0.42, 0.48), ny * rng.uniform(0.33, 0.40)
    torso_d = np.sqrt(((x - tx) / ta) ** 2 + ((y - ty) / tb) ** 2)
    torso = _soft_inside(torso_d * m * 0.4, np.float32(m * 0.4), softness=1.0)

    # left ventricle; centre drifts a little from base to apex
    cx = nx * (0.5 + rng.uniform(-0.05, 0.05)) + zf * rng.uniform(-0.04, 0.04) * m
    cy = ny * (0.47 + rng.uniform(-0.05, 0.05)) + zf * rng.uniform(-0.04, 0.04) * m
    if hypertrophic:
        cavity_ed, wall_ed, ejection = rng.uniform(0.09, 0.115), rng.uniform(0.095, 0.125), rng.uniform(0.45, 0.58)
    else:
        cavity_ed, wall_ed, ejection = rng.uniform(0.115, 0.14), rng.uniform(0.042, 0.055), rng.uniform(0.62, 0.72)
    apex_shrink = 1.0 - 0.55 * zf**1.5
    rc_ed = cavity_ed * m * apex_shrink  # (1,1,nz,1)
    ro_ed = rc_ed + wall_ed * m * (1.0 - 0.2 * zf)
    rc = rc_ed * (ejection + (1.0 - ejection) * f)  # (1,1,nz,nt)
    ro = np.sqrt(rc**2 + (ro_ed**2 - rc_ed**2))  # myocardial area conserved
    dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)  # (nx,ny,nz,1)
    cavity = _soft_inside(dist, rc)
    outer = _soft_inside(dist, ro)

    # right ventricle: ellipse beside the LV, contracting less, vanishing toward the apex
    theta = rng.uniform(0.8, 1.3) * np.pi
    rv_scale = (1.0 - 0.75 * zf) * (0.8 + 0.2 * f)
    rv_a, rv_b = 1.25 * cavity_ed * m * rv_scale, 0.75 * cavity_ed * m * rv_scale
    off = ro_ed + 0.6 * rv_b
    rx, ry = cx + off * np.cos(theta), cy + off * np.sin(theta)
    u = ((x - rx) * np.cos(theta) + (y - ry) * np.sin(theta)) / np.maximum(rv_b, 1e-3)
    v = (-(x - rx) * np.sin(theta) + (y - ry) * np.cos(theta)) / np.maximum(rv_a, 1e-3)
    rv = _soft_inside(np.sqrt(u**2 + v**2) * 4.0, np.float32(4.0)) * (1.0 - outer)

    tissue, myo, blood, rv_blood = rng.uniform(0.3, 0.4), rng.uniform(0.12, 0.2), 1.0, rng.uniform(0.85, 0.95)
    img = tissue * torso
    img = img * (1.0 - outer) + myo * outer
    img = img * (1.0 - cavity) + blood * cavity
    img = img * (1.0 - rv) + rv_blood * rv

    # vendor appearance: contrast, bias field, Rician-like noise, scale
    img = np.power(np.clip(img, 0.0, None), look["gamma"])
    bias = 1.0 + look["bias"] * (rng.uniform(-1, 1) * (x / nx - 0.5) + rng.uniform(-1, 1) * (y / ny - 0.5))
    img = img * bias
    sigma = look["noise"] * rng.uniform(0.8, 1.25)
    noise_shape = (nx, ny, nz, nt)
    img = np.sqrt((img + rng.normal(0.0, sigma, noise_shape)) ** 2 + rng.normal(0.0, sigma, noise_shape) ** 2)
    img = img * look["scale"] * rng.uniform(0.8, 1.25)
    if np.dtype(dtype) == np.int16:
        image = np.clip(np.rint(img), 0, 32767).astype(np.int16)
    else:
        image = img.astype(np.float32)

    labels = np.zeros(shape, dtype=np.uint8)
    for frame in sorted({ed, es}):
        d = dist[..., 0]
        lab = np.zeros((nx, ny, nz), dtype=np.uint8)
        lab[(rv[..., frame] > 0.5)] = 3
        lab[d < ro[..., frame]] = 2
        lab[d < rc[..., frame]] = 1
        labels[..., frame] = lab
    return image, labels


def _random_affine(rng: np.random.Generator, non_orthonormal: bool) -> np.ndarray:
    """Oblique short-axis affine: ~1.2-1.6 mm in-plane, 8-10 mm between slices."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(20.0, 70.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    if rng.random() < 0.5:
        rot[:, 0] *= -1.0  # left-handed voxel axes, as many scanners write them
    if non_orthonormal:
        rot = rot + rng.normal(0.0, 2e-3, size=(3, 3))
    in_plane = round(float(rng.uniform(1.2, 1.6)), 4)
    spacing = np.array([in_plane, in_plane, round(float(rng.uniform(8.0, 10.0)), 2)])
    affine = np.eye(4)
    affine[:3, :3] = rot * spacing[None, :]
    affine[:3, 3] = rng.uniform(-200.0, 200.0, size=3)
    return affine


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, frame_ms: float) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)  # nibabel strips shears into the (orthonormal) qform
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "msec")
    zooms = list(img.header.get_zooms())
    zooms[3] = frame_ms
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def _make_codes(n: int, rng: np.random.Generator) -> list[str]:
    """Codes like the real ones: letter digit letter digit letter digit (e.g. ``A0S9V9``)."""
    letters, digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
    codes: list[str] = []
    seen = set()
    while len(codes) < n:
        code = "".join(letters[rng.integers(26)] if i % 2 == 0 else digits[rng.integers(10)] for i in range(6))
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def _pick(n: int, fraction: float, rng: np.random.Generator) -> set:
    """At least one (when n > 0) and about ``fraction * n`` random indices."""
    if n == 0 or fraction <= 0:
        return set()
    k = min(n, max(1, int(round(fraction * n))))
    return set(int(i) for i in rng.choice(n, size=k, replace=False))


def write_mnms_cohort_from_counts(
    out_dir: str | Path,
    counts: Mapping[tuple[str, str], int],
    size_range: tuple[int, int] = (64, 96),
    slice_range: tuple[int, int] = (4, 8),
    frame_range: tuple[int, int] = (8, 14),
    seed: int = 0,
    float_fraction: float = 0.1,
    non_orthonormal_fraction: float = 0.15,
    ed_after_es_fraction: float = 0.3,
    empty_body_fraction: float = 0.2,
) -> Path:
    """Write an M&Ms-like cohort with explicit per-(vendor, pathology) counts.

    Args:
        out_dir: Dataset directory to create (the CSV and the four subfolders go in it).
        counts: Number of subjects per (vendor code, pathology code); pathologies other than
            NOR/HCM are drawn with a NOR- or HCM-like heart.
        size_range: Inclusive range of the in-plane sizes (x and y drawn independently).
        slice_range: Inclusive range of the number of slices.
        frame_range: Inclusive range of the number of frames (at least 3).
        seed: Seed of everything that is drawn.
        float_fraction: Fraction of subjects stored as float32 (at least one); others int16.
        non_orthonormal_fraction: Fraction (at least one) with slightly non-orthonormal direction
            cosines in the affine.
        ed_after_es_fraction: Fraction (at least one) with ED the last frame, after ES.
        empty_body_fraction: Fraction of CSV rows (at least one) with empty Height/Weight.

    Returns:
        The dataset directory.

    Raises:
        ValueError: For unknown vendor or pathology codes or bad ranges.
    """
    from mnms_groupdistil.data.mnms import PATHOLOGIES

    if frame_range[0] < 3 or slice_range[0] < 1 or size_range[0] < 8:
        raise ValueError("need >= 3 frames, >= 1 slice and >= 8 pixels in-plane")
    if any(lo > hi for lo, hi in (size_range, slice_range, frame_range)):
        raise ValueError("ranges must be (low, high) with low <= high")
    for vendor, pathology in counts:
        if vendor not in VENDORS or pathology not in PATHOLOGIES:
            raise ValueError(f"unknown (vendor, pathology) {(vendor, pathology)}")

    rng = np.random.default_rng(seed)
    root = Path(out_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    subjects = [(v, p) for (v, p), n in counts.items() for _ in range(int(n))]
    order = rng.permutation(len(subjects))
    subjects = [subjects[i] for i in order]
    n = len(subjects)
    codes = _make_codes(n, rng)
    folders = [SUBFOLDERS[i] for i in rng.choice(len(SUBFOLDERS), size=n, p=_FOLDER_WEIGHTS)]
    for i in range(min(n, len(SUBFOLDERS))):  # every subfolder is used
        folders[i] = SUBFOLDERS[i]
    float_ids = _pick(n, float_fraction, rng)
    skew_ids = _pick(n, non_orthonormal_fraction, rng)
    late_ed_ids = _pick(n, ed_after_es_fraction, rng)
    empty_body_ids = _pick(n, empty_body_fraction, rng)

    rows: list[list[str]] = []
    for i, ((vendor, pathology), code, folder) in enumerate(zip(subjects, codes, folders)):
        nx, ny = (int(s) for s in rng.integers(size_range[0], size_range[1] + 1, size=2))
        nz = int(rng.integers(slice_range[0], slice_range[1] + 1))
        nt = int(rng.integers(frame_range[0], frame_range[1] + 1))
        es = int(min(nt - 2, max(1, round(nt * rng.uniform(0.3, 0.42)))))
        ed = nt - 1 if i in late_ed_ids else 0
        shape_class = _EXTRA_PATHOLOGY_SHAPE.get(pathology, pathology)
        dtype = np.float32 if i in float_ids else np.int16
        image, labels = synthesize_cine((nx, ny, nz, nt), ed, es, shape_class == "HCM", vendor, rng, dtype)
        affine = _random_affine(rng, i in skew_ids)
        frame_ms = round(float(rng.uniform(25.0, 45.0)), 2)
        subject_dir = root / folder / code
        subject_dir.mkdir(parents=True, exist_ok=True)
        _save_nifti(subject_dir / f"{code}_sa.nii.gz", image, affine, frame_ms)
        if folder in _GT_FOLDERS:
            _save_nifti(subject_dir / f"{code}_sa_gt.nii.gz", labels, affine, frame_ms)
        centres = CENTRES[vendor]
        centre = centres[int(rng.integers(len(centres)))]
        sex = "M" if rng.random() < 0.6 else "F"
        height = weight = ""
        if i not in empty_body_ids:
            height = f"{rng.normal(176 if sex == 'M' else 163, 8):.1f}"
            weight = f"{rng.normal(82 if sex == 'M' else 66, 12):.1f}"
        age = int(np.clip(rng.normal(50, 16), 8, 90))
        rows.append(
            [
                str(i),
                code,
                pathology,
                VENDORS[vendor],
                vendor,
                str(centre),
                str(ed),
                str(es),
                str(age),
                sex,
                height,
                weight,
            ]
        )

    with open(root / INFO_CSV_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MNMS_CSV_HEADER)
        writer.writerows(rows)
    logger.info("wrote %d synthetic M&Ms subjects to %s", n, root)
    return root


def write_mnms_cohort(out_dir: str | Path, preset: str = "demo", seed: int = 0) -> Path:
    """Write an M&Ms-like cohort from a preset.

    Args:
        out_dir: Dataset directory to create.
        preset: ``"tiny"`` (unit tests: 2 subjects per A/C/D x HCM/NOR cell, 24-40 px),
            ``"small"`` (tests that train to a result: 6 per A/C/D x HCM/NOR cell, 32-40 px),
            ``"demo"`` (CPU demo: A 10, C 5, D 8 per class, 64-96 px) or ``"paper"`` (enough
            subjects to fill split1 and split2, 48-64 px). See :data:`MNMS_PRESETS`.
        seed: Seed of everything that is drawn.

    Returns:
        The dataset directory.

    Raises:
        ValueError: For an unknown preset.
    """
    if preset not in MNMS_PRESETS:
        raise ValueError(f"unknown preset '{preset}' (expected one of {', '.join(MNMS_PRESETS)})")
    spec = MNMS_PRESETS[preset]
    return write_mnms_cohort_from_counts(
        out_dir,
        spec["counts"],
        size_range=spec["size_range"],
        slice_range=spec["slice_range"],
        frame_range=spec["frame_range"],
        seed=seed,
    )


# ------------------------------------------------------------------------------- Waterbirds

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
#: (:data:`~mnms_groupdistil.data.waterbirds.RELEASE_TRAIN_COUNTS`) times ``train_scale`` (at least
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
        image += 25.0 * np.sin(x / max(width, 1) * rng.uniform(8, 16) + rng.uniform(0, 6))[..., None] * np.cos(
            y / max(height, 1) * rng.uniform(6, 12)
        )[..., None]
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


def _release_items(
    train_counts: Sequence[int], val_per_group: int, test_per_group: int
) -> list[tuple[int, int, int]]:
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


# ------------------------------------------------------------------------------------- CLI


def _run_mnms(args: argparse.Namespace) -> int:
    path = write_mnms_cohort(args.out_dir, preset=args.preset, seed=args.seed)
    logger.info("M&Ms-like cohort (preset %s, seed %d) in %s", args.preset, args.seed, path)
    return 0


def _add_mnms_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("mnms", help="M&Ms-like cardiac cine MRI cohort (real layout and CSV)")
    parser.add_argument("out_dir", help="dataset directory to write")
    parser.add_argument("--preset", choices=sorted(MNMS_PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_mnms)


def _run_waterbirds(args: argparse.Namespace) -> int:
    path = write_waterbirds(args.out_dir, preset=args.preset, seed=args.seed)
    logger.info("Waterbirds-like dataset (preset %s, seed %d) in %s", args.preset, args.seed, path)
    return 0


def _run_digits(args: argparse.Namespace) -> int:
    path = write_digits_waterbirds(
        args.out_dir,
        seed=args.seed,
        val_per_group=args.val_per_group,
        test_per_group=args.test_per_group,
        background=args.background,
        centre=args.centre,
    )
    logger.info("Waterbirds-layout digits dataset (seed %d, %s backgrounds) in %s", args.seed, args.background, path)
    return 0


def _add_waterbirds_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "waterbirds", help="Waterbirds-like dataset: drawn birds on drawn scenes (release layout and metadata)"
    )
    parser.add_argument("out_dir", help="folder to write waterbird_complete95_forest2water2/ into")
    parser.add_argument("--preset", choices=sorted(WATERBIRDS_PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_waterbirds)
    parser = subparsers.add_parser(
        "digits", help="Waterbirds-layout dataset of scikit-learn's real handwritten digits on spurious backgrounds"
    )
    parser.add_argument("out_dir", help="folder to write waterbird_complete95_forest2water2/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val_per_group", type=int, default=25)
    parser.add_argument("--test_per_group", type=int, default=50)
    parser.add_argument(
        "--background",
        choices=DIGITS_BACKGROUNDS,
        default="scene",
        help="scene: drawn land/water scenes (texture crosses the strokes); plain: land/water colour only",
    )
    parser.add_argument(
        "--centre", action="store_true", help="every digit at 90%% of the image side in its middle (easier core feature)"
    )
    parser.set_defaults(func=_run_digits)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one subcommand per generated dataset."""
    parser = argparse.ArgumentParser(
        prog="python -m mnms_groupdistil.data.synthetic",
        description="Write generated cohorts in the layout and formats of the real dataset releases.",
    )
    subparsers = parser.add_subparsers(dest="dataset", required=True)
    _add_mnms_parser(subparsers)
    _add_waterbirds_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
