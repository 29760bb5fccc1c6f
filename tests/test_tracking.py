"""MLflow tracking of the bundles' runs (``--tracking mlflow``, MONAI's option), read back through MLflow's client.

Every tracked run here uses MONAI's default store, a SQLite file ``<output_dir>/mlruns.db``; what a run recorded
is read with ``MlflowClient`` (metric histories, parameters, tags, artifacts listed and downloaded) and checked
against what the run wrote by other paths: its ``metrics.json`` and ``evaluation.json``, its checkpoint's group
weights, its ``run_config.json``, and the iterations that ``log_interval`` selects, derived here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY, TINY_MNMS, exception_chain, refused
from mlflow import MlflowClient

from mnms_groupdistil.datasets.waterbirds.synthetic import write_waterbirds
from mnms_groupdistil.tracking import TrackingNotInstalledError, grid_run_args, log_summary, untracked

#: MONAI's default experiment of ``--tracking mlflow``.
EXPERIMENT = "monai_experiment"
#: What the message of a run that cannot track names.
EXTRA = "pip install 'mnms_groupdistil[tracking]'"
MNMS_GROUPS = ("A", "C", "D")
WATERBIRDS_GROUPS = ("landbird_land", "landbird_water", "waterbird_land", "waterbird_water")


def client_of(run_dir: Path) -> MlflowClient:
    """The client of MONAI's default store of a run folder: ``sqlite:///<output_dir>/mlruns.db``."""
    assert (run_dir / "mlruns.db").is_file(), f"no MLflow store in {run_dir}"
    return MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlruns.db'}")


def runs_of(client: MlflowClient, experiment: str = EXPERIMENT) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def artifact_names(client: MlflowClient, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def downloaded_json(client: MlflowClient, run, name: str, tmp_path: Path) -> dict:
    path = client.download_artifacts(run.info.run_id, name, str(tmp_path))
    return json.loads(Path(path).read_text())


def logged_steps(log_interval: int, epoch_length: int, epochs: int) -> list[int]:
    """The iterations a logger with ``log_interval`` writes: every ``log_interval``-th and each epoch's last."""
    last = epoch_length * epochs
    return [i for i in range(1, last + 1) if i % log_interval == 0 or i % epoch_length == 0]


def same_figure(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def check_training_run(client, run, out: Path, groups, epochs: int, log_interval: int, tmp_path: Path) -> None:
    """Everything a tracked training run records, against its own files."""
    assert run.info.status == "FINISHED"
    params = run.data.params
    settings = json.loads((out / "run_config.json").read_text())["settings"]
    assert {k: params[k] for k in settings} == {k: str(v) for k, v in settings.items()}

    epoch_length = int(params["epoch_length"])
    steps = logged_steps(log_interval, epoch_length, epochs)
    loss = history(client, run, "train_loss")
    assert [s for s, _ in loss] == steps and all(math.isfinite(v) for _, v in loss)
    weights = {g: history(client, run, f"group_weight/{g}") for g in groups}
    for g in groups:
        assert [s for s, _ in weights[g]] == steps
    for index in range(len(steps)):  # the weights of a step sum to one
        assert math.isclose(sum(weights[g][index][1] for g in groups), 1.0, rel_tol=1e-5)
    final = torch.load(out / "checkpoint_final.pt", weights_only=True)["group_weights"]["log_weights"]
    final = torch.softmax(final, dim=0).tolist()  # the weights are stored as logs (GroupWeights)
    for index, g in enumerate(groups):
        assert math.isclose(weights[g][-1][1], final[index], rel_tol=1e-5), g
    assert any(history(client, run, f"group_loss/{g}") for g in groups)

    report = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in report["history"]] == list(range(1, epochs + 1))
    figures = {name for h in report["history"] for name in h["metrics"]}
    assert any(n.startswith("test_") for n in figures)
    for name in figures:
        expected = [(h["epoch"], h["metrics"][name]) for h in report["history"] if name in h["metrics"]]
        logged = history(client, run, name)
        assert [s for s, _ in logged] == [s for s, _ in expected], name
        assert all(same_figure(a, b) for (_, a), (_, b) in zip(logged, expected)), name

    assert {"run_config.json", "split.json", "metrics.json"} <= artifact_names(client, run)
    assert downloaded_json(client, run, "metrics.json", tmp_path) == report


# ----------------------------------------------------------------------------------------- M&Ms


@pytest.fixture(scope="module")
def mnms_run(bundle, cohort, tmp_path_factory) -> Path:
    """A tracked groupDRO teacher of the M&Ms bundle, 2 epochs, trained with the command
    MONAI documents (``python -m monai.bundle run training ... --tracking mlflow``), then evaluated (tracked)."""
    out = tmp_path_factory.mktemp("tracked") / "teacher"
    settings = {**TINY_MNMS, "max_epochs": 2, "log_interval": 2, "test_frames_per_patient": 2}
    proc = bundle.cli(
        "training",
        ["train.json", "train_teacher.json"],
        tracking="mlflow",
        dataset_dir=cohort,
        output_dir=out,
        **settings,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle.run(
        ["train.json", "train_teacher.json", "evaluate.json"],
        workflow_type=None,
        run_id="evaluating",
        tracking="mlflow",
        dataset_dir=str(cohort),
        output_dir=str(out),
        **settings,
    )
    return out


@pytest.mark.slow
def test_a_tracked_mnms_training_records_its_loss_group_weights_and_figures(mnms_run, tmp_path):
    client = client_of(mnms_run)
    training = runs_of(client)[0]
    check_training_run(client, training, mnms_run, MNMS_GROUPS, epochs=2, log_interval=2, tmp_path=tmp_path)
    tags = {k: training.data.tags[k] for k in ("mode", "split", "seed")}
    assert tags == {"mode": "groupdro", "split": "demo", "seed": "0"}


@pytest.mark.slow
def test_a_tracked_mnms_evaluation_is_a_run_of_its_own(mnms_run, tmp_path):
    client = client_of(mnms_run)
    runs = runs_of(client)
    assert len(runs) == 2  # the training, then the evaluation
    evaluation = runs[1]
    report = json.loads((mnms_run / "evaluation.json").read_text())
    assert report["metrics"] and all(name.startswith("test_") for name in report["metrics"])
    for name, value in report["metrics"].items():
        assert [s for s, _ in history(client, evaluation, name)] == [1], name
        assert same_figure(history(client, evaluation, name)[0][1], value), name
    assert evaluation.data.params["checkpoint"] == str(mnms_run / "model_final.pt")
    assert evaluation.data.tags["workflow"] == "evaluate"
    assert {"evaluation.json", "run_config.json"} <= artifact_names(client, evaluation)
    assert downloaded_json(client, evaluation, "evaluation.json", tmp_path) == report


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train_kd.json", "train_groupdro.json", "train_erm.json", None])
def test_every_mnms_train_config_is_tracked(bundle, cohort, untrained_teacher, tmp_path, mode):
    """train.json alone (GroupDistil) and with each mode file: the tracked trainer's records are complete."""
    configs = ["train.json", *([mode] if mode else [])]
    out = tmp_path / "run"
    bundle.run(
        configs,
        tracking="mlflow",
        dataset_dir=str(cohort),
        output_dir=str(out),
        teacher_ckpt=str(untrained_teacher),
        **{**TINY_MNMS, "log_interval": 1, "test_frames_per_patient": 2},
    )
    client = client_of(out)
    [run] = runs_of(client)
    check_training_run(client, run, out, MNMS_GROUPS, epochs=1, log_interval=1, tmp_path=tmp_path)


@pytest.mark.slow
def test_under_torchrun_only_the_main_process_tracks(bundle, cohort, tmp_path):
    """Two CPU processes (gloo): one MLflow run, whose figures are those of the run's metrics.json."""
    out = tmp_path / "ddp"
    configs = bundle.paths(["train.json", "train_teacher.json", "multi_gpu_train.json"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "training", "--config_file", repr(configs)]
    settings = {**TINY_MNMS, "max_epochs": 2, "log_interval": 1, "dataset_dir": cohort, "output_dir": out}
    command += [item for key, value in settings.items() for item in (f"--{key}", str(value))] + ["--tracking", "mlflow"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = client_of(out)
    [run] = runs_of(client)
    assert run.info.status == "FINISHED"
    report = json.loads((out / "metrics.json").read_text())
    logged = history(client, run, "test_worst_group_acc")
    assert [s for s, _ in logged] == [1, 2]
    assert all(same_figure(v, h["metrics"]["test_worst_group_acc"]) for (_, v), h in zip(logged, report["history"]))


# ------------------------------------------------------------------------------------ Waterbirds


@pytest.fixture(scope="module")
def waterbirds(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("waterbirds")
    write_waterbirds(parent, preset="tiny", seed=0)
    return parent


@pytest.mark.slow
def test_a_tracked_waterbirds_training_and_evaluation(waterbirds_bundle, waterbirds, tmp_path):
    out = tmp_path / "teacher"
    settings = {**TINY, "max_epochs": 2, "log_interval": 3, "network_name": "resnet18"}
    configs = ["train.json", "train_teacher.json"]
    waterbirds_bundle.run(configs, tracking="mlflow", dataset_dir=str(waterbirds), output_dir=str(out), **settings)
    waterbirds_bundle.run(
        [*configs, "evaluate.json"],
        workflow_type=None,
        run_id="evaluating",
        tracking="mlflow",
        dataset_dir=str(waterbirds),
        output_dir=str(out),
        **settings,
    )
    client = client_of(out)
    training, evaluation = runs_of(client)
    check_training_run(client, training, out, WATERBIRDS_GROUPS, epochs=2, log_interval=3, tmp_path=tmp_path)
    assert history(client, training, "val_worst_group_acc")  # the official validation split
    report = json.loads((out / "evaluation.json").read_text())
    for name, value in report["metrics"].items():
        assert same_figure(history(client, evaluation, name)[-1][1], value), name
    assert "evaluation.json" in artifact_names(client, evaluation)


def user_settings(tracking_uri: str, experiment: str) -> dict:
    """A user's tracking settings as the bundles' docs show them: MONAI's pattern, their own store and experiment."""
    handler = {
        "_target_": "MLFlowHandler",
        "_disabled_": "@is_not_rank0",
        "tracking_uri": "@tracking_uri",
        "experiment_name": "@experiment_name",
        "run_name": "@run_name",
    }
    return {
        "handlers_id": {
            "trainer": {"id": "train#trainer", "handlers": "train#handlers"},
            "validator": {"id": "validate#evaluator", "handlers": "validate#handlers"},
            "evaluator": {"id": "evaluator", "handlers": "handlers"},
        },
        "configs": {
            "tracking_uri": tracking_uri,
            "experiment_name": experiment,
            "run_name": "teacher-1",
            "trainer": {**handler, "tag_name": "train_loss", "close_on_complete": True},
            "validator": {**handler, "iteration_log": False},
            "evaluator": {**handler, "iteration_log": False, "close_on_complete": True},
        },
    }


@pytest.mark.slow
def test_a_settings_file_of_the_user_s_tracks_where_it_says(waterbirds_bundle, waterbirds, tmp_path):
    store = tmp_path / "store" / "team.db"
    store.parent.mkdir()
    settings = tmp_path / "tracking.json"
    settings.write_text(json.dumps(user_settings(f"sqlite:///{store}", "waterbirds_teachers")))
    out = tmp_path / "teacher"
    configs = ["train.json", "train_teacher.json"]
    waterbirds_bundle.run(
        configs, tracking=str(settings), dataset_dir=str(waterbirds), output_dir=str(out), log_interval=1, **TINY
    )
    assert not (out / "mlruns.db").exists()  # not MONAI's default store
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    [run] = runs_of(client, "waterbirds_teachers")
    assert run.info.run_name == "teacher-1"
    check_training_run(client, run, out, WATERBIRDS_GROUPS, epochs=1, log_interval=1, tmp_path=tmp_path)


# ------------------------------------------------------------------------------- without MLflow


def test_a_run_asked_to_track_without_mlflow_names_the_extra(bundle, cohort, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails as where it is not installed
    workflow = bundle.make(
        ["train.json", "train_teacher.json"],
        tracking="mlflow",
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "run"),
        **TINY_MNMS,
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    [error] = [e for e in exception_chain(info.value) if isinstance(e, TrackingNotInstalledError)]
    assert str(error).startswith("--tracking needs MLflow, which is not installed") and str(error).endswith(EXTRA)
    assert not (tmp_path / "run" / "checkpoint_final.pt").exists()


@pytest.mark.slow
def test_the_command_line_without_mlflow_ends_on_the_message(bundle, cohort, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"  # shadows an installed MLflow
    blocker.mkdir()
    (blocker / "mlflow.py").write_text("raise ImportError('No module named mlflow')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    proc = bundle.cli(
        "training",
        ["train.json", "train_teacher.json"],
        tracking="mlflow",
        dataset_dir=cohort,
        output_dir=tmp_path / "run",
        **TINY_MNMS,
    )
    [message] = refused(proc, 1)
    assert message == f"--tracking needs MLflow, which is not installed (No module named mlflow): {EXTRA}"
    assert not (tmp_path / "run" / "checkpoint_final.pt").exists()


# ------------------------------------------------------------------------------------- the grid


def test_a_grid_run_s_tracking_arguments_are_not_what_it_trains(tmp_path):
    shared = {"tracking": "mlflow", "tracking_uri": "sqlite:///x.db", "experiment_name": "grid"}
    args = {"config_file": ["a.json"], "seed": 1, "output_dir": "o"}
    tracked = {**args, **grid_run_args(shared, "split1/seed1/kd", {"method": "kd", "seed": 1})}
    assert tracked == {**args, **shared, "run_name": "split1/seed1/kd", "tracking_tags": {"method": "kd", "seed": "1"}}
    assert untracked(tracked) == args
    assert grid_run_args(None, "split1/seed1/kd", {"method": "kd"}) == {}


def test_the_grid_summary_is_a_run_with_its_files(tmp_path):
    files = [tmp_path / "results.md", tmp_path / "plot.png"]
    files[0].write_text("| method |\n")
    files[1].write_bytes(b"\x89PNG\r\n")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_id = log_summary(uri, "grid", files, tags={"dataset": "mnms"})
    client = MlflowClient(tracking_uri=uri)
    [run] = runs_of(client, "grid")
    assert run.info.run_id == run_id and run.info.run_name == "summary" and run.info.status == "FINISHED"
    assert run.data.tags["dataset"] == "mnms"
    assert artifact_names(client, run) == {"results.md", "plot.png"}
    assert (tmp_path / "mlruns").is_dir()  # artifacts beside the store, where MONAI's handler keeps them


@pytest.mark.slow
def test_a_tracked_grid_is_one_experiment_of_a_run_per_training(bundle, cohort, tmp_path):
    """``reproduce --tracking mlflow``: an MLflow run per method and seed, tagged, and one with the summary; the
    same grid without ``--tracking`` then reuses the finished runs (tracking is no setting of what they train)."""
    from mnms_groupdistil.tools.reproduce import main

    def in_process(args_path: Path, log_path: Path) -> int:  # `python -m monai.bundle run --args_file`, here
        args = json.loads(args_path.read_text())
        bundle.run(args.pop("config_file"), workflow_type=None, run_id=args.pop("run_id"), **args)
        return 0

    out = tmp_path / "grid"
    settings = {**TINY_MNMS, "test_frames_per_patient": 2, "log_interval": 1}
    split = settings.pop("split")
    argv = [str(cohort), "--seeds", "0", "1", "--splits", split, "--methods", "teacher", "--output_dir", str(out)]
    argv += ["--override", *(f"{k}={v}" for k, v in settings.items())]
    assert main([*argv, "--tracking", "mlflow"], runner=in_process) == 0

    client = client_of(out)
    runs = {r.info.run_name: r for r in runs_of(client, "mnms_groupdistil_reproduce")}
    assert set(runs) == {"demo seed 0 teacher", "demo seed 1 teacher", "summary"}
    for seed in (0, 1):
        run = runs[f"demo seed {seed} teacher"]
        assert {k: run.data.tags[k] for k in ("method", "split", "seed")} == {
            "method": "teacher",
            "split": split,
            "seed": str(seed),
        }
        run_dir = out / "runs" / "mnms" / split / f"seed{seed}" / "teacher"
        assert run.data.params["seed"] == str(seed) and run.data.params["bundle_root"]
        report = json.loads((run_dir / "metrics.json").read_text())
        logged = history(client, run, "test_worst_group_acc")
        assert [s for s, _ in logged] == [1] and same_figure(logged[0][1], report["metrics"]["test_worst_group_acc"])
        assert history(client, run, "train_loss") and history(client, run, "group_weight/A")
    written = {p.name for p in out.iterdir() if p.suffix in (".csv", ".md", ".png")}
    assert {"results.csv", "results.md"} <= written and any(name.endswith(".png") for name in written)
    assert artifact_names(client, runs["summary"]) == written

    assert main(argv, runner=in_process) == 0  # untracked now: the finished runs are reused, not refused
    assert len(runs_of(client, "mnms_groupdistil_reproduce")) == 3
