"""The loss handler inside a real MONAI SupervisedTrainer, on CPU, in all four training modes."""

import json
import logging

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.utils.data import DataLoader

from mnms_groupdistil.handlers import (
    AtomicCheckpointSaver,
    EpochSeeds,
    GroupScalarWriter,
    GroupWeightedLossHandler,
    MetricsReport,
    attach_resume,
)
from mnms_groupdistil.losses import CrossEntropyLoss, DistillationLoss, GroupWeightedLoss, GroupWeights, mode_flags
from mnms_groupdistil.samplers import GroupBatchSampler


def _toy_data(n_per_group=48, seed=0):
    """Groups 0 and 1: label = sign of the mean pixel (learnable); group 2: random labels (hard)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for group in range(3):
        for _ in range(n_per_group):
            x = torch.randn(1, 4, 4, generator=g)
            label = int(x.mean() > 0) if group < 2 else int(torch.randint(2, (1,), generator=g))
            items.append({"image": x, "label": label, "group": group})
    return items


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))


def _trainer(mode, data, epochs=3, handlers=(), group_weights=None, network=None):
    robust, distil = mode_flags(mode)
    teacher = None
    sample_loss = CrossEntropyLoss()
    if distil:
        teacher = _net(123).eval().requires_grad_(False)
        sample_loss = DistillationLoss(temperature=4.0, alpha=0.9)
    group_weights = group_weights or GroupWeights(3, step_size=0.05)
    handler = GroupWeightedLossHandler(GroupWeightedLoss(group_weights, robust=robust), sample_loss, teacher)
    if robust:
        loader = DataLoader(data, batch_sampler=GroupBatchSampler([d["group"] for d in data], 16, seed=0))
    else:
        loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    network = network or _net(0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.5),
        loss_function=handler,
        train_handlers=[EpochSeeds(seed=0), handler, *handlers],
        decollate=False,
    )
    return trainer, handler, teacher


@pytest.mark.parametrize("mode", ["erm", "groupdro", "kd", "groupdistil"])
def test_each_mode_trains_a_toy_student(mode):
    data = _toy_data()
    trainer, handler, teacher = _trainer(mode, data)
    before = [p.clone() for p in trainer.network.parameters()]
    teacher_before = None if teacher is None else [p.clone() for p in teacher.parameters()]
    losses, batch_groups = [], []

    def record(engine):
        losses.append(engine.state.output["loss"].item())
        batch_groups.append(torch.bincount(torch.as_tensor(engine.state.batch["group"]), minlength=3))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
    if teacher is not None:
        assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))
    weights = trainer.state.group_weights
    assert weights.shape == (3,) and weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    if mode in ("erm", "kd"):
        assert weights.tolist() == pytest.approx([1 / 3] * 3)
    else:
        assert int(handler.loss.group_weights.num_updates) == trainer.state.iteration
    # the published counts are those of the last batch, in every mode (16 samples: 144 divide evenly)
    assert trainer.state.group_counts.tolist() == batch_groups[-1].tolist()
    assert int(trainer.state.group_counts.sum()) == 16
    if mode in ("groupdro", "groupdistil"):  # one-group batches
        assert all(int((counts > 0).sum()) == 1 for counts in batch_groups)


def test_weights_move_towards_the_hardest_group():
    trainer, _, _ = _trainer("groupdro", _toy_data(), epochs=8)
    trainer.run()
    weights = trainer.state.group_weights
    assert weights[2] > 1 / 3
    assert weights[2] > weights[0] and weights[2] > weights[1]


def test_teacher_runs_in_eval_mode_without_grad():
    data = _toy_data(8)
    trainer, handler, teacher = _trainer("groupdistil", data, epochs=1)
    teacher.train()  # a caller left it in train mode: the handler must switch it back
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    trainer.run()
    assert seen and all(training is False and grad is False for training, grad in seen)


def test_mismatched_teacher_and_loss_are_refused():
    loss = GroupWeightedLoss(GroupWeights(3))
    with pytest.raises(ValueError, match="teacher"):
        GroupWeightedLossHandler(loss, DistillationLoss())
    with pytest.raises(ValueError, match="does not use one"):
        GroupWeightedLossHandler(loss, CrossEntropyLoss(), teacher=_net(1))


def test_missing_group_key_is_a_clear_error():
    data = [{"image": d["image"], "label": d["label"]} for d in _toy_data(4)]
    trainer, _, _ = _trainer("erm", data, epochs=1)
    with pytest.raises(ValueError, match="'group'"):
        trainer.run()


def test_checkpoint_round_trip_resumes_weights_and_epoch(tmp_path):
    data = _toy_data(16)
    weights = GroupWeights(3, step_size=0.05)
    net = _net(0)
    trainer, _, _ = _trainer("groupdro", data, epochs=2, group_weights=weights, network=net)
    saver = CheckpointSaver(
        str(tmp_path),
        {"network": net, "optimizer": trainer.optimizer, "group_weights": weights, "trainer": trainer},
        save_final=True,
        final_filename="checkpoint.pt",
    )
    saver.attach(trainer)
    trainer.run()
    saved = weights.log_weights.clone()
    assert not torch.allclose(saved, torch.full((3,), saved.mean().item(), dtype=torch.float64))

    fresh_weights = GroupWeights(3, step_size=0.05)
    fresh_net = _net(7)
    resumed, _, _ = _trainer("groupdro", data, epochs=3, group_weights=fresh_weights, network=fresh_net)
    loader = CheckpointLoader(
        str(tmp_path / "checkpoint.pt"),
        {"network": fresh_net, "optimizer": resumed.optimizer, "group_weights": fresh_weights, "trainer": resumed},
    )
    loader.attach(resumed)
    epochs_run = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    resumed.add_event_handler(
        Events.STARTED, lambda e: epochs_run.append(("weights", fresh_weights.log_weights.clone()))
    )
    resumed.run()
    assert torch.equal(epochs_run[0][1], saved)  # restored before the first resumed iteration
    assert epochs_run[1:] == [3]  # only the missing epoch runs


def test_checkpoints_are_named_once_and_a_run_saved_under_the_old_name_resumes(tmp_path):
    """The bundles' saver writes ``checkpoint_epoch=N.pt``; a run saved as ``checkpoint_checkpoint_epoch=N.pt``
    (the name before) resumes from that file, which goes once the resumed run has saved its own."""

    def run(epochs):
        net, weights = _net(0), GroupWeights(3, step_size=0.05)
        trainer, _, _ = _trainer("groupdro", _toy_data(8), epochs=epochs, group_weights=weights, network=net)
        state = {"network": net, "optimizer": trainer.optimizer, "group_weights": weights, "trainer": trainer}
        AtomicCheckpointSaver(str(tmp_path), state, save_interval=1, epoch_level=True, n_saved=1).attach(trainer)
        resumed = attach_resume(trainer, tmp_path, state)
        epochs_run = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
        trainer.run()
        return resumed, epochs_run

    assert run(1) == (None, [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    (tmp_path / "checkpoint_epoch=1.pt").rename(tmp_path / "checkpoint_checkpoint_epoch=1.pt")
    assert run(2) == (str(tmp_path / "checkpoint_checkpoint_epoch=1.pt"), [2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt"]


def test_tensorboard_writer():
    class Recorder:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars.setdefault(tag, []).append((step, value))

        def flush(self):
            pass

    recorder = Recorder()
    writer = GroupScalarWriter(["A", "C", "D"])
    trainer, _, _ = _trainer("groupdro", _toy_data(8), epochs=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: writer(e, recorder))
    trainer.run()
    n = trainer.state.iteration
    assert len(recorder.scalars["train_loss"]) == n
    for g in "ACD":
        assert len(recorder.scalars[f"group_weight/{g}"]) == n
    assert sum(len(recorder.scalars.get(f"group_loss/{g}", [])) for g in "ACD") == n  # one group per batch


def test_best_model_record_survives_a_restart(tmp_path):
    """After a resume, model.pt is only replaced by a model with a better key metric."""
    from mnms_groupdistil.handlers import BestModelSaver

    def evaluation(saver, net, score, epoch):
        engine = Engine(lambda e, b: None)
        engine.state.metrics = {}
        engine.state.key_metric_name = "acc"

        @engine.on(Events.EPOCH_COMPLETED)  # registered before the saver, so it runs first
        def _score(e):
            e.state.metrics["acc"] = score
            e.state.epoch = epoch

        saver.attach(engine)
        engine.run([0], max_epochs=1)

    net = _net(0)
    first = BestModelSaver(str(tmp_path), {"network": net}, save_key_metric=True, key_metric_filename="model.pt")
    evaluation(first, net, 0.8, 1)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    record = first.state_dict()

    restarted_net = _net(1)  # different weights: a worse model after the restart
    restarted = BestModelSaver(
        str(tmp_path), {"network": restarted_net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    restarted.load_state_dict(record)
    evaluation(restarted, restarted_net, 0.5, 2)
    kept = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(kept[k], saved[k]) for k in saved)
    evaluation(restarted, restarted_net, 0.9, 3)
    replaced = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(replaced[k], v) for k, v in restarted_net.state_dict().items())


def _evaluation(report, epoch, metrics):
    """One evaluation as MONAI's ValidationHandler runs it: the evaluator's epoch is the trainer's."""
    engine = Engine(lambda e, b: None)
    engine.state.metrics = dict(metrics)
    engine.state.epoch = epoch
    report.epoch_completed(engine)
    return json.loads(report.filepath.read_text())


def test_metrics_report_reports_the_last_epoch_without_selection(tmp_path, caplog):
    report = MetricsReport(
        tmp_path / "out" / "metrics.json",
        ["A", "C"],
        ["test_acc", "val_acc"],
        ["test_worst"],
        {"mode": "x", "seed": 3},
    )
    _evaluation(report, 1, {"test_acc_A": 0.9, "test_acc_C": 0.8, "test_worst": 0.8, "d": {}})
    with caplog.at_level(logging.INFO):
        saved = _evaluation(report, 2, {"test_acc_A": 0.5, "test_acc_C": float("nan"), "test_worst": 0.5})
    # the last epoch is reported although epoch 1 scored higher: nothing is selected on test data
    assert saved["selection"] == {"rule": "last_epoch", "epoch": 2, "checkpoint": "model_final.pt"}
    assert saved["metrics"] == {"test_acc_A": 0.5, "test_acc_C": None, "test_worst": 0.5}
    assert saved["per_group"] == {
        "A": {"test_acc": 0.5, "val_acc": None},
        "C": {"test_acc": None, "val_acc": None},
    }
    assert (saved["mode"], saved["seed"]) == ("x", 3)
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    assert saved["history"][0]["metrics"]["test_worst"] == 0.8
    assert "test_worst: 0.500" in caplog.text and "C     | -" in caplog.text and "val_acc" not in caplog.text
    assert "reported model (last_epoch): epoch 2, model_final.pt" in caplog.text


def test_metrics_report_selects_by_validation_and_reports_that_epochs_test_figures(tmp_path):
    report = MetricsReport(tmp_path / "metrics.json", ["A"], ["test_acc", "val_acc"], select_by="val_worst")
    # per epoch: the test evaluator runs first, then the validation evaluator (as in train.json)
    scores = {1: (0.9, 0.6), 2: (0.7, 0.8), 3: (0.95, 0.8), 4: (0.6, float("nan"))}  # epoch: (test, val)
    for epoch, (test, val) in scores.items():
        saved = _evaluation(report, epoch, {"test_worst": test, "test_acc_A": test})
        saved = _evaluation(report, epoch, {"val_worst": val, "val_acc_A": val})
    # val 0.8 first reached at epoch 2 (epoch 3 ties, not better; epoch 4 has no finite score)
    assert saved["selection"] == {"rule": "best_val_worst", "epoch": 2, "checkpoint": "model.pt"}
    assert saved["metrics"] == {"test_worst": 0.7, "test_acc_A": 0.7, "val_worst": 0.8, "val_acc_A": 0.8}
    assert saved["per_group"] == {"A": {"test_acc": 0.7, "val_acc": 0.8}}
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3, 4]
    assert saved["history"][3]["metrics"] == {
        "test_worst": 0.6,
        "test_acc_A": 0.6,
        "val_worst": None,
        "val_acc_A": None,
    }


def test_metrics_report_without_a_scored_epoch_reports_none(tmp_path):
    report = MetricsReport(tmp_path / "metrics.json", ["A"], ["test_acc"], select_by="val_worst")
    saved = _evaluation(report, 1, {"test_acc_A": 1.0})
    assert saved["selection"] == {"rule": "best_val_worst", "epoch": None, "checkpoint": "model.pt"}
    assert saved["metrics"] == {} and saved["per_group"] == {"A": {"test_acc": None}}
    plain = MetricsReport(tmp_path / "evaluation.json", ["A"], ["test_acc"], selection=False)
    assert "selection" not in _evaluation(plain, 1, {"test_acc_A": 1.0})
    with pytest.raises(ValueError, match="select_by='val_worst'"):
        MetricsReport(tmp_path / "x.json", ["A"], select_by="val_worst", selection=False)


def test_metrics_report_keeps_its_history_across_a_restart(tmp_path):
    report = MetricsReport(tmp_path / "metrics.json", ["A"], ["val_acc"], select_by="val_worst")
    _evaluation(report, 1, {"val_worst": 0.6, "val_acc_A": 0.6})
    _evaluation(report, 2, {"val_worst": 0.8, "val_acc_A": 0.8})
    state = torch.load(_saved(tmp_path, report.state_dict()), weights_only=True)
    restarted = MetricsReport(tmp_path / "metrics.json", ["A"], ["val_acc"], select_by="val_worst")
    restarted.load_state_dict(state)
    saved = _evaluation(restarted, 3, {"val_worst": 0.7, "val_acc_A": 0.7})
    assert saved["selection"]["epoch"] == 2 and saved["metrics"]["val_worst"] == 0.8
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert _evaluation(restarted, 4, {"val_worst": 0.9})["selection"]["epoch"] == 4


def test_attach_metrics_computes_metrics_without_a_key_metric():
    from ignite.metrics import Accuracy
    from monai.engines import SupervisedEvaluator

    from mnms_groupdistil.handlers import AttachMetrics

    data = [{"image": torch.tensor([1.0, 0.0]), "label": torch.tensor(0)}] * 2 + [
        {"image": torch.tensor([0.0, 1.0]), "label": torch.tensor(0)}
    ]
    network = torch.nn.Identity()  # logits = inputs: predicts class 0, 0, 1
    seen = []

    class Probe:
        def attach(self, engine):
            engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))

    accuracy = Accuracy(output_transform=lambda out: (out[0]["pred"][None], torch.as_tensor([out[0]["label"]])))
    handlers = [AttachMetrics({"test_acc": accuracy}), Probe()]
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=DataLoader(data, batch_size=1), network=network, val_handlers=handlers
    )
    handlers[0].attach(evaluator)  # a second attach changes nothing
    evaluator.run()
    # handlers after AttachMetrics see the metric; no key metric, so no "best" epoch is kept
    assert seen == [{"test_acc": pytest.approx(2 / 3)}]
    assert evaluator.state.key_metric_name is None
    with pytest.raises(TypeError, match="metrics must map names"):
        AttachMetrics({"x": 1})


def _saved(folder, state):
    path = folder / "state.pt"
    torch.save(state, path)
    return path
