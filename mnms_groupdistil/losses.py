"""Per-sample losses and groupDRO's exponentiated-gradient group weights.

The objective of GroupDistil (Vilouras et al., "Group distributionally robust knowledge
distillation", arXiv 2311.00476) is the Hinton distillation loss averaged per group ``d`` and
weighted by adversarial group weights ``w``::

    L_KD(zS, zT, y) = (1 - a) * CE(y, softmax(zS)) + a * T^2 * KL(softmax(zT / T) || softmax(zS / T))
    L = sum_d w_d * mean_{i in d} L_KD_i

after every batch the weights of the groups seen in it move towards the groups with the largest
loss (Sagawa et al., "Distributionally robust neural networks", ICLR 2020)::

    w_d <- w_d * exp(eta * l_d);  w <- w / sum(w)

The same pieces with plain cross-entropy and no teacher give groupDRO; fixed weights give ERM
and plain knowledge distillation. Nothing here depends on Ignite: the handler in
:mod:`mnms_groupdistil.handlers` wires these functions into a MONAI ``SupervisedTrainer``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mnms_groupdistil.errors import InputError

__all__ = [
    "MODES",
    "ModeFlags",
    "CrossEntropyLoss",
    "DistillationLoss",
    "GroupLoss",
    "GroupWeightedLoss",
    "GroupWeights",
    "all_reduce_group_sums",
    "count_groups",
    "cross_entropy_loss",
    "distillation_loss",
    "group_sums",
    "mode_flags",
    "sample_loss",
]


class ModeFlags(NamedTuple):
    """What a training mode turns on (see :data:`MODES`)."""

    robust: bool
    """exponentiated-gradient group weights (groupDRO's objective) instead of fixed uniform ones."""
    distil: bool
    """the distillation loss from a teacher instead of plain cross-entropy."""


#: The training modes and their flags: the four combinations of robust weights and distillation.
MODES: dict[str, ModeFlags] = {
    "erm": ModeFlags(robust=False, distil=False),
    "groupdro": ModeFlags(robust=True, distil=False),
    "kd": ModeFlags(robust=False, distil=True),
    "groupdistil": ModeFlags(robust=True, distil=True),
}


def mode_flags(mode: str) -> ModeFlags:
    """The flags of a training mode; the one place where ``mode`` is checked.

    Args:
        mode: one of :data:`MODES` (``erm``, ``groupdro``, ``kd``, ``groupdistil``), exactly.

    Returns:
        ``ModeFlags(robust, distil)``.

    Raises:
        InputError: (a ``ValueError``) for any other value, listing the valid modes.
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise InputError(
            f"mode={mode!r} is not a training mode; valid modes: {', '.join(MODES)} "
            "(e.g. --mode groupdistil, or merge train_erm.json / train_groupdro.json / train_kd.json)"
        )
    return MODES[mode]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` view (MONAI's MetaTensor and other subclasses dropped; autograd kept).

    Keeps subclasses out of the group weights, whose checkpoints must load with ``weights_only=True``.
    """
    return torch.as_tensor(tensor).as_subclass(torch.Tensor)


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, classes), got {tuple(logits.shape)}.")


def _as_class_indices(target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class indices of shape (B,) from labels of shape (B,) or (B, 1)."""
    target = torch.as_tensor(target)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1 or target.shape[0] != batch_size:
        raise ValueError(
            f"target must hold one class index per sample (shape ({batch_size},)), got {tuple(target.shape)}."
        )
    return target.long()


def cross_entropy_loss(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, shape (B,).

    Args:
        student_logits: logits of shape (B, C).
        target: class indices of shape (B,) or (B, 1).
    """
    _check_logits("student_logits", student_logits)
    target = _as_class_indices(_plain(target), student_logits.shape[0]).to(student_logits.device)
    return F.cross_entropy(_plain(student_logits).float(), target, reduction="none")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Per-sample Hinton distillation loss, shape (B,).

    ``(1 - alpha) * CE(target, softmax(zS)) + alpha * T^2 * KL(softmax(zT / T) || softmax(zS / T))``,
    computed from log-softmaxes so that large logits do not overflow. The teacher is a constant:
    no gradient flows into ``teacher_logits``.

    Args:
        student_logits: student logits ``zS`` of shape (B, C).
        teacher_logits: teacher logits ``zT`` of shape (B, C).
        target: class indices of shape (B,) or (B, 1).
        temperature: softening temperature ``T`` (> 0).
        alpha: weight of the distillation term, in [0, 1]; 0 gives plain cross-entropy.

    Raises:
        ValueError: on mismatched shapes, a non-positive temperature or alpha outside [0, 1].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    _check_logits("teacher_logits", teacher_logits)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits {tuple(teacher_logits.shape)} and student_logits {tuple(student_logits.shape)} "
            "must have the same shape: teacher and student need the same number of classes."
        )
    hard = cross_entropy_loss(student_logits, target)
    log_p_student = F.log_softmax(_plain(student_logits).float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(_plain(teacher_logits).detach().float() / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return (1.0 - alpha) * hard + alpha * temperature**2 * kl


class CrossEntropyLoss:
    """Per-sample cross-entropy as a configurable object (groupDRO and ERM); needs no teacher."""

    needs_teacher = False

    def __call__(
        self, student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        return cross_entropy_loss(student_logits, target)


class DistillationLoss:
    """Per-sample distillation loss (:func:`distillation_loss`) with fixed ``temperature``/``alpha``.

    Args:
        temperature: softening temperature ``T``; the paper uses 4.
        alpha: weight of the distillation term; the paper uses 0.9.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), temperature, alpha)  # validate
        self.temperature = temperature
        self.alpha = alpha

    def __call__(
        self, student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if teacher_logits is None:
            raise ValueError("DistillationLoss needs teacher logits: give the loss handler a teacher network.")
        return distillation_loss(student_logits, teacher_logits, target, self.temperature, self.alpha)


def sample_loss(distil: bool, temperature: float = 4.0, alpha: float = 0.9) -> CrossEntropyLoss | DistillationLoss:
    """The per-sample loss of a mode: :class:`DistillationLoss` when it distils, else :class:`CrossEntropyLoss`.

    Args:
        distil: whether the mode distils from a teacher (:attr:`ModeFlags.distil`).
        temperature, alpha: the distillation loss's settings (unused without distillation).
    """
    return DistillationLoss(temperature, alpha) if distil else CrossEntropyLoss()


def _check_group_ids(groups: torch.Tensor, num_groups: int, source: str) -> None:
    """Raise ValueError when a group id of the host tensor ``groups`` is outside [0, num_groups)."""
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= num_groups):
        raise ValueError(
            f"{source}: group ids must lie in [0, {num_groups}), got values {sorted(set(groups.tolist()))}: "
            "check num_groups against the dataset's groups."
        )


def count_groups(groups: Sequence[int] | torch.Tensor, num_groups: int, source: str = "groups") -> list[int]:
    """Samples per group of a whole dataset, after checking every group id once.

    The bundles call this when they build the group weights, so a bad group id is reported before
    training instead of being checked again at every step (a check on an accelerator would wait for
    the device each time).

    Args:
        groups: group id of every sample of the dataset.
        num_groups: number of groups G.
        source: what ``groups`` belong to, quoted in the error.

    Returns:
        ``[n_0, ..., n_{G-1}]``.

    Raises:
        ValueError: a group id is not an integer in [0, num_groups).
    """
    values = torch.as_tensor(groups).reshape(-1)
    if values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(f"{source}: group ids must be integers, got dtype {values.dtype}.")
    values = values.to("cpu", torch.long)
    _check_group_ids(values, num_groups, source)
    return torch.bincount(values, minlength=num_groups).tolist()


def group_sums(losses: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group sums of ``losses`` and sample counts, in one one-hot matrix product.

    Group ids on the CPU are range-checked here; on an accelerator they are not (reading them back
    would stall every step): check a dataset's ids once with :func:`count_groups`.

    Args:
        losses: per-sample losses of shape (B,).
        groups: group index of each sample, shape (B,), values in [0, num_groups).
        num_groups: number of groups G.

    Returns:
        ``(sums, counts)``, both of shape (G,); gradients flow through ``sums``.

    Raises:
        ValueError: when shapes differ or a group index on the CPU is out of range.
    """
    losses = _plain(losses)
    groups = _plain(torch.as_tensor(groups)).reshape(-1)
    if losses.ndim != 1 or groups.shape[0] != losses.shape[0]:
        raise ValueError(f"losses {tuple(losses.shape)} and groups {tuple(groups.shape)} must both have shape (B,).")
    if groups.device.type == "cpu":
        _check_group_ids(groups, num_groups, "group_sums")
    groups = groups.to(losses.device, torch.long, non_blocking=True)
    one_hot = F.one_hot(groups, num_groups).to(losses.dtype)  # (B, G)
    return one_hot.t() @ losses, one_hot.sum(dim=0)


def all_reduce_group_sums(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum per-group loss sums and counts over all ranks, so that every rank updates the same weights.

    A no-op outside ``torch.distributed``. ``sums`` must be detached (the result carries no gradient).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums, counts
    stacked = torch.stack([sums.detach(), counts.to(sums.dtype)])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return stacked[0], stacked[1]


class GroupWeights:
    """groupDRO's exponentiated-gradient weights over G groups, kept in log space.

    Weights start uniform. :meth:`update` applies ``w_d <- w_d * exp(eta * (l_d + C / sqrt(n_d)))``
    and renormalises to sum 1, where ``l_d`` is group ``d``'s mean loss in the batch for the groups
    present in it and 0 for the others: without the adjustment (``C = 0``, the default) absent
    groups keep their unnormalised weight.

    The generalization adjustment ``C / sqrt(n_d)`` of Sagawa et al. (2020) is a known constant of
    each group, not an estimate from the batch, so it is added to **every** group at every step,
    present or not: the exponentiated-gradient step on the adjusted objective
    ``sum_d w_d * (L_d + C / sqrt(n_d))``, whose gradient in ``w_d`` is ``L_d + C / sqrt(n_d)``. (The
    reference group_DRO ``LossComputer`` updates its weights the same way.) The objective that
    :class:`GroupWeightedLoss` returns leaves the constant out: ``sum_d w_d * mean_d``. The constant
    does not change the network's gradient; the reference's objective includes it, so its loss
    values are larger by ``sum_d w_d * C / sqrt(n_d)``. The update is done on ``log w`` with a log-sum-exp normalisation, so a
    long run cannot overflow. The weights live on the device of the losses they are updated with
    (moved there at the first update), so a training step never waits for a copy to the host.
    :meth:`state_dict` gives plain CPU tensors, so checkpoints holding it load with
    ``torch.load(..., weights_only=True)`` on any machine; :meth:`load_state_dict` accepts them
    from any device.

    Args:
        num_groups: number of groups G (>= 1).
        step_size: ``eta``, the weights' learning rate; 0 keeps them fixed (ERM / plain KD).
        adjustment: groupDRO's generalization adjustment ``C`` (0 disables it, the default); added
            as ``C / sqrt(n_d)`` to every group at every update.
        group_counts: training-set size ``n_d`` of each group; needed when ``adjustment > 0``.

    Example::

        weights = GroupWeights(3, step_size=0.01)
        weights.update(torch.tensor([0.7, 0.2, 0.0]), present=torch.tensor([True, True, False]))
        weights.weights  # tensor([0.3347, 0.3330, 0.3323]): exp(0.007), exp(0.002), exp(0) renormalised
    """

    def __init__(
        self,
        num_groups: int,
        step_size: float = 0.01,
        adjustment: float = 0.0,
        group_counts: Sequence[int] | None = None,
    ) -> None:
        if int(num_groups) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}.")
        if step_size < 0:
            raise ValueError(f"step_size must be >= 0, got {step_size}.")
        if adjustment < 0:
            raise ValueError(f"adjustment must be >= 0, got {adjustment}.")
        self.num_groups = int(num_groups)
        self.step_size = float(step_size)
        self.adjustment = float(adjustment)
        self.adjustments = torch.zeros(self.num_groups, dtype=torch.float64)
        if adjustment > 0:
            if group_counts is None or len(group_counts) != self.num_groups or min(group_counts) <= 0:
                raise ValueError(
                    f"adjustment={adjustment} needs group_counts with {self.num_groups} positive training-set "
                    f"sizes, got {group_counts}."
                )
            counts = torch.as_tensor(list(group_counts), dtype=torch.float64)
            self.adjustments = adjustment / counts.sqrt()
        self.log_weights = torch.full((self.num_groups,), -math.log(self.num_groups), dtype=torch.float64)
        self.num_updates = torch.zeros((), dtype=torch.int64)

    @property
    def weights(self) -> torch.Tensor:
        """Current group weights, shape (G,), summing to 1 (float64, on :attr:`device`)."""
        return self.log_weights.exp()

    @property
    def device(self) -> torch.device:
        """Where the weights are: the CPU until the first update, then the device of the losses."""
        return self.log_weights.device

    def to(self, device: str | torch.device) -> GroupWeights:
        """Move the weights to ``device`` (in place); returns self."""
        self.log_weights = self.log_weights.to(device)
        self.adjustments = self.adjustments.to(device)
        return self

    def update(self, group_losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """One exponentiated-gradient step.

        Args:
            group_losses: mean loss of each group in the batch, shape (G,); entries of absent groups
                are ignored.
            present: boolean mask of shape (G,), True for the groups seen in the batch.

        Returns:
            The updated weights, shape (G,). When a present group's loss is NaN or infinite the
            weights stay as they were: a non-finite loss never reaches them.
        """
        group_losses = _plain(group_losses).detach().reshape(-1)
        if group_losses.device != self.device:
            self.to(group_losses.device)
        group_losses = group_losses.to(torch.float64)
        present = _plain(present).to(self.device, non_blocking=True).reshape(-1).bool()
        if group_losses.shape[0] != self.num_groups or present.shape[0] != self.num_groups:
            raise ValueError(
                f"expected {self.num_groups} group losses and flags, "
                f"got {group_losses.shape[0]} and {present.shape[0]}."
            )
        # a non-finite loss of a present group skips the whole step (decided on the tensors' device, without
        # a host synchronisation); the trainer's RunGuard then stops the run with an error
        finite = torch.isfinite(group_losses).logical_or(~present).all()
        observed = torch.where(present, group_losses, torch.zeros_like(group_losses))
        step = torch.where(finite, self.step_size * (observed + self.adjustments), torch.zeros_like(group_losses))
        log_weights = self.log_weights + step
        self.log_weights = log_weights - torch.logsumexp(log_weights, dim=0)
        self.num_updates += 1  # steps taken (a skipped one included); counted on the host, no device read
        return self.weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain CPU tensors only, so the checkpoint loads with ``weights_only=True`` on any machine."""
        return {"log_weights": self.log_weights.detach().to("cpu", copy=True), "num_updates": self.num_updates.clone()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Restore weights saved by :meth:`state_dict`.

        Raises:
            ValueError: when the saved state is for a different number of groups.
        """
        if "log_weights" not in state_dict:
            raise ValueError(f"group weights state needs a 'log_weights' entry, got keys {sorted(state_dict)}.")
        log_weights = _plain(state_dict["log_weights"]).to(self.device, torch.float64).reshape(-1)
        if log_weights.shape[0] != self.num_groups:
            raise ValueError(
                f"checkpoint holds weights for {log_weights.shape[0]} groups, this run has {self.num_groups}: "
                "resume with the same groups or start a new output_dir."
            )
        self.log_weights = log_weights.clone()
        self.num_updates = torch.as_tensor(state_dict.get("num_updates", 0), dtype=torch.int64).clone()

    def __repr__(self) -> str:
        values = ", ".join(f"{w:.4f}" for w in self.weights.tolist())
        return f"GroupWeights([{values}], step_size={self.step_size}, updates={int(self.num_updates)})"


class GroupLoss(NamedTuple):
    """What :meth:`GroupWeightedLoss.evaluate` returns."""

    loss: torch.Tensor
    """scalar to back-propagate."""
    group_losses: torch.Tensor
    """mean loss of each group over the batch (all ranks), shape (G,), NaN for absent groups."""
    group_counts: torch.Tensor
    """samples of each group in the batch (all ranks), shape (G,)."""


class GroupWeightedLoss:
    """Scalar objective from per-sample losses and group ids.

    ``robust=True`` (groupDRO, GroupDistil): the weights of the groups in the batch take an
    exponentiated-gradient step (:class:`GroupWeights`) on the batch's per-group mean losses, then
    the objective is ``sum_d w_d * mean_d`` with the *updated* weights. With one group per batch
    (Algorithm 1 of the paper) that is ``w_d * l``; with mixed batches it is the online groupDRO of
    Sagawa et al., absent groups untouched. ``robust=False`` (ERM, plain KD): the plain mean of
    the per-sample losses; the weights stay as they are.

    Under ``torch.distributed`` the per-group sums and counts are all-reduced before the update, so
    every rank holds the same weights, and each rank's objective divides by the global group
    counts (times the world size), so that DDP's gradient average is the gradient of the global
    objective.

    Args:
        group_weights: the weights' state (shared with checkpointing and logging).
        robust: update and apply the weights (True) or use the plain mean (False).
    """

    def __init__(self, group_weights: GroupWeights, robust: bool = True) -> None:
        if not isinstance(group_weights, GroupWeights):
            raise TypeError(f"group_weights must be a GroupWeights, got {type(group_weights).__name__}.")
        self.group_weights = group_weights
        self.robust = bool(robust)

    @property
    def num_groups(self) -> int:
        return self.group_weights.num_groups

    def evaluate(self, losses: torch.Tensor, groups: torch.Tensor) -> GroupLoss:
        """The objective and the batch's per-group statistics (see :class:`GroupLoss`)."""
        local_sums, local_counts = group_sums(losses, groups, self.num_groups)
        sums, counts = all_reduce_group_sums(local_sums.detach(), local_counts)
        present = counts > 0
        means = sums / counts.clamp_min(1)
        group_losses = torch.where(present, means, torch.full_like(means, float("nan")))
        if not self.robust:
            return GroupLoss(_plain(losses).mean(), group_losses, counts)
        weights = self.group_weights.update(means, present).to(losses.device, losses.dtype)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        global_means = local_sums * world_size / counts.to(losses.dtype).clamp_min(1)
        return GroupLoss((weights * global_means).sum(), group_losses, counts)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return self.evaluate(losses, groups).loss
