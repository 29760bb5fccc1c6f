"""Exact resume: a run stopped after epoch k and resumed from its checkpoint trains only the remaining
epochs, keeps its report history, and ends with the same network weights, optimizer state and group
weights as an uninterrupted run, bit for bit (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_MNMS
from ignite.engine import Events

from mnms_groupdistil.tools import export

#: Three epochs of the tiny run (stopped after the first), ResNet-18.
SETTINGS = {**TINY_MNMS, "max_epochs": 3, "network_name": "resnet18"}
# one-group batches (GroupBatchSampler) with the random transforms in the loader, a constant learning
# rate, no averaging and precise BatchNorm; shuffled batches (RandomSampler) with the random rotation and
# flips on the training device and the defaults (cosine schedule, weight averaging); balanced batches
# with a warmed-up cosine schedule and weight averaging (its BatchNorm recomputed)
ONE_GROUP = {"batching": "one_group", "lr_schedule": "constant", "weight_averaging": "none", "precise_bn": True}
RUNS = {
    "groupdro": (["train.json", "train_groupdro.json"], {**ONE_GROUP, "precise_bn_batches": 2}),
    "erm": (["train.json", "train_erm.json"], {"augment_on_device": True}),
    "averaged": (
        ["train.json", "train_groupdro.json"],
        {
            "batching": "balanced",
            "lr_schedule": "cosine",
            "warmup_epochs": 0.5,
            "weight_averaging": "ema",
            "ema_epochs": 0.5,
            "precise_bn_batches": 2,
            "augment_on_device": True,
        },
    ),
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
    settings = {**SETTINGS, **settings}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    bundle.run(configs, dataset_dir=str(cohort), output_dir=str(straight), **settings)
    # the stopped run is the same 3-epoch run (its learning-rate schedule and weight averaging span 3
    # epochs), ended after epoch 1 as a signal ends it: the trainer stops, the final checkpoint is saved
    first = bundle.make(configs, dataset_dir=str(cohort), output_dir=str(stopped), **settings)
    first.initialize()
    first_trainer = first.parser.get_parsed_content("train#trainer")
    first_trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    first.run()
    first.finalize()
    after_one = _final(stopped)
    epoch_length = after_one["trainer"]["epoch_length"]
    assert after_one["trainer"]["iteration"] == epoch_length
    robust = not mode.startswith("erm")
    updates_per_iteration = 1 if robust else 0  # robust weights move every step; ERM's never
    assert int(after_one["group_weights"]["num_updates"]) == updates_per_iteration * epoch_length
    first_report = json.loads((stopped / "metrics.json").read_text())

    workflow = bundle.make(configs, dataset_dir=str(cohort), output_dir=str(stopped), **settings)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    epochs_run, iterations_run = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations_run.append(e.state.iteration))
    workflow.run()
    workflow.finalize()
    assert epochs_run == [2, 3], f"the resumed run trained epochs {epochs_run}, expected only 2 and 3"
    assert iterations_run == list(range(epoch_length + 1, 3 * epoch_length + 1))

    a, b = _final(straight), _final(stopped)
    assert b["trainer"]["iteration"] == a["trainer"]["iteration"] == 3 * epoch_length
    # the group weights continued (a restart would have counted only the resumed epochs' updates)
    assert int(b["group_weights"]["num_updates"]) == updates_per_iteration * 3 * epoch_length
    moved = not torch.equal(after_one["group_weights"]["log_weights"], b["group_weights"]["log_weights"])
    assert moved == robust  # the resumed epochs updated the robust weights; ERM keeps them fixed
    for key in ("network", "optimizer", "group_weights", "averaging"):
        _assert_same(a[key], b[key], key)
    model = torch.load(stopped / "model_final.pt", map_location="cpu", weights_only=True)
    recorded = json.loads((stopped / "run_config.json").read_text())["settings"]
    if recorded["weight_averaging"] == "ema":
        # the averaged network (its BatchNorm recomputed) is what is saved as the run's model, not the trained one
        averaged = {k[len("module.") :]: v for k, v in b["averaging"]["averaged"].items() if k.startswith("module.")}
        _assert_same(model, averaged, "model_final")
        assert not torch.equal(model["fc.weight"], b["network"]["fc.weight"])
        assert int(b["averaging"]["averaged"]["n_averaged"]) == 3 * epoch_length
    else:
        _assert_same(model, b["network"], "model_final")
        assert b["averaging"] == {}
    if mode == "averaged":  # and it is what an exported bundle holds
        export.export_bundle(stopped, tmp_path / "exported")
        exported = torch.load(tmp_path / "exported" / "models" / "model.pt", map_location="cpu", weights_only=True)
        _assert_same(exported, export.to_monai_state_dict("resnet18", averaged), "exported")
    # BatchNorm statistics recomputed over the last epoch's first balanced batches (at most one epoch's
    # worth), or tracked over every step
    recomputed = recorded["precise_bn"] or recorded["weight_averaging"] == "ema"
    tracked = min(settings.get("precise_bn_batches", 16), epoch_length) if recomputed else 3 * epoch_length
    assert int(model["bn1.num_batches_tracked"]) == tracked

    report = json.loads((stopped / "metrics.json").read_text())
    # the history of the first run survives the resume; the last epoch is reported
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    assert report["history"][0] == first_report["history"][0]
    assert report["selection"] == {"rule": "last_epoch", "epoch": 3, "checkpoint": "model_final.pt"}
    assert report["metrics"] == report["history"][2]["metrics"]
    # the checkpoints of the first run were removed once the resumed run had saved a newer one
    assert sorted(p.name for p in stopped.glob("checkpoint*.pt")) == [
        "checkpoint_epoch=3.pt",
        "checkpoint_final.pt",
    ]
