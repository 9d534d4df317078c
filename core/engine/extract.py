"""Feature extraction for query/gallery tracklets (no gradients, batched, CPU or GPU)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core import interrupt
from core.progress import bar

from core.data import Tracklet, make_test_loader
from core.data.normalize import normalize_clips
from core.engine.device import autocast
from core.evaluation.distance import PartLayout


@dataclass(frozen=True)
class Extracted:
    feats: torch.Tensor            # (T, D) float32, one row per tracklet (mean over its clips)
    scores: dict[int, torch.Tensor]  # tracklet index -> (N, K) attention scores of its first clip (STA models only)
    layout: PartLayout | None = None  # how the model's feats are read as a sum of distances (STAL), None: one vector


@torch.no_grad()
def extract_features(model: torch.nn.Module, tracklets: list[Tracklet], *, seq_len: int, sampling: str,
                     height: int, width: int, batch_size: int, num_workers: int, device: torch.device,
                     dtype: torch.dtype | None = None, keep_scores_for: int = 0, progress: bool = True,
                     desc: str = "extract", collect: Callable[[torch.Tensor, dict], None] | None = None) -> Extracted:
    """One feature per tracklet: the model's retrieval feature of each test clip, averaged over the clips
    of the tracklet ("dense" gives several clips per tracklet, "evenly" one) [A12].

    ``keep_scores_for`` keeps the N x K score matrix of the first clip of tracklets 0..keep_scores_for-1
    (for the attention figures). ``collect(owner, out)``, when given, sees every batch's owners [B'] and model
    output (e.g. core.engine.audit.ClipCollector keeps the attention audit's scores and maps). NaN or inf
    features (a diverged model) raise FloatingPointError naming how many clips and which tracklets: they must never
    be ranked and scored.
    """
    model.eval()
    loader = make_test_loader(tracklets, seq_len=seq_len, sampling=sampling, height=height, width=width,
                              batch_size=batch_size, num_workers=num_workers)
    sums: torch.Tensor | None = None
    counts = torch.zeros(len(tracklets))
    scores: dict[int, torch.Tensor] = {}
    bad_clips, clips_seen = 0, 0
    layout = None
    for clips, owner in bar(loader, desc=desc, leave=False, enabled=progress):
        interrupt.check()                                   # a Ctrl+C swallowed by a finaliser (core.interrupt)
        with autocast(device, dtype):
            out = model(normalize_clips(clips.to(device, non_blocking=True)))  # clips: (B', N, 3, H, W) uint8
        feat = out["feat"].float().cpu()                          # (B', D)
        layout = out.get("layout")
        bad_clips += int((~torch.isfinite(feat).all(1)).sum())
        clips_seen += len(feat)
        if sums is None:
            sums = torch.zeros(len(tracklets), feat.shape[1])
        sums.index_add_(0, owner, feat)
        if collect is not None:
            collect(owner, out)
        counts.index_add_(0, owner, torch.ones(len(owner)))
        if out.get("scores") is not None:
            for row, t in enumerate(owner.tolist()):
                if t < keep_scores_for and t not in scores:
                    scores[t] = out["scores"][row].float().cpu()    # (N, K)
    if sums is None:
        raise ValueError("extract_features got no tracklets")
    feats = sums / counts.clamp(min=1).unsqueeze(1)
    bad = (~torch.isfinite(feats).all(1)).nonzero().flatten().tolist()
    if bad:
        t = tracklets[bad[0]]
        raise FloatingPointError(f"non-finite features (NaN or inf) in {bad_clips} of {clips_seen} clips, {len(bad)} "
                                 f"of {len(tracklets)} tracklets (first: #{bad[0]}, id {t.pid}, cam {t.camid}, "
                                 f"{t.paths[0]}); the model has diverged and cannot be evaluated")
    return Extracted(feats=feats, scores=scores, layout=layout)
