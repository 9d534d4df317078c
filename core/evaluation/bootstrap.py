"""How sure a re-ID number is: 95 % bootstrap intervals over query identities (a cluster bootstrap).

The queries of one identity share an appearance, so they are not independent samples: resampling single queries
would understate the spread. The resampled unit is therefore the identity, with all its queries (Davison & Hinkley
1997, sec. 3.8, "two-stage" / cluster resampling with the clusters drawn whole). Each metric is a ratio over the
valid queries (a query without a valid gallery match counts nowhere, as in ``metrics.summarize``):

    R_k = (# valid queries whose first match is within rank k) / (# valid queries),   mAP = (sum of AP) / (# valid)

so with per-identity sums s_c and counts n_c, a resample that draws identity c w_c times has the value
sum_c w_c s_c / sum_c w_c n_c: one matrix product for all resamples. The interval is the percentile interval of
those values (2.5 % and 97.5 % quantiles, numpy's default linear interpolation).

Why not ``scipy.stats.bootstrap`` directly: it resamples the observations of each sample independently; here the
draws must be of whole identities, shared by two rows (the paired difference of two models on the same queries)
and crossed with the training seeds (``seeds_interval``). ``scipy.stats.bootstrap`` is the cross-check in the tests
(one query per identity, where both bootstraps are the same procedure).

Per-query frames: one row per query of one protocol and distance (``core.evaluation.scoring``), with the columns
``query``, ``pid``, ``first_match_rank`` (NaN: no valid match) and ``ap``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from core.record import METRICS

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric (fraction 0..1, or a difference of two) with its bootstrap interval."""
    value: float
    low: float
    high: float


def query_values(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-query value, identity) of the valid queries: the rank-k hit (0/1) for R<k>, the AP for mAP."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    valid = frame[frame["first_match_rank"].notna()]
    if valid.empty:
        raise ValueError(f"no valid query among {len(frame)} (no query has a valid gallery match)")
    if metric == "mAP":
        values = valid["ap"].to_numpy(np.float64)
    else:
        values = (valid["first_match_rank"].to_numpy(np.float64) <= int(metric[1:])).astype(np.float64)
    return values, valid["pid"].to_numpy()


def cluster_draws(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of n clusters is drawn in each resample: int64 [resamples, n_clusters], rows summing to n."""
    if resamples < 1:
        raise ValueError(f"the number of bootstrap resamples must be at least 1, got {resamples}")
    picks = np.random.default_rng(seed).integers(0, n_clusters, size=(resamples, n_clusters))
    offsets = np.arange(resamples)[:, None] * n_clusters
    return np.bincount((picks + offsets).ravel(), minlength=resamples * n_clusters).reshape(resamples, n_clusters)


def _cluster_sums(values: np.ndarray, clusters: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sum of values and count of queries, clusters in the order `order` (sorted identities)."""
    index = np.searchsorted(order, clusters)
    return (np.bincount(index, weights=values, minlength=len(order)),
            np.bincount(index, minlength=len(order)).astype(np.float64))


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_values(frame: pd.DataFrame, metric: str, resamples: int, seed: int) -> np.ndarray:
    """The metric in each of `resamples` identity resamples: float64 [resamples]."""
    values, pids = query_values(frame, metric)
    order = np.unique(pids)
    sums, counts = _cluster_sums(values, pids, order)
    w = cluster_draws(len(order), resamples, seed)
    return (w @ sums) / (w @ counts)


def interval(frame: pd.DataFrame, metric: str, resamples: int, seed: int, level: float = LEVEL) -> Estimate:
    """The metric of one run's per-query frame with its cluster-bootstrap percentile interval."""
    return seeds_interval([frame], metric, resamples, seed, level)


def intervals(frame: pd.DataFrame, resamples: int, seed: int, level: float = LEVEL) -> dict[str, Estimate]:
    return {m: interval(frame, m, resamples, seed, level) for m in METRICS}


def _as_list(frames) -> list[pd.DataFrame]:
    return [frames] if isinstance(frames, pd.DataFrame) else list(frames)


def _seed_matrix(frames: Sequence[pd.DataFrame], metric: str):
    """Per-identity sums [S, C] and counts [C] of S seeds' frames over the same valid queries."""
    per_seed = [query_values(f, metric) for f in frames]
    keys = [np.sort(f.loc[f["first_match_rank"].notna(), "query"].to_numpy()) for f in frames]
    for k, f in zip(keys[1:], frames[1:]):
        if not np.array_equal(k, keys[0]):
            raise ValueError(f"the runs were scored on different valid queries ({len(keys[0])} vs {len(k)}): "
                             "only runs on the same test split and protocol can be combined")
    pids = per_seed[0][1]
    order = np.unique(pids)
    sums = np.stack([_cluster_sums(v, p, order)[0] for v, p in per_seed])
    return sums, _cluster_sums(per_seed[0][0], pids, order)[1], order


def _seed_resampled(sums: np.ndarray, counts: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B] mean over a resample of the seeds (drawn with replacement) of each seed's value under identity draws w."""
    per_seed = (w @ sums.T) / (w @ counts)[:, None]                    # [B, S]
    if sums.shape[0] == 1:
        return per_seed[:, 0]
    picks = rng.integers(0, sums.shape[0], size=per_seed.shape)         # [B, S] seed indices
    return np.take_along_axis(per_seed, picks, axis=1).mean(1)


def seeds_interval(frames, metric: str, resamples: int, seed: int, level: float = LEVEL) -> Estimate:
    """Mean over training seeds of the metric, with an interval that combines seed and query variation.

    Two-way bootstrap: each resample draws the query identities (shared by all seeds: they were scored on the same
    queries) and, independently, S seeds with replacement from the S runs; the value of a resample is the mean of
    the drawn seeds' metrics on the drawn identities. With one seed it is ``interval``."""
    frames = _as_list(frames)
    sums, counts, order = _seed_matrix(frames, metric)
    w = cluster_draws(len(order), resamples, seed)
    boot = _seed_resampled(sums, counts, w, np.random.default_rng([seed, 1]))
    return Estimate(float((sums.sum(1) / counts.sum()).mean()), *_percentiles(boot, level))


def paired_difference(frames_b, frames_a, metric: str, resamples: int, seed: int,
                      level: float = LEVEL) -> Estimate:
    """b − a for two rows scored on the same queries (each one run or several seeds), paired: every resample draws
    one set of query identities for both rows (and seeds independently per row, as in ``seeds_interval``)."""
    frames_a, frames_b = _as_list(frames_a), _as_list(frames_b)
    sums, counts, order = _seed_matrix([*frames_a, *frames_b], metric)  # one query set for both rows, or raise
    sums_a, sums_b = sums[:len(frames_a)], sums[len(frames_a):]
    w = cluster_draws(len(order), resamples, seed)
    rng = np.random.default_rng([seed, 1])
    boot = _seed_resampled(sums_b, counts, w, rng) - _seed_resampled(sums_a, counts, w, rng)
    value = (sums_b.sum(1) / counts.sum()).mean() - (sums_a.sum(1) / counts.sum()).mean()
    return Estimate(float(value), *_percentiles(boot, level))


def metric_name(protocol: str, reranked: bool, metric: str) -> str:
    """MLflow name of a metric of a per-query frame's (protocol, reranked) rows: R1, official_R1, rerank_R1, …"""
    return f"{'' if protocol == 'headline' else protocol + '_'}{'rerank_' if reranked else ''}{metric}"


def ci_metrics(per_query: pd.DataFrame, resamples: int, seed: int, level: float = LEVEL) -> dict[str, float]:
    """``<name>_ci_low`` / ``<name>_ci_high`` of every metric of every (protocol, reranked) group of a run's
    per-query frame, as fractions (the MLflow names of ``metric_name``)."""
    out: dict[str, float] = {}
    for (protocol, reranked), frame in per_query.groupby(["protocol", "reranked"], sort=False):
        for metric, est in intervals(frame, resamples, seed, level).items():
            name = metric_name(protocol, bool(reranked), metric)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = est.low, est.high
    return out


def _summed_draws(clusters: np.ndarray, resamples: int, seed: int,
                   *arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each array [M] summed per cluster ([G] each, clusters in sorted order) and the cluster_draws weights
    [resamples, G] (float64) that resample them."""
    order = np.unique(clusters)
    index = np.searchsorted(order, clusters)
    sums = [np.bincount(index, weights=np.asarray(x, np.float64), minlength=len(order)) for x in arrays]
    return sums, cluster_draws(len(order), resamples, seed).astype(np.float64)


def ratio_interval(numerators: np.ndarray, denominators: np.ndarray, clusters: np.ndarray, resamples: int, seed: int,
                   level: float = LEVEL) -> Estimate:
    """sum(numerators) / sum(denominators) with the cluster-bootstrap percentile interval: each resample draws the
    clusters (any labels, e.g. identities) whole, as for the metrics above. One entry per observation, [M] each.
    Used for ratios of pair counts (core.evaluation.attention_audit's AUCs); NaN everywhere when the denominators
    sum to 0. A resample whose drawn clusters have no denominator is left out of the percentiles."""
    if np.sum(denominators) <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    (sums, counts), w = _summed_draws(clusters, resamples, seed, numerators, denominators)
    top, bottom = w @ sums, w @ counts
    boot = top[bottom > 0] / bottom[bottom > 0]
    return Estimate(float(sums.sum() / counts.sum()), *_percentiles(boot, level))


def paired_ratio_difference(num_b: np.ndarray, den_b: np.ndarray, num_a: np.ndarray, den_a: np.ndarray,
                            clusters: np.ndarray, resamples: int, seed: int, level: float = LEVEL) -> Estimate:
    """b − a for two ratios of sums over the same observations [M] (e.g. a trained and an untrained model's AUC on
    the same pairs), paired: each resample draws one set of clusters for both."""
    if np.sum(den_b) <= 0 or np.sum(den_a) <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    (nb, db, na, da), w = _summed_draws(clusters, resamples, seed, num_b, den_b, num_a, den_a)
    ok = ((w @ db) > 0) & ((w @ da) > 0)
    boot = (w @ nb)[ok] / (w @ db)[ok] - (w @ na)[ok] / (w @ da)[ok]
    return Estimate(float(nb.sum() / db.sum() - na.sum() / da.sum()), *_percentiles(boot, level))
