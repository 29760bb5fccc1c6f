"""The training loader of both bundles: the ``batching`` setting, and the setting it replaced."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import SequentialSampler

from mnms_groupdistil.data.samplers import BalancedBatchSampler, GroupBatchSampler
from mnms_groupdistil.engine import train_loader
from mnms_groupdistil.errors import InputError

GROUPS = [0] * 12 + [1] * 6 + [2] * 3
DATA = list(range(len(GROUPS)))


def test_each_batching_gives_its_batches():
    one_group = train_loader(DATA, GROUPS, "one_group", batch_size=3, seed=0)
    assert isinstance(one_group.batch_sampler, GroupBatchSampler)
    assert all(len({GROUPS[int(i)] for i in batch}) == 1 for batch in one_group)

    balanced = train_loader(DATA, GROUPS, "balanced", batch_size=6, seed=0)
    assert isinstance(balanced.batch_sampler, BalancedBatchSampler)
    assert all(Counter(GROUPS[int(i)] for i in batch) == {0: 2, 1: 2, 2: 2} for batch in balanced)

    mixed = train_loader(DATA, GROUPS, "mixed", batch_size=4, sampler=SequentialSampler(DATA))
    assert [batch.tolist() for batch in mixed][:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the sampler given is used
    assert sorted(int(i) for batch in train_loader(DATA, GROUPS, "mixed", batch_size=4) for i in batch) == DATA


def test_the_replaced_setting_names_its_replacement():
    with pytest.raises(InputError, match="use --batching one_group instead of --group_batches True"):
        train_loader(DATA, GROUPS, "balanced", 4, group_batches=True)
    with pytest.raises(InputError, match="use --batching mixed instead of --group_batches False"):
        train_loader(DATA, GROUPS, "balanced", 4, group_batches=False)
    with pytest.raises(InputError, match="batching='balance' is not a batch composition"):
        train_loader(DATA, GROUPS, "balance", 4)
    with pytest.raises(InputError, match="3 group ids for a training dataset of 21"):
        train_loader(DATA, [0, 1, 2], "mixed", 4)
