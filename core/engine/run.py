"""A run: resolved config -> trained model (cached, resumable) -> metrics on the dataset's query/gallery.

Written into the run folder (train_dir) per full config hash: eval-<hash>.json (metrics, CMC, losses) and
per_query-<hash>.parquet (every query's outcome per protocol, core.evaluation.scoring.PER_QUERY_COLUMNS)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.atomic import save_json, save_parquet
from core.config import RunConfig, config_hash, to_dict
from core.data import Tracklet, VideoDataset, load_dataset
from core.engine import audit as attention_audit
from core.engine.device import amp_dtype, barrier, current_dist, resolve_device
from core.engine.extract import extract_features
from core.engine.training import TRAIN_SECTIONS, EpochCallback, EpochStats, train
from core.evaluation import bootstrap, score_protocols
from core.protocols import chance_name, headline, named
from core.provenance import provenance


@dataclass
class RunResult:
    metrics: dict[str, float]                 # R1..mAP (fractions) per protocol, rerank_*, counts (core.protocols),
                                              # and their bootstrap intervals *_ci_low / *_ci_high (fractions)
    cmc: np.ndarray                           # (20,) rank-r accuracy
    history: list[EpochStats]
    run_dir: Path                             # holds last.pt (the final checkpoint) and config.json
    per_query: pd.DataFrame = field(default_factory=pd.DataFrame)  # core.evaluation.PER_QUERY_COLUMNS
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # query index -> (N, K) attention scores
    dataset_name: str = ""
    synthetic: bool = False
    losses: dict[str, float] = field(default_factory=dict)  # last epoch's loss terms as they enter the total
    audit_clips: list[dict] = field(default_factory=list)   # the attention audit's figure clips (core.engine.audit)
    chance_cmc: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (20,) headline CMC of a random ranking


def last_epoch_losses(history: Sequence[EpochStats], cfg: RunConfig) -> dict[str, float]:
    """Mean loss terms of the last epoch, each weighted as it enters the total (Eq. 7, 11): loss_ce, loss_triplet
    (0 without the triplet loss), loss_reg_weighted = lambda * Reg (0 when lambda = 0), loss_total; and loss_reg,
    the unweighted Reg (Eq. 6), so a reader sees whether Reg does anything at that lambda; loss_div and
    loss_div_weighted likewise for STAN's diversity term, loss_triplet_local(_weighted) and loss_consist(_weighted)
    for STAL's Eq. 4 local triplet and Eq. 6 consistency term (0 for the other models)."""
    if not history:
        return {}
    h = history[-1]
    return {"loss_ce": h.ce, "loss_triplet": h.triplet, "loss_reg_weighted": cfg.loss.reg_weight * h.reg,
            "loss_total": h.total, "loss_reg": h.reg, "loss_div": h.div,
            "loss_div_weighted": cfg.loss.div_weight * h.div, "loss_triplet_local": h.triplet_local,
            "loss_triplet_local_weighted": cfg.loss.stal_local_weight * h.triplet_local, "loss_consist": h.consist,
            "loss_consist_weighted": cfg.loss.stal_consist_weight * h.consist}


def train_dir(cfg: RunConfig, work_dir: str | Path) -> Path:
    """Runs that differ only in evaluation settings (Table 2's test N, re-ranking) share one trained model."""
    return Path(work_dir) / f"train-{config_hash(cfg, TRAIN_SECTIONS)}"


def _key(t: Tracklet) -> tuple:
    """Identity of a test tracklet: its pid, camera and frame file names (DukeMTMC-VideoReID's gallery/ holds
    copies of the query tracklets under other paths; MARS's gallery holds the same tracklets)."""
    return t.pid, t.camid, tuple(os.path.basename(p) for p in t.paths)


def _union(query: list[Tracklet], gallery: list[Tracklet]) -> tuple[list[Tracklet], np.ndarray, np.ndarray]:
    """Distinct tracklets of query + gallery, queries first (the gallery holds the queries under the official
    protocol), with the row of each query and gallery item in that list."""
    index: dict[tuple, int] = {}
    tracklets = []
    for t in (*query, *gallery):
        if index.setdefault(_key(t), len(index)) == len(tracklets):
            tracklets.append(t)
    return tracklets, np.array([index[_key(t)] for t in query]), np.array([index[_key(t)] for t in gallery])


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]                 # MLflow names, fractions and counts (core.protocols)
    cmc: np.ndarray                           # (20,) headline rank-r accuracy
    per_query: pd.DataFrame                   # core.evaluation.PER_QUERY_COLUMNS; query = position in `query`
    scores: dict[int, torch.Tensor]           # query index -> (N, K) attention scores (keep_scores_for queries)
    chance_cmc: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (20,) headline CMC of a random ranking


def evaluate_model(model: torch.nn.Module, query: list[Tracklet], gallery: list[Tracklet], cfg: RunConfig,
                   device: torch.device | None = None, keep_scores_for: int = 0,
                   progress: bool = True, named_protocols: bool = True,
                   collect: attention_audit.ClipCollector | None = None) -> Evaluation:
    """CMC/mAP of `model` on a query/gallery split, with the test options of cfg.eval [A12, A15, A16].

    One extraction, scored under the headline protocol (the gallery as given, eval.ap_rule: metrics R1..mAP) and
    the named ones (official_*, gao_*; core.protocols), with every query's outcome (Evaluation.per_query).
    ``named_protocols=False``: the headline alone (core.tuning's validation split, whose gallery is its queries).
    ``collect`` sees the extraction's batches (owners index the distinct tracklets of _union(query, gallery))."""
    device = device or next(model.parameters()).device
    tracklets, q_rows, g_rows = _union(query, gallery)
    out = extract_features(model, tracklets, seq_len=cfg.eval.seq_len, sampling=cfg.eval.sampling,
                           height=cfg.data.height, width=cfg.data.width, batch_size=cfg.eval.batch_size,
                           num_workers=cfg.data.num_workers, device=device,
                           dtype=amp_dtype(device, cfg.train.amp), keep_scores_for=keep_scores_for,
                           progress=progress, collect=collect)
    ds = cfg.data.dataset
    protocols = [headline(ds, cfg.data.gallery_with_queries, cfg.eval.ap_rule),
                 *(named(ds).values() if named_protocols else ())]
    rerank = (cfg.eval.rerank_k1, cfg.eval.rerank_k2, cfg.eval.rerank_lambda) if cfg.eval.rerank else None
    layout = out.layout and dataclasses.replace(out.layout, global_weight=cfg.eval.stal_global_weight)  # STAL
    scored = score_protocols(out.feats, q_rows, g_rows, np.array([t.pid for t in tracklets]),
                             np.array([t.camid for t in tracklets]), protocols, cfg.eval.distance, rerank,
                             layout=layout)
    q_scores = {i: out.scores[r] for i, r in enumerate(q_rows.tolist()) if r in out.scores}
    return Evaluation(scored.metrics, scored.cmcs["cmc"], scored.per_query, q_scores,
                      scored.cmcs.get(chance_name("cmc"), np.zeros(0)))


def per_query_path(cfg: RunConfig, work_dir: str | Path) -> Path:
    """The per-query outcomes of `cfg`'s evaluation, beside its eval-<hash>.json."""
    return train_dir(cfg, work_dir) / f"per_query-{config_hash(cfg)}.parquet"


def run(cfg: RunConfig, work_dir: str | Path, callbacks: Sequence[EpochCallback] = (),
        progress: bool = True, dataset: VideoDataset | None = None) -> RunResult:
    """Train (or resume, or reuse) the model of `cfg`, evaluate it on the test split, write eval-<hash>.json and
    per_query-<hash>.parquet. The metrics gain the 95 % bootstrap intervals of R1..mAP over query identities
    (core.evaluation.bootstrap.ci_metrics, eval.bootstrap_resamples / eval.bootstrap_seed) and, for STA models, the
    attention audit's attn_* metrics (core.engine.audit: uniformity; on synthetic data with ground truth the AUCs,
    trained and untrained).

    Under torchrun every rank trains; rank 0 alone evaluates and writes (the others wait at a barrier and get a
    RunResult with empty metrics)."""
    dataset = dataset or load_dataset(cfg.data, progress)
    run_dir = train_dir(cfg, work_dir)
    save_json({"config": to_dict(cfg), "provenance": provenance()}, run_dir / "config.json")
    model, history = train(cfg, dataset, run_dir, callbacks=callbacks, progress=progress)
    ddp = current_dist()
    if not ddp.is_main:  # torchrun: rank 0 evaluates once (on its own GPU); the others wait for it
        barrier(ddp)
        return RunResult(metrics={}, cmc=np.zeros(0), history=history, run_dir=run_dir,
                         dataset_name=dataset.name, synthetic=dataset.synthetic)
    device = resolve_device(cfg.train.device, ddp)
    tracklets = _union(dataset.query, dataset.gallery)[0]
    truth = attention_audit.truth_of(cfg, dataset) if cfg.model.aggregation == "sta" else None
    collector = attention_audit.ClipCollector(attention_audit.damaged_tracklets(tracklets, truth)) \
        if cfg.model.aggregation == "sta" else None
    ev = evaluate_model(model, dataset.query, dataset.gallery, cfg, device, keep_scores_for=8, progress=progress,
                        collect=collector)
    metrics = dict(ev.metrics)
    metrics.update(bootstrap.ci_metrics(ev.per_query, cfg.eval.bootstrap_resamples, cfg.eval.bootstrap_seed))
    audit_metrics, audit_clips = attention_audit.audit(collector, tracklets, truth, cfg, dataset.num_train_pids,
                                                       device, progress) if collector else ({}, [])
    metrics.update(audit_metrics)
    losses = last_epoch_losses(history, cfg)
    save_parquet(ev.per_query, per_query_path(cfg, work_dir))
    save_json({"metrics": metrics, "cmc": ev.cmc.tolist(), "chance_cmc": ev.chance_cmc.tolist(), "losses": losses,
               "dataset": dataset.name, "synthetic": dataset.synthetic, "config": to_dict(cfg)}, run_dir / f"eval-{config_hash(cfg)}.json")
    barrier(ddp)
    return RunResult(metrics=metrics, cmc=ev.cmc, history=history, run_dir=run_dir, per_query=ev.per_query,
                     scores=ev.scores, dataset_name=dataset.name, synthetic=dataset.synthetic, losses=losses,
                     audit_clips=audit_clips, chance_cmc=ev.chance_cmc)
