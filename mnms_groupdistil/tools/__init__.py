"""The command-line tools (``python -m mnms_groupdistil.tools.<tool>``) and what only they share."""
