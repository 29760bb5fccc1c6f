"""The one text-table renderer, used by the evaluation summary (MetricsReport) and the run report."""

import pytest

from mnms_groupdistil.tables import text_table


def test_columns_are_padded_to_the_widest_cell():
    assert text_table(["group", "acc"], [["A", "0.900"], ["longer", "-"]]).splitlines() == [
        "group  | acc",
        "-------+------",
        "A      | 0.900",
        "longer | -",
    ]


def test_rows_must_match_the_header():
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        text_table(["a", "b"], [["1", "2"], ["3"]])
