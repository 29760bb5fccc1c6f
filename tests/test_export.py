"""Exported bundles: MONAI networks equal to the trained ones, metadata, and a run where the package is absent."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import (
    CONFIGS,
    REPO,
    TINY_MNMS,
    refused,
    run_command,
    run_exported_inference,
    sr_items,
    without_package,
    write_dicom_series,
    write_foreign_cohort,
)
from monai.bundle import ConfigParser, ConfigWorkflow, download_large_files, verify_net_in_out

from mnms_groupdistil.networks import build_network
from mnms_groupdistil.run_settings import write_run_settings
from mnms_groupdistil.tools import export

CLASSES = ["NOR", "HCM"]


def _random_network(name: str, in_channels: int = 1, seed: int = 0) -> torch.nn.Module:
    """A torchvision network with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    network = build_network(name, num_classes=2, in_channels=in_channels)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return network.eval()


@pytest.mark.parametrize("name", ["densenet121", "resnet18", "resnet50"])
def test_monai_network_computes_what_the_torchvision_network_computes(name):
    trained = _random_network(name, in_channels=3)
    network = export.instantiate_network(export.monai_network_def(name, 2, 3)).eval()
    network.load_state_dict(export.to_monai_state_dict(name, trained.state_dict()), strict=True)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(network(x), trained(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="cannot be exported"):
        export.monai_network_def("vit", 2, 1)


def _fake_run(run_dir: Path, name: str = "resnet18", image_size: int = 24) -> torch.nn.Module:
    """A run folder as training leaves it: record, last-epoch weights, metrics (test_* and val_*)."""
    settings = {
        "network_name": name,
        "in_channels": 1,
        "class_names": CLASSES,
        "image_size": image_size,
        "intensity_percentiles": [1, 99],
        "mode": "groupdistil",
        "split": "split2",
        "seed": 3,
        "max_epochs": 5,
    }
    write_run_settings(run_dir, settings)
    network = _random_network(name)
    torch.save(network.state_dict(), run_dir / "model_final.pt")
    metrics = {
        "epoch": 5,
        "metrics": {
            "test_acc_A": 0.75,
            "test_acc_C": None,  # a vendor without test patients: metrics.json writes null
            "test_acc_D": 0.5,
            "test_worst_group_acc": 0.5,
            "val_worst_group_acc": 0.9,
        },
        "per_group": {"A": {"test_acc": 0.75, "val_acc": 1.0}, "D": {"test_acc": 0.5, "val_acc": 0.8}},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return network


def test_export_writes_a_model_zoo_bundle(tmp_path):
    import onnxruntime

    trained = _fake_run(tmp_path / "run")
    bundle = export.export_bundle(tmp_path / "run", tmp_path / "bundle", version="1.2.0", onnx=True)
    files = ("configs/inference.json", "configs/metadata.json", "configs/logging.conf", "LICENSE", "docs/README.md")
    for path in files:
        assert (bundle / path).is_file(), path
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["version"] == "1.2.0" and "split2" in metadata["changelog"]["1.2.0"]
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["spatial_shape"], image["num_channels"], image["value_range"]) == ([24, 24], 1, [0, 1])
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert (pred["type"], pred["format"], pred["value_range"]) == ("probabilities", "classes", [0, 1])
    assert (pred["num_channels"], pred["spatial_shape"], pred["channel_def"]) == (2, [2], {"0": "NOR", "1": "HCM"})
    # the run's finite test figures: no val_* figure, no null (vendor C had no test patients)
    assert metadata["eval_metrics"] == {"test_acc_A": 0.75, "test_acc_D": 0.5, "test_worst_group_acc": 0.5}
    assert "mnms_groupdistil" not in metadata["required_packages_version"]
    readme = (bundle / "docs" / "README.md").read_text()
    assert "| A | 75.0 |" in readme and "test_worst_group_acc: 50.0" in readme and "90.0" not in readme
    assert "on a GPU it runs with automatic mixed precision" in readme  # the source's amp: on with CUDA

    config_text = (bundle / "configs" / "inference.json").read_text()
    config = json.loads(config_text)
    assert "mnms_groupdistil" not in config_text
    assert (config["image_size"], config["network_name"], config["run_dir"]) == (24, "resnet18", None)
    copies = ("mnms/inference.py", "mnms/transforms.py", "mnms/volumes.py", "mnms/dicom.py", "mnms/frames.py")
    copies += ("predictions.py",)
    for module in (f"datasets/{m}" for m in copies):  # verbatim copies
        assert (bundle / "scripts" / module).read_bytes() == (REPO / "mnms_groupdistil" / module).read_bytes()
    assert not (bundle / "scripts" / "networks.py").exists()  # the network is MONAI's
    # the bundle's output is probabilities: the softmax is its postprocessing (logits 0, ln 3 -> 1/4, 3/4)
    parser = ConfigParser(config)
    parser["bundle_root"] = str(bundle)
    postprocessed = parser.get_parsed_content("postprocessing")({"pred": torch.tensor([0.0, math.log(3.0)])})
    torch.testing.assert_close(postprocessed["pred"].as_tensor(), torch.tensor([0.25, 0.75]))

    x = torch.rand(3, 1, 24, 24)
    with torch.no_grad():
        expected = trained(x)
        network = export.instantiate_network(config["network_def"]).eval()
        network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
        torch.testing.assert_close(network(x), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.jit.load(str(bundle / "models" / "model.ts"))(x), expected, atol=1e-5, rtol=0)
    session = onnxruntime.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_out, expected.numpy(), atol=1e-4, rtol=0)


def test_large_files_lists_the_weights_over_the_model_zoo_limit(tmp_path):
    """ResNet-18 weights (11.2 M parameters, 44.7 MB) are over the zoo's 25 MB: large_files.yml lists each model
    file with its sha256 and address, and MONAI's download_large_files fetches them back from that address."""
    _fake_run(tmp_path / "run")
    hosted = tmp_path / "hosted"
    bundle = export.export_bundle(tmp_path / "run", tmp_path / "bundle", download_url=hosted.as_uri() + "/")
    sizes = {p.relative_to(bundle).as_posix(): p.stat().st_size for p in bundle.rglob("*") if p.is_file()}
    assert sizes["models/model.pt"] > 44 * 10**6
    entries = ConfigParser.load_config_file(bundle / "large_files.yml")["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt", "models/model.ts"]
    assert sorted(p for p, size in sizes.items() if size > 25 * 10**6) == ["models/model.pt", "models/model.ts"]
    for entry in entries:
        file = bundle / entry["path"]
        assert entry == {
            "path": entry["path"],
            "url": f"{hosted.as_uri()}/{entry['path']}",
            "hash_val": hashlib.sha256(file.read_bytes()).hexdigest(),
            "hash_type": "sha256",
        }
        (hosted / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, hosted / entry["path"])
    originals = {e["path"]: (bundle / e["path"]).read_bytes() for e in entries}
    shutil.rmtree(bundle / "models")  # a model-zoo submission without its large files
    download_large_files(bundle_path=str(bundle))
    assert {p: (bundle / p).read_bytes() for p in originals} == originals
    readme = (bundle / "docs" / "README.md").read_text()
    assert "large_files.yml" in readme and "download_large_files" in readme


def test_large_files_without_an_address_and_at_the_limit(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"x" * 11)
    (tmp_path / "models" / "model.ts").write_bytes(b"y" * 10)  # at the limit: allowed
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text("{}")
    entries = export.large_files(tmp_path, limit_bytes=10)
    assert entries == [
        {"path": "models/model.pt", "url": "", "hash_val": hashlib.sha256(b"x" * 11).hexdigest(), "hash_type": "sha256"}
    ]
    written = export.write_large_files(entries, tmp_path / "large_files.yml")
    assert ConfigParser.load_config_file(written) == {"large_files": entries}


def test_export_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no run_config.json"):
        export.export_bundle(tmp_path / "empty", tmp_path / "b1")
    _fake_run(tmp_path / "run")
    with pytest.raises(ValueError, match="not a semantic version"):
        export.export_bundle(tmp_path / "run", tmp_path / "b2", version="1.0")
    with pytest.raises(ValueError, match="no checkpoint 'model.pt'"):
        export.export_bundle(tmp_path / "run", tmp_path / "b3", checkpoint="model.pt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="is not empty"):
        export.export_bundle(tmp_path / "run", tmp_path / "full")
    # the student's weights come through the general loader: its errors speak of a network checkpoint
    torch.save(build_network("resnet34", num_classes=2, in_channels=1).state_dict(), tmp_path / "run" / "other.pt")
    with pytest.raises(ValueError) as info:
        export.export_bundle(tmp_path / "run", tmp_path / "b4", checkpoint="other.pt")
    assert str(info.value).startswith(f"network checkpoint --checkpoint '{tmp_path / 'run' / 'other.pt'}' (plain ")
    assert "does not match the network (ResNet)" in str(info.value) and "teacher" not in str(info.value)


def test_the_exported_inference_refuses_a_mistyped_override_without_the_package(tmp_path):
    _fake_run(tmp_path / "run")
    bundle = export.export_bundle(tmp_path / "run", tmp_path / "bundle")
    copied = (bundle / "scripts" / "overrides.py").read_bytes()
    assert copied == (REPO / "mnms_groupdistil" / "overrides.py").read_bytes()
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    command += ["--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--devcie", "cpu"]
    lines = refused(run_command(command, bundle, without_package(tmp_path)), 3)
    assert lines[1] == "`devcie` is not a setting of this bundle; did you mean `device`?"


@pytest.mark.slow
def test_the_exported_bundle_reports_a_dicom_series_as_sr_and_names_highdicom_where_it_is_missing(tmp_path):
    """Without the package: a DICOM series in, predictions.csv and a Comprehensive SR in the series' study out, with
    the export's name and version; where highdicom is missing too, the run stops on a message naming it."""
    import pydicom

    _fake_run(tmp_path / "run")
    bundle = export.export_bundle(tmp_path / "run", tmp_path / "bundle", version="1.2.0")
    sr_module = Path("datasets", "mnms", "dicom_sr.py")
    assert (bundle / "scripts" / sr_module).read_bytes() == (REPO / "mnms_groupdistil" / sr_module).read_bytes()
    volume = np.random.default_rng(3).integers(0, 2000, (24, 21, 2, 3)).astype(np.int16)
    write_dicom_series(tmp_path / "scans" / "P7", volume, "TOSHIBA_MEC", "1.2.826.0.1.55.1", "1.2.826.0.1.55", "GD0055")
    env = without_package(tmp_path)
    run_exported_inference(bundle, tmp_path / "scans", tmp_path / "out", env)
    with open(tmp_path / "out" / "predictions.csv") as f:
        (row,) = csv.DictReader(f)
    sr = pydicom.dcmread(tmp_path / "out" / "P7_SR.dcm")
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert (sr.StudyInstanceUID, sr.PatientID, evidence.ReferencedSeriesSequence[0].SeriesInstanceUID) == (
        "1.2.826.0.1.55", "GD0055", "1.2.826.0.1.55.1"
    )  # fmt: skip
    items = sr_items(sr)
    assert items["Finding"] == [row["prediction"]] and items["Number of Frames"] == [2 * 3] and row["frames"] == "6"
    assert items["Probability"] == [pytest.approx(float(row[f"mean_probability_{row['prediction']}"]), abs=5e-5)]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(items["Algorithm Name"]) == {metadata["name"]} and set(items["Algorithm Version"]) == {"1.2.0"}
    assert items["Scanner vendor group"] == ["D"]

    (tmp_path / "blocker" / "highdicom.py").write_text("raise ImportError('highdicom is not installed here')\n")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    command += ["--dataset_dir", str(tmp_path / "scans"), "--output_dir", str(tmp_path / "out2"), "--device", "cpu"]
    (message,) = refused(run_command(command, bundle, env), 1)
    assert "highdicom, which writes the DICOM SR, is not installed: pip install highdicom" in message
    assert "set dicom_sr to false" in message
    (message,) = refused(run_command([*command, "--dicom_sr", "false"], bundle, env), 1)  # fire passes it as a string
    assert message == "dicom_sr must be true or false (on the command line: --dicom_sr False), got 'false'."
    csv_only = run_command([*command, "--dicom_sr", "False", "--num_workers", "0"], bundle, env)
    assert csv_only.returncode == 0, csv_only.stderr[-3000:]
    assert (tmp_path / "out2" / "predictions.csv").is_file() and not list((tmp_path / "out2").glob("*.dcm"))


def export_with_the_cli(run: Path, bundle: Path) -> dict:
    """``python -m mnms_groupdistil.tools.export RUN BUNDLE``; checks that the metadata holds the run's test figures.

    Returns:
        the exported ``configs/metadata.json``.
    """
    with_package = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = run_command(
        [sys.executable, "-m", "mnms_groupdistil.tools.export", str(run), str(bundle)], REPO, with_package
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reported = json.loads((run / "metrics.json").read_text())["metrics"]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == {k: v for k, v in reported.items() if k.startswith("test_") and v is not None}
    assert "test_worst_group_acc" in metadata["eval_metrics"]
    return metadata


@pytest.mark.slow
def test_a_student_trained_on_a_foreign_cohort_runs_exported_without_the_package(tmp_path):
    """Train one epoch on a hand-written cohort, export with the CLI, classify a 4D NIfTI volume without the package.

    The exported bundle's predictions equal those of the source inference.json on the same volume, and
    MONAI's verify_net_in_out passes on both inference.json files.
    """
    data = tmp_path / "OpenDataset"
    data.mkdir()
    write_foreign_cohort(data)
    run = tmp_path / "run"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "train_groupdro.json")],
        workflow_type="train",
        logging_file=False,
        dataset_dir=str(data),
        output_dir=str(run),
        **TINY_MNMS,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert json.loads((run / "run_config.json").read_text())["settings"]["image_size"] == 32

    bundle = tmp_path / "exported"
    export_with_the_cli(run, bundle)

    volume = sorted(data.rglob("*_sa.nii.gz"))[0]
    assert len(nib.load(str(volume)).shape) == 4
    source_out = tmp_path / "source_predictions"
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        dataset_dir=str(volume),
        run_dir=str(run),
        output_dir=str(source_out),
        num_workers=0,
        device="cpu",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    verify_net_in_out(
        net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json")
    )

    env = without_package(tmp_path)
    out = tmp_path / "exported_predictions"
    proc = run_exported_inference(bundle, volume, out, env)
    assert "volumes/s" in proc.stdout + proc.stderr
    proc = run_command(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         "configs/metadata.json", "--config_file", "configs/inference.json", "--device", "cpu"],
        bundle,
        env,
    )  # fmt: skip
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]

    tables = {}
    for name, folder in (("source", source_out), ("exported", out)):
        with open(folder / "predictions.csv") as f:
            tables[name] = list(csv.DictReader(f))
        with open(folder / "frame_predictions.csv") as f:
            tables[name + "_frames"] = list(csv.DictReader(f))
    subject = volume.name.replace("_sa.nii.gz", "")
    assert [r["subject"] for r in tables["exported"]] == [subject]
    _, _, slices, phases = nib.load(str(volume)).shape
    assert len(tables["exported_frames"]) == slices * phases
    assert tables["exported"] == tables["source"]
    assert tables["exported_frames"] == tables["source_frames"]
