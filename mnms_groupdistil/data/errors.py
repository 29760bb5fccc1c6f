"""The error every dataset reader raises: all problems of a dataset, listed at once.

A reader checks everything up front and reports every problem it finds in one error, one line per
problem, each naming the file, the subject or row, what is wrong and what to do, so that a user fixes
a dataset in one round instead of one problem per run.
"""

from __future__ import annotations

from ..errors import InputError

__all__ = ["DataError"]


class DataError(InputError):
    """Problems found in a dataset, its metadata or a requested split (an :class:`InputError`).

    Args:
        problems: One human-readable line per problem (or a single line).
        header: Optional first line, e.g. how many problems were found where.

    Attributes:
        problems: One human-readable line per problem; each names the subject or row (where there
            is one), the file and what is wrong.
    """
