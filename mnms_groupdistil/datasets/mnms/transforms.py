"""MONAI-style transforms for 4D cine MRI volumes (x, y, z, t) and 2D frames taken from them.

The volumes are loaded once per patient (and typically cached by :class:`monai.data.CacheDataset`);
the frame transforms then pick one short-axis slice ``z`` at one cardiac phase ``t`` and return it as a
channel-first float32 tensor ``(1, X, Y)`` that never shares memory with the cached volume.

* :class:`LoadCineVolume` / :class:`LoadCineVolumed`: NIfTI path -> numpy array ``(X, Y, Z, T)`` in the
  stored voxel order, no resampling or reorientation: in-plane axes first, then slice, then time; plus the voxel
  spacing in mm. Two backends (nibabel, SimpleITK) give the identical array for the same file.
* :class:`SelectCineFrame` / :class:`SelectCineFramed`: pick ``volume[:, :, z, t]`` (deterministic).
* :class:`RandCineFramed`: draw ``z`` and ``t`` (uniformly, or ``t`` from {ED, ES}), record them in the
  dictionary and select the frame with :class:`SelectCineFramed`.

* :class:`VolumePercentiles` / :class:`VolumePercentilesd`: the intensity percentiles of a whole 4D volume,
  computed once when the volume is loaded (and cached with it).
* :class:`RescaleIntensity` / :class:`RescaleIntensityd`: clip a frame to those percentiles and rescale it
  (the per-frame cost is one clip and one multiply-add; no percentile is computed per frame).

Rotation, flipping and padding/cropping are left to MONAI's own dictionary transforms
(``RandRotated``, ``RandFlipd``, ``ResizeWithPadOrCropd``, ...).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform

from .nifti import nifti_data_problem

__all__ = [
    "BACKENDS",
    "LoadCineVolume",
    "LoadCineVolumed",
    "SelectCineFrame",
    "SelectCineFramed",
    "RandCineFramed",
    "CINE_FRAME_MODES",
    "VolumePercentiles",
    "VolumePercentilesd",
    "RescaleIntensity",
    "RescaleIntensityd",
]

#: Backends accepted by :class:`LoadCineVolume`.
BACKENDS = ("nibabel", "simpleitk")
#: Modes accepted by :class:`RandCineFramed`.
CINE_FRAME_MODES = ("random", "ed_es")


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


def _check_index(value: Any, name: str, size: int, shape: tuple[int, ...]) -> int:
    """Validate an integer index in ``[0, size)`` and return it as ``int``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if int(value.numel() if isinstance(value, torch.Tensor) else value.size) != 1:
            raise TypeError(f"{name} must be a single integer, got an array of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if not 0 <= value < size:
        raise ValueError(f"{name}={value} is out of range [0, {size}) for a cine volume of shape {shape} (X, Y, Z, T).")
    return value


class SelectCineFrame(Transform):
    """Pick one slice ``z`` at one frame ``t`` of a cine volume ``(X, Y, Z, T)``.

    Returns ``volume[:, :, z, t]`` as a new float32 torch tensor of shape ``(1, X, Y)`` (channel first). The result
    is always a copy, never a view of the (typically cached) volume.
    """

    def __call__(self, volume: np.ndarray | torch.Tensor, slice_index: int, frame_index: int) -> torch.Tensor:
        """Select the frame.

        Args:
            volume: 4D array or tensor ``(X, Y, Z, T)``.
            slice_index: ``z`` in ``[0, Z)``.
            frame_index: ``t`` in ``[0, T)``.

        Raises:
            TypeError: ``volume`` is not an array/tensor, or an index is not an integer.
            ValueError: ``volume`` is not 4D, or an index is out of range.
        """
        if not isinstance(volume, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"SelectCineFrame expects a numpy array or torch tensor (X, Y, Z, T), got {type(volume).__name__}."
            )
        shape = tuple(int(s) for s in volume.shape)
        if len(shape) != 4:
            raise ValueError(f"SelectCineFrame expects a 4D volume (X, Y, Z, T), got shape {shape}.")
        z = _check_index(slice_index, "slice index z", shape[2], shape)
        t = _check_index(frame_index, "frame index t", shape[3], shape)
        if isinstance(volume, torch.Tensor):
            frame = volume[:, :, z, t].detach().to(device="cpu", dtype=torch.float32, copy=True)
            if hasattr(frame, "as_tensor"):  # MetaTensor: drop the 4D volume's metadata
                frame = frame.as_tensor()
            return frame.contiguous().unsqueeze(0)
        frame = np.array(volume[:, :, z, t], dtype=np.float32, order="C", copy=True)
        return torch.from_numpy(frame).unsqueeze(0)


class SelectCineFramed(MapTransform):
    """Dictionary wrapper of :class:`SelectCineFrame`, using the indices stored in the dictionary.

    Args:
        keys: keys of the 4D volumes to take the frame from (e.g. image and segmentation).
        slice_key: key of the slice index ``z``.
        frame_key: key of the frame index ``t``.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        slice_key: Hashable = "slice",
        frame_key: Hashable = "frame",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self.frame_key = frame_key
        self.selector = SelectCineFrame()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each volume in ``data`` by its frame ``(1, X, Y)``; the input dictionary is not modified.

        Raises:
            ValueError: ``slice_key`` or ``frame_key`` is missing, or an index is out of range.
            KeyError: a key is missing and ``allow_missing_keys`` is False.
        """
        d = dict(data)
        for name, k in (("slice_key", self.slice_key), ("frame_key", self.frame_key)):
            if k not in d:
                raise ValueError(
                    f"SelectCineFramed {name}={k!r} is not in the data (keys: {sorted(map(str, d))}); "
                    "use RandCineFramed or frame entries that carry the slice/frame indices."
                )
        for key in self.key_iterator(d):
            d[key] = self.selector(d[key], d[self.slice_key], d[self.frame_key])
        return d


class RandCineFramed(RandomizableTransform, MapTransform):
    """Draw a slice and a frame of the cine volume(s), record them in the dictionary, and select that frame.

    ``randomize`` draws ``z`` uniformly in ``[0, Z)`` and then ``t`` uniformly in ``[0, T)`` (``mode="random"``)
    or uniformly from ``{ED, ES}`` (``mode="ed_es"``, ED/ES read from ``ed_key``/``es_key``). ``Z`` and ``T`` are
    taken from the shape of the first volume. The drawn indices are written under ``slice_key``/``frame_key`` and
    the frame is selected by an internal :class:`SelectCineFramed` (the same code as the deterministic path).
    Reproducible through ``set_random_state(seed)``.

    Args:
        keys: keys of the 4D volumes (all must share Z and T).
        mode: ``"random"`` or ``"ed_es"``.
        slice_key: key to write the drawn slice index under.
        frame_key: key to write the drawn frame index under.
        ed_key: key of the end-diastolic frame index (``"ed_es"`` mode).
        es_key: key of the end-systolic frame index (``"ed_es"`` mode).
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: unknown ``mode``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mode: str = "random",
        slice_key: Hashable = "slice",
        frame_key: Hashable = "frame",
        ed_key: Hashable = "ed",
        es_key: Hashable = "es",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if mode not in CINE_FRAME_MODES:
            raise ValueError(f"RandCineFramed mode={mode!r} is not one of {CINE_FRAME_MODES}.")
        self.mode = mode
        self.ed_key = ed_key
        self.es_key = es_key
        self.select = SelectCineFramed(
            keys=keys, slice_key=slice_key, frame_key=frame_key, allow_missing_keys=allow_missing_keys
        )
        self._slice: int | None = None
        self._frame: int | None = None

    @property
    def slice_key(self) -> Hashable:
        return self.select.slice_key

    @property
    def frame_key(self) -> Hashable:
        return self.select.frame_key

    def randomize(self, num_slices: int, num_frames: int, ed: int | None = None, es: int | None = None) -> None:
        """Draw the slice and the frame.

        Args:
            num_slices: Z, number of slices (>= 1).
            num_frames: T, number of frames (>= 1).
            ed: end-diastolic frame index in ``[0, T)`` (required in ``"ed_es"`` mode).
            es: end-systolic frame index in ``[0, T)`` (required in ``"ed_es"`` mode).

        Raises:
            ValueError: non-positive sizes, or ED/ES missing or out of range in ``"ed_es"`` mode.
        """
        self._do_transform = True
        if int(num_slices) < 1 or int(num_frames) < 1:
            raise ValueError(
                f"RandCineFramed needs num_slices >= 1 and num_frames >= 1, got {num_slices}, {num_frames}."
            )
        shape = (-1, -1, int(num_slices), int(num_frames))
        z = int(self.R.randint(int(num_slices)))
        if self.mode == "random":
            t = int(self.R.randint(int(num_frames)))
        else:
            if ed is None or es is None:
                raise ValueError(
                    f"RandCineFramed mode='ed_es' needs the ED and ES frame indices "
                    f"({self.ed_key!r}={ed!r}, {self.es_key!r}={es!r})."
                )
            phases = (
                _check_index(ed, f"ED frame ({self.ed_key!r})", int(num_frames), shape),
                _check_index(es, f"ES frame ({self.es_key!r})", int(num_frames), shape),
            )
            t = phases[int(self.R.randint(2))]
        self._slice, self._frame = z, t

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        """Draw (unless ``randomize=False``, which reuses the last draw) and select the frame.

        Raises:
            ValueError: the volumes are not 4D or have different Z/T, or as :meth:`randomize`.
            KeyError: a key is missing and ``allow_missing_keys`` is False.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shapes = []
        for key in keys:
            shape = tuple(int(s) for s in getattr(d[key], "shape", ()))
            if len(shape) != 4:
                raise ValueError(
                    f"RandCineFramed expects a 4D volume (X, Y, Z, T) under key {key!r}, got shape {shape}."
                )
            shapes.append(shape)
        if any(s[2:] != shapes[0][2:] for s in shapes):
            raise ValueError(f"RandCineFramed volumes under {keys} differ in (Z, T): {shapes}.")
        if randomize or self._slice is None:
            self.randomize(shapes[0][2], shapes[0][3], d.get(self.ed_key), d.get(self.es_key))
        d[self.slice_key] = self._slice
        d[self.frame_key] = self._frame
        return self.select(d)


def _check_percentiles(lower: float, upper: float) -> tuple[float, float]:
    if not 0.0 <= float(lower) < float(upper) <= 100.0:
        raise ValueError(f"intensity percentiles must satisfy 0 <= lower < upper <= 100, got {lower!r}, {upper!r}.")
    return float(lower), float(upper)


class VolumePercentiles(Transform):
    """The ``lower`` and ``upper`` intensity percentiles of a whole volume (every slice and frame).

    Percentiles as ``numpy.percentile`` (linear interpolation), the definition MONAI's
    ``ScaleIntensityRangePercentiles`` uses for one image.

    Args:
        lower: lower percentile in [0, 100).
        upper: upper percentile in (lower, 100].

    Raises:
        ValueError: percentiles out of order or out of [0, 100].
    """

    def __init__(self, lower: float = 1.0, upper: float = 99.0) -> None:
        self.lower, self.upper = _check_percentiles(lower, upper)

    def __call__(self, volume: np.ndarray | torch.Tensor) -> tuple[float, float]:
        """Return ``(low, high)`` as Python floats."""
        values = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
        if values.size == 0:
            raise ValueError("VolumePercentiles got an empty volume.")
        low, high = np.percentile(values, [self.lower, self.upper])
        return float(low), float(high)


class VolumePercentilesd(MapTransform):
    """Dictionary wrapper of :class:`VolumePercentiles`: writes ``(low, high)`` under ``range_key``.

    Put it after :class:`LoadCineVolumed` in the cached volume transform, so the percentiles of each
    patient's 4D volume are computed once, and scale the frames with :class:`RescaleIntensityd`.

    Args:
        keys: the volume key (the first key present is used).
        lower, upper: percentiles, see :class:`VolumePercentiles`.
        range_key: where to write ``(low, high)``.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lower: float = 1.0,
        upper: float = 99.0,
        range_key: Hashable = "intensity_range",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.percentiles = VolumePercentiles(lower, upper)
        self.range_key = range_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.range_key] = self.percentiles(d[key])
            break
        return d


class RescaleIntensity(Transform):
    """Clip an image to ``[low, high]`` and map it linearly to ``[b_min, b_max]``.

    ``b_min + (clip(x, low, high) - low) / (high - low) * (b_max - b_min)``; a constant volume
    (``high == low``) maps to ``b_min``. Returns float32.

    Args:
        b_min, b_max: output range.
    """

    def __init__(self, b_min: float = 0.0, b_max: float = 1.0) -> None:
        self.b_min, self.b_max = float(b_min), float(b_max)

    def __call__(self, image: torch.Tensor | np.ndarray, low: float, high: float) -> torch.Tensor:
        image = torch.as_tensor(image, dtype=torch.float32)
        low, high = float(low), float(high)
        if not high >= low:
            raise ValueError(f"RescaleIntensity needs high >= low, got low={low}, high={high}.")
        if high == low:
            return torch.full_like(image, self.b_min)
        scale = (self.b_max - self.b_min) / (high - low)
        return (image.clamp(low, high) - low) * scale + self.b_min


class RescaleIntensityd(MapTransform):
    """Dictionary wrapper of :class:`RescaleIntensity` using the range stored under ``range_key``.

    Args:
        keys: keys of the images to rescale.
        range_key: key of ``(low, high)``, e.g. written by :class:`VolumePercentilesd`.
        b_min, b_max: output range.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: ``range_key`` is not in the data.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        range_key: Hashable = "intensity_range",
        b_min: float = 0.0,
        b_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.range_key = range_key
        self.rescale = RescaleIntensity(b_min, b_max)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.range_key not in d:
            raise ValueError(
                f"RescaleIntensityd range_key={self.range_key!r} is not in the data (keys: {sorted(map(str, d))}); "
                "add VolumePercentilesd to the volume transform."
            )
        low, high = d[self.range_key]
        for key in self.key_iterator(d):
            d[key] = self.rescale(d[key], low, high)
        return d
