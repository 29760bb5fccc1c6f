"""The paper's grid description and the summaries over seeds: rows, mean +- sample std, tables, plots.

Every expected number is computed by hand in the comments next to it.
"""

from __future__ import annotations

import csv
import math

import pytest

from mnms_groupdistil.tools.paper import (
    format_mean_std,
    group_table,
    history_figures,
    mean_std,
    paired_difference_table,
    paper_table,
    plot_group_accuracy,
    plot_step_sizes,
    result_row,
    step_size_table,
    study_table,
    write_csv,
)
from mnms_groupdistil.tools.registry import DATASETS, MNMS, WATERBIRDS


def report(worst, mean, per_group, rule="last_epoch", epoch=5):
    metrics = {"test_worst_group_acc": worst, "test_mean_group_acc": mean}
    metrics.update({f"test_acc_{g}": v for g, v in per_group.items()})
    return {"selection": {"rule": rule, "epoch": epoch, "checkpoint": "model_final.pt"}, "metrics": metrics}


def row(split, run, seed, worst, mean=None, per_group=None, eta_w=None):
    method = run.split("_eta")[0]
    per_group = per_group or {}
    return result_row(MNMS, report(worst, mean, per_group), split=split, run=run, method=method, seed=seed, eta_w=eta_w)


def test_mean_and_sample_std_by_hand():
    # mean (0.5 + 0.7 + 0.6) / 3 = 0.6; deviations -0.1, 0.1, 0 -> sum of squares 0.02 / (3 - 1) = 0.01 -> std 0.1
    mean, std, n = mean_std([0.5, 0.7, 0.6])
    assert (n, mean, std) == (3, pytest.approx(0.6), pytest.approx(0.1))
    # None and NaN do not count: (0.5, 0.7) -> mean 0.6, std sqrt((0.01 + 0.01) / 1) = 0.141421...
    mean, std, n = mean_std([0.5, None, float("nan"), 0.7])
    assert (n, mean, std) == (2, pytest.approx(0.6), pytest.approx(math.sqrt(0.02)))
    assert mean_std([0.4]) == (0.4, None, 1)  # one seed: no spread
    assert mean_std([None]) == (None, None, 0)


def test_format_mean_std():
    assert format_mean_std(0.558, 0.07) == "55.8 ± 7.0"
    assert format_mean_std(0.5, None) == "50.0"
    assert format_mean_std(None, None) == "-"
    assert format_mean_std(62.8, 4.9, scale=1) == "62.8 ± 4.9"


def test_result_row_reads_test_figures_and_leaves_absent_ones_empty():
    metrics = report(0.5, 0.5, {"C": 0.5})
    metrics["metrics"].update({"test_acc_A": None, "test_acc_D": float("nan"), "test_patient_worst_group_acc": 1.0})
    r = result_row(MNMS, metrics, split="split1", run="kd", method="kd", seed=3, eta_w=None, run_dir="x")
    assert r["dataset"] == "mnms" and r["split"] == "split1" and r["seed"] == 3 and r["eta_w"] is None
    assert (r["worst_group"], r["mean_group"], r["acc_C"]) == (0.5, 0.5, 0.5)
    assert r["acc_A"] is None and r["acc_D"] is None  # null and NaN: vendor not in the test set
    assert r["patient_worst_group"] == 1.0 and r["patient_mean_group"] is None
    assert r["selection"] == "last_epoch" and r["selected_epoch"] == 5


def test_paper_table_shape_and_numbers():
    rows = [
        # split1 KD: 0.5, 0.7 -> 60.0 +- 14.1 (sqrt(0.02) = 0.1414)
        row("split1", "kd", 0, 0.5),
        row("split1", "kd", 1, 0.7),
        # split1 GroupDistil: 0.6, 0.8 -> 70.0 +- 14.1
        row("split1", "groupdistil", 0, 0.6, eta_w=0.01),
        row("split1", "groupdistil", 1, 0.8, eta_w=0.01),
        # split2 teacher: one seed -> 62.5 without spread
        row("split2", "teacher", 0, 0.625, eta_w=0.01),
    ]
    lines = paper_table(MNMS, rows, ["split1", "split2"])
    assert lines[0] == "| method | network | split1 | split1 (paper) | split2 | split2 (paper) |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert len(lines) == 2 + len(MNMS.methods)
    assert lines[2] == "| groupDRO | ResNet-18 (teacher) | - | 53.3 | 62.5 | 62.2 |"
    assert lines[3] == "| groupDRO | DenseNet-121 | - | 46.7 | - | 56.2 |"
    assert lines[4] == "| KD | DenseNet-121 | 60.0 ± 14.1 | 55.8 ± 7.0 | - | 64.2 ± 7.4 |"
    assert lines[5] == "| GroupDistil | DenseNet-121 | 70.0 ± 14.1 | 62.8 ± 4.9 | - | 66.5 ± 2.8 |"


def test_step_size_runs_stay_out_of_the_method_rows():
    rows = [row("split1", "groupdistil", 0, 0.6, eta_w=0.01), row("split1", "groupdistil_eta1", 0, 0.1, eta_w=1.0)]
    assert paper_table(MNMS, rows, ["split1"])[5] == "| GroupDistil | DenseNet-121 | 60.0 | 62.8 ± 4.9 |"


def test_group_table_leaves_out_groups_without_test_data():
    rows = [
        row("split1", "kd", 0, 0.5, 0.5, {"C": 0.5}),
        row("split1", "kd", 1, 1.0, 1.0, {"C": 1.0}),
    ]
    lines = group_table(MNMS, rows, "split1")
    assert lines[0] == "| method | network | vendor C | worst-group | mean-group |"
    # C: 0.5, 1.0 -> 75.0, std sqrt((0.25^2 * 2) / 1) = 0.35355 -> 35.4
    assert lines[4] == "| KD | DenseNet-121 | 75.0 ± 35.4 | 75.0 ± 35.4 | 75.0 ± 35.4 |"
    assert lines[2] == "| groupDRO | ResNet-18 (teacher) | - | - | - |"


def test_step_size_table_lists_kd_then_each_step_size():
    rows = [
        row("split1", "kd", 0, 0.4, 0.6),
        row("split1", "groupdistil_eta0", 0, 0.3, 0.5, eta_w=0.0),
        row("split1", "groupdistil_eta0", 1, 0.5, 0.7, eta_w=0.0),
        row("split1", "groupdistil", 0, 0.6, 0.7, eta_w=0.01),
    ]
    lines = step_size_table(MNMS, rows, ["split1"])
    assert lines[0] == "| eta_w | split1 worst-group | split1 mean-group |"
    assert lines[2] == "| KD (fixed weights) | 40.0 | 60.0 |"
    # eta 0: worst 0.3, 0.5 -> 40.0 +- 14.1; mean 0.5, 0.7 -> 60.0 +- 14.1
    assert lines[3] == "| 0 | 40.0 ± 14.1 | 60.0 ± 14.1 |"
    assert lines[4] == "| 0.01 | 60.0 | 70.0 |"
    assert len(lines) == 5


def test_csv_has_one_row_per_run_and_empty_cells_for_missing(tmp_path):
    rows = [row("split1", "kd", 0, 0.5, 0.5, {"C": 0.5}), row("split1", "groupdistil", 0, 0.75, eta_w=0.01)]
    path = write_csv(rows, tmp_path / "results.csv")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == 2
    assert read[0]["acc_C"] == "0.5" and read[0]["acc_A"] == "" and read[0]["eta_w"] == ""
    assert read[1]["worst_group"] == "0.75" and read[1]["eta_w"] == "0.01" and read[1]["mean_group"] == ""
    assert {"dataset", "split", "method", "seed", "eta_w", "worst_group", "mean_group"} <= set(read[0])


def test_plots_are_written(tmp_path):
    rows = [
        row("demo", method, seed, 0.5 + 0.1 * seed, 0.6, {"A": 0.6, "C": 0.5, "D": 0.7}, eta_w=eta)
        for seed in (0, 1)
        for method, eta in (("teacher", 0.01), ("groupdro", 0.01), ("kd", None), ("groupdistil", 0.01))
    ]
    rows += [row("demo", "groupdistil_eta0", seed, 0.4, 0.5, eta_w=0.0) for seed in (0, 1)]
    bars = plot_group_accuracy(MNMS, rows, "demo", tmp_path / "bars.png")
    steps = plot_step_sizes(MNMS, rows, "demo", tmp_path / "steps.png")
    for path in (bars, steps):
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_group_accuracy(MNMS, rows, "split9", tmp_path / "none.png") is None  # no rows of that split


def test_method_lookup_names_the_known_methods():
    with pytest.raises(ValueError, match="no method 'erm'.*teacher, groupdro, kd, groupdistil"):
        MNMS.method("erm")
    assert DATASETS["mnms"] is MNMS


def test_paired_difference_groupdistil_minus_kd_by_hand():
    rows = [
        row("split1", "kd", 0, 0.75),
        row("split1", "kd", 1, 0.72),
        row("split1", "kd", 2, 0.80),
        row("split1", "groupdistil", 0, 0.80, eta_w=0.01),
        row("split1", "groupdistil", 1, 0.70, eta_w=0.01),
        row("split1", "groupdistil", 2, 0.90, eta_w=0.01),
        row("split1", "groupdistil", 3, 0.99, eta_w=0.01),  # no KD of seed 3: not paired
        row("split1", "groupdistil_eta1", 0, 0.10, eta_w=1.0),  # a step-size run: not the method's row
    ]
    lines = paired_difference_table(MNMS, rows, ["split1", "split2"])
    assert lines[0] == "| split | figure | per seed (points) | mean ± std | GroupDistil higher |"
    # differences +5, -2, +10 -> mean 13/3 = 4.33; deviations 0.67, -6.33, 5.67 -> squares 72.67 / 2 -> std 6.03
    assert lines[2] == (
        "| split1 | held-out vendor, GroupDistil - KD | +5.0 (seed 0), -2.0 (seed 1), +10.0 (seed 2) "
        "| +4.3 ± 6.0 | 2 of 3 |"
    )
    assert lines[3] == "| split2 | held-out vendor, GroupDistil - KD | - | - | 0 of 0 |"  # nothing on split2
    assert len(lines) == 4  # the headline is the worst-group figure: not listed twice


def wb_row(run, seed, worst, adjusted):
    metrics = {"test_worst_group_acc": worst, "test_mean_group_acc": worst, "test_adjusted_average_acc": adjusted}
    metrics["test_acc_waterbird_land"] = worst
    report = {"selection": {"rule": "best_val_worst_group_acc"}, "metrics": metrics}
    return result_row(WATERBIRDS, report, split="official", run=run, method=run, seed=seed, eta_w=None)


def test_waterbirds_tables_by_hand():
    rows = [wb_row("kd", 0, 0.5, 0.9), wb_row("kd", 1, 0.7, 0.8), wb_row("groupdistil", 0, 0.6, 0.85)]
    rows += [wb_row("groupdistil", 1, 0.6, 0.8), wb_row("erm", 0, 0.1, 0.95)]
    assert rows[0]["adjusted_average"] == 0.9 and "patient_worst_group" not in rows[0]
    table = paper_table(WATERBIRDS, rows, ["official"])
    assert table[0] == (
        "| method | network | official adjusted average | official adjusted average (paper) "
        "| official worst-group | official worst-group (paper) |"
    )
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| groupDRO",
        "| ERM",
        "| groupDRO",
        "| KD",
        "| GroupDistil",
    ]
    # KD adjusted 0.9, 0.8 -> 85.0 +- 7.1 (sqrt(0.005) = 0.0707); worst 0.5, 0.7 -> 60.0 +- 14.1
    assert table[5] == "| KD | ResNet-18 | 85.0 ± 7.1 | 95.2 | 60.0 ± 14.1 | 78.0 |"
    assert table[3] == "| ERM | ResNet-18 | 95.0 | - | 10.0 | - |"
    assert table[2] == "| groupDRO | ResNet-50 (teacher) | - | 90.9 | - | 86.8 |"
    groups = group_table(WATERBIRDS, rows, "official")
    assert groups[0] == "| method | network | waterbird_land | worst-group | mean-group |"
    paired = paired_difference_table(WATERBIRDS, rows, ["official"])
    # adjusted: 0.85 - 0.9 = -5, 0.8 - 0.8 = 0 -> mean -2.5, std sqrt(2 * 2.5^2 / 1) = 3.54
    assert (
        paired[2]
        == "| official | adjusted average, GroupDistil - KD | -5.0 (seed 0), +0.0 (seed 1) | -2.5 ± 3.5 | 0 of 2 |"
    )
    # worst: +10, -10 -> mean 0, std sqrt(200) = 14.1
    assert (
        paired[3]
        == "| official | worst-group, GroupDistil - KD | +10.0 (seed 0), -10.0 (seed 1) | +0.0 ± 14.1 | 1 of 2 |"
    )
    assert DATASETS["waterbirds"] is WATERBIRDS


def test_history_figures_by_hand():
    history = [
        {"epoch": e, "metrics": {"val_worst_group_acc": v, "test_worst_group_acc": t}}
        for e, v, t in [(1, 0.5, 0.5), (2, 0.9, 0.6), (3, 0.7, 0.8), (4, 0.8, None)]
    ]
    figures = history_figures({"history": list(reversed(history))})  # the order in the file does not matter
    # last three epochs, val 0.9, 0.7, 0.8: changes 0.2 and 0.1 -> swing 0.15; last 0.8
    assert figures["val_last_worst_group"] == pytest.approx(0.8)
    assert figures["val_swing"] == pytest.approx(0.15)
    # test 0.6, 0.8, missing: one change 0.2; no last figure
    assert figures["test_last_worst_group"] is None
    assert figures["test_swing"] == pytest.approx(0.2)
    assert history_figures({"history": history[:1]})["val_swing"] is None


def _study_row(cell, run, seed, val, test):
    history = [
        {"epoch": e, "metrics": {"val_worst_group_acc": v, "test_worst_group_acc": t}}
        for e, (v, t) in enumerate(zip(val, test), start=1)
    ]
    return result_row(
        MNMS, {"history": history, "metrics": {}}, split="demo", run=run, method=run, seed=seed, eta_w=None, cell=cell
    )


def test_study_table_by_hand():
    rows = [
        _study_row("batching=balanced", "teacher", 0, [0.6, 0.8, 0.9], [0.5, 0.7, 0.8]),
        _study_row("batching=balanced", "teacher", 1, [0.9, 0.7, 0.7], [0.9, 0.5, 0.55]),
        _study_row("batching=balanced", "kd", 0, [0.6], [0.7]),
        _study_row("batching=balanced", "kd", 1, [0.6], [0.6]),
        _study_row("batching=balanced", "groupdistil", 0, [0.7], [0.6]),
        _study_row("batching=balanced", "groupdistil", 1, [0.9], [0.7]),
        _study_row("batching=mixed", "teacher", 0, [0.5, 0.5], [0.4, 0.5]),
    ]
    lines = study_table(MNMS, rows, "demo")
    cells = {line.split(" | ")[1]: line.strip("| ").split(" | ") for line in lines[2:]}
    teacher = lines[2].strip("| ").split(" | ")
    assert teacher[:2] == ["batching=balanced", "groupDRO ResNet-18 (teacher)"]
    # val last 0.9 and 0.7: mean 0.8, std sqrt(0.02) = 0.1414; swing seed 0 (0.2 + 0.1) / 2 = 0.15,
    # seed 1 (0.2 + 0) / 2 = 0.1 -> 0.125; no run at or below 55%
    assert teacher[2:5] == ["80.0 ± 14.1", "12.5", "0 of 2"]
    # test last 0.8 and 0.55 (at the threshold): mean 0.675, std 0.1768; swing (0.15 + 0.225) / 2 = 0.1875
    assert teacher[5:8] == ["67.5 ± 17.7", "18.8", "1 of 2"]
    # GroupDistil - KD per seed: val +0.1, +0.3 -> +20.0 ± 14.1; test -0.1, +0.1 -> +0.0 ± 14.1
    assert cells["GroupDistil (student)"][-1] == "+20.0 ± 14.1 / +0.0 ± 14.1"
    assert lines[-1].strip("| ").split(" | ")[:5] == [
        "batching=mixed",
        "groupDRO ResNet-18 (teacher)",
        "50.0",
        "0.0",
        "1 of 1",
    ]


def test_tables_name_the_networks_the_runs_trained():
    """A teacher trained as ResNet-34 (``--teacher_name resnet34``) is named so, not by the paper's ResNet-50."""

    def row(run, seed, network):
        report = {"network": network, "metrics": {"test_worst_group_acc": 0.8, "test_adjusted_average_acc": 0.9}}
        return result_row(WATERBIRDS, report, split="official", run=run, method=run, seed=seed, eta_w=None)

    rows = [row("teacher", 0, "resnet34"), row("teacher", 1, "resnet34"), row("kd", 0, "resnet18")]
    rows.append(row("groupdistil", 0, None))  # a report that records no network: the paper's name
    networks = [line.split(" | ")[1] for line in paper_table(WATERBIRDS, rows, ["official"])[2:]]
    # teacher, ERM, groupDRO (no runs: the paper's name), KD, GroupDistil
    assert networks == ["ResNet-34 (teacher)", "ResNet-18", "ResNet-18", "ResNet-18", "ResNet-18"]
    assert group_table(WATERBIRDS, rows, "official")[2].startswith("| groupDRO | ResNet-34 (teacher) |")
    mixed = [*rows, row("kd", 1, "resnet50")]
    assert paper_table(WATERBIRDS, mixed, ["official"])[5].startswith("| KD | ResNet-18, ResNet-50 |")
