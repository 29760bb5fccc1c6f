"""Precise BatchNorm: running statistics recomputed as the plain mean of the batches' statistics."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from torch import nn

from mnms_groupdistil.batchnorm import recompute_batchnorm_stats
from mnms_groupdistil.handlers import PreciseBatchNorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 16, 2),
        nn.BatchNorm1d(2),
    )


def test_statistics_are_the_mean_of_the_batch_statistics():
    net = _net()
    batches = [torch.randn(5, 2, 4, 4) * (i + 1) + i for i in range(3)]
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    net.train()
    assert recompute_batchnorm_stats(net, batches) == 3
    conv, bn2d, bn1d = net[0], net[1], net[6]
    assert int(bn2d.num_batches_tracked) == 3
    assert bn2d.momentum == 0.1 and bn1d.momentum == 0.1
    assert net.training and net[3].training
    recomputed = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with torch.no_grad():
        # by hand: per batch, the conv output's mean and unbiased variance per channel; then the plain mean
        features = [conv(x) for x in batches]
        means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features])
        variances = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features])
    torch.testing.assert_close(recomputed["1.running_mean"], means.mean(0))
    torch.testing.assert_close(recomputed["1.running_var"], variances.mean(0))
    with torch.no_grad():  # the second BatchNorm sees the first one's training-mode output, dropout off
        net.eval()
        bn2d.train()
        hidden = [net[5](net[4](net[3](net[2](bn2d(f))))) for f in features]
    torch.testing.assert_close(recomputed["6.running_mean"], torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(
        recomputed["6.running_var"], torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    )
    for key, value in net.named_parameters():  # the weights are untouched
        assert torch.equal(value, before[key]), key


def test_no_batches_leave_the_statistics_as_they_were():
    net = _net()
    net[1].running_mean.fill_(2.0)
    assert recompute_batchnorm_stats(net, []) == 0
    assert torch.equal(net[1].running_mean, torch.full((3,), 2.0))
    assert recompute_batchnorm_stats(nn.Linear(2, 2), [torch.zeros(1, 2)]) == 0


def test_handler_uses_the_first_batches_of_the_trainers_epoch():
    class EpochLoader:
        def __init__(self):
            self.batch_sampler = self
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            gen = torch.Generator().manual_seed(self.epoch)
            return iter([{"image": torch.randn(4, 2, 4, 4, generator=gen), "label": torch.zeros(4)} for _ in range(5)])

    net, loader = _net(), EpochLoader()
    handler = PreciseBatchNorm(net, loader, num_batches=2, device="cpu")
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    handler.attach(engine)
    engine.run([0], max_epochs=3)
    assert loader.epoch == 3
    expected = _net()
    recompute_batchnorm_stats(expected, [b["image"] for b in list(loader)[:2]])
    torch.testing.assert_close(net[1].running_mean, expected[1].running_mean)
    torch.testing.assert_close(net[1].running_var, expected[1].running_var)
