"""Batched rotation and flips on the device: the same images as MONAI's CPU transforms, and the same draws."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import Flip, Rotate

from mnms_groupdistil.batch_augment import AugmentOnDevice, RandRotateFlipBatch, rotate_flip_theta


def monai_rotate_flip(image: torch.Tensor, angle: float, flip_x: bool, flip_y: bool) -> torch.Tensor:
    """The bundle's CPU augmentation with fixed draws: RandRotated's Rotate, then RandFlipd's Flip per axis."""
    out = Rotate(angle, keep_size=True, mode="bilinear", padding_mode="zeros", align_corners=False)(image)
    if flip_x:
        out = Flip(spatial_axis=0)(out)
    if flip_y:
        out = Flip(spatial_axis=1)(out)
    return torch.as_tensor(out)


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_one_grid_sample_equals_monai_rotate_then_flips(height, width):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, height, width, generator=generator)
    images[:, :, 3:9, 5:17] += 2.0  # an off-centre block, so that rotations and flips move it
    angles = torch.tensor([0.0, 0.2, -0.25, 0.26, 0.0, -0.1, 0.13, 0.0], dtype=torch.float64)
    flip_x = torch.tensor([False, True, False, True, True, False, True, False])
    flip_y = torch.tensor([False, False, True, True, False, True, True, True])
    theta = rotate_flip_theta(angles, flip_x, flip_y, height, width).float()
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    ours = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    for i in range(len(images)):
        expected = monai_rotate_flip(images[i], float(angles[i]), bool(flip_x[i]), bool(flip_y[i]))
        assert torch.allclose(ours[i], expected, atol=1e-5), i
    assert not torch.allclose(ours[1], images[1])  # the comparison is not between unchanged images


def test_draws_follow_the_probabilities_and_the_range():
    torch.manual_seed(0)
    angles, flip_x, flip_y = RandRotateFlipBatch(rotate_range=0.3, rotate_prob=0.25, flip_prob=0.5).draw(4000)
    rotated = angles != 0
    assert abs(rotated.float().mean().item() - 0.25) < 0.03
    assert float(angles.abs().max()) <= 0.3 and float(angles[rotated].abs().max()) > 0.29
    assert abs(float(angles[rotated].mean())) < 0.02  # symmetric around 0
    for flips in (flip_x, flip_y):
        assert abs(flips.float().mean().item() - 0.5) < 0.03
    assert abs((flip_x & flip_y).float().mean().item() - 0.25) < 0.03  # independent axes


def test_no_augmentation_leaves_the_batch_and_the_seed_repeats_it():
    images = torch.rand(5, 2, 16, 12)
    assert torch.allclose(RandRotateFlipBatch(0.26, rotate_prob=0.0, flip_prob=0.0)(images), images, atol=1e-6)
    augment = RandRotateFlipBatch(0.26)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(augment(images), first)
    assert first.shape == images.shape and first.dtype == images.dtype


def test_prepare_batch_copies_then_augments():
    batch = {"image": torch.rand(4, 1, 8, 8), "label": torch.tensor([0, 1, 1, 0])}
    seen = []
    images, labels = AugmentOnDevice(lambda x: seen.append(x) or x.flip(-1))(batch, torch.device("cpu"))
    assert torch.equal(images, batch["image"].flip(-1)) and torch.equal(labels, batch["label"])
    assert len(seen) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rotate_range": -0.1}, "rotate_range"),
        ({"rotate_range": 4.0}, "rotate_range"),
        ({"rotate_prob": 1.5}, "rotate_prob"),
        ({"flip_prob": -0.5}, "flip_prob"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandRotateFlipBatch(**kwargs)


def test_bad_batches_are_refused():
    augment = RandRotateFlipBatch()
    with pytest.raises(ValueError, match=r"\(B, C, X, Y\)"):
        augment(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="callable"):
        AugmentOnDevice(augment=math.pi)
