"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) [A16], vectorised in torch.

Steps (paper section / authors' numpy release ``re_ranking``), over the N = m + n
queries and gallery items together:
  1. original distance: plain Euclidean distances d, squared by the release
     (``np.power(dist, 2)``), each column divided by its max, transposed.
  2. initial ranking: the k1+1 nearest items of every item (top-k, not a full sort).
  3. R(i, k1): k-reciprocal neighbours, i in the k1+1 nearest of p and p in those of i.
  4. expansion (Eq. 9 of the paper): add R(c, round(k1/2)) for each c in R(i, k1) when
     more than 2/3 of it lies in R(i, k1).
  5. V[i, j] = exp(-d(i, j)) / sum, over the expanded set (Eq. 7, Gaussian kernel).
  6. local query expansion (Eq. 11): V[i] <- mean of V over i's k2 nearest (when k2 != 1).
  7. Jaccard distance (Eq. 10): 1 - sum_j min(V_i, V_g) / sum_j max(V_i, V_g), written as
     1 - t / (2 - t) with t = sum_j min(...) since every row of V sums to 1.
  8. final = (1 - lambda) * Jaccard + lambda * original, for query rows x gallery columns.
V is sparse (a few dozen entries a row): it is kept as (row, col, value) lists and the
Jaccard sums run only over shared nonzeros (the release's inverted index, as gathers);
only the N x N distance is dense.
"""
from __future__ import annotations

import numpy as np
import torch

from core.evaluation.distance import PartLayout, as_tensor, self_euclidean


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def k_reciprocal_rerank(q_feats, g_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        device=None, chunk: int = 2048, include_queries: bool = False,
                        layout: PartLayout | None = None) -> np.ndarray:
    """Re-ranked query x gallery distance of Zhong et al. 2017 (the authors' numpy release, fast).

    The release takes distance matrices; this takes features and feeds the release's steps
    with plain Euclidean distances (not squared): the release squares its input itself, as
    the authors' MATLAB code uses squared distances. Passing already-squared distances to the
    release (a common pitfall) would rank by d^4.

    Ties: the nearest-neighbour lists are in (distance, index) order, as a stable argsort;
    the result equals ``reference.k_reciprocal_rerank_reference`` within 1e-5 (both use
    ``distance.self_euclidean``, so rankings see bit-identical float32 numbers). Exact ties
    do occur at MARS size (the bench input has 13 rows with a tie among their 23 nearest,
    2 of them across the k1+1 or k2 boundary); the release's quicksort orders those
    arbitrarily, which moves some re-ranked distances by up to 0.07.

    Memory: the N x N float32 original distance (4 N^2 bytes, N = m + n; 0.51 GB for MARS,
    N = 11,310) plus O(chunk * N) temporaries, the m x n result and O(N * k1^2) for the
    neighbour sets. The N x N matrix is freed before the Jaccard step; peak RSS growth
    measured for MARS: ~0.6 GB (``python -m core.bench eval``).

    The m + n items must be distinct tracklets: a query that is also in ``g_feats`` would take one of its own
    k-reciprocal neighbour slots. For a gallery that holds the queries (the official MARS protocol) pass the
    gallery without them and ``include_queries=True``: the query columns are then returned too, as the
    release computes them (it slices ``[:m, m:]`` only at the end).

    Args:
        q_feats: query features, numpy array or tensor of shape [m, d].
        g_feats: gallery features, numpy array or tensor of shape [n, d].
        k1, k2, lambda_value: the paper's parameters (MARS setting: 20, 6, 0.3).
        device: where to compute; None: CUDA when available, else CPU (torch's thread count).
        chunk: rows processed at once in the blockwise steps.
        include_queries: also return the query columns.
        layout: the original distance is the PartLayout's sum of distances (STAL) instead of one Euclidean
            distance over the whole vector.

    Returns:
        float32 numpy array of shape [m, n], or [m, m + n] (queries, then gallery) with include_queries.
    """
    dev = torch.device(device) if device is not None else default_device()
    q, g = as_tensor(q_feats, dev), as_tensor(g_feats, dev)
    m, num = q.shape[0], q.shape[0] + g.shape[0]
    if num <= max(k1 + 1, k2):
        raise ValueError(f"re-ranking needs more than max(k1 + 1, k2) = {max(k1 + 1, k2)} items, got {num}")
    orig = self_euclidean(torch.cat([q, g]), layout=layout)             # step 1: [N, N], symmetric
    orig.mul_(orig)                                                     # release squares its input
    orig.div_(orig.amax(dim=1, keepdim=True))                           # column max == row max (symmetric)
    half = int(round(k1 / 2.0))                                         # np.around: round half to even
    ranked = nearest(orig, max(k1 + 1, k2, half + 1), chunk)            # step 2: [N, K], stable order
    nearest_k2 = ranked[:, :k2].clone()
    rows, cols = _expanded_sets(ranked[:, :k1 + 1], ranked[:, :half + 1], chunk)  # steps 3-4
    vals = torch.exp(-orig[rows, cols])                                 # step 5
    vals = vals / _add_at(torch.zeros(num, device=dev), rows, vals)[rows]
    first = 0 if include_queries else m                                 # first returned column
    base = orig[:m, first:].clone()                                     # the only part still needed
    del orig, ranked
    if k2 != 1:                                                         # step 6
        rows, cols, vals = _query_expansion(rows, cols, vals, nearest_k2)
    t = _min_sums(rows, cols, vals, m, num, first)                      # step 7: [m, num - first]
    final = torch.rsub(t, 2.0)
    torch.div(t, final, out=final)                                      # t / (2 - t)
    del t
    final.neg_().add_(1.0).mul_(1 - lambda_value)                       # Jaccard * (1 - lambda)
    final.add_(base.mul_(lambda_value))                                 # step 8: + lambda * original
    return final.cpu().numpy()


def nearest(dist: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices of the k smallest entries of every row, in (value, index) order.

    Equal to ``argsort(dist, axis=1, kind="stable")[:, :k]``: top-(k+1), the first k ordered
    by value then index; a row whose (k+1)-th value equals its k-th (a tie across the
    boundary) falls back to a stable sort of the whole row.

    Args:
        dist: [N, M] float tensor, M >= k.
    Returns:
        int64 tensor [N, k].
    """
    out = []
    for s in range(0, dist.shape[0], chunk):
        rows = dist[s:s + chunk]
        vals, idx = torch.topk(rows, min(k + 1, rows.shape[1]), dim=1, largest=False, sorted=True)
        tied = (vals[:, k] == vals[:, k - 1]).nonzero().flatten() if vals.shape[1] > k else []
        vals, idx = vals[:, :k], idx[:, :k]
        idx, perm = idx.sort(dim=1)                                    # by index ...
        order = vals.gather(1, perm).sort(dim=1, stable=True).indices  # ... then stably by value
        idx = idx.gather(1, order)
        if len(tied):
            idx[tied] = torch.sort(rows[tied], dim=1, stable=True).indices[:, :k]
        out.append(idx)
    return torch.cat(out)


def _reciprocal(ranked: torch.Tensor) -> torch.Tensor:
    """mask[i, a]: ranked[i, a] has i among its own ranked list (k-reciprocal, step 3). [N, k] -> [N, k] bool."""
    me = torch.arange(ranked.shape[0], device=ranked.device)[:, None, None]
    return (ranked[ranked] == me).any(dim=-1)                          # (N, k, k) -> (N, k)


def _expanded_sets(fwd: torch.Tensor, fwd_half: torch.Tensor, chunk: int):
    """Expanded k-reciprocal set of every item (steps 3-4) as COO pairs.

    Args:
        fwd: [N, k1+1] nearest lists; fwd_half: [N, round(k1/2)+1] nearest lists.
    Returns:
        rows, cols: int64 [nnz], member cols of row i, sorted by row then col.
    """
    num = fwd.shape[0]
    rec = _reciprocal(fwd)                                             # R(i, k1) as mask over fwd[i]
    rec_half = _reciprocal(fwd_half)                                   # R(c, k1/2) as mask over fwd_half[c]
    in_rec = torch.zeros(min(chunk, num), num, dtype=torch.bool, device=fwd.device)  # R(i, k1), dense rows
    rows, cols = [], []
    for s in range(0, num, chunk):
        cand, cand_in = fwd[s:s + chunk], rec[s:s + chunk]              # (c, K): candidates, in R(i, k1)?
        r = torch.arange(len(cand), device=fwd.device)[:, None, None]   # (c, 1, 1) local row
        set_r, set_c = r[:, :, 0].expand_as(cand)[cand_in], cand[cand_in]
        in_rec[set_r, set_c] = True
        half, half_in = fwd_half[cand], rec_half[cand]                 # (c, K, H): R(cand, k1/2) as masks
        overlap = (in_rec[r, half] & half_in).sum(-1).double()         # |R(cand, k1/2) & R(i, k1)|
        in_rec[set_r, set_c] = False                                   # clean for the next chunk
        size = half_in.sum(-1).double()
        add = (cand_in & (overlap > 2.0 / 3 * size))[..., None] & half_in  # release: > 2/3 * len
        members = torch.cat([torch.where(cand_in, cand, num), torch.where(add, half, num).flatten(1)], 1)
        members = members.sort(dim=1).values                           # (c, K + K*H), duplicates adjacent
        keep = members < num
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        i, j = keep.nonzero(as_tuple=True)
        rows.append(i + s)
        cols.append(members[i, j])
    return torch.cat(rows), torch.cat(cols)


def _query_expansion(rows, cols, vals, nearest_k2: torch.Tensor):
    """Step 6: V'[i] = mean of V[r] over r in nearest_k2[i] ([N, k2]); COO (row-sorted) in and out.

    Each V'[i, j] sums its terms in the order of nearest_k2[i], as the release's ``np.mean``.
    """
    num, k2 = nearest_k2.shape
    start = torch.searchsorted(rows, torch.arange(num + 1, device=rows.device))  # row pointers
    src = nearest_k2.flatten()                                          # (N*k2,) source rows
    count = start[src + 1] - start[src]
    pos = _ranges(start[src], count)                                    # their entries, in source order
    dst = torch.arange(num, device=rows.device).repeat_interleave(k2).repeat_interleave(count)
    keys, order = torch.sort(dst * num + cols[pos], stable=True)       # by (row, col), then source order
    keys, inv = torch.unique_consecutive(keys, return_inverse=True)
    summed = _add_at(torch.zeros(len(keys), dtype=vals.dtype, device=vals.device), inv, vals[pos][order])
    return keys // num, keys % num, summed / k2


def _add_at(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """out[index[i]] += values[i], in place, summed in the same order on every call and device.

    CUDA's plain index_add_ adds with atomics, so float sums came out in a different order from one call to the
    next (the GPU bench saw two calls on the same features differ); torch's deterministic mode switches it to a
    sorted accumulation. The mode is set only around this call and restored after.
    """
    if out.device.type != "cuda":
        return out.index_add_(0, index, values)
    was_on, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return out.index_add_(0, index, values)
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)


def _ranges(start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """cat([arange(s, s + c) for s, c in zip(start, count)]) without a Python loop."""
    rep = torch.repeat_interleave(count)
    offset = torch.arange(len(rep), device=count.device) - (torch.cumsum(count, 0) - count)[rep]
    return start[rep] + offset


def _min_sums(rows, cols, vals, m: int, num: int, first: int, chunk: int = 256) -> torch.Tensor:
    """t[i, j] = sum_k min(V[i, k], V[first + j, k]) for queries i < m, items j >= first (step 7) -> [m, num - first].

    Only pairs sharing a nonzero k contribute: the target items' entries are grouped by column k
    (the release's inverted index) and every query entry meets the entries of its column.
    """
    n = num - first
    gal = rows >= first
    g_cols, order = cols[gal].sort(stable=True)
    g_rows, g_vals = rows[gal][order] - first, vals[gal][order]
    col_start = torch.searchsorted(g_cols, torch.arange(num + 1, device=cols.device))
    q_end = torch.searchsorted(rows, torch.arange(0, m + chunk, chunk, device=rows.device).clamp(max=m))
    t = torch.zeros(m, n, dtype=vals.dtype, device=vals.device)
    for c in range(len(q_end) - 1):                                   # query chunks
        e = slice(int(q_end[c]), int(q_end[c + 1]))
        qi, qk, qv = rows[e], cols[e], vals[e]
        count = col_start[qk + 1] - col_start[qk]                      # gallery entries in column qk
        src = torch.repeat_interleave(count)                           # query entry of each pair
        first = col_start[qk] - (torch.cumsum(count, 0) - count)
        pos = torch.arange(len(src), device=src.device).add_(first.index_select(0, src))  # gallery entry
        flat = (qi * n).index_select(0, src).add_(g_rows.index_select(0, pos))
        pair_min = torch.minimum(qv.index_select(0, src), g_vals.index_select(0, pos))
        _add_at(t.view(-1), flat, pair_min)
    return t
