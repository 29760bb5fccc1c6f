"""Group accuracy summaries against hand-counted examples."""

import math

import pytest
import torch
from ignite.engine import Engine

from mnms_groupdistil.metrics import (
    GroupAccuracy,
    adjusted_average_accuracy,
    group_accuracies,
    mean_group_accuracy,
    patient_majority_vote,
    worst_group_accuracy,
)


def test_group_accuracies_and_summaries():
    correct = torch.tensor([1, 1, 0, 1, 0, 0, 1])
    groups = torch.tensor([0, 0, 0, 2, 2, 2, 2])
    acc = group_accuracies(correct, groups, 3)
    assert acc[0].item() == pytest.approx(2 / 3)
    assert math.isnan(acc[1].item())
    assert acc[2].item() == pytest.approx(2 / 4)
    assert worst_group_accuracy(acc) == pytest.approx(0.5)
    assert mean_group_accuracy(acc) == pytest.approx((2 / 3 + 0.5) / 2)
    # Waterbirds-style adjusted average: weights 3498/184/56/1057
    accs = torch.tensor([0.99, 0.80, 0.70, 0.95], dtype=torch.float64)
    counts = [3498, 184, 56, 1057]
    expected = (0.99 * 3498 + 0.80 * 184 + 0.70 * 56 + 0.95 * 1057) / 4795
    assert adjusted_average_accuracy(accs, counts) == pytest.approx(expected)
    # a group without evaluation samples is left out and proportions renormalised
    assert adjusted_average_accuracy(acc, [10, 99, 30]) == pytest.approx((2 / 3 * 10 + 0.5 * 30) / 40)


def test_patient_majority_vote_with_tie_break():
    # patient p1: votes 2x class1, 1x class0 -> 1; patient p2: 1-1 tie, summed scores favour class 0
    scores = torch.tensor([[0.1, 0.9], [0.4, 0.6], [0.7, 0.3], [0.95, 0.05], [0.4, 0.6]])
    labels = torch.tensor([1, 1, 1, 0, 0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    pred, lab, grp = patient_majority_vote(scores, labels, groups, ["p1", "p1", "p1", "p2", "p2"])
    assert pred.tolist() == [1, 0] and lab.tolist() == [1, 0] and grp.tolist() == [0, 1]
    with pytest.raises(ValueError, match="p3"):
        patient_majority_vote(scores[:2], torch.tensor([0, 1]), groups[:2], ["p3", "p3"])


def _run_metric(metric, batches, decollate):
    def step(engine, batch):
        if decollate:
            engine.state.batch = [{"group": g, "subject": s} for g, s in zip(batch["group"], batch["subject"])]
            return [{"pred": p, "label": y} for p, y in zip(batch["pred"], batch["label"])]
        return {"pred": batch["pred"], "label": batch["label"]}

    engine = Engine(step)
    metric.attach(engine, "val_acc")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics


@pytest.mark.parametrize("decollate", [False, True])
def test_ignite_metric_frame_and_patient_level(decollate):
    # frames: subject a (group 0, label 1): predicted 1,1,0 -> patient right; frames 2/3 right
    #         subject b (group 1, label 0): predicted 1,1 -> wrong; frames 0/2
    #         subject c (group 1, label 1): predicted 1 -> right; frames 1/1
    pred = torch.tensor([[0, 1], [0, 1], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=torch.float32)
    batches = [
        {"pred": pred[:3], "label": torch.tensor([1, 1, 1]), "group": torch.tensor([0, 0, 0]), "subject": ["a"] * 3},
        {
            "pred": pred[3:],
            "label": torch.tensor([0, 0, 1]),
            "group": torch.tensor([1, 1, 1]),
            "subject": ["b", "b", "c"],
        },
    ]
    metrics = _run_metric(GroupAccuracy(["A", "C"], reduction="none"), batches, decollate)
    assert metrics["val_acc_A"] == pytest.approx(2 / 3)
    assert metrics["val_acc_C"] == pytest.approx(1 / 3)
    assert _run_metric(GroupAccuracy(["A", "C"], reduction="worst"), batches, decollate)["val_acc"] == pytest.approx(
        1 / 3
    )
    assert _run_metric(GroupAccuracy(["A", "C"], reduction="average"), batches, decollate)["val_acc"] == pytest.approx(
        3 / 6
    )
    patient = _run_metric(GroupAccuracy(["A", "C"], reduction="none", level="patient"), batches, decollate)
    assert patient["val_acc_A"] == 1.0 and patient["val_acc_C"] == 0.5
    mean = _run_metric(GroupAccuracy(["A", "C"], reduction="mean", level="patient"), batches, decollate)
    assert mean["val_acc"] == pytest.approx(0.75)


def test_metric_argument_errors():
    with pytest.raises(ValueError, match="reduction"):
        GroupAccuracy(["A"], reduction="median")
    with pytest.raises(ValueError, match="train_counts"):
        GroupAccuracy(["A", "B"], reduction="adjusted")
    with pytest.raises(ValueError, match="level"):
        GroupAccuracy(["A"], level="slice")
