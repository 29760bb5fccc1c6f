"""Teacher / student network factory for GroupDistil.

Builds the torchvision classifiers used as teacher (ResNet) and student (DenseNet / ResNet) in
group-robust knowledge distillation, adapts them to the number of input channels (1 for cine MRI,
3 for Waterbirds) and classes, and optionally initialises them from a *local* ImageNet state-dict
file. Loading trained checkpoints (a frozen teacher, a student) is :mod:`mnms_groupdistil.network_checkpoints`.

Nothing is ever downloaded: torchvision models are always created with ``weights=None`` and
ImageNet weights come only from a local file: ``pretrained_path``, or the file torchvision itself
keeps in its cache (see :func:`find_imagenet_weights`).

Example (MONAI bundle config)::

    "network_def": {
        "_target_": "mnms_groupdistil.networks.build_network",
        "name": "densenet121",
        "num_classes": 2,
        "in_channels": 1
    }
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Union

import torch
from torch import nn
from torchvision import models as tv_models

from mnms_groupdistil.errors import SettingError
from mnms_groupdistil.network_checkpoints import (
    _MAX_KEYS_SHOWN,
    CheckpointError,
    CheckpointNotFoundError,
    _describe,
    _first,
    _is_state_dict,
    _strip_prefixes,
    _torch_load,
    file_subject,
    unwrap_state_dict,
)

__all__ = ["SUPPORTED_NETWORKS", "build_network", "find_imagenet_weights"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# name -> (torchvision constructor, dotted path of the stem conv, dotted path of the head Linear)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str, str]] = {
    "resnet18": (tv_models.resnet18, "conv1", "fc"),
    "resnet34": (tv_models.resnet34, "conv1", "fc"),
    "resnet50": (tv_models.resnet50, "conv1", "fc"),
    "densenet121": (tv_models.densenet121, "features.conv0", "classifier"),
}

#: Names accepted by :func:`build_network`.
SUPPORTED_NETWORKS: tuple[str, ...] = tuple(_REGISTRY)

# Keys of the pre-0.3 torchvision DenseNet checkpoints (the official ImageNet
# ``densenet121-a639ec97.pth`` still uses them): ``...denselayer1.norm.1.weight``
# -> ``...denselayer1.norm1.weight``. Same pattern torchvision uses internally.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)

# BatchNorm counters: absent from old checkpoints (e.g. the official torchvision
# DenseNet file); torch itself tolerates their absence, so do we.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


def _get_submodule(module: nn.Module, dotted: str) -> nn.Module:
    return module.get_submodule(dotted)


def _set_submodule(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def _check_positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(f"{arg} must be a positive int, got {value!r}.")
    return int(value)


def _adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an RGB stem kernel ``(out, 3, kh, kw)`` to ``in_channels`` inputs.

    Every new input channel gets ``sum_rgb(weight) / in_channels``, i.e. the mean
    RGB kernel repeated ``in_channels`` times and scaled by ``3 / in_channels``.
    For ``in_channels == 1`` this is exactly the sum of the RGB kernels, so the
    1-channel model on a grey image equals the RGB model on that image repeated
    to RGB; for any count, an image whose channels are all equal gives the same
    response as the RGB model on that grey image.
    """
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / in_channels).repeat(1, in_channels, 1, 1).contiguous()


def build_network(
    name: str,
    num_classes: int = 2,
    in_channels: int = 1,
    pretrained_path: PathLike | None = None,
) -> nn.Module:
    """Build a torchvision classifier adapted to the input channels / classes.

    The model is created with ``weights=None`` (never downloads). The stem conv
    (ResNet ``conv1``, DenseNet ``features.conv0``) is replaced by a conv with
    ``in_channels`` inputs when ``in_channels != 3`` (same kernel, stride,
    padding); the head (``fc`` / ``classifier``) is a new ``Linear`` with
    ``num_classes`` outputs.

    With ``pretrained_path`` every non-head tensor is loaded from a local
    torchvision ImageNet state dict (``torch.save(model.state_dict(), path)``,
    optionally wrapped as ``{"state_dict": ...}``, ``{"model": ...}`` or
    ``{"network": ...}``; a DDP ``module.`` prefix and the legacy DenseNet key
    names of the official torchvision file are handled). Head weights are
    skipped. When ``in_channels != 3`` the RGB stem kernel ``W`` is adapted to
    ``sum_rgb(W) / in_channels`` for every input channel: for 1 channel this is
    the sum of the RGB kernels (a grey image gives the same response as the RGB
    model on the grey image repeated to RGB); for other counts it is the mean
    RGB kernel repeated and scaled by ``3 / in_channels`` (keeps the activation
    scale for channel-constant inputs).

    Args:
        name: one of ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
            ``"densenet121"`` (case-insensitive).
        num_classes: number of output logits.
        in_channels: number of input image channels (any positive int).
        pretrained_path: optional local file with torchvision ImageNet weights.

    Returns:
        The ``torch.nn.Module`` (train mode), mapping ``(B, in_channels, H, W)``
        to logits ``(B, num_classes)``.

    Raises:
        SettingError: unknown ``name`` (the message lists the choices), invalid
            ``num_classes`` / ``in_channels``.
        CheckpointError: ``pretrained_path`` unreadable or not a state dict
            matching ``name`` (the message names the file and the first missing /
            unexpected / mis-shaped keys).
        CheckpointNotFoundError: ``pretrained_path`` does not exist (also a
            ``FileNotFoundError``). All three are ``ValueError`` subclasses whose
            message ends a bundle run (:mod:`mnms_groupdistil.errors`).

    Example:
        >>> import torch
        >>> net = build_network("densenet121", num_classes=2, in_channels=1)
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 2])
    """
    if not isinstance(name, str) or name.strip().lower() not in _REGISTRY:
        raise SettingError(f"Unknown network name={name!r}; choose one of {list(SUPPORTED_NETWORKS)}.")
    key = name.strip().lower()
    num_classes = _check_positive_int(num_classes, "num_classes")
    in_channels = _check_positive_int(in_channels, "in_channels")

    constructor, stem_name, head_name = _REGISTRY[key]
    network = constructor(weights=None, num_classes=num_classes)

    if in_channels != 3:
        old: nn.Conv2d = _get_submodule(network, stem_name)  # type: ignore[assignment]
        new = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            dilation=old.dilation,  # type: ignore[arg-type]
            groups=old.groups,
            bias=old.bias is not None,
        )
        # Same initialisation torchvision applies to the original stem.
        if key.startswith("resnet"):
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.kaiming_normal_(new.weight)
        _set_submodule(network, stem_name, new)
        logger.debug("%s: replaced stem %s for in_channels=%d.", key, stem_name, in_channels)

    if pretrained_path is not None:
        _load_pretrained(network, key, stem_name, head_name, in_channels, pretrained_path)

    logger.info(
        "Built %s (in_channels=%d, num_classes=%d, pretrained=%s).",
        key,
        in_channels,
        num_classes,
        os.fspath(pretrained_path) if pretrained_path is not None else None,
    )
    return network


def find_imagenet_weights(
    name: str, pretrained_path: PathLike | None = None, hub_dir: PathLike | None = None
) -> str | None:
    """The local ImageNet weights file to initialise ``name`` from, or None; says which in the log.

    ``pretrained_path`` wins when given (it must exist). Otherwise torchvision's own cache is
    searched: the files torchvision downloads for ``name`` (``IMAGENET1K_V1`` first, as in the
    papers, then newer versions) under ``<hub_dir>/checkpoints/``, where ``hub_dir`` defaults to
    ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``). Nothing is
    downloaded. When no file is found the log says plainly that the network starts from random
    initialisation.

    Args:
        name: a torchvision classification model name, e.g. ``"resnet18"``.
        pretrained_path: an explicit local weights file, or None to search the cache.
        hub_dir: torch hub folder to search instead of ``torch.hub.get_dir()``.

    Returns:
        The path to pass as ``pretrained_path`` of :func:`build_network`, or None.

    Raises:
        CheckpointNotFoundError: ``pretrained_path`` is given but does not exist.
        SettingError: ``name`` is not one of :data:`SUPPORTED_NETWORKS`.
    """
    if not isinstance(name, str) or name.strip().lower() not in _REGISTRY:
        raise SettingError(f"Unknown network name={name!r}; choose one of {list(SUPPORTED_NETWORKS)}.")
    key = name.strip().lower()
    if pretrained_path:
        path_str = os.fspath(pretrained_path)
        if not os.path.isfile(path_str):
            raise CheckpointNotFoundError(
                f"{file_subject('pretrained_path', path_str)} does not exist: pass a local torchvision ImageNet "
                "state-dict file or null (then torchvision's cache is searched, else the network starts random)."
            )
        logger.info("%s: ImageNet initialisation from pretrained_path %s.", key, path_str)
        return path_str
    folder = os.path.join(os.fspath(hub_dir) if hub_dir is not None else torch.hub.get_dir(), "checkpoints")
    names = [os.path.basename(w.url) for w in tv_models.get_model_weights(key)]
    for file_name in names:
        candidate = os.path.join(folder, file_name)
        if os.path.isfile(candidate):
            logger.info("%s: ImageNet initialisation from torchvision's cached file %s.", key, candidate)
            return candidate
    logger.warning(
        "%s: no ImageNet weights (pretrained_path not set and none of %s in %s): the network starts from "
        "random initialisation.",
        key,
        ", ".join(names),
        folder,
    )
    return None


def _load_pretrained(
    network: nn.Module,
    name: str,
    stem_name: str,
    head_name: str,
    in_channels: int,
    pretrained_path: PathLike,
) -> None:
    path_str = os.fspath(pretrained_path)
    subject = file_subject("pretrained_path", path_str)
    obj, _ = unwrap_state_dict(_torch_load(path_str, "pretrained_path"))
    if not _is_state_dict(obj):
        raise CheckpointError(
            f"{subject} is not a state dict (got {_describe(obj)}); expected the "
            f"output of torch.save(torchvision.models.{name}().state_dict(), path)."
        )
    src = _strip_prefixes(obj)
    if name.startswith("densenet"):
        src = {(m.group(1) + m.group(2) if (m := _OLD_DENSENET_KEY.match(k)) else k): v for k, v in src.items()}

    head_prefix = head_name + "."
    target = network.state_dict()
    expected = {k for k in target if not k.startswith(head_prefix)}
    provided = {k for k in src if not k.startswith(head_prefix)}
    missing = {k for k in expected - provided if not k.endswith(_OPTIONAL_SUFFIX)}
    unexpected = provided - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{subject} does not match a torchvision {name} state dict: "
            f"{len(missing)} missing keys {_first(missing)}, {len(unexpected)} unexpected keys "
            f"{_first(unexpected)}."
        )

    stem_key = stem_name + ".weight"
    to_load: dict[str, torch.Tensor] = {}
    bad_shapes = []
    for k in sorted(expected & provided):
        value = src[k]
        want = target[k].shape
        if k == stem_key and value.shape != want:
            if value.dim() == 4 and value.shape[1] == 3 and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
                value = _adapt_stem_weight(value, in_channels)
                logger.info(
                    "Adapted pretrained stem %s from 3 to %d input channels (sum of RGB kernels / %d).",
                    stem_key,
                    in_channels,
                    in_channels,
                )
        if value.shape != want:
            bad_shapes.append(f"{k!r}: file {tuple(value.shape)} vs model {tuple(want)}")
            continue
        to_load[k] = value.to(dtype=target[k].dtype)
    if bad_shapes:
        raise CheckpointError(
            f"{subject} has tensors whose shapes do not match {name}: "
            + "; ".join(bad_shapes[:_MAX_KEYS_SHOWN])
            + (f" ... (+{len(bad_shapes) - _MAX_KEYS_SHOWN} more)" if len(bad_shapes) > _MAX_KEYS_SHOWN else "")
        )
    result = network.load_state_dict(to_load, strict=False)
    not_loaded = [k for k in result.missing_keys if not k.startswith(head_prefix) and not k.endswith(_OPTIONAL_SUFFIX)]
    if not_loaded or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise CheckpointError(f"{subject}: could not load keys {_first(not_loaded)}.")
    skipped = sorted(k for k in src if k.startswith(head_prefix))
    logger.info("Loaded %d pretrained tensors from %s (skipped head %s).", len(to_load), path_str, skipped)
