"""One feature extraction scored under several protocols [A15] (``core.protocols``), with optional k-reciprocal
re-ranking [A16] over the distinct tracklets.

The caller extracts one feature per distinct test tracklet (a query that is also a gallery item is one row) and
passes the rows of the queries and of the loaded gallery in that set. A protocol's gallery is the loaded one
(headline) or is rebuilt from it: with the queries (those it lacks appended in query order) or without them.
Distances (and the re-ranked distances) are computed once, query x every distinct tracklet; each protocol only
selects its gallery columns and applies its AP rule.

Besides the averages, every query's outcome is kept (``Scores.per_query``, columns ``PER_QUERY_COLUMNS``): one row
per (protocol, reranked, query), so any statistic (a bootstrap interval, a paired difference) can be recomputed
without the features.

Re-ranking runs over the distinct tracklets, so a query never meets a copy of itself among its k-reciprocal
neighbours (on MARS: 11,310 items, not 1,980 + 11,310 = 13,290), and both galleries read from the same matrix.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.evaluation.chance import chance_level
from core.evaluation.distance import PartLayout, as_tensor, pairwise_distance
from core.evaluation.metrics import REPORTED_RANKS, evaluate
from core.evaluation.rerank import k_reciprocal_rerank
from core.protocols import Protocol, chance_name

SUMMARY = tuple(f"R{r}" for r in REPORTED_RANKS) + ("mAP",)
# the per-query frame: protocol name (core.protocols), re-ranked distances or not, position of the query in the
# dataset's query list, its identity and camera, the 1-based rank of its first valid match among the non-ignored
# gallery items and its AP under the protocol's AP rule (both NaN when it has no valid match)
PER_QUERY_COLUMNS = ("protocol", "reranked", "query", "pid", "camid", "first_match_rank", "ap")


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]        # MLflow names (fractions and counts; core.protocols)
    cmcs: dict[str, np.ndarray]      # float64 [20] CMC curves: cmc, rerank_cmc (headline), official_cmc, ...,
                                     # and each protocol's chance level: chance_cmc, official_chance_cmc, ...
    per_query: pd.DataFrame          # one row per (protocol, reranked, query), columns PER_QUERY_COLUMNS


def protocol_gallery(q_rows: np.ndarray, g_rows: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Rows of `protocol`'s gallery: the loaded gallery `g_rows` for the headline; else with every query row
    (the missing ones appended in query order) or without any."""
    if protocol.name == "headline":
        return g_rows
    if protocol.gallery_with_queries:
        have = set(g_rows.tolist())
        missing = [r for r in dict.fromkeys(q_rows.tolist()) if r not in have]
        return np.concatenate([g_rows, np.asarray(missing, dtype=g_rows.dtype)])
    return g_rows[~np.isin(g_rows, q_rows)]


def score_protocols(feats, q_rows: np.ndarray, g_rows: np.ndarray, pids: np.ndarray, camids: np.ndarray,
                    protocols: Sequence[Protocol], distance: str = "euclidean",
                    rerank: tuple[int, int, float] | None = None, device=None,
                    layout: PartLayout | None = None) -> Scores:
    """CMC/mAP and per-query outcomes of every protocol from one set of features.

    Args:
        feats: [T, d] features of the T distinct test tracklets (numpy or tensor).
        q_rows: [m] row of each query in feats; g_rows: [n] row of each loaded gallery item.
        pids, camids: [T] identity and camera of each row.
        protocols: scored in order; a protocol whose (gallery, AP rule) equals an earlier one reuses its numbers.
        distance: "euclidean" | "cosine" (re-ranking needs "euclidean").
        rerank: (k1, k2, lambda) to also score the re-ranked distances, else None.
        layout: the model's PartLayout (STAL: d = d_l + w * d_g), used by the distances and the re-ranking alike;
            None: one distance over the whole feature.

    Returns:
        Scores: metrics as MLflow names (fractions and counts; ``core.protocols``); cmcs the float64 [20] CMC
        curves, named like the metrics: ``cmc``, ``rerank_cmc`` (headline), ``official_cmc``, …, and the chance
        level of each protocol's split (``chance_cmc``, ``official_chance_cmc``, … with metrics ``chance_R1`` …
        ``chance_mAP``; core.evaluation.chance, names from core.protocols.chance_name); per_query the
        frame of PER_QUERY_COLUMNS, protocols in the given order, then not re-ranked before re-ranked, then queries
        in `q_rows` order (``query`` = position in q_rows).
    """
    if rerank is not None and distance != "euclidean":
        raise ValueError(f"k-reciprocal re-ranking needs Euclidean distances, got distance={distance!r}")
    feats = as_tensor(feats, device)
    qs = np.unique(q_rows)                                   # distinct query rows, sorted
    q_pos = torch.as_tensor(np.searchsorted(qs, q_rows))      # each query's row among qs
    dist = pairwise_distance(feats[torch.as_tensor(qs)], feats, distance,
                             layout=layout)[q_pos.to(feats.device)]                             # [m, T]
    reranked = _rerank_all(feats, qs, rerank, layout)[q_pos] if rerank is not None else None    # [m, T]
    metrics: dict[str, float] = {}
    cmcs: dict[str, np.ndarray] = {}
    done: dict[tuple, tuple[dict, dict, dict]] = {}
    frames = []
    skipped = []
    for p in protocols:
        cols = protocol_gallery(q_rows, g_rows, p)
        key = (tuple(cols.tolist()), p.ap_rule)
        if key not in done:
            done[key] = _score(dist, reranked, cols, q_rows, pids, camids, p.ap_rule)
        values, curves, outcomes = done[key]
        metrics.update({p.prefix + k: v for k, v in values.items()})
        cmcs.update({p.prefix + k: v for k, v in curves.items()})
        frames += [_per_query_rows(p.name, rr, q_rows, pids, camids, *res) for rr, res in outcomes.items()]
        if values["num_skipped_queries"]:
            skipped.append(f"{p.name} {int(values['num_skipped_queries'])}")
    if rerank is not None:
        metrics["rerank_set_size"] = float(feats.shape[0])
    if skipped:
        warnings.warn(f"queries without a valid gallery match (left out of CMC and mAP), of {len(q_rows)}: "
                      f"{', '.join(skipped)}", stacklevel=2)
    return Scores(metrics, cmcs, pd.concat(frames, ignore_index=True))


def _per_query_rows(protocol: str, reranked: bool, q_rows: np.ndarray, pids, camids, first: np.ndarray,
                    ap: np.ndarray) -> pd.DataFrame:
    m = len(q_rows)
    return pd.DataFrame({"protocol": [protocol] * m, "reranked": np.full(m, reranked), "query": np.arange(m),
                         "pid": np.asarray(pids)[q_rows].astype(np.int64),
                         "camid": np.asarray(camids)[q_rows].astype(np.int64),
                         "first_match_rank": first, "ap": ap}, columns=list(PER_QUERY_COLUMNS))


def _rerank_all(feats: torch.Tensor, qs: np.ndarray, params: tuple[int, int, float],
                layout: PartLayout | None = None) -> torch.Tensor:
    """Re-ranked distance of the distinct queries `qs` to every row of feats: [len(qs), T], columns in row order."""
    k1, k2, lam = params
    others = np.setdiff1d(np.arange(feats.shape[0]), qs)
    order = np.concatenate([qs, others])                    # queries first, as the re-ranking expects
    rr = k_reciprocal_rerank(feats[torch.as_tensor(qs)], feats[torch.as_tensor(others)], k1=k1, k2=k2,
                             lambda_value=lam, include_queries=True, layout=layout)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))                     # column of each row in `rr`
    return torch.from_numpy(rr[:, back])


def _score(dist, reranked, cols: np.ndarray, q_rows, pids, camids, ap_rule: str) -> tuple[dict, dict, dict]:
    """(summary values, CMC curves, {reranked: (first_match_rank, AP)} per query) of one gallery and AP rule; the
    values and curves include the split's chance level (core.evaluation.chance)."""
    args = (pids[q_rows], pids[cols], camids[q_rows], camids[cols])
    index = torch.as_tensor(cols)
    res = evaluate(dist[:, index.to(dist.device)], *args, max_rank=20, ap_rule=ap_rule)
    chance = chance_level(*args, ap_rule=ap_rule, max_rank=20)
    values = {k: float(res[k]) for k in SUMMARY}
    values.update(num_queries=float(res["num_valid"]), num_skipped_queries=float(res["num_skipped"]),
                  num_gallery=float(len(cols)))
    values.update({chance_name(k): chance[k] for k in SUMMARY})
    curves = {"cmc": np.asarray(res["cmc"]), chance_name("cmc"): chance["cmc"]}
    outcomes = {False: (res["first_match_rank"], res["AP"])}
    if reranked is not None:
        rr = evaluate(reranked[:, index], *args, max_rank=20, ap_rule=ap_rule)
        values.update({f"rerank_{k}": float(rr[k]) for k in SUMMARY})
        curves["rerank_cmc"] = np.asarray(rr["cmc"])
        outcomes[True] = (rr["first_match_rank"], rr["AP"])
    return values, curves, outcomes
