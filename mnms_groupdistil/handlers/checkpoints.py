"""Training checkpoints: atomic writes, the best-model record that resumes, and resuming a stopped run.

A run's ``output_dir`` holds :data:`FINAL_MODEL` (the last epoch's network), :data:`BEST_MODEL` (the
network of the best validation epoch) and the training checkpoints ``checkpoint_epoch=N.pt`` and
:data:`FINAL_CHECKPOINT`; :func:`final_model_saver`, :func:`best_model_saver` and
:func:`training_checkpoint_saver` are their savers as the bundles configure them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn

__all__ = [
    "BEST_MODEL",
    "FINAL_CHECKPOINT",
    "FINAL_MODEL",
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "attach_resume",
    "best_model_saver",
    "final_model_saver",
    "latest_checkpoint",
    "training_checkpoint_saver",
]

#: File name of the network after the last epoch (a plain state dict).
FINAL_MODEL = "model_final.pt"
#: File name of the network of the epoch with the best validation key metric (a plain state dict).
BEST_MODEL = "model.pt"
#: File name of the training state saved when a run ends, is stopped or fails.
FINAL_CHECKPOINT = "checkpoint_final.pt"


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


def final_model_saver(output_dir: str, network: nn.Module) -> AtomicCheckpointSaver:
    """The trainer handler that writes ``network``'s weights to ``<output_dir>/``:data:`FINAL_MODEL` at the end."""
    return AtomicCheckpointSaver(output_dir, {"network": network}, save_final=True, final_filename=FINAL_MODEL)


def best_model_saver(output_dir: str, network: nn.Module) -> BestModelSaver:
    """The validation handler that keeps ``network``'s weights of the epoch with the best key metric in
    ``<output_dir>/``:data:`BEST_MODEL` (put it in the training checkpoint: its record resumes)."""
    return BestModelSaver(output_dir, {"network": network}, save_key_metric=True, key_metric_filename=BEST_MODEL)


def training_checkpoint_saver(output_dir: str, state: dict[str, Any]) -> AtomicCheckpointSaver:
    """The trainer handler that saves the training ``state`` after every epoch (``checkpoint_epoch=N.pt``,
    only the latest kept) and to ``<output_dir>/``:data:`FINAL_CHECKPOINT` when the run ends, fails or is
    stopped (:class:`~mnms_groupdistil.handlers.guard.RunGuard`); :func:`attach_resume` resumes from them."""
    return AtomicCheckpointSaver(
        output_dir,
        state,
        save_interval=1,
        epoch_level=True,
        n_saved=1,
        save_final=True,
        final_filename=FINAL_CHECKPOINT,
    )
