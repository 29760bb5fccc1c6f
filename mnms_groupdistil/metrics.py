"""Per-group accuracy and its summaries: worst-group, mean, overall and adjusted-average accuracy.

The functions are plain tensor maths; :class:`GroupAccuracy` is the Ignite metric that feeds them
from a MONAI evaluator, frame by frame or patient by patient (majority vote over a patient's
frames).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import EpochWise, MetricUsage
from monai.handlers import from_engine

from .errors import check_choice

__all__ = [
    "GroupAccuracy",
    "adjusted_average_accuracy",
    "group_accuracies",
    "group_metrics",
    "majority_vote",
    "mean_group_accuracy",
    "metric_name",
    "patient_majority_vote",
    "worst_group_accuracy",
]

REDUCTIONS = ("worst", "mean", "average", "adjusted", "none")
LEVELS = ("frame", "patient")

#: How each reduction ends a metric's name (:func:`metric_name`).
_REDUCTION_NAMES = {
    "worst": "worst_group_acc",
    "mean": "mean_group_acc",
    "average": "average_acc",
    "adjusted": "adjusted_average_acc",
    "none": "acc",
}


def group_accuracies(correct: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Accuracy of each group, shape (G,), NaN for a group with no samples.

    Args:
        correct: boolean (or 0/1) tensor of shape (N,), True where the prediction is right.
        groups: group index of each sample, shape (N,).
        num_groups: number of groups G.
    """
    correct = torch.as_tensor(correct).reshape(-1).double()
    groups = torch.as_tensor(groups).reshape(-1).long()
    if correct.shape != groups.shape:
        raise ValueError(f"correct {tuple(correct.shape)} and groups {tuple(groups.shape)} must have the same length.")
    hits = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, correct)
    counts = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, torch.ones_like(correct))
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(hits, float("nan")))


def worst_group_accuracy(accuracies: torch.Tensor) -> float:
    """Lowest accuracy over the groups that have samples (NaN if none has)."""
    present = accuracies[~torch.isnan(accuracies)]
    return float(present.min()) if present.numel() else float("nan")


def mean_group_accuracy(accuracies: torch.Tensor) -> float:
    """Unweighted mean of the accuracies of the groups that have samples (NaN if none has)."""
    present = accuracies[~torch.isnan(accuracies)]
    return float(present.mean()) if present.numel() else float("nan")


def adjusted_average_accuracy(accuracies: torch.Tensor, train_counts: Sequence[float]) -> float:
    """Group accuracies weighted by the training set's group proportions (Waterbirds' "adjusted average").

    Groups without evaluation samples are left out and the remaining proportions renormalised.

    Args:
        accuracies: per-group accuracies, shape (G,), NaN for groups without samples.
        train_counts: number of training samples of each group, length G.
    """
    counts = torch.as_tensor(list(train_counts), dtype=torch.float64)
    if counts.shape != accuracies.shape:
        raise ValueError(f"train_counts needs {accuracies.shape[0]} entries, got {counts.shape[0]}.")
    present = ~torch.isnan(accuracies)
    if not present.any() or counts[present].sum() <= 0:
        return float("nan")
    return float((accuracies[present] * counts[present]).sum() / counts[present].sum())


def majority_vote(scores: torch.Tensor) -> int:
    """The class predicted for most rows of ``scores`` (N, C); a tie goes to the larger summed score."""
    votes = torch.bincount(scores.argmax(dim=1), minlength=scores.shape[1]).double()
    tie_break = scores.double().sum(dim=0)
    return int(torch.where(votes == votes.max(), tie_break, torch.full_like(tie_break, -float("inf"))).argmax())


def patient_majority_vote(
    scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, subjects: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse frame predictions to one prediction per patient by majority vote.

    A tie between classes goes to the class with the larger summed score.

    Args:
        scores: per-frame class scores (logits or probabilities), shape (N, C).
        labels: per-frame class labels, shape (N,).
        groups: per-frame group ids, shape (N,).
        subjects: per-frame patient identifiers, length N.

    Returns:
        ``(predictions, labels, groups)``, one entry per patient, in order of first appearance.

    Raises:
        ValueError: when a patient's frames disagree on label or group.
    """
    order: dict[str, list[int]] = {}
    for index, subject in enumerate(subjects):
        order.setdefault(str(subject), []).append(index)
    predictions, patient_labels, patient_groups = [], [], []
    for subject, indices in order.items():
        idx = torch.as_tensor(indices)
        if labels[idx].unique().numel() > 1 or groups[idx].unique().numel() > 1:
            raise ValueError(f"frames of patient {subject} carry different labels or groups.")
        predictions.append(majority_vote(scores[idx]))
        patient_labels.append(int(labels[idx[0]]))
        patient_groups.append(int(groups[idx[0]]))
    return torch.tensor(predictions), torch.tensor(patient_labels), torch.tensor(patient_groups)


def _stack(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    return torch.stack([torch.as_tensor(v).detach().cpu() for v in values])


class GroupAccuracy(Metric):
    """Ignite metric: accuracy per group and its summaries, for a MONAI evaluator.

    Predictions and labels come from ``engine.state.output`` (``output_transform``); group ids and
    patient identifiers from ``engine.state.batch`` (``batch_transform``), so the evaluator's
    output needs no extra keys. Works with decollated (list) and collated (dict) engine data.

    ``reduction`` picks what :meth:`compute` returns: ``"worst"`` (worst-group accuracy),
    ``"mean"`` (mean of group accuracies), ``"average"`` (accuracy over all samples),
    ``"adjusted"`` (group accuracies weighted by ``train_counts``), or ``"none"``: a mapping
    ``{"<name>_<group>": accuracy}`` that Ignite stores as one metric per group.

    Args:
        group_names: one name per group id, e.g. ``["A", "C", "D"]``.
        reduction: one of ``worst``, ``mean``, ``average``, ``adjusted``, ``none``.
        level: ``"frame"`` (every sample) or ``"patient"`` (majority vote over a patient's frames).
        train_counts: training samples per group, needed for ``reduction="adjusted"``.
        output_transform: engine output -> ``(pred, label)``; pred are per-class scores.
        batch_transform: engine batch -> ``(group, subject)``; ``subject`` only matters for
            ``level="patient"``.
        device: where the accumulated tensors live.

    Example (bundle config)::

        "key_val_metric": {"val_worst_group_acc": {"_target_": "mnms_groupdistil.metrics.GroupAccuracy",
                                                   "group_names": "@group_names", "reduction": "worst"}}

    (the bundles build their metrics with :func:`group_metrics`).
    """

    def __init__(
        self,
        group_names: Sequence[str],
        reduction: str = "worst",
        level: str = "frame",
        train_counts: Sequence[float] | None = None,
        output_transform: Callable = from_engine(["pred", "label"]),
        batch_transform: Callable = from_engine(["group", "subject"]),
        device: str | torch.device = "cpu",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
        if len(group_names) < 1:
            raise ValueError("group_names must name at least one group.")
        if reduction == "adjusted" and (train_counts is None or len(train_counts) != len(group_names)):
            raise ValueError(
                f"reduction='adjusted' needs train_counts with one entry per group ({len(group_names)}), "
                f"got {train_counts}."
            )
        self.group_names = [str(g) for g in group_names]
        self.reduction = reduction
        self.level = level
        self.train_counts = None if train_counts is None else list(train_counts)
        self.batch_transform = batch_transform
        self._name = "group_accuracy"
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._groups: list[torch.Tensor] = []
        self._subjects: list[str] = []

    def update(self, output: tuple[Any, Any], batch: tuple[Any, Any] | None = None) -> None:
        """Accumulate one batch: ``output = (pred, label)``, ``batch = (group, subject)``."""
        if batch is None:
            raise ValueError("GroupAccuracy.update needs the batch's (group, subject) as second argument.")
        scores, labels = _stack(output[0]), _stack(output[1]).reshape(-1).long()
        groups, subjects = batch
        groups = _stack(groups).reshape(-1).long()
        if scores.ndim != 2:
            scores = scores.reshape(scores.shape[0], -1)
        if not (scores.shape[0] == labels.shape[0] == groups.shape[0]):
            raise ValueError(
                f"batch sizes differ: pred {scores.shape[0]}, label {labels.shape[0]}, group {groups.shape[0]}."
            )
        if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= len(self.group_names)):
            raise ValueError(f"group ids must lie in [0, {len(self.group_names)}) for groups {self.group_names}.")
        self._scores.append(scores.float())
        self._labels.append(labels)
        self._groups.append(groups)
        subjects = [] if subjects is None else list(subjects)
        if self.level == "patient" and len(subjects) != groups.shape[0]:
            raise ValueError("level='patient' needs one subject identifier per sample from batch_transform.")
        self._subjects.extend(str(s) for s in subjects)

    def iteration_completed(self, engine: Engine) -> None:
        self.update(self._output_transform(engine.state.output), self.batch_transform(engine.state.batch))

    def attach(self, engine: Engine, name: str, usage: str | MetricUsage = EpochWise()) -> None:
        self._name = name
        super().attach(engine, name, usage)

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        if not self._scores:
            raise ValueError(f"metric {self._name} saw no samples: is the evaluation dataset empty?")
        local = (torch.cat(self._scores), torch.cat(self._labels), torch.cat(self._groups), list(self._subjects))
        if idist.get_world_size() == 1:
            return local
        # ranks may hold different numbers of samples: gather them as objects, not same-size tensors
        parts = idist.all_gather(local)
        return (
            torch.cat([p[0] for p in parts]),
            torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]),
            [s for p in parts for s in p[3]],
        )

    def _predictions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(predictions, labels, groups)`` at this metric's level (frames or patients)."""
        scores, labels, groups, subjects = self._gathered()
        if self.level == "patient":
            return patient_majority_vote(scores, labels, groups, subjects)
        return scores.argmax(dim=1), labels, groups

    def per_group(self) -> torch.Tensor:
        """Accuracy of each group over what has been accumulated, shape (G,)."""
        predictions, labels, groups = self._predictions()
        return group_accuracies(predictions == labels, groups, len(self.group_names))

    def compute(self) -> float | Mapping[str, float]:
        if self.reduction == "average":
            predictions, labels, _ = self._predictions()
            return float((predictions == labels).double().mean())
        accuracies = self.per_group()
        if self.reduction == "none":
            return {f"{self._name}_{g}": float(a) for g, a in zip(self.group_names, accuracies)}
        if self.reduction == "worst":
            return worst_group_accuracy(accuracies)
        if self.reduction == "mean":
            return mean_group_accuracy(accuracies)
        return adjusted_average_accuracy(accuracies, self.train_counts)


def metric_name(prefix: str, reduction: str, level: str = "frame") -> str:
    """The name of an evaluation's metric: ``<prefix>_[patient_]<reduction part>``.

    ``worst`` -> ``worst_group_acc``, ``mean`` -> ``mean_group_acc``, ``average`` -> ``average_acc``,
    ``adjusted`` -> ``adjusted_average_acc``, ``none`` -> ``acc`` (whose per-group values are named
    ``<name>_<group>``); ``patient_`` for ``level="patient"``. E.g. ``metric_name("val", "worst")`` is
    ``val_worst_group_acc``, ``metric_name("test", "none", "patient")`` is ``test_patient_acc``.

    Raises:
        InputError: an unknown ``reduction`` or ``level``.
    """
    check_choice("metric reduction", reduction, REDUCTIONS)
    check_choice("metric level", level, LEVELS)
    return f"{prefix}_{'patient_' if level == 'patient' else ''}{_REDUCTION_NAMES[reduction]}"


def group_metrics(
    prefix: str,
    group_names: Sequence[str],
    reductions: Sequence[str],
    levels: Sequence[str] = ("frame",),
    train_counts: Sequence[float] | None = None,
) -> dict[str, GroupAccuracy]:
    """The group-accuracy metrics of one evaluation, by name (:func:`metric_name`), level by level.

    Args:
        prefix: the evaluation's name, e.g. ``"val"`` or ``"test"``.
        group_names: one name per group id.
        reductions: the :class:`GroupAccuracy` reductions to compute at each level, in order.
        levels: ``"frame"`` and/or ``"patient"``, in order.
        train_counts: training samples per group (the ``adjusted`` reduction needs them).

    Returns:
        ``{name: GroupAccuracy}``, for each level every reduction, e.g. ``val_worst_group_acc``,
        ``val_mean_group_acc``, ``val_acc``, ``val_patient_worst_group_acc``, ...

    Raises:
        InputError: an unknown reduction or level.
        ValueError: ``adjusted`` without ``train_counts`` for every group.
    """
    return {
        metric_name(prefix, reduction, level): GroupAccuracy(
            group_names, reduction=reduction, level=level, train_counts=train_counts
        )
        for level in levels
        for reduction in reductions
    }
