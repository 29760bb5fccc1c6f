"""Stopping a run cleanly: on SIGTERM/SIGINT or a non-finite loss, after saving a checkpoint."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver
from monai.utils import CommonKeys as Keys

from mnms_groupdistil.errors import ReportedError
from mnms_groupdistil.handlers.events import attach_once

__all__ = ["NonFiniteLossError", "RunGuard", "RunInterrupted"]


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
      ``torch.distributed`` a signal to any rank stops them all after the same iteration (they agree
      through an all-reduce every ``check_interval`` iterations); rank 0 saves the checkpoint once.
    - **Divergence**: after the loss of each iteration (``IterationEvents.LOSS_COMPLETED``, before
      the backward pass and the optimizer step) it looks at the per-group losses that
      :class:`~mnms_groupdistil.handlers.loss.GroupWeightedLossHandler` publishes and records, on their device and without a host
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
        attach_once(
            engine,
            (
                (Events.STARTED, self.started),
                (IterationEvents.LOSS_COMPLETED, self.loss_completed),
                (Events.ITERATION_COMPLETED, self.iteration_completed),
                (Events.COMPLETED, self.completed),
            ),
        )

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

    def _agreed_signal(self, engine: Engine) -> int | None:
        """The signal to stop on: this process's or, under ``torch.distributed``, any rank's. The ranks agree
        (a max all-reduce every ``check_interval`` iterations), so all of them stop after the same iteration."""
        if idist.get_world_size() == 1:
            return self.received
        if engine.state.iteration % self.check_interval:
            return None
        return int(idist.all_reduce(int(self.received or 0), op="MAX")) or None

    def iteration_completed(self, engine: Engine) -> None:
        """After a signal: save the final checkpoint and end the run with :class:`RunInterrupted`."""
        received = self._agreed_signal(engine)
        if received is None:
            return
        self._restore()
        name = signal.Signals(received).name + ("" if received == self.received else " (sent to another rank)")
        stop = RunInterrupted(
            received,
            f"stopped by {name} after iteration {engine.state.iteration} (epoch {engine.state.epoch}); "
            f"checkpoint saved in {self._final_path()}: run the same command again to resume",
        )
        self.logger.warning(str(stop))
        try:
            self.checkpoint_saver.exception_raised(engine, stop)  # saves (the main rank), then raises SystemExit
        finally:
            # every rank stops after this iteration: none leaves before the main rank's save is complete, since
            # torchrun stops the other ranks as soon as one has exited, and would cut that save short
            if idist.get_world_size() > 1:
                idist.barrier()

    def completed(self, engine: Engine) -> None:
        """Put back the signal handlers that were there before the run."""
        self._restore()
