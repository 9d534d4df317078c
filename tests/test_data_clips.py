"""Clip tensors and loaders: shapes, flips per frame [A17] or per clip, reproducibility across worker counts, owners."""
import numpy as np
import pytest
import torch
from PIL import Image

from core.config import DataConfig
from core.data import DatasetError, Tracklet, load_mars, make_test_loader, make_train_loader
from core.data.clips import IMAGENET_MEAN, IMAGENET_STD, TrainClips, make_train_stream
from core.data.normalize import normalize_clips
from core.data.sampling import flip_decisions, train_frames


@pytest.fixture(scope="module")
def tiny(tiny_synthetic_root):
    return load_mars(tiny_synthetic_root)


@pytest.fixture
def asymmetric(tmp_path):
    """A 4-frame tracklet whose frames differ and are left-right asymmetric."""
    paths = []
    for f in range(4):
        img = np.zeros((16, 8, 3), np.uint8)
        img[:, :2] = 50 * f + 40
        img[4 + f, 5:] = 255
        paths.append(str(tmp_path / f"f{f}.png"))
        Image.fromarray(img).save(paths[-1])
    return Tracklet(tuple(paths), 0, 1)


def test_one_flip_decision_per_clip(asymmetric):
    plain = TrainClips([asymmetric], 4, "restricted", 16, 8, flip_prob=0.0, flip_per="clip")[(0, 0)][0]
    flipped = TrainClips([asymmetric], 4, "restricted", 16, 8, flip_prob=1.0, flip_per="clip")[(0, 0)][0]
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)
    data = TrainClips([asymmetric], 4, "restricted", 16, 8, flip_prob=0.5, flip_per="clip")
    kinds = []
    for seed in range(40):
        clip = data[(0, seed)][0]
        same = [torch.equal(clip[n], plain[n]) for n in range(4)]
        mirrored = [torch.equal(clip[n], plain[n].flip(-1)) for n in range(4)]
        assert all(same) or all(mirrored)
        kinds.append(all(mirrored))
        assert torch.equal(clip, data[(0, seed)][0])  # a function of the item seed
    assert 5 < sum(kinds) < 35


def test_each_frame_flipped_independently_by_default(asymmetric):
    # [A17] the paper: "each frame is augmented by random horizontal flipping" (data.flip_per = frame, default)
    assert DataConfig().flip_per == "frame"
    plain = TrainClips([asymmetric], 4, "restricted", 16, 8, flip_prob=0.0, flip_per="frame")[(0, 0)][0]
    data = TrainClips([asymmetric], 4, "restricted", 16, 8, flip_prob=0.5, flip_per="frame")
    mixed = 0
    for seed in range(40):
        clip = data[(0, seed)][0]
        mirrored = [torch.equal(clip[n], plain[n].flip(-1)) for n in range(4)]
        assert all(mirrored[n] or torch.equal(clip[n], plain[n]) for n in range(4))
        # the decisions are the item generator's 4 draws after its frame choice
        rng = np.random.default_rng(seed)
        train_frames(4, 4, "restricted", rng)
        assert mirrored == flip_decisions(4, 0.5, "frame", rng)
        mixed += 0 < sum(mirrored) < 4
        assert torch.equal(clip, data[(0, seed)][0])  # a function of the item seed
    assert mixed > 10  # a clip-level decision would never mix (P(mixed) = 14/16 per clip)


@pytest.mark.parametrize("make", [make_train_loader, make_train_stream])
def test_both_train_loaders_carry_every_clip_setting(tiny, make):
    # make_train_stream (the one training uses) once built its clips without data.flip_per: "clip" was ignored
    cfg = DataConfig(seq_len=3, train_sampling="random", height=24, width=12, flip_prob=0.25, flip_per="clip",
                     ids_per_batch=2, tracklets_per_id=2, num_workers=0)
    data = make(tiny.train, cfg, seed=0).dataset
    assert (data.seq_len, data.sampling, data.flip_prob, data.flip_per) == (3, "random", 0.25, "clip")
    assert data[(0, 0)][0].shape == (3, 3, 24, 12)


def test_flip_decisions_by_hand():
    # default_rng(0).random(3) = [0.637, 0.270, 0.041]: with prob 0.5 -> [no, yes, yes]; one per clip: 0.637 -> no
    assert flip_decisions(3, 0.5, "frame", np.random.default_rng(0)) == [False, True, True]
    assert flip_decisions(3, 0.5, "clip", np.random.default_rng(0)) == [False] * 3
    assert flip_decisions(3, 0.7, "clip", np.random.default_rng(0)) == [True] * 3
    with pytest.raises(ValueError, match="frame, clip"):
        flip_decisions(3, 0.5, "video", np.random.default_rng(0))


def test_normalisation_and_resize(asymmetric):
    clip, pid, camid = TrainClips([asymmetric], 4, "restricted", 32, 16, 0.0, "frame")[(0, 1)]
    assert clip.shape == (4, 3, 32, 16) and clip.dtype == torch.uint8 and (pid, camid) == (0, 1)
    assert clip[0, :, 0, 7].tolist() == [0, 0, 0] and clip[0, :, 0, 0].tolist() == [40, 40, 40]
    black = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(normalize_clips(clip)[0, :, 0, 7], black, atol=1e-6)
    grey = (40 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(normalize_clips(clip)[0, :, 0, 0], grey, atol=1e-6)


def test_device_normalisation_equals_the_former_in_loader_one():
    """normalize_clips (run on the training device) gives the numbers torchvision's ToDtype + Normalize gave in
    the loader workers before clips were shipped as uint8, bit for bit on the CPU."""
    from torchvision.transforms import v2
    former = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = torch.randint(0, 256, (3, 4, 3, 16, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(normalize_clips(x), former(x))
    with pytest.raises(TypeError, match="uint8"):
        normalize_clips(x.float())


def test_train_loader_batches_and_worker_independence(tiny):
    cfg = DataConfig(height=64, width=32, seq_len=3, ids_per_batch=4, tracklets_per_id=2, num_workers=0)
    loader = make_train_loader(tiny.train, cfg, seed=5)
    loader.batch_sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 2
    clips, pids, camids = batches[0]
    assert clips.shape == (8, 3, 3, 64, 32) and pids.dtype == torch.long and camids.dtype == torch.long
    assert pids.tolist()[::2] == pids.tolist()[1::2] and 0 <= pids.min() and pids.max() < tiny.num_train_pids
    with_worker = make_train_loader(tiny.train, DataConfig(**{**cfg.__dict__, "num_workers": 1}), seed=5)
    with_worker.batch_sampler.set_epoch(1)
    for (a, pa, _), (b, pb, _) in zip(batches, with_worker):
        assert torch.equal(a, b) and torch.equal(pa, pb)
    half = make_train_loader(tiny.train, cfg, seed=5, rank=1, world_size=2)
    half.batch_sampler.set_epoch(1)
    assert torch.equal(next(iter(half))[0], clips[4:])


def test_train_stream_crosses_epochs_with_the_per_epoch_batches(tiny):
    """One endless loader: epoch e's batches are exactly those of the per-epoch loader after set_epoch(e)."""
    cfg = DataConfig(height=32, width=16, seq_len=2, ids_per_batch=4, tracklets_per_id=2, num_workers=0)
    stream = make_train_stream(tiny.train, cfg, seed=5, start_epoch=1)
    per_epoch = stream.batch_sampler.batches_per_epoch
    it = iter(stream)
    streamed = [next(it) for _ in range(2 * per_epoch)]
    loader = make_train_loader(tiny.train, cfg, seed=5)
    expected = []
    for epoch in (1, 2):
        loader.batch_sampler.set_epoch(epoch)
        expected += list(loader)
    assert len(expected) == len(streamed) == 2 * per_epoch
    for (a, pa, _), (b, pb, _) in zip(streamed, expected):
        assert torch.equal(a, b) and torch.equal(pa, pb)
    assert not torch.equal(streamed[0][1], streamed[per_epoch][1])  # epochs differ


def test_test_loader_owners(tiny):
    tracks = tiny.query
    even = list(make_test_loader(tracks, 4, "evenly", 64, 32, batch_size=5, num_workers=0))
    owners = torch.cat([o for _, o in even])
    assert even[0][0].shape == (5, 4, 3, 64, 32) and owners.tolist() == list(range(len(tracks)))
    dense = list(make_test_loader(tracks, 4, "dense", 64, 32, batch_size=7, num_workers=0))
    owners = torch.cat([o for _, o in dense])
    assert owners.dtype == torch.long and owners.tolist() == sorted(owners.tolist())
    assert np.bincount(owners.numpy()).tolist() == [-(-len(t) // 4) for t in tracks]


def test_corrupt_frame_fails_in_the_loader_with_its_path(tmp_path, asymmetric):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    track = Tracklet(asymmetric.paths[:3] + (str(bad),), 0, 1)
    with pytest.raises(DatasetError, match=f"{bad}: cannot decode frame"):
        list(make_test_loader([track], 4, "evenly", 16, 8, batch_size=1, num_workers=0))
