"""Per-volume intensity scaling: percentiles of the whole 4D volume computed once at load, frames rescaled cheaply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose

from mnms_groupdistil.datasets.mnms.transforms import (
    RescaleIntensity,
    RescaleIntensityd,
    SelectCineFramed,
    VolumePercentiles,
    VolumePercentilesd,
)
from mnms_groupdistil.datasets.mnms.volumes import LoadCineVolumed


def test_volume_percentiles_hand_computed():
    # values 0..100 once each: the p-th percentile with linear interpolation is exactly p
    volume = np.arange(101, dtype=np.int16).reshape(101, 1, 1, 1)
    assert VolumePercentiles(1, 99)(volume) == (1.0, 99.0)
    # 0..9: rank (n - 1) * p / 100 = 0.09 and 8.91 -> 0.09 and 8.91
    assert VolumePercentiles(1, 99)(torch.arange(10.0).reshape(1, 2, 5, 1)) == pytest.approx((0.09, 8.91))
    with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
        VolumePercentiles(99, 1)


def test_rescale_hand_computed():
    frame = torch.tensor([[[-5.0, 10.0, 20.0, 30.0, 50.0]]])
    out = RescaleIntensity(0.0, 1.0)(frame, 10.0, 30.0)
    assert out.dtype == torch.float32
    assert out.tolist() == [[[0.0, 0.0, 0.5, 1.0, 1.0]]]
    assert RescaleIntensity(-1.0, 1.0)(frame, 10.0, 30.0).tolist() == [[[-1.0, -1.0, 0.0, 1.0, 1.0]]]
    assert RescaleIntensity()(frame, 7.0, 7.0).tolist() == [[[0.0] * 5]]  # constant volume
    with pytest.raises(ValueError, match="high >= low"):
        RescaleIntensity()(frame, 3.0, 1.0)


def test_frames_share_their_volume_scaling():
    # two frames of one volume: a dark one (0..9) and a bright one (100..109)
    volume = np.zeros((2, 5, 1, 2), dtype=np.int16)
    volume[:, :, 0, 0] = np.arange(10).reshape(2, 5)
    volume[:, :, 0, 1] = 100 + np.arange(10).reshape(2, 5)
    item = VolumePercentilesd("image", lower=0, upper=100)({"image": volume})
    assert item["intensity_range"] == (0.0, 109.0)
    select = SelectCineFramed("image")
    rescale = RescaleIntensityd("image")
    dark = rescale(select({**item, "slice": 0, "frame": 0}))["image"]
    bright = rescale(select({**item, "slice": 0, "frame": 1}))["image"]
    # per volume the dark frame stays dark (max 9/109); per frame both would span [0, 1]
    assert float(dark.max()) == pytest.approx(9 / 109)
    assert float(bright.min()) == pytest.approx(100 / 109) and float(bright.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="add VolumePercentilesd"):
        rescale({"image": dark})


def test_percentiles_are_cached_with_the_volume(tmp_path, monkeypatch):
    from mnms_groupdistil.datasets.mnms.synthetic import write_mnms_cohort

    root = write_mnms_cohort(tmp_path / "MnM", preset="tiny", seed=0)
    path = next(root.glob("Training/Labeled/*/*_sa.nii.gz"))
    calls = []
    original = VolumePercentiles.__call__

    def counting(self, volume):
        calls.append(volume.shape)
        return original(self, volume)

    monkeypatch.setattr(VolumePercentiles, "__call__", counting)
    volumes = CacheDataset(
        [{"image": str(path), "subject": "x"}],
        transform=Compose([LoadCineVolumed("image"), VolumePercentilesd("image")]),
        copy_cache=False,
        progress=False,
    )
    for _ in range(3):
        item = volumes[0]
    assert len(calls) == 1 and len(calls[0]) == 4  # once, over the whole 4D volume
    low, high = item["intensity_range"]
    assert (low, high) == pytest.approx(tuple(np.percentile(item["image"], [1, 99])))
