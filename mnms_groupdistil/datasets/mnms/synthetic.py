"""A generated M&Ms-like cohort in exactly the layout and file formats of the real release.

``python -m mnms_groupdistil.datasets.generate mnms OUT_DIR [--preset tiny|small|demo|paper] [--seed 0]``
(:mod:`mnms_groupdistil.datasets.generate`) writes::

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
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .release import CENTRES, INFO_CSV_NAME, PATHOLOGIES, SUBFOLDERS, VENDORS

__all__ = [
    "MNMS_CSV_HEADER",
    "MNMS_PRESETS",
    "VENDOR_APPEARANCE",
    "write_mnms_cohort",
    "write_mnms_cohort_from_counts",
    "synthesize_cine",
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

    One function, drawing the heart's shapes in one fixed order from ``rng``: that order fixes every cohort a
    seed generates (the demo's included), so it is not spread over helpers that could reorder it.

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

    image = _vendor_look(img, look, x / nx - 0.5, y / ny - 0.5, rng, dtype)
    labels = np.zeros(shape, dtype=np.uint8)
    for frame in sorted({ed, es}):
        d = dist[..., 0]
        lab = np.zeros((nx, ny, nz), dtype=np.uint8)
        lab[(rv[..., frame] > 0.5)] = 3
        lab[d < ro[..., frame]] = 2
        lab[d < rc[..., frame]] = 1
        labels[..., frame] = lab
    return image, labels


def _vendor_look(
    img: np.ndarray, look: Mapping[str, float], x: np.ndarray, y: np.ndarray, rng: np.random.Generator, dtype: Any
) -> np.ndarray:
    """A vendor's appearance on a drawn stack ``img``: contrast (gamma), a linear bias field over the centred
    coordinates ``x``, ``y`` (in [-0.5, 0.5]), Rician-like noise and the intensity scale, stored as ``dtype``."""
    img = np.power(np.clip(img, 0.0, None), look["gamma"])
    img = img * (1.0 + look["bias"] * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y))
    sigma = look["noise"] * rng.uniform(0.8, 1.25)
    img = np.sqrt((img + rng.normal(0.0, sigma, img.shape)) ** 2 + rng.normal(0.0, sigma, img.shape) ** 2)
    img = img * look["scale"] * rng.uniform(0.8, 1.25)
    if np.dtype(dtype) == np.int16:
        return np.clip(np.rint(img), 0, 32767).astype(np.int16)
    return img.astype(np.float32)


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

    The subjects are drawn in one loop, in one fixed order from one generator, which fixes the cohort of a seed.

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
        rows.append(
            [str(i), code, pathology, VENDORS[vendor], vendor, *_csv_cells(vendor, ed, es, i in empty_body_ids, rng)]
        )

    with open(root / INFO_CSV_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MNMS_CSV_HEADER)
        writer.writerows(rows)
    logger.info("wrote %d synthetic M&Ms subjects to %s", n, root)
    return root


def _csv_cells(vendor: str, ed: int, es: int, empty_body: bool, rng: np.random.Generator) -> list[str]:
    """A subject's ``Centre, ED, ES, Age, Sex, Height, Weight`` cells; ``empty_body``: no height and weight."""
    centres = CENTRES[vendor]
    centre = centres[int(rng.integers(len(centres)))]
    sex = "M" if rng.random() < 0.6 else "F"
    height = weight = ""
    if not empty_body:
        height = f"{rng.normal(176 if sex == 'M' else 163, 8):.1f}"
        weight = f"{rng.normal(82 if sex == 'M' else 66, 12):.1f}"
    age = int(np.clip(rng.normal(50, 16), 8, 90))
    return [str(centre), str(ed), str(es), str(age), sex, height, weight]


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
