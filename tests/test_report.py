"""The run comparison of mnms_groupdistil.tools.report: tables from metrics.json files, numbers by hand."""

import json
import logging

import pytest

from mnms_groupdistil.tools import report
from mnms_groupdistil.tools.registry import WATERBIRDS
from mnms_groupdistil.tools.runs import load_run


def _run(folder, name, accuracies, selection, val=None):
    """A metrics.json as the bundles write it; ``accuracies`` are the frame-level test accuracies per vendor."""
    metrics = {f"test_acc_{g}": a for g, a in accuracies.items()}
    metrics["test_worst_group_acc"] = min(accuracies.values())
    metrics["test_mean_group_acc"] = sum(accuracies.values()) / len(accuracies)
    metrics.update({f"test_patient_acc_{g}": 1.0 for g in accuracies})
    metrics.update({"test_patient_worst_group_acc": 1.0, "test_patient_mean_group_acc": 1.0})
    if val is not None:
        metrics.update({"val_acc_A": val, "val_acc_C": val, "val_acc_D": val, "val_worst_group_acc": val})
    run = folder / name
    run.mkdir()
    payload = {
        "mode": "groupdistil",
        "split": "demo",
        "split_seed": 0,
        "seed": 1,
        "test_subjects": 16,
        "test_frames": "random",
        "selection": selection,
        "metrics": metrics,
        "per_group": {g: {"test_acc": a} for g, a in accuracies.items()},
    }
    (run / "metrics.json").write_text(json.dumps(payload))
    return run


def test_tables_show_each_runs_reported_test_figures(tmp_path, caplog):
    last = {"rule": "last_epoch", "epoch": 8, "checkpoint": "model_final.pt"}
    best = {"rule": "best_val_worst_group_acc", "epoch": 3, "checkpoint": "model.pt"}
    kd = _run(tmp_path, "kd", {"A": 0.9, "C": 0.5, "D": 0.75}, last)
    gd = _run(tmp_path, "groupdistil", {"A": 0.8, "C": 0.7, "D": 0.6}, best, val=0.55)
    reports = [load_run(kd), load_run(gd)]
    lines = report.accuracy_table(reports).splitlines()
    assert lines[0].split(" | ") == ["accuracy   ", "kd  ", "groupdistil"]
    cells = [[c.strip() for c in line.split("|")] for line in lines[2:]]
    # worst = min, mean = (0.9 + 0.5 + 0.75) / 3 = 71.7 and (0.8 + 0.7 + 0.6) / 3 = 70.0, in %
    assert cells == [
        ["vendor A", "90.0", "80.0"],
        ["vendor C", "50.0", "70.0"],
        ["vendor D", "75.0", "60.0"],
        ["worst-group", "50.0", "60.0"],
        ["mean-group", "71.7", "70.0"],
    ]
    patients = report.accuracy_table(reports, prefix="test_patient_acc").splitlines()
    assert [c.strip() for c in patients[-2].split("|")] == ["worst-group", "100.0", "100.0"]
    validation = report.accuracy_table(reports, prefix="val_acc").splitlines()
    assert [c.strip() for c in validation[-2].split("|")] == ["worst-group", "-", "55.0"]
    assert report.selection_lines(reports).splitlines() == [
        "kd: model_final.pt (rule last_epoch, epoch 8), seed 1, split demo (split_seed 0), 16 test patients, "
        "test frames: random",
        "groupdistil: model.pt (rule best_val_worst_group_acc, epoch 3), seed 1, split demo (split_seed 0), "
        "16 test patients, test frames: random",
    ]
    chosen = {"rule": "best_val_worst_group_acc", "epoch": 4, "checkpoint": "model.pt"}
    waterbirds = {"name": "erm", "seed": 2, "selection": chosen}  # Waterbirds runs have one split, no "split"
    assert report.selection_lines([waterbirds]) == "erm: model.pt (rule best_val_worst_group_acc, epoch 4), seed 2"
    with caplog.at_level(logging.INFO):
        assert report.main([str(kd), str(gd)]) == 0
    assert "Test accuracy (%) per vendor, frames" in caplog.text and "Validation accuracy" in caplog.text


def test_missing_report_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="metrics.json does not exist"):
        load_run(tmp_path)


def test_waterbirds_tables_name_groups_and_summaries_as_the_registry_says(tmp_path):
    """Groups by their own names, the four summary figures of Waterbirds, and no patient table."""
    groups = {"landbird_land": 0.9, "waterbird_water": 0.7}
    metrics = {f"test_acc_{g}": a for g, a in groups.items()}
    metrics.update(test_worst_group_acc=0.7, test_adjusted_average_acc=0.86, test_mean_group_acc=0.8)
    metrics.update(test_average_acc=0.85)
    run = tmp_path / "erm"
    run.mkdir()
    per_group = {g: {"test_acc": a} for g, a in groups.items()}
    (run / "metrics.json").write_text(json.dumps({"metrics": metrics, "per_group": per_group}))
    ((heading, table),) = report.report_tables(WATERBIRDS, [load_run(run)])
    assert heading == "Test accuracy (%) per group"
    cells = [[c.strip() for c in line.split("|")] for line in table.splitlines()[2:]]
    assert cells == [
        ["landbird_land", "90.0"],
        ["waterbird_water", "70.0"],
        ["worst-group", "70.0"],
        ["adjusted-average", "86.0"],
        ["mean-group", "80.0"],
        ["average", "85.0"],
    ]
