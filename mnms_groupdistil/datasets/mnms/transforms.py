"""MONAI-style transforms of 4D cine MRI volumes (x, y, z, t) and the 2D frames taken from them.

The volumes are loaded once per patient (:mod:`.volumes`, typically cached by :class:`monai.data.CacheDataset`);
the frame transforms then pick one short-axis slice ``z`` at one cardiac phase ``t`` and return it as a
channel-first float32 tensor ``(1, X, Y)`` that never shares memory with the cached volume.

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
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform

__all__ = [
    "SelectCineFrame",
    "SelectCineFramed",
    "RandCineFramed",
    "CINE_FRAME_MODES",
    "VolumePercentiles",
    "VolumePercentilesd",
    "RescaleIntensity",
    "RescaleIntensityd",
]

#: Modes accepted by :class:`RandCineFramed`.
CINE_FRAME_MODES = ("random", "ed_es")


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
