"""How a reproduction compares with the paper's experiments.

What the grid of :mod:`mnms_groupdistil.tools.reproduce` runs per dataset, and the paper's figures, are
dataset facts (:mod:`mnms_groupdistil.tools.registry`). Here are pure functions over the grid's results:
one row per run (:func:`result_row`), mean and sample standard deviation over seeds (:func:`mean_std`), Markdown
tables in the shape of the paper's (:func:`paper_table`, :func:`group_table`,
:func:`step_size_table`), the paired GroupDistil - KD difference per seed
(:func:`paired_difference_table`), the stability study over grid cells (:func:`history_figures`,
:func:`study_table`) and PNG plots (:func:`plot_group_accuracy`, :func:`plot_step_sizes`; the group
weights over training: :func:`mnms_groupdistil.tools.plots.plot_group_weights`). Figures in rows are
fractions, as in ``metrics.json``; tables and plots show %.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tools.plots import group_name, pyplot, save_figure
from mnms_groupdistil.tools.registry import ROW_METRICS, WORST, DatasetSpec, Method

__all__ = [
    "format_mean_std",
    "group_table",
    "is_finite",
    "network_label",
    "mean_std",
    "paired_difference_table",
    "paper_table",
    "plot_group_accuracy",
    "plot_step_sizes",
    "history_figures",
    "result_row",
    "step_size_table",
    "study_table",
    "step_sizes_of",
    "write_csv",
]


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, None, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def result_row(
    spec: DatasetSpec,
    report: Mapping[str, Any],
    *,
    split: str,
    run: str,
    method: str,
    seed: int,
    eta_w: float | None,
    run_dir: str | Path = "",
    cell: str = "",
) -> dict[str, Any]:
    """One ``results.csv`` row: a run's identity, the test figures of its ``metrics.json`` and the
    last epochs' figures of its history (:func:`history_figures`).

    Figures are fractions; a figure the report lacks (or holds as null / NaN) is None.

    Args:
        spec: the dataset.
        report: the run's ``metrics.json``.
        split, run, method, seed: the run (``run`` is its folder name, e.g. ``groupdistil_eta0.1``).
        eta_w: the group-weight step size it trained with; None for fixed weights.
        run_dir: its folder.
        cell: the grid cell (its settings, e.g. ``batching=balanced``); empty outside a study.
    """
    metrics = report.get("metrics") or {}

    def value(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if is_finite(v) else None

    row: dict[str, Any] = {"dataset": spec.name, "split": split, "cell": cell, "method": method, "run": run}
    row["network"] = report.get("network")
    row["seed"] = seed
    row["eta_w"] = eta_w
    row.update({m.column: value(m.key) for m in (*ROW_METRICS, *spec.metrics)})
    row.update({f"acc_{group}": value(f"test_acc_{group}") for group in spec.groups})
    row.update(history_figures(report))
    selection = report.get("selection") or {}
    row["selection"] = selection.get("rule")
    row["selected_epoch"] = selection.get("epoch")
    row["run_dir"] = str(run_dir)
    return row


#: The worst-group figures of :func:`history_figures`: ``results.csv`` prefix -> ``metrics.json`` name.
_HISTORY_FIGURES = {"val": "val_worst_group_acc", "test": WORST.key}


def history_figures(report: Mapping[str, Any], last_epochs: int = 3) -> dict[str, float | None]:
    """Worst-group accuracy of a run's last epoch and how much it swung over its last epochs.

    For ``val`` (``val_worst_group_acc``) and ``test`` (``test_worst_group_acc``), from the report's
    ``history`` (every evaluated epoch, whatever model the run reports):

    - ``<prefix>_last_worst_group``: the figure at the last epoch;
    - ``<prefix>_swing``: the mean absolute change of the figure between consecutive epochs among
      the last ``last_epochs`` (two changes for three epochs); None with fewer than two epochs.

    Returns:
        Those four figures (fractions), None where the history lacks them.
    """
    epochs = [e for e in report.get("history") or [] if isinstance(e.get("epoch"), int)]
    history = sorted(epochs, key=lambda e: e["epoch"])
    figures: dict[str, float | None] = {}
    for prefix, key in _HISTORY_FIGURES.items():
        values = [e.get("metrics", {}).get(key) for e in history[-last_epochs:]]
        last = values[-1] if values else None
        figures[f"{prefix}_last_worst_group"] = float(last) if is_finite(last) else None
        changes = [abs(float(b) - float(a)) for a, b in zip(values, values[1:]) if is_finite(a) and is_finite(b)]
        figures[f"{prefix}_swing"] = sum(changes) / len(changes) if changes else None
    return figures


def study_table(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str, threshold: float = 0.55) -> list[str]:
    """The stability study of one split: per grid cell and method, over seeds.

    Columns per ``val`` and ``test``: last-epoch worst-group accuracy (mean ± std, %), the swing
    (mean over seeds of :func:`history_figures`' swing, points) and how many runs ended with some
    group at or below ``threshold``; then the paired ``spec.sweep`` - KD difference of the last
    epoch's worst-group accuracy (mean ± std over the seeds, points) on the distillers' lines.
    """
    split_rows = [r for r in rows if r["split"] == split]
    cells = list(dict.fromkeys(r.get("cell", "") for r in split_rows))
    header = ["cell", "method"]
    for prefix in _HISTORY_FIGURES:
        header += [f"{prefix} worst-group", f"{prefix} swing", f"{prefix} runs <= {100 * threshold:.0f}%"]
    header += [f"{spec.method(spec.sweep).label} - KD (val / test)"]
    body = []
    for cell in cells:
        mine = [r for r in split_rows if r.get("cell", "") == cell]
        for method in spec.methods:
            runs = [r for r in mine if r["run"] == method.key]
            if not runs:
                continue
            cells_ = [cell or "(configs)", method.label if not method.distils else f"{method.label} (student)"]
            if method.key == spec.teacher:
                cells_[1] = f"{method.label} {network_label(spec, method, runs)}"
            for prefix in _HISTORY_FIGURES:
                last = [r.get(f"{prefix}_last_worst_group") for r in runs]
                swing = mean_std(r.get(f"{prefix}_swing") for r in runs)[0]
                low = [v for v in last if is_finite(v)]
                cells_ += [
                    format_mean_std(*mean_std(last)[:2]),
                    "-" if swing is None else f"{100 * swing:.1f}",
                    f"{sum(v <= threshold for v in low)} of {len(low)}" if low else "-",
                ]
            cells_.append(_paired_last(mine, spec) if method.key == spec.sweep else "")
            body.append(cells_)
    return _markdown(header, body)


def _paired_last(rows: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> str:
    """``"+1.2 ± 3.4 / -0.5 ± 2.0"``: ``spec.sweep`` - KD of the last-epoch worst-group accuracy, val / test."""
    parts = []
    for baseline in _fixed_weight_distillers(spec):
        for prefix in _HISTORY_FIGURES:
            key = f"{prefix}_last_worst_group"
            ours = {r["seed"]: r.get(key) for r in rows if r["run"] == spec.sweep}
            theirs = {r["seed"]: r.get(key) for r in rows if r["run"] == baseline.key}
            diffs = [float(ours[s]) - float(theirs[s]) for s in ours if is_finite(ours[s]) and is_finite(theirs.get(s))]
            mean, std, _ = mean_std(diffs)
            parts.append("-" if mean is None else f"{100 * mean:+.1f}" + ("" if std is None else f" ± {100 * std:.1f}"))
    return " / ".join(parts)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts) to CSV; columns in first-seen order, empty cells for None."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return path


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (``n - 1``) of the finite values, and how many there were.

    The standard deviation is None for fewer than two values, the mean for none.
    """
    xs = [float(v) for v in values if is_finite(v)]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return mean, std, len(xs)


def format_mean_std(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    """``"55.8 ± 7.0"`` (``scale`` applied, one decimal), ``"55.8"`` without std, ``"-"`` without mean."""
    if mean is None:
        return "-"
    return f"{scale * mean:.1f}" if std is None else f"{scale * mean:.1f} ± {scale * std:.1f}"


#: How the tables name the networks a run's ``metrics.json`` records (``network``).
NETWORK_LABELS = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "densenet121": "DenseNet-121",
}


def network_label(spec: DatasetSpec, method: Method, rows: Sequence[Mapping[str, Any]]) -> str:
    """The network of ``method``'s line: those its runs in ``rows`` trained (the teacher's marked ``(teacher)``),
    or the paper's name (``method.network``) where no run recorded one.

    A run trains what its configs say (``--network_name``, ``teacher_name``), which need not be the paper's network.
    """
    trained = dict.fromkeys(r["network"] for r in rows if r["run"] == method.key and r.get("network"))
    if not trained:
        return method.network
    names = ", ".join(NETWORK_LABELS.get(name, name) for name in trained)
    return f"{names} (teacher)" if method.key == spec.teacher else names


def _rows_of(rows: Sequence[Mapping[str, Any]], split: str, key: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["split"] == split and r["run"] == key]


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def paper_table(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[str]:
    """The paper's table for ``spec``: one line per method, per split and headline figure ours and the paper's.

    Ours is mean ± sample std over the seeds in ``rows`` (in %); the paper's is ``-`` where it has none.
    """
    header = ["method", "network"]
    for split in splits:
        for metric in spec.headline:
            name = split if len(spec.headline) == 1 else f"{split} {metric.label}"
            header += [name, f"{name} (paper)"]
    body = []
    for method in spec.methods:
        cells = [method.label, network_label(spec, method, [r for r in rows if r["split"] in splits])]
        for split in splits:
            for metric in spec.headline:
                ours = mean_std(r[metric.column] for r in _rows_of(rows, split, method.key))
                paper = spec.paper.get((split, method.key, metric.key))
                cells += [format_mean_std(ours[0], ours[1]), "-" if paper is None else format_mean_std(*paper, scale=1)]
        body.append(cells)
    return _markdown(header, body)


def group_table(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    """Per-group test accuracy (%) of each method on one split, mean ± std; groups without test data left out."""
    split_rows = [r for r in rows if r["split"] == split]
    groups = [g for g in spec.groups if any(r.get(f"acc_{g}") is not None for r in split_rows)]
    header = ["method", "network", *(group_name(spec.group_label, g) for g in groups), "worst-group", "mean-group"]
    body = []
    for method in spec.methods:
        mine = _rows_of(rows, split, method.key)
        columns = [f"acc_{g}" for g in groups] + ["worst_group", "mean_group"]
        cells = [format_mean_std(*mean_std(r[c] for r in mine)[:2]) for c in columns]
        body.append([method.label, network_label(spec, method, mine), *cells])
    return _markdown(header, body)


def step_sizes_of(rows: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> list[float]:
    """The distinct ``eta_w`` of ``spec.sweep``'s runs in ``rows``, ascending."""
    return sorted({float(r["eta_w"]) for r in rows if r["method"] == spec.sweep and r["eta_w"] is not None})


def step_size_table(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[str]:
    """Worst- and mean-group accuracy (%) of ``spec.sweep`` per ``eta_w``, with KD (fixed weights) first."""
    header = ["eta_w"]
    for split in splits:
        header += [f"{split} worst-group", f"{split} mean-group"]
    fixed = _fixed_weight_distillers(spec)
    body = []
    for method in fixed:
        cells = [f"{method.label} (fixed weights)"]
        for split in splits:
            mine = _rows_of(rows, split, method.key)
            cells += [format_mean_std(*mean_std(r[c] for r in mine)[:2]) for c in ("worst_group", "mean_group")]
        body.append(cells)
    for eta in step_sizes_of(rows, spec):
        cells = [f"{eta:g}"]
        for split in splits:
            mine = [r for r in rows if r["split"] == split and r["method"] == spec.sweep and r["eta_w"] == eta]
            cells += [format_mean_std(*mean_std(r[c] for r in mine)[:2]) for c in ("worst_group", "mean_group")]
        body.append(cells)
    return _markdown(header, body)


def _fixed_weight_distillers(spec: DatasetSpec) -> list[Method]:
    """The methods that distil with fixed group weights (KD): what ``spec.sweep`` is compared with."""
    return [m for m in spec.methods if m.distils and not m.robust]


def paired_difference_table(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[str]:
    """``spec.sweep`` minus KD on the same split and seed (GroupDistil - KD), in points; one line per figure.

    The difference is taken per seed (both runs of a seed share its teacher), then summarised as
    mean ± sample std over the seeds that have both figures; the count of seeds where
    ``spec.sweep`` is higher tells how consistent the sign is. Figures: the headline ones, and the
    worst-group accuracy if the headline lacks it. Step-size runs do not count.
    """
    sweep = spec.method(spec.sweep)
    metrics = [*spec.headline, *([] if WORST.key in {m.key for m in spec.headline} else [WORST])]
    header = ["split", "figure", "per seed (points)", "mean ± std", f"{sweep.label} higher"]
    body = []
    for baseline in _fixed_weight_distillers(spec):
        for split in splits:
            for metric in metrics:
                ours = {r["seed"]: r[metric.column] for r in _rows_of(rows, split, sweep.key)}
                theirs = {r["seed"]: r[metric.column] for r in _rows_of(rows, split, baseline.key)}
                seeds = sorted(s for s in ours if is_finite(ours[s]) and is_finite(theirs.get(s)))
                diffs = [float(ours[s]) - float(theirs[s]) for s in seeds]
                mean, std, n = mean_std(diffs)
                per_seed = ", ".join(f"{100 * d:+.1f} (seed {s})" for s, d in zip(seeds, diffs)) or "-"
                summary = "-" if mean is None else f"{100 * mean:+.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
                wins = f"{sum(d > 0 for d in diffs)} of {n}"
                body.append([split, f"{metric.label}, {sweep.label} - {baseline.label}", per_seed, summary, wins])
    return _markdown(header, body)


# ---------------------------------------------------------------------------------- plots


def plot_group_accuracy(
    spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str, path: str | Path
) -> Path | None:
    """Bars of per-group test accuracy per method (mean over seeds), error bars of ± one sample std; PNG.

    Returns None when no group has test figures on this split.
    """
    split_rows = [r for r in rows if r["split"] == split]
    groups = [g for g in spec.groups if any(r.get(f"acc_{g}") is not None for r in split_rows)]
    if not groups:
        return None
    plt = pyplot()
    width = 0.8 / len(spec.methods)
    fig, ax = plt.subplots(figsize=(4.4 + 1.6 * len(groups), 3.6))  # room for the legend beside the bars
    for i, method in enumerate(spec.methods):
        stats = [mean_std(r.get(f"acc_{g}") for r in _rows_of(rows, split, method.key)) for g in groups]
        means = [100 * (m if m is not None else math.nan) for m, _, _ in stats]
        errors = [100 * (s if s is not None else 0.0) for _, s, _ in stats]
        positions = [k + (i - (len(spec.methods) - 1) / 2) * width for k in range(len(groups))]
        network = network_label(spec, method, split_rows)
        ax.bar(positions, means, width, yerr=errors, capsize=3, label=f"{method.label} {network}")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([group_name(spec.group_label, g) for g in groups])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    seeds = len({r["seed"] for r in split_rows})
    fig.suptitle(f"{spec.name} {split}: per-group accuracy, mean ± std over {seeds} seed(s)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, plt, path)


def plot_step_sizes(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str, path: str | Path) -> Path | None:
    """Worst- and mean-group test accuracy of ``spec.sweep`` against ``eta_w`` (error bars ± std); KD as lines.

    Returns None without step-size runs on this split.
    """
    etas = step_sizes_of([r for r in rows if r["split"] == split], spec)
    if len(etas) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    positions = list(range(len(etas)))
    for column, label, marker in (("worst_group", "worst-group", "o"), ("mean_group", "mean-group", "s")):
        stats = [
            mean_std(r[column] for r in rows if r["split"] == split and r["method"] == spec.sweep and r["eta_w"] == eta)
            for eta in etas
        ]
        line = ax.errorbar(
            positions,
            [100 * (m if m is not None else math.nan) for m, _, _ in stats],
            yerr=[100 * (s if s is not None else 0.0) for _, s, _ in stats],
            marker=marker,
            capsize=3,
            label=f"{spec.method(spec.sweep).label} {label}",
        )
        for method in _fixed_weight_distillers(spec):
            mean = mean_std(r[column] for r in _rows_of(rows, split, method.key))[0]
            if mean is not None:
                color = line.lines[0].get_color()
                ax.axhline(100 * mean, linestyle="--", color=color, alpha=0.6, label=f"{method.label} {label}")
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{eta:g}" for eta in etas])
    ax.set_xlabel("group weight step size eta_w")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{spec.name} {split}: accuracy against eta_w", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, plt, path)
