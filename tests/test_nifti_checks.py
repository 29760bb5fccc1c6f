"""The one cine-file check (mnms_groupdistil.datasets.mnms.nifti): files cut short by any amount, compressed or
not, are caught by the data check before training, by inference and by the SimpleITK loader."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from mnms_groupdistil.datasets.mnms.cohort import check_subjects
from mnms_groupdistil.datasets.mnms.inference import find_cine_volumes
from mnms_groupdistil.datasets.mnms.nifti import cine_volume_problems, nifti_data_problem
from mnms_groupdistil.datasets.mnms.release import MnMsDataError
from mnms_groupdistil.datasets.mnms.volumes import LoadCineVolume

SHAPE = (8, 8, 2, 3)  # int16: 8 * 8 * 2 * 3 * 2 = 768 bytes of voxel data


def _save(path, extension_bytes=0):
    image = nib.Nifti1Image((np.arange(np.prod(SHAPE)) % 97).reshape(SHAPE).astype(np.int16), np.eye(4))
    if extension_bytes:
        image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"x" * extension_bytes))
    nib.save(image, str(path))
    return path


def _vox_offset(raw: bytes) -> int:
    """vox_offset read straight from the NIfTI-1 header bytes (a float32 at byte 108)."""
    return int(struct.unpack("<f", raw[108:112])[0])


@pytest.mark.parametrize("extension_bytes", [0, 200])
@pytest.mark.parametrize("cut", [1, 100, 351])
def test_uncompressed_file_cut_short_by_less_than_a_header(tmp_path, cut, extension_bytes):
    path = _save(tmp_path / "CUT001_sa.nii", extension_bytes)
    raw = path.read_bytes()
    needed = _vox_offset(raw) + 768
    assert len(raw) == needed and _vox_offset(raw) >= 352
    assert nifti_data_problem(path) is None
    path.write_bytes(raw[:-cut])
    problem = nifti_data_problem(path)
    assert problem == (
        f"voxel data truncated: {needed - cut} bytes in the file, the header needs {needed} (file cut short?)"
    )


def test_compressed_file_cut_short_or_corrupt(tmp_path):
    path = _save(tmp_path / "GZ0001_sa.nii.gz")
    assert nifti_data_problem(path) is None
    raw = gzip.decompress(path.read_bytes())
    needed = _vox_offset(raw) + 768
    path.write_bytes(gzip.compress(raw[:-100]))  # a whole gzip stream of a file cut short
    assert nifti_data_problem(path) == (
        f"voxel data truncated: {needed - 100} bytes after decompression, the header needs {needed} (file cut short?)"
    )
    _save(path)
    path.write_bytes(path.read_bytes()[:-20])  # the compressed stream itself cut short
    assert "truncated or corrupt" in nifti_data_problem(path)


def test_one_check_serves_training_inference_and_the_loader(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    path = _save(folder / "SHORT1_sa.nii")
    path.write_bytes(path.read_bytes()[:-100])  # shorter than a header: passed the old check
    shape, problems = cine_volume_problems(path)
    assert shape == SHAPE and len(problems) == 1 and "truncated" in problems[0]

    with pytest.raises(MnMsDataError) as info:
        check_subjects([{"subject": "SHORT1", "image": str(path), "ed": 0, "es": 1}])
    assert info.value.problems == [f"subject SHORT1: {path}: {problems[0]}"]

    with pytest.raises(ValueError) as info:
        find_cine_volumes(folder, pattern="*_sa.nii")
    assert f"{path} (subject SHORT1): {problems[0]}" in str(info.value)

    for backend in ("nibabel", "simpleitk"):  # nibabel refuses short data itself; ITK would zero-fill it
        with pytest.raises(ValueError, match="cannot load cine volume"):
            LoadCineVolume(backend)(str(path))
    with pytest.raises(ValueError, match="truncated"):
        LoadCineVolume("simpleitk")(str(path))
