"""The attention audit of an STA model on its test split (the maths: core.evaluation.attention_audit).

Collection: the evaluation's own extraction hands every batch to a ClipCollector (extract_features(collect=...)),
so the trained model is read once. It keeps, per test clip, the owner tracklet, the clip's number within it
(core.data.sampling.eval_frames gives its frames) and the (N, K) Eq. 4 scores (float32, 16 numbers a clip: 11k
MARS tracklets take < 1 MB); the (N, h, w) Eq. 1 maps are kept (float32, so ties stay exact) only for the clips of
tracklets with damage in the synthetic ground truth (core.data.truth), i.e. none on MARS or DukeMTMC-VideoReID.

Audit (``audit``): uniformity of the scores over all clips (any dataset); on a synthetic tree with its truth table,
the AUCs of the scores (region-frames) and of the maps (grid cells) against the damage (every damaged rectangle of
the truth table, whatever its kind; the whole-frame camera blur and box jitter are per-frame numbers, not
rectangles, and do not count), with cluster-bootstrap
intervals over identities (distractor and junk tracklets each their own cluster), eval.bootstrap_resamples /
eval.bootstrap_seed; and the same for the untrained model: the architecture with the weights training starts from
(seed_everything(train.seed), start_model: random weights, the ImageNet backbone or the pretraining stage's under model.pretrained), read only
on the clips that have a pair (both a clean and an occluded region-frame of one region, or cell of one frame). The
scores and maps depend on the backbone alone (Eq. 1-4 have no weights) and the backbone is drawn first from the
seed, so rows that differ only in the head, the fusion or the losses share that pass (cached in this process).
"""
from __future__ import annotations

import os
import random
from collections import Counter
from typing import Collection, Sequence

import numpy as np
import pandas as pd
import torch

from core.config import RunConfig
from core.data import Tracklet, VideoDataset
from core.data.base import DatasetError
from core.data.sampling import eval_frames
from core.data.synthetic import default_root
from core.data.truth import NONE, TRUTH, cell_fractions, frame_masks, load_truth, region_fractions, truth_path
from core.engine.device import amp_dtype, seed_everything
from core.engine.extract import extract_features
from core.evaluation import attention_audit as aa
from core.engine.pretrained import start_model
from core.models.sta import region_bounds

FIGURE_CLIPS = 4          # clips drawn in the audit figure: those with the most region pairs
_CHUNK = 2048             # frames whose damage masks are built at once
_UNTRAINED: dict = {}     # untrained outputs per (backbone, seed, data, test clips) key, this process


class ClipCollector:
    """extract_features(collect=...) hook: per clip its owner, number in the owner's clips, scores and (for owners
    in `keep_maps`) Eq. 1 maps. Models without scores (frame, avg) leave it empty."""

    def __init__(self, keep_maps: Collection[int] = ()):
        self.keep_maps = set(keep_maps)
        self.owners: list[int] = []
        self.clips: list[int] = []
        self.scores: list[torch.Tensor] = []
        self.maps: dict[int, torch.Tensor] = {}           # clip row -> (N, h, w) float32
        self._seen: Counter = Counter()

    def __call__(self, owner: torch.Tensor, out: dict) -> None:
        if out.get("scores") is None:
            return
        self.scores.append(out["scores"].float().cpu())    # (B', N, K)
        for row, t in enumerate(owner.tolist()):
            if t in self.keep_maps:
                self.maps[len(self.owners)] = out["attention"][row].float().cpu()   # (N, h, w)
            self.owners.append(t)
            self.clips.append(self._seen[t])
            self._seen[t] += 1

    def score_array(self) -> np.ndarray:
        """(C, N, K) float32, clips in extraction order."""
        return torch.cat(self.scores).numpy() if self.scores else np.zeros((0, 0, 0), np.float32)


def truth_of(cfg: RunConfig, dataset: VideoDataset) -> pd.DataFrame | None:
    """The ground truth of a synthetic tree that has one (core.data.truth), else None."""
    if not dataset.synthetic:
        return None
    root = cfg.data.root or default_root(cfg.data.synthetic_size, cfg.data.synthetic_seed)
    return load_truth(root) if truth_path(root).is_file() else None


def damaged_tracklets(tracklets: Sequence[Tracklet], truth: pd.DataFrame | None) -> set[int]:
    """Indices of the test tracklets with at least one damaged frame."""
    if truth is None:
        return set()
    names = set(truth.loc[(truth["split"] == "test") & (truth["kind"] != NONE), "name"])
    return {i for i, t in enumerate(tracklets) if any(os.path.basename(p) in names for p in t.paths)}


def clip_names(tracklets: Sequence[Tracklet], owner: int, clip: int, seq_len: int, sampling: str) -> list[str]:
    """File names of the N frames of clip `clip` of tracklet `owner`, as the test loader read them."""
    t = tracklets[owner]
    return [os.path.basename(t.paths[i]) for i in eval_frames(len(t.paths), seq_len, sampling)[clip]]


def frame_fractions(truth: pd.DataFrame, names: Sequence[str], feat_h: int, feat_w: int, num_regions: int,
                    remainder: str) -> tuple[np.ndarray, np.ndarray]:
    """Occluded fraction of each region (F, K) and grid cell (F, h, w) of the test frames `names` (every damage
    kind of the truth table), built a chunk of frames of one stored size at a time."""
    sizes = truth[truth["split"] == "test"].groupby("name")[["height", "width"]].first()
    missing = sorted(set(names) - set(sizes.index))
    if missing:
        raise DatasetError(f"{TRUTH}: no row for {len(missing)} test frames (first: {missing[0]}); the truth table "
                           f"must list every frame of the tree: regenerate the synthetic tree")
    sizes = sizes.loc[list(names)]
    regions, cells = np.zeros((len(names), num_regions)), np.zeros((len(names), feat_h, feat_w))
    for _, idx in sizes.reset_index(drop=True).groupby(["height", "width"]).groups.items():
        idx = np.asarray(idx)
        for a in range(0, len(idx), _CHUNK):
            part = idx[a:a + _CHUNK]
            mask = frame_masks(truth, "test", [names[i] for i in part])            # (F', H, W) bool
            regions[part] = region_fractions(mask, feat_h, num_regions, remainder)
            cells[part] = cell_fractions(mask, feat_h, feat_w)
    return regions, cells


def untrained_model(cfg: RunConfig, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The model training starts from (core.engine.training.train: seed_everything(train.seed), start_model),
    in eval mode on `device`; the global random generators are left as they were."""
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(cfg.train.seed)
        model = start_model(cfg, num_classes)
    random.setstate(states[0])
    np.random.set_state(states[1])
    return model.to(device).eval()


def _untrained_outputs(cfg: RunConfig, num_classes: int, device: torch.device, tracklets: Sequence[Tracklet],
                       keys: list[tuple[int, int]], progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Untrained (scores (R, N, K), maps (R, N, h, w)) of the clips `keys` = [(owner, clip number)]: one extraction
    over their tracklets, shared by the configs with the same backbone, seed, data and test clips."""
    m = cfg.model
    key = (m.backbone, m.pretrained, m.init, cfg.pretrain, m.weights_path, m.attention, m.num_regions, m.remainder, cfg.train.seed,
           cfg.train.amp, cfg.data, cfg.eval.seq_len, cfg.eval.sampling, str(device), tuple(keys))
    if key not in _UNTRAINED:
        owners = sorted({o for o, _ in keys})
        collector = ClipCollector(keep_maps=range(len(owners)))
        model = untrained_model(cfg, num_classes, device)
        extract_features(model, [tracklets[o] for o in owners], seq_len=cfg.eval.seq_len, sampling=cfg.eval.sampling,
                         height=cfg.data.height, width=cfg.data.width, batch_size=cfg.eval.batch_size,
                         num_workers=cfg.data.num_workers, device=device, dtype=amp_dtype(device, cfg.train.amp),
                         progress=progress, desc="extract untrained", collect=collector)
        row = {(owners[o], c): i for i, (o, c) in enumerate(zip(collector.owners, collector.clips))}
        scores = collector.score_array()
        _UNTRAINED.clear()                    # one entry: the rows of a table run one after another
        _UNTRAINED[key] = (scores[[row[k] for k in keys]],
                           torch.stack([collector.maps[row[k]] for k in keys]).numpy())
    return _UNTRAINED[key]


def _clusters(tracklets: Sequence[Tracklet], owners: Sequence[int]) -> np.ndarray:
    """Bootstrap cluster of each clip: its identity; a distractor (0) or junk (-1) tracklet is its own cluster."""
    return np.array([tracklets[o].pid if tracklets[o].pid > 0 else -(o + 1) for o in owners], np.int64)


def audit(model_scores: ClipCollector, tracklets: Sequence[Tracklet], truth: pd.DataFrame | None, cfg: RunConfig,
          num_classes: int, device: torch.device, progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """(MLflow metrics, JSON-able figure clips) of the attention audit; ({}, []) for a model without scores.

    Metrics: attn_dev_uniform, attn_entropy (all test clips); with a truth table also attn_auc_region (pooled) and
    attn_auc_region_k<k>, attn_auc_map, each with _ci_low / _ci_high; the same with the suffix _untrained (and
    attn_dev_uniform_untrained, attn_entropy_untrained on the audited clips, beside attn_dev_uniform_audited and
    attn_entropy_audited, the trained model's on the same clips); attn_auc_region_gain and
    attn_auc_map_gain (trained − untrained, paired interval); attn_audit_clips, attn_pairs_region, attn_pairs_map.
    """
    scores = model_scores.score_array()                                   # (C, N, K)
    if not scores.size:
        return {}, []
    metrics = {f"attn_{name}": v for name, v in aa.uniformity(scores).items()}
    rows = sorted(model_scores.maps)
    if truth is None or not rows:
        return _finite(metrics), []
    owners = [model_scores.owners[r] for r in rows]
    keys = [(o, model_scores.clips[r]) for o, r in zip(owners, rows)]
    n, k = scores.shape[1:]
    names = [clip_names(tracklets, o, c, cfg.eval.seq_len, cfg.eval.sampling) for o, c in keys]   # R x N
    maps = torch.stack([model_scores.maps[r] for r in rows]).numpy()        # (R, N, h, w)
    unique = list(dict.fromkeys(nm for clip in names for nm in clip))
    reg, cel = frame_fractions(truth, unique, maps.shape[2], maps.shape[3], k, cfg.model.remainder)
    at = pd.Index(unique).get_indexer(np.array(names).ravel()).reshape(len(names), n)      # (R, N) into unique
    region_frac, cell_frac = reg[at], cel[at]                               # (R, N, K), (R, N, h, w)
    thr = cfg.eval.audit_occluded
    rw, rp = aa.region_pairs(scores[rows], region_frac, thr)               # (R, K) each
    mw, mp = aa.map_pairs(maps, cell_frac, thr)                            # (R,) each
    use = np.flatnonzero((rp.sum(1) > 0) | (mp > 0))
    metrics.update(attn_audit_clips=float(len(use)), attn_pairs_region=float(rp.sum()),
                   attn_pairs_map=float(mp.sum()))
    if not len(use):
        return _finite(metrics), []
    clusters = _clusters(tracklets, [owners[i] for i in use])
    res, seed = cfg.eval.bootstrap_resamples, cfg.eval.bootstrap_seed
    u_scores, u_maps = _untrained_outputs(cfg, num_classes, device, tracklets, [keys[i] for i in use], progress)
    urw, _ = aa.region_pairs(u_scores, region_frac[use], thr)
    umw, _ = aa.map_pairs(u_maps, cell_frac[use], thr)
    metrics.update(aa.auc_metrics("attn_auc_region", rw[use], rp[use], clusters, res, seed))
    metrics.update(aa.auc_metrics("attn_auc_map", mw[use], mp[use], clusters, res, seed))
    metrics.update(aa.auc_metrics("attn_auc_region_untrained", urw, rp[use], clusters, res, seed))
    metrics.update(aa.auc_metrics("attn_auc_map_untrained", umw, mp[use], clusters, res, seed))
    metrics.update(aa.gain_metrics("attn_auc_region_gain", rw[use], urw, rp[use], clusters, res, seed))
    metrics.update(aa.gain_metrics("attn_auc_map_gain", mw[use], umw, mp[use], clusters, res, seed))
    metrics.update({f"attn_{name}_untrained": v for name, v in aa.uniformity(u_scores).items()})
    metrics.update({f"attn_{name}_audited": v for name, v in aa.uniformity(scores[rows][use]).items()})
    pick = use[np.argsort(-rp[use].sum(1), kind="stable")[:FIGURE_CLIPS]]
    return _finite(metrics), [_figure_clip(tracklets, truth, keys[i], names[i], scores[rows[i]], maps.shape[2], cfg)
                     for i in pick]


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that exist: a region without pairs has no AUC, one frame (N = 1) no entropy."""
    return {name: float(v) for name, v in metrics.items() if np.isfinite(v)}


def _figure_clip(tracklets: Sequence[Tracklet], truth: pd.DataFrame, key: tuple[int, int], names: list[str],
                 scores: np.ndarray, feat_h: int, cfg: RunConfig) -> dict:
    """A JSON-able clip for figures.attention_figure with the true damaged rectangles (stored-frame pixels) and the
    model's region edges (fractions of the frame height)."""
    owner, clip = key
    t = tracklets[owner]
    frames = eval_frames(len(t.paths), cfg.eval.seq_len, cfg.eval.sampling)[clip]
    rows = truth[(truth["split"] == "test") & truth["name"].isin(names)]
    size = rows[["height", "width"]].iloc[0].astype(int).tolist()
    damaged = rows[rows["kind"] != NONE]
    rects = [damaged.loc[damaged["name"] == nm, ["y0", "y1", "x0", "x1"]].astype(int).values.tolist() for nm in names]
    bounds = region_bounds(feat_h, scores.shape[1], cfg.model.remainder)
    return {"label": f"tracklet {owner}" + (f" clip {clip}" if clip else ""), "query": int(owner), "pid": int(t.pid),
            "camid": int(t.camid), "frames": [t.paths[i] for i in frames],
            "scores": np.asarray(scores, float).round(5).tolist(), "damage": rects, "frame_size": size,
            "edges": [b[0] / feat_h for b in bounds] + [1.0]}
