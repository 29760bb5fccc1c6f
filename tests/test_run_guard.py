"""Pre-emption and divergence: atomic checkpoints, a NaN loss stopping the run after saving, and
SIGTERM saving a checkpoint and exiting cleanly (a real subprocess)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointSaver
from torch.utils.data import DataLoader

from mnms_groupdistil.handlers import (
    AtomicCheckpointSaver,
    EpochSeeds,
    GroupWeightedLossHandler,
    NonFiniteLossError,
    RunGuard,
)
from mnms_groupdistil.losses import CrossEntropyLoss, GroupWeightedLoss, GroupWeights
from mnms_groupdistil.samplers import GroupBatchSampler


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))


# ----------------------------------------------------------------------------- atomic writes


def _interrupted_save(monkeypatch, saver, engine):
    """Save while torch.save dies half-way through writing (as a killed process would)."""
    real_save = torch.save

    def dying_save(obj, f, **kwargs):
        real_save(obj, f, **kwargs)
        if hasattr(f, "truncate"):
            f.truncate(100)
        else:
            with open(f, "r+b") as handle:
                handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        saver.completed(engine)
    monkeypatch.setattr(torch, "save", real_save)


@pytest.mark.parametrize("atomic", [True, False])
def test_a_save_killed_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch, atomic):
    net = _net()
    engine = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
    )
    kind = AtomicCheckpointSaver if atomic else CheckpointSaver
    state = {"network": net, "optimizer": engine.optimizer}
    saver = kind(str(tmp_path), state, save_final=True, final_filename="checkpoint_final.pt")
    saver.completed(engine)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[1].weight += 1.0
    _interrupted_save(monkeypatch, saver, engine)
    path = tmp_path / "checkpoint_final.pt"
    if not atomic:  # MONAI's saver writes in place: this is what the atomic one prevents
        with pytest.raises(Exception):
            torch.load(path, weights_only=True)
        return
    saved = torch.load(path, weights_only=True)["network"]
    assert all(torch.equal(saved[k], before[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_final.pt"]


# ------------------------------------------------------------------------------- divergence


def _data(nan_at):
    """48 samples of groups 0/1 (24 each); sample ``nan_at`` holds a NaN pixel."""
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(48):
        x = torch.randn(1, 4, 4, generator=g)
        if i == nan_at:
            x[0, 0, 0] = float("nan")
        items.append({"image": x, "label": int(x[0, 1, 1] > 0), "group": i % 2})
    return items


def test_nan_loss_stops_after_saving_and_never_reaches_the_weights(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN in a background job
    data = _data(nan_at=7)  # group 1
    net = _net()
    weights = GroupWeights(2, step_size=0.1)
    handler = GroupWeightedLossHandler(GroupWeightedLoss(weights, robust=True), CrossEntropyLoss())
    loader = DataLoader(data, batch_sampler=GroupBatchSampler([d["group"] for d in data], 4, seed=0))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        loss_function=handler,
        train_handlers=[EpochSeeds(seed=0), handler],
        decollate=False,
    )
    saver = AtomicCheckpointSaver(
        str(tmp_path),
        {"network": net, "optimizer": optimizer, "group_weights": weights, "trainer": trainer},
        save_final=True,
        final_filename="checkpoint_final.pt",
    )
    saver.attach(trainer)
    guard = RunGuard(saver, group_names=["A", "B"])
    guard.attach(trainer)
    guard.attach(trainer)  # idempotent

    states = []  # after every completed iteration: (iteration, network, log weights)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: states.append(
            (e.state.iteration, {k: v.clone() for k, v in net.state_dict().items()}, weights.log_weights.clone())
        ),
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    bad = len(states) + 1  # the iteration whose batch held sample 7
    assert str(info.value).startswith(f"the training loss is not finite at iteration {bad} (epoch ")
    assert "groups in the batch: B (4 samples, mean loss nan)" in str(info.value)
    assert "checkpoint_final.pt" in str(info.value)
    _, last_net, last_weights = states[-1]
    assert torch.equal(weights.log_weights, last_weights)  # the NaN never reached the group weights
    assert all(torch.equal(net.state_dict()[k], last_net[k]) for k in last_net)  # nor the network
    saved = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert torch.equal(saved["group_weights"]["log_weights"], last_weights)
    assert all(torch.equal(saved["network"][k], last_net[k]) for k in last_net)
    assert signal.getsignal(signal.SIGINT) is before  # handlers put back


def test_a_sparser_check_names_the_first_bad_iteration_and_saves_nothing(tmp_path):
    data = _data(nan_at=7)
    net = _net()
    weights = GroupWeights(2, step_size=0.1)
    handler = GroupWeightedLossHandler(GroupWeightedLoss(weights, robust=True), CrossEntropyLoss())
    loader = DataLoader(data, batch_sampler=GroupBatchSampler([d["group"] for d in data], 4, seed=0))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=handler,
        train_handlers=[EpochSeeds(seed=0), handler],
        decollate=False,
    )
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"network": net, "group_weights": weights}, save_final=True, final_filename="checkpoint_final.pt"
    )
    RunGuard(saver, group_names=["A", "B"], check_interval=5).attach(trainer)
    batches = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: batches.append(e.state.batch["group"].tolist()))
    log_weights = [weights.log_weights.clone()]  # [i]: after iteration i
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: log_weights.append(weights.log_weights.clone()))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    message = str(info.value)
    first = int(message.split("not finite at iteration ")[1].split(" ")[0])
    assert len(batches) % 5 == 0 and len(batches) - 5 < first <= len(batches)  # found at the next check
    assert batches[first - 1] == [1, 1, 1, 1]  # group B's batch holding sample 7
    assert "groups in the batch: B (4 samples, mean loss nan)" in message
    assert "checked every 5" in message and "nothing was saved" in message
    assert not (tmp_path / "checkpoint_final.pt").exists()
    assert torch.isfinite(weights.log_weights).all()
    after_bad = log_weights[first] if first < len(log_weights) else weights.log_weights
    assert torch.equal(after_bad, log_weights[first - 1])  # the bad step did not move them


def test_guard_arguments(tmp_path):
    net = _net()
    with pytest.raises(ValueError, match="save_final"):
        RunGuard(CheckpointSaver(str(tmp_path), {"network": net}, save_final=False, save_interval=1))
    saver = CheckpointSaver(str(tmp_path), {"network": net}, save_final=True)
    with pytest.raises(ValueError, match="SIGTREM"):
        RunGuard(saver, signals=["SIGTREM"])
    with pytest.raises(ValueError, match="check_interval"):
        RunGuard(saver, check_interval=0)


# ------------------------------------------------------------------------------- pre-emption


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(bundle, cohort, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", repr(bundle.paths(["train.json", "train_teacher.json"])),
        "--meta_file", str(bundle.metadata), "--logging_file", str(bundle.configs / "logging.conf"),
        "--dataset_dir", str(cohort), "--output_dir", str(out), "--split", "demo", "--max_epochs", "500",
        "--batch_size", "4", "--image_size", "32", "--frames_per_patient", "2", "--num_workers", "0",
        "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace"
    )
    deadline = time.time() + 180
    while not list(out.glob("checkpoint_epoch=*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (stdout + stderr)[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "stopped by SIGTERM after iteration" in stdout + stderr
    saved = torch.load(out / "checkpoint_final.pt", weights_only=True)
    assert saved["trainer"]["iteration"] >= saved["trainer"]["epoch_length"]
    assert int(saved["group_weights"]["num_updates"]) == saved["trainer"]["iteration"]
    assert not [p.name for p in out.iterdir() if p.name.startswith("tmp")]
