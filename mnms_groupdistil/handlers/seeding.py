"""Per-epoch random draws that depend only on the seed, the rank and the epoch (exact resume)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism

from mnms_groupdistil.handlers.events import attach_once

__all__ = ["EpochSeeds", "set_sampler_epoch"]


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on ``loader``'s ``sampler`` and ``batch_sampler`` where they have one
    (:class:`~mnms_groupdistil.samplers.GroupBatchSampler`, ``DistributedSampler``, ...)."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)


class EpochSeeds:
    """Make every epoch's random draws depend on ``(seed, rank, epoch)`` only, so a resumed run repeats them.

    At the start of each epoch (``Events.EPOCH_STARTED``, before Ignite creates the epoch's data
    iterator) it calls ``set_epoch(engine.state.epoch)`` on the data loader's ``sampler`` and
    ``batch_sampler`` where they have one (:class:`~mnms_groupdistil.samplers.GroupBatchSampler`,
    ``DistributedSampler``), re-seeds Python's, NumPy's and torch's global generators (which draw
    the shuffled order of a ``RandomSampler`` and the seeds of loader workers) and the random
    transforms of the loader's dataset in this process (used when ``num_workers`` is 0). A run
    stopped after epoch ``k`` and resumed from its checkpoint then trains epoch ``k + 1`` on the
    same batches, with the same augmentations, as an uninterrupted run. A run stopped in the middle
    of an epoch resumes with the remaining number of iterations, drawn from the start of that
    epoch's sequence.

    Args:
        seed: the run's seed.
        rank: this process's rank (ranks draw different augmentations; one-group batches stay in step
            across ranks through the sampler's own seed).

    Raises:
        TypeError: when ``seed`` or ``rank`` is not an integer.
    """

    def __init__(self, seed: int, rank: int = 0) -> None:
        for arg, value in (("seed", seed), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"EpochSeeds {arg} must be an int, got {value!r}.")
        self.seed = int(seed)
        self.rank = int(rank)

    def attach(self, engine: Engine) -> None:
        """Register :meth:`epoch_started` (idempotent)."""
        attach_once(engine, ((Events.EPOCH_STARTED, self.epoch_started),))

    def epoch_seed(self, epoch: int) -> int:
        """The seed of ``epoch`` (a 31-bit integer derived from ``(seed, rank, epoch)``)."""
        return int(np.random.SeedSequence([self.seed, self.rank, int(epoch)]).generate_state(1)[0] >> 1)

    def epoch_started(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        loader = getattr(engine, "data_loader", None) or engine.state.dataloader
        set_sampler_epoch(loader, epoch)
        seed = self.epoch_seed(epoch)
        set_determinism(seed=seed)
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, seed)
