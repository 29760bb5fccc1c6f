"""``python -m mnms_groupdistil.report``: logs that the command is now ``python -m mnms_groupdistil.tools.report``
and runs it."""

from mnms_groupdistil.moved import run_moved

run_moved("mnms_groupdistil.report")
