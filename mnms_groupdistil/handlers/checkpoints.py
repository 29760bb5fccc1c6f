"""Training checkpoints: atomic writes, the best-model record that resumes, and resuming a stopped run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["AtomicCheckpointSaver", "BestModelSaver", "attach_resume", "latest_checkpoint"]


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
