"""The loss handler: the frozen teacher, the per-sample loss and the group-weighted objective inside a MONAI
``SupervisedTrainer``, with the group weights and per-group losses published on ``engine.state``."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from mnms_groupdistil.handlers.events import attach_once
from mnms_groupdistil.losses import GroupWeightedLoss

__all__ = ["GroupWeightedLossHandler", "group_from_batch", "loss_from_output", "training_scalars"]


def group_from_batch(batch: Any) -> torch.Tensor:
    """Default ``group_transform``: the ``"group"`` entry of a collated dictionary batch."""
    if not isinstance(batch, dict) or "group" not in batch:
        raise ValueError(
            "the training batch has no 'group' entry: the dataset must give each sample its group id, "
            "or pass a group_transform that finds it."
        )
    return torch.as_tensor(batch["group"])


class GroupWeightedLossHandler:
    """Train with the group-weighted loss of groupDRO / GroupDistil inside a ``SupervisedTrainer``.

    ``attach`` makes this handler the trainer's ``loss_function``. Each iteration, after the
    student's forward pass (``IterationEvents.FORWARD_COMPLETED``) it runs the frozen ``teacher``
    on the same inputs (eval mode, no gradient); the loss function then computes the per-sample
    loss (``sample_loss(student_logits, label, teacher_logits)``) and the group-weighted scalar
    (``loss``), and after it (``IterationEvents.LOSS_COMPLETED``) the handler publishes
    ``engine.state.group_weights``, ``group_losses`` and ``group_counts`` (tensors of shape (G,) on
    the training device: nothing in a step waits for the device; readers such as
    :class:`~mnms_groupdistil.handlers.tensorboard.GroupScalarWriter` copy them when they log).

    The four training modes:

    ========================  ===============================  ===============  =======
    mode                      sample_loss                      loss.robust      teacher
    ========================  ===============================  ===============  =======
    erm                       ``CrossEntropyLoss()``           False            None
    groupdro (teachers)       ``CrossEntropyLoss()``           True             None
    kd                        ``DistillationLoss(T, alpha)``   False            network
    groupdistil               ``DistillationLoss(T, alpha)``   True             network
    ========================  ===============================  ===============  =======

    Save ``loss.group_weights`` with the trainer's ``CheckpointSaver`` (and restore it with
    ``CheckpointLoader``) so a resumed run continues with its weights.

    Args:
        loss: the group-weighted objective; its ``group_weights`` are the state.
        sample_loss: per-sample loss, ``(student_logits, target, teacher_logits) -> (B,)``, with a
            ``needs_teacher`` attribute.
        teacher: frozen teacher network (on the trainer's device), or None.
        group_transform: ``engine.state.batch`` -> group ids of shape (B,).
        inferer: how the teacher is called, ``inferer(inputs, teacher)`` (e.g. the trainer's
            :class:`~mnms_groupdistil.acceleration.AutocastInferer`, so both networks run in the same
            precision and memory format); None calls ``teacher(inputs)``.
        name: logger name; default ``mnms_groupdistil.handlers``.

    Example (bundle config)::

        "loss_handler": {"_target_": "mnms_groupdistil.handlers.GroupWeightedLossHandler",
                         "loss": "@loss", "sample_loss": "@sample_loss", "teacher": "@teacher"}
        "trainer": {"_target_": "SupervisedTrainer", "loss_function": "@loss_handler",
                    "train_handlers": ["@loss_handler", ...], ...}
    """

    def __init__(
        self,
        loss: GroupWeightedLoss,
        sample_loss: Callable[..., torch.Tensor],
        teacher: torch.nn.Module | None = None,
        group_transform: Callable[[Any], torch.Tensor] = group_from_batch,
        inferer: Callable[..., torch.Tensor] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(loss, GroupWeightedLoss):
            raise TypeError(f"loss must be a GroupWeightedLoss, got {type(loss).__name__}.")
        needs_teacher = bool(getattr(sample_loss, "needs_teacher", False))
        if needs_teacher and teacher is None:
            raise ValueError(f"{type(sample_loss).__name__} distils from a teacher: pass teacher=<network>.")
        if not needs_teacher and teacher is not None:
            raise ValueError(
                f"a teacher was given but {type(sample_loss).__name__} does not use one: "
                "use DistillationLoss for kd/groupdistil, or drop the teacher for erm/groupdro."
            )
        self.loss = loss
        self.sample_loss = sample_loss
        self.teacher = teacher
        self.group_transform = group_transform
        self.inferer = inferer
        self.logger = logging.getLogger(name or __name__)
        self._teacher_logits: torch.Tensor | None = None
        self._groups: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, engine: Engine) -> None:
        """Become ``engine``'s loss function and register the iteration events (idempotent)."""
        engine.loss_function = self
        engine.state.group_weights = self.loss.group_weights.weights.float()
        attach_once(
            engine,
            (
                (Events.ITERATION_STARTED, self.iteration_started),
                (IterationEvents.FORWARD_COMPLETED, self.forward_completed),
                (IterationEvents.LOSS_COMPLETED, self.loss_completed),
                (Events.EPOCH_COMPLETED, self.epoch_completed),
            ),
        )

    def iteration_started(self, engine: Engine) -> None:
        """Read this batch's group ids; forget the previous batch's teacher outputs."""
        self._teacher_logits = None
        self._groups = self.group_transform(engine.state.batch)

    def forward_completed(self, engine: Engine) -> None:
        """Run the frozen teacher on the inputs the student just saw."""
        if self.teacher is None:
            return
        inputs = engine.state.output[Keys.IMAGE]
        self.teacher.eval()
        with torch.no_grad():
            if self.inferer is None:
                self._teacher_logits = self.teacher(inputs)
            else:
                self._teacher_logits = self.inferer(inputs, self.teacher)

    def __call__(self, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The trainer's loss function: the group-weighted scalar for this batch."""
        if self._groups is None:
            raise RuntimeError("GroupWeightedLossHandler must be attached to the trainer it computes the loss for.")
        if self.teacher is not None and self._teacher_logits is None:
            raise RuntimeError(
                "the teacher did not run for this batch: IterationEvents.FORWARD_COMPLETED was not fired."
            )
        losses = self.sample_loss(student_logits, target, self._teacher_logits)
        result = self.loss.evaluate(losses, self._groups.to(losses.device, non_blocking=True))
        self._last = (result.group_losses.detach(), result.group_counts.detach())
        return result.loss

    def loss_completed(self, engine: Engine) -> None:
        """Publish the weights and this batch's per-group losses and counts on ``engine.state``."""
        if self._last is None:
            return
        engine.state.group_weights = self.loss.group_weights.weights.float()
        engine.state.group_losses, engine.state.group_counts = self._last

    def epoch_completed(self, engine: Engine) -> None:
        weights = ", ".join(f"{w:.4f}" for w in self.loss.group_weights.weights.tolist())
        self.logger.info(f"Epoch {engine.state.epoch}: group weights [{weights}]")


def loss_from_output(output: Any) -> Any:
    """The loss from a collated (dict) or decollated (list of dicts) trainer output."""
    if isinstance(output, list):
        output = output[0]
    return output[Keys.LOSS]


def training_scalars(
    engine: Engine,
    group_names: Sequence[str],
    loss_transform: Callable[[Any], Any] = loss_from_output,
    loss_tag: str = "train_loss",
) -> dict[str, float]:
    """The trainer's last iteration as the loggers write it: ``<loss_tag>``, ``group_weight/<group>`` and
    ``group_loss/<group>`` by name (a group absent from the batch has no loss entry).

    Reads the values :class:`GroupWeightedLossHandler` publishes on ``engine.state``, one copy from the device each.

    Args:
        engine: the trainer.
        group_names: one name per group id.
        loss_transform: ``engine.state.output`` -> scalar loss.
        loss_tag: the name of the loss.
    """
    scalars = {loss_tag: float(torch.as_tensor(loss_transform(engine.state.output)).detach())}
    weights = getattr(engine.state, "group_weights", None)
    losses = getattr(engine.state, "group_losses", None)
    weights = None if weights is None else torch.as_tensor(weights).tolist()
    losses = None if losses is None else torch.as_tensor(losses).tolist()
    for index, group in enumerate(str(g) for g in group_names):
        if weights is not None:
            scalars[f"group_weight/{group}"] = weights[index]
        if losses is not None and not math.isnan(losses[index]):
            scalars[f"group_loss/{group}"] = losses[index]
    return scalars
