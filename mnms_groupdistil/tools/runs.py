"""Reading a finished run's folder: its metrics report and the group weights it logged.

A run's ``output_dir`` holds the ``metrics.json`` written by the bundles' ``MetricsReport`` handler and the
TensorBoard event files of its trainer (``group_weight/<group>`` scalars). The tools that compare runs
(:mod:`mnms_groupdistil.tools.report`, the tables and plots of :mod:`mnms_groupdistil.tools.paper`) read them here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["METRICS_NAME", "load_metrics", "load_run", "read_group_weights"]

#: File name of a run's metrics report in its ``output_dir``.
METRICS_NAME = "metrics.json"


def load_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's metrics report, or None when it has none (yet) or it cannot be read (a run still going)."""
    path = Path(run_dir) / METRICS_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | Path, filename: str = METRICS_NAME) -> dict[str, Any]:
    """The metrics report of a finished run, with ``"name"`` (the folder name) and ``"dir"`` added.

    Raises:
        ValueError: when the report is missing or is not valid JSON.
    """
    path = Path(run_dir) / filename
    if not path.is_file():
        raise ValueError(f"{path} does not exist: did the run in {run_dir} finish its first evaluation?")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}).") from None
    return {**report, "name": Path(run_dir).name, "dir": str(run_dir)}


def read_group_weights(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{group: [(iteration, weight), ...]}`` from a run's TensorBoard ``group_weight/<group>`` scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith("group_weight/"):
                points = series.setdefault(tag.split("/", 1)[1], {})
                points.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return {group: sorted(points.items()) for group, points in sorted(series.items())}
