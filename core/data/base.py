"""What every dataset loader returns: tracklets and the train/query/gallery splits."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class DatasetError(ValueError):
    """A dataset layout or file is broken; the message names the path and what was expected."""


def list_dir(folder: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of `folder`; DatasetError naming it when it cannot be listed (e.g. permission denied)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list this folder ({e.strerror or e}); expected a readable "
                           f"folder") from e


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of `path`; DatasetError naming it when it cannot be read (e.g. permission denied)."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read this file ({e.strerror or e}); expected a readable file") from e


@dataclass(frozen=True)
class Tracklet:
    """One tracklet: its frame paths in time order, its identity and its camera.

    pid: original identity in query/gallery (0: distractor), relabelled 0..C-1 in train.
    camid: camera as written in the file names (1-based).
    """
    paths: tuple[str, ...]
    pid: int
    camid: int

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class VideoDataset:
    """A video re-ID dataset split into train (relabelled pids), query and gallery (original pids)."""
    name: str
    synthetic: bool
    train: list[Tracklet]
    query: list[Tracklet]
    gallery: list[Tracklet]
    num_train_pids: int

    def summary(self) -> dict:
        """Counts per split (tracklets, identities, frames, cameras, distractor tracklets): the check command's JSON."""
        out: dict = {"name": self.name, "synthetic": self.synthetic, "num_train_pids": self.num_train_pids}
        for split in ("train", "query", "gallery"):
            tracks = getattr(self, split)
            out[split] = {
                "tracklets": len(tracks),
                "identities": len({t.pid for t in tracks if t.pid > 0 or split == "train"}),
                "frames": sum(len(t.paths) for t in tracks),
                "cameras": len({t.camid for t in tracks}),
                "distractor_tracklets": 0 if split == "train" else sum(t.pid == 0 for t in tracks),
            }
        return out


def relabel(tracklets: list[Tracklet]) -> tuple[list[Tracklet], int]:
    """Map the identities of `tracklets` to 0..C-1 in increasing order of the original pid; returns (tracklets, C)."""
    pids = sorted({t.pid for t in tracklets})
    new = {p: i for i, p in enumerate(pids)}
    return [Tracklet(t.paths, new[t.pid], t.camid) for t in tracklets], len(pids)
