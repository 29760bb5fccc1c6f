"""Reading a run's folder (mnms_groupdistil.tools.runs) and plotting its group weights
(mnms_groupdistil.tools.plots)."""

from __future__ import annotations

import json

import pytest
from torch.utils.tensorboard import SummaryWriter

from mnms_groupdistil.tools.plots import plot_group_weights
from mnms_groupdistil.tools.runs import load_metrics, load_run, read_group_weights


def _log_weights(run_dir, weights: dict[str, list[float]]) -> None:
    """TensorBoard ``group_weight/<group>`` scalars at iterations 1, 2, ... as the bundles' trainers log them."""
    writer = SummaryWriter(str(run_dir))
    for group, values in weights.items():
        for step, value in enumerate(values, start=1):
            writer.add_scalar(f"group_weight/{group}", value, step)
    writer.add_scalar("train_loss", 0.5, 1)  # not a group weight
    writer.close()


def test_group_weights_are_read_per_group_in_iteration_order(tmp_path):
    _log_weights(tmp_path, {"C": [0.3, 0.25], "A": [0.4, 0.5]})
    weights = read_group_weights(tmp_path)
    assert list(weights) == ["A", "C"]
    assert weights["A"] == [(1, pytest.approx(0.4)), (2, pytest.approx(0.5))]
    assert weights["C"] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.25))]
    assert read_group_weights(tmp_path / "nothing") == {}


def test_plot_group_weights_writes_a_png_of_the_runs_that_logged_weights(tmp_path):
    for seed in (0, 1):
        _log_weights(tmp_path / f"seed{seed}", {"A": [0.5, 0.6 + 0.1 * seed], "C": [0.5, 0.4 - 0.1 * seed]})
    (tmp_path / "erm").mkdir()  # fixed weights: nothing logged
    panels = {"GroupDistil": [tmp_path / "seed0", tmp_path / "seed1"], "ERM": [tmp_path / "erm"]}
    png = plot_group_weights(panels, tmp_path / "weights.png", title="demo", group_label="vendor")
    assert png == tmp_path / "weights.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert plot_group_weights({"ERM": [tmp_path / "erm"]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_load_run_names_the_run_and_refuses_a_broken_report(tmp_path):
    (tmp_path / "kd").mkdir()
    (tmp_path / "kd" / "metrics.json").write_text(json.dumps({"seed": 3}))
    assert load_run(tmp_path / "kd") == {"seed": 3, "name": "kd", "dir": str(tmp_path / "kd")}
    (tmp_path / "kd" / "metrics.json").write_text("{")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        load_run(tmp_path / "kd")


def test_load_metrics_of_a_run_still_going_is_none(tmp_path):
    assert load_metrics(tmp_path) is None  # no report yet
    (tmp_path / "metrics.json").write_text('{"epoch": 1')  # being written
    assert load_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text('{"epoch": 1}')
    assert load_metrics(tmp_path) == {"epoch": 1}
