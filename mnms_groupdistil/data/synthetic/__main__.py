"""``python -m mnms_groupdistil.data.synthetic``: logs that the command is now
``python -m mnms_groupdistil.datasets.generate`` and runs it."""

from mnms_groupdistil.moved import run_moved

run_moved("mnms_groupdistil.data.synthetic")
