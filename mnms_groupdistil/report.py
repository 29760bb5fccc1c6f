"""Compare finished runs: a per-group accuracy table, and PNG plots of accuracies and group weights.

    python -m mnms_groupdistil.report runs/teacher runs/kd runs/groupdistil --png runs/summary.png

Each run directory holds the ``metrics.json`` written by the bundles' ``MetricsReport`` handler and
the TensorBoard event files of its trainer (for the group weights over training). The figures are
those of each run's reported model (``metrics.json``'s ``selection``: the last epoch unless the run
had a validation set) on its test patients.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tables import text_table

__all__ = [
    "accuracy_table",
    "load_run",
    "main",
    "plot_accuracies",
    "plot_group_weights",
    "read_group_weights",
    "selection_lines",
]

logger = logging.getLogger(__name__)


def load_run(run_dir: str | Path, filename: str = "metrics.json") -> dict[str, Any]:
    """The metrics report of one run, with ``"name"`` (the folder name) and ``"dir"`` added.

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


def _value(report: dict[str, Any], key: str) -> float | None:
    value = report.get("metrics", {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def accuracy_table(
    reports: Sequence[dict[str, Any]],
    prefix: str = "test_acc",
    summaries: Sequence[str] = ("worst_group", "mean_group"),
    group_label: str = "vendor",
) -> str:
    """A text table: one row per group plus summary rows, one column per run.

    Args:
        reports: run reports from :func:`load_run`.
        prefix: per-group metric prefix, ``test_acc`` (frames) or ``test_patient_acc`` (patients);
            ``val_acc`` / ``val_patient_acc`` for validation figures.
        summaries: summary rows, looked up as ``<set>_<summary>_acc`` (frames) or
            ``<set>_patient_<summary>_acc`` (patients), ``<set>`` being ``test`` or ``val`` as in ``prefix``.
        group_label: word before each group name in the first column (``"vendor"`` for M&Ms; empty
            for groups with descriptive names such as Waterbirds' ``landbird_water``).
    """
    groups: list[str] = []
    for report in reports:
        groups += [g for g in report.get("per_group", {}) if g not in groups]
    level = "patient_" if "patient" in prefix else ""
    part = prefix.split("_", 1)[0]
    rows = [[f"{group_label} {g}".strip(), *(_fmt(_value(r, f"{prefix}_{g}")) for r in reports)] for g in groups]
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


def plot_accuracies(reports: Sequence[dict[str, Any]], path: str | Path, prefix: str = "test_acc") -> Path:
    """Grouped bar chart of per-group accuracy per run, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({g for r in reports for g in r.get("per_group", {})})
    width = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * len(groups) * max(1, len(reports)) * 0.5, 3.6))
    for i, report in enumerate(reports):
        values = [100 * (_value(report, f"{prefix}_{g}") or 0.0) for g in groups]
        ax.bar([k + i * width for k in range(len(groups))], values, width, label=report["name"])
    ax.set_xticks([k + width * (len(reports) - 1) / 2 for k in range(len(groups))])
    ax.set_xticklabels([f"vendor {g}" for g in groups])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("per-group accuracy" + (" (patients)" if "patient" in prefix else " (frames)"))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_group_weights(run_dirs: Sequence[str | Path], path: str | Path) -> Path | None:
    """Group weights over training iterations, one panel per run with changing weights; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(Path(d).name, read_group_weights(d)) for d in run_dirs]
    runs = [(name, s) for name, s in runs if s]
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, (name, series) in zip(axes[0], runs):
        for group, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=f"vendor {group}")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("group weight")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (output_dir of each training)")
    parser.add_argument("--png", help="write per-group accuracy bars here, and group weights next to it")
    parser.add_argument(
        "--dataset", choices=("mnms", "waterbirds"), default="mnms", help="which bundle's runs (table layout)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reports = [load_run(d) for d in args.runs]
    logger.info("Reported models:\n%s\n", selection_lines(reports))
    if args.dataset == "waterbirds":
        summaries = ("worst_group", "adjusted_average", "mean_group", "average")
        for part, name in (("test", "Test"), ("val", "Validation")):
            table = accuracy_table(reports, prefix=f"{part}_acc", summaries=summaries, group_label="")
            logger.info("%s accuracy (%%) per group:\n%s\n", name, table)
        return 0
    logger.info("Test accuracy (%%) per vendor, frames:\n%s\n", accuracy_table(reports))
    logger.info(
        "Test accuracy (%%) per vendor, patients (majority over frames):\n%s\n",
        accuracy_table(reports, prefix="test_patient_acc"),
    )
    if any(r.get("metrics", {}).get("val_worst_group_acc") is not None for r in reports):
        logger.info("Validation accuracy (%%) per vendor, frames:\n%s\n", accuracy_table(reports, prefix="val_acc"))
    if args.png:
        png = Path(args.png)
        png.parent.mkdir(parents=True, exist_ok=True)
        logger.info("wrote %s", plot_accuracies(reports, png))
        weights = plot_group_weights(args.runs, png.with_name(png.stem + "_group_weights.png"))
        if weights is not None:
            logger.info("wrote %s", weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
