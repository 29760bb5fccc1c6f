"""Finding volumes for inference and writing per-patient predictions."""

import csv
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from mnms_groupdistil.datasets.mnms.frames import all_frames
from mnms_groupdistil.datasets.mnms.inference import PatientPredictionWriter, find_cine_volumes


def _save(path, shape):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.int16), np.eye(4)), str(path))


def test_find_cine_volumes_in_a_folder_and_a_file(tmp_path):
    _save(tmp_path / "Testing" / "B1" / "B1_sa.nii.gz", (8, 9, 3, 5))
    _save(tmp_path / "Validation" / "A2" / "A2_sa.nii.gz", (8, 8, 2, 4))
    _save(tmp_path / "Validation" / "A2" / "A2_sa_gt.nii.gz", (8, 8, 2, 4))  # not a cine volume
    records = find_cine_volumes(tmp_path)
    assert [(r["subject"], r["num_slices"], r["num_frames"]) for r in records] == [("B1", 3, 5), ("A2", 2, 4)]
    single = find_cine_volumes(tmp_path / "Testing" / "B1" / "B1_sa.nii.gz")
    assert single[0]["subject"] == "B1"
    assert len(all_frames(records)) == 3 * 5 + 2 * 4
    assert [(f["frame"], f["slice"]) for f in all_frames(records[1:], frame_stride=3)] == [
        (0, 0),
        (0, 1),
        (3, 0),
        (3, 1),
    ]


def test_find_cine_volumes_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        find_cine_volumes(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no '\\*_sa.nii.gz' file"):
        find_cine_volumes(tmp_path)
    _save(tmp_path / "C3" / "C3_sa.nii.gz", (8, 8, 2))
    (tmp_path / "D4").mkdir()
    (tmp_path / "D4" / "D4_sa.nii.gz").write_bytes(b"not a nifti file")
    noise = np.random.default_rng(0).integers(0, 1000, (16, 16, 4, 6), dtype=np.int16)
    (tmp_path / "E5").mkdir()
    nib.save(nib.Nifti1Image(noise, np.eye(4)), str(tmp_path / "E5" / "E5_sa.nii.gz"))
    whole = (tmp_path / "E5" / "E5_sa.nii.gz").read_bytes()
    (tmp_path / "E5" / "E5_sa.nii.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError) as error:
        find_cine_volumes(tmp_path)
    message = str(error.value)
    assert "C3_sa.nii.gz (subject C3): expected a 4D" in message
    assert "D4_sa.nii.gz (subject D4): cannot read" in message
    assert "E5_sa.nii.gz (subject E5): voxel data" in message


def test_patient_prediction_writer(tmp_path):
    # patient p: frames vote HCM, HCM, NOR; patient q: one NOR frame
    logits = torch.tensor([[0.0, 2.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    batch = {"subject": ["p", "p", "p", "q"], "slice": torch.tensor([0, 1, 0, 0]), "frame": torch.tensor([0, 0, 1, 0])}
    engine = Engine(lambda e, b: {"pred": logits})
    writer = PatientPredictionWriter(tmp_path / "out" / "predictions.csv", ["NOR", "HCM"])
    writer.attach(engine)

    @engine.on(Events.ITERATION_STARTED)
    def _batch(e):
        e.state.batch = batch

    engine.run([0], max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [(r["subject"], r["prediction"], r["frames"], r["votes_NOR"], r["votes_HCM"]) for r in rows] == [
        ("p", "HCM", "3", "1", "2"),
        ("q", "NOR", "1", "1", "0"),
    ]
    p_hcm = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(3))]
    assert float(rows[0]["mean_probability_HCM"]) == pytest.approx(sum(p_hcm) / 3, abs=1e-4)
    frames = list(csv.DictReader(open(tmp_path / "out" / "frame_predictions.csv")))
    assert len(frames) == 4 and frames[2]["frame"] == "1"


def _run_writer(writer, output, batch):
    engine = Engine(lambda e, b: {"pred": output})
    writer.attach(engine)

    @engine.on(Events.ITERATION_STARTED)
    def _batch(e):
        e.state.batch = batch

    engine.run([0], max_epochs=1)


def test_writer_takes_probabilities_from_the_postprocessing(tmp_path):
    """softmax=False (the bundles' inference.json, whose postprocessing applies the softmax): the output is
    written as it is, and an output that is not probabilities (a missing postprocessing) is refused."""
    batch = {"subject": ["p", "p"], "slice": torch.tensor([0, 1]), "frame": torch.tensor([0, 0])}
    probabilities = torch.tensor([[0.25, 0.75], [0.6, 0.4]])
    writer = PatientPredictionWriter(tmp_path / "predictions.csv", ["NOR", "HCM"], softmax=False)
    _run_writer(writer, probabilities, batch)
    frames = list(csv.DictReader(open(tmp_path / "frame_predictions.csv")))
    assert [(f["probability_NOR"], f["probability_HCM"]) for f in frames] == [
        ("0.2500", "0.7500"),
        ("0.6000", "0.4000"),
    ]
    (row,) = csv.DictReader(open(tmp_path / "predictions.csv"))
    assert (row["mean_probability_NOR"], row["mean_probability_HCM"]) == ("0.4250", "0.5750")
    with pytest.raises(ValueError, match=r"softmax=False, but its output row 0 is not probabilities.*Activationsd"):
        _run_writer(
            PatientPredictionWriter(tmp_path / "p.csv", ["NOR", "HCM"], softmax=False),
            torch.tensor([[0.0, 2.0]]),
            batch,
        )
