"""Ignite handlers that put the group-weighted objective into a MONAI ``SupervisedTrainer``.

- :class:`GroupWeightedLossHandler` runs the frozen teacher, computes the per-sample loss and
  the group-weighted objective, and publishes the group weights and per-group losses on
  ``engine.state``.
- :class:`GroupScalarWriter` writes those to TensorBoard every iteration (as the
  ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler``).
- :class:`AtomicCheckpointSaver` writes checkpoints through a temporary file (never half-written);
  :class:`RunGuard` stops a run on SIGTERM/SIGINT or a non-finite loss after saving one.
- :class:`AttachMetrics` gives an evaluator metrics without a key metric (test data rank nothing).
- :class:`MetricsReport` records every evaluation, writes ``metrics.json`` (with how the
  reported model was selected) and logs a per-group summary table.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from ignite.metrics import Metric
from monai.engines.utils import IterationEvents
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import CommonKeys as Keys
from monai.utils import set_determinism

from mnms_groupdistil.errors import ReportedError
from mnms_groupdistil.losses import GroupWeightedLoss

__all__ = [
    "AtomicCheckpointSaver",
    "AttachMetrics",
    "BestModelSaver",
    "EpochSeeds",
    "GroupScalarWriter",
    "GroupWeightedLossHandler",
    "MetricsReport",
    "NonFiniteLossError",
    "RunGuard",
    "RunInterrupted",
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


class _AtomicDiskSaver(DiskSaver):
    """Ignite's atomic ``DiskSaver`` (temporary file in the same folder, then ``os.replace``; group and
    others get read permission) with MONAI's fixed-file-name option."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        """Remove a superseded file; a fixed-name file is left for the next save to replace atomically
        (removing it first would leave no checkpoint if the process died in between)."""
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing every file atomically.

    MONAI writes checkpoints in place, so a run killed while saving leaves a half-written file that
    the next run would try to resume from. This saver writes to a temporary file in ``save_dir``
    and renames it over the target (``os.replace``), so a checkpoint file is either the old one or
    the complete new one; a kill can leave at most a ``tmp*`` file, which resuming ignores. Takes
    the arguments of ``CheckpointSaver``.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(
                    self.save_dir, getattr(checkpoint.save_handler, "filename", None)
                )


class NonFiniteLossError(ReportedError, FloatingPointError):
    """The training loss became NaN or infinite; raised by :class:`RunGuard` after saving a checkpoint."""


class RunInterrupted(SystemExit):
    """The run was stopped by a signal after saving a checkpoint; exits with status ``128 + signal``.

    Args:
        signum: the signal's number.
        message: what happened and how to resume.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + int(signum))
        self.message = message

    def __str__(self) -> str:
        return self.message


class RunGuard:
    """Stop a training run cleanly, after saving its checkpoint, on SIGTERM/SIGINT or a non-finite loss.

    - **Signals** (cluster pre-emption, Ctrl-C): the first ``SIGTERM``/``SIGINT`` lets the current
      iteration finish, then the run's ``checkpoint_saver`` writes its final checkpoint and the run
      ends with :class:`RunInterrupted` (a ``SystemExit`` with status ``128 + signal``, 143 for
      SIGTERM; no traceback). Running the same command again resumes from that checkpoint. A second
      signal gets the handler that was installed before (Ctrl-C twice stops at once). Signal
      handlers are installed while the engine runs, from the main thread only. Under
      ``torch.distributed`` every rank must receive the signal (``torchrun`` forwards SIGTERM).
    - **Divergence**: after the loss of each iteration (``IterationEvents.LOSS_COMPLETED``, before
      the backward pass and the optimizer step) it looks at the per-group losses that
      :class:`GroupWeightedLossHandler` publishes and records, on their device and without a host
      read, the first iteration where a group present in the batch has a NaN or infinite loss
      (:meth:`GroupWeights.update <mnms_groupdistil.losses.GroupWeights.update>` already skips such
      losses, so they never reach the group weights). Every ``check_interval`` iterations it reads
      that record back (one host synchronisation) and, if set, raises :class:`NonFiniteLossError`
      naming the iteration, the epoch and the batch's groups with their losses and sizes. With
      ``check_interval=1`` (the default) the check runs before the optimizer step, so it first
      saves the final checkpoint: network, optimizer and group weights exactly as before the bad
      iteration. With a larger interval there is no per-iteration synchronisation, but the network
      may have stepped on non-finite gradients before the check, so nothing is saved and the error
      says which checkpoints are still usable.

    Attach it after the loss handler and the checkpoint saver.

    Args:
        checkpoint_saver: the run's training-state saver (``save_final=True``); its
            ``exception_raised`` writes the final checkpoint before the error propagates.
        group_names: one name per group id, for the messages.
        signals: names of the signals that stop the run.
        check_interval: iterations between two reads of the non-finite-loss record (>= 1).
        name: logger name.

    Raises:
        ValueError: for an unknown signal name, a saver without ``save_final`` or a bad ``check_interval``.
    """

    def __init__(
        self,
        checkpoint_saver: CheckpointSaver,
        group_names: Sequence[str] = (),
        signals: Sequence[str] = ("SIGTERM", "SIGINT"),
        check_interval: int = 1,
        name: str | None = None,
    ) -> None:
        if isinstance(check_interval, bool) or not isinstance(check_interval, int) or check_interval < 1:
            raise ValueError(f"RunGuard check_interval must be an int >= 1, got {check_interval!r}.")
        if getattr(checkpoint_saver, "_final_checkpoint", None) is None:
            raise ValueError("RunGuard needs a checkpoint_saver with save_final=True: it saves the run when it stops.")
        unknown = [s for s in signals if not isinstance(getattr(signal, str(s), None), signal.Signals)]
        if unknown:
            raise ValueError(f"RunGuard signals {unknown} are not signal names (e.g. 'SIGTERM', 'SIGINT').")
        self.checkpoint_saver = checkpoint_saver
        self.group_names = [str(g) for g in group_names]
        self.signals = [getattr(signal, str(s)) for s in signals]
        self.logger = logging.getLogger(name or __name__)
        self.check_interval = check_interval
        self.received: int | None = None
        self._bad: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._previous: dict[int, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Register the signal set-up, the loss check and the stop (idempotent)."""
        for event, handler in (
            (Events.STARTED, self.started),
            (IterationEvents.LOSS_COMPLETED, self.loss_completed),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
            (Events.COMPLETED, self.completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def started(self, engine: Engine) -> None:
        """Install the signal handlers (main thread only)."""
        self.received = None
        self._bad = None
        if threading.current_thread() is not threading.main_thread():
            self.logger.warning("RunGuard: not in the main thread, SIGTERM/SIGINT will not save a checkpoint")
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = signum
        self._restore()
        self.logger.warning(f"{signal.Signals(signum).name} received: stopping after this iteration")

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _final_path(self) -> str:
        filename = getattr(self.checkpoint_saver, "_final_filename", None) or "the final checkpoint"
        return str(Path(self.checkpoint_saver.save_dir) / filename)

    def _group_name(self, index: int) -> str:
        return self.group_names[index] if index < len(self.group_names) else str(index)

    def loss_completed(self, engine: Engine) -> None:
        """Record (on the device) the first iteration with a non-finite loss; check it every ``check_interval``."""
        losses = getattr(engine.state, "group_losses", None)
        counts = getattr(engine.state, "group_counts", None)
        if losses is None or counts is None:  # a loss without groups: the scalar, as one "group"
            losses, counts = torch.as_tensor(engine.state.output[Keys.LOSS]).reshape(1), torch.ones(1)
        losses, counts = torch.as_tensor(losses).detach(), torch.as_tensor(counts).detach()
        bad = torch.isfinite(losses).logical_not().logical_and(counts > 0).any()
        if self._bad is None or self._bad[1].shape != losses.shape:
            self._bad = (torch.full((), -1, dtype=torch.int64, device=bad.device), losses.clone(), counts.clone())
        iteration, bad_losses, bad_counts = self._bad
        new = bad.logical_and(iteration < 0)
        self._bad = (
            torch.where(new, torch.full_like(iteration, int(engine.state.iteration)), iteration),
            torch.where(new, losses, bad_losses),
            torch.where(new, counts.to(bad_counts.dtype), bad_counts),
        )
        if engine.state.iteration % self.check_interval == 0:
            self._check(engine)

    def _check(self, engine: Engine) -> None:
        iteration, losses, counts = self._bad
        first = int(iteration)  # the one host read of the check
        if first < 0:
            return
        batch = ", ".join(
            f"{self._group_name(g)} ({int(n)} samples, mean loss {float(v)})"
            for g, (v, n) in enumerate(zip(losses.tolist(), counts.tolist()))
            if n > 0
        )
        where = f"the training loss is not finite at iteration {first} (epoch {engine.state.epoch}); groups in the batch: {batch}."
        fix = "Lower learning_rate (or group_step_size), or check the images of these groups"
        self._restore()
        if self.check_interval == 1:
            error = NonFiniteLossError(
                f"{where} The network, optimizer and group weights from before this iteration are saved in "
                f"{self._final_path()}. {fix}, then run again (it resumes from the checkpoint) or use a new output_dir."
            )
            self.logger.error(str(error))
            self.checkpoint_saver.exception_raised(engine, error)  # saves, then raises the error
        error = NonFiniteLossError(
            f"{where} Found at iteration {engine.state.iteration} (checked every {self.check_interval}): the group "
            f"weights skipped the non-finite losses but the network took up to {engine.state.iteration - first + 1} "
            f"steps on them, so nothing was saved; checkpoints written after iteration {first} are not usable. "
            f"{fix}, then resume from an earlier checkpoint or use a new output_dir."
        )
        self.logger.error(str(error))
        raise error

    def iteration_completed(self, engine: Engine) -> None:
        """After a signal: save the final checkpoint and end the run with :class:`RunInterrupted`."""
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        stop = RunInterrupted(
            self.received,
            f"stopped by {name} after iteration {engine.state.iteration} (epoch {engine.state.epoch}); "
            f"checkpoint saved in {self._final_path()}: run the same command again to resume",
        )
        self.logger.warning(str(stop))
        self.checkpoint_saver.exception_raised(engine, stop)  # saves, then raises SystemExit

    def completed(self, engine: Engine) -> None:
        """Put back the signal handlers that were there before the run."""
        self._restore()


class BestModelSaver(AtomicCheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose best-score record can go into the training checkpoint.

    Put it in the trainer's checkpoint ``save_dict``: a resumed run then knows the best key
    metric reached before the stop and replaces the best model (``key_metric_filename``) only
    with a better one. The model file itself stays a plain state dict, written atomically. Takes
    the arguments of ``CheckpointSaver``.
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
