"""What differs between the exports of the two bundles: one :class:`ExportSpec` per source bundle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mnms_groupdistil.tools import registry

__all__ = ["MNMS", "SPECS", "WATERBIRDS", "ExportSpec", "spec_of"]


@dataclass(frozen=True)
class ExportSpec:
    """What differs between the exports of two bundles.

    Args:
        bundle: folder name of the source bundle under ``bundles/`` (the dataset's,
            :mod:`mnms_groupdistil.tools.registry`).
        settings: ids of the source ``inference.json`` whose values come from the run's recorded settings.
        input_channel_def: channel meaning written to ``network_data_format`` (one entry per input channel).
        readme: ``(settings, metrics, figures) -> str``: the dataset-specific part of ``docs/README.md``.
        use: what the bundle is for, in one sentence (metadata ``intended_use`` and the README).
        packages: distributions the exported configs need besides monai, torch and numpy (their versions go to
            metadata ``required_packages_version``).
        needs: the README's words for what the bundle needs to run.
        limits: the README's words for what the network has not seen and how it treats odd inputs.
        value_range: the network input's value range written to ``network_data_format``; None keeps the source
            bundle's.
    """

    bundle: str
    settings: tuple[str, ...]
    input_channel_def: Callable[[int], dict[str, str]]
    readme: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], str]
    use: str
    packages: tuple[str, ...]
    needs: str
    limits: str
    value_range: tuple[float, ...] | None


def _mnms_readme(settings: Mapping[str, Any], metrics: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    size = settings["image_size"]
    low, high = settings["intensity_percentiles"]
    return f"""## Input and output

Input: 4D short-axis cine MRI, one volume per patient: a NIfTI file `<CODE>_sa.nii.gz` (x, y, slice,
phase), or a folder holding the DICOM series (one file per slice position and phase; arranged by
slice position and trigger time; SimpleITK needed). A volume's intensities are clipped to its
percentiles {low} and {high} (over all slices and phases) and rescaled to [0, 1]; every slice at
every phase (`--frame_stride N` for every N-th phase) is cropped or zero-padded to {size} x {size}
and classified; a volume's frames are combined by majority vote.

Output in `--output_dir`: `predictions.csv` (subject, prediction, frames, vendor and manufacturer
for DICOM input, votes and mean probability per class) and `frame_predictions.csv`; for each DICOM
series, `<subject>_SR.dcm`: a DICOM Comprehensive SR (an Imaging Measurement Report) in the series'
study, referencing every image of the series, with the predicted class, its mean probability over
the frames, the number of frames voted, the vendor group and this bundle's name and version, for
PACS (highdicom needed; `--dicom_sr False` for the CSVs only).
"""


MNMS = ExportSpec(
    bundle=registry.MNMS.bundle,
    settings=("network_name", "in_channels", "class_names", "image_size", "intensity_percentiles"),
    input_channel_def=lambda n: {str(i): "image" if n == 1 else f"image (copy {i + 1} of {n})" for i in range(n)},
    readme=_mnms_readme,
    use="Research on vendor-robust classification of HCM vs normal from cine MRI; not for clinical use.",
    packages=("nibabel", "pytorch-ignite"),
    needs="monai (with pytorch-ignite), torch and nibabel (SimpleITK and highdicom for DICOM input)",
    limits="has seen no other scanners, sites or diseases; its figures hold for that test data only. Inputs are "
    "classified frame by frame; a volume whose frames do not show the short-axis heart gets a prediction all the "
    "same.",
    value_range=(0, 1),
)


def _waterbirds_readme(settings: Mapping[str, Any], metrics: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    size, resize = settings["image_size"], settings["resize_size"]
    classes = ", ".join(settings["class_names"])
    return f"""## Input and output

Input: an image file, or a folder searched recursively for images (`.jpg`, `.jpeg`, `.png`, `.bmp`,
`.tif`, `.tiff`, `.webp`); every image must decode completely. Each image is converted to RGB,
resized to {resize} x {resize}, centre-cropped to {size} x {size} and normalised with the ImageNet mean
and standard deviation, then classified ({classes}).

Output in `--output_dir`: `predictions.csv`, one row per image: `image` (its path relative to the
input folder), `prediction` and `probability_<class>` for every class.
"""


WATERBIRDS = ExportSpec(
    bundle=registry.WATERBIRDS.bundle,
    settings=("network_name", "in_channels", "class_names", "image_size", "resize_size"),
    input_channel_def=lambda n: {str(i): "RGB"[i] if n == 3 else f"channel {i}" for i in range(n)},
    readme=_waterbirds_readme,
    use="Research on group-robust model compression only (landbird vs waterbird, robust to the background).",
    packages=("nibabel", "pytorch-ignite", "pillow"),
    needs="monai (with pytorch-ignite), torch, Pillow and nibabel",
    limits="has seen no other kinds of birds, backgrounds or cameras; its figures hold for that test data "
    "only. Every image gets a prediction, whether it shows a bird or not.",
    value_range=None,
)

#: Source bundle folder -> its export spec.
SPECS: dict[str, ExportSpec] = {spec.bundle: spec for spec in (MNMS, WATERBIRDS)}


def spec_of(settings: Mapping[str, Any]) -> ExportSpec:
    """The spec of the bundle a run's recorded ``settings`` name (``bundle``; none recorded: M&Ms).

    Raises:
        ValueError: the recorded bundle has no export spec.
    """
    name = settings.get("bundle") or MNMS.bundle
    if name not in SPECS:
        raise ValueError(f"the run's bundle {name!r} cannot be exported; exportable bundles: {sorted(SPECS)}.")
    return SPECS[name]
