"""CMC and mAP for video re-ID, vectorised over query chunks [A14, A15].

Protocol [A15] (official MARS / Market-1501 code): for a query, gallery items of the
same identity AND the same camera are ignored, junk items (pid -1) are ignored, and
distractors (pid 0) stay as negatives. A query whose gallery holds no valid match is
skipped: counted in ``num_skipped`` and left out of every average.

Ranking: gallery items ordered by distance, ties broken by gallery index (as a stable sort),
here and in ``reference.evaluate_reference``.

AP rules [A15b], with hits h = 1..G (G valid matches) at ranks r_h counted among the
non-ignored items only (1-based):

* "step" (torchreid, sklearn; non-interpolated): AP = (1/G) sum_h h / r_h.
* "trapezoid" (official ``compute_AP.m``): the code walks the non-ignored list keeping
  old_recall (init 0) and old_precision (init 1.0) and adds
  (recall - old_recall) * (old_precision + precision) / 2 at every position. Recall
  only moves at hits, by 1/G, and old_precision there is the precision one position
  earlier, (h-1)/(r_h-1), or 1.0 when r_h = 1. Hence
  AP = (1/G) sum_h [ (h-1)/(r_h-1) + h/r_h ] / 2   (first term := 1 if r_h = 1).

Worked example: G = 2 matches at ranks 1 and 3.
  step:      (1/1 + 2/3) / 2                 = 5/6   = 0.833333
  trapezoid: ((1 + 1)/2 + (1/2 + 2/3)/2) / 2 = 19/24 = 0.791667
CMC for that query: [1, 1, 1, ...] (first match at rank 1).
"""
from __future__ import annotations

import typing

import numpy as np
import torch

from core.config import ApRule
from core.evaluation.distance import as_tensor

AP_RULES = typing.get_args(ApRule)  # [A15b] trapezoid | step
REPORTED_RANKS = (1, 5, 10, 20)


def check_ap_rule(ap_rule: str) -> None:
    if ap_rule not in AP_RULES:
        raise ValueError(f"unknown ap_rule {ap_rule!r}; valid: {', '.join(AP_RULES)}")


def summarize(cmc_hits: np.ndarray, aps: np.ndarray, valid: np.ndarray, max_rank: int,
              first_rank: np.ndarray) -> dict:
    """Average per-query results over the queries that have a valid match.

    Args:
        cmc_hits: bool [num_q, max_rank], True at r-1 when the first match is within rank r.
        aps: float64 [num_q], per-query AP (ignored where not valid).
        valid: bool [num_q], query has at least one valid match.
        first_rank: float64 [num_q], 1-based rank of the first valid match (ignored where not valid).
    """
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery (check pids and camids)")
    cmc = cmc_hits[valid].sum(0) / num_valid
    ap = np.where(valid, aps, np.nan)
    out = {"cmc": cmc, "mAP": float(ap[valid].mean()), "AP": ap,
           "first_match_rank": np.where(valid, np.asarray(first_rank, dtype=np.float64), np.nan),
           "num_valid": num_valid, "num_skipped": int(len(valid) - num_valid)}
    out.update({f"R{r}": float(cmc[r - 1]) for r in REPORTED_RANKS if r <= max_rank})
    return out


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20,
             ap_rule: str = "trapezoid", chunk: int = 256) -> dict:
    """CMC and mAP of a query x gallery distance matrix (torchreid-style shapes).

    Args:
        distmat: distances, numpy array or tensor of shape [num_q, num_g] (smaller = closer).
        q_pids: query identities, int array of shape [num_q].
        g_pids: gallery identities, int array of shape [num_g] (-1 junk, 0 distractor).
        q_camids: query camera ids, int array of shape [num_q].
        g_camids: gallery camera ids, int array of shape [num_g].
        max_rank: length of the CMC curve.
        ap_rule: "trapezoid" (official MARS code) or "step" (non-interpolated); see module doc.
        chunk: queries processed at once (temporaries: a few arrays of chunk x num_g).

    Returns:
        dict with ``cmc`` (float64 numpy [max_rank], cmc[r-1] = rank-r accuracy in 0..1),
        ``mAP`` (float, 0..1), ``AP`` (float64 numpy [num_q], NaN for skipped queries),
        ``first_match_rank`` (float64 numpy [num_q], 1-based rank of the first valid match among the
        non-ignored gallery items, NaN for skipped queries: the per-query CMC is ``rank <= r``),
        ``num_valid`` and ``num_skipped`` (ints), and ``R1``, ``R5``, ``R10``, ``R20``
        (floats, those <= max_rank).

    Raises:
        FloatingPointError: some distance is NaN or inf (the error gives how many).
    """
    check_ap_rule(ap_rule)
    dist = as_tensor(distmat, dtype=torch.float64 if _is_double(distmat) else torch.float32)
    dev = dist.device
    q_pids, g_pids, q_camids, g_camids = (as_tensor(a, dev, torch.int64) for a in (q_pids, g_pids, q_camids, g_camids))
    num_q, num_g = dist.shape
    finite = torch.isfinite(dist)
    if not bool(finite.all()):   # NaN sorts as "closest" and would score a diverged model 100 %
        raise FloatingPointError(f"distance matrix ({num_q} x {num_g}) has {int((~finite).sum())} non-finite "
                                 f"entries (NaN or inf); a diverged model or broken features cannot be scored")
    if q_pids.shape != (num_q,) or q_camids.shape != (num_q,) or g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
        raise ValueError(f"distmat is {tuple(dist.shape)} but pids/camids have shapes "
                         f"{tuple(q_pids.shape)}, {tuple(g_pids.shape)}, {tuple(q_camids.shape)}, {tuple(g_camids.shape)}")
    hits, aps, valid, firsts = [], [], [], []
    for s in range(0, num_q, chunk):
        rank, num_pos = match_ranks(dist[s:s + chunk], q_pids[s:s + chunk], g_pids, q_camids[s:s + chunk], g_camids)
        hit_no = torch.arange(1, rank.shape[1] + 1, device=dev, dtype=torch.float64)    # h = 1..G
        is_hit = hit_no <= num_pos[:, None]                                             # (c, G) real hits
        prec = hit_no / rank
        if ap_rule == "step":
            terms = prec
        else:  # trapezoid: precision one kept position before the hit, 1.0 at rank 1
            terms = (torch.where(rank > 1, (hit_no - 1) / (rank - 1).clamp(min=1), 1.0) + prec) / 2
        aps.append(torch.where(is_hit, terms, 0.0).sum(1) / num_pos.clamp(min=1))
        first = rank[:, 0] if rank.shape[1] else torch.zeros(len(num_pos), device=dev, dtype=torch.float64)
        hits.append(first[:, None] <= torch.arange(1, max_rank + 1, device=dev))
        valid.append(num_pos > 0)
        firsts.append(first)
    return summarize(_cat(hits), _cat(aps), _cat(valid), max_rank, _cat(firsts))


def match_ranks(dist, q_pids, g_pids, q_camids, g_camids) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every valid match among the non-ignored gallery items, without sorting the gallery.

    Order: by distance, ties by gallery index. For each query the G matches are sorted (a
    small sort); every other kept item is placed among them by binary search, and the
    number of kept non-matches before the p-th match is a cumulative count.

    Args:
        dist: [c, n] distances; q_pids, q_camids: [c]; g_pids, g_camids: [n].
    Returns:
        rank: float64 [c, G] 1-based rank of the p-th match (G = most matches of a query;
        entries p >= num_pos[i] are padding), num_pos: int64 [c] matches per query.
    """
    c, n = dist.shape
    same_id = g_pids[None, :] == q_pids[:, None]                                   # (c, n)
    ignored = (same_id & (g_camids[None, :] == q_camids[:, None])) | (g_pids == -1)[None, :]
    good = same_id & ~ignored
    num_pos = good.sum(1)
    G = int(num_pos.max()) if c else 0
    # the matches of each row in (distance, index) order, padded to G with (+inf, n)
    row, col = good.nonzero(as_tuple=True)                                          # row-major: index order
    slot = torch.arange(len(row), device=dist.device) - (torch.cumsum(num_pos, 0) - num_pos)[row]
    m_dist = torch.full((c, G), torch.inf, dtype=dist.dtype, device=dist.device)
    m_idx = torch.full((c, G), n, dtype=torch.int64, device=dist.device)
    m_dist[row, slot], m_idx[row, slot] = dist[row, col], col
    m_dist, order = m_dist.sort(dim=1, stable=True)
    m_idx = m_idx.gather(1, order)
    # place every kept non-match: pos = number of matches ranked before it
    pos = torch.searchsorted(m_dist, dist.contiguous())                            # matches strictly closer
    other = ~ignored & ~good
    tied = (m_dist.gather(1, pos.clamp(max=max(G - 1, 0))) == dist) & (pos < G) & other if G else other & False
    r, j = tied.nonzero(as_tuple=True)                                              # equal distance: lower index first
    pos[r, j] += ((m_dist[r] == dist[r, j, None]) & (m_idx[r] < j[:, None])).sum(1)
    bucket = torch.where(other, pos, G + 1) + (G + 2) * torch.arange(c, device=dist.device)[:, None]
    counts = torch.bincount(bucket.flatten(), minlength=c * (G + 2)).view(c, G + 2)[:, :G]
    rank = counts.cumsum(1) + torch.arange(1, G + 1, device=dist.device)            # non-matches before + p + 1
    return rank.double(), num_pos


def _cat(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).cpu().numpy()


def _is_double(x) -> bool:
    return x.dtype == torch.float64 if isinstance(x, torch.Tensor) else np.asarray(x).dtype == np.float64
