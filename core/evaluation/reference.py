"""Straightforward reference implementations, for tests and benchmarks only.

* ``evaluate_reference``: one query at a time, walking the ranked list as the official
  ``compute_AP.m`` (Market-1501 / MARS) does.
* ``k_reciprocal_rerank_reference``: the numpy release of Zhong et al. (CVPR 2017,
  ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``) step by step, with
  dense (m+n) x (m+n) matrices and a Python loop over items (our own code).
"""
from __future__ import annotations

import numpy as np

from core.evaluation.distance import self_euclidean
from core.evaluation.metrics import check_ap_rule, summarize


def _ap_cmc_one(good: np.ndarray, max_rank: int, ap_rule: str) -> tuple[float, np.ndarray, int]:
    """AP, CMC hits and 1-based rank of the first match of one query from its ranked, non-ignored list.

    Args:
        good: bool [k], good[p] = the p-th kept gallery item (rank p+1) is a match.
    """
    num_good = int(good.sum())
    old_recall, old_precision, ap, found = 0.0, 1.0, 0.0, 0
    for p, is_good in enumerate(good):          # compute_AP.m: every kept position
        found += int(is_good)
        recall, precision = found / num_good, found / (p + 1)
        if ap_rule == "trapezoid":
            ap += (recall - old_recall) * (old_precision + precision) / 2
        elif is_good:
            ap += precision / num_good
        old_recall, old_precision = recall, precision
        if found == num_good:
            break
    first = int(np.argmax(good))                # 0-based rank of the first match
    return ap, np.arange(max_rank) >= first, first + 1


def evaluate_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20,
                       ap_rule: str = "trapezoid") -> dict:
    """Same contract as ``core.evaluation.evaluate`` (shapes, protocol, keys), one query at a time."""
    check_ap_rule(ap_rule)
    distmat = _numpy(distmat)
    q_pids, g_pids, q_camids, g_camids = (_numpy(a).astype(np.int64) for a in (q_pids, g_pids, q_camids, g_camids))
    num_q = distmat.shape[0]
    hits = np.zeros((num_q, max_rank), dtype=bool)
    aps = np.zeros(num_q)
    valid = np.zeros(num_q, dtype=bool)
    first = np.zeros(num_q)
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")            # ties: lower gallery index first
        pid, cam = g_pids[order], g_camids[order]
        ignored = ((pid == q_pids[i]) & (cam == q_camids[i])) | (pid == -1)
        good = (pid == q_pids[i])[~ignored]
        if not good.any():
            continue                                             # no valid match: skipped, counted
        valid[i] = True
        aps[i], hits[i], first[i] = _ap_cmc_one(good, max_rank, ap_rule)
    return summarize(hits, aps, valid, max_rank, first)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the items among i's k+1 nearest that have i among their own k+1 nearest."""
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[(backward == i).any(axis=1)]


def k_reciprocal_rerank_reference(q_feats, g_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                                  device=None, sort_kind: str = "stable", include_queries: bool = False) -> np.ndarray:
    """k-reciprocal re-ranking as in the authors' numpy release, dense and looped.

    Args:
        q_feats: query features [m, d]; g_feats: gallery features [n, d] (numpy or torch).
        device: where the distances are computed (the rest is numpy on the CPU).
        sort_kind: argsort kind of the initial ranking. "stable" orders ties by index, as the
            fast path does; "quicksort" is the release's own call (faster, ties in any order;
            the same result when no two distances in a row are equal).

        include_queries: also return the query columns (the release computes them and slices them off).

    Returns:
        float32 numpy [m, n], the re-ranked query x gallery distance ([m, m + n] with include_queries).
    """
    q = _numpy(q_feats)
    x = np.concatenate([q, _numpy(g_feats)]).astype(np.float32)
    m, num = len(q), len(x)
    dist = self_euclidean(x, device=device).cpu().numpy()          # plain Euclidean [num, num]
    # release: original_dist = power(dist, 2); transpose(original_dist / max over axis 0)
    orig = np.power(dist, 2).astype(np.float32)
    del dist
    orig = np.transpose(orig / np.max(orig, axis=0))
    rank = np.argsort(orig, axis=1, kind=sort_kind).astype(np.int32)
    half = int(np.around(k1 / 2.0))
    V = np.zeros_like(orig)
    for i in range(num):
        rec = _k_reciprocal(rank, i, k1)
        expansion = rec
        for c in rec:                                     # add R(c, k1/2) when it overlaps R(i, k1) by > 2/3
            rec_c = _k_reciprocal(rank, c, half)
            if len(np.intersect1d(rec_c, rec)) > 2.0 / 3 * len(rec_c):
                expansion = np.append(expansion, rec_c)
        expansion = np.unique(expansion)
        w = np.exp(-orig[i, expansion])                   # Gaussian kernel of the distance
        V[i, expansion] = w / np.sum(w)
    orig = orig[:m]
    if k2 != 1:                                           # local query expansion over the k2 nearest
        V_qe = np.zeros_like(V)
        for i in range(num):
            V_qe[i] = np.mean(V[rank[i, :k2]], axis=0)
        V = V_qe
        del V_qe
    del rank
    inv_index = [np.where(V[:, j] != 0)[0] for j in range(num)]   # items holding feature j
    jaccard = np.zeros_like(orig)
    for i in range(m):
        t = np.zeros(num, dtype=np.float32)               # sum_j min(V[i, j], V[., j])
        for j in np.where(V[i] != 0)[0]:
            rows = inv_index[j]
            t[rows] = t[rows] + np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1 - t / (2.0 - t)
    final = jaccard * (1 - lambda_value) + orig * lambda_value
    return final if include_queries else final[:, m:]
