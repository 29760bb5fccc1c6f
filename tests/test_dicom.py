"""DICOM cine series (written with SimpleITK from generated volumes, ``helpers.write_dicom_series``): read back in
the NIfTI path's order, classified, and reported as DICOM SR."""

from __future__ import annotations

import csv
import json
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import CONFIGS, sr_items, write_dicom_series
from monai.bundle import ConfigWorkflow

from mnms_groupdistil.datasets.mnms.dicom import LoadDicomCine, dicom_series_info, vendor_code
from mnms_groupdistil.datasets.mnms.dicom_sr import SeriesReportWriter
from mnms_groupdistil.datasets.mnms.inference import LoadCineInputd, find_cine_volumes
from mnms_groupdistil.networks import build_network

INFERENCE = CONFIGS / "inference.json"


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


# ------------------------------------------------------------------------------- DICOM SR

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage (DICOM PS3.4)


def _instance_uids(series_uid: str, volume: np.ndarray) -> set[str]:
    """The SOP Instance UIDs write_dicom_series gives a volume's files: ``<series_uid>.<n>``, n = 1 .. Z x T."""
    return {f"{series_uid}.{n}" for n in range(1, volume.shape[2] * volume.shape[3] + 1)}


def _classify(tmp_path, dataset_dir, out, **overrides):
    workflow = ConfigWorkflow(
        config_file=str(INFERENCE),
        workflow_type="infer",
        logging_file=False,
        dataset_dir=str(dataset_dir),
        output_dir=str(out),
        run_dir="",
        ckpt_path=str(tmp_path / "model.pt"),
        image_size=32,
        num_workers=0,
        device="cpu",
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    with open(out / "predictions.csv") as f:
        return {row["subject"]: row for row in csv.DictReader(f)}


def test_a_dicom_series_gets_a_structured_report_in_its_study(tmp_path):
    """inference.json on two DICOM series (two studies) and a NIfTI file: one Comprehensive SR per series, in the
    series' study, holding the CSV's class, probability and frames, the model's name and version (metadata.json),
    the vendor group and a reference to every source instance; none for the NIfTI file, none with dicom_sr false."""
    import highdicom as hd
    import pydicom

    torch.manual_seed(0)
    torch.save(build_network("densenet121", num_classes=2, in_channels=1).state_dict(), tmp_path / "model.pt")
    series = {  # subject: (volume, manufacturer, series UID, study UID, patient, vendor group)
        "S1": (_volume(7, (24, 21, 2, 3)), "SIEMENS", "1.2.826.0.1.77.1", "1.2.826.0.1.77", "GD0007", "A"),
        "S2": (_volume(8, (24, 21, 3, 2)), "Agfa", "1.2.826.0.1.88.1", "1.2.826.0.1.88", "GD0008", "unknown"),
    }
    for subject, (volume, manufacturer, series_uid, study_uid, patient, _) in series.items():
        write_dicom_series(tmp_path / "scans" / subject, volume, manufacturer, series_uid, study_uid, patient)
    nib.save(nib.Nifti1Image(_volume(9, (24, 21, 2, 2)), np.eye(4)), str(tmp_path / "scans" / "N1_sa.nii.gz"))
    rows = _classify(tmp_path, tmp_path / "scans", tmp_path / "out")
    with open(tmp_path / "out" / "frame_predictions.csv") as f:
        frames = list(csv.DictReader(f))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == ["S1_SR.dcm", "S2_SR.dcm"]
    metadata = json.loads((INFERENCE.parent / "metadata.json").read_text())

    for subject, (volume, _, series_uid, study_uid, patient, vendor) in series.items():
        row = rows[subject]
        path = tmp_path / "out" / f"{subject}_SR.dcm"
        sr = pydicom.dcmread(path)
        assert (sr.SOPClassUID, sr.Modality, sr.CompletionFlag, sr.VerificationFlag) == (
            COMPREHENSIVE_SR, "SR", "COMPLETE", "UNVERIFIED"
        )  # fmt: skip
        assert (sr.StudyInstanceUID, sr.PatientID) == (study_uid, patient)
        assert sr.SeriesInstanceUID not in (series_uid, study_uid) and sr.SeriesNumber == 9001
        (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
        (referenced,) = evidence.ReferencedSeriesSequence
        assert (evidence.StudyInstanceUID, referenced.SeriesInstanceUID) == (study_uid, series_uid)
        assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedSOPSequence} == _instance_uids(
            series_uid, volume
        )

        items = sr_items(sr)
        prediction = row["prediction"]
        mine = [float(f[f"probability_{prediction}"]) for f in frames if f["subject"] == subject]
        assert items["Finding"] == [prediction]
        assert items["Number of Frames"] == [volume.shape[2] * volume.shape[3]] == [int(row["frames"])] == [len(mine)]
        (probability,) = items["Probability"]
        assert probability == pytest.approx(float(row[f"mean_probability_{prediction}"]), abs=5e-5)
        assert probability == pytest.approx(sum(mine) / len(mine), abs=1e-4) and probability >= 0.5
        assert set(items["Algorithm Name"]) == {metadata["name"]} and set(items["Algorithm Version"]) == {
            metadata["version"]
        }
        assert items["Scanner vendor group"] == [vendor] and row["vendor"] == ("" if vendor == "unknown" else vendor)
        assert items["Procedure reported"] == ["241620005"] and items["Finding Site"] == ["80891009"]
        assert set(items["IMAGE"]) == _instance_uids(series_uid, volume)

        (group,) = hd.sr.srread(path).content.get_image_measurement_groups()  # highdicom reads it as TID 1500
        assert group.finding_type.value == prediction
        assert {m.name.meaning: m.value for m in group.get_measurements()} == {
            "Probability": pytest.approx(probability),
            "Number of Frames": volume.shape[2] * volume.shape[3],
        }

    rows_without = _classify(tmp_path, tmp_path / "scans", tmp_path / "out_csv", dicom_sr=False)
    assert rows_without == rows and not list((tmp_path / "out_csv").glob("*.dcm"))


def test_dicom_sr_setting_and_what_it_needs(tmp_path, monkeypatch):
    write_dicom_series(tmp_path / "P1", _volume(10, (8, 8, 1, 2)), "SIEMENS")
    dicom = [{"subject": "P1", "image": str(tmp_path / "P1")}]
    nifti = [{"subject": "N1", "image": str(tmp_path / "N1_sa.nii.gz")}]
    with pytest.raises(ValueError, match="dicom_sr must be true or false .*, got 'yes'"):
        SeriesReportWriter(dicom, tmp_path, "m", "1.0.0", enabled="yes")
    with pytest.raises(ValueError, match=r"(?s)inputs share a subject name.*subject P1"):
        SeriesReportWriter(
            [*dicom, {"subject": "P1", "image": str(tmp_path / "x_sa.nii.gz")}], tmp_path, "m", "1"
        ).check()
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as where it is not installed
    with pytest.raises(ValueError, match=r"highdicom.*not installed: pip install highdicom.*mnms_groupdistil\[dicom\]"):
        SeriesReportWriter(dicom, tmp_path, "m", "1.0.0").check()
    SeriesReportWriter(dicom, tmp_path, "m", "1.0.0", enabled=False).check()  # the CSV only: nothing needed
    SeriesReportWriter(nifti, tmp_path, "m", "1.0.0").check()  # no DICOM input: nothing needed
