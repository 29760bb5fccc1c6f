"""The training engine both bundles wire from their ``train.json``: config components with keyword arguments.

A bundle's ``train.json`` holds its data, networks and settings; these pieces are the rest, named by
``_target_`` so that one definition serves both bundles (MONAI's ``%file#id`` macros read files relative
to the working directory, so a bundle could not include a shared config file and still run from the
repository root, from its own folder and exported):

- :func:`train_loader`: the training batches in the composition the ``batching`` setting names.
- :func:`sample_groups`: the group of every training sample (for the loaders and the group counts).
- :func:`trained_network`: a network with trained weights on its device (the teacher, an evaluated model).
- :class:`GroupEvaluation` and :func:`group_evaluator`: one definition of the run's evaluators
  (validation, test) with their group-accuracy metrics; :func:`metrics_report` reports them.
- :func:`prepare_trainer`: attach the run's own handlers to the trainer, in order, and resume.

Dataset-free: the bundles pass their own datasets, networks and group names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from mnms_groupdistil.acceleration import to_device
from mnms_groupdistil.errors import InputError, SettingError
from mnms_groupdistil.handlers import AttachMetrics, MetricsReport, attach_resume
from mnms_groupdistil.metrics import GroupAccuracy, group_metrics, metric_name
from mnms_groupdistil.network_checkpoints import load_network
from mnms_groupdistil.samplers import BalancedBatchSampler, GroupBatchSampler, check_batching

__all__ = [
    "KEY_REDUCTION",
    "GroupEvaluation",
    "group_evaluator",
    "metrics_report",
    "prepare_trainer",
    "sample_groups",
    "train_loader",
    "trained_network",
]

#: The reduction of the validation evaluator's key metric (the worst-group accuracy): it ranks the epochs.
KEY_REDUCTION = "worst"


def train_loader(
    dataset: Dataset,
    groups: Sequence[int],
    batching: str,
    batch_size: int,
    seed: int = 0,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    group_batches: bool | None = None,
) -> DataLoader:
    """A training ``DataLoader`` whose batches have the composition ``batching`` names.

    - ``one_group``: :class:`~mnms_groupdistil.samplers.GroupBatchSampler` (Algorithm 1).
    - ``mixed``: ``sampler`` (default a ``RandomSampler``; ``multi_gpu_train.json`` gives a
      ``DistributedSampler``) in batches of ``batch_size``: the data's proportions.
    - ``balanced``: :class:`~mnms_groupdistil.samplers.BalancedBatchSampler`, every group in
      equal shares in every batch (under ``torch.distributed``: in every global batch).

    The group samplers draw from ``(seed, epoch)``; the trainer's
    :class:`~mnms_groupdistil.handlers.EpochSeeds` sets the epoch.

    Args:
        dataset: the training dataset.
        groups: group id of every sample of ``dataset``.
        batching: one of :data:`~mnms_groupdistil.samplers.BATCHINGS`.
        batch_size: samples per batch (per rank).
        seed: the run's seed.
        sampler: the sampler of ``mixed`` batches.
        num_workers, pin_memory, persistent_workers: as ``DataLoader`` (persistent only with workers).
        group_batches: the setting ``batching`` replaced; anything but None is refused, naming the replacement.

    Raises:
        InputError: for an unknown ``batching``, a ``group_batches`` setting, or ``groups`` not
            matching the dataset.
    """
    if group_batches is not None:
        replacement = "one_group" if group_batches else "mixed"
        raise InputError(
            f"group_batches was replaced by batching: use --batching {replacement} instead of "
            f"--group_batches {group_batches} (or balanced: every group in equal shares in every batch)."
        )
    check_batching(batching)
    if len(groups) != len(dataset):
        raise InputError(f"{len(groups)} group ids for a training dataset of {len(dataset)} samples.")
    options = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": bool(persistent_workers and num_workers > 0),
    }
    if batching == "mixed":
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler or RandomSampler(dataset), **options)
    kind = GroupBatchSampler if batching == "one_group" else BalancedBatchSampler
    return DataLoader(dataset, batch_sampler=kind(groups, batch_size, seed=seed), **options)


def sample_groups(samples: Sequence[Mapping[str, Any]], source: str = "samples") -> list[int]:
    """The ``"group"`` entry of every sample, in order: of the records (one per image) or of the frame
    entries (one per training frame) a bundle trains on.

    Args:
        samples: the training samples' records.
        source: what ``samples`` are, quoted in the error.

    Raises:
        InputError: a sample has no ``"group"``.
    """
    missing = [i for i, sample in enumerate(samples) if "group" not in sample]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{source}: {len(missing)} sample(s) without a 'group' entry (indices {shown}).")
    return [sample["group"] for sample in samples]


def trained_network(
    network: nn.Module,
    checkpoint: str | Path,
    device: str | torch.device,
    channels_last: bool = False,
    setting: str = "teacher_ckpt",
    enabled: bool = True,
) -> nn.Module | None:
    """``network`` with the weights of ``checkpoint``, frozen, on ``device``; None when not ``enabled``.

    The teacher of a distilling run (``enabled``: the mode distils) and the network an evaluation loads.

    Args:
        network: the module to load into (built as at training time).
        checkpoint: the weights file (see :func:`~mnms_groupdistil.network_checkpoints.load_network`).
        device: where the network runs.
        channels_last: 4D weights in channels-last memory format.
        setting: the config id naming ``checkpoint``, for the messages.
        enabled: False returns None without reading ``checkpoint``.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`~mnms_groupdistil.network_checkpoints.load_network`.
    """
    if not enabled:
        return None
    return to_device(load_network(network, checkpoint, setting=setting), device, channels_last)


@dataclass(frozen=True, eq=False)
class GroupEvaluation:
    """What every evaluation of a run shares: the evaluated network, where and how it runs, and its metrics.

    One definition for the validation and the test evaluator (:func:`group_evaluator`) and their report
    (:func:`metrics_report`): the metrics of an evaluation named ``prefix`` are
    :func:`~mnms_groupdistil.metrics.group_metrics` ``(prefix, group_names, reductions, levels, train_counts)``.

    Args:
        network: the evaluated network (the averaged copy when the run averages its weights).
        group_names: one name per group id.
        reductions: the group-accuracy reductions of every evaluation; they must include
            :data:`KEY_REDUCTION` (the validation key metric) and ``"none"`` (the per-group accuracies).
        levels: ``"frame"`` and/or ``"patient"``; the key metric is at the first level.
        train_counts: training samples per group (the ``adjusted`` reduction; recorded in the report).
        device: where the network runs.
        inferer: how the network is called (e.g. the trainer's
            :class:`~mnms_groupdistil.acceleration.AutocastInferer`); None: MONAI's ``SimpleInferer``.
        amp: MONAI's automatic mixed precision in the evaluators.
        non_blocking: non-blocking host-to-device copies.

    Raises:
        SettingError: ``reductions`` lack the key or the per-group reduction, or ``levels`` is empty.
        InputError: an unknown reduction or level.
    """

    network: nn.Module
    group_names: Sequence[str]
    reductions: Sequence[str]
    levels: Sequence[str] = ("frame",)
    train_counts: Sequence[int] | None = None
    device: str | torch.device = "cpu"
    inferer: Inferer | None = None
    amp: bool = False
    non_blocking: bool = False

    def __post_init__(self) -> None:
        for needed in (KEY_REDUCTION, "none"):
            if needed not in self.reductions:
                raise SettingError(
                    f"metric_reductions {list(self.reductions)} lack {needed!r}: the evaluations need the "
                    "worst-group accuracy (it ranks the epochs) and the per-group accuracies ('none')."
                )
        if not self.levels:
            raise SettingError("metric_levels is empty: give 'frame' and/or 'patient'.")
        for level in self.levels:
            for reduction in self.reductions:
                metric_name("", reduction, level)  # refuses an unknown reduction or level

    def metrics(self, prefix: str) -> dict[str, GroupAccuracy]:
        """The metrics of the evaluation named ``prefix``, by name."""
        return group_metrics(prefix, self.group_names, self.reductions, self.levels, self.train_counts)

    def key_metric(self, prefix: str) -> str:
        """The name of the key metric of the evaluation named ``prefix`` (e.g. ``val_worst_group_acc``)."""
        return metric_name(prefix, KEY_REDUCTION, self.levels[0])

    def per_group_metrics(self, prefixes: Sequence[str]) -> list[str]:
        """Names of the per-group metrics (``<name>_<group>`` entries) of the evaluations ``prefixes``."""
        return [metric_name(prefix, "none", level) for prefix in prefixes for level in self.levels]

    def summary_metrics(self, prefixes: Sequence[str]) -> list[str]:
        """Names of the scalar metrics of the evaluations ``prefixes``."""
        return [
            metric_name(prefix, reduction, level)
            for prefix in prefixes
            for level in self.levels
            for reduction in self.reductions
            if reduction != "none"
        ]


def group_evaluator(
    evaluation: GroupEvaluation,
    prefix: str,
    val_data_loader: Any,
    val_handlers: Sequence[Any] = (),
    select_model: bool = False,
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator`` of ``evaluation``'s network computing its metrics named ``prefix``.

    ``select_model=True`` (validation): the worst-group accuracy is the evaluator's key metric, so that
    MONAI tracks the best epoch and a :func:`~mnms_groupdistil.handlers.best_model_saver` in
    ``val_handlers`` keeps its model. Otherwise (test data, which must rank nothing) the metrics are
    attached without a key metric (:class:`~mnms_groupdistil.handlers.AttachMetrics`, before
    ``val_handlers``, which then read them).

    Args:
        evaluation: what the run's evaluations share.
        prefix: the evaluation's name, the first part of its metrics' names (``val``, ``test``).
        val_data_loader: the evaluation data.
        val_handlers: the evaluator's handlers (logs, reports, savers), attached in order.
        select_model: whether this evaluation ranks the epochs.
    """
    metrics = evaluation.metrics(prefix)
    if select_model:
        key = evaluation.key_metric(prefix)
        key_val_metric, handlers = {key: metrics.pop(key)}, list(val_handlers)
    else:
        key_val_metric, handlers = None, [AttachMetrics(metrics), *val_handlers]
        metrics = {}
    return SupervisedEvaluator(
        device=evaluation.device,
        val_data_loader=val_data_loader,
        network=evaluation.network,
        inferer=evaluation.inferer,
        key_val_metric=key_val_metric,
        additional_metrics=metrics or None,
        val_handlers=handlers,
        amp=evaluation.amp,
        non_blocking=evaluation.non_blocking,
    )


def metrics_report(
    filepath: str | Path,
    evaluation: GroupEvaluation,
    prefixes: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    select_by: str | None = None,
    validation: bool = True,
    selection: bool = True,
) -> MetricsReport:
    """The :class:`~mnms_groupdistil.handlers.MetricsReport` of the evaluations ``prefixes`` of ``evaluation``.

    Its table has a column per per-group metric and the scalar metrics below; ``extra`` gains
    ``train_group_counts`` (``{group: count}``) when the evaluation has training counts.

    Args:
        filepath: the JSON to write (``metrics.json`` of a training run).
        evaluation: what the evaluations share (metrics, group names, training counts).
        prefixes: the evaluations reported, e.g. ``["test", "val"]``.
        extra: more fields of the JSON (the run's settings and data sizes).
        select_by: the metric that selects the reported epoch (higher is better); None: the last epoch.
        validation: whether the run evaluates validation data; without, the last epoch is reported
            whatever ``select_by`` says.
        selection: whether the report says how its model was chosen (False for the evaluation of a
            given checkpoint).
    """
    extra = dict(extra or {})
    if evaluation.train_counts is not None:
        extra["train_group_counts"] = dict(zip(evaluation.group_names, evaluation.train_counts))
    return MetricsReport(
        filepath,
        evaluation.group_names,
        group_metric_prefixes=evaluation.per_group_metrics(prefixes),
        summary_metrics=evaluation.summary_metrics(prefixes),
        extra=extra,
        select_by=select_by if validation else None,
        selection=selection,
    )


def prepare_trainer(
    trainer: Engine,
    handlers: Sequence[Any],
    checkpoint: dict[str, Any],
    output_dir: str | Path,
    resume: bool = True,
    map_location: Any = None,
) -> str | None:
    """Attach the run's own handlers to ``trainer`` in order, then resume from ``output_dir`` if asked.

    The handlers the trainer does not take in its ``train_handlers`` list, because their order against
    each other matters: the loss handler first (the trainer's loss function), the weight averaging, the
    training checkpoint saver, then the run guard (after the loss handler and the saver it stops with).
    Resuming (:func:`~mnms_groupdistil.handlers.attach_resume`) comes after the saver.

    Args:
        trainer: the run's trainer.
        handlers: objects with an ``attach(engine)`` method, attached in order.
        checkpoint: the training state that the checkpoints hold and a resumed run restores.
        output_dir: the run's folder.
        resume: whether to resume from the latest checkpoint in ``output_dir``.
        map_location: where the checkpoint's tensors are loaded.

    Returns:
        The checkpoint resumed from, or None.
    """
    for handler in handlers:
        handler.attach(trainer)
    return attach_resume(trainer, output_dir, checkpoint, map_location) if resume else None
