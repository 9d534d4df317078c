"""Which tracklets form a batch (P identities x K tracklets) and which frames form a clip [A10, A12].

Padding rule (every mode): a tracklet, or a last dense chunk, with fewer than N frames is padded by repeating
its frames cyclically in time order, e.g. frames [0, 1, 2] with N = 8 give [0, 1, 2, 0, 1, 2, 0, 1].
"""
from __future__ import annotations

import typing
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from core.config import EpochDef, FlipPer


def pad_cyclic(indices: np.ndarray, n: int) -> np.ndarray:
    """[L] frame indices (L >= 1) -> [n]: the first n entries of indices repeated cyclically."""
    return np.resize(np.asarray(indices, dtype=np.int64), n)


def random_frames(num_frames: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] indices: n distinct frames uniformly at random, sorted in time [A12 'random']."""
    if num_frames < n:
        return pad_cyclic(np.arange(num_frames), n)
    return np.sort(rng.choice(num_frames, n, replace=False))


def restricted_frames(num_frames: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] indices: the tracklet is cut into n equal chunks and one random frame is taken from each
    (restricted random sampling) [A12 'restricted']."""
    if num_frames < n:
        return pad_cyclic(np.arange(num_frames), n)
    bounds = (np.arange(n + 1) * num_frames) // n
    return rng.integers(bounds[:-1], bounds[1:])


def evenly_frames(num_frames: int, n: int) -> list[np.ndarray]:
    """One clip [n]: the centre frames of n equal chunks, i.e. n evenly spaced frames [A12 'evenly']."""
    if num_frames < n:
        return [pad_cyclic(np.arange(num_frames), n)]
    return [((2 * np.arange(n) + 1) * num_frames) // (2 * n)]


def dense_frames(num_frames: int, n: int) -> list[np.ndarray]:
    """ceil(L / n) clips [n]: all frames in consecutive chunks of n, the last chunk padded [A12 'dense']."""
    return [pad_cyclic(np.arange(s, min(s + n, num_frames)), n) for s in range(0, num_frames, n)]


FLIP_PER = typing.get_args(FlipPer)  # [A17] frame | clip


def flip_decisions(n: int, prob: float, per: str, rng: np.random.Generator) -> list[bool]:
    """[n] horizontal-flip decisions of a training clip [A17]: "frame" draws one per frame ("each frame is
    augmented by random horizontal flipping"), "clip" one for the whole clip (repeated n times). Drawn from the
    item's own generator, after its frame choice, so a clip is a function of its item seed."""
    if per == "frame":
        return (rng.random(n) < prob).tolist()
    if per == "clip":
        return [bool(rng.random() < prob)] * n
    raise ValueError(f"unknown flip_per {per!r}; valid: {', '.join(FLIP_PER)}")


TRAIN_FRAMES = {"random": random_frames, "restricted": restricted_frames}
EVAL_FRAMES = {"evenly": evenly_frames, "dense": dense_frames}


def train_frames(num_frames: int, n: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """[n] frame indices of a training clip; mode is DataConfig.train_sampling."""
    if mode not in TRAIN_FRAMES:
        raise ValueError(f"unknown training frame sampling {mode!r}; valid: {', '.join(TRAIN_FRAMES)}")
    return TRAIN_FRAMES[mode](num_frames, n, rng)


def eval_frames(num_frames: int, n: int, mode: str) -> list[np.ndarray]:
    """List of [n] frame-index clips of a test tracklet; mode is EvalConfig.sampling."""
    if mode not in EVAL_FRAMES:
        raise ValueError(f"unknown test frame sampling {mode!r}; valid: {', '.join(EVAL_FRAMES)}")
    return EVAL_FRAMES[mode](num_frames, n)


EPOCH_DEFS = typing.get_args(EpochDef)  # [A10] identities | tracklets


class IdentityBatchSampler(Sampler):
    """Batches of P identities x K tracklets for batch-hard triplets (paper: P=16, K=4), as a `batch_sampler`.

    Each batch is a list of (tracklet_index, item_seed): the item seed decides frame choice and flips, so a run
    is reproducible and resumable whatever the number of DataLoader workers. Batches of epoch e come from
    np.random.default_rng([seed, epoch]); call set_epoch(e) before each epoch.

    epoch_def [A10]:
      "identities": an epoch is one pass over the training identities: num_ids // P batches, each identity
                    at most once per epoch (the num_ids % P left over sit this epoch out); ~39 batches on MARS.
      "tracklets":  an epoch covers ~every tracklet once: len(pids) // (P*K) batches; identities are drawn
                    in proportion to their not yet used tracklets, each taking K of them.
    An identity with fewer than K tracklets is sampled with replacement.

    DistributedDataParallel: every rank draws the same global batches and keeps P / world_size whole
    identities (K tracklets each) of each: rank r gets identities r*P/ws ... (r+1)*P/ws - 1 of the batch.
    Batch layout: [id_0 x K, id_1 x K, ...] (the K tracklets of an identity are adjacent).
    """

    def __init__(self, pids: Sequence[int], num_ids: int, num_tracklets: int, seed: int,
                 epoch_def: str = "identities", rank: int = 0, world_size: int = 1):
        if epoch_def not in EPOCH_DEFS:
            raise ValueError(f"unknown epoch_def {epoch_def!r}; valid: {', '.join(EPOCH_DEFS)}")
        if num_ids % world_size:
            raise ValueError(f"ids_per_batch P={num_ids} is not divisible by world_size={world_size}; "
                             f"each rank must get whole identities")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        groups: dict[int, list[int]] = {}
        for i, pid in enumerate(pids):
            groups.setdefault(int(pid), []).append(i)
        self.by_pid = {p: np.array(v) for p, v in sorted(groups.items())}
        if len(self.by_pid) < num_ids:
            raise ValueError(f"ids_per_batch P={num_ids} but the training set has only {len(self.by_pid)} identities")
        self.P, self.K, self.seed, self.epoch_def = num_ids, num_tracklets, seed, epoch_def
        self.rank, self.world_size, self.num_items, self.epoch = rank, world_size, len(pids), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.epoch_def == "identities":
            return len(self.by_pid) // self.P
        return max(1, self.num_items // (self.P * self.K))

    def _pick(self, pid: int, rng: np.random.Generator, k: int, exclude: Sequence[int] = ()) -> list[int]:
        """k tracklets of `pid` (not in `exclude` when enough are left), with replacement if it has fewer than k."""
        items = self.by_pid[pid]
        rest = np.setdiff1d(items, exclude) if len(exclude) else items
        if len(rest) >= k:
            return rng.choice(rest, k, replace=False).tolist()
        return rng.choice(items, k, replace=True).tolist()

    def _global(self, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
        groups = self._by_identities(rng) if self.epoch_def == "identities" else self._by_tracklets(rng)
        out = []
        for group in groups:  # P lists of K tracklet indices
            items = [i for g in group for i in g]
            seeds = rng.integers(0, 2 ** 63 - 1, len(items))
            out.append([(int(i), int(s)) for i, s in zip(items, seeds)])
        return out

    def _by_identities(self, rng: np.random.Generator) -> list[list[list[int]]]:
        order = rng.permutation(np.array(list(self.by_pid)))
        return [[self._pick(int(p), rng, self.K) for p in order[b * self.P:(b + 1) * self.P]]
                for b in range(len(self))]

    def _by_tracklets(self, rng: np.random.Generator) -> list[list[list[int]]]:
        """Identities drawn in proportion to their unused tracklets; each takes K of them (refilled when spent)."""
        pids = np.array(list(self.by_pid))
        unused = {int(p): rng.permutation(self.by_pid[p]).tolist() for p in pids}
        out = []
        for _ in range(len(self)):
            left = np.array([len(unused[int(p)]) for p in pids], dtype=float)
            if np.count_nonzero(left) < self.P:
                for p in pids[left == 0]:
                    unused[int(p)] = rng.permutation(self.by_pid[p]).tolist()
                left = np.array([len(unused[int(p)]) for p in pids], dtype=float)
            batch = []
            for p in rng.choice(pids, self.P, replace=False, p=left / left.sum()).tolist():
                take, unused[p] = unused[p][:self.K], unused[p][self.K:]
                batch.append(take + self._pick(p, rng, self.K - len(take), take) if len(take) < self.K else take)
            out.append(batch)
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        share = self.P // self.world_size * self.K
        for batch in self._global(np.random.default_rng([self.seed, self.epoch])):
            yield batch[self.rank * share:(self.rank + 1) * share]


class EpochStream(Sampler):
    """The batches of epochs start, start + 1, ... of an IdentityBatchSampler as one endless stream.

    A DataLoader over it is iterated once for the whole run, so its (persistent) workers keep prefetching across
    epoch boundaries instead of refilling at every epoch start. Epoch e's batches are exactly those of
    ``sampler.set_epoch(e); iter(sampler)``: the consumer takes ``batches_per_epoch`` of them per epoch.
    """

    def __init__(self, sampler: IdentityBatchSampler, start_epoch: int = 0):
        self.sampler, self.start_epoch = sampler, start_epoch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.start_epoch
        while True:
            self.sampler.set_epoch(epoch)
            yield from self.sampler
            epoch += 1
