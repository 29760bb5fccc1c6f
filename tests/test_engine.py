"""The engine of both bundles: the training loader (the ``batching`` setting, and the setting it replaced), the
evaluators and their metrics, the report, the training samples' groups and the teacher."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import SequentialSampler

from mnms_groupdistil.engine import (
    GroupEvaluation,
    group_evaluator,
    metrics_report,
    sample_groups,
    train_loader,
    trained_network,
)
from mnms_groupdistil.errors import InputError, SettingError
from mnms_groupdistil.samplers import BalancedBatchSampler, GroupBatchSampler

GROUPS = [0] * 12 + [1] * 6 + [2] * 3
DATA = list(range(len(GROUPS)))


def test_each_batching_gives_its_batches():
    one_group = train_loader(DATA, GROUPS, "one_group", batch_size=3, seed=0)
    assert isinstance(one_group.batch_sampler, GroupBatchSampler)
    assert all(len({GROUPS[int(i)] for i in batch}) == 1 for batch in one_group)

    balanced = train_loader(DATA, GROUPS, "balanced", batch_size=6, seed=0)
    assert isinstance(balanced.batch_sampler, BalancedBatchSampler)
    assert all(Counter(GROUPS[int(i)] for i in batch) == {0: 2, 1: 2, 2: 2} for batch in balanced)

    mixed = train_loader(DATA, GROUPS, "mixed", batch_size=4, sampler=SequentialSampler(DATA))
    assert [batch.tolist() for batch in mixed][:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the sampler given is used
    assert sorted(int(i) for batch in train_loader(DATA, GROUPS, "mixed", batch_size=4) for i in batch) == DATA


def test_the_replaced_setting_names_its_replacement():
    with pytest.raises(InputError, match="use --batching one_group instead of --group_batches True"):
        train_loader(DATA, GROUPS, "balanced", 4, group_batches=True)
    with pytest.raises(InputError, match="use --batching mixed instead of --group_batches False"):
        train_loader(DATA, GROUPS, "balanced", 4, group_batches=False)
    with pytest.raises(InputError, match="batching='balance' is not a batch composition"):
        train_loader(DATA, GROUPS, "balance", 4)
    with pytest.raises(InputError, match="3 group ids for a training dataset of 21"):
        train_loader(DATA, [0, 1, 2], "mixed", 4)


# ------------------------------------------------------------------------------- the evaluators


def _evaluation(reductions=("worst", "mean", "adjusted", "none"), levels=("frame",)) -> GroupEvaluation:
    """A network whose logits are ``(0, sum of the image)``: it predicts class 1 exactly for a positive sum."""
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        network[1].weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
    return GroupEvaluation(network, ["a", "b", "c"], reductions, levels, train_counts=[6, 3, 1])


# group a: 2 of 2 right, b: 1 of 2, c: 0 of 2
SAMPLES = [
    {"image": torch.full((1, 2, 2), float(sign)), "label": label, "group": group, "subject": f"s{i}"}
    for i, (sign, label, group) in enumerate([(1, 1, 0), (-1, 0, 0), (1, 1, 1), (1, 0, 1), (-1, 1, 2), (1, 0, 2)])
]


def test_an_evaluator_computes_its_metrics_by_name():
    loader = torch.utils.data.DataLoader(SAMPLES, batch_size=4)
    evaluator = group_evaluator(_evaluation(), "test", loader)
    evaluator.run()
    assert evaluator.state.key_metric_name is None  # test data ranks nothing
    metrics = dict(evaluator.state.metrics)
    assert metrics.pop("test_acc") == {"test_acc_a": 1.0, "test_acc_b": 0.5, "test_acc_c": 0.0}  # and one by one:
    assert metrics == pytest.approx(
        {
            "test_worst_group_acc": 0.0,
            "test_mean_group_acc": 0.5,
            "test_adjusted_average_acc": (6 * 1.0 + 3 * 0.5 + 1 * 0.0) / 10,
            "test_acc_a": 1.0,
            "test_acc_b": 0.5,
            "test_acc_c": 0.0,
        }
    )
    validator = group_evaluator(_evaluation(), "val", loader, select_model=True)
    validator.run()
    assert validator.state.key_metric_name == "val_worst_group_acc"
    assert set(validator.state.metrics) == {
        "val_acc",
        "val_worst_group_acc",
        "val_mean_group_acc",
        "val_adjusted_average_acc",
        "val_acc_a",
        "val_acc_b",
        "val_acc_c",
    }


def test_the_report_and_the_metric_names_of_an_evaluation(tmp_path):
    evaluation = _evaluation(reductions=("worst", "none"), levels=("frame", "patient"))
    assert list(evaluation.metrics("val")) == [
        "val_worst_group_acc",
        "val_acc",
        "val_patient_worst_group_acc",
        "val_patient_acc",
    ]
    report = metrics_report(tmp_path / "m.json", evaluation, ["test", "val"], {"mode": "erm"}, "val_acc_a", False)
    assert report.group_metric_prefixes == ["test_acc", "test_patient_acc", "val_acc", "val_patient_acc"]
    assert report.summary_metrics == [
        "test_worst_group_acc",
        "test_patient_worst_group_acc",
        "val_worst_group_acc",
        "val_patient_worst_group_acc",
    ]
    assert report.select_by is None  # no validation data: the last epoch is reported
    assert report.extra == {"mode": "erm", "train_group_counts": {"a": 6, "b": 3, "c": 1}}
    with pytest.raises(SettingError, match=r"metric_reductions \['mean', 'none'\] lack 'worst'"):
        _evaluation(reductions=("mean", "none"))
    with pytest.raises(InputError, match="metric level='patients' is not valid"):
        _evaluation(levels=("patients",))


def test_the_groups_of_the_training_samples_and_an_unused_teacher(tmp_path):
    assert sample_groups([{"group": 2}, {"group": 0, "subject": "x"}]) == [2, 0]
    with pytest.raises(InputError, match=r"train#frames: 1 sample\(s\) without a 'group' entry \(indices 1\)"):
        sample_groups([{"group": 2}, {"subject": "x"}], "train#frames")
    # a run that does not distil needs no teacher checkpoint: it is not read
    assert trained_network(torch.nn.Linear(1, 1), tmp_path / "missing.pt", "cpu", enabled=False) is None
