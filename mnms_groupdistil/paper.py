"""The paper's experiments and how a reproduction compares with them.

What the grid of :mod:`mnms_groupdistil.reproduce` runs per dataset (:data:`DATASETS`: bundle,
splits, methods, the paper's figures), and pure functions over its results: one row per run
(:func:`result_row`), mean and sample standard deviation over seeds (:func:`mean_std`), Markdown
tables in the shape of the paper's (:func:`paper_table`, :func:`group_table`,
:func:`step_size_table`), the paired GroupDistil - KD difference per seed
(:func:`paired_difference_table`), the stability study over grid cells (:func:`history_figures`,
:func:`study_table`) and PNG plots (:func:`plot_group_accuracy`, :func:`plot_group_weights`,
:func:`plot_step_sizes`). Figures in rows are fractions, as in ``metrics.json``; tables and plots
show %.

Adding a dataset is one :class:`DatasetSpec` in :data:`DATASETS`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnms_groupdistil.data.waterbirds import GROUPS as WATERBIRDS_GROUPS
from mnms_groupdistil.report import read_group_weights

__all__ = [
    "DATASETS",
    "MEAN",
    "MNMS",
    "ROW_METRICS",
    "WATERBIRDS",
    "WORST",
    "DatasetSpec",
    "Method",
    "Metric",
    "format_mean_std",
    "group_table",
    "is_finite",
    "mean_std",
    "paired_difference_table",
    "paper_table",
    "plot_group_accuracy",
    "plot_group_weights",
    "plot_step_sizes",
    "history_figures",
    "result_row",
    "step_size_table",
    "study_table",
    "step_sizes_of",
    "write_csv",
]


@dataclass(frozen=True)
class Method:
    """One method of the paper's tables: one training run per split and seed.

    Attributes:
        key: short name, also the run folder name (``teacher``, ``groupdro``, ``kd``, ``groupdistil``).
        label: the method as the paper names it.
        network: the network, as the paper's tables name it.
        configs: the bundle configs merged for it, from the bundle's ``configs`` folder.
        robust: whether it trains exponentiated-gradient group weights (``eta_w`` applies).
        distils: whether it needs the teacher of its split and seed (``teacher_ckpt``).
    """

    key: str
    label: str
    network: str
    configs: tuple[str, ...]
    robust: bool
    distils: bool = False


@dataclass(frozen=True)
class Metric:
    """A figure of ``metrics.json``'s ``metrics`` (a fraction).

    Attributes:
        key: its name in ``metrics.json``.
        label: its name in tables.
        column: its ``results.csv`` column.
    """

    key: str
    label: str
    column: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the grid needs to know about one dataset's bundle and the paper's results on it.

    Attributes:
        name: dataset name used in folders and tables.
        title: heading of its tables.
        bundle: bundle folder name under the bundles directory.
        splits: the splits of the paper's grid.
        split_id: the bundle id that takes the split name; None when the bundle has one fixed split
            (then ``splits`` is that one name, and no ``split_seed`` is passed to the bundle).
        methods: the grid's methods, in table order; the teacher comes first.
        teacher: key of the method whose model the distilling methods learn from.
        sweep: key of the method that ``--group_step_sizes`` repeats with other ``eta_w``.
        groups: group names (``test_acc_<group>`` metrics).
        headline: the figures of the paper's table, in its column order.
        metrics: figures of ``results.csv`` besides :data:`ROW_METRICS` and the per-group ones.
        paper: the paper's figures in %, ``(split, method key, metric key) -> (mean, std or None)``.
        paper_seeds: over how many seeds the paper averaged.
        note: what the headline figures are, printed under the table.
        group_label: what a group is called in tables and plots (``vendor``); empty for groups with
            descriptive names (Waterbirds' ``landbird_water``).
    """

    name: str
    title: str
    bundle: str
    splits: tuple[str, ...]
    split_id: str | None
    methods: tuple[Method, ...]
    teacher: str
    sweep: str
    groups: tuple[str, ...]
    headline: tuple[Metric, ...]
    metrics: tuple[Metric, ...]
    paper: Mapping[tuple[str, str, str], tuple[float, float | None]]
    paper_seeds: int
    note: str = ""
    group_label: str = "group"

    def method(self, key: str) -> Method:
        for method in self.methods:
            if method.key == key:
                return method
        known = ", ".join(m.key for m in self.methods)
        raise ValueError(f"dataset {self.name} has no method '{key}' (it has {known}).")


WORST = Metric("test_worst_group_acc", "worst-group", "worst_group")
MEAN = Metric("test_mean_group_acc", "mean-group", "mean_group")

#: Figures of every ``results.csv`` row (test data).
ROW_METRICS = (WORST, MEAN)

_MNMS_HELD_OUT = Metric("test_worst_group_acc", "held-out vendor", "worst_group")

MNMS = DatasetSpec(
    name="mnms",
    title="M&Ms: HCM vs NOR, accuracy (%) on the held-out vendor",
    bundle="mnms_groupdistil",
    splits=("split1", "split2"),
    split_id="split",
    methods=(
        Method("teacher", "groupDRO", "ResNet-18 (teacher)", ("train.json", "train_teacher.json"), robust=True),
        Method("groupdro", "groupDRO", "DenseNet-121", ("train.json", "train_groupdro.json"), robust=True),
        Method("kd", "KD", "DenseNet-121", ("train.json", "train_kd.json"), robust=False, distils=True),
        Method("groupdistil", "GroupDistil", "DenseNet-121", ("train.json",), robust=True, distils=True),
    ),
    teacher="teacher",
    sweep="groupdistil",
    groups=("A", "C", "D"),
    headline=(_MNMS_HELD_OUT,),
    # patient level: majority vote over a patient's test frames
    metrics=(
        Metric("test_patient_worst_group_acc", "patient worst-group", "patient_worst_group"),
        Metric("test_patient_mean_group_acc", "patient mean-group", "patient_mean_group"),
    ),
    paper={
        ("split1", "teacher", _MNMS_HELD_OUT.key): (53.3, None),
        ("split1", "groupdro", _MNMS_HELD_OUT.key): (46.7, None),
        ("split1", "kd", _MNMS_HELD_OUT.key): (55.8, 7.0),
        ("split1", "groupdistil", _MNMS_HELD_OUT.key): (62.8, 4.9),
        ("split2", "teacher", _MNMS_HELD_OUT.key): (62.2, None),
        ("split2", "groupdro", _MNMS_HELD_OUT.key): (56.2, None),
        ("split2", "kd", _MNMS_HELD_OUT.key): (64.2, 7.4),
        ("split2", "groupdistil", _MNMS_HELD_OUT.key): (66.5, 2.8),
    },
    paper_seeds=5,
    note=(
        "The test patients of split1 (vendor C) and split2 (vendor D) all come from the held-out vendor, "
        "so the worst-group test accuracy is the accuracy on that vendor (test frames). "
        "Other splits (e.g. `demo`) test every vendor: there it is the worst vendor's accuracy."
    ),
    group_label="vendor",
)

_ADJUSTED = Metric("test_adjusted_average_acc", "adjusted average", "adjusted_average")

WATERBIRDS = DatasetSpec(
    name="waterbirds",
    title="Waterbirds: test accuracy (%), adjusted average and worst group",
    bundle="waterbirds_groupdistil",
    splits=("official",),
    split_id=None,
    methods=(
        Method("teacher", "groupDRO", "ResNet-50 (teacher)", ("train.json", "train_teacher.json"), robust=True),
        Method("erm", "ERM", "ResNet-18", ("train.json", "train_erm.json"), robust=False),
        Method("groupdro", "groupDRO", "ResNet-18", ("train.json", "train_groupdro.json"), robust=True),
        Method("kd", "KD", "ResNet-18", ("train.json", "train_kd.json"), robust=False, distils=True),
        Method("groupdistil", "GroupDistil", "ResNet-18", ("train.json",), robust=True, distils=True),
    ),
    teacher="teacher",
    sweep="groupdistil",
    groups=WATERBIRDS_GROUPS,
    headline=(_ADJUSTED, WORST),
    metrics=(_ADJUSTED, Metric("test_average_acc", "average", "average")),
    paper={
        ("official", "teacher", _ADJUSTED.key): (90.9, None),
        ("official", "teacher", WORST.key): (86.8, None),
        ("official", "groupdro", _ADJUSTED.key): (86.0, None),
        ("official", "groupdro", WORST.key): (79.6, None),
        ("official", "kd", _ADJUSTED.key): (95.2, None),
        ("official", "kd", WORST.key): (78.0, None),
        ("official", "groupdistil", _ADJUSTED.key): (86.6, None),
        ("official", "groupdistil", WORST.key): (81.7, None),
    },
    paper_seeds=3,
    note=(
        "Adjusted average: the per-group test accuracies weighted by the training group proportions; "
        "worst group: the lowest per-group test accuracy. The paper gives no ERM student figure. "
        "Figures are those of each run's reported model (`metrics.json` `selection`: by default the "
        "epoch of best validation worst-group accuracy on the official val split; `select_by=None` "
        "reports the last epoch)."
    ),
    group_label="",
)

#: The datasets the grid knows, by name.
DATASETS: dict[str, DatasetSpec] = {MNMS.name: MNMS, WATERBIRDS.name: WATERBIRDS}


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


def study_table(
    spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str, threshold: float = 0.55
) -> list[str]:
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
                cells_[1] = f"{method.label} {method.network}"
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


def _group_name(label: str, group: str) -> str:
    """``"vendor A"``; the bare group name when ``label`` is empty."""
    return f"{label} {group}".strip()


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
        cells = [method.label, method.network]
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
    header = ["method", "network", *(_group_name(spec.group_label, g) for g in groups), "worst-group", "mean-group"]
    body = []
    for method in spec.methods:
        mine = _rows_of(rows, split, method.key)
        columns = [f"acc_{g}" for g in groups] + ["worst_group", "mean_group"]
        cells = [format_mean_std(*mean_std(r[c] for r in mine)[:2]) for c in columns]
        body.append([method.label, method.network, *cells])
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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
    width = 0.8 / len(spec.methods)
    fig, ax = plt.subplots(figsize=(4.4 + 1.6 * len(groups), 3.6))  # room for the legend beside the bars
    for i, method in enumerate(spec.methods):
        stats = [mean_std(r.get(f"acc_{g}") for r in _rows_of(rows, split, method.key)) for g in groups]
        means = [100 * (m if m is not None else math.nan) for m, _, _ in stats]
        errors = [100 * (s if s is not None else 0.0) for _, s, _ in stats]
        positions = [k + (i - (len(spec.methods) - 1) / 2) * width for k in range(len(groups))]
        ax.bar(positions, means, width, yerr=errors, capsize=3, label=f"{method.label} {method.network}")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([_group_name(spec.group_label, g) for g in groups])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    seeds = len({r["seed"] for r in split_rows})
    fig.suptitle(f"{spec.name} {split}: per-group accuracy, mean ± std over {seeds} seed(s)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_group_weights(
    panels: Mapping[str, Sequence[str | Path]], path: str | Path, title: str = "", group_label: str = "group"
) -> Path | None:
    """Group weights over training iterations: one panel per method, mean over its seeds' runs.

    The shaded band spans the lowest to the highest weight among the seeds at each iteration.
    Weights are the runs' TensorBoard ``group_weight/<group>`` scalars
    (:func:`mnms_groupdistil.report.read_group_weights`).

    Args:
        panels: panel title -> run folders (one per seed).
        path: the PNG to write.
        title: figure title.
        group_label: what a group is called in the legend.

    Returns:
        The PNG, or None when no run logged group weights.
    """
    series = {name: [read_group_weights(d) for d in dirs] for name, dirs in panels.items()}
    series = {name: [s for s in runs if s] for name, runs in series.items()}
    series = {name: runs for name, runs in series.items() if runs}
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.2), squeeze=False, sharey=True)
    for ax, (name, runs) in zip(axes[0], series.items()):
        for group in sorted({g for run in runs for g in run}):
            per_seed = [dict(run[group]) for run in runs if group in run]
            steps = sorted(set.intersection(*(set(p) for p in per_seed)))
            values = [[p[s] for p in per_seed] for s in steps]
            line = ax.plot(steps, [sum(v) / len(v) for v in values], label=_group_name(group_label, group))[0]
            if len(per_seed) > 1:
                low, high = [min(v) for v in values], [max(v) for v in values]
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("group weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def plot_step_sizes(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], split: str, path: str | Path) -> Path | None:
    """Worst- and mean-group test accuracy of ``spec.sweep`` against ``eta_w`` (error bars ± std); KD as lines.

    Returns None without step-size runs on this split.
    """
    etas = step_sizes_of([r for r in rows if r["split"] == split], spec)
    if len(etas) < 2:
        return None
    plt = _pyplot()
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
    return _save(fig, plt, path)


