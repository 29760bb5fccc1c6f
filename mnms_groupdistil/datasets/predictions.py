"""What every dataset's inference shares: class probabilities checked, and the base of the CSV prediction writers.

Copied verbatim, with the modules that import it, into an exported bundle's ``scripts/`` folder
(:mod:`mnms_groupdistil.tools.export`): it imports only torch and ignite, and the package's modules relatively.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..handlers.events import attach_once

__all__ = ["PROBABILITY_SUM_TOLERANCE", "PredictionWriter", "checked_probabilities"]


#: How far a row of probabilities may sum from 1 (float32 rounding of a softmax over a few classes).
PROBABILITY_SUM_TOLERANCE = 1e-3


def checked_probabilities(values: torch.Tensor) -> torch.Tensor:
    """``values`` (one row per item), checked to be class probabilities: in [0, 1], each row summing to 1.

    Raises:
        ValueError: naming the first row that is not, and the two ways to fix it.
    """
    sums = values.sum(dim=1)
    bad = ((values < 0) | (values > 1)).any(dim=1) | ((sums - 1).abs() > PROBABILITY_SUM_TOLERANCE)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"the prediction writer has softmax=False, but its output row {row} is not probabilities "
            f"({[round(float(v), 4) for v in values[row]]}, sum {float(sums[row]):.4f}): give the evaluator a "
            "postprocessing with Activationsd(keys='pred', softmax=True), or set the writer's softmax to true."
        )
    return values


class PredictionWriter(ABC):
    """Base of the prediction writers: stores the settings, attaches, takes each iteration's class probabilities.

    A subclass collects rows in :meth:`collect` and writes them in :meth:`epoch_completed`; every epoch starts
    with no rows (:meth:`reset`).

    Args:
        filepath: the CSV to write (parent folders are created).
        class_names: one name per output channel.
        output_transform: engine output -> logits (or probabilities, see ``softmax``), one row per item.
        batch_transform: engine batch -> the items' identifiers.
        softmax: turn the output into probabilities here; False when the evaluator's postprocessing did
            (``Activationsd(keys="pred", softmax=True)``, as the bundles' ``inference.json`` do).
        name: logger name (default: the module of the writer's class).
    """

    def __init__(
        self,
        filepath: str | Path,
        class_names: Sequence[str],
        output_transform: Callable,
        batch_transform: Callable,
        softmax: bool = True,
        name: str | None = None,
    ) -> None:
        self.filepath = Path(filepath)
        self.class_names = [str(c) for c in class_names]
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.softmax = bool(softmax)
        self.logger = logging.getLogger(name or type(self).__module__)
        self.reset()

    def attach(self, engine: Engine) -> None:
        """Register the three event methods on ``engine``; calling it again adds nothing."""
        attach_once(
            engine,
            (
                (Events.EPOCH_STARTED, self.epoch_started),
                (Events.ITERATION_COMPLETED, self.iteration_completed),
                (Events.EPOCH_COMPLETED, self.epoch_completed),
            ),
        )

    @abstractmethod
    def reset(self) -> None:
        """Forget the rows collected so far."""

    @abstractmethod
    def collect(self, engine: Engine, probabilities: torch.Tensor) -> None:
        """Keep the rows of one iteration (``probabilities``: one row per item, softmax over the classes)."""

    def epoch_started(self, engine: Engine) -> None:
        self.reset()

    def iteration_completed(self, engine: Engine) -> None:
        logits = self.output_transform(engine.state.output)
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = torch.stack([torch.as_tensor(x) for x in logits]) if isinstance(logits, list) else logits
        values = torch.as_tensor(logits).detach().float().cpu().reshape(len(logits), -1)
        self.collect(engine, torch.softmax(values, dim=1) if self.softmax else checked_probabilities(values))

    @abstractmethod
    def epoch_completed(self, engine: Engine) -> None:
        """Write the collected rows."""
