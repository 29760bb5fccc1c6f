"""TensorBoard scalars of the group-weighted training: loss, group weights and per-group losses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine

from mnms_groupdistil.handlers.loss import loss_from_output, training_scalars

__all__ = ["GroupScalarWriter"]


class GroupScalarWriter:
    """TensorBoard writer for the trainer: loss, group weights and per-group losses.

    Use as ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler`` (whose
    ``iteration_log`` sets how often: each write reads the values back from the device); writes
    ``<loss_tag>``, ``group_weight/<group>``, ``group_loss/<group>`` (groups absent from the batch
    are skipped) at ``engine.state.iteration``.

    Args:
        group_names: one name per group id.
        loss_transform: ``engine.state.output`` -> scalar loss.
        loss_tag: TensorBoard tag of the loss.
    """

    def __init__(
        self,
        group_names: Sequence[str],
        loss_transform: Callable[[Any], Any] | None = None,
        loss_tag: str = "train_loss",
    ) -> None:
        self.group_names = [str(g) for g in group_names]
        self.loss_transform = loss_transform or loss_from_output
        self.loss_tag = loss_tag

    def __call__(self, engine: Engine, writer: Any) -> None:
        step = engine.state.iteration
        for tag, value in training_scalars(engine, self.group_names, self.loss_transform, self.loss_tag).items():
            writer.add_scalar(tag, value, step)
        writer.flush()
