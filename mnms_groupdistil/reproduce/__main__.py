"""``python -m mnms_groupdistil.reproduce``: logs that the command is now ``python -m mnms_groupdistil.tools.reproduce``
and runs it."""

from mnms_groupdistil.moved import run_moved

run_moved("mnms_groupdistil.reproduce")
