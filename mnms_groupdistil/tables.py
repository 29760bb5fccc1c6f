"""The plain-text table of the run summaries (logged at the end of an evaluation, printed by the report)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by `` | ``, a ``-+-`` rule under the header.

    Example::

        text_table(["group", "acc"], [["A", "0.900"], ["C", "0.750"]])
        # group | acc
        # ------+------
        # A     | 0.900
        # C     | 0.750

    Raises:
        ValueError: when a row has another number of cells than the header.
    """
    header = [str(c) for c in header]
    cells = [[str(c) for c in row] for row in rows]
    for index, row in enumerate(cells):
        if len(row) != len(header):
            raise ValueError(f"text_table row {index} has {len(row)} cells, the header {len(header)}: {row}.")
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *cells]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
