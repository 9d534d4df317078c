"""python -m core.bench data: clip decode + transform throughput through the training DataLoader (0 workers as
the baseline, then 1 and 2) on a generated synthetic tree, and the time load_mars takes to index a MARS-sized
layout (1,191,003 placeholder frame files, 20,478 tracklets), built in a temporary folder (/dev/shm when present).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.config import DataConfig
from core.data import load_mars, make_train_loader
from core.data.mars import pid_folder, write_info, write_query
from core.data.synthetic import default_root, ensure_synthetic

# Real MARS: (tracklets, frames, identities) per split; test also has distractor (0) and junk (-1) tracklets
MARS_TRAIN = (8298, 509_914, 625)
MARS_TEST = (12_180, 681_089, 636)
MARS_DISTRACTORS, MARS_JUNK, MARS_QUERIES = 3248, 870, 1980
# a placeholder frame: a JPEG's start (SOI + APP0 marker) and end (EOI) markers, what core.data.frames checks without
# decoding (the check reads a frame's first 8 and last 32 bytes, so a real frame's size does not change its cost)
PLACEHOLDER = b"\xff\xd8\xff\xe0" + bytes(12) + b"\xff\xd9"


def loader_fps(tracklets, cfg: DataConfig, batches: int) -> float:
    """Frames per second through make_train_loader, timed after a first (warm-up) batch."""
    loader = make_train_loader(tracklets, cfg, seed=0)
    done, frames, start, epoch = -1, 0, 0.0, 0
    while done < batches:
        loader.batch_sampler.set_epoch(epoch)
        for clips, _, _ in loader:
            done += 1
            if done == 0:
                start = time.perf_counter()
            else:
                frames += clips.shape[0] * clips.shape[1]
            if done == batches:
                break
        epoch += 1
    return frames / (time.perf_counter() - start)


def _fake_split(folder: Path, spec: tuple[int, int, int], special: tuple[int, int]) -> tuple[list, np.ndarray]:
    """Empty frame files, name list and table of one MARS-sized split; special = (distractor, junk) tracklets."""
    n_tracks, n_frames, n_ids = spec
    pids = np.repeat(np.arange(1, n_ids + 1), -(-(n_tracks - sum(special)) // n_ids))[:n_tracks - sum(special)]
    pids = np.concatenate([np.full(special[1], -1), np.zeros(special[0], int), pids])
    lengths = np.full(n_tracks, n_frames // n_tracks) + (np.arange(n_tracks) < n_frames % n_tracks)
    names, rows = [], []
    for k, (pid, n) in enumerate(zip(pids.tolist(), lengths.tolist())):
        cam, sub = 1 + k % 6, pid_folder(pid)
        d = folder / sub
        if not d.exists():
            d.mkdir(parents=True)
        rows.append([len(names) + 1, len(names) + n, pid, cam])
        for f in range(n):
            name = f"{sub}C{cam}T{k % 10000:04d}F{f + 1:03d}.jpg"
            fd = os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, PLACEHOLDER)
            os.close(fd)
            names.append(name)
    return names, np.array(rows, np.int32)


def build_fake_mars(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    info = root / "info"
    info.mkdir(parents=True)
    for split, spec, special in (("train", MARS_TRAIN, (0, 0)), ("test", MARS_TEST, (MARS_DISTRACTORS, MARS_JUNK))):
        names, table = _fake_split(root / f"bbox_{split}", spec, special)
        write_info(info, split, names, table)
        if split == "test":
            real = np.flatnonzero(table[:, 2] > 0) + 1
            query = np.sort(rng.choice(real, MARS_QUERIES, replace=False))
            write_query(info, query[None].astype(np.int32))


def index_bench() -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = Path(tempfile.mkdtemp(prefix="fake_mars_", dir=base))
    try:
        t0 = time.perf_counter()
        build_fake_mars(tmp)
        t1 = time.perf_counter()
        load_mars(tmp, check_images=False)
        t2 = time.perf_counter()
        ds = load_mars(tmp)
        t3 = time.perf_counter()
        print(f"MARS-sized layout of placeholder files in {tmp.parent}: built in {t1 - t0:.1f} s")
        print(f"  load_mars without the frame check: {t2 - t1:.2f} s for {MARS_TRAIN[1] + MARS_TEST[1]:,} frame "
              f"names and {MARS_TRAIN[0] + MARS_TEST[0]:,} tracklets")
        print(f"  load_mars with every frame's header and end checked (core.data.frames): {t3 - t2:.2f} s "
              f"(+{t3 - t2 - (t2 - t1):.2f} s) -> train {len(ds.train):,}, query {len(ds.query):,}, "
              f"gallery {len(ds.gallery):,}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.bench data", description=__doc__)
    ap.add_argument("--size", default="small", help="synthetic preset to read (generated once into .cache)")
    ap.add_argument("--batches", type=int, default=10, help="timed batches per worker count")
    ap.add_argument("--sizes", default="128x64,256x128", help="resize targets HxW, comma separated")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--no-index", action="store_true", help="skip the MARS-sized indexing benchmark")
    ap.add_argument("--index-only", action="store_true", help="only the MARS-sized indexing benchmark (no loader)")
    args = ap.parse_args(argv)
    if args.index_only:
        index_bench()
        return 0
    root = ensure_synthetic(default_root(args.size, 0), args.size, 0)
    train = load_mars(root).train
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"synthetic {args.size}: {len(train)} train tracklets")
    for hw in args.sizes.split(","):
        h, w = (int(v) for v in hw.split("x"))
        cfg = DataConfig(height=h, width=w, ids_per_batch=8, tracklets_per_id=4, seq_len=4)
        base = None
        for nw in (int(v) for v in args.workers.split(",")):
            fps = loader_fps(train, dataclasses.replace(cfg, num_workers=nw), args.batches)
            base = base or fps
            print(f"  {h}x{w} clips of 4 frames, batch 8x4, {nw} workers: {fps:7.0f} frames/s  "
                  f"(x{fps / base:.2f} vs 0 workers)")
    if not args.no_index:
        index_bench()
    return 0
