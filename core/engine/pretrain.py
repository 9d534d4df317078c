"""The one-time pretraining stage (model.init=synthetic): the cpu profile's stand-in for the paper's ImageNet weights.

The paper starts ResNet-50 from ImageNet. The cpu profile's narrow backbone has no ImageNet weights (and nothing is
downloaded); trained from scratch on the 32 identities of the `occluded` training split it learns them by heart and
ranks the test identities near chance (docs/learning.md). This stage trains Avg + TL once on `pretrain.identities`
synthetic people of their own generator stream (core.data.synthetic.pretrain_preset: none of them is a person of any
split of any preset), seen by the same six cameras, and every row then starts from its backbone, as the paper's rows
start from ImageNet's. It is refused for MARS and DukeMTMC-VideoReID (config.validate).

Cached (core.engine.pretrained.stage_dir): a second call with the same config returns at once; a killed stage resumes
from its checkpoint (the engine's last.pt) and ends with the same weights. MLflow logging hangs on `callbacks` and
`on_done` (core.tables / core.tuning log the stage as a run of its own); nothing here imports mlflow.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core.atomic import save_json
from core.config import RunConfig, to_dict, uses_pretraining
from core.data.datasets import as_synthetic
from core.data.mars import load_mars
from core.data.synthetic import default_root, ensure_synthetic, pretrain_preset
from core.engine.checkpoint import save_torch
from core.engine.pretrained import RECORD, WEIGHTS, cache_root, stage_config, stage_dir, stage_hash
from core.engine.training import EpochCallback, EpochStats, train
from core.provenance import provenance


@dataclass
class Stage:
    path: Path                      # backbone.pt
    hash: str
    trained: bool                   # False: found in the cache
    record: dict = field(default_factory=dict)   # pretrain.json
    history: list[EpochStats] = field(default_factory=list)


def tree_name(cfg: RunConfig) -> str:
    """The pretraining tree's preset name in its marker and folder: pretrain<identities>."""
    return f"pretrain{cfg.pretrain.identities}"


def tree_root(cfg: RunConfig) -> Path:
    """The pretraining tree's folder, beside the stage (core.engine.pretrained.cache_root)."""
    return cache_root(cfg) / default_root(tree_name(cfg), cfg.data.synthetic_seed).name


def cached(cfg: RunConfig, cache: str | Path | None = None) -> Stage | None:
    """The finished stage of `cfg` in the cache, or None."""
    folder = stage_dir(cfg, cache)
    if not (folder / WEIGHTS).is_file() or not (folder / RECORD).is_file():
        return None
    return Stage(folder / WEIGHTS, stage_hash(cfg), False, json.loads((folder / RECORD).read_text()))


def ensure(cfg: RunConfig, cache: str | Path | None = None, callbacks: Sequence[EpochCallback] = (),
           progress: bool = True) -> Stage:
    """The pretraining stage `cfg` starts from: from the cache, or generated (the tree) and trained now.

    ValueError when cfg does not use it (config.uses_pretraining)."""
    if not uses_pretraining(cfg):
        raise ValueError("this config does not start from the pretraining stage (model.pretrained and "
                         "model.init=synthetic)")
    found = cached(cfg, cache)
    if found is not None:
        return found
    folder, t0 = stage_dir(cfg, cache), time.perf_counter()
    root = ensure_synthetic(tree_root(cfg), tree_name(cfg), cfg.data.synthetic_seed, progress,
                            preset=pretrain_preset(cfg.pretrain.identities))
    dataset = as_synthetic(load_mars(root))
    stage_cfg = stage_config(cfg)
    model, history = train(stage_cfg, dataset, folder, callbacks=callbacks, progress=progress)
    record = {"hash": stage_hash(cfg), "config": to_dict(stage_cfg), "pretrain": to_dict(cfg)["pretrain"],
              "tree": {"root": str(root), "preset": tree_name(cfg), "seed": cfg.data.synthetic_seed,
                       "identities": dataset.num_train_pids, "tracklets": len(dataset.train),
                       "frames": sum(len(t) for t in dataset.train)},
              "iterations": sum(h.iterations for h in history),
              "epochs": [{"epoch": h.epoch + 1, "total": h.total, "ce": h.ce, "triplet": h.triplet,
                          "train_acc": h.train_acc, "frames_per_s": h.frames_per_s} for h in history],
              "seconds": time.perf_counter() - t0, "provenance": provenance()}
    save_torch({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, folder / WEIGHTS)
    save_json(record, folder / RECORD)          # written last: its presence marks the stage as finished
    (folder / "last.pt").unlink(missing_ok=True)  # the resumable checkpoint is no longer needed
    return Stage(folder / WEIGHTS, record["hash"], True, record, history)
