"""Algorithm 1's one-group batches."""

from collections import Counter

import pytest

from mnms_groupdistil.data.samplers import GroupBatchSampler

GROUPS = [0] * 40 + [1] * 10 + [2] * 3


def test_every_batch_holds_one_group_and_groups_are_drawn_uniformly():
    sampler = GroupBatchSampler(GROUPS, batch_size=4, num_batches=3000, seed=1)
    drawn = Counter()
    for batch in sampler:
        batch_groups = {GROUPS[i] for i in batch}
        assert len(batch_groups) == 1
        assert len(set(batch)) == len(batch)
        group = batch_groups.pop()
        assert len(batch) == min(4, GROUPS.count(group))
        drawn[group] += 1
    for group in (0, 1, 2):  # binomial(3000, 1/3): sd ~ 26
        assert abs(drawn[group] - 1000) < 130


def test_epoch_length_reproducibility_and_reshuffle():
    sampler = GroupBatchSampler(GROUPS, batch_size=4, seed=3)
    assert len(sampler) == 14  # ceil(53 / 4)
    first = list(sampler)
    assert list(sampler) == first  # the sampler does not count epochs itself: the trainer sets them
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first  # another epoch draws anew
    sampler.set_epoch(0)
    assert list(sampler) == first
    resumed = GroupBatchSampler(GROUPS, batch_size=4, seed=3)  # a new process resuming at epoch 1
    resumed.set_epoch(1)
    assert list(resumed) == second


def test_a_group_is_covered_before_repeating():
    sampler = GroupBatchSampler([0] * 12, batch_size=4, num_batches=3, seed=0)
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(12))


def test_ranks_draw_the_same_group_and_disjoint_samples():
    ranks = [list(GroupBatchSampler(GROUPS, batch_size=4, seed=5, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 7  # ceil(53 / 8)
    for b0, b1 in zip(*ranks):
        assert {GROUPS[i] for i in b0} == {GROUPS[i] for i in b1}
        if GROUPS[b0[0]] != 2:
            assert not set(b0) & set(b1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        GroupBatchSampler(GROUPS, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        GroupBatchSampler([], batch_size=2)
    with pytest.raises(ValueError, match="rank"):
        GroupBatchSampler(GROUPS, batch_size=2, num_replicas=2, rank=2)
