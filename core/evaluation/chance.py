"""Chance level: the expected CMC, R1..R20 and mAP of a uniformly random ranking of a split [A15].

Exact (closed forms, no sampling), numpy arithmetic. The rules are ``core.evaluation.metrics``': for a query,
gallery items of its identity AND camera are ignored, junk (identity -1) is ignored, distractors (identity 0) and
other identities stay as negatives; ranks count the non-ignored items only, and a query with no valid match is
skipped (left out of every average, as ``evaluate`` does). So a query has N non-ignored gallery items of which n are
valid matches, and a uniformly random permutation of the gallery ranks those N items uniformly at random.

Per query (n >= 1 matches among N items), with H_N = 1 + 1/2 + ... + 1/N:

* rank-k accuracy: P(a match within the first k) = 1 - C(N - n, k) / C(N, k)
  = 1 - prod_{i=0}^{k-1} (N - n - i) / (N - i); rank 1: n / N.
* AP, "step" rule (non-interpolated): AP = (1/n) sum_{i match} (1/r_i) #{j match: r_j <= r_i}. With r_i uniform on
  1..N, E[1/r_i] = H_N / N, and for two matches i != j, E[1{r_j < r_i} / r_i] = sum_r (1/N)((r-1)/(N-1))/r
  = (N - H_N) / (N (N - 1)). Hence
      E[AP_step] = H_N / N + (n - 1)(N - H_N) / (N (N - 1))        (n = N: 1; n = 1: H_N / N).
* AP, "trapezoid" rule (official MARS code): AP = (1/n) sum_h [q_h + h / r_h] / 2 with q_h = (h-1)/(r_h-1), the
  precision one position before the h-th match (q_1 = 1 when r_1 = 1). Sum_h q_h = 1{a match at rank 1}
  + sum_{i match, r_i > 1} #{j match: r_j < r_i} / (r_i - 1), whose expectation is n/N + n (n - 1)/N = n^2 / N.
  Hence
      E[AP_trapezoid] = (E[AP_step] + n / N) / 2.

Worked example, N = 3 items, n = 2 matches (3 equally likely placements {1,2}, {1,3}, {2,3}):
  step:      (1 + 5/6 + 7/12) / 3   = 29/36 = 0.805556;  formula: 11/18 + 1 * (3 - 11/6)/6 = 29/36.
  trapezoid: (1 + 19/24 + 5/12) / 3 = 53/72 = 0.736111;  formula: (29/36 + 2/3) / 2     = 53/72.
  R1: 2/3; R2: 1 - C(1,2)/C(3,2) = 1.

The split's chance level is the mean of each over the queries with a valid match (mAP and R-k are means over those
queries, so by linearity their expectations are means of the per-query expectations).
"""
from __future__ import annotations

import numpy as np

from core.evaluation.metrics import REPORTED_RANKS, check_ap_rule


def match_counts(q_pids, g_pids, q_camids, g_camids, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(n, N) per query: its valid matches and its non-ignored gallery items (the same rules as
    ``metrics.match_ranks``), int64 [num_q] each."""
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a, dtype=np.int64) for a in (q_pids, g_pids, q_camids,
                                                                                  g_camids))
    junk = g_pids == -1
    n_out, big_n = [], []
    for s in range(0, len(q_pids), chunk):
        qp, qc = q_pids[s:s + chunk, None], q_camids[s:s + chunk, None]
        same_id = g_pids[None, :] == qp
        ignored = (same_id & (g_camids[None, :] == qc)) | junk[None, :]
        n_out.append((same_id & ~ignored).sum(1))
        big_n.append((~ignored).sum(1))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(n_out) if n_out else empty), (np.concatenate(big_n) if big_n else empty)


def expected_ap(n, big_n, ap_rule: str = "trapezoid") -> np.ndarray:
    """E[AP] of a random ranking of `big_n` items holding `n` matches (arrays, n >= 1), under `ap_rule`."""
    check_ap_rule(ap_rule)
    n, big_n = np.asarray(n, dtype=np.float64), np.asarray(big_n, dtype=np.int64)
    if np.any(n < 1) or np.any(n > big_n):
        raise ValueError("expected_ap needs 1 <= n <= N for every query")
    harmonic = _harmonic(big_n)
    big = big_n.astype(np.float64)
    pairs = np.where(big > 1, (n - 1) * (big - harmonic) / (big * np.maximum(big - 1, 1)), 0.0)
    step = harmonic / big + pairs
    return step if ap_rule == "step" else (step + n / big) / 2


def expected_cmc(n, big_n, max_rank: int = 20) -> np.ndarray:
    """P(a match within the first k), k = 1..max_rank, of a random ranking: float64 [num_q, max_rank]."""
    n, big_n = np.asarray(n, dtype=np.float64), np.asarray(big_n, dtype=np.float64)
    i = np.arange(max_rank, dtype=np.float64)[None, :]
    factors = np.maximum(big_n[:, None] - n[:, None] - i, 0.0) / np.maximum(big_n[:, None] - i, 1.0)
    return 1.0 - np.cumprod(factors, axis=1)


def chance_level(q_pids, g_pids, q_camids, g_camids, ap_rule: str = "trapezoid", max_rank: int = 20) -> dict:
    """The expected results of a uniformly random ranking of this split (fractions, like ``metrics.evaluate``):
    ``cmc`` float64 [max_rank], ``R1`` ``R5`` ``R10`` ``R20`` (those <= max_rank), ``mAP``, ``num_valid`` (the
    queries with a valid match, over which everything is averaged). Raises ValueError when no query has one."""
    check_ap_rule(ap_rule)
    n, big_n = match_counts(q_pids, g_pids, q_camids, g_camids)
    valid = n > 0
    if not valid.any():
        raise ValueError("no query has a valid match in the gallery (check pids and camids)")
    n, big_n = n[valid], big_n[valid]
    cmc = expected_cmc(n, big_n, max_rank).mean(0)
    out = {"cmc": cmc, "mAP": float(expected_ap(n, big_n, ap_rule).mean()), "num_valid": int(valid.sum())}
    out.update({f"R{r}": float(cmc[r - 1]) for r in REPORTED_RANKS if r <= max_rank})
    return out


def _harmonic(big_n: np.ndarray) -> np.ndarray:
    """H_N for each N (>= 1), exact up to float rounding (cumulative sum up to the largest N)."""
    top = int(big_n.max()) if big_n.size else 0
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1, dtype=np.float64))])
    return table[big_n]
