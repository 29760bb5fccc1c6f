"""The reproduction grid: plan, settings per run, resuming, and one small grid through the real bundles.

Most tests replace the bundle runner by a stand-in that writes the ``metrics.json`` a finished run
writes (its settings read back from the run's ``run_args.json``), so that what the grid runs,
reuses and refuses is checked in milliseconds. ``test_grid_end_to_end`` runs the real bundle configs
on a tiny generated cohort (in this process, to save a Python start per run);
``test_run_bundle_trains_in_a_new_process`` checks the default runner, a subprocess per run;
``test_grid_as_jobs_of_submitit_s_local_executor`` runs two tiny runs as jobs (``--launcher slurm`` with
submitit's local executor in place of a SLURM cluster).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO, TINY_MNMS, WATERBIRDS_BUNDLE

from mnms_groupdistil.overrides import parse_overrides
from mnms_groupdistil.run_lock import RunLock
from mnms_groupdistil.tools.registry import MNMS, WATERBIRDS
from mnms_groupdistil.tools.reproduce import (
    RUN_ARGS,
    bundle_args,
    bundle_command,
    main,
    parse_grid,
    plan_runs,
    resolve_setting,
    run_bundle,
    run_grid,
    run_state,
    write_outputs,
)
from mnms_groupdistil.tools.slurm import JOBS_FOLDER, JobRunner, job_parameters, make_executor, parse_time


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
    assert [r.key for r in first] == [
        "teacher",
        "groupdro",
        "kd",
        "groupdistil",
        "groupdistil_eta0",
        "groupdistil_eta0.1",
    ]
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
    args = bundle_args(
        MNMS,
        run,
        "data",
        extra_configs=["configs/demo.json"],
        overrides={"max_epochs": 1},
        split_seed=7,
        teacher_ckpt="t.pt",
    )
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
    with caplog.at_level("INFO", logger="mnms_groupdistil.tools.reproduce"):
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
    with caplog.at_level("INFO", logger="mnms_groupdistil.tools.reproduce"):
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
    with caplog.at_level("INFO", logger="mnms_groupdistil.tools.reproduce"):
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
    assert (
        "| official | adjusted average, GroupDistil - KD | -5.0 (seed 0), +0.0 (seed 1) | -2.5 ± 3.5 | 0 of 2 |" in text
    )
    assert (
        "| official | worst-group, GroupDistil - KD | +10.0 (seed 0), -10.0 (seed 1) | +0.0 ± 14.1 | 1 of 2 |" in text
    )


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


# ------------------------------------------------------------------------------ SLURM jobs


def test_slurm_time_limits_in_minutes():
    cases = {"90": 90, "90:30": 91, "2:00:00": 120, "0:00:59": 1, "1-12": 2160, "1-0:30": 1470, "2-0:0:1": 2881}
    assert {text: parse_time(text) for text in cases} == cases
    for bad in ("", "2h", "1:2:3:4", "-5", "1-", "0", "0:00:00"):
        with pytest.raises(ValueError, match="--time"):
            parse_time(bad)


def test_job_parameters_options_over_the_file(tmp_path):
    file = tmp_path / "params.json"
    file.write_text(json.dumps({"slurm_account": "lab", "slurm_partition": "cpu", "timeout_min": 30, "mem_gb": 16}))
    assert job_parameters("gpu", 2, 8, "1:00:00", file) == {
        "slurm_account": "lab",
        "slurm_partition": "gpu",
        "timeout_min": 60,
        "mem_gb": 16,
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "nodes": 1,
        "tasks_per_node": 1,
    }
    assert job_parameters(parameters_file=file)["gpus_per_node"] == 1  # one GPU per run unless told otherwise
    with pytest.raises(ValueError, match="needs each run's time limit: --time"):
        job_parameters("gpu")
    assert "timeout_min" not in job_parameters("gpu", need_time=False)
    with pytest.raises(ValueError, match="--gpus_per_run must be 0 or more"):
        job_parameters(gpus_per_run=-1, time="5")
    file.write_text("{not json")
    with pytest.raises(ValueError, match="--slurm_parameters .*params.json: cannot read it as JSON"):
        job_parameters(time="5", parameters_file=file)
    with pytest.raises(ValueError, match="submitit refuses the job parameters: Unknown argument 'partiton'"):
        make_executor(tmp_path / "jobs", {"timeout_min": 5, "slurm_partiton": "gpu"}, cluster="local")


def test_slurm_options_need_the_slurm_launcher(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "data"), "--partition", "gpu", "--time", "10"], runner=FakeRunner())
    assert "--partition, --time only apply to --launcher slurm" in capsys.readouterr().err


class _Job:
    job_id = "42"
    state = "TIMEOUT"

    def __init__(self, outcome):
        self.outcome = outcome

    @property
    def paths(self):
        return type("Paths", (), {"stdout": Path("42_0_log.out")})

    def result(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class _Executor:
    """Records what a JobRunner asks of a submitit executor; its jobs end with ``outcomes`` in turn."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.names, self.submitted = [], []

    def update_parameters(self, **parameters):
        self.names.append(parameters["name"])

    def submit(self, function, *args):
        self.submitted.append((function, args))
        return _Job(self.outcomes.pop(0))


def test_job_runner_returns_the_run_s_status_or_1_for_a_job_without_one(tmp_path):
    from submitit.core.utils import UncompletedJobError

    executor = _Executor(0, UncompletedJobError("Job 42 exceeded its time limit"))
    runner = JobRunner(executor, run_bundle, processes=4)
    run_dir = tmp_path / "split1" / "seed0" / "kd"
    run_dir.mkdir(parents=True)
    assert runner(run_dir / RUN_ARGS, run_dir / "bundle.log") == 0
    assert executor.submitted == [(run_bundle, (run_dir / RUN_ARGS, run_dir / "bundle.log", 4))]
    assert executor.names == ["split1_seed0_kd"]
    assert runner(run_dir / RUN_ARGS, run_dir / "bundle.log") == 1
    log = (run_dir / "bundle.log").read_text()
    assert "job 42 ended without finishing the run (TIMEOUT)" in log and "exceeded its time limit" in log


def test_bundle_command_of_a_job_with_several_gpus(tmp_path):
    one = bundle_command(tmp_path / RUN_ARGS)
    assert one[1:] == ["-m", "monai.bundle", "run", "--args_file", str(tmp_path / RUN_ARGS)]
    four = bundle_command(tmp_path / RUN_ARGS, processes=4)
    assert four[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert four[6:] == one[2:]


def test_collect_summarises_finished_runs_and_trains_nothing(tmp_path, caplog):
    (tmp_path / "data").mkdir()
    argv = [str(tmp_path / "data"), "--splits", "split1", "--seeds", "0", "1", "--output_dir", str(tmp_path / "out")]
    argv += ["--override", "max_epochs=2"]
    assert main(argv, runner=FakeRunner()) == 0
    trained = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    (tmp_path / "out" / "results.md").unlink()
    runner = FakeRunner()
    assert main([*argv, "--collect"], runner=runner) == 0
    assert runner.calls == []
    assert (tmp_path / "out" / "results.md").read_text(encoding="utf-8").split("\n")[3:] == trained.split("\n")[3:]

    kd = tmp_path / "out" / "runs" / "mnms" / "split1" / "seed1" / "kd"
    (kd / "metrics.json").write_text(json.dumps(finished_report(1, 0.1)))  # stopped after epoch 1 of 2
    caplog.clear()
    with caplog.at_level("ERROR", logger="mnms_groupdistil.tools.reproduce"):
        assert main([*argv, "--collect"], runner=runner) == 1
    assert runner.calls == []
    assert "1 of 8 runs have not finished" in caplog.text and f"split1 seed 1 kd: partial ({kd})" in caplog.text


@pytest.mark.slow
def test_grid_as_jobs_of_submitit_s_local_executor(tmp_path, cohort, monkeypatch, caplog):
    """``--launcher slurm`` with submitit's local executor: the teacher and a KD student as two jobs, the student
    submitted once the teacher's job has ended; a second command submits nothing; --collect writes the summary."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "grid"
    argv = [str(cohort), "--seeds", "0", "--methods", "kd", "--output_dir", str(out), *TINY_GRID]
    argv += ["--launcher", "slurm", "--partition", "gpu", "--gpus_per_run", "1", "--cpus_per_run", "1", "--time", "10"]
    with caplog.at_level("INFO"):
        assert main(argv, cluster="local") == 0
    lines = [m for m in caplog.messages if "submitted" in m or m.startswith("[")]
    teacher_job, kd_job = (m.split("job ")[1].split()[0] for m in lines if "submitted" in m)
    assert [m.split(":")[0] for m in lines] == [
        "[1/2] mnms demo seed 0 teacher", "demo_seed0_teacher", "[1/2] mnms demo seed 0 teacher",
        "[2/2] mnms demo seed 0 kd", "demo_seed0_kd", "[2/2] mnms demo seed 0 kd",
    ]  # fmt: skip
    assert ": done in " in lines[2] and ": done in " in lines[5]
    jobs = out / JOBS_FOLDER
    results = sorted(p.name for p in jobs.glob("*_result.pkl"))
    assert results == sorted(f"{job}_0_result.pkl" for job in (teacher_job, kd_job))
    for run, job in (("teacher", teacher_job), ("kd", kd_job)):
        run_dir = out / "runs" / "mnms" / "demo" / "seed0" / run
        assert run_state(run_dir, 1) == "done"
        assert (run_dir / "bundle.log").read_text(encoding="utf-8").startswith("$ ")  # the job ran the bundle
        assert "Job completed successfully" in (jobs / f"{job}_0_log.out").read_text(encoding="utf-8")
    kd_args = json.loads((out / "runs" / "mnms" / "demo" / "seed0" / "kd" / RUN_ARGS).read_text())
    assert kd_args["teacher_ckpt"] == str(out / "runs" / "mnms" / "demo" / "seed0" / "teacher" / "model_final.pt")
    summary = (out / "results.md").read_text(encoding="utf-8")
    assert "| KD | DenseNet-121 |" in summary and "--launcher slurm" in summary

    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(argv, cluster="local") == 0  # everything finished: no job
    assert sum("finished earlier, reused" in m for m in caplog.messages) == 2
    assert not any("submitted" in m for m in caplog.messages)
    assert len(list(jobs.glob("*_result.pkl"))) == 2
    (out / "results.md").unlink()
    assert main([*argv, "--collect"], cluster="local") == 0
    assert (out / "results.md").read_text(encoding="utf-8").split("\n")[3:] == summary.split("\n")[3:]
