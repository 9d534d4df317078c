"""Synthetic pedestrian video re-ID dataset written in the exact MARS layout (the suite's embedded default).

`generate` draws identities (region-wise appearance: hair/cap, patterned upper clothing, sleeves, lower clothing,
shoes, bag; see core.data.render) seen by 6 cameras (each with its colour cast, illumination, contrast, blur and
noise), walking (legs/arms swing) with detector-style box jitter and scale drift, cluttered scrolling backgrounds
and occluders (a horizontal band or a vertical strip) in some tracklets, and writes JPEG frames, name lists and
.mat tables (incl. query_IDX) exactly as MARS ships them, so `load_mars` reads it, plus the ground truth of what it
did to every frame (`truth.parquet`, core.data.truth; never read by the MARS loader).

Presets (identities are disjoint between train and test; every identity is seen by >= 2 cameras; each test
identity has 1 query, or 2 from different cameras when it is seen by >= 3 cameras, and every query has a non-query
tracklet of its identity in another camera, so it has a valid match with either gallery protocol):

    size      train ids  test ids  tracklets/id  cameras/id  frames/tracklet  frame HxW  distractor  junk
    tiny          8          8         2-3          2-3          6-16            64x32        4         2
    small        32     32 + 224       3-5          2-4          8-24           128x64      192        64
    default      80         80         3-6          2-4          8-32           128x64       60        20
    occluded     as small, plus region damage (render.RegionDamage)

`small` (the base of `occluded`, the cpu profile's data) has 224 extra test identities (Preset.extra_test_ids) and 8x the distractors and
junk of VERSION 1, so its test split is 8x as large (seed 0: 256 identities, 425 queries, 1,230 gallery tracklets) and
a 95 % cluster-bootstrap interval (clusters: query identities) on the cpu profile's R1 or mAP is +-1-2.5 points
instead of +-5-11; its train split is VERSION 1's, byte for byte.

`occluded` (VERSION 3) is `small`'s plan and frames with region damage added (Preset.damage, render.RegionDamage),
drawn and painted from a stream of its own, so every pixel beyond the camera blur's reach of the damage is small's:
90 % of tracklets get 2-3 events, each over a run of 30-50 % of the tracklet's frames (so a damaged tracklet keeps
frames, and regions, that an event leaves clean), of one kind: a band across the frame at any height of the body
(20-35 % of the frame height; 60 % of them clothing-like stripes or checks, a distractor rather than a flat block;
weight 0.45), a vertical strip (20-40 % of the width; 0.15) or a "degrade" band (blurred with sigma 2.5-4.5 px,
contrast x0.3-0.6, noise 12-25 grey levels; 0.4). Seed 0: 67-70 % of the frames damaged (48 % of the region-frames
of the test clips, N=4 evenly sampled, K=4), 71-76 % of the tracklets mixed (clean and damaged frames), 6-7 %
clean (small's own occluders included), 17-22 % damaged in every frame.

Ground truth (`truth.parquet`, core.data.truth.TRUTH_COLUMNS): one row per (frame, damage) with the rectangle
actually painted or degraded, clipped to the frame (band: rows [y0, y1), all columns; strip: all rows, the
columns inside the frame); one row of kind "none" per clean frame. Kinds: "band" and "strip" (VERSION 1's occluders
and the region damage's), "degrade". Every row also has the camera blur sigma in pixels (0 where the frame is left
sharp), the person's offset from the box centre (dx, dy: detector jitter, plus the cut of a junk box), its scale
(person height / frame height) and the junk flag. `track` is the tracklet's row in the split's MARS table, `frame`
its 0-based position there.

Distractor tracklets (identity 0, folder 0000) show people of no other tracklet; junk tracklets (identity -1, folder
00-1) are badly placed boxes that cut a person. Output is a deterministic function of (size, seed); generation is
atomic: frames go to a hidden sibling folder `.<name>.partial-<host>.<pid>.<random>` renamed into place at the end,
with `synthetic.json` (size, seed, preset, version) as the completeness marker (and the truth sidecar required
beside it). Partial folders left by a killed generation (their host is this one and their pid is gone,
core.leftovers) are removed on the next call.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from core.progress import bar as progress_bar

from core import leftovers
from core.config import SYNTHETIC_VERSION
from core.data import render
from core.data.base import DatasetError
from core.data.mars import pid_folder, write_info, write_query
from core.data.truth import NONE, TRUTH, TRUTH_COLUMNS

NUM_CAMERAS = 6
MARKER = "synthetic.json"
VERSION = SYNTHETIC_VERSION   # the generator's version (core.config: it also enters the config hash)


@dataclass(frozen=True)
class Preset:
    train_ids: int
    test_ids: int
    tracklets: tuple[int, int]  # tracklets per identity, inclusive range
    cameras: tuple[int, int]    # cameras per identity, inclusive range (>= 2)
    frames: tuple[int, int]     # frames per tracklet, inclusive range
    height: int                 # stored frame size
    width: int
    distractors: int            # distractor tracklets (identity 0) in the test split
    junk: int                   # junk tracklets (identity -1) in the test split
    extra_test_ids: int = 0     # test identities drawn after the others on their own stream: a larger test
                                # split that leaves the train split as it was (see _plan)
    damage: render.RegionDamage | None = None  # region damage events on their own stream (see _render): the
                                # frames are the preset's without it, plus the damage
    stream: int = 0             # 0: the evaluation presets' draws; k > 0 appends k to the plan, person, track and
                                # damage streams, so the preset's people share no draw with any other preset's
                                # (the pretraining identities, core.engine.pretrain)
    camera_per_tracklet: bool = False  # False: the seed's six cameras; True: every tracklet under a camera of its
                                # own (colour cast, light, contrast, blur, noise, scene), so nothing but the person
                                # is shared by an identity's tracklets (the pretraining trees)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(8, 8, (2, 3), (2, 3), (6, 16), 64, 32, 4, 2),
    "small": Preset(32, 32, (3, 5), (2, 4), (8, 24), 128, 64, 192, 64, extra_test_ids=224),
    "default": Preset(80, 80, (3, 6), (2, 4), (8, 32), 128, 64, 60, 20),
    "occluded": Preset(32, 32, (3, 5), (2, 4), (8, 24), 128, 64, 192, 64, extra_test_ids=224,
                       damage=render.RegionDamage()),
}
PRETRAIN_STREAM = 1  # Preset.stream of the pretraining trees (pretrain_preset)


def pretrain_preset(identities: int) -> Preset:
    """The pretraining tree of core.engine.pretrain: `identities` people of their own stream (PRETRAIN_STREAM, so
    none is a person of any evaluation preset's train or test split), 3-6 tracklets each, every tracklet under a
    camera of its own (camera_per_tracklet: the names' C1..C6 mean nothing there), with `occluded`'s region damage,
    6-10 frames per tracklet (training samples N frames of a tracklet, so short tracklets lose little), 128x64
    frames; a token test split of 2 identities keeps the MARS layout complete (never used)."""
    return Preset(identities, 2, (3, 6), (2, 4), (6, 10), 128, 64, 0, 0, damage=render.RegionDamage(),
                  stream=PRETRAIN_STREAM, camera_per_tracklet=True)


def _stream(pre: Preset, *key: int) -> np.random.Generator:
    """The generator of stream `key` of a preset: key itself for stream 0 (the evaluation presets' draws, unchanged
    since VERSION 1), key + [stream] otherwise (independent of every stream-0 draw)."""
    return np.random.default_rng([*key, pre.stream] if pre.stream else list(key))


@dataclass(frozen=True)
class _Spec:
    """One tracklet to draw. `who` seeds the appearance: the identity, or a fresh person for 0 / -1."""
    pid: int
    cam: int
    length: int
    who: int
    query: bool = False


def _preset(size: str) -> Preset:
    if size not in PRESETS:
        raise DatasetError(f"unknown synthetic size {size!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[size]


def _plan(pre: Preset, seed: int) -> tuple[list[_Spec], list[_Spec]]:
    """Train and test tracklet specs (identities, cameras, lengths, queries); deterministic in (pre, seed).

    Test order: the test identities, the extra test identities, then distractors and junk. The train identities
    are drawn first from stream [seed, 0], where only train_ids + test_ids (the pid pool) comes before them, so the
    extra test identities (own stream [seed, 5], pids above 3 (train_ids + test_ids)) and the distractor and junk
    counts (drawn after them) leave the train split as it is.
    """
    rng = _stream(pre, seed, 0)
    n = pre.train_ids + pre.test_ids
    pids = [int(p) for p in rng.choice(np.arange(1, 3 * n + 1), n, replace=False)]
    train = [s for pid in pids[:pre.train_ids] for s in _identity(rng, pre, pid, test=False)]
    test = [s for pid in pids[pre.train_ids:] for s in _identity(rng, pre, pid, test=True)]
    others = []
    for j in range(pre.distractors + pre.junk):
        pid = 0 if j < pre.distractors else -1
        others.append(_Spec(pid, int(rng.integers(1, NUM_CAMERAS + 1)), _length(rng, pre), -(j + 1)))
    if pre.extra_test_ids:
        extra_rng = _stream(pre, seed, 5)
        extra = extra_rng.choice(np.arange(1, 3 * pre.extra_test_ids + 1), pre.extra_test_ids, replace=False)
        test += [s for pid in extra for s in _identity(extra_rng, pre, 3 * n + int(pid), test=True)]
    return train, test + others


def _identity(rng: np.random.Generator, pre: Preset, pid: int, test: bool) -> list[_Spec]:
    """The tracklets of one identity: 2+ cameras, every camera used; a test identity has 1 query, or 2 from
    different cameras when it is seen by >= 3 cameras, so every query keeps a non-query tracklet in another camera."""
    n_cams = int(rng.integers(pre.cameras[0], pre.cameras[1] + 1))
    n_tracks = max(n_cams, int(rng.integers(pre.tracklets[0], pre.tracklets[1] + 1)))
    cams = [int(c) + 1 for c in rng.choice(NUM_CAMERAS, n_cams, replace=False)]
    track_cams = cams + [int(c) for c in rng.choice(cams, n_tracks - n_cams)]
    query_cams = set(rng.choice(cams, 2 if n_cams >= 3 else 1, replace=False).tolist()) if test else set()
    specs = []
    for c in track_cams:
        query = c in query_cams
        query_cams.discard(c)  # one query per chosen camera
        specs.append(_Spec(pid, c, _length(rng, pre), pid, query))
    return specs


def _length(rng: np.random.Generator, pre: Preset) -> int:
    return int(rng.integers(pre.frames[0], pre.frames[1] + 1))


def _save(frame: np.ndarray, path: Path) -> None:
    Image.fromarray(frame).save(path, quality=90)


def _table_order(specs: list[_Spec]) -> list[int]:
    """Plan indices in the order of the split's MARS table (identity folder, camera, plan order)."""
    return sorted(range(len(specs)), key=lambda k: (pid_folder(specs[k].pid), specs[k].cam, k))


def _truth_rows(split: str, track: int, names: list[str], truths: list[render.FrameTruth], junk: bool,
                shape: tuple[int, int]) -> list[tuple]:
    """core.data.truth rows of one tracklet: one per (frame, damage), one of kind "none" for a clean frame."""
    rows = []
    for f, (name, t) in enumerate(zip(names, truths)):
        frame = (t.blur, t.dx, t.dy, t.scale, junk)
        for kind, y0, y1, x0, x1 in t.damage or ((NONE, 0, 0, 0, 0),):
            rows.append((split, name, track, f, kind, y0, y1, x0, x1, *shape, *frame))
    return rows


def _truth_table(rows: list[tuple]) -> pd.DataFrame:
    types = dict(track="int32", frame="int32", y0="int32", y1="int32", x0="int32", x1="int32", height="int32",
                 width="int32", blur="float64", dx="float64", dy="float64", scale="float64", junk="bool")
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).astype(types)


def _write_split(tmp: Path, split: str, specs: list[_Spec], pre: Preset, seed: int, cams: list, bar,
                 writer: ThreadPoolExecutor) -> dict:
    """Draw the frames of one split and queue their JPEG writes (file creation is slow: a thread pool overlaps
    it with drawing); returns name list, table and query rows in MARS form, and the split's truth rows."""
    order = _table_order(specs)
    names, rows, query_rows, counters, pending, truth = [], [], [], {}, [], []
    for k in order:
        s = specs[k]
        tnum = counters[(s.pid, s.cam)] = counters.get((s.pid, s.cam), 0) + 1
        frames, truths = _render(s, k, split, pre, seed, cams)
        folder = tmp / f"bbox_{split}" / pid_folder(s.pid)
        folder.mkdir(parents=True, exist_ok=True)
        start = len(names) + 1
        for f, frame in enumerate(frames):
            name = f"{pid_folder(s.pid)}C{s.cam}T{tnum:04d}F{f + 1:03d}.jpg"
            pending.append(writer.submit(_save, frame, folder / name))
            names.append(name)
        truth += _truth_rows(split, len(rows), names[start - 1:], truths, s.pid == -1, (pre.height, pre.width))
        for job in pending[:-2 * len(frames)]:  # bound the queue; raise write errors early
            job.result()
        del pending[:-2 * len(frames)]
        bar.update(len(frames))
        rows.append([start, len(names), s.pid, s.cam])
        if s.query:
            query_rows.append(len(rows))
    for job in pending:
        job.result()
    return {"names": names, "table": np.array(rows, np.int32), "query": np.array([query_rows], np.int32),
            "truth": truth}


def _render(s: _Spec, k: int, split: str, pre: Preset, seed: int,
            cams: list) -> tuple[list[np.ndarray], list[render.FrameTruth]]:
    """The frames ([H, W, 3] uint8) of tracklet `k` of a split's plan and their truth: a function of
    (seed, split, k, s) only. A preset's region damage draws from its own stream [seed, 6, split, k], so the
    stream [seed, 2, split, k] of the rest makes the same draws with or without it."""
    person = render.sample_person(_stream(pre, seed, 1, s.who + 1_000_000))
    rng = _stream(pre, seed, 2, split == "test", k)
    cam = render.sample_camera(_stream(pre, seed, 4, split == "test", k)) if pre.camera_per_tracklet \
        else cams[s.cam - 1]
    track = render.sample_track(rng, cam, s.length, junk=s.pid == -1)
    damage_rng = None
    if pre.damage is not None:
        damage_rng = _stream(pre, seed, 6, split == "test", k)
        track = dataclasses.replace(track, damage=render.sample_damage(damage_rng, pre.damage, s.length))
    return render.render_tracklet(person, cam, track, s.length, pre.height, pre.width, rng, damage_rng)


def _cameras(seed: int) -> list:
    return [render.sample_camera(np.random.default_rng([seed, 4, c])) for c in range(NUM_CAMERAS)]


def tracklet_frames(size: str, seed: int, split: str, k: int) -> list[np.ndarray]:
    """Tracklet `k` (plan order; -1: the last, a junk one in test) of `split` (train | test) as generate() draws
    it, in memory, before JPEG encoding."""
    return tracklet_truth(size, seed, split, k)[0]


def tracklet_truth(size: str, seed: int, split: str, k: int) -> tuple[list[np.ndarray], list[render.FrameTruth]]:
    """tracklet_frames() and the FrameTruth of each frame (what generate() writes to truth.parquet for it)."""
    pre = _preset(size)
    specs = _plan(pre, seed)[split == "test"]
    k = range(len(specs))[k]
    return _render(specs[k], k, split, pre, seed, _cameras(seed))


def generate(root: str | os.PathLike, size: str = "default", seed: int = 0, progress: bool = True,
             preset: Preset | None = None) -> Path:
    """Write the synthetic dataset of preset `size` for `seed` into `root` (which must not exist); returns root.
    `preset` (e.g. pretrain_preset(n)) replaces PRESETS[size]; `size` then only names it in the marker.

    Atomic: everything is written into a hidden sibling folder that is renamed to `root` at the end; on any
    error (or interrupt) the partial folder is removed, and a killed process leaves no tree at `root`.
    """
    root, pre = Path(root), preset or _preset(size)
    remove_stale_partials(root)
    if root.exists():
        raise DatasetError(f"{root}: already exists; generate() writes a new folder (use ensure_synthetic to reuse)")
    root.parent.mkdir(parents=True, exist_ok=True)
    train, test = _plan(pre, seed)
    cams = _cameras(seed)
    total = sum(s.length for s in train + test)
    tmp = root.parent / f".{root.name}.partial-{leftovers.token()}"
    tmp.mkdir()                          # mode 0o777 less the umask, like any folder (not mkdtemp's 0700)
    try:
        with progress_bar(total=total, desc=f"synthetic {size} seed {seed}", unit="frame", enabled=progress) as bar, \
                ThreadPoolExecutor(2) as writer:
            out = {split: _write_split(tmp, split, specs, pre, seed, cams, bar, writer)
                   for split, specs in (("train", train), ("test", test))}
        info = tmp / "info"
        info.mkdir()
        for split in ("train", "test"):
            write_info(info, split, out[split]["names"], out[split]["table"])
        write_query(info, out["test"]["query"])
        _truth_table(out["train"]["truth"] + out["test"]["truth"]).to_parquet(tmp / TRUTH, index=False)
        meta = {"generator": "core.data.synthetic", "version": VERSION, "size": size, "seed": seed,
                "preset": dataclasses.asdict(pre)}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_complete(root, size, seed, pre):  # another process finished the same tree first
            return root
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def remove_stale_partials(root: Path) -> list[Path]:
    """Remove the partial folders of `root` left by a killed generation on this host (see core.leftovers)."""
    return leftovers.remove_stale(Path(root).parent, f".{Path(root).name}.partial-")


def _is_complete(root: Path, size: str, seed: int, pre: Preset | None = None) -> bool:
    try:
        meta = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    same_preset = pre is None or meta.get("preset") == json.loads(json.dumps(dataclasses.asdict(pre)))
    return (meta.get("version"), meta.get("size"), meta.get("seed")) == (VERSION, size, seed) and same_preset and \
        (root / TRUTH).is_file()


def ensure_synthetic(root: str | os.PathLike, size: str = "default", seed: int = 0, progress: bool = True,
                     preset: Preset | None = None) -> Path:
    """Return `root`, generating the tree first unless a complete one of this size and seed (and `preset`, when
    given: see generate) is there."""
    root = Path(root)
    if preset is None:
        _preset(size)  # an unknown size is refused before anything is written
    remove_stale_partials(root)
    if _is_complete(root, size, seed, preset):
        return root
    if root.exists():
        raise DatasetError(f"{root}: exists but is not a complete synthetic tree (size {size}, seed {seed}, "
                           f"version {VERSION}; marker {MARKER}); remove it or choose another root")
    return generate(root, size, seed, progress, preset=preset)


def default_root(size: str, seed: int) -> Path:
    """Where the synthetic tree goes when no root is given: .cache/synthetic_<size>_seed<seed>_v<VERSION> under
    the cwd."""
    return Path.cwd() / ".cache" / f"synthetic_{size}_seed{seed}_v{VERSION}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the synthetic video re-ID dataset (MARS layout).")
    ap.add_argument("--size", default="default", choices=list(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", help="output folder (default: .cache/synthetic_<size>_seed<seed>_v<VERSION>)")
    args = ap.parse_args(argv)
    root = ensure_synthetic(args.root or default_root(args.size, args.seed), args.size, args.seed)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
