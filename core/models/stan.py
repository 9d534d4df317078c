"""STAN (Li, Bak, Carr, Wang, CVPR 2018, "Diversity Regularized Spatiotemporal Attention"): multiple spatial
attention models per frame, temporal attention per model, diversity regulariser; README.md ("STAN") maps each
step to the paper and lists the readings S1..S6 where the material we had is silent.

Shapes: B clips, N frames, D channels, h x w feature map, L = h*w positions, K spatial attention models.
Sources (the full paper text was not on disk): the abstract (shared/paper/stan_li2018_cvpr_abstract.txt); the
authors' partial release (github ShuangLI59/Diversity-Regularized-Spatiotemporal-Attention:
multiple_spatial_attention.py, trainers.py); published summaries of the paper (its method sections "multiple spatial
attention models", "diversity regularization", "temporal attention"; equation numbers were not available, so the
docstrings cite the section titles). Facts only, no code taken from them.
Nothing here depends on N: the temporal attention is one linear score per frame and model, softmaxed over
however many frames come in. Attention maths runs in float32 whatever the input dtype (bf16 under autocast).
"""
from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import StanEmbed

STAN_EMBEDS = typing.get_args(StanEmbed)  # [S4] concat | per_model
SQRT_FLOOR = 1e-20  # s below it (a softmax weight that underflowed to 0) is clamped: no inf * 0 in sqrt's gradient


class SpatialScorer(nn.Module):
    """Paper, "Multiple Spatial Attention Models": one score e_{n,k,l} per frame n, model k and position l.

    [S2] a 1x1 conv D -> hidden with ReLU, shared by the K models, then a 1x1 conv hidden -> K (one output channel
    per model): the structure of the authors' release (conv-ReLU-conv, hidden width 64), without its BatchNorms.
    The second conv has no bias: a per-model constant cancels in the softmax over positions.
    """

    def __init__(self, channels: int, models: int, hidden: int = 64):
        super().__init__()
        self.hidden = nn.Conv2d(channels, hidden, 1)
        self.out = nn.Conv2d(hidden, models, 1, bias=False)

    def forward(self, f: Tensor) -> Tensor:
        """f (M, D, h, w) -> scores e (M, K, h, w); M = B*N frames."""
        return self.out(F.relu(self.hidden(f)))


def spatial_attention(e: Tensor) -> Tensor:
    """"Multiple Spatial Attention Models": s_{n,k,l} = exp(e_{n,k,l}) / sum_j exp(e_{n,k,j}), a softmax over the L = h*w positions of each
    frame and model. (..., K, h, w) -> (..., K, L), float32; each row sums to 1."""
    return e.float().flatten(-2).softmax(-1)


def attend(f: Tensor, s: Tensor) -> Tensor:
    """"Multiple Spatial Attention Models": x_{n,k} = sum_l s_{n,k,l} x_{n,l}, the spatially attended feature of frame n for model k.

    f (B, N, D, h, w) frame maps, s (B, N, K, L) spatial attention -> (B, N, K, D), float32.
    """
    return torch.einsum("bnkl,bndl->bnkd", s, f.float().flatten(-2))


class TemporalScorer(nn.Module):
    """Paper, "Temporal Attention": e_{n,k} = w_k^T x_{n,k}, a linear response per model k (its own w_k).

    No bias: a per-model constant cancels in the softmax over frames. w starts at 0, so the temporal attention
    starts as the average over frames. Parameters (K, dim): independent of N.
    """

    def __init__(self, models: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(models, dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, K, dim) -> scores e (B, N, K), float32."""
        return torch.einsum("bnkd,kd->bnk", x.float(), self.weight.float())


def temporal_attention(e: Tensor) -> Tensor:
    """"Temporal Attention": t_{n,k} = exp(e_{n,k}) / sum_j exp(e_{j,k}), a softmax over the N frames for each model k.

    (B, N, K) -> (B, N, K), float32; each column (model) sums to 1 over the frames, like STA's Eq. 4 scores.
    """
    return e.float().softmax(1)


def temporal_pool(x: Tensor, t: Tensor) -> Tensor:
    """"Temporal Attention": x_k = sum_n t_{n,k} x_{n,k}. x (B, N, K, dim), t (B, N, K) -> (B, K, dim), float32."""
    return torch.einsum("bnk,bnkd->bkd", t, x.float())


def combine(xk: Tensor) -> Tensor:
    """Abstract and "Temporal Attention": the K temporally attended features are concatenated into the clip feature.

    (B, K, dim) -> (B, K*dim), model k's features in block k.
    """
    return xk.flatten(1)


def hellinger(p: Tensor, q: Tensor) -> Tensor:
    """H(p, q) = ||sqrt(p) - sqrt(q)||_2 / sqrt(2) over the last axis (the paper's distance between two maps)."""
    return (p.float().sqrt() - q.float().sqrt()).norm(dim=-1) / 2 ** 0.5


def diversity_penalty(s: Tensor, squared: bool = True) -> Tensor:
    """Paper, "Diversity Regularization": ||Q Q^T - I||_F^2 per frame, Q = sqrt(S) (K x L, row k = sqrt(s_k)),
    averaged over the B*N frames.

    Entry (i, j) of Q Q^T is sum_l sqrt(s_il s_jl) = 1 - H(s_i, s_j)^2; the diagonal is sum_l s_kl = 1, so the
    penalty is the sum over ordered pairs i != j of (1 - H^2)^2: 0 when the maps have disjoint support, K(K-1) when
    all K maps are equal. s (B, N, K, L) -> scalar, float32. squared=False [S5] takes the Frobenius norm itself
    (the authors' release takes a square root, of the sum over the whole batch).
    """
    q = s.float().clamp_min(SQRT_FLOOR).sqrt()  # (B, N, K, L)
    gram = q @ q.transpose(-1, -2)  # (B, N, K, L) x (B, N, L, K) -> (B, N, K, K)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    sq = (gram - eye).square().sum((-2, -1))  # (B, N, K, K) -> (B, N)
    if squared:
        return sq.mean()
    return torch.where(sq > 0, sq.clamp_min(SQRT_FLOOR).sqrt(), torch.zeros_like(sq)).mean()


class STANHead(nn.Module):
    """Everything STAN adds after the backbone, up to the clip feature before the suite's FC (or, for
    embed="per_model", the clip feature itself).

    embed [S4]: "concat": x_{n,k} (D) -> temporal attention -> concat (B, K*D), then the suite's FC -> feat_dim;
    "per_model": as the authors' release, one Linear(D, feat_dim) shared by the models on every x_{n,k}, each output
    l2-normalised, then temporal attention on those, concat (B, K*feat_dim) = the retrieval feature (no FC after).
    """

    def __init__(self, channels: int, models: int = 6, hidden: int = 64, embed: str = "concat",
                 feat_dim: int = 1024):
        super().__init__()
        if embed not in STAN_EMBEDS:
            raise ValueError(f"unknown stan_embed '{embed}'; valid: {', '.join(STAN_EMBEDS)}")
        if models < 1 or hidden < 1:
            raise ValueError(f"stan_models and stan_hidden must be >= 1, got {models} and {hidden}")
        self.models, self.embed = models, embed
        self.spatial = SpatialScorer(channels, models, hidden)
        self.project = nn.Linear(channels, feat_dim) if embed == "per_model" else None
        self.temporal = TemporalScorer(models, feat_dim if embed == "per_model" else channels)
        self.out_dim = models * (feat_dim if embed == "per_model" else channels)

    def forward(self, f: Tensor) -> dict:
        """f (B, N, D, h, w) -> {"clip": (B, out_dim), "spatial": (B, N, K, L), "temporal": (B, N, K)}."""
        b, n = f.shape[:2]
        e = self.spatial(f.flatten(0, 1))  # (B, N, D, h, w) -> (B*N, D, h, w) -> (B*N, K, h, w)
        s = spatial_attention(e).unflatten(0, (b, n))  # (B*N, K, L) -> (B, N, K, L)
        x = attend(f, s)  # (B, N, K, D)
        if self.project is not None:
            x = F.normalize(self.project(x), dim=-1)  # (B, N, K, D) -> (B, N, K, feat_dim), unit l2 norm
        t = temporal_attention(self.temporal(x))  # (B, N, K)
        return {"clip": combine(temporal_pool(x, t)), "spatial": s, "temporal": t}
