"""Pieces of the training engine that both bundles' ``train.json`` build the same way.

- :func:`train_loader`: the training batches in the composition the ``batching`` setting names.

Dataset-free: the bundles pass their own dataset and group ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from mnms_groupdistil.data.samplers import BalancedBatchSampler, GroupBatchSampler, check_batching
from mnms_groupdistil.errors import InputError

__all__ = ["train_loader"]


def train_loader(
    dataset: Dataset,
    groups: Sequence[int],
    batching: str,
    batch_size: int,
    seed: int = 0,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    group_batches: bool | None = None,
) -> DataLoader:
    """A training ``DataLoader`` whose batches have the composition ``batching`` names.

    - ``one_group``: :class:`~mnms_groupdistil.data.samplers.GroupBatchSampler` (Algorithm 1).
    - ``mixed``: ``sampler`` (default a ``RandomSampler``; ``multi_gpu_train.json`` gives a
      ``DistributedSampler``) in batches of ``batch_size``: the data's proportions.
    - ``balanced``: :class:`~mnms_groupdistil.data.samplers.BalancedBatchSampler`, every group in
      equal shares in every batch (under ``torch.distributed``: in every global batch).

    The group samplers draw from ``(seed, epoch)``; the trainer's
    :class:`~mnms_groupdistil.handlers.EpochSeeds` sets the epoch.

    Args:
        dataset: the training dataset.
        groups: group id of every sample of ``dataset``.
        batching: one of :data:`~mnms_groupdistil.data.samplers.BATCHINGS`.
        batch_size: samples per batch (per rank).
        seed: the run's seed.
        sampler: the sampler of ``mixed`` batches.
        num_workers, pin_memory, persistent_workers: as ``DataLoader`` (persistent only with workers).
        group_batches: the setting ``batching`` replaced; anything but None is refused, naming the replacement.

    Raises:
        InputError: for an unknown ``batching``, a ``group_batches`` setting, or ``groups`` not
            matching the dataset.
    """
    if group_batches is not None:
        replacement = "one_group" if group_batches else "mixed"
        raise InputError(
            f"group_batches was replaced by batching: use --batching {replacement} instead of "
            f"--group_batches {group_batches} (or balanced: every group in equal shares in every batch)."
        )
    check_batching(batching)
    if len(groups) != len(dataset):
        raise InputError(f"{len(groups)} group ids for a training dataset of {len(dataset)} samples.")
    options = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": bool(persistent_workers and num_workers > 0),
    }
    if batching == "mixed":
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler or RandomSampler(dataset), **options)
    kind = GroupBatchSampler if batching == "one_group" else BalancedBatchSampler
    return DataLoader(dataset, batch_sampler=kind(groups, batch_size, seed=seed), **options)
