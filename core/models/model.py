"""The video re-ID model: backbone -> frame aggregation (Table 1's rows) -> GAP -> FC -> classifier.

aggregation="frame": image baseline, every frame is a sample in training; test-time feature = mean of the N
frame FC outputs [A13]. "avg": temporal average pooling of the frame maps. "sta": Eq. 1-4 and Alg. 1's F2,
with fusion=True also F1, concatenated along channels [A7]. "stal": Chen et al. 2019 (core/models/stal.py), its
global branch through the same fc and classifier. The head is GAP -> Linear(D or 2D, feat_dim) (the
retrieval feature; plain Linear, no BN/ReLU: the paper says only "a fully connected layer" [A7]) ->
Linear(feat_dim, num_classes), without a bias by default: Eq. 10's logits are W_k^T x (classifier_bias=True adds
one). "stan": Li et al. 2018 (core/models/stan.py): K spatial attention models, temporal attention per model,
concatenation [S1-S4]; its FC takes the K*D concatenation ("concat") or is replaced by the per-model projection
("per_model", the classifier then sees K*feat_dim). Nothing depends on N, so any number of frames works at test time.
"""
from __future__ import annotations

import typing

import torch
from torch import Tensor, nn

from core.config import Aggregation, F2Weights, ModelConfig
from core.models.backbone import build_backbone
from core.models.stan import STANHead
from core.models.sta import (ATTENTION, REMAINDERS, attention_error, attention_map, block_scores, fuse_pooled,
                             normalize_scores, region_bounds)
from core.models.stal import STALHead

AGGREGATIONS = typing.get_args(Aggregation)  # frame | avg | sta | stan | stal
F2_WEIGHTS = typing.get_args(F2Weights)  # [A5] normalized | raw: Eq. 4 scores S | Eq. 3 block sums s (Alg. 1 literally)


def _check(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")


class VideoReIDModel(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained: bool = True,
                 weights_path: str | None = None, aggregation: str = "sta", fusion: bool = True, num_regions: int = 4,
                 feat_dim: int = 1024, attention: str = "energy", f2_weights: str = "normalized",
                 remainder: str = "last", classifier_bias: bool = False, stan_models: int = 6, stan_hidden: int = 64,
                 stan_embed: str = "concat", stal_parts: int = 6, stal_ran: bool = True,
                 stal_part_norm: str = "l1", classifier_std: float = 0.001):
        super().__init__()
        _check("aggregation", aggregation, AGGREGATIONS)
        if attention not in ATTENTION:
            raise ValueError(attention_error(attention))
        _check("f2_weights", f2_weights, F2_WEIGHTS)
        _check("remainder", remainder, REMAINDERS)
        if num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {num_regions}")
        self.aggregation, self.attention = aggregation, attention
        self.f2_weights, self.remainder = f2_weights, remainder
        self.fusion = fusion and aggregation == "sta"  # fusion only exists for STA; ignored for frame/avg
        self.num_regions = num_regions
        self.backbone, channels = build_backbone(backbone, pretrained, weights_path)
        self.stan = STANHead(channels, stan_models, stan_hidden, stan_embed, feat_dim) if aggregation == "stan" \
            else None
        fc_in = self.stan.out_dim if self.stan is not None else channels * (2 if self.fusion else 1)
        # [S4] per_model: the head's projection is the FC, the concatenation the retrieval feature
        self.fc = nn.Identity() if self.stan is not None and stan_embed == "per_model" else nn.Linear(fc_in, feat_dim)
        width = fc_in if isinstance(self.fc, nn.Identity) else feat_dim
        self.classifier = nn.Linear(width, num_classes, bias=classifier_bias)  # Eq. 10: W_k^T x, no bias
        for lin in (self.fc, getattr(self.stan, "project", None)):
            if isinstance(lin, nn.Linear):
                nn.init.kaiming_normal_(lin.weight, mode="fan_out")
                nn.init.zeros_(lin.bias)
        nn.init.normal_(self.classifier.weight, std=classifier_std)  # 0.001: logits ~0, CE starts at log(C)
        if classifier_bias:
            nn.init.zeros_(self.classifier.bias)
        self.stal = STALHead(channels, feat_dim, num_classes, stal_parts, stal_ran, stal_part_norm, remainder,
                             classifier_bias) if aggregation == "stal" else None

    def forward(self, clips: Tensor) -> dict:
        """clips (B, N, 3, H, W) -> {"feat", "logits", "scores", "attention", "frames_per_clip"}, and for stan
        "spatial" (see README.md)."""
        b, n = clips.shape[:2]
        f = self.backbone(clips.flatten(0, 1))  # (B, N, 3, H, W) -> (B*N, 3, H, W) -> (B*N, D, h, w)
        return self.aggregate(f.unflatten(0, (b, n)))  # (B*N, D, h, w) -> (B, N, D, h, w)

    def aggregate(self, f: Tensor) -> dict:
        """Everything after the backbone: frame maps f (B, N, D, h, w) -> the output dict of forward."""
        b, n = f.shape[:2]
        g = attention_map(f, self.attention)  # Eq. 1: (B, N, h, w), float32; also feeds Reg (Eq. 6) and drawings
        scores, per_clip, extra = None, 1, {}
        if self.aggregation == "frame":
            v = f.mean((-2, -1), dtype=torch.float32)  # GAP per frame: (B, N, D, h, w) -> (B, N, D)
            feat = self.fc(v.flatten(0, 1))  # (B, N, D) -> (B*N, D) -> (B*N, feat_dim)
            if self.training:
                per_clip = n  # every frame is a sample; the caller repeats labels with repeat_interleave
            else:
                feat = feat.unflatten(0, (b, n)).mean(1)  # [A13] (B*N, F) -> (B, N, F) -> (B, F)
        elif self.aggregation == "stal":  # Chen et al. 2019: global and local branch, Eq. 1, 2, 8, 9
            return {**self.stal(f, self.fc, self.classifier), "attention": g, "frames_per_clip": 1}
        elif self.aggregation == "avg":
            feat = self.fc(f.mean((-2, -1), dtype=torch.float32).mean(1))  # (B, N, D, h, w) -> (B, N, D) -> (B, D)
        elif self.aggregation == "stan":
            head = self.stan(f)  # spatial attention, temporal attention per model, concatenation
            feat = self.fc(head["clip"])  # [S4] (B, K*D) -> (B, feat_dim); per_model: (B, K*feat_dim) unchanged
            scores = head["temporal"]  # [S6] (B, N, K_s) temporal weights, columns sum to 1 over the frames
            extra = {"spatial": head["spatial"]}  # (B, N, K_s, h*w), for the diversity term (core.losses)
        else:
            bounds = region_bounds(f.shape[-2], self.num_regions, self.remainder)  # Eq. 2
            s = block_scores(g, bounds)  # Eq. 3: (B, N, K)
            scores = normalize_scores(s)  # Eq. 4: (B, N, K), columns sum to 1
            x1, x2 = fuse_pooled(f, scores, scores if self.f2_weights == "normalized" else s, bounds)  # Alg. 1 + GAP
            feat = self.fc(torch.cat([x1, x2], 1) if self.fusion else x2)  # [A7] (B, 2D) or (B, D) -> (B, feat_dim)
        return {"feat": feat, "logits": self.classifier(feat), "scores": scores, "attention": g,
                "frames_per_clip": per_clip, **extra}


def build_model(cfg: ModelConfig, num_classes: int) -> VideoReIDModel:
    return VideoReIDModel(num_classes, backbone=cfg.backbone, pretrained=cfg.pretrained and cfg.init == "imagenet",
                          weights_path=cfg.weights_path,
                          aggregation=cfg.aggregation, fusion=cfg.fusion, num_regions=cfg.num_regions,
                          feat_dim=cfg.feat_dim, attention=cfg.attention, f2_weights=cfg.f2_weights,
                          remainder=cfg.remainder, classifier_bias=cfg.classifier_bias, stan_models=cfg.stan_models,
                          stan_hidden=cfg.stan_hidden, stan_embed=cfg.stan_embed, stal_parts=cfg.stal_parts,
                          stal_ran=cfg.stal_ran, stal_part_norm=cfg.stal_part_norm, classifier_std=cfg.classifier_std)
