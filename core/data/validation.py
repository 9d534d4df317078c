"""A validation split carved out of the TRAINING identities, for hyper-parameter search (never the test split).

``split_validation(dataset, fraction, seed)`` holds out ``round(fraction * C)`` of the C training identities,
drawn with a fixed seed among those seen by >= 2 cameras. Each held-out identity gives one query tracklet (drawn
with the same seed among its tracklets) and the rest of its tracklets as the gallery, so every query has a match
in another camera under the evaluation protocol (same identity and same camera ignored, A15). The remaining
identities are relabelled 0..C'-1 and are the training set of every trial. Query/gallery identities are the
held-out training labels + 1, so that no real identity uses 0 (the distractor label of MARS-layout test sets).

The split is a function of (training set, fraction, seed): every trial, worker and resumed invocation of a study
sees the same one. The test split of the dataset is not touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.base import Tracklet, VideoDataset, relabel


class ValidationSplitError(ValueError):
    """The training set cannot give the requested validation split; the message says why and what would."""


@dataclass(frozen=True)
class ValidationSplit:
    """``dataset.train``: the remaining identities (relabelled 0..C'-1); ``dataset.query/gallery``: the held-out
    ones."""
    dataset: VideoDataset
    val_pids: tuple[int, ...]     # held-out identities, as labelled in the full training set (0..C-1)
    fraction: float
    seed: int
    num_source_pids: int          # C, identities of the full training set

    def summary(self) -> dict:
        return {"fraction": self.fraction, "seed": self.seed, "source_train_ids": self.num_source_pids,
                "val_ids": len(self.val_pids), "val_query_tracklets": len(self.dataset.query),
                "val_gallery_tracklets": len(self.dataset.gallery), "train_ids": self.dataset.num_train_pids,
                "train_tracklets": len(self.dataset.train)}

    def describe(self) -> str:
        s = self.summary()
        return (f"{s['val_ids']} of the {s['source_train_ids']} training identities of {self.dataset.name} "
                f"(fraction {self.fraction:g}, seed {self.seed}, drawn among identities seen by >= 2 cameras) are "
                f"held out: each gives 1 query tracklet and the rest of its tracklets as gallery "
                f"({s['val_query_tracklets']} queries, {s['val_gallery_tracklets']} gallery tracklets). Trials train "
                f"on the other {s['train_ids']} identities ({s['train_tracklets']} tracklets, relabelled 0..C'-1). "
                f"The test split is never used by a trial.")


def split_validation(dataset: VideoDataset, fraction: float, seed: int = 0) -> ValidationSplit:
    """Hold out a seeded fraction of the training identities as a query/gallery validation set (module doc)."""
    if not 0.0 < fraction < 1.0:
        raise ValidationSplitError(f"validation fraction must be in (0, 1), got {fraction!r}")
    by_pid: dict[int, list[Tracklet]] = {}
    for t in dataset.train:
        by_pid.setdefault(t.pid, []).append(t)
    num_ids = len(by_pid)
    eligible = sorted(p for p, ts in by_pid.items() if len({t.camid for t in ts}) >= 2)
    n_val = int(round(fraction * num_ids))
    if n_val < 2:
        raise ValidationSplitError(
            f"validation fraction {fraction:g} of {num_ids} training identities holds out {n_val}; at least 2 are "
            f"needed (a gallery of one identity gives mAP 1 whatever the model); raise the fraction")
    if n_val > len(eligible):
        raise ValidationSplitError(
            f"validation fraction {fraction:g} asks for {n_val} identities but only {len(eligible)} of the "
            f"{num_ids} training identities are seen by >= 2 cameras; lower the fraction")
    if num_ids - n_val < 2:
        raise ValidationSplitError(f"validation fraction {fraction:g} leaves {num_ids - n_val} training "
                                   f"identities; lower the fraction")
    rng = np.random.default_rng([seed, 0x5A11D])
    val = sorted(int(p) for p in rng.choice(eligible, n_val, replace=False))
    query, gallery = [], []
    for pid in val:
        tracks = by_pid[pid]
        q = int(rng.integers(len(tracks)))
        query.append(Tracklet(tracks[q].paths, pid + 1, tracks[q].camid))
        gallery.extend(Tracklet(t.paths, pid + 1, t.camid) for i, t in enumerate(tracks) if i != q)
    held = set(val)
    train, num_train = relabel([t for t in dataset.train if t.pid not in held])
    ds = VideoDataset(f"{dataset.name}", dataset.synthetic, train, query, gallery, num_train)
    return ValidationSplit(ds, tuple(val), float(fraction), int(seed), num_ids)
