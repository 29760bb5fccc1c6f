"""Which ImageNet weights a network starts from: pretrained_path, torchvision's cache, or none (said in the log)."""

from __future__ import annotations

import logging

import pytest
import torch

from mnms_groupdistil.network_checkpoints import CheckpointNotFoundError
from mnms_groupdistil.networks import build_network, find_imagenet_weights


def test_pretrained_path_wins(tmp_path, caplog):
    weights = tmp_path / "mine.pth"
    torch.save({"fc.weight": torch.zeros(1)}, weights)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    with caplog.at_level(logging.INFO, logger="mnms_groupdistil.networks"):
        assert find_imagenet_weights("resnet18", weights, hub_dir=tmp_path / "hub") == str(weights)
    assert f"ImageNet initialisation from pretrained_path {weights}" in caplog.text
    with pytest.raises(CheckpointNotFoundError, match="pretrained_path .*nope.pth.* does not exist"):
        find_imagenet_weights("resnet18", tmp_path / "nope.pth")


def test_torchvision_cache_is_found_and_loads(tmp_path, caplog):
    """A file named as torchvision names its download is used; build_network then loads every non-head tensor."""
    source = build_network("resnet18", num_classes=1000, in_channels=3)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / "resnet18-f37072fd.pth")
    with caplog.at_level(logging.INFO, logger="mnms_groupdistil.networks"):
        found = find_imagenet_weights("resnet18", None, hub_dir=tmp_path / "hub")
    assert found == str(cache / "resnet18-f37072fd.pth")
    assert "torchvision's cached file" in caplog.text
    network = build_network("resnet18", num_classes=2, in_channels=3, pretrained_path=found)
    torch.testing.assert_close(network.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert network.fc.out_features == 2


def test_no_weights_says_the_network_starts_random(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mnms_groupdistil.networks"):
        assert find_imagenet_weights("resnet50", None, hub_dir=tmp_path) is None
    assert "starts from random initialisation" in caplog.text
    assert "resnet50-0676ba61.pth" in caplog.text and str(tmp_path / "checkpoints") in caplog.text
    with pytest.raises(ValueError, match="Unknown network name"):
        find_imagenet_weights("vgg11")
