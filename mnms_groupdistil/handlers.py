"""Ignite handlers that put the group-weighted objective into a MONAI ``SupervisedTrainer``.

- :class:`GroupWeightedLossHandler` runs the frozen teacher, computes the per-sample loss and
  the group-weighted objective, and publishes the group weights and per-group losses on
  ``engine.state``.
- :class:`GroupScalarWriter` writes those to TensorBoard every iteration (as the
  ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler``).
- :class:`AttachMetrics` gives an evaluator metrics without a key metric (test data rank nothing).
- :class:`MetricsReport` records every evaluation, writes ``metrics.json`` (with how the
  reported model was selected) and logs a per-group summary table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines.utils import IterationEvents
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import CommonKeys as Keys
from monai.utils import set_determinism

from mnms_groupdistil.losses import GroupWeightedLoss

__all__ = [
    "AttachMetrics",
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
    ``engine.state.group_weights``, ``group_losses`` and ``group_counts`` (tensors of shape (G,) on
    the training device: nothing in a step waits for the device; readers such as
    :class:`GroupScalarWriter` copy them when they log).

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
        writer.add_scalar(
            self.loss_tag, float(torch.as_tensor(self.loss_transform(engine.state.output)).detach()), step
        )
        weights = getattr(engine.state, "group_weights", None)
        losses = getattr(engine.state, "group_losses", None)
        weights = None if weights is None else torch.as_tensor(weights).tolist()  # one copy from the device
        losses = None if losses is None else torch.as_tensor(losses).tolist()
        for index, group in enumerate(self.group_names):
            if weights is not None:
                writer.add_scalar(f"group_weight/{group}", weights[index], step)
            if losses is not None and not math.isnan(losses[index]):
                writer.add_scalar(f"group_loss/{group}", losses[index], step)
        writer.flush()


def loss_from_output(output: Any) -> Any:
    """The loss from a collated (dict) or decollated (list of dicts) trainer output."""
    if isinstance(output, list):
        output = output[0]
    return output[Keys.LOSS]


class AttachMetrics:
    """Attach Ignite metrics to an evaluator without making one of them its key metric.

    MONAI's evaluators register metrics only together with a ``key_val_metric``, and then keep and
    log the best epoch by it. An evaluator of held-out *test* data must rank nothing: put this
    handler first in its ``val_handlers`` (so the metrics are computed before the other handlers
    read them) and give the evaluator no ``key_val_metric``.

    Args:
        metrics: metric name -> Ignite metric, e.g. ``{"test_worst_group_acc": GroupAccuracy(...)}``.

    Raises:
        TypeError: ``metrics`` is not a mapping of names to Ignite metrics.

    Example (bundle config)::

        "handlers": [{"_target_": "mnms_groupdistil.handlers.AttachMetrics", "metrics": "@test#metrics"}, ...]
    """

    def __init__(self, metrics: Mapping[str, Metric]) -> None:
        if not isinstance(metrics, Mapping) or not all(isinstance(m, Metric) for m in metrics.values()):
            raise TypeError(f"metrics must map names to Ignite metrics, got {metrics!r}.")
        self.metrics = dict(metrics)

    def attach(self, engine: Engine) -> None:
        """Attach every metric under its name (Ignite's ``Metric.attach`` is idempotent)."""
        for name, metric in self.metrics.items():
            metric.attach(engine, name)


class MetricsReport:
    """Record every evaluation of a training run, write ``metrics.json`` and log a summary table.

    Attach to each evaluator of the run, e.g. one on the test patients (metrics ``test_*``) and
    one on validation patients (``val_*``). Under MONAI's ``ValidationHandler`` an evaluator's
    ``engine.state.epoch`` is the trainer's epoch: the metrics of each evaluation are merged into
    that epoch's entry of the ``history``, and after each evaluation ``filepath`` is rewritten with
    ``extra`` and

    - ``selection``: how the reported model was chosen, ``{"rule", "epoch", "checkpoint"}``. With
      ``select_by=None`` the rule is ``"last_epoch"``: the last evaluated epoch and
      ``final_checkpoint``. With ``select_by`` a metric name (higher is better), the rule is
      ``"best_<select_by>"``: the first epoch with the highest finite value of that metric and
      ``best_checkpoint`` (the same choice as a ``BestModelSaver`` keyed on that metric, which
      replaces its model only with a strictly better one). Epochs that lack the metric are no
      candidates. Left out when ``selection`` is False (an evaluation of a given checkpoint).
    - ``metrics``: every metric of the reported epoch (null where a metric is not a number, e.g.
      the accuracy of a group without patients); ``per_group``:
      ``{group: {prefix: metrics["<prefix>_<group>"]}}`` for ``group_metric_prefixes``.
    - ``history``: ``[{"epoch", "metrics"}, ...]``, every evaluated epoch.

    The table logged after each evaluation has one row per group and one column per prefix with
    values at that epoch. The history is this object's state: put it in the training checkpoint
    and a resumed run keeps it. Under ``torch.distributed`` only rank 0 writes and logs.

    Args:
        filepath: where to write the JSON (parent folders are created).
        group_names: one name per group id.
        group_metric_prefixes: metric names whose ``<prefix>_<group>`` entries fill the table
            columns and ``per_group``, e.g. ``["test_acc", "test_patient_acc"]``.
        summary_metrics: scalar metrics shown under the table (e.g. worst-group accuracy).
        extra: additional JSON fields (the run's mode, split, seeds...).
        select_by: the metric that selects the reported epoch, or None for the last epoch.
        final_checkpoint: file name of the last epoch's model.
        best_checkpoint: file name of the model kept by ``select_by``.
        selection: whether to report ``selection``.
        name: logger name.

    Raises:
        ValueError: ``select_by`` is given but ``selection`` is False.
    """

    def __init__(
        self,
        filepath: str | Path,
        group_names: Sequence[str],
        group_metric_prefixes: Sequence[str] = (),
        summary_metrics: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        select_by: str | None = None,
        final_checkpoint: str = "model_final.pt",
        best_checkpoint: str = "model.pt",
        selection: bool = True,
        name: str | None = None,
    ) -> None:
        if select_by is not None and not selection:
            raise ValueError(f"select_by={select_by!r} selects a model, but selection=False reports no selection.")
        self.filepath = Path(filepath)
        self.group_names = [str(g) for g in group_names]
        self.group_metric_prefixes = list(group_metric_prefixes)
        self.summary_metrics = list(summary_metrics)
        self.extra = dict(extra or {})
        self.select_by = select_by
        self.final_checkpoint = final_checkpoint
        self.best_checkpoint = best_checkpoint
        self.selection = selection
        self.logger = logging.getLogger(name or __name__)
        self.history: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def state_dict(self) -> dict[str, Any]:
        """The evaluations so far (plain numbers: loads with ``weights_only``)."""
        return {"history": [{"epoch": e["epoch"], "metrics": dict(e["metrics"])} for e in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [
            {"epoch": int(e["epoch"]), "metrics": dict(e["metrics"])} for e in state_dict.get("history", [])
        ]

    def selected(self) -> dict[str, Any] | None:
        """The history entry of the reported epoch, or None when no epoch qualifies yet."""
        if self.select_by is None:
            return max(self.history, key=lambda e: e["epoch"], default=None)
        best = None
        for entry in sorted(self.history, key=lambda e: e["epoch"]):
            score = _finite_or_none(entry["metrics"].get(self.select_by))
            if score is not None and (best is None or score > best[0]):
                best = (score, entry)
        return None if best is None else best[1]

    def report(self) -> dict[str, Any]:
        """The JSON content: ``extra``, ``selection``, ``metrics``, ``per_group``, ``history``."""
        entry = self.selected()
        metrics = dict(entry["metrics"]) if entry else {}
        report = dict(self.extra)
        if self.selection:
            report["selection"] = {
                "rule": "last_epoch" if self.select_by is None else f"best_{self.select_by}",
                "epoch": entry["epoch"] if entry else None,
                "checkpoint": self.final_checkpoint if self.select_by is None else self.best_checkpoint,
            }
        report["metrics"] = metrics
        report["per_group"] = {
            group: {prefix: metrics.get(f"{prefix}_{group}") for prefix in self.group_metric_prefixes}
            for group in self.group_names
        }
        report["history"] = sorted(self.history, key=lambda e: e["epoch"])
        return report

    def epoch_completed(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        # not-a-number (a group without patients) is written as null: metrics.json stays strict JSON
        metrics = {k: _finite_or_none(v) for k, v in engine.state.metrics.items() if _is_number(v)}
        entry = next((e for e in self.history if e["epoch"] == epoch), None)
        if entry is None:
            entry = {"epoch": epoch, "metrics": {}}
            self.history.append(entry)
        entry["metrics"].update(metrics)
        if idist.get_rank() != 0:
            return
        report = self.report()
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        self.filepath.write_text(json.dumps(report, indent=2))
        lines = [f"Epoch {epoch}:", self.table(entry["metrics"])]
        if "selection" in report:
            chosen = report["selection"]
            lines.append(f"reported model ({chosen['rule']}): epoch {chosen['epoch']}, {chosen['checkpoint']}")
        self.logger.info("\n".join(lines))

    def table(self, metrics: dict[str, float]) -> str:
        """A plain-text table: one row per group, one column per metric prefix present, then the summaries."""
        prefixes = [p for p in self.group_metric_prefixes if any(f"{p}_{g}" in metrics for g in self.group_names)]
        header = ["group", *prefixes]
        rows = [[g, *(_fmt(metrics.get(f"{p}_{g}")) for p in prefixes)] for g in self.group_names]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        lines += [f"{name}: {_fmt(metrics.get(name))}" for name in self.summary_metrics if name in metrics]
        return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and _is_number(value) and math.isfinite(float(value)) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
