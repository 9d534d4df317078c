"""The attention audit's maths: how far STA's scores are from uniform, and whether they (and the Eq. 1
maps) rank clean region-frames above occluded ones. Plain numpy functions; the engine collects the inputs
(core.engine.audit).

Shapes: C test clips, N frames per clip, K regions, h x w the feature grid.

Uniformity (no ground truth needed): Eq. 4 normalises each region's scores over the N frames of a clip, so 1/N for
every frame is "no preference".
    dev_uniform = mean over clips, frames and regions of |S(n, k) - 1/N|      (0: uniform; 2 (N - 1) / N^2: one-hot)
    entropy     = mean over clips and regions of -sum_n S(n, k) log S(n, k) / log N   (1: uniform, 0: one-hot)

AUC (synthetic data, ground truth of core.data.truth): a region-frame is "clean" when its occluded fraction is 0 and
"occluded" when it is >= the threshold (eval.audit_occluded); in between it takes no part. Scores compete only within
a clip (Eq. 4 normalises over its frames), so the pairs are formed within one clip and one region:
    AUC = (#pairs with S_clean > S_occluded + 0.5 #ties) / #pairs,
per region and pooled over regions (every pair counts once). The Eq. 1 map is audited the same way with pairs
formed within one frame: g at clean grid cells against g at occluded ones (cell fractions). 0.5: no preference;
1: every clean region-frame (cell) above every occluded one of its clip (frame).

Threshold (eval.audit_occluded, default 0.5): a region-frame (cell) counts as occluded when most of its pixels are
damaged. A lower value admits region-frames whose visible part may still be discriminative, where a high score is
no error of the attention; a higher one leaves few pairs (1.0: only fully covered regions, rare for bands that do
not align with the model's rows). Region-frames strictly between 0 and the threshold take no part, so the test
contrasts clearly clean with clearly damaged.

Counting (Mann-Whitney): within a group, the sum of the clean values' average ranks among the group's clean and
occluded values minus n_c (n_c + 1) / 2 is exactly the number of wins plus half the ties; ranks are half-integers,
so the counts are exact in float64. The tests check it against explicit loops over pairs.
"""
from __future__ import annotations

import numpy as np

from core.evaluation.bootstrap import Estimate, paired_ratio_difference, ratio_interval

CLEAN, OCCLUDED, NEITHER = 1, -1, 0


def uniformity(scores: np.ndarray) -> dict[str, float]:
    """{"dev_uniform", "entropy"} of scores (C, N, K) (see the module doc); entropy is NaN when N = 1."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 3 or not s.size:
        raise ValueError(f"scores must be a non-empty (C, N, K) array, got shape {s.shape}")
    n = s.shape[1]
    dev = float(np.abs(s - 1.0 / n).mean())
    plogp = np.where(s > 0, s * np.log(np.where(s > 0, s, 1.0)), 0.0)          # 0 log 0 = 0
    entropy = float((-plogp.sum(1) / np.log(n)).mean()) if n > 1 else float("nan")  # (C, N, K) -> (C, K) -> mean
    return {"dev_uniform": dev, "entropy": entropy}


def occlusion_labels(fractions: np.ndarray, threshold: float) -> np.ndarray:
    """CLEAN (fraction 0), OCCLUDED (fraction >= threshold) or NEITHER, int8 of the shape of `fractions`."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the occlusion threshold must be in (0, 1], got {threshold}")
    f = np.asarray(fractions)
    return np.where(f == 0, CLEAN, np.where(f >= threshold, OCCLUDED, NEITHER)).astype(np.int8)


def group_pairs(values: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group 0..num_groups-1: (wins, pairs), float64 [num_groups] each: pairs = n_clean * n_occluded of the
    group, wins = the pairs whose clean value is above the occluded one plus half the ties. values, labels
    (occlusion_labels), groups: [M] each."""
    values, labels, groups = (np.asarray(x).ravel() for x in (values, labels, groups))
    keep = labels != NEITHER
    v, lab, g = values[keep].astype(np.float64), labels[keep], groups[keep].astype(np.int64)
    order = np.lexsort((v, g))                                                   # by group, then value
    v, lab, g = v[order], lab[order], g[order]
    m = len(v)
    pos = np.arange(m)
    new_group = np.r_[True, g[1:] != g[:-1]] if m else np.zeros(0, bool)
    new_run = new_group | np.r_[True, v[1:] != v[:-1]] if m else new_group      # a run of equal values
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0)) if m else pos
    first = pos[new_run]
    last = np.r_[first[1:], m] - 1
    run = np.cumsum(new_run) - 1
    rank = (first[run] + last[run]) / 2.0 - group_start + 1.0                    # average 1-based rank in group
    clean = lab == CLEAN
    n_c = np.bincount(g, weights=clean.astype(np.float64), minlength=num_groups)
    n_o = np.bincount(g, weights=(~clean).astype(np.float64), minlength=num_groups)
    r_c = np.bincount(g[clean], weights=rank[clean], minlength=num_groups)
    return r_c - n_c * (n_c + 1) / 2.0, n_c * n_o


def region_pairs(scores: np.ndarray, fractions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(wins, pairs) per clip and region, (C, K) each: pairs of frames within one clip and region.
    scores, fractions: (C, N, K) (fractions: occluded fraction of each region-frame, core.data.truth)."""
    c, n, k = np.shape(scores)
    if np.shape(fractions) != (c, n, k):
        raise ValueError(f"scores {np.shape(scores)} and fractions {np.shape(fractions)} differ in shape")
    groups = np.arange(c)[:, None, None] * k + np.arange(k)[None, None, :] + np.zeros((1, n, 1), np.int64)
    wins, pairs = group_pairs(scores, occlusion_labels(fractions, threshold), groups, c * k)
    return wins.reshape(c, k), pairs.reshape(c, k)


def map_pairs(maps: np.ndarray, fractions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(wins, pairs) per clip, (C,) each: pairs of grid cells within one frame, summed over the clip's frames.
    maps: (C, N, h, w) Eq. 1 attention; fractions: (C, N, h, w) occluded fraction of each cell."""
    c, n = np.shape(maps)[:2]
    if np.shape(fractions) != np.shape(maps):
        raise ValueError(f"maps {np.shape(maps)} and fractions {np.shape(fractions)} differ in shape")
    groups = np.broadcast_to(np.arange(c * n).reshape(c, n, 1, 1), np.shape(maps))
    wins, pairs = group_pairs(maps, occlusion_labels(fractions, threshold), groups, c * n)
    return wins.reshape(c, n).sum(1), pairs.reshape(c, n).sum(1)


def _put(out: dict[str, float], name: str, est: Estimate) -> None:
    out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = est.value, est.low, est.high


def auc_metrics(name: str, wins: np.ndarray, pairs: np.ndarray, clusters: np.ndarray, resamples: int,
                seed: int) -> dict[str, float]:
    """`name`, `name`_ci_low, `name`_ci_high: the pooled AUC of per-clip (wins, pairs) [C] or [C, K] with its
    cluster-bootstrap interval (clusters [C], e.g. identities); for [C, K] also the AUC of each region k as
    `name`_k<k> (1-based, top region first) with its interval."""
    wins, pairs = np.asarray(wins, np.float64), np.asarray(pairs, np.float64)
    out: dict[str, float] = {}
    per_clip = (wins.sum(1), pairs.sum(1)) if wins.ndim == 2 else (wins, pairs)
    _put(out, name, ratio_interval(*per_clip, clusters, resamples, seed))
    for k in range(wins.shape[1] if wins.ndim == 2 else 0):
        _put(out, f"{name}_k{k + 1}", ratio_interval(wins[:, k], pairs[:, k], clusters, resamples, seed))
    return out


def gain_metrics(name: str, wins_b: np.ndarray, wins_a: np.ndarray, pairs: np.ndarray, clusters: np.ndarray,
                 resamples: int, seed: int) -> dict[str, float]:
    """`name`, `name`_ci_low/high: AUC of b − AUC of a on the same pairs (per-clip sums [C] or [C, K], pooled),
    with the paired cluster-bootstrap interval."""
    flat = [np.asarray(x, np.float64).reshape(len(clusters), -1).sum(1) for x in (wins_b, pairs, wins_a)]
    out: dict[str, float] = {}
    _put(out, name, paired_ratio_difference(flat[0], flat[1], flat[2], flat[1], clusters, resamples, seed))
    return out
