"""The error every dataset reader raises: all problems of a dataset, listed at once.

A reader checks everything up front and reports every problem it finds in one error, one line per
problem, each naming the file, the subject or row, what is wrong and what to do, so that a user fixes
a dataset in one round instead of one problem per run.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError

__all__ = ["DataError", "duplicate_problem", "missing_column_problems"]


class DataError(InputError):
    """Problems found in a dataset, its metadata or a requested split (an :class:`InputError`).

    Args:
        problems: One human-readable line per problem (or a single line).
        header: Optional first line, e.g. how many problems were found where.

    Attributes:
        problems: One human-readable line per problem; each names the subject or row (where there
            is one), the file and what is wrong.
    """

    @classmethod
    def counted(cls, problems: Sequence[str], where: str) -> DataError:
        """The error listing ``problems`` under the header ``"<n> problem(s) in <where>:"``."""
        return cls(problems, header=f"{len(problems)} problem(s) in {where}:")


def missing_column_problems(path: object, missing: Sequence[str], header: Sequence[str]) -> list[str]:
    """One problem line per required column of the CSV ``path`` that its ``header`` lacks."""
    return [f"{path}: required column '{name}' is missing (header: {','.join(header)})" for name in missing]


def duplicate_problem(first_line: dict[str, int], key: str, line: int, where: str, what: str) -> str | None:
    """The problem line of a row whose ``key`` an earlier row already had, or None (then ``line`` is recorded).

    Args:
        first_line: key -> the line it first appeared on; updated here.
        key: the row's value that must be unique.
        line: the row's line number in the file.
        where: the row's description that starts the problem line (file, line, identifier).
        what: how the problem line names the key, e.g. ``"subject code A0S9V9"``.
    """
    if key in first_line:
        return f"{where}: duplicate {what} (first on line {first_line[key]})"
    first_line[key] = line
    return None
