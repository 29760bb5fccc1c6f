"""Batch samplers for group-robust training: the three batch compositions of :data:`BATCHINGS`.

- ``one_group``: :class:`GroupBatchSampler`, Algorithm 1 of GroupDistil: every batch holds samples
  of one group only, the group drawn uniformly at random each step.
- ``mixed``: an ordinary shuffled sampler (``RandomSampler``, ``DistributedSampler``): batches in
  the data's proportions, the online groupDRO of Sagawa et al.
- ``balanced``: :class:`BalancedBatchSampler`: every batch holds each group in equal shares, what
  the reference groupDRO code trains with (``--reweight_groups``) and WILDS' ``uniform_over_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from mnms_groupdistil.errors import check_choice

__all__ = ["BATCHINGS", "BalancedBatchSampler", "GroupBatchSampler", "check_batching", "group_shares"]

#: The batch compositions a bundle's ``batching`` setting can take.
BATCHINGS = ("one_group", "mixed", "balanced")


def check_batching(batching: str) -> str:
    """``batching`` itself when it is one of :data:`BATCHINGS`; the one place the setting is checked.

    Raises:
        InputError: (a ``ValueError``) for any other value, listing the valid ones.
    """
    return check_choice(
        "batching",
        batching,
        BATCHINGS,
        "a batch composition (one_group: Algorithm 1, one group per batch; mixed: shuffled, the data's "
        "proportions; balanced: every group in equal shares in every batch)",
    )


class _GroupSampler(Sampler[list[int]]):
    """What both group samplers share: the groups' members, the ranks, the epoch and its seed.

    Args: as :class:`GroupBatchSampler`.
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

    def _rng(self) -> np.random.Generator:
        """The generator of this epoch's draws: ``(seed, epoch)`` only, the same on every rank."""
        return np.random.default_rng([self.seed, self.epoch])


class GroupBatchSampler(_GroupSampler):
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

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng()
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


def group_shares(batch_size: int, num_groups: int, step: int) -> list[int]:
    """Samples of each group in a balanced batch of ``batch_size``: ``batch_size // G`` each, and the
    ``batch_size % G`` left-over places to groups in turn (step ``s`` gives them to the groups
    ``s * r, ..., s * r + r - 1`` modulo G), so that over steps every group gets the same share.

    Example: ``group_shares(32, 3, 0) == [11, 11, 10]``, ``group_shares(32, 3, 1) == [11, 10, 11]``.
    """
    base, extra = divmod(int(batch_size), int(num_groups))
    shares = [base] * num_groups
    for j in range(extra):
        shares[(step * extra + j) % num_groups] += 1
    return shares


class BalancedBatchSampler(_GroupSampler):
    """Mixed batches holding every group in equal shares (as near as the batch size allows).

    Each step's batch of ``batch_size * num_replicas`` samples (all ranks together) holds
    :func:`group_shares` samples of every group. Each group's samples are walked in a shuffled
    order, reshuffled whenever they are used up, so over an epoch a small group's samples are seen
    many times and a large group's about once per pass; a sample appears twice in one batch only
    when its group's walk wraps around within that batch (a group about as small as its share).
    Every group is present at every step: with groupDRO's weights every
    group's weight is updated every step, and BatchNorm sees every group in every batch. This is
    the composition of the reference groupDRO code (``--reweight_groups``: weights ``N / n_g``)
    without its randomness in the group counts.

    Under ``torch.distributed`` (or with ``num_replicas``/``rank`` given) every rank draws the same
    global batch from ``(seed, epoch)`` and takes its own ``batch_size`` consecutive samples of the
    global batch laid out group by group in turn, so each rank's part is itself as balanced as its
    size allows and the ranks together hold the balanced global batch. Call :meth:`set_epoch` each
    epoch (the bundles' :class:`mnms_groupdistil.handlers.EpochSeeds` does).

    Args:
        groups: group id of every dataset index.
        batch_size: samples per batch on each rank; all ranks together need at least one sample per group.
        num_batches: batches per epoch; default ``ceil(len(groups) / (batch_size * num_replicas))``.
        seed: base seed; epoch ``e`` draws from ``(seed, e)`` only (exact resume).
        num_replicas: number of ranks (default: the distributed world size, else 1).
        rank: this rank (default: the distributed rank, else 0).

    Raises:
        ValueError: on an empty ``groups``, a bad rank, or a global batch smaller than the number of groups.

    Example::

        sampler = BalancedBatchSampler([0] * 90 + [1] * 9 + [2], batch_size=6, seed=0)
        next(iter(sampler))  # two indices of each group
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
        super().__init__(groups, batch_size, num_batches, seed, num_replicas, rank)
        self.global_batch = self.batch_size * self.num_replicas
        if self.global_batch < len(self.group_ids):
            raise ValueError(
                f"balanced batches of {self.global_batch} samples (batch_size {self.batch_size} x "
                f"{self.num_replicas} ranks) cannot hold all {len(self.group_ids)} groups: raise batch_size."
            )

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng()
        orders = {g: rng.permutation(m) for g, m in self.members.items()}
        cursors = dict.fromkeys(self.group_ids, 0)

        def take(group: int, count: int) -> list[int]:
            taken: list[int] = []
            while len(taken) < count:
                if cursors[group] == len(orders[group]):
                    orders[group] = rng.permutation(self.members[group])
                    cursors[group] = 0
                end = min(len(orders[group]), cursors[group] + count - len(taken))
                taken += orders[group][cursors[group] : end].tolist()
                cursors[group] = end
            return taken

        for step in range(self.num_batches):
            shares = group_shares(self.global_batch, len(self.group_ids), step)
            parts = [take(g, n) for g, n in zip(self.group_ids, shares)]
            # group by group in turn, starting with the first group given a left-over place this step
            # (g1, g2, g0, g1, ...): any run of consecutive places is balanced, and over the steps every
            # rank gets every group's left-over places equally often
            first = (step * (self.global_batch % len(parts))) % len(parts)
            parts = parts[first:] + parts[:first]
            layout = [part[i] for i in range(max(shares)) for part in parts if i < len(part)]
            start = self.rank * self.batch_size
            yield [int(i) for i in layout[start : start + self.batch_size]]
