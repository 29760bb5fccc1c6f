"""Learning-rate schedules: values by hand, set per iteration, and continued exactly by a resumed run."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from mnms_groupdistil.errors import InputError
from mnms_groupdistil.handlers import LearningRateSchedule
from mnms_groupdistil.handlers.schedule import scheduled_lr


def test_scheduled_lr_by_hand():
    assert scheduled_lr(0.1, "constant", 7, 10) == 0.1
    assert scheduled_lr(0.1, "cosine", 0, 10) == pytest.approx(0.1)
    assert scheduled_lr(0.1, "cosine", 5, 10) == pytest.approx(0.05)  # halfway: (1 + cos(pi / 2)) / 2
    assert scheduled_lr(0.1, "cosine", 9, 10) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)) / 2)
    # warm-up of 4 steps: 1/4, 2/4, 3/4, 4/4 of the rate, then cosine over the 6 steps left
    assert [scheduled_lr(0.2, "cosine", s, 10, 4) for s in range(4)] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert scheduled_lr(0.2, "cosine", 4, 10, 4) == pytest.approx(0.2)
    assert scheduled_lr(0.2, "cosine", 7, 10, 4) == pytest.approx(0.1)
    with pytest.raises(InputError, match="warmup_epochs"):
        scheduled_lr(0.1, "cosine", 0, 10, 10)
    with pytest.raises(InputError, match="constant, cosine"):
        scheduled_lr(0.1, "linear", 0, 10)


def _engine_rates(optimizer, schedule, max_epochs, epoch_length, warmup_epochs=0.0, stop_after=None):
    handler = LearningRateSchedule(optimizer, schedule, warmup_epochs)
    rates = []
    engine = Engine(lambda e, b: rates.append(optimizer.param_groups[0]["lr"]))
    handler.attach(engine)
    handler.attach(engine)  # idempotent
    engine.run(range(epoch_length), max_epochs=max_epochs)
    return rates


def test_the_handler_sets_every_iterations_rate():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    rates = _engine_rates(optimizer, "cosine", max_epochs=2, epoch_length=5, warmup_epochs=0.4)
    assert rates == pytest.approx([scheduled_lr(0.3, "cosine", s, 10, 2) for s in range(10)])


def test_a_resumed_run_continues_the_schedule():
    """The base rate is the optimizer's at construction, so a checkpoint's (scheduled) rate does not shift it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    handler = LearningRateSchedule(optimizer, "cosine")
    optimizer.param_groups[0]["lr"] = 0.01  # what loading a checkpoint of epoch 1 restores
    rates = []
    engine = Engine(lambda e, b: rates.append(optimizer.param_groups[0]["lr"]))
    handler.attach(engine)
    engine.load_state_dict({"iteration": 5, "epoch_length": 5, "max_epochs": 2})
    engine.run(range(5), max_epochs=2)
    assert rates == pytest.approx([scheduled_lr(0.3, "cosine", s, 10) for s in range(5, 10)])
    assert engine.state.learning_rate == pytest.approx(rates[-1])


def test_bad_settings_are_refused():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    with pytest.raises(InputError, match="lr_schedule='step'"):
        LearningRateSchedule(optimizer, "step")
    with pytest.raises(InputError, match="warmup_epochs"):
        LearningRateSchedule(optimizer, "cosine", -1)
