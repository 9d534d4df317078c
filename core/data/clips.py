"""Clips of N frames as tensors, and the train / test DataLoaders the engine uses."""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from core.config import DataConfig
from core.data.base import DatasetError, Tracklet
from core.data.sampling import EpochStream, IdentityBatchSampler, eval_frames, flip_decisions, train_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_frame(path: str) -> torch.Tensor:
    """[3, h, w] uint8 RGB; DatasetError naming the path if the file is missing, unreadable or truncated."""
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, "image file is truncated"
        raise DatasetError(f"{path}: cannot decode frame ({e}); expected a readable JPEG") from e
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class ClipTransform:
    """Frames [3, h, w] uint8 -> clip [N, 3, H, W] uint8: resize, optional flip. Scaling to [0, 1] and the
    ImageNet normalisation happen on the training device (core.data.normalize.normalize_clips): 4x less to copy.

    `flip` is one decision for the whole clip (bool) or one per frame (a sequence of N bools) [A17]; the caller
    takes the decisions (core.data.sampling.flip_decisions).
    """

    def __init__(self, height: int, width: int):
        self.size = (height, width)
        self.resize = v2.Resize(self.size, antialias=True)

    def __call__(self, frames: Sequence[torch.Tensor], flip: bool | Sequence[bool] = False) -> torch.Tensor:
        if len({tuple(f.shape) for f in frames}) == 1:
            clip = torch.stack(list(frames))  # [N, 3, h, w]
            clip = clip if tuple(clip.shape[-2:]) == self.size else self.resize(clip)
        else:  # frames of different sizes (DukeMTMC-VideoReID): resize one by one
            clip = torch.stack([self.resize(f) for f in frames])
        if isinstance(flip, bool):
            flip = [flip] * len(clip)
        rows = torch.tensor(list(flip), dtype=torch.bool)  # (N,) which frames to flip
        if rows.all():
            clip = v2.functional.horizontal_flip(clip)
        elif rows.any():
            clip = torch.where(rows[:, None, None, None], v2.functional.horizontal_flip(clip), clip)
        return clip  # [N, 3, H, W] uint8


@contextlib.contextmanager
def _one_thread():
    """Run clip and batch tensor ops with one intra-op thread: they are too small to gain from more, and on a
    busy 2-core machine two threads made the main-process loader (num_workers=0) ~7x slower (core.bench data).
    DataLoader workers already run with one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def read_clip(paths: Sequence[str], indices: np.ndarray, transform: ClipTransform,
              flip: bool | Sequence[bool]) -> torch.Tensor:
    """[N, 3, H, W]: frames paths[indices] (each distinct file decoded once)."""
    with _one_thread():
        cache = {int(i): read_frame(paths[int(i)]) for i in set(indices.tolist())}
        return transform([cache[int(i)] for i in indices], flip)


class TrainClips(Dataset):
    """dataset[(index, item_seed)] -> (clip [N, 3, H, W] uint8, pid, camid); frames and flips from the item seed.

    flip_per [A17]: "frame" flips each frame independently with probability flip_prob, "clip" the whole clip.
    """

    def __init__(self, tracklets: Sequence[Tracklet], seq_len: int, sampling: str, height: int, width: int,
                 flip_prob: float, flip_per: str):
        self.tracklets, self.seq_len, self.sampling, self.flip_prob = tracklets, seq_len, sampling, flip_prob
        self.flip_per = flip_per
        self.transform = ClipTransform(height, width)

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, item_seed = key
        t = self.tracklets[index]
        rng = np.random.default_rng(item_seed)
        indices = train_frames(len(t.paths), self.seq_len, self.sampling, rng)
        flips = flip_decisions(self.seq_len, self.flip_prob, self.flip_per, rng)
        return read_clip(t.paths, indices, self.transform, flips), t.pid, t.camid


class EvalClips(Dataset):
    """dataset[i] -> (clip [N, 3, H, W] uint8, owner): clip i of all test clips; owner indexes `tracklets`.

    "evenly": one clip per tracklet; "dense": every chunk of every tracklet is a clip [A12].
    """

    def __init__(self, tracklets: Sequence[Tracklet], seq_len: int, sampling: str, height: int, width: int):
        self.tracklets = tracklets
        self.items = [(owner, idx) for owner, t in enumerate(tracklets)
                      for idx in eval_frames(len(t.paths), seq_len, sampling)]
        self.transform = ClipTransform(height, width)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        owner, idx = self.items[i]
        return read_clip(self.tracklets[owner].paths, idx, self.transform, False), owner


def collate(batch: list) -> tuple:
    """default_collate with one intra-op thread (stacking a batch with two threads on a busy 2-core machine took
    ~0.5 s instead of ~5 ms in the main process)."""
    with _one_thread():
        return default_collate(batch)


def _loader_kwargs(num_workers: int) -> dict:
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0, "collate_fn": collate,
            "pin_memory": torch.cuda.is_available()}


def _train_clips(tracklets: Sequence[Tracklet], cfg: DataConfig) -> TrainClips:
    """The training clips of cfg, one place for both loaders (the stream once dropped data.flip_per)."""
    return TrainClips(tracklets, cfg.seq_len, cfg.train_sampling, cfg.height, cfg.width, cfg.flip_prob, cfg.flip_per)


def make_train_loader(tracklets: Sequence[Tracklet], cfg: DataConfig, seed: int, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """Yields (clips [B, N, 3, H, W] uint8, pids [B] long, camids [B] long), B = P*K / world_size.

    Call loader.batch_sampler.set_epoch(e) before each epoch.
    """
    sampler = IdentityBatchSampler([t.pid for t in tracklets], cfg.ids_per_batch, cfg.tracklets_per_id, seed,
                                   cfg.epoch_def, rank, world_size)
    return DataLoader(_train_clips(tracklets, cfg), batch_sampler=sampler, **_loader_kwargs(cfg.num_workers))


def make_train_stream(tracklets: Sequence[Tracklet], cfg: DataConfig, seed: int, start_epoch: int = 0, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """make_train_loader's batches of epochs start_epoch, start_epoch + 1, ... as one endless loader (iterate it
    once; ``loader.batch_sampler.batches_per_epoch`` batches make an epoch): no refill at epoch boundaries."""
    sampler = IdentityBatchSampler([t.pid for t in tracklets], cfg.ids_per_batch, cfg.tracklets_per_id, seed,
                                   cfg.epoch_def, rank, world_size)
    return DataLoader(_train_clips(tracklets, cfg), batch_sampler=EpochStream(sampler, start_epoch),
                      **_loader_kwargs(cfg.num_workers))


def make_test_loader(tracklets: Sequence[Tracklet], seq_len: int, sampling: str, height: int, width: int,
                     batch_size: int, num_workers: int) -> DataLoader:
    """Yields (clips [B', N, 3, H, W] uint8, owner [B'] long) in order; owner[i] indexes `tracklets`.

    B' <= batch_size clips ("dense" splits a tracklet into several clips, possibly across batches): the
    extractor averages the clip features of each owner.
    """
    data = EvalClips(tracklets, seq_len, sampling, height, width)
    return DataLoader(data, batch_size=batch_size, shuffle=False, **_loader_kwargs(num_workers))
