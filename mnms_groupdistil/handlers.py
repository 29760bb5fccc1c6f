"""Ignite handlers that put the group-weighted objective into a MONAI ``SupervisedTrainer``.

- :class:`GroupWeightedLossHandler` runs the frozen teacher, computes the per-sample loss and
  the group-weighted objective, and publishes the group weights and per-group losses on
  ``engine.state``.
- :class:`GroupScalarWriter` writes those to TensorBoard every iteration (as the
  ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler``).
- :class:`MetricsReport` writes an evaluator's final metrics to ``metrics.json`` and logs a
  per-group summary table when training ends.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import CommonKeys as Keys
from monai.utils import set_determinism

from mnms_groupdistil.losses import GroupWeightedLoss

__all__ = [
    "BestModelSaver",
    "EpochSeeds",
    "GroupScalarWriter",
    "GroupWeightedLossHandler",
    "MetricsReport",
    "attach_resume",
    "group_from_batch",
    "latest_checkpoint",
    "loss_from_output",
]


def group_from_batch(batch: Any) -> torch.Tensor:
    """Default ``group_transform``: the ``"group"`` entry of a collated dictionary batch."""
    if not isinstance(batch, dict) or "group" not in batch:
        raise ValueError(
            "the training batch has no 'group' entry: the dataset must give each sample its group id, "
            "or pass a group_transform that finds it."
        )
    return torch.as_tensor(batch["group"])


def latest_checkpoint(directory: str | Path, pattern: str = "checkpoint*.pt") -> str | None:
    """The most recently written training checkpoint in ``directory``, or None (a fresh run).

    Used by the bundles to resume a stopped or crashed run from ``output_dir``.
    """
    candidates = sorted(Path(directory).glob(pattern), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return str(candidates[-1]) if candidates else None


def attach_resume(
    engine: Engine,
    directory: str | Path,
    load_dict: dict[str, Any],
    map_location: Any = None,
    pattern: str = "checkpoint*.pt",
) -> str | None:
    """Resume ``engine`` from the latest checkpoint in ``directory``, if there is one.

    Attaches MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) for
    :func:`latest_checkpoint`; the trainer then continues from the saved epoch with everything in
    ``load_dict`` restored (network, optimizer, group weights, the best-model record of a
    :class:`BestModelSaver`). Once the resumed run has saved a newer checkpoint after its first
    epoch, the checkpoints written before the resume are removed (call this after attaching the
    run's ``CheckpointSaver``, so that its save comes first). Does nothing in a directory without
    checkpoints.

    Args:
        engine: the trainer.
        directory: the run's output directory.
        load_dict: objects to restore, as saved by the run's ``CheckpointSaver``.
        map_location: passed to ``torch.load``.
        pattern: checkpoint file names to consider.

    Returns:
        The checkpoint path resumed from, or None.
    """
    path = latest_checkpoint(directory, pattern)
    if path is None:
        return None
    logger = logging.getLogger(__name__)
    logger.info(f"Resuming from {path}")
    CheckpointLoader(load_path=path, load_dict=load_dict, map_location=map_location).attach(engine)

    previous = set(Path(directory).glob(pattern))

    def drop_superseded(engine: Engine) -> None:
        """Once the resumed run has saved a newer checkpoint, remove those written before the resume."""
        engine.remove_event_handler(drop_superseded, Events.EPOCH_COMPLETED)
        newest = latest_checkpoint(directory, pattern)
        if idist.get_rank() != 0 or newest is None or Path(newest) in previous:
            return
        for old in sorted(p for p in previous if p.exists()):
            old.unlink()
            logger.info(f"Removed {old}: superseded by {newest}")

    engine.add_event_handler(Events.EPOCH_COMPLETED, drop_superseded)
    return path


class EpochSeeds:
    """Make every epoch's random draws depend on ``(seed, rank, epoch)`` only, so a resumed run repeats them.

    At the start of each epoch (``Events.EPOCH_STARTED``, before Ignite creates the epoch's data
    iterator) it calls ``set_epoch(engine.state.epoch)`` on the data loader's ``sampler`` and
    ``batch_sampler`` where they have one (:class:`~mnms_groupdistil.data.samplers.GroupBatchSampler`,
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
        if not engine.has_event_handler(self.epoch_started, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)

    def epoch_seed(self, epoch: int) -> int:
        """The seed of ``epoch`` (a 31-bit integer derived from ``(seed, rank, epoch)``)."""
        return int(np.random.SeedSequence([self.seed, self.rank, int(epoch)]).generate_state(1)[0] >> 1)

    def epoch_started(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        loader = getattr(engine, "data_loader", None) or engine.state.dataloader
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
        seed = self.epoch_seed(epoch)
        set_determinism(seed=seed)
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, seed)


class BestModelSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose best-score record can go into the training checkpoint.

    Put it in the trainer's checkpoint ``save_dict``: a resumed run then knows the best key
    metric reached before the stop and replaces the best model (``key_metric_filename``) only
    with a better one. The model file itself stays a plain state dict. Takes the arguments of
    ``CheckpointSaver``.
    """

    def state_dict(self) -> dict[str, Any]:
        """The key-metric record (scores and file names of the kept models); empty without one."""
        tracker = self._key_metric_checkpoint
        return {} if tracker is None else dict(tracker.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)


class GroupWeightedLossHandler:
    """Train with the group-weighted loss of groupDRO / GroupDistil inside a ``SupervisedTrainer``.

    ``attach`` makes this handler the trainer's ``loss_function``. Each iteration, after the
    student's forward pass (``IterationEvents.FORWARD_COMPLETED``) it runs the frozen ``teacher``
    on the same inputs (eval mode, no gradient); the loss function then computes the per-sample
    loss (``sample_loss(student_logits, label, teacher_logits)``) and the group-weighted scalar
    (``loss``), and after it (``IterationEvents.LOSS_COMPLETED``) the handler publishes
    ``engine.state.group_weights``, ``group_losses`` and ``group_counts`` (CPU tensors, shape (G,)).

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
        self.logger = logging.getLogger(name or __name__)
        self._teacher_logits: torch.Tensor | None = None
        self._groups: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, engine: Engine) -> None:
        """Become ``engine``'s loss function and register the iteration events (idempotent)."""
        engine.loss_function = self
        engine.state.group_weights = self.loss.group_weights.weights.float()
        for event, handler in (
            (Events.ITERATION_STARTED, self.iteration_started),
            (IterationEvents.FORWARD_COMPLETED, self.forward_completed),
            (IterationEvents.LOSS_COMPLETED, self.loss_completed),
            (Events.EPOCH_COMPLETED, self.epoch_completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

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
            self._teacher_logits = self.teacher(inputs)

    def __call__(self, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The trainer's loss function: the group-weighted scalar for this batch."""
        if self._groups is None:
            raise RuntimeError("GroupWeightedLossHandler must be attached to the trainer it computes the loss for.")
        if self.teacher is not None and self._teacher_logits is None:
            raise RuntimeError(
                "the teacher did not run for this batch: IterationEvents.FORWARD_COMPLETED was not fired."
            )
        losses = self.sample_loss(student_logits, target, self._teacher_logits)
        result = self.loss.evaluate(losses, self._groups.to(losses.device))
        self._last = (result.group_losses.detach().cpu(), result.group_counts.detach().cpu())
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


class GroupScalarWriter:
    """TensorBoard writer for the trainer: loss, group weights and per-group losses every iteration.

    Use as ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler``; writes
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
        writer.add_scalar(
            self.loss_tag, float(torch.as_tensor(self.loss_transform(engine.state.output)).detach()), step
        )
        weights = getattr(engine.state, "group_weights", None)
        losses = getattr(engine.state, "group_losses", None)
        for index, group in enumerate(self.group_names):
            if weights is not None:
                writer.add_scalar(f"group_weight/{group}", float(weights[index]), step)
            if losses is not None and not math.isnan(float(losses[index])):
                writer.add_scalar(f"group_loss/{group}", float(losses[index]), step)
        writer.flush()


def loss_from_output(output: Any) -> Any:
    """The loss from a collated (dict) or decollated (list of dicts) trainer output."""
    if isinstance(output, list):
        output = output[0]
    return output[Keys.LOSS]


class MetricsReport:
    """Write an evaluator's metrics to JSON after every evaluation and log a summary table.

    Attach to the evaluator. After each evaluation it writes ``filepath`` with the latest
    metrics, the best key metric so far and its epoch, and ``extra`` (e.g. the run's mode and
    split), and logs one table line per group:
    ``group | <metric columns>`` built from metrics named ``<prefix>_<group>``. The best score
    is this object's state: put it in the training checkpoint and a resumed run keeps it.
    Under ``torch.distributed`` only rank 0 writes and logs.

    Args:
        filepath: where to write the JSON (parent folders are created).
        group_names: one name per group id.
        group_metric_prefixes: metric names whose ``<prefix>_<group>`` entries fill the table
            columns, e.g. ``["val_acc", "val_patient_acc"]``.
        summary_metrics: scalar metrics shown under the table (e.g. worst-group accuracy).
        extra: additional JSON fields.
        key_metric: the metric whose best value (higher is better) is reported; default: the
            evaluator's key metric.
        name: logger name.
    """

    def __init__(
        self,
        filepath: str | Path,
        group_names: Sequence[str],
        group_metric_prefixes: Sequence[str] = (),
        summary_metrics: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        key_metric: str | None = None,
        name: str | None = None,
    ) -> None:
        self.filepath = Path(filepath)
        self.group_names = [str(g) for g in group_names]
        self.group_metric_prefixes = list(group_metric_prefixes)
        self.summary_metrics = list(summary_metrics)
        self.key_metric = key_metric
        self.extra = dict(extra or {})
        self.logger = logging.getLogger(name or __name__)
        self.best_metric: float | None = None
        self.best_metric_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def state_dict(self) -> dict[str, Any]:
        """The best key metric so far and its epoch (plain numbers: loads with ``weights_only``)."""
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_metric = state_dict.get("best_metric")
        self.best_metric_epoch = state_dict.get("best_metric_epoch")

    def epoch_completed(self, engine: Engine) -> None:
        metrics = {k: float(v) for k, v in engine.state.metrics.items() if _is_number(v)}
        key = self.key_metric or getattr(engine.state, "key_metric_name", None)
        score = _finite_or_none(metrics.get(key)) if key else None
        if score is not None and (self.best_metric is None or score > self.best_metric):
            self.best_metric, self.best_metric_epoch = score, int(engine.state.epoch)
        if idist.get_rank() != 0:
            return
        report = {
            **self.extra,
            "epoch": int(engine.state.epoch),
            "metrics": metrics,
            "per_group": {
                group: {prefix: metrics.get(f"{prefix}_{group}") for prefix in self.group_metric_prefixes}
                for group in self.group_names
            },
            "key_metric": key,
            "best_metric": self.best_metric,
            "best_metric_epoch": self.best_metric_epoch,
        }
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        self.filepath.write_text(json.dumps(report, indent=2))
        self.logger.info("\n" + self.table(metrics))

    def table(self, metrics: dict[str, float]) -> str:
        """A plain-text table: one row per group, one column per metric prefix, then the summaries."""
        header = ["group", *self.group_metric_prefixes]
        rows = [[g, *(_fmt(metrics.get(f"{p}_{g}")) for p in self.group_metric_prefixes)] for g in self.group_names]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        lines += [f"{name}: {_fmt(metrics.get(name))}" for name in self.summary_metrics]
        return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and _is_number(value) and math.isfinite(float(value)) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
