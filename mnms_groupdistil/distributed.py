"""Process-group set-up for multi-GPU (or multi-process CPU) training under ``torchrun``."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from mnms_groupdistil.errors import SettingError

__all__ = ["cleanup", "setup"]


def setup(device: torch.device | str) -> int:
    """Join the ``torchrun`` process group (NCCL on GPUs, gloo on the CPU); return this rank.

    Selects ``device`` as the current CUDA device first. Safe to call when the group already exists.

    Raises:
        SettingError: when not started by ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment).
    """
    device = torch.device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        except ValueError as error:
            raise SettingError(
                "multi_gpu_train.json needs the environment torchrun provides: start it with "
                "`torchrun --nproc_per_node=N -m monai.bundle run training --config_file ...`"
            ) from error
    rank = dist.get_rank()
    logging.getLogger(__name__).info(f"rank {rank} of {dist.get_world_size()} on {device}")
    return rank


def cleanup() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_initialized():
        dist.destroy_process_group()
