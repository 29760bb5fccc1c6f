"""Loading trained weights: checkpoint files (read with ``weights_only=True``) into a network.

:func:`load_weights` loads any network (a student to export, a model to evaluate); :func:`load_network`
loads one and freezes it, for a network that is only run: the teacher (its default setting, ``teacher_ckpt``),
or a model under evaluation or inference. Both accept a plain state dict, a checkpoint holding one under one of
the entries :data:`STATE_DICT_ENTRIES` (``network``, ``student``, ``model``, ``state_dict``) or under a given
key, and the prefixes added by ``DistributedDataParallel`` and ``torch.compile``. Their errors name the file's
role (a teacher checkpoint, a network checkpoint), the setting and the file. The networks themselves come from
:mod:`mnms_groupdistil.networks`.

Example (MONAI bundle config)::

    "teacher": "$mnms_groupdistil.network_checkpoints.load_network(@teacher_def, @teacher_ckpt, device=@device)"
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import nn

from .errors import InputError

__all__ = [
    "STATE_DICT_ENTRIES",
    "CheckpointError",
    "CheckpointNotFoundError",
    "file_subject",
    "frozen",
    "load_network",
    "load_weights",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Prefixes added by DistributedDataParallel / DataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_MAX_KEYS_SHOWN = 5

#: Entries of a checkpoint dict that may hold the network's state dict, looked for in this order: MONAI's
#: ``CheckpointSaver`` (``network``), distillation code (``student``), torchvision's reference training
#: scripts (``model``), PyTorch Lightning and others (``state_dict``).
STATE_DICT_ENTRIES = ("network", "student", "model", "state_dict")


class CheckpointError(InputError):
    """A weights / checkpoint file that cannot be used: unreadable, refused (it holds more than tensors, so
    loading it could run code), or not matching the network. The message names the file and the setting."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weights / checkpoint file does not exist (a :class:`CheckpointError` and a :class:`FileNotFoundError`)."""


#: What the file a setting names is, per setting, for the messages (default: a network checkpoint).
_ROLES = {"teacher_ckpt": "teacher checkpoint", "pretrained_path": "ImageNet weights"}

#: What to do when the file a setting names does not exist, per setting (default: pass another file).
_MISSING_HINTS = {
    "teacher_ckpt": "train the teacher first with configs/train_teacher.json or pass --teacher_ckpt "
    "<path to the teacher's model.pt>",
    "pretrained_path": "pass a local torchvision ImageNet state-dict file (weights are never downloaded) or null",
}


def _first(keys: Any) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_MAX_KEYS_SHOWN])
    more = f" ... (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return f"[{shown}{more}]"


def file_subject(setting: str, path: PathLike) -> str:
    """How a message names the file a setting names: ``"teacher checkpoint teacher_ckpt '/runs/t/model.pt'"``."""
    return f"{_ROLES.get(setting, 'network checkpoint')} {setting} {os.fspath(path)!r}"


def _torch_load(path: PathLike, setting: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU with readable errors."""
    path_str = os.fspath(path)
    subject = file_subject(setting, path_str)
    if not os.path.isfile(path_str):
        hint = _MISSING_HINTS.get(setting, f"pass --{setting.lstrip('-')} <path of a trained model file>")
        raise CheckpointNotFoundError(f"{subject} does not exist: {hint}.")
    try:
        return torch.load(path_str, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        blocked = next((line for line in lines if "GLOBAL" in line), None)  # the unpickler met a class or function
        if blocked is not None:
            raise CheckpointError(
                f"{subject} is refused: it holds Python objects other than tensors, and loading them "
                f"could run code ({blocked}). Load it only if you trust its source, and save the weights alone: "
                "torch.save(model.state_dict(), path)."
            ) from err
        reason = next((line for line in reversed(lines) if not line.startswith("Check the documentation")), "")
        raise CheckpointError(
            f"{subject} could not be read as a torch weights file with weights_only=True "
            f"({type(err).__name__}: {reason}). Save it with torch.save(model.state_dict(), path)."
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) prefix shared by all keys."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                logger.debug("Stripped %r prefix from state dict keys.", prefix)
                changed = True
    return sd


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {_first([str(k) for k in obj])}"
    return f"an object of type {type(obj).__name__}"


def frozen(network: nn.Module) -> nn.Module:
    """Put a network in eval mode and disable gradients of all its parameters.

    Args:
        network: the module to freeze (modified in place).

    Returns:
        The same module, in eval mode, with ``requires_grad == False`` on every
        parameter. Note that a later ``network.train()`` call switches BatchNorm
        back to training mode; gradients stay disabled.

    Example:
        >>> import torch
        >>> teacher = frozen(torch.nn.Linear(2, 2))
        >>> teacher.training, teacher.weight.requires_grad
        (False, False)
    """
    network.eval()
    network.requires_grad_(False)
    return network


def unwrap_state_dict(checkpoint: Any, key: str | None = None) -> tuple[Any, str]:
    """The state dict a checkpoint's content holds, and where it was found (for messages).

    With ``key`` the entry ``key``; otherwise the content itself when it is a state dict, else the first of
    :data:`STATE_DICT_ENTRIES` that holds one, else the content itself (not a state dict: the caller says so).

    Raises:
        KeyError: ``key`` is given and the content is not a dict holding it.
    """
    if key is not None:
        if not isinstance(checkpoint, Mapping) or key not in checkpoint:
            raise KeyError(key)
        return checkpoint[key], f"entry {key!r}"
    if isinstance(checkpoint, Mapping) and not _is_state_dict(checkpoint):
        for entry in STATE_DICT_ENTRIES:
            if _is_state_dict(checkpoint.get(entry)):
                return checkpoint[entry], f"entry {entry!r}"
    return checkpoint, "plain state dict"


def load_weights(
    network: nn.Module,
    checkpoint_path: PathLike,
    key: str | None = None,
    device: str | torch.device | None = None,
    setting: str = "ckpt_path",
) -> nn.Module:
    """Load trained weights into ``network`` and return it (its mode and gradients untouched).

    Accepted file contents (read with ``torch.load(weights_only=True)`` on CPU):

    * a plain state dict (``torch.save(net.state_dict(), "model.pt")``);
    * a dict wrapping it under one of :data:`STATE_DICT_ENTRIES`, e.g. ``{"network": state_dict}`` as
      written by MONAI's ``CheckpointSaver``, ``{"model": state_dict, "optimizer": ...}`` as torchvision's
      reference scripts write, or ``{"state_dict": state_dict}``;
    * any dict holding it under ``key``.

    A DDP ``module.`` (or ``torch.compile`` ``_orig_mod.``) prefix is stripped.

    Args:
        network: the module to load into (typically from :func:`build_network` with the same name / classes /
            channels as at training time).
        checkpoint_path: the ``.pt`` file.
        key: entry of a checkpoint dict holding the state dict, or ``None`` to auto-detect as described above.
        device: where to move the network (``None`` keeps it where it is).
        setting: the setting or option that names the file, for the messages (``ckpt_path``, ``teacher_ckpt``,
            ``--checkpoint``); ``teacher_ckpt`` files are named a teacher checkpoint, others a network checkpoint.

    Returns:
        ``network`` with the loaded weights, on ``device``.

    Raises:
        CheckpointNotFoundError: the file does not exist (for ``teacher_ckpt`` the message says to train the
            teacher first or pass ``--teacher_ckpt``).
        CheckpointError: unreadable file, a file holding more than tensors (refused unrun), ``key`` not in the
            checkpoint, no state dict found, or keys / shapes not matching ``network`` (the message names the
            file's role, the setting, the file and the first mismatched keys). Both are
            :class:`~mnms_groupdistil.errors.InputError` (``ValueError``): a bundle run ends on their message.

    Example:
        >>> student = load_weights(
        ...     build_network("densenet121", num_classes=2, in_channels=1), "runs/x/model_final.pt"
        ... )  # doctest: +SKIP
    """
    path_str = os.fspath(checkpoint_path)
    subject = file_subject(setting, path_str)
    obj = _torch_load(path_str, setting)
    try:
        state, where = unwrap_state_dict(obj, key)
    except KeyError:
        raise CheckpointError(
            f"{subject} has no entry key={key!r} (file holds {_describe(obj)}); "
            f"pass key=None for auto-detection or one of its keys."
        ) from None
    if not _is_state_dict(state):
        searched = "" if key is not None else f", nor is one under {', '.join(repr(e) for e in STATE_DICT_ENTRIES)}"
        raise CheckpointError(
            f"{subject}: {where} is not a state dict (got {_describe(state)}){searched}; "
            f"pass key=<entry holding the network weights>."
        )
    state = _strip_prefixes(state)

    target = network.state_dict()
    missing = set(target) - set(state)
    unexpected = set(state) - set(target)
    if missing or unexpected:
        raise CheckpointError(
            f"{subject} ({where}) does not match the network "
            f"({type(network).__name__}): {len(missing)} missing keys {_first(missing)}, "
            f"{len(unexpected)} unexpected keys {_first(unexpected)}. Build the network with the same "
            f"name / num_classes / in_channels as at training time."
        )
    bad = [
        f"{k!r}: file {tuple(v.shape)} vs network {tuple(target[k].shape)}"
        for k, v in sorted(state.items())
        if v.shape != target[k].shape
    ]
    if bad:
        raise CheckpointError(
            f"{subject} ({where}) has tensors whose shapes do not match the network: "
            + "; ".join(bad[:_MAX_KEYS_SHOWN])
            + (f" ... (+{len(bad) - _MAX_KEYS_SHOWN} more)" if len(bad) > _MAX_KEYS_SHOWN else "")
            + ". Check num_classes / in_channels."
        )
    network.load_state_dict(state, strict=True)
    if device is not None:
        network = network.to(device)
    logger.info("Loaded %s from %s (%s).", type(network).__name__, path_str, where)
    return network


def load_network(
    network: nn.Module,
    checkpoint_path: PathLike,
    key: str | None = None,
    device: str | torch.device | None = None,
    setting: str = "teacher_ckpt",
) -> nn.Module:
    """:func:`load_weights`, then :func:`frozen`: a network that is only run, never trained.

    The teacher (the default ``setting``, ``teacher_ckpt``: its messages name a teacher checkpoint), or a model
    under evaluation or inference (``setting="ckpt_path"``: a network checkpoint).

    Args:
        network, checkpoint_path, key, device, setting: as :func:`load_weights`.

    Returns:
        ``network`` with the loaded weights, on ``device``, in eval mode, with ``requires_grad`` disabled on
        all parameters.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`load_weights`.

    Example:
        >>> teacher = load_network(
        ...     build_network("resnet50", num_classes=2, in_channels=1),
        ...     "runs/teacher/model.pt",
        ...     device="cuda",
        ... )  # doctest: +SKIP
    """
    network = frozen(load_weights(network, checkpoint_path, key=key, device=device, setting=setting))
    logger.info("%s frozen (%s).", type(network).__name__, file_subject(setting, checkpoint_path))
    return network
