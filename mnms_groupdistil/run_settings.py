"""The record of a training run's settings: what defines its network and its input, written to ``run_config.json``.

A trained network only works on input prepared as during its training (same frame size, intensity scaling,
channels, classes). ``train.json`` calls :func:`write_run_settings` when a run starts; ``inference.json`` and
:mod:`mnms_groupdistil.tools.export` read the record back with :func:`read_run_settings` and refuse settings that
disagree with it (:func:`check_run_settings`).

The record holds ``settings`` (the resolved values given by the config), ``command`` (the command line of the
process that trained), ``versions`` (of the packages that define the network and the preprocessing) and
``written`` (UTC time).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import SettingError

__all__ = ["RUN_CONFIG_NAME", "check_run_settings", "package_versions", "read_run_settings", "write_run_settings"]

logger = logging.getLogger(__name__)

#: File name of the record in a run's ``output_dir``.
RUN_CONFIG_NAME = "run_config.json"

_PACKAGES = ("mnms_groupdistil", "monai", "torch", "torchvision", "pytorch-ignite", "numpy", "nibabel", "SimpleITK")


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``packages`` (None when not installed), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _plain(value: Any) -> Any:
    """``value`` as JSON types: tuples become lists, paths and other objects their ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return value.item()
    return str(value)


def write_run_settings(output_dir: str | Path, settings: Mapping[str, Any]) -> Path:
    """Write ``<output_dir>/run_config.json`` with ``settings``, the command line and the package versions.

    A resumed run writes the record again; settings that changed since the previous record are logged as a
    warning (the network then saw two kinds of input).

    Args:
        output_dir: the run's output folder (created if missing).
        settings: the resolved settings that define the network and its input (``network_name``,
            ``in_channels``, ``class_names``, ``image_size``, ``intensity_percentiles``, ...).

    Returns:
        The path written.

    Raises:
        TypeError: ``settings`` is not a mapping.
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"write_run_settings settings must be a mapping, got {type(settings).__name__}.")
    path = Path(output_dir) / RUN_CONFIG_NAME
    record = {
        "settings": _plain(settings),
        "command": [str(a) for a in sys.argv],
        "versions": package_versions(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if path.is_file():
        try:
            previous = json.loads(path.read_text()).get("settings", {})
        except (OSError, ValueError, AttributeError):
            previous = {}
        changed = sorted(k for k in record["settings"] if k in previous and previous[k] != record["settings"][k])
        if changed:
            logger.warning(
                "%s: settings changed since the run's previous record: %s",
                path,
                ", ".join(f"{k} {previous[k]!r} -> {record['settings'][k]!r}" for k in changed),
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    logger.info("wrote %s", path)
    return path


def read_run_settings(run_dir: str | Path | None) -> dict[str, Any]:
    """The ``settings`` recorded in ``<run_dir>/run_config.json``.

    Args:
        run_dir: the training run's output folder; None or ``""`` for no run (returns ``{}``).

    Returns:
        The recorded settings, or ``{}`` (with a warning) when ``run_dir`` holds no record.

    Raises:
        SettingError: the record exists but is not valid JSON or has no ``settings`` mapping (a ``ValueError``).
    """
    if run_dir is None or str(run_dir) == "":
        return {}
    path = Path(run_dir) / RUN_CONFIG_NAME
    if not path.is_file():
        logger.warning(
            "%s not found: the settings of the run that trained the model are unknown, so the configured "
            "settings are used unchecked. Pass --run_dir <the training output_dir> to read them from the run.",
            path,
        )
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SettingError(f"run record {path} is unreadable ({type(e).__name__}: {e}); train again or fix it.") from e
    settings = record.get("settings") if isinstance(record, Mapping) else None
    if not isinstance(settings, Mapping):
        raise SettingError(f"run record {path} has no 'settings' mapping; it was not written by write_run_settings.")
    return dict(settings)


def check_run_settings(recorded: Mapping[str, Any], used: Mapping[str, Any], run_dir: str | Path | None = None) -> None:
    """Raise when a setting used now differs from the one the run recorded.

    Only the keys present in both mappings are compared (lists and tuples compare by their items).

    Args:
        recorded: the run's settings (:func:`read_run_settings`).
        used: the settings about to be used, e.g. by inference.
        run_dir: quoted in the error message.

    Raises:
        SettingError: one or more settings differ; the message lists each with both values (a ``ValueError``).
    """
    differ = [k for k in used if k in recorded and _plain(recorded[k]) != _plain(used[k])]
    if differ:
        lines = "\n".join(f"  {k}: the run trained with {recorded[k]!r}, now {used[k]!r}" for k in differ)
        raise SettingError(
            f"settings disagree with the run that trained the model ({Path(run_dir or '.') / RUN_CONFIG_NAME}):\n"
            f"{lines}\nThe network only works on input prepared as in its training: drop these overrides "
            "(inference reads them from the run), or pass --run_dir of the run that trained --ckpt_path."
        )
