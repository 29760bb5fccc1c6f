"""The network that is evaluated, saved and distilled from: an average of the weights, BatchNorm recomputed.

- :class:`WeightAveraging` keeps an exponential moving average (EMA) of the network's weights in a
  ``torch.optim.swa_utils.AveragedModel``; with it on, the averaged copy is the run's model.
- :class:`PreciseBatchNorm` recomputes that model's BatchNorm running statistics over training
  batches at the end of every epoch, before the evaluations
  (:func:`mnms_groupdistil.batchnorm.recompute_batchnorm_stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import default_prepare_batch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mnms_groupdistil.batchnorm import recompute_batchnorm_stats
from mnms_groupdistil.errors import InputError, check_choice
from mnms_groupdistil.handlers.events import attach_once
from mnms_groupdistil.handlers.seeding import set_sampler_epoch

__all__ = ["WEIGHT_AVERAGINGS", "PreciseBatchNorm", "WeightAveraging", "ema_decay", "unwrap"]

#: Values of the bundles' ``weight_averaging`` setting.
WEIGHT_AVERAGINGS = ("none", "ema")


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``network``."""
    return network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network


def ema_decay(epochs: float, epoch_length: int) -> float:
    """Per-step decay of an EMA whose time constant is ``epochs`` epochs of ``epoch_length`` steps.

    ``decay = exp(-1 / (epochs * epoch_length))``: a step's weights fall to ``1/e`` of their share after
    ``epochs`` epochs, whatever the data's size or the batch size.
    """
    if not (epochs > 0 and math.isfinite(epochs)) or epoch_length < 1:
        raise InputError(f"ema_epochs must be > 0 and the epoch at least one step, got {epochs} and {epoch_length}.")
    return math.exp(-1.0 / (float(epochs) * int(epoch_length)))


class WeightAveraging:
    """An exponential moving average of a network's weights, updated after every optimizer step.

    ``method="ema"``: ``w_avg <- decay * w_avg + (1 - decay) * w`` after each iteration (the first
    iteration copies ``w``), ``decay`` from :func:`ema_decay` with the trainer's epoch length, held in
    a ``torch.optim.swa_utils.AveragedModel`` (its BatchNorm buffers are not averaged: recompute them
    with :class:`PreciseBatchNorm`). :attr:`evaluated_network` is then the averaged copy: give it to
    the evaluators, the model savers and the exported bundle. ``method="none"``: nothing is kept and
    :attr:`evaluated_network` is the network itself. Put the object in the training checkpoint: its
    state (the averaged weights and the count) resumes.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is looked through).
        method: one of :data:`WEIGHT_AVERAGINGS`.
        epochs: the EMA's time constant in epochs (``ema_epochs`` in the bundles).

    Raises:
        InputError: for an unknown ``method``.
    """

    def __init__(self, network: nn.Module, method: str = "none", epochs: float = 1.0) -> None:
        check_choice("weight_averaging", method, WEIGHT_AVERAGINGS)
        ema_decay(epochs, 1)  # validate
        self.network = network
        self.method = method
        self.epochs = float(epochs)
        self.decay: float | None = None
        self.averaged: AveragedModel | None = None
        if method == "ema":
            self.averaged = AveragedModel(unwrap(network), multi_avg_fn=self._ema_step, use_buffers=False)

    @property
    def enabled(self) -> bool:
        return self.averaged is not None

    @property
    def evaluated_network(self) -> nn.Module:
        """The network to evaluate, save and distil from: the averaged copy, or the network itself."""
        return self.network if self.averaged is None else self.averaged.module

    def _ema_step(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)

    def attach(self, engine: Engine) -> None:
        """Register :meth:`started` and :meth:`iteration_completed` (idempotent; nothing when off)."""
        if self.enabled:
            attach_once(
                engine, ((Events.STARTED, self.started), (Events.ITERATION_COMPLETED, self.iteration_completed))
            )

    def started(self, engine: Engine) -> None:
        self.decay = ema_decay(self.epochs, int(engine.state.epoch_length))

    def iteration_completed(self, engine: Engine) -> None:
        self.averaged.update_parameters(unwrap(self.network))

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and their count (plain tensors); empty when off."""
        return {} if self.averaged is None else {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.averaged is None:
            return
        if "averaged" not in state_dict:
            raise InputError(
                "the checkpoint holds no averaged weights, but weight_averaging is 'ema': resume with the "
                "run's own settings, or start a new output_dir."
            )
        self.averaged.load_state_dict(state_dict["averaged"])


class PreciseBatchNorm:
    """Recompute a network's BatchNorm statistics over training batches at the end of every epoch.

    Registered at ``Events.EPOCH_COMPLETED``; put it **before** the ``ValidationHandler``s in the
    trainer's handlers, so every evaluation, the saved models and the checkpoint see the recomputed
    statistics (the last epoch's are the final model's). The batches come from ``loader`` (give it a
    group-balanced batch sampler: :class:`mnms_groupdistil.samplers.BalancedBatchSampler`),
    whose sampler is set to the trainer's epoch first, so the statistics are reproducible and a
    resumed run recomputes the same ones.

    Args:
        network: the network whose statistics are recomputed (the evaluated one, see :class:`WeightAveraging`).
        loader: training batches.
        num_batches: batches used (the first ``num_batches`` of the loader's epoch); None: the whole loader.
        prepare_batch: ``(batch, device, non_blocking) -> (inputs, targets, ...)``, as the trainer's
            (e.g. on-device augmentation); default MONAI's.
        device: where the inputs go (default: the network's device).
        enabled: False makes :meth:`attach` do nothing, unless ``averaging`` is on.
        averaging: the run's :class:`WeightAveraging`; when it averages, the statistics are always
            recomputed (an ``AveragedModel`` does not average BatchNorm buffers).
    """

    def __init__(
        self,
        network: nn.Module,
        loader: Iterable,
        num_batches: int | None = None,
        prepare_batch: Callable = default_prepare_batch,
        device: str | torch.device | None = None,
        enabled: bool = True,
        averaging: WeightAveraging | None = None,
    ) -> None:
        if num_batches is not None and int(num_batches) < 1:
            raise InputError(f"precise_bn_batches must be at least 1, got {num_batches}.")
        self.network = unwrap(network)
        self.loader = loader
        self.num_batches = None if num_batches is None else int(num_batches)
        self.prepare_batch = prepare_batch
        self.device = device
        self.enabled = bool(enabled) or (averaging is not None and averaging.enabled)

    def attach(self, engine: Engine) -> None:
        """Register :meth:`epoch_completed` (idempotent; nothing when disabled)."""
        if self.enabled:
            attach_once(engine, ((Events.EPOCH_COMPLETED, self.epoch_completed),))

    def inputs(self, epoch: int) -> Iterator[torch.Tensor]:
        """The input batches of ``epoch``, prepared and on the device."""
        set_sampler_epoch(self.loader, epoch)
        device = self.device if self.device is not None else next(self.network.parameters()).device
        for index, batch in enumerate(self.loader):
            if self.num_batches is not None and index >= self.num_batches:
                return
            yield self.prepare_batch(batch, device, False)[0]

    def epoch_completed(self, engine: Engine) -> None:
        recompute_batchnorm_stats(self.network, self.inputs(int(engine.state.epoch)))
