"""Losses and group weights checked against hand computations and direct formulas."""

import math

import numpy as np
import pytest
import torch

from mnms_groupdistil.losses import (
    CrossEntropyLoss,
    DistillationLoss,
    GroupWeightedLoss,
    GroupWeights,
    cross_entropy_loss,
    distillation_loss,
    group_sums,
    mode_flags,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kd_reference(zs, zt, y, temperature, alpha):
    """The paper's formula, written out in numpy, one sample at a time."""
    out = []
    for s, t, label in zip(zs, zt, y):
        p = _softmax(s[None])[0]
        ce = -math.log(p[label])
        ps = _softmax(s[None] / temperature)[0]
        pt = _softmax(t[None] / temperature)[0]
        kl = sum(pt[k] * (math.log(pt[k]) - math.log(ps[k])) for k in range(len(s)))
        out.append((1 - alpha) * ce + alpha * temperature**2 * kl)
    return np.array(out)


def test_distillation_loss_matches_direct_formula():
    zs = np.array([[1.0, -0.5, 0.3], [0.2, 0.1, -1.0], [3.0, 0.0, 0.5]])
    zt = np.array([[0.4, 0.9, -0.2], [2.0, -1.0, 0.0], [0.1, 0.2, 0.3]])
    y = np.array([0, 2, 1])
    got = distillation_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), temperature=4.0, alpha=0.9)
    np.testing.assert_allclose(got.numpy(), _kd_reference(zs, zt, y, 4.0, 0.9), rtol=1e-6)
    got2 = distillation_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), temperature=2.0, alpha=0.3)
    np.testing.assert_allclose(got2.numpy(), _kd_reference(zs, zt, y, 2.0, 0.3), rtol=1e-6)


def test_hand_computed_two_class_example():
    # student logits (0, 0): p = (1/2, 1/2); teacher logits (0, 4 ln 3) at T=4: q = (1/4, 3/4)
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[0.0, 4 * math.log(3.0)]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    expected = 0.1 * math.log(2.0) + 0.9 * 16 * kl
    assert distillation_loss(zs, zt, torch.tensor([1]), 4.0, 0.9).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_and_identical_logits_leave_only_ce():
    torch.manual_seed(0)
    zs, zt = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 1])
    ce = torch.nn.functional.cross_entropy(zs, y, reduction="none")
    torch.testing.assert_close(distillation_loss(zs, zt, y, 4.0, 0.0), ce)
    torch.testing.assert_close(cross_entropy_loss(zs, y), ce)
    torch.testing.assert_close(distillation_loss(zs, zs.clone(), y, 4.0, 0.9), 0.1 * ce, atol=1e-6, rtol=1e-6)


def test_distillation_is_stable_and_teacher_gets_no_gradient():
    zs = torch.tensor([[1000.0, -1000.0]], requires_grad=True)
    zt = torch.tensor([[-1000.0, 1000.0]], requires_grad=True)
    loss = distillation_loss(zs, zt, torch.tensor([0]), 4.0, 0.9)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert zt.grad is None
    assert torch.isfinite(zs.grad).all()


def test_labels_with_channel_dim_and_bad_inputs():
    zs, zt = torch.zeros(2, 3), torch.zeros(2, 3)
    a = distillation_loss(zs, zt, torch.tensor([[1], [2]]))
    b = distillation_loss(zs, zt, torch.tensor([1, 2]))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(zs, zt, torch.tensor([1, 2]), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(zs, torch.zeros(2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="teacher"):
        DistillationLoss()(zs, torch.tensor([1, 2]))
    torch.testing.assert_close(CrossEntropyLoss()(zs, torch.tensor([1, 2])), torch.full((2,), math.log(3.0)))


def test_group_sums_one_hot():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    sums, counts = group_sums(losses, torch.tensor([0, 2, 0, 2]), 3)
    assert sums.tolist() == [4.0, 0.0, 6.0]
    assert counts.tolist() == [2.0, 0.0, 2.0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        group_sums(losses, torch.tensor([0, 1, 3, 0]), 3)


def test_weight_update_hand_computed():
    weights = GroupWeights(3, step_size=0.5)
    weights.update(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([True, True, True]))
    e = [math.exp(0.5), math.exp(1.0), 1.0]
    expected = [x / sum(e) for x in e]
    assert weights.weights.tolist() == pytest.approx(expected, rel=1e-12)
    # second step on groups 0 and 2 only: group 1's unnormalised weight stays, then renormalise
    weights.update(torch.tensor([2.0, 99.0, 1.0]), torch.tensor([True, False, True]))
    e2 = [expected[0] * math.exp(1.0), expected[1], expected[2] * math.exp(0.5)]
    assert weights.weights.tolist() == pytest.approx([x / sum(e2) for x in e2], rel=1e-12)
    assert int(weights.num_updates) == 2


def test_absent_group_keeps_weight_when_others_do_not_move():
    weights = GroupWeights(4, step_size=1.0)
    before = weights.weights.clone()
    weights.update(torch.tensor([0.0, 5.0, 0.0, 0.0]), torch.tensor([True, False, True, True]))
    torch.testing.assert_close(weights.weights, before)


def test_long_run_does_not_overflow():
    weights = GroupWeights(2, step_size=1.0)
    for _ in range(10000):
        weights.update(torch.tensor([50.0, 0.0]), torch.tensor([True, True]))
    w = weights.weights
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0)
    assert w[0].item() == pytest.approx(1.0)


def test_generalization_adjustment():
    weights = GroupWeights(2, step_size=1.0, adjustment=2.0, group_counts=[4, 16])
    weights.update(torch.tensor([0.0, 0.0]), torch.tensor([True, True]))
    e = [math.exp(2.0 / 2.0), math.exp(2.0 / 4.0)]
    assert weights.weights.tolist() == pytest.approx([x / sum(e) for x in e])


def test_generalization_adjustment_reaches_absent_groups_every_step():
    """C / sqrt(n_d) is added to every group each step; the batch's loss only to the groups in it.

    Hand derivation, eta = 0.1, C = 1, n = (100, 25, 4): adjustments (0.1, 0.2, 0.5).
    Step 1, only group 0 present with loss 0.7: log-weight increments 0.1 * (0.8, 0.2, 0.5).
    Step 2, only group 2 present with loss 0.3 (group 0's entry 9.0 is ignored): 0.1 * (0.1, 0.2, 0.8).
    Total from uniform: (0.09, 0.04, 0.13) -> w = exp(total) / sum(exp(total)).
    """
    weights = GroupWeights(3, step_size=0.1, adjustment=1.0, group_counts=[100, 25, 4])
    weights.update(torch.tensor([0.7, 0.0, 0.0], dtype=torch.float64), torch.tensor([True, False, False]))
    weights.update(torch.tensor([9.0, 0.0, 0.3], dtype=torch.float64), torch.tensor([False, False, True]))
    e = [math.exp(0.09), math.exp(0.04), math.exp(0.13)]
    assert weights.weights.tolist() == pytest.approx([x / sum(e) for x in e], abs=1e-12)
    # the returned objective leaves the constant out: sum_d w_d * mean_d
    objective = GroupWeightedLoss(GroupWeights(2, step_size=0.5, adjustment=3.0, group_counts=[9, 36]))
    result = objective.evaluate(torch.tensor([2.0, 4.0]), torch.tensor([0, 0]))
    # w from uniform after increments 0.5 * (3 + 1, 0 + 0.5) = (2, 0.25); mean_0 = 3, group 1 absent
    w0 = math.exp(2.0) / (math.exp(2.0) + math.exp(0.25))
    assert result.loss.item() == pytest.approx(w0 * 3.0, abs=1e-6)
    with pytest.raises(ValueError, match="group_counts"):
        GroupWeights(2, adjustment=1.0)


def test_state_dict_round_trip_with_weights_only(tmp_path):
    weights = GroupWeights(3, step_size=0.1)
    for losses in ([1.0, 0.2, 0.3], [0.5, 2.0, 0.1]):
        weights.update(torch.tensor(losses), torch.tensor([True, True, True]))
    path = tmp_path / "gw.pt"
    torch.save({"group_weights": weights.state_dict()}, path)
    restored = GroupWeights(3, step_size=0.1)
    restored.load_state_dict(torch.load(path, weights_only=True)["group_weights"])
    assert torch.equal(restored.log_weights, weights.log_weights)
    assert int(restored.num_updates) == 2
    with pytest.raises(ValueError, match="3 groups, this run has 2"):
        GroupWeights(2).load_state_dict(weights.state_dict())


def test_algorithm1_single_group_batch():
    """One group per batch: w_d updated first, objective = updated w_d * mean loss."""
    weights = GroupWeights(3, step_size=0.01)
    objective = GroupWeightedLoss(weights, robust=True)
    losses = torch.tensor([0.6, 1.0, 0.8], requires_grad=True)
    out = objective.evaluate(losses, torch.tensor([1, 1, 1]))
    e = [1.0, math.exp(0.01 * 0.8), 1.0]
    w1 = e[1] / sum(e)
    assert out.loss.item() == pytest.approx(w1 * 0.8, rel=1e-6)
    out.loss.backward()
    torch.testing.assert_close(losses.grad, torch.full((3,), w1 / 3), rtol=1e-6, atol=0)
    assert out.group_counts.tolist() == [0, 3, 0]
    assert math.isnan(out.group_losses[0]) and out.group_losses[1].item() == pytest.approx(0.8)


def test_mixed_batch_online_groupdro():
    weights = GroupWeights(3, step_size=0.5)
    objective = GroupWeightedLoss(weights, robust=True)
    losses = torch.tensor([1.0, 3.0, 2.0, 0.5])
    groups = torch.tensor([0, 0, 2, 2])  # means: g0 = 2.0, g2 = 1.25, g1 absent
    loss = objective(losses, groups)
    e = [math.exp(0.5 * 2.0), 1.0, math.exp(0.5 * 1.25)]
    w = [x / sum(e) for x in e]
    assert loss.item() == pytest.approx(w[0] * 2.0 + w[2] * 1.25, rel=1e-6)


def test_step_size_zero_is_plain_kd():
    torch.manual_seed(0)
    zs, zt = torch.randn(6, 2), torch.randn(6, 2)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    groups = torch.tensor([0, 1, 2, 0, 1, 2])  # every group equally represented
    per_sample = distillation_loss(zs, zt, y)
    plain_kd = per_sample.mean()
    robust = GroupWeightedLoss(GroupWeights(3, step_size=0.0), robust=True)
    for _ in range(5):
        assert robust(per_sample, groups).item() == pytest.approx(plain_kd.item(), rel=1e-6)
    assert robust.group_weights.weights.tolist() == pytest.approx([1 / 3] * 3, abs=0)
    fixed = GroupWeightedLoss(GroupWeights(3, step_size=0.01), robust=False)
    assert torch.equal(fixed(per_sample, torch.tensor([0, 0, 0, 0, 1, 2])), plain_kd)
    assert fixed.group_weights.weights.tolist() == pytest.approx([1 / 3] * 3, abs=0)


def test_metatensor_inputs_leave_plain_tensors_in_the_weights(tmp_path):
    """Network outputs are MONAI MetaTensors; the saved weights must still load with weights_only=True."""
    from monai.data import MetaTensor

    weights = GroupWeights(2, step_size=0.1)
    logits = MetaTensor(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), meta={"x": 1})
    losses = cross_entropy_loss(logits, MetaTensor(torch.tensor([1, 1])))
    GroupWeightedLoss(weights)(losses, MetaTensor(torch.tensor([0, 1])))
    assert type(weights.log_weights) is torch.Tensor
    torch.save(weights.state_dict(), tmp_path / "w.pt")
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["log_weights"], weights.log_weights)


def test_mode_flags_and_mistyped_modes():
    assert mode_flags("erm") == (False, False)
    assert mode_flags("groupdro") == (True, False)
    assert mode_flags("kd") == (False, True)
    assert mode_flags("groupdistil") == (True, True)
    assert mode_flags("groupdistil").robust and mode_flags("kd").distil
    for bad in ("groupdistill", "ERM", "group_dro", "", None):
        with pytest.raises(ValueError, match="valid modes: erm, groupdro, kd, groupdistil"):
            mode_flags(bad)
