"""``python -m mnms_groupdistil.benchmark``: logs that the command is now ``python -m mnms_groupdistil.tools.benchmark``
and runs it."""

from mnms_groupdistil.moved import run_moved

run_moved("mnms_groupdistil.benchmark")
