"""The one check of a cine NIfTI file, used by training (the data check before a run), inference and
the SimpleITK loader: is it a readable 4D image with all its voxel data there?

ITK zero-fills the missing voxels of a file cut short, and nibabel reads a header without reading
the data, so a truncated file would otherwise go unnoticed until (or even through) training. The
data size a header announces is ``vox_offset + prod(shape) * itemsize``; ``vox_offset`` is taken
from the array proxy (``image.dataobj.offset``), because nibabel resets the in-memory header's
``vox_offset`` to 0 when it loads a file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["cine_volume_problems", "nifti_data_problem"]


def nifti_data_problem(path: str | Path, image: object | None = None) -> str | None:
    """What is wrong with the voxel data of the NIfTI file at ``path``, or None when they are all there.

    A ``.nii`` file must be at least ``vox_offset + prod(shape) * itemsize`` bytes long. A ``.nii.gz``
    file is decompressed once, in chunks (nothing kept; roughly 0.1 s per 30 MB of voxel data), which
    also checks the gzip CRC and length, so a stream cut short or corrupted in the middle is caught.

    Args:
        path: the file.
        image: the file as ``nibabel.load`` returned it, when the caller has it (read otherwise).

    Returns:
        A problem text (without the file name), or None.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = image if image is not None else nib.load(str(path))
        offset = int(image.dataobj.offset)  # the file's vox_offset (the header's is reset to 0 on load)
        needed = offset + int(np.prod(image.shape, dtype=np.int64)) * image.get_data_dtype().itemsize
    except Exception as err:  # noqa: BLE001 - report instead of a raw nibabel traceback
        return f"cannot read the NIfTI header ({type(err).__name__}: {err})"
    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"
    try:
        if compressed:
            total = 0
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    total += len(chunk)
        else:
            total = path.stat().st_size
    except Exception as err:  # noqa: BLE001 - EOFError, BadGzipFile, zlib.error, OSError...
        return f"voxel data unreadable, file truncated or corrupt ({type(err).__name__}: {err})"
    if total < needed:
        kind = "after decompression" if compressed else "in the file"
        return f"voxel data truncated: {total} bytes {kind}, the header needs {needed} (file cut short?)"
    return None


def cine_volume_problems(path: str | Path) -> tuple[tuple[int, ...] | None, list[str]]:
    """Shape of the 4D cine volume at ``path`` and what is wrong with the file, without keeping its data.

    Checks that the file exists, that nibabel reads its header, that it is 4D with no empty
    dimension, and that all its voxel data are there (:func:`nifti_data_problem`).

    Returns:
        ``(shape, problems)``: ``shape`` is None when the file cannot be used at all; ``problems``
        are texts without the file name, empty for a sound file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        return None, ["image file does not exist"]
    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
    except Exception as err:  # noqa: BLE001 - report instead of a raw nibabel traceback
        return None, [f"cannot read the NIfTI header ({type(err).__name__}: {err})"]
    if len(shape) != 4:
        return None, [f"expected a 4D (x, y, z, t) cine image, got {len(shape)}D shape {shape}"]
    if min(shape) < 1:
        return None, [f"empty image, shape {shape} has a zero dimension"]
    data_problem = nifti_data_problem(path, image)
    return shape, [data_problem] if data_problem else []
