"""The loss path never reads a value back to the host: group ids checked once per dataset, weights on the device.

The ``meta`` device stands in for an accelerator: a meta tensor has no values, so any host read
(``int(t)``, ``.item()``, ``.tolist()``, a copy to the CPU) raises.
"""

from __future__ import annotations

import math

import pytest
import torch

from mnms_groupdistil.losses import GroupWeightedLoss, GroupWeights, count_groups, distillation_loss, group_sums


def test_count_groups_counts_and_checks_once():
    assert count_groups([0, 2, 2, 1, 2], 3) == [1, 1, 3]
    assert count_groups(torch.tensor([1, 1]), 3) == [0, 2, 0]
    with pytest.raises(ValueError, match=r"train#dataset: group ids must lie in \[0, 3\), got values \[0, 3\]"):
        count_groups([0, 3], 3, "train#dataset")
    with pytest.raises(ValueError, match="must lie in"):
        count_groups([-1, 0], 3)
    with pytest.raises(ValueError, match="must be integers"):
        count_groups([0.0, 1.0], 3)


def test_loss_path_runs_without_host_reads():
    weights = GroupWeights(3, step_size=0.01).to("meta")
    objective = GroupWeightedLoss(weights, robust=True)
    student = torch.empty(4, 2, device="meta", requires_grad=True)
    teacher = torch.empty(4, 2, device="meta")
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    groups = torch.zeros(4, dtype=torch.long, device="meta")
    result = objective.evaluate(distillation_loss(student, teacher, labels), groups)
    result.loss.backward()
    assert result.loss.device.type == "meta" and weights.device.type == "meta"
    assert int(weights.num_updates) == 1  # the update counter stays on the host
    sums, counts = group_sums(torch.empty(4, device="meta"), groups, 3)
    assert sums.shape == counts.shape == (3,)


def test_weights_follow_the_losses_device_and_save_to_cpu():
    weights = GroupWeights(2, step_size=1.0)
    weights.to("meta")
    weights.update(torch.empty(2, device="meta"), torch.ones(2, dtype=torch.bool, device="meta"))
    assert weights.weights.device.type == "meta"
    # a CPU state dict loads into weights on another device and keeps them there
    state = {"log_weights": torch.log(torch.tensor([0.25, 0.75], dtype=torch.float64)), "num_updates": torch.tensor(5)}
    weights.load_state_dict(state)
    assert weights.device.type == "meta" and int(weights.num_updates) == 5


def test_state_dict_is_cpu_and_update_rule_unchanged(tmp_path):
    # w <- w * exp(eta * l) for present groups, renormalised: (1/2 e^{0.5}, 1/2) / (1/2 e^{0.5} + 1/2)
    weights = GroupWeights(2, step_size=0.5)
    weights.update(torch.tensor([1.0, 7.0]), torch.tensor([True, False]))
    expected = math.exp(0.5) / (math.exp(0.5) + 1.0)
    assert weights.weights.tolist() == pytest.approx([expected, 1 - expected], abs=1e-15)
    path = tmp_path / "w.pt"
    torch.save(weights.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["log_weights"].device.type == "cpu" and state["log_weights"].dtype == torch.float64
    restored = GroupWeights(2, step_size=0.5)
    restored.load_state_dict(state)
    assert torch.equal(restored.weights, weights.weights)
