"""Frame sampling rules (incl. padding) and the P x K identity batch sampler."""
from collections import Counter

import numpy as np
import pytest

from core.data.sampling import IdentityBatchSampler, dense_frames, eval_frames, evenly_frames, pad_cyclic, train_frames

CYCLIC = [0, 1, 2, 0, 1, 2, 0, 1]


def test_padding_repeats_frames_cyclically_in_time_order():
    assert pad_cyclic(np.arange(3), 8).tolist() == CYCLIC
    rng = np.random.default_rng(0)
    for mode in ("random", "restricted"):
        assert train_frames(3, 8, mode, rng).tolist() == CYCLIC
    for mode in ("evenly", "dense"):
        assert [c.tolist() for c in eval_frames(3, 8, mode)] == [CYCLIC]
    assert [c.tolist() for c in dense_frames(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]


def test_train_frame_rules():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(4, 60))
        r = train_frames(length, 4, "random", rng)
        assert len(set(r.tolist())) == 4 and np.all(np.diff(r) > 0) and r.max() < length
        s = train_frames(length, 4, "restricted", rng)
        bounds = (np.arange(5) * length) // 4
        assert np.all((bounds[:-1] <= s) & (s < bounds[1:]))  # one frame per equal chunk
    seen = {tuple(train_frames(40, 4, "restricted", rng)) for _ in range(50)}
    assert len(seen) > 40


def test_test_frame_rules():
    assert [c.tolist() for c in evenly_frames(10, 4)] == [[1, 3, 6, 8]]
    assert [c.tolist() for c in evenly_frames(4, 4)] == [[0, 1, 2, 3]]
    assert [c.tolist() for c in evenly_frames(9, 1)] == [[4]]
    chunks = dense_frames(13, 4)
    assert len(chunks) == 4 and np.concatenate(chunks)[:13].tolist() == list(range(13))
    assert eval_frames(100, 8, "dense")[0].tolist() == list(range(8))  # N is free at test time
    with pytest.raises(ValueError, match="valid: evenly, dense"):
        eval_frames(10, 4, "all")
    with pytest.raises(ValueError, match="valid: random, restricted"):
        train_frames(10, 4, "uniform", np.random.default_rng(0))


def _pids(counts):
    return [p for p, n in enumerate(counts) for _ in range(n)]


PIDS = _pids([3, 5, 1, 4, 6, 2, 7, 3, 4, 5, 2, 8])  # 12 identities, 50 tracklets


def _structure(batch, pids, P, K):
    ids = [pids[i] for i, _ in batch]
    blocks = [ids[k * K:(k + 1) * K] for k in range(P)]
    assert len(batch) == P * K and all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == P
    return [b[0] for b in blocks]


@pytest.mark.parametrize("epoch_def", ["identities", "tracklets"])
def test_batches_are_p_identities_by_k_tracklets(epoch_def):
    s = IdentityBatchSampler(PIDS, 4, 3, seed=0, epoch_def=epoch_def)
    batches = list(s)
    assert len(batches) == len(s) == (12 // 4 if epoch_def == "identities" else 50 // 12)
    for b in batches:
        _structure(b, PIDS, 4, 3)
        assert all(isinstance(seed, int) for _, seed in b)


def test_identities_epoch_visits_each_identity_once():
    s = IdentityBatchSampler(PIDS, 4, 3, seed=0)
    for epoch in range(5):
        s.set_epoch(epoch)
        ids = [i for b in s for i in _structure(b, PIDS, 4, 3)]
        assert sorted(ids) == list(range(12))
    s = IdentityBatchSampler(PIDS, 5, 3, seed=0)  # 12 // 5 = 2 batches, 2 identities sit out
    assert len(s) == 2 and len({i for b in s for i in _structure(b, PIDS, 5, 3)}) == 10


def test_identity_with_fewer_than_k_tracklets_is_sampled_with_replacement():
    s = IdentityBatchSampler(_pids([1, 2, 6, 6]), 4, 4, seed=3)
    counts = Counter(i for i, _ in next(iter(s)))
    assert counts[0] == 4 and counts[1] + counts[2] == 4
    assert all(counts[i] <= 1 for i in range(3, 15)) and sum(counts[i] for i in range(3, 15)) == 8


def test_tracklets_epoch_covers_most_tracklets():
    s = IdentityBatchSampler(PIDS, 4, 3, seed=0, epoch_def="tracklets")
    used = {i for b in s for i, _ in b}
    assert len(used) >= 0.7 * len(PIDS)


@pytest.mark.parametrize("epoch_def", ["identities", "tracklets"])
def test_deterministic_per_seed_and_epoch(epoch_def):
    def batches(seed, epoch):
        s = IdentityBatchSampler(PIDS, 4, 3, seed=seed, epoch_def=epoch_def)
        s.set_epoch(epoch)
        return list(s)
    assert batches(0, 2) == batches(0, 2)
    assert batches(0, 2) != batches(0, 3)
    assert batches(0, 2) != batches(1, 2)


def test_rank_split_partitions_the_global_batch():
    parts = []
    for rank in range(2):
        s = IdentityBatchSampler(PIDS, 4, 3, seed=7, rank=rank, world_size=2)
        s.set_epoch(1)
        parts.append(list(s))
        for b in parts[-1]:
            _structure(b, PIDS, 2, 3)  # whole identities per rank
    glob = IdentityBatchSampler(PIDS, 4, 3, seed=7)
    glob.set_epoch(1)
    assert [a + b for a, b in zip(*parts)] == list(glob)
    with pytest.raises(ValueError, match="P=4 is not divisible by world_size=3"):
        IdentityBatchSampler(PIDS, 4, 3, seed=0, world_size=3)
    with pytest.raises(ValueError, match="only 12 identities"):
        IdentityBatchSampler(PIDS, 16, 4, seed=0)
