"""``python -m mnms_groupdistil.tools.export``: :func:`mnms_groupdistil.tools.export.cli.main`."""

from .cli import main

main()
