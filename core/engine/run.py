"""A run: resolved config -> trained model (cached, resumable) -> metrics on the dataset's query/gallery."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core.config import RunConfig, config_hash, to_dict
from core.data import Tracklet, VideoDataset, load_dataset
from core.engine.checkpoint import save_json
from core.engine.device import amp_dtype, barrier, current_dist, resolve_device
from core.engine.extract import extract_features
from core.engine.training import EpochCallback, EpochStats, train
from core.evaluation import evaluate, k_reciprocal_rerank, pairwise_distance
from core.provenance import provenance

TRAIN_SECTIONS = ("data", "model", "loss", "train")


@dataclass
class RunResult:
    metrics: dict[str, float]                 # R1, R5, R10, R20, mAP (fractions), rerank_* when computed, counts
    cmc: np.ndarray                           # (20,) rank-r accuracy
    history: list[EpochStats]
    run_dir: Path                             # holds last.pt (the final checkpoint) and config.json
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # query index -> (N, K) attention scores
    dataset_name: str = ""
    synthetic: bool = False


def train_dir(cfg: RunConfig, work_dir: str | Path) -> Path:
    """Runs that differ only in evaluation settings (Table 2's test N, re-ranking) share one trained model."""
    return Path(work_dir) / f"train-{config_hash(cfg, TRAIN_SECTIONS)}"


def _union(query: list[Tracklet], gallery: list[Tracklet]) -> tuple[list[Tracklet], np.ndarray, np.ndarray]:
    """Unique tracklets of query + gallery (the gallery holds the queries under the official protocol),
    with the row of each query and gallery item in that list."""
    index: dict[Tracklet, int] = {}
    for t in (*query, *gallery):
        index.setdefault(t, len(index))
    return list(index), np.array([index[t] for t in query]), np.array([index[t] for t in gallery])


def evaluate_model(model: torch.nn.Module, query: list[Tracklet], gallery: list[Tracklet], cfg: RunConfig,
                   device: torch.device | None = None, keep_scores_for: int = 0,
                   progress: bool = True) -> tuple[dict[str, float], np.ndarray, dict[int, torch.Tensor]]:
    """CMC/mAP of `model` on a query/gallery split, with the test options of cfg.eval [A12, A15, A16]."""
    device = device or next(model.parameters()).device
    tracklets, q_rows, g_rows = _union(query, gallery)
    out = extract_features(model, tracklets, seq_len=cfg.eval.seq_len, sampling=cfg.eval.sampling,
                           height=cfg.data.height, width=cfg.data.width, batch_size=cfg.eval.batch_size,
                           num_workers=cfg.data.num_workers, device=device,
                           dtype=amp_dtype(device, cfg.train.amp), keep_scores_for=keep_scores_for,
                           progress=progress)
    qf, gf = out.feats[q_rows], out.feats[g_rows]
    q_pids, g_pids = np.array([t.pid for t in query]), np.array([t.pid for t in gallery])
    q_cams, g_cams = np.array([t.camid for t in query]), np.array([t.camid for t in gallery])
    res = evaluate(pairwise_distance(qf, gf, cfg.eval.distance), q_pids, g_pids, q_cams, g_cams,
                   max_rank=20, ap_rule=cfg.eval.ap_rule)
    metrics = {k: float(res[k]) for k in ("R1", "R5", "R10", "R20", "mAP")}
    metrics.update(num_queries=float(res["num_valid"]), num_skipped_queries=float(res["num_skipped"]))
    if cfg.eval.rerank:
        rr = evaluate(k_reciprocal_rerank(qf, gf, k1=cfg.eval.rerank_k1, k2=cfg.eval.rerank_k2,
                                          lambda_value=cfg.eval.rerank_lambda),
                      q_pids, g_pids, q_cams, g_cams, max_rank=20, ap_rule=cfg.eval.ap_rule)
        metrics.update({f"rerank_{k}": float(rr[k]) for k in ("R1", "R5", "R10", "R20", "mAP")})
    q_scores = {i: out.scores[r] for i, r in enumerate(q_rows.tolist()) if r in out.scores}
    return metrics, np.asarray(res["cmc"]), q_scores


def run(cfg: RunConfig, work_dir: str | Path, callbacks: Sequence[EpochCallback] = (),
        progress: bool = True, dataset: VideoDataset | None = None) -> RunResult:
    """Train (or resume, or reuse) the model of `cfg`, evaluate it on the test split, write metrics.json.

    Under torchrun every rank trains; rank 0 alone evaluates and writes (the others wait at a barrier and get a
    RunResult with empty metrics)."""
    dataset = dataset or load_dataset(cfg.data)
    run_dir = train_dir(cfg, work_dir)
    save_json({"config": to_dict(cfg), "provenance": provenance()}, run_dir / "config.json")
    model, history = train(cfg, dataset, run_dir, callbacks=callbacks, progress=progress)
    ddp = current_dist()
    if not ddp.is_main:  # torchrun: rank 0 evaluates once (on its own GPU); the others wait for it
        barrier(ddp)
        return RunResult(metrics={}, cmc=np.zeros(0), history=history, run_dir=run_dir,
                         dataset_name=dataset.name, synthetic=dataset.synthetic)
    device = resolve_device(cfg.train.device, ddp)
    metrics, cmc, scores = evaluate_model(model, dataset.query, dataset.gallery, cfg, device,
                                          keep_scores_for=8, progress=progress)
    save_json({"metrics": metrics, "cmc": cmc.tolist(), "dataset": dataset.name, "synthetic": dataset.synthetic,
               "config": to_dict(cfg)}, run_dir / f"eval-{config_hash(cfg)}.json")
    barrier(ddp)
    return RunResult(metrics=metrics, cmc=cmc, history=history, run_dir=run_dir, scores=scores,
                     dataset_name=dataset.name, synthetic=dataset.synthetic)
