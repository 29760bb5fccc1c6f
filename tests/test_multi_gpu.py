"""multi_gpu_train.json under torchrun with two CPU processes (gloo): the ranks agree on the group
weights, and the gathered validation metrics equal a single-process evaluation of the same model;
multi_gpu_evaluate.json evaluates on two processes with the same result; SIGTERM to one rank stops both."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, TINY_MNMS
from monai.bundle import ConfigWorkflow

SETTINGS = {**TINY_MNMS, "max_epochs": 2}
FLAGS = [item for key, value in SETTINGS.items() for item in (f"--{key}", str(value))]


def _torchrun_command(configs, out, data, *extra, run_id="training"):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        str([str(CONFIGS / c) for c in configs]),
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out),
        *FLAGS,
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(configs, out, data, *extra, run_id="training"):
    command = _torchrun_command(configs, out, data, *extra, run_id=run_id)
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", env=ENV, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _weights_by_epoch(log):
    found = {}
    for epoch, weights in re.findall(r"Epoch (\d+): group weights \[([^\]]+)\]", log):
        found.setdefault(int(epoch), []).append(weights)
    return found


@pytest.fixture(scope="module")
def teacher_run(cohort, tmp_path_factory) -> tuple[Path, str]:
    """The groupDRO teacher trained by two processes (one-group batches), once: its folder and its log."""
    teacher = tmp_path_factory.mktemp("two_process") / "teacher"
    return teacher, _torchrun(["train.json", "train_teacher.json", "multi_gpu_train.json"], teacher, cohort)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["groupdro", "kd"])  # one-group batches; shuffled DistributedSampler batches
def test_two_process_training(cohort, teacher_run, tmp_path, mode):
    """groupdro: the two-process teacher itself; kd: a student distilled by two processes from that teacher."""
    data = cohort
    teacher, log = teacher_run
    out = teacher
    if mode == "kd":
        out = tmp_path / "kd"
        log = _torchrun(
            ["train.json", "train_kd.json", "multi_gpu_train.json"],
            out,
            data,
            "--network_name",
            "resnet18",
            "--teacher_ckpt",
            str(teacher / "model_final.pt"),
        )
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    weights = _weights_by_epoch(log)
    assert sorted(weights) == [1, 2]
    for per_rank in weights.values():
        assert len(per_rank) == 2 and per_rank[0] == per_rank[1]  # both ranks hold the same weights
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # trainer + evaluator, main process only

    metrics = json.loads((out / "metrics.json").read_text())
    evaluation = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        workflow_type=None,
        run_id="evaluating",
        logging_file=False,
        dataset_dir=str(data),
        output_dir=str(tmp_path / "single"),
        ckpt_path=str(out / "model_final.pt"),
        network_name="resnet18",
        **SETTINGS,
    )
    evaluation.initialize()
    evaluation.run()
    evaluation.finalize()
    single = json.loads((tmp_path / "single" / "evaluation.json").read_text())
    for key, value in single["metrics"].items():
        assert metrics["metrics"][key] == pytest.approx(value), key
    if mode == "groupdro":
        _torchrun(
            ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
            tmp_path / "two",
            data,
            "--ckpt_path",
            str(out / "model_final.pt"),
            "--network_name",
            "resnet18",
            run_id="evaluating",
        )
        two = json.loads((tmp_path / "two" / "evaluation.json").read_text())
        assert two["metrics"] == pytest.approx(single["metrics"])


def _rank_process(parent: int, rank: int) -> int:
    """The pid of the child of ``parent`` (the torchrun agent) that runs ``rank``."""
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no rank {rank} process under {parent}")


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_after_one_save(cohort, tmp_path):
    out = tmp_path / "run"
    command = _torchrun_command(["train.json", "train_teacher.json", "multi_gpu_train.json"], out, cohort)
    command[command.index("--max_epochs") + 1] = "500"
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=ENV
    )
    deadline = time.time() + 180
    while not list(out.glob("checkpoint_epoch=*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.kill(_rank_process(proc.pid, 1), signal.SIGTERM)  # rank 1 only; rank 0 holds the lock and saves
    log = proc.communicate(timeout=120)[0]
    stops = re.findall(r"stopped by SIGTERM( \(sent to another rank\))? after iteration (\d+)", log)
    assert stops and set(stops) == {("", stops[0][1]), (" (sent to another rank)", stops[0][1])}, log[-3000:]
    saved = torch.load(out / "checkpoint_final.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == int(stops[0][1])  # both ranks stopped after the same iteration
    assert not (out / "run.lock").exists()  # rank 0 released the lock on its way out
