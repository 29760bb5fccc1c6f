"""Refusing overrides that name no setting: a typo (``--max_epoch 1``) must not run with the default.

MONAI's bundle runner adds an override whose id the configs do not define to the config without a word,
so ``python -m monai.bundle run training ... --max_epoch 1`` trains the default number of epochs. Every
bundle config calls :func:`check_command_line` first in ``initialize``: it reads the overrides of the
``python -m monai.bundle run`` command line (and of its ``--args_file``) and raises
:class:`~mnms_groupdistil.errors.UnknownSettingError`, listing each unknown id with the closest known
ones, before anything runs. The tools that pass overrides to the bundles (``reproduce --override``,
``benchmark --override``) read their ``ID=VALUE`` items with :func:`parse_overrides` and call
:func:`check_overrides` with the same result.

The known ids are those the merged config files define: top-level ids and ``a#b`` paths into their
dictionaries and lists. A deliberate new id goes into an extra config file merged after the bundle's
(``--config_file "['configs/train.json','my_settings.json']"``); it is then a known id, and can be
overridden on the command line too.

Example (the first steps of a bundle config)::

    "initialize": ["$mnms_groupdistil.errors.report_errors()", "$mnms_groupdistil.overrides.check_command_line()", ...]
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UnknownSettingError

__all__ = [
    "check_command_line",
    "check_overrides",
    "command_line_overrides",
    "config_ids",
    "parse_overrides",
    "tracking_setting_ids",
    "unknown_setting_problems",
]

ID_SEP = "#"
_ESCAPE = (
    "A setting is an id the config files define (top-level or an a#b path). To add a new one on purpose, "
    "define it in an extra config file merged after the bundle's: "
    "--config_file \"['configs/train.json','my_settings.json']\"."
)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["max_epochs=1", "device=cpu"]`` -> ``{"max_epochs": 1, "device": "cpu"}``: a tool's ``--override`` items.

    Values are Python literals (``1``, ``0.5``, ``False``, ``[1, 99]``, ``None``); anything else is a string.

    Raises:
        ValueError: for an item without ``=`` or with an empty id.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override takes ID=VALUE items (e.g. max_epochs=1), got '{item}'.")
        overrides[key.strip()] = _literal(text)
    return overrides


def config_ids(config: Any, prefix: str = "") -> set[str]:
    """Every id of a parsed config: its top-level keys and the ``a#b`` paths into dictionaries and lists."""
    ids: set[str] = set()
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        path = f"{prefix}{key}"
        ids.add(path)
        ids |= config_ids(value, path + ID_SEP)
    return ids


def _merged_config(config_files: str | Sequence[str]) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_files(config_files)


def unknown_setting_problems(known: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """One problem line per id of ``overrides`` that is not in ``known``, with the closest known ids: the
    closest names under the same parent (``max_epoch`` suggests ``max_epochs``, not ``train#trainer#max_epochs``),
    else the closest ids as deep.

    Args:
        known: the ids a config defines (:func:`config_ids`).
        overrides: the ids being overridden; a leading ``+`` (MONAI's merge prefix) is ignored.
    """
    known = sorted(set(known))
    problems = []
    for key in overrides:
        name = str(key).lstrip("+")
        if name in known:
            continue
        parent, _, leaf = name.rpartition(ID_SEP)
        siblings = {k.rpartition(ID_SEP)[2]: k for k in known if k.rpartition(ID_SEP)[0] == parent}
        close = [siblings[c] for c in _closest(leaf, sorted(siblings))]
        if not close:
            same_depth = [k for k in known if k.count(ID_SEP) == name.count(ID_SEP)]
            close = _closest(name, same_depth)
        hint = f"; did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else "."
        problems.append(f"`{name}` is not a setting of this bundle{hint}")
    return problems


def _closest(word: str, candidates: Sequence[str], margin: float = 0.1) -> list[str]:
    """Up to three ``candidates`` close to ``word`` (difflib ratio >= 0.6), those within ``margin`` of the closest."""
    close = difflib.get_close_matches(word, candidates, 3, 0.6)
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), c) for c in close]
    best = max((score for score, _ in scored), default=0.0)
    return [c for score, c in scored if score >= best - margin]


def check_overrides(config_files: str | Sequence[str], overrides: Iterable[str], where: str = "the overrides") -> None:
    """Raise when an id of ``overrides`` is not defined by the merged ``config_files``.

    Args:
        config_files: the config files of the run, merged in order (as ``--config_file``).
        overrides: the overridden ids (the keys of an override mapping).
        where: how the message names the overrides, e.g. ``"--override"``.

    Raises:
        UnknownSettingError: one line per unknown id (with did-you-mean suggestions), then how to add an id.
    """
    problems = unknown_setting_problems(config_ids(_merged_config(config_files)), overrides)
    if problems:
        files = ", ".join(str(f) for f in ([config_files] if isinstance(config_files, str) else config_files))
        raise UnknownSettingError(
            problems + [_ESCAPE], header=f"{len(problems)} unknown setting(s) in {where} (config files: {files}):"
        )


def _runner_arguments() -> set[str]:
    """Names MONAI's ``run`` consumes itself (its arguments and those of the workflow it creates): no overrides."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import create_workflow, run

    names: set[str] = set()
    for function in (run, create_workflow, ConfigWorkflow.__init__):
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
                names.add(parameter.name)
    return names - {"self"}


def _is_flag(token: str) -> bool:
    """A flag as Python Fire (MONAI's command line) reads one: ``--name``, ``-n``; not ``-1``."""
    return token.startswith("--") or re.match(r"^-[a-zA-Z]", token) is not None


def _parse_flags(tokens: Sequence[str]) -> dict[str, str | None]:
    """``--name value``, ``--name=value`` and ``--name`` (a boolean) as Fire reads them; stops at ``--``."""
    flags: dict[str, str | None] = {}
    index = 0
    while index < len(tokens) and tokens[index] != "--":
        token = tokens[index]
        index += 1
        if not _is_flag(token):
            continue
        name, equals, value = token.lstrip("-").partition("=")
        if not equals and index < len(tokens) and not _is_flag(tokens[index]):
            value = tokens[index]
            index += 1
        flags[name.replace("-", "_")] = value if equals or value else None
    return flags


def _literal(text: str | None) -> Any:
    try:
        return ast.literal_eval(text) if text is not None else None
    except (ValueError, SyntaxError):
        return text


def tracking_setting_ids(tracking: Any) -> set[str]:
    """The top-level ids that MONAI's ``--tracking`` settings add to a config (``tracking_uri``, ``experiment_name``,
    ``run_name``, ...): settings of a tracked run, which its command line may set. None for no tracking.

    Args:
        tracking: ``--tracking`` as given: a name of MONAI's settings (``mlflow``), a settings file, or a dict.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if not tracking:
        return set()
    if isinstance(tracking, Mapping):
        settings = tracking
    elif tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    else:
        settings = ConfigParser.load_config_files(tracking)
    return set(settings.get("configs", {})) - set(settings.get("handlers_id", {}))


def command_line_overrides(argv: Sequence[str]) -> tuple[Any, list[str]] | None:
    """``(config_file, override ids)`` of a ``python -m monai.bundle run`` command line, or None for another one.

    The overrides are the flags that MONAI's ``run`` does not consume itself, and the entries of its
    ``--args_file`` that are not its arguments either; with ``--tracking``, the ids its settings add
    (:func:`tracking_setting_ids`) are settings too.
    """
    from monai.bundle import ConfigParser

    if len(argv) < 2 or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py") or argv[1] != "run":
        return None
    flags = _parse_flags(argv[2:])
    args_file = ConfigParser.load_config_file(flags["args_file"]) if flags.get("args_file") else {}
    config_file = _literal(flags["config_file"]) if flags.get("config_file") else args_file.get("config_file")
    own = _runner_arguments() | tracking_setting_ids(flags.get("tracking") or args_file.get("tracking"))
    return config_file, [k for k in {**args_file, **flags} if k not in own]


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse the overrides of this process's ``python -m monai.bundle run`` command that name no setting.

    Does nothing in a process started otherwise (a bundle run from Python through ``ConfigWorkflow``:
    there the caller checks its overrides with :func:`check_overrides`).

    Args:
        argv: the command line; default ``sys.argv``.

    Raises:
        UnknownSettingError: see :func:`check_overrides`.
    """
    found = command_line_overrides(sys.argv if argv is None else argv)
    if found is not None and found[0]:
        check_overrides(*found, where="the command line's overrides")
