"""Tests for mnms_groupdistil.datasets.mnms.transforms (cine volume loading and frame selection)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotated,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
)

from mnms_groupdistil.datasets.mnms.transforms import RandCineFramed, SelectCineFrame, SelectCineFramed
from mnms_groupdistil.datasets.mnms.volumes import LoadCineVolume, LoadCineVolumed

NX, NY, NZ, NT = 6, 5, 4, 3


def coded_volume(shape=(NX, NY, NZ, NT), dtype=np.int16) -> np.ndarray:
    """Volume whose every voxel holds a unique code ((i*NY + j)*NZ + k)*NT + t."""
    nx, ny, nz, nt = shape
    i, j, k, t = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (((i * ny + j) * nz + k) * nt + t).astype(dtype)


def code(i, j, k, t, shape=(NX, NY, NZ, NT)) -> int:
    _, ny, nz, nt = shape
    return ((i * ny + j) * nz + k) * nt + t


def rotation(angle_deg: float, axis) -> np.ndarray:
    """Rodrigues rotation matrix."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def make_affine(columns, origin=(10.0, -20.0, 30.0), rot=None) -> np.ndarray:
    """Affine with the given voxel->world columns (3x3 as column list), optionally rotated obliquely."""
    m = np.stack([np.asarray(c, float) for c in columns], axis=1)
    if rot is not None:
        m = rot @ m
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = origin
    return aff


def save(tmp_path, name, data, affine) -> str:
    path = str(tmp_path / name)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


# Voxel axis i -> posterior (-A), j -> superior (+S), k -> right (+R); det < 0 (a flipped/left-handed grid).
# The slice axis k points along world x: closest-canonical reordering would have moved it to axis 0.
FLIPPED_COLS = [(0, -1.2, 0), (0, 0, 1.5), (2.5, 0, 0)]
# LPS-like (typical DICOM): i -> left, j -> posterior, k -> superior; det > 0.
LPS_COLS = [(-1.25, 0, 0), (0, -1.25, 0), (0, 0, 8.0)]
# Slightly sheared (non-orthonormal) direction cosines: j is not orthogonal to i.
SHEAR_COLS = [(1.2, 0.0, 0.0), (0.35, 1.2, 0.0), (0.0, 0.0, 6.0)]

CASES = [
    ("flipped", FLIPPED_COLS, None, (1.2, 1.5, 2.5)),
    ("flipped_oblique", FLIPPED_COLS, rotation(25, (1, 2, 0.5)), (1.2, 1.5, 2.5)),
    ("lps", LPS_COLS, None, (1.25, 1.25, 8.0)),
    ("lps_oblique", LPS_COLS, rotation(-30, (0.3, -1, 0.2)), (1.25, 1.25, 8.0)),
    ("slice_along_x", LPS_COLS, rotation(90, (0, 1, 0)), (1.25, 1.25, 8.0)),
    ("slice_along_y_oblique", LPS_COLS, rotation(80, (1, 0.1, 0)), (1.25, 1.25, 8.0)),
]


@pytest.mark.parametrize("backend", ["nibabel", "simpleitk"])
@pytest.mark.parametrize("name,cols,rot,spacing", CASES, ids=[c[0] for c in CASES])
def test_load_stored_order(tmp_path, backend, name, cols, rot, spacing):
    """Whatever the orientation, the array is the stored (i, j, k, t) data and the spacing is along i, j, k."""
    vol = coded_volume()
    path = save(tmp_path, f"{name}.nii.gz", vol, make_affine(cols, rot=rot))
    arr, sp = LoadCineVolume(backend=backend).load(path)
    assert arr.shape == (NX, NY, NZ, NT)
    assert arr.dtype == np.int16
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_allclose(sp, spacing, rtol=1e-5)
    assert isinstance(sp, tuple) and all(isinstance(s, float) for s in sp)
    assert arr.flags.c_contiguous
    assert arr[0, 0, 0, 0] == code(0, 0, 0, 0)
    assert arr[5, 4, 3, 2] == code(5, 4, 3, 2)
    assert arr[1, 3, 2, 1] == code(1, 3, 2, 1)


@pytest.mark.parametrize("backend", ["nibabel", "simpleitk"])
def test_oblique_slice_axis_nearest_world_x_keeps_short_axis_images(tmp_path, backend):
    """A 90-degree rotation puts the slice axis k along world x: volume[:, :, z, t] is still the stored image."""
    nx, ny, nz, nt = 7, 6, 3, 2  # thin stack: few slices, as in short-axis cine
    vol = coded_volume(shape=(nx, ny, nz, nt))
    rot = rotation(90, (0, 1, 0))
    aff = make_affine([(1.5, 0, 0), (0, 1.5, 0), (0, 0, 9.0)], rot=rot)
    k_world = aff[:3, 2] / np.linalg.norm(aff[:3, 2])
    assert int(np.argmax(np.abs(k_world))) == 0  # slice axis nearest world x (R)
    path = save(tmp_path, "sax_along_x.nii.gz", vol, aff)
    arr, sp = LoadCineVolume(backend=backend).load(path)
    assert arr.shape == (nx, ny, nz, nt)
    np.testing.assert_allclose(sp, (1.5, 1.5, 9.0), rtol=1e-5)
    sel = SelectCineFrame()
    for z in range(nz):
        for t in range(nt):
            out = sel(arr, z, t)
            assert out.shape == (1, nx, ny)  # a full in-plane image, not a thin strip
            np.testing.assert_array_equal(out[0].numpy(), vol[:, :, z, t].astype(np.float32))


@pytest.mark.parametrize(
    "cols,rot",
    [
        (FLIPPED_COLS, rotation(25, (1, 2, 0.5))),
        (LPS_COLS, rotation(10, (0, 0, 1))),
        (LPS_COLS, rotation(90, (0, 1, 0))),
        (FLIPPED_COLS, rotation(-70, (0.2, 1, 0.4))),
        ([(1.25, 0, 0), (1e-5 * 1.25, 1.25, 0), (0, 0, 8.0)], rotation(20, (1, 1, 0))),
    ],
    ids=["flipped_oblique", "lps_oblique", "slice_along_x", "flipped_oblique2", "near_non_orthonormal"],
)
def test_backends_identical(tmp_path, cols, rot):
    vol = coded_volume().astype(np.float32) * 0.5
    path = save(tmp_path, "v.nii.gz", vol, make_affine(cols, rot=rot))
    a_nib, sp_nib = LoadCineVolume("nibabel").load(path)
    try:
        a_itk, sp_itk = LoadCineVolume("simpleitk").load(path)
    except ValueError as e:  # ITK may refuse near-non-orthonormal direction cosines
        assert "orthonormal" in str(e) and "backend='nibabel'" in str(e)
        a_itk, sp_itk = a_nib, sp_nib
    assert a_nib.dtype == a_itk.dtype == np.float32
    np.testing.assert_array_equal(a_nib, a_itk)
    np.testing.assert_array_equal(a_nib, vol)
    np.testing.assert_allclose(sp_nib, sp_itk, rtol=1e-5)


def test_dtype_kept_or_cast(tmp_path):
    vol = coded_volume()
    aff = make_affine(LPS_COLS)
    p16 = save(tmp_path, "i16.nii.gz", vol, aff)
    pf = save(tmp_path, "f32.nii", vol.astype(np.float32) + 0.25, aff)
    for backend in ("nibabel", "simpleitk"):
        assert LoadCineVolume(backend)(p16).dtype == np.int16
        out = LoadCineVolume(backend)(pf)
        assert out.dtype == np.float32
        assert out[0, 0, 0, 1] == pytest.approx(1.25)  # vol[0, 0, 0, 1] = 1, +0.25
        cast = LoadCineVolume(backend, dtype=np.float32)(p16)
        assert cast.dtype == np.float32
        np.testing.assert_array_equal(cast, vol.astype(np.float32))


def test_non_orthonormal_direction_cosines(tmp_path):
    vol = coded_volume()
    aff = make_affine(SHEAR_COLS)  # sheared: j not orthogonal to i
    path = save(tmp_path, "shear.nii.gz", vol, aff)
    arr, sp = LoadCineVolume("nibabel").load(path)
    np.testing.assert_array_equal(arr, vol)  # stored order
    np.testing.assert_allclose(sp, (1.2, np.hypot(0.35, 1.2), 6.0), rtol=1e-5)
    with pytest.raises(ValueError, match="orthonormal") as exc:
        LoadCineVolume("simpleitk")(path)
    assert "nibabel" in str(exc.value) and "shear.nii.gz" in str(exc.value)


def test_read_failures(tmp_path):
    missing = str(tmp_path / "nothere_sa.nii.gz")
    garbage = tmp_path / "garbage_sa.nii.gz"
    garbage.write_bytes(b"this is not a nifti file" * 10)
    good = save(tmp_path, "good.nii.gz", coded_volume(), make_affine(LPS_COLS))
    truncated = tmp_path / "trunc_sa.nii.gz"
    raw = gzip.decompress(open(good, "rb").read())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    cut_gz = tmp_path / "cut_sa.nii.gz"  # compressed stream cut short
    cut_gz.write_bytes(open(good, "rb").read()[:-40])
    cut_nii = tmp_path / "cut_sa.nii"  # uncompressed, data cut short (SimpleITK would zero-fill it)
    cut_nii.write_bytes(raw[:-100])
    not4d = save(tmp_path, "three_d.nii.gz", coded_volume()[..., 0], make_affine(LPS_COLS))
    for backend in ("nibabel", "simpleitk"):
        loader = LoadCineVolume(backend)
        for path in (missing, str(garbage), str(truncated), str(cut_gz), str(cut_nii), not4d):
            with pytest.raises(ValueError) as exc:
                loader(path)
            assert str(path) in str(exc.value), (backend, str(exc.value))
            assert str(exc.value).startswith("cannot load cine volume"), (backend, str(exc.value))
            assert "transforms.py" not in str(exc.value)
        with pytest.raises(TypeError):
            loader(123)
    with pytest.raises(ValueError, match="backend"):
        LoadCineVolume("itk")


def test_load_dict_spacing_and_subject_in_error(tmp_path):
    vol = coded_volume()
    path = save(tmp_path, "P001_sa.nii.gz", vol, make_affine(FLIPPED_COLS))
    rec = {"subject": "P001", "image": path, "label": 1}
    out = LoadCineVolumed(keys="image", backend="simpleitk")(rec)
    assert rec["image"] == path  # input not modified
    np.testing.assert_array_equal(out["image"], vol)
    np.testing.assert_allclose(out["spacing"], (1.2, 1.5, 2.5), rtol=1e-5)
    assert out["label"] == 1 and out["subject"] == "P001"
    out2 = LoadCineVolumed(spacing_key="sp")(rec)
    assert "sp" in out2 and "spacing" not in out2
    bad = {"subject": "XYZ123", "image": str(tmp_path / "missing.nii.gz")}
    with pytest.raises(ValueError) as exc:
        LoadCineVolumed()(bad)
    assert "XYZ123" in str(exc.value) and "missing.nii.gz" in str(exc.value)
    assert str(exc.value).startswith("subject 'XYZ123', key 'image': cannot load cine volume")
    with pytest.raises(KeyError):
        LoadCineVolumed()({"subject": "A"})
    assert LoadCineVolumed(allow_missing_keys=True)({"subject": "A"}) == {"subject": "A"}


def test_select_frame_exact_and_copy():
    vol = coded_volume()
    sel = SelectCineFrame()
    for z in range(NZ):
        for t in range(NT):
            out = sel(vol, z, t)
            assert out.shape == (1, NX, NY) and out.dtype == torch.float32
            exp = np.array([[code(i, j, z, t) for j in range(NY)] for i in range(NX)], dtype=np.float32)
            np.testing.assert_array_equal(out[0].numpy(), exp)
    before = vol.copy()
    out = sel(vol, np.int64(2), torch.tensor(1))
    assert not np.shares_memory(out.numpy(), vol)
    out += 1000
    np.testing.assert_array_equal(vol, before)
    # float32 volume and a torch volume are copied too
    fvol = vol.astype(np.float32)
    fout = sel(fvol, 1, 1)
    fout.zero_()
    assert fvol[:, :, 1, 1].sum() > 0
    tvol = torch.from_numpy(fvol.copy())
    tout = sel(tvol, 3, 2)
    np.testing.assert_array_equal(tout[0].numpy(), fvol[:, :, 3, 2])
    tout.zero_()
    assert tvol[:, :, 3, 2].sum() > 0


def test_select_frame_errors():
    vol = coded_volume()
    sel = SelectCineFrame()
    with pytest.raises(ValueError, match=r"^slice index z=4 .*\(6, 5, 4, 3\)"):
        sel(vol, 4, 0)
    with pytest.raises(ValueError, match=r"t.*-1"):
        sel(vol, 0, -1)
    with pytest.raises(TypeError):
        sel(vol, 1.0, 0)
    with pytest.raises(ValueError, match="4D"):
        sel(vol[..., 0], 0, 0)
    with pytest.raises(TypeError):
        sel([[1]], 0, 0)


def test_select_framed_dict():
    vol = coded_volume()
    d = {"image": vol, "slice": 2, "frame": 1, "label": 0}
    out = SelectCineFramed()(d)
    assert d["image"] is vol  # input dict untouched
    np.testing.assert_array_equal(out["image"][0].numpy(), vol[:, :, 2, 1])
    assert out["label"] == 0
    with pytest.raises(ValueError, match="slice"):
        SelectCineFramed()({"image": vol, "frame": 0})


def _decode(frame: torch.Tensor) -> tuple[int, int]:
    """Recover (z, t) from a coded frame: code at (0, 0) = z*NT + t."""
    c = int(frame[0, 0, 0])
    return c // NT, c % NT


def test_rand_frame_reproducible_and_recorded():
    vol = coded_volume()
    d = {"image": vol, "ed": 0, "es": 2}
    a = RandCineFramed(mode="random")
    b = RandCineFramed(mode="random")
    a.set_random_state(seed=123)
    b.set_random_state(seed=123)
    seq_a = [(o["slice"], o["frame"]) for o in (a(d) for _ in range(30))]
    seq_b = [(o["slice"], o["frame"]) for o in (b(d) for _ in range(30))]
    assert seq_a == seq_b
    assert len(set(seq_a)) > 1
    a.set_random_state(seed=123)
    assert [(o["slice"], o["frame"]) for o in (a(d) for _ in range(30))] == seq_a
    for _ in range(20):
        o = a(d)
        assert _decode(o["image"]) == (o["slice"], o["frame"])
        np.testing.assert_array_equal(o["image"][0].numpy(), vol[:, :, o["slice"], o["frame"]])
    assert "slice" not in d and d["image"] is vol


def test_rand_frame_coverage_random_mode():
    vol = coded_volume()
    t = RandCineFramed(mode="random", slice_key="z", frame_key="t")
    t.set_random_state(seed=0)
    seen = set()
    for _ in range(400):
        o = t({"image": vol})
        assert (o["z"], o["t"]) == _decode(o["image"])
        seen.add((o["z"], o["t"]))
    assert seen == {(z, f) for z in range(NZ) for f in range(NT)}


def test_rand_frame_ed_es_mode():
    vol = coded_volume(shape=(NX, NY, NZ, 8))
    t = RandCineFramed(mode="ed_es")
    t.set_random_state(seed=7)
    frames, slices = [], set()
    for _ in range(300):
        o = t({"image": vol, "ed": 6, "es": 3})
        frames.append(o["frame"])
        slices.add(o["slice"])
        np.testing.assert_array_equal(o["image"][0].numpy(), vol[:, :, o["slice"], o["frame"]])
    assert set(frames) == {3, 6}
    assert 100 < frames.count(3) < 200
    assert slices == set(range(NZ))
    with pytest.raises(ValueError, match="ED"):
        t({"image": vol, "ed": 8, "es": 3})
    with pytest.raises(ValueError, match="ED and ES"):
        t({"image": vol})
    with pytest.raises(ValueError, match="mode"):
        RandCineFramed(mode="all")


def test_rand_frame_randomize_direct():
    """A draw made by ``randomize`` is the frame the next ``randomize=False`` call selects, and records."""
    shape = (NX, NY, 10, 25)
    vol = coded_volume(shape=shape)
    t = RandCineFramed(mode="ed_es")
    t.set_random_state(seed=1)
    drawn = []
    for _ in range(40):
        t.randomize(num_slices=10, num_frames=25, ed=0, es=9)
        first = t({"image": vol, "ed": 0, "es": 9}, randomize=False)
        again = t({"image": vol, "ed": 0, "es": 9}, randomize=False)  # no new draw
        z, f = first["slice"], first["frame"]
        assert (again["slice"], again["frame"]) == (z, f)
        assert 0 <= z < 10 and f in (0, 9)
        np.testing.assert_array_equal(first["image"][0].numpy(), vol[:, :, z, f])
        drawn.append((z, f))
    assert {f for _, f in drawn} == {0, 9} and len({z for z, _ in drawn}) > 1  # the draws do vary


def test_frame_pipeline_with_monai_transforms():
    rng = np.random.default_rng(0)
    vol = (rng.random((256, 208, 3, 4)) * 3000).astype(np.int16)
    vol[0, 0, 1, 2] = 32000  # outlier, clipped by the percentile scaling
    pipeline = Compose(
        [
            SelectCineFramed(keys="image"),
            ScaleIntensityRangePercentilesd(keys="image", lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True),
            RandRotated(keys="image", range_x=np.pi / 12, prob=1.0, keep_size=True, padding_mode="zeros"),
            RandFlipd(keys="image", prob=0.5, spatial_axis=0),
            ResizeWithPadOrCropd(keys="image", spatial_size=(224, 224)),
        ]
    )
    pipeline.set_random_state(seed=3)
    for _ in range(3):
        out = pipeline({"image": vol, "slice": 1, "frame": 2})
        img = out["image"]
        assert tuple(img.shape) == (1, 224, 224)
        assert float(img.min()) >= 0.0
        assert float(img.max()) <= 1.0 + 1e-6
        assert float(img.max()) > 0.9
    assert vol[0, 0, 1, 2] == 32000


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_nearly_orthonormal_direction_cosines(tmp_path, eps):
    """Slightly skewed direction cosines: nibabel always loads; SimpleITK agrees or refuses with a clear error."""
    vol = coded_volume()
    cols = [(1.25, 0, 0), (eps * 1.25, 1.25, 0), (0, 0, 8.0)]
    path = save(tmp_path, "skew.nii.gz", vol, make_affine(cols, rot=rotation(20, (1, 1, 0))))
    a_nib = LoadCineVolume("nibabel")(path)
    np.testing.assert_array_equal(a_nib, vol)
    try:
        a_itk = LoadCineVolume("simpleitk")(path)
    except ValueError as e:
        assert "orthonormal" in str(e) and "backend='nibabel'" in str(e)
    else:
        np.testing.assert_array_equal(a_itk, a_nib)


def test_scaled_file_float32_both_backends(tmp_path):
    raw = (coded_volume() * 10).astype(np.int16)
    img = nib.Nifti1Image(raw, make_affine(LPS_COLS))
    img.header.set_slope_inter(0.5, 2.0)
    path = str(tmp_path / "scaled.nii.gz")
    nib.save(img, path)
    a_nib = LoadCineVolume("nibabel")(path)
    a_itk = LoadCineVolume("simpleitk")(path)
    assert a_nib.dtype == a_itk.dtype == np.float32
    np.testing.assert_array_equal(a_nib, a_itk)
    np.testing.assert_array_equal(a_nib, raw.astype(np.float32) * 0.5 + 2.0)


def test_uncompressed_file_not_memory_mapped(tmp_path):
    vol = coded_volume()
    path = save(tmp_path, "plain.nii", vol, np.diag([1.0, 1.0, 1.0, 1.0]))
    arr = LoadCineVolume("nibabel")(path)
    assert not isinstance(arr, np.memmap) and arr.flags.owndata and arr.flags.writeable
    np.testing.assert_array_equal(arr, vol)
