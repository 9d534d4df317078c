"""STAL, Chen et al. 2019, "Spatial-Temporal Attention-aware Learning for Video-Based Person Re-Identification"
(../shared/paper/stal_chen2019.txt): the head on the backbone's frame maps and the maths of Eq. 2, 8 and 9.

Shapes: B clips, N frames (T in the paper), C channels, h x w map, R parts, F = feat_dim.
Global branch (Sec. III-A): g = FC(mean_t GAP(RAN(f_t))), the temporal pooling of the frames' global features.
Local branch: f^{r,t} = part-specific FC_r(GAP of stripe r of f_t) (Eq. 1), scores a^{r,t} = A(X) (Sec. III-C),
f^r = sum_t a^{r,t} f^{r,t} / sum_t a^{r,t} (Eq. 9), a_bar^r = mean_t a^{r,t}, and Eq. 2 / Eq. 8:
d_l(i, j) = sum_r (a_bar_i^r a_bar_j^r / (||a_bar_i|| ||a_bar_j||)) ||f_i^r - f_j^r||_2.
Readings where the paper cannot be followed or is silent are marked [L1]..[L8] (experiments/README.md, "STAL").
Nothing depends on N: the attention FC scores each frame (R outputs), not the clip (the paper's T x R outputs).
"""
from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import StalPartNorm
from core.evaluation.distance import PartLayout
from core.models.sta import EPS, region_bounds

PART_NORMS = typing.get_args(StalPartNorm)  # [L4] l1 | l2
ATT_CHANNELS = 64  # [L3] width of the attention branch's convolutions (not given; RAN's first layer has 64)


class ResidualAttention(nn.Module):
    """[L2] The residual attention network of Sec. III-B / Fig. 3(a) / Table I: M = sigmoid(up(down(f))),
    output f + M * f (the soft mask times the CNN output, summed with the CNN output).

    down: 1x1 conv (C -> 64), 3x3 max pool stride 2, 3x3 conv (64 -> 192); up: 4x4 deconvolution stride 2
    (192 -> 192), 1x1 conv (192 -> C) (Table I's ran conv1, ran pool1, ran conv2, deconv, conv3). The paper puts it
    inside GoogLeNet after inception-4c (14 x 14 maps); here it acts on the backbone's output map (h x w), before
    the global branch's pooling. The deconvolution gives 2 * ceil(h / 2) rows; an odd h is cropped back to h.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 1)
        self.conv2 = nn.Conv2d(64, 192, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(192, 192, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(192, channels, 1)

    def forward(self, f: Tensor) -> Tensor:
        """(M, C, h, w) -> (M, C, h, w)."""
        x = F.max_pool2d(F.relu(self.conv1(f)), 3, stride=2, padding=1)  # (M, 64, ceil(h/2), ceil(w/2))
        x = F.relu(self.deconv(F.relu(self.conv2(x))))  # (M, 192, 2 ceil(h/2), 2 ceil(w/2))
        mask = torch.sigmoid(self.conv3(x[..., :f.shape[-2], :f.shape[-1]]))  # (M, C, h, w), in [0, 1]
        return f + mask * f


class SpatialTemporalAttention(nn.Module):
    """[L3] A(X) of Sec. III-C: "a 7x7 convolution layer, two 3x3 convolution layers, a 7x7 max pooling layer, a
    fully connected layer whose output is T x R and a sigmoid layer", then "the L1 normalization layer".

    Here on each frame's backbone map: 7x7 conv stride 2, two 3x3 convs (ATT_CHANNELS wide, ReLU), global max pool
    (the paper's 7x7 pool over its 7x7 map), FC -> R scores per frame, sigmoid. The FC scores one frame at a time
    (R outputs, shared over frames) so that nothing depends on N.
    """

    def __init__(self, channels: int, num_parts: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, ATT_CHANNELS, 7, stride=2, padding=3), nn.ReLU(),
            nn.Conv2d(ATT_CHANNELS, ATT_CHANNELS, 3, padding=1), nn.ReLU(),
            nn.Conv2d(ATT_CHANNELS, ATT_CHANNELS, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(ATT_CHANNELS, num_parts)

    def forward(self, f: Tensor) -> Tensor:
        """Frame maps (B, N, C, h, w) -> raw scores a^{r,t} in (0, 1), (B, N, R), float32."""
        x = self.convs(f.flatten(0, 1)).amax((-2, -1))  # (B*N, C, h, w) -> (B*N, 64, h', w') -> (B*N, 64)
        return torch.sigmoid(self.fc(x).float()).unflatten(0, f.shape[:2])  # (B*N, R) -> (B, N, R)


def l1_normalize_map(a: Tensor) -> Tensor:
    """[L3] "the L1 normalization layer for the attention map": a / sum_{t,r} a over each clip's N x R map.

    (B, N, R) -> (B, N, R). Eq. 8 and Eq. 9 are invariant to a per-clip scale, so this changes no distance; it
    is kept as the paper's layer (the scores are positive after the sigmoid, so the sum is > 0).
    """
    return a / a.sum((1, 2), keepdim=True).clamp_min(EPS)


def temporal_weights(a: Tensor) -> Tensor:
    """Eq. 9's weights a^{r,t} / sum_t a^{r,t}: (B, N, R) -> (B, N, R), each part's column sums to 1 over frames."""
    return a / a.sum(1, keepdim=True).clamp_min(EPS)


def aggregate_parts(units: Tensor, a: Tensor) -> Tensor:
    """Eq. 9: f^r = sum_t a^{r,t} f^{r,t} / sum_t a^{r,t}. units (B, N, R, F), a (B, N, R) -> (B, R, F), float32."""
    return (temporal_weights(a)[..., None] * units.float()).sum(1)  # (B, N, R, 1) * (B, N, R, F) -> (B, R, F)


def spatial_weights(a: Tensor, norm: str = "l1") -> Tensor:
    """Eq. 8's a_bar^r / ||a_bar||: a_bar^r = mean_t a^{r,t} ("the mean of score map on the temporal dimension"),
    normalised over the R parts by its l1 norm (default) or l2 norm [L4]. (B, N, R) -> (B, R)."""
    if norm not in PART_NORMS:
        raise ValueError(f"unknown STAL part norm '{norm}'; valid: {', '.join(PART_NORMS)}")
    a_bar = a.float().mean(1)  # (B, N, R) -> (B, R)
    return a_bar / torch.linalg.vector_norm(a_bar, ord=1 if norm == "l1" else 2, dim=1, keepdim=True).clamp_min(EPS)


def local_distance(fa: Tensor, wa: Tensor, fb: Tensor, wb: Tensor) -> Tensor:
    """Eq. 2 / Eq. 8: d_l(i, j) = sum_r wa_i^r wb_j^r ||fa_i^r - fb_j^r||_2, (Ba, R, F) x (Bb, R, F) -> (Ba, Bb).

    wa, wb (Ba, R), (Bb, R): spatial_weights. float32, differentiable; per-part distances from the differences
    (torch.cdist without its matmul path, as losses.pairwise_distances), so d_l(i, i) is exactly 0.
    """
    with torch.autocast(fa.device.type, enabled=False):
        d = torch.cdist(fa.float().transpose(0, 1), fb.float().transpose(0, 1),
                        compute_mode="donot_use_mm_for_euclid_dist")  # (R, Ba, F) x (R, Bb, F) -> (R, Ba, Bb)
        w = wa.float().T[:, :, None] * wb.float().T[:, None, :]  # (R, Ba, 1) * (R, 1, Bb) -> (R, Ba, Bb)
        return (w * d).sum(0)


def stripe_features(f: Tensor, bounds: list[tuple[int, int]]) -> Tensor:
    """[L1] Average of each horizontal stripe of each frame map: (B, N, C, h, w) -> (B, N, R, C), float32."""
    rows = f.mean(-1, dtype=torch.float32)  # (B, N, C, h, w) -> (B, N, C, h)
    return torch.stack([rows[..., a:b].mean(-1) for a, b in bounds], 2)  # R x (B, N, C) -> (B, N, R, C)


class STALHead(nn.Module):
    """Everything of STAL after the backbone except the global FC and classifier, which are the model's own
    (`fc`, `classifier`: the same head as avg's, so with ran=False the global feature is avg's feature).

    part_fc[r] is the part-specific network of part r [L8] (Eq. 1; independent weights per part, a plain Linear
    where the paper has three inception layers and an FC), part_cls[r] the softmax matrix W^r of the consistency
    constraint (Eq. 6; shared over frames, "the same parts in different frames share the same softmax matrix").
    """

    def __init__(self, channels: int, feat_dim: int, num_classes: int, num_parts: int = 6, ran: bool = True,
                 part_norm: str = "l1", remainder: str = "last", classifier_bias: bool = False):
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"STAL needs at least one part, got stal_parts={num_parts}")
        if part_norm not in PART_NORMS:
            raise ValueError(f"unknown STAL part norm '{part_norm}'; valid: {', '.join(PART_NORMS)}")
        self.num_parts, self.part_norm, self.remainder, self.feat_dim = num_parts, part_norm, remainder, feat_dim
        self.ran = ResidualAttention(channels) if ran else None
        self.attention = SpatialTemporalAttention(channels, num_parts)
        self.part_fc = nn.ModuleList(nn.Linear(channels, feat_dim) for _ in range(num_parts))
        self.part_cls = nn.ModuleList(nn.Linear(feat_dim, num_classes, bias=classifier_bias) for _ in range(num_parts))
        for fc, cls in zip(self.part_fc, self.part_cls):  # as the model's global fc and classifier
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            nn.init.zeros_(fc.bias)
            nn.init.normal_(cls.weight, std=0.001)
            if classifier_bias:
                nn.init.zeros_(cls.bias)

    def forward(self, f: Tensor, fc: nn.Module, classifier: nn.Module) -> dict:
        """Frame maps f (B, N, C, h, w) -> the STAL keys of the model's output (core/models/README.md)."""
        b, n = f.shape[:2]
        x = f if self.ran is None else self.ran(f.flatten(0, 1)).unflatten(0, (b, n))  # (B, N, C, h, w)
        glob = fc(x.mean((-2, -1), dtype=torch.float32).mean(1))  # temporal pooling: (B, N, C) -> (B, C) -> (B, F)
        bounds = region_bounds(f.shape[-2], self.num_parts, self.remainder)
        stripes = stripe_features(f, bounds)  # (B, N, R, C)
        units = torch.stack([self.part_fc[r](stripes[:, :, r]) for r in range(self.num_parts)], 2)  # Eq. 1: (B,N,R,F)
        part_logits = torch.stack([self.part_cls[r](units[:, :, r]) for r in range(self.num_parts)], 2)  # (B, N, R, K)
        a = l1_normalize_map(self.attention(f))  # (B, N, R), float32
        parts = aggregate_parts(units, a)  # Eq. 9: (B, R, F)
        w = spatial_weights(a, self.part_norm)  # Eq. 8: (B, R)
        feat = torch.cat([glob.float(), parts.flatten(1), w], 1)  # retrieval vector (B, F + R*F + R)
        return {"feat": feat, "logits": classifier(glob), "scores": temporal_weights(a), "global": glob,
                "parts": parts, "part_weights": w, "part_logits": part_logits,
                "layout": PartLayout(self.feat_dim, self.num_parts, self.feat_dim)}
