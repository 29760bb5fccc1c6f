"""Loading the Waterbirds images: every image as RGB, the deterministic transforms cached once per image."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

__all__ = ["cached_dataset", "to_rgb"]

PathLike = Union[str, "os.PathLike[str]"]


def to_rgb(image: Any) -> Any:
    """A PIL image converted to 3-channel RGB (grey, palette, RGBA and CMYK JPEGs occur in the wild).

    Used as the ``converter`` of MONAI's ``PILReader`` in the bundle configs.
    """
    return image if image.mode == "RGB" else image.convert("RGB")


def cached_dataset(
    data: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache_dir: PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 0,
) -> Any:
    """MONAI dataset that runs the deterministic head of ``transform`` once per image and keeps it.

    The transforms up to the first random one (decode, resize, crop, normalise) are cached: in
    memory with ``CacheDataset`` (``cache_rate`` of the images), or on disk under ``cache_dir``
    with ``PersistentDataset`` for machines with little memory (the files are reused by later
    runs and reloaded with ``weights_only=True``). The random tail runs every time an item is read.

    Args:
        data: Records with an ``"image"`` path.
        transform: The full (deterministic then random) transform.
        cache_dir: Folder for the on-disk cache; None or empty for the in-memory cache.
        cache_rate: Fraction of the images cached in memory (``CacheDataset``).
        num_workers: Threads filling the in-memory cache (``None``: as many as CPU cores).

    Raises:
        ValueError: If ``cache_rate`` is outside [0, 1].
    """
    from monai.data import CacheDataset, PersistentDataset

    if not 0.0 <= float(cache_rate) <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate!r}.")
    if cache_dir:
        Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
        return PersistentDataset(data=list(data), transform=transform, cache_dir=Path(cache_dir).expanduser())
    workers = None if num_workers is None else max(1, int(num_workers))
    return CacheDataset(
        data=list(data), transform=transform, cache_rate=float(cache_rate), num_workers=workers, copy_cache=False
    )
