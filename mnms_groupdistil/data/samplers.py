"""Batch samplers for group-robust training.

:class:`GroupBatchSampler` gives Algorithm 1 of GroupDistil: every batch holds samples of one
group only, the group drawn uniformly at random each step. Mixed batches (online groupDRO, ERM,
KD) use an ordinary shuffled sampler instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["GroupBatchSampler"]


class GroupBatchSampler(Sampler[list[int]]):
    """Batches of a single group each, the group drawn uniformly at random per step.

    Each group's indices are walked through in a shuffled order, reshuffled whenever they run
    out, so over an epoch every sample of a group is seen about equally often. A batch never
    repeats an index: for a group smaller than ``batch_size`` the batch is the whole group.
    Under ``torch.distributed`` (or with ``num_replicas``/``rank`` given) all ranks draw the same
    group at each step and take disjoint slices of it.

    Like ``torch.utils.data.DistributedSampler``, the sampler does not count epochs itself: call
    :meth:`set_epoch` with the trainer's epoch before each epoch (the bundles'
    :class:`mnms_groupdistil.handlers.EpochSeeds` does), or every epoch repeats the same draws.

    Args:
        groups: group id of every dataset index.
        batch_size: samples per batch on each rank.
        num_batches: batches per epoch; default ``ceil(len(groups) / (batch_size * num_replicas))``,
            i.e. about one pass over the data.
        seed: base seed; epoch ``e`` draws from ``(seed, e)`` only, so runs are reproducible and a
            resumed run continues the sequence of an uninterrupted one.
        num_replicas: number of ranks (default: the distributed world size, else 1).
        rank: this rank (default: the distributed rank, else 0).

    Example::

        sampler = GroupBatchSampler([0, 0, 1, 2, 2, 2], batch_size=2, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
        for epoch in range(1, 4):
            sampler.set_epoch(epoch)
            for batch in loader: ...
    """

    def __init__(
        self,
        groups: Sequence[int],
        batch_size: int,
        num_batches: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        groups = np.asarray([int(g) for g in groups])
        if groups.size == 0:
            raise ValueError("groups is empty: the dataset has no samples.")
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas or (dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}.")
        self.group_ids = sorted(set(groups.tolist()))
        self.members = {g: np.flatnonzero(groups == g) for g in self.group_ids}
        self.batch_size = int(batch_size)
        self.num_batches = int(num_batches or math.ceil(groups.size / (self.batch_size * self.num_replicas)))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch`` for the following iterations (until the next call)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        orders = {g: rng.permutation(m) for g, m in self.members.items()}
        cursors = dict.fromkeys(self.group_ids, 0)
        for _ in range(self.num_batches):
            group = self.group_ids[int(rng.integers(len(self.group_ids)))]
            size = len(self.members[group])
            per_rank = min(self.batch_size, max(1, size // self.num_replicas))
            needed = per_rank * self.num_replicas
            if cursors[group] + needed > size:
                orders[group] = rng.permutation(self.members[group])
                cursors[group] = 0
            start = cursors[group] + self.rank * per_rank
            cursors[group] += needed
            if needed > size:  # fewer samples than ranks: ranks share, wrapping around
                yield [int(orders[group][(start + i) % size]) for i in range(per_rank)]
            else:
                yield orders[group][start : start + per_rank].tolist()
