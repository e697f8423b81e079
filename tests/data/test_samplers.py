from __future__ import annotations

import pytest

from lit_papers.data.samplers import EvalShardSampler, ShardSampler, sample_seed


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (5, 1)])
def test_shards_are_disjoint_equal_length_and_cover(n, world):
    shards = [list(ShardSampler(n, seed=3, rank=r, world_size=world, with_seeds=False)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    assert len(flat) - n == (-n) % world  # only the wrap-around padding repeats
    if n % world == 0:
        assert len(set(flat)) == len(flat)


def test_epochs_reshuffle_deterministically():
    a = ShardSampler(100, seed=1, with_seeds=False)
    b = ShardSampler(100, seed=1, with_seeds=False)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)


def test_seeds_are_pure_functions_of_seed_epoch_index():
    sampler = ShardSampler(20, seed=5)
    sampler.set_epoch(2)
    for index, seed in sampler:
        assert seed == sample_seed(5, 2, index)
    assert sample_seed(5, 2, 3) != sample_seed(5, 3, 3) != sample_seed(6, 2, 3)


def test_skip_first_applies_to_one_epoch_only():
    sampler = ShardSampler(12, seed=0, with_seeds=False)
    full = list(sampler)
    sampler.skip_first(0, 5)
    assert list(sampler) == full[5:]
    sampler.set_epoch(1)
    assert len(list(sampler)) == 12


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (251, 2)])
def test_eval_shards_partition_without_padding(n, world):
    parts = [list(EvalShardSampler(n, rank=r, world_size=world)) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
