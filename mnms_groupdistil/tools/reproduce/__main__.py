"""``python -m mnms_groupdistil.tools.reproduce``: :func:`mnms_groupdistil.tools.reproduce.cli.main`."""

from .cli import main

raise SystemExit(main())
