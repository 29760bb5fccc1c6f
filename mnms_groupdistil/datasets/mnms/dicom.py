"""Cine short-axis MRI as scanners export it: a DICOM series, one file per slice position and cardiac phase.

:func:`dicom_series_info` reads the headers of the series in one folder (SimpleITK/GDCM, no pixel data) and
arranges the files by slice position (along the slice normal, ascending) and trigger time (ascending);
:class:`LoadDicomCine` reads the pixel data into the array order of the NIfTI path
(:class:`mnms_groupdistil.datasets.mnms.volumes.LoadCineVolume`): ``(X, Y, Z, T)`` with ``X`` the column and
``Y`` the row of a stored image, ``Z`` the slice and ``T`` the phase. The scanner vendor comes from the Manufacturer
tag and is mapped to the M&Ms vendor codes by :func:`vendor_code`.

SimpleITK is imported only when a DICOM series is read, so NIfTI-only use needs no SimpleITK.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Transform

__all__ = ["LoadDicomCine", "dicom_series_info", "is_dicom_file", "vendor_code"]

#: M&Ms vendor code of each manufacturer (matched against the lower-cased Manufacturer tag, first match wins).
MANUFACTURER_PATTERNS: tuple[tuple[str, str], ...] = (
    ("A", r"siemens"),
    ("B", r"philips"),
    ("C", r"^ge\b|general electric|\bge (medical|healthcare)"),
    ("D", r"canon|toshiba"),
)
_TAGS = {
    "position": "0020|0032",
    "orientation": "0020|0037",
    "trigger_time": "0018|1060",
    "manufacturer": "0008|0070",
}
_POSITION_TOLERANCE_MM = 1e-3


def vendor_code(manufacturer: str) -> str:
    """M&Ms vendor code of a DICOM Manufacturer: Siemens A, Philips B, GE C, Canon/Toshiba D; ``""`` otherwise.

    Example:
        >>> vendor_code("SIEMENS"), vendor_code("GE MEDICAL SYSTEMS"), vendor_code("TOSHIBA_MEC")
        ('A', 'C', 'D')
    """
    text = str(manufacturer).strip().lower()
    for code, pattern in MANUFACTURER_PATTERNS:
        if re.search(pattern, text):
            return code
    return ""


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _floats(reader: Any, key: str, count: int, file: str, folder: Path) -> np.ndarray:
    text = reader.GetMetaData(_TAGS[key]) if reader.HasMetaDataKey(_TAGS[key]) else ""
    try:
        values = np.array([float(v) for v in text.strip().split("\\")], dtype=float)
    except ValueError:
        values = np.array([])
    if values.size != count:
        raise ValueError(
            f"DICOM series in {folder}: file {Path(file).name} has no usable {key.replace('_', ' ')} "
            f"(tag {_TAGS[key]}, read {text!r}); a cine series needs it in every file."
        )
    return values


def _file_header(file: str, folder: Path) -> tuple[Any, ...]:
    """``(file, size, orientation, position, trigger time, in-plane spacing, manufacturer)`` of one DICOM file.

    Raises:
        ValueError: the file is unreadable or lacks its position, orientation or trigger time.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        reason = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ValueError(
            f"DICOM series in {folder}: cannot read {Path(file).name} ({reason[-1] if reason else e})."
        ) from None
    size = tuple(reader.GetSize()[:2])
    orientation = _floats(reader, "orientation", 6, file, folder)
    position = _floats(reader, "position", 3, file, folder)
    trigger = float(_floats(reader, "trigger_time", 1, file, folder)[0])
    key = _TAGS["manufacturer"]
    manufacturer = reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
    return file, size, orientation, position, trigger, tuple(reader.GetSpacing()[:2]), manufacturer


def dicom_series_info(folder: str | os.PathLike) -> dict[str, Any]:
    """Headers of the cine series in ``folder``, arranged by slice position and trigger time.

    Args:
        folder: a folder holding the files of one cine short-axis series (one image per file).

    Returns:
        ``{"files": [[path, ...] per slice (by position)] each by trigger time, "num_slices", "num_frames",
        "manufacturer", "vendor", "size": (columns, rows), "spacing": (sx, sy, sz)}``.

    Raises:
        ValueError: naming ``folder``: no DICOM series, several series, an unreadable file, missing position,
            orientation or trigger time, mixed orientations or image sizes, or an incomplete series (a slice
            position without every phase, or a phase twice).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"DICOM series folder {folder} does not exist.")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ValueError(f"no readable DICOM series in {folder}: put the files of one cine series in the folder.")
    if len(series) > 1:
        raise ValueError(
            f"{folder} holds {len(series)} DICOM series ({', '.join(series)}); put each cine series in its own folder."
        )
    files = [str(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])]
    headers = [_file_header(file, folder) for file in files]
    manufacturer = next((h[6] for h in headers if h[6]), "")
    first_size, first_orientation = headers[0][1], headers[0][2]
    for file, size, orientation, *_ in headers:
        if size != first_size or not np.allclose(orientation, first_orientation, atol=1e-4):
            raise ValueError(
                f"DICOM series in {folder}: {Path(file).name} has image size {size} and orientation "
                f"{orientation.tolist()}, the first file {first_size} and {first_orientation.tolist()}; "
                "a cine short-axis series keeps both fixed."
            )
    normal = np.cross(first_orientation[:3], first_orientation[3:])
    heights = np.array([float(np.dot(h[3], normal)) for h in headers])
    order = np.argsort(heights, kind="stable")
    slices: list[list[tuple[float, str]]] = []
    positions: list[float] = []
    for i in order:
        if not positions or heights[i] - positions[-1] > _POSITION_TOLERANCE_MM:
            slices.append([])
            positions.append(float(heights[i]))
        slices[-1].append((headers[i][4], headers[i][0]))
    counts = [len(s) for s in slices]
    times = [sorted(t for t, _ in s) for s in slices]
    if len(set(counts)) != 1 or any(len(set(t)) != len(t) for t in times):
        raise ValueError(
            f"incomplete DICOM cine series in {folder}: {len(files)} files at {len(slices)} slice positions holding "
            f"{counts} phases (trigger times {[sorted(set(t)) for t in times]}); every slice position needs every "
            "phase once. Add the missing files or remove the extra ones."
        )
    return {
        "files": [[f for _, f in sorted(s)] for s in slices],
        "num_slices": len(slices),
        "num_frames": counts[0],
        "manufacturer": manufacturer,
        "vendor": vendor_code(manufacturer),
        "size": first_size,
        "spacing": (*headers[0][5], float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0),
    }


class LoadDicomCine(Transform):
    """Read a folder's cine DICOM series as an array ``(X, Y, Z, T)`` in the NIfTI path's order.

    ``array[:, :, z, t]`` is the stored image (``X`` its columns, ``Y`` its rows) at the ``z``-th slice position
    along the slice normal and the ``t``-th trigger time; rescale slope/intercept are applied by SimpleITK.
    """

    def __call__(self, folder: str | os.PathLike) -> np.ndarray:
        return self.load(folder)[0]

    def load(self, folder: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, info)`` with ``info`` from :func:`dicom_series_info`.

        Raises:
            ValueError: as :func:`dicom_series_info`, or a file whose pixel data cannot be read.
        """
        import SimpleITK as sitk

        info = dicom_series_info(folder)
        columns, rows = info["size"]
        array = None
        for z, files in enumerate(info["files"]):
            for t, file in enumerate(files):
                try:
                    pixels = sitk.GetArrayFromImage(sitk.ReadImage(file))
                except RuntimeError as e:
                    reason = [line.strip() for line in str(e).splitlines() if line.strip()]
                    raise ValueError(
                        f"DICOM series in {folder}: cannot read the pixels of {Path(file).name} "
                        f"({reason[-1] if reason else e})."
                    ) from None
                if array is None:
                    array = np.empty((columns, rows, info["num_slices"], info["num_frames"]), dtype=pixels.dtype)
                array[:, :, z, t] = pixels.reshape(rows, columns).T
        return array, info
