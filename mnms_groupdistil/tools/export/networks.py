"""The trained student as a MONAI network: its bundle definition, its weights renamed, and the check that both
compute the same logits."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mnms_groupdistil.network_checkpoints import load_weights
from mnms_groupdistil.networks import build_network

__all__ = ["converted_network", "instantiate_network", "monai_network_def", "to_monai_state_dict"]

_DENSE_LAYER_KEY = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)(\d)\.(.+)$")
_RESNET_LAYERS = {"resnet18": ("ResNetBlock", [2, 2, 2, 2]), "resnet34": ("ResNetBlock", [3, 4, 6, 3])}
_RESNET_LAYERS["resnet50"] = ("ResNetBottleneck", [3, 4, 6, 3])
#: The largest difference of logits between the trained and the exported network on a random input.
LOGIT_TOLERANCE = 1e-4


def monai_network_def(name: str, num_classes: int, in_channels: int) -> dict[str, Any]:
    """Bundle config of the MONAI network computing exactly what ``build_network(name, ...)`` computes.

    torchvision's DenseNet-121 and ResNets are MONAI's ``DenseNet121`` and ``ResNet`` (2D, stride-2 stem,
    bias-free downsampling); :func:`to_monai_state_dict` renames the weights. The export checks that both give
    the same logits.

    Raises:
        ValueError: ``name`` has no MONAI counterpart here.
    """
    key = str(name).strip().lower()
    if key == "densenet121":
        return {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": in_channels, "out_channels": num_classes}
    if key in _RESNET_LAYERS:
        block, layers = _RESNET_LAYERS[key]
        return {
            "_target_": "ResNet",
            "block": f"$monai.networks.nets.resnet.{block}",
            "layers": layers,
            "block_inplanes": [64, 128, 256, 512],
            "spatial_dims": 2,
            "n_input_channels": in_channels,
            "num_classes": num_classes,
            "conv1_t_stride": 2,
            "bias_downsample": False,
        }
    raise ValueError(f"network_name={name!r} cannot be exported; choose one of {['densenet121', *_RESNET_LAYERS]}.")


def to_monai_state_dict(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision state dict of ``name`` to the keys of :func:`monai_network_def`'s network."""
    if str(name).strip().lower() != "densenet121":
        return dict(state_dict)  # MONAI's ResNet uses torchvision's names
    out = {}
    for key, value in state_dict.items():
        m = _DENSE_LAYER_KEY.match(key)
        key = f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else key
        out[re.sub(r"^classifier\.", "class_layers.out.", key)] = value
    return out


def instantiate_network(definition: Mapping[str, Any]) -> torch.nn.Module:
    """The network of a bundle config's ``network_def`` (MONAI's networks only, as an exported bundle has them)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"imports": ["$import monai"], "network_def": copy.deepcopy(dict(definition))})
    return parser.get_parsed_content("network_def")


def converted_network(
    settings: Mapping[str, Any], checkpoint: Path
) -> tuple[dict[str, Any], torch.nn.Module, torch.Tensor]:
    """The run's student as a MONAI network: ``(network_def, network, example input)``.

    The student is built as the run recorded it (``network_name``, ``class_names``, ``in_channels``), its weights
    loaded from ``checkpoint`` (:func:`~mnms_groupdistil.network_checkpoints.load_weights`: not frozen), renamed
    into :func:`monai_network_def`'s network, and both networks are run on a random ``image_size`` input.

    Raises:
        ValueError: the checkpoint does not fit the network, or the two networks' logits differ by more than
            :data:`LOGIT_TOLERANCE`.
    """
    name, num_classes, in_channels = settings["network_name"], len(settings["class_names"]), settings["in_channels"]
    image_size = int(settings["image_size"])
    student = build_network(name, num_classes, in_channels)
    trained = load_weights(student, checkpoint, device="cpu", setting="--checkpoint").eval()
    network_def = monai_network_def(name, num_classes, in_channels)
    network = instantiate_network(network_def).eval()
    network.load_state_dict(to_monai_state_dict(name, trained.state_dict()), strict=True)
    example = torch.rand(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((network(example) - trained(example)).abs().max())
    if difference > LOGIT_TOLERANCE:
        raise ValueError(f"the exported {name} differs from the trained one by {difference:.3g} on a test input.")
    return network_def, network, example
