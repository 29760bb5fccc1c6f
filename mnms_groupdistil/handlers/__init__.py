"""Ignite handlers that put the group-weighted objective into MONAI's trainers and evaluators, one
concern per module; every class is importable from here (``mnms_groupdistil.handlers.X``, as the
bundle configs name them).

- :mod:`.loss`: :class:`GroupWeightedLossHandler` runs the frozen teacher, computes the per-sample
  loss and the group-weighted objective, and publishes the group weights and per-group losses on
  ``engine.state``; :func:`training_scalars` reads them back by name for the loggers.
- :mod:`.tensorboard`: :class:`GroupScalarWriter` writes those to TensorBoard (as the
  ``iteration_event_writer`` of MONAI's ``TensorBoardStatsHandler``).
- :mod:`.checkpoints`: :class:`AtomicCheckpointSaver` (never a half-written file),
  :class:`BestModelSaver` (its record resumes), :func:`attach_resume`, and the run's three savers as the
  bundles configure them (:func:`final_model_saver`, :func:`best_model_saver`,
  :func:`training_checkpoint_saver`).
- :mod:`.guard`: :class:`RunGuard` stops a run on SIGTERM/SIGINT or a non-finite loss after saving.
- :mod:`.events`: :func:`attach_once`, the one implementation of the handlers' idempotent ``attach``.
- :mod:`.seeding`: :class:`EpochSeeds` makes each epoch's draws depend on (seed, rank, epoch) only.
- :mod:`.averaging`: :class:`WeightAveraging` (an EMA of the weights: the evaluated model) and
  :class:`PreciseBatchNorm` (BatchNorm statistics recomputed over balanced training batches).
- :mod:`.schedule`: :class:`LearningRateSchedule` (constant or cosine, optional warm-up).
- :mod:`.reports`: :class:`AttachMetrics` and :class:`MetricsReport` (``metrics.json``, summary table).
"""

from mnms_groupdistil.handlers.averaging import PreciseBatchNorm, WeightAveraging
from mnms_groupdistil.handlers.checkpoints import (
    AtomicCheckpointSaver,
    BestModelSaver,
    attach_resume,
    best_model_saver,
    final_model_saver,
    latest_checkpoint,
    training_checkpoint_saver,
)
from mnms_groupdistil.handlers.guard import NonFiniteLossError, RunGuard, RunInterrupted
from mnms_groupdistil.handlers.loss import (
    GroupWeightedLossHandler,
    group_from_batch,
    loss_from_output,
    training_scalars,
)
from mnms_groupdistil.handlers.reports import AttachMetrics, MetricsReport
from mnms_groupdistil.handlers.schedule import LearningRateSchedule
from mnms_groupdistil.handlers.seeding import EpochSeeds
from mnms_groupdistil.handlers.tensorboard import GroupScalarWriter

__all__ = [
    "AtomicCheckpointSaver",
    "AttachMetrics",
    "BestModelSaver",
    "EpochSeeds",
    "GroupScalarWriter",
    "GroupWeightedLossHandler",
    "LearningRateSchedule",
    "MetricsReport",
    "NonFiniteLossError",
    "PreciseBatchNorm",
    "RunGuard",
    "RunInterrupted",
    "WeightAveraging",
    "attach_resume",
    "best_model_saver",
    "final_model_saver",
    "group_from_batch",
    "latest_checkpoint",
    "loss_from_output",
    "training_checkpoint_saver",
    "training_scalars",
]
