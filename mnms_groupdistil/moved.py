"""The command lines of earlier versions under their old names: each says where its command went, then runs it.

``python -m mnms_groupdistil.reproduce ...`` (and ``benchmark``, ``export``, ``report``,
``data.synthetic``) still work: the old name is a package whose ``__main__`` calls :func:`run_moved`, which logs
a warning naming the new command and runs the new module with the same arguments.
"""

from __future__ import annotations

import logging
import runpy

__all__ = ["MOVED", "run_moved"]

logger = logging.getLogger(__name__)

#: Old module name -> the module its command moved to.
MOVED: dict[str, str] = {
    "mnms_groupdistil.benchmark": "mnms_groupdistil.tools.benchmark",
    "mnms_groupdistil.export": "mnms_groupdistil.tools.export",
    "mnms_groupdistil.reproduce": "mnms_groupdistil.tools.reproduce",
    "mnms_groupdistil.report": "mnms_groupdistil.tools.report",
    "mnms_groupdistil.data.synthetic": "mnms_groupdistil.datasets.generate",
}


def run_moved(old: str) -> None:
    """Log that ``python -m old`` is now ``python -m MOVED[old]`` and run the new module as ``__main__``.

    Args:
        old: the old module name, a key of :data:`MOVED`.
    """
    new = MOVED[old]
    logger.warning("python -m %s has moved: run python -m %s (the old name will be removed).", old, new)
    runpy.run_module(new, run_name="__main__", alter_sys=True)
