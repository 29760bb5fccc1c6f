"""Training speed options shared by the bundles: mixed precision, memory format, worker count.

The bundles wire these through top-level ids (``amp``, ``amp_dtype``, ``channels_last``,
``num_workers``):

* :func:`autocast_dtype` picks the mixed-precision dtype: bfloat16 where the device supports it
  (every CPU, CUDA GPUs from Ampere on), which needs no gradient scaler, else float16 (which does:
  the bundles then switch on MONAI's ``amp``, i.e. its ``GradScaler``).
* :class:`AutocastInferer` runs a network under ``torch.autocast`` with that dtype and feeds it
  channels-last inputs when asked; the trainer, the evaluator and the distillation teacher all
  call their networks through it, so one setting covers every forward pass.
* :func:`to_device` moves a network to the device, in channels-last format when asked.
* :func:`default_num_workers` is the dataloader worker count this machine can feed.
* :func:`every` thins per-iteration logging: reading a loss for a log line waits for the device,
  so logging every iteration stalls every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

from mnms_groupdistil.errors import SettingError

__all__ = [
    "AMP_DTYPES",
    "AutocastInferer",
    "autocast_dtype",
    "default_num_workers",
    "every",
    "grad_scaler_needed",
    "to_device",
]

#: ``amp_dtype`` values accepted by :func:`autocast_dtype` (None: chosen for the device).
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(amp: bool, device: str | torch.device, amp_dtype: str | torch.dtype | None = None) -> torch.dtype | None:
    """The dtype of mixed-precision forward passes, or None for full precision.

    Args:
        amp: mixed precision on or off.
        device: the training device.
        amp_dtype: ``"bfloat16"``, ``"float16"`` (or the torch dtypes), or None: bfloat16 where the
            device supports it (CPUs; CUDA GPUs with ``torch.cuda.is_bf16_supported()``), else float16.

    Raises:
        TypeError: ``amp`` is not a bool.
        SettingError: ``amp_dtype`` is not one of :data:`AMP_DTYPES` (a ``ValueError``).
    """
    if not isinstance(amp, bool):
        raise TypeError(f"amp must be True or False, got {amp!r} ({type(amp).__name__}).")
    if isinstance(amp_dtype, torch.dtype):
        amp_dtype = str(amp_dtype).replace("torch.", "")
    if amp_dtype is not None and amp_dtype not in AMP_DTYPES:
        raise SettingError(
            f"amp_dtype={amp_dtype!r} is not one of {sorted(AMP_DTYPES)} or None (chosen for the device)."
        )
    if not amp:
        return None
    if amp_dtype is not None:
        return AMP_DTYPES[amp_dtype]
    device = torch.device(device)
    if device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def grad_scaler_needed(dtype: torch.dtype | None, device: str | torch.device) -> bool:
    """True when training needs a gradient scaler: float16 autocast on a CUDA device."""
    return dtype == torch.float16 and torch.device(device).type == "cuda"


def to_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """``network`` moved to ``device``, its 4D weights in channels-last format when ``channels_last``."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return network.to(device=device, memory_format=memory_format)


def default_num_workers(limit: int = 8) -> int:
    """Dataloader workers for this machine: the CPUs this process may use, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(int(limit), cpus))


class AutocastInferer(Inferer):
    """Call a network under ``torch.autocast`` (when ``dtype`` is set), with channels-last inputs if asked.

    Args:
        dtype: autocast dtype (e.g. from :func:`autocast_dtype`), or None for full precision.
        channels_last: convert 4D inputs to channels-last memory format first (use with networks moved by
            :func:`to_device` with ``channels_last=True``).

    Example (bundle config)::

        "inferer": {"_target_": "mnms_groupdistil.acceleration.AutocastInferer",
                    "dtype": "@autocast_dtype", "channels_last": "@channels_last"}
    """

    def __init__(self, dtype: torch.dtype | None = None, channels_last: bool = False) -> None:
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}.")
        self.dtype = dtype
        self.channels_last = bool(channels_last)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return network(inputs, *args, **kwargs)


def every(interval: int) -> Callable[[Any, int], bool]:
    """Ignite iteration filter for the loggers (``StatsHandler``/``TensorBoardStatsHandler(iteration_log=...)``).

    True on every ``interval``-th iteration and on the last iteration of every epoch, so a run with
    fewer iterations per epoch than ``interval`` still logs its loss and group weights once per epoch.

    Raises:
        SettingError: ``interval`` < 1 (a ``ValueError``).
    """
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise SettingError(f"log interval must be an integer >= 1, got {interval!r}.")

    def event_filter(engine: Any, event: int) -> bool:
        epoch_length = getattr(getattr(engine, "state", None), "epoch_length", None)
        return event % interval == 0 or bool(epoch_length and event % epoch_length == 0)

    return event_filter
