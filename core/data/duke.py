"""DukeMTMC-VideoReID, read from its on-disk layout (train/, query/, gallery/)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from core.data.base import DatasetError, Tracklet, VideoDataset, list_dir, relabel
from core.data.frames import check_frames

# identity, camera, frame in tracklet, frame in video; the extension in any case (.jpg, .JPG)
FRAME_NAME = re.compile(r"^([0-9]+)_C([0-9]+)_F([0-9]+)_X([0-9]+)\.(?i:jpg)$")   # ASCII digits only


def load_duke(root: str | os.PathLike, check_images: bool = True) -> VideoDataset:
    """DukeMTMC-VideoReID (Wu et al., "Exploit the Unknown Gradually: One-Shot Video-Based Person
    Re-Identification by Stepwise Learning", CVPR 2018; videos of DukeMTMC, Ristani et al., ECCVW 2016).

    URL: https://github.com/Yu-Wu/DukeMTMC-VideoReID

    Statistics of the real dataset: 8 cameras; train: 702 identities, 2,196 tracklets, 369,656 frames;
    query: 702 tracklets (one per test identity); gallery: 2,636 tracklets of 1,110 identities (the 702 test
    identities plus 408 distractor identities), query tracklets included.

    Layout read here::

        train/0001/0001/0001_C6_F0099_X30823.jpg   identity folder / tracklet folder / frame named
        query/...  gallery/...                     identity, camera (1-8), frame index in the tracklet,
                                                   frame number in the video

    Frames are sorted by the F index. `gallery/` already contains the query tracklets, so the gallery is read
    as is (dropping them would change nothing under the protocol: a query's own tracklet has its identity and
    camera and is ignored, and each test identity has one query). There are no junk tracklets.
    Train pids are relabelled 0..C-1; query and gallery keep the original pids.
    Frames are the files ending in .jpg in any case (real Duke writes .jpg; a copy renamed to .JPG is read alike);
    other files are ignored.
    Raises DatasetError naming the path and what was expected on any disagreement, on a folder that cannot be
    listed (permission denied), or (with ``check_images``, the default) a frame that is not a readable image
    (core.data.frames).
    """
    root = Path(root)
    splits = {}
    for split in ("train", "query", "gallery"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing folder (expected the DukeMTMC-VideoReID layout: "
                               f"train/, query/, gallery/)")
        splits[split] = _read_split(folder)
        if not splits[split]:
            raise DatasetError(f"{folder}: no tracklets; expected identity folders such as 0001/0001/")
        if check_images:
            check_frames((p for t in splits[split] for p in t.paths), f"{folder}/")
    train, num_pids = relabel(splits["train"])
    return VideoDataset("DukeMTMC-VideoReID", False, train, splits["query"], splits["gallery"], num_pids)


def _subdirs(folder: Path) -> list[os.DirEntry]:
    return sorted((e for e in list_dir(folder) if e.is_dir()), key=lambda e: e.name)


def _read_split(split_dir: Path) -> list[Tracklet]:
    out = []
    for id_dir in _subdirs(split_dir):
        if not (id_dir.name.isascii() and id_dir.name.isdigit()):
            raise DatasetError(f"{id_dir.path}: identity folder name is not a number; expected e.g. 0001")
        for track_dir in _subdirs(Path(id_dir.path)):
            out.append(_read_tracklet(Path(track_dir.path), int(id_dir.name)))
    return out


def _read_tracklet(folder: Path, pid: int) -> Tracklet:
    frames = []
    for entry in list_dir(folder):
        if not entry.name.lower().endswith(".jpg"):
            continue
        m = FRAME_NAME.match(entry.name)
        if m is None or int(m.group(1)) != pid:
            raise DatasetError(f"{entry.path}: unexpected frame name; expected {pid:04d}_C<camera>_F<index>_"
                               f"X<frame>.jpg inside identity folder {pid:04d}")
        frames.append((int(m.group(3)), int(m.group(2)), entry.path))
    if not frames:
        raise DatasetError(f"{folder}: empty tracklet; expected at least one .jpg frame")
    cams = {c for _, c, _ in frames}
    if len(cams) != 1:
        raise DatasetError(f"{folder}: frames from cameras {sorted(cams)}; expected one camera per tracklet")
    frames.sort()
    return Tracklet(tuple(p for _, _, p in frames), pid, cams.pop())
