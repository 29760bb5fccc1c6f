"""Exact resume: a run stopped after epoch k and resumed from its checkpoint ends with the same
network weights, optimizer state and group weights as an uninterrupted run, bit for bit (CPU)."""

from __future__ import annotations

import pytest
import torch

TINY = {
    "split": "demo",
    "batch_size": 4,
    "image_size": 32,
    "frames_per_patient": 2,
    "num_workers": 0,
    "device": "cpu",
    "network_name": "resnet18",
}
# one-group batches (GroupBatchSampler) with the random transforms in the loader, and shuffled batches
# (RandomSampler) with the random rotation and flips on the training device
RUNS = {
    "groupdro": (["train.json", "train_groupdro.json"], {}),
    "erm": (["train.json", "train_erm.json"], {"augment_on_device": True}),
}


def _final(out):
    return torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, path


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(RUNS))
def test_resumed_run_equals_an_uninterrupted_one(bundle, cohort, tmp_path, mode):
    configs, settings = RUNS[mode]
    settings = {**TINY, **settings}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    bundle.run(configs, dataset_dir=str(cohort), output_dir=str(straight), max_epochs=3, **settings)
    bundle.run(configs, dataset_dir=str(cohort), output_dir=str(stopped), max_epochs=1, **settings)
    after_one = _final(stopped)
    bundle.run(configs, dataset_dir=str(cohort), output_dir=str(stopped), max_epochs=3, **settings)
    a, b = _final(straight), _final(stopped)
    assert b["trainer"]["iteration"] == a["trainer"]["iteration"] == 3 * a["trainer"]["epoch_length"]
    moved = not torch.equal(after_one["group_weights"]["log_weights"], b["group_weights"]["log_weights"])
    assert moved == (mode == "groupdro")  # the resumed epochs updated the robust weights; ERM keeps them fixed
    for key in ("network", "optimizer", "group_weights"):
        _assert_same(a[key], b[key], key)
