"""DICOM cine series: written here with SimpleITK from generated volumes, read back in the NIfTI path's order."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import CONFIGS
from monai.bundle import ConfigWorkflow

from mnms_groupdistil.dicom import LoadDicomCine, dicom_series_info, vendor_code
from mnms_groupdistil.inference import LoadCineInputd, find_cine_volumes
from mnms_groupdistil.networks import build_network

INFERENCE = CONFIGS / "inference.json"


def write_dicom_series(folder: Path, volume: np.ndarray, manufacturer: str, series_uid: str = "1.2.826.0.1.99.1"):
    """One file per (slice, phase) of ``volume`` (X, Y, Z, T), file names in a shuffled order.

    The slices lie along the normal of an oblique orientation, 8 mm apart, and the phases are 30 ms apart;
    image column x is ``volume`` axis 0 and row y axis 1 (``GetImageFromArray`` takes (y, x)).
    """
    folder.mkdir(parents=True)
    row_dir = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    col_dir = np.array([-np.sin(0.4) * np.cos(0.3), np.cos(0.4) * np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row_dir, col_dir)
    x, y, z, t = volume.shape
    order = np.random.default_rng(5).permutation(z * t)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for n, (k, f) in enumerate((k, f) for k in range(z) for f in range(t)):
        image = sitk.GetImageFromArray(volume[:, :, k, f].T[None].copy())  # (1, y, x) -> size (x, y, 1)
        position = np.array([-20.0, 10.0, 5.0]) + 8.0 * k * normal
        image.SetSpacing((1.4, 1.4, 8.0))
        image.SetOrigin(position.tolist())
        image.SetDirection(np.stack([row_dir, col_dir, normal], axis=1).ravel().tolist())
        for tag, value in {
            "0008|0060": "MR",
            "0008|0070": manufacturer,
            "0020|000d": "1.2.826.0.1.99",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{n + 1}",
            "0020|0013": str(n + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*row_dir, *col_dir)),
            "0018|1060": f"{30.0 * f:.1f}",
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{order[n]:04d}.dcm"))
        writer.Execute(image)


def _volume(seed: int, shape=(20, 17, 3, 4)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, shape).astype(np.int16)


def test_vendor_codes():
    names = {
        "SIEMENS": "A",
        "Siemens Healthineers": "A",
        "Philips Medical Systems": "B",
        "Philips Healthcare": "B",
        "GE MEDICAL SYSTEMS": "C",
        "GE Healthcare": "C",
        "General Electric": "C",
        "Canon Medical Systems": "D",
        "TOSHIBA_MEC": "D",
        "Agfa": "",
        "": "",
    }
    assert {n: vendor_code(n) for n in names} == names


def test_series_is_read_in_the_nifti_order(tmp_path):
    volume = _volume(0)
    write_dicom_series(tmp_path / "P1", volume, "SIEMENS")
    info = dicom_series_info(tmp_path / "P1")
    assert (info["num_slices"], info["num_frames"], info["vendor"], info["manufacturer"]) == (3, 4, "A", "SIEMENS")
    assert info["spacing"] == pytest.approx((1.4, 1.4, 8.0))
    array = LoadDicomCine()(tmp_path / "P1")
    np.testing.assert_array_equal(array, volume)

    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "P1_sa.nii.gz"))
    loader = LoadCineInputd("image")
    from_dicom = loader({"image": str(tmp_path / "P1"), "subject": "P1"})["image"]
    from_nifti = loader({"image": str(tmp_path / "P1_sa.nii.gz"), "subject": "P1"})["image"]
    np.testing.assert_array_equal(from_dicom, from_nifti)


def test_find_cine_volumes_lists_nifti_files_and_dicom_series(tmp_path):
    write_dicom_series(tmp_path / "scans" / "P2", _volume(1), "Philips Medical Systems")
    nib.save(nib.Nifti1Image(_volume(2, (9, 9, 2, 5)), np.eye(4)), str(tmp_path / "scans" / "N1_sa.nii.gz"))
    records = find_cine_volumes(tmp_path / "scans")
    assert [(r["subject"], r["num_slices"], r["num_frames"], r["vendor"]) for r in records] == [
        ("N1", 2, 5, ""),
        ("P2", 3, 4, "B"),
    ]


def test_bad_series_errors_name_the_folder(tmp_path):
    write_dicom_series(tmp_path / "incomplete", _volume(3), "GE MEDICAL SYSTEMS")
    next(iter(sorted((tmp_path / "incomplete").glob("*.dcm")))).unlink()
    write_dicom_series(tmp_path / "broken", _volume(4), "Canon")
    damaged = sorted((tmp_path / "broken").glob("*.dcm"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    write_dicom_series(tmp_path / "two", _volume(5), "Canon", series_uid="1.2.826.0.1.99.2")
    write_dicom_series(tmp_path / "two" / "x", _volume(5), "Canon", series_uid="1.2.826.0.1.99.3")
    for f in (tmp_path / "two" / "x").glob("*.dcm"):
        f.rename(tmp_path / "two" / f"b{f.name}")
    (tmp_path / "two" / "x").rmdir()

    with pytest.raises(ValueError, match="incomplete DICOM cine series in .*incomplete.*phases"):
        dicom_series_info(tmp_path / "incomplete")
    with pytest.raises(ValueError, match="broken"):
        LoadDicomCine()(tmp_path / "broken")
    with pytest.raises(ValueError, match="holds 2 DICOM series"):
        dicom_series_info(tmp_path / "two")
    with pytest.raises(ValueError) as error:
        find_cine_volumes(tmp_path)
    assert all(name in str(error.value) for name in ("incomplete", "broken", "two"))


def test_dicom_and_nifti_inputs_give_the_same_predictions(tmp_path):
    """inference.json on a DICOM series and on the NIfTI file of the same volume, with the same network."""
    torch.manual_seed(0)
    network = build_network("densenet121", num_classes=2, in_channels=1)
    with torch.no_grad():  # random batch-norm statistics, so that the two classes both occur
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    volume = _volume(6, (24, 21, 2, 3))
    write_dicom_series(tmp_path / "dicom" / "S1", volume, "TOSHIBA_MEC")
    (tmp_path / "nifti").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "nifti" / "S1_sa.nii.gz"))
    rows = {}
    for kind in ("dicom", "nifti"):
        workflow = ConfigWorkflow(
            config_file=str(INFERENCE),
            workflow_type="infer",
            logging_file=False,
            dataset_dir=str(tmp_path / kind),
            output_dir=str(tmp_path / f"out_{kind}"),
            run_dir="",
            ckpt_path=str(tmp_path / "model.pt"),
            image_size=32,
            num_workers=0,
            device="cpu",
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        with open(tmp_path / f"out_{kind}" / "frame_predictions.csv") as f:
            rows[kind] = list(csv.DictReader(f))
        with open(tmp_path / f"out_{kind}" / "predictions.csv") as f:
            rows[kind + "_patient"] = list(csv.DictReader(f))
    assert len(rows["dicom"]) == 2 * 3
    assert rows["dicom"] == rows["nifti"]
    assert (rows["dicom_patient"][0]["vendor"], rows["dicom_patient"][0]["manufacturer"]) == ("D", "TOSHIBA_MEC")
    assert rows["nifti_patient"][0]["vendor"] == ""
    strip = [{k: v for k, v in r.items() if k not in ("vendor", "manufacturer")} for r in rows["dicom_patient"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("vendor", "manufacturer")} for r in rows["nifti_patient"]]
