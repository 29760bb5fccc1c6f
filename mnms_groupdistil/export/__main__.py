"""``python -m mnms_groupdistil.export``: logs that the command is now ``python -m mnms_groupdistil.tools.export``
and runs it."""

from mnms_groupdistil.moved import run_moved

run_moved("mnms_groupdistil.export")
