"""Both bundles train and evaluate with one engine: their ``train.json`` differ only in data, networks and settings.

The engine's config ids (trainer, its handlers, evaluators, metrics, checkpoints, guards, run steps) must be
the same text in both files, every other component of a bundle must be one of its data or network pieces,
and the trainers and evaluators the two bundles build with the same settings (on tiny generated data) must
register the same handlers, in the same order, on the same events.
"""

from __future__ import annotations

import copy
import re
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import BundleRunner
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from mnms_groupdistil.datasets.mnms.synthetic import write_mnms_cohort
from mnms_groupdistil.datasets.waterbirds.synthetic import write_waterbirds

REPO = Path(__file__).resolve().parents[1]
TRAIN = {
    name: REPO / "bundles" / name / "configs" / "train.json" for name in ("mnms_groupdistil", "waterbirds_groupdistil")
}

#: The ids of the engine: the same config in both bundles.
ENGINE_IDS = (
    "network",
    "teacher",
    "validation",
    "train#sampler",
    "train#dataloader",
    "train#bn_loader",
    "train#inferer",
    "train#loss_handler",
    "train#handlers",
    "train#checkpoint",
    "train#checkpoint_saver",
    "train#run_guard",
    "train#trainer",
    "validate#dataloader",
    "validate#model_saver",
    "validate#handlers",
    "validate#evaluator",
    "test#dataloader",
    "test#handlers",
    "test#evaluator",
    "optimizer",
    "averaging",
    "eval_network",
    "train_group_counts",
    "group_weights",
    "loss",
    "sample_loss",
    "evaluation",
    "metrics_report",
    "run_lock",
    "run_tracking",
    "initialize",
    "run",
    "finalize",
    "training",
)
#: What a bundle's own data and network pieces may be called (top level, and inside train/validate/test).
BUNDLE_COMPONENTS = ("network_def", "teacher_def", "run_settings", "report_fields", "tracking_tags", "split_data")
DATA_ENTRIES = (
    "datalist",
    "volumes",
    "frames",
    "frame_selection",
    "preprocessing_transforms",
    "random_transforms",
    "augmentations",
    "preprocessing",
    "dataset",
    "groups",
    "device_augmentation",
    "prepare_batch",
)
SECTIONS = ("train", "validate", "test")
#: The same settings for both bundles, so that what they build may differ in their data and networks only.
SAME_SETTINGS = {
    "mode": "groupdro",
    "network_name": "resnet18",
    "batching": "balanced",
    "precise_bn_batching": "balanced",
    "precise_bn": True,
    "lr_schedule": "cosine",
    "weight_averaging": "ema",
    "metric_reductions": ["worst", "mean", "average", "adjusted", "none"],
    "metric_levels": ["frame", "patient"],
    "max_epochs": 1,
    "batch_size": 4,
    "image_size": 32,
    "num_workers": 0,
    "device": "cpu",
}


def raw_config(path: Path) -> dict[str, Any]:
    return ConfigParser.load_config_file(str(path))


def engine_differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """How two raw ``train.json`` configs differ outside their data, networks and settings."""
    problems = []
    for config_id in ENGINE_IDS:
        parsers = [ConfigParser(copy.deepcopy(config)) for config in (first, second)]
        missing = [i for i, parser in enumerate(parsers) if config_id not in parser]
        if missing:
            problems.append(f"{config_id}: missing in config {missing}")
        elif parsers[0][config_id] != parsers[1][config_id]:
            problems.append(f"{config_id}: {parsers[0][config_id]!r} != {parsers[1][config_id]!r}")
    for index, config in enumerate((first, second)):
        for key, value in config.items():
            if key in SECTIONS:
                extra = [f"{key}#{k}" for k in value if f"{key}#{k}" not in ENGINE_IDS and k not in DATA_ENTRIES]
            elif isinstance(value, dict) and key not in ENGINE_IDS and key not in BUNDLE_COMPONENTS:
                extra = [key]  # a component that is neither engine nor a data or network piece
            else:
                extra = []
            problems += [f"{config_id}: neither engine nor data in config {index}" for config_id in extra]
    return problems


def test_the_engine_ids_are_the_same_config_in_both_bundles():
    assert engine_differences(*(raw_config(path) for path in TRAIN.values())) == []


def test_a_change_to_one_bundle_s_engine_is_found():
    mnms, waterbirds = (raw_config(path) for path in TRAIN.values())
    reordered = copy.deepcopy(waterbirds)
    handlers = reordered["train"]["handlers"]
    handlers[1], handlers[2] = handlers[2], handlers[1]
    renamed = copy.deepcopy(waterbirds)
    renamed["validate"]["evaluator"]["prefix"] = "valid"
    own_piece = copy.deepcopy(waterbirds)
    own_piece["train"]["my_saver"] = {"_target_": "mnms_groupdistil.handlers.final_model_saver"}
    own_top = copy.deepcopy(mnms)
    own_top["scheduler"] = {"_target_": "torch.optim.lr_scheduler.StepLR"}
    assert [p.split(":")[0] for p in engine_differences(mnms, reordered)] == ["train#handlers"]
    assert [p.split(":")[0] for p in engine_differences(mnms, renamed)] == ["validate#evaluator"]
    assert engine_differences(mnms, own_piece) == ["train#my_saver: neither engine nor data in config 1"]
    assert engine_differences(own_top, waterbirds) == ["scheduler: neither engine nor data in config 0"]


#: Residual blocks per stage and the block of the ResNets the bundles' teachers are.
RESNET_STAGES = {
    "resnet18": ([2, 2, 2, 2], "BasicBlock"),
    "resnet34": ([3, 4, 6, 3], "BasicBlock"),
    "resnet50": ([3, 4, 6, 3], "Bottleneck"),
}


@pytest.mark.parametrize("name", list(TRAIN))
@pytest.mark.parametrize("teacher_name", [None, "resnet34"])
def test_the_teacher_run_trains_the_network_the_students_load_as_teacher(name, teacher_name):
    """``train_teacher.json`` trains ``teacher_name``: one setting names the teacher for its run and its students."""
    configs = TRAIN[name].parent
    parser = ConfigParser()
    parser.read_config([str(TRAIN[name]), str(configs / "train_teacher.json")])
    if teacher_name is not None:
        parser["teacher_name"] = teacher_name
    expected = teacher_name or raw_config(TRAIN[name])["teacher_name"]
    assert parser.get_parsed_content("network_name") == expected
    network = parser.get_parsed_content("network_def")
    blocks = [len(getattr(network, f"layer{i}")) for i in range(1, 5)]
    # residual blocks per stage and block type of the ResNet paper's networks (He et al. 2016, table 1)
    assert (blocks, type(network.layer1[0]).__name__) == RESNET_STAGES[expected]


@pytest.mark.parametrize("name", list(TRAIN))
def test_monai_tracking_finds_the_trainer_s_and_the_validator_s_handlers(name):
    """``--tracking`` appends its handlers to ``train#handlers`` and ``validate#handlers``, MONAI's fixed ids."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.utils import DEFAULT_HANDLERS_ID

    parser = ConfigParser()
    parser.read_config(str(TRAIN[name]))
    before = {key: len(parser[key]) for key in ("train#handlers", "validate#handlers")}
    logger = {"_target_": "StatsHandler", "iteration_log": False}
    settings = {
        "handlers_id": DEFAULT_HANDLERS_ID,
        "configs": {"save_execute_config": False, "trainer": dict(logger), "validator": dict(logger)},
    }
    ConfigWorkflow.patch_bundle_tracking(parser, settings)
    for key, count in before.items():
        assert len(parser[key]) == count + 1 and parser[key][-1] == logger, key


def _described(handler: Any) -> str:
    parent = getattr(handler, "_parent", None)  # Ignite's wrapper of a handler with an event filter
    if isinstance(parent, weakref.ref):
        handler = parent()
    owner = getattr(handler, "__self__", None)
    if owner is not None:
        return f"{type(owner).__qualname__}.{handler.__name__}"
    return getattr(handler, "__qualname__", type(handler).__qualname__)


def event_handlers(engine: Engine) -> dict[str, list[str]]:
    """Every event of ``engine`` with its handlers, in the order they run (owner class and method)."""
    return {
        re.sub(r" at 0x[0-9a-f]+", "", str(event)): [_described(entry[0]) for entry in entries]
        for event, entries in engine._event_handlers.items()
        if entries
    }


def built_engine(workflow: Any) -> dict[str, Any]:
    """What a bundle's initialized training workflow built: its trainer, evaluators and training state."""
    get = workflow.parser.get_parsed_content
    trainer, checkpoint = get("train#trainer"), get("train#checkpoint")
    built = {
        "trainer": (type(trainer).__name__, event_handlers(trainer)),
        "loss": type(trainer.loss_function).__name__,
        "optimizer": (type(trainer.optimizer).__name__, sorted(trainer.optimizer.defaults)),
        "prepare_batch": trainer.prepare_batch,
        "batches": type(trainer.data_loader.batch_sampler).__name__,
        "checkpoint": {key: type(value).__name__ for key, value in checkpoint.items()},
    }
    for evaluator_id in ("validate#evaluator", "test#evaluator"):
        evaluator = get(evaluator_id)
        built[evaluator_id] = (type(evaluator).__name__, evaluator.state.key_metric_name, event_handlers(evaluator))
    return built


@pytest.fixture(scope="module")
def workflows(bundle, waterbirds_bundle, tmp_path_factory) -> dict[str, Any]:
    """Both bundles initialized with :data:`SAME_SETTINGS` on generated data with validation patients/images."""
    data = tmp_path_factory.mktemp("one_engine")
    mnms = bundle.make(
        ["train.json"],
        dataset_dir=str(write_mnms_cohort(data / "MnM", preset="small", seed=0)),
        output_dir=str(data / "mnms_run"),
        split="demo",
        val_fraction=0.25,
        frames_per_patient=2,
        test_frames_per_patient=2,
        **SAME_SETTINGS,
    )
    write_waterbirds(data / "waterbirds", preset="tiny", seed=0)
    waterbirds = waterbirds_bundle.make(
        ["train.json"], dataset_dir=str(data / "waterbirds"), output_dir=str(data / "waterbirds_run"), **SAME_SETTINGS
    )
    built = {}
    for name, workflow in (("mnms", mnms), ("waterbirds", waterbirds)):
        workflow.initialize()
        assert workflow.parser.get_parsed_content("validation") is True, name
        assert workflow.check_properties() == [], name
        built[name] = built_engine(workflow)
        built[name + "_workflow"] = workflow
    yield built
    for name in ("mnms", "waterbirds"):
        built[name + "_workflow"].finalize()


def test_both_bundles_build_the_same_trainer_and_evaluators(workflows):
    mnms, waterbirds = workflows["mnms"], workflows["waterbirds"]
    assert mnms == waterbirds
    # and it is the whole engine: the handlers of every piece of it, in order
    epoch_completed = mnms["trainer"][1]["Events.EPOCH_COMPLETED"]
    assert epoch_completed[:3] == ["PreciseBatchNorm.epoch_completed", "ValidationHandler", "ValidationHandler"]
    assert mnms["trainer"][1]["IterationEvents.LOSS_COMPLETED"] == [
        "GroupWeightedLossHandler.loss_completed",
        "RunGuard.loss_completed",
    ]
    assert mnms["trainer"][1]["Events.COMPLETED"] == [
        "AtomicCheckpointSaver.completed",  # model_final.pt
        "AtomicCheckpointSaver.completed",  # checkpoint_final.pt
        "RunGuard.completed",
    ]
    assert mnms["validate#evaluator"][1] == "val_worst_group_acc" and mnms["test#evaluator"][1] is None
    assert list(mnms["checkpoint"]) == [
        "network",
        "optimizer",
        "group_weights",
        "averaging",
        "trainer",
        "best_model_saver",
        "metrics_report",
    ]


def test_a_handler_missing_from_one_trainer_is_found(workflows):
    trainer = workflows["waterbirds_workflow"].parser.get_parsed_content("train#trainer")
    guard = workflows["waterbirds_workflow"].parser.get_parsed_content("train#run_guard")
    assert event_handlers(trainer) == workflows["mnms"]["trainer"][1]
    trainer.remove_event_handler(guard.iteration_completed, Events.ITERATION_COMPLETED)
    assert event_handlers(trainer) != workflows["mnms"]["trainer"][1]


#: A run's record for each bundle's inference.json: settings other than the configs' defaults.
RECORDED = {
    "mnms_groupdistil": {"network_name": "resnet34", "in_channels": 1, "class_names": ["NOR", "HCM"], "image_size": 24},
    "waterbirds_groupdistil": {
        "network_name": "resnet34",
        "in_channels": 3,
        "class_names": ["landbird", "waterbird"],
        "image_size": 40,
        "resize_size": 46,
    },
}


@pytest.mark.parametrize("name", list(RECORDED))
def test_both_inference_configs_take_the_network_from_the_run_s_record(name, tmp_path, cohort):
    """inference.json reads the network and the input settings from ``run_dir``'s run_config.json and loads its
    model_final.pt; an override that disagrees with the record is refused before anything runs. (The M&Ms one
    looks for its input volumes while it initializes: it gets the generated cohort.)"""
    from mnms_groupdistil.errors import SettingError, find_reported_error
    from mnms_groupdistil.networks import build_network
    from mnms_groupdistil.run_settings import write_run_settings

    recorded = RECORDED[name]
    run = tmp_path / "run"
    write_run_settings(run, {"bundle": name, **recorded})
    trained = build_network(recorded["network_name"], 2, recorded["in_channels"])
    torch.save(trained.state_dict(), run / "model_final.pt")
    runner = BundleRunner(REPO / "bundles" / name)
    data = cohort if name == "mnms_groupdistil" else tmp_path
    common = {"run_dir": str(run), "dataset_dir": str(data), "output_dir": str(tmp_path / "out"), "device": "cpu"}

    workflow = runner.make(["inference.json"], workflow_type="infer", **common)
    workflow.initialize()
    for key, value in recorded.items():
        assert workflow.parser.get_parsed_content(key) == value, key
    network = workflow.parser.get_parsed_content("network")
    assert network.conv1.in_channels == recorded["in_channels"] and len(network.layer1) == 3  # ResNet-34
    for key, value in trained.state_dict().items():
        assert torch.equal(network.state_dict()[key], value), key

    refused = runner.make(["inference.json"], workflow_type="infer", image_size=64, **common)
    with pytest.raises(Exception) as info:
        refused.initialize()
    found = find_reported_error(info.value)  # the error a bundle run ends on
    assert isinstance(found, SettingError), info.value
    assert f"image_size: the run trained with {recorded['image_size']}, now 64" in str(found)
