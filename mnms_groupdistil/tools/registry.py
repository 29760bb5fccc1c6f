"""Each dataset's facts, once: its bundle, groups and reports, its generated look-alike, and the paper's
experiments on it.

One frozen :class:`DatasetSpec` per dataset (:data:`MNMS`, :data:`WATERBIRDS`, both in :data:`DATASETS`),
read by the tools: the benchmark (bundle, generated cohort), the export (bundle), the report (what a group is
called, the summary figures), the reproduction and its tables (:mod:`mnms_groupdistil.tools.paper`: the grid's
methods and splits, the paper's figures). :func:`bundles_dir` is the folder holding the bundles.

Adding a dataset is one :class:`DatasetSpec` in :data:`DATASETS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnms_groupdistil.datasets.mnms.release import GROUPS as MNMS_GROUPS
from mnms_groupdistil.datasets.mnms.synthetic import write_mnms_cohort
from mnms_groupdistil.datasets.waterbirds.reader import GROUPS as WATERBIRDS_GROUPS
from mnms_groupdistil.datasets.waterbirds.synthetic import write_waterbirds

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
    "bundles_dir",
]


def bundles_dir() -> Path:
    """The folder holding the bundles of this source checkout (``<repository>/bundles``)."""
    return Path(__file__).resolve().parents[2] / "bundles"


def _write_mnms(folder: Path, preset: str) -> Path:
    """A generated M&Ms cohort (seed 0) in ``folder/MnM``: the OpenDataset layout and its information CSV."""
    return Path(write_mnms_cohort(folder / "MnM", preset=preset, seed=0))


def _write_waterbirds(folder: Path, preset: str) -> Path:
    """A generated Waterbirds release (seed 0) below ``folder``; returns the release folder."""
    return Path(write_waterbirds(folder, preset=preset, seed=0))


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
    """One dataset's facts: its bundle, its groups, its reports, its generated look-alike, and the paper's
    experiments on it (what the grid of :mod:`mnms_groupdistil.tools.reproduce` runs, and the paper's figures).

    Attributes:
        name: dataset name used in folders, tables and the tools' ``--dataset`` / ``--bundle`` options.
        title: heading of its tables.
        bundle: bundle folder name under the bundles directory (:func:`bundles_dir`); the ``bundle`` a run of
            it records in ``run_config.json``.
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
        summaries: the summary figures of a run report's tables, after the per-group rows
            (``<part>_<summary>_acc`` in ``metrics.json``, ``<part>`` being ``test`` or ``val``).
        patient_figures: whether its runs also report patient-level figures (``test_patient_acc_<group>``: the
            majority over a patient's frames).
        write_cohort: ``(folder, preset) -> dataset_dir``: writes a generated cohort in the dataset's real
            layout below ``folder`` (presets and look-alikes: :mod:`mnms_groupdistil.datasets.mnms.synthetic`).
        cohort_settings: the bundle settings a generated cohort needs (the M&Ms ``demo`` split).
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
    note: str
    group_label: str
    summaries: tuple[str, ...]
    patient_figures: bool
    write_cohort: Callable[[Path, str], Path]
    cohort_settings: Mapping[str, Any]

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
    groups=MNMS_GROUPS,
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
    summaries=("worst_group", "mean_group"),
    patient_figures=True,
    write_cohort=_write_mnms,
    cohort_settings={"split": "demo"},
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
    summaries=("worst_group", "adjusted_average", "mean_group", "average"),
    patient_figures=False,
    write_cohort=_write_waterbirds,
    cohort_settings={},
)

#: The datasets the grid knows, by name.
DATASETS: dict[str, DatasetSpec] = {MNMS.name: MNMS, WATERBIRDS.name: WATERBIRDS}
