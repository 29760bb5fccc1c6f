"""``python -m mnms_groupdistil.tools.benchmark``: one tiny CPU run, checked for structure and consistency
(not speed)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mnms_groupdistil.tools import benchmark

TINY_ARGS = [
    "--device", "cpu", "--image_size", "32", "--batch_size", "4", "--warmup", "1", "--iterations", "2",
    "--cohort", "tiny", "--num_workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a second busy process on 2 cores makes two intra-op threads ~10x slower
    try:
        path = tmp_path_factory.mktemp("bench") / "bench.json"
        argv = [*TINY_ARGS, "--bundle", "mnms", "--json", str(path), "--override", "augment_on_device=True"]
        assert benchmark.main(argv) == 0
    finally:
        torch.set_num_threads(previous)
    return json.loads(path.read_text())


@pytest.mark.slow
def test_json_structure(report):
    assert report["machine"]["device"] == "cpu"
    assert report["machine"]["cpu_count"] >= 1
    (config,) = report["configurations"]
    assert (config["bundle"], config["student"], config["teacher"]) == ("mnms", "densenet121", "resnet18")
    assert (config["image_size"], config["batch_size"], config["amp"], config["amp_dtype"]) == (32, 4, False, None)
    assert config["settings"] == {"augment_on_device": True}
    for key in (
        "ceiling_img_s",
        "loss_path_img_s",
        "end_to_end_img_s",
        "kd_end_to_end_img_s",
        "data_pipeline_img_s",
        "host_peak_rss_mib",
    ):
        assert isinstance(config[key], float) and math.isfinite(config[key]) and config[key] > 0, key
    assert config["device_peak_mib"] is None  # CPU run: no device memory


@pytest.mark.slow
def test_ratios_are_consistent(report):
    (c,) = report["configurations"]
    assert c["ratio"] == pytest.approx(c["end_to_end_img_s"] / c["ceiling_img_s"], rel=1e-12)
    # time per image of GroupDistil over KD = KD's throughput over GroupDistil's
    assert c["groupdistil_over_kd"] == pytest.approx(c["kd_end_to_end_img_s"] / c["end_to_end_img_s"], rel=1e-12)
    assert c["loss_path_over_plain"] == pytest.approx(c["ceiling_img_s"] / c["loss_path_img_s"], rel=1e-12)


@pytest.mark.slow
def test_table_has_one_row_per_configuration(report):
    table = benchmark.format_table(report["configurations"])
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].split("|")[0].strip() == "bundle" and set(lines[1]) <= {"-", "+"}
    assert lines[2].split("|")[0].strip() == "mnms"
    assert "fp32" in lines[2]


def test_plain_kd_loss_matches_hand_derivation():
    # two classes, T = 1, alpha = 0.5: student logits (0, 0) -> p = (1/2, 1/2); teacher (ln 3, 0) -> q = (3/4, 1/4)
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    value = benchmark.plain_kd_loss(student, teacher, torch.tensor([0]), temperature=1.0, alpha=0.5)
    ce = math.log(2.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(value) == pytest.approx(0.5 * ce + 0.5 * kl, rel=1e-6)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no waterbirds_groupdistil bundle"):
        benchmark.benchmark_bundle("waterbirds", "cpu", 32, 4, bundles_dir=tmp_path)
    with pytest.raises(ValueError, match="bundle='imagenet' is not one of"):
        benchmark.benchmark_bundle("imagenet", "cpu", 32, 4, bundles_dir=tmp_path)


def test_cli_reports_missing_bundle(tmp_path, capsys):
    """The command line ends on the problem, naming the file it looked for under ``--bundles_dir``, and measures
    nothing: no table on stdout, and no JSON where one was asked for."""
    out = tmp_path / "reports" / "out.json"
    with pytest.raises(SystemExit) as info:
        benchmark.main([*TINY_ARGS, "--bundle", "waterbirds", "--bundles_dir", str(tmp_path), "--json", str(out)])
    message = str(info.value.code)  # a message as the exit code: printed to stderr, exit status 1
    missing = tmp_path / "waterbirds_groupdistil" / "configs" / "train.json"
    assert message.startswith("error: bundle='waterbirds': ") and f"{missing} does not exist" in message, message
    assert capsys.readouterr().out == ""
    assert not out.parent.exists()
