"""Tests for mnms_groupdistil.datasets.mnms.frames (frame-level view of cached patient volumes)."""

from __future__ import annotations

import zlib

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, ResizeWithPadOrCropd, ScaleIntensityRangePercentilesd

from mnms_groupdistil.datasets.mnms.frames import (
    CineFrameDataset,
    all_frames,
    ed_es_frames,
    evaluation_frames,
    fixed_random_frames,
    random_frames,
)
from mnms_groupdistil.datasets.mnms.transforms import RandCineFramed, SelectCineFramed
from mnms_groupdistil.datasets.mnms.volumes import LoadCineVolumed
from mnms_groupdistil.errors import InputError


def make_records(tmp_path, specs):
    """Write one small 4D NIfTI per spec (subject, Z, T, ed, es, group, label).

    Voxel value = 1000*z + t + 1 + 20*x + 2*y, plus 100*i at the corner voxel (0, 0) of subject i.
    """
    records = []
    for i, (subject, nz, nt, ed, es, group, label) in enumerate(specs):
        nx, ny = 12 + i, 10
        vol = np.zeros((nx, ny, nz, nt), dtype=np.int16)
        vol += (1000 * np.arange(nz)[:, None] + np.arange(nt)[None, :] + 1).astype(np.int16)
        vol += (20 * np.arange(nx)[:, None, None, None] + 2 * np.arange(ny)[None, :, None, None]).astype(np.int16)
        vol[0, 0] += 100 * i  # subject signature in a corner voxel (z*1000 + t + 1 + 100*i)
        path = str(tmp_path / f"{subject}_sa.nii.gz")
        nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 9.0, 1.0])), path)  # RAS already: no reorientation
        records.append(
            {
                "subject": subject,
                "image": path,
                "label": label,
                "group": group,
                "vendor": "A",
                "pathology": "HCM" if label else "NOR",
                "centre": 1,
                "ed": ed,
                "es": es,
                "num_slices": nz,
                "num_frames": nt,
            }
        )
    return records


SPECS = [
    ("A0S9V9", 3, 5, 0, 3, 0, 1),
    ("B1X2Y3", 2, 4, 1, 1, 1, 0),  # ED == ES
    ("C7D8E9", 4, 6, 5, 2, 3, 1),
]


@pytest.fixture
def records(tmp_path):
    return make_records(tmp_path, SPECS)


def test_random_frames(records):
    frames = random_frames(records, frames_per_patient=4)
    assert len(frames) == 12
    assert frames[:4] == [{"volume": 0, "group": 0, "subject": "A0S9V9"}] * 4
    assert frames[4] == {"volume": 1, "group": 1, "subject": "B1X2Y3"}
    assert [f["volume"] for f in frames] == [0] * 4 + [1] * 4 + [2] * 4
    frames[0]["x"] = 1
    assert "x" not in frames[1]  # independent dicts
    assert len(random_frames(records)) == 60
    with pytest.raises(ValueError, match="frames_per_patient"):
        random_frames(records, 0)
    with pytest.raises(TypeError, match="frames_per_patient"):
        random_frames(records, 2.5)


def test_ed_es_frames(records):
    frames = ed_es_frames(records)
    # 3 slices x {ED, ES} + 2 slices x {ED} (ED == ES) + 4 slices x {ED, ES}
    assert len(frames) == 3 * 2 + 2 * 1 + 4 * 2 == 16
    assert frames[:6] == [
        {"volume": 0, "group": 0, "subject": "A0S9V9", "slice": z, "frame": t} for t in (0, 3) for z in range(3)
    ]
    assert frames[6:8] == [{"volume": 1, "group": 1, "subject": "B1X2Y3", "slice": z, "frame": 1} for z in range(2)]
    third = frames[8:]
    assert {(f["slice"], f["frame"]) for f in third} == {(z, t) for z in range(4) for t in (5, 2)}
    assert all(f["volume"] == 2 and f["group"] == 3 for f in third)
    bad = dict(records[0], es=5)  # num_frames = 5
    with pytest.raises(ValueError, match="es=5") as exc:
        ed_es_frames([bad])
    assert str(exc.value).startswith("record 0 (subject 'A0S9V9')")  # names the record, not the source file
    assert "frames.py" not in str(exc.value)
    no_slices = {k: v for k, v in records[0].items() if k != "num_slices"}
    with pytest.raises(ValueError, match="num_slices"):
        ed_es_frames([no_slices])


def test_fixed_random_frames_are_distinct_fixed_and_per_patient(records):
    frames = fixed_random_frames(records, frames_per_patient=6, seed=3)
    assert len(frames) == 18
    for i, (subject, nz, nt, *_rest) in enumerate(SPECS):
        own = frames[6 * i : 6 * (i + 1)]
        assert all(f["volume"] == i and f["subject"] == subject and f["group"] == records[i]["group"] for f in own)
        pairs = [(f["slice"], f["frame"]) for f in own]
        assert len(set(pairs)) == 6, pairs  # 15, 8 and 24 (slice, frame) pairs: drawn without replacement
        assert all(0 <= z < nz and 0 <= t < nt for z, t in pairs)
        assert pairs == sorted(pairs, key=lambda p: (p[1], p[0]))
        # the documented draw: numpy's generator seeded by (seed, crc32(subject)) picks k in [0, Z*T),
        # k -> (slice k mod Z, frame k div Z)
        drawn = np.random.default_rng([3, zlib.crc32(subject.encode())]).choice(nz * nt, size=6, replace=False)
        assert set(pairs) == {(int(k) % nz, int(k) // nz) for k in drawn}
        # a patient's frames do not depend on the other patients
        alone = fixed_random_frames([records[i]], frames_per_patient=6, seed=3)
        assert [(f["slice"], f["frame"]) for f in alone] == pairs
    assert fixed_random_frames(records, 6, 3) == frames  # the same every call (every epoch, every run)
    assert fixed_random_frames(records, 6, 4) != frames
    # 10 frames from a patient with 2 x 4 = 8 pairs: with replacement, all in range
    many = fixed_random_frames([records[1]], frames_per_patient=10, seed=0)
    assert len(many) == 10 and all(0 <= f["slice"] < 2 and 0 <= f["frame"] < 4 for f in many)
    with pytest.raises(ValueError, match="seed=-1"):
        fixed_random_frames(records, 2, -1)
    with pytest.raises(ValueError, match="frames_per_patient=0"):
        fixed_random_frames(records, 0)
    with pytest.raises(ValueError, match="num_frames"):
        fixed_random_frames([{k: v for k, v in records[0].items() if k != "num_frames"}])


def test_evaluation_frames_by_name(records):
    assert evaluation_frames(records, "random", 5, 2) == fixed_random_frames(records, 5, 2)
    assert evaluation_frames(records, "ed_es") == ed_es_frames(records)
    every = evaluation_frames(records, "all")
    assert every == all_frames(records) and len(every) == 3 * 5 + 2 * 4 + 4 * 6
    with pytest.raises(InputError, match="frames='ED_ES' .*test_frames.* must be one of random, ed_es, all"):
        evaluation_frames(records, "ED_ES")


def _volumes(records):
    return CacheDataset(data=records, transform=LoadCineVolumed(keys="image"), copy_cache=False, progress=False)


def test_dataset_items_ed_es(records):
    volumes = _volumes(records)
    frames = ed_es_frames(records)
    ds = CineFrameDataset(volumes, frames, transform=SelectCineFramed(keys="image"))
    assert len(ds) == 16
    assert ds.groups == [0] * 6 + [1] * 2 + [3] * 8
    for j, f in enumerate(frames):
        item = ds[j]
        rec = records[f["volume"]]
        assert item["subject"] == rec["subject"] and item["label"] == rec["label"]
        assert item["slice"] == f["slice"] and item["frame"] == f["frame"]
        assert "volume" not in item
        img = item["image"]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
        assert tuple(img.shape) == (1, 12 + f["volume"], 10)
        expected = 1000 * f["slice"] + f["frame"] + 1
        assert float(img[0, 1, 1]) == expected + 22
        assert float(img[0, 3, 2]) == expected + 64
        assert float(img[0, 0, 0]) == expected + 100 * f["volume"]
    # without a transform: merged dict with the (shared, not copied) 4D volume
    raw = CineFrameDataset(volumes, frames)[0]
    assert raw["image"].shape == (12, 10, 3, 5) and raw["slice"] == 0
    assert raw["spacing"] == pytest.approx((1.5, 1.5, 9.0))
    assert "slice" not in volumes[0]  # cached dict not modified


def test_cache_not_deep_copied(records):
    volumes = _volumes(records)
    first = volumes[0]["image"]
    assert volumes[0]["image"] is first  # CacheDataset returns the cached item itself (no random transform)
    snapshot = first.copy()
    ds = CineFrameDataset(volumes, random_frames(records, 5), transform=RandCineFramed(keys="image"))
    ds.transform.set_random_state(seed=0)
    for j in range(len(ds)):
        out = ds[j]
        assert not np.shares_memory(out["image"].numpy(), volumes[out_volume(ds, j)]["image"])
        out["image"] += 1
    assert volumes[0]["image"] is first
    np.testing.assert_array_equal(first, snapshot)
    assert "slice" not in volumes[0] and volumes[0]["image"].dtype == np.int16


def out_volume(ds, j):
    return ds.frames[j]["volume"]


def test_random_item_content_matches_recorded_indices(records):
    volumes = _volumes(records)
    ds = CineFrameDataset(volumes, random_frames(records, 30), transform=RandCineFramed(keys="image", mode="ed_es"))
    ds.transform.set_random_state(seed=5)
    for j in range(len(ds)):
        item = ds[j]
        rec = records[ds.frames[j]["volume"]]
        assert item["frame"] in (rec["ed"], rec["es"])
        assert 0 <= item["slice"] < rec["num_slices"]
        assert float(item["image"][0, 1, 1]) == 1000 * item["slice"] + item["frame"] + 1 + 22


def test_dataset_validation(records):
    volumes = _volumes(records)
    with pytest.raises(ValueError, match="out of range"):
        CineFrameDataset(volumes, [{"volume": 3, "group": 0}])
    with pytest.raises(ValueError, match="out of range"):
        CineFrameDataset(volumes, [{"volume": -1, "group": 0}])
    with pytest.raises(ValueError, match="'volume'") as exc:
        CineFrameDataset(volumes, [{"group": 0}])
    assert str(exc.value).startswith("CineFrameDataset frame entry 0")
    with pytest.raises(TypeError):
        CineFrameDataset(volumes, [{"volume": "0"}])
    with pytest.raises(TypeError):
        CineFrameDataset(volumes, [], transform=3)
    with pytest.raises(ValueError, match="group"):
        _ = CineFrameDataset(volumes, [{"volume": 0}]).groups
    assert len(CineFrameDataset(volumes, [])) == 0


def test_dataloader_with_workers(records):
    volumes = _volumes(records)
    transform = Compose(
        [
            RandCineFramed(keys="image", mode="random"),
            ScaleIntensityRangePercentilesd(keys="image", lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True),
            ResizeWithPadOrCropd(keys="image", spatial_size=(16, 16)),
        ]
    )
    ds = CineFrameDataset(volumes, random_frames(records, 4), transform=transform)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    n, groups = 0, []
    for batch in loader:
        assert tuple(batch["image"].shape) == (4, 1, 16, 16)
        assert isinstance(batch["label"], torch.Tensor) and isinstance(batch["group"], torch.Tensor)
        assert isinstance(batch["subject"], list) and len(batch["subject"]) == 4
        assert isinstance(batch["slice"], torch.Tensor) and isinstance(batch["frame"], torch.Tensor)
        assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
        n += batch["image"].shape[0]
        groups += batch["group"].tolist()
    assert n == 12
    assert sorted(groups) == sorted(ds.groups)
