"""A validation split carved out of the TRAINING identities, for hyper-parameter search (never the test split).

``split_validation(dataset, fraction, seed, queries)`` holds out ``round(fraction * C)`` of the C training
identities, drawn with a fixed seed among those seen by >= 2 cameras. The held-out tracklets are scored as queries
against a gallery in one of two ways (``queries``, spec key ``validation.queries``):

* ``all`` (default): every held-out tracklet is a query, and the gallery is every held-out tracklet (a
  gallery-with-queries protocol, as the official MARS evaluation). A query's own tracklet, and the other tracklets
  of its identity in its camera, are ignored by the evaluation's rule (same identity and same camera, A15), so each
  query is ranked against all the others. Every held-out identity is seen by >= 2 cameras, so every query has a
  valid match. Why the default: it scores every held-out tracklet instead of one per identity (on the default
  synthetic study 37 queries instead of 8) at no cost in training identities, where holding out more identities
  would take them from every trial's training set. The number of identities (the clusters of the bootstrap,
  ``core.evaluation.bootstrap``) is unchanged: the report's interval says how much that buys.
* ``one``: each held-out identity gives one query tracklet (drawn with the same seed among its tracklets) and the
  rest of its tracklets as the gallery (the split of the first studies): few queries, a noisy objective.

The remaining identities are relabelled 0..C'-1 and are the training set of every trial. Query/gallery identities
are the held-out training labels + 1, so that no real identity uses 0 (the distractor label of MARS-layout test
sets). The held-out identities are the same in both modes.

The split is a function of (training set, fraction, seed, queries): every trial, worker and resumed invocation of a
study sees the same one. The test split of the dataset is not touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.base import Tracklet, VideoDataset, relabel

QUERY_MODES = ("all", "one")     # validation.queries: every held-out tracklet a query | one per identity


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
    queries: str = "all"          # QUERY_MODES

    def summary(self) -> dict:
        return {"fraction": self.fraction, "seed": self.seed, "queries": self.queries,
                "source_train_ids": self.num_source_pids, "val_ids": len(self.val_pids),
                "val_query_tracklets": len(self.dataset.query), "val_gallery_tracklets": len(self.dataset.gallery),
                "train_ids": self.dataset.num_train_pids, "train_tracklets": len(self.dataset.train)}

    def describe(self) -> str:
        return describe(self.summary(), self.dataset.name)


def describe(s: dict, name: str = "the dataset") -> str:
    """One paragraph on a split from its ``summary()`` (also read back from a study's user attrs)."""
    head = (f"{s['val_ids']} of the {s['source_train_ids']} training identities of {name} (fraction "
            f"{s['fraction']:g}, seed {s['seed']}, drawn among identities seen by >= 2 cameras) are held out")
    if s.get("queries", "one") == "all":
        how = (f"every held-out tracklet is a query against all the others (validation.queries: all; "
               f"{s['val_query_tracklets']} queries, gallery of the same {s['val_gallery_tracklets']} tracklets; a "
               f"query's own tracklet, and its identity's other tracklets in its camera, are ignored)")
    else:
        how = (f"each gives 1 query tracklet and the rest of its tracklets as gallery (validation.queries: one; "
               f"{s['val_query_tracklets']} queries, {s['val_gallery_tracklets']} gallery tracklets)")
    return (f"{head}: {how}. Trials train on the other {s['train_ids']} identities ({s['train_tracklets']} "
            f"tracklets, relabelled 0..C'-1). The test split is never used by a trial.")


def split_validation(dataset: VideoDataset, fraction: float, seed: int = 0, queries: str = "all") -> ValidationSplit:
    """Hold out a seeded fraction of the training identities as a query/gallery validation set (module doc)."""
    if not 0.0 < fraction < 1.0:
        raise ValidationSplitError(f"validation fraction must be in (0, 1), got {fraction!r}")
    if queries not in QUERY_MODES:
        raise ValidationSplitError(f"validation queries {queries!r}: allowed {', '.join(QUERY_MODES)}")
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
        tracks = [Tracklet(t.paths, pid + 1, t.camid) for t in by_pid[pid]]
        if queries == "all":
            query.extend(tracks)
            gallery.extend(tracks)
            continue
        q = int(rng.integers(len(tracks)))
        query.append(tracks[q])
        gallery.extend(t for i, t in enumerate(tracks) if i != q)
    held = set(val)
    train, num_train = relabel([t for t in dataset.train if t.pid not in held])
    ds = VideoDataset(f"{dataset.name}", dataset.synthetic, train, query, gallery, num_train)
    return ValidationSplit(ds, tuple(val), float(fraction), int(seed), num_ids, queries)
