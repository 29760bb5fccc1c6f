"""The bundle trains on an M&Ms-layout cohort written here by hand, not by the project's generator.

The files are written the way other tools write them: plain nibabel with a qform-only header,
float64 and uint16 data, odd in-plane sizes, anisotropic and oblique voxels, a CSV with Windows
line endings, and subjects spread over all four release folders.
"""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import MNMS_RELEASE_HEADER
from monai.bundle import ConfigWorkflow

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "mnms_groupdistil" / "configs"
FOLDERS = ["Training/Labeled", "Training/Unlabeled", "Validation", "Testing"]


def _write_subject(root, folder, code, hcm, rng, dtype, shape):
    x, y, z, t = shape
    xx, yy = np.meshgrid(np.arange(x) - x / 2, np.arange(y) - y / 2, indexing="ij")
    r = np.hypot(xx, yy)
    data = np.zeros(shape)
    for k in range(t):
        cavity = 0.18 * min(x, y) * (1 - 0.3 * np.sin(np.pi * k / t))
        wall = cavity * (0.9 if hcm else 0.35)
        frame = np.where(r < cavity, 300.0, np.where(r < cavity + wall, 60.0, 140.0))
        data[..., k] = frame[..., None] + rng.normal(0, 10, (x, y, z))
    angle = rng.uniform(0, np.pi)
    affine = np.diag([1.37, 1.37, 9.0, 1.0])
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine[:3, :3] = rot @ affine[:3, :3]
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_sform(None, code=0)
    img.set_qform(affine, code=1)
    folder_path = root / folder / code
    folder_path.mkdir(parents=True)
    nib.save(img, folder_path / f"{code}_sa.nii.gz")


def _write_cohort(root):
    rng = np.random.default_rng(42)
    rows = []
    vendors = {
        "A": ("SIEMENS", 1),
        "B": ("Philips Medical Systems", 2),
        "C": ("GE MEDICAL SYSTEMS", 4),
        "D": ("Canon", 5),
    }
    n = 0
    for vendor in "ACDB":
        for pathology in ("HCM", "NOR"):
            for _ in range(3 if vendor != "B" else 1):
                code = f"Q{n:02d}{vendor}{pathology[0]}9"
                shape = (int(rng.integers(37, 51)), int(rng.integers(33, 47)), int(rng.integers(2, 4)), 7)
                dtype = [np.float64, np.uint16, np.int16][n % 3]
                es, ed = (5, 0) if n % 2 else (0, 4)
                _write_subject(root, FOLDERS[n % 4], code, pathology == "HCM", rng, dtype, shape)
                name, centre = vendors[vendor]
                rows.append(
                    [
                        n,
                        code,
                        pathology,
                        name,
                        vendor,
                        centre,
                        ed,
                        es,
                        50 + n,
                        "M" if n % 2 else "F",
                        "" if n % 5 == 0 else 170.0,
                        "" if n % 5 == 0 else 70.5,
                    ]
                )
                n += 1
    with open(root / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(MNMS_RELEASE_HEADER)
        writer.writerows(rows)


def test_bundle_trains_on_a_hand_written_cohort(tmp_path):
    data = tmp_path / "OpenDataset"
    data.mkdir()
    _write_cohort(data)
    out = tmp_path / "run"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "train_teacher.json")],
        workflow_type="train",
        dataset_dir=str(data),
        output_dir=str(out),
        split="demo",
        max_epochs=1,
        batch_size=4,
        image_size=32,
        frames_per_patient=2,
        num_workers=0,
        device="cpu",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) + len(split["test"]) == 18  # vendor B is dropped
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_group"]) == {"A", "C", "D"}
    assert 0.0 <= metrics["metrics"]["test_worst_group_acc"] <= 1.0
    state = torch.load(out / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["max_epochs"] == 1
    assert int(state["group_weights"]["num_updates"]) == state["trainer"]["iteration"] > 0
