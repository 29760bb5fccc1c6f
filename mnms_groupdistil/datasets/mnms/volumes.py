"""4D cine MRI volumes (x, y, z, t) loaded from NIfTI files in the stored voxel order, with their voxel spacing.

* :class:`LoadCineVolume` / :class:`LoadCineVolumed`: NIfTI path -> numpy array ``(X, Y, Z, T)`` in the
  stored voxel order, no resampling or reorientation: in-plane axes first, then slice, then time; plus the voxel
  spacing in mm. Two backends (nibabel, SimpleITK) give the identical array for the same file.

The volumes are loaded once per patient (and typically cached by :class:`monai.data.CacheDataset`); the frame
transforms of :mod:`.transforms` then pick the 2D frames from them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from .nifti import nifti_data_problem

__all__ = ["BACKENDS", "LoadCineVolume", "LoadCineVolumed"]

#: Backends accepted by :class:`LoadCineVolume`.
BACKENDS = ("nibabel", "simpleitk")


def _spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the three voxel axes: the column norms of the affine's 3x3 block."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0)))


class LoadCineVolume(Transform):
    """Load a 4D cine MRI NIfTI file as a numpy array ``(X, Y, Z, T)`` in the stored voxel order.

    Stored voxel order, no resampling or reorientation: in-plane axes first, then slice, then time. The array is
    indexed ``(i, j, k, t)`` exactly as in the file (``i``, ``j`` in-plane, ``k`` the short-axis slice, ``t`` the
    cardiac frame), whatever the orientation of the (typically oblique) stack in the world; the voxels are never
    permuted or flipped towards RAS+, so ``volume[:, :, z, t]`` is always a stored short-axis image.
    Both backends return the identical array for the same file: SimpleITK's ``(T, Z, Y, X)`` array order is
    transposed back to ``(i, j, k, t)`` (its LPS world convention only concerns the affine, not the voxel grid).
    The spacing is the voxel size along ``i``, ``j``, ``k`` (the affine's column norms, i.e. the NIfTI pixdim).
    The stored dtype is kept unless ``dtype`` is given (the volumes are cached, so int16 files stay int16); files
    with NIfTI intensity scaling (``scl_slope``/``scl_inter``) come back as the scaled data in float32 (with both
    backends).

    Args:
        backend: ``"nibabel"`` (default; accepts any affine, including non-orthonormal direction cosines) or
            ``"simpleitk"`` (refuses non-orthonormal direction cosines; a ValueError then suggests nibabel).
        dtype: numpy dtype to cast the array to, or None to keep the stored dtype.

    Raises:
        ValueError: unknown ``backend``.
        TypeError: ``dtype`` is not a valid numpy dtype.
    """

    def __init__(self, backend: str = "nibabel", dtype: Any = None) -> None:
        if not isinstance(backend, str) or backend.lower() not in BACKENDS:
            raise ValueError(f"LoadCineVolume backend={backend!r} is not one of {BACKENDS}.")
        self.backend = backend.lower()
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError as e:
                raise TypeError(f"LoadCineVolume dtype={dtype!r} is not a numpy dtype.") from e
        self.dtype = dtype

    def __call__(self, filename: str | os.PathLike) -> np.ndarray:
        """Load ``filename`` and return the stored-order array ``(X, Y, Z, T)``.

        Args:
            filename: path of a 4D NIfTI file.

        Raises:
            TypeError: ``filename`` is not a path.
            ValueError: the file is missing, unreadable, not 4D, or refused by SimpleITK.
        """
        return self.load(filename)[0]

    def load(self, filename: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Load ``filename``; return ``(array, spacing)``.

        Args:
            filename: path of a 4D NIfTI file.

        Returns:
            The stored-order array ``(X, Y, Z, T)`` (C-contiguous) and the voxel spacing ``(sx, sy, sz)`` in mm
            along the array's first three axes (the voxel sizes along ``i``, ``j``, ``k``).

        Raises:
            TypeError: ``filename`` is not a path.
            ValueError: the file is missing, unreadable, not 4D, or refused by SimpleITK.
        """
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"LoadCineVolume expects a file path (str or os.PathLike), got {type(filename).__name__}.")
        path = os.fspath(filename)
        if not os.path.isfile(path):
            raise ValueError(f"cannot load cine volume {path!r}: file does not exist.")
        if self.backend == "nibabel":
            array, affine = self._read_nibabel(path)
        else:
            array, affine = self._read_simpleitk(path)
        if array.ndim != 4:
            raise ValueError(
                f"cannot load cine volume {path!r}: expected a 4D (x, y, z, t) image, got shape {tuple(array.shape)}."
            )
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"cannot load cine volume {path!r}: degenerate affine\n{affine}.")
        array = np.ascontiguousarray(array)  # stored voxel order (i, j, k, t); no reorientation
        if self.dtype is not None and array.dtype != self.dtype:
            array = array.astype(self.dtype)
        return array, _spacing_from_affine(affine)

    @staticmethod
    def _read_nibabel(path: str) -> tuple[np.ndarray, np.ndarray]:
        """Return the stored ``(i, j, k, t)`` array and the voxel -> RAS+ world affine."""
        import nibabel as nib

        try:
            img = nib.load(path, mmap=False)  # read into memory: the cache must not keep a memory map of the file
            # nibabel moves scl_slope/scl_inter from the header to the array proxy when it loads a file
            slope = float(getattr(img.dataobj, "slope", 1.0))
            inter = float(getattr(img.dataobj, "inter", 0.0))
            if slope == 1.0 and inter == 0.0:
                array = np.asanyarray(img.dataobj)  # stored dtype
            else:  # intensity-scaled file: float32, as SimpleITK gives
                array = img.get_fdata(dtype=np.float32)
            affine = np.asarray(img.affine, dtype=float)
        except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, OSError, zlib.error...)
            raise ValueError(f"cannot load cine volume {path!r} with nibabel: {type(e).__name__}: {e}") from e
        return array, affine

    @staticmethod
    def _read_simpleitk(path: str) -> tuple[np.ndarray, np.ndarray]:
        """Return the stored ``(i, j, k, t)`` array and the voxel -> LPS world affine.

        The affine is only used for its column norms (spacing) and determinant (degeneracy check), which do not
        depend on the LPS/RAS world convention; the voxel data are never flipped.
        """
        import SimpleITK as sitk

        try:
            img = sitk.ReadImage(path)
        except RuntimeError as e:
            msg = str(e)
            if "orthonormal" in msg.lower():
                raise ValueError(
                    f"SimpleITK refuses cine volume {path!r}: its direction cosines are not orthonormal "
                    "(ITK only supports orthonormal direction cosines). Use backend='nibabel', which reads "
                    "such files."
                ) from None
            last = [line.strip() for line in msg.strip().splitlines() if line.strip()]
            reason = last[-1] if last else "unknown error"
            raise ValueError(f"cannot load cine volume {path!r} with SimpleITK: {reason}") from None
        problem = nifti_data_problem(path)  # ITK zero-fills the missing voxels of a truncated file
        if problem is not None:
            raise ValueError(f"cannot load cine volume {path!r}: {problem}.")
        dim = img.GetDimension()
        if dim != 4 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"cannot load cine volume {path!r}: expected a 4D scalar (x, y, z, t) image, "
                f"SimpleITK read a {dim}D image of size {img.GetSize()} with "
                f"{img.GetNumberOfComponentsPerPixel()} component(s) per pixel."
            )
        # SimpleITK's array is (t, k, j, i): reverse to the stored voxel order (i, j, k, t), no flips.
        array = np.transpose(sitk.GetArrayFromImage(img), (3, 2, 1, 0))
        direction = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
        spacing = np.asarray(img.GetSpacing()[:3], dtype=float)
        origin = np.asarray(img.GetOrigin()[:3], dtype=float)
        affine_lps = np.eye(4)
        affine_lps[:3, :3] = direction * spacing[None, :]
        affine_lps[:3, 3] = origin
        return array, affine_lps


class LoadCineVolumed(MapTransform):
    """Dictionary wrapper of :class:`LoadCineVolume`.

    Replaces the path in ``d[key]`` with the stored-order array ``(X, Y, Z, T)`` (stored voxel order, no
    resampling or reorientation: in-plane axes first, then slice, then time) and writes the voxel spacing
    (tuple of 3 floats, mm, along i/j/k of the returned array) under ``spacing_key`` (for the first key only when
    several keys are given, and only if ``spacing_key`` is not None).

    Args:
        keys: keys of the paths to load.
        backend: ``"nibabel"`` or ``"simpleitk"``, see :class:`LoadCineVolume`.
        dtype: numpy dtype to cast to, or None to keep the stored dtype.
        spacing_key: key to write the spacing under; None to not write it.
        subject_key: key of the subject code, quoted in error messages when present.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: unknown ``backend``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        backend: str = "nibabel",
        dtype: Any = None,
        spacing_key: Hashable | None = "spacing",
        subject_key: Hashable | None = "subject",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCineVolume(backend=backend, dtype=dtype)
        self.spacing_key = spacing_key
        self.subject_key = subject_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key of ``data``.

        Raises:
            KeyError: a key is missing and ``allow_missing_keys`` is False.
            TypeError, ValueError: as :meth:`LoadCineVolume.load`, prefixed with the subject code.
        """
        d = dict(data)
        subject = d.get(self.subject_key) if self.subject_key is not None else None
        first = True
        for key in self.key_iterator(d):
            try:
                array, spacing = self.loader.load(d[key])
            except (ValueError, TypeError) as e:
                prefix = f"subject {subject!r}, key {key!r}: " if subject is not None else f"key {key!r}: "
                raise type(e)(prefix + str(e)) from e
            d[key] = array
            if first and self.spacing_key is not None:
                d[self.spacing_key] = spacing
            first = False
        return d
