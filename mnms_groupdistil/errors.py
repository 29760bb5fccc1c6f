"""Errors whose message is complete for a user (bad data, bad settings, a diverged run), and how a
bundle run shows them.

MONAI's bundle runner evaluates configs inside ``try: ... except Exception as e: raise RuntimeError(
"Failed to evaluate ...") from e``, so an error raised by this package while a config runs reaches
the terminal as a long traceback that ends with MONAI's wrapper, not with what is wrong.
:func:`report_errors` (the first ``initialize`` step of every bundle config) makes a
:class:`ReportedError` anywhere in the exception chain end the program with its message as the
last lines on the screen, and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from types import TracebackType

__all__ = [
    "InputError",
    "ReportedError",
    "SettingError",
    "UnknownSettingError",
    "check_choice",
    "find_reported_error",
    "report_errors",
]


class ReportedError(Exception):
    """An error whose message tells the user all there is to know; shown without a traceback."""


class InputError(ReportedError, ValueError):
    """Bad input that the user fixes: one human-readable line per problem.

    Args:
        problems: one line per problem; each names the file, the subject or setting, what is wrong
            and, where it helps, what to do.
        header: an optional first line (e.g. how many problems were found where).

    Attributes:
        problems: the problem lines.
        header: the first line, or None.
    """

    def __init__(self, problems: str | Sequence[str], header: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.header = header
        super().__init__("\n".join(([header] if header else []) + self.problems))


class SettingError(InputError):
    """A setting's value, or a combination of settings, that cannot work (named with what to do)."""


class UnknownSettingError(SettingError):
    """An override names an id that the bundle's configs do not define (a typo would otherwise be ignored)."""


def check_choice(setting: str, value: object, choices: Sequence[str], what: str = "valid") -> str:
    """``value`` itself when it is exactly one of ``choices``; the one check of a setting that picks behaviour.

    Raises:
        InputError: for any other value (a typo, another case, a bool), naming the setting and listing the choices.
    """
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{setting}={value!r} is not {what}; valid: {', '.join(choices)}.")
    return value


def find_reported_error(error: BaseException | None) -> ReportedError | None:
    """The first :class:`ReportedError` in ``error``'s chain (itself, ``__cause__``, ``__context__``), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ReportedError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    found = find_reported_error(error)
    if found is None:
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger(__name__).debug("traceback of the reported error", exc_info=(kind, error, traceback))
    sys.stderr.write(f"\nThe run cannot go on:\n{found}\n")
    sys.stderr.flush()


def report_errors() -> None:
    """Show an uncaught :class:`ReportedError` as its message only, as the program's last output.

    Installs a ``sys.excepthook``: for an uncaught exception whose chain holds a
    :class:`ReportedError`, it writes that error's message to stderr (the traceback only goes to
    this module's logger at DEBUG level); every other exception gets Python's usual traceback.
    Python then exits with status 1. Safe to call more than once; exceptions that are caught are
    not affected.
    """
    sys.excepthook = _excepthook
