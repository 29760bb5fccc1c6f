"""The batch compositions: Algorithm 1's one-group batches and group-balanced mixed batches."""

from collections import Counter

import pytest

from mnms_groupdistil.errors import InputError
from mnms_groupdistil.samplers import BalancedBatchSampler, GroupBatchSampler, check_batching, group_shares

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


# ------------------------------------------------------------------ balanced batches


def test_group_shares_spread_the_left_over_places_in_turn():
    assert group_shares(32, 3, 0) == [11, 11, 10]
    assert group_shares(32, 3, 1) == [11, 10, 11]
    assert group_shares(32, 3, 2) == [10, 11, 11]
    assert group_shares(8, 4, 5) == [2, 2, 2, 2]
    # over G steps every group gets the same number of places
    totals = [sum(group_shares(7, 3, step)[g] for step in range(3)) for g in range(3)]
    assert totals == [7, 7, 7]


def test_balanced_batches_hold_every_group_in_equal_shares():
    sampler = BalancedBatchSampler(GROUPS, batch_size=7, num_batches=60, seed=2)
    for step, batch in enumerate(sampler):
        counts = Counter(GROUPS[i] for i in batch)
        assert [counts[g] for g in (0, 1, 2)] == group_shares(7, 3, step)
    # each group's samples are walked through before any repeats: group 1 (10 samples, 2 or 3 a batch)
    seen = [i for batch in sampler for i in batch if GROUPS[i] == 1]
    assert sorted(seen[:10]) == list(range(40, 50))
    # the 3-sample group is reused (oversampled), the 40-sample one is not used up in the first epoch
    assert len({i for batch in sampler for i in batch if GROUPS[i] == 2}) == 3


def test_balanced_batches_across_two_ranks_make_one_balanced_batch():
    for batch_size in (4, 5):
        ranks = [list(BalancedBatchSampler(GROUPS, batch_size, seed=4, num_replicas=2, rank=r)) for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == -(-53 // (2 * batch_size))
        for step, (b0, b1) in enumerate(zip(*ranks)):
            assert len(b0) == len(b1) == batch_size
            together = Counter(GROUPS[i] for i in b0 + b1)
            assert [together[g] for g in (0, 1, 2)] == group_shares(2 * batch_size, 3, step)
            for part in (b0, b1):  # each rank's part is as balanced as its size allows
                counts = Counter(GROUPS[i] for i in part)
                assert max(counts.values()) - min(counts[g] for g in (0, 1, 2)) <= 1
            # ranks take different samples of a group that is large enough
            assert not {i for i in b0 if GROUPS[i] == 0} & {i for i in b1 if GROUPS[i] == 0}


def test_balanced_batches_are_epoch_seeded():
    sampler = BalancedBatchSampler(GROUPS, batch_size=6, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    resumed = BalancedBatchSampler(GROUPS, batch_size=6, seed=1)
    resumed.set_epoch(1)
    assert list(resumed) == second


def test_balanced_batches_need_room_for_every_group():
    with pytest.raises(ValueError, match="cannot hold all 3 groups"):
        BalancedBatchSampler(GROUPS, batch_size=2)
    assert len(next(iter(BalancedBatchSampler(GROUPS, batch_size=2, num_replicas=2, rank=1)))) == 2


def test_batching_is_checked_against_its_values():
    assert check_batching("balanced") == "balanced"
    for bad in ("Balanced", "one-group", True, None):
        with pytest.raises(InputError, match="one_group, mixed, balanced"):
            check_batching(bad)
