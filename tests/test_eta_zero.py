"""What GroupDistil with group step size ``eta_w = 0`` is, and when it is exactly KD.

With ``eta_w = 0`` the group weights stay uniform, ``w_d = 1/G``. On a batch with ``n_d`` samples of
group ``d`` (``B`` in all) the robust objective is ``sum_d (1/G) * (1/n_d) * sum_{i in d} l_i``: sample
``i`` weighs ``1/(G n_d(i))``. KD's objective weighs every sample ``1/B``. The two are the same function
of the losses, and so give the same gradients, exactly when ``n_d = B/G`` for every group. Then
training GroupDistil (``eta_w = 0``, mixed batches: the same shuffled loader as KD) gives KD's
network, up to floating-point rounding; on unbalanced batches it does not.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import TINY_MNMS

from mnms_groupdistil.losses import GroupWeightedLoss, GroupWeights
from mnms_groupdistil.networks import build_network


def objective(losses: list[float], groups: list[int], robust: bool) -> tuple[float, list[float], GroupWeights]:
    """The objective, its gradient with respect to each sample's loss, and the weights afterwards."""
    weights = GroupWeights(3, step_size=0.0)
    values = torch.tensor(losses, requires_grad=True)
    loss = GroupWeightedLoss(weights, robust=robust)(values, torch.tensor(groups))
    loss.backward()
    return float(loss.detach()), values.grad.tolist(), weights


def test_balanced_batch_gives_the_kd_objective_and_gradient():
    # groups 0, 1, 2 twice each: robust (1/3) * ((1 + 4) / 2 + (2 + 5) / 2 + (3 + 6) / 2) = 3.5 = 21 / 6
    losses, groups = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0, 1, 2, 0, 1, 2]
    robust, robust_grad, weights = objective(losses, groups, robust=True)
    plain, plain_grad, _ = objective(losses, groups, robust=False)
    assert robust == pytest.approx(3.5) and plain == pytest.approx(3.5)
    assert robust_grad == pytest.approx([1 / 6] * 6) and plain_grad == pytest.approx([1 / 6] * 6)
    assert torch.equal(weights.log_weights, GroupWeights(3, step_size=0.0).log_weights)  # still exactly uniform


def test_unbalanced_batch_is_group_balanced_kd_not_kd():
    # n = (2, 2, 1): robust (1/3) * (1.5 + 3.5 + 6) = 11/3; KD 16/5; sample weights 1/(3 n_d) vs 1/5
    losses, groups = [1.0, 2.0, 3.0, 4.0, 6.0], [0, 0, 1, 1, 2]
    robust, robust_grad, _ = objective(losses, groups, robust=True)
    plain, plain_grad, _ = objective(losses, groups, robust=False)
    assert robust == pytest.approx(11 / 3) and plain == pytest.approx(16 / 5)
    assert robust_grad == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 3])
    assert plain_grad == pytest.approx([1 / 5] * 5)


def test_one_group_batch_is_kd_scaled_by_one_over_g():
    # Algorithm 1's one-group batches: (1/3) * mean = (1/3) * 3 = 1, gradient 1/(3 * 4) per sample
    robust, robust_grad, _ = objective([1.0, 2.0, 3.0, 6.0], [1, 1, 1, 1], robust=True)
    assert robust == pytest.approx(1.0) and robust_grad == pytest.approx([1 / 12] * 4)


# --------------------------------------------------------------------- through the bundle


def train(bundle, cohort: Path, teacher: Path, out: Path, configs: list[str], **overrides) -> dict[str, torch.Tensor]:
    """Train through the bundle's configs (2 epochs, 16 px, 4 frames per patient); the final network."""
    settings = {**TINY_MNMS, "max_epochs": 2, "image_size": 16, "frames_per_patient": 4, "network_name": "resnet18"}
    settings = {**settings, "batching": "mixed", **overrides}
    bundle.run(configs, dataset_dir=str(cohort), output_dir=str(out), teacher_ckpt=str(teacher), **settings)
    return torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


@pytest.mark.slow
def test_eta_zero_trains_kd_exactly_on_balanced_batches(bundle, cohort, untrained_teacher, tmp_path):
    # the "tiny" cohort's demo split trains on one patient per vendor and class: 2 per vendor, 8 frames each;
    # one batch of 64 holds all 24 training frames, so every batch is balanced over the 3 vendors
    kd = train(bundle, cohort, untrained_teacher, tmp_path / "kd", ["train.json", "train_kd.json"], batch_size=64)
    split = json.loads((tmp_path / "kd" / "split.json").read_text())
    assert Counter(r["vendor"] for r in split["train"]) == {"A": 2, "C": 2, "D": 2}
    eta0 = train(
        bundle, cohort, untrained_teacher, tmp_path / "eta0", ["train.json"], batch_size=64, group_step_size=0.0
    )
    checkpoint = torch.load(tmp_path / "eta0" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert torch.equal(checkpoint["group_weights"]["log_weights"], GroupWeights(3, 0.0).log_weights)
    assert max_difference(kd, eta0) < 1e-5
    # and the trained networks give the same predictions
    net_kd, net_eta0 = (build_network("resnet18", num_classes=2, in_channels=1) for _ in range(2))
    net_kd.load_state_dict(kd)
    net_eta0.load_state_dict(eta0)
    inputs = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(net_kd.eval()(inputs), net_eta0.eval()(inputs), atol=1e-5)


@pytest.mark.slow
def test_eta_zero_is_not_kd_on_unbalanced_batches(bundle, cohort, untrained_teacher, tmp_path):
    # batches of 5 out of 24 shuffled frames cannot all hold the three vendors equally often
    unbalanced = {"batch_size": 5, "max_epochs": 1}
    kd = train(bundle, cohort, untrained_teacher, tmp_path / "kd", ["train.json", "train_kd.json"], **unbalanced)
    eta0 = train(
        bundle, cohort, untrained_teacher, tmp_path / "eta0", ["train.json"], group_step_size=0.0, **unbalanced
    )
    assert max_difference(kd, eta0) > 1e-3


@pytest.mark.slow
def test_eta_zero_trains_kd_on_balanced_batches(bundle, cohort, untrained_teacher, tmp_path):
    # batches of 6 from the 3 vendors' frames: 2 of each vendor in every batch, for both runs
    balanced = {"batch_size": 6, "max_epochs": 1, "batching": "balanced"}
    kd = train(bundle, cohort, untrained_teacher, tmp_path / "kd", ["train.json", "train_kd.json"], **balanced)
    eta0 = train(bundle, cohort, untrained_teacher, tmp_path / "eta0", ["train.json"], group_step_size=0.0, **balanced)
    assert max_difference(kd, eta0) < 1e-5
