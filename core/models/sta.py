"""Spatial-temporal attention (Eq. 1-4) and the feature fusion of Alg. 1, as parameter-free functions.

Shapes: B clips, N frames, D channels, H x W feature map, K horizontal regions.
f: (B, N, D, H, W) frame feature maps; g: (B, N, H, W) attention maps; s, S: (B, N, K) scores.
All attention and score maths is float32 whatever the input dtype (bf16 under autocast).
EPS guards the only divisions that can be 0/0: an all-zero frame (Eq. 1) and a region that is zero in every
frame (Eq. 4); both then get zero attention / zero scores instead of NaN.
"""
from __future__ import annotations

import itertools
import typing

import torch
from torch import Tensor

from core.config import Remainder

EPS = 1e-12
REMAINDERS = typing.get_args(Remainder)  # [A4] last | spread: rule for H mod K rows when K does not divide H


def _channel_energy(f: Tensor) -> Tensor:
    """e(h, w) = sum_d f(h, w, d)^2: (..., D, H, W) -> (..., H, W), float32."""
    return f.float().square().sum(-3)


def _energy(f: Tensor) -> Tensor:
    # [A1 (a) "energy"], Eq. 1 as printed: ||sum_d f^2||_2 of a non-negative scalar is the scalar itself, so
    # g(h, w) = e(h, w) / sum_{h,w} e (sums to 1 over positions)
    e = _channel_energy(f)
    return e / e.sum((-2, -1), keepdim=True).clamp_min(EPS)


def _energy_l2(f: Tensor) -> Tensor:
    # [A1 (b) "energy_l2"], the text's words: "l2 normalization on the square sum through the depth channel":
    # g(h, w) = e(h, w) / ||e||_2, the l2 norm taken over the H x W positions (g has unit l2 norm)
    e = _channel_energy(f)
    return e / torch.linalg.vector_norm(e, dim=(-2, -1), keepdim=True).clamp_min(EPS)


def _norm_l2(f: Tensor) -> Tensor:
    # [A1 (c) "norm_l2"]: per-position l2 norm sqrt(e(h, w)) = ||f(h, w, :)||_2, then l2 normalisation over the
    # H x W positions: sqrt(e) / ||sqrt(e)||_2 (called "l2" before the (b) reading was added)
    n = torch.linalg.vector_norm(f.float(), dim=-3)  # (..., D, H, W) -> (..., H, W)
    return n / torch.linalg.vector_norm(n, dim=(-2, -1), keepdim=True).clamp_min(EPS)


ATTENTION = {"energy": _energy, "energy_l2": _energy_l2, "norm_l2": _norm_l2}
RENAMED_ATTENTION = {"l2": "norm_l2"}  # old name -> new name; the old name is refused with a pointer


def attention_error(kind: str) -> str:
    """The message for an attention name that is not one of ATTENTION (a renamed one points to its new name)."""
    if kind in RENAMED_ATTENTION:
        return (f"attention '{kind}' was renamed '{RENAMED_ATTENTION[kind]}' (sqrt(e) / ||sqrt(e)||_2, what '{kind}' "
                f"computed); 'energy_l2' is e / ||e||_2, the text's reading of Eq. 1 [A1]")
    return f"unknown attention '{kind}'; valid: {', '.join(ATTENTION)}"


def attention_map(f: Tensor, kind: str = "energy") -> Tensor:
    """Eq. 1: attention map g of each frame, (..., D, H, W) -> (..., H, W), float32."""
    if kind not in ATTENTION:
        raise ValueError(attention_error(kind))
    return ATTENTION[kind](f)


def region_bounds(height: int, num_regions: int, remainder: str = "last") -> list[tuple[int, int]]:
    """Eq. 2 / Alg. 1: row ranges [start, end) of the K horizontal regions of an H-row map.

    H_s = floor(H / K) rows per region (Alg. 1 with its hard-coded 4 read as K) [A4]. When K does not divide H:
    "last": the last region also takes the H mod K extra rows; "spread": the first H mod K regions get one more
    row each (torch.tensor_split's rule).
    """
    if not 1 <= num_regions <= height:
        raise ValueError(f"num_regions K={num_regions} must be between 1 and the feature-map height H={height}")
    if remainder not in REMAINDERS:
        raise ValueError(f"unknown remainder rule '{remainder}'; valid: {', '.join(REMAINDERS)}")
    hs, extra = divmod(height, num_regions)
    if remainder == "last":
        sizes = [hs] * (num_regions - 1) + [hs + extra]
    else:
        sizes = [hs + 1] * extra + [hs] * (num_regions - extra)
    ends = list(itertools.accumulate(sizes))
    return [(end - size, end) for size, end in zip(sizes, ends)]


def region_sums(x: Tensor, bounds: list[tuple[int, int]]) -> Tensor:
    """Sum of the rows of each region: (..., H) -> (..., K)."""
    return torch.stack([x[..., a:b].sum(-1) for a, b in bounds], -1)


def block_scores(g: Tensor, bounds: list[tuple[int, int]]) -> Tensor:
    """Eq. 3: s_{n,k} = sum_{i,j} g_{n,k}(i, j) (called an l1 normalisation, computed as a block sum) [A2].

    (B, N, H, W) -> (B, N, H) -> (B, N, K).
    """
    return region_sums(g.sum(-1), bounds)


def normalize_scores(s: Tensor) -> Tensor:
    """Eq. 4: S(n, k) = s_{n,k} / sum_n s_{n,k}; each column (region) sums to 1 over the N frames [A3]."""
    return s / s.sum(-2, keepdim=True).clamp_min(EPS)


def fuse_maps(f: Tensor, S: Tensor, weights: Tensor, bounds: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Alg. 1 with its F1 index bug corrected [A4]: the fused maps F1, F2, each (B, D, H, W), float32.

    `f` is (B, N, D, H, W), the frames' maps; `S` (B, N, K) the normalised scores (Eq. 4); `weights` (B, N, K) the
    F2 weights, S (Eq. 4) or s (Eq. 3) [A5]; `bounds` the rows of each region (region_bounds, remainder rule [A4]).
    F1 (lines "m <- argmax S(:, k); F1(rows of k) <- f_mk"): per region k, rows bounds[k] of the frame with the
    highest S(:, k) [A6] (region k's own rows, not the printed H_s ... 2*H_s).
    F2 (line "F2(rows of k) += f_nk * s_nk"): per region k, the sum over frames of rows bounds[k] times weights[:, n, k].
    The model never builds these maps (it uses fuse_pooled); tests check fuse_pooled against this.
    """
    f = f.float()
    best = S.argmax(1)  # (B, N, K) -> (B, K): frame with the highest score per region
    rows = torch.arange(f.shape[0], device=f.device)
    f1, f2 = [], []
    for k, (a, b) in enumerate(bounds):
        f1.append(f[rows, best[:, k], :, a:b])  # (B, D, b-a, W)
        f2.append((weights[:, :, k, None, None, None] * f[:, :, :, a:b]).sum(1))  # (B, N, D, b-a, W) -> (B, D, b-a, W)
    return torch.cat(f1, -2), torch.cat(f2, -2)  # K x (B, D, b-a, W) -> (B, D, H, W)


def fuse_pooled(f: Tensor, S: Tensor, weights: Tensor, bounds: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Global average pooling of Alg. 1's F1 and F2 without building them: two (B, D) float32 tensors.

    Pooling commutes with the per-region weighted sum: GAP(F2) = sum_k sum_n w_nk * (block sum of f_nk) / (H*W).
    Working with block sums (not block means) weights each region by its row count, as GAP over the full map
    does when regions have unequal heights.
    """
    h, w = f.shape[-2:]
    r = region_sums(f.sum(-1, dtype=torch.float32), bounds)  # (B, N, D, H, W) -> (B, N, D, H) -> (B, N, D, K)
    x2 = (r * weights[:, :, None, :]).sum((1, 3)) / (h * w)  # (B, N, D, K) -> (B, D)
    best = S.argmax(1)[:, None, None, :].expand(-1, 1, r.shape[2], -1)  # (B, K) -> (B, 1, D, K)
    x1 = r.gather(1, best).sum((1, 3)) / (h * w)  # (B, 1, D, K) -> (B, D)
    return x1, x2
