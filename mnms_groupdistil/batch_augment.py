"""Random rotation and flips of a whole training batch on the training device, after the host-to-device copy.

At 224 px the rotation of every frame by CPU loader workers can cost more than the networks'
step on a GPU. :class:`RandRotateFlipBatch` draws the same augmentation as the bundle's CPU
transforms (``RandRotated(range_x, prob)`` then ``RandFlipd`` along each spatial axis), one draw per
sample, and applies it to the batch with a single ``affine_grid``/``grid_sample`` on the device
(bilinear, zero padding, output the size of the input). :class:`AugmentOnDevice` runs it as the
trainer's ``prepare_batch``; :func:`batch_preparation` is the bundles' ``prepare_batch`` setting.

The draws come from torch's global CPU generator (a few numbers per sample, copied to the device
with the batch), which the bundles' ``EpochSeeds`` handler re-seeds at every epoch, so a resumed
run repeats them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch, default_prepare_batch

from mnms_groupdistil.errors import SettingError

__all__ = ["RandRotateFlipBatch", "AugmentOnDevice", "batch_preparation", "rotate_flip_theta"]


def rotate_flip_theta(
    angles: torch.Tensor, flip_x: torch.Tensor, flip_y: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``affine_grid`` matrices ``(B, 2, 3)`` that rotate each image by ``angles`` and then flip it.

    The result of sampling with them equals, per image ``(C, X, Y)`` (MONAI's channel-first order,
    ``X`` = ``height`` rows, ``Y`` = ``width`` columns), MONAI's ``Rotate(angle)`` followed by
    ``Flip(spatial_axis=0)`` where ``flip_x`` and ``Flip(spatial_axis=1)`` where ``flip_y``.
    Rotation happens in pixel units (the aspect ratio of non-square images is respected).

    Args:
        angles: ``(B,)`` angles in radians (0 = not rotated).
        flip_x: ``(B,)`` booleans, flip along the first spatial axis (rows).
        flip_y: ``(B,)`` booleans, flip along the second spatial axis (columns).
        height: rows of the images.
        width: columns of the images.
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    # output pixel -> input pixel, in (column, row) = (x, y) order of affine_grid, pixel units
    sx = torch.where(flip_y, -1.0, 1.0).to(angles.dtype)
    sy = torch.where(flip_x, -1.0, 1.0).to(angles.dtype)
    theta = torch.zeros(angles.shape[0], 2, 3, dtype=angles.dtype, device=angles.device)
    # the rotation (pixel units) scaled to normalised coordinates, with the flips applied to the output first
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = sin * sy * (height / width)
    theta[:, 1, 0] = -sin * sx * (width / height)
    theta[:, 1, 1] = cos * sy
    return theta


class RandRotateFlipBatch:
    """Random rotation and flips of a batch ``(B, C, X, Y)`` on its own device.

    Each sample is rotated with probability ``rotate_prob`` by an angle drawn uniformly from
    ``[-rotate_range, rotate_range]`` radians, then flipped along each spatial axis with probability
    ``flip_prob``; all in one bilinear ``grid_sample`` with zero padding.

    Args:
        rotate_range: largest rotation in radians (>= 0).
        rotate_prob: probability that a sample is rotated, in [0, 1].
        flip_prob: probability of a flip along each spatial axis, in [0, 1].

    Raises:
        SettingError: a range or probability out of bounds (a ``ValueError``).
    """

    def __init__(self, rotate_range: float = 0.26, rotate_prob: float = 0.5, flip_prob: float = 0.5) -> None:
        if not (isinstance(rotate_range, (int, float)) and 0.0 <= float(rotate_range) <= math.pi):
            raise SettingError(f"rotate_range must be in [0, pi] radians, got {rotate_range!r}.")
        for name, p in (("rotate_prob", rotate_prob), ("flip_prob", flip_prob)):
            if not (isinstance(p, (int, float)) and 0.0 <= float(p) <= 1.0):
                raise SettingError(f"{name} must be a probability in [0, 1], got {p!r}.")
        self.rotate_range = float(rotate_range)
        self.rotate_prob = float(rotate_prob)
        self.flip_prob = float(flip_prob)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(angles, flip_x, flip_y)`` for ``batch_size`` samples, from torch's global CPU generator."""
        u = torch.rand(4, batch_size, dtype=torch.float64)
        angles = torch.where(u[0] < self.rotate_prob, (2.0 * u[1] - 1.0) * self.rotate_range, 0.0)
        return angles, u[2] < self.flip_prob, u[3] < self.flip_prob

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment ``images`` ``(B, C, X, Y)`` (floating point) and return a new tensor on the same device.

        Raises:
            ValueError: ``images`` is not a 4D floating-point tensor.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"RandRotateFlipBatch expects a floating-point batch (B, C, X, Y), got {shape}.")
        angles, flip_x, flip_y = self.draw(images.shape[0])
        theta = rotate_flip_theta(angles, flip_x, flip_y, images.shape[-2], images.shape[-1])
        theta = theta.to(device=images.device, dtype=images.dtype, non_blocking=True)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AugmentOnDevice(PrepareBatch):
    """``prepare_batch`` of a MONAI trainer: MONAI's default copy to the device, then ``augment`` on the images.

    Args:
        augment: callable applied to the image batch on the device, e.g. :class:`RandRotateFlipBatch`.
    """

    def __init__(self, augment: Any) -> None:
        if not callable(augment):
            raise TypeError(f"AugmentOnDevice needs a callable augment, got {type(augment).__name__}.")
        self.augment = augment

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return self.augment(images), labels


def batch_preparation(augmentation: Callable | None = None, enabled: bool = True) -> Callable:
    """The ``prepare_batch`` of a trainer: :class:`AugmentOnDevice` with ``augmentation`` when it is given and
    ``enabled``, else MONAI's ``default_prepare_batch`` (the copy to the device only).

    Args:
        augmentation: callable applied to the image batch on the device, e.g. :class:`RandRotateFlipBatch`.
        enabled: whether to augment on the device (the bundles' ``augment_on_device``).
    """
    return AugmentOnDevice(augmentation) if augmentation is not None and enabled else default_prepare_batch
