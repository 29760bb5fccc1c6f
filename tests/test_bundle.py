"""The MONAI bundle ``bundles/mnms_groupdistil``: metadata, config consistency, and end-to-end runs.

Everything runs on CPU on a generated "tiny" M&Ms cohort (``write_mnms_cohort(preset="tiny")``, split
``demo``) with 32 px frames, two frames per patient and one epoch. The teacher is trained once per
session and shared by the student runs. Torch is limited to one thread while these tests run: with a
second busy process on a 2-core machine, two intra-op threads make each iteration ~10x slower.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import (
    CONFIGS,
    TINY_MNMS,
    config_problems,
    exception_chain,
    last_lines,
    merged_config,
    refused,
    tensorboard_scalars,
    walk,
)
from monai.bundle import ConfigParser

from mnms_groupdistil.datasets.mnms.cohort import load_mnms_cohort
from mnms_groupdistil.datasets.mnms.release import INFO_CSV_NAME, MnMsDataError
from mnms_groupdistil.datasets.mnms.splits import select_split
from mnms_groupdistil.datasets.mnms.synthetic import write_mnms_cohort
from mnms_groupdistil.errors import InputError
from mnms_groupdistil.network_checkpoints import CheckpointNotFoundError

TRAIN = str(CONFIGS / "train.json")
TEACHER = str(CONFIGS / "train_teacher.json")
KD = str(CONFIGS / "train_kd.json")
GROUPDRO = str(CONFIGS / "train_groupdro.json")
ERM = str(CONFIGS / "train_erm.json")
EVALUATE = str(CONFIGS / "evaluate.json")
METADATA = CONFIGS / "metadata.json"

CONFIG_COMBINATIONS = {
    "train": [TRAIN],
    "train+teacher": [TRAIN, TEACHER],
    "train+kd": [TRAIN, KD],
    "train+groupdro": [TRAIN, GROUPDRO],
    "train+evaluate": [TRAIN, EVALUATE],
    "train+erm": [TRAIN, ERM],
    "train+multi_gpu": [TRAIN, str(CONFIGS / "multi_gpu_train.json")],
    "train+evaluate+multi_gpu": [TRAIN, EVALUATE, str(CONFIGS / "multi_gpu_evaluate.json")],
    "inference": [str(CONFIGS / "inference.json")],
}

#: The tiny run, every iteration in TensorBoard (so that the tests can count them).
SETTINGS: dict[str, Any] = {**TINY_MNMS, "log_interval": 1}
GROUPS = ("A", "C", "D")


# ----------------------------------------------------------------------------------- helpers


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def group_weights_of(checkpoint: dict) -> tuple[torch.Tensor, int]:
    state = checkpoint["group_weights"]
    return state["log_weights"].exp(), int(state["num_updates"])


# ------------------------------------------------------------------------ session fixtures


@pytest.fixture(scope="session")
def teacher_dir(bundle, cohort, tmp_path_factory) -> Path:
    """groupDRO ResNet-18 teacher (train.json + train_teacher.json), trained once."""
    out = tmp_path_factory.mktemp("teacher")
    bundle.run([TRAIN, TEACHER], dataset_dir=str(cohort), output_dir=str(out), **SETTINGS)
    return out


@pytest.fixture(scope="module")
def student_dirs(bundle, cohort, teacher_dir, tmp_path_factory) -> dict[str, Path]:
    """GroupDistil (default DenseNet-121 student), KD and groupDRO ResNet-18 students."""
    teacher_ckpt = str(teacher_dir / "model_final.pt")
    runs = {
        "groupdistil": ([TRAIN], {}),
        "kd": ([TRAIN, KD], {"network_name": "resnet18"}),
        "groupdro": ([TRAIN, GROUPDRO], {"network_name": "resnet18"}),
    }
    dirs = {"teacher": teacher_dir}
    for mode, (configs, extra) in runs.items():
        out = tmp_path_factory.mktemp(mode)
        settings = {**SETTINGS, **extra}
        bundle.run(configs, dataset_dir=str(cohort), output_dir=str(out), teacher_ckpt=teacher_ckpt, **settings)
        dirs[mode] = out
    return dirs


@pytest.fixture(scope="module")
def evaluation(bundle, cohort, student_dirs) -> dict:
    """evaluate.json on the GroupDistil run (loads its model_final.pt); the run's evaluation.json."""
    out = student_dirs["groupdistil"]
    bundle.run(
        [TRAIN, EVALUATE],
        workflow_type=None,
        run_id="evaluating",
        dataset_dir=str(cohort),
        output_dir=str(out),
        teacher_ckpt=str(student_dirs["teacher"] / "model_final.pt"),
        **SETTINGS,
    )
    path = out / "evaluation.json"
    assert path.is_file(), "evaluate.json did not write evaluation.json"
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------- 1. metadata

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
VERSION = re.compile(r"^\d+(\.\d+)*([a-z0-9.+-]*)$")
TENSOR_FIELDS = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)


def test_metadata_has_required_fields():
    meta = json.loads(METADATA.read_text())
    for key in (
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert key in meta, f"metadata.json lacks {key!r}"
    assert SEMVER.match(meta["version"]), f"version {meta['version']!r} is not semver"
    assert meta["version"] in meta["changelog"], "the current version has no changelog entry"
    for key in ("monai_version", "pytorch_version", "numpy_version"):
        assert isinstance(meta[key], str) and VERSION.match(meta[key]), f"{key}={meta[key]!r}"
    assert isinstance(meta["required_packages_version"], dict) and meta["required_packages_version"]
    for package, version in meta["required_packages_version"].items():
        assert isinstance(version, str) and VERSION.match(version), f"{package}: {version!r}"
    for key in ("task", "description", "authors", "copyright"):
        assert isinstance(meta[key], str) and meta[key].strip(), f"{key} is empty"

    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    for name, spec in (("inputs.image", image), ("outputs.pred", pred)):
        for field in TENSOR_FIELDS:
            assert field in spec, f"network_data_format.{name} lacks {field!r}"
        assert isinstance(spec["channel_def"], dict)
        assert spec["num_channels"] == len(spec["channel_def"]), f"{name}: num_channels != len(channel_def)"
        assert isinstance(spec["spatial_shape"], list) and isinstance(spec["value_range"], list)
        assert isinstance(spec["is_patch_data"], bool)
    assert "modality" in image

    # consistent with the config that trains the model
    train = ConfigParser.load_config_file(TRAIN)
    assert image["num_channels"] == train["in_channels"]
    assert image["spatial_shape"] == [train["image_size"]] * 2
    assert pred["num_channels"] == 2


# ---------------------------------------------------------------- 2. references and targets


@pytest.mark.parametrize("name", list(CONFIG_COMBINATIONS))
def test_references_macros_and_targets_resolve(name):
    assert config_problems(merged_config(CONFIG_COMBINATIONS[name])) == []


def test_process_group_is_started_by_an_explicit_step_only():
    """Reading a setting (``rank``) must not start a process group: only the ``initialize`` steps do."""
    for name in ("train+multi_gpu", "train+evaluate+multi_gpu"):
        config = merged_config(CONFIG_COMBINATIONS[name])
        assert config["distributed"] is True
        starts = [path for path, value in walk(config) if isinstance(value, str) and "distributed.setup(" in value]
        assert starts and all(path.startswith("initialize#") for path in starts), (name, starts)
        assert "init_process_group" not in json.dumps(config)


def test_multi_gpu_overrides_components_not_expressions():
    """multi_gpu_train.json swaps the shuffled loader's sampler; the loader choice stays in train.json."""
    override = ConfigParser.load_config_file(str(CONFIGS / "multi_gpu_train.json"))
    assert "train#sampler" in override
    assert not any(key.startswith("train#dataloader") or key.endswith("loader") for key in override)


def test_reference_check_catches_typos():
    config = merged_config([TRAIN])
    config["network"] = "$@network_deff.to(@device)"
    config["validate"]["volumes"]["transform"] = "%train#volumes#transfrom"
    config["loss"]["_target_"] = "mnms_groupdistil.losses.GroupWeightedLos"
    config["train"]["inferer"]["_target_"] = "SimpleInfererr"
    splits = "mnms_groupdistil.datasets.mnms.splits"
    config["split_data"] = f"${splits}.prepare_splits(@dataset_dir, @split, @seed, @output_dir)"
    problems = "\n".join(config_problems(config))
    for typo in ("network_deff", "transfrom", "GroupWeightedLos", "SimpleInfererr", "prepare_splits"):
        assert typo in problems, f"{typo} was not reported:\n{problems}"


# ------------------------------------------------------------------------------ 3. properties


def test_train_workflow_has_required_properties(bundle, cohort, untrained_teacher, tmp_path):
    workflow = bundle.make(
        [TRAIN],
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "out"),
        teacher_ckpt=str(untrained_teacher),
        network_name="resnet18",
        **SETTINGS,
    )
    workflow.initialize()  # property values are parsed from the config, which needs the data
    # MONAI's check of the optional "evaluator"/"val_interval" properties reads h["_target_"] for every
    # entry of train#handlers, so a bare "@ref" entry there makes check_properties() raise TypeError.
    handlers = workflow.parser["train#handlers"]
    not_components = [h for h in handlers if not (isinstance(h, dict) and "_target_" in h)]
    assert not not_components, (
        f"train#handlers entries {not_components} are not components with a _target_: "
        "ConfigWorkflow.check_properties() fails on them (TypeError: string indices must be integers)"
    )
    missing = workflow.check_properties()
    assert missing == [], f"train.json lacks required (or mis-referenced optional) properties: {missing}"


# ---------------------------------------------------------------------------- 4. end to end


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["teacher", "groupdistil", "kd", "groupdro"])
def test_run_outputs(student_dirs, mode):
    out = student_dirs[mode]
    for name in ("model_final.pt", "split.json", "metrics.json", "checkpoint_final.pt"):
        assert (out / name).is_file(), f"{mode}: {name} missing in {sorted(p.name for p in out.iterdir())}"
    assert list(out.glob("checkpoint*epoch=1*.pt")), f"{mode}: no epoch checkpoint"
    # no validation set by default: no model is selected, so there is no best model
    assert not (out / "model.pt").exists()

    split = json.loads((out / "split.json").read_text())
    assert (split["split"], split["split_seed"], split["seed"], split["val_fraction"]) == ("demo", 0, 0, 0.0)
    assert split["train"] and split["test"] and split["val"] == [] and split["subjects"]["val"] == []
    assert not set(split["subjects"]["train"]) & set(split["subjects"]["test"])

    metrics = json.loads((out / "metrics.json").read_text())
    expected_mode = "groupdro" if mode == "teacher" else mode
    assert metrics["mode"] == expected_mode
    run_settings = (metrics["split"], metrics["split_seed"], metrics["seed"], metrics["test_frames"])
    assert run_settings == ("demo", 0, 0, "random")
    assert metrics["network"] == ("densenet121" if mode == "groupdistil" else "resnet18")
    assert metrics["teacher"] == ("resnet18" if mode in ("kd", "groupdistil") else None)
    assert (metrics["train_subjects"], metrics["val_subjects"]) == (len(split["train"]), 0)
    assert metrics["test_subjects"] == len(split["test"])
    assert metrics["selection"] == {"rule": "last_epoch", "epoch": 1, "checkpoint": "model_final.pt"}
    assert [h["epoch"] for h in metrics["history"]] == [1]
    assert metrics["metrics"] == metrics["history"][0]["metrics"]
    assert not [k for k in metrics["metrics"] if not k.startswith("test_")], metrics["metrics"]
    assert set(metrics["per_group"]) == set(GROUPS)
    for group in GROUPS:
        for prefix in ("test_acc", "test_patient_acc"):
            value = metrics["per_group"][group][prefix]
            assert value is not None and 0.0 <= value <= 1.0, (group, prefix, value)
            assert metrics["metrics"][f"{prefix}_{group}"] == value
    worst = metrics["metrics"]["test_worst_group_acc"]
    assert worst == pytest.approx(min(metrics["per_group"][g]["test_acc"] for g in GROUPS))
    mean = metrics["metrics"]["test_mean_group_acc"]
    assert mean == pytest.approx(sum(metrics["per_group"][g]["test_acc"] for g in GROUPS) / 3)

    # the saved networks are plain (weights-only) state dicts; the best-model record is empty
    state = load_checkpoint(out / "model_final.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    checkpoint = load_checkpoint(out / "checkpoint_final.pt")
    assert checkpoint["best_model_saver"]["_saved"] == []
    assert checkpoint["metrics_report"]["history"] == metrics["history"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["teacher", "groupdistil", "kd", "groupdro"])
def test_tensorboard_scalars(student_dirs, mode):
    scalars = tensorboard_scalars(student_dirs[mode])
    tags = set(scalars)
    assert "train_loss" in tags
    for group in GROUPS:
        assert f"group_weight/{group}" in tags, sorted(tags)
        assert f"test_acc_{group}" in tags and f"test_patient_acc_{group}" in tags, sorted(tags)
    assert any(t.startswith("group_loss/") for t in tags), sorted(tags)
    assert "test_worst_group_acc" in tags and "test_mean_group_acc" in tags
    assert not [t for t in tags if t.startswith("val_")], sorted(tags)
    assert (
        len(scalars["train_loss"])
        == load_checkpoint(student_dirs[mode] / "checkpoint_final.pt")["trainer"]["iteration"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["teacher", "groupdistil", "groupdro"])
def test_robust_modes_update_group_weights(student_dirs, mode):
    checkpoint = load_checkpoint(student_dirs[mode] / "checkpoint_final.pt")
    weights, num_updates = group_weights_of(checkpoint)
    assert weights.shape == (len(GROUPS),)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
    assert float((weights - 1.0 / len(GROUPS)).abs().max()) > 1e-5, f"{mode}: weights stayed uniform {weights}"
    assert num_updates == checkpoint["trainer"]["iteration"]


@pytest.mark.slow
def test_kd_keeps_group_weights_uniform(student_dirs):
    checkpoint = load_checkpoint(student_dirs["kd"] / "checkpoint_final.pt")
    weights, num_updates = group_weights_of(checkpoint)
    assert torch.allclose(weights, torch.full((len(GROUPS),), 1.0 / len(GROUPS), dtype=weights.dtype), atol=1e-12)
    assert num_updates == 0


@pytest.mark.slow
def test_evaluate_writes_evaluation_json(evaluation, student_dirs):
    out = student_dirs["groupdistil"]
    assert Path(evaluation["checkpoint"]) == out / "model_final.pt"  # the last epoch's model by default
    assert "selection" not in evaluation
    assert evaluation["network"] == "densenet121" and evaluation["split"] == "demo"
    assert (evaluation["split_seed"], evaluation["test_frames"]) == (0, "random")
    assert evaluation["test_subjects"] == len(json.loads((out / "split.json").read_text())["test"])
    assert set(evaluation["per_group"]) == set(GROUPS)
    # the same checkpoint on the same fixed test frames: evaluation reproduces the figures the training
    # run reported for its last epoch
    trained = json.loads((out / "metrics.json").read_text())
    assert set(evaluation["metrics"]) == set(trained["metrics"])
    for key, value in trained["metrics"].items():
        assert evaluation["metrics"][key] == pytest.approx(value), key
    for group in GROUPS:
        assert evaluation["per_group"][group] == pytest.approx(
            {k: v for k, v in trained["per_group"][group].items() if k.startswith("test_")}
        )


# ---------------------------------------------------------------------------------- 5. resume
# (tests/test_resume.py: a stopped run resumes its remaining epochs and ends as an uninterrupted one)


# ------------------------------------------------------------------------------- 6. bad input


@pytest.fixture()
def cohort_without_csv(cohort, tmp_path) -> Path:
    data = tmp_path / "nocsv" / "MnM"  # the parent has no CSV either (find_info_csv also looks there)
    shutil.copytree(cohort, data)
    (data / INFO_CSV_NAME).unlink()
    return data


@pytest.fixture()
def cohort_missing_image(cohort, tmp_path) -> tuple[Path, str]:
    """A copy of the cohort without the image of a training subject of the demo split (split_seed 0)."""
    data = tmp_path / "missing" / "MnM"
    shutil.copytree(cohort, data)
    subject = select_split(load_mnms_cohort(cohort), "demo", split_seed=0)["train"][0]["subject"]
    images = list(data.rglob(f"{subject}_sa.nii.gz"))
    assert len(images) == 1
    images[0].unlink()
    return data, subject


def _initialize_error(bundle, config_files: list[str], **overrides: Any) -> BaseException:
    workflow = bundle.make(config_files, **overrides)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    return info.value


def test_missing_csv_gives_clear_error(bundle, cohort_without_csv, tmp_path):
    err = _initialize_error(
        bundle, [TRAIN, TEACHER], dataset_dir=str(cohort_without_csv), output_dir=str(tmp_path / "o"), **SETTINGS
    )
    data_errors = [e for e in exception_chain(err) if isinstance(e, MnMsDataError)]
    assert data_errors, f"no MnMsDataError in {exception_chain(err)!r}"
    assert "information CSV" in str(data_errors[0]) and str(cohort_without_csv) in str(data_errors[0])


def test_missing_subject_image_gives_clear_error(bundle, cohort_missing_image, tmp_path):
    data, subject = cohort_missing_image
    err = _initialize_error(bundle, [TRAIN, TEACHER], dataset_dir=str(data), output_dir=str(tmp_path / "o"), **SETTINGS)
    data_errors = [e for e in exception_chain(err) if isinstance(e, MnMsDataError)]
    assert data_errors, f"no MnMsDataError in {exception_chain(err)!r}"
    message = str(data_errors[0])
    assert subject in message and f"{subject}_sa.nii.gz" in message


@pytest.mark.slow
def test_cli_ends_with_the_problem_list(bundle, cohort_missing_image, tmp_path):
    """What a user sees on bad data: our problem list as the last lines and a non-zero exit status,
    not MONAI's ``RuntimeError: Failed to evaluate ConfigExpression`` traceback."""
    data, subject = cohort_missing_image
    proc = bundle.cli(
        "training",
        [TRAIN, TEACHER],
        dataset_dir=data,
        output_dir=tmp_path / "o",
        split="demo",
        num_workers=0,
        device="cpu",
    )
    last = refused(proc, 2)
    assert last[0].startswith("1 problem(s) with the images of 1 M&Ms subject(s)"), last
    assert last[1].startswith(f"subject {subject}: image {subject}_sa.nii.gz not found"), last
    assert not (tmp_path / "o").exists()  # nothing written before the data passed its checks


@pytest.mark.slow
def test_cli_refuses_a_mistyped_mode(bundle, cohort, tmp_path):
    proc = bundle.cli(
        "training", [TRAIN], dataset_dir=cohort, output_dir=tmp_path / "o", mode="groupdistill", **SETTINGS
    )
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    last = last_lines(proc.stderr, 1)[0]
    assert "mode='groupdistill' is not a training mode; valid modes: erm, groupdro, kd, groupdistil" in last
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_mistyped_mode_stops_before_training(bundle, cohort, tmp_path):
    err = _initialize_error(
        bundle, [TRAIN], dataset_dir=str(cohort), output_dir=str(tmp_path / "o"), mode="ERM", **SETTINGS
    )
    input_errors = [e for e in exception_chain(err) if isinstance(e, InputError)]
    assert input_errors and "valid modes: erm, groupdro, kd, groupdistil" in str(input_errors[0])


# ----------------------------------------------------------------------- 7. missing teacher


def test_missing_teacher_checkpoint_mentions_teacher_ckpt(bundle, cohort, tmp_path):
    missing = tmp_path / "no_teacher" / "model.pt"
    err = _initialize_error(
        bundle,
        [TRAIN],
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "o"),
        teacher_ckpt=str(missing),
        network_name="resnet18",
        **SETTINGS,
    )
    chain = exception_chain(err)
    not_found = [e for e in chain if isinstance(e, CheckpointNotFoundError)]
    assert not_found, f"no CheckpointNotFoundError in {chain!r}"
    assert "teacher_ckpt" in str(not_found[0]) and str(missing) in str(not_found[0])


def test_a_distilled_run_records_its_teacher_checkpoint(bundle, cohort, untrained_teacher, tmp_path, monkeypatch):
    """run_config.json names the teacher a student was distilled from, as an absolute path (given here relative
    to the working folder); a run without a teacher records none."""
    monkeypatch.chdir(untrained_teacher.parent)
    for configs, recorded in (([TRAIN, KD], str(untrained_teacher)), ([TRAIN, GROUPDRO], None)):
        out = tmp_path / Path(configs[-1]).stem
        settings = {**SETTINGS, "network_name": "resnet18", "teacher_ckpt": untrained_teacher.name}
        workflow = bundle.make(configs, dataset_dir=str(cohort), output_dir=str(out), **settings)
        workflow.initialize()
        assert json.loads((out / "run_config.json").read_text())["settings"]["teacher_ckpt"] == recorded


def test_groupdro_student_needs_no_teacher(bundle, cohort, tmp_path):
    """groupDRO needs no teacher: a missing teacher_ckpt does not matter there."""
    workflow = bundle.make(
        [TRAIN, GROUPDRO],
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "o"),
        teacher_ckpt=str(tmp_path / "none.pt"),
        network_name="resnet18",
        **SETTINGS,
    )
    workflow.initialize()
    assert workflow.parser.get_parsed_content("teacher") is None


def test_generalization_adjustment_uses_training_frame_counts(bundle, cohort, tmp_path):
    """``--group_adjustment C`` adds C / sqrt(n_d) to group d's loss, n_d = training frames of vendor d."""
    workflow = bundle.make(
        [TRAIN, TEACHER], dataset_dir=str(cohort), output_dir=str(tmp_path / "adj"), group_adjustment=2.0, **SETTINGS
    )
    workflow.initialize()
    weights = workflow.parser.get_parsed_content("group_weights")
    datalist = workflow.parser.get_parsed_content("train#datalist")
    frames = workflow.parser["frames_per_patient"]
    counts = [frames * sum(r["group"] == g for r in datalist) for g in range(3)]
    assert weights.adjustments.tolist() == pytest.approx([2.0 / c**0.5 for c in counts])


INFERENCE = str(CONFIGS / "inference.json")


@pytest.mark.slow
def test_inference_writes_one_prediction_per_volume(bundle, cohort, student_dirs, tmp_path, caplog):
    """inference.json alone on a folder of raw volumes (no CSV, no labels), with the GroupDistil student.

    The frame size (32) is not given: it comes from the run's run_config.json.
    """
    folder = cohort / "Testing"
    volumes = sorted(folder.rglob("*_sa.nii.gz"))
    with caplog.at_level("INFO", logger="mnms_groupdistil.datasets.mnms.inference"):
        workflow = bundle.run(
            [INFERENCE],
            workflow_type=None,
            run_id="inference",
            dataset_dir=str(folder),
            output_dir=str(tmp_path),
            run_dir=str(student_dirs["groupdistil"]),
            frame_stride=2,
            num_workers=0,
            device="cpu",
        )
    assert workflow.parser.get_parsed_content("image_size") == SETTINGS["image_size"]
    assert workflow.parser.get_parsed_content("ckpt_path").endswith("model_final.pt")
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["subject"] for r in rows) == sorted(v.name.replace("_sa.nii.gz", "") for v in volumes)
    frames = 0
    for row, volume in zip(sorted(rows, key=lambda r: r["subject"]), sorted(volumes, key=lambda v: v.name)):
        _, _, num_slices, num_frames = nib.load(str(volume)).shape
        assert int(row["frames"]) == num_slices * math.ceil(num_frames / 2)  # every slice, every 2nd phase
        frames += int(row["frames"])
        assert row["prediction"] in ("NOR", "HCM")
        assert int(row["votes_NOR"]) + int(row["votes_HCM"]) == int(row["frames"])
        assert float(row["mean_probability_NOR"]) + float(row["mean_probability_HCM"]) == pytest.approx(1, abs=2e-4)
    assert f"classified {len(volumes)} volumes ({frames} frames) in" in caplog.text and "volumes/s" in caplog.text


@pytest.mark.slow
def test_inference_refuses_settings_other_than_the_run_s(bundle, cohort, student_dirs, tmp_path):
    err = _initialize_error(
        bundle,
        [INFERENCE],
        dataset_dir=str(cohort / "Testing"),
        output_dir=str(tmp_path),
        run_dir=str(student_dirs["groupdistil"]),
        image_size=224,
        workflow_type="infer",
    )
    messages = [str(e) for e in exception_chain(err) if isinstance(e, ValueError)]
    assert any("image_size: the run trained with 32, now 224" in m for m in messages), messages


def test_inference_preprocessing_equals_the_evaluation_s(cohort):
    """The standalone inference.json prepares a frame exactly as train.json's evaluation does."""
    train = ConfigParser()
    train.read_config(TRAIN)
    train.update({"image_size": 40, "intensity_percentiles": [2, 97], "in_channels": 3})
    inference = ConfigParser()
    inference.read_config(INFERENCE)
    inference.update({"run_dir": "", "image_size": 40, "intensity_percentiles": [2, 97], "in_channels": 3})
    volume = next(cohort.rglob("*_sa.nii.gz"))
    item = {"image": str(volume), "subject": "x", "slice": 1, "frame": 2}
    loaded = train.get_parsed_content("train#volumes#transform")(item)
    expected = train.get_parsed_content("validate#preprocessing")(loaded)["image"]
    actual = inference.get_parsed_content("preprocessing")(inference.get_parsed_content("volumes#transform")(item))
    assert actual["image"].shape == (3, 40, 40)
    torch.testing.assert_close(actual["image"], expected, rtol=0, atol=0)


@pytest.mark.slow
def test_monai_tools_work_on_inference_json_alone(student_dirs, tmp_path):
    """verify_net_in_out and ckpt_export need only inference.json and metadata.json, as in the model zoo."""
    from monai.bundle import ckpt_export, verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(METADATA), config_file=INFERENCE, device="cpu")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "student.ts"),
        ckpt_file=str(student_dirs["groupdistil"] / "model_final.pt"),
        key_in_ckpt="",
        meta_file=str(METADATA),
        config_file=INFERENCE,
        image_size=SETTINGS["image_size"],
    )
    assert torch.jit.load(str(tmp_path / "student.ts"))(torch.rand(2, 1, 32, 32)).shape == (2, 2)


@pytest.mark.slow
def test_torchscript_and_onnx_export_match_the_student(student_dirs, tmp_path):
    """MONAI's ckpt_export / onnx_export commands on network_def give the trained student's outputs."""
    import onnxruntime
    from monai.bundle import ckpt_export, onnx_export

    model = student_dirs["groupdistil"] / "model_final.pt"
    common = {
        "net_id": "network_def",
        "ckpt_file": str(model),
        "meta_file": str(METADATA),
        "config_file": TRAIN,
        "key_in_ckpt": "",
    }
    ckpt_export(filepath=str(tmp_path / "student.ts"), **common)
    onnx_export(
        filepath=str(tmp_path / "student.onnx"),
        input_shape=[1, 1, 32, 32],
        use_trace=True,
        converter_kwargs={"dynamo": False},
        **common,
    )

    from mnms_groupdistil.networks import build_network

    eager = build_network("densenet121", num_classes=2, in_channels=1)
    eager.load_state_dict(load_checkpoint(model))
    eager.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = eager(x)
        scripted = torch.jit.load(str(tmp_path / "student.ts"))(x)
    torch.testing.assert_close(scripted, expected, atol=1e-5, rtol=1e-4)
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_inference_config_has_the_properties_monai_tools_look_for(bundle, cohort, student_dirs, tmp_path):
    workflow = bundle.make(
        [INFERENCE],
        workflow_type="infer",
        dataset_dir=str(cohort / "Testing"),
        output_dir=str(tmp_path),
        run_dir=str(student_dirs["groupdistil"]),
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


# ------------------------------------------------------------------ 8. evaluation protocol


def _initialized(bundle, cohort: Path, out: Path, **overrides: Any):
    workflow = bundle.make([TRAIN, TEACHER], dataset_dir=str(cohort), output_dir=str(out), **{**SETTINGS, **overrides})
    workflow.initialize()
    return workflow


def test_split_and_test_frames_follow_split_seed_not_seed(bundle, cohort, tmp_path):
    runs = {
        name: _initialized(bundle, cohort, tmp_path / name, **settings)
        for name, settings in {"a": {"seed": 0}, "b": {"seed": 5}, "c": {"seed": 0, "split_seed": 2}}.items()
    }
    splits = {name: json.loads((tmp_path / name / "split.json").read_text()) for name in runs}
    assert (splits["b"]["seed"], splits["b"]["split_seed"]) == (5, 0)
    assert splits["a"]["subjects"] == splits["b"]["subjects"]  # only the training seed changed
    assert splits["c"]["subjects"] != splits["a"]["subjects"]
    frames = {name: w.parser.get_parsed_content("test#frames") for name, w in runs.items()}
    assert frames["a"] == frames["b"]  # the same test frames in both runs (and every epoch: one fixed list)
    # by default 20 distinct (slice, frame) pairs per test patient, as in the paper
    test = runs["a"].parser.get_parsed_content("test#datalist")
    assert len(frames["a"]) == 20 * len(test)
    for i, record in enumerate(test):
        pairs = [(f["slice"], f["frame"]) for f in frames["a"] if f["volume"] == i]
        assert len(pairs) == 20
        assert all(0 <= z < record["num_slices"] and 0 <= t < record["num_frames"] for z, t in pairs)
        if record["num_slices"] * record["num_frames"] >= 20:  # else drawn with replacement (tiny volumes)
            assert len(set(pairs)) == 20
    assert runs["a"].parser.get_parsed_content("test#dataset").frames == frames["a"]


def test_test_frames_options(bundle, cohort, tmp_path):
    from mnms_groupdistil.datasets.mnms.frames import all_frames, ed_es_frames

    ed_es = _initialized(bundle, cohort, tmp_path / "ed_es", test_frames="ed_es")
    test = ed_es.parser.get_parsed_content("test#datalist")
    assert ed_es.parser.get_parsed_content("test#frames") == ed_es_frames(test)
    every = _initialized(bundle, cohort, tmp_path / "all", test_frames="all")
    assert every.parser.get_parsed_content("test#frames") == all_frames(test)
    err = _initialize_error(
        bundle, [TRAIN, TEACHER], dataset_dir=str(cohort), output_dir=str(tmp_path / "x"), **SETTINGS, test_frames="ED"
    )
    # an InputError: a bundle run ends with this line (mnms_groupdistil.errors.report_errors)
    messages = [str(e) for e in exception_chain(err) if isinstance(e, InputError)]
    assert any("frames='ED'" in m and "test_frames" in m and "random, ed_es, all" in m for m in messages), messages
    err = _initialize_error(
        bundle,
        [TRAIN, TEACHER],
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "y"),
        **SETTINGS,
        val_fraction=1.0,
    )
    messages = [str(e) for e in exception_chain(err) if isinstance(e, InputError)]
    assert any("val_fraction=1.0 must be a number in [0, 1)" in m for m in messages), messages


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    """6 patients per vendor x class: split "demo" keeps 4 per cell for training and 2 for testing."""
    return Path(write_mnms_cohort(tmp_path_factory.mktemp("small") / "MnM", preset="small", seed=0))


@pytest.mark.slow
def test_validation_set_selects_model_pt_and_reports_that_epochs_test_figures(bundle, small_cohort, tmp_path):
    out = tmp_path / "val"
    settings = {**SETTINGS, "max_epochs": 2, "val_fraction": 0.25, "test_frames_per_patient": 4}
    workflow = bundle.make([TRAIN, TEACHER], dataset_dir=str(small_cohort), output_dir=str(out), **settings)
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()

    split = json.loads((out / "split.json").read_text())
    # per vendor x class cell: 6 patients, test max(1, round(6 / 3)) = 2, training 4, of which
    # validation round(4 * 0.25) = 1: 6 cells -> train 18, val 6, test 12
    counts = {part: Counter((r["vendor"], r["pathology"]) for r in split[part]) for part in ("train", "val", "test")}
    cells = {(v, p) for v in GROUPS for p in ("NOR", "HCM")}
    assert counts["train"] == dict.fromkeys(cells, 3) and counts["val"] == dict.fromkeys(cells, 1)
    assert counts["test"] == dict.fromkeys(cells, 2)
    subjects = [set(split["subjects"][part]) for part in ("train", "val", "test")]
    assert sum(map(len, subjects)) == len(set.union(*subjects)) == 36  # disjoint

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_subjects"], metrics["val_subjects"], metrics["test_subjects"]) == (18, 6, 12)
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    scores = [h["metrics"]["val_worst_group_acc"] for h in history]
    best_epoch = 1 if scores[0] >= scores[1] else 2  # the first epoch with the highest validation score
    assert metrics["selection"] == {"rule": "best_val_worst_group_acc", "epoch": best_epoch, "checkpoint": "model.pt"}
    assert metrics["metrics"] == history[best_epoch - 1]["metrics"]
    assert {k.split("_")[0] for k in metrics["metrics"]} == {"test", "val"}
    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()
    tags = set(tensorboard_scalars(out))
    assert "val_worst_group_acc" in tags and "test_worst_group_acc" in tags

    # the reported test figures are those of model.pt: evaluating it reproduces them
    bundle.run(
        [TRAIN, EVALUATE],
        workflow_type=None,
        run_id="evaluating",
        dataset_dir=str(small_cohort),
        output_dir=str(out),
        ckpt_path=str(out / "model.pt"),
        network_name="resnet18",  # the teacher configuration's network
        val_fraction=0.25,
        test_frames_per_patient=4,
        **SETTINGS,
    )
    evaluation = json.loads((out / "evaluation.json").read_text())
    for key, value in evaluation["metrics"].items():
        assert metrics["metrics"][key] == pytest.approx(value), key


@pytest.mark.slow
def test_a_model_learns_the_task(bundle, small_cohort, tmp_path):
    """ERM ResNet-18 for 6 short epochs on the small cohort: held-out accuracy far above chance (0.5).

    Measured on a 2-core CPU with seeds 0, 1, 2 (this test uses 0): mean vendor accuracy 0.917, 0.927,
    0.948 over frames and 0.917, 1.0, 1.0 over patients at the last epoch, after 0.5 (one class for every
    frame) at the first. It took 40-57 s on that machine, which other jobs shared.
    """
    out = tmp_path / "erm"
    settings = {**SETTINGS, "max_epochs": 6, "batch_size": 16, "frames_per_patient": 8, "test_frames_per_patient": 8}
    settings.update(network_name="resnet18", learning_rate=0.001)
    bundle.run([TRAIN, ERM], dataset_dir=str(small_cohort), output_dir=str(out), **settings)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"]["epoch"] == 6
    assert metrics["metrics"]["test_mean_group_acc"] >= 0.8, metrics["metrics"]
    assert metrics["metrics"]["test_patient_mean_group_acc"] >= 0.75, metrics["metrics"]
