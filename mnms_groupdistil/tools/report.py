"""Compare finished runs: a per-group accuracy table, and PNG plots of accuracies and group weights.

    python -m mnms_groupdistil.tools.report runs/teacher runs/kd runs/groupdistil --png runs/summary.png

Each run directory holds the ``metrics.json`` written by the bundles' ``MetricsReport`` handler and
the TensorBoard event files of its trainer (for the group weights over training;
:mod:`mnms_groupdistil.tools.runs` reads both). The figures are those of each run's reported model
(``metrics.json``'s ``selection``: the last epoch unless the run had a validation set) on its test
data. ``--dataset`` names the bundle the runs come from (:data:`mnms_groupdistil.tools.registry.DATASETS`):
what a group is called and which summary figures the tables hold.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tables import text_table
from mnms_groupdistil.tools.plots import group_name, plot_group_weights, pyplot, save_figure
from mnms_groupdistil.tools.registry import DATASETS, MNMS, DatasetSpec
from mnms_groupdistil.tools.runs import load_run

__all__ = ["accuracy_table", "main", "plot_accuracies", "report_tables", "selection_lines"]

logger = logging.getLogger(__name__)


def _value(report: dict[str, Any], key: str) -> float | None:
    value = report.get("metrics", {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def accuracy_table(
    reports: Sequence[dict[str, Any]],
    prefix: str = "test_acc",
    summaries: Sequence[str] = MNMS.summaries,
    group_label: str = MNMS.group_label,
) -> str:
    """A text table: one row per group plus summary rows, one column per run.

    Args:
        reports: run reports from :func:`~mnms_groupdistil.tools.runs.load_run`.
        prefix: per-group metric prefix, ``test_acc`` (frames) or ``test_patient_acc`` (patients);
            ``val_acc`` / ``val_patient_acc`` for validation figures.
        summaries: summary rows, looked up as ``<set>_<summary>_acc`` (frames) or
            ``<set>_patient_<summary>_acc`` (patients), ``<set>`` being ``test`` or ``val`` as in ``prefix``.
        group_label: word before each group name in the first column (default the M&Ms ``"vendor"``;
            empty for groups with descriptive names such as Waterbirds' ``landbird_water``).
    """
    groups: list[str] = []
    for report in reports:
        groups += [g for g in report.get("per_group", {}) if g not in groups]
    level = "patient_" if "patient" in prefix else ""
    part = prefix.split("_", 1)[0]
    rows = [[group_name(group_label, g), *(_fmt(_value(r, f"{prefix}_{g}")) for r in reports)] for g in groups]
    rows += [[s.replace("_", "-"), *(_fmt(_value(r, f"{part}_{level}{s}_acc")) for r in reports)] for s in summaries]
    return text_table(["accuracy", *(r["name"] for r in reports)], rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def selection_lines(reports: Sequence[dict[str, Any]]) -> str:
    """One line per run: which model its figures are of, how it was chosen, its seed, and (M&Ms runs) its split
    and test frames."""
    lines = []
    for report in reports:
        chosen = report.get("selection") or {}
        line = (
            f"{report['name']}: {chosen.get('checkpoint', '?')} (rule {chosen.get('rule', '?')}, "
            f"epoch {chosen.get('epoch', '?')}), seed {report.get('seed', '?')}"
        )
        if "split" in report:
            line += (
                f", split {report['split']} (split_seed {report.get('split_seed', '?')}), "
                f"{report.get('test_subjects', '?')} test patients, test frames: {report.get('test_frames', '?')}"
            )
        lines.append(line)
    return "\n".join(lines)


def plot_accuracies(
    reports: Sequence[dict[str, Any]], path: str | Path, prefix: str = "test_acc", group_label: str = MNMS.group_label
) -> Path:
    """Grouped bar chart of per-group accuracy per run, saved as PNG.

    Args:
        reports: run reports from :func:`~mnms_groupdistil.tools.runs.load_run`.
        path: the PNG to write.
        prefix: per-group metric prefix, as in :func:`accuracy_table`.
        group_label: word before each group name on the axis (empty for descriptive group names).
    """
    plt = pyplot()
    groups = sorted({g for r in reports for g in r.get("per_group", {})})
    width = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * len(groups) * max(1, len(reports)) * 0.5, 3.6))
    for i, report in enumerate(reports):
        values = [100 * (_value(report, f"{prefix}_{g}") or 0.0) for g in groups]
        ax.bar([k + i * width for k in range(len(groups))], values, width, label=report["name"])
    ax.set_xticks([k + width * (len(reports) - 1) / 2 for k in range(len(groups))])
    ax.set_xticklabels([group_name(group_label, g) for g in groups])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("per-group accuracy" + (" (patients)" if "patient" in prefix else " (frames)"))
    return save_figure(fig, plt, path)


def report_tables(spec: DatasetSpec, reports: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(heading, table)`` of the test figures per group (and per patient where the dataset has them), then the
    validation figures when a run has some; the dataset names the groups and the summary rows."""
    group = spec.group_label or "group"
    level = ", frames" if spec.patient_figures else ""
    parts = [("test_acc", f"Test accuracy (%) per {group}{level}")]
    if spec.patient_figures:
        parts.append(("test_patient_acc", f"Test accuracy (%) per {group}, patients (majority over frames)"))
    if any(r.get("metrics", {}).get("val_worst_group_acc") is not None for r in reports):
        parts.append(("val_acc", f"Validation accuracy (%) per {group}{level}"))
    return [
        (heading, accuracy_table(reports, prefix=prefix, summaries=spec.summaries, group_label=spec.group_label))
        for prefix, heading in parts
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (output_dir of each training)")
    parser.add_argument("--png", help="write per-group accuracy bars here, and group weights next to it")
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default=MNMS.name, help="which bundle's runs (table layout)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = DATASETS[args.dataset]
    reports = [load_run(d) for d in args.runs]
    logger.info("Reported models:\n%s\n", selection_lines(reports))
    for heading, table in report_tables(spec, reports):
        logger.info("%s:\n%s\n", heading, table)
    if args.png:
        png = Path(args.png)
        png.parent.mkdir(parents=True, exist_ok=True)
        logger.info("wrote %s", plot_accuracies(reports, png, group_label=spec.group_label))
        panels = {Path(d).name: [d] for d in args.runs}  # one panel per run
        weights = plot_group_weights(
            panels, png.with_name(png.stem + "_group_weights.png"), group_label=spec.group_label
        )
        if weights is not None:
            logger.info("wrote %s", weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
