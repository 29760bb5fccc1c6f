"""Inference on natural images without labels: find the images, write one prediction per image to CSV.

This module and the modules it imports (relatively) are copied verbatim into an exported bundle's ``scripts/``
folder (:mod:`mnms_groupdistil.tools.export`), where they run without this package: they import only torch,
monai, ignite and Pillow.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from ignite.engine import Engine
from monai.handlers import from_engine

from ..predictions import PredictionWriter
from .reader import image_problem

__all__ = ["IMAGE_SUFFIXES", "ImagePredictionWriter", "find_images"]

PathLike = Union[str, "os.PathLike[str]"]


#: File name endings :func:`find_images` accepts.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(path: PathLike) -> list[dict[str, Any]]:
    """Records of the images to classify: one image file, or every image below a folder.

    Args:
        path: An image file or a folder (searched recursively for :data:`IMAGE_SUFFIXES`).

    Returns:
        ``[{"image": absolute path, "subject": path relative to the folder}, ...]`` sorted by path.

    Raises:
        ValueError: If ``path`` does not exist, holds no image, or holds images that cannot be
            decoded (all listed).
    """
    root = Path(path).expanduser()
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files, base = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), root
    else:
        raise ValueError(f"dataset_dir {root} does not exist: pass an image file or a folder of images.")
    if not files:
        raise ValueError(f"no image ({', '.join(IMAGE_SUFFIXES)}) found below {root}.")
    problems = [f"{f}: {p}" for f in files if (p := image_problem(f)) is not None]
    if problems:
        raise ValueError("cannot classify:\n" + "\n".join(problems))
    return [{"image": str(f.resolve()), "subject": f.relative_to(base).as_posix()} for f in files]


class ImagePredictionWriter(PredictionWriter):
    """Collect an evaluator's predictions and write one row per image to CSV.

    Columns: ``image`` (the record's identifier, e.g. its path relative to the input folder),
    ``prediction`` (the class with the largest probability) and ``probability_<class>`` for every
    class.

    Args:
        filepath: the CSV to write (parent folders are created).
        class_names: one name per output channel.
        output_transform: engine output -> per-image logits (probabilities with ``softmax=False``).
        batch_transform: engine batch -> per-image identifiers.
        softmax: see :class:`PredictionWriter`.
        name: logger name.
    """

    def __init__(
        self,
        filepath: str | Path,
        class_names: Sequence[str],
        output_transform: Callable = from_engine(["pred"]),
        batch_transform: Callable = from_engine(["subject"]),
        softmax: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(filepath, class_names, output_transform, batch_transform, softmax=softmax, name=name)

    def reset(self) -> None:
        self._rows: list[tuple[str, torch.Tensor]] = []

    def collect(self, engine: Engine, probabilities: torch.Tensor) -> None:
        names = self.batch_transform(engine.state.batch)
        if isinstance(names, tuple):
            names = names[0]
        self._rows += [(str(n), p) for n, p in zip(names, probabilities)]

    def epoch_completed(self, engine: Engine) -> None:
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        with open(self.filepath, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "prediction", *(f"probability_{c}" for c in self.class_names)])
            for image, p in self._rows:
                writer.writerow([image, self.class_names[int(p.argmax())], *(f"{v:.4f}" for v in p.tolist())])
        counts = {c: sum(int(p.argmax()) == i for _, p in self._rows) for i, c in enumerate(self.class_names)}
        self.logger.info("wrote %s: %d images, %s", self.filepath, len(self._rows), counts)
