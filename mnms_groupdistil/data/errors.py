"""The error every dataset reader raises: all problems of a dataset, listed at once.

A reader checks everything up front and reports every problem it finds in one error, one line per
problem, each naming the file, the subject or row, what is wrong and what to do, so that a user fixes
a dataset in one round instead of one problem per run.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DataError"]


class DataError(ValueError):
    """Problems found in a dataset, its metadata or a requested split.

    Args:
        problems: One human-readable line per problem (or a single line).
        header: Optional first line, e.g. how many problems were found where.

    Attributes:
        problems: One human-readable line per problem; each names the subject or row (where there
            is one), the file and what is wrong.
    """

    def __init__(self, problems: str | Sequence[str], header: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        lines = [header] if header else []
        lines += self.problems
        super().__init__("\n".join(lines))
