"""The MONAI bundle ``bundles/waterbirds_groupdistil``: config consistency, preprocessing, end-to-end runs.

Runs use MONAI's ``ConfigWorkflow`` on a generated tiny Waterbirds-layout dataset (32 px crops, one epoch),
and the command line, as a new user would type it, on a Waterbirds-layout dataset written here with plain
PIL and csv (given as the parent folder of ``waterbird_complete95_forest2water2``).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    TINY,
    WATERBIRDS_BUNDLE,
    config_problems,
    exception_chain,
    merged_config,
    run_exported_inference,
    tensorboard_scalars,
    without_package,
)
from monai.bundle import ConfigParser
from monai.engines.utils import IterationEvents
from PIL import Image, ImageDraw

from mnms_groupdistil.datasets.waterbirds.reader import WaterbirdsDataError
from mnms_groupdistil.datasets.waterbirds.synthetic import write_waterbirds
from mnms_groupdistil.handlers import AtomicCheckpointSaver
from mnms_groupdistil.tools.export import export_bundle

BUNDLE = WATERBIRDS_BUNDLE
TRAIN, TEACHER, KD, GROUPDRO, ERM, EVALUATE, INFERENCE, MULTI_GPU, MULTI_GPU_EVALUATE = BUNDLE.paths(
    [
        f"{name}.json"
        for name in (
            "train",
            "train_teacher",
            "train_kd",
            "train_groupdro",
            "train_erm",
            "evaluate",
            "inference",
            "multi_gpu_train",
            "multi_gpu_evaluate",
        )
    ]
)
METADATA = BUNDLE.metadata
GROUPS = ("landbird_land", "landbird_water", "waterbird_land", "waterbird_water")
make_workflow = BUNDLE.make
run_workflow = BUNDLE.run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A generated tiny release, given as its parent folder."""
    parent = tmp_path_factory.mktemp("waterbirds")
    write_waterbirds(parent, preset="tiny", seed=0)
    return parent


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> dict[str, Path]:
    """groupDRO ResNet-50 teacher, then the GroupDistil ResNet-18 student distilled from its model_final.pt."""
    teacher = tmp_path_factory.mktemp("teacher")
    run_workflow([TRAIN, TEACHER], dataset_dir=str(dataset), output_dir=str(teacher), **TINY)
    student = tmp_path_factory.mktemp("groupdistil")
    run_workflow(
        [TRAIN],
        dataset_dir=str(dataset),
        output_dir=str(student),
        teacher_ckpt=str(teacher / "model_final.pt"),
        **TINY,
    )
    return {"teacher": teacher, "groupdistil": student}


def train_counts_by_hand(release: Path) -> dict[str, int]:
    """Training images per group, counted from metadata.csv (group = 2 * y + place)."""
    with open(release / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    counts = Counter(GROUPS[2 * int(r["y"]) + int(r["place"])] for r in rows if r["split"] == "0")
    return {g: counts[g] for g in GROUPS}


def check_summaries_by_hand(metrics: dict, counts: dict[str, int], prefix: str) -> None:
    """Worst-group, mean and adjusted-average accuracy recomputed from the per-group accuracies."""
    accuracies = {g: metrics[f"{prefix}_acc_{g}"] for g in GROUPS}
    assert metrics[f"{prefix}_worst_group_acc"] == pytest.approx(min(accuracies.values()))
    assert metrics[f"{prefix}_mean_group_acc"] == pytest.approx(sum(accuracies.values()) / 4)
    adjusted = sum(accuracies[g] * counts[g] for g in GROUPS) / sum(counts.values())
    assert metrics[f"{prefix}_adjusted_average_acc"] == pytest.approx(adjusted)


# ------------------------------------------------------------------------------- configs


COMBINATIONS = {
    "train": [TRAIN],
    "teacher": [TRAIN, TEACHER],
    "kd": [TRAIN, KD],
    "groupdro": [TRAIN, GROUPDRO],
    "erm": [TRAIN, ERM],
    "evaluate": [TRAIN, EVALUATE],
    "multi_gpu": [TRAIN, MULTI_GPU],
    "multi_gpu evaluate": [TRAIN, EVALUATE, MULTI_GPU_EVALUATE],
    "inference alone": [INFERENCE],
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_references_macros_and_targets_resolve(name):
    assert config_problems(merged_config(COMBINATIONS[name])) == []


def test_paper_defaults_and_top_level_knobs():
    train = ConfigParser.load_config_file(TRAIN)
    expected = {
        "batch_size": 128,
        "max_epochs": 30,
        "learning_rate": 1e-4,
        "temperature": 4.0,
        "alpha": 0.9,
        "group_step_size": 0.01,
        "batching": "mixed",
        "lr_schedule": "constant",
        "weight_averaging": "none",
        "augment": False,
        "image_size": 224,
        "network_name": "resnet18",
        "teacher_name": "resnet50",
        "mode": "groupdistil",
        "pretrained_path": None,
    }
    assert {k: train[k] for k in expected} == expected
    for knob in ("num_workers", "device", "cache_dir", "cache_rate", "seed", "dataset_dir", "output_dir"):
        assert knob in train
    assert "optimizer" in train and train["optimizer"]["_target_"] == "torch.optim.Adam"
    assert ConfigParser.load_config_file(TEACHER) == {
        "mode": "groupdro",
        "network_name": "@teacher_name",
        "output_dir": "$@bundle_root + '/runs/teacher'",
    }
    # the baselines train on the data as it comes (the bundle's default too, chosen by the digits study)
    for file, mode in ((KD, "kd"), (ERM, "erm")):
        assert ConfigParser.load_config_file(file) == {"mode": mode, "batching": "mixed"}
    assert ConfigParser.load_config_file(GROUPDRO) == {"mode": "groupdro"}


def test_metadata_matches_the_training_config():
    meta = json.loads(METADATA.read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task", "description"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    train = ConfigParser.load_config_file(TRAIN)
    assert image["num_channels"] == train["in_channels"] == len(image["channel_def"]) == 3
    assert image["spatial_shape"] == [train["image_size"]] * 2
    assert pred["channel_def"] == {"0": "landbird", "1": "waterbird"}


def preprocessing(augment: bool = False, image_size: int = 32):
    parser = ConfigParser()
    parser.read_config([TRAIN])
    parser["image_size"] = image_size
    parser["augment"] = augment
    return parser.get_parsed_content("train#preprocessing")


def test_preprocessing_resize_crop_and_imagenet_normalisation(tmp_path):
    """A 60x30 image, red left half and blue right half: resize to 37x37 (32 * 256 / 224), crop 32, normalise."""
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)  # (height, width, RGB)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "half.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")  # a grey image is converted to RGB
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = preprocessing()({"image": str(tmp_path / "half.png")})["image"]
    assert tuple(out.shape) == (3, 32, 32) and out.dtype == torch.float32
    red = [(1 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0 - mean[2]) / std[2]]
    blue = [(0 - mean[0]) / std[0], (0 - mean[1]) / std[1], (1 - mean[2]) / std[2]]
    # rows are the image's height, columns its width: the left columns are red, the right ones blue
    np.testing.assert_allclose(out[:, 16, 2].numpy(), red, atol=1e-4)
    np.testing.assert_allclose(out[:, 16, 29].numpy(), blue, atol=1e-4)
    grey = preprocessing()({"image": str(tmp_path / "grey.png")})["image"]
    assert tuple(grey.shape) == (3, 32, 32)
    np.testing.assert_allclose(grey[:, 16, 2].numpy(), [(1 - m) / s for m, s in zip(mean, std)], atol=1e-4)


def test_augmentation_is_off_by_default_and_random_when_on(tmp_path):
    from monai.transforms import Randomizable

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    plain = preprocessing()
    assert not any(isinstance(t, Randomizable) for t in plain.transforms)
    first, second = (plain({"image": str(tmp_path / "x.png")})["image"] for _ in range(2))
    assert torch.equal(first, second)
    augmented = preprocessing(augment=True)
    augmented.set_random_state(0)
    outputs = [augmented({"image": str(tmp_path / "x.png")})["image"] for _ in range(4)]
    assert all(tuple(o.shape) == (3, 32, 32) for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_train_workflow_has_required_properties(dataset, runs, tmp_path):
    workflow = make_workflow(
        [TRAIN],
        dataset_dir=str(dataset),
        output_dir=str(tmp_path),
        teacher_ckpt=str(runs["teacher"] / "model_final.pt"),
        **TINY,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.slow
@pytest.mark.parametrize("run", ["teacher", "groupdistil"])
def test_runs_write_models_split_and_metrics(dataset, runs, run):
    out = runs[run]
    for name in ("model.pt", "model_final.pt", "checkpoint_final.pt", "split.json", "metrics.json"):
        assert (out / name).is_file(), f"{run}: {name} missing"
    split = json.loads((out / "split.json").read_text())
    assert split["group_counts"]["train"] == train_counts_by_hand(dataset / "waterbird_complete95_forest2water2")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == ("groupdro" if run == "teacher" else "groupdistil")
    assert metrics["network"] == ("resnet50" if run == "teacher" else "resnet18")
    assert metrics["teacher"] == (None if run == "teacher" else "resnet50")
    recorded = json.loads((out / "run_config.json").read_text())["settings"]["teacher_ckpt"]
    assert recorded == (None if run == "teacher" else str(runs["teacher"] / "model_final.pt"))
    assert metrics["selection"] == {"rule": "best_val_worst_group_acc", "epoch": 1, "checkpoint": "model.pt"}
    for name in ("model.pt", "model_final.pt"):
        state = torch.load(out / name, map_location="cpu", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())


@pytest.mark.slow
@pytest.mark.parametrize("run", ["teacher", "groupdistil"])
def test_metrics_json_summaries_recomputed_by_hand(dataset, runs, run):
    metrics = json.loads((runs[run] / "metrics.json").read_text())
    counts = train_counts_by_hand(dataset / "waterbird_complete95_forest2water2")
    assert (
        metrics["train_group_counts"]
        == counts
        == {"landbird_land": 14, "landbird_water": 2, "waterbird_land": 2, "waterbird_water": 4}
    )
    for prefix in ("val", "test"):
        check_summaries_by_hand(metrics["metrics"], counts, prefix)
        for group in GROUPS:
            assert metrics["per_group"][group][f"{prefix}_acc"] == metrics["metrics"][f"{prefix}_acc_{group}"]


@pytest.mark.slow
def test_tensorboard_has_group_named_scalars(runs):
    tags = set(tensorboard_scalars(runs["groupdistil"]))
    for group in GROUPS:
        for tag in (f"group_weight/{group}", f"val_acc_{group}", f"test_acc_{group}"):
            assert tag in tags, sorted(tags)
    for tag in ("train_loss", "val_worst_group_acc", "val_adjusted_average_acc", "test_worst_group_acc"):
        assert tag in tags


@pytest.mark.slow
def test_group_weights_move_for_groupdistil(runs):
    state = torch.load(runs["groupdistil"] / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    weights = state["group_weights"]["log_weights"].exp()
    assert float(weights.sum()) == pytest.approx(1.0) and float((weights - 0.25).abs().max()) > 1e-5


@pytest.mark.slow
def test_evaluate_reports_test_figures_of_a_checkpoint(dataset, runs):
    """evaluate.json on model_final.pt reproduces the test figures the run recorded at its last epoch."""
    out = runs["groupdistil"]
    run_workflow(
        [TRAIN, EVALUATE],
        workflow_type=None,
        run_id="evaluating",
        dataset_dir=str(dataset),
        output_dir=str(out),
        teacher_ckpt=str(runs["teacher"] / "model_final.pt"),
        **TINY,
    )
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert Path(evaluation["checkpoint"]) == out / "model_final.pt" and "selection" not in evaluation
    trained = json.loads((out / "metrics.json").read_text())["history"][-1]["metrics"]
    for name, value in evaluation["metrics"].items():
        assert name.startswith("test_") and value == pytest.approx(trained[name]), name
    counts = train_counts_by_hand(dataset / "waterbird_complete95_forest2water2")
    check_summaries_by_hand(evaluation["metrics"], counts, "test")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["erm", "kd", "groupdro"])
def test_other_modes_train(dataset, runs, tmp_path, mode):
    files = {"erm": [TRAIN, ERM], "kd": [TRAIN, KD], "groupdro": [TRAIN, GROUPDRO]}[mode]
    # groupDRO on mixed batches (online groupDRO); KD with the speed options (bfloat16 autocast on the CPU)
    extra = {"groupdro": {"batching": "mixed"}, "kd": {"amp": True, "channels_last": True}}.get(mode, {})
    workflow = run_workflow(
        files,
        dataset_dir=str(dataset / "waterbird_complete95_forest2water2"),
        output_dir=str(tmp_path),
        teacher_ckpt=str(runs["teacher"] / "model_final.pt"),
        **TINY,
        **extra,
    )
    state = torch.load(tmp_path / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    weights, updates = state["group_weights"]["log_weights"].exp(), int(state["group_weights"]["num_updates"])
    if mode == "groupdro":
        assert updates == state["trainer"]["iteration"] and float((weights - 0.25).abs().max()) > 1e-5
    else:
        assert updates == 0 and torch.allclose(weights, torch.full((4,), 0.25, dtype=weights.dtype))
    assert json.loads((tmp_path / "metrics.json").read_text())["mode"] == mode
    trainer = workflow.parser.get_parsed_content("train#trainer")
    if mode == "kd":
        teacher = workflow.parser.get_parsed_content("teacher")
        assert trainer.amp is False and trainer.inferer.dtype is torch.bfloat16  # bfloat16 needs no scaler
        assert trainer.network.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert teacher.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # atomic checkpoints and the guard against signals and non-finite losses, as in the M&Ms bundle
    guard = workflow.parser.get_parsed_content("train#run_guard")
    assert isinstance(guard.checkpoint_saver, AtomicCheckpointSaver)
    assert guard.checkpoint_saver is workflow.parser.get_parsed_content("train#checkpoint_saver")
    assert trainer.has_event_handler(guard.loss_completed, IterationEvents.LOSS_COMPLETED)


@pytest.mark.slow
def test_inference_writes_one_prediction_per_image(dataset, runs, tmp_path):
    folder = dataset / "waterbird_complete95_forest2water2" / "001.Black_footed_Albatross"
    images = sorted(folder.glob("*.jpg"))
    workflow = make_workflow(
        [INFERENCE],
        workflow_type="infer",
        dataset_dir=str(folder),
        output_dir=str(tmp_path),
        run_dir=str(runs["groupdistil"]),  # network, image size and model_final.pt from the run
        num_workers=0,
        device="cpu",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("image_size") == TINY["image_size"]
    workflow.run()
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == [p.name for p in images]
    for row in rows:
        assert row["prediction"] in ("landbird", "waterbird")
        p = (float(row["probability_landbird"]), float(row["probability_waterbird"]))
        assert sum(p) == pytest.approx(1.0, abs=2e-4)
        assert row["prediction"] == ("waterbird" if p[1] > p[0] else "landbird")


def test_missing_image_is_reported_through_the_bundle(dataset, tmp_path):
    data = tmp_path / "waterbird_complete95_forest2water2"
    shutil.copytree(dataset / "waterbird_complete95_forest2water2", data)
    victim = sorted(data.glob("*/*.jpg"))[0]
    victim.unlink()
    workflow = make_workflow([TRAIN, TEACHER], dataset_dir=str(tmp_path), output_dir=str(tmp_path / "o"), **TINY)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    errors = [e for e in exception_chain(info.value) if isinstance(e, WaterbirdsDataError)]
    assert errors and str(victim) in str(errors[0]) and "does not exist" in str(errors[0])


# ------------------------------------------------------------- a dataset this project did not write


def write_foreign_release(parent: Path) -> Path:
    """A Waterbirds-layout dataset written with plain PIL and csv: JPEGs of varied sizes and modes."""
    release = parent / "waterbird_complete95_forest2water2"
    species = {0: ["094.White_breasted_Nuthatch", "118.House_Sparrow"], 1: ["059.California_Gull", "086.Pacific_Loon"]}
    rng = np.random.default_rng(7)
    rows, img_id = [], 0
    for split, per_group in ((0, (12, 3, 3, 6)), (1, (2, 2, 2, 2)), (2, (2, 2, 2, 2))):
        for group, n in enumerate(per_group):
            y, place = divmod(group, 2)
            for _ in range(n):
                img_id += 1
                folder = species[y][img_id % 2]
                name = f"{folder}/{folder.split('.')[1]}_{img_id:04d}_{1000 + img_id}.jpg"
                width, height = (int(v) for v in rng.integers(40, 120, size=2))
                image = Image.new("RGB", (width, height), (40, 90, 170) if place else (70, 110, 40))
                draw = ImageDraw.Draw(image)
                box = [width * 0.2, height * 0.3, width * (0.9 if y else 0.5), height * (0.6 if y else 0.9)]
                draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, size=3)))
                (release / folder).mkdir(parents=True, exist_ok=True)
                (image.convert("L") if img_id % 9 == 0 else image).save(release / name, quality=85)
                scene = "/o/ocean" if place else "/b/bamboo_forest"
                rows.append([img_id, name, y, split, place, f"{scene}/{img_id:08d}.jpg"])
    with open(release / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        writer.writerows(rows)
    return release


@pytest.mark.slow
def test_command_line_on_a_foreign_release(tmp_path):
    """What a new user types: teacher, then the GroupDistil student from its model_final.pt."""
    release = write_foreign_release(tmp_path / "data")
    settings = {"max_epochs": 1, "batch_size": 16, "image_size": 32, "device": "cpu", "num_workers": 0}
    for run, configs, extra in (
        ("teacher", [TRAIN, TEACHER], {}),
        ("student", [TRAIN], {"teacher_ckpt": tmp_path / "teacher" / "model_final.pt"}),
    ):
        proc = BUNDLE.cli(
            "training",
            configs,
            timeout=600,
            dataset_dir=tmp_path / "data",
            output_dir=tmp_path / run,
            **settings,
            **extra,
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    counts = train_counts_by_hand(release)
    assert counts == {"landbird_land": 12, "landbird_water": 3, "waterbird_land": 3, "waterbird_water": 6}
    for run in ("teacher", "student"):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["train_group_counts"] == counts and metrics["test_images"] == metrics["val_images"] == 8
        assert metrics["network"] == ("resnet50" if run == "teacher" else "resnet18")
        for prefix in ("val", "test"):
            check_summaries_by_hand(metrics["metrics"], counts, prefix)
            assert all(math.isfinite(metrics["metrics"][f"{prefix}_acc_{g}"]) for g in GROUPS)


@pytest.mark.slow
def test_report_prints_the_per_group_table(runs, caplog):
    import logging

    from mnms_groupdistil.tools.report import main

    with caplog.at_level(logging.INFO, logger="mnms_groupdistil.tools.report"):
        assert main(["--dataset", "waterbirds", str(runs["teacher"]), str(runs["groupdistil"])]) == 0
    metrics = json.loads((runs["groupdistil"] / "metrics.json").read_text())["metrics"]
    test_table = caplog.text.split("Validation accuracy")[0]
    rows = {}
    for line in test_table.splitlines():
        if "|" in line:
            cells = [c.strip() for c in line.split("|")]
            rows[cells[0]] = cells[1:]
    for group in GROUPS:
        assert f"{100 * metrics[f'test_acc_{group}']:.1f}" == rows[group][1]
    assert rows["adjusted-average"][1] == f"{100 * metrics['test_adjusted_average_acc']:.1f}"
    assert "Test accuracy (%) per group" in caplog.text and "Validation accuracy (%) per group" in caplog.text


@pytest.mark.slow
def test_exported_student_classifies_images_without_the_package(dataset, runs, tmp_path):
    """The export of the GroupDistil run (its bundle picked from its record, as the command line does;
    tests/test_export.py runs the command line itself) classifies a folder of images (two species folders)
    in a process where ``import mnms_groupdistil`` fails, with the predictions of the source inference.json.
    """
    run = runs["groupdistil"]
    settings = json.loads((run / "run_config.json").read_text())["settings"]
    assert (settings["bundle"], settings["image_size"], settings["resize_size"]) == ("waterbirds_groupdistil", 32, 37)
    bundle = export_bundle(run, tmp_path / "exported")
    reported = json.loads((run / "metrics.json").read_text())["metrics"]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == {k: v for k, v in reported.items() if k.startswith("test_") and v is not None}
    assert {"test_worst_group_acc", "test_adjusted_average_acc"} <= set(metadata["eval_metrics"])
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["spatial_shape"], image["num_channels"], image["channel_def"]) == (
        [32, 32],
        3,
        {"0": "R", "1": "G", "2": "B"},
    )
    assert set(metadata["required_packages_version"]) == {"nibabel", "pytorch-ignite", "pillow"}
    config_text = (bundle / "configs" / "inference.json").read_text()
    assert "mnms_groupdistil" not in config_text
    config = json.loads(config_text)
    assert (config["image_size"], config["resize_size"], config["class_names"]) == (32, 37, ["landbird", "waterbird"])
    copies = ("waterbirds/inference.py", "waterbirds/reader.py", "waterbirds/loading.py", "predictions.py", "errors.py")
    for module in [*(f"datasets/{m}" for m in copies), "errors.py"]:  # verbatim copies
        assert (bundle / "scripts" / module).read_bytes() == (REPO / "mnms_groupdistil" / module).read_bytes()
    readme = (bundle / "docs" / "README.md").read_text()
    assert "predictions.csv" in readme and "37 x 37" in readme and "32 x 32" in readme
    assert "`--amp true` for automatic mixed precision" in readme  # the source's amp is off

    release = dataset / "waterbird_complete95_forest2water2"
    images = tmp_path / "images"
    species = sorted(p for p in release.iterdir() if p.is_dir())[:2]
    for folder in species:
        shutil.copytree(folder, images / folder.name)
    expected_names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))
    assert len(expected_names) >= 2

    source_out = tmp_path / "source_predictions"
    run_workflow(
        [INFERENCE],
        workflow_type=None,
        run_id="inference",
        dataset_dir=str(images),
        output_dir=str(source_out),
        run_dir=str(run),
        num_workers=0,
        device="cpu",
    )

    out = tmp_path / "exported_predictions"
    run_exported_inference(bundle, images, out, without_package(tmp_path))

    tables = {}
    for name, folder in (("source", source_out), ("exported", out)):
        with open(folder / "predictions.csv", newline="") as handle:
            tables[name] = list(csv.DictReader(handle))
    assert [r["image"] for r in tables["exported"]] == expected_names
    assert tables["exported"] == tables["source"]
