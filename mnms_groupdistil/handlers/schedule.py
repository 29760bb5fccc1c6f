"""Learning-rate schedules set from the iteration count alone (a resumed run continues them exactly)."""

from __future__ import annotations

import math

from ignite.engine import Engine, Events
from torch.optim import Optimizer

from mnms_groupdistil.errors import InputError, check_choice
from mnms_groupdistil.handlers.events import attach_once

__all__ = ["LR_SCHEDULES", "LearningRateSchedule", "scheduled_lr"]

#: Values of the bundles' ``lr_schedule`` setting.
LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(base_lr: float, schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The learning rate of 0-based ``step`` out of ``total_steps``.

    Warm-up (``step < warmup_steps``): ``base_lr * (step + 1) / warmup_steps``. Then ``constant``:
    ``base_lr``; ``cosine``: ``base_lr * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup_steps) /
    (total_steps - warmup_steps)``, from ``base_lr`` at the first step after warm-up towards 0 at the end.

    Raises:
        InputError: for an unknown schedule or a warm-up not shorter than the training.
    """
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if not 0 <= warmup_steps < total_steps:
        raise InputError(
            f"the warm-up ({warmup_steps} steps) must be shorter than the training ({total_steps} steps): "
            "lower warmup_epochs."
        )
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class LearningRateSchedule:
    """Set the optimizer's learning rate before every iteration from :func:`scheduled_lr`.

    The rate depends only on ``engine.state.iteration``, ``epoch_length`` and ``max_epochs``, and the
    base rates are the optimizer's at construction (before a checkpoint is loaded), so a resumed run
    continues the schedule of an uninterrupted one without any state of its own. The current rate
    is published as ``engine.state.learning_rate`` (first parameter group).

    Args:
        optimizer: the trainer's optimizer.
        schedule: one of :data:`LR_SCHEDULES`.
        warmup_epochs: linear warm-up length in epochs (fractions allowed); 0 for none.

    Example (bundle config)::

        {"_target_": "mnms_groupdistil.handlers.LearningRateSchedule", "optimizer": "@optimizer",
         "schedule": "@lr_schedule", "warmup_epochs": "@warmup_epochs"}
    """

    def __init__(self, optimizer: Optimizer, schedule: str = "constant", warmup_epochs: float = 0.0) -> None:
        check_choice("lr_schedule", schedule, LR_SCHEDULES)
        if not (warmup_epochs >= 0 and math.isfinite(warmup_epochs)):
            raise InputError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        self.optimizer = optimizer
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]

    def attach(self, engine: Engine) -> None:
        """Register :meth:`iteration_started` (idempotent)."""
        attach_once(engine, ((Events.ITERATION_STARTED, self.iteration_started),))

    def iteration_started(self, engine: Engine) -> None:
        epoch_length = int(engine.state.epoch_length)
        total = int(engine.state.max_epochs) * epoch_length
        warmup = int(round(self.warmup_epochs * epoch_length))
        step = int(engine.state.iteration) - 1  # Ignite counts from 1 and increments before this event
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = scheduled_lr(base, self.schedule, step, total, warmup)
        engine.state.learning_rate = self.optimizer.param_groups[0]["lr"]
