"""The exported bundle's ``configs/metadata.json``: the source bundle's, with the run's version, figures and
network format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from mnms_groupdistil.run_settings import package_versions

from .specs import ExportSpec

__all__ = ["exported_metadata", "output_format"]


def exported_metadata(
    source: Mapping[str, Any],
    spec: ExportSpec,
    settings: Mapping[str, Any],
    figures: Mapping[str, Any],
    version: str,
    origin: str,
) -> dict[str, Any]:
    """``source`` (a bundle's ``metadata.json``) updated for the exported student.

    Args:
        source: the source bundle's metadata.
        spec: the dataset's spec.
        settings: the run's recorded settings.
        figures: the run's figures on test data (:func:`~.readme.test_figures`).
        version: the bundle's semantic version.
        origin: ``"<run folder> (<checkpoint>)"``, for the changelog.
    """
    metadata = dict(source)
    versions = package_versions(("monai", "torch", "numpy", *spec.packages))
    metadata.update(
        {
            "version": version,
            "changelog": {
                version: f"exported from run {origin} on "
                f"{datetime.now(timezone.utc).date().isoformat()}: {settings.get('mode')} {settings['network_name']}, "
                + (f"split {settings['split']}, " if "split" in settings else "")
                + f"seed {settings.get('seed')}, {settings.get('max_epochs')} epochs"
            },
            "monai_version": versions["monai"],
            "pytorch_version": versions["torch"],
            "numpy_version": versions["numpy"],
            "required_packages_version": {k: versions[k] for k in spec.packages},
            "eval_metrics": figures["metrics"],
            "intended_use": spec.use,
        }
    )
    in_channels, image_size = settings["in_channels"], int(settings["image_size"])
    data_format = metadata["network_data_format"]
    data_format["inputs"]["image"].update(
        {
            "num_channels": in_channels,
            "spatial_shape": [image_size, image_size],
            "channel_def": spec.input_channel_def(in_channels),
        }
    )
    if spec.value_range is not None:
        data_format["inputs"]["image"]["value_range"] = list(spec.value_range)
    data_format["outputs"]["pred"] = output_format(settings["class_names"])
    return metadata


def output_format(class_names: Sequence[str]) -> dict[str, Any]:
    """``network_data_format.outputs.pred`` of an exported bundle: class probabilities, one channel per class.

    The network computes logits; the exported ``inference.json`` turns them into probabilities in its
    ``postprocessing`` (a softmax), which is what the bundle's output is, and MONAI's tools read it as the
    bundle specification's ``probabilities`` type with ``classes`` format.
    """
    names = [str(c) for c in class_names]
    return {
        "type": "probabilities",
        "format": "classes",
        "num_channels": len(names),
        "spatial_shape": [len(names)],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": False,
        "channel_def": {str(i): c for i, c in enumerate(names)},
    }
