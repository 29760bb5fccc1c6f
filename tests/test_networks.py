"""Tests for mnms_groupdistil.networks (CPU, small inputs, no downloads)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from mnms_groupdistil.network_checkpoints import frozen, load_network, load_weights
from mnms_groupdistil.networks import SUPPORTED_NETWORKS, build_network

NAMES = ["resnet18", "resnet34", "resnet50", "densenet121"]
STEM = {"resnet18": "conv1", "resnet34": "conv1", "resnet50": "conv1", "densenet121": "features.conv0"}
HEAD = {"resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "densenet121": "classifier"}


def _save_tv_state_dict(name: str, path, seed: int = 1234, wrap: str | None = None):
    """Save a randomly initialised (fixed seed) torchvision ImageNet-shaped state dict."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    # make BN statistics non-trivial so that loading them is actually checked
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    sd = model.state_dict()
    torch.save({wrap: sd} if wrap else sd, str(path))
    return sd


def test_supported_names():
    assert set(SUPPORTED_NETWORKS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_build_output_shape_and_stem(name, in_channels):
    net = build_network(name, num_classes=3, in_channels=in_channels).eval()
    stem = net.get_submodule(STEM[name])
    assert stem.in_channels == in_channels
    head = net.get_submodule(HEAD[name])
    assert isinstance(head, torch.nn.Linear) and head.out_features == 3
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 3)


def test_other_channel_count():
    net = build_network("resnet18", num_classes=4, in_channels=5).eval()
    assert net.conv1.weight.shape == (64, 5, 7, 7)
    with torch.no_grad():
        assert net(torch.randn(1, 5, 32, 32)).shape == (1, 4)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_stem_untouched_for_rgb(name):
    """in_channels=3 is exactly torchvision's model (same RNG draws, original stem kept)."""
    torch.manual_seed(0)
    ours = build_network(name, num_classes=2, in_channels=3)
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None, num_classes=2)
    sd_ours, sd_ref = ours.state_dict(), ref.state_dict()
    assert sd_ours.keys() == sd_ref.keys()
    for k in sd_ref:
        assert torch.equal(sd_ours[k], sd_ref[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_rgb_loads_every_non_head_tensor(name, tmp_path):
    path = tmp_path / f"{name}_imagenet.pth"
    saved = _save_tv_state_dict(name, path)
    net = build_network(name, num_classes=2, in_channels=3, pretrained_path=str(path))
    sd = net.state_dict()
    head = HEAD[name] + "."
    n = 0
    for k, v in saved.items():
        if k.startswith(head):
            continue
        assert torch.equal(sd[k], v), k
        n += 1
    assert n == len([k for k in sd if not k.startswith(head)])
    # head not loaded: new shape, fresh values
    assert sd[HEAD[name] + ".weight"].shape[0] == 2


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_pretrained_wrapped(wrap, tmp_path):
    path = tmp_path / "w.pth"
    saved = _save_tv_state_dict("resnet18", path, wrap=wrap)
    net = build_network("resnet18", num_classes=2, in_channels=3, pretrained_path=path)
    assert torch.equal(net.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])


def test_pretrained_head_not_loaded_even_with_1000_classes(tmp_path):
    path = tmp_path / "r18.pth"
    saved = _save_tv_state_dict("resnet18", path)
    torch.manual_seed(99)
    net = build_network("resnet18", num_classes=1000, in_channels=3, pretrained_path=path)
    assert not torch.equal(net.fc.weight, saved["fc.weight"])


def test_pretrained_legacy_densenet_keys(tmp_path):
    """Official torchvision DenseNet files use 'norm.1' style keys and lack num_batches_tracked."""
    saved = _save_tv_state_dict("densenet121", tmp_path / "tmp.pth")
    legacy = {}
    for k, v in saved.items():
        if k.endswith("num_batches_tracked"):
            continue
        for a in ("norm", "relu", "conv"):
            for i in ("1", "2"):
                k = k.replace(f".{a}{i}.", f".{a}.{i}.")
        legacy[k] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    net = build_network("densenet121", num_classes=2, in_channels=3, pretrained_path=path)
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(net.state_dict()[key], saved[key])


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_pretrained_grey_stem_is_rgb_sum_and_equivalent(name, tmp_path):
    path = tmp_path / f"{name}.pth"
    saved = _save_tv_state_dict(name, path)
    stem_key = STEM[name] + ".weight"
    rgb = build_network(name, num_classes=2, in_channels=3, pretrained_path=path).eval()
    grey = build_network(name, num_classes=2, in_channels=1, pretrained_path=path).eval()
    torch.testing.assert_close(grey.state_dict()[stem_key], saved[stem_key].sum(dim=1, keepdim=True))
    # every other non-head tensor identical
    for k, v in grey.state_dict().items():
        if k != stem_key and not k.startswith(HEAD[name] + "."):
            assert torch.equal(v, rgb.state_dict()[k]), k
    # identical heads -> identical logits for grey image vs grey repeated to RGB
    grey.get_submodule(HEAD[name]).load_state_dict(rgb.get_submodule(HEAD[name]).state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_pretrained_multichannel_stem_average_repeat(tmp_path):
    path = tmp_path / "r18.pth"
    saved = _save_tv_state_dict("resnet18", path)
    net = build_network("resnet18", num_classes=2, in_channels=4, pretrained_path=path)
    w = net.conv1.weight.detach()
    expected = saved["conv1.weight"].mean(dim=1, keepdim=True).repeat(1, 4, 1, 1) * 3 / 4
    torch.testing.assert_close(w, expected)
    # channel-constant input gives the RGB model's stem response
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(x.repeat(1, 4, 1, 1), w, stride=2, padding=3),
        torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), saved["conv1.weight"], stride=2, padding=3),
        atol=1e-5,
        rtol=1e-4,
    )


def test_bad_name_lists_choices():
    with pytest.raises(ValueError, match="densenet121") as info:
        build_network("vgg16")
    assert "vgg16" in str(info.value) and "resnet18" in str(info.value)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_channels": 0}, {"num_classes": 2.5}])
def test_bad_ints(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build_network("resnet18", **kwargs)


def test_missing_pretrained_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(ValueError, match="nope.pth") as info:
        build_network("resnet18", pretrained_path=str(path))
    assert isinstance(info.value, FileNotFoundError)
    assert "pretrained_path" in str(info.value)


def test_wrong_architecture_state_dict(tmp_path):
    path = tmp_path / "r18.pth"
    _save_tv_state_dict("resnet18", path)
    with pytest.raises(ValueError, match="r18.pth") as info:
        build_network("resnet34", pretrained_path=path)
    assert "missing" in str(info.value) and "layer1.2" in str(info.value)
    with pytest.raises(ValueError, match="r18.pth") as info:
        build_network("densenet121", pretrained_path=path)
    assert "unexpected" in str(info.value)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="junk.pth"):
        build_network("resnet18", pretrained_path=path)
    text = tmp_path / "text.pth"
    text.write_text("not a torch file")
    with pytest.raises(ValueError, match="text.pth"):
        build_network("resnet18", pretrained_path=text)


# --------------------------------------------------------------------------- load_network


@pytest.fixture(scope="module")
def trained_sd():
    torch.manual_seed(7)
    net = build_network("resnet18", num_classes=2, in_channels=1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    return net.state_dict()


def _fresh():
    torch.manual_seed(8)
    return build_network("resnet18", num_classes=2, in_channels=1)


def _assert_loaded_frozen(net, sd):
    out_sd = net.state_dict()
    for k, v in sd.items():
        assert torch.equal(out_sd[k], v), k
    assert not net.training
    assert all(not m.training for m in net.modules())
    assert all(not p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("layout", ["network", "plain", "ddp", "student", "ddp_network", "model", "state_dict"])
def test_load_network_round_trip(layout, trained_sd, tmp_path):
    ddp = {"module." + k: v for k, v in trained_sd.items()}
    compiled = {"_orig_mod." + k: v for k, v in trained_sd.items()}
    optimizer = {"state": {}, "param_groups": []}
    content = {
        "network": {"network": trained_sd},
        "plain": trained_sd,
        "ddp": ddp,
        "student": {"student": trained_sd, "teacher_epoch": torch.tensor(3)},
        "ddp_network": {"network": ddp, "optimizer": optimizer},
        # as torchvision's reference training scripts save: {"model", "optimizer", "lr_scheduler", "epoch", "args"}
        "model": {"model": ddp, "optimizer": optimizer, "epoch": 3},
        "state_dict": {"state_dict": compiled, "epoch": 3, "global_step": 120},
    }[layout]
    path = tmp_path / "model.pt"
    torch.save(content, path)
    net = load_network(_fresh(), str(path), device="cpu")
    _assert_loaded_frozen(net, trained_sd)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ref = build_network("resnet18", num_classes=2, in_channels=1)
        ref.load_state_dict(trained_sd)
        torch.testing.assert_close(net(x), ref.eval()(x))


def test_load_network_explicit_key(trained_sd, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"teacher": trained_sd, "network": {"x": torch.zeros(1)}}, path)
    _assert_loaded_frozen(load_network(_fresh(), path, key="teacher"), trained_sd)
    with pytest.raises(ValueError, match="ckpt.pt"):
        load_network(_fresh(), path, key="missing")


def test_load_network_missing_file(tmp_path):
    path = tmp_path / "teacher" / "model.pt"
    with pytest.raises(FileNotFoundError, match="model.pt") as info:
        load_network(_fresh(), path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"teacher checkpoint teacher_ckpt '{path}' does not exist: ")
    assert "train_teacher" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        load_network(_fresh(), path, setting="ckpt_path")
    assert (
        str(info.value) == f"network checkpoint ckpt_path '{path}' does not exist: pass --ckpt_path <path of a "
        "trained model file>."
    )


def test_load_weights_loads_without_freezing_and_names_a_network_checkpoint(trained_sd, tmp_path):
    """The general loader (a student to export, a model to evaluate): weights in, the network's mode and gradients
    as they were, and messages that speak of a network checkpoint, never of a teacher."""
    path = tmp_path / "model_final.pt"
    torch.save({"network": trained_sd}, path)
    net = _fresh().train()
    assert load_weights(net, path) is net
    assert all(torch.equal(net.state_dict()[k], v) for k, v in trained_sd.items())
    assert net.training and all(p.requires_grad for p in net.parameters())
    torch.save(build_network("resnet34", num_classes=2, in_channels=1).state_dict(), path)
    with pytest.raises(ValueError) as info:
        load_weights(_fresh(), path, setting="--checkpoint")
    message = str(info.value)
    assert message.startswith(f"network checkpoint --checkpoint '{path}' (plain state dict) does not match the ")
    assert "teacher" not in message


def test_load_network_mismatch(tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(build_network("resnet34", num_classes=2, in_channels=1).state_dict(), path)
    with pytest.raises(ValueError, match="r34.pt") as info:
        load_network(_fresh(), path)
    assert "unexpected" in str(info.value) and "layer1.2" in str(info.value)
    path2 = tmp_path / "classes.pt"
    torch.save(build_network("resnet18", num_classes=5, in_channels=1).state_dict(), path2)
    with pytest.raises(ValueError, match="fc.weight"):
        load_network(_fresh(), path2)


def test_load_network_training_checkpoint_without_network(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, path)
    with pytest.raises(ValueError, match="key=") as info:
        load_network(_fresh(), path)
    assert "nor is one under 'network', 'student', 'model', 'state_dict'" in str(info.value)


def test_frozen():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert frozen(net) is net
    assert not net.training and not net[1].training
    assert all(not p.requires_grad for p in net.parameters())


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def densenet_student():
    torch.manual_seed(3)
    return build_network("densenet121", num_classes=2, in_channels=1).eval()


def test_torchscript_densenet_student(densenet_student):
    x = torch.randn(2, 1, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.* emits a FutureWarning (deprecated) in torch >= 2.9
        scripted = torch.jit.script(densenet_student)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), densenet_student(x), atol=1e-5, rtol=1e-5)


def test_onnx_densenet_student(densenet_student, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "student.onnx"
    x = torch.randn(1, 1, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy exporter DeprecationWarning
        # dynamo=False: the default dynamo exporter needs `onnxscript`, not installed offline.
        torch.onnx.export(
            densenet_student,
            (x,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(3, 1, 64, 64)
    (got,) = sess.run(None, {"image": x2.numpy()})
    with torch.no_grad():
        ref = densenet_student(x2).numpy()
    assert got.shape == (3, 2)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(ref), atol=1e-4, rtol=1e-4)
