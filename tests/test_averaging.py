"""Weight averaging: an exponential moving average of the weights, by hand, its state, and what is evaluated."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from mnms_groupdistil.errors import InputError
from mnms_groupdistil.handlers import PreciseBatchNorm, WeightAveraging
from mnms_groupdistil.handlers.averaging import ema_decay


def test_ema_decay_from_a_time_constant_in_epochs():
    assert ema_decay(1.0, 10) == pytest.approx(math.exp(-0.1))
    assert ema_decay(0.5, 4) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="ema_epochs"):
        ema_decay(0, 10)


def _train(averaging: WeightAveraging, network: nn.Linear, values, epoch_length: int) -> None:
    """An engine whose every iteration sets the weight to the next value (as an optimizer step would)."""

    def step(engine, value):
        with torch.no_grad():
            network.weight.fill_(value)

    engine = Engine(step)
    averaging.attach(engine)
    averaging.attach(engine)  # idempotent
    engine.run(values, max_epochs=1, epoch_length=epoch_length)


def test_the_average_follows_the_weights_by_hand():
    network = nn.Linear(1, 1, bias=False)
    averaging = WeightAveraging(network, "ema", epochs=0.5)
    assert averaging.evaluated_network is not network
    values = [1.0, 3.0, -2.0, 5.0]
    _train(averaging, network, values, epoch_length=4)
    decay = math.exp(-1 / (0.5 * 4))
    expected = values[0]  # the first step copies the weights
    for value in values[1:]:
        expected = decay * expected + (1 - decay) * value
    assert float(averaging.evaluated_network.weight) == pytest.approx(expected)
    assert float(network.weight) == 5.0  # the trained network itself is untouched


def test_the_state_resumes_and_none_keeps_the_network():
    network = nn.Linear(1, 1, bias=False)
    averaging = WeightAveraging(network, "ema", epochs=1.0)
    _train(averaging, network, [2.0, 4.0], epoch_length=2)
    state = averaging.state_dict()
    other = WeightAveraging(nn.Linear(1, 1, bias=False), "ema", epochs=1.0)
    other.load_state_dict(state)
    assert torch.equal(other.evaluated_network.weight, averaging.evaluated_network.weight)
    assert int(other.averaged.n_averaged) == 2
    with pytest.raises(InputError, match="no averaged weights"):
        other.load_state_dict({})

    plain = WeightAveraging(network, "none")
    assert plain.evaluated_network is network and plain.state_dict() == {}
    plain.load_state_dict(state)  # nothing to restore
    with pytest.raises(InputError, match="weight_averaging='swa'"):
        WeightAveraging(network, "swa")


def test_a_ddp_wrapper_is_looked_through():
    network = nn.Linear(2, 1)
    wrapped = nn.DataParallel(network)
    averaging = WeightAveraging(wrapped, "ema")
    assert isinstance(averaging.evaluated_network, nn.Linear)


def test_averaged_weights_always_get_their_batchnorm_recomputed():
    """An ``AveragedModel`` does not average BatchNorm buffers: with weight averaging on, PreciseBatchNorm runs
    whatever ``precise_bn`` says."""
    network = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    for method, enabled, runs in (("ema", False, True), ("none", False, False), ("none", True, True)):
        handler = PreciseBatchNorm(network, [], enabled=enabled, averaging=WeightAveraging(network, method))
        engine = Engine(lambda engine, batch: None)
        handler.attach(engine)
        assert engine.has_event_handler(handler.epoch_completed, Events.EPOCH_COMPLETED) is runs, (method, enabled)
