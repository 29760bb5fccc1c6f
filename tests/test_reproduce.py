"""The reproduction grid: plan, settings per run, resuming, and one small grid through the real bundles.

Most tests replace the bundle runner by a stand-in that writes the ``metrics.json`` a finished run
writes (its settings read back from the run's ``run_args.json``), so that what the grid runs,
reuses and refuses is checked in milliseconds. ``test_grid_end_to_end`` runs the real bundle configs
on a tiny generated cohort (in this process, to save a Python start per run);
``test_run_bundle_trains_in_a_new_process`` checks the default runner, a subprocess per run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO, TINY_MNMS, WATERBIRDS_BUNDLE

from mnms_groupdistil.overrides import parse_overrides
from mnms_groupdistil.registry import MNMS, WATERBIRDS
from mnms_groupdistil.reproduce import (
    RUN_ARGS,
    bundle_args,
    main,
    parse_grid,
    plan_runs,
    resolve_setting,
    run_bundle,
    run_grid,
    run_state,
    write_outputs,
)
from mnms_groupdistil.run_lock import RunLock


def finished_report(epochs: int, worst: float, rule: str = "last_epoch") -> dict:
    metrics = {"test_worst_group_acc": worst, "test_mean_group_acc": worst, "test_acc_C": worst}
    return {
        "selection": {"rule": rule, "epoch": epochs, "checkpoint": "model_final.pt"},
        "metrics": metrics,
        "history": [{"epoch": e, "metrics": metrics} for e in range(1, epochs + 1)],
    }


class FakeRunner:
    """Stands in for ``run_bundle``: 'trains' by writing the files a finished run leaves."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, args_path: Path, log_path: Path) -> int:
        args = json.loads(args_path.read_text())
        run_dir = Path(args["output_dir"])
        self.calls.append(run_dir)
        log_path.write_text("fake training\nTraceback: boom\n" if run_dir.name in self.fail else "fake training\n")
        if run_dir.name in self.fail:
            return 1
        epochs = int(resolve_setting(args, "train#trainer#max_epochs"))
        worst = 0.5 + 0.1 * args["seed"] + 0.01 * args.get("group_step_size", 0)
        (run_dir / "metrics.json").write_text(json.dumps(finished_report(epochs, worst)))
        (run_dir / "model_final.pt").write_bytes(b"weights")
        return 0


def grid(tmp_path, runner, overrides=None, seeds=(0, 1), step_sizes=()):
    runs = plan_runs(MNMS, seeds, tmp_path / "out", ["split1"], step_sizes, default_step_size=0.01)
    rows = run_grid(MNMS, runs, tmp_path / "data", overrides=overrides or {"max_epochs": 2}, runner=runner)
    return runs, rows


# ------------------------------------------------------------------------------------ plan


def test_plan_orders_teacher_first_and_adds_step_size_runs(tmp_path):
    runs = plan_runs(MNMS, [0, 1], tmp_path, None, [0, 0.01, 0.1, 0.1], default_step_size=0.01)
    # 2 splits x 2 seeds x (4 methods + eta 0 + eta 0.1); 0.01 is GroupDistil's own run, 0.1 given twice
    assert len(runs) == 2 * 2 * 6
    first = runs[:6]
    assert [r.key for r in first] == ["teacher", "groupdro", "kd", "groupdistil", "groupdistil_eta0", "groupdistil_eta0.1"]
    assert {(r.split, r.seed) for r in first} == {("split1", 0)}
    assert first[0].run_dir == tmp_path / "runs" / "mnms" / "split1" / "seed0" / "teacher"
    assert first[0].teacher_dir is None and first[1].teacher_dir is None
    assert all(r.teacher_dir == first[0].run_dir for r in first[2:])
    assert [r.step_size for r in first[4:]] == [0.0, 0.1]
    assert runs[6].seed == 1 and runs[12].split == "split2"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": []}, "seeds must be"),
        ({"seeds": [1, 1]}, "seeds must be"),
        ({"splits": ["split1", "split1"]}, "splits must be"),
        ({"step_sizes": [-0.1]}, "group_step_sizes must be"),
    ],
)
def test_plan_refuses_bad_lists(tmp_path, kwargs, message):
    args = {"seeds": [0], "splits": None, "step_sizes": ()} | kwargs
    with pytest.raises(ValueError, match=message):
        plan_runs(MNMS, args["seeds"], tmp_path, args["splits"], args["step_sizes"])


def test_bundle_args_of_a_step_size_run(tmp_path):
    run = plan_runs(MNMS, [3], tmp_path, ["split2"], [0.1], default_step_size=0.01)[-1]
    args = bundle_args(MNMS, run, "data", extra_configs=["configs/demo.json"], overrides={"max_epochs": 1},
                       split_seed=7, teacher_ckpt="t.pt")
    configs = CONFIGS
    assert args == {
        "run_id": "training",
        "config_file": [str(configs / "train.json"), "configs/demo.json"],
        "dataset_dir": "data",
        "output_dir": str(run.run_dir),
        "seed": 3,
        "split_seed": 7,
        "split": "split2",
        "max_epochs": 1,
        "group_step_size": 0.1,
        "teacher_ckpt": "t.pt",
    }
    # what the bundle makes of them: the overrides win over the configs
    assert resolve_setting(args, "group_step_size") == 0.1
    assert resolve_setting(args, "train#trainer#max_epochs") == 1


def test_a_method_scoped_config_reaches_only_that_methods_runs(tmp_path):
    (tmp_path / "teacher.json").write_text(json.dumps({"max_epochs": 8}))
    extra = ["configs/demo.json", f"teacher:{tmp_path / 'teacher.json'}"]
    runs = {r.key: r for r in plan_runs(MNMS, [0], tmp_path, ["demo"])}
    teacher = bundle_args(MNMS, runs["teacher"], "data", extra_configs=extra)
    kd = bundle_args(MNMS, runs["kd"], "data", extra_configs=extra, teacher_ckpt="t.pt")
    assert teacher["config_file"][-2:] == ["configs/demo.json", str(tmp_path / "teacher.json")]
    assert kd["config_file"][-1] == "configs/demo.json"
    assert resolve_setting(teacher, "train#trainer#max_epochs") == 8
    assert resolve_setting(kd, "train#trainer#max_epochs") == 4  # configs/demo.json's


@pytest.mark.parametrize(
    ("item", "message"),
    [("teachr:configs/demo.json", "no method 'teachr' in mnms"), ("teacher:configs/nothing.json", "does not exist")],
)
def test_a_bad_scoped_config_is_refused(tmp_path, capsys, item, message):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--config_file", item, "--dry_run"])
    assert message in capsys.readouterr().err


def test_bundle_args_refuse_ids_the_grid_sets(tmp_path):
    run = plan_runs(MNMS, [0], tmp_path, ["split1"])[0]
    with pytest.raises(ValueError, match="--override or --grid sets seed, split"):
        bundle_args(MNMS, run, "data", overrides={"seed": 3, "split": "split2"})
    distiller = plan_runs(MNMS, [0], tmp_path, ["split1"])[2]
    with pytest.raises(ValueError, match="distils from a teacher"):
        bundle_args(MNMS, distiller, "data")


# ------------------------------------------------------------------------------- resuming


def test_run_state(tmp_path):
    assert run_state(tmp_path, 2) == "new"
    (tmp_path / "checkpoint_checkpoint_epoch=1.pt").write_bytes(b"")
    assert run_state(tmp_path, 2) == "partial"
    (tmp_path / "metrics.json").write_text(json.dumps(finished_report(1, 0.5)))
    assert run_state(tmp_path, 2) == "partial"  # evaluated epoch 1 of 2
    (tmp_path / "metrics.json").write_text(json.dumps(finished_report(2, 0.5)))
    assert run_state(tmp_path, 2) == "done"
    broken = finished_report(2, 0.5)
    broken["metrics"]["test_worst_group_acc"] = None
    (tmp_path / "metrics.json").write_text(json.dumps(broken))
    assert run_state(tmp_path, 2) == "partial"  # a figure the tables need is missing


def test_second_invocation_trains_nothing_and_an_incomplete_run_is_rerun(tmp_path, caplog):
    runner = FakeRunner()
    runs, rows = grid(tmp_path, runner)
    assert runner.calls == [r.run_dir for r in runs] and len(runs) == 8
    teacher_args = json.loads((runs[0].run_dir / RUN_ARGS).read_text())
    kd_args = json.loads((runs[2].run_dir / RUN_ARGS).read_text())
    assert "teacher_ckpt" not in teacher_args
    assert kd_args["teacher_ckpt"] == str(runs[0].run_dir / "model_final.pt")
    assert [r["worst_group"] for r in rows[:5]] == [0.5, 0.5, 0.5, 0.5, 0.6]  # seed 0 (0.5), then seed 1 (0.6)
    assert [r["eta_w"] for r in rows[:4]] == [0.01, 0.01, None, 0.01]

    again = FakeRunner()
    caplog.clear()
    with caplog.at_level("INFO", logger="mnms_groupdistil.reproduce"):
        _, rows_again = grid(tmp_path, again)
    assert again.calls == []
    assert rows_again == rows
    assert sum("finished earlier, reused" in m for m in caplog.messages) == 8
    assert caplog.messages[0].startswith("[1/8] mnms split1 seed 0 teacher: finished earlier, reused; held-out vendor")

    # seed 1's KD stopped after epoch 1 of 2: only it runs again
    kd1 = runs[6].run_dir
    (kd1 / "metrics.json").write_text(json.dumps(finished_report(1, 0.1)))
    third = FakeRunner()
    grid(tmp_path, third)
    assert third.calls == [kd1]


def test_a_folder_with_other_settings_is_refused(tmp_path):
    grid(tmp_path, FakeRunner())
    with pytest.raises(ValueError, match=r"other settings \(max_epochs differ.*use another --output_dir"):
        grid(tmp_path, FakeRunner(), overrides={"max_epochs": 3})


def test_a_failed_run_stops_the_grid_and_names_its_log(tmp_path):
    runner = FakeRunner(fail={"kd"})
    with pytest.raises(RuntimeError, match=r"(?s)seed 0 kd failed \(exit status 1\).*bundle.log.*resumes.*boom"):
        grid(tmp_path, runner)
    assert [p.name for p in runner.calls] == ["teacher", "groupdro", "kd"]
    # the next invocation reuses the two finished runs and tries the failed one again
    retry = FakeRunner()
    grid(tmp_path, retry)
    assert [p.name for p in retry.calls[:1]] == ["kd"] and len(retry.calls) == 6


def test_outputs_of_a_grid(tmp_path):
    runs, rows = grid(tmp_path, FakeRunner(), step_sizes=[0, 1])
    written = write_outputs(MNMS, runs, rows, tmp_path / "out", ["Command: `x`"])
    text = written["results.md"].read_text(encoding="utf-8")
    assert "| KD | DenseNet-121 | 55.0 ± 7.1 | 55.8 ± 7.0 |" in text  # seeds 0.5, 0.6 -> 55.0 +- 7.07
    assert "## GroupDistil against the group weight step size eta_w" in text
    assert "| 1 | 56.0 ± 7.1 | 56.0 ± 7.1 |" in text  # 0.5 + 0.01 * 1, 0.6 + 0.01 * 1
    with open(written["results.csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == len(runs) == 2 * 6
    assert {"group_accuracy_mnms_split1.png", "step_sizes_mnms_split1.png"} <= set(written)
    assert "group_weights_mnms_split1.png" not in written  # the stand-in wrote no TensorBoard files


# ----------------------------------------------------------------------------- the study


def test_grid_axes_give_every_combination():
    cells = parse_grid(["batching=one_group,balanced", "lr_schedule=constant,cosine", "ema_epochs=0.5"])
    assert cells == [
        {"batching": "one_group", "lr_schedule": "constant", "ema_epochs": 0.5},
        {"batching": "one_group", "lr_schedule": "cosine", "ema_epochs": 0.5},
        {"batching": "balanced", "lr_schedule": "constant", "ema_epochs": 0.5},
        {"batching": "balanced", "lr_schedule": "cosine", "ema_epochs": 0.5},
    ]
    assert parse_grid([]) == [{}]
    for bad, message in (("batching", "ID=VALUE"), ("batching=", "ID=VALUE"), ("batching=mixed,mixed", "repeated")):
        with pytest.raises(ValueError, match=message):
            parse_grid([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_grid(["seed=1", "seed=2"])


def test_a_study_runs_each_cell_apart_and_reports_the_last_epochs(tmp_path):
    cells = parse_grid(["batching=mixed,balanced"])
    runs = plan_runs(MNMS, [0, 1], tmp_path / "out", ["demo"], cells=cells, methods=["kd"])
    # the teacher comes with the distiller; one folder per cell
    assert [(r.cell, r.seed, r.key) for r in runs[:4]] == [
        ("batching=mixed", 0, "teacher"), ("batching=mixed", 0, "kd"), ("batching=mixed", 1, "teacher"),
        ("batching=mixed", 1, "kd"),
    ]  # fmt: skip
    assert runs[-1].run_dir == tmp_path / "out" / "runs" / "mnms" / "demo" / "batching-balanced" / "seed1" / "kd"
    assert runs[-1].teacher_dir == runs[-2].run_dir
    runner = FakeRunner()
    rows = run_grid(MNMS, runs, tmp_path / "data", overrides={"max_epochs": 2, "batching": "one_group"}, runner=runner)
    recorded = [json.loads((r.run_dir / RUN_ARGS).read_text())["batching"] for r in runs]
    assert recorded == ["mixed"] * 4 + ["balanced"] * 4  # the cell's setting beats an --override
    assert [r["cell"] for r in rows] == [r.cell for r in runs]
    assert rows[0]["test_last_worst_group"] == 0.5 and rows[0]["test_swing"] == 0.0
    text = write_outputs(MNMS, runs, rows, tmp_path / "out")["results.md"].read_text(encoding="utf-8")
    assert "## Stability study" in text and "## Cell batching=balanced" in text
    assert "| batching=balanced | groupDRO ResNet-18 (teacher) | - | - | - | 55.0 ± 7.1 | 0.0 | 1 of 2 |" in text
    with pytest.raises(ValueError, match="no method 'teachers'"):
        plan_runs(MNMS, [0], tmp_path, ["demo"], methods=["teachers"])
    with pytest.raises(ValueError, match="--override or --grid sets seed"):
        bundle_args(MNMS, plan_runs(MNMS, [0], tmp_path, ["demo"], cells=[{"seed": 3}])[0], tmp_path)


# ------------------------------------------------------------------------------ end to end

#: The tiny run as the grid's options: 8-frame batches, 2 test frames per patient, every iteration logged.
GRID_SETTINGS = {k: v for k, v in TINY_MNMS.items() if k != "split"}
GRID_SETTINGS.update(batch_size=8, test_frames_per_patient=2, log_interval=1)
TINY_GRID = ["--splits", TINY_MNMS["split"], "--override", *(f"{k}={v}" for k, v in GRID_SETTINGS.items())]


def in_process(bundle):
    """What ``python -m monai.bundle run --args_file`` does, in this process (saves a Python start per run)."""

    def runner(args_path: Path, log_path: Path) -> int:
        args = json.loads(args_path.read_text())
        bundle.run(args.pop("config_file"), workflow_type=None, run_id=args.pop("run_id"), **args)
        return 0

    return runner


@pytest.mark.slow
def test_grid_end_to_end(tmp_path, caplog, cohort, bundle):
    """Two seeds of the demo split through the real bundle configs (1 epoch, 32 px), then again: nothing reruns."""
    out = tmp_path / "grid"
    argv = [str(cohort), "--seeds", "0", "1", "--output_dir", str(out), "--group_step_sizes", "0", *TINY_GRID]
    with caplog.at_level("INFO", logger="mnms_groupdistil.reproduce"):
        assert main(argv, runner=in_process(bundle)) == 0
    progress = [m for m in caplog.messages if m.startswith("[")]
    assert sum(": done in " in m for m in progress) == 10, progress  # 2 seeds x (4 methods + eta 0)
    assert progress[0].startswith("[1/10] mnms demo seed 0 teacher: training")

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["seed"] for r in rows} == {"0", "1"}
    for r in rows:
        report = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert float(r["worst_group"]) == report["metrics"]["test_worst_group_acc"]
        assert r["selection"] == report["selection"]["rule"] == "last_epoch"
        assert min(float(r[f"acc_{g}"]) for g in "ACD") == pytest.approx(float(r["worst_group"]))
        assert json.loads((Path(r["run_dir"]) / "split.json").read_text())["split_seed"] == 0
    teacher = next(r["run_dir"] for r in rows if r["run"] == "teacher" and r["seed"] == "1")
    kd = Path(next(r["run_dir"] for r in rows if r["run"] == "kd" and r["seed"] == "1"))
    assert json.loads((kd / RUN_ARGS).read_text())["teacher_ckpt"] == str(Path(teacher) / "model_final.pt")
    text = (out / "results.md").read_text(encoding="utf-8")
    assert "| GroupDistil | DenseNet-121 |" in text and "## GroupDistil against the group weight step size" in text
    for name in ("group_weights_mnms_demo.png", "group_accuracy_mnms_demo.png", "group_weights_eta_mnms_demo.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # a second invocation trains nothing but a run whose folder was emptied (stopped before its first checkpoint)
    for path in kd.iterdir():
        if path.name != RUN_ARGS:
            path.unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="mnms_groupdistil.reproduce"):
        assert main(argv, runner=in_process(bundle)) == 0
    progress = [m for m in caplog.messages if m.startswith("[")]
    assert sum("finished earlier, reused" in m for m in progress) == 9
    assert any(m.startswith("[8/10] mnms demo seed 1 kd: training") for m in progress), progress
    assert (kd / "metrics.json").is_file()


@pytest.mark.slow
def test_run_bundle_trains_in_a_new_process(tmp_path, cohort):
    """The default runner: ``python -m monai.bundle run --args_file`` in a subprocess, output to the log."""
    run = plan_runs(MNMS, [0], tmp_path / "grid", ["demo"])[0]
    overrides = parse_overrides(TINY_GRID[TINY_GRID.index("--override") + 1 :])
    run.run_dir.mkdir(parents=True)
    (run.run_dir / RUN_ARGS).write_text(json.dumps(bundle_args(MNMS, run, cohort, overrides=overrides)))
    env = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert run_bundle(run.run_dir / RUN_ARGS, run.run_dir / "bundle.log") == 0
    assert run_state(run.run_dir, 1) == "done"
    assert "--args_file" in (run.run_dir / "bundle.log").read_text(encoding="utf-8", errors="replace").splitlines()[0]


@pytest.mark.slow
def test_a_grid_run_into_a_busy_folder_stops_on_the_lock(tmp_path, cohort, monkeypatch):
    """A run folder in use by another process (a second grid on the same --output_dir) is not trained twice."""
    run = plan_runs(MNMS, [0], tmp_path / "grid", ["demo"])[0]
    overrides = parse_overrides(TINY_GRID[TINY_GRID.index("--override") + 1 :])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lock = RunLock(run.run_dir).acquire()
    try:
        with pytest.raises(RuntimeError, match=rf"(?s)failed \(exit status 1\).*output_dir {run.run_dir} is in use"):
            run_grid(MNMS, [run], cohort, overrides=overrides)
    finally:
        lock.release()
    assert not (run.run_dir / "metrics.json").exists()


# ------------------------------------------------------------------------------ Waterbirds


class TableRunner(FakeRunner):
    """'Trains' a Waterbirds run by writing the figures of ``table[(run, seed)]`` (worst, adjusted average)."""

    def __init__(self, table: dict, fail: set[str] = frozenset()) -> None:
        super().__init__(fail)
        self.table = table

    def __call__(self, args_path: Path, log_path: Path) -> int:
        args = json.loads(args_path.read_text())
        run_dir = Path(args["output_dir"])
        self.calls.append(run_dir)
        log_path.write_text("fake training\n")
        if run_dir.name in self.fail:
            return 1
        worst, adjusted = self.table[(run_dir.name, args["seed"])]
        report = finished_report(int(resolve_setting(args, "train#trainer#max_epochs")), worst)
        report["metrics"]["test_adjusted_average_acc"] = adjusted
        (run_dir / "metrics.json").write_text(json.dumps(report))
        (run_dir / "model_final.pt").write_bytes(b"weights")
        return 0


WB_TABLE = {
    (run, seed): (worst, adjusted)
    for seed, figures in enumerate(
        [
            {"teacher": (0.8, 0.9), "erm": (0.1, 0.95), "groupdro": (0.6, 0.8), "kd": (0.5, 0.9), "groupdistil": (0.6, 0.85)},
            {"teacher": (0.7, 0.9), "erm": (0.2, 0.95), "groupdro": (0.6, 0.8), "kd": (0.7, 0.8), "groupdistil": (0.6, 0.8)},
        ]
    )
    for run, (worst, adjusted) in figures.items()
}  # fmt: skip


def test_waterbirds_grid_runs_five_methods_without_splits(tmp_path):
    runs = plan_runs(WATERBIRDS, [0, 1], tmp_path / "out")
    assert [r.key for r in runs[:5]] == ["teacher", "erm", "groupdro", "kd", "groupdistil"]
    assert runs[0].run_dir == tmp_path / "out" / "runs" / "waterbirds" / "official" / "seed0" / "teacher"
    with pytest.raises(ValueError, match="one fixed split \\(official\\); --splits split1 does not apply"):
        plan_runs(WATERBIRDS, [0], tmp_path, ["split1"])
    args = bundle_args(WATERBIRDS, runs[3], "data", overrides={"max_epochs": 1}, teacher_ckpt="t.pt")
    configs = WATERBIRDS_BUNDLE.configs
    assert args["config_file"] == [str(configs / "train.json"), str(configs / "train_kd.json")]
    assert "split_seed" not in args and "split" not in args  # the official split is fixed by metadata.csv
    assert resolve_setting(args, "mode") == "kd" and resolve_setting(args, "train#trainer#max_epochs") == 1
    assert resolve_setting(bundle_args(WATERBIRDS, runs[0], "data"), "network_name") == "resnet50"

    rows = run_grid(WATERBIRDS, runs, tmp_path / "data", overrides={"max_epochs": 2}, runner=TableRunner(WB_TABLE))
    written = write_outputs(WATERBIRDS, runs, rows, tmp_path / "out")
    text = written["results.md"].read_text(encoding="utf-8")
    # KD adjusted 0.9, 0.8 -> 85.0 +- 7.1; worst 0.5, 0.7 -> 60.0 +- 14.1
    assert "| KD | ResNet-18 | 85.0 ± 7.1 | 95.2 | 60.0 ± 14.1 | 78.0 |" in text
    assert "| ERM | ResNet-18 | 95.0 ± 0.0 | - | 15.0 ± 7.1 | - |" in text
    assert "## Paired difference GroupDistil - KD per seed" in text
    # adjusted 0.85 - 0.9 = -5, 0.8 - 0.8 = 0 -> -2.5 +- 3.5; worst +10, -10 -> 0 +- 14.1
    assert "| official | adjusted average, GroupDistil - KD | -5.0 (seed 0), +0.0 (seed 1) | -2.5 ± 3.5 | 0 of 2 |" in text
    assert "| official | worst-group, GroupDistil - KD | +10.0 (seed 0), -10.0 (seed 1) | +0.0 ± 14.1 | 1 of 2 |" in text


def test_two_jobs_train_every_run_once_and_distil_after_the_teacher(tmp_path):
    runner = TableRunner(WB_TABLE)
    runs = plan_runs(WATERBIRDS, [0, 1], tmp_path / "out")
    rows = run_grid(WATERBIRDS, runs, tmp_path / "data", overrides={"max_epochs": 2}, runner=runner, jobs=2)
    assert sorted(runner.calls) == sorted(r.run_dir for r in runs)
    for run in runs:
        if run.teacher_dir is not None:
            assert runner.calls.index(run.teacher_dir) < runner.calls.index(run.run_dir)
    # rows come in the plan's order whatever order the runs finished in
    assert [(r["run"], r["seed"]) for r in rows] == [(r.key, r.seed) for r in runs]
    with pytest.raises(ValueError, match="jobs must be a positive int, got 0"):
        run_grid(WATERBIRDS, runs, tmp_path / "data", runner=runner, jobs=0)


def test_a_failed_run_with_two_jobs_starts_nothing_after_it(tmp_path):
    runner = TableRunner(WB_TABLE, fail={"teacher"})
    runs = plan_runs(WATERBIRDS, [0, 1], tmp_path / "out")
    with pytest.raises(RuntimeError, match="seed 0 teacher failed"):
        run_grid(WATERBIRDS, runs, tmp_path / "data", overrides={"max_epochs": 2}, runner=runner, jobs=2)
    # ERM and groupDRO of seed 0 may have trained beside the teacher; KD waited for the teacher, and after its
    # failure nothing else started (no distilling run, nothing of seed 1)
    assert runs[0].run_dir in runner.calls
    assert set(runner.calls) <= {r.run_dir for r in runs[:3]}


def test_digits_study_settings_are_waterbirds_bundle_ids():
    """``configs/digits.json`` (the settings of the digits study) only sets ids the Waterbirds bundle has."""
    settings = json.loads((REPO / "configs" / "digits.json").read_text())
    train = json.loads((WATERBIRDS_BUNDLE.configs / "train.json").read_text())
    assert set(settings) <= set(train), sorted(set(settings) - set(train))
    run = plan_runs(WATERBIRDS, [0], "out")[0]
    args = bundle_args(WATERBIRDS, run, "data", extra_configs=[REPO / "configs" / "digits.json"])
    assert resolve_setting(args, "train#trainer#max_epochs") == settings["max_epochs"]
    assert resolve_setting(args, "network_name") == "resnet50"  # the teacher's network is not touched
