"""Batches: batch k is a pure function of (seed, k), and ranks split each batch."""
from __future__ import annotations

import pytest
import torch

from multigan.config import TrainConfig
from multigan.engine.data import IndexStream
from multigan.errors import ConfigError


def _take(stream: IndexStream, n: int) -> list[list[int]]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_index_stream_batch_k_does_not_depend_on_the_start():
    batches = _take(IndexStream(50, 8, seed=3), 40)  # 6 batches per epoch
    for k in (0, 1, 5, 6, 7, 23, 36):
        assert _take(IndexStream(50, 8, seed=3, start=k), 4) == batches[k:k + 4]


def test_index_stream_epochs_are_permutations():
    per_epoch = 48 // 8
    batches = _take(IndexStream(48, 8, seed=0), 4 * per_epoch)
    epochs = [sum(batches[e * per_epoch:(e + 1) * per_epoch], []) for e in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(48))
    assert len({tuple(e) for e in epochs}) == 4  # reshuffled every epoch
    # With a remainder the last items of each permutation are dropped, never repeated.
    batches = _take(IndexStream(50, 8, seed=0), 12)
    for e in range(2):
        epoch = sum(batches[e * 6:(e + 1) * 6], [])
        assert len(epoch) == len(set(epoch)) == 48 and set(epoch) <= set(range(50))


def test_index_stream_seed_and_small_datasets():
    assert _take(IndexStream(50, 8, seed=0), 3) != _take(IndexStream(50, 8, seed=1), 3)
    for batch in _take(IndexStream(5, 64, seed=0), 3):  # batch larger than the dataset
        assert sorted(batch) == list(range(5))


@pytest.mark.parametrize("seed", [-1, 2**40, 2**48, 2**62])
def test_index_stream_accepts_every_seed_the_config_accepts(seed):
    # The epoch seed `seed * 1_000_003 + epoch` overflows torch's 64-bit seed for seed >~ 1.8e13.
    try:
        TrainConfig(seed=seed)
    except ConfigError:
        return  # bounding the seed in the settings is a fix too
    (batch,) = _take(IndexStream(10, 4, seed=seed), 1)
    assert len(set(batch)) == 4



def test_ranks_split_each_global_batch_in_order():
    whole = _take(IndexStream(50, 8, seed=2), 10)
    parts = [_take(IndexStream(50, 8, seed=2, rank=r, world_size=2), 10) for r in range(2)]
    for k in range(10):
        assert parts[0][k] + parts[1][k] == whole[k]
    # The same from a resumed start.
    assert _take(IndexStream(50, 8, seed=2, start=7, rank=1, world_size=2), 2) == [b[4:] for b in whole[7:9]]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ConfigError, match="multiple of 3"):
        IndexStream(50, 8, seed=0, rank=0, world_size=3)


def test_index_tensors_are_the_same_batches():
    stream = IndexStream(50, 8, seed=4, start=3, rank=1, world_size=2)
    as_lists = _take(stream, 12)
    as_tensors = [t.tolist() for t, _ in zip(stream.on(torch.device("cpu")), range(12))]
    assert as_tensors == as_lists
