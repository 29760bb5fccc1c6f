"""Training speed options: mixed-precision dtype, channels-last, worker count, logging interval, bundle wiring."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from helpers import CONFIGS, MNMS_BUNDLE, TINY_MNMS
from ignite.engine import Events

from mnms_groupdistil.acceleration import (
    AutocastInferer,
    autocast_dtype,
    default_num_workers,
    every,
    grad_scaler_needed,
    to_device,
)
from mnms_groupdistil.batch_augment import AugmentOnDevice
from mnms_groupdistil.networks import build_network

TRAIN = str(CONFIGS / "train.json")


def test_autocast_dtype_choices():
    assert autocast_dtype(False, "cpu") is None
    assert autocast_dtype(False, "cuda:0", "float16") is None
    assert autocast_dtype(True, "cpu") is torch.bfloat16  # every CPU autocasts to bfloat16
    assert autocast_dtype(True, "cpu", "float16") is torch.float16
    assert autocast_dtype(True, torch.device("cpu"), torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype='fp8'"):
        autocast_dtype(True, "cpu", "fp8")
    with pytest.raises(TypeError, match="amp must be True or False"):
        autocast_dtype("yes", "cpu")


def test_grad_scaler_only_for_float16_on_cuda():
    assert grad_scaler_needed(torch.float16, "cuda:0")
    assert not grad_scaler_needed(torch.bfloat16, "cuda:0")
    assert not grad_scaler_needed(torch.float16, "cpu")
    assert not grad_scaler_needed(None, "cuda:0")


def test_every_filters_events():
    keep = every(3)
    assert [i for i in range(1, 10) if keep(None, i)] == [3, 6, 9]
    assert all(every(1)(None, i) for i in range(1, 5))
    engine = SimpleNamespace(state=SimpleNamespace(epoch_length=4))  # and the last iteration of each epoch
    assert [i for i in range(1, 13) if every(10)(engine, i)] == [4, 8, 10, 12]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="log interval"):
            every(bad)


def test_default_num_workers_follows_the_machine():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_num_workers() == min(8, cpus)
    assert default_num_workers(limit=1) == 1


def test_channels_last_network_and_inputs():
    net = to_device(build_network("resnet18", 2, 1), "cpu", channels_last=True)
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}

    def record(x):
        seen["channels_last"] = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.sum(dim=(2, 3))

    AutocastInferer(channels_last=True)(torch.randn(2, 3, 4, 5), record)
    assert seen["channels_last"]
    AutocastInferer(channels_last=False)(torch.randn(2, 3, 4, 5), record)
    assert not seen["channels_last"]


def test_autocast_inferer_runs_bfloat16_on_cpu():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    assert AutocastInferer(torch.bfloat16)(x, layer).dtype == torch.bfloat16
    assert AutocastInferer(None)(x, layer).dtype == torch.float32
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        AutocastInferer("bfloat16")


# ------------------------------------------------------------------------------ bundle wiring


def workflow(cohort, teacher_ckpt, out, **overrides):
    settings = {**TINY_MNMS, "dataset_dir": str(cohort), "output_dir": str(out), "teacher_ckpt": str(teacher_ckpt)}
    wf = MNMS_BUNDLE.make([TRAIN], **{**settings, **overrides})
    wf.initialize()
    return wf


@pytest.mark.slow
def test_bundle_trains_in_bfloat16_channels_last_on_cpu(cohort, untrained_teacher, tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wf = workflow(cohort, untrained_teacher, tmp_path, amp=True, channels_last=True, network_name="resnet18")
        trainer = wf.parser.get_parsed_content("train#trainer")
        teacher = wf.parser.get_parsed_content("teacher")
        dtypes = []
        teacher.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
        wf.run()
        wf.finalize()
    finally:
        torch.set_num_threads(previous)
    assert trainer.amp is False  # bfloat16 needs no gradient scaler
    assert trainer.inferer.dtype is torch.bfloat16 and trainer.inferer.channels_last
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the teacher ran under the same autocast
    assert trainer.network.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert teacher.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"])).all()
    state = torch.load(tmp_path / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert int(state["group_weights"]["num_updates"]) == trainer.state.iteration


def test_bundle_loader_options(cohort, untrained_teacher, tmp_path):
    wf = workflow(cohort, untrained_teacher, tmp_path, num_workers=1, compile=True, network_name="resnet18")
    loader = wf.parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 1 and loader.persistent_workers and not loader.pin_memory
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.compile and isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule)
    assert not trainer.non_blocking
    # random frames, rotations and flips stay random from epoch to epoch in persistent workers
    first, second = ([batch["image"].clone() for batch in loader] for _ in range(2))
    assert len(first) == len(second) > 0
    assert any(not torch.equal(a, b) for a, b in zip(first, second))


def test_bundle_pins_memory_for_cuda():
    from monai.bundle import ConfigParser

    def parsed(key, **overrides):
        parser = ConfigParser()
        parser.read_config(TRAIN)
        parser.update(overrides)
        return parser.get_parsed_content(key)

    assert parsed("pin_memory", device="cuda:0") is True  # no GPU needed: only the setting is resolved
    assert parsed("pin_memory", device="cpu") is False
    assert parsed("num_workers") == default_num_workers()


@pytest.mark.slow
def test_bundle_rotates_and_flips_on_the_device(cohort, untrained_teacher, tmp_path):
    wf = workflow(cohort, untrained_teacher, tmp_path, augment_on_device=True, network_name="resnet18")
    names = [type(t).__name__ for t in wf.parser.get_parsed_content("train#preprocessing").transforms]
    assert "RandRotated" not in names and "RandFlipd" not in names  # not also on the CPU
    trainer = wf.parser.get_parsed_content("train#trainer")
    teacher = wf.parser.get_parsed_content("teacher")
    assert isinstance(trainer.prepare_batch, AugmentOnDevice)
    loaded, student_inputs, teacher_inputs = [], [], []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: loaded.append(e.state.batch["image"].clone()))
    trainer.network.register_forward_pre_hook(  # training steps only, not the per-epoch test evaluation
        lambda module, args: student_inputs.append(args[0].clone()) if module.training else None
    )
    teacher.register_forward_pre_hook(lambda module, args: teacher_inputs.append(args[0].clone()))
    wf.run()
    wf.finalize()
    assert len(loaded) == len(student_inputs) == len(teacher_inputs) > 0
    # the teacher sees exactly the augmented images the student sees, and they differ from the loaded ones
    assert all(torch.equal(s, t) for s, t in zip(student_inputs, teacher_inputs))
    assert any(not torch.allclose(s, b, atol=1e-4) for s, b in zip(student_inputs, loaded))
    default = workflow(cohort, untrained_teacher, tmp_path / "cpu", network_name="resnet18")
    names = [type(t).__name__ for t in default.parser.get_parsed_content("train#preprocessing").transforms]
    assert "RandRotated" in names and "RandFlipd" in names
    assert not isinstance(default.parser.get_parsed_content("train#trainer").prepare_batch, AugmentOnDevice)
