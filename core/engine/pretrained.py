"""Where the pretraining stage's backbone lives, and the model every run starts from.

With model.pretrained and model.init=synthetic (config.uses_pretraining) a run's backbone starts from the weights
of the one-time pretraining stage (core.engine.pretrain): ``<cache>/pretrain_<hash>/backbone.pt``, a plain state
dict, where <hash> (stage_hash) covers everything that made it: the generator version, the pretraining tree's preset
and seed, and the stage's data, model and training keys. This module only finds and loads that file; the stage
that writes it lives in core.engine.pretrain (which trains with core.engine.training, itself a user of this module).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from core.config import (
    BACKBONE_STRIDE,
    RESULT_NEUTRAL_KEYS,
    SYNTHETIC_VERSION,
    RunConfig,
    apply_overrides,
    to_dict,
    to_flat_dict,
    uses_pretraining,
)
from core.data.synthetic import pretrain_preset
from core.engine.checkpoint import load_torch
from core.models import build_model

WEIGHTS = "backbone.pt"      # the backbone's state dict (model.backbone.state_dict())
RECORD = "pretrain.json"     # the stage's config, hash, provenance and per-epoch figures
STAGE_VERSION = 1            # bump when the stage's recipe changes in code (not in config): a new hash, a new stage
CACHE = Path(".cache")       # under the working folder, beside the synthetic trees


class PretrainMissingError(RuntimeError):
    """The pretraining stage a config needs has not been run (or its cache was removed)."""


# The keys a row passes to its stage: what the stage's training depends on besides the `pretrain` keys. Everything else
# (the row's head, losses, K, data preset, evaluation) is left at its default, so the rows of every table that share
# these keys share one stage (Table 1's six rows, Table 3's three K, Table 4's STAN and STAL, the tuning trials).
INHERITED = ("data.synthetic_seed", "data.height", "data.width", "data.train_sampling", "data.flip_prob",
             "data.flip_per", "data.num_workers", "model.backbone", "model.feat_dim", "train.weight_decay",
             "train.gamma", "train.device", "train.amp", "train.channels_last", "train.checkpoint_every_s",
             "train.compile")


def stage_config(cfg: RunConfig) -> RunConfig:
    """The config the stage trains with: the defaults, the row's INHERITED keys, and Avg with CE (+ the batch-hard
    triplet with pretrain.triplet; no Reg) from scratch, with the `pretrain` keys' N, schedule, batch, classifier
    initialisation and seed. Its data is the pretraining tree (core.data.synthetic.pretrain_preset), read by the
    stage itself."""
    p, flat = cfg.pretrain, to_flat_dict(cfg)
    return apply_overrides(RunConfig(), {
        **{key: flat[key] for key in INHERITED}, "data.dataset": "synthetic",
        "model.pretrained": False, "model.aggregation": "avg", "model.fusion": False,
        # K is not read by Avg; the default, unless the frames are too small for it (config.validate)
        "model.num_regions": min(RunConfig().model.num_regions, max(1, cfg.data.height // BACKBONE_STRIDE)),
        "model.classifier_std": p.classifier_std, "loss.triplet": p.triplet, "loss.margin": 0.3,
        "loss.reg_weight": 0.0, "data.seq_len": p.seq_len, "data.ids_per_batch": p.ids_per_batch,
        "data.tracklets_per_id": p.tracklets_per_id, "data.epoch_def": "identities", "train.epochs": p.epochs,
        "train.lr": p.lr, "train.optimizer": "adam", "train.milestones": list(p.milestones), "train.seed": p.seed},
        "pretraining stage")


def stage_hash(cfg: RunConfig) -> str:
    """16 hex digits of everything that makes the stage's weights: the trained config (data, model, loss, train;
    device and other result-neutral keys aside), the pretraining tree (preset, seed, generator version) and
    STAGE_VERSION."""
    stage = to_dict(stage_config(cfg))
    keys = {name: {k: v for k, v in stage[name].items() if f"{name}.{k}" not in RESULT_NEUTRAL_KEYS}
            for name in ("data", "model", "loss", "train")}
    blob = {"config": keys, "tree": dataclasses.asdict(pretrain_preset(cfg.pretrain.identities)),
            "tree_seed": cfg.data.synthetic_seed, "synthetic_version": SYNTHETIC_VERSION,
            "stage_version": STAGE_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:16]


def cache_root(cfg: RunConfig) -> Path:
    """Where the stage and its tree are kept: beside the synthetic tree the config reads (the folder holding
    data.root), or ./.cache under the working folder when data.root is not given (where that tree goes too)."""
    return Path(cfg.data.root).resolve().parent if cfg.data.root else Path.cwd() / CACHE


def stage_dir(cfg: RunConfig, cache: str | Path | None = None) -> Path:
    """<cache>/pretrain_<stage_hash> (cache: cache_root by default): the stage's weights, record and (while it
    runs) resumable checkpoint."""
    return Path(cache or cache_root(cfg)) / f"pretrain_{stage_hash(cfg)}"


def weights_file(cfg: RunConfig, cache: str | Path | None = None) -> Path:
    return stage_dir(cfg, cache) / WEIGHTS


def load_backbone(model: torch.nn.Module, path: Path) -> None:
    """Load the stage's backbone state dict into model.backbone (every tensor must match: same backbone)."""
    if not path.is_file():
        raise PretrainMissingError(
            f"{path}: the pretrained backbone this config starts from (model.init=synthetic) is not there; run "
            f"python reproduce/pretrain.py with the same profile and --set flags (every table and tune.py runs it "
            f"first on their own), or set model.pretrained=false")
    state = load_torch(path)
    try:
        model.backbone.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise PretrainMissingError(f"{path}: does not fit this config's backbone ({e}); delete the folder "
                                   f"{path.parent} to pretrain again") from e


def start_model(cfg: RunConfig, num_classes: int, cache: str | Path | None = None) -> torch.nn.Module:
    """The model training starts from: build_model (ImageNet weights when model.init=imagenet and pretrained),
    then the pretraining stage's backbone when config.uses_pretraining(cfg)."""
    model = build_model(cfg.model, num_classes)
    if uses_pretraining(cfg):
        load_backbone(model, weights_file(cfg, cache))
    return model
