"""Evaluation records: metrics without a key metric, ``metrics.json`` and the per-group summary table."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from mnms_groupdistil.handlers.checkpoints import BEST_MODEL, FINAL_MODEL
from mnms_groupdistil.handlers.events import attach_once
from mnms_groupdistil.tables import text_table

__all__ = ["AttachMetrics", "MetricsReport"]


class AttachMetrics:
    """Attach Ignite metrics to an evaluator without making one of them its key metric.

    MONAI's evaluators register metrics only together with a ``key_val_metric``, and then keep and
    log the best epoch by it. An evaluator of held-out *test* data must rank nothing: put this
    handler first in its ``val_handlers`` (so the metrics are computed before the other handlers
    read them) and give the evaluator no ``key_val_metric``.

    Args:
        metrics: metric name -> Ignite metric, e.g. ``{"test_worst_group_acc": GroupAccuracy(...)}``.

    Raises:
        TypeError: ``metrics`` is not a mapping of names to Ignite metrics.

    Example (bundle config)::

        "handlers": [{"_target_": "mnms_groupdistil.handlers.AttachMetrics", "metrics": "@test#metrics"}, ...]
    """

    def __init__(self, metrics: Mapping[str, Metric]) -> None:
        if not isinstance(metrics, Mapping) or not all(isinstance(m, Metric) for m in metrics.values()):
            raise TypeError(f"metrics must map names to Ignite metrics, got {metrics!r}.")
        self.metrics = dict(metrics)

    def attach(self, engine: Engine) -> None:
        """Attach every metric under its name (Ignite's ``Metric.attach`` is idempotent)."""
        for name, metric in self.metrics.items():
            metric.attach(engine, name)


class MetricsReport:
    """Record every evaluation of a training run, write ``metrics.json`` and log a summary table.

    Attach to each evaluator of the run, e.g. one on the test patients (metrics ``test_*``) and
    one on validation patients (``val_*``). Under MONAI's ``ValidationHandler`` an evaluator's
    ``engine.state.epoch`` is the trainer's epoch: the metrics of each evaluation are merged into
    that epoch's entry of the ``history``, and after each evaluation ``filepath`` is rewritten with
    ``extra`` and

    - ``selection``: how the reported model was chosen, ``{"rule", "epoch", "checkpoint"}``. With
      ``select_by=None`` the rule is ``"last_epoch"``: the last evaluated epoch and
      ``final_checkpoint``. With ``select_by`` a metric name (higher is better), the rule is
      ``"best_<select_by>"``: the first epoch with the highest finite value of that metric and
      ``best_checkpoint`` (the same choice as a ``BestModelSaver`` keyed on that metric, which
      replaces its model only with a strictly better one). Epochs that lack the metric are no
      candidates. Left out when ``selection`` is False (an evaluation of a given checkpoint).
    - ``metrics``: every metric of the reported epoch (null where a metric is not a number, e.g.
      the accuracy of a group without patients); ``per_group``:
      ``{group: {prefix: metrics["<prefix>_<group>"]}}`` for ``group_metric_prefixes``.
    - ``history``: ``[{"epoch", "metrics"}, ...]``, every evaluated epoch.

    The table logged after each evaluation has one row per group and one column per prefix with
    values at that epoch. The history is this object's state: put it in the training checkpoint
    and a resumed run keeps it. Under ``torch.distributed`` only rank 0 writes and logs.

    Args:
        filepath: where to write the JSON (parent folders are created).
        group_names: one name per group id.
        group_metric_prefixes: metric names whose ``<prefix>_<group>`` entries fill the table
            columns and ``per_group``, e.g. ``["test_acc", "test_patient_acc"]``.
        summary_metrics: scalar metrics shown under the table (e.g. worst-group accuracy).
        extra: additional JSON fields (the run's mode, split, seeds...).
        select_by: the metric that selects the reported epoch, or None for the last epoch.
        final_checkpoint: file name of the last epoch's model.
        best_checkpoint: file name of the model kept by ``select_by``.
        selection: whether to report ``selection``.
        name: logger name.

    Raises:
        ValueError: ``select_by`` is given but ``selection`` is False.
    """

    def __init__(
        self,
        filepath: str | Path,
        group_names: Sequence[str],
        group_metric_prefixes: Sequence[str] = (),
        summary_metrics: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        select_by: str | None = None,
        final_checkpoint: str = FINAL_MODEL,
        best_checkpoint: str = BEST_MODEL,
        selection: bool = True,
        name: str | None = None,
    ) -> None:
        if select_by is not None and not selection:
            raise ValueError(f"select_by={select_by!r} selects a model, but selection=False reports no selection.")
        self.filepath = Path(filepath)
        self.group_names = [str(g) for g in group_names]
        self.group_metric_prefixes = list(group_metric_prefixes)
        self.summary_metrics = list(summary_metrics)
        self.extra = dict(extra or {})
        self.select_by = select_by
        self.final_checkpoint = final_checkpoint
        self.best_checkpoint = best_checkpoint
        self.selection = selection
        self.logger = logging.getLogger(name or __name__)
        self.history: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        attach_once(engine, ((Events.EPOCH_COMPLETED, self.epoch_completed),))

    def state_dict(self) -> dict[str, Any]:
        """The evaluations so far (plain numbers: loads with ``weights_only``)."""
        return {"history": [{"epoch": e["epoch"], "metrics": dict(e["metrics"])} for e in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [
            {"epoch": int(e["epoch"]), "metrics": dict(e["metrics"])} for e in state_dict.get("history", [])
        ]

    def selected(self) -> dict[str, Any] | None:
        """The history entry of the reported epoch, or None when no epoch qualifies yet."""
        if self.select_by is None:
            return max(self.history, key=lambda e: e["epoch"], default=None)
        best = None
        for entry in sorted(self.history, key=lambda e: e["epoch"]):
            score = _finite_or_none(entry["metrics"].get(self.select_by))
            if score is not None and (best is None or score > best[0]):
                best = (score, entry)
        return None if best is None else best[1]

    def report(self) -> dict[str, Any]:
        """The JSON content: ``extra``, ``selection``, ``metrics``, ``per_group``, ``history``."""
        entry = self.selected()
        metrics = dict(entry["metrics"]) if entry else {}
        report = dict(self.extra)
        if self.selection:
            report["selection"] = {
                "rule": "last_epoch" if self.select_by is None else f"best_{self.select_by}",
                "epoch": entry["epoch"] if entry else None,
                "checkpoint": self.final_checkpoint if self.select_by is None else self.best_checkpoint,
            }
        report["metrics"] = metrics
        report["per_group"] = {
            group: {prefix: metrics.get(f"{prefix}_{group}") for prefix in self.group_metric_prefixes}
            for group in self.group_names
        }
        report["history"] = sorted(self.history, key=lambda e: e["epoch"])
        return report

    def epoch_completed(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        # not-a-number (a group without patients) is written as null: metrics.json stays strict JSON
        metrics = {k: _finite_or_none(v) for k, v in engine.state.metrics.items() if _is_number(v)}
        entry = next((e for e in self.history if e["epoch"] == epoch), None)
        if entry is None:
            entry = {"epoch": epoch, "metrics": {}}
            self.history.append(entry)
        entry["metrics"].update(metrics)
        if idist.get_rank() != 0:
            return
        report = self.report()
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        self.filepath.write_text(json.dumps(report, indent=2))
        lines = [f"Epoch {epoch}:", self.table(entry["metrics"])]
        if "selection" in report:
            chosen = report["selection"]
            lines.append(f"reported model ({chosen['rule']}): epoch {chosen['epoch']}, {chosen['checkpoint']}")
        self.logger.info("\n".join(lines))

    def table(self, metrics: dict[str, float]) -> str:
        """A plain-text table: one row per group, one column per metric prefix present, then the summaries."""
        prefixes = [p for p in self.group_metric_prefixes if any(f"{p}_{g}" in metrics for g in self.group_names)]
        rows = [[g, *(_fmt(metrics.get(f"{p}_{g}")) for p in prefixes)] for g in self.group_names]
        lines = [text_table(["group", *prefixes], rows)]
        lines += [f"{name}: {_fmt(metrics.get(name))}" for name in self.summary_metrics if name in metrics]
        return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and _is_number(value) and math.isfinite(float(value)) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
