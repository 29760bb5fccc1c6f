"""Group weights under torch.distributed (gloo on the CPU): every rank ends with the same weights,
equal to a single process seeing the union of the ranks' batches."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnms_groupdistil.losses import GroupWeightedLoss, GroupWeights

# rank 0 sees groups 0 and 1, rank 1 sees groups 1 and 2
BATCHES = {
    0: (torch.tensor([1.0, 3.0, 0.5]), torch.tensor([0, 0, 1])),
    1: (torch.tensor([1.5, 2.0, 4.0]), torch.tensor([1, 2, 2])),
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        objective = GroupWeightedLoss(GroupWeights(3, step_size=0.5), robust=True)
        losses, groups = BATCHES[rank]
        losses = losses.clone().requires_grad_(True)
        loss = objective(losses, groups)
        loss.backward()
        results[rank] = (objective.group_weights.weights.tolist(), loss.item(), losses.grad.tolist())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_ranks_hold_the_weights_of_the_global_batch():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    # global per-group means: g0 = (1 + 3) / 2 = 2, g1 = (0.5 + 1.5) / 2 = 1, g2 = (2 + 4) / 2 = 3
    e = [math.exp(0.5 * 2.0), math.exp(0.5 * 1.0), math.exp(0.5 * 3.0)]
    expected = [x / sum(e) for x in e]
    for rank in (0, 1):
        assert results[rank][0] == pytest.approx(expected, rel=1e-12)
    # each rank's objective divides by the global counts (x world size): the average of the two
    # ranks' objectives is the global objective sum_d w_d * mean_d
    global_objective = sum(w * m for w, m in zip(expected, [2.0, 1.0, 3.0]))
    assert (results[0][1] + results[1][1]) / 2 == pytest.approx(global_objective, rel=1e-6)
    # and the averaged gradient of a sample is w_d / n_d (n_d: global count of its group)
    assert results[0][2][0] / 2 == pytest.approx(expected[0] / 2, rel=1e-6)
    assert results[1][2][0] / 2 == pytest.approx(expected[1] / 2, rel=1e-6)
