"""The bundle trains on an M&Ms-layout cohort written by hand, not by the project's generator
(:func:`helpers.write_foreign_cohort`: plain nibabel with a qform-only header, float64 and uint16 data, odd
in-plane sizes, anisotropic and oblique voxels, a CSV with Windows line endings, and subjects spread over all
four release folders)."""

import json

import pytest
import torch
from helpers import CONFIGS, TINY_MNMS, write_foreign_cohort
from monai.bundle import ConfigWorkflow


@pytest.mark.slow
def test_bundle_trains_on_a_hand_written_cohort(tmp_path):
    data = tmp_path / "OpenDataset"
    data.mkdir()
    write_foreign_cohort(data)
    out = tmp_path / "run"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "train_teacher.json")],
        workflow_type="train",
        dataset_dir=str(data),
        output_dir=str(out),
        **TINY_MNMS,
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
